//! Deciding, without touching the kernel: from the configuration, a [`Snapshot`] of the
//! master (and what exists in the container) and the IPAM allocation, [`plan`] computes what
//! one ADD does: which master, whether its VLAN sub-interface must be created, the macvlan's
//! settings, addresses, routes and the result. Unit-tested without root.

use crate::config::{check_mtu, parse_vlan_parent, MacvlanConf, VlanParent};
use crate::state::{user_key, AttachmentRecord};
use cni::plan::{ifname_taken, missing_default_routes, result_dns};
use cni::{CniError, CniResult, Interface, IpConfig, Route};
use netlink::MacvlanMode;

pub use cni::plan::{Attachment, Existing};

/// An attachment's key in VLAN user lists.
pub fn user(att: &Attachment) -> String {
    user_key(&att.network, &att.container_id, &att.ifname)
}

/// A link as the snapshot saw it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkNow {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mtu: u32,
}

impl From<&netlink::Link> for LinkNow {
    fn from(l: &netlink::Link) -> LinkNow {
        LinkNow { index: l.index, name: l.name.clone(), kind: l.kind.clone(), mtu: l.mtu }
    }
}

/// What exists before the ADD changes anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// The master's name: the configured one, or the default route's interface (None when
    /// neither exists).
    pub master_name: Option<String>,
    /// The master link, in the namespace it lives in (host, or container with
    /// linkInContainer).
    pub master: Option<LinkNow>,
    /// For a missing master written `<link>.<id>` in the host: that parent link.
    pub vlan_parent: Option<LinkNow>,
    /// The master is a VLAN sub-interface this plugin created (it has a record).
    pub master_is_our_vlan: bool,
    /// A link in the container already named CNI_IFNAME.
    pub container_link: Option<LinkNow>,
}

/// Everything one ADD does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub attachment: Attachment,
    pub master: String,
    pub link_in_container: bool,
    /// Create the master as this 802.1q sub-interface of an existing link.
    pub create_vlan: Option<VlanParent>,
    /// The VLAN sub-interface (ours) this attachment holds a reference on.
    pub vlan_ref: Option<String>,
    pub mode: MacvlanMode,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub bc_queue_len: Option<u32>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: cni::Dns,
}

/// What the kernel reported for the macvlan once it existed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
}

/// Where the master was looked for (for messages).
fn where_(conf: &MacvlanConf) -> &'static str {
    if conf.link_in_container {
        "the container namespace (linkInContainer)"
    } else {
        "the host namespace"
    }
}

/// The checks that need no allocation, made before IPAM runs: the container interface is
/// free, the master exists (or is a VLAN sub-interface whose parent exists), and the MTU fits.
pub fn preflight(conf: &MacvlanConf, att: &Attachment, snap: &Snapshot) -> Result<(), CniError> {
    if snap.container_link.is_some() {
        return Err(ifname_taken(&att.ifname));
    }
    let name = snap.master_name.as_deref().ok_or_else(|| {
        CniError::config(format!(
            "no \"master\" given and {} has no default route to pick one from: set \"master\" to \
            the parent interface",
            where_(conf)
        ))
    })?;
    match (&snap.master, parse_vlan_parent(name).filter(|_| !conf.link_in_container)) {
        (Some(m), _) => check_mtu(conf.mtu, &m.name, m.mtu),
        (None, Some(vp)) => match &snap.vlan_parent {
            Some(parent) => check_mtu(conf.mtu, &parent.name, parent.mtu),
            None => Err(CniError::bad_value(
                "master",
                format!("{name:?}"),
                format!(
                    "no such interface in {}, and its parent {} (for VLAN {}) does not exist \
                    either",
                    where_(conf),
                    vp.link,
                    vp.id
                ),
            )),
        },
        (None, None) => Err(CniError::bad_value(
            "master",
            format!("{name:?}"),
            format!("no such interface in {}", where_(conf)),
        )),
    }
}

/// The plan of one ADD.
pub fn plan(
    conf: &MacvlanConf,
    att: &Attachment,
    allocated: &CniResult,
    snap: &Snapshot,
) -> Result<Plan, CniError> {
    preflight(conf, att, snap)?;
    let master = snap.master_name.clone().expect("preflight checked");
    let create_vlan = match &snap.master {
        Some(_) => None,
        None => parse_vlan_parent(&master),
    };
    let vlan_ref = (create_vlan.is_some() || snap.master_is_our_vlan).then(|| master.clone());
    let dns = result_dns(&allocated.dns, conf.dns.as_ref());
    Ok(Plan {
        attachment: att.clone(),
        master,
        link_in_container: conf.link_in_container,
        create_vlan,
        vlan_ref,
        mode: conf.mode,
        mtu: conf.mtu,
        mac: conf.mac,
        bc_queue_len: conf.bc_queue_len,
        ips: allocated.ips.clone(),
        routes: allocated.routes.clone(),
        dns,
    })
}

impl Plan {
    /// The attachment record: written `pending` before anything is created, then final.
    pub fn record(&self, pending: bool) -> AttachmentRecord {
        AttachmentRecord {
            container_id: self.attachment.container_id.clone(),
            ifname: self.attachment.ifname.clone(),
            netns: Some(self.attachment.netns.clone()),
            master: self.master.clone(),
            vlan: self.vlan_ref.clone(),
            link_in_container: self.link_in_container,
            pending,
        }
    }

    /// The CNI result: the container interface, its addresses, the routes and DNS.
    pub fn result(&self, applied: &Applied) -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: self.attachment.ifname.clone(),
                mac: applied.mac.as_ref().map(netlink::format_mac),
                mtu: Some(applied.mtu),
                sandbox: Some(self.attachment.netns.clone()),
                ..Default::default()
            }],
            ips: self.ips.iter().map(|ip| IpConfig { interface: Some(0), ..ip.clone() }).collect(),
            routes: self.routes.clone(),
            dns: self.dns.clone(),
        }
    }

    /// True when IPv6 addresses are configured (IPv6 must be enabled on the interface).
    pub fn has_v6(&self) -> bool {
        self.ips.iter().any(|i| i.address.addr().is_ipv6())
    }
}

/// The plan CHECK holds the kernel to: the one the ADD that produced `prev` carried out, on
/// `master` (recorded, configured, or the default route's interface), with the MAC ADD
/// reported.
pub fn plan_for_check(
    conf: &MacvlanConf,
    att: &Attachment,
    prev: &CniResult,
    master: String,
) -> Plan {
    let mac = prev
        .sandbox_interface(&att.ifname)
        .and_then(|i| prev.interfaces[i].mac.as_deref())
        .and_then(netlink::parse_mac);
    Plan {
        attachment: att.clone(),
        master,
        link_in_container: conf.link_in_container,
        create_vlan: None,
        vlan_ref: None,
        mode: conf.mode,
        mtu: conf.mtu,
        mac,
        bc_queue_len: conf.bc_queue_len,
        ips: prev.container_ips(&att.ifname),
        routes: prev.routes.clone(),
        dns: prev.dns.clone(),
    }
}

/// The link named CNI_IFNAME as CHECK reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedLink {
    pub kind: Option<String>,
    pub mode: Option<MacvlanMode>,
    /// IFLA_LINK: the parent's ifindex.
    pub parent: Option<u32>,
    pub mac: Option<[u8; 6]>,
}

/// The container interface as CHECK reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub link: Option<ObservedLink>,
    /// The master's ifindex, when it shares a namespace view with the macvlan's parent index.
    pub master_index: Option<u32>,
    pub addrs: Vec<ipnet::IpNet>,
    /// A default route of that family leaves through the container interface.
    pub default_route_v4: bool,
    pub default_route_v6: bool,
}

impl Plan {
    /// What CHECK finds wrong in `seen` compared with this plan; empty when all is there.
    pub fn differences(&self, seen: &Observed) -> Vec<String> {
        let ifname = &self.attachment.ifname;
        let Some(ObservedLink { kind, mode, parent, mac }) = &seen.link else {
            return vec![format!("container interface {ifname} does not exist")];
        };
        if kind.as_deref() != Some("macvlan") {
            return vec![format!(
                "container interface {ifname} is a {}, not a macvlan",
                kind.as_deref().unwrap_or("device without kind")
            )];
        }
        let mut out = Vec::new();
        if *mode != Some(self.mode) {
            out.push(format!(
                "container interface {ifname} is in macvlan mode {}, the config says {}",
                mode.map(|m| m.to_string()).unwrap_or_else(|| "unknown".into()),
                self.mode
            ));
        }
        if let (Some(m), Some(p)) = (seen.master_index, parent) {
            if *p != m {
                out.push(format!("container interface {ifname} is not on master {}", self.master));
            }
        }
        if let (Some(want), Some(have)) = (&self.mac, mac) {
            if want != have {
                out.push(format!(
                    "container interface {ifname} has MAC {}, prevResult says {}",
                    netlink::format_mac(have),
                    netlink::format_mac(want)
                ));
            }
        }
        for ip in &self.ips {
            if !seen.addrs.contains(&ip.address) {
                out.push(format!("container interface {ifname} lacks address {}", ip.address));
            }
        }
        out.extend(missing_default_routes(
            &self.routes,
            seen.default_route_v4,
            seen.default_route_v6,
            ifname,
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> MacvlanConf {
        let mut c =
            json!({"cniVersion": "1.1.0", "name": "mv", "type": "macvlan", "master": "eth0"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        MacvlanConf::from_request(&crate::config::tests::request(c, "")).unwrap()
    }

    fn att() -> Attachment {
        Attachment {
            network: "mv".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
        }
    }

    fn link(name: &str, mtu: u32) -> Option<LinkNow> {
        Some(LinkNow { index: 4, name: name.into(), kind: None, mtu })
    }

    fn alloc() -> CniResult {
        CniResult {
            ips: vec![IpConfig {
                address: "10.7.0.5/24".parse().unwrap(),
                gateway: Some("10.7.0.1".parse().unwrap()),
                interface: None,
            }],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        }
    }

    #[test]
    fn an_existing_master_is_used_as_is() {
        let snap = Snapshot {
            master_name: Some("eth0".into()),
            master: link("eth0", 1500),
            ..Default::default()
        };
        let p = plan(&conf(json!({"mode": "vepa", "mtu": 1400})), &att(), &alloc(), &snap).unwrap();
        assert_eq!(p.master, "eth0");
        assert_eq!((p.create_vlan.clone(), p.vlan_ref.clone()), (None, None));
        assert_eq!(p.mode, MacvlanMode::Vepa);
        assert_eq!(p.mtu, Some(1400));
        let r = p.result(&Applied { mac: Some([2, 0, 0, 0, 0, 9]), mtu: 1400 });
        assert_eq!(r.interfaces[0].sandbox.as_deref(), Some("/run/netns/x"));
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(p.record(true).vlan, None);
        assert!(p.record(true).pending);
    }

    #[test]
    fn a_missing_vlan_master_is_created_and_referenced() {
        let c = conf(json!({"master": "eth0.10"}));
        let snap = Snapshot {
            master_name: Some("eth0.10".into()),
            vlan_parent: link("eth0", 1500),
            ..Default::default()
        };
        let p = plan(&c, &att(), &alloc(), &snap).unwrap();
        assert_eq!(p.create_vlan.as_ref().map(|v| (v.link.as_str(), v.id)), Some(("eth0", 10)));
        assert_eq!(p.vlan_ref.as_deref(), Some("eth0.10"));
        assert_eq!(p.record(true).vlan.as_deref(), Some("eth0.10"));
        // Our VLAN already exists: another reference, nothing to create.
        let snap = Snapshot {
            master_name: Some("eth0.10".into()),
            master: link("eth0.10", 1500),
            master_is_our_vlan: true,
            ..Default::default()
        };
        let p = plan(&c, &att(), &alloc(), &snap).unwrap();
        assert_eq!((p.create_vlan.is_none(), p.vlan_ref.as_deref()), (true, Some("eth0.10")));
        // Someone else's VLAN: used, never referenced (never removed).
        let snap = Snapshot { master_is_our_vlan: false, ..snap };
        assert_eq!(plan(&c, &att(), &alloc(), &snap).unwrap().vlan_ref, None);
    }

    #[test]
    fn refusals_before_allocation_name_the_key() {
        let c = conf(json!({"master": "eth0.10", "mtu": 9000}));
        let none = Snapshot { master_name: Some("eth0.10".into()), ..Default::default() };
        let e = preflight(&c, &att(), &none).unwrap_err();
        assert!(
            e.code == 7 && e.msg.contains("eth0.10") && e.msg.contains("parent eth0"),
            "{}",
            e.msg
        );
        let big = Snapshot { vlan_parent: link("eth0", 1500), ..none.clone() };
        let e = preflight(&c, &att(), &big).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("9000") && e.msg.contains("1500"), "{}", e.msg);
        let e = preflight(&conf(json!({})), &att(), &Snapshot::default()).unwrap_err();
        assert!(e.msg.contains("default route"), "{}", e.msg);
        let taken = Snapshot {
            master_name: Some("eth0".into()),
            master: link("eth0", 1500),
            container_link: link("eth0", 1500),
            ..Default::default()
        };
        let e = preflight(&conf(json!({})), &att(), &taken).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("CNI_IFNAME"), "{}", e.msg);
        let missing = Snapshot { master_name: Some("eth9".into()), ..Default::default() };
        let e = preflight(&conf(json!({"linkInContainer": true})), &att(), &missing).unwrap_err();
        assert!(e.msg.contains("eth9") && e.msg.contains("linkInContainer"), "{}", e.msg);
    }

    #[test]
    fn check_compares_the_plan_with_the_kernel() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("02:00:00:00:00:09".into()),
                sandbox: Some("/run/netns/x".into()),
                ..Default::default()
            }],
            ips: vec![IpConfig { interface: Some(0), ..alloc().ips[0].clone() }],
            routes: alloc().routes,
            ..Default::default()
        };
        let p = plan_for_check(&conf(json!({"mode": "private"})), &att(), &prev, "eth0".into());
        let good = Observed {
            link: Some(ObservedLink {
                kind: Some("macvlan".into()),
                mode: Some(MacvlanMode::Private),
                parent: Some(4),
                mac: Some([2, 0, 0, 0, 0, 9]),
            }),
            master_index: Some(4),
            addrs: vec!["10.7.0.5/24".parse().unwrap()],
            default_route_v4: true,
            default_route_v6: false,
        };
        assert_eq!(p.differences(&good), Vec::<String>::new());
        let mut bad = good.clone();
        bad.link = Some(ObservedLink {
            kind: Some("macvlan".into()),
            mode: Some(MacvlanMode::Bridge),
            parent: Some(5),
            mac: Some([2; 6]),
        });
        bad.addrs.clear();
        bad.default_route_v4 = false;
        let d = p.differences(&bad);
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(d[0].contains("mode bridge") && d[1].contains("master eth0"), "{d:?}");
        let veth = Observed {
            link: Some(ObservedLink { kind: Some("veth".into()), ..Default::default() }),
            ..good
        };
        assert!(p.differences(&veth)[0].contains("not a macvlan"));
        assert!(p.differences(&Observed::default())[0].contains("does not exist"));
    }

    #[test]
    fn vlan_users_are_attachments() {
        assert_eq!(user(&att()), "mv/c1/eth0");
    }
}
