//! The `host` plugin against the real kernel, driven by cnitool, in namespaces each test
//! makes for itself. The "device" handed to containers is one end of a veth pair created in
//! the test's private "host" namespace (`hdev0`); its peer sits in an "outside" namespace,
//! so traffic to the device proves where it is. No real interface is ever touched.

use std::net::IpAddr;
use std::process::Command;

use integration::*;
use serde_json::{json, Value};

const NET: &str = "hostnet";
const DEV: &str = "hdev0";

struct World {
    env: TestEnv,
    outside: Netns,
}

/// The host namespace gets `hdev0` (10.89.0.2/24, fd89::2/64, a route to 10.90.0.0/24
/// through the outside), the outside namespace its peer (10.89.0.1/24, fd89::1/64).
fn world(label: &str) -> World {
    let env = TestEnv::new(label);
    let outside = env.container("out");
    env.host().veth_to(DEV, &outside, "peer0");
    env.host().ip_ok(&["addr", "add", "10.89.0.2/24", "dev", DEV]);
    env.host().ip_ok(&["-6", "addr", "add", "fd89::2/64", "nodad", "dev", DEV]);
    env.host().ip_ok(&["route", "add", "10.90.0.0/24", "via", "10.89.0.1", "dev", DEV]);
    outside.ip_ok(&["addr", "add", "10.89.0.1/24", "dev", "peer0"]);
    outside.ip_ok(&["-6", "addr", "add", "fd89::1/64", "nodad", "dev", "peer0"]);
    // The link-local address the kernel gives DEV is "tentative" until DAD ends; snapshots
    // taken before and after that would differ for no fault of the plugin.
    let settled = eventually(std::time::Duration::from_secs(5), || {
        env.host().ip_ok(&["-6", "addr", "show", "tentative"]).trim().is_empty()
    });
    assert!(settled, "IPv6 DAD did not finish on {DEV}");
    World { env, outside }
}

fn write_net(env: &TestEnv, plugin: Value) {
    let mut p = plugin;
    p["type"] = json!("host");
    env.write_conflist(NET, &json!({"cniVersion": "1.0.0", "name": NET, "plugins": [p]}));
}

fn stdin_conf(version: &str, plugin: Value) -> String {
    let mut p = plugin;
    p["type"] = json!("host");
    p["cniVersion"] = json!(version);
    p["name"] = json!(NET);
    p.to_string()
}

fn host_state(env: &TestEnv) -> Vec<std::path::PathBuf> {
    files_under(&env.state_dir().join("host"))
}

fn mac_of(ns: &Netns, ifname: &str) -> String {
    ns.ip_json(&["link", "show", ifname])[0]["address"].as_str().unwrap().to_string()
}

fn has_addr(ns: &Netns, ifname: &str, addr: &str) -> bool {
    let ip: IpAddr = addr.parse().unwrap();
    addresses(ns).iter().any(|a| a.ifname == ifname && a.addr == ip)
}

fn has_route(ns: &Netns, dst: &str, dev: &str) -> bool {
    routes(ns, false)
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["dst"] == json!(dst) && r["dev"] == json!(dev))
}

/// `ip -j link` and `ip -j addr` of a namespace, for "nothing changed" comparisons.
fn snapshot(ns: &Netns) -> (Value, Value) {
    (ns.ip_json(&["link", "show"]), ns.ip_json(&["addr", "show"]))
}

fn env_for<'a>(
    cmd: &'a str,
    ctr: &'a str,
    ns: &'a str,
    ifname: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", ctr), ("CNI_NETNS", ns), ("CNI_IFNAME", ifname)]
}

#[test]
fn shared_namespace_reports_the_host_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let w = world("hshared");
    let env = &w.env;
    write_net(env, json!({}));
    let host = env.host();
    let before = snapshot(host);
    let opts = CniOpts::ours();
    let out = env.cnitool("add", NET, host, &opts);
    out.expect_ok();
    let r = out.result();
    let ifaces = r["interfaces"].as_array().unwrap();
    assert!(ifaces.iter().all(|i| i.get("sandbox").is_none()), "nothing lives in a sandbox: {r}");
    assert!(!ifaces.iter().any(|i| i["name"] == "lo"), "loopback is not reported: {r}");
    let idx = ifaces
        .iter()
        .position(|i| i["name"] == DEV)
        .unwrap_or_else(|| panic!("{DEV} missing: {r}"));
    assert_eq!(ifaces[idx]["mac"], json!(mac_of(host, DEV)));
    let ips = r["ips"].as_array().unwrap();
    assert!(
        ips.iter().any(|ip| ip["address"] == "10.89.0.2/24" && ip["interface"] == json!(idx)),
        "{r}"
    );
    assert!(
        ips.iter().any(|ip| ip["address"] == "fd89::2/64" && ip["interface"] == json!(idx)),
        "{r}"
    );
    assert!(!ips.iter().any(|ip| ip["address"].as_str().unwrap().starts_with("fe80")), "{r}");
    assert_eq!(snapshot(host), before, "ADD changed the host");
    env.cnitool("check", NET, host, &opts).expect_ok();
    env.cnitool("del", NET, host, &opts).expect_ok();
    assert_eq!(snapshot(host), before, "DEL changed the host");
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn shared_namespace_refuses_a_container_namespace() {
    if !require_root() {
        return;
    }
    let w = world("hsharedno");
    let env = &w.env;
    let a = env.container("a");
    let ns = a.path().display().to_string();
    let out = env.exec_plugin(
        "host",
        &env_for("ADD", "c1", &ns, "eth0"),
        &stdin_conf("1.1.0", json!({})),
    );
    out.expect_err();
    assert_eq!(out.error_code(), Some(7), "{out}");
    let m = out.error_msg();
    assert!(m.contains("shares the host's network namespace") && m.contains(&ns), "{m}");
    assert_eq!(links(&a), vec!["lo".to_string()]);
    // CHECK gives the same answer; DEL has nothing to undo and succeeds.
    let chk = env.exec_plugin(
        "host",
        &env_for("CHECK", "c1", &ns, "eth0"),
        &stdin_conf("1.1.0", json!({"prevResult": {"cniVersion": "1.1.0"}})),
    );
    assert_eq!(chk.error_code(), Some(7), "{chk}");
    env.exec_plugin("host", &env_for("DEL", "c1", &ns, "eth0"), &stdin_conf("1.1.0", json!({})))
        .expect_ok();
    // Through cnitool too.
    write_net(env, json!({}));
    env.cnitool("add", NET, &a, &CniOpts::ours()).expect_err();
}

#[test]
fn device_moves_into_the_container_and_back() {
    if !require_root() {
        return;
    }
    let w = world("hdevice");
    let env = &w.env;
    write_net(env, json!({"device": DEV}));
    let a = env.container("a");
    let opts = CniOpts::ours().ifname("net1");
    let mac = mac_of(env.host(), DEV);

    let out = env.cnitool("add", NET, &a, &opts);
    out.expect_ok();
    let r = out.result();
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["mac"], json!(mac));
    assert_eq!(r["interfaces"][0]["sandbox"], json!(a.path().display().to_string()));
    assert!(r["ips"].as_array().unwrap().iter().any(|ip| ip["address"] == "10.89.0.2/24"), "{r}");

    assert!(!links(env.host()).contains(&DEV.to_string()), "the device is still in the host");
    assert!(links(&a).contains(&"net1".to_string()));
    assert_eq!(mac_of(&a, "net1"), mac);
    assert!(has_addr(&a, "net1", "10.89.0.2"), "{:?}", addresses(&a));
    assert!(has_addr(&a, "net1", "fd89::2"), "{:?}", addresses(&a));
    assert!(has_route(&a, "10.90.0.0/24", "net1"), "{}", routes(&a, false));
    assert!(ping(&w.outside, "10.89.0.2"), "the peer cannot reach the device in the container");
    assert!(ping(&a, "10.89.0.1"), "the container cannot reach the peer");
    assert!(ping(&a, "fd89::1"), "the container cannot reach the peer over IPv6");
    env.cnitool("check", NET, &a, &opts).expect_ok();

    env.cnitool("del", NET, &a, &opts).expect_ok();
    assert_eq!(links(&a), vec!["lo".to_string()]);
    assert!(
        links(env.host()).contains(&DEV.to_string()),
        "not given back under its name: {:?}",
        links(env.host())
    );
    assert_eq!(mac_of(env.host(), DEV), mac);
    assert!(
        has_addr(env.host(), DEV, "10.89.0.2") && has_addr(env.host(), DEV, "fd89::2"),
        "{:?}",
        addresses(env.host())
    );
    assert!(has_route(env.host(), "10.90.0.0/24", DEV), "{}", routes(env.host(), false));
    assert!(ping(&w.outside, "10.89.0.2"), "the peer cannot reach the device back in the host");
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
    // A second DEL finds nothing to do.
    env.cnitool("del", NET, &a, &opts).expect_ok();
    assert!(links(env.host()).contains(&DEV.to_string()));
}

#[test]
fn device_by_hwaddr_with_ipam_addresses() {
    if !require_root() {
        return;
    }
    let w = world("hhwaddr");
    let env = &w.env;
    let mac = mac_of(env.host(), DEV);
    write_net(
        env,
        json!({"hwaddr": mac, "ipam": {"type": "static", "addresses": [{"address": "10.89.0.50/24"}]}}),
    );
    let a = env.container("a");
    let opts = CniOpts::ours();
    let out = env.cnitool("add", NET, &a, &opts);
    out.expect_ok();
    assert_eq!(out.result()["ips"][0]["address"], "10.89.0.50/24");
    assert_eq!(out.result()["ips"][0]["interface"], 0);
    assert!(has_addr(&a, "eth0", "10.89.0.50"));
    assert!(!has_addr(&a, "eth0", "10.89.0.2"), "with IPAM the host's addresses stay out");
    assert!(ping(&w.outside, "10.89.0.50"));
    env.cnitool("check", NET, &a, &opts).expect_ok();
    env.cnitool("del", NET, &a, &opts).expect_ok();
    // Back as it was, with its own address, not IPAM's.
    assert!(has_addr(env.host(), DEV, "10.89.0.2"));
    assert!(!has_addr(env.host(), DEV, "10.89.0.50"));
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn del_after_the_container_namespace_is_gone() {
    if !require_root() {
        return;
    }
    let w = world("hgone");
    let env = &w.env;
    write_net(
        env,
        json!({"device": DEV, "ipam": {"type": "host-local", "subnet": "10.89.0.0/24", "rangeStart": "10.89.0.100", "dataDir": env.ipam_dir()}}),
    );
    let a = env.container("a");
    let opts = CniOpts::ours();
    let out = env.cnitool("add", NET, &a, &opts);
    out.expect_ok();
    let ip = first_ip(out.result()).to_string();
    let lease = |env: &TestEnv| {
        files_under(&env.ipam_dir())
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == ip))
    };
    assert!(lease(env));
    let del = Command::new("ip").args(["netns", "del", &a.name]).output().unwrap();
    assert!(del.status.success());
    // A veth is destroyed with its namespace (a physical device would go to the machine's
    // initial namespace, which this test never touches): its peer disappears too.
    assert!(eventually(std::time::Duration::from_secs(5), || !links(&w.outside)
        .contains(&"peer0".to_string())));
    env.cnitool("del", NET, &a, &opts).expect_ok();
    assert!(!lease(env), "lease of {ip} left behind");
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
    assert!(!links(env.host()).contains(&DEV.to_string()));
}

#[test]
fn bad_device_configs_are_code_7_and_change_nothing() {
    if !require_root() {
        return;
    }
    let w = world("hbad");
    let env = &w.env;
    let a = env.container("a");
    let ns = a.path().display().to_string();
    let host_ns = env.host().path().display().to_string();
    let before = snapshot(env.host());
    for (ns_path, plugin, needles) in [
        (&ns, json!({"device": "nosuch0"}), vec!["device", "nosuch0"]),
        (&ns, json!({"hwaddr": "02:00:00:00:99:99"}), vec!["hwaddr", "02:00:00:00:99:99"]),
        (&ns, json!({"device": DEV, "hwaddr": "02:00:00:00:99:99"}), vec!["device", "hwaddr"]),
        (&ns, json!({"pciBusID": "0000:ff:1f.7"}), vec!["0000:ff:1f.7"]),
        (&host_ns, json!({"device": DEV}), vec!["host's own namespace", DEV]),
    ] {
        let out = env.exec_plugin(
            "host",
            &env_for("ADD", "c1", ns_path, "eth0"),
            &stdin_conf("1.1.0", plugin.clone()),
        );
        out.expect_err();
        assert_eq!(out.error_code(), Some(7), "{plugin}: {out}");
        for n in needles {
            assert!(out.error_msg().contains(n), "{plugin}: {n:?} not in {}", out.error_msg());
        }
        assert_eq!(links(&a), vec!["lo".to_string()]);
        assert_eq!(snapshot(env.host()), before, "{plugin}");
        assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new(), "{plugin}");
    }
}

#[test]
fn status_and_gc() {
    if !require_root() {
        return;
    }
    let w = world("hstatus");
    let env = &w.env;
    let conf = stdin_conf("1.1.0", json!({"device": DEV}));
    env.exec_plugin("host", &[("CNI_COMMAND", "STATUS")], &conf).expect_ok();
    env.exec_plugin("host", &[("CNI_COMMAND", "STATUS")], &stdin_conf("1.1.0", json!({})))
        .expect_ok();
    let missing = env.exec_plugin(
        "host",
        &[("CNI_COMMAND", "STATUS")],
        &stdin_conf("1.1.0", json!({"device": "nosuch0"})),
    );
    assert_eq!(missing.error_code(), Some(50), "{missing}");
    assert!(missing.error_msg().contains("nosuch0"));

    let a = env.container("a");
    let ns = a.path().display().to_string();
    env.exec_plugin("host", &env_for("ADD", "ctra", &ns, "net1"), &conf).expect_ok();
    let busy = env.exec_plugin("host", &[("CNI_COMMAND", "STATUS")], &conf);
    assert_eq!(busy.error_code(), Some(50), "{busy}");
    assert!(busy.error_msg().contains("ctra"), "{busy}");
    // GC with an empty valid list gives the device back.
    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([]);
    env.exec_plugin("host", &[("CNI_COMMAND", "GC")], &gc.to_string()).expect_ok();
    assert!(links(env.host()).contains(&DEV.to_string()));
    assert!(has_addr(env.host(), DEV, "10.89.0.2"));
    assert_eq!(links(&a), vec!["lo".to_string()]);
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_failed_add_gives_the_device_back() {
    if !require_root() {
        return;
    }
    let w = world("hundo");
    let env = &w.env;
    // The route's gateway is not on any subnet of the device: the kernel refuses it after
    // the device was moved and addressed, so ADD has to undo all of it.
    write_net(
        env,
        json!({"device": DEV, "ipam": {"type": "static",
        "addresses": [{"address": "10.89.0.50/24"}],
        "routes": [{"dst": "10.91.0.0/24", "gw": "10.200.0.1"}]}}),
    );
    let before = snapshot(env.host());
    let a = env.container("a");
    let out = env.cnitool("add", NET, &a, &CniOpts::ours());
    out.expect_err();
    assert_eq!(links(&a), vec!["lo".to_string()]);
    assert!(links(env.host()).contains(&DEV.to_string()), "{out}");
    assert!(has_addr(env.host(), DEV, "10.89.0.2") && !has_addr(env.host(), DEV, "10.89.0.50"));
    assert!(has_route(env.host(), "10.90.0.0/24", DEV), "{}", routes(env.host(), false));
    assert_eq!(
        snapshot(env.host()).0.as_array().unwrap().len(),
        before.0.as_array().unwrap().len()
    );
    assert!(ping(&w.outside, "10.89.0.2"));
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_bridge_port_goes_back_into_its_bridge() {
    if !require_root() {
        return;
    }
    let w = world("hbrport");
    let env = &w.env;
    let lan = env.container("lan");
    env.host().veth_to("hport0", &lan, "lanport");
    env.host().ip_ok(&["link", "add", "hbr0", "type", "bridge"]);
    env.host().ip_ok(&["link", "set", "hbr0", "up"]);
    env.host().ip_ok(&["link", "set", "hport0", "master", "hbr0"]);
    write_net(env, json!({"device": "hport0"}));
    let a = env.container("a");
    let opts = CniOpts::ours();
    env.cnitool("add", NET, &a, &opts).expect_ok();
    assert!(links(&a).contains(&"eth0".to_string()));
    env.cnitool("del", NET, &a, &opts).expect_ok();
    let port = &env.host().ip_json(&["link", "show", "hport0"])[0];
    assert_eq!(port["master"], "hbr0", "{port}");
    assert!(port["flags"].as_array().unwrap().contains(&json!("UP")), "{port}");
}

/// Issue 14.5 and 14.8 for a handed-over device: a repeated ADD is refused (the device stays
/// in the container with its addresses), a container ID longer than a file name works, and
/// DEL gives the device back.
#[test]
fn a_repeated_add_is_refused_and_long_ids_work() {
    if !require_root() {
        return;
    }
    let w = world("hrepeat");
    let env = &w.env;
    let a = env.container("a");
    let ns = a.path().display().to_string();
    let id = format!("h{}", "7".repeat(399));
    let conf = stdin_conf("1.1.0", json!({"device": DEV}));
    env.exec_plugin("host", &env_for("ADD", &id, &ns, "net1"), &conf).expect_ok();
    let again = env.exec_plugin("host", &env_for("ADD", &id, &ns, "net1"), &conf);
    assert_eq!(again.error_code(), Some(7), "{again}");
    assert!(again.error_msg().contains("already attached"), "{again}");
    assert!(has_addr(&a, "net1", "10.89.0.2"), "the device keeps its address");
    assert!(ping(&a, "10.89.0.1"));
    env.exec_plugin("host", &env_for("DEL", &id, &ns, "net1"), &conf).expect_ok();
    env.exec_plugin("host", &env_for("DEL", &id, &ns, "net1"), &conf).expect_ok();
    assert!(links(env.host()).contains(&DEV.to_string()), "given back");
    assert!(has_addr(env.host(), DEV, "10.89.0.2"));
    assert_eq!(host_state(env), Vec::<std::path::PathBuf>::new());
}
