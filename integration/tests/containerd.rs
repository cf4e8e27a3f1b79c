//! End to end with a real runtime: containerd 1.6 (Debian) and `ctr run --cni`, with only
//! this workspace's plugins in `/opt/cni/bin` and one bridge conflist in `/etc/cni/net.d`
//! (the only paths ctr's CNI support reads).
//!
//! containerd and ctr run inside the test's private host network namespace and a private
//! mount namespace (see `common/runtime.rs`) in which `/opt/cni/bin` and `/etc/cni/net.d`
//! are the test's temp dirs, `/run` is a tmpfs and `/var/lib/cni` is the test's own; the
//! daemon's root, state and socket are in the test's temp dir. The image is a
//! busybox-static rootfs packed as an OCI archive by the test and `ctr image import`ed.
//!
//! ctr 1.6 calls CNI ADD in `ctr run --cni`, and DEL only when it ran attached (it removes
//! the network when the task it waits for exits); a detached (`-d`) container's network
//! is never removed by ctr. Both are exercised: `c1` detached, `c2` attached (in the
//! background); for `c1` the test plays the runtime's part for DEL the way libcni does
//! (cached result as prevResult, the task's netns already gone).

#[path = "common/runtime.rs"]
mod runtime;

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use integration::*;
use runtime::*;
use serde_json::{json, Value};

const IMAGE: &str = "localhost/cni-suite-busybox:latest";
const NET: &str = "ctrnet";
const SUBNET: &str = "10.89.71.0/24";
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

fn conflist() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": "cni-ctr", "isGateway": true, "isDefaultGateway": true,
             "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The containerd daemon, killed by PID on drop (after the containers are gone).
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain syscall on the daemon we started; SIGTERM first lets it close cleanly.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let pid = self.child.id();
        let exited =
            eventually(Duration::from_secs(5), || matches!(self.child.try_wait(), Ok(Some(_))));
        if !exited {
            eprintln!("cleanup: containerd {pid} ignored SIGTERM, killing it");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `ctr` against our daemon, inside the holder.
struct Ctr<'a> {
    holder: &'a Holder,
    address: String,
    env: Vec<(String, String)>,
}

impl Ctr<'_> {
    fn argv<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut argv = vec!["ctr", "--address", self.address.as_str()];
        argv.extend_from_slice(args);
        argv
    }
    fn run(&self, args: &[&str]) -> Run {
        self.holder.run(&self.argv(args), &self.env, CTR_TIMEOUT)
    }
    fn ok(&self, args: &[&str]) -> String {
        self.run(args).expect_ok().to_string()
    }
    /// PID of a container's running task from `ctr task ls` (None when it has none).
    fn task_pid(&self, id: &str) -> Option<u32> {
        let out = self.run(&["task", "ls"]);
        out.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id) && f.get(2) == Some(&"RUNNING"))
            .and_then(|f| f.get(1)?.parse().ok())
    }
    /// Container ids (empty when ctr fails: also used while cleaning up).
    fn containers(&self) -> Vec<String> {
        self.run(&["container", "ls", "--quiet"]).stdout.lines().map(str::to_string).collect()
    }
}

/// Removes every task and container on drop (also when the test panics).
struct RemoveAll<'a>(&'a Ctr<'a>);

impl Drop for RemoveAll<'_> {
    fn drop(&mut self) {
        for id in self.0.containers() {
            let _ = self.0.run(&["task", "kill", "--signal", "SIGKILL", &id]);
            eventually(Duration::from_secs(5), || self.0.task_pid(&id).is_none());
            let _ = self.0.run(&["task", "delete", "--force", &id]);
            let out = self.0.run(&["container", "delete", &id]);
            if !out.ok() {
                eprintln!("cleanup: ctr container delete {id} failed:\n{out}");
            }
        }
    }
}

/// The container's IPv4 address on eth0, read in its own network namespace.
fn container_ip(pid: u32) -> String {
    let out = run_argv(
        &["nsenter", "-t", &pid.to_string(), "-n", "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        Duration::from_secs(10),
    );
    let text = out.expect_ok();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on eth0 of task {pid}: {text}"))
        .to_string()
}

/// DEL for a container whose task is gone, as libcni does it: every plugin of the
/// conflist in reverse order, the cached ADD result as prevResult, `CNI_NETNS` empty (what
/// go-cni's Remove passes), then the cache entry is dropped.
fn del_like_libcni(env: &TestEnv, plugins: &Path, container_id: &str, ifname: &str) {
    let cache = env.libcni_dir().join("results").join(format!("{NET}-{container_id}-{ifname}"));
    let cached: Value = parse_json(&fs::read_to_string(&cache).unwrap_or_else(|e| {
        panic!("no libcni cache entry {} for {container_id}: {e}", cache.display())
    }));
    let prev = cached["result"].clone();
    let conf = conflist();
    for p in conf["plugins"].as_array().unwrap().iter().rev() {
        let mut stdin = p.clone();
        stdin["name"] = json!(NET);
        stdin["cniVersion"] = conf["cniVersion"].clone();
        stdin["prevResult"] = prev.clone();
        let ty = p["type"].as_str().unwrap();
        let bin = plugins.join(ty);
        let out = env.exec_plugin(
            bin.to_str().unwrap(),
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", container_id),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", ""),
                ("CNI_PATH", plugins.to_str().unwrap()),
            ],
            &stdin.to_string(),
        );
        assert!(out.ok(), "DEL of {container_id} by {ty} (task and netns gone) failed:\n{out}");
    }
    fs::remove_file(&cache).unwrap();
}

#[test]
fn containerd_ctr_run_cni_with_our_plugins_only() {
    if !require_runtime(
        "containerd",
        &["containerd", "ctr", "containerd-shim-runc-v2", "runc", "unshare", "nsenter", "tar"],
    ) {
        return;
    }
    let mut t = Phases::new("containerd");
    let env = TestEnv::new("containerd");
    let plugins = our_plugins_dir(&env, &["bridge", "portmap", "host-local"]);
    let netd = env.dir().join("etc-cni-net.d");
    fs::create_dir_all(&netd).unwrap();
    fs::write(
        netd.join(format!("10-{NET}.conflist")),
        serde_json::to_vec_pretty(&conflist()).unwrap(),
    )
    .unwrap();
    let cg = CgroupGuard::new("containerd");
    let holder = Holder::start(&env, &[(&plugins, "/opt/cni/bin"), (&netd, "/etc/cni/net.d")]);
    // What ctr's CNI support will see.
    let seen: Vec<_> = fs::read_dir(holder.inside("/opt/cni/bin"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(seen.len(), 3, "/opt/cni/bin inside the private mount namespace: {seen:?}");

    // --- containerd: private root, state, socket; no CRI, no snapshotters but `native`.
    let d = env.dir().join("containerd");
    for s in ["root", "state", "opt"] {
        fs::create_dir_all(d.join(s)).unwrap();
    }
    let address = d.join("containerd.sock").display().to_string();
    let config = d.join("config.toml");
    fs::write(
        &config,
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            opt = d.join("opt").display(),
        ),
    )
    .unwrap();
    let log = fs::File::create(d.join("containerd.log")).unwrap();
    let daemon = Daemon {
        child: holder
            .command(&["containerd", "--config", config.to_str().unwrap()], &[])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start containerd"),
    };
    let ctr = Ctr {
        holder: &holder,
        address,
        env: vec![("CNI_SUITE_STATE_DIR".into(), env.state_dir().display().to_string())],
    };
    let _remove_all = RemoveAll(&ctr);
    let mut last = None;
    let up = eventually(Duration::from_secs(20), || {
        let r = ctr.run(&["version"]);
        let ok = r.ok();
        last = Some(r);
        ok
    });
    let probe = last.unwrap();
    if !up {
        let log = fs::read_to_string(d.join("containerd.log")).unwrap_or_default();
        let tail: Vec<&str> =
            log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        eprintln!("containerd log (tail):\n{}", tail.join("\n"));
    }
    if !runtime_usable("containerd", &probe) {
        return;
    }
    t.mark("setup + containerd up");

    // --- image: a busybox rootfs as an OCI archive, imported
    let rootfs = env.dir().join("rootfs");
    busybox_rootfs(&rootfs, "hello from ctr");
    let archive = env.dir().join("image.oci.tar");
    oci_archive(&rootfs, IMAGE, env.dir(), &archive);
    ctr.ok(&["image", "import", "--snapshotter", "native", archive.to_str().unwrap()]);
    let images = ctr.ok(&["image", "ls", "--quiet"]);
    assert!(images.lines().any(|l| l == IMAGE), "image not imported: {images}");
    t.mark("OCI archive + ctr image import");

    // --- c1: ctr run --cni -d
    ctr.ok(&[
        "run",
        "--cni",
        "--detach",
        "--snapshotter",
        "native",
        "--cgroup",
        &cg.child("c1"),
        IMAGE,
        "c1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let pid1 = ctr
        .task_pid("c1")
        .unwrap_or_else(|| panic!("c1 has no running task: {}", ctr.ok(&["task", "ls"])));
    let ip1 = container_ip(pid1);
    assert!(ip1.starts_with("10.89.71."), "c1's address {ip1} is not from {SUBNET}");
    assert_eq!(
        leases(&env, NET),
        vec![ip1.clone()],
        "ctr's plugins did not keep their state in CNI_SUITE_STATE_DIR"
    );
    let out = holder.wget(&format!("http://{ip1}/"));
    assert!(out.ok() && out.stdout.trim() == "hello from ctr", "host -> c1 {ip1}:80:\n{out}");
    t.mark("ctr run --cni -d c1 + reach it");

    // --- c2: attached `ctr run --cni --rm` in the background; ctr removes its network
    // when the task exits.
    let c2_log = fs::File::create(env.dir().join("ctr-c2.log")).unwrap();
    let mut c2 = ChildGuard(
        holder
            .command(
                &ctr.argv(&[
                    "run",
                    "--cni",
                    "--rm",
                    "--snapshotter",
                    "native",
                    "--cgroup",
                    &cg.child("c2"),
                    IMAGE,
                    "c2",
                    "httpd",
                    "-f",
                    "-p",
                    "80",
                    "-h",
                    "/www",
                ]),
                &ctr.env,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(c2_log.try_clone().unwrap()))
            .stderr(Stdio::from(c2_log))
            .spawn()
            .expect("cannot start ctr run c2"),
    );
    let mut pid2 = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            pid2 = ctr.task_pid("c2");
            pid2.is_some() && leases(&env, NET).len() == 2
        }),
        "c2 did not start: {}",
        fs::read_to_string(env.dir().join("ctr-c2.log")).unwrap_or_default()
    );
    let ip2 = container_ip(pid2.unwrap());
    assert_ne!(ip1, ip2);
    let out = holder.wget(&format!("http://{ip2}/"));
    assert!(out.ok() && out.stdout.trim() == "hello from ctr", "host -> c2 {ip2}:80:\n{out}");
    ctr.ok(&["task", "kill", "--signal", "SIGKILL", "c2"]);
    assert!(
        eventually(Duration::from_secs(30), || c2.exited()),
        "ctr run c2 did not return after its task was killed"
    );
    assert!(ctr.containers().iter().all(|c| c != "c2"), "ctr run --rm left c2");
    assert_eq!(leases(&env, NET), vec![ip1.clone()], "ctr's DEL for c2 did not release {ip2}");
    let cache = files_under(&env.libcni_dir().join("results"));
    assert_eq!(cache.len(), 1, "libcni cache after c2's DEL: {cache:?}");
    let out = holder.wget(&format!("http://{ip1}/"));
    assert!(out.ok() && out.stdout.trim() == "hello from ctr", "c1 broken by c2's DEL:\n{out}");
    t.mark("attached ctr run --cni c2: reach, kill, DEL by ctr");

    // --- c1 away: task and container removed by ctr, then DEL without a netns
    ctr.ok(&["task", "kill", "--signal", "SIGKILL", "c1"]);
    assert!(
        eventually(Duration::from_secs(10), || ctr.task_pid("c1").is_none()),
        "c1 did not stop"
    );
    ctr.ok(&["task", "delete", "c1"]);
    ctr.ok(&["container", "delete", "c1"]);
    assert!(ctr.containers().is_empty());
    // ctr 1.6 leaves a detached container's network in place; our DEL must still find
    // everything from prevResult and its own state.
    assert_eq!(
        leases(&env, NET),
        vec![ip1.clone()],
        "expected c1's lease to outlive ctr (no DEL for -d)"
    );
    del_like_libcni(&env, &plugins, "default-c1", "eth0");
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(5), || {
        left = leftovers(&env, &["lo"], &[holder.pid(), daemon.child.id()]);
        left.is_empty()
    });
    assert!(clean, "left behind after the last DEL: {left:#?}");
    let fallback = holder.inside("/run/cni-suite");
    assert!(
        !fallback.exists(),
        "a plugin used the default state dir: {:?}",
        files_under(&fallback)
    );
    t.mark("c1 removed + DEL + leftover checks");
    t.total();
}

/// A child process killed by PID and reaped on drop.
struct ChildGuard(Child);

impl ChildGuard {
    fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
