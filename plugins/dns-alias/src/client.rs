//! The plugin's side of the daemon: start it when none runs, replace one that does not
//! answer, ask it to reload, and probe it with a real query from inside a container.
//!
//! Every wait is bounded, and short where the daemon only has to answer: a daemon that is
//! stopped (SIGSTOP) or wedged must not hold the records' lock for long. One that does not
//! answer a ping within `PING_TIMEOUT` is replaced: killed (only after checking that the PID
//! in its pid file is our daemon for this state dir and holds the pid file's lock), then a
//! new one is started, which takes every record and redirect over.

use crate::daemon::{ALREADY_RUNNING, READY};
use crate::store::{self, Record, CONTROL_SOCKET, LOG_FILE, PID_FILE};
use crate::{netns, wire};
use cni::CniError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A live daemon answers a ping at once (its loop never blocks for long).
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A reload opens the namespaces that gained a record (one, for an ADD) and closes those
/// that lost theirs; a GC that drops many at once takes longest.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A new daemon opens every namespace that has a record before it says it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one control command; returns the reply lines up to and including the final one
/// (`ok`, `pong` or `error ...`).
pub fn request(dir: &Path, cmd: &str, timeout: Duration) -> io::Result<Vec<String>> {
    let s = UnixStream::connect(dir.join(CONTROL_SOCKET))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    (&s).write_all(format!("{cmd}\n").as_bytes())?;
    let mut lines = Vec::new();
    for line in BufReader::new(&s).lines() {
        let line = line?;
        let last = line == "ok" || line == "pong" || line.starts_with("error");
        lines.push(line);
        if last {
            return Ok(lines);
        }
    }
    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "daemon closed the control connection"))
}

fn not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused | io::ErrorKind::UnexpectedEof
    )
}

/// What a ping found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A daemon answered.
    Live,
    /// No daemon (never started, exited, or died).
    Absent,
    /// One was there but did not answer in time: it has been killed.
    Replaced,
}

/// Pings the daemon; one that does not answer is killed.
fn ping(dir: &Path) -> Result<Found, CniError> {
    match request(dir, "ping", PING_TIMEOUT) {
        Ok(_) => Ok(Found::Live),
        Err(e) if not_running(&e) => Ok(Found::Absent),
        // The connection was accepted (or queued) and then dropped: a daemon that was exiting
        // (e.g. one whose starter was killed) is gone once nobody holds the pid file's lock.
        Err(_) if !pid_file_held(dir) => Ok(Found::Absent),
        Err(e) => {
            kill_wedged(dir, &e)?;
            Ok(Found::Replaced)
        }
    }
}

/// Makes sure a daemon serves `dir`: when none answers (first ADD, it died, or it is
/// wedged), starts `<this binary> daemon --state-dir <dir>`, which loads every record
/// before it reports ready.
pub fn ensure_running(dir: &Path) -> Result<Found, CniError> {
    let found = ping(dir)?;
    if found != Found::Live {
        start(dir)?;
    }
    Ok(found)
}

/// The PID in the pid file, if that process is our daemon for `dir`: its command line is
/// `... daemon --state-dir <dir>` and it holds the pid file's lock.
pub fn our_daemon_pid(dir: &Path) -> Option<i32> {
    let pid_path = dir.join(PID_FILE);
    let pid: i32 = std::fs::read_to_string(&pid_path).ok()?.trim().parse().ok()?;
    if pid <= 1 {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir_arg = dir.as_os_str().as_encoded_bytes();
    let is_daemon = args.get(1) == Some(&&b"daemon"[..])
        && args.windows(2).any(|w| w[0] == b"--state-dir" && w[1] == dir_arg);
    if !is_daemon {
        return None;
    }
    // /proc/locks: "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"
    let ino = std::fs::metadata(&pid_path).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let holds = locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 5
            && f[1] == "FLOCK"
            && f[4] == pid.to_string()
            && f[5].rsplit(':').next() == Some(&ino.to_string())
    });
    holds.then_some(pid)
}

/// True when some process holds the pid file's lock, i.e. a daemon of this state dir lives.
fn pid_file_held(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(PID_FILE)) else { return false };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Kills a daemon that accepted a connection but did not answer: stopped or wedged.
fn kill_wedged(dir: &Path, why: &io::Error) -> Result<(), CniError> {
    let Some(pid) = our_daemon_pid(dir) else {
        return Err(CniError::try_again(format!(
            "the dns-alias daemon does not answer on {} ({why}), and the pid in {} is not a \
             dns-alias daemon of this state dir: not replacing it",
            dir.join(CONTROL_SOCKET).display(),
            dir.join(PID_FILE).display()
        )));
    };
    eprintln!("dns-alias: the daemon (pid {pid}) does not answer ({why}): replacing it");
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            return Err(CniError::try_again(format!(
                "the dns-alias daemon (pid {pid}) does not answer and cannot be killed: {e}"
            )))
        }
    }
    // It is gone when the kernel drops its lock on the pid file: wait for exactly that (on
    // a thread, so the wait stays bounded even if it never comes).
    let pid_path = dir.join(PID_FILE);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(f) = std::fs::File::open(&pid_path) {
            let _ = f.lock();
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(3)).map_err(|_| {
        CniError::try_again(format!("the dns-alias daemon (pid {pid}) did not exit after SIGKILL"))
    })
}

fn start(dir: &Path) -> Result<(), CniError> {
    let exe = std::env::current_exe().map_err(|e| {
        CniError::io(format!("cannot find the dns-alias binary to start the daemon: {e}"))
    })?;
    std::fs::create_dir_all(dir)
        .map_err(|e| CniError::io(format!("creating {}: {e}", dir.display())))?;
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CniError::io(format!("opening {}: {e}", log_path.display())))?;
    let mut child = Command::new(&exe)
        .arg("daemon")
        .arg("--state-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| CniError::io(format!("cannot start {} daemon: {e}", exe.display())))?;
    let out = child.stdout.take().expect("stdout is piped");
    let line = read_line_until(out, Instant::now() + START_TIMEOUT);
    let failed = |why: String| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        CniError::io(format!("cannot start the dns-alias daemon: {why}: {}", tail.join(" | ")))
            .with_details(format!("log: {}", log_path.display()))
    };
    match line {
        Some(l) if l == READY || l.starts_with(ALREADY_RUNNING) => Ok(()),
        Some(l) => {
            let _ = child.wait();
            Err(failed(format!("it said {l:?}")))
        }
        None => {
            // Not ready in time, or it exited: it is our child, so ending it is ours to do.
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(failed(format!("not ready ({status})")))
        }
    }
}

/// The first line a child writes, or None at EOF or past `deadline`.
fn read_line_until(mut out: std::process::ChildStdout, deadline: Instant) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            return Some(String::from_utf8_lossy(&buf[..nl]).trim().to_string());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
        let mut chunk = [0u8; 256];
        match out.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Asks the daemon to re-read the records; returns the namespaces it could not serve.
pub fn reload(dir: &Path) -> Result<Vec<(String, String)>, CniError> {
    let lines = request(dir, "reload", RELOAD_TIMEOUT)
        .map_err(|e| CniError::try_again(format!("asking the dns-alias daemon to reload: {e}")))?;
    let mut fails = Vec::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("fail ") {
            let (ns, why) = rest.split_once('\t').unwrap_or((rest, ""));
            fails.push((ns.to_string(), why.to_string()));
        } else if let Some(e) = l.strip_prefix("error") {
            return Err(CniError::internal(format!("dns-alias daemon: {}", e.trim())));
        }
    }
    Ok(fails)
}

/// After records were removed: a live daemon reloads (and drops what they needed); a
/// wedged one is replaced by a new one when records are left. Returns what was found; with
/// anything but `Live`, no daemon removed the redirects of the removed records.
pub fn reload_if_running(s: &cni::store::Store) -> Result<Found, CniError> {
    let dir = s.root();
    let found = ping(dir)?;
    match found {
        Found::Live => {
            reload(dir)?;
        }
        Found::Replaced if store::any(s) => start(dir)?,
        _ => {}
    }
    Ok(found)
}

/// Removes what a daemon that died (SIGKILL) left behind, when no daemon holds the pid file.
pub fn remove_stale_files(dir: &Path) {
    let pid = dir.join(PID_FILE);
    if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&pid) {
        if f.try_lock().is_ok() {
            let _ = cni::store::remove_if_exists(&pid);
            let _ = cni::store::remove_if_exists(&dir.join(CONTROL_SOCKET));
            let _ = cni::store::remove_if_exists(&dir.join(LOG_FILE));
        }
    } else {
        let _ = cni::store::remove_if_exists(&dir.join(CONTROL_SOCKET));
        let _ = cni::store::remove_if_exists(&dir.join(LOG_FILE));
    }
}

/// Sends a real query for the record's primary name to 127.0.0.11:53 from inside its
/// namespace, and checks that the answer carries the record's addresses.
pub fn probe(rec: &Record) -> Result<(), String> {
    let name = rec.names.first().ok_or("the record has no name")?.clone();
    let qtype = if rec.ips.iter().any(IpAddr::is_ipv4) || rec.ips.is_empty() {
        wire::T_A
    } else {
        wire::T_AAAA
    };
    let want: Vec<Vec<u8>> = rec
        .ips
        .iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), wire::T_A) => Some(v4.octets().to_vec()),
            (IpAddr::V6(v6), wire::T_AAAA) => Some(v6.octets().to_vec()),
            _ => None,
        })
        .collect();
    let reply = netns::in_netns(Path::new(&rec.netns), || {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect((firewall::dns_redirect::DNS_ADDR, 53))?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let mut q = Vec::new();
        let id = std::process::id() as u16;
        wire::build_query(&mut q, id, &name, qtype);
        let mut buf = [0u8; 1500];
        let mut last = io::Error::other("no answer");
        for _ in 0..2 {
            s.send(&q)?;
            match s.recv(&mut buf) {
                Ok(n) if wire::id(&buf[..n]) == id => return Ok(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e) => last = e,
            }
        }
        Err(last)
    })
    .map_err(|e| format!("no answer from 127.0.0.11:53 in {} for {name:?}: {e}", rec.netns))?;
    if wire::rcode(&reply) != wire::NOERROR {
        return Err(format!("127.0.0.11 answered rcode {} for {name:?}", wire::rcode(&reply)));
    }
    let got: Vec<Vec<u8>> =
        wire::answers(&reply).unwrap_or_default().into_iter().map(|(_, d)| d).collect();
    for w in &want {
        if !got.contains(w) {
            return Err(format!("127.0.0.11 did not answer {name:?} with the container's address"));
        }
    }
    Ok(())
}
