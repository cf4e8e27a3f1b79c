//! `portmap`: Docker's `-p`, chained after our `bridge`, driven by the real cnitool in
//! private namespaces. Every scenario runs on both firewall backends.

use integration::*;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

const HOST: &str = "192.0.2.1";
const OUTSIDE: &str = "192.0.2.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A bridge + portmap network on `backend`, and an "outside" namespace on the host's uplink.
fn setup(env: &TestEnv, backend: &str, subnet: &str) -> Netns {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "web",
        "plugins": [
            {"type": "bridge", "bridge": "br-web", "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
             "hairpinMode": true, "firewallBackend": backend,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "backend": backend}
        ]
    });
    env.write_conflist("web", &conf);
    outside_on_uplink(env)
}

fn ports(list: Value) -> CniOpts {
    CniOpts::ours().cap_args(json!({ "portMappings": list }))
}

fn nothing_left(env: &TestEnv) {
    let left = ours_left(env, &["uplink"]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

fn published_port_answers_everywhere(backend: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("pm{}", &backend[..3]));
    let out = setup(&env, backend, "10.20.1.0/24");
    let (web, other) = (env.container("web"), env.container("oth"));
    let mappings = json!([
        {"hostPort": 8001, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8002, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 5301, "containerPort": 53, "protocol": "udp"}
    ]);
    let web_ip =
        first_ip(env.cnitool("add", "web", &web, &ports(mappings.clone())).expect_ok().result());
    env.cnitool("add", "web", &other, &CniOpts::ours()).expect_ok();
    let _tcp = EchoServer::tcp(&web, SocketAddr::new(web_ip, 80));
    let _udp = EchoServer::udp(&web, SocketAddr::new(web_ip, 53));

    // From another machine, via the host's address.
    assert_eq!(
        tcp_echo(&out, ip(HOST), 8001, "outside").as_deref(),
        Some("outside"),
        "outside -> host:8001"
    );
    // From the host itself: its own address and 127.0.0.1.
    assert_eq!(
        tcp_echo(env.host(), ip(HOST), 8001, "self").as_deref(),
        Some("self"),
        "host -> own address:8001"
    );
    assert_eq!(
        tcp_echo(env.host(), ip("127.0.0.1"), 8001, "lo").as_deref(),
        Some("lo"),
        "host -> 127.0.0.1:8001"
    );
    // Hairpin: a container on the same bridge, via the host's address.
    assert_eq!(
        tcp_echo(&other, ip(HOST), 8001, "hairpin").as_deref(),
        Some("hairpin"),
        "container -> host:8001"
    );
    // UDP.
    assert_eq!(
        udp_echo(&out, ip(HOST), 5301, "dns?").as_deref(),
        Some("dns?"),
        "outside -> host:5301/udp"
    );
    // hostIP 127.0.0.1: answers locally, not from outside.
    assert_eq!(
        tcp_echo(env.host(), ip("127.0.0.1"), 8002, "local").as_deref(),
        Some("local"),
        "host -> 127.0.0.1:8002"
    );
    assert!(!tcp_connect(&out, ip(HOST), 8002), "127.0.0.1-only port must not answer from outside");

    env.cnitool("check", "web", &web, &ports(mappings.clone())).expect_ok();
    env.cnitool("del", "web", &web, &ports(mappings.clone())).expect_ok();
    assert!(!tcp_connect(&out, ip(HOST), 8001), "port closed after DEL");
    env.cnitool("del", "web", &other, &CniOpts::ours()).expect_ok();
    nothing_left(&env);
}

fn conflicts_are_refused(backend: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("pc{}", &backend[..3]));
    let out = setup(&env, backend, "10.20.2.0/24");
    let (first, second) = (env.container("one"), env.container("two"));
    let m = json!([{"hostPort": 8003, "containerPort": 80, "protocol": "tcp"}]);
    let first_ip =
        first_ip(env.cnitool("add", "web", &first, &ports(m.clone())).expect_ok().result());
    let _srv = EchoServer::tcp(&first, SocketAddr::new(first_ip, 80));
    // The same container adding the same mapping again is not a conflict.
    env.cnitool("add", "web", &first, &ports(m.clone())).expect_err(); // eth0 exists: bridge refuses, portmap never runs
    let add = env.cnitool("add", "web", &second, &ports(m.clone()));
    add.expect_err();
    assert!(
        add.stderr.contains("Bind for 0.0.0.0:8003 failed: port is already allocated"),
        "{}",
        add.stderr
    );
    // The failed ADD was rolled back by the runtime; the first container still answers.
    env.cnitool("del", "web", &second, &ports(m.clone())).expect_ok();
    assert_eq!(tcp_echo(&out, ip(HOST), 8003, "still").as_deref(), Some("still"));

    // A specific hostIP overlapping the wildcard mapping conflicts too.
    let specific =
        json!([{"hostPort": 8003, "containerPort": 80, "protocol": "tcp", "hostIP": HOST}]);
    let add = env.cnitool("add", "web", &second, &ports(specific));
    assert!(
        add.stderr.contains("Bind for 192.0.2.1:8003 failed: port is already allocated"),
        "{}",
        add.stderr
    );
    env.cnitool("del", "web", &second, &CniOpts::ours()).expect_ok();

    // A host process listening on a port: refused the same way.
    let _host_listener = EchoServer::tcp(env.host(), "0.0.0.0:8004".parse().unwrap());
    let add = env.cnitool(
        "add",
        "web",
        &second,
        &ports(json!([{"hostPort": 8004, "containerPort": 80}])),
    );
    assert!(
        add.stderr.contains("Bind for 0.0.0.0:8004 failed: port is already allocated"),
        "{}",
        add.stderr
    );
    env.cnitool("del", "web", &second, &CniOpts::ours()).expect_ok();

    // The error code is ours (110), seen when the plugin is called directly.
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": second.path()}],
        "ips": [{"address": "10.20.2.50/24", "interface": 0}]});
    let conf = json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "backend": backend,
        "runtimeConfig": {"portMappings": m}, "prevResult": prev});
    let path = second.path().display().to_string();
    let our_path = env.our_plugin_dir().display().to_string();
    let direct = env.exec_plugin(
        "portmap",
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "direct1"),
            ("CNI_NETNS", &path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &our_path),
        ],
        &conf.to_string(),
    );
    assert_eq!(direct.error_code(), Some(110), "{}", direct.stdout);

    env.cnitool("del", "web", &first, &ports(m)).expect_ok();
    nothing_left(&env);
}

#[test]
fn nftables_published_port_answers_everywhere() {
    published_port_answers_everywhere("nftables");
}

#[test]
fn iptables_published_port_answers_everywhere() {
    published_port_answers_everywhere("iptables");
}

/// A UDP client that was already sending to a host port before it was published keeps its
/// conntrack entry, which was made without DNAT; every later datagram would follow that
/// entry and never reach the container. portmap deletes such flows (in a detached child,
/// right after its ADD returns), so the same client socket reaches the container shortly
/// after the ADD. After DEL no flow to the port is left.
fn udp_flow_from_before_the_port_was_published_reaches_the_container(backend: &str, subnet: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("pu{}", &backend[..3]));
    let out = setup(&env, backend, subnet);
    let (web, other) = (env.container("web"), env.container("oth"));
    // A host with containers already tracks connections (the masquerade of this network
    // needs conntrack); a bare namespace would make no flow for the early datagram.
    env.cnitool("add", "web", &other, &CniOpts::ours()).expect_ok();
    let client = out
        .in_ns(|| std::net::UdpSocket::bind(SocketAddr::new(ip(OUTSIDE), 40100)))
        .expect("client socket in the outside namespace");
    client.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let ask = |msg: &str| -> Option<String> {
        client.send_to(msg.as_bytes(), SocketAddr::new(ip(HOST), 5310)).ok()?;
        let mut buf = [0u8; 256];
        let (n, _) = client.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(ask("early"), None, "nothing is published yet");
    let flows = || env.host().sh("conntrack -L -p udp --orig-port-dst 5310 2>/dev/null");
    let listed = String::from_utf8_lossy(&flows().stdout).into_owned();
    assert!(listed.contains("dport=5310"), "the early datagram made no flow: {listed}");

    let mappings = json!([{"hostPort": 5310, "containerPort": 53, "protocol": "udp"}]);
    let web_ip =
        first_ip(env.cnitool("add", "web", &web, &ports(mappings.clone())).expect_ok().result());
    let _udp = EchoServer::udp(&web, SocketAddr::new(web_ip, 53));
    assert!(
        eventually(std::time::Duration::from_secs(3), || ask("late").as_deref() == Some("late")),
        "the client's old flow still bypasses the DNAT to {web_ip}:53"
    );

    env.cnitool("del", "web", &web, &ports(mappings)).expect_ok();
    assert!(
        eventually(std::time::Duration::from_secs(3), || {
            !String::from_utf8_lossy(&flows().stdout).contains("dport=5310")
        }),
        "a flow to the removed port is left"
    );
    env.cnitool("del", "web", &other, &CniOpts::ours()).expect_ok();
    nothing_left(&env);
}

#[test]
fn nftables_udp_flow_from_before_the_port_was_published_reaches_the_container() {
    udp_flow_from_before_the_port_was_published_reaches_the_container("nftables", "10.20.10.0/24");
}

#[test]
fn iptables_udp_flow_from_before_the_port_was_published_reaches_the_container() {
    udp_flow_from_before_the_port_was_published_reaches_the_container("iptables", "10.20.11.0/24");
}

#[test]
fn nftables_conflicts_are_refused() {
    conflicts_are_refused("nftables");
}

#[test]
fn iptables_conflicts_are_refused() {
    conflicts_are_refused("iptables");
}

#[test]
fn portmap_refuses_host_networking_and_bad_mappings() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("pmbad");
    let host_path = env.host().path().display().to_string();
    let our_path = env.our_plugin_dir().display().to_string();
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "192.0.2.9/24", "interface": 0}]});
    let run = |mappings: Value, netns: &str| {
        let conf = json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "runtimeConfig": {"portMappings": mappings}, "prevResult": prev});
        env.exec_plugin(
            "portmap",
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "h1"),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &our_path),
            ],
            &conf.to_string(),
        )
    };
    let out = run(json!([{"hostPort": 8080, "containerPort": 80}]), &host_path);
    assert_eq!(out.error_code(), Some(7), "{}", out.stdout);
    assert!(out.stdout.contains("host networking"), "{}", out.stdout);
    let c = env.container("c");
    let cpath = c.path().display().to_string();
    let out = run(json!([{"hostPort": 70000, "containerPort": 80}]), &cpath);
    assert_eq!(out.error_code(), Some(7));
    assert!(out.stdout.contains("hostPort") && out.stdout.contains("70000"), "{}", out.stdout);
    let out = run(json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]), &cpath);
    assert_eq!(out.error_code(), Some(7));
    assert!(out.stdout.contains("icmp"), "{}", out.stdout);
    assert!(!nft_ruleset(env.host()).contains("cni_"), "nothing programmed");
}

#[test]
fn gc_removes_ports_of_containers_that_died_without_del() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("pmgc");
    let out = setup(&env, "nftables", "10.20.3.0/24");
    let (keep, leak) = (env.container("keep"), env.container("leak"));
    let keep_ip = first_ip(
        env.cnitool("add", "web", &keep, &ports(json!([{"hostPort": 8101, "containerPort": 80}])))
            .expect_ok()
            .result(),
    );
    env.cnitool("add", "web", &leak, &ports(json!([{"hostPort": 8102, "containerPort": 80}])))
        .expect_ok();
    let _srv = EchoServer::tcp(&keep, SocketAddr::new(keep_ip, 80));
    let keep_id = env.container_id(&keep, &CniOpts::ours());
    drop(leak); // died without DEL
    let our_path = env.our_plugin_dir().display().to_string();
    let gc = json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "backend": "nftables",
        "cni.dev/valid-attachments": [{"containerID": keep_id, "ifname": "eth0"}]});
    env.exec_plugin("portmap", &[("CNI_COMMAND", "GC"), ("CNI_PATH", &our_path)], &gc.to_string())
        .expect_ok();
    // The leaked container's port is free again, the kept one still answers.
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("8102"), "{rules}");
    assert_eq!(tcp_echo(&out, ip(HOST), 8101, "kept").as_deref(), Some("kept"));
    let again = env.container("again");
    env.cnitool("add", "web", &again, &ports(json!([{"hostPort": 8102, "containerPort": 80}])))
        .expect_ok();
    env.cnitool("del", "web", &again, &ports(json!([{"hostPort": 8102, "containerPort": 80}])))
        .expect_ok();
    // STATUS with a working backend.
    let status =
        json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "backend": "nftables"});
    env.exec_plugin(
        "portmap",
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", &our_path)],
        &status.to_string(),
    )
    .expect_ok();
    env.cnitool("del", "web", &keep, &ports(json!([{"hostPort": 8101, "containerPort": 80}])))
        .expect_ok();
    // The leaked container's bridge side is the bridge plugin's GC's job; its veth died with
    // the namespace. Everything of portmap's is gone.
    assert!(!nft_ruleset(env.host()).contains("cni_portmap"));
}

/// Runs a plugin binary directly (GC, STATUS, DEL without prevResult) in the host namespace.
fn direct(
    env: &TestEnv,
    binary: &str,
    command: &str,
    conf: &Value,
    extra: &[(&str, &str)],
) -> CniOutput {
    let our_path = env.our_plugin_dir().display().to_string();
    let mut vars = vec![("CNI_COMMAND", command), ("CNI_PATH", our_path.as_str())];
    vars.extend_from_slice(extra);
    env.exec_plugin(binary, &vars, &conf.to_string())
}

/// Issue 14.1 (CVE-2020-8558 class): portmap sets route_localnet on the bridge so that
/// 127.0.0.1:hostPort works; a container that routes 127.0.0.1 through its gateway must
/// still not reach the host's loopback-only services. Only DNAT to a published port passes.
fn containers_cannot_reach_host_loopback(backend: &str, subnet: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("pl{}", &backend[..3]));
    let _out = setup(&env, backend, subnet);
    let (web, attacker) = (env.container("web"), env.container("att"));
    let m = json!([{"hostPort": 8005, "containerPort": 80}]);
    let web_ip = first_ip(env.cnitool("add", "web", &web, &ports(m.clone())).expect_ok().result());
    let att = env.cnitool("add", "web", &attacker, &CniOpts::ours());
    att.expect_ok();
    let gw = att.result()["ips"][0]["gateway"].as_str().unwrap().to_string();
    let _web_srv = EchoServer::tcp(&web, SocketAddr::new(web_ip, 80));
    // A loopback-only service of the host.
    let _secret = EchoServer::tcp(env.host(), "127.0.0.1:9005".parse().unwrap());
    // The attacker sends 127.0.0.1 to its gateway.
    attacker.sh_ok(&format!(
        "ip addr del 127.0.0.1/8 dev lo; sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1; ip route add 127.0.0.0/8 via {gw} dev eth0"
    ));
    // The route works: a published port reached as 127.0.0.1 is DNATed to the container.
    assert_eq!(
        tcp_echo(&attacker, ip("127.0.0.1"), 8005, "published").as_deref(),
        Some("published"),
        "{backend}: 127.0.0.1:published port via the gateway"
    );
    // The host's loopback-only service is not reachable.
    assert!(
        !tcp_connect(&attacker, ip("127.0.0.1"), 9005),
        "{backend}: a container reached the host's 127.0.0.1:9005"
    );
    // The host itself still reaches it and the published port on 127.0.0.1.
    assert_eq!(tcp_echo(env.host(), ip("127.0.0.1"), 9005, "own").as_deref(), Some("own"));
    assert_eq!(tcp_echo(env.host(), ip("127.0.0.1"), 8005, "lo").as_deref(), Some("lo"));
    env.cnitool("del", "web", &web, &ports(m)).expect_ok();
    env.cnitool("del", "web", &attacker, &CniOpts::ours()).expect_ok();
    nothing_left(&env);
}

#[test]
fn nftables_containers_cannot_reach_host_loopback() {
    containers_cannot_reach_host_loopback("nftables", "10.20.5.0/24");
}

#[test]
fn iptables_containers_cannot_reach_host_loopback() {
    containers_cannot_reach_host_loopback("iptables", "10.20.6.0/24");
}

/// Issue 14.4: after `nft flush ruleset` (a firewall reload), STATUS says so, the next ADD
/// on the network (even without ports) restores every container's published ports and
/// the network's masquerade, and so does GC.
fn flushed_firewall_is_restored(backend: &str, subnet: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("pf{}", &backend[..3]));
    let out = setup(&env, backend, subnet);
    let (web, c2, c3) = (env.container("web"), env.container("c2"), env.container("c3"));
    let m = json!([{"hostPort": 8006, "containerPort": 80}]);
    let web_ip = first_ip(env.cnitool("add", "web", &web, &ports(m.clone())).expect_ok().result());
    env.cnitool("add", "web", &c2, &CniOpts::ours()).expect_ok();
    let _srv = EchoServer::tcp(&web, SocketAddr::new(web_ip, 80));
    let outside_srv = EchoServer::tcp(&out, format!("{OUTSIDE}:7006").parse().unwrap());
    assert_eq!(tcp_echo(&out, ip(HOST), 8006, "before").as_deref(), Some("before"));

    let flush_and_check_lost = || {
        env.host().sh_ok("nft flush ruleset");
        assert!(tcp_echo(&out, ip(HOST), 8006, "lost").is_none(), "{backend}: port still works");
        let bridge_conf = json!({"cniVersion": "1.1.0", "name": "web", "type": "bridge", "bridge": "br-web", "firewallBackend": backend});
        let st = direct(&env, "bridge", "STATUS", &bridge_conf, &[]);
        assert_eq!(st.error_code(), Some(51), "{backend}: bridge STATUS: {}", st.stdout);
        let pm_conf =
            json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "backend": backend});
        let st = direct(&env, "portmap", "STATUS", &pm_conf, &[]);
        assert_eq!(st.error_code(), Some(51), "{backend}: portmap STATUS: {}", st.stdout);
        assert!(st.stdout.contains("GC"), "{}", st.stdout);
    };

    flush_and_check_lost();
    // An ADD of another container, without ports, restores everything.
    env.cnitool("add", "web", &c3, &CniOpts::ours()).expect_ok();
    assert_eq!(
        tcp_echo(&out, ip(HOST), 8006, "restored").as_deref(),
        Some("restored"),
        "{backend}: published port after the next ADD"
    );
    assert_eq!(tcp_echo(&c2, ip(OUTSIDE), 7006, "masq").as_deref(), Some("masq"));
    let seen: Vec<IpAddr> = outside_srv.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(seen.last(), Some(&ip(HOST)), "{backend}: masquerade restored ({seen:?})");

    // GC restores it all as well.
    flush_and_check_lost();
    let ids: Vec<Value> = [&web, &c2, &c3]
        .iter()
        .map(|c| json!({"containerID": env.container_id(c, &CniOpts::ours()), "ifname": "eth0"}))
        .collect();
    let gc_bridge = json!({"cniVersion": "1.1.0", "name": "web", "type": "bridge", "bridge": "br-web", "firewallBackend": backend,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()},
        "cni.dev/valid-attachments": ids});
    direct(&env, "bridge", "GC", &gc_bridge, &[]).expect_ok();
    let gc_pm = json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "backend": backend,
        "cni.dev/valid-attachments": ids});
    direct(&env, "portmap", "GC", &gc_pm, &[]).expect_ok();
    assert_eq!(
        tcp_echo(&out, ip(HOST), 8006, "gc").as_deref(),
        Some("gc"),
        "{backend}: published port after GC"
    );
    let pm_conf =
        json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "backend": backend});
    direct(&env, "portmap", "STATUS", &pm_conf, &[]).expect_ok();

    env.cnitool("del", "web", &web, &ports(m)).expect_ok();
    env.cnitool("del", "web", &c2, &CniOpts::ours()).expect_ok();
    env.cnitool("del", "web", &c3, &CniOpts::ours()).expect_ok();
    nothing_left(&env);
}

#[test]
fn nftables_flushed_firewall_is_restored() {
    flushed_firewall_is_restored("nftables", "10.20.7.0/24");
}

#[test]
fn iptables_flushed_firewall_is_restored() {
    flushed_firewall_is_restored("iptables", "10.20.8.0/24");
}

/// Issue 14.6: an ADD that cannot record its state must not leave a DNAT behind (the
/// record is written before the kernel is touched), and DEL without prevResult and GC
/// with an empty valid list remove everything an ADD left.
#[test]
fn failed_or_killed_add_leaves_no_orphan_dnat() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("pmorph");
    let _out = setup(&env, "nftables", "10.20.9.0/24");
    let (one, two) = (env.container("one"), env.container("two"));
    let m = json!([{"hostPort": 8007, "containerPort": 80}]);
    // The owner records cannot be written (a file where their directory goes).
    let owners = env.state_dir().join("portmap").join("owners");
    std::fs::create_dir_all(owners.parent().unwrap()).unwrap();
    std::fs::write(&owners, b"not a directory").unwrap();
    env.cnitool("add", "web", &one, &ports(m.clone())).expect_err();
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("8007"), "a failed ADD left a DNAT:\n{rules}");
    std::fs::remove_file(&owners).unwrap();

    // An ADD killed after its transaction (fault injected right after the commit): DEL
    // without prevResult finds and removes what it created.
    let killed = env.cnitool(
        "add",
        "web",
        &two,
        &ports(m.clone()).env("CNI_SUITE_FAULT", "portmap:after-commit"),
    );
    killed.expect_err();
    assert!(nft_ruleset(env.host()).contains("8007"), "the fault point is after the commit");
    let id = env.container_id(&two, &CniOpts::ours());
    let del = json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap"});
    direct(
        &env,
        "portmap",
        "DEL",
        &del,
        &[("CNI_CONTAINERID", &id), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "")],
    )
    .expect_ok();
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("cni_portmap"), "DEL without prevResult left:\n{rules}");

    // The same, cleaned by GC with an empty valid list.
    env.cnitool("del", "web", &two, &CniOpts::ours()).expect_ok();
    env.cnitool(
        "add",
        "web",
        &two,
        &ports(m.clone()).env("CNI_SUITE_FAULT", "portmap:after-commit"),
    )
    .expect_err();
    let gc = json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap", "cni.dev/valid-attachments": []});
    direct(&env, "portmap", "GC", &gc, &[]).expect_ok();
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("cni_portmap"), "GC left:\n{rules}");
    // Nobody holds the port any more.
    env.cnitool("del", "web", &one, &CniOpts::ours()).expect_ok();
    env.cnitool("add", "web", &one, &ports(m.clone())).expect_ok();
    env.cnitool("del", "web", &one, &ports(m)).expect_ok();
    env.cnitool("del", "web", &two, &CniOpts::ours()).expect_ok();
    nothing_left(&env);
}

/// Issue 14.10: portmap refuses a CNI_NETNS that does not exist on ADD (code 3), and its
/// messages name the field.
#[test]
fn portmap_names_bad_netns_and_fields() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("pmval");
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.20.10.5/24", "interface": 0}]});
    let conf = |maps: Value| {
        json!({"cniVersion": "1.1.0", "name": "web", "type": "portmap",
        "runtimeConfig": {"portMappings": maps}, "prevResult": prev})
    };
    let m = json!([{"hostPort": 8008, "containerPort": 80}]);
    let vars = [
        ("CNI_CONTAINERID", "v1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/var/run/netns/cni-suite-no-such-netns"),
    ];
    let out = direct(&env, "portmap", "ADD", &conf(m), &vars);
    assert_eq!(out.error_code(), Some(3), "{}", out.stdout);
    assert!(out.stdout.contains("CNI_NETNS"), "{}", out.stdout);
    let c = env.container("c");
    let path = c.path().display().to_string();
    let vars = [("CNI_CONTAINERID", "v1"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", path.as_str())];
    let v6 = json!([{"hostPort": 8008, "containerPort": 80, "hostIP": "::1"}]);
    let out = direct(&env, "portmap", "ADD", &conf(v6), &vars);
    assert_eq!(out.error_code(), Some(7), "{}", out.stdout);
    assert!(out.stdout.contains("portMappings[0].hostIP"), "{}", out.stdout);
    assert!(!nft_ruleset(env.host()).contains("cni_"), "nothing programmed");
}
