//! `bandwidth`: the reference meta plugin, chained after `bridge` (or `ptp`). Traffic to the
//! container is shaped by a tbf at the root of the host-side veth; traffic from the container
//! enters the host through that veth, where an ingress qdisc and a u32 filter with a mirred
//! action redirect it to an ifb device whose root tbf shapes it. All through netlink.
//!
//! config (`config`) -> plan (`plan::plan`, pure) -> record (`state`) -> apply with undo
//! (`apply`). DEL removes the qdiscs and the ifb (what is already gone is fine); CHECK compares
//! the plan with the kernel.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use apply::{apply, host_veth, ignore_gone, remove_ifb, teardown};
use cni::store::{attachment_key, FileLock, Store};
use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::BandwidthConf;
use netlink::{Handle, Psched};
use plan::{differences, ifb_name, plan, Observed};
use state::{store, Record};

/// The plugin, run by the `bandwidth` binary.
pub struct BandwidthPlugin;

/// What ADD and DEL of one attachment work with: the store, locked for the whole call, the
/// attachment's record key and owner tag, and a netlink handle on the host namespace.
struct Call {
    store: Store,
    _lock: FileLock,
    network: String,
    file: String,
    owner: String,
    h: Handle,
}

impl Call {
    fn begin(req: &Request) -> Result<Call, CniError> {
        let store = store();
        let _lock = store.lock()?;
        Ok(Call {
            network: req.conf.name.clone(),
            file: attachment_key(&req.env.container_id, &req.env.ifname),
            owner: cni::names::owner_tag(&req.conf.name, &req.env.container_id, &req.env.ifname),
            h: Handle::new()?,
            store,
            _lock,
        })
    }

    /// The key of this attachment's record.
    fn key(&self) -> [&str; 2] {
        [&self.network, &self.file]
    }
}

fn no_prev_result() -> CniError {
    CniError::config(
        "bandwidth must be chained after a plugin that creates the interface (no prevResult)",
    )
}

impl Plugin for BandwidthPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = BandwidthConf::from_request(req)?;
        if conf.is_empty() {
            return Ok(req.prev.clone().unwrap_or_default());
        }
        let mut result = req.prev.clone().ok_or_else(no_prev_result)?;
        let psched = Psched::read()?;
        let plan = plan(&conf, &req.conf.name, &req.env.container_id, &psched)?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let (host_veth, host_index, _) = host_veth(&result, &req.env.ifname, &ns)?;

        let mut call = Call::begin(req)?;
        // A repeated ADD replaces what the earlier one made.
        if let Some(earlier) = call.store.get::<Record>(&call.key())? {
            teardown(&mut call.h, &earlier, &call.owner)?;
        }
        let rec = Record {
            network: req.conf.name.clone(),
            container_id: req.env.container_id.clone(),
            ifname: req.env.ifname.clone(),
            host_veth,
            host_index,
            ingress: plan.ingress.is_some(),
            ifb: plan.egress.as_ref().map(|(n, _)| n.clone()),
        };
        // Recorded first: a crash halfway still lets DEL find what to remove.
        call.store.put(&call.key(), &rec)?;
        match apply(&mut call.h, &plan, &rec, &call.owner) {
            Ok(ifb) => {
                result.interfaces.extend(ifb);
                Ok(result)
            }
            Err(e) => {
                call.store.delete(&call.key())?;
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let mut call = Call::begin(req)?;
        match call.store.get::<Record>(&call.key()) {
            Ok(Some(rec)) => teardown(&mut call.h, &rec, &call.owner)?,
            // Without a record (made by the reference, or the record is unreadable) do what the
            // reference's DEL does: remove the ifb its name formula gives.
            other => {
                if let Err(e) = other {
                    eprintln!("bandwidth: dropping unreadable state: {}", e.msg);
                }
                let ifb = ifb_name(&req.conf.name, &req.env.container_id);
                remove_ifb(&mut call.h, &ifb, &call.owner)?;
            }
        }
        call.store.delete(&call.key())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = BandwidthConf::from_request(req)?;
        let prev = req.prev.as_ref().ok_or_else(no_prev_result)?;
        if conf.is_empty() {
            return Ok(());
        }
        let plan = plan(&conf, &req.conf.name, &req.env.container_id, &Psched::read()?)?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let (host_veth, host_index, _) = host_veth(prev, &req.env.ifname, &ns)?;
        let mut h = Handle::new()?;
        let qdiscs = h.qdiscs(host_index)?;
        let ifb = match &plan.egress {
            None => None,
            Some((name, _)) => match h.link_by_name(name)? {
                Some(l) => {
                    let root = h.qdiscs(l.index)?.into_iter().find(|q| q.is_root());
                    Some((l.index, root))
                }
                None => None,
            },
        };
        let now = Observed {
            host_root: qdiscs.iter().find(|q| q.is_root()).cloned(),
            host_ingress: qdiscs.iter().any(|q| q.kind == "ingress"),
            redirects: h.ingress_redirect_targets(host_index)?,
            ifb,
        };
        let diffs = differences(&plan, &host_veth, &now);
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(code::KERNEL, format!("bandwidth CHECK: {}", diffs.join("; "))))
        }
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let network = req.conf.name.as_str();
        let store = store();
        let _lock = store.lock()?;
        let mut h = Handle::new()?;
        let listing = store.list_lenient::<Record>(&[network]);
        for r in cni::store::readable_or_dropped("bandwidth", listing)? {
            if !cni::config::in_use(valid, &r.container_id, &r.ifname) {
                let owner = cni::names::owner_tag(network, &r.container_id, &r.ifname);
                teardown(&mut h, &r, &owner)?;
                store.delete(&[network, &attachment_key(&r.container_id, &r.ifname)])?;
            }
        }
        cni::store::remove_dir_if_empty(&store.dir_path(&[network]));
        // ifbs of this network whose record is gone (a state directory wiped or edited by
        // hand): found by their owner tag.
        let prefix = cni::names::owner_tag(network, "", "");
        let prefix = prefix.trim_end_matches('/').to_string() + "/";
        let wanted: Vec<String> = valid
            .iter()
            .map(|v| cni::names::owner_tag(network, &v.container_id, &v.ifname))
            .collect();
        for ifb in h.links_of_kind("ifb")? {
            if let Some(alias) = ifb.alias.as_deref() {
                if alias.starts_with(&prefix) && !wanted.iter().any(|w| w == alias) {
                    ignore_gone(h.delete_link(ifb.index))?;
                }
            }
        }
        store.sweep_temp_files();
        Ok(())
    }
}
