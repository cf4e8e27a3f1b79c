//! Kernel effects of the bridge plugin, through `crates/netlink` (and `rules` for the
//! firewall) only: [`snapshot`] reads what exists, [`apply`] carries out a plan and undoes
//! exactly what it did when a step fails, [`observe`] reads what CHECK compares, and
//! [`remove_attachment`] / [`remove_bridge`] take things away for DEL and GC.

use crate::plan::{Applied, LinkNow, Observed, Plan, Snapshot};
use crate::rules;
use crate::state::{may_own, owner_tag, AttachmentRecord};
use cni::CniError;
use ipnet::IpNet;
use netlink::{Handle, Netns};

/// Reads the bridge (and its addresses), the container's CNI_IFNAME and the host veth name.
pub fn snapshot(
    host: &mut Handle,
    ctr: &mut Handle,
    bridge: &str,
    ifname: &str,
    host_veth: &str,
) -> Result<Snapshot, CniError> {
    let bridge = match host.link_by_name(bridge)? {
        Some(l) => {
            let addrs = host.addresses(Some(l.index))?.into_iter().map(|(_, a)| a).collect();
            Some((LinkNow::from(&l), addrs))
        }
        None => None,
    };
    Ok(Snapshot {
        bridge,
        container_link: ctr.link_by_name(ifname)?.as_ref().map(LinkNow::from),
        host_veth: host.link_by_name(host_veth)?.as_ref().map(LinkNow::from),
    })
}

/// One thing `apply` did, undone in reverse order when a later step fails.
enum Done {
    Bridge(u32),
    GatewayAddress(u32, IpNet),
    /// The veth pair (deleting the host end removes the container end).
    Veth(u32),
    MacGuard(String, [u8; 6]),
}

fn undo(host: &mut Handle, done: Vec<Done>) {
    // Best effort: the ADD is failing already and its error is what the runtime must see.
    for step in done.into_iter().rev() {
        let _ = match step {
            Done::Bridge(index) | Done::Veth(index) => host.delete_link(index).map_err(Into::into),
            Done::GatewayAddress(index, addr) => host.del_address(index, addr).map_err(Into::into),
            Done::MacGuard(port, mac) => rules::unguard_mac(&port, &mac),
        };
    }
}

/// Carries out `plan`: bridge, veth pair (container end created in `ns` with its final
/// name), port settings, MAC guard, container addresses and routes, gateway addresses and
/// forwarding. On failure everything this call created is removed again.
pub fn apply(plan: &Plan, ns: &Netns, host: &mut Handle) -> Result<Applied, CniError> {
    let mut done = Vec::new();
    match apply_steps(plan, ns, host, &mut done) {
        Ok(applied) => Ok(applied),
        Err(e) => {
            undo(host, done);
            Err(e)
        }
    }
}

fn apply_steps(
    plan: &Plan,
    ns: &Netns,
    host: &mut Handle,
    done: &mut Vec<Done>,
) -> Result<Applied, CniError> {
    let bp = &plan.bridge;
    let br = if bp.create {
        match host.create_bridge_with_mac(&bp.name, bp.mtu, bp.vlan_filtering, Some(bp.mac)) {
            Ok(l) => {
                done.push(Done::Bridge(l.index));
                host.set_alias(l.index, &bp.tag)?;
                l
            }
            // Created since the snapshot by someone not holding our lock: use it as found.
            Err(e) if e.is_exists() => host.require_link(&bp.name)?,
            Err(e) => return Err(e.into()),
        }
    } else {
        host.require_link(&bp.name)?
    };
    if bp.set_up || !br.up {
        host.set_up(br.index)?;
    }
    if bp.set_promisc && !br.promisc {
        host.set_promisc(br.index, true)?;
    }
    if let Some(vid) = bp.self_vlan {
        host.bridge_vlan_add(br.index, vid, true, true, true)?;
    }

    let vp = &plan.veth;
    if let Some(stale) = host.link_by_name(&vp.host)? {
        // Left by an ADD that died before it could undo (preflight checked the tag).
        host.delete_link(stale.index)?;
    }
    // One request creates the pair and plugs the host end into the bridge, one tags it (and
    // turns off its IPv6 link-local) while it is still down, and `set_up` below brings it up.
    // The tag goes in while the link is down: on an up link without carrier the change
    // notification makes IPv6 walk the whole routing table twice (rt6_sync_down_dev,
    // rt6_disable_ip), 0.8 ms with 1000 ports.
    let hv = host.create_veth_port(&vp.host, &vp.peer, Some(ns), vp.mtu, vp.mac, Some(br.index))?;
    done.push(Done::Veth(hv.index));
    // A kernel without IPv6 (ipv6.disable=1) gives the port none anyway.
    let drop_ipv6 = !vp.host_ipv6 && netlink::ipv6_enabled();
    host.update_link(
        hv.index,
        &netlink::LinkUpdate { alias: Some(&vp.tag), up: false, no_ipv6_link_local: drop_ipv6 },
    )?;
    if drop_ipv6 {
        // No IPv6 on the port at all (no ff00::/8 route either), before it comes up. Best
        // effort: with /proc/sys read-only the port merely keeps the multicast route the
        // link-local setting above leaves it.
        let _ = netlink::sysctl_set(&format!("net/ipv6/conf/{}/disable_ipv6", vp.host), "1");
    }
    if vp.hairpin || vp.isolated {
        host.set_bridge_port(hv.index, vp.hairpin.then_some(true), vp.isolated.then_some(true))?;
    }
    if let Some(vid) = vp.vlan {
        host.bridge_vlan_add(hv.index, vid, true, true, false)?;
    }
    for vid in &vp.trunk {
        host.bridge_vlan_add(hv.index, *vid, false, false, false)?;
    }
    if vp.drop_default_vlan {
        let _ = host.bridge_vlan_del(hv.index, 1, false);
    }
    host.set_up(hv.index)?;

    let mut ctr = Handle::new_in(ns)?;
    let cl = ctr.require_link(&vp.peer)?;
    if let Some(mac) = plan.mac_guard {
        rules::guard_mac(&vp.host, &mac)?;
        done.push(Done::MacGuard(vp.host.clone(), mac));
    }
    let cp = &plan.container;
    let opts = ipam::iface::Options { dad: cp.dad, up: cp.up };
    ipam::iface::configure(&mut ctr, cl.index, &cp.ips, &cp.routes, opts)?;

    let gp = &plan.gateway;
    for addr in &gp.remove {
        host.del_address(br.index, *addr)?;
    }
    for addr in &gp.add {
        match host.add_address_nodad(br.index, *addr) {
            Ok(()) => done.push(Done::GatewayAddress(br.index, *addr)),
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Routing between the bridge and the outside needs forwarding on in this namespace.
    if gp.forward_v4 {
        netlink::sysctl_set("net/ipv4/ip_forward", "1")?;
    }
    if gp.forward_v6 {
        netlink::sysctl_set("net/ipv6/conf/all/forwarding", "1")?;
    }

    // Read back after the port is up: the MACs the kernel picked (a bridge whose MAC was not
    // set takes its lowest port MAC). The container end's MAC and MTU are those read before.
    let br = host.require_link(&bp.name)?;
    let hv = host.require_link(&vp.host)?;
    Ok(Applied {
        bridge_mac: br.mac,
        host_mac: hv.mac,
        container_mac: cl.mac,
        container_mtu: cl.mtu,
    })
}

/// Reads what CHECK compares with the plan.
pub fn observe(
    host: &mut Handle,
    ctr: &mut Handle,
    plan: &Plan,
) -> Result<(Observed, Option<netlink::Link>), CniError> {
    let bridge = host.link_by_name(&plan.bridge.name)?;
    let host_veth = host.link_by_name(&plan.veth.host)?;
    let cl = ctr.link_by_name(&plan.veth.peer)?;
    let mut seen = Observed {
        bridge: bridge.as_ref().map(LinkNow::from),
        host_veth: host_veth.as_ref().map(LinkNow::from),
        container_link: cl.as_ref().map(LinkNow::from),
        ..Default::default()
    };
    if let Some(cl) = &cl {
        seen.container_addrs = ctr.addresses(Some(cl.index))?.into_iter().map(|(_, a)| a).collect();
        for v6 in [false, true] {
            let found =
                ctr.routes(v6)?.iter().any(|r| r.dst.prefix_len() == 0 && r.oif == Some(cl.index));
            if v6 {
                seen.default_route_v6 = found;
            } else {
                seen.default_route_v4 = found;
            }
        }
    }
    Ok((seen, cl))
}

/// Removes one attachment's kernel objects: the MAC guard and the host veth, found by its
/// stable name, unless its tag names another attachment. Deleting the host end removes the
/// container end with it, wherever it is; nothing is looked up in the container, so this
/// works when its namespace is gone. Things already gone are not an error.
pub fn remove_attachment(
    host: &mut Handle,
    network: &str,
    rec: &AttachmentRecord,
) -> Result<(), CniError> {
    if let Some(mac) = rec.mac_guard.as_deref().and_then(netlink::parse_mac) {
        rules::unguard_mac(&rec.host_veth, &mac)?;
    }
    if let Some(link) = host.link_by_name(&rec.host_veth)? {
        let tag = owner_tag(network, &rec.container_id, &rec.ifname);
        if may_own(link.alias.as_deref(), &tag) {
            // Returns once the kernel reports the link gone; a detached helper finishes the
            // kernel's rcu_barrier() (13-21 ms) off the runtime's path (netlink::detach).
            netlink::delete_link_detached(link.index)?;
        } else {
            eprintln!(
                "bridge: not deleting {}: it belongs to another attachment ({})",
                rec.host_veth,
                link.alias.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// Deletes a bridge this plugin created once nothing is plugged into it, unless its tag names
/// another network.
pub fn remove_bridge(host: &mut Handle, name: &str, tag: &str) -> Result<(), CniError> {
    let Some(br) = host.link_by_name(name)? else { return Ok(()) };
    if br.kind.as_deref() != Some("bridge") || !may_own(br.alias.as_deref(), tag) {
        return Ok(());
    }
    let ports = host.links()?.iter().filter(|l| l.master == Some(br.index)).count();
    if ports == 0 {
        match host.delete_link(br.index) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}
