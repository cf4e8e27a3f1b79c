//! bridge's config parsing and planning on arbitrary input: a value or a CNI error, never a
//! panic; a plan's names are valid interface names.
#![no_main]

mod common;

use cni::{CniResult, IpConfig};
use cni_bridge::config::BridgeConf;
use cni_bridge::plan::{plan, Attachment, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let Ok(conf) = BridgeConf::from_request(&req) else { return };
    assert!(cni::names::ifname_problem(&conf.bridge).is_none(), "{:?}", conf.bridge);
    let att = Attachment::of(&req).expect("the request has CNI_NETNS");
    let allocated = CniResult {
        ips: vec![IpConfig {
            address: "10.1.2.3/24".parse().unwrap(),
            gateway: Some("10.1.2.1".parse().unwrap()),
            interface: None,
        }],
        ..Default::default()
    };
    if let Ok(p) =
        plan(&conf, &att, &allocated, &Snapshot::default(), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
    {
        assert!(cni::names::ifname_problem(&p.veth.host).is_none(), "{:?}", p.veth.host);
        let _ = p.result(&Default::default());
    }
});
