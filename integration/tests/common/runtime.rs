//! Shared helpers for the end-to-end tests that drive real container runtimes (podman,
//! containerd 2.x through crictl and nerdctl) with only this workspace's plugins.
//!
//! The runtime never sees the machine's own network or configuration:
//! * [`Holder`] is one long-lived process that sits in the test's private "host" network
//!   namespace and in a private mount namespace of its own. Every runtime command runs in
//!   both (`nsenter -t <holder> -m -n`), so the netns files, bind mounts and sockets a
//!   runtime makes in one command are still there for the next one (each `ip netns exec`
//!   would make a new, short-lived mount namespace). Inside it:
//!   - `/sys` is a fresh sysfs of the private network namespace (like `ip netns exec`), with
//!     the machine's cgroup hierarchies bound back under `/sys/fs/cgroup` (runc needs them);
//!   - `/run` is an empty tmpfs, so runtime sockets, `/run/netns/*`, runc state and the
//!     plugins' default state dir `/run/cni-suite` all disappear with the holder;
//!   - `/var/lib/cni` (libcni's result cache, host-local's default store) is the test's own
//!     directory;
//!   - any other path (`/opt/cni/bin`, `/etc/cni/net.d` for containerd) can be grafted from a
//!     temp dir, also when it does not exist on the machine: its nearest existing parent is
//!     covered by a tmpfs that holds bind mounts of everything it had, plus the new path.
//! * Containers get a cgroup parent of their own ([`CgroupGuard`]); whatever is left in it
//!   at the end (a container a failed test left running) is killed by PID, and the cgroup
//!   directories are removed.
//! * containerd, crictl, critest and nerdctl are the pinned builds `scripts/install-deps.sh`
//!   makes in `.cache/runtime/bin` ([`runtime_bin_dir`], [`Containerd`]); images are made
//!   offline from busybox-static ([`TestImages`]).
//! * Every external command has a timeout ([`run_timeout`]); output goes to memfds, so a
//!   daemon that inherits stdout (conmon, a shim) cannot hang the test.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use integration::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `PATH` for everything the tests start (the test's own environment is not inherited).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static SEQ: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------
// skipping

/// True if `bin` is an executable on [`PATH`].
pub fn have(bin: &str) -> bool {
    PATH.split(':').any(|d| {
        let p = Path::new(d).join(bin);
        fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false)
    })
}

/// Root and the named runtime binaries: true when the test can run. Otherwise prints
/// `skipped: ...` and returns false, except under CI (`CI` or `CNI_SUITE_REQUIRE_ROOT` set),
/// where `scripts/install-deps.sh` has installed them and a missing one is a failure.
pub fn require_runtime(what: &str, bins: &[&str]) -> bool {
    if !require_root() {
        return false;
    }
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{what} cannot run here: {} not installed (scripts/install-deps.sh installs them)",
        missing.join(", ")
    );
    cni::prereq::skip(&msg)
}

/// Skips (returns false, with the reason) when a runtime's own preflight shows it cannot
/// run containers on this machine at all; under CI it fails instead.
pub fn runtime_usable(what: &str, probe: &Run) -> bool {
    if probe.ok() {
        return true;
    }
    let msg = format!("{what} cannot run on this machine:\n{probe}");
    cni::prereq::skip(&msg)
}

// ---------------------------------------------------------------------------------------
// commands with timeouts

/// What a command did.
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; None when killed (also by the timeout).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// True when the timeout killed it.
    pub timed_out: bool,
}

impl Run {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Panics with everything known unless it exited 0; returns stdout.
    pub fn expect_ok(&self) -> &str {
        if !self.ok() {
            panic!("expected success:\n{self}");
        }
        &self.stdout
    }
    /// Panics unless it failed (without timing out).
    pub fn expect_err(&self) -> &Self {
        if self.ok() || self.timed_out {
            panic!("expected a failure:\n{self}");
        }
        self
    }
    /// stdout and stderr together.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit: {}{} after {:.2?}\nstdout: {}\nstderr: {}",
            self.command,
            self.code.map_or("killed".to_string(), |c| c.to_string()),
            if self.timed_out { " (TIMEOUT)" } else { "" },
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

fn memfd() -> File {
    // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"cni-suite-e2e".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    unsafe { File::from_raw_fd(fd) }
}

fn read_all(mut f: File) -> String {
    let mut s = String::new();
    let _ = f.seek(SeekFrom::Start(0));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    s.push_str(&String::from_utf8_lossy(&buf));
    s
}

/// Runs `cmd` (stdin /dev/null) and kills it by PID if it has not exited after `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let command = format!("{cmd:?}");
    let (out, err) = (memfd(), memfd());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()));
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    Run {
        command,
        code: status.and_then(|s| s.code()),
        stdout: read_all(out),
        stderr: read_all(err),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// [`run_timeout`] for a plain argv on the machine (e.g. `tar`).
pub fn run_argv(argv: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).env_clear().env("PATH", PATH);
    run_timeout(&mut cmd, timeout)
}

// ---------------------------------------------------------------------------------------
// the holder: private mount + network namespace for a runtime

/// A private mount namespace inside the test's host network namespace (see module docs).
/// Killed by PID on drop.
pub struct Holder {
    child: Child,
    pid: u32,
    log: PathBuf,
}

const HOLDER_SCRIPT: &str = r#"
set -eu
work=$1; shift
graft() {   # graft SRC DST: DST shows SRC in this mount namespace only
    src=$1 dst=$2
    if [ -d "$dst" ]; then mount --bind "$src" "$dst"; return; fi
    a=$(dirname "$dst")
    while [ ! -d "$a" ]; do a=$(dirname "$a"); done
    [ "$a" != / ] || { echo "graft: will not cover / for $dst" >&2; exit 1; }
    save=$(mktemp -d "$work/graft.XXXXXX")
    mount --rbind "$a" "$save"
    mount -t tmpfs -o mode=755 tmpfs "$a"
    for e in "$save"/* "$save"/.[!.]*; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        n=${e##*/}
        if [ -L "$e" ]; then cp -P "$e" "$a/$n"
        elif [ -d "$e" ]; then mkdir "$a/$n"; mount --rbind "$e" "$a/$n"
        else touch "$a/$n"; mount --bind "$e" "$a/$n"; fi
    done
    umount -l "$save"; rmdir "$save"
    mkdir -p "$dst"; mount --bind "$src" "$dst"
}
# A fresh sysfs for this network namespace (what `ip netns exec` does), keeping cgroups.
mkdir -p "$work/cg"
mount --rbind /sys/fs/cgroup "$work/cg"
mount -t sysfs sysfs /sys
mount --rbind "$work/cg" /sys/fs/cgroup
umount -l "$work/cg"; rmdir "$work/cg"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/lock
mount --bind "$1" /var/lib/cni; shift
while [ $# -ge 2 ]; do graft "$1" "$2"; shift 2; done
touch "$work/holder.ready"
exec sleep 2147483647
"#;

impl Holder {
    /// Starts the holder in `env`'s host namespace. `grafts` are (source dir, path inside).
    pub fn start(env: &TestEnv, grafts: &[(&Path, &str)]) -> Holder {
        let work = env.dir().join("holder");
        fs::create_dir_all(&work).unwrap();
        let log = env.dir().join("holder.log");
        let logf = File::create(&log).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "nsenter"])
            .arg(format!("--net={}", env.host().path().display()))
            .args(["sh", "-c", HOLDER_SCRIPT, "holder"])
            .arg(&work)
            .arg(env.libcni_dir());
        for (src, dst) in grafts {
            cmd.arg(src).arg(dst);
        }
        cmd.env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf));
        let child = cmd.spawn().expect("cannot start unshare");
        // unshare and nsenter exec in place: the PID is the shell's, then sleep's.
        let pid = child.id();
        let mut h = Holder { child, pid, log };
        let ready = work.join("holder.ready");
        let ok = eventually(Duration::from_secs(10), || ready.exists() || !h.alive());
        if !ok || !ready.exists() {
            panic!(
                "the private mount namespace did not come up: {}",
                fs::read_to_string(&h.log).unwrap_or_default()
            );
        }
        h
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The holder's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A path as seen inside the holder's mount namespace (`/proc/<pid>/root/...`), e.g.
    /// to look at its private `/run`.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(path.trim_start_matches('/'))
    }

    /// `argv` inside the holder's mount and network namespaces with exactly `envs` (+PATH).
    pub fn command(&self, argv: &[&str], envs: &[(String, String)]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-n", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .envs(envs.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `argv` like [`Holder::command`] with a timeout.
    pub fn run(&self, argv: &[&str], envs: &[(String, String)], timeout: Duration) -> Run {
        run_timeout(&mut self.command(argv, envs), timeout)
    }

    /// `busybox wget -qO- <url>` from the host namespace (5 s budget; not wget's own `-T`,
    /// which makes Debian's busybox-static 1.35 segfault).
    pub fn wget(&self, url: &str) -> Run {
        self.run(&["timeout", "5", "busybox", "wget", "-qO-", url], &[], Duration::from_secs(10))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// cgroups

/// A cgroup parent (`/cni-suite-e2e-<pid>-<n>-<label>`) for the test's containers. On drop,
/// every process still in it (containers the runtime left behind) is killed by PID and
/// the directories are removed from every hierarchy.
pub struct CgroupGuard {
    name: String,
}

impl CgroupGuard {
    /// A new, not yet created, cgroup parent.
    pub fn new(label: &str) -> CgroupGuard {
        CgroupGuard {
            name: format!(
                "cni-suite-e2e-{}-{}-{label}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
    /// The absolute cgroup path to give the runtime (`/cni-suite-e2e-...`).
    pub fn parent(&self) -> String {
        format!("/{}", self.name)
    }
    /// `<parent>/<child>`.
    pub fn child(&self, child: &str) -> String {
        format!("/{}/{child}", self.name)
    }
    fn dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(hier) = fs::read_dir("/sys/fs/cgroup") else {
            return out;
        };
        for h in hier.flatten() {
            let top = h.path().join(&self.name);
            if top.is_dir() {
                walk_dirs(&top, &mut out);
            }
        }
        out
    }
    /// PIDs still inside the parent (any hierarchy).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs()
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }
    /// Directories of the parent still present (after drop: none).
    pub fn remaining(&self) -> Vec<PathBuf> {
        self.dirs()
    }
}

fn walk_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_dirs(&e.path(), out);
            }
        }
    }
    out.push(d.to_path_buf()); // children first: rmdir in this order
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let me = std::process::id();
        for pid in self.pids() {
            if pid != me && pid != 0 {
                eprintln!("cleanup: killing leftover container process {pid}");
                // SAFETY: plain syscall; the PID is in the cgroup only this test's runtime uses.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        eventually(Duration::from_secs(5), || {
            for d in self.dirs() {
                let _ = fs::remove_dir(&d);
            }
            self.dirs().is_empty()
        });
        for d in self.dirs() {
            eprintln!("warning: cannot remove cgroup {}", d.display());
        }
    }
}

// ---------------------------------------------------------------------------------------
// images

/// Commands the busybox image links to busybox.
const APPLETS: &[&str] = &[
    "sh", "httpd", "nc", "wget", "nslookup", "ping", "sleep", "ip", "cat", "ls", "echo",
    "hostname", "top", "dd", "grep", "timeout",
];

/// Writes a busybox-static root filesystem to `dir`: `/bin/busybox` plus applet links and
/// `/www/index.html` with `index`.
pub fn busybox_rootfs(dir: &Path, index: &str) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox not found (Debian's busybox-static, scripts/install-deps.sh)");
    for d in ["bin", "www", "etc", "proc", "sys", "dev", "tmp", "root"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    fs::write(dir.join("www/index.html"), format!("{index}\n")).unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// `tar -cf out -C dir .` (numeric owners), bounded in time.
pub fn tar_dir(dir: &Path, out: &Path) {
    run_argv(
        &["tar", "--numeric-owner", "-cf", out.to_str().unwrap(), "-C", dir.to_str().unwrap(), "."],
        Duration::from_secs(60),
    )
    .expect_ok();
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Builds an OCI image archive (an OCI layout in a tar, what `ctr image import` and
/// `nerdctl load` read) of the root filesystem in `rootfs`, named `name`
/// (`io.containerd.image.name`), for the machine's architecture, one uncompressed layer,
/// with `cmd` as the image's default command (`Cmd`; empty: none).
pub fn oci_archive(rootfs: &Path, name: &str, cmd: &[&str], work: &Path, out: &Path) {
    let layout = work.join(format!("oci-layout-{}", sha256_hex(name.as_bytes())));
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let layer_tmp = layout.join("layer.tar");
    tar_dir(rootfs, &layer_tmp);
    let layer = fs::read(&layer_tmp).unwrap();
    fs::remove_file(&layer_tmp).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let h = sha256_hex(bytes);
        fs::write(blobs.join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let (layer_digest, layer_size) = put(&layer);
    let mut image_config = json!({"Env": ["PATH=/bin"], "WorkingDir": "/"});
    if !cmd.is_empty() {
        image_config["Cmd"] = json!(cmd);
    }
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let tag = name.rsplit(':').next().unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag}
        }]
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    tar_dir(&layout, out);
}

/// The images the containerd-based tests use, all one busybox-static root filesystem:
/// a pause stand-in (the CRI sandbox image: sleeps), a shell image (critest's default
/// test image: `top` and friends) and a web server (`httpd` on port 80 serving
/// `/www/index.html` = `index`; critest's web server image).
pub struct TestImages {
    /// OCI archives, (image name, path).
    pub archives: Vec<(&'static str, PathBuf)>,
}

/// The CRI sandbox image stand-in.
pub const PAUSE_IMAGE: &str = "localhost/cni-suite-pause:latest";
/// busybox with a shell as its command.
pub const BUSYBOX_IMAGE: &str = "localhost/cni-suite-busybox:latest";
/// busybox httpd on port 80.
pub const WEB_IMAGE: &str = "localhost/cni-suite-web:latest";

impl TestImages {
    /// Builds the three archives under `env`'s temp dir.
    pub fn build(env: &TestEnv, index: &str) -> TestImages {
        let rootfs = env.dir().join("rootfs");
        busybox_rootfs(&rootfs, index);
        let work = env.dir().join("images");
        fs::create_dir_all(&work).unwrap();
        let mut archives = Vec::new();
        for (name, cmd) in [
            (PAUSE_IMAGE, &["sleep", "2147483647"][..]),
            (BUSYBOX_IMAGE, &["sh"][..]),
            (WEB_IMAGE, &["httpd", "-f", "-p", "80", "-h", "/www"][..]),
        ] {
            let out = work.join(format!("{}.tar", sha256_hex(name.as_bytes())));
            oci_archive(&rootfs, name, cmd, &work, &out);
            archives.push((name, out));
        }
        TestImages { archives }
    }
}

// ---------------------------------------------------------------------------------------
// the pinned runtimes (scripts/install-deps.sh builds them into .cache/runtime/bin)

/// Where `scripts/install-deps.sh` puts containerd, its shim, ctr, crictl, critest and
/// nerdctl.
pub fn runtime_bin_dir() -> PathBuf {
    workspace_root().join(".cache/runtime/bin")
}

/// `PATH` with [`runtime_bin_dir`] first (containerd finds its shim on `PATH`).
pub fn runtime_path() -> String {
    format!("{}:{PATH}", runtime_bin_dir().display())
}

/// Like [`require_runtime`], for binaries that must be in [`runtime_bin_dir`] (built by
/// `scripts/install-deps.sh`) plus `system` ones on [`PATH`].
pub fn require_built(what: &str, built: &[&str], system: &[&str]) -> bool {
    if !require_runtime(what, system) {
        return false;
    }
    let dir = runtime_bin_dir();
    let missing: Vec<&str> = built.iter().copied().filter(|b| !dir.join(b).is_file()).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{what} cannot run here: {} not built in {} (run scripts/install-deps.sh)",
        missing.join(", "),
        dir.display()
    );
    cni::prereq::skip(&msg)
}

/// A containerd 2.x daemon inside a [`Holder`]: root, state, sockets and config in the
/// test's temp dir, only the `native` snapshotter, CRI enabled or not. The plugins it runs
/// (through CRI, or through nerdctl's OCI hook) get `CNI_SUITE_STATE_DIR`. SIGTERM, then
/// SIGKILL, by PID on drop.
pub struct Containerd {
    child: Child,
    dir: PathBuf,
    /// The gRPC socket.
    pub address: String,
    /// Environment for every command run against it (`PATH` with the pinned binaries).
    pub env: Vec<(String, String)>,
}

/// CRI settings for [`Containerd::start`].
pub struct CriConfig<'a> {
    /// `cni.bin_dirs`, as seen inside the holder.
    pub bin_dir: &'a str,
    /// `cni.conf_dir`, as seen inside the holder.
    pub conf_dir: &'a str,
}

/// Budget for one containerd client command (ctr, crictl, nerdctl).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

impl Containerd {
    /// Starts containerd in `holder` and waits until it answers. `cri`: None disables the
    /// CRI plugins (nerdctl does not need them).
    pub fn start(env: &TestEnv, holder: &Holder, cri: Option<&CriConfig>) -> Containerd {
        let d = env.dir().join("containerd");
        for s in ["root", "state"] {
            fs::create_dir_all(d.join(s)).unwrap();
        }
        let address = d.join("containerd.sock").display().to_string();
        let mut config = format!(
            r#"version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.snapshotter.v1.blockfile"{no_cri}]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/{arch}"
    snapshotter = "native"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            no_cri = if cri.is_some() {
                ""
            } else {
                r#", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox""#
            },
            arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            },
        );
        if let Some(cri) = cri {
            // restrict_oom_score_adj: the sandbox asks for oom_score_adj -998, which needs
            // CAP_SYS_RESOURCE; CI's root may not have it (runc then fails with "can't get
            // final child's PID from pipe").
            config.push_str(&format!(
                r#"[plugins.'io.containerd.cri.v1.images']
  snapshotter = "native"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{bin}"]
    conf_dir = "{conf}"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
"#,
                bin = cri.bin_dir,
                conf = cri.conf_dir,
            ));
        }
        let config_path = d.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let env_vars = vec![
            ("PATH".to_string(), runtime_path()),
            ("CNI_SUITE_STATE_DIR".to_string(), env.state_dir().display().to_string()),
        ];
        let log = File::create(d.join("containerd.log")).unwrap();
        let child = holder
            .command(&["containerd", "--config", config_path.to_str().unwrap()], &env_vars)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start containerd");
        let mut c = Containerd { child, dir: d, address, env: env_vars };
        let mut last = None;
        let up = eventually(Duration::from_secs(30), || {
            if matches!(c.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            let r = c.ctr(holder, &["version"]);
            let ok = r.ok();
            last = Some(r);
            ok
        });
        if !up || !last.as_ref().is_some_and(Run::ok) {
            panic!(
                "containerd did not come up:\n{}\nlog (tail):\n{}",
                last.map(|r| r.to_string()).unwrap_or_default(),
                c.log_tail(30)
            );
        }
        c
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `ctr --address <sock> args...` in the holder.
    pub fn ctr(&self, holder: &Holder, args: &[&str]) -> Run {
        let mut argv = vec!["ctr", "--address", self.address.as_str()];
        argv.extend_from_slice(args);
        holder.run(&argv, &self.env, CLIENT_TIMEOUT)
    }

    /// Imports the test images into containerd namespace `namespace`.
    pub fn import(&self, holder: &Holder, namespace: &str, images: &TestImages) {
        for (name, archive) in &images.archives {
            self.ctr(
                holder,
                &[
                    "--namespace",
                    namespace,
                    "image",
                    "import",
                    "--snapshotter",
                    "native",
                    "--local",
                    archive.to_str().unwrap(),
                ],
            )
            .expect_ok();
            let ls = self.ctr(holder, &["--namespace", namespace, "image", "ls", "--quiet"]);
            assert!(ls.expect_ok().lines().any(|l| l == *name), "{name} not imported:\n{ls}");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = self.child.id();
        // SAFETY: plain syscall on the daemon we started; SIGTERM first lets it close cleanly.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let exited =
            eventually(Duration::from_secs(10), || matches!(self.child.try_wait(), Ok(Some(_))));
        if !exited {
            eprintln!("cleanup: containerd {pid} ignored SIGTERM, killing it");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// plugins and leftovers

/// A directory holding only this workspace's plugins `names` (symlinks to the built
/// binaries), so the runtime cannot fall back to any other CNI plugin. `dnsname` is
/// dns-alias under podman's name, as `make install` puts it.
pub fn our_plugins_dir(env: &TestEnv, names: &[&str]) -> PathBuf {
    fn binary<'a>(env: &TestEnv, n: &'a str) -> &'a str {
        if n == "dnsname" && !env.our_plugin_dir().join(n).is_file() {
            "dns-alias"
        } else {
            n
        }
    }
    let built: Vec<&str> = names.iter().map(|n| binary(env, n)).collect();
    env.require_plugins(&Plugins::Ours, &built);
    let dir = env.dir().join("cni-bin");
    fs::create_dir_all(&dir).unwrap();
    for n in names {
        let src = env.plugin_path(&Plugins::Ours, binary(env, n));
        std::os::unix::fs::symlink(&src, dir.join(n)).unwrap();
    }
    dir
}

/// Everything of ours still in the host namespace and the state dirs ([`ours_left`], with
/// `keep_links` the runtime's own), plus libcni cache entries and processes in the host
/// namespace other than `keep_pids`.
pub fn leftovers(env: &TestEnv, keep_links: &[&str], keep_pids: &[u32]) -> Vec<String> {
    let mut left = ours_left(env, keep_links);
    for f in files_under(&env.libcni_dir()) {
        left.push(format!("libcni cache {}", f.display()));
    }
    for pid in env.host().pids() {
        if !keep_pids.contains(&pid) {
            let comm = fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            left.push(format!("process {pid}: {}", comm.trim()));
        }
    }
    left
}

/// host-local's lease files (the addresses) of `network` in the test's state dir.
pub fn leases(env: &TestEnv, network: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(env.state_dir().join("networks").join(network))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Gives the host namespace an "outside" link: `ext0` with `host_cidr` here, its peer
/// `ext0` with `outside_cidr` in the returned namespace (the rest of the world).
pub fn outside_world(env: &TestEnv, host_cidr: &str, outside_cidr: &str) -> Netns {
    let out = env.container("outside");
    env.host().veth_to("ext0", &out, "ext0");
    env.host().ip_ok(&["addr", "add", host_cidr, "dev", "ext0"]);
    out.ip_ok(&["addr", "add", outside_cidr, "dev", "ext0"]);
    out
}

/// `busybox wget -qO- url` from another namespace (5 s budget).
pub fn wget_from(ns: &Netns, url: &str) -> Run {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "timeout", "5", "busybox", "wget", "-qO-", url])
        .env_clear()
        .env("PATH", PATH);
    run_timeout(&mut cmd, Duration::from_secs(10))
}

/// A timer that prints each phase of a test and the total.
pub struct Phases {
    test: &'static str,
    start: Instant,
    last: Instant,
}

impl Phases {
    /// Starts the clock.
    pub fn new(test: &'static str) -> Phases {
        let now = Instant::now();
        Phases { test, start: now, last: now }
    }
    /// Prints the time since the previous mark.
    pub fn mark(&mut self, what: &str) {
        let now = Instant::now();
        eprintln!("[{}] {what}: {:.2?}", self.test, now - self.last);
        self.last = now;
    }
    /// Prints the total.
    pub fn total(&self) {
        eprintln!("[{}] total: {:.2?}", self.test, self.start.elapsed());
    }
}

/// Parses JSON or panics with the text.
pub fn parse_json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Budget for one podman command.
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(90);

/// podman with every path redirected into the test's temp dir.
pub struct Podman<'a> {
    holder: &'a Holder,
    env: Vec<(String, String)>,
    global: Vec<String>,
    cgroup_parent: String,
}

impl<'a> Podman<'a> {
    pub fn new(env: &TestEnv, holder: &'a Holder, plugins: &Path, cg: &CgroupGuard) -> Podman<'a> {
        let d = env.dir().join("podman");
        let p = |s: &str| -> PathBuf { d.join(s) };
        // The runroot is in the holder's private /run (a tmpfs that goes with it): podman
        // 4.3 refuses a runroot longer than 50 characters, which a path under the test's
        // temp dir exceeds once the test runner's PID and counter have enough digits.
        let runroot = "/run/containers/storage";
        for s in ["root", "tmp", "vartmp", "volumes", "libpod", "net.d", "home"] {
            fs::create_dir_all(p(s)).unwrap();
        }
        let state = env.state_dir().display().to_string();
        let conf = p("containers.conf");
        let storage = p("storage.conf");
        // conmon starts `podman container cleanup` (network teardown) with only
        // conmon_env_vars: the plugins' state dir and our config must be among them.
        let conmon_env = [
            format!("PATH={PATH}"),
            format!("CNI_SUITE_STATE_DIR={state}"),
            format!("CONTAINERS_CONF={}", conf.display()),
            format!("CONTAINERS_STORAGE_CONF={}", storage.display()),
            format!("TMPDIR={}", p("vartmp").display()),
        ];
        let conmon_env: Vec<String> = conmon_env.iter().map(|s| format!("{s:?}")).collect();
        fs::write(
            &conf,
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
volume_path = "{volumes}"
static_dir = "{libpod}"
conmon_env_vars = [{conmon_env}]

[network]
network_backend = "cni"
network_config_dir = "{netd}"
cni_plugin_dirs = ["{plugins}"]
"#,
                events = p("events.log").display(),
                tmp = p("tmp").display(),
                volumes = p("volumes").display(),
                libpod = p("libpod").display(),
                conmon_env = conmon_env.join(", "),
                netd = p("net.d").display(),
                plugins = plugins.display(),
            ),
        )
        .unwrap();
        fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p("root").display(),
                runroot
            ),
        )
        .unwrap();
        let env_vars = vec![
            ("CNI_SUITE_STATE_DIR".to_string(), state),
            ("CONTAINERS_CONF".to_string(), conf.display().to_string()),
            ("CONTAINERS_STORAGE_CONF".to_string(), storage.display().to_string()),
            ("TMPDIR".to_string(), p("vartmp").display().to_string()),
            ("HOME".to_string(), p("home").display().to_string()),
        ];
        let global = vec![
            format!("--root={}", p("root").display()),
            format!("--runroot={runroot}"),
            format!("--tmpdir={}", p("tmp").display()),
            format!("--network-config-dir={}", p("net.d").display()),
            "--storage-driver=vfs".to_string(),
            "--cgroup-manager=cgroupfs".to_string(),
            "--runtime=runc".to_string(),
            "--events-backend=file".to_string(),
        ];
        Podman { holder, env: env_vars, global, cgroup_parent: cg.parent() }
    }

    pub fn net_dir(env: &TestEnv) -> PathBuf {
        env.dir().join("podman/net.d")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut argv: Vec<&str> = vec!["podman"];
        argv.extend(self.global.iter().map(String::as_str));
        argv.extend_from_slice(args);
        self.holder.run(&argv, &self.env, PODMAN_TIMEOUT)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).expect_ok().to_string()
    }

    /// The address of container `name` on its network (`podman inspect`).
    pub fn ip_of(&self, name: &str) -> String {
        let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
        self.ok(&["container", "inspect", name, "--format", format]).trim().to_string()
    }

    /// `podman run` with the test's cgroup parent and no pulling.
    pub fn run_container(&self, args: &[&str]) -> Run {
        let parent = format!("--cgroup-parent={}", self.cgroup_parent);
        let mut full = vec!["run", "--pull=never", parent.as_str()];
        full.extend_from_slice(args);
        self.run(&full)
    }
}

/// Removes every container on drop (also when the test panics).
pub struct PodmanRemoveAll<'a>(pub &'a Podman<'a>);

impl Drop for PodmanRemoveAll<'_> {
    fn drop(&mut self) {
        let out = self.0.run(&["rm", "--all", "--force", "--time", "0"]);
        if !out.ok() {
            eprintln!("cleanup: podman rm -af failed:\n{out}");
        }
    }
}
