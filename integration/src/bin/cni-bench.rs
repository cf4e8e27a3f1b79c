//! `cni-bench`: our plugins against Debian's reference plugins, side by side, in one run.
//!
//! Scenarios (every one runs ours and the reference in the same process, interleaved sample
//! by sample so that drift on a noisy machine hits both alike):
//!
//! 1. `startup`: process start to a finished VERSION reply, for every binary of ours that has a
//!    reference counterpart (`none` vs `loopback`, `host` vs `host-device`, the rest by name),
//!    plus `/bin/true` as the machine's exec floor. Own loop (spawn, config on stdin, wait),
//!    and a `hyperfine -N` cross-check when hyperfine is installed.
//! 2. `bridge`: bridge + host-local ADD and DEL latency with N containers already on the bridge.
//! 3. `portmap`: bridge then portmap (bridge's result as `prevResult`, one unique host port per
//!    container) ADD, and DEL in reverse order, with N such containers already there. Besides
//!    the TCP mapping every lane publishes, an `ours-udp` lane runs our plugins with a UDP
//!    mapping instead, to show whether a UDP mapping costs what a TCP one does.
//!
//! For 2 and 3 each implementation gets its own private "host" network namespace (so the
//! reference's iptables rules never slow our calls down, nor the other way round), filled to N
//! by running the plugins themselves, sequentially, untimed. Then, per sample, one new container
//! per implementation is added (timed), and afterwards those containers are deleted (timed).
//! Plugins are invoked the way a runtime does: `CNI_*` environment, config on stdin, the
//! process's wall time from spawn to exit is what is measured.
//!
//! Safety: the machine's own network namespace is never changed. A host namespace is entered
//! by a worker thread of this process (setns), which also takes a private mount namespace with
//! `/sys` remounted for that network namespace (what `ip netns exec` does); plugins are spawned
//! from that thread and inherit both. Container namespaces are bind mounts under /run/netns
//! named `<tag>-...`; everything this run created is removed at the end, also on errors and on
//! SIGINT/SIGTERM (the calling script sweeps `<tag>-*` again in case this process is killed).
//!
//! ```text
//! cni-bench --out docs/benchmarks --work /tmp/cb [--ours DIR] [--reference DIR]
//!           [--levels 0,100,500,1000] [--samples 20[,20,15,10]] [--startup-runs 300]
//!           [--scenarios startup,bridge,portmap] [--no-ours-iptables] [--no-ours-udp]
//!           [--no-reference-nft] [--netavark PATH|none] [--hyperfine PATH|none] [--tag NAME]
//! ```
//! Writes `<out>/raw.csv` (every sample), `<out>/summary.csv` (per cell: count, median, p90,
//! min, max, failures; the plot is drawn from it) and `<work>/tables.md` (markdown for
//! results.md). Every lane that did not run, or was dropped, is named with the reason in a
//! `- left out: ...` line of tables.md (scripts/bench.sh gathers those lines into results.md).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Res<T> = Result<T, String>;

const NETNS_DIR: &str = "/run/netns";
const SUBNET: &str = "10.88.0.0/16";
const BRIDGE: &str = "cbr0";
const NETWORK: &str = "benchnet";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Host ports: fill containers use FILL_PORT + i, samples SAMPLE_PORT + level*100 + s.
const FILL_PORT: u32 = 20000;
const SAMPLE_PORT: u32 = 40000;

// ---------------------------------------------------------------------------
// interruption

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

fn check_stop() -> Res<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted by a signal".into())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// options

#[derive(Debug)]
struct Opts {
    ours: PathBuf,
    reference: PathBuf,
    /// The reference's own name for its version (`CNI bridge plugin v1.10.0`).
    reference_version: String,
    /// Also run the reference with its nftables backends (v1.6+: `ipMasqBackend`, `backend`).
    reference_nft: bool,
    /// netavark 2.x (`setup`/`teardown` of the same network), when given.
    netavark: Option<PathBuf>,
    /// Ask our plugins for timing marks (CNI_SUITE_TRACE=1) and write the breakdown.
    trace: bool,
    out: PathBuf,
    work: PathBuf,
    tag: String,
    levels: Vec<usize>,
    samples: Vec<usize>,
    startup_runs: usize,
    scenarios: Vec<String>,
    ours_iptables: bool,
    /// The `ours-udp` lane of the portmap scenario (our plugins, a UDP mapping).
    ours_udp: bool,
    hyperfine: Option<PathBuf>,
}

fn usage(msg: &str) -> ! {
    eprintln!("cni-bench: {msg}");
    eprintln!(
        "usage: cni-bench --out DIR --work DIR [--ours DIR] [--reference DIR] [--levels 0,100,500,1000]\n\
         \x20                [--samples 20[,..per level]] [--startup-runs 300] [--scenarios startup,bridge,portmap]\n\
         \x20                [--no-ours-iptables] [--no-ours-udp] [--no-reference-nft] [--no-trace]\n\
         \x20                [--netavark PATH|none] [--hyperfine PATH|none] [--tag NAME]"
    );
    std::process::exit(2)
}

fn parse_list(s: &str, what: &str) -> Res<Vec<usize>> {
    s.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("{what}: {x:?} is not a number")))
        .collect()
}

fn which(name: &str) -> Option<PathBuf> {
    PATH_ENV.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn parse_opts() -> Opts {
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    let pid = std::process::id();
    let mut o = Opts {
        ours: exe_dir.unwrap_or_else(|| PathBuf::from("target/release")),
        reference: PathBuf::from("/usr/lib/cni"),
        reference_version: String::new(),
        reference_nft: true,
        netavark: None,
        trace: true,
        out: PathBuf::from("docs/benchmarks"),
        work: std::env::temp_dir().join(format!("cni-bench-{pid}")),
        tag: format!("cbench{pid}"),
        levels: vec![0, 100, 500, 1000],
        samples: vec![20],
        startup_runs: 300,
        scenarios: vec!["startup".into(), "bridge".into(), "portmap".into()],
        ours_iptables: true,
        ours_udp: true,
        hyperfine: which("hyperfine"),
    };
    o = parse_args(std::env::args().skip(1), o).unwrap_or_else(|e| usage(&e));
    o.reference_version = reference_version(&o.reference);
    o
}

/// `CNI bridge plugin v1.10.0` is at least `min` (major, minor); an unknown version is not.
fn version_at_least(version: &str, min: (u32, u32)) -> bool {
    let v: Vec<u32> = version
        .rsplit('v')
        .next()
        .unwrap_or("")
        .split('.')
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    v.len() >= 2 && (v[0], v[1]) >= min
}

/// The command line over `o` (the defaults); pure, so that it is unit-tested.
fn parse_args(args: impl IntoIterator<Item = String>, mut o: Opts) -> Res<Opts> {
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--ours" => o.ours = PathBuf::from(val()?),
            "--reference" => o.reference = PathBuf::from(val()?),
            "--out" => o.out = PathBuf::from(val()?),
            "--work" => o.work = PathBuf::from(val()?),
            "--tag" => o.tag = val()?,
            "--levels" => o.levels = parse_list(&val()?, "--levels")?,
            "--samples" => o.samples = parse_list(&val()?, "--samples")?,
            "--startup-runs" => {
                o.startup_runs = *parse_list(&val()?, "--startup-runs")?
                    .first()
                    .ok_or("--startup-runs: no number")?
            }
            "--scenarios" => {
                o.scenarios = val()?.split(',').map(|s| s.trim().to_string()).collect()
            }
            "--no-ours-iptables" => o.ours_iptables = false,
            "--no-ours-udp" => o.ours_udp = false,
            "--no-reference-nft" => o.reference_nft = false,
            "--no-trace" => o.trace = false,
            "--netavark" => {
                let v = val()?;
                o.netavark = if v == "none" { None } else { Some(PathBuf::from(v)) };
            }
            "--hyperfine" => {
                let v = val()?;
                o.hyperfine = if v == "none" { None } else { Some(PathBuf::from(v)) };
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for s in &o.scenarios {
        if !matches!(s.as_str(), "startup" | "bridge" | "portmap") {
            return Err(format!("unknown scenario {s:?} (startup, bridge, portmap)"));
        }
    }
    if o.samples.is_empty() || o.samples.contains(&0) {
        return Err("--samples must be positive".into());
    }
    if o.samples.len() != 1 && o.samples.len() != o.levels.len() {
        return Err("--samples takes one number or one per level".into());
    }
    if o.tag.is_empty() || o.tag.len() > 20 || !o.tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("--tag: 1-20 letters or digits".into());
    }
    Ok(o)
}

/// What the reference bridge says it is when run without CNI_COMMAND.
fn reference_version(dir: &Path) -> String {
    let out = Command::new(dir.join("bridge")).env_clear().output();
    let text = out
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("CNI bridge plugin"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "CNI bridge plugin (unknown version)".into())
}

impl Opts {
    fn samples_at(&self, level_index: usize) -> usize {
        if self.samples.len() == 1 {
            self.samples[0]
        } else {
            self.samples[level_index]
        }
    }
}

// ---------------------------------------------------------------------------
// statistics

#[derive(Clone, Copy, Debug)]
struct Stats {
    n: usize,
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
}

/// Median (mean of the two middle values for an even count) and nearest-rank p90.
fn stats(v: &[f64]) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
    Some(Stats { n, median, p90: s[rank - 1], min: s[0], max: s[n - 1] })
}

fn fmt_ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

fn cell(s: Option<Stats>) -> String {
    match s {
        Some(s) => format!("{} / {}", fmt_ms(s.median), fmt_ms(s.p90)),
        None => "—".into(),
    }
}

fn ratio(reference: Option<Stats>, ours: Option<Stats>) -> String {
    match (reference, ours) {
        (Some(r), Some(o)) if o.median > 0.0 => format!("{:.1}×", r.median / o.median),
        _ => "—".into(),
    }
}

// ---------------------------------------------------------------------------
// raw data

/// Every measured sample, kept in memory for the summary and appended to raw.csv as it comes.
struct Recorder {
    csv: BufWriter<File>,
    rows: BTreeMap<(String, String, String, usize, String), Vec<f64>>,
    fails: BTreeMap<(String, String, String, usize, String), usize>,
    /// Our plugins' trace: (scenario, N, op, component) -> ms per sample.
    marks: BTreeMap<(String, usize, String, String), Vec<f64>>,
    /// Components in the order they first appeared, per (scenario, op).
    mark_order: BTreeMap<(String, String), Vec<String>>,
}

impl Recorder {
    fn new(path: &Path) -> Res<Recorder> {
        let f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut csv = BufWriter::new(f);
        writeln!(csv, "scenario,impl,plugin,n,op,sample,ms,detail").map_err(|e| e.to_string())?;
        Ok(Recorder {
            csv,
            rows: BTreeMap::new(),
            fails: BTreeMap::new(),
            marks: BTreeMap::new(),
            mark_order: BTreeMap::new(),
        })
    }

    fn add_marks(&mut self, scenario: &str, n: usize, op: &str, marks: &Marks) {
        // Several marks of one name in a call (none today) add up.
        let mut per: Vec<(String, f64)> = Vec::new();
        for (name, ms) in marks {
            match per.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v += ms,
                None => per.push((name.clone(), *ms)),
            }
        }
        let order = self.mark_order.entry((scenario.into(), op.into())).or_default();
        for (name, ms) in per {
            if !order.contains(&name) {
                order.push(name.clone());
            }
            self.marks.entry((scenario.into(), n, op.into(), name)).or_default().push(ms);
        }
    }

    fn write_trace(&self, path: &Path) -> Res<()> {
        let mut s = String::from("scenario,n,op,component,count,median_ms,p90_ms\n");
        for ((sc, n, op, c), v) in &self.marks {
            if let Some(st) = stats(v) {
                let _ = writeln!(s, "{sc},{n},{op},{c},{},{:.4},{:.4}", st.n, st.median, st.p90);
            }
        }
        fs::write(path, s).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Markdown: where our ADD and DEL time goes, per component, median ms per level.
    fn trace_table(&self, scenario: &str, who: &str, levels: &[usize], md: &mut String) {
        for op in ["ADD", "DEL"] {
            let Some(order) = self.mark_order.get(&(scenario.to_string(), op.to_string())) else {
                continue;
            };
            let _ = writeln!(md, "Where {who} spends an {op} (CNI_SUITE_TRACE=1 marks; median ms per step; `spawn` = fork/exec to `main`, `reap` = last mark to the parent's wait returning):\n");
            let _ = write!(md, "| step |");
            for n in levels {
                let _ = write!(md, " N={n} |");
            }
            let _ = writeln!(md);
            let _ = write!(md, "|---|");
            for _ in levels {
                let _ = write!(md, "---:|");
            }
            let _ = writeln!(md);
            for c in order {
                let _ = write!(md, "| {c} |");
                for n in levels {
                    let v = self.marks.get(&(scenario.to_string(), *n, op.to_string(), c.clone()));
                    let cellv =
                        v.and_then(|v| stats(v)).map(|st| fmt_ms(st.median)).unwrap_or("—".into());
                    let _ = write!(md, " {cellv} |");
                }
                let _ = writeln!(md);
            }
            let _ = writeln!(md);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        scenario: &str,
        imp: &str,
        plugin: &str,
        n: usize,
        op: &str,
        sample: usize,
        ms: f64,
        detail: &str,
    ) {
        let _ = writeln!(self.csv, "{scenario},{imp},{plugin},{n},{op},{sample},{ms:.4},{detail}");
        let _ = self.csv.flush();
        self.rows
            .entry((scenario.into(), imp.into(), plugin.into(), n, op.into()))
            .or_default()
            .push(ms);
    }

    fn fail(&mut self, scenario: &str, imp: &str, plugin: &str, n: usize, op: &str, sample: usize) {
        let _ = writeln!(self.csv, "{scenario},{imp},{plugin},{n},{op},{sample},,failed");
        let _ = self.csv.flush();
        *self
            .fails
            .entry((scenario.into(), imp.into(), plugin.into(), n, op.into()))
            .or_default() += 1;
    }

    fn get(&self, scenario: &str, imp: &str, plugin: &str, n: usize, op: &str) -> Option<Stats> {
        self.rows
            .get(&(scenario.into(), imp.into(), plugin.into(), n, op.into()))
            .and_then(|v| stats(v))
    }

    fn failures(&self, scenario: &str, imp: &str, plugin: &str, n: usize, op: &str) -> usize {
        self.fails
            .get(&(scenario.into(), imp.into(), plugin.into(), n, op.into()))
            .copied()
            .unwrap_or(0)
    }

    fn write_summary(&self, path: &Path) -> Res<()> {
        let mut s =
            String::from("scenario,impl,plugin,n,op,count,median_ms,p90_ms,min_ms,max_ms,failed\n");
        for ((sc, imp, plugin, n, op), v) in &self.rows {
            if let Some(st) = stats(v) {
                let failed = self.failures(sc, imp, plugin, *n, op);
                let _ = writeln!(
                    s,
                    "{sc},{imp},{plugin},{n},{op},{},{:.4},{:.4},{:.4},{:.4},{failed}",
                    st.n, st.median, st.p90, st.min, st.max
                );
            }
        }
        fs::write(path, s).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

// ---------------------------------------------------------------------------
// namespaces

fn cstr(p: &Path) -> Res<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("NUL in path {}", p.display()))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn run_quiet(argv: &[&str]) -> Res<()> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Creates network namespaces bound at `paths` (under /run/netns, like `ip netns add`): a
/// short-lived thread unshares a fresh network namespace per path and bind-mounts it; the
/// thread then exits, the mounts keep the namespaces alive. The caller's own namespace is
/// never touched.
fn make_netns(paths: &[PathBuf]) -> Res<()> {
    let paths = paths.to_vec();
    std::thread::spawn(move || -> Res<()> {
        let src = CString::new("/proc/thread-self/ns/net").unwrap();
        for p in &paths {
            // SAFETY: unshare only affects this (throwaway) thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(os_err("unshare(CLONE_NEWNET)"));
            }
            File::options()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
            let target = cstr(p)?;
            // SAFETY: valid C strings; a bind mount of our own namespace file.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                let e = os_err(&format!("bind mount of a new netns on {}", p.display()));
                let _ = fs::remove_file(p);
                return Err(e);
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| "netns thread died".to_string())?
}

/// Removes a namespace made by [`make_netns`] (what `ip netns del` does).
fn del_netns(p: &Path) {
    if let Ok(c) = cstr(p) {
        // SAFETY: valid C string; failure (not mounted) is fine.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
    let _ = fs::remove_file(p);
}

/// Active `net_namespace` objects in /proc/slabinfo (None if unreadable): used to wait until
/// the kernel has really torn down the namespaces we deleted before measuring anything else.
fn netns_in_kernel() -> Option<u64> {
    let s = fs::read_to_string("/proc/slabinfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("net_namespace "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (bounded) until the kernel has freed the namespaces just deleted: the count of live
/// network namespaces is machine-wide (other users create them too), so this stops when it is
/// back to `baseline` or has not gone down for 5 s.
fn wait_kernel_cleanup(baseline: Option<u64>, limit: Duration) {
    let Some(base) = baseline else {
        std::thread::sleep(Duration::from_secs(5));
        return;
    };
    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut lowest = u64::MAX;
    let mut lowest_at = Instant::now();
    loop {
        let now = netns_in_kernel().unwrap_or(0);
        if now < lowest {
            lowest = now;
            lowest_at = Instant::now();
        }
        if now <= base + 2 || lowest_at.elapsed() > Duration::from_secs(5) {
            eprintln!("  kernel netns cleanup done ({:.1} s)", start.elapsed().as_secs_f64());
            return;
        }
        if start.elapsed() > limit || STOP.load(Ordering::SeqCst) {
            eprintln!(
                "  kernel still tearing down {} namespaces; going on",
                now.saturating_sub(base)
            );
            return;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  waiting for the kernel to free {} namespaces...",
                now.saturating_sub(base)
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A private "host" network namespace, with a worker thread living in it (and in a private
/// mount namespace where /sys belongs to it). Plugins are spawned by that thread.
struct Host {
    name: String,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

fn enter_host(path: &Path, name: &str, libcni: Option<&Path>) -> Res<()> {
    let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: plain syscalls affecting only the calling (worker) thread.
    unsafe {
        if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return Err(os_err(&format!("setns {}", path.display())));
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(os_err("unshare(CLONE_NEWNS)"));
        }
        let root = CString::new("/").unwrap();
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return Err(os_err("mount --make-rslave /"));
        }
        let sys = CString::new("/sys").unwrap();
        let fstype = CString::new("sysfs").unwrap();
        let src = CString::new(name).map_err(|_| "bad name".to_string())?;
        libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
        if libc::mount(src.as_ptr(), sys.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) != 0 {
            return Err(os_err("mount sysfs"));
        }
        if let Some(dir) = libcni {
            let target = CString::new("/var/lib/cni").unwrap();
            let from = cstr(dir)?;
            if libc::mount(
                from.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(os_err("bind mount on /var/lib/cni"));
            }
        }
    }
    Ok(())
}

impl Host {
    fn new(name: String, work: &Path) -> Res<Host> {
        run_quiet(&["ip", "netns", "add", &name])?;
        let mut host = Host { name: name.clone(), tx: None, thread: None };
        // Whatever writes to /var/lib/cni (libcni's cache, a default dataDir) lands in our work
        // dir instead; only when that directory exists, so nothing is created outside.
        let libcni = if Path::new("/var/lib/cni").is_dir() {
            let d = work.join(format!("varlibcni-{name}"));
            fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            Some(d)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
        let path = netns_path(&name);
        let t = std::thread::Builder::new()
            .name(format!("host-{name}"))
            .spawn(move || {
                let r = enter_host(&path, &name, libcni.as_deref());
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if ok {
                    for job in rx {
                        job();
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        host.thread = Some(t);
        ready_rx.recv().map_err(|_| "host worker died".to_string())??;
        host.tx = Some(tx);
        host.run(|| run_quiet(&["ip", "link", "set", "lo", "up"]))??;
        Ok(host)
    }

    /// Runs `f` on the worker thread (inside the host namespace) and returns its result.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Res<T> {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or("host worker not running")?
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .map_err(|_| "host worker gone".to_string())?;
        rrx.recv().map_err(|_| "host worker died".to_string())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = run_quiet(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Container namespaces this run created; all removed on drop.
#[derive(Default)]
struct Containers {
    paths: Vec<PathBuf>,
}

impl Containers {
    fn make(&mut self, paths: &[PathBuf]) -> Res<()> {
        let r = make_netns(paths);
        // Register whatever exists, also on a partial failure.
        for p in paths {
            if p.exists() {
                self.paths.push(p.clone());
            }
        }
        r
    }

    fn remove(&mut self, p: &Path) {
        del_netns(p);
        self.paths.retain(|x| x != p);
    }

    fn clear(&mut self) {
        for p in self.paths.drain(..) {
            del_netns(&p);
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.clear();
    }
}

// ---------------------------------------------------------------------------
// running plugins

struct Proc {
    ms: f64,
    spawn_ns: u64,
    end_ns: u64,
    ok: bool,
    code: i32,
    stdout: String,
    stderr: String,
}

/// Spawns `bin` with exactly `env`, writes `stdin`, waits; the wall time covers spawn to reap.
fn exec(bin: &Path, env: &[(String, String)], stdin: &str) -> Res<Proc> {
    exec_args(bin, &[], env, stdin)
}

fn exec_args(bin: &Path, args: &[&str], env: &[(String, String)], stdin: &str) -> Res<Proc> {
    let spawn_ns = mono_ns();
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if let Some(mut pipe) = child.stdin.take() {
        // Configs are far below the pipe buffer, so this never blocks on a child not reading.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let out =
        child.wait_with_output().map_err(|e| format!("waiting for {}: {e}", bin.display()))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(Proc {
        ms,
        spawn_ns,
        end_ns: mono_ns(),
        ok: out.status.success(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Ours,
    OursIpt,
    /// Ours with the published port on UDP (portmap scenario only).
    OursUdp,
    Ref,
    RefNft,
    Netavark,
}

impl Impl {
    fn key(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::OursIpt => "ours-iptables",
            Impl::OursUdp => "ours-udp",
            Impl::Ref => "reference",
            Impl::RefNft => "reference-nft",
            Impl::Netavark => "netavark",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Impl::Ours => "o",
            Impl::OursIpt => "i",
            Impl::OursUdp => "u",
            Impl::Ref => "r",
            Impl::RefNft => "n",
            Impl::Netavark => "v",
        }
    }
    /// Our lanes whose plugins are asked for timing marks.
    fn traced(self) -> bool {
        matches!(self, Impl::Ours | Impl::OursUdp)
    }
    /// The protocol of the published port (portmap scenario).
    fn protocol(self) -> &'static str {
        if self == Impl::OursUdp {
            "udp"
        } else {
            "tcp"
        }
    }
    fn label(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::OursIpt => "ours (iptables)",
            Impl::OursUdp => "ours (UDP port)",
            Impl::Ref => "reference (iptables)",
            Impl::RefNft => "reference (nftables)",
            Impl::Netavark => "netavark",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Bridge,
    Portmap,
}

impl Scenario {
    fn key(self) -> &'static str {
        match self {
            Scenario::Bridge => "bridge",
            Scenario::Portmap => "portmap",
        }
    }
    fn plugins(self) -> &'static str {
        match self {
            Scenario::Bridge => "bridge+host-local",
            Scenario::Portmap => "bridge+portmap",
        }
    }
}

/// Everything a plugin call of one implementation in one scenario needs; cloned into jobs.
#[derive(Clone)]
struct Setup {
    scenario: Scenario,
    imp: Impl,
    plugin_dir: PathBuf,
    state_dir: PathBuf,
    ipam_dir: PathBuf,
    /// The netavark binary (Impl::Netavark).
    netavark: Option<PathBuf>,
    /// Ask for timing marks (ours only).
    trace: bool,
}

/// One call's timing marks: (mark, ms since the spawn).
type Marks = Vec<(String, f64)>;

/// Monotonic nanoseconds (the clock the plugins' trace marks use).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The `cni-trace <mark> <ns>` lines of one call, as the time each step took: from the
/// spawn to the first mark ("spawn"), between marks (named by the later one), and from the
/// last mark to the reaped exit ("reap").
fn marks_of(p: &Proc, prefix: &str) -> Marks {
    let mut out = Vec::new();
    let mut last = p.spawn_ns;
    for l in p.stderr.lines() {
        let mut it = l.split_whitespace();
        if it.next() != Some("cni-trace") {
            continue;
        }
        let (Some(name), Some(ns)) = (it.next(), it.next().and_then(|x| x.parse::<u64>().ok()))
        else {
            continue;
        };
        let name = if name == "main" { "spawn" } else { name };
        let name = if name.contains(':') { name.to_string() } else { format!("{prefix}{name}") };
        out.push((name, ns.saturating_sub(last) as f64 / 1e6));
        last = ns;
    }
    if !out.is_empty() {
        out.push((format!("{prefix}reap"), p.end_ns.saturating_sub(last) as f64 / 1e6));
    }
    out
}

/// The static IP netavark gets (it does no IPAM; podman passes the address): from the
/// container's unique host port.
fn netavark_ip(port: u32) -> String {
    let n = port - FILL_PORT + 2;
    format!("10.88.{}.{}", n / 256, n % 256)
}

impl Setup {
    fn env(&self, command: &str, id: &str, netns: &Path) -> Vec<(String, String)> {
        let mut v = vec![
            ("PATH".into(), PATH_ENV.into()),
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), id.into()),
            ("CNI_NETNS".into(), netns.display().to_string()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_PATH".into(), self.plugin_dir.display().to_string()),
            ("CNI_SUITE_STATE_DIR".into(), self.state_dir.display().to_string()),
        ];
        if self.trace {
            v.push(("CNI_SUITE_TRACE".into(), "1".into()));
        }
        v
    }

    fn bridge_conf(&self) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "bridge": BRIDGE,
            "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": self.ipam_dir}
        });
        if self.scenario == Scenario::Portmap {
            // As in integration/tests/portmap.rs: Docker's -p needs hairpin.
            c["hairpinMode"] = json!(true);
        }
        match self.imp {
            Impl::Ours | Impl::OursUdp => c["firewallBackend"] = json!("nftables"),
            Impl::OursIpt => c["firewallBackend"] = json!("iptables"),
            Impl::RefNft => c["ipMasqBackend"] = json!("nftables"),
            Impl::Ref | Impl::Netavark => {}
        }
        c
    }

    fn portmap_conf(&self, port: u32) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": NETWORK, "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": self.imp.protocol()}]}
        });
        match self.imp {
            Impl::Ours | Impl::OursUdp => c["backend"] = json!("nftables"),
            Impl::OursIpt => c["backend"] = json!("iptables"),
            Impl::RefNft => c["backend"] = json!("nftables"),
            Impl::Ref | Impl::Netavark => {}
        }
        c
    }

    /// netavark's input for one container: the same bridge network, its address, and (in
    /// the portmap scenario) one published port.
    fn netavark_conf(&self, id: &str, port: u32) -> Value {
        let ports = if self.scenario == Scenario::Portmap {
            json!([{"host_ip": "", "container_port": 80, "host_port": port, "range": 1, "protocol": "tcp"}])
        } else {
            json!([])
        };
        json!({
            "container_id": format!("{id:0>64}"),
            "container_name": id,
            "port_mappings": ports,
            "networks": {NETWORK: {"static_ips": [netavark_ip(port)], "interface_name": "eth0"}},
            "network_info": {NETWORK: {
                "name": NETWORK, "id": format!("{:0>64}", "beef"), "driver": "bridge",
                "network_interface": BRIDGE,
                "subnets": [{"subnet": SUBNET, "gateway": "10.88.0.1"}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false,
                "ipam_options": {"driver": "host-local"}
            }}
        })
    }

    fn netavark(&self, command: &str, id: &str, netns: &Path, port: u32) -> Res<Proc> {
        let bin = self.netavark.clone().ok_or("netavark binary not given")?;
        let config = self.state_dir.join("netavark");
        let env = vec![("PATH".to_string(), PATH_ENV.to_string())];
        // netavark reads its input from a file (as podman passes it); written before the
        // timed spawn.
        let input = self.state_dir.join(format!("{id}.json"));
        fs::write(&input, self.netavark_conf(id, port).to_string())
            .map_err(|e| format!("writing {}: {e}", input.display()))?;
        let cfg = config.display().to_string();
        let ns = netns.display().to_string();
        let file = input.display().to_string();
        let p = exec_args(&bin, &["--config", &cfg, "-f", &file, command, &ns], &env, "")?;
        if command == "teardown" {
            let _ = fs::remove_file(&input);
        }
        if !p.ok {
            return Err(format!(
                "netavark {command} {id} failed (exit {}):\n  stdout: {}\n  stderr: {}",
                p.code,
                p.stdout.trim(),
                p.stderr.trim()
            ));
        }
        Ok(p)
    }

    fn call(&self, plugin: &str, command: &str, id: &str, netns: &Path, conf: &Value) -> Res<Proc> {
        let bin = self.plugin_dir.join(plugin);
        let p = exec(&bin, &self.env(command, id, netns), &conf.to_string())?;
        if !p.ok {
            return Err(format!(
                "{} {plugin} {command} {id} failed (exit {}):\n  stdout: {}\n  stderr: {}",
                self.imp.key(),
                p.code,
                p.stdout.trim(),
                p.stderr.trim()
            ));
        }
        Ok(p)
    }

    /// ADD as a runtime does it: bridge, then (portmap scenario) portmap with bridge's result
    /// as prevResult. Returns (total ms, detail, the final result for DEL).
    fn add(&self, id: &str, netns: &Path, port: u32) -> Res<(f64, String, Value, Marks)> {
        if self.imp == Impl::Netavark {
            let p = self.netavark("setup", id, netns, port)?;
            return Ok((p.ms, format!("netavark={:.3}", p.ms), json!({}), Vec::new()));
        }
        let conf = self.bridge_conf();
        let b = self.call("bridge", "ADD", id, netns, &conf)?;
        let mut marks = marks_of(&b, "bridge:");
        let result: Value = serde_json::from_str(b.stdout.trim())
            .map_err(|e| format!("bridge ADD {id}: result is not JSON ({e}): {}", b.stdout))?;
        if self.scenario == Scenario::Bridge {
            return Ok((b.ms, format!("bridge={:.3}", b.ms), result, marks));
        }
        let mut pconf = self.portmap_conf(port);
        pconf["prevResult"] = result;
        let p = self.call("portmap", "ADD", id, netns, &pconf)?;
        marks.extend(marks_of(&p, "portmap:"));
        let fin: Value = serde_json::from_str(p.stdout.trim())
            .map_err(|e| format!("portmap ADD {id}: result is not JSON ({e}): {}", p.stdout))?;
        Ok((b.ms + p.ms, format!("bridge={:.3};portmap={:.3}", b.ms, p.ms), fin, marks))
    }

    /// DEL in reverse order, each plugin given the cached final result as prevResult (libcni).
    fn del(&self, id: &str, netns: &Path, port: u32, prev: &Value) -> Res<(f64, String, Marks)> {
        if self.imp == Impl::Netavark {
            let p = self.netavark("teardown", id, netns, port)?;
            return Ok((p.ms, format!("netavark={:.3}", p.ms), Vec::new()));
        }
        let mut bconf = self.bridge_conf();
        bconf["prevResult"] = prev.clone();
        if self.scenario == Scenario::Bridge {
            let b = self.call("bridge", "DEL", id, netns, &bconf)?;
            return Ok((b.ms, format!("bridge={:.3}", b.ms), marks_of(&b, "bridge:")));
        }
        let mut pconf = self.portmap_conf(port);
        pconf["prevResult"] = prev.clone();
        let p = self.call("portmap", "DEL", id, netns, &pconf)?;
        let b = self.call("bridge", "DEL", id, netns, &bconf)?;
        let mut marks = marks_of(&p, "portmap:");
        marks.extend(marks_of(&b, "bridge:"));
        Ok((p.ms + b.ms, format!("portmap={:.3};bridge={:.3}", p.ms, b.ms), marks))
    }
}

// ---------------------------------------------------------------------------
// scenario 1: process start

struct Startup {
    rows: Vec<(String, Option<String>)>,
}

fn startup(o: &Opts, rec: &mut Recorder, md: &mut String) -> Res<()> {
    let pairs: [(&str, Option<&str>); 8] = [
        ("none", Some("loopback")),
        ("bridge", Some("bridge")),
        ("portmap", Some("portmap")),
        ("host-local", Some("host-local")),
        ("static", Some("static")),
        ("macvlan", Some("macvlan")),
        ("host", Some("host-device")),
        ("dns-alias", None),
    ];
    let mut st = Startup { rows: Vec::new() };
    let mut startup_left_out = Vec::new();
    // (label used in records, impl key, path)
    let mut bins: Vec<(String, &'static str, PathBuf)> = Vec::new();
    for (ours, reference) in pairs {
        let p = o.ours.join(ours);
        if !p.is_file() {
            eprintln!("  startup: our {ours} not found in {}, skipped", o.ours.display());
            startup_left_out.push(format!("startup {ours}: not found in {}", o.ours.display()));
            continue;
        }
        bins.push((ours.to_string(), "ours", p));
        let refname = reference.filter(|r| o.reference.join(r).is_file());
        if let Some(r) = refname {
            bins.push((ours.to_string(), "reference", o.reference.join(r)));
        }
        st.rows.push((ours.to_string(), refname.map(String::from)));
    }
    let floor = Path::new("/bin/true");
    if floor.is_file() {
        bins.push(("/bin/true".into(), "baseline", floor.to_path_buf()));
    }
    let host = Host::new(format!("{}-st", o.tag), &o.work)?;
    let env: Vec<(String, String)> =
        vec![("PATH".into(), PATH_ENV.into()), ("CNI_COMMAND".into(), "VERSION".into())];
    let stdin = json!({"cniVersion": "1.0.0"}).to_string();
    let runs = o.startup_runs;
    let warmup = 20.min(runs);
    eprintln!("startup: {} binaries x {runs} runs (+{warmup} warm-up), interleaved", bins.len());
    let jobs = bins.clone();
    let times: Res<Vec<Vec<f64>>> = host.run(move || {
        let mut times = vec![Vec::with_capacity(runs); jobs.len()];
        for round in 0..(warmup + runs) {
            check_stop()?;
            // Rotate the order each round so no binary always follows the same one.
            for k in 0..jobs.len() {
                let i = (round + k) % jobs.len();
                let (label, imp, path) = &jobs[i];
                let p = exec(path, &env, &stdin)?;
                let good = p.ok && (*imp == "baseline" || p.stdout.contains("supportedVersions"));
                if !good {
                    return Err(format!(
                        "{imp} {label} VERSION failed: {} {}",
                        p.stdout.trim(),
                        p.stderr.trim()
                    ));
                }
                if round >= warmup {
                    times[i].push(p.ms);
                }
            }
        }
        Ok(times)
    })?;
    let times = times?;
    for (i, (label, imp, _)) in bins.iter().enumerate() {
        for (s, ms) in times[i].iter().enumerate() {
            rec.add("startup", imp, label, 0, "VERSION", s, *ms, "");
        }
    }

    // hyperfine -N cross-check (stdin is empty there; every plugin answers VERSION anyway).
    let mut hf_ok = false;
    let mut hf_left_out =
        o.hyperfine.is_none().then(|| "hyperfine not found (or --hyperfine none)".to_string());
    if let Some(hf) = &o.hyperfine {
        eprintln!("startup: hyperfine -N cross-check");
        let json_path = o.work.join("hyperfine.json");
        let mut argv: Vec<String> = vec![
            hf.display().to_string(),
            "-N".into(),
            "--style".into(),
            "none".into(),
            "--warmup".into(),
            "20".into(),
            "--runs".into(),
            runs.to_string(),
            "--export-json".into(),
            json_path.display().to_string(),
        ];
        for (label, imp, path) in &bins {
            argv.push("-n".into());
            argv.push(format!("{imp}:{label}"));
            argv.push(path.display().to_string());
        }
        let env2: Vec<(String, String)> =
            vec![("PATH".into(), PATH_ENV.into()), ("CNI_COMMAND".into(), "VERSION".into())];
        let r = host.run(move || {
            Command::new(&argv[0])
                .args(&argv[1..])
                .env_clear()
                .envs(env2.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
        })?;
        match r {
            Ok(out) if out.status.success() => {
                let text =
                    fs::read_to_string(&json_path).map_err(|e| format!("hyperfine json: {e}"))?;
                let v: Value =
                    serde_json::from_str(&text).map_err(|e| format!("hyperfine json: {e}"))?;
                for res in v["results"].as_array().into_iter().flatten() {
                    let cmd = res["command"].as_str().unwrap_or("");
                    let Some((imp, label)) = cmd.split_once(':') else { continue };
                    for (s, t) in res["times"].as_array().into_iter().flatten().enumerate() {
                        if let Some(t) = t.as_f64() {
                            rec.add("startup-hyperfine", imp, label, 0, "VERSION", s, t * 1e3, "");
                        }
                    }
                }
                hf_ok = true;
            }
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                eprintln!("  hyperfine failed: {why}");
                hf_left_out = Some(format!("failed: {}", why.lines().next().unwrap_or("")));
            }
            Err(e) => {
                eprintln!("  cannot run hyperfine: {e}");
                hf_left_out = Some(format!("cannot run {}: {e}", hf.display()));
            }
        }
    }
    drop(host);

    let _ = writeln!(md, "## 1. Process start to a finished VERSION reply\n");
    let _ = writeln!(
        md,
        "Each binary exec'd with `CNI_COMMAND=VERSION` and `{{\"cniVersion\":\"1.0.0\"}}` on stdin, timed from \
         spawn to reap by the driver, {runs} runs each after {warmup} warm-up rounds, all binaries interleaved \
         round by round. `/bin/true` is this machine's floor for starting any process.{}\n",
        if hf_ok { " The last columns are `hyperfine -N` over the same binaries (empty stdin), as a cross-check." } else { "" }
    );
    if hf_ok {
        let _ = writeln!(md, "| ours | reference | ours median / p90 (ms) | reference median / p90 (ms) | reference/ours | hyperfine ours / reference median (ms) | hyperfine ratio |");
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    } else {
        let _ = writeln!(md, "| ours | reference | ours median / p90 (ms) | reference median / p90 (ms) | reference/ours |");
        let _ = writeln!(md, "|---|---|---:|---:|---:|");
    }
    for (ours, reference) in &st.rows {
        let so = rec.get("startup", "ours", ours, 0, "VERSION");
        let sr = rec.get("startup", "reference", ours, 0, "VERSION");
        let refname = reference.clone().unwrap_or_else(|| "(none)".into());
        let _ = write!(
            md,
            "| `{ours}` | `{refname}` | {} | {} | {} |",
            cell(so),
            cell(sr),
            ratio(sr, so)
        );
        if hf_ok {
            let ho = rec.get("startup-hyperfine", "ours", ours, 0, "VERSION");
            let hr = rec.get("startup-hyperfine", "reference", ours, 0, "VERSION");
            let m = |s: Option<Stats>| s.map(|s| fmt_ms(s.median)).unwrap_or_else(|| "—".into());
            let _ = write!(md, " {} / {} | {} |", m(ho), m(hr), ratio(hr, ho));
        }
        let _ = writeln!(md);
    }
    if let Some(b) = rec.get("startup", "baseline", "/bin/true", 0, "VERSION") {
        let _ = write!(md, "| `/bin/true` (floor) | | {} | | |", cell(Some(b)));
        if hf_ok {
            let hb = rec.get("startup-hyperfine", "baseline", "/bin/true", 0, "VERSION");
            let _ =
                write!(md, " {} | |", hb.map(|s| fmt_ms(s.median)).unwrap_or_else(|| "—".into()));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
    if let Some(why) = hf_left_out {
        startup_left_out.push(format!("startup hyperfine cross-check: {why}"));
    }
    for l in &startup_left_out {
        let _ = writeln!(md, "{LEFT_OUT}{l}");
    }
    if !startup_left_out.is_empty() {
        let _ = writeln!(md);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// scenarios 2 and 3: latency vs number of containers

struct Lane {
    setup: Setup,
    host: Host,
    filled: usize,
    broken: Option<String>,
}

struct FillTime {
    imp: Impl,
    from: usize,
    to: usize,
    secs: f64,
}

/// The lanes a latency scenario runs, in table order, and those it leaves out with why.
#[derive(Debug, PartialEq)]
struct LanePlan {
    run: Vec<Impl>,
    left_out: Vec<(Impl, String)>,
}

/// Which lanes run in `scenario`, from the options alone (no file system access).
fn plan_lanes(o: &Opts, scenario: Scenario) -> LanePlan {
    let mut run = vec![Impl::Ours];
    let mut left_out = Vec::new();
    let mut choose = |imp: Impl, why_not: Option<String>| match why_not {
        None => run.push(imp),
        Some(why) => left_out.push((imp, why)),
    };
    choose(
        Impl::OursIpt,
        (!o.ours_iptables).then(|| "not asked for (--no-ours-iptables)".to_string()),
    );
    // A UDP mapping only exists where a port is published.
    if scenario == Scenario::Portmap {
        choose(Impl::OursUdp, (!o.ours_udp).then(|| "not asked for (--no-ours-udp)".to_string()));
    }
    choose(Impl::Ref, None);
    // The nftables backends of the reference appeared in v1.6.
    let ref_nft = if !o.reference_nft {
        Some("not asked for (--no-reference-nft)".to_string())
    } else if !version_at_least(&o.reference_version, (1, 6)) {
        Some(format!("{} has no nftables backend (v1.6 or newer has)", o.reference_version))
    } else {
        None
    };
    choose(Impl::RefNft, ref_nft);
    choose(
        Impl::Netavark,
        o.netavark.is_none().then(|| "no netavark binary given (--netavark none)".to_string()),
    );
    LanePlan { run, left_out }
}

/// Where the plugins of a (non-netavark) lane are.
fn plugin_dir(o: &Opts, imp: Impl) -> &Path {
    if matches!(imp, Impl::Ref | Impl::RefNft) {
        &o.reference
    } else {
        &o.ours
    }
}

fn latency(o: &Opts, scenario: Scenario, rec: &mut Recorder, md: &mut String) -> Res<()> {
    let sc = scenario.key();
    let baseline = netns_in_kernel();
    let plan = plan_lanes(o, scenario);
    let mut impls = Vec::new();
    let mut left_out: Vec<String> =
        plan.left_out.iter().map(|(imp, why)| format!("{sc} {}: {why}", imp.key())).collect();
    for imp in plan.run {
        let missing: Vec<&str> = match imp {
            Impl::Netavark => Vec::new(),
            _ => ["bridge", "host-local", "portmap"]
                .into_iter()
                .filter(|p| !plugin_dir(o, imp).join(p).is_file())
                .collect(),
        };
        if missing.is_empty() {
            impls.push(imp);
        } else {
            left_out.push(format!(
                "{sc} {}: {} not found in {}",
                imp.key(),
                missing.join(", "),
                plugin_dir(o, imp).display()
            ));
        }
    }
    if !impls.contains(&Impl::Ours) {
        return Err(format!("our plugins are missing in {}", o.ours.display()));
    }
    // Cleanup order: container namespaces first, then the hosts (and their worker threads).
    let mut lanes: Vec<Lane> = Vec::new();
    let mut ctrs = Containers::default();
    let r = latency_inner(o, scenario, &impls, &left_out, &mut lanes, &mut ctrs, rec, md);
    eprintln!(
        "{sc}: cleaning up ({} container namespaces, {} host namespaces)",
        ctrs.paths.len(),
        lanes.len()
    );
    ctrs.clear();
    lanes.clear();
    wait_kernel_cleanup(baseline, Duration::from_secs(180));
    r
}

#[allow(clippy::too_many_arguments)]
fn latency_inner(
    o: &Opts,
    scenario: Scenario,
    impls: &[Impl],
    left_out: &[String],
    lanes: &mut Vec<Lane>,
    ctrs: &mut Containers,
    rec: &mut Recorder,
    md: &mut String,
) -> Res<()> {
    let sc = scenario.key();
    let plugin = scenario.plugins();
    for imp in impls {
        let base = o.work.join(format!("{sc}-{}", imp.key()));
        // Runtime state where the plugins keep it by default (/run: no fsync, as in
        // production); IPAM leases in the work directory (durable, like /var/lib/cni).
        let run_state = Path::new("/run").join(&o.tag).join(format!("{sc}-{}", imp.key()));
        let setup = Setup {
            scenario,
            imp: *imp,
            plugin_dir: plugin_dir(o, *imp).to_path_buf(),
            state_dir: run_state,
            ipam_dir: base.join("ipam"),
            netavark: o.netavark.clone(),
            trace: false,
        };
        fs::create_dir_all(&setup.state_dir)
            .map_err(|e| format!("mkdir {}: {e}", setup.state_dir.display()))?;
        let host = Host::new(format!("{}-{}{}", o.tag, &sc[..1], imp.short()), &o.work)?;
        lanes.push(Lane { setup, host, filled: 0, broken: None });
    }
    let mut fills: Vec<FillTime> = Vec::new();
    let t_scenario = Instant::now();
    for (li, &level) in o.levels.iter().enumerate() {
        check_stop()?;
        // Fill every lane to `level`, sequentially, with the plugins themselves (untimed).
        for lane in lanes.iter_mut() {
            if lane.broken.is_some() || lane.filled >= level {
                continue;
            }
            let from = lane.filled;
            let t0 = Instant::now();
            let mut last = Instant::now();
            eprintln!("{sc}: filling {} {from} -> {level}", lane.setup.imp.key());
            while lane.filled < level {
                check_stop()?;
                let batch: Vec<usize> = (lane.filled..level.min(lane.filled + 50)).collect();
                let paths: Vec<PathBuf> = batch
                    .iter()
                    .map(|i| {
                        netns_path(&format!(
                            "{}-{}{}-f{i}",
                            o.tag,
                            &sc[..1],
                            lane.setup.imp.short()
                        ))
                    })
                    .collect();
                ctrs.make(&paths)?;
                let setup = lane.setup.clone();
                let items: Vec<(usize, PathBuf)> = batch.into_iter().zip(paths).collect();
                let r: Res<()> = lane.host.run(move || {
                    for (i, p) in items {
                        check_stop()?;
                        setup.add(&format!("fill{i:05}"), &p, FILL_PORT + i as u32)?;
                    }
                    Ok(())
                })?;
                if let Err(e) = r {
                    eprintln!(
                        "  {} fill failed, dropping it from this scenario: {e}",
                        lane.setup.imp.key()
                    );
                    check_stop()?;
                    lane.broken = Some(e);
                    break;
                }
                lane.filled = level.min(lane.filled + 50);
                if last.elapsed() > Duration::from_secs(10) {
                    eprintln!(
                        "  {} {}/{level} ({:.0} s)",
                        lane.setup.imp.key(),
                        lane.filled,
                        t0.elapsed().as_secs_f64()
                    );
                    last = Instant::now();
                }
            }
            if lane.broken.is_none() {
                let secs = t0.elapsed().as_secs_f64();
                eprintln!("  {} filled to {level} in {secs:.1} s", lane.setup.imp.key());
                fills.push(FillTime { imp: lane.setup.imp, from, to: level, secs });
            }
        }

        // Measure: per sample one new container per lane (lanes rotated), ADDs then DELs.
        let samples = o.samples_at(li);
        eprintln!("{sc}: N={level}: {samples} ADD + {samples} DEL per implementation");
        let t_level = Instant::now();
        struct Sample {
            lane: usize,
            sample: usize,
            id: String,
            netns: PathBuf,
            port: u32,
            result: Option<Value>,
            add_ms: f64,
        }
        let mut added: Vec<Sample> = Vec::new();
        for s in 0..samples {
            check_stop()?;
            let live: Vec<usize> =
                (0..lanes.len()).filter(|&i| lanes[i].broken.is_none()).collect();
            if live.is_empty() {
                return Err(format!("{sc}: every implementation failed"));
            }
            let paths: Vec<PathBuf> = live
                .iter()
                .map(|&i| {
                    netns_path(&format!(
                        "{}-{}{}-n{level}s{s}",
                        o.tag,
                        &sc[..1],
                        lanes[i].setup.imp.short()
                    ))
                })
                .collect();
            ctrs.make(&paths)?;
            for k in 0..live.len() {
                let j = (s + k) % live.len();
                let lane = &lanes[live[j]];
                let mut setup = lane.setup.clone();
                setup.trace = o.trace && setup.imp.traced();
                let id = format!("bench-n{level}-s{s}");
                let port = SAMPLE_PORT + (li as u32) * 100 + s as u32;
                let p = paths[j].clone();
                let (id2, p2) = (id.clone(), p.clone());
                let r = lane.host.run(move || setup.add(&id2, &p2, port))?;
                let key = setup_key(&lane.setup);
                match r {
                    Ok((ms, detail, result, marks)) => {
                        rec.add(sc, key, plugin, level, "ADD", s, ms, &detail);
                        rec.add_marks(&trace_key(sc, lane.setup.imp), level, "ADD", &marks);
                        added.push(Sample {
                            lane: live[j],
                            sample: s,
                            id,
                            netns: p,
                            port,
                            result: Some(result),
                            add_ms: ms,
                        });
                    }
                    Err(e) => {
                        eprintln!("  ADD failed: {e}");
                        rec.fail(sc, key, plugin, level, "ADD", s);
                        added.push(Sample {
                            lane: live[j],
                            sample: s,
                            id,
                            netns: p,
                            port,
                            result: None,
                            add_ms: 0.0,
                        });
                    }
                }
            }
        }
        // DELs, in the order the ADDs happened (rotation included).
        for smp in &added {
            check_stop()?;
            let lane = &lanes[smp.lane];
            let mut setup = lane.setup.clone();
            setup.trace = o.trace && setup.imp.traced();
            let key = setup_key(&lane.setup);
            let (id, p, port) = (smp.id.clone(), smp.netns.clone(), smp.port);
            let prev = smp.result.clone().unwrap_or_else(|| json!({"cniVersion": "1.0.0"}));
            let measured = smp.result.is_some();
            let r = lane.host.run(move || setup.del(&id, &p, port, &prev))?;
            let sample_no = smp.sample;
            match (r, measured) {
                (Ok((ms, detail, marks)), true) => {
                    rec.add(sc, key, plugin, level, "DEL", sample_no, ms, &detail);
                    rec.add(sc, key, plugin, level, "ADD+DEL", sample_no, smp.add_ms + ms, "");
                    rec.add_marks(&trace_key(sc, lane.setup.imp), level, "DEL", &marks);
                }
                (Ok(_), false) => {}
                (Err(e), _) => {
                    eprintln!("  DEL failed: {e}");
                    if measured {
                        rec.fail(sc, key, plugin, level, "DEL", sample_no);
                    }
                }
            }
        }
        for smp in &added {
            ctrs.remove(&smp.netns);
        }
        eprint!("  N={level} done in {:.1} s:", t_level.elapsed().as_secs_f64());
        for lane in lanes.iter() {
            let key = setup_key(&lane.setup);
            let a = rec.get(sc, key, plugin, level, "ADD");
            let d = rec.get(sc, key, plugin, level, "DEL");
            eprint!("  {key} ADD {} DEL {} ms;", cell(a), cell(d));
        }
        eprintln!();
    }
    let total = t_scenario.elapsed().as_secs_f64();

    // Markdown.
    let title = match scenario {
        Scenario::Bridge => {
            "## 2. bridge + host-local: ADD and DEL latency vs containers on the bridge"
        }
        Scenario::Portmap => {
            "## 3. bridge + portmap (one published port per container): ADD and DEL latency"
        }
    };
    let _ = writeln!(md, "{title}\n");
    let what = match scenario {
        Scenario::Bridge => "`bridge` (isGateway, isDefaultGateway, ipMasq) delegating to `host-local` on a /16; \
                             ADD and DEL are one bridge process each (plus the host-local it runs).",
        Scenario::Portmap => "`bridge` (as in 2, plus hairpinMode) then `portmap` with bridge's result as prevResult and \
                              one `hostPort -> 80/tcp` per container; ADD = bridge ADD + portmap ADD, DEL = portmap DEL + \
                              bridge DEL (each given the cached result as prevResult, as libcni does).",
    };
    let udp = if impls.contains(&Impl::OursUdp) {
        " `ours (UDP port)` is ours with `hostPort -> 80/udp` instead, in every container of its lane."
    } else {
        ""
    };
    let _ = writeln!(
        md,
        "{what}{udp} N containers of the same kind already exist on the bridge (each implementation in its own \
         private host namespace, filled by running the plugins). Per level, each sample adds one new container \
         per implementation (implementations rotated), then those are deleted. Times are wall time of the plugin \
         processes in ms, median / p90 over the samples; ADD+DEL is the sum per container. `ours` = our nftables \
         backend (the default); the reference is {} (`reference (nftables)`: `ipMasqBackend`/`backend` \
         `nftables`); netavark runs `setup`/`teardown` with the same network, address and port.\n",
        o.reference_version
    );
    let _ = write!(md, "| N | op |");
    for imp in impls {
        let _ = write!(md, " {} |", imp.label());
    }
    for imp in impls.iter().filter(|i| **i != Impl::Ours) {
        let _ = write!(md, " {} / ours |", imp.label());
    }
    let _ = writeln!(md);
    let _ = write!(md, "|---:|---|");
    for _ in 0..(impls.len() * 2 - 1) {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md);
    let mut notes = Vec::new();
    let mut lanes_left_out = left_out.to_vec();
    for op in ["ADD", "DEL", "ADD+DEL"] {
        for &level in o.levels.iter() {
            let so = rec.get(sc, "ours", plugin, level, op);
            let _ = write!(md, "| {level} | {op} |");
            for imp in impls {
                let _ = write!(md, " {} |", cell(rec.get(sc, imp.key(), plugin, level, op)));
            }
            for imp in impls.iter().filter(|i| **i != Impl::Ours) {
                let _ = write!(md, " {} |", ratio(rec.get(sc, imp.key(), plugin, level, op), so));
            }
            let _ = writeln!(md);
            for imp in impls {
                let f = rec.failures(sc, imp.key(), plugin, level, op);
                if f > 0 && rec.get(sc, imp.key(), plugin, level, op).is_none() {
                    lanes_left_out.push(format!(
                        "{sc} {} {op} at N={level}: all {f} samples failed",
                        imp.key()
                    ));
                } else if f > 0 {
                    notes.push(format!(
                        "{} {op} at N={level}: {f} failed sample(s), left out",
                        imp.key()
                    ));
                }
            }
        }
    }
    let _ = writeln!(md);
    if impls.contains(&Impl::OursUdp) {
        let median = |imp: Impl, op: &str, n: usize| {
            rec.get(sc, imp.key(), plugin, n, op).map(|st| st.median)
        };
        let _ = writeln!(md, "{}\n", udp_vs_tcp_line(&o.levels, median));
    }
    rec.trace_table(sc, "ours", &o.levels, md);
    if impls.contains(&Impl::OursUdp) {
        rec.trace_table(&trace_key(sc, Impl::OursUdp), "ours (UDP port)", &o.levels, md);
    }
    let _ = writeln!(md);
    for lane in lanes.iter() {
        if let Some(e) = &lane.broken {
            lanes_left_out.push(format!(
                "{sc} {}: failed while filling and was dropped: {}",
                lane.setup.imp.key(),
                e.lines().next().unwrap_or("")
            ));
        }
    }
    let _ = write!(md, "Fill (untimed in the table above; sequential ADDs with the same plugins):");
    for f in &fills {
        let per = if f.to > f.from { f.secs * 1e3 / (f.to - f.from) as f64 } else { 0.0 };
        let _ = write!(
            md,
            " {} {}→{}: {:.1} s ({} ms/container);",
            f.imp.key(),
            f.from,
            f.to,
            f.secs,
            fmt_ms(per)
        );
    }
    let _ = writeln!(md, " whole scenario {total:.0} s.\n");
    for n in notes {
        let _ = writeln!(md, "- note: {n}");
    }
    for l in lanes_left_out {
        let _ = writeln!(md, "{LEFT_OUT}{l}");
    }
    let _ = writeln!(md);

    Ok(())
}

/// The start of a markdown line naming a lane that did not run and why; scripts/bench.sh
/// gathers every such line of every bench into the "Left out" section of results.md.
const LEFT_OUT: &str = "- left out: ";

/// One line comparing our UDP mapping with our TCP one: ours-udp median / ours median per
/// level and op (above 1× = the UDP mapping costs more).
fn udp_vs_tcp_line(levels: &[usize], median: impl Fn(Impl, &str, usize) -> Option<f64>) -> String {
    let mut per_level = Vec::new();
    for &n in levels {
        let ops: Vec<String> = ["ADD", "DEL", "ADD+DEL"]
            .iter()
            .map(|op| {
                let r = match (median(Impl::OursUdp, op, n), median(Impl::Ours, op, n)) {
                    (Some(u), Some(t)) if t > 0.0 => format!("{:.2}×", u / t),
                    _ => "—".into(),
                };
                format!("{op} {r}")
            })
            .collect();
        per_level.push(format!("N={n}: {}", ops.join(", ")));
    }
    format!(
        "UDP vs TCP mapping, ours (UDP port) / ours median (above 1× = the UDP mapping costs more): {}.",
        per_level.join("; ")
    )
}

/// The trace of ours is kept under the scenario's name, that of ours-udp apart from it
/// (`portmap-udp` in trace.csv), so the two can be told apart step by step.
fn trace_key(scenario: &str, imp: Impl) -> String {
    if imp == Impl::OursUdp {
        format!("{scenario}-udp")
    } else {
        scenario.to_string()
    }
}

fn setup_key(s: &Setup) -> &'static str {
    s.imp.key()
}

// ---------------------------------------------------------------------------

fn main() {
    let o = parse_opts();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("cni-bench: needs root (network namespaces)");
        std::process::exit(1);
    }
    install_signal_handlers();
    for d in [&o.out, &o.work] {
        if let Err(e) = fs::create_dir_all(d) {
            eprintln!("cni-bench: cannot create {}: {e}", d.display());
            std::process::exit(1);
        }
    }
    if !Path::new(NETNS_DIR).is_dir() {
        let _ = fs::create_dir_all(NETNS_DIR);
    }
    let mut rec = match Recorder::new(&o.out.join("raw.csv")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cni-bench: {e}");
            std::process::exit(1);
        }
    };
    let mut md = String::new();
    let mut failed = Vec::new();
    let start = Instant::now();
    for sc in o.scenarios.clone() {
        let r = match sc.as_str() {
            "startup" => startup(&o, &mut rec, &mut md),
            "bridge" => latency(&o, Scenario::Bridge, &mut rec, &mut md),
            _ => latency(&o, Scenario::Portmap, &mut rec, &mut md),
        };
        eprintln!(
            "[{:.0} s] {sc} finished{}",
            start.elapsed().as_secs_f64(),
            if r.is_ok() { "" } else { " with an error" }
        );
        if let Err(e) = r {
            eprintln!("cni-bench: {sc}: {e}");
            let first = e.lines().next().unwrap_or("");
            let _ = writeln!(md, "**{sc}: not completed: {first}**\n");
            let _ = writeln!(md, "{LEFT_OUT}{sc}: every lane (not completed: {first})\n");
            failed.push(sc.clone());
            if STOP.load(Ordering::SeqCst) {
                break;
            }
        }
    }
    let not_asked: Vec<&str> = ["startup", "bridge", "portmap"]
        .into_iter()
        .filter(|sc| !o.scenarios.iter().any(|s| s == sc))
        .collect();
    for sc in &not_asked {
        let _ = writeln!(md, "{LEFT_OUT}{sc}: every lane (not asked for: --scenarios)");
    }
    if !not_asked.is_empty() {
        let _ = writeln!(md);
    }
    let _ = rec.csv.flush();
    let mut exit = 0;
    if let Err(e) = rec.write_summary(&o.out.join("summary.csv")) {
        eprintln!("cni-bench: {e}");
        exit = 1;
    }
    if let Err(e) = rec.write_trace(&o.out.join("trace.csv")) {
        eprintln!("cni-bench: {e}");
        exit = 1;
    }
    if let Err(e) = fs::write(o.work.join("tables.md"), &md) {
        eprintln!("cni-bench: cannot write tables.md: {e}");
        exit = 1;
    }
    if !failed.is_empty() {
        eprintln!("cni-bench: failed: {}", failed.join(", "));
        exit = 1;
    }
    let _ = fs::remove_dir_all(Path::new("/run").join(&o.tag));
    eprintln!("cni-bench: done in {:.0} s", start.elapsed().as_secs_f64());
    std::process::exit(exit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Opts {
        Opts {
            ours: "target/release".into(),
            reference: "/usr/lib/cni".into(),
            reference_version: "CNI bridge plugin v1.10.0".into(),
            reference_nft: true,
            netavark: Some("/bin/netavark".into()),
            trace: true,
            out: "out".into(),
            work: "work".into(),
            tag: "cb1".into(),
            levels: vec![0, 100],
            samples: vec![20],
            startup_runs: 300,
            scenarios: vec!["startup".into(), "bridge".into(), "portmap".into()],
            ours_iptables: true,
            ours_udp: true,
            hyperfine: None,
        }
    }

    fn parse(args: &[&str]) -> Res<Opts> {
        parse_args(args.iter().map(|s| s.to_string()), defaults())
    }

    #[test]
    fn no_ours_udp_turns_the_udp_lane_off_and_nothing_else() {
        let o = parse(&[]).unwrap();
        assert!(o.ours_udp && o.ours_iptables);
        let o = parse(&["--no-ours-udp"]).unwrap();
        assert!(!o.ours_udp);
        assert!(o.ours_iptables && o.reference_nft && o.netavark.is_some());
    }

    #[test]
    fn options_with_values_parse() {
        let o = parse(&[
            "--levels",
            "0,100,500",
            "--samples",
            "5,5,3",
            "--netavark",
            "none",
            "--scenarios",
            "portmap",
            "--tag",
            "cb42",
            "--no-ours-iptables",
        ])
        .unwrap();
        assert_eq!(o.levels, vec![0, 100, 500]);
        assert_eq!(o.samples, vec![5, 5, 3]);
        assert_eq!(o.netavark, None);
        assert_eq!(o.scenarios, vec!["portmap".to_string()]);
        assert_eq!(o.tag, "cb42");
        assert!(!o.ours_iptables);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse(&["--levels"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--levels", "0,x"]).unwrap_err().contains("not a number"));
        assert!(parse(&["--samples", "0"]).is_err());
        assert!(parse(&["--samples", "5,5,5"]).unwrap_err().contains("one per level"));
        assert!(parse(&["--scenarios", "udp"]).unwrap_err().contains("unknown scenario"));
        assert!(parse(&["--tag", "cb-1"]).is_err());
        assert!(parse(&["--no-ours-tcp"]).unwrap_err().contains("unknown argument"));
    }

    #[test]
    fn reference_versions_compare() {
        assert!(version_at_least("CNI bridge plugin v1.10.0", (1, 6)));
        assert!(version_at_least("CNI bridge plugin v1.6.0", (1, 6)));
        assert!(!version_at_least("CNI bridge plugin v1.1.1", (1, 6)));
        assert!(!version_at_least("CNI bridge plugin (unknown version)", (1, 6)));
    }

    #[test]
    fn the_udp_lane_runs_in_the_portmap_scenario_only() {
        let o = defaults();
        let all = [Impl::Ours, Impl::OursIpt, Impl::Ref, Impl::RefNft, Impl::Netavark];
        let p = plan_lanes(&o, Scenario::Bridge);
        assert_eq!(p, LanePlan { run: all.to_vec(), left_out: vec![] });
        let p = plan_lanes(&o, Scenario::Portmap);
        assert_eq!(
            p.run,
            vec![Impl::Ours, Impl::OursIpt, Impl::OursUdp, Impl::Ref, Impl::RefNft, Impl::Netavark]
        );
        assert!(p.left_out.is_empty());
    }

    #[test]
    fn every_lane_not_run_is_named_with_its_reason() {
        let mut o = parse(&["--no-ours-udp", "--no-ours-iptables", "--netavark", "none"]).unwrap();
        o.reference_version = "CNI bridge plugin v1.1.1".into();
        let p = plan_lanes(&o, Scenario::Portmap);
        assert_eq!(p.run, vec![Impl::Ours, Impl::Ref]);
        let why: BTreeMap<&str, &str> =
            p.left_out.iter().map(|(i, w)| (i.key(), w.as_str())).collect();
        assert_eq!(why.len(), 4);
        assert!(why["ours-iptables"].contains("--no-ours-iptables"));
        assert!(why["ours-udp"].contains("--no-ours-udp"));
        assert!(why["reference-nft"].contains("v1.1.1"));
        assert!(why["netavark"].contains("--netavark none"));
        // --no-ours-udp says nothing about a scenario without ports.
        assert!(!plan_lanes(&o, Scenario::Bridge)
            .left_out
            .iter()
            .any(|(i, _)| *i == Impl::OursUdp));
    }

    #[test]
    fn udp_line_is_the_median_ratio_per_level_and_op() {
        let median = |imp: Impl, op: &str, n: usize| match (imp, op, n) {
            (Impl::Ours, "ADD", 0) => Some(4.0),
            (Impl::OursUdp, "ADD", 0) => Some(5.0),
            (Impl::Ours, "DEL", 0) => Some(2.0),
            (Impl::OursUdp, "DEL", 0) => Some(2.0),
            (Impl::Ours, "ADD+DEL", 0) => Some(6.0),
            (Impl::OursUdp, "ADD+DEL", 0) => Some(7.0),
            (Impl::Ours, _, 100) => Some(3.0),
            _ => None,
        };
        let line = udp_vs_tcp_line(&[0, 100], median);
        assert!(line.contains("N=0: ADD 1.25×, DEL 1.00×, ADD+DEL 1.17×"), "{line}");
        assert!(line.contains("N=100: ADD —, DEL —, ADD+DEL —"), "{line}");
        assert!(line.starts_with("UDP vs TCP mapping"), "{line}");
    }

    #[test]
    fn the_udp_lane_is_traced_apart_from_ours() {
        assert!(Impl::Ours.traced() && Impl::OursUdp.traced());
        assert!(!Impl::Ref.traced() && !Impl::OursIpt.traced());
        assert_eq!(trace_key("portmap", Impl::Ours), "portmap");
        assert_eq!(trace_key("portmap", Impl::OursUdp), "portmap-udp");
    }

    #[test]
    fn udp_lane_publishes_a_udp_port_and_the_others_tcp() {
        let setup = |imp| Setup {
            scenario: Scenario::Portmap,
            imp,
            plugin_dir: "p".into(),
            state_dir: "s".into(),
            ipam_dir: "i".into(),
            netavark: None,
            trace: false,
        };
        let proto = |imp| {
            setup(imp).portmap_conf(40000)["runtimeConfig"]["portMappings"][0]["protocol"].clone()
        };
        assert_eq!(proto(Impl::OursUdp), json!("udp"));
        assert_eq!(proto(Impl::Ours), json!("tcp"));
        assert_eq!(setup(Impl::OursUdp).portmap_conf(40000)["backend"], json!("nftables"));
        assert_eq!(setup(Impl::OursUdp).bridge_conf()["firewallBackend"], json!("nftables"));
    }
}
