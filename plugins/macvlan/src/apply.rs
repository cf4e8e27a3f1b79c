//! Kernel effects of the macvlan plugin, through `crates/netlink` only: [`snapshot`] reads
//! the master and the container, [`apply`] carries out a plan (undoing what it created when a
//! step fails), [`remove_macvlan`] and [`release_vlan`] take things away for DEL and GC, and
//! [`verify`] is CHECK's comparison with the kernel.

use crate::config::{no_8021q_message, parse_vlan_parent, MacvlanConf, VlanParent};
use crate::plan::{Applied, LinkNow, Observed, ObservedLink, Plan, Snapshot};
use crate::state::{State, VlanRecord};
use cni::{code, CniError};
use netlink::{Handle, Netns};

/// The name of the interface carrying the default route of the handle's namespace (IPv4
/// first, then IPv6): the reference's default master.
pub fn default_route_interface(handle: &mut Handle) -> Result<Option<String>, CniError> {
    for v6 in [false, true] {
        let routes = handle.routes(v6)?;
        let mut defaults: Vec<_> =
            routes.iter().filter(|r| r.is_default() && r.oif.is_some()).collect();
        defaults.sort_by_key(|r| r.metric.unwrap_or(0));
        for r in defaults {
            if let Some(link) = handle.link_by_index(r.oif.expect("filtered"))? {
                return Ok(Some(link.name));
            }
        }
    }
    Ok(None)
}

/// The master's name: the configured one, or the default route's interface of the
/// namespace the master lives in.
pub fn master_name(conf: &MacvlanConf, handle: &mut Handle) -> Result<Option<String>, CniError> {
    match &conf.master {
        Some(m) => Ok(Some(m.clone())),
        None => default_route_interface(handle),
    }
}

/// Reads the master (in the host, or in the container with linkInContainer), the parent of a
/// missing VLAN master, whether the master is a VLAN we created, and the container's
/// CNI_IFNAME.
pub fn snapshot(
    conf: &MacvlanConf,
    state: &State,
    host: &mut Handle,
    ctr: &mut Handle,
    ifname: &str,
) -> Result<Snapshot, CniError> {
    let master_ns = if conf.link_in_container { &mut *ctr } else { &mut *host };
    let master_name = master_name(conf, master_ns)?;
    let mut snap = Snapshot::default();
    if let Some(name) = &master_name {
        snap.master = master_ns.link_by_name(name)?.as_ref().map(LinkNow::from);
        if !conf.link_in_container {
            match (&snap.master, parse_vlan_parent(name)) {
                (None, Some(vp)) => {
                    snap.vlan_parent = host.link_by_name(&vp.link)?.as_ref().map(LinkNow::from)
                }
                (Some(_), Some(_)) => snap.master_is_our_vlan = state.vlan(name)?.is_some(),
                _ => {}
            }
        }
    }
    snap.master_name = master_name;
    snap.container_link = ctr.link_by_name(ifname)?.as_ref().map(LinkNow::from);
    Ok(snap)
}

/// Creates and brings up `vp` on `parent`; a kernel without 802.1q gives the explanation.
/// Returns false when it existed already (created since the snapshot: not ours).
fn create_vlan(host: &mut Handle, vp: &VlanParent) -> Result<bool, CniError> {
    let parent = host.require_link(&vp.link)?;
    let created = match host.create_vlan(&vp.name, parent.index, vp.id) {
        Ok(()) => true,
        Err(e) if e.is_exists() => false,
        Err(e) if e.is_not_supported() => {
            return Err(
                CniError::new(code::KERNEL, no_8021q_message(vp)).with_details(e.to_string())
            );
        }
        Err(e) => {
            return Err(CniError::new(
                code::KERNEL,
                format!("cannot create VLAN sub-interface {} for master: {e}", vp.name),
            ));
        }
    };
    let link = host.require_link(&vp.name)?;
    if created {
        host.set_alias(link.index, &vlan_tag(&vp.name))?;
    }
    if !link.up {
        host.set_up(link.index)?;
    }
    Ok(created)
}

/// The alias of a VLAN sub-interface this plugin created.
pub fn vlan_tag(name: &str) -> String {
    cni::names::owner_tag("", "macvlan-vlan", name)
}

/// Best-effort per-interface sysctls in the container: gratuitous ARP on link up (macvlans
/// get new MACs the neighbours have not seen), and IPv6 enabled when IPv6 addresses come.
fn container_sysctls(ns: &Netns, ifname: &str, v6: bool) {
    let _ = netlink::with_netns(ns, || {
        let _ = netlink::sysctl_set(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
        if v6 {
            let _ = netlink::sysctl_set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0");
        }
    });
}

/// What [`apply`] reports besides the result: whether it created the VLAN sub-interface.
pub struct Outcome {
    pub applied: Applied,
    /// False when the plan said create but the sub-interface appeared meanwhile (not ours).
    pub vlan_is_ours: bool,
}

/// Carries out `plan`: the VLAN sub-interface when the master is one to create, then the
/// macvlan directly in the container namespace with its final name, tagged with its owner,
/// its addresses and routes. On failure the macvlan this call created is removed again (the
/// VLAN reference is the caller's to release, as DEL does).
pub fn apply(
    plan: &Plan,
    ns: &Netns,
    host: &mut Handle,
    ctr: &mut Handle,
) -> Result<Outcome, CniError> {
    let mut vlan_is_ours = plan.vlan_ref.is_some();
    if let Some(vp) = &plan.create_vlan {
        vlan_is_ours = create_vlan(host, vp)?;
    }
    let ifname = &plan.attachment.ifname;
    let made = if plan.link_in_container {
        let master = ctr.require_link(&plan.master)?;
        ctr.create_macvlan_with_queue(
            ifname,
            master.index,
            plan.mode,
            plan.mtu,
            plan.mac,
            None,
            plan.bc_queue_len,
        )
        .map(|_| master)
    } else {
        let master = host.require_link(&plan.master)?;
        host.create_macvlan_with_queue(
            ifname,
            master.index,
            plan.mode,
            plan.mtu,
            plan.mac,
            Some(ns),
            plan.bc_queue_len,
        )
        .map(|_| master)
    };
    if let Err(e) = &made {
        let why = match e.errno() {
            Some(libc::EBUSY) => " (a passthru macvlan, or an ipvlan, already uses this master)",
            Some(libc::EINVAL) => " (the master cannot carry macvlans, or a setting was refused)",
            Some(libc::EADDRINUSE) | Some(libc::EADDRNOTAVAIL) => {
                " (that MAC address is already used on this master)"
            }
            _ => "",
        };
        return Err(CniError::new(
            code::KERNEL,
            format!(
                "creating macvlan {ifname} on master {} in mode {}: {e}{why}",
                plan.master, plan.mode
            ),
        ));
    }
    let link = ctr.require_link(ifname)?;
    let configured = (|| -> Result<Applied, CniError> {
        ctr.set_alias(link.index, &plan.attachment.owner_tag())?;
        container_sysctls(ns, ifname, plan.has_v6());
        ipam::iface::configure(
            ctr,
            link.index,
            &plan.ips,
            &plan.routes,
            ipam::iface::Options { dad: false, up: true },
        )?;
        // Read back: the kernel picked the MAC (when none was asked for) and the MTU.
        let link = ctr.require_link(ifname)?;
        Ok(Applied { mac: link.mac, mtu: link.mtu })
    })();
    match configured {
        Ok(applied) => Ok(Outcome { applied, vlan_is_ours }),
        Err(e) => {
            let _ = ctr.delete_link(link.index);
            Err(e)
        }
    }
}

/// Deletes this attachment's macvlan in the container namespace at `netns` (when that still
/// exists), unless it is not a macvlan or its tag names another attachment.
pub fn remove_macvlan(
    netns: Option<&std::path::Path>,
    ifname: &str,
    tag: &str,
) -> Result<(), CniError> {
    let Some(Ok(ns)) = netns.map(Netns::open) else { return Ok(()) };
    let mut ctr = Handle::new_in(&ns)?;
    if let Some(link) = ctr.link_by_name(ifname)? {
        let ours = link.kind.as_deref() == Some("macvlan")
            && cni::names::may_own(link.alias.as_deref(), tag);
        if ours {
            match ctr.delete_link(link.index) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Drops an attachment's reference on a VLAN sub-interface; the last user deletes it (when
/// it is still a VLAN link carrying our tag, or none).
pub fn release_vlan(
    host: &mut Handle,
    state: &State,
    name: &str,
    user: &str,
) -> Result<(), CniError> {
    if state.vlan_remove_user(name, user)? {
        if let Some(link) = host.link_by_name(name)? {
            let tag = vlan_tag(name);
            let ours = link.kind.as_deref() == Some("vlan")
                && link.alias.as_deref().is_none_or(|a| a == tag);
            if ours {
                match host.delete_link(link.index) {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Records `user` on the VLAN sub-interface the plan references (before it is created).
pub fn hold_vlan(state: &State, plan: &Plan, user: &str) -> Result<(), CniError> {
    let Some(name) = &plan.vlan_ref else { return Ok(()) };
    let rec = match (&plan.create_vlan, state.vlan(name)?) {
        (_, Some(rec)) => rec,
        (Some(vp), None) => {
            VlanRecord { name: vp.name.clone(), link: vp.link.clone(), id: vp.id, users: vec![] }
        }
        (None, None) => return Ok(()),
    };
    state.vlan_add_user(&rec, user)
}

/// True when this kernel can make 802.1q links (module loaded, or present to be loaded).
pub fn kernel_has_8021q() -> bool {
    if std::path::Path::new("/sys/module/8021q").exists()
        || std::path::Path::new("/proc/net/vlan").exists()
    {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else { return false };
    let dir = std::path::Path::new("/lib/modules").join(release.trim()).join("kernel/net/8021q");
    std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// Reads what CHECK compares with the plan: the container interface (kind, mode, parent,
/// MAC, addresses, default routes) and the master's index.
pub fn observe(
    ctr: &mut Handle,
    ifname: &str,
    master: Option<&netlink::Link>,
) -> Result<Observed, CniError> {
    let mut seen = Observed { master_index: master.map(|m| m.index), ..Default::default() };
    let Some(link) = ctr.link_by_name(ifname)? else { return Ok(seen) };
    seen.link = Some(ObservedLink {
        kind: link.kind.clone(),
        mode: link.macvlan_mode,
        parent: link.link,
        mac: link.mac,
    });
    seen.addrs = ctr.addresses(Some(link.index))?.into_iter().map(|(_, a)| a).collect();
    for v6 in [false, true] {
        let found = ctr.routes(v6)?.iter().any(|r| r.is_default() && r.oif == Some(link.index));
        if v6 {
            seen.default_route_v6 = found;
        } else {
            seen.default_route_v4 = found;
        }
    }
    Ok(seen)
}
