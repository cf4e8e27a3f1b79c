//! `tuning`: the reference meta plugin. Chained after an interface plugin, it sets `net.*`
//! sysctls inside the container's network namespace and the MAC, MTU, promiscuous and
//! all-multicast mode and transmit queue length of CNI_IFNAME. DEL puts back what ADD
//! changed (the interface may stay, e.g. a host device going back to the host); CHECK
//! compares the configuration with the kernel.
//!
//! config (`config`) -> plan (`plan::add_steps`, pure) -> record the originals (`state`) ->
//! apply with undo (`apply`).

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use apply::{apply, observe, run_step};
use cni::store::attachment_key;
use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::TuningConf;
use netlink::{format_mac, Handle, NetnsGuard};
use plan::{add_steps, differences, restore_steps, Originals};
use state::{store, Record};

/// The plugin, run by the `tuning` binary.
pub struct TuningPlugin;

fn no_prev_result() -> CniError {
    CniError::config(
        "tuning must be chained after a plugin that creates the interface (no prevResult)",
    )
}

impl Plugin for TuningPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let allowlist = config::read_allowlist()?;
        let conf = TuningConf::from_request(req, allowlist.as_deref())?;
        let mut result = req.prev.clone().ok_or_else(no_prev_result)?;
        let ifname = req.env.ifname.as_str();
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        if netlink::Netns::current().is_ok_and(|here| here.same_as(&ns)) {
            return Err(CniError::config(
                "tuning refuses to run in the host's own network namespace (the container shares \
                it): its sysctls and interfaces are the host's",
            ));
        }
        let paths: Vec<(&str, &str)> =
            conf.sysctls.iter().map(|s| (s.key.as_str(), s.path.as_str())).collect();

        let store = store(conf.data_dir.as_deref());
        let key = [req.conf.name.as_str(), &attachment_key(&req.env.container_id, ifname)];
        let _lock = store.lock()?;
        let earlier = store.get::<Record>(&key)?;

        let guard = NetnsGuard::enter(&ns)?;
        let mut h = Handle::new()?;
        let (now, index) = observe(&mut h, ifname, &paths, true)?;
        let index = match index {
            Some(i) => i,
            None if conf.changes_link() => {
                return Err(CniError::config(format!(
                    "tuning: the container has no interface {ifname:?} (CNI_IFNAME) to configure; \
                    chain tuning after the plugin that creates it"
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
        let key = [req.conf.name.as_str(), &attachment_key(&req.env.container_id, &req.env.ifname)];
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
        let listing = store.list_lenient::<Record>(&[network]);
        for r in cni::store::readable_or_dropped("tuning", listing)? {
            if !cni::config::in_use(valid, &r.container_id, &r.ifname) {
                store.delete(&[network, &attachment_key(&r.container_id, &r.ifname)])?;
            }
        }
        cni::store::remove_dir_if_empty(&store.dir_path(&[network]));
        store.sweep_temp_files();
        Ok(())
    }
}
