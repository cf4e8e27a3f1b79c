//! portmap's config parsing and planning on arbitrary input (see `common`): a value or a CNI
//! error, never a panic. Accepted mappings have real ports and no duplicates; the plan maps
//! each of them onto the container's addresses of its family only; the owner record that
//! DEL and GC read back is the one ADD writes.
#![no_main]

mod common;

use cni::{CniResult, Interface, IpConfig};
use cni_portmap::config::PortmapConf;
use cni_portmap::state::OwnerRecord;
use cni_portmap::{container_ports, plan};
use libfuzzer_sys::fuzz_target;

/// A bridge's result, for inputs without a prevResult: one address of each family.
fn bridge_result() -> CniResult {
    let ip = |a: &str| IpConfig { address: a.parse().unwrap(), gateway: None, interface: Some(2) };
    let iface = |name: &str, sandbox: Option<&str>| Interface {
        name: name.into(),
        sandbox: sandbox.map(Into::into),
        ..Default::default()
    };
    CniResult {
        interfaces: vec![
            iface("cni0", None),
            iface("veth01234567", None),
            iface("eth0", Some("/var/run/netns/x")),
        ],
        ips: vec![ip("10.88.0.5/16"), ip("fd00:88::5/64")],
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let conf = match PortmapConf::from_request(&req) {
        Ok(c) => c,
        Err(e) => return common::config_error(&e),
    };
    for (i, m) in conf.mappings.iter().enumerate() {
        assert!(m.host_port != 0 && m.container_port != 0, "{m:?}");
        assert!(!conf.mappings[..i].contains(m), "{m:?} twice");
    }
    let prev = req.prev.clone().unwrap_or_else(bridge_result);
    let (mappings, nets) = match plan(&req, &conf, &prev) {
        Ok(p) => p,
        Err(e) => return common::config_error(&e),
    };
    let ips: Vec<_> = prev.container_ips(&req.env.ifname).iter().map(|i| i.address).collect();
    assert_eq!(nets, ips);
    for m in &mappings {
        assert!(ips.iter().any(|n| n.addr() == m.container_ip), "{m:?} not a container address");
        if let Some(h) = m.host_ip {
            assert_eq!(h.is_ipv4(), m.container_ip.is_ipv4(), "{m:?} mixes families");
        }
        assert!(
            conf.mappings.iter().any(|r| (r.host_ip, r.host_port, r.container_port, r.protocol)
                == (m.host_ip, m.host_port, m.container_port, m.protocol)),
            "{m:?} was not requested"
        );
    }
    let rec = OwnerRecord {
        backend: "nftables".into(),
        ports: container_ports(&req, &conf, mappings, nets),
    };
    common::round_trips(&rec);
});
