//! Kernel tests of traffic control, ifb links and link settings. Each test makes its own
//! network namespace (`nltest-tc-<pid>-<n>`, see `common`), works only inside it and deletes
//! it on drop. iproute2's `tc` cross-checks what we read back.

#[macro_use]
mod common;

use common::TestNs;

use std::time::Duration;

use netlink::{Psched, Tbf, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn tbf_ingress_redirect_and_ifb_round_trip() {
    require_root!();
    let t = TestNs::new("nltest-tc");
    t.run("ip", &["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let mut h = t.handle();
    let v0 = h.link_by_name("v0").unwrap().unwrap();
    let psched = Psched::read().unwrap();

    // tbf at the root: read back by us and by tc.
    let tbf = Tbf::new(1_000_000, 10_000, Duration::from_millis(25), &psched).unwrap();
    h.add_tbf(v0.index, &tbf).unwrap();
    let qdiscs = h.qdiscs(v0.index).unwrap();
    let root = qdiscs.iter().find(|q| q.is_root()).expect("a root qdisc");
    assert_eq!(root.kind, "tbf");
    assert_eq!(root.handle, TBF_HANDLE);
    assert_eq!(root.tbf, Some(tbf));
    let shown = json(&t.run("tc", &["-j", "qdisc", "show", "dev", "v0", "root"]));
    assert_eq!(shown[0]["kind"], "tbf", "{shown}");
    assert_eq!(shown[0]["options"]["rate"], 1_000_000, "{shown}");
    assert_eq!(shown[0]["options"]["burst"], 10_000, "{shown}");
    // tc shows the limit as the latency it allows: (35,000 - 10,000) bytes at 1 MB/s.
    assert_eq!(shown[0]["options"]["lat"], 25_000, "{shown}");
    // A second root tbf is refused, not stacked.
    assert!(h.add_tbf(v0.index, &tbf).unwrap_err().is_exists());

    // ifb + ingress redirect.
    let ifb = h.create_ifb("ifbtest0", 1400, "cni-suite:net/ctr/eth0").unwrap();
    assert_eq!(ifb.kind.as_deref(), Some("ifb"));
    assert_eq!(ifb.mtu, 1400);
    assert_eq!(
        h.link_by_name("ifbtest0").unwrap().unwrap().alias.as_deref(),
        Some("cni-suite:net/ctr/eth0")
    );
    assert_eq!(h.links_of_kind("ifb").unwrap().len(), 1);
    h.add_ingress_qdisc(v0.index).unwrap();
    assert!(h.add_ingress_qdisc(v0.index).unwrap_err().is_exists());
    h.add_ingress_redirect(v0.index, ifb.index).unwrap();
    assert_eq!(h.ingress_redirect_targets(v0.index).unwrap(), vec![ifb.index]);
    let filters = t.run("tc", &["filter", "show", "dev", "v0", "ingress"]);
    assert!(filters.contains("Redirect to device ifbtest0"), "{filters}");
    assert!(filters.contains("flowid 1:1"), "{filters}");
    let ingress = h.qdiscs(v0.index).unwrap();
    assert!(ingress.iter().any(|q| q.kind == "ingress" && q.parent == TC_H_INGRESS));

    // Deleting: the kernel puts the default root back; a second delete is "not found".
    h.delete_qdisc(v0.index, TC_H_INGRESS, INGRESS_HANDLE).unwrap();
    assert!(h.ingress_redirect_targets(v0.index).unwrap().is_empty());
    h.delete_qdisc(v0.index, TC_H_ROOT, TBF_HANDLE).unwrap();
    assert!(h.qdiscs(v0.index).unwrap().iter().all(|q| q.kind != "tbf"));
    assert!(h.delete_qdisc(v0.index, TC_H_INGRESS, INGRESS_HANDLE).unwrap_err().is_not_found());
    h.delete_link(ifb.index).unwrap();
    assert!(h.links_of_kind("ifb").unwrap().is_empty());
}

#[test]
fn link_settings_allmulti_txqlen_promisc() {
    require_root!();
    let t = TestNs::new("nltest-tc");
    t.run("ip", &["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let mut h = t.handle();
    let before = h.link_by_name("v0").unwrap().unwrap();
    assert!(!before.allmulti && !before.promisc);
    h.set_allmulti(before.index, true).unwrap();
    h.set_promisc(before.index, true).unwrap();
    h.set_txqueuelen(before.index, 123).unwrap();
    let after = h.link_by_index(before.index).unwrap().unwrap();
    assert!(after.allmulti && after.promisc);
    assert_eq!(after.txqlen, 123);
    let shown = json(&t.run("ip", &["-j", "link", "show", "v0"]));
    let flags = shown[0]["flags"].to_string();
    assert!(flags.contains("ALLMULTI") && flags.contains("PROMISC"), "{shown}");
    assert_eq!(shown[0]["txqlen"], 123);
    h.set_allmulti(before.index, false).unwrap();
    assert!(!h.link_by_name("v0").unwrap().unwrap().allmulti);
    assert_eq!(h.link_by_name("nosuchlink").unwrap(), None);
}
