//! ADD/DEL latency of our `host-local` against the reference as the lease store fills up.
//!
//! Two stores on one /16, one per plugin, are filled to each level (0, 20k, 40k, 60k leases
//! by default) with exactly the files that many ADDs leave behind (our store: lease + index
//! link; the reference's: lease only). At each level both binaries are exec'd for `--samples`
//! ADDs, then a DEL of each of those containers (which brings the store back to the level), so
//! both pay process start. The reference gets at most `--budget` seconds per level and
//! operation (at least 10 samples) because its ADD and DEL read every lease file.
//!
//! ```text
//! cargo build --release -p cni-host-local
//! cargo run --release -p ipam --example fill_bench -- [--ours PATH] [--reference PATH]
//!     [--samples 200] [--levels 0,20000,40000,60000] [--budget 60] [--dir DIR]
//! ```
//! Prints a markdown table on stdout; progress goes to stderr.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NETWORK: &str = "bench";
const SUBNET: &str = "10.200.0.0/16";
const BASE: u32 = 0x0ac8_0000; // 10.200.0.0

struct Opts {
    ours: PathBuf,
    reference: PathBuf,
    samples: usize,
    levels: Vec<usize>,
    budget: Duration,
    dir: PathBuf,
}

fn usage(msg: &str) -> ! {
    eprintln!("fill_bench: {msg}");
    eprintln!("usage: fill_bench [--ours PATH] [--reference PATH] [--samples N] [--levels a,b,c] [--budget SECS] [--dir DIR]");
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    // Our binary sits next to the examples directory: target/<profile>/host-local.
    let default_ours = std::env::var_os("CNI_SUITE_BIN")
        .map(|d| PathBuf::from(d).join("host-local"))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent()?.parent().map(|p| p.join("host-local")))
        })
        .unwrap_or_else(|| PathBuf::from("target/release/host-local"));
    let mut o = Opts {
        ours: default_ours,
        reference: PathBuf::from("/usr/lib/cni/host-local"),
        samples: 200,
        levels: vec![0, 20_000, 40_000, 60_000],
        budget: Duration::from_secs(60),
        dir: std::env::temp_dir().join(format!("ipam-fill-bench-{}", std::process::id())),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--ours" => o.ours = PathBuf::from(val()),
            "--reference" => o.reference = PathBuf::from(val()),
            "--samples" => {
                o.samples = val().parse().unwrap_or_else(|_| usage("--samples: not a number"))
            }
            "--budget" => {
                o.budget = Duration::from_secs(
                    val().parse().unwrap_or_else(|_| usage("--budget: not a number")),
                )
            }
            "--dir" => o.dir = PathBuf::from(val()),
            "--levels" => {
                o.levels = val()
                    .split(',')
                    .map(|x| x.trim().parse().unwrap_or_else(|_| usage("--levels: not numbers")))
                    .collect()
            }
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    for (what, p) in [("--ours", &o.ours), ("--reference", &o.reference)] {
        if !p.is_file() {
            usage(&format!(
                "{what} {} does not exist (build with `cargo build --release -p cni-host-local`)",
                p.display()
            ));
        }
    }
    let max = *o.levels.iter().max().unwrap_or(&0) + 2 * o.samples;
    if max > 65_000 {
        usage("highest level plus 2 x samples must stay under 65000 (a /16)");
    }
    o
}

/// One plugin's store and how far it is filled.
struct Side {
    name: &'static str,
    binary: PathBuf,
    data_dir: PathBuf,
    /// Next address offset (from 10.200.0.0) the fill writes; .0 is the network, .1 the gateway.
    next: u32,
    filled: usize,
    with_index: bool,
}

impl Side {
    fn store(&self) -> PathBuf {
        self.data_dir.join(NETWORK)
    }

    /// Writes the files `n` more ADDs would leave: sequential addresses, round-robin cursor after them.
    fn fill_to(&mut self, level: usize) {
        let store = self.store();
        fs::create_dir_all(&store).unwrap();
        fs::write(store.join("lock"), b"").unwrap();
        let index = store.join(".by-container");
        while self.filled < level {
            let ip = Ipv4Addr::from(BASE + self.next);
            let id = format!("fill{}", self.next);
            let lease = store.join(ip.to_string());
            fs::write(&lease, format!("{id}\r\neth0")).unwrap();
            if self.with_index {
                let d = index.join(format!("{id}:eth0"));
                fs::create_dir_all(&d).unwrap();
                fs::hard_link(&lease, d.join(ip.to_string())).unwrap();
            }
            self.next += 1;
            self.filled += 1;
        }
        if self.next > 2 {
            fs::write(
                store.join("last_reserved_ip.0"),
                Ipv4Addr::from(BASE + self.next - 1).to_string(),
            )
            .unwrap();
        }
    }

    fn conf(&self) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{NETWORK}","type":"host-local","ipam":{{"type":"host-local","subnet":"{SUBNET}","dataDir":"{}"}}}}"#,
            self.data_dir.display()
        )
    }

    /// Execs the plugin once; returns the wall time, panics on failure.
    fn exec(&self, verb: &str, id: &str) -> Duration {
        let conf = self.conf();
        let start = Instant::now();
        let mut child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", "/proc/self/ns/net")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.binary.parent().unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        if !out.status.success() {
            panic!("{} {verb} {id} failed: {}", self.name, String::from_utf8_lossy(&out.stdout));
        }
        took
    }

    /// `samples` ADDs then the DELs of the same containers, within `budget` each.
    fn measure(
        &mut self,
        level: usize,
        samples: usize,
        budget: Duration,
    ) -> (Vec<Duration>, Vec<Duration>) {
        let mut adds = Vec::new();
        let start = Instant::now();
        for i in 0..samples {
            if i >= 10 && start.elapsed() > budget {
                break;
            }
            adds.push(self.exec("ADD", &format!("bench{level}x{i}")));
        }
        let mut dels = Vec::new();
        let start = Instant::now();
        for i in 0..adds.len() {
            if i < 10 || start.elapsed() <= budget {
                dels.push(self.exec("DEL", &format!("bench{level}x{i}")));
            } else {
                // Out of time: release the rest without measuring, so the level stays exact.
                self.exec("DEL", &format!("bench{level}x{i}"));
            }
        }
        // The ADDs moved the cursor; the next fill continues after it.
        self.next += adds.len() as u32;
        (adds, dels)
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx].as_secs_f64() * 1000.0
}

fn main() {
    let o = parse_opts();
    let _ = fs::remove_dir_all(&o.dir);
    let mut sides = [
        Side {
            name: "ours",
            binary: o.ours.clone(),
            data_dir: o.dir.join("ours"),
            next: 2,
            filled: 0,
            with_index: true,
        },
        Side {
            name: "reference",
            binary: o.reference.clone(),
            data_dir: o.dir.join("reference"),
            next: 2,
            filled: 0,
            with_index: false,
        },
    ];
    let mut rows = Vec::new();
    for &level in &o.levels {
        let mut row = vec![level.to_string()];
        let mut counts = Vec::new();
        let mut cols = Vec::new();
        for side in sides.iter_mut() {
            eprintln!("filling {} to {level} leases...", side.name);
            side.fill_to(level);
            let budget = if side.name == "ours" { Duration::from_secs(3600) } else { o.budget };
            eprintln!("measuring {} at {level} leases...", side.name);
            let (mut adds, mut dels) = side.measure(level, o.samples, budget);
            counts.push(format!("{}/{}", adds.len(), dels.len()));
            cols.push((
                pct(&mut adds, 0.5),
                pct(&mut adds, 0.99),
                pct(&mut dels, 0.5),
                pct(&mut dels, 0.99),
            ));
        }
        let (ours, reference) = (cols[0], cols[1]);
        row.extend([
            format!("{:.2}", ours.0),
            format!("{:.2}", ours.1),
            format!("{:.2}", reference.0),
            format!("{:.2}", reference.1),
            format!("{:.2}", ours.2),
            format!("{:.2}", ours.3),
            format!("{:.2}", reference.2),
            format!("{:.2}", reference.3),
            counts.join(" · "),
        ]);
        rows.push(row);
    }
    println!(
        "Lease store on a {SUBNET}, one process per call (ms; samples ADD/DEL ours · reference)\n"
    );
    println!("| leases | ours ADD p50 | ours ADD p99 | ref ADD p50 | ref ADD p99 | ours DEL p50 | ours DEL p99 | ref DEL p50 | ref DEL p99 | samples |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    let _ = fs::remove_dir_all(&o.dir);
}
