//! `host`: Docker's host driver on CNI.
//!
//! - Without a device (`--network host`): the container shares the host's network
//!   namespace. ADD verifies CNI_NETNS is the plugin's own namespace, changes nothing, and
//!   reports the host's interfaces and addresses; DEL has nothing to undo.
//! - With `device` / `hwaddr` / `kernelpath` / `pciBusID` / runtimeConfig `deviceID`: that
//!   host interface is handed to the container under CNI_IFNAME (IPAM's addresses when
//!   `ipam` is set, else the ones it had in the host), and given back under its original
//!   name, with its addresses, on DEL.

pub mod config;
pub mod device;
pub mod shared;
pub mod state;

use cni::plan::{ifname_taken, Attachment, Existing};
use cni::{code, CniError, CniResult, Plugin, Request};
use config::{HostConf, Selector};
use device::Returned;
use netlink::{Handle, Netns};
use state::{transit_name, DeviceRecord, State};
use std::path::Path;

/// The plugin, run by the `host` binary.
pub struct HostPlugin;

fn transit(req: &Request) -> String {
    transit_name(&req.conf.name, &req.env.container_id, &req.env.ifname)
}

/// What DEL knows without a record: only a device named in the config can be renamed back.
fn fallback_record(req: &Request, sel: &Selector) -> Option<DeviceRecord> {
    let Selector::Name(name) = sel else { return None };
    Some(DeviceRecord {
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        netns: None,
        original_name: name.clone(),
        mac: None,
        // Unknown: leave it down rather than bring up something we know nothing about.
        up: false,
        master: None,
        addresses: Vec::new(),
        routes: Vec::new(),
        transit_name: transit(req),
    })
}

fn add_shared(req: &Request) -> Result<CniResult, CniError> {
    shared::require_shared(req.netns()?)?;
    let mut h = Handle::new()?;
    let links = h.links()?;
    let addrs = h.addresses(None)?;
    let mut result = shared::host_result(&links, &addrs);
    result.dns = req.conf.dns.clone().unwrap_or_default();
    Ok(result)
}

fn add_device(req: &Request, conf: &HostConf, sel: &Selector) -> Result<CniResult, CniError> {
    let netns_path = req.netns()?;
    let ns = netlink::open_container_netns(Some(netns_path))?;
    let here = Netns::current()?;
    if ns.same_as(&here) {
        return Err(CniError::config(format!(
            "cannot hand {} to the container: CNI_NETNS {} is the host's own namespace (for host \
            networking leave out \"device\", \"hwaddr\", \"kernelpath\" and \"pciBusID\")",
            sel.describe(),
            netns_path.display()
        )));
    }
    let att = Attachment::of(req)?;
    let (id, ifname) = (&att.container_id, &att.ifname);
    let state = State::default_root();
    let _lock = state.lock()?;
    let mut host = Handle::new()?;
    let mut ctr = Handle::new_in(&ns)?;
    let taken = ctr.link_by_name(ifname)?.is_some();
    let existing = state.get(&req.conf.name, id, ifname)?;
    // A record is written before the device moves and has no pending mark: a record without
    // the interface in the container is what an ADD that died mid-move left.
    match Existing::of(existing.as_ref().map(|_| false), taken) {
        // A repeated ADD: refused before IPAM runs, so nothing the container holds is lost.
        Existing::Live => return Err(att.already_attached()),
        // Left by an ADD that died mid-move: give the device back first, then start over.
        Existing::Stale => {
            let stale = existing.expect("a stale attachment has a record");
            let old_ns = stale.netns.as_deref().and_then(|p| Netns::open(p).ok());
            device::give_back(&stale, old_ns.as_ref(), &mut host)?;
            state.remove(&req.conf.name, id, ifname)?;
        }
        Existing::None if taken => return Err(ifname_taken(ifname)),
        Existing::None => {}
    }
    let dev = device::resolve(sel, &mut host, Path::new("/sys"))?;
    let rec = device::snapshot(req, &mut host, &dev, transit(req))?;
    let allocation = if conf.has_ipam { ipam::allocate(req)? } else { ipam::Allocation::none() };
    let plan = device::plan_handover(&rec, conf.has_ipam.then_some(&allocation.result));
    let pci_id = match sel {
        Selector::Pci(id) => Some(id.clone()),
        _ => None,
    };
    // Written before anything moves: whatever happens next, DEL and GC can find the device.
    let handed = state
        .save(&req.conf.name, &rec)
        .and_then(|()| device::hand_over(req, &rec, &dev, &ns, &mut host, &mut ctr, &plan, pci_id));
    match handed {
        Ok(result) => Ok(result),
        Err(e) => {
            // Undo: the device goes back as it was; the original error is what matters.
            if let Err(undo) = device::give_back(&rec, Some(&ns), &mut host) {
                eprintln!(
                    "host: could not give {} back after a failed ADD: {undo}",
                    rec.original_name
                );
            }
            if let Err(e) = ipam::rollback(req, &allocation) {
                eprintln!("host: releasing the addresses of a failed ADD: {e}");
            }
            let _ = state.remove(&req.conf.name, id, ifname);
            Err(e)
        }
    }
}

impl Plugin for HostPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = HostConf::from_request(req)?;
        match &conf.device {
            None => add_shared(req),
            Some(sel) => add_device(req, &conf, sel),
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = HostConf::from_request(req)?;
        // Shared namespace: nothing was changed, nothing to undo.
        let Some(sel) = &conf.device else { return Ok(()) };
        let state = State::default_root();
        let _lock = state.lock()?;
        let record = match state.get(&req.conf.name, &req.env.container_id, &req.env.ifname) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("host: {e}; giving back what the config names");
                None
            }
        }
        .or_else(|| fallback_record(req, sel));
        if let Some(rec) = record {
            let ns = req.env.netns.as_deref().and_then(|p| Netns::open(p).ok());
            let mut host = Handle::new()?;
            if device::give_back(&rec, ns.as_ref(), &mut host)? == Returned::Gone && ns.is_none() {
                eprintln!(
                    "host: device {} left with its namespace: a virtual device is destroyed with \
                    it, a physical one returns to the initial namespace",
                    rec.original_name
                );
            }
        }
        if conf.has_ipam {
            ipam::del(req)?;
        }
        state.remove(&req.conf.name, &req.env.container_id, &req.env.ifname)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = HostConf::from_request(req)?;
        let Some(_) = &conf.device else { return shared::require_shared(req.netns()?) };
        let prev = req.prev_for_check()?;
        let ifname = &req.env.ifname;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let rec = State::default_root()
            .get(&req.conf.name, &req.env.container_id, ifname)?
            .ok_or_else(|| {
                CniError::new(
                    code::KERNEL,
                    format!(
                        "no device was handed to container {} as {ifname}",
                        req.env.container_id
                    ),
                )
            })?;
        let mut ctr = Handle::new_in(&ns)?;
        let fail = |m: String| CniError::new(code::KERNEL, m);
        let link = ctr.link_by_name(ifname)?.ok_or_else(|| {
            fail(format!("device {} is not in the container as {ifname}", rec.original_name))
        })?;
        // A chained plugin (tuning) may have changed the MAC after us: the chain's result, not
        // our record, says what the interface should carry now.
        let expected_mac = prev
            .sandbox_interface(ifname)
            .and_then(|i| prev.interfaces[i].mac.as_deref())
            .and_then(netlink::parse_mac)
            .or(rec.mac);
        if expected_mac.is_some() && link.mac != expected_mac {
            return Err(fail(format!(
                "container interface {ifname} is not device {} (MAC differs)",
                rec.original_name
            )));
        }
        let have: Vec<ipnet::IpNet> =
            ctr.addresses(Some(link.index))?.into_iter().map(|(_, a)| a).collect();
        for ip in prev.container_ips(ifname) {
            if !have.contains(&ip.address) {
                return Err(fail(format!(
                    "container interface {ifname} lacks address {}",
                    ip.address
                )));
            }
        }
        if conf.has_ipam {
            ipam::check(req)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[cni::Attachment]) -> Result<(), CniError> {
        let conf = HostConf::from_request(req)?;
        if conf.device.is_some() {
            let state = State::default_root();
            let _lock = state.lock()?;
            state.sweep_temp_files();
            let mut host = Handle::new()?;
            for rec in cni::store::readable_for_gc("host", state.records(&req.conf.name)) {
                if cni::config::in_use(valid, &rec.container_id, &rec.ifname) {
                    continue;
                }
                let ns = rec.netns.as_deref().and_then(|p| Netns::open(p).ok());
                device::give_back(&rec, ns.as_ref(), &mut host)?;
                state.remove(&req.conf.name, &rec.container_id, &rec.ifname)?;
            }
        }
        if conf.has_ipam {
            ipam::gc(req, valid)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = HostConf::from_request(req)?;
        let Some(sel) = &conf.device else { return Ok(()) };
        let mut host = Handle::new()?;
        if let Err(e) = device::resolve(sel, &mut host, Path::new("/sys")) {
            let holder = State::default_root().all_records().into_iter().find(|r| match sel {
                Selector::Name(n) => &r.original_name == n,
                Selector::Mac(m) => r.mac.as_ref() == Some(m),
                _ => false,
            });
            return Err(CniError::not_available(match holder {
                Some(r) => format!(
                    "{} is handed to container {} (as {})",
                    sel.describe(),
                    r.container_id,
                    r.ifname
                ),
                None => e.msg,
            }));
        }
        if conf.has_ipam {
            ipam::status(req)?;
        }
        Ok(())
    }
}
