//! `tuning`: the reference meta plugin. Chained after an interface plugin, it sets `net.*`
//! sysctls inside the container's network namespace and the MAC, MTU, promiscuous and
//! all-multicast mode and transmit queue length of CNI_IFNAME. DEL puts back what ADD
//! changed (the interface may stay, e.g. a host device going back to the host); CHECK
//! compares the configuration with the kernel.
//!
//! config -> plan (`plan::add_steps`, pure) -> record the originals -> apply with undo.

mod config;
mod plan;

use cni::store::Store;
use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::TuningConf;
use netlink::{format_mac, Handle, NetnsGuard};
use plan::{add_steps, differences, restore_steps, LinkNow, Observed, Originals, Step};
use serde::{Deserialize, Serialize};
use std::path::Path;

struct Tuning;

/// The state record of one attachment: what DEL restores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    originals: Originals,
}

fn store(data_dir: Option<&Path>) -> Store {
    match data_dir {
        Some(d) => Store::new(d.to_path_buf()),
        None => Store::for_plugin("tuning"),
    }
}

fn record_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}_{ifname}")
}

/// Reads the sysctls at `paths` in the current thread's namespace. `strict`: a missing one is
/// a config error naming it; otherwise it is left out.
fn read_sysctls(paths: &[(&str, &str)], strict: bool) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for (key, path) in paths {
        match netlink::sysctl_get(path) {
            Ok(v) => out.push((path.to_string(), v)),
            Err(e) if strict && e.is_not_found() => {
                return Err(CniError::config(format!(
                "sysctl {key:?}: there is no /proc/sys/{path} in the container's network namespace"
            )))
            }
            Err(e) if strict => {
                return Err(CniError::new(code::KERNEL, format!("sysctl {key:?}: {e}")))
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// What the interface and the named sysctls look like now (current thread's namespace).
fn observe(
    h: &mut Handle,
    ifname: &str,
    sysctls: &[(&str, &str)],
    strict: bool,
) -> Result<(Observed, Option<u32>), CniError> {
    let link = h.link_by_name(ifname)?;
    let sysctls = read_sysctls(sysctls, strict)?;
    Ok((Observed { link: link.as_ref().map(LinkNow::from), sysctls }, link.map(|l| l.index)))
}

/// A sysctl path as sysctl(8) names it: dotted, unless a component has a dot of its own.
fn sysctl_name(path: &str) -> String {
    if path.split('/').any(|c| c.contains('.')) {
        path.to_string()
    } else {
        path.replace('/', ".")
    }
}

/// Runs one step (current thread inside the container's namespace). Values the kernel
/// refuses are config errors naming the key and value.
fn run_step(h: &mut Handle, index: u32, ifname: &str, step: &Step) -> Result<(), CniError> {
    let refused = |key: &str, value: String, e: netlink::Error| {
        if matches!(e.errno(), Some(libc::EINVAL | libc::ERANGE | libc::EADDRNOTAVAIL)) {
            CniError::bad_value(key, value, format!("the kernel refused it for {ifname}: {e}"))
        } else {
            CniError::new(code::KERNEL, format!("setting {key} {value} on {ifname}: {e}"))
        }
    };
    match step {
        Step::Sysctl { path, to, .. } => netlink::sysctl_set(path, to).map_err(|e| {
            let key = format!("sysctl {}", sysctl_name(path));
            let reason = match e.errno() {
                Some(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
                None => e.to_string(),
            };
            match e.errno() {
                Some(libc::EINVAL | libc::ERANGE) => CniError::bad_value(
                    &key,
                    format!("{to:?}"),
                    format!("the kernel refused the value: {reason}"),
                ),
                Some(libc::EPERM | libc::EACCES | libc::EROFS) => CniError::bad_value(
                    &key,
                    format!("{to:?}"),
                    format!("cannot be written inside a container's network namespace: {reason}"),
                ),
                _ => CniError::new(code::KERNEL, format!("{key}: {e}")),
            }
        }),
        Step::Mtu { to, .. } => {
            h.set_mtu(index, *to).map_err(|e| refused("mtu", to.to_string(), e))
        }
        Step::Mac { to, .. } => {
            h.set_mac(index, *to).map_err(|e| refused("mac", format_mac(to), e))
        }
        Step::Promisc { to, .. } => {
            h.set_promisc(index, *to).map_err(|e| refused("promisc", to.to_string(), e))
        }
        Step::Allmulti { to, .. } => {
            h.set_allmulti(index, *to).map_err(|e| refused("allmulti", to.to_string(), e))
        }
        Step::TxQLen { to, .. } => {
            h.set_txqueuelen(index, *to).map_err(|e| refused("txQLen", to.to_string(), e))
        }
    }
}

/// Applies `steps` in order; on a failure undoes the ones done, newest first.
fn apply(h: &mut Handle, index: u32, ifname: &str, steps: &[Step]) -> Result<(), CniError> {
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = run_step(h, index, ifname, step) {
            for done in steps[..i].iter().rev() {
                if let Err(u) = run_step(h, index, ifname, &done.reversed()) {
                    eprintln!("tuning: undoing {done:?} after a failed ADD: {}", u.msg);
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

fn no_prev_result() -> CniError {
    CniError::config(
        "tuning must be chained after a plugin that creates the interface (no prevResult)",
    )
}

impl Plugin for Tuning {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let allowlist = config::read_allowlist()?;
        let conf = TuningConf::from_request(req, allowlist.as_deref())?;
        let mut result = req.prev.clone().ok_or_else(no_prev_result)?;
        let ifname = req.env.ifname.as_str();
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        if netlink::Netns::current().is_ok_and(|here| here.same_as(&ns)) {
            return Err(CniError::config(
                "tuning refuses to run in the host's own network namespace (the container shares it): its sysctls and interfaces are the host's",
            ));
        }
        let paths: Vec<(&str, &str)> =
            conf.sysctls.iter().map(|s| (s.key.as_str(), s.path.as_str())).collect();

        let store = store(conf.data_dir.as_deref());
        let key = [req.conf.name.as_str(), &record_name(&req.env.container_id, ifname)];
        let _lock = store.lock()?;
        let earlier = store.get::<Record>(&key)?;

        let guard = NetnsGuard::enter(&ns)?;
        let mut h = Handle::new()?;
        let (now, index) = observe(&mut h, ifname, &paths, true)?;
        let index = match index {
            Some(i) => i,
            None if conf.changes_link() => {
                return Err(CniError::config(format!(
                    "tuning: the container has no interface {ifname:?} (CNI_IFNAME) to configure; chain tuning after the plugin that creates it"
                )))
            }
            None => 0,
        };
        let steps = add_steps(&conf, &now);
        let mut originals = Originals::of(&steps);
        if let Some(e) = &earlier {
            originals = originals.merged_onto(&e.originals);
        }
        // Recorded before anything changes: a crash halfway still lets DEL restore.
        if !originals.is_empty() {
            let rec = Record {
                network: req.conf.name.clone(),
                container_id: req.env.container_id.clone(),
                ifname: ifname.to_string(),
                originals,
            };
            store.put(&key, &rec)?;
        }
        if let Err(e) = apply(&mut h, index, ifname, &steps) {
            drop(guard);
            match &earlier {
                Some(rec) => store.put(&key, rec)?,
                None => store.delete(&key)?,
            }
            return Err(e);
        }
        drop(guard);

        if let Some(mac) = conf.mac {
            for iface in result.interfaces.iter_mut().filter(|i| i.name == ifname) {
                iface.mac = Some(format_mac(&mac));
            }
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let store = store(config::data_dir_for_del(req).as_deref());
        let key = [req.conf.name.as_str(), &record_name(&req.env.container_id, &req.env.ifname)];
        let _lock = store.lock()?;
        let rec = match store.get::<Record>(&key) {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Nothing can be restored from it; keeping it would fail every later DEL.
                eprintln!("tuning: dropping unreadable state: {}", e.msg);
                return store.delete(&key);
            }
        };
        // The namespace (and with it the interface and its sysctls) may be gone: then there is
        // nothing to put back.
        if let Some(ns) = req.env.netns.as_deref().and_then(|p| netlink::Netns::open(p).ok()) {
            let ifname = req.env.ifname.as_str();
            let paths: Vec<(&str, &str)> =
                rec.originals.sysctls.iter().map(|s| (s.path.as_str(), s.path.as_str())).collect();
            let _guard = NetnsGuard::enter(&ns)?;
            let mut h = Handle::new()?;
            let (now, index) = observe(&mut h, ifname, &paths, false)?;
            for step in restore_steps(&rec.originals, &now) {
                // DEL does not fail on what it cannot put back (the reference does not either):
                // say so and go on.
                if let Err(e) = run_step(&mut h, index.unwrap_or(0), ifname, &step) {
                    eprintln!("tuning: cannot restore {step:?} on {ifname}: {}", e.msg);
                }
            }
        }
        store.delete(&key)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = TuningConf::from_request(req, None)?;
        req.prev.as_ref().ok_or_else(no_prev_result)?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let paths: Vec<(&str, &str)> =
            conf.sysctls.iter().map(|s| (s.key.as_str(), s.path.as_str())).collect();
        let _guard = NetnsGuard::enter(&ns)?;
        let mut h = Handle::new()?;
        let (now, _) = observe(&mut h, &req.env.ifname, &paths, false)?;
        let diffs = differences(&conf, &req.env.ifname, &now);
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(code::KERNEL, format!("tuning CHECK: {}", diffs.join("; "))))
        }
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        // The containers are gone: nothing to restore, only records to drop.
        let store = store(config::data_dir_for_del(req).as_deref());
        let _lock = store.lock()?;
        let network = req.conf.name.as_str();
        for (path, rec) in store.list_lenient::<Record>(&[network]) {
            match rec {
                Ok(r) => {
                    if !valid
                        .iter()
                        .any(|v| v.container_id == r.container_id && v.ifname == r.ifname)
                    {
                        store.delete(&[network, &record_name(&r.container_id, &r.ifname)])?;
                    }
                }
                Err(e) => {
                    eprintln!("tuning: GC drops unreadable state: {}", e.msg);
                    cni::store::remove_if_exists(&path)
                        .map_err(|e| cni::store::io_error("removing", &path, e))?;
                }
            }
        }
        cni::store::remove_dir_if_empty(&store.dir_path(&[network]));
        store.sweep_temp_files();
        Ok(())
    }
}

fn main() {
    cni::run(&Tuning)
}
