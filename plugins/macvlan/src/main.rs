//! `macvlan`: Docker's macvlan driver on CNI. Each container gets its own MAC on a parent
//! ("master") interface; the macvlan is created directly in the container namespace with its
//! final name. A master written `eth0.10` is created as an 802.1q sub-interface when missing
//! and removed with the last container using it (Docker's `parent` behaviour).
//!
//! ADD: validate -> master (maybe VLAN) -> IPAM -> macvlan + addresses + routes -> state;
//! any failure undoes what was done, in reverse.

mod config;
mod setup;
mod state;

use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::{parse_vlan_parent, MacvlanConf};
use netlink::{Handle, Netns};
use state::{AttachmentRecord, State};

struct MacvlanPlugin;

pub(crate) fn kernel(e: netlink::Error) -> CniError {
    CniError::new(code::KERNEL, e.to_string())
}

fn open_netns(req: &Request) -> Result<Netns, CniError> {
    let path = req.netns()?;
    Netns::open(path)
        .map_err(|e| CniError::unknown_container(format!("CNI_NETNS {}: {e}", path.display())))
}

const HOST_NS: &str = "the host namespace";
const CTR_NS: &str = "the container namespace (linkInContainer)";

impl Plugin for MacvlanPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let ns = open_netns(req)?;
        let ifname = &req.env.ifname;
        let state = State::default_root();
        let _lock = state.lock_network(&req.conf.name)?;
        let mut host = Handle::new().map_err(kernel)?;
        let mut ctr = Handle::new_in(&ns).map_err(kernel)?;
        if ctr.link_by_name(ifname).map_err(kernel)?.is_some() {
            return Err(CniError::config(format!(
                "container already has an interface named {ifname:?} (CNI_IFNAME)"
            )));
        }

        // The master, in the namespace it lives in. Nothing is created until it checks out,
        // except a missing VLAN sub-interface (undone below on any later failure).
        let user = setup::vlan_user(req);
        let master = if conf.link_in_container {
            let name = setup::master_name(&conf, &mut ctr, CTR_NS)?;
            setup::resolve_master(&mut ctr, &name, CTR_NS, None)?
        } else {
            let name = setup::master_name(&conf, &mut host, HOST_NS)?;
            if let Some(vp) = parse_vlan_parent(&name) {
                // A sub-interface to create: check the MTU against its parent before creating it.
                if host.link_by_name(&name).map_err(kernel)?.is_none() {
                    if let Some(parent) = host.link_by_name(&vp.link).map_err(kernel)? {
                        config::check_mtu(conf.mtu, &parent.name, parent.mtu)?;
                    }
                }
            }
            setup::resolve_master(&mut host, &name, HOST_NS, Some((&state, &user)))?
        };
        let release_vlan = |host: &mut Handle| {
            if let Some(v) = &master.vlan_ref {
                let _ = setup::release_vlan(host, &state, v, &user);
            }
        };
        if let Err(e) = config::check_mtu(conf.mtu, &master.link.name, master.link.mtu) {
            release_vlan(&mut host);
            return Err(e);
        }

        let allocated = if conf.has_ipam {
            match ipam::add(req) {
                Ok(r) => r,
                Err(e) => {
                    release_vlan(&mut host);
                    return Err(e);
                }
            }
        } else {
            CniResult::default()
        };
        let mut created = false;
        let outcome = setup::create_and_configure(
            req,
            &conf,
            &ns,
            &mut host,
            &mut ctr,
            &master.link,
            &allocated,
            &mut created,
        )
        .and_then(|result| {
            state.save_attachment(
                &req.conf.name,
                &AttachmentRecord {
                    container_id: req.env.container_id.clone(),
                    ifname: ifname.clone(),
                    netns: Some(ns.path().display().to_string()),
                    master: master.link.name.clone(),
                    vlan: master.vlan_ref.clone(),
                    link_in_container: conf.link_in_container,
                },
            )?;
            Ok(result)
        });
        match outcome {
            Ok(result) => Ok(result),
            Err(e) => {
                // Undo in reverse; the original error is what the runtime needs to see.
                if created {
                    if let Ok(Some(l)) = ctr.link_by_name(ifname) {
                        if l.kind.as_deref() == Some("macvlan") {
                            let _ = ctr.delete_link(l.index);
                        }
                    }
                }
                if conf.has_ipam {
                    let _ = ipam::del(req);
                }
                release_vlan(&mut host);
                let _ = state.remove_attachment(&req.conf.name, &req.env.container_id, ifname);
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let ifname = &req.env.ifname;
        let state = State::default_root();
        let _lock = state.lock_network(&req.conf.name)?;
        let record = state.attachment(&req.conf.name, &req.env.container_id, ifname);
        // The macvlan lives in the container namespace and dies with it: remove it only
        // when the namespace is still there.
        if let Some(Ok(ns)) = req.env.netns.as_deref().map(Netns::open) {
            let mut ctr = Handle::new_in(&ns).map_err(kernel)?;
            if let Some(link) = ctr.link_by_name(ifname).map_err(kernel)? {
                if link.kind.as_deref() == Some("macvlan") {
                    match ctr.delete_link(link.index) {
                        Err(e) if !e.is_not_found() => return Err(kernel(e)),
                        _ => {}
                    }
                }
            }
        }
        if conf.has_ipam {
            ipam::del(req)?;
        }
        if let Some(vlan) = record.as_ref().and_then(|r| r.vlan.clone()) {
            let mut host = Handle::new().map_err(kernel)?;
            setup::release_vlan(&mut host, &state, &vlan, &setup::vlan_user(req))?;
        }
        state.remove_attachment(&req.conf.name, &req.env.container_id, ifname)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        let prev = req
            .prev
            .as_ref()
            .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of ADD)"))?;
        let ns = open_netns(req)?;
        let mut ctr = Handle::new_in(&ns).map_err(kernel)?;
        let master = if conf.link_in_container {
            let name = setup::master_name(&conf, &mut ctr, CTR_NS)?;
            setup::resolve_master(&mut ctr, &name, CTR_NS, None)?.link
        } else {
            let mut host = Handle::new().map_err(kernel)?;
            let record = State::default_root().attachment(
                &req.conf.name,
                &req.env.container_id,
                &req.env.ifname,
            );
            let name = match record {
                Some(r) => r.master,
                None => setup::master_name(&conf, &mut host, HOST_NS)?,
            };
            setup::resolve_master(&mut host, &name, HOST_NS, None)?.link
        };
        // The parent index is only comparable when master and macvlan share a namespace
        // view: a master in the container namespace (linkInContainer) or the host's.
        setup::verify(req, &conf, &mut ctr, Some(&master), prev)?;
        if conf.has_ipam {
            ipam::check(req)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        MacvlanConf::from_request(req)?;
        let state = State::default_root();
        let _lock = state.lock_network(&req.conf.name)?;
        let mut host: Option<Handle> = None;
        for att in state.attachments(&req.conf.name) {
            if valid.iter().any(|v| v.container_id == att.container_id && v.ifname == att.ifname) {
                continue;
            }
            // The macvlan itself lives (and dies) with its namespace, which is the runtime's
            // to remove; what is ours is the state and the VLAN reference.
            if let Some(vlan) = &att.vlan {
                if host.is_none() {
                    host = Some(Handle::new().map_err(kernel)?);
                }
                let user = state::user_key(&req.conf.name, &att.container_id, &att.ifname);
                setup::release_vlan(host.as_mut().expect("opened above"), &state, vlan, &user)?;
            }
            state.remove_attachment(&req.conf.name, &att.container_id, &att.ifname)?;
        }
        if ipam_in(req)? {
            ipam::gc(req, valid)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = MacvlanConf::from_request(req)?;
        if !conf.link_in_container {
            // With linkInContainer the master is only visible from a container: nothing to check here.
            let mut host = Handle::new().map_err(kernel)?;
            let name = setup::master_name(&conf, &mut host, HOST_NS)
                .map_err(|e| CniError::not_available(e.msg))?;
            if host.link_by_name(&name).map_err(kernel)?.is_none() {
                match parse_vlan_parent(&name) {
                    Some(vp) if host.link_by_name(&vp.link).map_err(kernel)?.is_some() => {
                        if !setup::kernel_has_8021q() {
                            return Err(CniError::not_available(format!(
                                "master {name} does not exist and cannot be created: the kernel has no 802.1q support (modprobe 8021q)"
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

fn ipam_in(req: &Request) -> Result<bool, CniError> {
    config::ipam_configured(req)
}

fn main() {
    cni::run(&MacvlanPlugin)
}
