//! `firewall`: the reference plugin's `ingressPolicy` and its accepts, driven by the real
//! cnitool in private namespaces. Where the reference `firewall` exists
//! ([`reference_plugin_dir`]), the same scenario runs against it and against ours with the
//! same assertions.

use integration::*;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

/// `[bridge, firewall{ingressPolicy}]`; with our plugins the bridge's own isolation is off
/// unless `bridge_isolation`, so the firewall plugin is what isolates.
fn network(
    env: &TestEnv,
    name: &str,
    subnet: &str,
    policy: &str,
    ours: bool,
    bridge_isolation: bool,
) {
    let mut bridge = json!({"type": "bridge", "bridge": format!("br-{name}"), "isGateway": true,
        "isDefaultGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()}});
    if ours {
        bridge["isolation"] = json!(bridge_isolation);
    }
    let mut fw = json!({"type": "firewall", "backend": "iptables"});
    if !policy.is_empty() {
        fw["ingressPolicy"] = json!(policy);
    }
    let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": [bridge, fw]});
    env.write_conflist(name, &conf);
}

fn firewall_left(env: &TestEnv) -> Vec<String> {
    let mut left = Vec::new();
    let rules = nft_ruleset(env.host());
    if rules.contains("cni_") {
        left.push(format!("nft: {rules}"));
    }
    let ipt = iptables_save(env.host());
    if ipt.contains("CNI-SUITE") || ipt.contains("CNI-ADMIN") {
        left.push(format!("iptables: {ipt}"));
    }
    for f in files_under(&env.state_dir()) {
        // host-local keeps its lock file per network, like the reference.
        if !f.ends_with("lock") {
            left.push(format!("file {}", f.display()));
        }
    }
    left
}

fn lanes() -> Vec<(&'static str, CniOpts)> {
    let mut v = vec![("ours", CniOpts::ours())];
    if reference_plugin_dir().join("firewall").is_file() {
        v.push(("reference", CniOpts::reference()));
    }
    v
}

#[test]
fn same_bridge_isolates_networks() {
    if !require_root() {
        return;
    }
    for (lane, opts) in lanes() {
        let env = TestEnv::new(&format!("fws{}", &lane[..3]));
        let ours = lane == "ours";
        network(&env, "fa", "10.30.1.0/24", "same-bridge", ours, false);
        network(&env, "fb", "10.30.2.0/24", "same-bridge", ours, false);
        let out = outside_on_uplink(&env);
        let (a1, a2, b1) = (env.container("a1"), env.container("a2"), env.container("b1"));
        let ip_a1 = first_ip(env.cnitool("add", "fa", &a1, &opts).expect_ok().result());
        let ip_a2 = first_ip(env.cnitool("add", "fa", &a2, &opts).expect_ok().result());
        let ip_b1 = first_ip(env.cnitool("add", "fb", &b1, &opts).expect_ok().result());
        let _s = [
            EchoServer::tcp(&a1, SocketAddr::new(ip_a1, 80)),
            EchoServer::tcp(&a2, SocketAddr::new(ip_a2, 80)),
            EchoServer::tcp(&b1, SocketAddr::new(ip_b1, 80)),
        ];
        let _o = EchoServer::tcp(&out, "192.0.2.2:80".parse().unwrap());
        assert!(tcp_connect(&a1, ip_a2, 80), "{lane}: same network");
        assert!(!tcp_connect(&a1, ip_b1, 80), "{lane}: a -> b must be isolated");
        assert!(!tcp_connect(&b1, ip_a1, 80), "{lane}: b -> a must be isolated");
        assert!(tcp_connect(&a1, "192.0.2.2".parse().unwrap(), 80), "{lane}: outside");
        if ours {
            env.cnitool("check", "fa", &a1, &opts).expect_ok();
        }
        env.cnitool("del", "fa", &a1, &opts).expect_ok();
        env.cnitool("del", "fa", &a2, &opts).expect_ok();
        env.cnitool("del", "fb", &b1, &opts).expect_ok();
        if ours {
            let left = firewall_left(&env);
            assert!(left.is_empty(), "left after the last DEL: {left:?}");
        }
    }
}

#[test]
fn isolated_blocks_containers_of_one_bridge() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("fwiso");
    network(&env, "fi", "10.30.3.0/24", "isolated", true, false);
    let out = outside_on_uplink(&env);
    let (c1, c2) = (env.container("c1"), env.container("c2"));
    let opts = CniOpts::ours();
    let ip1 = first_ip(env.cnitool("add", "fi", &c1, &opts).expect_ok().result());
    let ip2 = first_ip(env.cnitool("add", "fi", &c2, &opts).expect_ok().result());
    let _s = [
        EchoServer::tcp(&c1, SocketAddr::new(ip1, 80)),
        EchoServer::tcp(&c2, SocketAddr::new(ip2, 80)),
    ];
    let _o = EchoServer::tcp(&out, "192.0.2.2:80".parse().unwrap());
    assert!(!tcp_connect(&c1, ip2, 80), "isolated: c1 reached c2");
    assert!(!tcp_connect(&c2, ip1, 80), "isolated: c2 reached c1");
    assert!(tcp_connect(&c1, "192.0.2.2".parse().unwrap(), 80), "isolated: still routes out");
    env.cnitool("check", "fi", &c1, &opts).expect_ok();
    env.cnitool("del", "fi", &c1, &opts).expect_ok();
    env.cnitool("del", "fi", &c2, &opts).expect_ok();
    let left = firewall_left(&env);
    assert!(left.is_empty(), "left after the last DEL: {left:?}");
}

/// Docker sets the iptables FORWARD policy to DROP: with `firewall` in the chain the
/// containers still reach the outside; without it they do not.
#[test]
fn containers_work_behind_a_forward_drop_policy() {
    if !require_root() {
        return;
    }
    for (lane, opts) in lanes() {
        let env = TestEnv::new(&format!("fwd{}", &lane[..3]));
        let ours = lane == "ours";
        network(&env, "fd", "10.30.4.0/24", "", ours, true);
        let plain = json!({"cniVersion": "1.0.0", "name": "fp", "plugins": [{"type": "bridge",
            "bridge": "br-fp", "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.30.5.0/24"}]], "dataDir": env.ipam_dir()}}]});
        env.write_conflist("fp", &plain);
        let out = outside_on_uplink(&env);
        env.host().sh_ok("iptables -w -P FORWARD DROP");
        let (c, p) = (env.container("c"), env.container("p"));
        env.cnitool("add", "fd", &c, &opts).expect_ok();
        env.cnitool("add", "fp", &p, &opts).expect_ok();
        let _o = EchoServer::tcp(&out, "192.0.2.2:80".parse().unwrap());
        let outside_ip: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!tcp_connect(&p, outside_ip, 80), "{lane}: the DROP policy is not in effect");
        assert!(tcp_connect(&c, outside_ip, 80), "{lane}: firewall's accept did not help");
        if ours {
            let st = env.exec_plugin(
                "firewall",
                &[("CNI_COMMAND", "STATUS")],
                &json!({"cniVersion": "1.1.0", "name": "fd", "type": "firewall", "backend": "firewalld"}).to_string(),
            );
            st.expect_ok();
            assert!(
                st.stderr.contains("firewalld requested") && st.stderr.contains("nftables"),
                "{}",
                st.stderr
            );
            assert!(
                st.stderr.contains("policy drop") || st.stderr.contains("DROP"),
                "{}",
                st.stderr
            );
        }
        env.cnitool("del", "fd", &c, &opts).expect_ok();
        env.cnitool("del", "fp", &p, &opts).expect_ok();
        env.host().sh_ok("iptables -w -P FORWARD ACCEPT");
        if ours {
            let left = firewall_left(&env);
            assert!(left.is_empty(), "left after the last DEL: {left:?}");
        }
    }
}

/// With our bridge isolating the network already, `same-bridge` adds nothing twice, and
/// isolation still holds.
#[test]
fn bridge_isolation_and_same_bridge_agree() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("fwagr");
    network(&env, "ga", "10.30.6.0/24", "same-bridge", true, true);
    network(&env, "gb", "10.30.7.0/24", "same-bridge", true, true);
    let (a, b) = (env.container("a"), env.container("b"));
    let opts = CniOpts::ours();
    env.cnitool("add", "ga", &a, &opts).expect_ok();
    let ip_b = first_ip(env.cnitool("add", "gb", &b, &opts).expect_ok().result());
    let _s = EchoServer::tcp(&b, SocketAddr::new(ip_b, 80));
    assert!(!tcp_connect(&a, ip_b, 80), "networks must be isolated");
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("cni_firewall"), "isolation programmed twice:\n{rules}");
    env.cnitool("del", "ga", &a, &opts).expect_ok();
    env.cnitool("del", "gb", &b, &opts).expect_ok();
    let left = firewall_left(&env);
    assert!(left.is_empty(), "left after the last DEL: {left:?}");
}

#[test]
fn keys_version_and_bad_input() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("fwkey");
    let about = env.exec_plugin("firewall", &[("CNI_COMMAND", "")], "");
    assert!(about.stderr.contains("CNI firewall plugin v"), "{}", about.stderr);
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.30.8.2/24", "interface": 1}]});
    let run = |extra: Value| {
        let mut conf =
            json!({"cniVersion": "1.1.0", "name": "k", "type": "firewall", "prevResult": prev});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        env.exec_plugin(
            "firewall",
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "k1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/x"),
            ],
            &conf.to_string(),
        )
    };
    let ok = run(
        json!({"backend": "firewalld", "firewalldZone": "trusted", "iptablesAdminChainName": "MY-ADMIN"}),
    );
    ok.expect_ok();
    assert_eq!(ok.result()["ips"][0]["address"], "10.30.8.2/24", "prevResult passed through");
    let bad = run(json!({"ingressPolicy": "closed"}));
    assert_eq!(bad.error_code(), Some(7), "{}", bad.stdout);
    assert!(
        bad.stdout.contains("ingressPolicy") && bad.stdout.contains("closed"),
        "{}",
        bad.stdout
    );
    let bad = run(json!({"backend": "pf"}));
    assert_eq!(bad.error_code(), Some(7), "{}", bad.stdout);
    assert!(bad.stdout.contains("backend"), "{}", bad.stdout);
    let bad = run(json!({"iptablesAdminChainName": "has space"}));
    assert_eq!(bad.error_code(), Some(7), "{}", bad.stdout);
    assert!(bad.stdout.contains("iptablesAdminChainName"), "{}", bad.stdout);
    // A bridge to isolate must be an interface name (found by the firewall_config fuzz
    // target): refused before anything is recorded or programmed.
    let mut bad_prev = prev.clone();
    bad_prev["interfaces"][0]["name"] = json!("br0\n-A FORWARD -j ACCEPT");
    let bad = run(json!({"ingressPolicy": "same-bridge", "prevResult": bad_prev}));
    assert_eq!(bad.error_code(), Some(7), "{}", bad.stdout);
    assert!(bad.stdout.contains("prevResult.interfaces"), "{}", bad.stdout);
    let left = firewall_left(&env);
    assert!(left.is_empty(), "{left:?}");
    let del = env.exec_plugin(
        "firewall",
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "k1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ],
        &json!({"cniVersion": "1.1.0", "name": "k", "type": "firewall"}).to_string(),
    );
    del.expect_ok();
    let left = firewall_left(&env);
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 15: a config change that drops every rule removes the old ones (bridge used to
/// keep them), and DEL tears down with the backend recorded at ADD, not the configured one.
#[test]
fn bridge_rules_follow_config_and_recorded_backend() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("fwcfg");
    let conf = |masq: bool, iso: bool, backend: &str| {
        json!({"cniVersion": "1.0.0", "name": "cfg", "plugins": [{"type": "bridge", "bridge": "br-cfg",
            "isGateway": true, "ipMasq": masq, "isolation": iso, "firewallBackend": backend,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.30.9.0/24"}]], "dataDir": env.ipam_dir()}}]})
    };
    let (a, b) = (env.container("a"), env.container("b"));
    env.write_conflist("cfg", &conf(true, true, "nftables"));
    env.cnitool("add", "cfg", &a, &CniOpts::ours()).expect_ok();
    assert!(nft_ruleset(env.host()).contains("masquerade"), "masquerade programmed");
    // The same network re-configured with nothing to enforce: the old rules go.
    env.write_conflist("cfg", &conf(false, false, "nftables"));
    env.cnitool("add", "cfg", &b, &CniOpts::ours()).expect_ok();
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("cni_bridge"), "old rules kept:\n{rules}");
    // Back on, then DEL everything with a config that names the other backend.
    env.write_conflist("cfg", &conf(true, true, "nftables"));
    env.cnitool("del", "cfg", &b, &CniOpts::ours()).expect_ok();
    env.cnitool("add", "cfg", &b, &CniOpts::ours()).expect_ok();
    assert!(nft_ruleset(env.host()).contains("masquerade"));
    env.write_conflist("cfg", &conf(true, true, "iptables"));
    env.cnitool("del", "cfg", &a, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "cfg", &b, &CniOpts::ours()).expect_ok();
    let left = firewall_left(&env);
    assert!(left.is_empty(), "left after the last DEL: {left:?}");
}
