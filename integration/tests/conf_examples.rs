//! Every conflist in conf-examples/ is loaded unchanged (only copied into the test's
//! NETCONFPATH) and run through the real cnitool: ADD, what the example promises, CHECK, DEL,
//! and nothing left behind.

use integration::*;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

fn example(name: &str) -> Value {
    let path: PathBuf = workspace_root().join("conf-examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(env: &TestEnv, file: &str) -> String {
    let conf = example(file);
    let name = conf["name"].as_str().unwrap().to_string();
    env.write_conflist(&name, &conf);
    name
}

fn nothing_left(env: &TestEnv, allowed_links: &[&str]) {
    let left = ours_left(env, allowed_links);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn every_example_is_valid_json_with_a_docker_comment() {
    let dir = workspace_root().join("conf-examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let conf = example(&e.file_name().to_string_lossy());
        assert!(
            conf["_comment"].as_array().is_some_and(|c| !c.is_empty()),
            "{:?} needs a comment block",
            e.path()
        );
        assert_eq!(conf["cniVersion"], json!("1.0.0"), "{:?}", e.path());
        n += 1;
    }
    assert_eq!(n, 12);
}

#[test]
fn bridge_examples_run() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("exbr");
    for file in [
        "10-default-bridge.conflist",
        "20-user-bridge.conflist",
        "47-firewall.conflist",
        "50-internal.conflist",
    ] {
        let net = load(&env, file);
        let (a, b) = (env.container("a"), env.container("b"));
        let opts = CniOpts::ours().args("IgnoreUnknown=1;K8S_POD_NAME=alpha");
        let ra = env.cnitool("add", &net, &a, &opts);
        ra.expect_ok();
        let rb = env.cnitool(
            "add",
            &net,
            &b,
            &CniOpts::ours().args("IgnoreUnknown=1;K8S_POD_NAME=beta"),
        );
        rb.expect_ok();
        assert!(ping(&a, first_ip(rb.result())), "{file}: containers on one network talk");
        if file.starts_with("20") {
            assert_eq!(ra.result()["dns"]["nameservers"], json!(["127.0.0.11"]), "{file}");
            let out = a.exec_ok(&["dig", "+short", "@127.0.0.11", "beta"]);
            assert_eq!(out.trim(), first_ip(rb.result()).to_string(), "{file}: name resolution");
        }
        env.cnitool("check", &net, &a, &opts).expect_ok();
        env.cnitool("del", &net, &a, &opts).expect_ok();
        env.cnitool("del", &net, &b, &CniOpts::ours()).expect_ok();
        nothing_left(&env, &[]);
    }
}

#[test]
fn alias_group_example_round_robins_in_its_ip_range() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("exalias");
    let net = load(&env, "30-alias-group.conflist");
    let members: Vec<Netns> = (0..3).map(|i| env.container(&format!("m{i}"))).collect();
    let mut addrs = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let opts = CniOpts::ours()
            .args(&format!("IgnoreUnknown=1;K8S_POD_NAME=member{i}"))
            .cap_args(json!({"aliases": ["tg-net"]}));
        let r = env.cnitool("add", &net, m, &opts);
        r.expect_ok();
        let ip = first_ip(r.result());
        let last = match ip {
            IpAddr::V4(v4) => v4.octets()[3],
            _ => unreachable!(),
        };
        assert!((128..=253).contains(&last), "--ip-range 172.200.1.128/25: got {ip}");
        assert_eq!(r.result()["ips"][0]["gateway"], json!("172.200.1.254"));
        addrs.push(ip.to_string());
    }
    let mut answers = std::collections::HashSet::new();
    for _ in 0..12 {
        let out = members[0].exec_ok(&["dig", "+short", "@127.0.0.11", "tg-net"]);
        let mut got: Vec<String> = out.lines().map(str::to_string).collect();
        answers.insert(got.clone());
        got.sort();
        let mut want = addrs.clone();
        want.sort();
        assert_eq!(got, want, "every member's address in each answer");
    }
    assert!(answers.len() > 1, "the order varies (round-robin): {answers:?}");
    for (i, m) in members.iter().enumerate() {
        let opts = CniOpts::ours()
            .args(&format!("IgnoreUnknown=1;K8S_POD_NAME=member{i}"))
            .cap_args(json!({"aliases": ["tg-net"]}));
        env.cnitool("del", &net, m, &opts).expect_ok();
    }
    nothing_left(&env, &[]);
}

#[test]
fn published_ports_example_answers_and_limits_127() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("exports");
    let net = load(&env, "40-published-ports.conflist");
    let out = Netns::new("out");
    env.host().veth_to("uplink", &out, "eth0");
    env.host().ip_ok(&["addr", "add", "192.0.2.1/24", "dev", "uplink"]);
    out.ip_ok(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    let web = env.container("web");
    let ports = json!({"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]});
    let opts = CniOpts::ours().cap_args(ports);
    let ip = first_ip(env.cnitool("add", &net, &web, &opts).expect_ok().result());
    let _tcp = EchoServer::tcp(&web, SocketAddr::new(ip, 80));
    let _udp = EchoServer::udp(&web, SocketAddr::new(ip, 53));
    assert_eq!(tcp_echo(&out, "192.0.2.1".parse().unwrap(), 8080, "x").as_deref(), Some("x"));
    assert_eq!(tcp_echo(env.host(), "127.0.0.1".parse().unwrap(), 8081, "y").as_deref(), Some("y"));
    assert!(!tcp_connect(&out, "192.0.2.1".parse().unwrap(), 8081));
    assert_eq!(udp_echo(&out, "192.0.2.1".parse().unwrap(), 5353, "z").as_deref(), Some("z"));
    env.cnitool("check", &net, &web, &opts).expect_ok();
    env.cnitool("del", &net, &web, &opts).expect_ok();
    nothing_left(&env, &["uplink"]);
}

#[test]
fn macvlan_host_and_none_examples_run() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("exother");
    // macvlan: the example's parent is eth0; give the test host one, with a peer "outside".
    let outside = Netns::new("lan");
    env.host().veth_to("eth0", &outside, "eth0");
    outside.ip_ok(&["addr", "add", "192.168.50.1/24", "dev", "eth0"]);
    let net = load(&env, "60-macvlan.conflist");
    let c = env.container("c");
    let r = env.cnitool("add", &net, &c, &CniOpts::ours());
    r.expect_ok();
    assert!(ping(&c, "192.168.50.1"), "macvlan container reaches its segment");
    env.cnitool("check", &net, &c, &CniOpts::ours()).expect_ok();
    env.cnitool("del", &net, &c, &CniOpts::ours()).expect_ok();

    // host: the "container" is the host namespace itself.
    let net = load(&env, "70-host.conflist");
    let r = env.cnitool("add", &net, env.host(), &CniOpts::ours());
    r.expect_ok();
    assert!(r.result()["interfaces"].to_string().contains("eth0"), "{}", r.stdout);
    env.cnitool("check", &net, env.host(), &CniOpts::ours()).expect_ok();
    env.cnitool("del", &net, env.host(), &CniOpts::ours()).expect_ok();
    let refused = env.cnitool("add", &net, &c, &CniOpts::ours());
    assert!(refused.stderr.contains("host"), "{}", refused.stderr);

    let net = load(&env, "80-none.conflist");
    let r = env.cnitool("add", &net, &c, &CniOpts::ours());
    r.expect_ok();
    assert_eq!(r.result()["interfaces"][0]["name"], json!("lo"));
    env.cnitool("del", &net, &c, &CniOpts::ours()).expect_ok();

    // loopback, as containerd runs it: CNI_IFNAME lo.
    let net = load(&env, "90-loopback.conflist");
    let lo = CniOpts::ours().ifname("lo");
    let r = env.cnitool("add", &net, &c, &lo);
    r.expect_ok();
    assert_eq!(r.result()["interfaces"][0]["name"], json!("lo"));
    assert!(ping(&c, "127.0.0.1"), "loopback answers in the container");
    env.cnitool("check", &net, &c, &lo).expect_ok();
    env.cnitool("del", &net, &c, &lo).expect_ok();
    nothing_left(&env, &["eth0"]);
}
