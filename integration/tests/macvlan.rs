//! The `macvlan` plugin against the real kernel, driven by cnitool, in namespaces each test
//! makes for itself. The macvlan parent is one end of a veth pair in the test's "host"
//! namespace (`mvparent`); the other end (`wire`) sits in an "outside" namespace with an
//! address on the containers' subnet, standing in for the physical LAN.

use std::net::IpAddr;
use std::process::Command;

use integration::*;
use serde_json::{json, Value};

const NET: &str = "mvnet";
const PARENT: &str = "mvparent";

/// The test's world: env (host namespace) plus the "outside" LAN namespace wired to `mvparent`.
struct World {
    env: TestEnv,
    outside: Netns,
}

fn world(label: &str) -> World {
    let env = TestEnv::new(label);
    let outside = env.container("out");
    env.host().veth_to(PARENT, &outside, "wire");
    outside.ip_ok(&["addr", "add", "10.77.0.1/24", "dev", "wire"]);
    outside.ip_ok(&["-6", "addr", "add", "fd77::1/64", "nodad", "dev", "wire"]);
    World { env, outside }
}

fn plugin_conf(env: &TestEnv, extra: Value) -> Value {
    let mut p = json!({
        "type": "macvlan",
        "master": PARENT,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10"}], [{"subnet": "fd77::/64", "rangeStart": "fd77::10"}]],
            "dataDir": env.ipam_dir()
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn write_net(env: &TestEnv, extra: Value) {
    env.write_conflist(
        NET,
        &json!({"cniVersion": "1.0.0", "name": NET, "plugins": [plugin_conf(env, extra)]}),
    );
}

/// The plugin's config as a single stdin document (for exec_plugin).
fn stdin_conf(env: &TestEnv, version: &str, extra: Value) -> String {
    let mut p = plugin_conf(env, extra);
    p["cniVersion"] = json!(version);
    p["name"] = json!(NET);
    p.to_string()
}

fn ips_of(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {result}"))
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap())
        .collect()
}

fn v4(ips: &[IpAddr]) -> IpAddr {
    *ips.iter().find(|i| i.is_ipv4()).expect("an IPv4 address")
}

fn v6(ips: &[IpAddr]) -> IpAddr {
    *ips.iter().find(|i| i.is_ipv6()).expect("an IPv6 address")
}

/// Lease files (host-local layout: one file per address) naming `ip`.
fn lease_exists(env: &TestEnv, ip: IpAddr) -> bool {
    files_under(&env.ipam_dir())
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == ip.to_string()))
}

/// Files the macvlan plugin keeps (attachments, VLAN refcounts, locks).
fn macvlan_state(env: &TestEnv) -> Vec<std::path::PathBuf> {
    files_under(&env.state_dir().join("macvlan"))
}

fn add_env<'a>(ctr: &'a str, ns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", ctr),
        ("CNI_NETNS", ns),
        ("CNI_IFNAME", "eth0"),
    ]
}

/// Only `lo` in a namespace the plugin refused to configure.
fn untouched(ns: &Netns) {
    assert_eq!(links(ns), vec!["lo".to_string()], "links in {}", ns.name);
}

#[test]
fn bridge_mode_dual_stack_containers_reach_each_other_and_the_lan() {
    if !require_root() {
        return;
    }
    let w = world("mvbridge");
    let env = &w.env;
    write_net(env, json!({"mode": "bridge"}));
    let (a, b) = (env.container("a"), env.container("b"));
    let opts = CniOpts::ours();
    let ra = env.cnitool("add", NET, &a, &opts);
    ra.expect_ok();
    let rb = env.cnitool("add", NET, &b, &opts);
    rb.expect_ok();
    let (ipa, ipb) = (ips_of(ra.result()), ips_of(rb.result()));
    assert_eq!(ipa.len(), 2, "dual stack: {}", ra.stdout);

    // The result describes the container interface.
    let iface = &ra.result()["interfaces"][0];
    assert_eq!(iface["name"], "eth0");
    assert_eq!(iface["sandbox"], json!(a.path().display().to_string()));
    let mac = iface["mac"].as_str().unwrap().to_string();
    assert_eq!(ra.result()["ips"][0]["interface"], 0);
    let link = &a.ip_json(&["-d", "link", "show", "eth0"])[0];
    assert_eq!(link["address"], json!(mac));
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(links_of_kind(&a, "macvlan"), vec!["eth0".to_string()]);
    // Nothing was created in the host namespace: the macvlan was made in place.
    assert!(links_of_kind(env.host(), "macvlan").is_empty());
    assert!(addresses(&a).iter().any(|x| x.ifname == "eth0" && x.addr == v4(&ipa)));

    for (from, to) in [
        (&a, v4(&ipb)),
        (&b, v4(&ipa)),
        (&a, "10.77.0.1".parse().unwrap()),
        (&b, "10.77.0.1".parse().unwrap()),
    ] {
        assert!(ping(from, to), "{} cannot ping {to}", from.name);
    }
    assert!(ping(&w.outside, v4(&ipa)), "the LAN cannot reach a");
    assert!(ping(&a, v6(&ipb)), "a cannot ping b over IPv6");
    assert!(ping(&a, "fd77::1"), "a cannot ping the LAN over IPv6");

    env.cnitool("check", NET, &a, &opts).expect_ok();
    // CHECK notices a macvlan that lost its address.
    a.ip_ok(&["addr", "del", &format!("{}/24", v4(&ipa)), "dev", "eth0"]);
    env.cnitool("check", NET, &a, &opts).expect_err();

    env.cnitool("del", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &b, &opts).expect_ok();
    untouched(&a);
    untouched(&b);
    for ip in ipa.iter().chain(&ipb) {
        assert!(!lease_exists(env, *ip), "lease of {ip} left behind");
    }
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
    // DEL twice is fine.
    env.cnitool("del", NET, &a, &opts).expect_ok();
}

#[test]
fn private_mode_isolates_containers_but_not_the_lan() {
    if !require_root() {
        return;
    }
    let w = world("mvprivate");
    let env = &w.env;
    write_net(env, json!({"mode": "private"}));
    let (a, b) = (env.container("a"), env.container("b"));
    let opts = CniOpts::ours();
    let ra = env.cnitool("add", NET, &a, &opts);
    ra.expect_ok();
    let rb = env.cnitool("add", NET, &b, &opts);
    rb.expect_ok();
    let (ipa, ipb) = (v4(&ips_of(ra.result())), v4(&ips_of(rb.result())));
    assert_eq!(
        a.ip_json(&["-d", "link", "show", "eth0"])[0]["linkinfo"]["info_data"]["mode"],
        "private"
    );
    // Private: no frames between macvlans of the same parent, even when the switch would hairpin.
    assert!(!ping(&a, ipb), "private mode: a reached b");
    assert!(!ping(&b, ipa), "private mode: b reached a");
    assert!(ping(&a, "10.77.0.1"), "a cannot reach the LAN");
    assert!(ping(&b, "10.77.0.1"), "b cannot reach the LAN");
    env.cnitool("check", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &b, &opts).expect_ok();
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn vepa_mode_sends_container_traffic_to_the_switch() {
    if !require_root() {
        return;
    }
    let w = world("mvvepa");
    let env = &w.env;
    write_net(env, json!({"mode": "vepa"}));
    let (a, b) = (env.container("a"), env.container("b"));
    let opts = CniOpts::ours();
    let ra = env.cnitool("add", NET, &a, &opts);
    ra.expect_ok();
    let rb = env.cnitool("add", NET, &b, &opts);
    rb.expect_ok();
    // The "switch" (a veth end) does not hairpin, so a and b only reach the LAN.
    assert!(!ping(&a, v4(&ips_of(rb.result()))), "vepa without a hairpinning switch: a reached b");
    assert!(ping(&a, "10.77.0.1"));
    env.cnitool("del", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &b, &opts).expect_ok();
}

#[test]
fn bad_mode_or_missing_master_is_code_7_and_creates_nothing() {
    if !require_root() {
        return;
    }
    let w = world("mvbad");
    let env = &w.env;
    let a = env.container("a");
    let ns = a.path().display().to_string();
    for (extra, needles) in [
        (json!({"mode": "bogus"}), vec!["mode", "bogus"]),
        (json!({"master": "nosuch0"}), vec!["master", "nosuch0"]),
        (json!({"master": "nosuch0.10"}), vec!["master", "nosuch0.10"]),
        (json!({"mtu": 9000}), vec!["mtu", "9000", "1500", PARENT]),
    ] {
        let out = env.exec_plugin(
            "macvlan",
            &add_env("ctr1", &ns),
            &stdin_conf(env, "1.1.0", extra.clone()),
        );
        out.expect_err();
        assert_eq!(out.error_code(), Some(7), "{extra}: {out}");
        for n in needles {
            assert!(
                out.error_msg().contains(n),
                "{extra}: message lacks {n:?}: {}",
                out.error_msg()
            );
        }
        untouched(&a);
        assert!(
            files_under(&env.ipam_dir()).iter().all(|p| !p.to_string_lossy().contains("10.77.0.")),
            "{extra}: a lease was taken: {:?}",
            files_under(&env.ipam_dir())
        );
        assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new(), "{extra}");
    }
    // The same through cnitool: a failure, nothing in the container.
    write_net(env, json!({"mode": "bogus"}));
    let out = env.cnitool("add", NET, &a, &CniOpts::ours());
    out.expect_err();
    assert!(out.stderr.contains("bogus") || out.stdout.contains("bogus"), "{out}");
    untouched(&a);
}

#[test]
fn vlan_parent_without_8021q_fails_clearly_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let w = world("mvvlan");
    let env = &w.env;
    let a = env.container("a");
    let ns = a.path().display().to_string();
    let before = links(env.host());
    let out = env.exec_plugin(
        "macvlan",
        &add_env("ctr1", &ns),
        &stdin_conf(env, "1.1.0", json!({"master": "mvparent.10"})),
    );
    out.expect_err();
    if links(env.host()).contains(&"mvparent.10".to_string()) {
        panic!("this kernel made a VLAN link; the test assumes no 802.1q support:\n{out}");
    }
    assert_eq!(out.error_code(), Some(112), "{out}");
    let m = out.error_msg();
    assert!(
        m.contains("mvparent.10") && m.contains("802.1q") && m.contains("modprobe 8021q"),
        "{m}"
    );
    assert_eq!(links(env.host()), before);
    untouched(&a);
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
    assert!(files_under(&env.ipam_dir()).iter().all(|p| !p.to_string_lossy().contains("10.77.0.")));
    // STATUS says the same before any ADD is tried.
    let st = env.exec_plugin(
        "macvlan",
        &[("CNI_COMMAND", "STATUS")],
        &stdin_conf(env, "1.1.0", json!({"master": "mvparent.10"})),
    );
    assert_eq!(st.error_code(), Some(50), "{st}");
    assert!(st.error_msg().contains("802.1q"), "{st}");
}

#[test]
fn del_after_the_container_namespace_is_gone() {
    if !require_root() {
        return;
    }
    let w = world("mvgone");
    let env = &w.env;
    write_net(env, json!({}));
    let a = env.container("a");
    let opts = CniOpts::ours();
    let ra = env.cnitool("add", NET, &a, &opts);
    ra.expect_ok();
    let ips = ips_of(ra.result());
    assert!(ips.iter().all(|ip| lease_exists(env, *ip)));
    assert!(!macvlan_state(env).is_empty());
    let out = Command::new("ip").args(["netns", "del", &a.name]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!a.path().exists());
    // The macvlan died with the namespace; DEL releases the leases and forgets the state.
    env.cnitool("del", NET, &a, &opts).expect_ok();
    for ip in &ips {
        assert!(!lease_exists(env, *ip), "lease of {ip} left behind");
    }
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
    assert!(links_of_kind(env.host(), "macvlan").is_empty());
    assert_eq!(
        links_of_kind(env.host(), "veth"),
        vec![PARENT.to_string()],
        "the parent is untouched"
    );
}

#[test]
fn mtu_mac_and_result_versions() {
    if !require_root() {
        return;
    }
    let w = world("mvmtu");
    let env = &w.env;
    let a = env.container("a");
    let ns = a.path().display().to_string();
    // 1.1.0 result: interface mtu, ips pointing at interface 0; MAC from runtimeConfig.
    let conf = stdin_conf(
        env,
        "1.1.0",
        json!({"mtu": 1400, "mac": "02:00:00:00:00:01", "runtimeConfig": {"mac": "02:42:0a:4d:00:63"}}),
    );
    let out = env.exec_plugin("macvlan", &add_env("ctr1", &ns), &conf);
    out.expect_ok();
    let r = out.result();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["mtu"], 1400);
    assert_eq!(r["interfaces"][0]["mac"], "02:42:0a:4d:00:63");
    assert_eq!(a.ip_json(&["link", "show", "eth0"])[0]["mtu"], 1400);
    assert_eq!(a.ip_json(&["link", "show", "eth0"])[0]["address"], "02:42:0a:4d:00:63");
    let mut del = add_env("ctr1", &ns);
    del[0] = ("CNI_COMMAND", "DEL");
    env.exec_plugin("macvlan", &del, &conf).expect_ok();
    untouched(&a);

    // 0.4.0 result, MAC from CNI_ARGS.
    let conf = stdin_conf(env, "0.4.0", json!({}));
    let mut e = add_env("ctr2", &ns);
    e.push(("CNI_ARGS", "IgnoreUnknown=1;MAC=02:42:0a:4d:00:64"));
    let out = env.exec_plugin("macvlan", &e, &conf);
    out.expect_ok();
    assert_eq!(out.result()["ips"][0]["version"], "4");
    assert!(out.result()["interfaces"][0].get("mtu").is_none());
    assert_eq!(a.ip_json(&["link", "show", "eth0"])[0]["address"], "02:42:0a:4d:00:64");
    e[0] = ("CNI_COMMAND", "DEL");
    env.exec_plugin("macvlan", &e, &conf).expect_ok();
    untouched(&a);
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn default_master_is_the_default_route_interface() {
    if !require_root() {
        return;
    }
    let w = world("mvdefault");
    let env = &w.env;
    env.host().ip_ok(&["addr", "add", "10.77.0.2/24", "dev", PARENT]);
    env.host().ip_ok(&["route", "add", "default", "via", "10.77.0.1"]);
    let mut p = plugin_conf(env, json!({}));
    p.as_object_mut().unwrap().remove("master");
    env.write_conflist(NET, &json!({"cniVersion": "1.0.0", "name": NET, "plugins": [p]}));
    let a = env.container("a");
    let r = env.cnitool("add", NET, &a, &CniOpts::ours());
    r.expect_ok();
    assert!(ping(&a, "10.77.0.1"));
    let link = &a.ip_json(&["-d", "link", "show", "eth0"])[0];
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    env.cnitool("del", NET, &a, &CniOpts::ours()).expect_ok();
}

#[test]
fn link_in_container_uses_a_master_inside_the_container() {
    if !require_root() {
        return;
    }
    let w = world("mvlic");
    let env = &w.env;
    let a = env.container("a");
    let lan2 = env.container("lan2");
    a.veth_to("cparent", &lan2, "wire2");
    lan2.ip_ok(&["addr", "add", "10.77.0.1/24", "dev", "wire2"]);
    write_net(env, json!({"master": "cparent", "linkInContainer": true}));
    let opts = CniOpts::ours();
    let r = env.cnitool("add", NET, &a, &opts);
    r.expect_ok();
    assert!(ping(&a, "10.77.0.1"), "a cannot reach the LAN behind its own parent");
    assert!(links_of_kind(env.host(), "macvlan").is_empty());
    env.cnitool("check", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &a, &opts).expect_ok();
    assert_eq!(links_of_kind(&a, "macvlan"), Vec::<String>::new());
    assert!(links(&a).contains(&"cparent".to_string()), "the master in the container is untouched");
}

#[test]
fn status_and_gc() {
    if !require_root() {
        return;
    }
    let w = world("mvstatus");
    let env = &w.env;
    let ok = env.exec_plugin(
        "macvlan",
        &[("CNI_COMMAND", "STATUS")],
        &stdin_conf(env, "1.1.0", json!({})),
    );
    ok.expect_ok();
    let missing = env.exec_plugin(
        "macvlan",
        &[("CNI_COMMAND", "STATUS")],
        &stdin_conf(env, "1.1.0", json!({"master": "gone0"})),
    );
    assert_eq!(missing.error_code(), Some(50), "{missing}");
    assert!(missing.error_msg().contains("gone0"), "{missing}");

    // GC forgets attachments the runtime no longer knows, keeps the valid ones.
    let (a, b) = (env.container("a"), env.container("b"));
    let (na, nb) = (a.path().display().to_string(), b.path().display().to_string());
    let conf = stdin_conf(env, "1.1.0", json!({}));
    let ra = env.exec_plugin("macvlan", &add_env("ctra", &na), &conf);
    ra.expect_ok();
    let rb = env.exec_plugin("macvlan", &add_env("ctrb", &nb), &conf);
    rb.expect_ok();
    let (ipa, ipb) = (ips_of(ra.result()), ips_of(rb.result()));
    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctrb", "ifname": "eth0"}]);
    env.exec_plugin("macvlan", &[("CNI_COMMAND", "GC")], &gc.to_string()).expect_ok();
    let names: Vec<String> = macvlan_state(env)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("ctrb_")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("ctra_")), "{names:?}");
    // IPAM's GC released the forgotten attachment's leases, not the valid one's.
    assert!(ipa.iter().all(|ip| !lease_exists(env, *ip)), "{:?}", files_under(&env.ipam_dir()));
    assert!(ipb.iter().all(|ip| lease_exists(env, *ip)), "{:?}", files_under(&env.ipam_dir()));
    let mut del = add_env("ctrb", &nb);
    del[0] = ("CNI_COMMAND", "DEL");
    env.exec_plugin("macvlan", &del, &conf).expect_ok();
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_failed_add_undoes_everything() {
    if !require_root() {
        return;
    }
    let w = world("mvundo");
    let env = &w.env;
    // A route whose gateway is on no subnet of the container: refused after the macvlan
    // exists and has its addresses, so ADD must undo the link, the lease and the state.
    write_net(
        env,
        json!({"ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10"}]],
            "routes": [{"dst": "10.91.0.0/24", "gw": "10.200.0.1"}],
            "dataDir": env.ipam_dir()
        }}),
    );
    let a = env.container("a");
    let out = env.cnitool("add", NET, &a, &CniOpts::ours());
    out.expect_err();
    untouched(&a);
    assert!(
        files_under(&env.ipam_dir()).iter().all(|p| !p.to_string_lossy().contains("10.77.0.")),
        "{:?}",
        files_under(&env.ipam_dir())
    );
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn concurrent_adds_and_dels_leave_nothing_behind() {
    if !require_root() {
        return;
    }
    let w = world("mvconc");
    let env = &w.env;
    write_net(env, json!({}));
    let ctrs: Vec<Netns> = (0..6).map(|i| env.container(&format!("c{i}"))).collect();
    let opts = CniOpts::ours();
    let results: Vec<CniOutput> = std::thread::scope(|s| {
        let hs: Vec<_> =
            ctrs.iter().map(|c| s.spawn(|| env.cnitool("add", NET, c, &opts))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = Vec::new();
    for r in &results {
        r.expect_ok();
        all.extend(ips_of(r.result()));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an address was handed out twice");
    assert!(ping(&ctrs[0], v4(&ips_of(results[5].result()))));
    std::thread::scope(|s| {
        for c in &ctrs {
            s.spawn(|| {
                env.cnitool("del", NET, c, &opts).expect_ok();
            });
        }
    });
    for c in &ctrs {
        untouched(c);
    }
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
    assert!(all.iter().all(|ip| !lease_exists(env, *ip)));
}

/// The same two-container scenario against the reference macvlan: the fair comparison.
#[test]
fn reference_macvlan_same_scenario() {
    if !require_root() {
        return;
    }
    let w = world("mvref");
    let env = &w.env;
    write_net(env, json!({"mode": "bridge"}));
    let (a, b) = (env.container("a"), env.container("b"));
    let opts = CniOpts::reference();
    let ra = env.cnitool("add", NET, &a, &opts);
    ra.expect_ok();
    let rb = env.cnitool("add", NET, &b, &opts);
    rb.expect_ok();
    assert!(ping(&a, v4(&ips_of(rb.result()))));
    assert!(ping(&a, "10.77.0.1"));
    env.cnitool("del", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &b, &opts).expect_ok();
    untouched(&a);
}

#[test]
fn bcqueuelen_reaches_the_kernel() {
    if !require_root() {
        return;
    }
    let w = world("mvbcq");
    write_net(&w.env, json!({"bcqueuelen": 2000}));
    let c = w.env.container("c");
    w.env.cnitool("add", NET, &c, &CniOpts::ours()).expect_ok();
    let link = c.ip_json(&["-d", "link", "show", "dev", "eth0"]);
    assert_eq!(link[0]["linkinfo"]["info_data"]["bcqueuelen"], json!(2000), "{link}");
    assert!(ping(&c, "10.77.0.1"));
    w.env.cnitool("del", NET, &c, &CniOpts::ours()).expect_ok();
}

/// Issue 14.5 for macvlan: a repeated ADD of a live attachment is refused before IPAM runs,
/// so the container keeps its addresses and the next container gets others.
#[test]
fn a_repeated_add_is_refused_and_keeps_the_live_addresses() {
    if !require_root() {
        return;
    }
    let w = world("mvrepeat");
    let env = &w.env;
    let (a, b) = (env.container("a"), env.container("b"));
    let (na, nb) = (a.path().display().to_string(), b.path().display().to_string());
    let conf = stdin_conf(env, "1.1.0", json!({}));
    let first = env.exec_plugin("macvlan", &add_env("ctra", &na), &conf);
    first.expect_ok();
    let again = env.exec_plugin("macvlan", &add_env("ctra", &na), &conf);
    assert_eq!(again.error_code(), Some(7), "{again}");
    assert!(again.error_msg().contains("already attached"), "{again}");
    let other = env.exec_plugin("macvlan", &add_env("ctrb", &nb), &conf);
    other.expect_ok();
    let (ipa, ipb) = (ips_of(first.result()), ips_of(other.result()));
    for ip in &ipa {
        assert!(!ipb.contains(ip), "b got a's live address {ip}");
        assert!(lease_exists(env, *ip));
    }
    assert!(ping(&b, v4(&ipa)), "a keeps its address");
    for (id, ns) in [("ctra", &na), ("ctrb", &nb)] {
        let mut del = add_env(id, ns);
        del[0] = ("CNI_COMMAND", "DEL");
        env.exec_plugin("macvlan", &del, &conf).expect_ok();
    }
    untouched(&a);
    untouched(&b);
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
}

/// Issue 14.8 for macvlan: container IDs longer than a file name work, DEL included.
#[test]
fn long_container_ids_work() {
    if !require_root() {
        return;
    }
    let w = world("mvlongid");
    let env = &w.env;
    let a = env.container("a");
    let na = a.path().display().to_string();
    let id = format!("x{}", "1".repeat(499));
    let conf = stdin_conf(env, "1.1.0", json!({}));
    let add = env.exec_plugin("macvlan", &add_env(&id, &na), &conf);
    add.expect_ok();
    assert!(ping(&a, "10.77.0.1"));
    let mut del = add_env(&id, &na);
    del[0] = ("CNI_COMMAND", "DEL");
    env.exec_plugin("macvlan", &del, &conf).expect_ok();
    env.exec_plugin("macvlan", &del, &conf).expect_ok();
    untouched(&a);
    assert_eq!(macvlan_state(env), Vec::<std::path::PathBuf>::new());
    assert!(ips_of(add.result()).iter().all(|ip| !lease_exists(env, *ip)));
}
