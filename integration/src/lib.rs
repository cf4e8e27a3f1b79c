//! Integration-test harness: runs the real plugin binaries, driven by the real
//! `cnitool`, against the real kernel, inside network namespaces that each test
//! creates for itself.
//!
//! Rules the harness enforces so tests can never hurt the machine they run on:
//! * the machine's own network namespace is never changed: every test gets a
//!   private "host" namespace ([`TestEnv::host`]) in which the runtime runs, plus
//!   "container" namespaces ([`TestEnv::container`]);
//! * every namespace is deleted in `Drop`, also when the test panics, and the
//!   processes inside it are killed by PID first;
//! * plugin state goes to a per-test temporary directory: `CNI_SUITE_STATE_DIR`
//!   points there, and inside the host namespace's private mount namespace
//!   `/var/lib/cni` (where libcni keeps its result cache and the reference
//!   `host-local` its default leases) is bind-mounted from the same directory.
//!
//! Typical use:
//! ```no_run
//! use integration::*;
//! use serde_json::json;
//! if !require_root() { return; }
//! let env = TestEnv::new("mytest");
//! env.write_conflist("net", &json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
//!     {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24",
//!      "dataDir": env.ipam_dir()}}]}));
//! let a = env.container("a");
//! env.cnitool("add", "net", &a, &CniOpts::ours()).expect_ok();
//! ```

#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha512};

/// Prefix of every namespace and temp dir the harness creates: `cs<pid>-...`.
/// The PID lets a later run delete what a killed run left behind.
const TAG: &str = "cs";
const TMP_TAG: &str = "cni-suite-it-";
/// Where libcni (cnitool) keeps its result cache; redirected per test.
const LIBCNI_DIR: &str = "/var/lib/cni";
/// Reference plugins shipped by Debian's `containernetworking-plugins` (1.1.1).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The reference plugins [`Plugins::Reference`] stands for: the pinned release
/// `scripts/install-deps.sh` builds into `.cache/reference-plugins` when it is there
/// (`CNI_SUITE_REFERENCE_BIN` overrides), else Debian's [`REFERENCE_PLUGIN_DIR`].
pub fn reference_plugin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CNI_SUITE_REFERENCE_BIN") {
        return PathBuf::from(d);
    }
    let built = workspace_root().join(".cache/reference-plugins");
    if built.join("bridge").is_file() {
        return built;
    }
    PathBuf::from(REFERENCE_PLUGIN_DIR)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();

// ---------------------------------------------------------------------------
// small process helpers

/// Runs `cmd` and returns its output; panics (with the command line) only if it
/// cannot be started at all.
fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Panics with the command's stderr unless `out` is a success; returns stdout.
fn ok_stdout(what: &str, out: Output) -> String {
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kill_pid(pid: u32) {
    if pid != 0 && pid != std::process::id() {
        // SAFETY: plain syscall on a PID we own (spawned by us or living in a
        // namespace we created); errors (already gone) are irrelevant.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Returns true when running as root. Otherwise skips (returns false, so a test starts
/// with `if !require_root() { return; }`), or fails under CI ([`cni::prereq::skip`]).
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    cni::prereq::skip("integration tests need root")
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns
/// whether it succeeded. For things the kernel finishes asynchronously (IPv6
/// DAD, namespace teardown).
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cargo workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration crate has a parent directory")
        .to_path_buf()
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(24).collect()
}

/// Removes namespaces and temp dirs left behind by harness runs whose process
/// no longer exists (e.g. a test binary killed by a timeout). It only deletes
/// the names: processes are never killed here, since this run did not start them.
fn sweep_stale() {
    let dead = |rest: &str| -> bool {
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        match pid.parse::<u32>() {
            Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        }
    };
    let out = run(Command::new("ip").args(["netns", "list"]));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix(TAG) {
            if dead(rest) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(TMP_TAG) {
                if dead(rest) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// network namespaces

/// A named network namespace (`ip netns add`) owned by one test. `lo` is up on
/// creation. Dropping it kills the processes inside (by PID) and runs
/// `ip netns del`, also while a panic unwinds.
pub struct Netns {
    /// The name under /var/run/netns, unique per process and call.
    pub name: String,
    spawned: Arc<Mutex<Vec<u32>>>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Netns({})", self.name)
    }
}

impl Netns {
    /// Creates `cs<pid>-<n><prefix>` and brings `lo` up in it.
    pub fn new(prefix: &str) -> Netns {
        SWEEP.call_once(sweep_stale);
        let name = format!(
            "{TAG}{}-{}{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            sanitize(prefix)
        );
        ok_stdout(
            &format!("ip netns add {name}"),
            run(Command::new("ip").args(["netns", "add", &name])),
        );
        let ns = Netns { name, spawned: Arc::default() };
        ns.ip_ok(&["link", "set", "lo", "up"]);
        ns
    }

    /// The bind-mounted namespace file, as passed to plugins in `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `argv` inside the namespace (`ip netns exec <name> argv...`).
    pub fn exec(&self, argv: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(argv))
    }

    /// Like [`Netns::exec`] but panics unless it succeeds; returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        ok_stdout(&format!("[{}] {}", self.name, argv.join(" ")), self.exec(argv))
    }

    /// Runs a shell command line inside the namespace (`sh -c cmd`).
    pub fn sh(&self, cmd: &str) -> Output {
        self.exec(&["sh", "-c", cmd])
    }

    /// Like [`Netns::sh`] but panics unless it succeeds; returns stdout.
    pub fn sh_ok(&self, cmd: &str) -> String {
        ok_stdout(&format!("[{}] sh -c {cmd}", self.name), self.sh(cmd))
    }

    /// `ip -n <name> args...` (iproute2 switches namespace itself; cheaper than exec).
    pub fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Like [`Netns::ip`] but panics unless it succeeds; returns stdout.
    pub fn ip_ok(&self, args: &[&str]) -> String {
        ok_stdout(&format!("ip -n {} {}", self.name, args.join(" ")), self.ip(args))
    }

    /// `ip -j -n <name> args...` parsed as JSON (empty output gives `[]`).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip_ok(&full);
        if out.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ip -j {} gave invalid JSON ({e}): {out}", args.join(" ")))
    }

    /// Starts a long-running process (a server) in the namespace, stdin and
    /// stdout/stderr to /dev/null. The returned guard kills it by PID on drop;
    /// dropping the namespace kills it too.
    pub fn spawn(&self, argv: &[&str]) -> Spawned {
        // `ip netns exec` execs the command in place, so the child's PID is the
        // command's own PID.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {argv:?} in {}: {e}", self.name));
        self.spawned.lock().unwrap().push(child.id());
        Spawned { child, registry: self.spawned.clone() }
    }

    /// Runs `f` on a fresh thread that has entered this namespace (setns), and
    /// returns its result; a panic in `f` propagates. Sockets created inside
    /// `f` stay in this namespace even when used elsewhere afterwards.
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                enter_netns(&path);
                f()
            });
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// PIDs of all processes whose network namespace is this one
    /// (`ip netns pids`), i.e. servers or daemons tests or plugins left running.
    pub fn pids(&self) -> Vec<u32> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| *p != std::process::id())
            .collect()
    }

    /// Creates a veth pair `ifname` (here) <-> `peer_ifname` (in `peer`), both up.
    /// Handy as a macvlan parent or as an "outside world" link.
    pub fn veth_to(&self, ifname: &str, peer: &Netns, peer_ifname: &str) {
        self.ip_ok(&[
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            &peer.name,
        ]);
        self.ip_ok(&["link", "set", ifname, "up"]);
        peer.ip_ok(&["link", "set", peer_ifname, "up"]);
    }

    /// Reads a sysctl inside the namespace, e.g. `net.ipv4.ip_forward`.
    pub fn sysctl(&self, key: &str) -> String {
        self.exec_ok(&["sysctl", "-n", key]).trim().to_string()
    }

    fn kill_everything(&self) {
        for pid in self.spawned.lock().unwrap().iter() {
            kill_pid(*pid);
        }
        for pid in self.pids() {
            kill_pid(pid);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_everything();
        match Command::new("ip").args(["netns", "del", &self.name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

fn enter_netns(path: &Path) {
    let f = File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // SAFETY: setns on a valid namespace fd; it only affects the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!("setns({}) failed: {}", path.display(), std::io::Error::last_os_error());
    }
}

/// A process started with [`Netns::spawn`]; killed by PID and reaped on drop.
pub struct Spawned {
    child: Child,
    registry: Arc<Mutex<Vec<u32>>>,
}

impl Spawned {
    /// The process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.registry.lock().unwrap().retain(|p| *p != pid);
    }
}

// ---------------------------------------------------------------------------
// the test environment

/// Which plugin binaries a CNI call uses (becomes `CNI_PATH`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Plugins {
    /// This workspace's binaries (see [`TestEnv::our_plugin_dir`]).
    #[default]
    Ours,
    /// The reference plugins in [`reference_plugin_dir`].
    Reference,
    /// Explicit directories, searched in order.
    Dirs(Vec<PathBuf>),
}

/// Per-call options for [`TestEnv::cnitool`]. Build with the chained setters:
/// `CniOpts::ours().ifname("net1").cap_args(json!({"portMappings": [...]}))`.
#[derive(Clone, Debug, Default)]
pub struct CniOpts {
    /// `CNI_IFNAME` (cnitool's default is `eth0`).
    pub ifname: Option<String>,
    /// `CNI_ARGS`, e.g. `"IP=10.1.0.5;K8S_POD_NAME=x"`.
    pub args: Option<String>,
    /// `CAP_ARGS`: capability arguments as a JSON object, e.g.
    /// `{"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}`.
    pub cap_args: Option<Value>,
    /// A container-ID key. cnitool derives `CNI_CONTAINERID` from the
    /// netns path and ignores `CNI_CONTAINERID`, so the harness passes the netns
    /// through a symlink named after this key: the same key always gives the same
    /// ID and different keys give different IDs for the same namespace. The ID the
    /// plugins see is [`TestEnv::container_id`], not the key itself.
    pub container_id: Option<String>,
    /// Which plugin directory becomes `CNI_PATH`.
    pub plugins: Plugins,
    /// Extra environment for cnitool and hence the plugins (it passes its whole
    /// environment through).
    pub env: Vec<(String, String)>,
}

impl CniOpts {
    /// Options using this workspace's plugins.
    pub fn ours() -> Self {
        Self::default()
    }
    /// Options using the reference plugins ([`reference_plugin_dir`]).
    pub fn reference() -> Self {
        Self { plugins: Plugins::Reference, ..Self::default() }
    }
    /// Sets `CNI_IFNAME`.
    pub fn ifname(mut self, ifname: &str) -> Self {
        self.ifname = Some(ifname.into());
        self
    }
    /// Sets `CNI_ARGS`.
    pub fn args(mut self, args: &str) -> Self {
        self.args = Some(args.into());
        self
    }
    /// Sets `CAP_ARGS` (capability arguments, a JSON object).
    pub fn cap_args(mut self, cap: Value) -> Self {
        self.cap_args = Some(cap);
        self
    }
    /// Sets the container-ID key (see the field's docs).
    pub fn container_id(mut self, key: &str) -> Self {
        self.container_id = Some(key.into());
        self
    }
    /// Sets the plugin selection.
    pub fn plugins(mut self, plugins: Plugins) -> Self {
        self.plugins = plugins;
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// What a cnitool or plugin run produced.
#[derive(Clone, Debug)]
pub struct CniOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// `stdout` parsed as JSON, when it is JSON (a result, a version reply, a CNI error).
    pub json: Option<Value>,
    /// Wall-clock time of the whole call (includes the harness's `ip netns exec`).
    pub elapsed: Duration,
}

impl CniOutput {
    /// True when the process exited 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Panics with everything known about the call unless it exited 0.
    pub fn expect_ok(&self) -> &Self {
        if !self.ok() {
            panic!("expected success, got:\n{self}");
        }
        self
    }

    /// Panics unless the call failed (exit code non-zero).
    pub fn expect_err(&self) -> &Self {
        if self.ok() {
            panic!("expected failure, got:\n{self}");
        }
        self
    }

    /// The parsed JSON on stdout; panics if there was none.
    pub fn result(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| panic!("no JSON on stdout:\n{self}"))
    }

    /// The CNI error code from a plugin's JSON error on stdout (exec_plugin only:
    /// cnitool prints errors as text on stderr).
    pub fn error_code(&self) -> Option<u64> {
        self.json.as_ref()?.get("code")?.as_u64()
    }

    /// The `msg` of a plugin's JSON error on stdout; empty when there is none.
    pub fn error_msg(&self) -> String {
        let msg = self.json.as_ref().and_then(|v| v.get("msg")).and_then(Value::as_str);
        msg.unwrap_or_default().to_string()
    }
}

impl Display for CniOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {}\nstdout: {}\nstderr: {}",
            self.command,
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// One test's world: a temp dir (net.d, state, the redirected /var/lib/cni), a
/// private "host" namespace where the runtime runs, and the plugin/cnitool paths.
/// Set `CNI_SUITE_KEEP_TMP=1` to keep the temp dir for debugging.
pub struct TestEnv {
    dir: PathBuf,
    host: Netns,
    ours: PathBuf,
    cnitool: PathBuf,
    conflists: Mutex<HashMap<String, Value>>,
}

impl TestEnv {
    /// Creates the temp dir and the host namespace. `test` is a short label used
    /// in names.
    pub fn new(test: &str) -> TestEnv {
        SWEEP.call_once(sweep_stale);
        let label = sanitize(test);
        let dir = std::env::temp_dir().join(format!(
            "{TMP_TAG}{}-{}-{label}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        for sub in ["net.d", "state", "libcni", "netns-by-id", "bin"] {
            fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.join(sub).display()));
        }
        // Mount point for the per-test bind mount (see module docs). Creating the
        // empty standard directory is the only thing the harness does outside
        // its temp dir; nothing is ever written into it.
        fs::create_dir_all(LIBCNI_DIR)
            .unwrap_or_else(|e| panic!("cannot create {LIBCNI_DIR}: {e}"));
        let host = Netns::new(&format!("h{label}"));
        TestEnv {
            dir,
            host,
            ours: our_plugin_dir(),
            cnitool: std::env::var_os("CNITOOL")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join(".cache/bin/cnitool")),
            conflists: Mutex::default(),
        }
    }

    /// The private "host" namespace in which cnitool and plugins run.
    pub fn host(&self) -> &Netns {
        &self.host
    }

    /// Creates a new "container" namespace (dropped by the caller).
    pub fn container(&self, name: &str) -> Netns {
        Netns::new(name)
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `NETCONFPATH` directory that [`TestEnv::write_conflist`] writes to.
    pub fn net_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// `CNI_SUITE_STATE_DIR` as seen by every plugin this harness runs.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// A suggested IPAM `dataDir` (`<state>/ipam`) for configs.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir().join("ipam")
    }

    /// What `/var/lib/cni` is inside the host namespace: libcni's result cache
    /// (`results/`) lands here.
    pub fn libcni_dir(&self) -> PathBuf {
        self.dir.join("libcni")
    }

    /// A scratch directory for fake plugins or test files (`<tmp>/bin`).
    pub fn scratch_bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Directory of this workspace's plugin binaries: `$CNI_SUITE_BIN` if set,
    /// else the profile directory the running test binary was built into (e.g.
    /// `<workspace>/target/debug`, respecting `CARGO_TARGET_DIR` and `--release`).
    pub fn our_plugin_dir(&self) -> &Path {
        &self.ours
    }

    /// The directories a plugin selection stands for.
    pub fn plugin_dirs(&self, plugins: &Plugins) -> Vec<PathBuf> {
        match plugins {
            Plugins::Ours => vec![self.ours.clone()],
            Plugins::Reference => vec![reference_plugin_dir()],
            Plugins::Dirs(d) => d.clone(),
        }
    }

    /// Path of plugin `name` in a selection; panics clearly if it is missing.
    pub fn plugin_path(&self, plugins: &Plugins, name: &str) -> PathBuf {
        let dirs = self.plugin_dirs(plugins);
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
        panic!("{}", missing_plugin_message(name, &dirs, plugins));
    }

    /// Panics clearly unless every named plugin binary exists in the selection.
    pub fn require_plugins(&self, plugins: &Plugins, names: &[&str]) {
        for n in names {
            self.plugin_path(plugins, n);
        }
    }

    /// Writes `<net.d>/<name>.conflist`. A missing `"name"` key is set to `name`;
    /// a different one is an error (libcni looks networks up by that key).
    pub fn write_conflist(&self, name: &str, json: &Value) -> PathBuf {
        let mut v = json.clone();
        let obj = v.as_object_mut().expect("a conflist is a JSON object");
        match obj.get("name").and_then(Value::as_str) {
            None => {
                obj.insert("name".into(), Value::String(name.into()));
            }
            Some(n) if n == name => {}
            Some(n) => panic!("write_conflist({name}): config says \"name\": {n:?}"),
        }
        let path = self.net_dir().join(format!("{name}.conflist"));
        fs::write(&path, serde_json::to_vec_pretty(&v).unwrap())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.conflists.lock().unwrap().insert(name.into(), v);
        path
    }

    /// The `CNI_CONTAINERID` cnitool will use for `ctr` with these options:
    /// `cnitool-` + hex of the first 10 bytes of sha512(netns path).
    pub fn container_id(&self, ctr: &Netns, opts: &CniOpts) -> String {
        let path = self.netns_arg(ctr, opts, false);
        let digest = Sha512::digest(path.to_string_lossy().as_bytes());
        let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
        format!("cnitool-{hex}")
    }

    fn netns_arg(&self, ctr: &Netns, opts: &CniOpts, create: bool) -> PathBuf {
        let Some(key) = &opts.container_id else {
            return ctr.path();
        };
        let link = self.dir.join("netns-by-id").join(sanitize(key));
        if create {
            match fs::read_link(&link) {
                Ok(target) if target == ctr.path() => {}
                _ => {
                    let _ = fs::remove_file(&link);
                    std::os::unix::fs::symlink(ctr.path(), &link)
                        .unwrap_or_else(|e| panic!("cannot create {}: {e}", link.display()));
                }
            }
        }
        link
    }

    fn check_conflist_plugins(&self, network: &str, plugins: &Plugins) {
        let confs = self.conflists.lock().unwrap();
        let Some(conf) = confs.get(network) else {
            return;
        };
        let list: Vec<&Value> = match conf.get("plugins").and_then(Value::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![conf],
        };
        let dirs = self.plugin_dirs(plugins);
        for p in list {
            let ipam = p.get("ipam").and_then(|i| i.get("type"));
            for ty in [p.get("type"), ipam].into_iter().flatten().filter_map(Value::as_str) {
                if !dirs.iter().any(|d| d.join(ty).is_file()) {
                    panic!("network {network:?}: {}", missing_plugin_message(ty, &dirs, plugins));
                }
            }
        }
    }

    fn base_env(&self, cni_path: &[PathBuf]) -> Vec<(String, String)> {
        let joined: Vec<String> = cni_path.iter().map(|p| p.display().to_string()).collect();
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("CNI_PATH".to_string(), joined.join(":")),
            ("CNI_SUITE_STATE_DIR".to_string(), self.state_dir().display().to_string()),
        ];
        for k in ["RUST_BACKTRACE", "RUST_LOG"] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.into(), v));
            }
        }
        env
    }

    /// Runs `argv` in the host namespace with exactly `env` (the test's own
    /// environment is not inherited), `/var/lib/cni` bind-mounted from
    /// [`TestEnv::libcni_dir`] in the private mount namespace `ip netns exec` makes.
    fn run_in_host(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: Option<&str>,
    ) -> CniOutput {
        const SCRIPT: &str = concat!(
            r#"mount --bind "$1" /var/lib/cni || "#,
            r#"{ echo "harness: cannot bind-mount $1 on /var/lib/cni" >&2; exit 97; }; "#,
            r#"shift; exec "$@""#
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.name, "sh", "-c", SCRIPT, "sh"])
            .arg(self.libcni_dir())
            .args(argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown_env: Vec<String> =
            env.iter().filter(|(k, _)| k != "PATH").map(|(k, v)| format!("{k}={v}")).collect();
        let command = format!("[{}] {} {}", self.host.name, shown_env.join(" "), argv.join(" "));
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        let writer = stdin.map(|s| {
            let mut pipe = child.stdin.take().unwrap();
            let data = s.to_owned();
            std::thread::spawn(move || {
                let _ = pipe.write_all(data.as_bytes());
            })
        });
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {command}: {e}"));
        let elapsed = start.elapsed();
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(stdout.trim()).ok();
        CniOutput {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            json,
            elapsed,
        }
    }

    /// Runs `cnitool <op> <network> <netns>` (op: add, check, del, gc or status: cnitool
    /// from libcni 1.3; `gc` DELs every attachment of the network in libcni's cache,
    /// then sends GC with no valid attachments, for conflists at 1.1.0) in the host
    /// namespace with `NETCONFPATH`=[`TestEnv::net_dir`], `CNI_PATH` from
    /// `opts.plugins`, `CNI_SUITE_STATE_DIR`=[`TestEnv::state_dir`] and the
    /// `CNI_IFNAME`/`CNI_ARGS`/`CAP_ARGS` in `opts`. Panics clearly if cnitool or a
    /// plugin binary named by a conflist written with `write_conflist` is missing;
    /// a failing CNI call is returned, not a panic.
    pub fn cnitool(&self, op: &str, network: &str, ctr: &Netns, opts: &CniOpts) -> CniOutput {
        assert!(
            matches!(op, "add" | "check" | "del" | "gc" | "status"),
            "cnitool {op}: cnitool knows add, check, del, gc and status; \
             use exec_plugin for VERSION or a GC with valid attachments"
        );
        if !self.cnitool.is_file() {
            panic!(
                "cnitool not found at {}: run scripts/install-deps.sh (or set CNITOOL)",
                self.cnitool.display()
            );
        }
        self.check_conflist_plugins(network, &opts.plugins);
        let dirs = self.plugin_dirs(&opts.plugins);
        let mut env = self.base_env(&dirs);
        env.push(("NETCONFPATH".into(), self.net_dir().display().to_string()));
        if let Some(i) = &opts.ifname {
            env.push(("CNI_IFNAME".into(), i.clone()));
        }
        if let Some(a) = &opts.args {
            env.push(("CNI_ARGS".into(), a.clone()));
        }
        if let Some(c) = &opts.cap_args {
            env.push(("CAP_ARGS".into(), c.to_string()));
        }
        env.extend(opts.env.iter().cloned());
        let argv = vec![
            self.cnitool.display().to_string(),
            op.to_string(),
            network.to_string(),
            self.netns_arg(ctr, opts, true).display().to_string(),
        ];
        self.run_in_host(&argv, &env, None)
    }

    /// Runs one plugin binary directly in the host namespace, the way a runtime
    /// does: `env` (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, ...) plus
    /// `CNI_PATH`=(the binary's directory) and `CNI_SUITE_STATE_DIR`, unless `env`
    /// overrides them, and `stdin` as the config. `binary` is a path, or a bare
    /// name looked up in our plugin dir. For VERSION, GC and STATUS, which this
    /// cnitool cannot send.
    pub fn exec_plugin(&self, binary: &str, env: &[(&str, &str)], stdin: &str) -> CniOutput {
        let path = if binary.contains('/') {
            let p = PathBuf::from(binary);
            if !p.is_file() {
                panic!("plugin binary {} does not exist", p.display());
            }
            p
        } else {
            self.plugin_path(&Plugins::Ours, binary)
        };
        let dir = path.parent().unwrap().to_path_buf();
        let mut full = self.base_env(&[dir]);
        for (k, v) in env {
            full.retain(|(fk, _)| fk != k);
            full.push((k.to_string(), v.to_string()));
        }
        self.run_in_host(&[path.display().to_string()], &full, Some(stdin))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Daemons in the host namespace may hold files in the temp dir: stop them first.
        self.host.kill_everything();
        if std::env::var_os("CNI_SUITE_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
        // self.host is dropped after this, deleting the namespace.
    }
}

fn missing_plugin_message(name: &str, dirs: &[PathBuf], plugins: &Plugins) -> String {
    let hint = match plugins {
        Plugins::Ours => {
            "build them with `cargo build --workspace` (same profile and target dir \
                          as the tests) or point CNI_SUITE_BIN at a directory that has them"
        }
        Plugins::Reference => {
            "run scripts/install-deps.sh (builds them into .cache/reference-plugins)"
        }
        Plugins::Dirs(_) => "check the directories given in Plugins::Dirs",
    };
    format!("plugin binary `{name}` not found in {dirs:?}: {hint}")
}

fn our_plugin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CNI_SUITE_BIN") {
        return PathBuf::from(d);
    }
    // Test binaries live in <target>/<profile>/deps/; plugins in <target>/<profile>/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = deps.parent() {
                    return profile.to_path_buf();
                }
            }
        }
    }
    workspace_root().join("target/debug")
}

// ---------------------------------------------------------------------------
// checks tests make

/// One `ping -c1 -W1` from `from` to `addr` (IPv4 or IPv6); true if answered.
pub fn ping(from: &Netns, addr: impl Display) -> bool {
    let addr = addr.to_string();
    let out = if Path::new("/usr/bin/ping").exists() || Path::new("/bin/ping").exists() {
        from.exec(&["ping", "-n", "-q", "-c1", "-W1", &addr])
    } else {
        from.exec(&["busybox", "ping", "-q", "-c1", "-W1", &addr])
    };
    out.status.success()
}

/// True if a TCP connection from `from` to `addr:port` is accepted within 1 s.
pub fn tcp_connect(from: &Netns, addr: IpAddr, port: u16) -> bool {
    from.in_ns(|| {
        TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(1)).is_ok()
    })
}

/// Sends `msg` over TCP from `from` to `addr:port`, half-closes, and returns
/// what came back (None on any failure or after 2 s).
pub fn tcp_echo(from: &Netns, addr: IpAddr, port: u16, msg: &str) -> Option<String> {
    from.in_ns(|| {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(1))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(msg.as_bytes()).ok()?;
        s.shutdown(Shutdown::Write).ok()?;
        let mut back = String::new();
        s.read_to_string(&mut back).ok()?;
        Some(back)
    })
}

/// Sends one UDP datagram `msg` from `from` to `addr:port` and returns the
/// first reply (None after 1 s).
pub fn udp_echo(from: &Netns, addr: IpAddr, port: u16, msg: &str) -> Option<String> {
    from.in_ns(|| {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
        let s = UdpSocket::bind(bind).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.send_to(msg.as_bytes(), SocketAddr::new(addr, port)).ok()?;
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// An echo server (TCP or UDP) listening inside a namespace. Its socket is
/// created by a thread that entered the namespace; serving happens on plain
/// threads of the test process (no child processes). It records the peer
/// address of every connection/datagram, to check source NAT. Stops on drop.
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// TCP echo server in `ns` bound to `bind` (port 0 picks a free port).
    pub fn tcp(ns: &Netns, bind: SocketAddr) -> EchoServer {
        let listener = ns
            .in_ns(|| std::net::TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("cannot listen on tcp {bind} in {}: {e}", ns.name));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (stop2, peers2) = (stop.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        peers2.lock().unwrap().push(peer);
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut buf = [0u8; 4096];
                            loop {
                                match conn.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        EchoServer { addr, stop, peers, thread: Some(thread) }
    }

    /// UDP echo server in `ns` bound to `bind` (port 0 picks a free port).
    pub fn udp(ns: &Netns, bind: SocketAddr) -> EchoServer {
        let sock = ns
            .in_ns(|| UdpSocket::bind(bind))
            .unwrap_or_else(|e| panic!("cannot bind udp {bind} in {}: {e}", ns.name));
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (stop2, peers2) = (stop.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    peers2.lock().unwrap().push(peer);
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        EchoServer { addr, stop, peers, thread: Some(thread) }
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Peer addresses seen so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Interface names in `ns` (`ip -j link show`).
pub fn links(ns: &Netns) -> Vec<String> {
    links_json(ns, &["link", "show"])
}

/// Interface names of one link kind in `ns`, e.g. `"veth"`, `"bridge"`, `"macvlan"`.
pub fn links_of_kind(ns: &Netns, kind: &str) -> Vec<String> {
    links_json(ns, &["link", "show", "type", kind])
}

fn links_json(ns: &Netns, args: &[&str]) -> Vec<String> {
    ns.ip_json(args)
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.get("ifname").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An address assigned to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// Interface name.
    pub ifname: String,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

impl Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.ifname, self.addr, self.prefix_len)
    }
}

/// All addresses in `ns` (`ip -j addr show`), including loopback and link-local.
pub fn addresses(ns: &Netns) -> Vec<Addr> {
    let mut out = Vec::new();
    for link in ns.ip_json(&["addr", "show"]).as_array().into_iter().flatten() {
        let ifname = link.get("ifname").and_then(Value::as_str).unwrap_or_default();
        for a in link.get("addr_info").and_then(Value::as_array).into_iter().flatten() {
            let ip = a.get("local").and_then(Value::as_str).and_then(|s| s.parse().ok());
            let plen = a.get("prefixlen").and_then(Value::as_u64);
            if let (Some(addr), Some(p)) = (ip, plen) {
                out.push(Addr { ifname: ifname.to_string(), addr, prefix_len: p as u8 });
            }
        }
    }
    out
}

/// Routes of all tables in `ns` as `ip -j route show table all` JSON (`-6` for IPv6).
pub fn routes(ns: &Netns, ipv6: bool) -> Value {
    if ipv6 {
        ns.ip_json(&["-6", "route", "show", "table", "all"])
    } else {
        ns.ip_json(&["-4", "route", "show", "table", "all"])
    }
}

/// `nft list ruleset` in `ns`.
pub fn nft_ruleset(ns: &Netns) -> String {
    ns.exec_ok(&["nft", "list", "ruleset"])
}

/// The address of `ips[0]` in a CNI result, without its prefix length.
pub fn first_ip(result: &Value) -> IpAddr {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"));
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// An "outside" namespace joined to the host namespace by a veth: `uplink` 192.0.2.1/24 in
/// the host, `eth0` 192.0.2.2/24 outside (dropped by the caller).
pub fn outside_on_uplink(env: &TestEnv) -> Netns {
    let out = Netns::new("out");
    env.host().veth_to("uplink", &out, "eth0");
    env.host().ip_ok(&["addr", "add", "192.0.2.1/24", "dev", "uplink"]);
    out.ip_ok(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    out
}

/// Everything of ours left in the host namespace and the state directory: links other than
/// `lo` and `own_links` (those the test made itself), nftables lines naming our `cni_*`
/// tables, our iptables chains (`CNI-SUITE`), and state files other than host-local's
/// per-network `lock` (the reference keeps one too). Empty after a clean last DEL.
pub fn ours_left(env: &TestEnv, own_links: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    for l in links(env.host()) {
        if l != "lo" && !own_links.contains(&l.as_str()) {
            left.push(format!("link {l}"));
        }
    }
    // iptables-nft creates its own built-in tables; ours are the cni_* ones.
    for line in nft_ruleset(env.host()).lines().filter(|l| l.contains("cni_")) {
        left.push(format!("nft {}", line.trim().trim_end_matches(" {")));
    }
    if iptables_save(env.host()).contains("CNI-SUITE") {
        left.push("iptables CNI-SUITE chains".into());
    }
    for f in files_under(&env.state_dir()) {
        if !f.ends_with("lock") {
            // Small files (leases, cursors) with their content, to tell who left them.
            let content = fs::read(&f).ok().filter(|c| c.len() <= 200);
            let content = content
                .map(|c| format!(" = {:?}", String::from_utf8_lossy(&c)))
                .unwrap_or_default();
            left.push(format!("file {}{content}", f.display()));
        }
    }
    left
}

/// `iptables-save` in `ns` (this host's iptables uses the nf_tables backend).
pub fn iptables_save(ns: &Netns) -> String {
    ns.exec_ok(&["iptables-save"])
}

/// Every non-directory entry under `dir`, recursively, sorted (empty if `dir`
/// does not exist). For "nothing left behind" assertions.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(d) else { return };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, out),
                _ => out.push(p),
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}
