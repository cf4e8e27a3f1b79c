//! `loopback` the way containerd's CRI runs it, through the real cnitool: our binary and
//! the reference `loopback` side by side, with the same assertions. containerd builds a
//! `loopback` network in (cniVersion 0.3.1, CNI_IFNAME `lo`), runs it in parallel with the
//! pod's network, DELs it at StopPodSandbox (with the namespace) and again at
//! RemovePodSandbox with `CNI_NETNS=""`.

use integration::*;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Our plugins, with `loopback` taken from `which` ("ours" or "reference"): the pod network
/// beside it is always our bridge.
fn plugins(env: &TestEnv, which: &str) -> Plugins {
    if which == "ours" {
        return Plugins::Ours;
    }
    let dir = env.scratch_bin_dir().join("reference-loopback");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("loopback");
    if !link.exists() {
        let reference = env.plugin_path(&Plugins::Reference, "loopback");
        std::os::unix::fs::symlink(reference, &link).unwrap();
    }
    Plugins::Dirs(vec![dir, env.our_plugin_dir().to_path_buf()])
}

fn loopback_list(version: &str) -> Value {
    json!({"cniVersion": version, "name": "cni-loopback", "plugins": [{"type": "loopback"}]})
}

fn binary(env: &TestEnv, p: &Plugins) -> String {
    let dirs = env.plugin_dirs(p);
    let found: PathBuf =
        dirs.iter().map(|d| d.join("loopback")).find(|p| p.exists()).expect("a loopback binary");
    found.display().to_string()
}

/// ADD (0.3.1, ifname lo), what a user checks, DEL, then containerd's second DEL without a
/// namespace and a DEL after the namespace is gone.
fn containerd_lifecycle(which: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("lo{which}"));
    let p = plugins(&env, which);
    env.write_conflist("cni-loopback", &loopback_list("0.3.1"));
    let c = env.container("pod");
    c.ip_ok(&["link", "set", "lo", "down"]);
    let opts = CniOpts::default().plugins(p.clone()).ifname("lo");
    let add = env.cnitool("add", "cni-loopback", &c, &opts);
    add.expect_ok();
    let r = add.result();
    assert_eq!(r["cniVersion"], json!("0.3.1"), "{which}: {r}");
    assert_eq!(r["interfaces"][0]["name"], json!("lo"), "{which}: {r}");
    assert_eq!(r["interfaces"][0]["mac"], json!("00:00:00:00:00:00"), "{which}: {r}");
    assert_eq!(r["interfaces"][0]["sandbox"], json!(c.path().display().to_string()), "{which}");
    let ips: Vec<&str> =
        r["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
    assert_eq!(ips, ["127.0.0.1/8", "::1/128"], "{which}");
    assert!(r["ips"].as_array().unwrap().iter().all(|i| i["interface"] == json!(0)), "{which}");
    assert!(ping(&c, "127.0.0.1"), "{which}: 127.0.0.1 answers in the pod");
    assert!(ping(&c, "::1"), "{which}: ::1 answers in the pod");
    assert_eq!(links(&c), vec!["lo".to_string()], "{which}: nothing but lo");

    // CHECK needs cniVersion 0.4.0 or later: the same network at 1.0.0.
    env.write_conflist("cni-loopback", &loopback_list("1.0.0"));
    env.cnitool("check", "cni-loopback", &c, &opts).expect_ok();
    env.cnitool("del", "cni-loopback", &c, &opts).expect_ok();
    assert!(!ping(&c, "127.0.0.1"), "{which}: lo is down again after DEL");
    let netns = c.path().display().to_string();
    let check = env.exec_plugin(
        &binary(&env, &p),
        &[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "pod1"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "lo"),
        ],
        &json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback",
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "lo"}]}})
        .to_string(),
    );
    check.expect_err();
    assert!(check.stdout.contains("is down"), "{which}: {check}");

    // RemovePodSandbox: DEL with an empty CNI_NETNS; then the namespace is gone.
    let del = |netns: &str| {
        env.exec_plugin(
            &binary(&env, &p),
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "pod1"),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "lo"),
            ],
            &json!({"cniVersion": "0.3.1", "name": "cni-loopback", "type": "loopback"}).to_string(),
        )
    };
    del("").expect_ok();
    drop(c);
    let gone = del(&netns);
    gone.expect_ok();
    assert!(gone.stdout.trim().is_empty(), "{which}: {gone}");
}

#[test]
fn ours_in_containerds_lifecycle() {
    containerd_lifecycle("ours");
}

#[test]
fn reference_in_containerds_lifecycle() {
    containerd_lifecycle("reference");
}

/// The pod's loopback and its network are set up (and torn down) at the same time, as the CRI
/// does it: both succeed, and the pod reaches its gateway and itself.
fn in_parallel_with_the_pod_network(which: &str) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("lopar{which}"));
    let p = plugins(&env, which);
    env.write_conflist("cni-loopback", &loopback_list("0.3.1"));
    env.write_conflist(
        "podnet",
        &json!({"cniVersion": "0.3.1", "name": "podnet", "plugins": [
            {"type": "bridge", "bridge": "cni-pod", "isGateway": true, "isDefaultGateway": true,
             "ipMasq": true, "ipam": {"type": "host-local", "subnet": "10.42.7.0/24",
             "dataDir": env.ipam_dir()}}]}),
    );
    let pods: Vec<Netns> = (0..3).map(|i| env.container(&format!("p{i}"))).collect();
    let lo = CniOpts::default().plugins(p.clone()).ifname("lo");
    let eth = CniOpts::default().plugins(p.clone());
    let run = |op: &'static str| {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .flat_map(|pod| {
                    let (lo, eth, env) = (&lo, &eth, &env);
                    [
                        s.spawn(move || env.cnitool(op, "cni-loopback", pod, lo)),
                        s.spawn(move || env.cnitool(op, "podnet", pod, eth)),
                    ]
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<CniOutput>>()
        })
    };
    for out in run("add") {
        out.expect_ok();
    }
    for pod in &pods {
        assert!(ping(pod, "127.0.0.1"), "{which}: {} reaches itself", pod.name);
        assert!(ping(pod, "10.42.7.1"), "{which}: {} reaches its gateway", pod.name);
        let mut names = links(pod);
        names.sort();
        assert_eq!(names, ["eth0", "lo"], "{which}");
    }
    for out in run("del") {
        out.expect_ok();
    }
    for pod in &pods {
        assert_eq!(links(pod), vec!["lo".to_string()], "{which}");
        assert!(!ping(pod, "127.0.0.1"), "{which}: lo is down after DEL");
    }
    let left: Vec<String> = links(env.host()).into_iter().filter(|l| l != "lo").collect();
    assert!(left.is_empty(), "{which}: links left {left:?}");
    let files: Vec<_> =
        files_under(&env.state_dir()).into_iter().filter(|f| !f.ends_with("lock")).collect();
    assert!(files.is_empty(), "{which}: state left {files:?}");
}

#[test]
fn ours_in_parallel_with_the_pod_network() {
    in_parallel_with_the_pod_network("ours");
}

#[test]
fn reference_in_parallel_with_the_pod_network() {
    in_parallel_with_the_pod_network("reference");
}
