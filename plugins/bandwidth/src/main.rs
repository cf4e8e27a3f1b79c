//! `bandwidth`: the reference meta plugin, chained after `bridge` (or `ptp`). Traffic to the
//! container is shaped by a tbf at the root of the host-side veth; traffic from the container
//! enters the host through that veth, where an ingress qdisc and a u32 filter with a mirred
//! action redirect it to an ifb device whose root tbf shapes it. All through netlink.
//!
//! config -> plan (`plan::plan`, pure) -> record -> apply with undo. DEL removes the qdiscs and
//! the ifb (what is already gone is fine); CHECK compares the plan with the kernel.

mod config;
mod plan;

use cni::store::Store;
use cni::{code, Attachment, CniError, CniResult, Interface, Plugin, Request};
use config::BandwidthConf;
use netlink::{format_mac, Handle, Psched, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
use plan::{differences, ifb_name, plan, Observed, Plan};
use serde::{Deserialize, Serialize};

struct Bandwidth;

/// What one attachment's ADD created: what DEL removes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    /// The host-side veth and its index (a veth re-created under the same name is not ours).
    host_veth: String,
    host_index: u32,
    /// A tbf was put at the root of the host-side veth.
    ingress: bool,
    /// The ifb made for egress shaping (plus the ingress qdisc on the host-side veth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ifb: Option<String>,
}

fn store() -> Store {
    Store::for_plugin("bandwidth")
}

fn record_key<'a>(network: &'a str, file: &'a str) -> [&'a str; 2] {
    [network, file]
}

fn record_file(container_id: &str, ifname: &str) -> String {
    format!("{container_id}_{ifname}")
}

fn owner(req: &Request) -> String {
    cni::names::owner_tag(&req.conf.name, &req.env.container_id, &req.env.ifname)
}

/// The host-side veth: the peer of the container's CNI_IFNAME, which must be an interface
/// of prevResult without a sandbox (the reference's rule). Returns (name, index, mtu).
fn host_veth(
    prev: &CniResult,
    ifname: &str,
    ns: &netlink::Netns,
) -> Result<(String, u32, u32), CniError> {
    let chain_hint = "bandwidth shapes the host end of a veth: chain it after bridge or ptp";
    let ctr = Handle::new_in(ns)?.link_by_name(ifname)?.ok_or_else(|| {
        CniError::config(format!(
            "the container has no interface {ifname:?} (CNI_IFNAME); {chain_hint}"
        ))
    })?;
    let peer = match (ctr.kind.as_deref(), ctr.link) {
        (Some("veth"), Some(peer)) => peer,
        (kind, _) => {
            return Err(CniError::config(format!(
                "the container's {ifname} is not a veth (kind {}); {chain_hint}",
                kind.unwrap_or("none")
            )))
        }
    };
    // IFLA_LINK is an index in the peer's namespace: make sure the link found here really is
    // the other end (a veth pointing back at the container's interface) and is in prevResult.
    let host = Handle::new()?.link_by_index(peer)?;
    match host {
        Some(h)
            if h.kind.as_deref() == Some("veth")
                && h.link == Some(ctr.index)
                && prev.interfaces.iter().any(|i| i.sandbox.is_none() && i.name == h.name) =>
        {
            Ok((h.name, h.index, h.mtu))
        }
        _ => Err(CniError::config(format!(
            "the peer of the container's {ifname} is not a host interface of prevResult in this namespace; {chain_hint}"
        ))),
    }
}

/// Removes an ifb called `name` when it is ours (our owner tag) or untagged (the reference
/// makes its ifbs without one); one with another owner's tag is left alone.
fn remove_ifb(h: &mut Handle, name: &str, owner: &str) -> Result<(), CniError> {
    let Some(link) = h.link_by_name(name)? else { return Ok(()) };
    if link.kind.as_deref() != Some("ifb") {
        return Ok(());
    }
    match link.alias.as_deref() {
        None => {}
        Some(a) if a == owner => {}
        Some(other) => {
            eprintln!("bandwidth: leaving ifb {name}: it belongs to {other}, not {owner}");
            return Ok(());
        }
    }
    match h.delete_link(link.index) {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Undoes what `rec` says was made; whatever is already gone is fine.
fn teardown(h: &mut Handle, rec: &Record, owner: &str) -> Result<(), CniError> {
    let host = h.link_by_index(rec.host_index)?.filter(|l| l.name == rec.host_veth);
    if let Some(host) = host {
        let qdiscs = h.qdiscs(host.index)?;
        let ours = |q: &&netlink::Qdisc| q.is_root() && q.kind == "tbf" && q.handle == TBF_HANDLE;
        if rec.ingress && qdiscs.iter().any(|q| ours(&q)) {
            ignore_gone(h.delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE))?;
        }
        if let Some(ifb) = &rec.ifb {
            let ifb_index = h.link_by_name(ifb)?.map(|l| l.index);
            let targets = h.ingress_redirect_targets(host.index)?;
            // Only an ingress qdisc that redirects nowhere else than our ifb is ours to remove.
            let ours = targets.iter().all(|t| Some(*t) == ifb_index || ifb_index.is_none());
            if ours && qdiscs.iter().any(|q| q.kind == "ingress") {
                ignore_gone(h.delete_qdisc(host.index, TC_H_INGRESS, INGRESS_HANDLE))?;
            }
        }
    }
    if let Some(ifb) = &rec.ifb {
        remove_ifb(h, ifb, owner)?;
    }
    Ok(())
}

fn ignore_gone(r: netlink::Result<()>) -> Result<(), CniError> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// What `apply` made, newest last: undone in reverse when a later step fails.
enum Made {
    RootTbf(u32),
    Ifb(u32),
    IngressQdisc(u32),
}

fn undo(h: &mut Handle, made: Vec<Made>) {
    for m in made.into_iter().rev() {
        let r = match m {
            Made::RootTbf(i) => h.delete_qdisc(i, TC_H_ROOT, TBF_HANDLE),
            Made::IngressQdisc(i) => h.delete_qdisc(i, TC_H_INGRESS, INGRESS_HANDLE),
            Made::Ifb(i) => h.delete_link(i),
        };
        if let Err(e) = r.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) }) {
            eprintln!("bandwidth: undoing a failed ADD: {e}");
        }
    }
}

/// Builds the plan on the host-side veth; on failure removes exactly what it made.
fn apply(
    h: &mut Handle,
    plan: &Plan,
    rec: &Record,
    owner: &str,
) -> Result<Option<Interface>, CniError> {
    let host = rec.host_index;
    let busy = |what: &str, e: netlink::Error| -> CniError {
        if e.is_exists() {
            CniError::new(
                code::KERNEL,
                format!("{} already has {what} that this plugin did not make (other traffic shaping on it?): {e}", rec.host_veth),
            )
        } else {
            e.into()
        }
    };
    let mut made = Vec::new();
    let result = (|| -> Result<Option<Interface>, CniError> {
        if let Some(tbf) = &plan.ingress {
            h.add_tbf(host, tbf).map_err(|e| busy("a root qdisc", e))?;
            made.push(Made::RootTbf(host));
        }
        let Some((name, tbf)) = &plan.egress else { return Ok(None) };
        if let Some(existing) = h.link_by_name(name)? {
            let stale = existing.kind.as_deref() == Some("ifb")
                && existing.alias.as_deref().is_none_or(|a| a == owner);
            if !stale {
                return Err(CniError::new(
                    code::KERNEL,
                    format!(
                        "an interface named {name} already exists (kind {}, owner {}); it is not this container's ifb",
                        existing.kind.as_deref().unwrap_or("none"),
                        existing.alias.as_deref().unwrap_or("unknown")
                    ),
                ));
            }
            // Left by an earlier ADD of this same container (ours, or the reference's).
            h.delete_link(existing.index)?;
        }
        let mtu = h.link_by_index(host)?.map(|l| l.mtu).unwrap_or(1500);
        let ifb = h.create_ifb(name, mtu, owner)?;
        made.push(Made::Ifb(ifb.index));
        h.add_tbf(ifb.index, tbf)?;
        h.add_ingress_qdisc(host).map_err(|e| busy("an ingress qdisc", e))?;
        made.push(Made::IngressQdisc(host));
        h.add_ingress_redirect(host, ifb.index)?;
        Ok(Some(Interface {
            name: name.clone(),
            mac: ifb.mac.map(|m| format_mac(&m)),
            ..Interface::default()
        }))
    })();
    if result.is_err() {
        undo(h, made);
    }
    result
}

fn no_prev_result() -> CniError {
    CniError::config(
        "bandwidth must be chained after a plugin that creates the interface (no prevResult)",
    )
}

impl Plugin for Bandwidth {
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

        let store = store();
        let file = record_file(&req.env.container_id, &req.env.ifname);
        let key = record_key(&req.conf.name, &file);
        let _lock = store.lock()?;
        let owner = owner(req);
        let mut h = Handle::new()?;
        // A repeated ADD replaces what the earlier one made.
        if let Some(earlier) = store.get::<Record>(&key)? {
            teardown(&mut h, &earlier, &owner)?;
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
        store.put(&key, &rec)?;
        match apply(&mut h, &plan, &rec, &owner) {
            Ok(ifb) => {
                result.interfaces.extend(ifb);
                Ok(result)
            }
            Err(e) => {
                store.delete(&key)?;
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let store = store();
        let file = record_file(&req.env.container_id, &req.env.ifname);
        let key = record_key(&req.conf.name, &file);
        let _lock = store.lock()?;
        let owner = owner(req);
        let mut h = Handle::new()?;
        match store.get::<Record>(&key) {
            Ok(Some(rec)) => teardown(&mut h, &rec, &owner)?,
            // Without a record (made by the reference, or the record is unreadable) do what the
            // reference's DEL does: remove the ifb its name formula gives.
            other => {
                if let Err(e) = other {
                    eprintln!("bandwidth: dropping unreadable state: {}", e.msg);
                }
                remove_ifb(&mut h, &ifb_name(&req.conf.name, &req.env.container_id), &owner)?;
            }
        }
        store.delete(&key)
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
        let keep = |cid: &str, ifname: &str| {
            valid.iter().any(|v| v.container_id == cid && v.ifname == ifname)
        };
        for (path, rec) in store.list_lenient::<Record>(&[network]) {
            match rec {
                Ok(r) if keep(&r.container_id, &r.ifname) => {}
                Ok(r) => {
                    let owner = cni::names::owner_tag(network, &r.container_id, &r.ifname);
                    teardown(&mut h, &r, &owner)?;
                    store.delete(&record_key(network, &record_file(&r.container_id, &r.ifname)))?;
                }
                Err(e) => {
                    eprintln!("bandwidth: GC drops unreadable state: {}", e.msg);
                    cni::store::remove_if_exists(&path)
                        .map_err(|e| cni::store::io_error("removing", &path, e))?;
                }
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

fn main() {
    cni::run(&Bandwidth)
}
