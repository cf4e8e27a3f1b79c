//! Behaviour of the public entry points, in-process (no root, state in temp dirs).

use super::*;
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A Request for `verb` with `conf` on stdin and CNI_ARGS `args` (container "ctr1", eth0).
pub(crate) fn request(verb: &str, conf: Value, args: &str) -> Request {
    request_for(verb, conf, args, "ctr1", "eth0")
}

pub(crate) fn request_for(verb: &str, conf: Value, args: &str, id: &str, ifname: &str) -> Request {
    cni::dispatch::request_for(verb, id, ifname, args, conf.to_string().as_bytes()).unwrap()
}

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "ipam-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn conf(dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(dir);
    json!({"cniVersion": "1.1.0", "name": "testnet", "type": "bridge", "ipam": ipam})
}

fn add_as(c: &Value, id: &str) -> Result<CniResult, CniError> {
    add(&request_for("ADD", c.clone(), "", id, "eth0"))
}

fn addrs(r: &CniResult) -> Vec<String> {
    r.ips.iter().map(|i| i.address.to_string()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn add_gives_one_address_per_range_set_with_gateway() {
    let t = Tmp::new("dual");
    let c = conf(
        t.path(),
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/120"}]], "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let r = add_as(&c, "abc123").unwrap();
    assert_eq!(addrs(&r), vec!["10.9.0.2/24", "fd00:9::2/120"]);
    assert_eq!(r.ips[0].gateway, Some(ip("10.9.0.1")));
    assert_eq!(r.ips[1].gateway, Some(ip("fd00:9::1")));
    assert!(r.ips.iter().all(|i| i.interface.is_none()));
    assert_eq!(r.routes.len(), 1);
    let v = r.to_version("1.0.0").unwrap();
    assert_eq!(v["ips"][0], json!({"address": "10.9.0.2/24", "gateway": "10.9.0.1"}));
}

#[test]
fn add_is_idempotent_for_the_same_container_and_interface() {
    let t = Tmp::new("idem");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    let first = add_as(&c, "a").unwrap();
    let again = add_as(&c, "a").unwrap();
    assert_eq!(first, again);
    let other_if = add(&request_for("ADD", c.clone(), "", "a", "eth1")).unwrap();
    assert_ne!(addrs(&other_if), addrs(&first));
    let b = add_as(&c, "b").unwrap();
    assert_eq!(addrs(&b), vec!["10.9.0.4/24"]);
}

#[test]
fn round_robin_then_reuse_after_wrap() {
    let t = Tmp::new("rr");
    // .1 is the gateway: 10.0.0.2 .. 10.0.0.6 usable.
    let c = conf(t.path(), json!({"subnet": "10.0.0.0/29"}));
    let got: Vec<String> =
        (0..5).map(|i| addrs(&add_as(&c, &format!("c{i}")).unwrap())[0].clone()).collect();
    assert_eq!(
        got,
        vec!["10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"]
    );
    let e = add_as(&c, "c5").unwrap_err();
    assert_eq!(e.code, cni::code::ADDRESS_UNAVAILABLE);
    assert!(e.msg.contains("no free address") && e.msg.contains("10.0.0.0/29"), "{}", e.msg);
    // Free .3; the next ADD wraps around to it even though .2.. were handed out before.
    del(&request_for("DEL", c.clone(), "", "c1", "eth0")).unwrap();
    assert_eq!(addrs(&add_as(&c, "c6").unwrap()), vec!["10.0.0.3/29"]);
    // Round-robin: freeing .2 after .5 means .5's successor is tried first... (all full but .2)
    del(&request_for("DEL", c.clone(), "", "c0", "eth0")).unwrap();
    del(&request_for("DEL", c.clone(), "", "c4", "eth0")).unwrap();
    assert_eq!(
        addrs(&add_as(&c, "c7").unwrap()),
        vec!["10.0.0.6/29"],
        "cursor is at .3, so .4/.5 taken, .6 free"
    );
    assert_eq!(addrs(&add_as(&c, "c8").unwrap()), vec!["10.0.0.2/29"]);
}

#[test]
fn requested_address_via_every_source() {
    let t = Tmp::new("req");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    let r = add(&request_for("ADD", c.clone(), "IP=10.9.0.50", "a", "eth0")).unwrap();
    assert_eq!(addrs(&r), vec!["10.9.0.50/24"]);
    let mut c2 = c.clone();
    c2["runtimeConfig"] = json!({"ips": ["10.9.0.51/24"]});
    assert_eq!(addrs(&add_as(&c2, "b").unwrap()), vec!["10.9.0.51/24"]);
    let mut c3 = c.clone();
    c3["args"] = json!({"cni": {"ips": ["10.9.0.52"]}});
    assert_eq!(addrs(&add_as(&c3, "c").unwrap()), vec!["10.9.0.52/24"]);
}

#[test]
fn requested_address_taken_outside_or_gateway() {
    let t = Tmp::new("req-err");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    add(&request_for("ADD", c.clone(), "IP=10.9.0.50", "a", "eth0")).unwrap();
    let e = add(&request_for("ADD", c.clone(), "IP=10.9.0.50", "b", "eth0")).unwrap_err();
    assert_eq!(e.code, cni::code::ADDRESS_UNAVAILABLE);
    assert!(e.msg.contains("10.9.0.50") && e.msg.contains("container a"), "{}", e.msg);
    let e = add(&request_for("ADD", c.clone(), "IP=10.7.0.2", "b", "eth0")).unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("10.7.0.2") && e.msg.contains("outside"), "{}", e.msg);
    let e = add(&request_for("ADD", c.clone(), "IP=10.9.0.1", "b", "eth0")).unwrap_err();
    assert!(e.msg.contains("10.9.0.1") && e.msg.contains("gateway"), "{}", e.msg);
    let e = add(&request_for("ADD", c.clone(), "IP=10.9.0.5,10.9.0.6", "b", "eth0")).unwrap_err();
    assert!(e.msg.contains("both fall in range set 0"), "{}", e.msg);
    // Same container asking again for its own address is fine; for another one is not.
    assert_eq!(
        addrs(&add(&request_for("ADD", c.clone(), "IP=10.9.0.50", "a", "eth0")).unwrap()),
        vec!["10.9.0.50/24"]
    );
    let e = add(&request_for("ADD", c.clone(), "IP=10.9.0.60", "a", "eth0")).unwrap_err();
    assert!(e.msg.contains("already holds 10.9.0.50"), "{}", e.msg);
}

#[test]
fn failed_add_releases_what_it_leased() {
    let t = Tmp::new("rollback");
    let c = conf(
        t.path(),
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.8.0.0/30"}]]}),
    );
    add_as(&c, "a").unwrap(); // takes 10.8.0.2, the only usable address of set 1
    let e = add_as(&c, "b").unwrap_err();
    assert_eq!(e.code, cni::code::ADDRESS_UNAVAILABLE);
    let s = store::Store::open(t.path(), "testnet").unwrap();
    let holders: Vec<String> = s.leases().unwrap().into_iter().map(|(_, h)| h.id).collect();
    assert_eq!(holders, vec!["a", "a"], "b's 10.9.0.x lease was rolled back");
}

#[test]
fn del_releases_and_never_fails_on_what_is_gone() {
    let t = Tmp::new("del");
    let c = conf(
        t.path(),
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/120"}]]}),
    );
    add_as(&c, "a").unwrap();
    add_as(&c, "b").unwrap();
    del(&request_for("DEL", c.clone(), "", "a", "eth0")).unwrap();
    del(&request_for("DEL", c.clone(), "", "a", "eth0")).unwrap();
    let s = store::Store::open(t.path(), "testnet").unwrap();
    assert_eq!(s.leases().unwrap().len(), 2);
    drop(s);
    // A network that never had a store, a config without ipam, a changed range: all fine.
    let other = conf(&t.path().join("nothing-here"), json!({"subnet": "10.1.0.0/24"}));
    del(&request_for("DEL", other.clone(), "", "a", "eth0")).unwrap();
    assert!(!t.path().join("nothing-here").exists(), "DEL creates nothing");
    del(&request("DEL", json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}), ""))
        .unwrap();
    let changed = conf(t.path(), json!({"subnet": "10.200.0.0/33"}));
    del(&request_for("DEL", changed, "", "b", "eth0")).unwrap();
    let s = store::Store::open(t.path(), "testnet").unwrap();
    assert!(s.leases().unwrap().is_empty());
}

#[test]
fn check_finds_leases_and_reports_code_3() {
    let t = Tmp::new("check");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    let r = add_as(&c, "a").unwrap();
    check(&request_for("CHECK", c.clone(), "", "a", "eth0")).unwrap();
    let e = check(&request_for("CHECK", c.clone(), "", "zz", "eth0")).unwrap_err();
    assert_eq!(e.code, 3);
    assert!(e.msg.contains("zz"), "{}", e.msg);
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.to_version("1.1.0").unwrap();
    check(&request_for("CHECK", with_prev.clone(), "", "a", "eth0")).unwrap();
    with_prev["prevResult"]["ips"][0]["address"] = json!("10.9.0.77/24");
    let e = check(&request_for("CHECK", with_prev, "", "a", "eth0")).unwrap_err();
    assert!(e.msg.contains("10.9.0.77"), "{}", e.msg);
    let fresh = conf(&t.path().join("none"), json!({"subnet": "10.9.0.0/24"}));
    assert_eq!(check(&request_for("CHECK", fresh, "", "a", "eth0")).unwrap_err().code, 3);
}

#[test]
fn gc_releases_leases_not_in_the_valid_list() {
    let t = Tmp::new("gc");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    for id in ["a", "b", "c"] {
        add_as(&c, id).unwrap();
    }
    add(&request_for("ADD", c.clone(), "", "a", "eth1")).unwrap();
    let valid = vec![
        Attachment { container_id: "a".into(), ifname: "eth0".into() },
        Attachment { container_id: "c".into(), ifname: "eth0".into() },
    ];
    gc(&request("GC", c.clone(), ""), &valid).unwrap();
    let s = store::Store::open(t.path(), "testnet").unwrap();
    let left: Vec<(String, Option<String>)> =
        s.leases().unwrap().into_iter().map(|(_, h)| (h.id, h.ifname)).collect();
    assert_eq!(left, vec![("a".into(), Some("eth0".into())), ("c".into(), Some("eth0".into()))]);
}

#[test]
fn status_is_code_50_when_a_range_set_is_full() {
    let t = Tmp::new("status");
    let c = conf(
        t.path(),
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.8.0.0/29"}]]}),
    );
    status(&request("STATUS", c.clone(), "")).unwrap();
    for i in 0..5 {
        add_as(&c, &format!("c{i}")).unwrap();
    }
    let e = status(&request("STATUS", c.clone(), "")).unwrap_err();
    assert_eq!(e.code, 50);
    assert!(e.msg.contains("range set 1") && e.msg.contains("5 of 5"), "{}", e.msg);
    del(&request_for("DEL", c.clone(), "", "c3", "eth0")).unwrap();
    status(&request("STATUS", c.clone(), "")).unwrap();
}

#[test]
fn dispatch_by_ipam_type() {
    let e = add(&request("ADD", json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}), ""))
        .unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("\"ipam\""), "{}", e.msg);
    let e = add(&request("ADD", json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"subnet": "10.0.0.0/24"}}), "")).unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("ipam.type"), "{}", e.msg);
    let r = add(&request(
        "ADD",
        json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"type": "static", "addresses": [{"address": "10.5.0.5/24", "gateway": "10.5.0.1"}]}}),
        "",
    ))
    .unwrap();
    assert_eq!(addrs(&r), vec!["10.5.0.5/24"]);
    // Any other type is run from CNI_PATH.
    let e = add(&request(
        "ADD",
        json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp"}}),
        "",
    ))
    .unwrap_err();
    assert!(e.msg.contains("dhcp") && e.msg.contains("/nonexistent-cni-path"), "{}", e.msg);
    del(&request(
        "DEL",
        json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"type": "static"}}),
        "",
    ))
    .unwrap();
}

#[test]
fn binaries_through_dispatch() {
    let t = Tmp::new("dispatch");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    let env = |cmd: &'static str| {
        move |k: &str| -> Option<String> {
            match k {
                "CNI_COMMAND" => Some(cmd.into()),
                "CNI_CONTAINERID" => Some("x1".into()),
                "CNI_NETNS" => Some("/run/netns/x".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                "CNI_PATH" => Some("/opt/cni/bin".into()),
                _ => None,
            }
        }
    };
    let mut old = c.clone();
    old["cniVersion"] = json!("0.2.0");
    let reply = cni::dispatch(&HostLocal, &env("ADD"), old.to_string().as_bytes());
    assert_eq!(reply.exit_code, 0, "{}", reply.stdout);
    let v: Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(v["ip4"]["ip"], json!("10.9.0.2/24"));
    let reply = cni::dispatch(&HostLocal, &env("VERSION"), b"");
    assert!(
        reply.stdout.contains("\"0.1.0\"") && reply.stdout.contains("\"1.1.0\""),
        "{}",
        reply.stdout
    );
    let reply = cni::dispatch(&Static, &env("ADD"), br#"{"cniVersion":"1.0.0","name":"n","type":"static","ipam":{"type":"static","addresses":[{"address":"10.0.0.0/33"}]}}"#);
    let e = reply.error_value().unwrap();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("ipam.addresses[0].address"), "{}", e.msg);
    let reply = cni::dispatch(&HostLocal, &env("DEL"), c.to_string().as_bytes());
    assert_eq!(reply.exit_code, 0);
}

#[test]
fn add_continues_after_the_cursor_in_a_full_store() {
    // 4000 leases as earlier ADDs leave them; the next ADD takes the address after the cursor
    // (one stat), whatever else the directory holds. Its cost is measured by the fill_bench example.
    let t = Tmp::new("cursor");
    let c = conf(t.path(), json!({"subnet": "10.0.0.0/20"}));
    let net = t.path().join("testnet");
    std::fs::create_dir_all(&net).unwrap();
    for i in 2..4002u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        std::fs::write(net.join(ip.to_string()), format!("f{i}\r\neth0")).unwrap();
    }
    std::fs::write(net.join("last_reserved_ip.0"), "10.0.15.161").unwrap();
    assert_eq!(addrs(&add_as(&c, "next").unwrap()), vec!["10.0.15.162/20"]);
    assert_eq!(std::fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(), "10.0.15.162");
    // A cursor on a taken address with a gap after it: the gap is used.
    std::fs::remove_file(net.join("10.0.0.100")).unwrap();
    std::fs::write(net.join("last_reserved_ip.0"), "10.0.0.98").unwrap();
    assert_eq!(addrs(&add_as(&c, "gap").unwrap()), vec!["10.0.0.100/20"]);
}

#[test]
fn static_check_compares_prev_result() {
    let base = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"type": "static", "addresses": [{"address": "10.5.0.5/24"}]},
                      "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.5.0.5/24"}]}});
    check(&request("CHECK", base.clone(), "")).unwrap();
    let mut bad = base;
    bad["prevResult"]["ips"][0]["address"] = json!("10.5.0.6/24");
    assert!(check(&request("CHECK", bad, "")).unwrap_err().msg.contains("10.5.0.5/24"));
}

#[test]
fn requested_address_already_ours_from_the_reference_is_adopted() {
    let t = Tmp::new("adopt");
    let c = conf(t.path(), json!({"subnet": "10.9.0.0/24"}));
    let net = t.path().join("testnet");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("10.9.0.40"), "a\r\neth0").unwrap(); // as the reference writes it
    let r = add(&request_for("ADD", c.clone(), "IP=10.9.0.40", "a", "eth0")).unwrap();
    assert_eq!(addrs(&r), vec!["10.9.0.40/24"]);
    assert!(net.join(".by-container/a:eth0/10.9.0.40").exists());
    // Now indexed: a plain ADD is idempotent and DEL goes through the index.
    assert_eq!(addrs(&add_as(&c, "a").unwrap()), vec!["10.9.0.40/24"]);
    del(&request_for("DEL", c, "", "a", "eth0")).unwrap();
    assert!(!net.join("10.9.0.40").exists());
    assert!(!net.join(".by-container").exists());
}

#[test]
fn configured_refuses_what_would_silently_give_no_address() {
    let with = |ipam: Value| {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        if !ipam.is_null() {
            c["ipam"] = ipam;
        }
        configured(&request("ADD", c, ""))
    };
    assert!(!with(Value::Null).unwrap());
    assert!(!with(json!({})).unwrap(), "{{}}: layer 2 only, like the reference");
    assert!(!with(json!({"type": ""})).unwrap());
    assert!(with(json!({"type": "host-local", "subnet": "10.0.0.0/24"})).unwrap());
    assert!(with(json!({"TYPE": "static"})).unwrap(), "Go's key matching");
    for (bad, shape) in [
        (json!("host-local"), "a string"),
        (json!(5), "a number"),
        (json!([{"type": "host-local"}]), "a list"),
        (json!(true), "a boolean"),
    ] {
        let e = with(bad.clone()).unwrap_err();
        assert_eq!(e.code, 7, "{bad}");
        assert!(e.msg.contains("ipam") && e.msg.contains(shape), "{bad}: {}", e.msg);
    }
    let e = with(json!({"subnet": "10.0.0.0/24"})).unwrap_err();
    assert!(e.code == 7 && e.msg.contains("ipam.type"), "{}", e.msg);
    let e = with(json!({"type": 7})).unwrap_err();
    assert!(e.code == 7 && e.msg.contains("ipam.type"), "{}", e.msg);
}

#[test]
fn non_ipam_types_are_refused_before_anything_runs() {
    // The plugin's own type and the suite's other plugins: code 7 naming ipam.type, in every
    // verb that would run them; DEL and GC have nothing to release.
    for (plugin, t) in [
        ("bridge", "bridge"),
        ("bridge", "macvlan"),
        ("macvlan", "macvlan"),
        ("host", "portmap"),
        ("my-plugin", "my-plugin"),
    ] {
        let c = json!({"cniVersion": "1.1.0", "name": "n", "type": plugin, "ipam": {"type": t}});
        for verb in ["ADD", "CHECK"] {
            let e = match verb {
                "ADD" => allocate(&request(verb, c.clone(), "")).map(|_| ()).unwrap_err(),
                _ => check(&request(verb, c.clone(), "")).unwrap_err(),
            };
            assert_eq!(e.code, 7, "{plugin}/{t} {verb}");
            assert!(e.msg.contains("ipam.type") && e.msg.contains(t), "{}", e.msg);
        }
        let e = configured(&request("ADD", c.clone(), "")).unwrap_err();
        assert_eq!(e.code, 7);
        del(&request("DEL", c.clone(), "")).unwrap();
        gc(&request("GC", c.clone(), ""), &[]).unwrap();
    }
}

#[test]
fn a_type_resolving_to_the_running_binary_is_refused() {
    // Any name in CNI_PATH that is this very executable (a link to it) would run ourselves.
    let t = Tmp::new("self");
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    std::os::unix::fs::symlink(&exe, t.path().join("innocent-ipam")).unwrap();
    let mut req = request(
        "ADD",
        json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "innocent-ipam"}}),
        "",
    );
    req.env.path = vec![t.path().to_path_buf()];
    let e = configured(&req).unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("innocent-ipam") && e.msg.contains("itself"), "{}", e.msg);
    let e = allocate(&req).unwrap_err();
    assert_eq!(e.code, 7);
}

#[test]
fn rollback_releases_only_what_this_call_leased() {
    let t = Tmp::new("rollback");
    let c = conf(t.path(), json!({"subnet": "10.44.0.0/24"}));
    let req = request("ADD", c.clone(), "");
    let first = allocate(&req).unwrap();
    assert_eq!(first.leased_now().unwrap().len(), 1);
    // A repeated ADD of the same attachment gets the same address back, newly leasing nothing:
    // rolling it back must leave the live lease alone.
    let again = allocate(&req).unwrap();
    assert_eq!(addrs(&again.result), addrs(&first.result));
    assert_eq!(again.leased_now().unwrap(), &[] as &[IpAddr]);
    rollback(&req, &again).unwrap();
    let other = add_as(&c, "ctr2").unwrap();
    assert_ne!(addrs(&other), addrs(&first.result), "the live lease was kept");
    // Rolling back the first call does release it.
    rollback(&req, &first).unwrap();
    let third = add_as(&c, "ctr3").unwrap();
    assert_eq!(addrs(&third).len(), 1);
    assert!(Allocation::none().leased_now().unwrap().is_empty());
}
