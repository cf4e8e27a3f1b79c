//! `macvlan`: Docker's macvlan driver on CNI. Each container gets its own MAC on a parent
//! ("master") interface; the macvlan is created directly in the container namespace with its
//! final name. A master written `eth0.10` is created as an 802.1q sub-interface when missing
//! and removed with the last container using it (Docker's `parent` behaviour).
//!
//! ADD follows the suite's flow: `config` ([`config::MacvlanConf`]) -> `plan` from the config,
//! a snapshot of the master and the IPAM allocation ([`plan::plan`], pure) -> `apply`
//! ([`apply::apply`], undoing itself on failure) -> `record` ([`state`], written before the
//! objects it names are created). CHECK compares prevResult with the kernel.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use cni::{Attachment, CniError, CniResult, Plugin, Request};
use config::{parse_vlan_parent, MacvlanConf};
use netlink::Handle;
use state::{user_key, AttachmentRecord, State};

/// The plugin, run by the `macvlan` binary.
pub struct MacvlanPlugin;

/// Removes what an attachment's record names: its macvlan (when its namespace is still
/// there) and its reference on a VLAN sub-interface; then the record.
fn remove_attachment(
    network: &str,
    state: &State,
    host: &mut Handle,
    rec: &AttachmentRecord,
    netns: Option<&std::path::Path>,
) -> Result<(), CniError> {
    let tag = cni::names::owner_tag(network, &rec.container_id, &rec.ifname);
    apply::remove_macvlan(netns, &rec.ifname, &tag)?;
    if let Some(vlan) = &rec.vlan {
        apply::release_vlan(host, state, vlan, &user_key(network, &rec.container_id, &rec.ifname))?;
    }
    state.remove_attachment(network, &rec.container_id, &rec.ifname)
}

/// Plan, record the intent, apply, record the outcome; the caller rolls back on error.
#[allow(clippy::too_many_arguments)]
fn plan_apply_record(
    conf: &MacvlanConf,
    att: &plan::Attachment,
    ns: &netlink::Netns,
    state: &State,
    host: &mut Handle,
    ctr: &mut Handle,
    snap: &plan::Snapshot,
    allocated: &CniResult,
) -> Result<CniResult, CniError> {
    let p = plan::plan(conf, att, allocated, snap)?;
    state.save_attachment(&att.network, &p.record(true))?;
    apply::hold_vlan(state, &p, &plan::user(att))?;
    let outcome = apply::apply(&p, ns, host, ctr)?;
    let mut rec = p.record(false);
    if !outcome.vlan_is_ours {
        // The sub-interface appeared between snapshot and creation: someone else's.
        if let Some(name) = rec.vlan.take() {
            state.vlan_remove_user(&name, &plan::user(att))?;
        }
    }
    state.save_attachment(&att.network, &rec)?;
    Ok(p.result(&outcome.applied))
}

impl Plugin for MacvlanPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let att = plan::Attachment::of(req)?;
        let state = State::default_root();
        let _lock = state.lock()?;
        let mut host = Handle::new()?;
        let mut ctr = Handle::new_in(&ns)?;
        let mut snap = apply::snapshot(&conf, &state, &mut host, &mut ctr, &att.ifname)?;

        // A repeated ADD is refused before IPAM runs; a crashed ADD's leftovers go first.
        let existing = state.attachment(&att.network, &att.container_id, &att.ifname)?;
        match plan::Existing::of(
            existing.as_ref().map(|r| r.pending),
            snap.container_link.is_some(),
        ) {
            plan::Existing::Live => return Err(att.already_attached()),
            plan::Existing::Stale => {
                let rec = existing.expect("a stale attachment has a record");
                let netns = rec.netns.as_deref().map(std::path::Path::new);
                remove_attachment(&att.network, &state, &mut host, &rec, netns)?;
                snap = apply::snapshot(&conf, &state, &mut host, &mut ctr, &att.ifname)?;
            }
            plan::Existing::None => {}
        }
        plan::preflight(&conf, &att, &snap)?;

        let allocation =
            if conf.has_ipam { ipam::allocate(req)? } else { ipam::Allocation::none() };
        let outcome = plan_apply_record(
            &conf,
            &att,
            &ns,
            &state,
            &mut host,
            &mut ctr,
            &snap,
            &allocation.result,
        );
        if outcome.is_err() {
            // Undo in reverse; the original error is what the runtime needs to see.
            if let Err(e) = ipam::rollback(req, &allocation) {
                eprintln!("macvlan: releasing the addresses of a failed ADD: {e}");
            }
            if let Ok(Some(rec)) = state.attachment(&att.network, &att.container_id, &att.ifname) {
                if let Err(e) = remove_attachment(&att.network, &state, &mut host, &rec, None) {
                    eprintln!("macvlan: cleaning up a failed ADD: {e}");
                }
            }
        }
        outcome
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let (id, ifname) = (&req.env.container_id, &req.env.ifname);
        let state = State::default_root();
        let _lock = state.lock()?;
        let record = match state.attachment(&req.conf.name, id, ifname) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("macvlan: {e}; removing the interface named by CNI_IFNAME");
                None
            }
        };
        let record = record.unwrap_or_else(|| AttachmentRecord {
            container_id: id.clone(),
            ifname: ifname.clone(),
            netns: None,
            master: String::new(),
            vlan: None,
            link_in_container: false,
            pending: false,
        });
        // The macvlan lives in the container namespace and dies with it: removed only when
        // the namespace is still there.
        let mut host = Handle::new()?;
        let tag = cni::names::owner_tag(&req.conf.name, id, ifname);
        apply::remove_macvlan(req.env.netns.as_deref(), ifname, &tag)?;
        if conf.has_ipam {
            ipam::del(req)?;
        }
        remove_attachment(&req.conf.name, &state, &mut host, &record, None)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let prev = req.prev_for_check()?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let mut ctr = Handle::new_in(&ns)?;
        let state = State::default_root();
        let mut host = Handle::new()?;
        let master_ns = if conf.link_in_container { &mut ctr } else { &mut host };
        let recorded = if conf.link_in_container {
            None
        } else {
            state.attachment(&req.conf.name, &req.env.container_id, &req.env.ifname)?
        };
        let name = match recorded {
            Some(r) => Some(r.master),
            None => apply::master_name(&conf, master_ns)?,
        };
        let name = name.ok_or_else(|| {
            CniError::config(
                "no \"master\" given and no default route to pick one from: set \"master\" to the \
                parent interface",
            )
        })?;
        let master = master_ns.link_by_name(&name)?.ok_or_else(|| {
            CniError::bad_value("master", format!("{name:?}"), "no such interface")
        })?;
        // The parent index is only comparable when master and macvlan share a namespace
        // view: a master in the container namespace (linkInContainer) or the host's.
        let att = plan::Attachment::of(req)?;
        let p = plan::plan_for_check(&conf, &att, prev, name);
        let seen = apply::observe(&mut ctr, &att.ifname, Some(&master))?;
        if let Some(problem) = p.differences(&seen).into_iter().next() {
            return Err(CniError::new(cni::code::KERNEL, problem));
        }
        if conf.has_ipam {
            ipam::check(req)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let state = State::default_root();
        let _lock = state.lock()?;
        state.sweep_temp_files();
        let mut host = Handle::new()?;
        for att in cni::store::readable_for_gc("macvlan", state.attachments(&req.conf.name)) {
            if cni::config::in_use(valid, &att.container_id, &att.ifname) {
                continue;
            }
            // The runtime forgot it: its macvlan (if its namespace is still there), its VLAN
            // reference and its record go.
            let netns = att.netns.as_deref().map(std::path::Path::new);
            remove_attachment(&req.conf.name, &state, &mut host, &att, netns)?;
        }
        if conf.has_ipam {
            ipam::gc(req, valid)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        if !conf.link_in_container {
            // With linkInContainer the master is only visible from a container: nothing to check
            // here.
            let mut host = Handle::new()?;
            let name = apply::master_name(&conf, &mut host)?.ok_or_else(|| {
                CniError::not_available(
                    "no \"master\" given and the host namespace has no default route to pick one \
                    from",
                )
            })?;
            if host.link_by_name(&name)?.is_none() {
                match parse_vlan_parent(&name) {
                    Some(vp) if host.link_by_name(&vp.link)?.is_some() => {
                        if !apply::kernel_has_8021q() {
                            return Err(CniError::not_available(format!(
                                "master {name} does not exist and cannot be created: the kernel \
                                has no 802.1q support (modprobe 8021q)"
                            )));
                        }
                    }
                    Some(vp) => {
                        return Err(CniError::not_available(format!(
                            "master {name} does not exist, nor its parent {} in the host namespace",
                            vp.link
                        )));
                    }
                    None => {
                        return Err(CniError::not_available(format!(
                            "master {name} does not exist in the host namespace"
                        )));
                    }
                }
            }
        }
        if conf.has_ipam {
            ipam::status(req)?;
        }
        Ok(())
    }
}
