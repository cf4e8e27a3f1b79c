//! Proves the harness with the reference plugins ([`reference_plugin_dir`]) and the
//! real cnitool. These scenarios later serve as the reference side of
//! comparisons with our own plugins.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use integration::*;
use serde_json::{json, Value};

/// The first IP of a CNI 1.0 result (`ips[0].address`, CIDR form).
fn ns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

fn reference_bridge_conf(env: &TestEnv, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "refnet",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni-br0",
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": env.ipam_dir()
            }
        }]
    })
}

#[test]
fn reference_bridge_two_containers() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("refbr");
    env.write_conflist("refnet", &reference_bridge_conf(&env, "10.99.0.0/24"));
    let opts = CniOpts::reference();
    let a = env.container("a");
    let b = env.container("b");

    let ra = env.cnitool("add", "refnet", &a, &opts);
    ra.expect_ok();
    let rb = env.cnitool("add", "refnet", &b, &opts);
    rb.expect_ok();
    let (ipa, ipb) = (first_ip(ra.result()), first_ip(rb.result()));
    assert_ne!(ipa, ipb);
    assert!(links(&a).contains(&"eth0".to_string()), "links in a: {:?}", links(&a));
    assert!(addresses(&b).iter().any(|x| x.ifname == "eth0" && x.addr == ipb));
    assert_eq!(links_of_kind(env.host(), "veth").len(), 2);
    assert_eq!(links_of_kind(env.host(), "bridge"), vec!["cni-br0".to_string()]);
    // ipMasq put its rules into the private host namespace, not the machine's.
    assert!(iptables_save(env.host()).contains("CNI-"), "{}", iptables_save(env.host()));

    assert!(ping(&a, ipb), "a cannot ping b ({ipb})");
    assert!(ping(&b, ipa), "b cannot ping a ({ipa})");
    assert!(ping(&a, "10.99.0.1"), "a cannot ping the gateway");

    let tcp = EchoServer::tcp(&b, SocketAddr::new(ipb, 0));
    assert!(tcp_connect(&a, ipb, tcp.port()));
    assert_eq!(tcp_echo(&a, ipb, tcp.port(), "hello").as_deref(), Some("hello"));
    assert_eq!(tcp.peers()[0].ip(), ipa, "no NAT between containers on one bridge");
    let udp = EchoServer::udp(&b, "0.0.0.0:0".parse().unwrap());
    assert_eq!(udp_echo(&a, ipb, udp.port(), "ping").as_deref(), Some("ping"));
    assert!(!tcp_connect(&a, ipb, tcp.port().wrapping_add(1).max(1)), "closed port accepted");

    env.cnitool("check", "refnet", &a, &opts).expect_ok();
    env.cnitool("check", "refnet", &b, &opts).expect_ok();
    // libcni's result cache went to the test's redirected /var/lib/cni.
    assert_eq!(files_under(&env.libcni_dir().join("results")).len(), 2);

    env.cnitool("del", "refnet", &a, &opts).expect_ok();
    env.cnitool("del", "refnet", &b, &opts).expect_ok();
    // DEL is idempotent.
    env.cnitool("del", "refnet", &b, &opts).expect_ok();

    assert!(links_of_kind(env.host(), "veth").is_empty(), "veths left: {:?}", links(env.host()));
    assert!(!links(&a).contains(&"eth0".to_string()));
    assert!(files_under(&env.libcni_dir().join("results")).is_empty());
    let leases: Vec<_> = files_under(&env.ipam_dir())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().parse::<IpAddr>().is_ok())
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    assert!(!iptables_save(env.host()).contains("CNI-"), "{}", iptables_save(env.host()));
}

#[test]
fn reference_loopback() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("reflo");
    env.write_conflist(
        "lo",
        &json!({"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}),
    );
    let c = env.container("c");
    c.ip_ok(&["link", "set", "lo", "down"]);
    assert!(!ping(&c, "127.0.0.1"));

    let opts = CniOpts::reference().ifname("lo");
    let r = env.cnitool("add", "lo", &c, &opts);
    r.expect_ok();
    assert_eq!(r.result()["interfaces"][0]["name"], "lo", "{}", r.result());
    assert!(ping(&c, "127.0.0.1"));
    assert!(addresses(&c).iter().any(|a| a.addr == "127.0.0.1".parse::<IpAddr>().unwrap()));
    env.cnitool("check", "lo", &c, &opts).expect_ok();
    env.cnitool("del", "lo", &c, &opts).expect_ok();
    assert!(!ping(&c, "127.0.0.1"), "reference loopback DEL sets lo down");
}

#[test]
fn reference_version_via_exec_plugin() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("refver");
    let bridge = env.plugin_path(&Plugins::Reference, "bridge");
    let out = env.exec_plugin(
        bridge.to_str().unwrap(),
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion": "1.0.0"}"#,
    );
    out.expect_ok();
    let versions = out.result()["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!("1.0.0")), "{}", out.result());
    assert!(versions.contains(&json!("0.1.0")), "{}", out.result());

    // A bad verb is a CNI error on stdout with a code, visible through exec_plugin.
    let bad = env.exec_plugin(bridge.to_str().unwrap(), &[("CNI_COMMAND", "BOGUS")], "{}");
    bad.expect_err();
    assert!(bad.error_code().is_some() || !bad.stderr.is_empty(), "{bad}");
}

/// cnitool passes its whole environment to plugins, so CNI_SUITE_STATE_DIR
/// reaches them; CNI_ARGS, CAP_ARGS, CNI_IFNAME and the container-ID key arrive
/// as expected, and /var/lib/cni is the test's own directory.
#[test]
fn cnitool_passes_environment_to_plugins() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("envpass");
    let fake = env.scratch_bin_dir().join("fake");
    std::fs::write(
        &fake,
        r#"#!/bin/sh
env > "$CNI_SUITE_STATE_DIR/$CNI_COMMAND.env"
cat > "$CNI_SUITE_STATE_DIR/$CNI_COMMAND.stdin"
touch /var/lib/cni/fake-was-here
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.7/24"}]}'
fi
"#,
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write_conflist(
        "fakenet",
        &json!({"cniVersion": "1.0.0", "name": "fakenet",
                "plugins": [{"type": "fake", "capabilities": {"portMappings": true}}]}),
    );
    let c = env.container("c");
    let pm = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let opts = CniOpts::default()
        .plugins(Plugins::Dirs(vec![env.scratch_bin_dir()]))
        .ifname("net7")
        .args("IgnoreUnknown=1;FOO=bar")
        .cap_args(pm.clone())
        .env("CNI_SUITE_PROBE", "42");
    let r = env.cnitool("add", "fakenet", &c, &opts);
    r.expect_ok();
    assert_eq!(first_ip(r.result()).to_string(), "192.0.2.7");

    let vars = std::fs::read_to_string(env.state_dir().join("ADD.env")).unwrap();
    let has = |kv: &str| vars.lines().any(|l| l == kv);
    assert!(has(&format!("CNI_SUITE_STATE_DIR={}", env.state_dir().display())), "{vars}");
    assert!(has("CNI_SUITE_PROBE=42"), "{vars}");
    assert!(has("CNI_IFNAME=net7"), "{vars}");
    assert!(has("CNI_ARGS=IgnoreUnknown=1;FOO=bar"), "{vars}");
    assert!(has(&format!("CNI_NETNS={}", c.path().display())), "{vars}");
    assert!(has(&format!("CNI_CONTAINERID={}", env.container_id(&c, &opts))), "{vars}");
    assert!(has(&format!("CNI_PATH={}", env.scratch_bin_dir().display())), "{vars}");
    let stdin: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_dir().join("ADD.stdin")).unwrap())
            .unwrap();
    assert_eq!(stdin["runtimeConfig"], pm, "{stdin}");
    assert_eq!(stdin["name"], "fakenet");

    // /var/lib/cni inside the harness is the test's directory, not the machine's.
    assert!(env.libcni_dir().join("fake-was-here").exists());
    assert!(!Path::new("/var/lib/cni/fake-was-here").exists());
    assert_eq!(files_under(&env.libcni_dir().join("results")).len(), 1);

    // A container-ID key gives a different, stable ID for the same namespace.
    let keyed = opts.clone().container_id("other");
    assert_ne!(env.container_id(&c, &keyed), env.container_id(&c, &opts));
    env.cnitool("add", "fakenet", &c, &keyed).expect_ok();
    let vars = std::fs::read_to_string(env.state_dir().join("ADD.env")).unwrap();
    assert!(vars.contains(&format!("CNI_CONTAINERID={}\n", env.container_id(&c, &keyed))));

    env.cnitool("check", "fakenet", &c, &opts).expect_ok();
    let check_stdin: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state_dir().join("CHECK.stdin")).unwrap(),
    )
    .unwrap();
    assert_eq!(check_stdin["prevResult"]["ips"][0]["address"], "192.0.2.7/24");
    env.cnitool("del", "fakenet", &c, &opts).expect_ok();
    env.cnitool("del", "fakenet", &c, &keyed).expect_ok();
    assert!(files_under(&env.libcni_dir().join("results")).is_empty());
}

/// Namespaces, temp dirs and spawned processes are gone after a test panics.
#[test]
fn cleanup_after_panic() {
    if !require_root() {
        return;
    }
    let mut names = Vec::new();
    let mut dir = None;
    let mut pids = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let env = TestEnv::new("panic");
        let c = env.container("c");
        names.push(env.host().name.clone());
        names.push(c.name.clone());
        dir = Some(env.dir().to_path_buf());
        let server = c.spawn(&["sleep", "600"]);
        pids.push(server.pid());
        std::mem::forget(server); // a guard that is never dropped: the namespace kills it
        let stray = env.host().spawn(&["sleep", "600"]);
        pids.push(stray.pid());
        assert!(ns_exists(&names[0]) && ns_exists(&names[1]));
        panic!("deliberate failure");
    }));
    assert!(result.is_err());
    for n in &names {
        assert!(!ns_exists(n), "namespace {n} survived the panic");
    }
    assert!(!dir.unwrap().exists(), "temp dir survived the panic");
    for pid in pids {
        // Killed; the forgotten one stays a zombie until this process exits.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
        assert!(matches!(state, None | Some("Z") | Some("X")), "pid {pid} still alive: {stat}");
    }
}

/// veth_to, addresses, IPv6 and the echo servers work between two plain namespaces.
#[test]
fn namespaces_veth_and_echo() {
    if !require_root() {
        return;
    }
    let left = Netns::new("l");
    let right = Netns::new("r");
    left.veth_to("v-l", &right, "v-r");
    left.ip_ok(&["addr", "add", "192.0.2.1/24", "dev", "v-l"]);
    right.ip_ok(&["addr", "add", "192.0.2.2/24", "dev", "v-r"]);
    left.ip_ok(&["addr", "add", "2001:db8::1/64", "dev", "v-l", "nodad"]);
    right.ip_ok(&["addr", "add", "2001:db8::2/64", "dev", "v-r", "nodad"]);
    assert_eq!(links_of_kind(&left, "veth"), vec!["v-l".to_string()]);
    assert!(addresses(&right).iter().any(|a| a.to_string() == "v-r 2001:db8::2/64"));
    assert!(ping(&left, "192.0.2.2"));
    assert!(ping(&left, "2001:db8::2"));
    assert!(!ping(&left, "192.0.2.3"));
    assert_eq!(right.sysctl("net.ipv4.ip_forward"), "0");

    let v6: IpAddr = "2001:db8::2".parse().unwrap();
    let tcp = EchoServer::tcp(&right, "[::]:0".parse().unwrap());
    assert_eq!(tcp_echo(&left, v6, tcp.port(), "six").as_deref(), Some("six"));
    assert_eq!(tcp.peers()[0].ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
    let udp = EchoServer::udp(&right, "192.0.2.2:0".parse().unwrap());
    let v4: IpAddr = "192.0.2.2".parse().unwrap();
    assert_eq!(udp_echo(&left, v4, udp.port(), "dgram").as_deref(), Some("dgram"));
    // The server's socket lives in `right`: nothing listens in `left`.
    assert!(!tcp_connect(&left, "127.0.0.1".parse().unwrap(), tcp.port()));
    assert!(eventually(Duration::from_secs(1), || nft_ruleset(&left).trim().is_empty()));

    // A spawned server: visible in the namespace's pids until it exits (busybox
    // nc -l serves one connection).
    let mut srv = right.spawn(&["busybox", "nc", "-l", "-p", "7777"]);
    assert!(eventually(Duration::from_secs(3), || right.pids().contains(&srv.pid())));
    assert!(eventually(Duration::from_secs(3), || tcp_connect(&left, v4, 7777)));
    assert!(eventually(Duration::from_secs(3), || !srv.is_running()));
}
