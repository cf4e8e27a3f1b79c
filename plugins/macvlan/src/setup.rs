//! Kernel effects of the macvlan plugin: finding (or creating) the master, creating the
//! macvlan directly in the container namespace, addresses and routes.

use crate::config::{no_8021q_message, parse_vlan_parent, MacvlanConf, VlanParent};
use crate::kernel;
use crate::state::{user_key, State, VlanRecord};
use cni::{code, CniError, CniResult, Interface, IpConfig, Request};
use ipnet::IpNet;
use netlink::{Handle, Link, Netns};

/// The name of the interface carrying the default route of the handle's namespace (IPv4
/// first, then IPv6): the reference's default master.
pub fn default_route_interface(handle: &mut Handle) -> Result<Option<String>, CniError> {
    for v6 in [false, true] {
        let routes = handle.routes(v6).map_err(kernel)?;
        let mut defaults: Vec<_> =
            routes.iter().filter(|r| r.is_default() && r.oif.is_some()).collect();
        defaults.sort_by_key(|r| r.metric.unwrap_or(0));
        for r in defaults {
            if let Some(link) = handle.link_by_index(r.oif.expect("filtered")).map_err(kernel)? {
                return Ok(Some(link.name));
            }
        }
    }
    Ok(None)
}

/// The master's name: the configured one, or the default route's interface in `where_`
/// ("the host namespace" / "the container namespace", for the message).
pub fn master_name(
    conf: &MacvlanConf,
    handle: &mut Handle,
    where_: &str,
) -> Result<String, CniError> {
    match &conf.master {
        Some(m) => Ok(m.clone()),
        None => default_route_interface(handle)?.ok_or_else(|| {
            CniError::config(format!(
                "no \"master\" given and {where_} has no default route to pick one from: set \"master\" to the parent interface"
            ))
        }),
    }
}

/// The master link to create the macvlan on, and the VLAN sub-interface this attachment now
/// holds a reference on (one the plugin created; undo with `release_vlan`).
pub struct Master {
    pub link: Link,
    pub vlan_ref: Option<String>,
}

fn missing_master(name: &str, where_: &str) -> CniError {
    CniError::bad_value("master", format!("{name:?}"), format!("no such interface in {where_}"))
}

/// Finds the master in `handle`'s namespace. In the host namespace (`vlans` given), a master
/// written as `<link>.<id>` that does not exist is created as an 802.1q sub-interface of
/// `<link>` and reference-counted, like Docker's macvlan driver does with `parent`.
pub fn resolve_master(
    handle: &mut Handle,
    name: &str,
    where_: &str,
    vlans: Option<(&State, &str)>,
) -> Result<Master, CniError> {
    let vlan = parse_vlan_parent(name);
    let (Some(vp), Some((state, user))) = (vlan, vlans) else {
        let link = handle
            .link_by_name(name)
            .map_err(kernel)?
            .ok_or_else(|| missing_master(name, where_))?;
        return Ok(Master { link, vlan_ref: None });
    };
    let _lock = state.lock_vlans()?;
    if let Some(link) = handle.link_by_name(name).map_err(kernel)? {
        // Ours (recorded) gains a user; one that existed before us is used as is, never removed.
        let vlan_ref = match state.vlan(name) {
            Some(rec) => {
                state.vlan_add_user(&rec, user)?;
                Some(name.to_string())
            }
            None => None,
        };
        return Ok(Master { link, vlan_ref });
    }
    let parent = handle.link_by_name(&vp.link).map_err(kernel)?.ok_or_else(|| {
        CniError::bad_value(
            "master",
            format!("{name:?}"),
            format!("no such interface in {where_}, and its parent {} (for VLAN {}) does not exist either", vp.link, vp.id),
        )
    })?;
    let link = create_vlan(handle, &vp, &parent)?;
    let rec =
        VlanRecord { name: vp.name.clone(), link: vp.link.clone(), id: vp.id, users: Vec::new() };
    if let Err(e) = state.vlan_add_user(&rec, user) {
        let _ = handle.delete_link(link.index);
        state.vlan_forget(name);
        return Err(e);
    }
    Ok(Master { link, vlan_ref: Some(name.to_string()) })
}

/// Creates and brings up `vp` on `parent`; a kernel without 802.1q gives the explanation.
fn create_vlan(handle: &mut Handle, vp: &VlanParent, parent: &Link) -> Result<Link, CniError> {
    match handle.create_vlan(&vp.name, parent.index, vp.id) {
        Ok(()) => {}
        // Another ADD created it between our lookup and create: it is not ours to count.
        Err(e) if e.is_exists() => {}
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
    }
    let link = handle.require_link(&vp.name).map_err(kernel)?;
    if !link.up {
        if let Err(e) = handle.set_up(link.index) {
            let _ = handle.delete_link(link.index);
            return Err(kernel(e));
        }
    }
    Ok(link)
}

/// Drops this attachment's reference on a VLAN sub-interface; the last user deletes it.
pub fn release_vlan(
    handle: &mut Handle,
    state: &State,
    name: &str,
    user: &str,
) -> Result<(), CniError> {
    let _lock = state.lock_vlans()?;
    if state.vlan_remove_user(name, user)? {
        if let Some(link) = handle.link_by_name(name).map_err(kernel)? {
            if link.kind.as_deref() == Some("vlan") {
                match handle.delete_link(link.index) {
                    Err(e) if !e.is_not_found() => return Err(kernel(e)),
                    _ => {}
                }
            }
        }
    }
    Ok(())
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

/// The user key of this request's attachment in VLAN records.
pub fn vlan_user(req: &Request) -> String {
    user_key(&req.conf.name, &req.env.container_id, &req.env.ifname)
}

fn default_dst(v4: bool) -> IpNet {
    if v4 {
        "0.0.0.0/0".parse().expect("literal")
    } else {
        "::/0".parse().expect("literal")
    }
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

/// Creates the macvlan in the container namespace with its final name, configures it from
/// the IPAM result, and returns the CNI result. The master lives in `host`, or in `ctr`
/// with linkInContainer.
#[allow(clippy::too_many_arguments)]
pub fn create_and_configure(
    req: &Request,
    conf: &MacvlanConf,
    ns: &Netns,
    host: &mut Handle,
    ctr: &mut Handle,
    master: &Link,
    allocated: &CniResult,
    created: &mut bool,
) -> Result<CniResult, CniError> {
    let ifname = &req.env.ifname;
    let made = if conf.link_in_container {
        ctr.create_macvlan_with_queue(
            ifname,
            master.index,
            conf.mode,
            conf.mtu,
            conf.mac,
            None,
            conf.bc_queue_len,
        )
    } else {
        host.create_macvlan_with_queue(
            ifname,
            master.index,
            conf.mode,
            conf.mtu,
            conf.mac,
            Some(ns),
            conf.bc_queue_len,
        )
    };
    made.map_err(|e| {
        let why = match e.errno() {
            Some(libc::EBUSY) => " (a passthru macvlan, or an ipvlan, already uses this master)",
            Some(libc::EINVAL) => " (the master cannot carry macvlans, or a setting was refused)",
            Some(libc::EADDRINUSE) | Some(libc::EADDRNOTAVAIL) => {
                " (that MAC address is already used on this master)"
            }
            _ => "",
        };
        CniError::new(
            code::KERNEL,
            format!(
                "creating macvlan {ifname} on master {} in mode {}: {e}{why}",
                master.name, conf.mode
            ),
        )
    })?;
    *created = true;
    let link = ctr.require_link(ifname).map_err(kernel)?;

    let v6 = allocated.ips.iter().any(|i| i.address.addr().is_ipv6());
    container_sysctls(ns, ifname, v6);
    ipam::iface::configure(
        ctr,
        link.index,
        &allocated.ips,
        &allocated.routes,
        ipam::iface::Options { dad: false, up: true },
    )?;
    // Read back: the kernel picked the MAC (when none was asked for) and the MTU.
    let link = ctr.require_link(ifname).map_err(kernel)?;
    let mut result = CniResult {
        interfaces: vec![Interface {
            name: ifname.clone(),
            mac: link.mac.as_ref().map(netlink::format_mac),
            mtu: Some(link.mtu),
            sandbox: Some(req.netns()?.display().to_string()),
            ..Default::default()
        }],
        ips: allocated.ips.iter().map(|ip| IpConfig { interface: Some(0), ..ip.clone() }).collect(),
        routes: allocated.routes.clone(),
        dns: allocated.dns.clone(),
    };
    if result.dns.is_empty() {
        result.dns = req.conf.dns.clone().unwrap_or_default();
    }
    Ok(result)
}

/// CHECK: the macvlan exists in the container, in the configured mode, with prevResult's addresses.
pub fn verify(
    req: &Request,
    conf: &MacvlanConf,
    ctr: &mut Handle,
    master: Option<&Link>,
    prev: &CniResult,
) -> Result<(), CniError> {
    let ifname = &req.env.ifname;
    let fail = |msg: String| CniError::new(code::KERNEL, msg);
    let link = ctr
        .link_by_name(ifname)
        .map_err(kernel)?
        .ok_or_else(|| fail(format!("container interface {ifname} does not exist")))?;
    if link.kind.as_deref() != Some("macvlan") {
        return Err(fail(format!(
            "container interface {ifname} is a {}, not a macvlan",
            link.kind.as_deref().unwrap_or("device without kind")
        )));
    }
    if link.macvlan_mode != Some(conf.mode) {
        return Err(fail(format!(
            "container interface {ifname} is in macvlan mode {}, the config says {}",
            link.macvlan_mode.map(|m| m.to_string()).unwrap_or_else(|| "unknown".into()),
            conf.mode
        )));
    }
    if let (Some(m), Some(parent)) = (master, link.link) {
        if parent != m.index {
            return Err(fail(format!("container interface {ifname} is not on master {}", m.name)));
        }
    }
    if let Some(i) = prev.sandbox_interface(ifname) {
        if let (Some(want), Some(have)) = (&prev.interfaces[i].mac, &link.mac) {
            if netlink::parse_mac(want) != Some(*have) {
                return Err(fail(format!(
                    "container interface {ifname} has MAC {}, prevResult says {want}",
                    netlink::format_mac(have)
                )));
            }
        }
    }
    let have: Vec<IpNet> =
        ctr.addresses(Some(link.index)).map_err(kernel)?.into_iter().map(|(_, a)| a).collect();
    for ip in prev.container_ips(ifname) {
        if !have.contains(&ip.address) {
            return Err(fail(format!("container interface {ifname} lacks address {}", ip.address)));
        }
    }
    for v6 in [false, true] {
        let wants_default = prev.routes.iter().any(|r| r.dst == default_dst(!v6));
        if wants_default {
            let routes = ctr.routes(v6).map_err(kernel)?;
            if !routes.iter().any(|r| r.is_default() && r.oif == Some(link.index)) {
                return Err(fail(format!(
                    "container has no default {} route via {ifname}",
                    if v6 { "IPv6" } else { "IPv4" }
                )));
            }
        }
    }
    Ok(())
}
