//! `host-local` and `static` as real processes: concurrent ADDs, sharing one lease store with
//! the reference `host-local` (the pinned build, and Debian's in /usr/lib/cni), GC of leaked
//! leases, STATUS on a full range, VERSION.

use integration::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Barrier;

const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// A host-local plugin config (the IPAM plugin run on its own, as the runtime runs it).
fn host_local_conf(version: &str, name: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir);
    json!({"cniVersion": version, "name": name, "type": "host-local", "ipam": ipam})
}

/// Runs `binary` with verb `cmd` for container `id` (interface eth0).
fn call(env: &TestEnv, binary: &str, cmd: &str, id: &str, conf: &Value) -> CniOutput {
    let netns = env.host().path().display().to_string();
    env.exec_plugin(
        binary,
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf.to_string(),
    )
}

fn addresses_of(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| a.iter().map(|i| i["address"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Lease files (names that are addresses) directly in the network's store.
fn lease_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sixty_four_simultaneous_adds_get_distinct_addresses() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("ipam64");
    env.require_plugins(&Plugins::Ours, &["host-local"]);
    let conf = host_local_conf(
        "1.1.0",
        "race",
        &env.ipam_dir(),
        json!({"ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/120"}]]}),
    );
    let barrier = Barrier::new(64);
    let outputs: Vec<CniOutput> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (env, conf, barrier) = (&env, &conf, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    call(env, "host-local", "ADD", &format!("race{i}"), conf)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for out in &outputs {
        out.expect_ok();
        let a = addresses_of(out.result());
        assert_eq!(a.len(), 2, "{out}");
        v4.insert(a[0].clone());
        v6.insert(a[1].clone());
    }
    assert_eq!(v4.len(), 64, "duplicate IPv4 addresses: {v4:?}");
    assert_eq!(v6.len(), 64, "duplicate IPv6 addresses: {v6:?}");
    // The store agrees: 128 leases, each naming its container.
    let store = env.ipam_dir().join("race");
    let leases = lease_files(&store);
    assert_eq!(leases.len(), 128);
    for out in &outputs {
        let id = out
            .command
            .split("CNI_CONTAINERID=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        for a in addresses_of(out.result()) {
            let ip = a.split('/').next().unwrap();
            assert_eq!(std::fs::read_to_string(store.join(ip)).unwrap(), format!("{id}\r\neth0"));
        }
    }
    // 64 simultaneous DELs release everything; only the lock and the round-robin cursors stay.
    std::thread::scope(|s| {
        for i in 0..64 {
            let (env, conf) = (&env, &conf);
            s.spawn(move || {
                call(env, "host-local", "DEL", &format!("race{i}"), conf).expect_ok().code
            });
        }
    });
    let left: Vec<String> = files_under(&store)
        .iter()
        .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
        .collect();
    // Only the lock file shared with the reference stays; the cursors go with the last lease.
    assert_eq!(left, vec!["lock"]);
    assert!(!store.join(".by-container").exists());
}

#[test]
fn reference_and_ours_share_one_data_dir() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("ipammix");
    env.require_plugins(&Plugins::Ours, &["host-local"]);
    env.require_plugins(&Plugins::Reference, &["host-local"]);
    let data = env.ipam_dir();
    // cniVersion 1.0.0: the newest both reference builds accept (Debian's 1.1.1 stops there).
    env.write_conflist(
        "mix",
        &json!({"cniVersion": "1.0.0", "name": "mix", "plugins": [{"type": "host-local", "ipam": {
            "type": "host-local", "dataDir": data,
            "ranges": [[{"subnet": "10.78.0.0/24"}], [{"subnet": "fd78::/120"}]]}}]}),
    );
    let ctr = env.container("c");
    let who = |i: usize| if i.is_multiple_of(2) { CniOpts::ours() } else { CniOpts::reference() };
    // Alternate ADDs: both binaries follow the same round-robin cursor, so the addresses come
    // out in order, with no collision.
    let mut got = Vec::new();
    for i in 0..10 {
        let out = env.cnitool("add", "mix", &ctr, &who(i).container_id(&format!("k{i}")));
        out.expect_ok();
        got.push(addresses_of(out.result()));
    }
    let want: Vec<Vec<String>> = (0..10)
        .map(|i| vec![format!("10.78.0.{}/24", i + 2), format!("fd78::{:x}/120", i + 2)])
        .collect();
    assert_eq!(got, want);
    let store = data.join("mix");
    assert_eq!(std::fs::read_to_string(store.join("last_reserved_ip.0")).unwrap(), "10.78.0.11");
    for i in 0..10 {
        let id = env.container_id(&ctr, &CniOpts::ours().container_id(&format!("k{i}")));
        assert_eq!(
            std::fs::read_to_string(store.join(format!("10.78.0.{}", i + 2))).unwrap(),
            format!("{id}\r\neth0")
        );
    }
    // Each binary CHECKs the other's leases.
    for i in 0..10 {
        env.cnitool("check", "mix", &ctr, &who(i + 1).container_id(&format!("k{i}"))).expect_ok();
    }
    // A requested address the reference leased is refused by ours, naming it and its holder.
    let conf = host_local_conf(
        "1.1.0",
        "mix",
        &data,
        json!({"ranges": [[{"subnet": "10.78.0.0/24"}], [{"subnet": "fd78::/120"}]]}),
    );
    let netns = env.host().path().display().to_string();
    let taken = env.exec_plugin(
        "host-local",
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "intruder"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IP=10.78.0.3"),
        ],
        &conf.to_string(),
    );
    taken.expect_err();
    assert_eq!(taken.error_code(), Some(111), "{taken}");
    let k1 = env.container_id(&ctr, &CniOpts::reference().container_id("k1"));
    assert!(taken.stdout.contains("10.78.0.3") && taken.stdout.contains(&k1), "{taken}");
    // Each binary DELs the other's leases.
    for i in 0..10 {
        env.cnitool("del", "mix", &ctr, &who(i + 1).container_id(&format!("k{i}"))).expect_ok();
    }
    assert!(lease_files(&store).is_empty(), "{:?}", lease_files(&store));
    let left: Vec<String> = files_under(&store)
        .iter()
        .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
        .collect();
    // Our DEL of the network's last lease dropped the cursors: only the shared lock is left.
    assert_eq!(left, vec!["lock"]);
    assert!(
        !store.join(".by-container").exists(),
        "empty index dirs the reference left are pruned"
    );
    // An emptied network starts over from the first address, with either binary.
    let out = env.cnitool("add", "mix", &ctr, &CniOpts::reference().container_id("k10"));
    assert_eq!(addresses_of(out.expect_ok().result())[0], "10.78.0.2/24");
    let out = env.cnitool("add", "mix", &ctr, &CniOpts::ours().container_id("k11"));
    assert_eq!(addresses_of(out.expect_ok().result())[0], "10.78.0.3/24");
}

#[test]
fn gc_releases_leases_of_containers_that_died_without_del() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("ipamgc");
    let data = env.ipam_dir();
    let conf = host_local_conf("1.1.0", "gcnet", &data, json!({"subnet": "10.79.0.0/24"}));
    for i in 0..6 {
        call(&env, "host-local", "ADD", &format!("ctr{i}"), &conf).expect_ok();
    }
    // Two more written by the reference (cniVersion 1.0.0: it does not know 1.1.0).
    let ref_conf = host_local_conf("1.0.0", "gcnet", &data, json!({"subnet": "10.79.0.0/24"}));
    for id in ["ref0", "ref1"] {
        call(&env, REF_HOST_LOCAL, "ADD", id, &ref_conf).expect_ok();
    }
    assert_eq!(lease_files(&data.join("gcnet")).len(), 8);
    // ctr1, ctr3, ctr5 and ref1 died without DEL: the runtime's valid list omits them.
    let valid: Vec<Value> = ["ctr0", "ctr2", "ctr4", "ref0"]
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!(valid);
    let netns = env.host().path().display().to_string();
    let out = env.exec_plugin(
        "host-local",
        &[("CNI_COMMAND", "GC"), ("CNI_NETNS", &netns)],
        &gc.to_string(),
    );
    out.expect_ok();
    let left = lease_files(&data.join("gcnet"));
    assert_eq!(
        left,
        ["10.79.0.2", "10.79.0.4", "10.79.0.6", "10.79.0.8"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    for id in ["ctr0", "ctr2", "ctr4", "ref0"] {
        call(&env, "host-local", "CHECK", id, &conf).expect_ok();
    }
    for id in ["ctr1", "ref1"] {
        let out = call(&env, "host-local", "CHECK", id, &conf);
        out.expect_err();
        assert_eq!(out.error_code(), Some(3), "{out}");
    }
    // The index entries of the released leases are gone too.
    let index = data.join("gcnet").join(".by-container");
    let mut dirs: Vec<String> = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, vec!["ctr0:eth0", "ctr2:eth0", "ctr4:eth0"]);
}

#[test]
fn status_on_a_full_range_is_code_50() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("ipamfull");
    // A /29 with the gateway at .1: .2 to .6 can be leased.
    let conf = host_local_conf(
        "1.1.0",
        "small",
        &env.ipam_dir(),
        json!({"ranges": [[{"subnet": "10.80.0.0/29"}]]}),
    );
    let netns = env.host().path().display().to_string();
    let status = || {
        env.exec_plugin(
            "host-local",
            &[("CNI_COMMAND", "STATUS"), ("CNI_NETNS", &netns)],
            &conf.to_string(),
        )
    };
    status().expect_ok();
    for i in 0..5 {
        call(&env, "host-local", "ADD", &format!("f{i}"), &conf).expect_ok();
    }
    let full = status();
    full.expect_err();
    assert_eq!(full.error_code(), Some(50), "{full}");
    assert!(full.stdout.contains("10.80.0.0/29") && full.stdout.contains("5 of 5"), "{full}");
    let add = call(&env, "host-local", "ADD", "f5", &conf);
    add.expect_err();
    assert_eq!(add.error_code(), Some(111), "{add}");
    assert!(add.stdout.contains("no free address"), "{add}");
    call(&env, "host-local", "DEL", "f2", &conf).expect_ok();
    status().expect_ok();
    let out = call(&env, "host-local", "ADD", "f5", &conf);
    assert_eq!(addresses_of(out.expect_ok().result()), vec!["10.80.0.4/29"]);
}

#[test]
fn version_lists_every_version_and_bad_config_names_the_key() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("ipamver");
    for plugin in ["host-local", "static"] {
        let out = env.exec_plugin(plugin, &[("CNI_COMMAND", "VERSION")], "");
        out.expect_ok();
        assert_eq!(
            out.result()["supportedVersions"],
            json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
            "{out}"
        );
    }
    let bad = host_local_conf(
        "1.1.0",
        "bad",
        &env.ipam_dir(),
        json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
    );
    let out = call(&env, "host-local", "ADD", "b1", &bad);
    out.expect_err();
    assert_eq!(out.error_code(), Some(7), "{out}");
    assert!(
        out.stdout.contains("ipam.ranges[0][0].subnet") && out.stdout.contains("10.0.0.0/33"),
        "{out}"
    );
    assert!(!env.ipam_dir().join("bad").exists(), "a rejected config writes nothing");
}

#[test]
fn static_plugin_from_config_and_cni_args() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("ipamstatic");
    let conf = json!({"cniVersion": "1.0.0", "name": "st", "type": "static", "ipam": {"type": "static",
        "addresses": [{"address": "10.81.0.5/24", "gateway": "10.81.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.81.0.1"]}}});
    let out = call(&env, "static", "ADD", "s1", &conf);
    assert_eq!(
        out.expect_ok().result(),
        &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.81.0.5/24", "gateway": "10.81.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.81.0.1"]}})
    );
    let netns = env.host().path().display().to_string();
    let out = env.exec_plugin(
        "static",
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "s2"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IP=10.82.0.9/16;GATEWAY=10.82.0.1"),
        ],
        &conf.to_string(),
    );
    let ips = out.expect_ok().result()["ips"].clone();
    assert_eq!(ips[1], json!({"address": "10.82.0.9/16", "gateway": "10.82.0.1"}));
    // The same config through the reference gives the same result.
    let reference = call(&env, "/usr/lib/cni/static", "ADD", "s1", &conf);
    assert_eq!(addresses_of(reference.expect_ok().result()), vec!["10.81.0.5/24"]);
    call(&env, "static", "DEL", "s1", &conf).expect_ok();
}
