//! ADD/DEL latency of our `host-local` against the reference as the lease store fills up.
//!
//! Two stores on one /16, one per plugin, are filled to each level (0, 20k, 40k, 60k leases
//! by default) with exactly the files that many ADDs leave behind (our store: lease + index
//! link; the reference's: lease only). At each level both binaries are exec'd for `--samples`
//! ADDs, then a DEL of each of those containers (which brings the store back to the level), so
//! both pay process start. The reference gets at most `--budget` seconds per level and
//! operation (at least 10 samples) because its ADD and DEL read every lease file.
//!
//! `--netns` is the CNI_NETNS both plugins are given (default `/proc/self/ns/net`). The
//! reference v1.10 refuses a CNI_NETNS that is its own network namespace ("plugin's netns and
//! netns from CNI_NETNS should not be the same"), so run this inside one namespace and pass
//! another: `ip netns exec A fill_bench --netns /run/netns/B` (what scripts/bench.sh does).
//! A plugin that fails is dropped from the remaining levels and named in a
//! `- left out: ...` line under the table, the other one goes on.
//!
//! ```text
//! cargo build --release -p cni-host-local
//! cargo run --release -p ipam --example fill_bench -- [--ours PATH] [--reference PATH]
//!     [--samples 200] [--levels 0,20000,40000,60000] [--budget 60] [--dir DIR] [--netns PATH]
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

#[derive(Debug)]
struct Opts {
    ours: PathBuf,
    reference: PathBuf,
    samples: usize,
    levels: Vec<usize>,
    budget: Duration,
    dir: PathBuf,
    /// CNI_NETNS for every call: a namespace that is not the plugins' own.
    netns: PathBuf,
}

const USAGE: &str = "usage: fill_bench [--ours PATH] [--reference PATH] [--samples N] [--levels a,b,c] [--budget SECS] [--dir DIR] [--netns PATH]";

fn usage(msg: &str) -> ! {
    eprintln!("fill_bench: {msg}");
    eprintln!("{USAGE}");
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
    let defaults = Opts {
        ours: default_ours,
        reference: PathBuf::from("/usr/lib/cni/host-local"),
        samples: 200,
        levels: vec![0, 20_000, 40_000, 60_000],
        budget: Duration::from_secs(60),
        dir: std::env::temp_dir().join(format!("ipam-fill-bench-{}", std::process::id())),
        netns: PathBuf::from("/proc/self/ns/net"),
    };
    let o = parse_args(std::env::args().skip(1), defaults).unwrap_or_else(|e| usage(&e));
    for (what, p) in [("--ours", &o.ours), ("--reference", &o.reference)] {
        if !p.is_file() {
            usage(&format!(
                "{what} {} does not exist (build with `cargo build --release -p cni-host-local`)",
                p.display()
            ));
        }
    }
    if !o.netns.exists() {
        usage(&format!("--netns {} does not exist", o.netns.display()));
    }
    o
}

/// The command line over `o` (the defaults); no file system access.
fn parse_args(args: impl IntoIterator<Item = String>, mut o: Opts) -> Result<Opts, String> {
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--ours" => o.ours = PathBuf::from(val()?),
            "--reference" => o.reference = PathBuf::from(val()?),
            "--samples" => {
                o.samples = val()?.parse().map_err(|_| "--samples: not a number".to_string())?
            }
            "--budget" => {
                o.budget = Duration::from_secs(
                    val()?.parse().map_err(|_| "--budget: not a number".to_string())?,
                )
            }
            "--dir" => o.dir = PathBuf::from(val()?),
            "--netns" => o.netns = PathBuf::from(val()?),
            "--levels" => {
                o.levels = val()?
                    .split(',')
                    .map(|x| x.trim().parse().map_err(|_| "--levels: not numbers".to_string()))
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.samples == 0 {
        return Err("--samples must be positive".into());
    }
    let max = *o.levels.iter().max().unwrap_or(&0) + 2 * o.samples;
    if max > 65_000 {
        return Err("highest level plus 2 x samples must stay under 65000 (a /16)".into());
    }
    Ok(o)
}

/// One plugin's store and how far it is filled.
struct Side {
    name: &'static str,
    binary: PathBuf,
    data_dir: PathBuf,
    netns: PathBuf,
    /// Next address offset (from 10.200.0.0) the fill writes; .0 is the network, .1 the gateway.
    next: u32,
    filled: usize,
    with_index: bool,
    /// Why this plugin was dropped (its first failed call), if it was.
    broken: Option<String>,
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

    /// Execs the plugin once; returns the wall time, or what the plugin said when it failed.
    fn exec(&self, verb: &str, id: &str) -> Result<Duration, String> {
        let conf = self.conf();
        let start = Instant::now();
        let mut child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.binary.parent().unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
        let out = child.wait_with_output().map_err(|e| format!("waiting for {id}: {e}"))?;
        let took = start.elapsed();
        if !out.status.success() {
            // The error object is the last thing on stdout (the reference v1.10 can print a
            // result before it); collapse it onto one line for the note.
            let said = String::from_utf8_lossy(&out.stdout);
            let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
            let error = said.rfind("{ \"code\"").map_or(said.as_str(), |i| &said[i..]);
            return Err(format!("{verb} {id} failed: {error}"));
        }
        Ok(took)
    }

    /// `samples` ADDs then the DELs of the same containers, within `budget` each.
    fn measure(
        &mut self,
        level: usize,
        samples: usize,
        budget: Duration,
    ) -> Result<(Vec<Duration>, Vec<Duration>), String> {
        let mut adds = Vec::new();
        let start = Instant::now();
        for i in 0..samples {
            if i >= 10 && start.elapsed() > budget {
                break;
            }
            adds.push(self.exec("ADD", &format!("bench{level}x{i}"))?);
        }
        let mut dels = Vec::new();
        let start = Instant::now();
        for i in 0..adds.len() {
            if i < 10 || start.elapsed() <= budget {
                dels.push(self.exec("DEL", &format!("bench{level}x{i}"))?);
            } else {
                // Out of time: release the rest without measuring, so the level stays exact.
                self.exec("DEL", &format!("bench{level}x{i}"))?;
            }
        }
        // The ADDs moved the cursor; the next fill continues after it.
        self.next += adds.len() as u32;
        Ok((adds, dels))
    }
}

fn pct(v: &mut [Duration], p: f64) -> Option<f64> {
    v.sort();
    if v.is_empty() {
        return None;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    Some(v[idx].as_secs_f64() * 1000.0)
}

fn ms(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into())
}

fn main() {
    let o = parse_opts();
    let _ = fs::remove_dir_all(&o.dir);
    let side = |name, binary: &PathBuf, with_index| Side {
        name,
        binary: binary.clone(),
        data_dir: o.dir.join(name),
        netns: o.netns.clone(),
        next: 2,
        filled: 0,
        with_index,
        broken: None,
    };
    let mut sides = [side("ours", &o.ours, true), side("reference", &o.reference, false)];
    let mut rows = Vec::new();
    let mut left_out = Vec::new();
    for &level in &o.levels {
        let mut counts = Vec::new();
        let mut cols = Vec::new();
        for side in sides.iter_mut() {
            if side.broken.is_some() {
                counts.push("—".to_string());
                cols.push([None; 4]);
                continue;
            }
            eprintln!("filling {} to {level} leases...", side.name);
            side.fill_to(level);
            let budget = if side.name == "ours" { Duration::from_secs(3600) } else { o.budget };
            eprintln!("measuring {} at {level} leases...", side.name);
            match side.measure(level, o.samples, budget) {
                Ok((mut adds, mut dels)) => {
                    counts.push(format!("{}/{}", adds.len(), dels.len()));
                    cols.push([
                        pct(&mut adds, 0.5),
                        pct(&mut adds, 0.99),
                        pct(&mut dels, 0.5),
                        pct(&mut dels, 0.99),
                    ]);
                }
                Err(e) => {
                    eprintln!("{}: {e}; left out from here on", side.name);
                    left_out.push(format!(
                        "- left out: IPAM {} host-local from {level} leases on: {e}",
                        side.name
                    ));
                    side.broken = Some(e);
                    counts.push("—".to_string());
                    cols.push([None; 4]);
                }
            }
        }
        let (ours, reference) = (cols[0], cols[1]);
        let mut row = vec![level.to_string()];
        row.extend([ours[0], ours[1], reference[0], reference[1]].map(ms));
        row.extend([ours[2], ours[3], reference[2], reference[3]].map(ms));
        row.push(counts.join(" · "));
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
    if !left_out.is_empty() {
        println!();
        for l in &left_out {
            println!("{l}");
        }
    }
    let _ = fs::remove_dir_all(&o.dir);
    // A plugin that failed makes the run fail, after the table is out.
    if !left_out.is_empty() {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Opts {
        Opts {
            ours: "o".into(),
            reference: "r".into(),
            samples: 200,
            levels: vec![0, 20_000],
            budget: Duration::from_secs(60),
            dir: "d".into(),
            netns: "/proc/self/ns/net".into(),
        }
    }

    fn parse(args: &[&str]) -> Result<Opts, String> {
        parse_args(args.iter().map(|s| s.to_string()), defaults())
    }

    #[test]
    fn netns_defaults_to_our_own_and_takes_a_path() {
        assert_eq!(parse(&[]).unwrap().netns, PathBuf::from("/proc/self/ns/net"));
        let o = parse(&["--netns", "/run/netns/x-ipamc", "--samples", "5"]).unwrap();
        assert_eq!(o.netns, PathBuf::from("/run/netns/x-ipamc"));
        assert_eq!(o.samples, 5);
    }

    #[test]
    fn levels_samples_and_budget_parse() {
        let o = parse(&["--levels", "0, 1000", "--samples", "20", "--budget", "15"]).unwrap();
        assert_eq!(o.levels, vec![0, 1000]);
        assert_eq!(o.samples, 20);
        assert_eq!(o.budget, Duration::from_secs(15));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--netns"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--levels", "1,x"]).is_err());
        assert!(parse(&["--samples", "0"]).is_err());
        assert!(parse(&["--frobnicate"]).unwrap_err().contains("unknown"));
        // 64000 + 2 x 600 leaves the /16.
        assert!(parse(&["--levels", "64000", "--samples", "600"]).is_err());
    }
}
