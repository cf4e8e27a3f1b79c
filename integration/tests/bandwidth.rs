//! `bandwidth` chained after our `bridge`, driven by the real cnitool, with our binary and the
//! reference one side by side (same scenario, same assertions). The shaping is measured: a
//! timed TCP transfer through the bridge in each direction lands within 20 % of the
//! configured rate.

#[path = "common/chained.rs"]
#[macro_use]
mod chained;

use chained::{plugin_binary, plugins_with, Impl};
use integration::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const BRIDGE: &str = "br-bw";

fn conflist(env: &TestEnv, subnet: &str, bandwidth: Value) -> Value {
    let mut bw = json!({"type": "bandwidth"});
    for (k, v) in bandwidth.as_object().unwrap() {
        bw[k] = v.clone();
    }
    json!({
        "cniVersion": "1.0.0",
        "name": "bw",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()}},
            bw
        ]
    })
}

fn gateway(result: &Value) -> IpAddr {
    result["ips"][0]["gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("no gateway in {result}"))
        .parse()
        .unwrap()
}

/// The host end of the container's veth: the result's interface without a sandbox that is
/// a veth in the host namespace.
fn host_veth(host: &Netns, result: &Value) -> String {
    let veths = links_of_kind(host, "veth");
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_none())
        .filter_map(|i| i["name"].as_str())
        .find(|n| veths.iter().any(|v| v == n))
        .unwrap_or_else(|| panic!("no host veth in {result}"))
        .to_string()
}

fn ifb_of(result: &Value) -> Option<String> {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .find(|n| n.starts_with("bwp"))
        .map(str::to_string)
}

/// The root qdisc of `dev` as `tc -j` shows it.
fn root_qdisc(ns: &Netns, dev: &str) -> Value {
    let out = ns.exec_ok(&["tc", "-j", "qdisc", "show", "dev", dev, "root"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0].clone()
}

fn assert_tbf(ns: &Netns, dev: &str, rate_bytes: u64) {
    let q = root_qdisc(ns, dev);
    assert_eq!(q["kind"], "tbf", "root qdisc of {dev}: {q}");
    assert_eq!(q["options"]["rate"], rate_bytes, "root qdisc of {dev}: {q}");
}

/// Sends `bytes` over TCP from `sender` to a sink in `receiver` listening on `bind` and returns
/// the rate the receiver saw, in bits/s, from its first read to end of stream.
fn measure_bps(receiver: &Netns, bind: IpAddr, sender: &Netns, bytes: usize) -> f64 {
    let listener = receiver.in_ns(|| TcpListener::bind(SocketAddr::new(bind, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut first: Option<Instant> = None;
        let mut counted = 0usize;
        loop {
            let n = s.read(&mut buf).expect("reading the transfer");
            if n == 0 {
                break;
            }
            // The clock starts at the first read; its bytes arrived before it.
            if first.is_none() {
                first = Some(Instant::now());
            } else {
                counted += n;
            }
        }
        counted as f64 * 8.0 / first.expect("no data received").elapsed().as_secs_f64()
    });
    let mut stream =
        sender.in_ns(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
    stream.write_all(&vec![0x5a; bytes]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    sink.join().unwrap()
}

fn assert_rate(what: &str, measured: f64, configured: f64) {
    let ratio = measured / configured;
    eprintln!(
        "{what}: {:.2} Mbit/s measured, {:.2} configured ({ratio:.3})",
        measured / 1e6,
        configured / 1e6
    );
    assert!(
        (0.8..=1.2).contains(&ratio),
        "{what}: measured {measured:.0} bit/s, configured {configured:.0} (ratio {ratio:.3})"
    );
}

/// Nothing of bandwidth's (or the bridge's) left in the host namespace or the state dir.
fn nothing_left(env: &TestEnv) {
    let ifbs = links_of_kind(env.host(), "ifb");
    assert!(ifbs.is_empty(), "ifb links left: {ifbs:?}");
    let veths = links_of_kind(env.host(), "veth");
    assert!(veths.is_empty(), "veths left: {veths:?}");
    let state: Vec<_> = files_under(&env.state_dir())
        .into_iter()
        .filter(|f| {
            !f.to_string_lossy().contains("/ipam/") && !f.to_string_lossy().contains("/networks/")
        })
        .collect();
    assert!(state.is_empty(), "state left: {state:?}");
}

fn shapes_both_directions(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("bw{}", which.label()));
    let opts = CniOpts::ours().plugins(plugins_with(&env, "bandwidth", which));
    // Different rates per direction, so a swapped direction fails.
    let (ingress, egress) = (8_000_000u64, 16_000_000u64);
    env.write_conflist(
        "bw",
        &conflist(
            &env,
            "10.31.1.0/24",
            json!({"ingressRate": ingress, "ingressBurst": 80_000, "egressRate": egress, "egressBurst": 160_000}),
        ),
    );
    let ctr = env.container("bwc");
    let add = env.cnitool("add", "bw", &ctr, &opts);
    let result = add.expect_ok().result();
    let veth = host_veth(env.host(), result);
    let ifb = ifb_of(result).unwrap_or_else(|| panic!("no ifb in the result: {result}"));
    assert_tbf(env.host(), &veth, ingress / 8);
    assert_tbf(env.host(), &ifb, egress / 8);
    let filters = env.host().exec_ok(&["tc", "filter", "show", "dev", &veth, "ingress"]);
    assert!(filters.contains(&format!("Redirect to device {ifb}")), "{filters}");

    // To the container: 3 s worth at the ingress rate.
    let to_ctr = measure_bps(&ctr, first_ip(result), env.host(), (ingress / 8 * 3) as usize);
    assert_rate("host -> container (ingressRate)", to_ctr, ingress as f64);
    // From the container to the gateway on the host.
    let from_ctr = measure_bps(env.host(), gateway(result), &ctr, (egress / 8 * 3) as usize);
    assert_rate("container -> host (egressRate)", from_ctr, egress as f64);

    env.cnitool("check", "bw", &ctr, &opts).expect_ok();
    env.cnitool("del", "bw", &ctr, &opts).expect_ok();
    nothing_left(&env);
    // A second DEL finds nothing and still succeeds.
    env.cnitool("del", "bw", &ctr, &opts).expect_ok();
}

ours_and_reference!(
    shapes_both_directions,
    ours_shapes_both_directions,
    reference_shapes_both_directions
);

/// The `bandwidth` capability as go-cni marshals it (Go field names, no JSON tags), with
/// containerd's "no burst limit" of 4294967295 bits on egress.
fn go_style_capability_is_honoured(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("bwcap{}", which.label()));
    let plugins = plugins_with(&env, "bandwidth", which);
    env.write_conflist(
        "bw",
        &conflist(&env, "10.31.2.0/24", json!({"capabilities": {"bandwidth": true}})),
    );
    let ctr = env.container("bwk");
    let cap = json!({"bandwidth": {"IngressRate": 8_000_000u64, "IngressBurst": 80_000u64,
        "EgressRate": 4_000_000u64, "EgressBurst": 4_294_967_295u64}});
    let opts = CniOpts::ours().plugins(plugins).cap_args(cap);
    let add = env.cnitool("add", "bw", &ctr, &opts);
    let result = add.expect_ok().result();
    let veth = host_veth(env.host(), result);
    assert_tbf(env.host(), &veth, 1_000_000);
    let ifb = ifb_of(result).unwrap_or_else(|| panic!("no ifb in the result: {result}"));
    assert_tbf(env.host(), &ifb, 500_000);
    let to_ctr = measure_bps(&ctr, first_ip(result), env.host(), 3_000_000);
    assert_rate("host -> container (IngressRate capability)", to_ctr, 8e6);
    env.cnitool("del", "bw", &ctr, &opts).expect_ok();
    nothing_left(&env);
}

ours_and_reference!(
    go_style_capability_is_honoured,
    ours_honours_go_style_capability,
    reference_honours_go_style_capability
);

/// A rate without a burst is refused before anything is shaped; DEL still cleans up.
fn half_set_limit_is_refused(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("bwbad{}", which.label()));
    let opts = CniOpts::ours().plugins(plugins_with(&env, "bandwidth", which));
    env.write_conflist("bw", &conflist(&env, "10.31.3.0/24", json!({"ingressRate": 1_000_000})));
    let ctr = env.container("bwb");
    let add = env.cnitool("add", "bw", &ctr, &opts);
    add.expect_err();
    if which == Impl::Ours {
        assert!(
            add.stderr.contains("ingressRate 1000000")
                && add.stderr.contains("ingressBurst must be set too"),
            "{add}"
        );
    }
    // The bridge made the veth before bandwidth refused: it carries no shaping.
    for veth in links_of_kind(env.host(), "veth") {
        assert_ne!(root_qdisc(env.host(), &veth)["kind"], "tbf", "{veth} got a tbf");
    }
    assert!(links_of_kind(env.host(), "ifb").is_empty());
    let del = env.cnitool("del", "bw", &ctr, &opts);
    if which == Impl::Reference {
        // The reference validates the limits on DEL too, so the same config cannot be
        // deleted; ours does not need them to clean up. Delete with the limit removed.
        del.expect_err();
        assert!(del.stderr.contains("burst must also be set"), "{del}");
        env.write_conflist("bw", &conflist(&env, "10.31.3.0/24", json!({})));
        env.cnitool("del", "bw", &ctr, &opts).expect_ok();
    } else {
        del.expect_ok();
    }
    nothing_left(&env);
}

ours_and_reference!(
    half_set_limit_is_refused,
    ours_refuses_half_set_limit,
    reference_refuses_half_set_limit
);

/// DEL after the container's namespace (and with it the veth) is gone: the ifb goes too.
fn del_after_the_namespace_is_gone(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("bwgone{}", which.label()));
    let opts = CniOpts::ours().plugins(plugins_with(&env, "bandwidth", which));
    env.write_conflist(
        "bw",
        &conflist(&env, "10.31.4.0/24", json!({"egressRate": 1_000_000, "egressBurst": 100_000})),
    );
    let ctr = env.container("bwg");
    let result = env.cnitool("add", "bw", &ctr, &opts).expect_ok().result().clone();
    assert!(ifb_of(&result).is_some(), "{result}");
    let out = std::process::Command::new("ip").args(["netns", "del", &ctr.name]).output().unwrap();
    assert!(out.status.success());
    env.cnitool("del", "bw", &ctr, &opts).expect_ok();
    // The kernel destroys the namespace's veth asynchronously.
    assert!(eventually(Duration::from_secs(10), || links_of_kind(env.host(), "veth").is_empty()));
    nothing_left(&env);
}

ours_and_reference!(
    del_after_the_namespace_is_gone,
    ours_deletes_after_the_namespace_is_gone,
    reference_deletes_after_the_namespace_is_gone
);

#[test]
fn ours_refuses_shaped_subnets_and_garbage_collects() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("bwgc");
    let bin = plugin_binary(&env, "bandwidth", Impl::Ours);
    let bin = bin.to_str().unwrap();
    // shapedSubnets existed only in reference v1.5.x: refused with code 2, not ignored.
    let conf = json!({"cniVersion": "1.0.0", "name": "bw", "type": "bandwidth",
        "ingressRate": 1_000_000, "ingressBurst": 100_000, "shapedSubnets": ["10.0.0.0/8"],
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [], "ips": []}});
    let ctr = env.container("bws");
    let netns = ctr.path();
    let add_env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", netns.to_str().unwrap()),
        ("CNI_IFNAME", "eth0"),
    ];
    let out = env.exec_plugin(bin, &add_env, &conf.to_string());
    assert_eq!(out.error_code(), Some(2), "{out}");
    assert!(out.stdout.contains("shapedSubnets"), "{out}");

    // GC: two shaped containers, only the first still valid.
    let opts = CniOpts::ours().plugins(plugins_with(&env, "bandwidth", Impl::Ours));
    env.write_conflist(
        "bw",
        &conflist(&env, "10.31.5.0/24", json!({"egressRate": 1_000_000, "egressBurst": 100_000})),
    );
    let (a, b) = (env.container("bwa"), env.container("bwb"));
    let ra = env.cnitool("add", "bw", &a, &opts).expect_ok().result().clone();
    let rb = env.cnitool("add", "bw", &b, &opts).expect_ok().result().clone();
    let (ifb_a, ifb_b) = (ifb_of(&ra).unwrap(), ifb_of(&rb).unwrap());
    let gc = json!({"cniVersion": "1.1.0", "name": "bw", "type": "bandwidth",
        "cni.dev/valid-attachments": [{"containerID": env.container_id(&a, &opts), "ifname": "eth0"}]});
    env.exec_plugin(bin, &[("CNI_COMMAND", "GC")], &gc.to_string()).expect_ok();
    let ifbs = links_of_kind(env.host(), "ifb");
    assert_eq!(ifbs, vec![ifb_a.clone()], "GC must remove {ifb_b} only");
    // b's ingress qdisc went with its ifb; a's shaping is intact.
    assert!(env
        .host()
        .exec_ok(&["tc", "qdisc", "show", "dev", &host_veth(env.host(), &rb), "ingress"])
        .trim()
        .is_empty());
    env.cnitool("check", "bw", &a, &opts).expect_ok();
    env.cnitool("del", "bw", &a, &opts).expect_ok();
    env.cnitool("del", "bw", &b, &opts).expect_ok();
    nothing_left(&env);
}

/// conf-examples/46-bandwidth-limit.conflist, loaded unchanged, with the capability as
/// containerd sends it for the pod annotations ingress-bandwidth 10M / egress-bandwidth 5M.
#[test]
fn bandwidth_limit_example_runs() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("exbw");
    let path = workspace_root().join("conf-examples/46-bandwidth-limit.conflist");
    let conf: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    env.write_conflist("limited", &conf);
    let ctr = env.container("exb");
    let opts = CniOpts::ours().cap_args(json!({"bandwidth": {
        "IngressRate": 10_000_000u64, "IngressBurst": 4_294_967_295u64,
        "EgressRate": 5_000_000u64, "EgressBurst": 4_294_967_295u64}}));
    let result = env.cnitool("add", "limited", &ctr, &opts).expect_ok().result().clone();
    assert_tbf(env.host(), &host_veth(env.host(), &result), 1_250_000);
    assert_tbf(env.host(), &ifb_of(&result).expect("an ifb"), 625_000);
    assert!(ping(&ctr, gateway(&result)), "the shaped container still reaches its gateway");
    env.cnitool("check", "limited", &ctr, &opts).expect_ok();
    env.cnitool("del", "limited", &ctr, &opts).expect_ok();
    let left: Vec<String> = links(env.host()).into_iter().filter(|l| l != "lo").collect();
    assert!(left.is_empty(), "links left: {left:?}");
    nothing_left(&env);
}

/// Someone else's ingress qdisc on the host-side veth: ADD fails naming the veth, removes
/// the tbf and ifb it had already made, and leaves the other qdisc alone.
#[test]
fn ours_undoes_a_failed_add_and_leaves_foreign_shaping() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("bwundo");
    let ctr = env.container("bwu");
    env.host().veth_to("hv0", &ctr, "eth0");
    env.host().exec_ok(&["tc", "qdisc", "add", "dev", "hv0", "ingress"]);
    let netns = ctr.path();
    let conf = json!({"cniVersion": "1.0.0", "name": "bw", "type": "bandwidth",
        "ingressRate": 1_000_000, "ingressBurst": 100_000, "egressRate": 1_000_000, "egressBurst": 100_000,
        "prevResult": {"cniVersion": "1.0.0", "ips": [], "interfaces": [
            {"name": "hv0"}, {"name": "eth0", "sandbox": netns.to_str().unwrap()}]}});
    let bin = plugin_binary(&env, "bandwidth", Impl::Ours);
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "u1"),
        ("CNI_NETNS", netns.to_str().unwrap()),
        ("CNI_IFNAME", "eth0"),
    ];
    let out = env.exec_plugin(bin.to_str().unwrap(), &vars, &conf.to_string());
    assert_eq!(out.error_code(), Some(112), "{out}");
    assert!(out.stdout.contains("hv0 already has an ingress qdisc"), "{out}");
    assert_ne!(root_qdisc(env.host(), "hv0")["kind"], "tbf", "our tbf was undone");
    assert!(links_of_kind(env.host(), "ifb").is_empty(), "our ifb was undone");
    let ingress = env.host().exec_ok(&["tc", "qdisc", "show", "dev", "hv0", "ingress"]);
    assert!(ingress.contains("ingress"), "the other ingress qdisc stays: {ingress}");
    assert!(files_under(&env.state_dir().join("bandwidth")).is_empty());
    // The same ADD on a veth without foreign shaping works, and DEL removes it all.
    env.host().exec_ok(&["tc", "qdisc", "del", "dev", "hv0", "ingress"]);
    env.exec_plugin(bin.to_str().unwrap(), &vars, &conf.to_string()).expect_ok();
    assert_tbf(env.host(), "hv0", 125_000);
    let mut del = vars;
    del[0] = ("CNI_COMMAND", "DEL");
    env.exec_plugin(bin.to_str().unwrap(), &del, &conf.to_string()).expect_ok();
    assert_ne!(root_qdisc(env.host(), "hv0")["kind"], "tbf");
    assert!(env
        .host()
        .exec_ok(&["tc", "qdisc", "show", "dev", "hv0", "ingress"])
        .trim()
        .is_empty());
    assert!(links_of_kind(env.host(), "ifb").is_empty());
    assert!(files_under(&env.state_dir().join("bandwidth")).is_empty());
}
