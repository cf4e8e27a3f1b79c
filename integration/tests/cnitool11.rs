//! cnitool from libcni 1.3 (the harness's cnitool) with cniVersion 1.1.0 conflists: ADD
//! (1.1.0 results), CHECK, DEL, STATUS and GC the way libcni sends them. `cnitool gc` DELs
//! every attachment of the network in libcni's cache, then sends GC to each plugin
//! without `cni.dev/valid-attachments` (no attachment is valid): what a runtime that lost
//! its containers leaves must then be gone.

#[path = "common/runtime.rs"]
mod runtime;

use std::fs;
use std::time::Duration;

use integration::*;
use runtime::{leases, leftovers};
use serde_json::{json, Value};

const NET: &str = "net11";

fn conflist(subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": "cni-v11", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

fn ipv4_of(result: &Value) -> String {
    result["ips"]
        .as_array()
        .and_then(|a| a.iter().find_map(|i| i["address"].as_str()))
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in result {result}"))
        .to_string()
}

#[test]
fn cnitool_add_check_del_status_with_a_1_1_0_conflist() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("cnitool11");
    env.write_conflist(NET, &conflist("10.89.95.0/24"));
    let a = env.container("a");
    let opts = CniOpts::ours().cap_args(
        json!({"portMappings": [{"hostPort": 18095, "containerPort": 80, "protocol": "tcp"}]}),
    );

    let status = env.cnitool("status", NET, &a, &opts);
    assert!(status.ok(), "cnitool status on a fresh network:\n{status}");

    let add = env.cnitool("add", NET, &a, &opts);
    add.expect_ok();
    let result = add.result();
    assert_eq!(result["cniVersion"], "1.1.0", "ADD result is not 1.1.0: {result}");
    let ip = ipv4_of(result);
    assert!(ping(env.host(), &ip), "host cannot ping {ip}");
    // libcni cached the 1.1.0 result for CHECK and DEL.
    let cache = files_under(&env.libcni_dir().join("results"));
    assert_eq!(cache.len(), 1, "libcni cache: {cache:?}");

    env.cnitool("check", NET, &a, &opts).expect_ok();
    env.cnitool("status", NET, &a, &opts).expect_ok();

    env.cnitool("del", NET, &a, &opts).expect_ok();
    // A second DEL finds nothing and still succeeds.
    env.cnitool("del", NET, &a, &opts).expect_ok();
    let left = leftovers(&env, &["lo"], &[]);
    assert!(left.is_empty(), "left behind after cnitool del: {left:#?}");
}

/// STATUS of a network whose only address is taken: host-local says so with code 50,
/// and cnitool fails with that message.
#[test]
fn cnitool_status_reports_a_full_range() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("cnitool11-full");
    env.write_conflist(NET, &conflist("10.89.96.0/30"));
    let a = env.container("a");
    let b = env.container("b");
    env.cnitool("add", NET, &a, &CniOpts::ours()).expect_ok();
    let status = env.cnitool("status", NET, &a, &CniOpts::ours());
    status.expect_err();
    assert!(
        status.stderr.contains("no free address"),
        "cnitool status with the /30 full does not say why:\n{status}"
    );
    let add = env.cnitool("add", NET, &b, &CniOpts::ours());
    add.expect_err();
    env.cnitool("del", NET, &a, &CniOpts::ours()).expect_ok();
    env.cnitool("status", NET, &a, &CniOpts::ours()).expect_ok();
    let left = leftovers(&env, &["lo"], &[]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// `cnitool gc`: the cached attachment is DELeted; the one the runtime lost (no libcni
/// cache entry, its namespace gone) is collected by the plugins' GC.
#[test]
fn cnitool_gc_collects_what_the_runtime_lost() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("cnitool11-gc");
    env.write_conflist(NET, &conflist("10.89.97.0/24"));
    let kept = env.container("kept");
    let lost = env.container("lost");
    let opts = CniOpts::ours().cap_args(
        json!({"portMappings": [{"hostPort": 18097, "containerPort": 80, "protocol": "tcp"}]}),
    );
    env.cnitool("add", NET, &kept, &CniOpts::ours()).expect_ok();
    let add = env.cnitool("add", NET, &lost, &opts);
    add.expect_ok();
    assert_eq!(leases(&env, NET).len(), 2);

    // The runtime forgets `lost` (its cache entry) and its namespace goes away.
    let lost_id = env.container_id(&lost, &opts);
    let cache = env.libcni_dir().join("results").join(format!("{NET}-{lost_id}-eth0"));
    fs::remove_file(&cache).unwrap_or_else(|e| panic!("no cache entry {}: {e}", cache.display()));
    drop(lost);

    let gc = env.cnitool("gc", NET, &kept, &CniOpts::ours());
    assert!(gc.ok(), "cnitool gc failed:\n{gc}");
    assert!(leases(&env, NET).is_empty(), "leases after gc: {:?}", leases(&env, NET));
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(5), || {
        left = leftovers(&env, &["lo"], &[]);
        left.is_empty()
    });
    assert!(clean, "left behind after cnitool gc: {left:#?}");
    // The port `lost` published is free again.
    let again = env.container("again");
    env.cnitool("add", NET, &again, &opts).expect_ok();
    env.cnitool("del", NET, &again, &opts).expect_ok();
}
