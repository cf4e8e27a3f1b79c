//! The reference bridge plugin's keys, and Docker's `icc`, each checked the way a user would
//! see its effect: interface attributes, pings that work or are dropped.

use integration::*;
use serde_json::{json, Value};
use std::net::IpAddr;

fn ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap())
        .collect()
}

fn net(env: &TestEnv, name: &str, bridge: &str, ranges: Value, extra: Value) {
    let mut plugin = json!({
        "type": "bridge", "bridge": bridge, "isGateway": true, "isDefaultGateway": true,
        "ipam": {"type": "host-local", "ranges": ranges, "dataDir": env.ipam_dir()}
    });
    for (k, v) in extra.as_object().unwrap() {
        plugin[k] = v.clone();
    }
    env.write_conflist(name, &json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}));
}

fn link_json(ns: &Netns, dev: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", "dev", dev])[0].clone()
}

fn host_port_of(env: &TestEnv, result: &Value) -> String {
    // interfaces: [bridge, host veth, container]
    let name = result["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(links(env.host()).contains(&name));
    name
}

#[test]
fn interface_keys_take_effect() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brkeys");
    net(
        &env,
        "keys",
        "br-keys",
        json!([[{"subnet": "10.30.1.0/24"}]]),
        json!({
            "mtu": 1400, "hairpinMode": true, "promiscMode": true, "portIsolation": true,
            "capabilities": {"mac": true}
        }),
    );
    let (a, b) = (env.container("a"), env.container("b"));
    let ra = env.cnitool(
        "add",
        "keys",
        &a,
        &CniOpts::ours().cap_args(json!({"mac": "02:42:ac:11:00:0a"})),
    );
    ra.expect_ok();
    let rb = env.cnitool(
        "add",
        "keys",
        &b,
        &CniOpts::ours().args("IgnoreUnknown=1;MAC=02:42:ac:11:00:0b"),
    );
    rb.expect_ok();
    let eth_a = link_json(&a, "eth0");
    assert_eq!(eth_a["mtu"], json!(1400));
    assert_eq!(eth_a["address"], json!("02:42:ac:11:00:0a"), "runtimeConfig.mac");
    assert_eq!(link_json(&b, "eth0")["address"], json!("02:42:ac:11:00:0b"), "CNI_ARGS MAC");
    assert_eq!(ra.result()["interfaces"][2]["mac"], json!("02:42:ac:11:00:0a"));
    let port = link_json(env.host(), &host_port_of(&env, ra.result()));
    assert_eq!(port["linkinfo"]["info_slave_data"]["hairpin"], json!(true), "{port}");
    assert_eq!(port["linkinfo"]["info_slave_data"]["isolated"], json!(true), "{port}");
    let br = link_json(env.host(), "br-keys");
    assert!(br["flags"].as_array().unwrap().contains(&json!("PROMISC")), "{br}");
    // Isolated ports reach the gateway but not each other.
    assert!(ping(&a, "10.30.1.1"));
    assert!(!ping(&a, ips(rb.result())[0]), "portIsolation: ports must not reach each other");
    env.cnitool(
        "check",
        "keys",
        &a,
        &CniOpts::ours().cap_args(json!({"mac": "02:42:ac:11:00:0a"})),
    )
    .expect_ok();
    env.cnitool("del", "keys", &a, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "keys", &b, &CniOpts::ours()).expect_ok();
    assert_eq!(links(env.host()), vec!["lo".to_string()]);
}

#[test]
fn disable_container_interface_leaves_it_down() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brdown");
    net(
        &env,
        "down",
        "br-down",
        json!([[{"subnet": "10.30.2.0/24"}]]),
        json!({"disableContainerInterface": true}),
    );
    let c = env.container("c");
    env.cnitool("add", "down", &c, &CniOpts::ours()).expect_ok();
    let eth = link_json(&c, "eth0");
    assert!(!eth["flags"].as_array().unwrap().contains(&json!("UP")), "{eth}");
    assert!(
        addresses(&c).iter().any(|x| x.ifname == "eth0" && x.addr.is_ipv4()),
        "addresses are still assigned"
    );
    env.cnitool("del", "down", &c, &CniOpts::ours()).expect_ok();
}

#[test]
fn macspoofchk_drops_frames_from_a_changed_mac() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brspoof");
    net(
        &env,
        "spoof",
        "br-spoof",
        json!([[{"subnet": "10.30.3.0/24"}]]),
        json!({"macspoofchk": true}),
    );
    let (a, b) = (env.container("a"), env.container("b"));
    env.cnitool("add", "spoof", &a, &CniOpts::ours()).expect_ok();
    let rb = env.cnitool("add", "spoof", &b, &CniOpts::ours());
    rb.expect_ok();
    let ip_b = ips(rb.result())[0];
    assert!(ping(&a, ip_b), "same MAC: traffic flows");
    env.cnitool("check", "spoof", &a, &CniOpts::ours()).expect_ok();
    let real = link_json(&a, "eth0")["address"].as_str().unwrap().to_string();
    a.ip_ok(&["link", "set", "eth0", "address", "02:66:66:66:66:66"]);
    a.ip_ok(&["neigh", "flush", "all"]);
    assert!(!ping(&a, ip_b), "spoofed source MAC must be dropped");
    a.ip_ok(&["link", "set", "eth0", "address", &real]);
    assert!(ping(&a, ip_b), "back to its own MAC: traffic flows again");
    env.cnitool("del", "spoof", &a, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "spoof", &b, &CniOpts::ours()).expect_ok();
    assert!(!nft_ruleset(env.host()).contains("cni_"), "{}", nft_ruleset(env.host()));
}

#[test]
fn icc_false_blocks_containers_of_one_network() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("bricc");
    net(&env, "noicc", "br-noicc", json!([[{"subnet": "10.30.4.0/24"}]]), json!({"icc": false}));
    let (a, b) = (env.container("a"), env.container("b"));
    env.cnitool("add", "noicc", &a, &CniOpts::ours()).expect_ok();
    let ip_b = ips(env.cnitool("add", "noicc", &b, &CniOpts::ours()).expect_ok().result())[0];
    assert!(ping(&a, "10.30.4.1"), "the gateway is still reachable");
    assert!(!ping(&a, ip_b), "icc=false: containers of one network must not talk");
    env.cnitool("del", "noicc", &a, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "noicc", &b, &CniOpts::ours()).expect_ok();
    assert!(!nft_ruleset(env.host()).contains("cni_"));
}

#[test]
fn dual_stack_containers_talk_over_both_families() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brdual");
    net(
        &env,
        "dual",
        "br-dual",
        json!([[{"subnet": "10.30.5.0/24"}], [{"subnet": "fd00:30:5::/64"}]]),
        json!({"ipMasq": true}),
    );
    let (a, b) = (env.container("a"), env.container("b"));
    let ra = env.cnitool("add", "dual", &a, &CniOpts::ours());
    ra.expect_ok();
    let rb = env.cnitool("add", "dual", &b, &CniOpts::ours());
    rb.expect_ok();
    let (ips_a, ips_b) = (ips(ra.result()), ips(rb.result()));
    assert_eq!(ips_a.len(), 2, "{}", ra.stdout);
    let v6_b = *ips_b.iter().find(|i| i.is_ipv6()).unwrap();
    let v4_b = *ips_b.iter().find(|i| i.is_ipv4()).unwrap();
    assert!(ping(&a, v4_b));
    assert!(ping(&a, v6_b), "IPv6 between containers (no DAD wait)");
    assert!(ping(&a, "fd00:30:5::1"), "IPv6 gateway on the bridge");
    env.cnitool("check", "dual", &a, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "dual", &a, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "dual", &b, &CniOpts::ours()).expect_ok();
    assert_eq!(links(env.host()), vec!["lo".to_string()]);
}

#[test]
fn existing_bridge_address_needs_force_address() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brforce");
    // A bridge that existed before, with another address in the subnet.
    env.host().ip_ok(&["link", "add", "br-old", "type", "bridge"]);
    env.host().ip_ok(&["addr", "add", "10.30.6.200/24", "dev", "br-old"]);
    net(&env, "plain", "br-old", json!([[{"subnet": "10.30.6.0/24"}]]), json!({}));
    net(
        &env,
        "forced",
        "br-old",
        json!([[{"subnet": "10.30.6.0/24"}]]),
        json!({"forceAddress": true}),
    );
    let c = env.container("c");
    let add = env.cnitool("add", "plain", &c, &CniOpts::ours());
    add.expect_err();
    assert!(
        add.stderr.contains("10.30.6.200/24") && add.stderr.contains("forceAddress"),
        "{}",
        add.stderr
    );
    env.cnitool("del", "plain", &c, &CniOpts::ours()).expect_ok();
    env.cnitool("add", "forced", &c, &CniOpts::ours()).expect_ok();
    let br: Vec<String> = addresses(env.host())
        .iter()
        .filter(|a| a.ifname == "br-old" && a.addr.is_ipv4())
        .map(|a| a.addr.to_string())
        .collect();
    assert_eq!(br, vec!["10.30.6.1".to_string()], "gateway replaced the old address");
    env.cnitool("del", "forced", &c, &CniOpts::ours()).expect_ok();
    assert!(
        links(env.host()).contains(&"br-old".to_string()),
        "a bridge that existed before is never removed"
    );
}
