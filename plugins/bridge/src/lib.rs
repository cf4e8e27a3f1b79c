//! `bridge`: Docker's bridge networks on CNI. A Linux bridge per network, a veth per
//! container (created directly in the container namespace with its final name), a gateway
//! address on the bridge, outbound NAT, and isolation between networks.
//!
//! Every verb follows one flow:
//! - `config` parses and validates ([`config::BridgeConf`]);
//! - `plan` decides from the config, the IPAM allocation and a snapshot of the kernel
//!   ([`plan::plan`], pure);
//! - `apply` makes the kernel match, undoing itself on failure ([`apply::apply`]; the
//!   firewall through [`rules`]);
//! - `record` keeps what DEL and GC need ([`state`]), written before the objects it names
//!   are created.
//!
//! CHECK compares the plan with the kernel.

pub mod apply;
pub mod config;
pub mod plan;
pub mod rules;
pub mod state;

use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::BridgeConf;
use netlink::Handle;
use state::{bridge_tag, host_veth_name, AttachmentRecord, NetworkRecord, NetworkState};

/// The plugin, run by the `bridge` binary.
pub struct BridgePlugin;

/// After the last attachment left: the network's rules go (with the backend that programmed
/// them), then the bridge if we created it and nothing else is plugged into it, then the
/// network record. A network without a record never had anything programmed.
fn teardown_network(
    req: &Request,
    conf: &BridgeConf,
    state: &NetworkState,
    host: &mut Handle,
) -> Result<(), CniError> {
    let record = match state.network() {
        Ok(None) => return Ok(()),
        Ok(Some(r)) => Some(r),
        Err(e) => {
            // Unreadable: remove the rules with the configured backend, leave the bridge.
            eprintln!("bridge: {e}; removing the network's rules with the configured backend");
            None
        }
    };
    rules::remove(&req.conf.name, record.as_ref(), conf)?;
    if let Some(rec) = record.as_ref().filter(|r| r.created_bridge) {
        apply::remove_bridge(host, &rec.bridge, &bridge_tag(&req.conf.name, &rec.bridge))?;
    }
    state.remove_network()
}

/// The network record before this ADD changes anything (intent first): the bridge and
/// whether we are about to create it, the firewall backend, and the rules about to change.
fn network_intent(
    req: &Request,
    conf: &BridgeConf,
    previous: Option<&NetworkRecord>,
    p: &plan::Plan,
    want: &Option<firewall::NetworkRules>,
) -> Result<NetworkRecord, CniError> {
    let base = match previous {
        Some(prev) if prev.bridge == conf.bridge => {
            NetworkRecord { created_bridge: prev.created_bridge || p.bridge.create, ..prev.clone() }
        }
        _ => NetworkRecord {
            network: req.conf.name.clone(),
            bridge: conf.bridge.clone(),
            created_bridge: p.bridge.create,
            subnets: Vec::new(),
            internal: conf.internal,
            firewall: previous.map(|r| r.firewall.clone()).unwrap_or_default(),
            rules: previous.map(|r| r.rules.clone()).unwrap_or_default(),
        },
    };
    let mut rec = rules::intent(&base, want, conf)?;
    rec.network = req.conf.name.clone();
    rec.internal = conf.internal;
    for net in &p.subnets {
        if !rec.subnets.contains(net) {
            rec.subnets.push(*net);
        }
    }
    Ok(rec)
}

/// Steps 3-5 of ADD (plan, apply, record) once IPAM has allocated; the caller rolls back.
fn plan_apply_record(
    req: &Request,
    conf: &BridgeConf,
    ns: &netlink::Netns,
    host: &mut Handle,
    state: &NetworkState,
    snap: &plan::Snapshot,
    allocated: &CniResult,
) -> Result<CniResult, CniError> {
    let att = plan::Attachment::of(req)?;
    let p = plan::plan(conf, &att, allocated, snap, netlink::random_mac(), netlink::random_mac())?;
    let want = rules::plan(&req.conf.name, conf, &p.subnets);
    let previous = state.network()?;
    let intent = network_intent(req, conf, previous.as_ref(), &p, &want)?;
    if previous.as_ref() != Some(&intent) {
        state.save_network(&intent)?;
    }
    state.save_attachment(&p.record(true))?;
    cni::trace::mark("bridge:intent-written");

    let applied = apply::apply(&p, ns, host)?;
    cni::trace::mark("bridge:links");
    let mut done = rules::ensure(&intent, &want, conf)?;
    cni::trace::mark("bridge:firewall");
    if p.bridge.create
        && host.link_by_name(&conf.bridge)?.and_then(|l| l.alias).as_deref()
            != Some(p.bridge.tag.as_str())
    {
        // Another process created the bridge between snapshot and apply: not ours.
        done.created_bridge = previous.as_ref().is_some_and(|r| r.created_bridge);
    }
    if done != intent {
        state.save_network(&done)?;
    }
    state.save_attachment(&p.record(false))?;
    cni::trace::mark("bridge:state");
    Ok(p.result(&applied))
}

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        // 1. config
        let conf = BridgeConf::from_request(req)?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let att = plan::Attachment::of(req)?;
        let state = NetworkState::new(&req.conf.name);
        let _lock = state.lock()?;
        let mut host = Handle::new()?;
        let mut ctr = Handle::new_in(&ns)?;
        let veth = host_veth_name(&att.network, &att.container_id, &att.ifname);
        let mut snap = apply::snapshot(&mut host, &mut ctr, &conf.bridge, &att.ifname, &veth)?;

        // A repeated ADD is refused before IPAM runs, so it cannot release the live lease;
        // leftovers of an ADD that died (or of a container whose interface is gone) go first.
        let existing = state.attachment(&att.container_id, &att.ifname)?;
        match plan::Existing::of(
            existing.as_ref().map(|r| r.pending),
            snap.container_link.is_some(),
        ) {
            plan::Existing::Live => return Err(att.already_attached()),
            plan::Existing::Stale => {
                let rec = existing.expect("a stale attachment has a record");
                apply::remove_attachment(&mut host, &att.network, &rec)?;
                state.remove_attachment(&att.container_id, &att.ifname)?;
                snap = apply::snapshot(&mut host, &mut ctr, &conf.bridge, &att.ifname, &veth)?;
            }
            plan::Existing::None => {}
        }
        plan::preflight(&conf, &att, &snap)?;

        // 2. IPAM, then plan, apply and record; a failure releases only what this call leased.
        cni::trace::mark("bridge:config");
        let allocation =
            if conf.has_ipam { ipam::allocate(req)? } else { ipam::Allocation::none() };
        cni::trace::mark("bridge:ipam");
        let outcome =
            plan_apply_record(req, &conf, &ns, &mut host, &state, &snap, &allocation.result);
        if outcome.is_err() {
            if let Err(e) = ipam::rollback(req, &allocation) {
                eprintln!("bridge: releasing the addresses of a failed ADD: {e}");
            }
            let _ = state.remove_attachment(&att.container_id, &att.ifname);
            if !state.has_attachments() {
                if let Err(e) = teardown_network(req, &conf, &state, &mut host) {
                    eprintln!("bridge: removing the network after a failed ADD: {e}");
                }
            }
        }
        outcome
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        let (id, ifname) = (&req.env.container_id, &req.env.ifname);
        let state = NetworkState::new(&req.conf.name);
        let _lock = state.lock()?;
        let record = match state.attachment(id, ifname) {
            Ok(r) => r,
            Err(e) => {
                // DEL must go on: the stable name and prevResult find what the record named.
                eprintln!("bridge: {e}; removing what the stable names find");
                None
            }
        };
        let record = record.unwrap_or_else(|| {
            // Without a record: the host veth by its stable name, the guard's MAC from the
            // container interface in prevResult.
            let mac_guard = req.prev.as_ref().and_then(|prev| {
                let i = prev.sandbox_interface(ifname)?;
                prev.interfaces[i].mac.clone().filter(|_| conf.macspoofchk)
            });
            AttachmentRecord {
                container_id: id.clone(),
                ifname: ifname.clone(),
                host_veth: host_veth_name(&req.conf.name, id, ifname),
                netns: None,
                ips: Vec::new(),
                mac_guard,
                pending: false,
            }
        });
        let mut host = Handle::new()?;
        cni::trace::mark("bridge:state-read");
        apply::remove_attachment(&mut host, &req.conf.name, &record)?;
        cni::trace::mark("bridge:links");
        if conf.has_ipam {
            ipam::del(req)?;
        }
        cni::trace::mark("bridge:ipam");
        state.remove_attachment(id, ifname)?;
        cni::trace::mark("bridge:state");
        if !state.has_attachments() {
            teardown_network(req, &conf, &state, &mut host)?;
            cni::trace::mark("bridge:teardown");
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        let prev = req.prev_for_check()?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let att = plan::Attachment::of(req)?;
        let mut p = plan::plan_for_check(&conf, &att, prev)?;
        let state = NetworkState::new(&req.conf.name);
        if let Some(rec) = state.attachment(&att.container_id, &att.ifname)? {
            // Attachments made before stable names changed keep their recorded host veth.
            p.veth.host = rec.host_veth;
        }
        let mut host = Handle::new()?;
        let mut ctr = Handle::new_in(&ns)?;
        let (seen, container_link) = apply::observe(&mut host, &mut ctr, &p)?;
        if let Some(problem) = p.differences(&seen).into_iter().next() {
            return Err(CniError::new(code::KERNEL, problem));
        }
        if conf.macspoofchk {
            let mac = container_link.and_then(|l| l.mac).ok_or_else(|| {
                CniError::new(
                    code::KERNEL,
                    format!("container interface {} has no MAC", att.ifname),
                )
            })?;
            rules::check_mac(&p.veth.host, &mac)?;
        }
        rules::check(&rules::plan(&req.conf.name, &conf, &p.subnets), &conf)?;
        if conf.has_ipam {
            ipam::check(req)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        let state = NetworkState::new(&req.conf.name);
        let _lock = state.lock()?;
        // Temp files of writers killed before their rename.
        state.sweep_temp_files();
        let mut host = Handle::new()?;
        for att in cni::store::readable_for_gc("bridge", state.attachments()) {
            if cni::config::in_use(valid, &att.container_id, &att.ifname) {
                continue;
            }
            apply::remove_attachment(&mut host, &req.conf.name, &att)?;
            state.remove_attachment(&att.container_id, &att.ifname)?;
        }
        if conf.has_ipam {
            ipam::gc(req, valid)?;
        }
        if !state.has_attachments() {
            teardown_network(req, &conf, &state, &mut host)?;
        }
        // Rules lost behind our back (a firewall reload): GC puts every network's back.
        rules::restore_if_lost(&conf)?;
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        rules::status(&conf)?;
        let state = NetworkState::new(&req.conf.name);
        if let Some(rec) = state.network()? {
            if state.has_attachments() {
                let mut host = Handle::new()?;
                if host.link_by_name(&rec.bridge)?.is_none() {
                    return Err(CniError::new(
                        code::LIMITED_CONNECTIVITY,
                        format!(
                            "bridge {} of network {} is missing: its containers have no \
                            connectivity",
                            rec.bridge, req.conf.name
                        ),
                    ));
                }
            }
        }
        if conf.has_ipam {
            ipam::status(req)?;
        }
        Ok(())
    }
}
