//! bandwidth's config parsing and planning on arbitrary input (see `common`): a value or a
//! CNI error, never a panic. Accepted limits are what tc can hold; the plan shapes exactly
//! the configured directions, names a valid ifb, and CHECK finds nothing to report on a
//! kernel that holds the plan.
#![no_main]

mod common;

use cni_bandwidth::config::BandwidthConf;
use cni_bandwidth::plan::{differences, ifb_name, plan, Observed};
use libfuzzer_sys::fuzz_target;
use netlink::{Psched, Qdisc, TBF_HANDLE, TC_H_ROOT};

fn tbf_root(index: u32, tbf: netlink::Tbf) -> Qdisc {
    Qdisc { index, handle: TBF_HANDLE, parent: TC_H_ROOT, kind: "tbf".into(), tbf: Some(tbf) }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let conf = match BandwidthConf::from_request(&req) {
        Ok(c) => c,
        Err(e) => return common::config_error(&e),
    };
    for l in [conf.ingress, conf.egress].into_iter().flatten() {
        assert!(l.rate >= 8 && l.burst > 0 && l.burst / 8 < u32::MAX as u64, "{l:?}");
    }
    let p = match plan(&conf, &req.conf.name, &req.env.container_id, &Psched::MODERN) {
        Ok(p) => p,
        Err(e) => return common::config_error(&e),
    };
    assert_eq!(p.ingress.is_some(), conf.ingress.is_some());
    assert_eq!(p.egress.is_some(), conf.egress.is_some());
    let ifb = ifb_name(&req.conf.name, &req.env.container_id);
    assert!(cni::names::ifname_problem(&ifb).is_none(), "{ifb:?}");
    if let Some((name, _)) = &p.egress {
        assert_eq!(name, &ifb);
    }
    let now = Observed {
        host_root: p.ingress.map(|t| tbf_root(7, t)),
        host_ingress: p.egress.is_some(),
        redirects: vec![9],
        ifb: p.egress.as_ref().map(|(_, t)| (9, Some(tbf_root(9, *t)))),
    };
    let diffs = differences(&p, "veth01234567", &now);
    assert!(diffs.is_empty(), "{diffs:?}");
});
