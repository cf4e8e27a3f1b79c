//! IPAM for the suite: config parsing, a round-robin allocator and an on-disk lease store
//! compatible with the reference `host-local`, plus `static`.
//!
//! The main plugins (`bridge`, `macvlan`) call [`add`], [`del`], [`check`], [`gc`] and
//! [`status`] in-process: when `ipam.type` is `host-local` or `static` no extra process runs;
//! any other type is executed from CNI_PATH through [`cni::delegate::delegate`].
//! The `host-local` and `static` binaries are [`HostLocal`] and [`Static`] run by [`cni::run`].
//!
//! For a calling plugin:
//! ```ignore
//! let mut result = ipam::add(req)?;            // addresses, gateway, routes, dns; interface unset
//! if let Err(e) = configure(&mut result) {     // set ips[i].interface, create links, ...
//!     let _ = ipam::del(req);                  // an ADD that fails undoes what it did
//!     return Err(e);
//! }
//! ```
//! `ipam::del` is idempotent and needs only `ipam.type` and `ipam.dataDir` from the config.

pub mod addr;
pub mod alloc;
pub mod config;
pub mod host_local;
pub mod iface;
pub mod static_ipam;
pub mod store;

use cni::delegate::{delegate, find_plugin};
use cni::{Attachment, CniError, CniResult, Command, Request};
use serde_json::Value;
use std::net::IpAddr;

/// Which IPAM implementation serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    HostLocal,
    Static,
    /// Another plugin, run from CNI_PATH.
    Delegated(&'a str),
}

/// Reads `ipam.type`. A missing section or type is code 7 naming it.
pub fn kind(req: &Request) -> Result<Kind<'_>, CniError> {
    let ipam = config::ipam_section(req)?;
    match cni::json::get(ipam, "type") {
        None | Some(Value::Null) => {
            Err(CniError::config("missing ipam.type in network config (e.g. \"host-local\")"))
        }
        Some(Value::String(t)) if t.is_empty() => {
            Err(CniError::config("missing ipam.type in network config (e.g. \"host-local\")"))
        }
        Some(Value::String(t)) => Ok(match t.as_str() {
            "host-local" => Kind::HostLocal,
            "static" => Kind::Static,
            other => Kind::Delegated(other),
        }),
        Some(other) => Err(CniError::bad_value("ipam.type", other, "must be a string")),
    }
}

/// Plugin types of this suite that are not IPAM plugins. Named as `ipam.type`, each would run
/// as an IPAM plugin and do its own job instead (create a bridge, a macvlan, ...); the
/// calling plugin's own type would even run itself while holding its own lock, forever.
const NOT_IPAM: &[&str] = &[
    "bridge",
    "macvlan",
    "host",
    "none",
    "loopback",
    "portmap",
    "dns-alias",
    "dnsname",
    "firewall",
    "tuning",
    "bandwidth",
];

/// True when `path` is the executable of this process (same file, also through a link).
fn is_running_binary(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Code 7 when delegating to `t` would run a plugin that is not an IPAM plugin: one of the
/// suite's other plugins, the calling plugin's own type, or (under any name) the binary that
/// is running now.
fn refuse_non_ipam(t: &str, req: &Request) -> Result<(), CniError> {
    let why = if NOT_IPAM.contains(&t) || t == req.conf.plugin_type {
        Some(format!("{t} is not an IPAM plugin"))
    } else if find_plugin(t, &req.env.path).is_ok_and(|p| is_running_binary(&p)) {
        Some(format!("{t} in CNI_PATH is this plugin ({}) itself", req.conf.plugin_type))
    } else {
        None
    };
    match why {
        Some(why) => Err(CniError::bad_value(
            "ipam.type",
            format!("{t:?}"),
            format!("{why}; name an IPAM plugin such as \"host-local\", \"static\" or \"dhcp\""),
        )),
        None => Ok(()),
    }
}

/// Whether the config asks for IPAM, for the plugins that call it (`bridge`, `macvlan`,
/// `host`). Absent, null or `{}`: no addresses (the reference's layer-2-only case). An object
/// naming a type: yes. Anything else is code 7 naming the field, never a silent "no
/// addresses": `ipam` that is not an object, an object without `type`, a type that is not an
/// IPAM plugin.
pub fn configured(req: &Request) -> Result<bool, CniError> {
    let obj = match &req.conf.ipam {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Object(o)) if o.is_empty() => return Ok(false),
        Some(Value::Object(o)) => o,
        Some(other) => {
            let shape = match other {
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Array(_) => "a list",
                Value::Bool(_) => "a boolean",
                _ => "not an object",
            };
            let shown: String = other.to_string().chars().take(80).collect();
            return Err(CniError::bad_value(
                "ipam",
                shown,
                format!("must be an object such as {{\"type\": \"host-local\", ...}}, not {shape}"),
            ));
        }
    };
    match cni::json::get(obj, "type") {
        Some(Value::String(t)) if !t.is_empty() => {
            refuse_non_ipam(t, req)?;
            Ok(true)
        }
        // `{"type": ""}` alone says "no IPAM" as plainly as `{}` (macvlan and host took it so).
        None | Some(Value::Null) | Some(Value::String(_))
            if obj.keys().all(|k| cni::json::keys_match("type", k)) =>
        {
            Ok(false)
        }
        None | Some(Value::Null) | Some(Value::String(_)) => Err(CniError::config(
            "missing ipam.type in network config: the \"ipam\" section names no IPAM plugin (e.g. \
            \"host-local\"); leave \"ipam\" out for an interface without addresses",
        )),
        Some(other) => Err(CniError::bad_value("ipam.type", other, "must be a string")),
    }
}

/// ADD: the addresses (and routes, DNS) for the container, from `req.conf.ipam`.
/// `interface` indexes are left unset: the calling plugin fills them.
pub fn add(req: &Request) -> Result<CniResult, CniError> {
    allocate(req).map(|a| a.result)
}

/// What an ADD got from IPAM, and what a rollback of that ADD may release.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub result: CniResult,
    leased: Leased,
}

#[derive(Debug, Clone)]
enum Leased {
    /// host-local: the addresses this call leased (a repeated ADD gets back what the
    /// attachment already held, and must not release it).
    These(Vec<IpAddr>),
    /// static: nothing is leased.
    Nothing,
    /// A delegated plugin: its DEL releases what the attachment holds.
    ByDelegate,
}

impl Allocation {
    /// No IPAM: no addresses, nothing leased.
    pub fn none() -> Allocation {
        Allocation { result: CniResult::default(), leased: Leased::Nothing }
    }

    /// The addresses this call leased (empty for static; None when a delegated plugin did the
    /// leasing and only its DEL knows).
    pub fn leased_now(&self) -> Option<&[IpAddr]> {
        match &self.leased {
            Leased::These(ips) => Some(ips),
            Leased::Nothing => Some(&[]),
            Leased::ByDelegate => None,
        }
    }
}

/// ADD, keeping track of what this call leased (see [`rollback`]).
pub fn allocate(req: &Request) -> Result<Allocation, CniError> {
    match kind(req)? {
        Kind::HostLocal => {
            let (result, ips) = host_local::add_tracked(req)?;
            Ok(Allocation { result, leased: Leased::These(ips) })
        }
        Kind::Static => Ok(Allocation { result: static_ipam::add(req)?, leased: Leased::Nothing }),
        Kind::Delegated(t) => {
            refuse_non_ipam(t, req)?;
            let result = delegate(t, Command::Add, req)?
                .ok_or_else(|| CniError::internal(format!("IPAM plugin {t} returned no result")))?;
            Ok(Allocation { result, leased: Leased::ByDelegate })
        }
    }
}

/// Undoes [`allocate`] for a failed ADD: releases only what that call leased. A delegated
/// plugin gets a DEL, so callers roll back a delegated allocation only for an attachment that
/// did not exist before the call (they refuse a repeated ADD before allocating).
pub fn rollback(req: &Request, allocation: &Allocation) -> Result<(), CniError> {
    match &allocation.leased {
        Leased::These(ips) => host_local::release(req, ips),
        Leased::Nothing => Ok(()),
        Leased::ByDelegate => del(req),
    }
}

/// DEL: releases what ADD leased. Never fails on what is already gone; a config without an
/// `ipam` section or type allocated nothing, so there is nothing to release.
pub fn del(req: &Request) -> Result<(), CniError> {
    match kind(req) {
        Err(_) => Ok(()),
        Ok(Kind::HostLocal) => host_local::del(req),
        Ok(Kind::Static) => static_ipam::del(req),
        // A type ADD refuses never leased anything, and running it could deadlock.
        Ok(Kind::Delegated(t)) if refuse_non_ipam(t, req).is_err() => Ok(()),
        Ok(Kind::Delegated(t)) => delegate(t, Command::Del, req).map(|_| ()),
    }
}

/// CHECK: the container still holds what ADD gave it.
pub fn check(req: &Request) -> Result<(), CniError> {
    match kind(req)? {
        Kind::HostLocal => host_local::check(req),
        Kind::Static => static_ipam::check(req),
        Kind::Delegated(t) => {
            refuse_non_ipam(t, req)?;
            delegate(t, Command::Check, req).map(|_| ())
        }
    }
}

/// GC: releases every lease not held by one of `valid`.
pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
    match kind(req) {
        Err(_) => Ok(()),
        Ok(Kind::HostLocal) => host_local::gc(req, valid),
        Ok(Kind::Static) => Ok(()),
        Ok(Kind::Delegated(t)) if refuse_non_ipam(t, req).is_err() => Ok(()),
        Ok(Kind::Delegated(t)) => delegate(t, Command::Gc, req).map(|_| ()),
    }
}

/// STATUS: code 50 when an ADD could not get an address now.
pub fn status(req: &Request) -> Result<(), CniError> {
    match kind(req)? {
        Kind::HostLocal => host_local::status(req),
        Kind::Static => Ok(()),
        Kind::Delegated(t) => {
            refuse_non_ipam(t, req)?;
            delegate(t, Command::Status, req).map(|_| ())
        }
    }
}

/// The `host-local` plugin binary.
pub struct HostLocal;

impl cni::Plugin for HostLocal {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        host_local::add(req)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        host_local::del(req)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        host_local::check(req)
    }
    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        host_local::gc(req, valid)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        host_local::status(req)
    }
}

/// The `static` plugin binary.
pub struct Static;

impl cni::Plugin for Static {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        static_ipam::add(req)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        static_ipam::del(req)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        static_ipam::check(req)
    }
}

#[cfg(test)]
mod tests;
