//! `bridge`: Docker's bridge networks, driven by the real cnitool in private namespaces.
//! Each test asserts what a user would check: pings, TCP, what the outside sees, errors,
//! and that nothing of ours is left after the last DEL.

use integration::*;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

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

/// Everything of ours that could be left in the host namespace and the state directories.
fn leftovers(env: &TestEnv) -> Vec<String> {
    ours_left(env, &["uplink"])
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
    let out = outside_on_uplink(&env);
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
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

/// Runs the bridge binary (or `binary`) directly, the way a runtime does.
fn direct(env: &TestEnv, verb: &str, id: &str, netns: &str, conf: &Value) -> CniOutput {
    direct_with(env, "bridge", verb, id, netns, conf)
}

fn direct_with(
    env: &TestEnv,
    binary: &str,
    verb: &str,
    id: &str,
    netns: &str,
    conf: &Value,
) -> CniOutput {
    let our_path = env.our_plugin_dir().display().to_string();
    env.exec_plugin(
        binary,
        &[
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &our_path),
        ],
        &conf.to_string(),
    )
}

fn single_conf(env: &TestEnv, name: &str, bridge: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
        "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()}})
}

/// Issue 14.5: a repeated ADD used to find eth0 taken and roll back by releasing every lease
/// of the container, so the next container got the same, still-used address.
#[test]
fn a_repeated_add_is_refused_and_keeps_the_live_address() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brrepeat");
    bridge_net(&env, "rep", "br-rep", "10.18.1.0/24", json!({"ipMasq": true}));
    let opts = CniOpts::ours();
    let (a, b) = (env.container("a"), env.container("b"));
    let ip_a = first_ip(env.cnitool("add", "rep", &a, &opts).expect_ok().result());

    let again = env.cnitool("add", "rep", &a, &opts);
    again.expect_err();
    assert!(
        again.stdout.contains("already attached") || again.stderr.contains("already attached"),
        "a clear error: {again}"
    );
    // Called directly, the code is visible too.
    let conf = single_conf(&env, "rep", "br-rep", "10.18.1.0/24");
    let id = env.container_id(&a, &opts);
    let direct_again = direct(&env, "ADD", &id, &a.path().display().to_string(), &conf);
    assert_eq!(direct_again.error_code(), Some(7), "{direct_again}");

    let ip_b = first_ip(env.cnitool("add", "rep", &b, &opts).expect_ok().result());
    assert_ne!(ip_a, ip_b, "b must not get a's live address");
    assert!(ping(&b, ip_a), "a still has its address and is reachable");
    env.cnitool("check", "rep", &a, &opts).expect_ok();
    env.cnitool("del", "rep", &a, &opts).expect_ok();
    env.cnitool("del", "rep", &b, &opts).expect_ok();
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

/// Issue 14.8: container IDs of any length the spec allows (it sets none): ADD, CHECK and DEL
/// work, and DEL works again after everything is gone.
#[test]
fn long_container_ids_work_and_del_never_fails_on_them() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brlongid");
    let conf = single_conf(&env, "longid", "br-long", "10.19.1.0/24");
    let mut ips = Vec::new();
    let ctrs: Vec<(String, Netns)> = [246usize, 300, 1024]
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{i}{}", "a".repeat(n - 1)), env.container(&format!("l{i}"))))
        .collect();
    for (id, c) in &ctrs {
        let path = c.path().display().to_string();
        let add = direct(&env, "ADD", id, &path, &conf);
        add.expect_ok();
        ips.push(first_ip(add.result()));
        let mut check = conf.clone();
        check["prevResult"] = add.result().clone();
        direct(&env, "CHECK", id, &path, &check).expect_ok();
    }
    assert!(ping(&ctrs[0].1, ips[2]), "containers with long IDs talk");
    for (id, c) in &ctrs {
        let path = c.path().display().to_string();
        direct(&env, "DEL", id, &path, &conf).expect_ok();
        direct(&env, "DEL", id, &path, &conf).expect_ok();
    }
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

/// Issue 14.9: an `ipam.type` that is not an IPAM plugin used to run the plugin as its own
/// IPAM while it held its own lock, forever. Every such type is refused with code 7 at once,
/// and nothing is created. (A wrapper bounds each call, so the old hang fails the test.)
#[test]
fn ipam_types_that_are_not_ipam_plugins_are_refused() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("bripamself");
    let bin = env.scratch_bin_dir();
    let ours = env.our_plugin_dir();
    for name in ["bridge", "macvlan"] {
        let wrapper = bin.join(format!("bounded-{name}"));
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec timeout -s KILL 20 {} \"$@\"\n", ours.join(name).display()),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&wrapper, perms).unwrap();
    }
    // A name in CNI_PATH that is the bridge binary itself.
    std::os::unix::fs::symlink(ours.join("bridge"), bin.join("my-ipam")).unwrap();
    let cni_path = format!("{}:{}", bin.display(), ours.display());
    let c = env.container("c");
    let path = c.path().display().to_string();
    let cases = [
        ("bridge", json!({"type": "bridge"}), "bridge"),
        ("bridge", json!({"type": "macvlan"}), "macvlan"),
        ("bridge", json!({"type": "my-ipam"}), "my-ipam"),
        ("macvlan", json!({"type": "macvlan"}), "macvlan"),
    ];
    for (plugin, ipam, named) in cases {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "selfipam", "type": plugin,
            "bridge": "br-self", "master": "lo", "isGateway": true, "ipam": ipam});
        if plugin == "macvlan" {
            conf.as_object_mut().unwrap().remove("bridge");
        }
        let out = env.exec_plugin(
            &bin.join(format!("bounded-{plugin}")).display().to_string(),
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "self1"),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &cni_path),
            ],
            &conf.to_string(),
        );
        assert_eq!(out.error_code(), Some(7), "{plugin} with ipam.type {named}: {out}");
        assert!(
            out.stdout.contains("ipam.type") && out.stdout.contains(named),
            "the message names the field and the value: {out}"
        );
        assert_eq!(links(&c), vec!["lo".to_string()], "nothing in the container");
        assert_eq!(leftovers(&env), Vec::<String>::new(), "{plugin}/{named}");
    }
}

/// The longest network name the suite accepts (README, "Errors"): a name is a directory name
/// in the reference-compatible IPAM store, and file names have at most 255 bytes.
const MAX_NETWORK_NAME_LEN: usize = 255;

/// Issue 14.10: `ipam` that is not an object used to be ignored (no address at all); a
/// network name too long for a file name failed as an I/O error. Both are code 7 naming the
/// field; the longest allowed name works end to end.
#[test]
fn malformed_ipam_and_overlong_names_are_code_7() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("brvalid");
    let c = env.container("c");
    let path = c.path().display().to_string();
    for ipam in [
        json!("host-local"),
        json!(24),
        json!([{"type": "host-local"}]),
        json!({"subnet": "10.20.0.0/24"}),
    ] {
        let mut conf = single_conf(&env, "valid", "br-valid", "10.20.0.0/24");
        conf["ipam"] = ipam.clone();
        let out = direct(&env, "ADD", "v1", &path, &conf);
        assert_eq!(out.error_code(), Some(7), "ipam {ipam}: {out}");
        assert!(out.stdout.contains("ipam"), "names the field: {out}");
        assert_eq!(links(&c), vec!["lo".to_string()]);
        assert_eq!(leftovers(&env), Vec::<String>::new(), "ipam {ipam}");
    }

    let too_long = format!("n{}", "x".repeat(MAX_NETWORK_NAME_LEN));
    let out =
        direct(&env, "ADD", "v1", &path, &single_conf(&env, &too_long, "br-valid", "10.20.0.0/24"));
    assert_eq!(out.error_code(), Some(7), "{out}");
    assert!(
        out.stdout.contains("name") && out.stdout.contains(&MAX_NETWORK_NAME_LEN.to_string()),
        "{out}"
    );
    assert_eq!(leftovers(&env), Vec::<String>::new());

    let longest = format!("n{}", "x".repeat(MAX_NETWORK_NAME_LEN - 1));
    let conf = single_conf(&env, &longest, "br-valid", "10.20.0.0/24");
    let add = direct(&env, "ADD", "v1", &path, &conf);
    add.expect_ok();
    assert!(ping(&c, "10.20.0.1"), "the container reaches its gateway");
    let mut check = conf.clone();
    check["prevResult"] = add.result().clone();
    direct(&env, "CHECK", "v1", &path, &check).expect_ok();
    direct(&env, "DEL", "v1", &path, &conf).expect_ok();
    assert_eq!(leftovers(&env), Vec::<String>::new());
}
