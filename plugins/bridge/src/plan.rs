//! Deciding, without touching the kernel: from the configuration, the IPAM allocation and a
//! [`Snapshot`] of what exists now, [`plan`] computes the [`Plan`] of one ADD (what to create,
//! the routes, the MTU, the gateway addresses, the firewall rules and the result). `apply`
//! then carries it out, and CHECK compares a plan with what the kernel holds
//! ([`Plan::differences`]). Everything here is unit-tested without root.

use crate::config::BridgeConf;
use crate::state::{bridge_tag, host_veth_name, may_own, AttachmentRecord};
use cni::plan::{default_dst, ifname_taken, missing_default_routes, result_dns};
use cni::{CniError, CniResult, Interface, IpConfig, Route};
use ipnet::IpNet;

pub use cni::plan::{Attachment, Existing};

/// A link as the snapshot saw it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkNow {
    pub index: u32,
    pub kind: Option<String>,
    pub up: bool,
    pub promisc: bool,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
    pub master: Option<u32>,
}

impl From<&netlink::Link> for LinkNow {
    fn from(l: &netlink::Link) -> LinkNow {
        LinkNow {
            index: l.index,
            kind: l.kind.clone(),
            up: l.up,
            promisc: l.promisc,
            mtu: l.mtu,
            mac: l.mac,
            alias: l.alias.clone(),
            master: l.master,
        }
    }
}

/// What exists before the ADD changes anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// The link named like the configured bridge, with its addresses.
    pub bridge: Option<(LinkNow, Vec<IpNet>)>,
    /// A link in the container already named CNI_IFNAME.
    pub container_link: Option<LinkNow>,
    /// A host link already named like this attachment's host veth.
    pub host_veth: Option<LinkNow>,
}

/// The bridge step.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgePlan {
    pub name: String,
    /// Create it (it does not exist), with this MTU and VLAN filtering, tagged with `tag`.
    pub create: bool,
    pub mtu: Option<u32>,
    /// The MAC a bridge we create gets, so that it keeps one MAC (the containers' gateway
    /// MAC) instead of following its lowest port MAC, which the kernel recomputes over all
    /// ports on every port added or removed.
    pub mac: [u8; 6],
    pub vlan_filtering: bool,
    pub tag: String,
    pub set_up: bool,
    pub set_promisc: bool,
    /// The bridge device joins this VLAN untagged (it carries the gateway of a VLAN network).
    pub self_vlan: Option<u16>,
}

/// The veth pair step.
#[derive(Debug, Clone, PartialEq)]
pub struct VethPlan {
    pub host: String,
    /// The host end's alias: which attachment it belongs to.
    pub tag: String,
    pub peer: String,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub hairpin: bool,
    pub isolated: bool,
    /// Access VLAN (pvid, untagged) of the host port.
    pub vlan: Option<u16>,
    pub trunk: Vec<u16>,
    /// Remove VLAN 1 from the port (preserveDefaultVlan false with vlan or trunk).
    pub drop_default_vlan: bool,
    /// The host end keeps IPv6 (its link-local address, multicast route and groups) only
    /// when the attachment has IPv6. A bridge port needs none, and every IPv6 route of a
    /// port makes each link change walk a longer IPv6 routing table (measured with 1000
    /// ports: 1.2 ms of a DEL with only their ff00::/8 routes, 4.9 ms with link-locals too).
    pub host_ipv6: bool,
}

/// The container side: addresses, then (unless disabled) link up and routes.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dad: bool,
    pub up: bool,
}

/// The gateway step, in the namespace the plugin runs in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayPlan {
    /// Addresses to put on the bridge (already there: left out).
    pub add: Vec<IpNet>,
    /// Addresses of the same subnets to take off first (forceAddress).
    pub remove: Vec<IpNet>,
    pub forward_v4: bool,
    pub forward_v6: bool,
}

/// Everything one ADD does, decided before anything is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub attachment: Attachment,
    pub bridge: BridgePlan,
    pub veth: VethPlan,
    pub container: ContainerPlan,
    pub gateway: GatewayPlan,
    /// The container MAC the host port is locked to (macspoofchk).
    pub mac_guard: Option<[u8; 6]>,
    /// The container subnets (what the network's firewall rules are about).
    pub subnets: Vec<IpNet>,
    pub dns: cni::Dns,
}

/// What the kernel reported once the links existed (MACs the kernel picked, the MTU).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    pub bridge_mac: Option<[u8; 6]>,
    pub host_mac: Option<[u8; 6]>,
    pub container_mac: Option<[u8; 6]>,
    pub container_mtu: u32,
}

/// The container subnets a set of addresses implies (host bits cleared), in order.
pub fn subnets(ips: &[IpConfig]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for ip in ips {
        let net = ip.address.trunc();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

/// IPAM's routes plus, with isDefaultGateway, a default route per family via its gateway.
pub fn routes(conf: &BridgeConf, allocated: &CniResult) -> Vec<Route> {
    let mut routes = allocated.routes.clone();
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
    routes
}

/// The checks that need no allocation: made before IPAM runs, so a refused ADD leases nothing.
pub fn preflight(conf: &BridgeConf, att: &Attachment, snap: &Snapshot) -> Result<(), CniError> {
    if let Some((br, _)) = &snap.bridge {
        if br.kind.as_deref() != Some("bridge") {
            return Err(CniError::bad_value(
                "bridge",
                format!("{:?}", conf.bridge),
                format!(
                    "an interface of that name exists and is a {}, not a bridge",
                    br.kind.as_deref().unwrap_or("device")
                ),
            ));
        }
    }
    if snap.container_link.is_some() {
        return Err(ifname_taken(&att.ifname));
    }
    if let Some(hv) = &snap.host_veth {
        if !may_own(hv.alias.as_deref(), &att.owner_tag()) {
            return Err(CniError::internal(format!(
                "host veth name {} is taken by another attachment ({}); refusing to reuse it",
                host_veth_name(&att.network, &att.container_id, &att.ifname),
                hv.alias.as_deref().unwrap_or("")
            )));
        }
    }
    Ok(())
}

/// The plan of one ADD. `mac_guard_choice` is the MAC to lock the port to when macspoofchk is
/// on and no MAC was requested, `bridge_mac_choice` the MAC of a bridge this ADD creates (the
/// caller draws both at random, as the kernel would).
pub fn plan(
    conf: &BridgeConf,
    att: &Attachment,
    allocated: &CniResult,
    snap: &Snapshot,
    mac_guard_choice: [u8; 6],
    bridge_mac_choice: [u8; 6],
) -> Result<Plan, CniError> {
    preflight(conf, att, snap)?;
    let bridge_now = snap.bridge.as_ref();
    let bridge = BridgePlan {
        name: conf.bridge.clone(),
        create: bridge_now.is_none(),
        mtu: conf.mtu,
        mac: bridge_mac_choice,
        vlan_filtering: conf.vlan.is_some() || !conf.vlan_trunk.is_empty(),
        tag: bridge_tag(&att.network, &conf.bridge),
        set_up: bridge_now.is_none_or(|(b, _)| !b.up),
        set_promisc: conf.promisc && bridge_now.is_none_or(|(b, _)| !b.promisc),
        self_vlan: conf.vlan.filter(|_| conf.is_gateway),
    };
    // The veth follows the configured MTU, else the bridge's (a new bridge has the kernel's).
    let mtu = conf.mtu.or(bridge_now.map(|(b, _)| b.mtu)).filter(|m| *m > 0);
    let mac = match (conf.mac, conf.macspoofchk) {
        (Some(m), _) => Some(m),
        // The guard needs the MAC before the port exists: choose it, rather than read back
        // the kernel's random one after the port is already up.
        (None, true) => Some(mac_guard_choice),
        (None, false) => None,
    };
    let veth = VethPlan {
        host: host_veth_name(&att.network, &att.container_id, &att.ifname),
        tag: att.owner_tag(),
        peer: att.ifname.clone(),
        mtu,
        mac,
        hairpin: conf.hairpin,
        isolated: conf.port_isolation,
        vlan: conf.vlan,
        trunk: conf.vlan_trunk.clone(),
        drop_default_vlan: !conf.preserve_default_vlan
            && (conf.vlan.is_some() || !conf.vlan_trunk.is_empty()),
        host_ipv6: allocated.ips.iter().any(|ip| ip.address.addr().is_ipv6()),
    };
    let container = ContainerPlan {
        ips: allocated.ips.clone(),
        routes: routes(conf, allocated),
        dad: conf.enable_dad,
        up: !conf.disable_container_interface,
    };
    let gateway = if conf.is_gateway {
        gateway_plan(conf, &allocated.ips, bridge_now.map(|(_, a)| a.as_slice()).unwrap_or(&[]))?
    } else {
        GatewayPlan::default()
    };
    let dns = result_dns(&allocated.dns, conf.dns.as_ref());
    Ok(Plan {
        attachment: att.clone(),
        bridge,
        veth,
        container,
        gateway,
        mac_guard: mac.filter(|_| conf.macspoofchk),
        subnets: subnets(&allocated.ips),
        dns,
    })
}

/// The gateway address of each allocated subnet on the bridge. Another address of the same
/// subnet already there is a conflicting gateway: refused, or replaced with forceAddress.
fn gateway_plan(
    conf: &BridgeConf,
    ips: &[IpConfig],
    existing: &[IpNet],
) -> Result<GatewayPlan, CniError> {
    let mut plan = GatewayPlan::default();
    for ip in ips {
        let Some(gw) = ip.gateway else { continue };
        let want = IpNet::new(gw, ip.address.prefix_len()).expect("prefix from a valid address");
        if existing.contains(&want) || plan.add.contains(&want) {
            continue;
        }
        for other in existing.iter().filter(|a| a.trunc() == want.trunc()) {
            if !conf.force_address {
                return Err(CniError::config(format!(
                    "bridge {} already has address {other} in subnet {}; set forceAddress to \
                    replace it with gateway {want}",
                    conf.bridge,
                    want.trunc()
                )));
            }
            if !plan.remove.contains(other) {
                plan.remove.push(*other);
            }
        }
        plan.add.push(want);
    }
    plan.forward_v4 = ips.iter().any(|i| i.address.addr().is_ipv4());
    plan.forward_v6 = ips.iter().any(|i| i.address.addr().is_ipv6());
    Ok(plan)
}

impl Plan {
    /// The CNI result: bridge, host veth and container interface, the addresses on the
    /// container interface, the routes and DNS.
    pub fn result(&self, applied: &Applied) -> CniResult {
        let fmt_mac = |m: &Option<[u8; 6]>| m.as_ref().map(netlink::format_mac);
        CniResult {
            interfaces: vec![
                Interface {
                    name: self.bridge.name.clone(),
                    mac: fmt_mac(&applied.bridge_mac),
                    ..Default::default()
                },
                Interface {
                    name: self.veth.host.clone(),
                    mac: fmt_mac(&applied.host_mac),
                    ..Default::default()
                },
                Interface {
                    name: self.veth.peer.clone(),
                    mac: fmt_mac(&applied.container_mac),
                    mtu: Some(applied.container_mtu),
                    sandbox: Some(self.attachment.netns.clone()),
                    ..Default::default()
                },
            ],
            ips: self
                .container
                .ips
                .iter()
                .map(|ip| IpConfig { interface: Some(2), ..ip.clone() })
                .collect(),
            routes: self.container.routes.clone(),
            dns: self.dns.clone(),
        }
    }

    /// The record written before anything is created (`pending`), and again when done.
    pub fn record(&self, pending: bool) -> AttachmentRecord {
        AttachmentRecord {
            container_id: self.attachment.container_id.clone(),
            ifname: self.attachment.ifname.clone(),
            host_veth: self.veth.host.clone(),
            netns: Some(self.attachment.netns.clone()),
            ips: self.container.ips.iter().map(|ip| ip.address).collect(),
            mac_guard: self.mac_guard.as_ref().map(netlink::format_mac),
            pending,
        }
    }

    /// What CHECK finds wrong in `seen` compared with this plan; empty when all is there.
    pub fn differences(&self, seen: &Observed) -> Vec<String> {
        let mut out = Vec::new();
        let Some(br) = &seen.bridge else {
            out.push(format!("bridge {} does not exist", self.bridge.name));
            return out;
        };
        let Some(hv) = &seen.host_veth else {
            out.push(format!("host veth {} does not exist", self.veth.host));
            return out;
        };
        if !may_own(hv.alias.as_deref(), &self.veth.tag) {
            out.push(format!(
                "host veth {} belongs to another attachment ({})",
                self.veth.host,
                hv.alias.as_deref().unwrap_or("")
            ));
        }
        if hv.master != Some(br.index) {
            out.push(format!(
                "host veth {} is not attached to bridge {}",
                self.veth.host, self.bridge.name
            ));
        }
        let Some(cl) = &seen.container_link else {
            out.push(format!("container interface {} does not exist", self.veth.peer));
            return out;
        };
        if cl.kind.as_deref() != Some("veth") {
            out.push(format!("container interface {} is not a veth", self.veth.peer));
        }
        for ip in &self.container.ips {
            if !seen.container_addrs.contains(&ip.address) {
                out.push(format!(
                    "container interface {} lacks address {}",
                    self.veth.peer, ip.address
                ));
            }
        }
        if self.container.up {
            out.extend(missing_default_routes(
                &self.container.routes,
                seen.default_route_v4,
                seen.default_route_v6,
                &self.veth.peer,
            ));
        }
        out
    }
}

/// What CHECK reads from the kernel, compared with the plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub bridge: Option<LinkNow>,
    pub host_veth: Option<LinkNow>,
    pub container_link: Option<LinkNow>,
    pub container_addrs: Vec<IpNet>,
    /// A default route of that family leaves through the container interface.
    pub default_route_v4: bool,
    pub default_route_v6: bool,
}

/// The plan CHECK holds the kernel to: the one the ADD that produced `prev` made.
pub fn plan_for_check(
    conf: &BridgeConf,
    att: &Attachment,
    prev: &CniResult,
) -> Result<Plan, CniError> {
    let allocated = CniResult {
        ips: prev.container_ips(&att.ifname),
        routes: prev.routes.clone(),
        ..Default::default()
    };
    // The MAC placeholder is never compared: CHECK verifies the guard with the container's
    // actual MAC.
    plan(conf, att, &allocated, &Snapshot::default(), [2, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> BridgeConf {
        let mut c = json!({"isGateway": true, "isDefaultGateway": true, "bridge": "br0"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        crate::config::tests::parse(c, "").unwrap()
    }

    fn att() -> Attachment {
        Attachment {
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
        }
    }

    fn alloc(ips: &[(&str, &str)]) -> CniResult {
        CniResult {
            ips: ips
                .iter()
                .map(|(a, g)| IpConfig {
                    address: a.parse().unwrap(),
                    gateway: Some(g.parse().unwrap()),
                    interface: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn bridge_now(addrs: &[&str]) -> Option<(LinkNow, Vec<IpNet>)> {
        Some((
            LinkNow {
                index: 3,
                kind: Some("bridge".into()),
                up: true,
                mtu: 1400,
                ..Default::default()
            },
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        ))
    }

    const MAC: [u8; 6] = [2, 1, 2, 3, 4, 5];
    const BRIDGE_MAC: [u8; 6] = [2, 9, 8, 7, 6, 5];

    #[test]
    fn a_first_add_creates_the_bridge_its_gateway_and_default_routes() {
        let a = alloc(&[("10.1.0.5/24", "10.1.0.1"), ("fd00::5/64", "fd00::1")]);
        let p = plan(&conf(json!({})), &att(), &a, &Snapshot::default(), MAC, BRIDGE_MAC).unwrap();
        assert!(p.bridge.create && p.bridge.set_up && !p.bridge.vlan_filtering);
        assert_eq!(p.bridge.tag, bridge_tag("net", "br0"));
        assert_eq!(p.veth.host, host_veth_name("net", "c1", "eth0"));
        assert_eq!(p.veth.mtu, None, "a new bridge: the kernel's MTU");
        assert_eq!(p.veth.mac, None);
        assert_eq!(p.bridge.mac, BRIDGE_MAC, "a bridge we create gets a MAC of its own");
        assert!(p.veth.host_ipv6, "an IPv6 attachment keeps the host link-local");
        let gws: Vec<String> = p.gateway.add.iter().map(|a| a.to_string()).collect();
        assert_eq!(gws, ["10.1.0.1/24", "fd00::1/64"]);
        assert!(p.gateway.forward_v4 && p.gateway.forward_v6);
        let dsts: Vec<String> = p.container.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["0.0.0.0/0", "::/0"]);
        assert_eq!(
            p.subnets,
            vec!["10.1.0.0/24".parse::<IpNet>().unwrap(), "fd00::/64".parse().unwrap()]
        );
        let r = p.result(&Applied {
            container_mac: Some(MAC),
            container_mtu: 1500,
            ..Default::default()
        });
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/x"));
        assert_eq!(r.interfaces[2].mac.as_deref(), Some("02:01:02:03:04:05"));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
    }

    #[test]
    fn an_existing_bridge_is_reused_and_its_mtu_followed() {
        let a = alloc(&[("10.1.0.6/24", "10.1.0.1")]);
        let snap = Snapshot { bridge: bridge_now(&["10.1.0.1/24"]), ..Default::default() };
        let p = plan(&conf(json!({})), &att(), &a, &snap, MAC, BRIDGE_MAC).unwrap();
        assert!(!p.bridge.create && !p.bridge.set_up);
        assert_eq!(p.veth.mtu, Some(1400));
        assert!(!p.veth.host_ipv6, "IPv4 only: no link-local on the host end");
        assert!(p.gateway.add.is_empty(), "the gateway is already there");
        let p = plan(&conf(json!({"mtu": 9000})), &att(), &a, &snap, MAC, BRIDGE_MAC).unwrap();
        assert_eq!(p.veth.mtu, Some(9000));
    }

    #[test]
    fn a_conflicting_gateway_needs_force_address() {
        let a = alloc(&[("10.1.0.6/24", "10.1.0.1")]);
        let snap = Snapshot { bridge: bridge_now(&["10.1.0.254/24"]), ..Default::default() };
        let e = plan(&conf(json!({})), &att(), &a, &snap, MAC, BRIDGE_MAC).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("forceAddress") && e.msg.contains("10.1.0.254/24"), "{}", e.msg);
        let p =
            plan(&conf(json!({"forceAddress": true})), &att(), &a, &snap, MAC, BRIDGE_MAC).unwrap();
        assert_eq!(p.gateway.remove, vec!["10.1.0.254/24".parse::<IpNet>().unwrap()]);
        assert_eq!(p.gateway.add, vec!["10.1.0.1/24".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn refusals_before_allocation() {
        let c = conf(json!({}));
        let not_bridge = Snapshot {
            bridge: Some((LinkNow { kind: Some("veth".into()), ..Default::default() }, vec![])),
            ..Default::default()
        };
        let e = preflight(&c, &att(), &not_bridge).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("not a bridge"), "{}", e.msg);
        let taken = Snapshot { container_link: Some(LinkNow::default()), ..Default::default() };
        let e = preflight(&c, &att(), &taken).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("eth0"), "{}", e.msg);
        let other = Snapshot {
            host_veth: Some(LinkNow {
                alias: Some(cni::names::owner_tag("net", "c2", "eth0")),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = preflight(&c, &att(), &other).unwrap_err();
        assert!(e.msg.contains("another attachment"), "{}", e.msg);
        let ours = Snapshot {
            host_veth: Some(LinkNow { alias: Some(att().owner_tag()), ..Default::default() }),
            ..Default::default()
        };
        preflight(&c, &att(), &ours).unwrap();
    }

    #[test]
    fn keys_reach_the_plan() {
        let a = alloc(&[("10.1.0.6/24", "10.1.0.1")]);
        let c = conf(json!({"isDefaultGateway": false, "isGateway": false, "hairpinMode": true,
            "portIsolation": true, "promiscMode": true, "vlan": 10, "preserveDefaultVlan": false,
            "enabledad": true, "disableContainerInterface": true, "macspoofchk": true}));
        let p = plan(&c, &att(), &a, &Snapshot::default(), MAC, BRIDGE_MAC).unwrap();
        assert!(p.container.routes.is_empty());
        assert_eq!(p.gateway, GatewayPlan::default());
        assert!(p.veth.hairpin && p.veth.isolated && p.bridge.set_promisc);
        assert_eq!(p.veth.vlan, Some(10));
        assert!(p.veth.drop_default_vlan && p.bridge.vlan_filtering);
        assert_eq!(p.bridge.self_vlan, None, "not a gateway");
        assert!(p.container.dad && !p.container.up);
        assert_eq!(p.mac_guard, Some(MAC), "the chosen MAC is the guarded one");
        assert_eq!(p.veth.mac, Some(MAC));
        assert_eq!(p.record(true).mac_guard.as_deref(), Some("02:01:02:03:04:05"));
        let c = conf(json!({"macspoofchk": true, "mac": "02:aa:bb:cc:dd:ee"}));
        let p = plan(&c, &att(), &a, &Snapshot::default(), MAC, BRIDGE_MAC).unwrap();
        assert_eq!(p.mac_guard, Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
    }

    #[test]
    fn check_finds_what_is_missing() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                sandbox: Some("/run/netns/x".into()),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.1.0.6/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        };
        let p = plan_for_check(&conf(json!({})), &att(), &prev).unwrap();
        let br = LinkNow { index: 3, kind: Some("bridge".into()), ..Default::default() };
        let hv = LinkNow {
            index: 9,
            master: Some(3),
            alias: Some(p.veth.tag.clone()),
            ..Default::default()
        };
        let cl = LinkNow { index: 2, kind: Some("veth".into()), ..Default::default() };
        let good = Observed {
            bridge: Some(br.clone()),
            host_veth: Some(hv.clone()),
            container_link: Some(cl.clone()),
            container_addrs: vec!["10.1.0.6/24".parse().unwrap()],
            default_route_v4: true,
            default_route_v6: false,
        };
        assert_eq!(p.differences(&good), Vec::<String>::new());
        let no_route = Observed { default_route_v4: false, ..good.clone() };
        assert!(p.differences(&no_route)[0].contains("default IPv4 route"));
        let no_addr = Observed { container_addrs: vec![], ..good.clone() };
        assert!(p.differences(&no_addr)[0].contains("lacks address 10.1.0.6/24"));
        let detached = Observed { host_veth: Some(LinkNow { master: None, ..hv }), ..good.clone() };
        assert!(p.differences(&detached)[0].contains("not attached"));
        let gone = Observed { bridge: None, ..good };
        assert!(p.differences(&gone)[0].contains("bridge br0 does not exist"));
    }
}
