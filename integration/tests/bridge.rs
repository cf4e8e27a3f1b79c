//! `bridge`: Docker's bridge networks, driven by the real cnitool in private namespaces.
//! Each test asserts what a user would check: pings, TCP, what the outside sees, errors,
//! and that nothing of ours is left after the last DEL.

use integration::*;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn first_ip(result: &Value) -> IpAddr {
    let cidr =
        result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no ips[0] in {result}"));
    cidr.split('/').next().unwrap().parse().unwrap()
}

fn bridge_net(env: &TestEnv, name: &str, bridge: &str, subnet: &str, extra: Value) -> Value {
    let mut plugin = json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()}
    });
    for (k, v) in extra.as_object().unwrap() {
        plugin[k] = v.clone();
    }
    let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
    env.write_conflist(name, &conf);
    conf
}

/// An "outside" namespace joined to the host namespace by a veth: 192.0.2.1 (host) - 192.0.2.2.
fn outside(env: &TestEnv) -> Netns {
    let out = Netns::new("out");
    env.host().veth_to("uplink", &out, "eth0");
    env.host().ip_ok(&["addr", "add", "192.0.2.1/24", "dev", "uplink"]);
    out.ip_ok(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    out
}

/// Everything of ours that could be left in the host namespace and the state directories.
fn leftovers(env: &TestEnv) -> Vec<String> {
    let mut left = Vec::new();
    for l in links(env.host()) {
        if l != "lo" && l != "uplink" {
            left.push(format!("link {l}"));
        }
    }
    let rules = nft_ruleset(env.host());
    // iptables-nft creates its own built-in tables; ours are the cni_* ones.
    if rules.contains("cni_") {
        left.push(format!("nft: {rules}"));
    }
    let ipt = iptables_save(env.host());
    if ipt.contains("CNI-SUITE") {
        left.push("iptables chains".into());
    }
    for f in files_under(&env.state_dir()).into_iter().chain(files_under(&env.ipam_dir())) {
        // host-local keeps its lock file per network, like the reference.
        if !f.ends_with("lock") {
            left.push(format!("file {}", f.display()));
        }
    }
    left
}

#[test]
fn two_containers_talk_and_other_networks_are_isolated() {
    isolated_networks("nftables", "10.10");
}

#[test]
fn iptables_two_containers_talk_and_other_networks_are_isolated() {
    isolated_networks("iptables", "10.16");
}

fn isolated_networks(backend: &str, prefix: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("brisol{}", &backend[..3]));
    bridge_net(
        &env,
        "neta",
        "br-a",
        &format!("{prefix}.1.0/24"),
        json!({"ipMasq": true, "firewallBackend": backend}),
    );
    bridge_net(
        &env,
        "netb",
        "br-b",
        &format!("{prefix}.2.0/24"),
        json!({"ipMasq": true, "firewallBackend": backend}),
    );
    let opts = CniOpts::ours();
    let (a1, a2, b1) = (env.container("a1"), env.container("a2"), env.container("b1"));
    let ip_a1 = first_ip(env.cnitool("add", "neta", &a1, &opts).expect_ok().result());
    let ip_a2 = first_ip(env.cnitool("add", "neta", &a2, &opts).expect_ok().result());
    let ip_b1 = first_ip(env.cnitool("add", "netb", &b1, &opts).expect_ok().result());

    assert!(ping(&a1, ip_a2), "a1 -> a2 on the same network");
    let server = EchoServer::tcp(&a2, SocketAddr::new(ip_a2, 8080));
    assert_eq!(tcp_echo(&a1, ip_a2, server.port(), "hello").as_deref(), Some("hello"));
    // Isolation: the gateway routes between the bridges, and the firewall drops it.
    assert!(ping(&b1, format!("{prefix}.2.1")), "b1 reaches its own gateway");
    assert!(!ping(&b1, ip_a1), "b1 must not reach a1 on another network");
    assert!(!tcp_connect(&b1, ip_a2, server.port()), "b1 must not reach a2's server");
    assert!(!ping(&a1, ip_b1), "a1 must not reach b1");

    for (ns, net) in [(&a1, "neta"), (&a2, "neta"), (&b1, "netb")] {
        env.cnitool("check", net, ns, &opts).expect_ok();
    }
    for (ns, net) in [(&a1, "neta"), (&a2, "neta"), (&b1, "netb")] {
        env.cnitool("del", net, ns, &opts).expect_ok();
        // DEL is idempotent.
        env.cnitool("del", net, ns, &opts).expect_ok();
    }
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn isolation_off_lets_networks_talk() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brnoiso");
    bridge_net(&env, "neta", "br-a", "10.11.1.0/24", json!({"isolation": false}));
    bridge_net(&env, "netb", "br-b", "10.11.2.0/24", json!({"isolation": false}));
    let opts = CniOpts::ours();
    let (a, b) = (env.container("a"), env.container("b"));
    let ip_a = first_ip(env.cnitool("add", "neta", &a, &opts).expect_ok().result());
    first_ip(env.cnitool("add", "netb", &b, &opts).expect_ok().result());
    assert!(ping(&b, ip_a), "with isolation off, b reaches a through the host");
    env.cnitool("del", "neta", &a, &opts).expect_ok();
    env.cnitool("del", "netb", &b, &opts).expect_ok();
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn masquerade_reaches_outside_and_internal_does_not() {
    masquerade_and_internal("nftables", "10.12");
}

#[test]
fn iptables_masquerade_reaches_outside_and_internal_does_not() {
    masquerade_and_internal("iptables", "10.17");
}

fn masquerade_and_internal(backend: &str, prefix: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("brmasq{}", &backend[..3]));
    let out = outside(&env);
    bridge_net(
        &env,
        "pub",
        "br-pub",
        &format!("{prefix}.1.0/24"),
        json!({"ipMasq": true, "firewallBackend": backend}),
    );
    bridge_net(
        &env,
        "int",
        "br-int",
        &format!("{prefix}.2.0/24"),
        json!({"internal": true, "firewallBackend": backend}),
    );
    let opts = CniOpts::ours();
    let (c, i) = (env.container("c"), env.container("i"));
    env.cnitool("add", "pub", &c, &opts).expect_ok();
    let add_i = env.cnitool("add", "int", &i, &opts);
    add_i.expect_ok();
    // Internal: no default route was given to the container.
    assert!(
        add_i.result().get("routes").is_none()
            || !add_i.result()["routes"].to_string().contains("0.0.0.0/0")
    );

    let server = EchoServer::tcp(&out, "192.0.2.2:9000".parse().unwrap());
    assert_eq!(tcp_echo(&c, "192.0.2.2".parse().unwrap(), 9000, "out").as_deref(), Some("out"));
    let peers = server.peers();
    assert!(!peers.is_empty());
    assert!(
        peers.iter().all(|p| p.ip() == "192.0.2.1".parse::<IpAddr>().unwrap()),
        "outside must see the host's address, saw {peers:?}"
    );

    assert!(!ping(&i, "192.0.2.2"), "internal network must not reach the outside");
    assert!(!tcp_connect(&i, "192.0.2.2".parse().unwrap(), 9000));
    // Even with a route added by hand, the firewall keeps it in.
    i.ip_ok(&["route", "add", "default", "via", &format!("{prefix}.2.1")]);
    assert!(
        !ping(&i, "192.0.2.2"),
        "internal network must not reach the outside even with a route"
    );

    env.cnitool("del", "pub", &c, &opts).expect_ok();
    env.cnitool("del", "int", &i, &opts).expect_ok();
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn del_after_netns_is_gone_leaves_nothing() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brgone");
    bridge_net(&env, "gone", "br-gone", "10.13.1.0/24", json!({"ipMasq": true}));
    let opts = CniOpts::ours();
    let c = env.container("c");
    env.cnitool("add", "gone", &c, &opts).expect_ok();
    let id = env.container_id(&c, &opts);
    let path = c.path().display().to_string();
    drop(c); // the runtime removed the container before calling DEL
    let conf = json!({"cniVersion": "1.0.0", "name": "gone", "type": "bridge", "bridge": "br-gone", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.13.1.0/24"}]], "dataDir": env.ipam_dir()}});
    let our_path = env.our_plugin_dir().display().to_string();
    let del = env.exec_plugin(
        "bridge",
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &id),
            ("CNI_NETNS", &path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &our_path),
        ],
        &conf.to_string(),
    );
    del.expect_ok();
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn bad_configs_are_refused_and_create_nothing() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brbad");
    let cases = [
        (
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.14.0.0/33"}]]}}),
            "10.14.0.0/33",
        ),
        (json!({"vlan": 5000}), "5000"),
        (json!({"mtu": 70000}), "70000"),
        (json!({"firewallBackend": "pf"}), "pf"),
        (json!({"bridge": "this-name-is-far-too-long"}), "this-name-is-far-too-long"),
    ];
    let our_path = env.our_plugin_dir().display().to_string();
    for (extra, value) in cases.iter() {
        let mut conf = json!({"cniVersion": "1.1.0", "name": "bad", "type": "bridge", "bridge": "br-bad", "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.14.0.0/24"}]], "dataDir": env.ipam_dir()}});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        if let Some(ipam) = extra.get("ipam") {
            conf["ipam"]["ranges"] = ipam["ranges"].clone();
        }
        let c = env.container("c");
        let path = c.path().display().to_string();
        // Called directly: cnitool prints the message but drops the code.
        let add = env.exec_plugin(
            "bridge",
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "bad1"),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &our_path),
            ],
            &conf.to_string(),
        );
        assert_eq!(add.error_code(), Some(7), "{extra}: {}", add.stdout);
        assert!(add.stdout.contains(value), "{extra}: message should name {value}: {}", add.stdout);
        assert_eq!(links(&c), vec!["lo".to_string()], "{extra}: nothing created in the container");
        assert_eq!(leftovers(&env), Vec::<String>::new(), "{extra}");
    }
}

#[test]
fn gc_removes_attachments_not_in_the_valid_list() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brgc");
    let conf = bridge_net(&env, "gcnet", "br-gc", "10.15.1.0/24", json!({"ipMasq": true}));
    let opts = CniOpts::ours();
    let (keep, leak) = (env.container("keep"), env.container("leak"));
    let ip_keep = first_ip(env.cnitool("add", "gcnet", &keep, &opts).expect_ok().result());
    env.cnitool("add", "gcnet", &leak, &opts).expect_ok();
    let keep_id = env.container_id(&keep, &opts);
    drop(leak); // died without DEL
    let mut gc = conf["plugins"][0].clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["name"] = json!("gcnet");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep_id, "ifname": "eth0"}]);
    let our_path = env.our_plugin_dir().display().to_string();
    env.exec_plugin("bridge", &[("CNI_COMMAND", "GC"), ("CNI_PATH", &our_path)], &gc.to_string())
        .expect_ok();
    let leases: Vec<_> = std::fs::read_dir(env.ipam_dir().join("gcnet"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|f| f.starts_with("10."))
        .collect();
    assert_eq!(leases.len(), 1, "only the kept container's lease remains: {leases:?}");
    assert!(ping(&keep, "10.15.1.1"), "the kept container still works");
    let _ = ip_keep;
    // STATUS on a healthy network.
    let mut status = gc.clone();
    status.as_object_mut().unwrap().remove("cni.dev/valid-attachments");
    env.exec_plugin(
        "bridge",
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", &our_path)],
        &status.to_string(),
    )
    .expect_ok();
    env.cnitool("del", "gcnet", &keep, &opts).expect_ok();
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(leftovers(&env), Vec::<String>::new());
}
