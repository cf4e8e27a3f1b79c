//! Deciding what one attachment needs: from the config, prevResult (the container's
//! addresses and bridge), what our `bridge` already enforces for the network (its record) and
//! whether another firewall drops forwarded traffic.

use crate::config::{Conf, Policy};
use cni::store::Store;
use cni::{CniError, CniResult, Request};
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

/// What the plan needs to know besides the config and prevResult, read from our `bridge`
/// plugin's record and the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Our `bridge` already isolates the network (`isolation` or `internal`).
    pub bridge_isolates: bool,
    /// Our `bridge` already drops traffic between its containers (`icc=false`).
    pub bridge_icc_off: bool,
    /// Another firewall drops forwarded traffic by policy (iptables FORWARD DROP).
    pub foreign_drop: bool,
}

impl Enforced {
    /// Reads what is enforced now for `network`. The FORWARD policy is only looked up when
    /// the nftables backend programs the rules (the iptables one always accepts).
    pub fn now(network: &str, conf: &Conf) -> Enforced {
        let (bridge_isolates, bridge_icc_off) = bridge_enforces(network);
        let foreign_drop =
            conf.backend != firewall::BackendKind::Iptables && ingress::foreign_forward_drop();
        Enforced { bridge_isolates, bridge_icc_off, foreign_drop }
    }
}

pub fn plan(req: &Request, conf: &Conf, prev: &CniResult) -> Result<Ingress, CniError> {
    decide(req, conf, prev, Enforced::now(&req.conf.name, conf))
}

/// The attachment's rules from the config, prevResult and what is enforced already (pure).
/// A bridge to isolate must have a valid interface name: it becomes a 16-byte nftables set
/// element (a longer one would never match, leaving the network unisolated) and a word of
/// an iptables-restore batch (a newline in it would add rules of its own).
pub fn decide(
    req: &Request,
    conf: &Conf,
    prev: &CniResult,
    now: Enforced,
) -> Result<Ingress, CniError> {
    let ips = prev.container_ips(&req.env.ifname).iter().map(|i| i.address.addr()).collect();
    // The bridge: the first host-side interface of the result (the bridge plugin lists the
    // bridge first, then the host end of the veth).
    let bridge = prev.interfaces.iter().find(|i| i.sandbox.is_none()).map(|i| i.name.clone());
    let iptables = conf.backend == firewall::BackendKind::Iptables;
    let isolate_bridge = conf.policy != Policy::Open && !now.bridge_isolates && bridge.is_some();
    if let (true, Some(name)) = (isolate_bridge, &bridge) {
        if let Some(why) = cni::names::ifname_problem(name) {
            return Err(CniError::bad_value(
                "prevResult.interfaces[].name",
                format!("{name:?}"),
                format!("the bridge to isolate is not a valid interface name: {why}"),
            ));
        }
    }
    Ok(Ingress {
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        isolate_bridge,
        isolate_container: conf.policy == Policy::Isolated && !now.bridge_icc_off,
        bridge,
        ips,
        accept: iptables || now.foreign_drop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(prev_bridge: &str) -> Request {
        let stdin = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "firewall",
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": prev_bridge}, {"name": "eth0", "sandbox": "/ns"}],
                "ips": [{"address": "10.4.1.5/24", "interface": 1}]
            }
        });
        cni::dispatch::request_for("ADD", "c1", "eth0", "", stdin.to_string().as_bytes()).unwrap()
    }

    fn conf(policy: Policy) -> Conf {
        Conf {
            policy,
            admin_chain: "CNI-ADMIN".into(),
            backend: firewall::BackendKind::Nftables,
            requested: String::new(),
        }
    }

    #[test]
    fn isolation_follows_the_policy_and_what_bridge_enforces() {
        let req = request("cni0");
        let prev = req.prev.clone().unwrap();
        let att = decide(&req, &conf(Policy::Isolated), &prev, Enforced::default()).unwrap();
        assert_eq!(att.bridge.as_deref(), Some("cni0"));
        assert_eq!(att.ips, vec!["10.4.1.5".parse::<std::net::IpAddr>().unwrap()]);
        assert!(att.isolate_bridge && att.isolate_container && !att.accept);
        let done = Enforced { bridge_isolates: true, bridge_icc_off: true, foreign_drop: true };
        let att = decide(&req, &conf(Policy::Isolated), &prev, done).unwrap();
        assert!(!att.isolate_bridge && !att.isolate_container && att.accept);
        let att = decide(&req, &conf(Policy::Open), &prev, Enforced::default()).unwrap();
        assert!(!att.isolate_bridge && !att.isolate_container);
    }

    /// Found by the firewall_config fuzz target: a prevResult bridge name that is no
    /// interface name was planned for isolation (never matching in nftables; copied into
    /// the iptables-restore batch as it was).
    #[test]
    fn a_bridge_to_isolate_must_be_an_interface_name() {
        for bad in ["cni-wvar/run/netns/x", "br0\n-A FORWARD -j ACCEPT", "", "a b"] {
            let req = request(bad);
            let prev = req.prev.clone().unwrap();
            let e =
                decide(&req, &conf(Policy::SameBridge), &prev, Enforced::default()).unwrap_err();
            assert_eq!(e.code, 7, "{bad:?}");
            assert!(e.msg.contains(&format!("{bad:?}")), "{}", e.msg);
            // Not isolated (open, or already by our bridge): the name is not used.
            assert!(decide(&req, &conf(Policy::Open), &prev, Enforced::default()).is_ok());
            let by_bridge = Enforced { bridge_isolates: true, ..Default::default() };
            assert!(decide(&req, &conf(Policy::SameBridge), &prev, by_bridge).is_ok());
        }
    }
}
