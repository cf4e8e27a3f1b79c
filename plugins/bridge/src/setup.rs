//! Kernel effects of the bridge plugin: the bridge, the veth pair, addresses, routes.
//! `apply` records what it created in `Created` so a failed ADD can undo exactly that.

use crate::config::BridgeConf;
use crate::kernel;
use crate::state::host_veth_name;
use cni::{CniError, CniResult, Interface, IpConfig, Request, Route};
use ipnet::IpNet;
use netlink::{Handle, Link, Netns};

/// What one ADD created, for rollback.
#[derive(Default)]
pub struct Created {
    pub bridge: bool,
    pub bridge_name: String,
    pub host_veth: Option<String>,
    /// (host port, container MAC) guarded by macspoofchk.
    pub mac_guard: Option<(String, [u8; 6])>,
}

impl Created {
    /// Removes what this call created (best effort: we are already failing).
    pub fn undo(&self) {
        if let Some((port, mac)) = &self.mac_guard {
            let _ = firewall::macspoof::unguard_port(port, mac);
        }
        let Ok(mut host) = Handle::new() else { return };
        if let Some(name) = &self.host_veth {
            if let Ok(Some(l)) = host.link_by_name(name) {
                let _ = host.delete_link(l.index);
            }
        }
        if self.bridge {
            if let Ok(Some(br)) = host.link_by_name(&self.bridge_name) {
                let _ = host.delete_link(br.index);
            }
        }
    }
}

/// The container subnets a result implies (address with host bits cleared).
pub fn subnets(result: &CniResult) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for ip in &result.ips {
        let net = ip.address.trunc();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

fn default_dst(v4: bool) -> IpNet {
    if v4 {
        "0.0.0.0/0".parse().expect("literal")
    } else {
        "::/0".parse().expect("literal")
    }
}

/// The bridge: reused when it exists (must really be a bridge), created otherwise.
fn ensure_bridge(
    host: &mut Handle,
    conf: &BridgeConf,
    created: &mut Created,
) -> Result<Link, CniError> {
    created.bridge_name = conf.bridge.clone();
    let vlan_filtering = conf.vlan.is_some() || !conf.vlan_trunk.is_empty();
    let br = match host.link_by_name(&conf.bridge).map_err(kernel)? {
        Some(l) if l.kind.as_deref() != Some("bridge") => {
            return Err(CniError::bad_value(
                "bridge",
                format!("{:?}", conf.bridge),
                format!(
                    "an interface of that name exists and is a {}, not a bridge",
                    l.kind.as_deref().unwrap_or("device")
                ),
            ));
        }
        Some(l) => l,
        None => match host.create_bridge(&conf.bridge, conf.mtu, vlan_filtering) {
            Ok(l) => {
                created.bridge = true;
                l
            }
            // Another ADD created it between our lookup and create.
            Err(e) if e.is_exists() => host.require_link(&conf.bridge).map_err(kernel)?,
            Err(e) => return Err(kernel(e)),
        },
    };
    if !br.up {
        host.set_up(br.index).map_err(kernel)?;
    }
    if conf.promisc && !br.promisc {
        host.set_promisc(br.index, true).map_err(kernel)?;
    }
    if let Some(vid) = conf.vlan {
        if conf.is_gateway {
            // The bridge device itself carries the gateway address: it joins the VLAN untagged.
            host.bridge_vlan_add(br.index, vid, true, true, true).map_err(kernel)?;
        }
    }
    Ok(br)
}

/// Puts the gateway address of each allocated subnet on the bridge.
fn ensure_gateway(
    host: &mut Handle,
    conf: &BridgeConf,
    br: &Link,
    ips: &[IpConfig],
) -> Result<(), CniError> {
    let existing: Vec<IpNet> =
        host.addresses(Some(br.index)).map_err(kernel)?.into_iter().map(|(_, a)| a).collect();
    for ip in ips {
        let Some(gw) = ip.gateway else { continue };
        let want = IpNet::new(gw, ip.address.prefix_len()).expect("prefix from a valid address");
        if existing.contains(&want) {
            continue;
        }
        // Another address of the same subnet on the bridge means a conflicting gateway.
        for other in existing.iter().filter(|a| a.trunc() == want.trunc()) {
            if !conf.force_address {
                return Err(CniError::config(format!(
                    "bridge {} already has address {other} in subnet {}; set forceAddress to replace it with gateway {want}",
                    conf.bridge,
                    want.trunc()
                )));
            }
            host.del_address(br.index, *other).map_err(kernel)?;
        }
        match host.add_address_nodad(br.index, want) {
            Err(e) if !e.is_exists() => return Err(kernel(e)),
            _ => {}
        }
    }
    let (v4, v6) = (
        ips.iter().any(|i| i.address.addr().is_ipv4()),
        ips.iter().any(|i| i.address.addr().is_ipv6()),
    );
    // Routing between the bridge and the outside needs forwarding on in this namespace.
    if v4 {
        netlink::sysctl_set("net/ipv4/ip_forward", "1").map_err(kernel)?;
    }
    if v6 {
        netlink::sysctl_set("net/ipv6/conf/all/forwarding", "1").map_err(kernel)?;
    }
    Ok(())
}

/// Creates the veth pair, configures both ends, and returns the CNI result.
pub fn apply(
    req: &Request,
    conf: &BridgeConf,
    ns: &Netns,
    allocated: &CniResult,
    created: &mut Created,
) -> Result<CniResult, CniError> {
    let ifname = &req.env.ifname;
    let mut host = Handle::new().map_err(kernel)?;
    let br = ensure_bridge(&mut host, conf, created)?;
    let mut ctr = Handle::new_in(ns).map_err(kernel)?;
    if ctr.link_by_name(ifname).map_err(kernel)?.is_some() {
        return Err(CniError::config(format!(
            "container already has an interface named {ifname:?} (CNI_IFNAME)"
        )));
    }

    let host_name = host_veth_name(&req.conf.name, &req.env.container_id, ifname);
    if let Some(stale) = host.link_by_name(&host_name).map_err(kernel)? {
        // Left by an ADD that died before it could undo; the name is ours.
        host.delete_link(stale.index).map_err(kernel)?;
    }
    let mtu = conf.mtu.or(Some(br.mtu)).filter(|m| *m > 0);
    let hv = host.create_veth(&host_name, ifname, Some(ns), mtu, conf.mac).map_err(kernel)?;
    created.host_veth = Some(host_name.clone());
    host.set_master(hv.index, Some(br.index)).map_err(kernel)?;
    if conf.hairpin || conf.port_isolation {
        host.set_bridge_port(
            hv.index,
            conf.hairpin.then_some(true),
            conf.port_isolation.then_some(true),
        )
        .map_err(kernel)?;
    }
    if let Some(vid) = conf.vlan {
        host.bridge_vlan_add(hv.index, vid, true, true, false).map_err(kernel)?;
        if !conf.preserve_default_vlan {
            let _ = host.bridge_vlan_del(hv.index, 1, false);
        }
    }
    for vid in &conf.vlan_trunk {
        host.bridge_vlan_add(hv.index, *vid, false, false, false).map_err(kernel)?;
    }
    if !conf.preserve_default_vlan && !conf.vlan_trunk.is_empty() {
        let _ = host.bridge_vlan_del(hv.index, 1, false);
    }
    host.set_up(hv.index).map_err(kernel)?;

    // Container side: addresses, then up, then routes (routes need the link up).
    let cl = ctr.require_link(ifname).map_err(kernel)?;
    if conf.macspoofchk {
        let mac = cl.mac.ok_or_else(|| {
            CniError::new(cni::code::KERNEL, format!("container interface {ifname} has no MAC"))
        })?;
        firewall::macspoof::guard_port(&host_name, &mac).map_err(crate::fw_err)?;
        created.mac_guard = Some((host_name.clone(), mac));
    }
    let mut routes: Vec<Route> = allocated.routes.clone();
    if conf.is_default_gateway {
        for ip in &allocated.ips {
            let v4 = ip.address.addr().is_ipv4();
            if let Some(gw) = ip.gateway {
                if !routes.iter().any(|r| r.dst == default_dst(v4)) {
                    routes.push(Route::new(default_dst(v4), Some(gw)));
                }
            }
        }
    }
    let opts = ipam::iface::Options { dad: conf.enable_dad, up: !conf.disable_container_interface };
    ipam::iface::configure(&mut ctr, cl.index, &allocated.ips, &routes, opts)?;

    if conf.is_gateway {
        ensure_gateway(&mut host, conf, &br, &allocated.ips)?;
    }

    let fmt_mac = |m: &Option<[u8; 6]>| m.as_ref().map(netlink::format_mac);
    let mut result = CniResult {
        interfaces: vec![
            Interface { name: br.name.clone(), mac: fmt_mac(&br.mac), ..Default::default() },
            Interface { name: host_name.clone(), mac: fmt_mac(&hv.mac), ..Default::default() },
            Interface {
                name: ifname.clone(),
                mac: fmt_mac(&cl.mac),
                mtu: Some(cl.mtu),
                sandbox: Some(req.netns()?.display().to_string()),
                ..Default::default()
            },
        ],
        ips: allocated.ips.iter().map(|ip| IpConfig { interface: Some(2), ..ip.clone() }).collect(),
        routes,
        dns: allocated.dns.clone(),
    };
    if result.dns.is_empty() {
        result.dns = req.conf.dns.clone().unwrap_or_default();
    }
    Ok(result)
}

/// CHECK: the links, addresses and routes of `prev` are really there.
pub fn verify(
    req: &Request,
    conf: &BridgeConf,
    ns: &Netns,
    prev: &CniResult,
) -> Result<(), CniError> {
    let ifname = &req.env.ifname;
    let mut host = Handle::new().map_err(kernel)?;
    let br = host.link_by_name(&conf.bridge).map_err(kernel)?.ok_or_else(|| {
        CniError::new(cni::code::KERNEL, format!("bridge {} does not exist", conf.bridge))
    })?;
    let host_name = host_veth_name(&req.conf.name, &req.env.container_id, ifname);
    let hv = host.link_by_name(&host_name).map_err(kernel)?.ok_or_else(|| {
        CniError::new(cni::code::KERNEL, format!("host veth {host_name} does not exist"))
    })?;
    if hv.master != Some(br.index) {
        return Err(CniError::new(
            cni::code::KERNEL,
            format!("host veth {host_name} is not attached to bridge {}", conf.bridge),
        ));
    }
    let mut ctr = Handle::new_in(ns).map_err(kernel)?;
    let cl = ctr.link_by_name(ifname).map_err(kernel)?.ok_or_else(|| {
        CniError::new(cni::code::KERNEL, format!("container interface {ifname} does not exist"))
    })?;
    if cl.kind.as_deref() != Some("veth") {
        return Err(CniError::new(
            cni::code::KERNEL,
            format!("container interface {ifname} is not a veth"),
        ));
    }
    let have: Vec<IpNet> =
        ctr.addresses(Some(cl.index)).map_err(kernel)?.into_iter().map(|(_, a)| a).collect();
    for ip in prev.container_ips(ifname) {
        if !have.contains(&ip.address) {
            return Err(CniError::new(
                cni::code::KERNEL,
                format!("container interface {ifname} lacks address {}", ip.address),
            ));
        }
    }
    if conf.macspoofchk {
        let mac = cl.mac.ok_or_else(|| {
            CniError::new(cni::code::KERNEL, format!("container interface {ifname} has no MAC"))
        })?;
        firewall::macspoof::check_port(&host_name, &mac).map_err(crate::fw_err)?;
    }
    if conf.is_default_gateway && !conf.disable_container_interface {
        for v6 in [false, true] {
            let wants =
                prev.ips.iter().any(|i| i.address.addr().is_ipv6() == v6 && i.gateway.is_some());
            if !wants {
                continue;
            }
            let routes = ctr.routes(v6).map_err(kernel)?;
            if !routes.iter().any(|r| r.dst.prefix_len() == 0 && r.oif == Some(cl.index)) {
                return Err(CniError::new(
                    cni::code::KERNEL,
                    format!(
                        "container has no default {} route via {ifname}",
                        if v6 { "IPv6" } else { "IPv4" }
                    ),
                ));
            }
        }
    }
    Ok(())
}
