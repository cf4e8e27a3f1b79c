//! The record store shared by the plugin (writer) and the daemon (reader).
//!
//! Layout under `<state>/dns/` (`<state>` is `cni::store::state_dir()`):
//! ```text
//! records/<network>/<containerID>:<ifname>.json   one record per attachment
//! daemon.pid     the daemon's PID; the daemon holds an flock on it while it lives
//! control.sock   the daemon's control socket ("reload", "ping", "status", "stop")
//! daemon.log     the daemon's stdout/stderr
//! ```
//! Writers hold an flock on the `dns` directory itself, and every file is replaced atomically,
//! so the daemon reads without locking. After the last record is removed the daemon deletes
//! the pid file, socket and log, leaving an empty `dns/` directory (it is the lock).

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const PID_FILE: &str = "daemon.pid";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const LOG_FILE: &str = "daemon.log";
const RECORDS: &str = "records";

/// The plugin's part of the state dir.
pub fn dns_dir() -> PathBuf {
    cni::store::state_dir().join("dns")
}

/// What the plugin records for one attachment (container, network, interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    /// The container's namespace path (CNI_NETNS): where the daemon listens for it.
    pub netns: String,
    /// Lowercase names, primary (the container name, else the short id) first.
    pub names: Vec<String>,
    /// The container-side addresses on this network.
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub ttl: u32,
    /// The network is internal (Docker `--internal`): no forwarding for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

pub fn record_path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    // Network names and container ids never contain ':' or '/'; interface names never contain
    // '/' or ':' either, so the file name is unambiguous.
    dir.join(RECORDS).join(network).join(format!("{container_id}:{ifname}.json"))
}

/// An exclusive flock on the `dns` directory, held while records change.
pub struct StoreLock {
    _dir: File,
}

impl StoreLock {
    pub fn acquire(dir: &Path) -> io::Result<StoreLock> {
        fs::create_dir_all(dir)?;
        let f = File::open(dir)?;
        f.lock()?;
        Ok(StoreLock { _dir: f })
    }
}

pub fn write(dir: &Path, rec: &Record) -> io::Result<()> {
    let path = record_path(dir, &rec.network, &rec.container_id, &rec.ifname);
    let data = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    cni::store::atomic_write(&path, &data)
}

pub fn read(path: &Path) -> io::Result<Record> {
    let data = fs::read(path)?;
    serde_json::from_slice(&data)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// Removes one record; returns it when it existed. Empty directories go too.
pub fn remove(
    dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> io::Result<Option<Record>> {
    let path = record_path(dir, network, container_id, ifname);
    let old = match read(&path) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) => None, // unreadable: remove it all the same
    };
    cni::store::remove_if_exists(&path)?;
    tidy(dir, network);
    Ok(old.or_else(|| Some(placeholder(network, container_id, ifname))))
}

fn placeholder(network: &str, container_id: &str, ifname: &str) -> Record {
    Record {
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
        netns: String::new(),
        names: vec![],
        ips: vec![],
        domain: None,
        upstreams: vec![],
        ttl: 0,
        internal: false,
    }
}

/// Removes the network's directory and `records/` when they became empty.
pub fn tidy(dir: &Path, network: &str) {
    cni::store::remove_dir_if_empty(&dir.join(RECORDS).join(network));
    cni::store::remove_dir_if_empty(&dir.join(RECORDS));
}

/// Paths of the record files of one network (or all networks), sorted.
pub fn record_files(dir: &Path, network: Option<&str>) -> Vec<PathBuf> {
    let root = dir.join(RECORDS);
    let nets: Vec<PathBuf> = match network {
        Some(n) => vec![root.join(n)],
        None => match fs::read_dir(&root) {
            Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
            Err(_) => vec![],
        },
    };
    let mut out = Vec::new();
    for n in nets {
        if let Ok(rd) = fs::read_dir(&n) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with('.') && name.ends_with(".json") {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// Every readable record; unreadable files are reported through `bad`.
pub fn read_all(dir: &Path, mut bad: impl FnMut(&Path, io::Error)) -> Vec<Record> {
    let mut out = Vec::new();
    for p in record_files(dir, None) {
        match read(&p) {
            Ok(r) => out.push(r),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => bad(&p, e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = std::env::temp_dir().join(format!("dns-store-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut r = placeholder("net1", "abc", "eth0");
        r.names = vec!["db".into()];
        r.ips = vec!["10.0.0.2".parse().unwrap()];
        {
            let _l = StoreLock::acquire(&dir).unwrap();
            write(&dir, &r).unwrap();
        }
        let all = read_all(&dir, |p, e| panic!("{}: {e}", p.display()));
        assert_eq!(all, vec![r.clone()]);
        assert_eq!(remove(&dir, "net1", "abc", "eth0").unwrap(), Some(r));
        assert_eq!(remove(&dir, "net1", "abc", "eth0").unwrap(), None);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "records/ is tidied away");
        fs::remove_dir_all(&dir).unwrap();
    }
}
