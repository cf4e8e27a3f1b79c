//! Crash consistency (issue 14): an ADD killed with SIGKILL at any point must leave nothing
//! that the runtime's DEL followed by a GC cannot remove: no link, lease, rule, element,
//! reservation, record, temp file or process.
//!
//! How a plugin is killed at a chosen point: a wrapper in front of the real binary runs the
//! ADD under `strace`, whose syscall tampering delivers SIGKILL on entering the n-th call of
//! a given syscall. A first, unharmed ADD is traced to learn the sequence of syscalls the
//! plugin makes; each kill then picks a position in that sequence (seeded, so a failure can
//! be replayed with `CNI_SUITE_CRASH_SEED`) and dies right there, before that syscall runs.
//! After each kill the runtime's part is played: `cnitool del`, then GC of every plugin of
//! the list with no valid attachment, then the check that nothing of ours is left.

use integration::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Kills per plugin in `make test` (each costs one ADD, one DEL and one GC).
const KILLS: usize = 12;

/// A small seeded generator (xorshift64*): the same seed gives the same kill points.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("CNI_SUITE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_c0de)
}

/// Panics clearly when strace is missing (a prerequisite, never a reason to skip).
fn require_strace() {
    let ok =
        std::process::Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(ok, "these tests need strace: run scripts/install-deps.sh (apt-get install strace)");
}

/// Writes `<dir>/<plugin>`: ADD runs the real plugin under `strace <strace_args>`, every
/// other verb runs it directly.
fn wrapper(dir: &Path, real: &Path, plugin: &str, strace_args: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(plugin);
    let real = real.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then exec strace -qq {strace_args} {real} \"$@\"; fi\nexec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
}

/// The syscall names of a trace written by `strace -o`, in order.
fn syscalls(trace: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let name: String =
                l.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            (!name.is_empty() && l[name.len()..].starts_with('(')).then_some(name)
        })
        .collect()
}

/// Everything of ours that could be left in the host namespace and the state directories.
fn leftovers(env: &TestEnv) -> Vec<String> {
    leftovers_besides(env, &[])
}

/// [`leftovers`], with the links the test itself made in the host namespace.
fn leftovers_besides(env: &TestEnv, own_links: &[&str]) -> Vec<String> {
    let mut left = ours_left(env, own_links);
    // A daemon started by a killed ADD must be gone once its last record is.
    if !eventually(Duration::from_secs(3), || env.host().pids().is_empty()) {
        left.push(format!("processes {:?}", env.host().pids()));
    }
    left
}

/// One plugin of a conflist, as GC receives it (cniVersion 1.1.0, nothing valid).
fn gc_conf(list: &Value, plugin: &Value) -> Value {
    let mut c = plugin.clone();
    c["cniVersion"] = json!("1.1.0");
    c["name"] = list["name"].clone();
    c["cni.dev/valid-attachments"] = json!([]);
    c
}

/// Kills `victim`'s ADD in the conflist `list` at KILLS seeded points; after each, DEL and GC
/// must leave nothing. Returns the failures (kill point and what was left).
fn kill_adds(env: &TestEnv, list: &Value, victim: &str, opts: &CniOpts) -> Vec<String> {
    kill_adds_with(env, list, victim, opts, &|env| leftovers(env))
}

/// [`kill_adds`] with the test's own check of what is left after DEL and GC.
fn kill_adds_with(
    env: &TestEnv,
    list: &Value,
    victim: &str,
    opts: &CniOpts,
    leftovers: &dyn Fn(&TestEnv) -> Vec<String>,
) -> Vec<String> {
    require_strace();
    let net = list["name"].as_str().unwrap().to_string();
    env.write_conflist(&net, list);
    let wrap_dir = env.dir().join("wrap");
    let real = env.plugin_path(&Plugins::Ours, victim);
    let plugins = Plugins::Dirs(vec![wrap_dir.clone(), env.our_plugin_dir().to_path_buf()]);
    let opts = opts.clone().plugins(plugins);
    let gc_all = || {
        let our_path = env.our_plugin_dir().display().to_string();
        for p in list["plugins"].as_array().unwrap() {
            let t = p["type"].as_str().unwrap();
            let conf = gc_conf(list, p).to_string();
            env.exec_plugin(t, &[("CNI_COMMAND", "GC"), ("CNI_PATH", &our_path)], &conf)
                .expect_ok();
        }
    };

    // The syscalls of an unharmed ADD (the first of the network, as every killed one is).
    let trace = env.dir().join(format!("{victim}.trace"));
    wrapper(&wrap_dir, &real, victim, &format!("-o {}", trace.display()));
    let c = env.container("t");
    env.cnitool("add", &net, &c, &opts).expect_ok();
    env.cnitool("del", &net, &c, &opts).expect_ok();
    gc_all();
    drop(c);
    let baseline = leftovers(env);
    assert_eq!(baseline, Vec::<String>::new(), "{victim}: an unharmed ADD/DEL/GC leaves nothing");
    let calls = syscalls(&trace);
    assert!(calls.len() > 20, "{victim}: trace too short: {calls:?}");

    let seed = seed();
    let mut rng = Rng::new(seed ^ victim.len() as u64);
    let mut failures = Vec::new();
    for k in 0..KILLS {
        // Position 0 is the execve that starts the plugin.
        let at = 1 + rng.below(calls.len() - 1);
        let name = &calls[at];
        let nth = calls[..=at].iter().filter(|c| *c == name).count();
        wrapper(
            &wrap_dir,
            &real,
            victim,
            &format!("-o /dev/null -e inject={name}:signal=KILL:when={nth}"),
        );
        let c = env.container(&format!("k{k}"));
        let add = env.cnitool("add", &net, &c, &opts);
        let del = env.cnitool("del", &net, &c, &opts);
        let point = format!(
            "{victim} killed at syscall {at} of {} ({name} #{nth}; seed {seed}, add exit {})",
            calls.len(),
            add.code
        );
        if !del.ok() {
            failures.push(format!("{point}: DEL failed: {del}"));
        }
        gc_all();
        drop(c);
        let left = leftovers(env);
        if !left.is_empty() {
            failures.push(format!("{point}: left {left:?}"));
            // Start the next kill from a clean host, so each failure is its own.
            break;
        }
    }
    failures
}

fn bridge_plugin(env: &TestEnv, bridge: &str, subnet: &str) -> Value {
    json!({"type": "bridge", "bridge": bridge, "isGateway": true, "isDefaultGateway": true,
        "ipMasq": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
        "dataDir": env.ipam_dir()}})
}

#[test]
fn bridge_adds_killed_anywhere_leave_nothing_after_del_and_gc() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("crbridge");
    let list = json!({"cniVersion": "1.0.0", "name": "crb",
        "plugins": [bridge_plugin(&env, "br-crb", "10.30.1.0/24")]});
    let failures = kill_adds(&env, &list, "bridge", &CniOpts::ours());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn portmap_adds_killed_anywhere_leave_nothing_after_del_and_gc() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("crportmap");
    let list = json!({"cniVersion": "1.0.0", "name": "crp", "plugins": [
        bridge_plugin(&env, "br-crp", "10.30.2.0/24"),
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    let opts = CniOpts::ours().cap_args(json!({"portMappings": [
        {"hostPort": 18090, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 18091, "containerPort": 53, "protocol": "udp"}]}));
    let failures = kill_adds(&env, &list, "portmap", &opts);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn dns_alias_adds_killed_anywhere_leave_nothing_after_del_and_gc() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("crdns");
    let list = json!({"cniVersion": "1.0.0", "name": "crd", "plugins": [
        bridge_plugin(&env, "br-crd", "10.30.3.0/24"),
        {"type": "dns-alias", "capabilities": {"aliases": true}, "upstreams": ["10.30.3.1"]}]});
    let opts = CniOpts::ours()
        .args("IgnoreUnknown=1;K8S_POD_NAME=web")
        .cap_args(json!({"aliases": {"crd": ["www"]}}));
    let failures = kill_adds(&env, &list, "dns-alias", &opts);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Issue 14.7: a kill during a network's first ADD, after the bridge got its gateway address
/// (the plugin is opening the ip_forward sysctl), used to leave the bridge forever: no record
/// named it. And a kill on the rename of a state file used to leave its `.tmp.<pid>`.
#[test]
fn a_first_add_killed_after_the_gateway_or_at_a_rename_is_cleaned_by_del_and_gc() {
    if !require_root() {
        return;
    }
    require_strace();
    let env = TestEnv::new("crgateway");
    let list = json!({"cniVersion": "1.0.0", "name": "crg",
        "plugins": [bridge_plugin(&env, "br-crg", "10.30.4.0/24")]});
    env.write_conflist("crg", &list);
    let wrap_dir = env.dir().join("wrap");
    let real = env.plugin_path(&Plugins::Ours, "bridge");
    let opts = CniOpts::ours()
        .plugins(Plugins::Dirs(vec![wrap_dir.clone(), env.our_plugin_dir().to_path_buf()]));
    let gc = gc_conf(&list, &list["plugins"][0]).to_string();
    let our_path = env.our_plugin_dir().display().to_string();
    let mut kills =
        vec!["-o /dev/null -P /proc/sys/net/ipv4/ip_forward -e inject=openat:signal=KILL".into()];
    // The first renames of an ADD: IPAM's cursor, the network record, the attachment record.
    for n in 1..=3 {
        kills
            .push(format!("-o /dev/null -e inject=rename,renameat,renameat2:signal=KILL:when={n}"));
    }
    for kill in &kills {
        wrapper(&wrap_dir, &real, "bridge", kill);
        let c = env.container("c");
        env.cnitool("add", "crg", &c, &opts).expect_err();
        let killed_with: Vec<PathBuf> = files_under(&env.state_dir());
        env.cnitool("del", "crg", &c, &opts).expect_ok();
        env.exec_plugin("bridge", &[("CNI_COMMAND", "GC"), ("CNI_PATH", &our_path)], &gc)
            .expect_ok();
        drop(c);
        assert_eq!(
            leftovers(&env),
            Vec::<String>::new(),
            "killed with {kill}; state then: {killed_with:?}"
        );
    }
}

#[test]
fn macvlan_adds_killed_anywhere_leave_nothing_after_del_and_gc() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("crmacvlan");
    let lan = env.container("lan");
    env.host().veth_to("mvpar", &lan, "wire");
    let list = json!({"cniVersion": "1.0.0", "name": "crm", "plugins": [
        {"type": "macvlan", "master": "mvpar", "ipam": {"type": "host-local",
         "ranges": [[{"subnet": "10.30.5.0/24"}]], "dataDir": env.ipam_dir()}}]});
    let failures = kill_adds_with(&env, &list, "macvlan", &CniOpts::ours(), &|env| {
        leftovers_besides(env, &["mvpar"])
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A device handed to a container must come back to the host, with its address, whatever
/// point the ADD moving it was killed at.
#[test]
fn host_device_adds_killed_anywhere_give_the_device_back_after_del_and_gc() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("crhost");
    let peer = env.container("peer");
    env.host().veth_to("hdev0", &peer, "wire");
    env.host().ip_ok(&["addr", "add", "10.30.6.2/24", "dev", "hdev0"]);
    let list = json!({"cniVersion": "1.0.0", "name": "crh",
        "plugins": [{"type": "host", "device": "hdev0"}]});
    let opts = CniOpts::ours().ifname("net1");
    let failures = kill_adds_with(&env, &list, "host", &opts, &|env| {
        let mut left = leftovers_besides(env, &["hdev0"]);
        let back = addresses(env.host())
            .iter()
            .any(|a| a.ifname == "hdev0" && a.addr.to_string() == "10.30.6.2");
        if !back {
            left.push(format!("hdev0 not given back with its address: {:?}", links(env.host())));
        }
        left
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
