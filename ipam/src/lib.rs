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

use cni::delegate::delegate;
use cni::{Attachment, CniError, CniResult, Command, Request};
use serde_json::Value;

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

/// ADD: the addresses (and routes, DNS) for the container, from `req.conf.ipam`.
/// `interface` indexes are left unset: the calling plugin fills them.
pub fn add(req: &Request) -> Result<CniResult, CniError> {
    match kind(req)? {
        Kind::HostLocal => host_local::add(req),
        Kind::Static => static_ipam::add(req),
        Kind::Delegated(t) => delegate(t, Command::Add, req)?
            .ok_or_else(|| CniError::internal(format!("IPAM plugin {t} returned no result"))),
    }
}

/// DEL: releases what ADD leased. Never fails on what is already gone; a config without an
/// `ipam` section or type allocated nothing, so there is nothing to release.
pub fn del(req: &Request) -> Result<(), CniError> {
    match kind(req) {
        Err(_) => Ok(()),
        Ok(Kind::HostLocal) => host_local::del(req),
        Ok(Kind::Static) => static_ipam::del(req),
        Ok(Kind::Delegated(t)) => delegate(t, Command::Del, req).map(|_| ()),
    }
}

/// CHECK: the container still holds what ADD gave it.
pub fn check(req: &Request) -> Result<(), CniError> {
    match kind(req)? {
        Kind::HostLocal => host_local::check(req),
        Kind::Static => static_ipam::check(req),
        Kind::Delegated(t) => delegate(t, Command::Check, req).map(|_| ()),
    }
}

/// GC: releases every lease not held by one of `valid`.
pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
    match kind(req) {
        Err(_) => Ok(()),
        Ok(Kind::HostLocal) => host_local::gc(req, valid),
        Ok(Kind::Static) => Ok(()),
        Ok(Kind::Delegated(t)) => delegate(t, Command::Gc, req).map(|_| ()),
    }
}

/// STATUS: code 50 when an ADD could not get an address now.
pub fn status(req: &Request) -> Result<(), CniError> {
    match kind(req)? {
        Kind::HostLocal => host_local::status(req),
        Kind::Static => Ok(()),
        Kind::Delegated(t) => delegate(t, Command::Status, req).map(|_| ()),
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
