//! firewall's config parsing and planning on arbitrary input (see `common`): a value or a
//! CNI error, never a panic. An accepted config names a usable admin chain; the plan
//! isolates only what the policy asks and our bridge does not already enforce, with the
//! container's own addresses and a bridge that is a valid interface name; the record DEL
//! and GC read back is the one ADD writes.
#![no_main]

mod common;

use cni::{CniResult, Interface, IpConfig};
use cni_firewall::config::{parse, Policy};
use cni_firewall::plan::{decide, Enforced};
use cni_firewall::state::Record;
use libfuzzer_sys::fuzz_target;

/// A bridge's result, for inputs without a prevResult.
fn bridge_result() -> CniResult {
    let iface = |name: &str, sandbox: Option<&str>| Interface {
        name: name.into(),
        sandbox: sandbox.map(Into::into),
        ..Default::default()
    };
    CniResult {
        interfaces: vec![iface("cni0", None), iface("eth0", Some("/var/run/netns/x"))],
        ips: vec![IpConfig {
            address: "10.88.0.5/16".parse().unwrap(),
            gateway: None,
            interface: Some(1),
        }],
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let conf = match parse(&req) {
        Ok(c) => c,
        Err(e) => return common::config_error(&e),
    };
    let chain = &conf.admin_chain;
    assert!((1..=28).contains(&chain.len()), "{chain:?}");
    assert!(chain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert!(["", "iptables", "firewalld", "nftables"].contains(&conf.requested.as_str()));

    let prev = req.prev.clone().unwrap_or_else(bridge_result);
    let ips: Vec<_> =
        prev.container_ips(&req.env.ifname).iter().map(|i| i.address.addr()).collect();
    for bits in 0..8u8 {
        let now = Enforced {
            bridge_isolates: bits & 1 != 0,
            bridge_icc_off: bits & 2 != 0,
            foreign_drop: bits & 4 != 0,
        };
        let att = match decide(&req, &conf, &prev, now) {
            Ok(a) => a,
            Err(e) => {
                common::config_error(&e);
                continue;
            }
        };
        assert_eq!(att.ips, ips);
        if att.isolate_bridge {
            assert!(conf.policy != Policy::Open && !now.bridge_isolates);
            let br = att.bridge.as_deref().expect("a bridge to isolate");
            assert!(cni::names::ifname_problem(br).is_none(), "bridge {br:?}");
        }
        if att.isolate_container {
            assert!(conf.policy == Policy::Isolated && !now.bridge_icc_off);
        }
        let rec = Record {
            network: req.conf.name.clone(),
            policy: conf.policy,
            backend: conf.backend.to_string(),
            admin_chain: conf.admin_chain.clone(),
            attachment: att,
        };
        let json = serde_json::to_vec(&rec).expect("serializes");
        let back: Record = serde_json::from_slice(&json).expect("reads back");
        assert_eq!((back.policy, back.attachment), (rec.policy, rec.attachment));
    }
});
