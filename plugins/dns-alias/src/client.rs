//! The plugin's side of the daemon: start it when it is not running, ask it to reload, and
//! probe it with a real query from inside a container namespace.

use crate::store::{Record, CONTROL_SOCKET, LOG_FILE, PID_FILE};
use crate::{nsutil, wire};
use cni::CniError;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest a reload may take (it runs nft once per namespace it starts serving).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Makes sure a daemon serves `dir`: when none answers (first ADD, or it died and left a
/// stale pid file), starts `<this binary> daemon --state-dir <dir>`, which loads every record
/// before it reports ready.
pub fn ensure_running(dir: &Path) -> Result<(), CniError> {
    match request(dir, "ping", Duration::from_secs(5)) {
        Ok(_) => return Ok(()),
        Err(e) if not_running(&e) => {}
        Err(e) => {
            return Err(CniError::try_again(format!(
                "the dns-alias daemon does not answer on {}: {e}",
                dir.join(CONTROL_SOCKET).display()
            )))
        }
    }
    start(dir)
}

fn start(dir: &Path) -> Result<(), CniError> {
    let exe = std::env::current_exe().map_err(|e| {
        CniError::io(format!("cannot find the dns-alias binary to start the daemon: {e}"))
    })?;
    let out = Command::new(&exe)
        .arg("daemon")
        .arg("--state-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| CniError::io(format!("cannot start {} daemon: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(CniError::io(format!(
            "cannot start the dns-alias daemon: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .with_details(format!("log: {}", dir.join(LOG_FILE).display())));
    }
    Ok(())
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

/// Reloads when a daemon is running; does nothing when none is.
pub fn reload_if_running(dir: &Path) -> Result<bool, CniError> {
    match request(dir, "reload", RELOAD_TIMEOUT) {
        Ok(_) => Ok(true),
        Err(e) if not_running(&e) => Ok(false),
        Err(e) => Err(CniError::try_again(format!("asking the dns-alias daemon to reload: {e}"))),
    }
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
    let reply = nsutil::in_netns(Path::new(&rec.netns), || {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect((nsutil::DNS_ADDR, 53))?;
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
