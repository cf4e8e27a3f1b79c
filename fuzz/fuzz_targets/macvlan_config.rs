//! macvlan's config parsing and planning on arbitrary input: a value or a CNI error, never a
//! panic.
#![no_main]

mod common;

use cni::CniResult;
use cni_macvlan::config::{parse_vlan_parent, MacvlanConf};
use cni_macvlan::plan::{plan, Attachment, LinkNow, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let Ok(conf) = MacvlanConf::from_request(&req) else { return };
    let master = conf.master.clone().unwrap_or_else(|| "eth0".into());
    if let Some(vp) = parse_vlan_parent(&master) {
        assert!((1..=4094).contains(&vp.id) && !vp.link.is_empty(), "{vp:?}");
    }
    let att = Attachment::of(&req).expect("the request has CNI_NETNS");
    let snap = Snapshot {
        master: Some(LinkNow { index: 2, name: master.clone(), kind: None, mtu: 1500 }),
        master_name: Some(master),
        ..Default::default()
    };
    if let Ok(p) = plan(&conf, &att, &CniResult::default(), &snap) {
        let _ = p.record(true);
        let _ = p.result(&Default::default());
    }
});
