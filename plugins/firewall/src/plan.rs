//! Deciding what one attachment needs: from the config, prevResult (the container's
//! addresses and bridge), what our `bridge` already enforces for the network (its record) and
//! whether another firewall drops forwarded traffic.

use crate::config::{Conf, Policy};
use cni::store::Store;
use cni::{CniResult, Request};
use firewall::ingress::{self, Attachment as Ingress};

/// What our `bridge` plugin already enforces for this network (its record): (isolation
/// between networks, no traffic between its containers).
fn bridge_enforces(network: &str) -> (bool, bool) {
    let rec: Option<serde_json::Value> =
        Store::for_plugin("bridge").get(&[network, "network"]).ok().flatten();
    // `rules`: what bridge programmed, as JSON (see the bridge plugin's rules.rs).
    let applied: Option<serde_json::Value> = rec
        .as_ref()
        .and_then(|r| r.get("rules"))
        .and_then(|v| v.as_str())
        .and_then(|s| serde_json::from_str(s).ok());
    let applied = applied.as_ref().filter(|a| a.is_object());
    let flag = |k: &str| applied.and_then(|a| a.get(k)).and_then(|v| v.as_bool());
    let isolates = flag("isolate") == Some(true) || flag("internal") == Some(true);
    let icc_off = flag("icc") == Some(false);
    (isolates, icc_off)
}

pub fn plan(req: &Request, conf: &Conf, prev: &CniResult) -> Ingress {
    let ips = prev.container_ips(&req.env.ifname).iter().map(|i| i.address.addr()).collect();
    // The bridge: the first host-side interface of the result (the bridge plugin lists the
    // bridge first, then the host end of the veth).
    let bridge = prev.interfaces.iter().find(|i| i.sandbox.is_none()).map(|i| i.name.clone());
    let (bridge_isolates, bridge_icc_off) = bridge_enforces(&req.conf.name);
    let iptables = conf.backend == firewall::BackendKind::Iptables;
    Ingress {
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        isolate_bridge: conf.policy != Policy::Open && !bridge_isolates && bridge.is_some(),
        isolate_container: conf.policy == Policy::Isolated && !bridge_icc_off,
        bridge,
        ips,
        accept: iptables || ingress::foreign_forward_drop(),
    }
}
