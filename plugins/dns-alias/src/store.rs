//! The records shared by the plugin (writer) and the daemon (reader), in the suite's typed
//! state store (`cni::store::Store`: flock, atomic writes, corrupt records reported, long
//! keys hashed).
//!
//! Layout under `<state>/dns/` (`<state>` is `cni::store::state_dir()`):
//! ```text
//! records/<network:containerID:ifname, as a file key>.json   one record per attachment
//! daemon.pid     the daemon's PID; the daemon holds an flock on it while it lives
//! control.sock   the daemon's control socket ("reload", "ping", "status", "stop")
//! daemon.log     the daemon's stdout/stderr
//! ```
//! Writers hold the store's lock (an flock on `dns/` itself), and every record is replaced
//! atomically, so the daemon reads without locking. After the last record is removed the
//! daemon deletes the pid file, socket and log, leaving an empty `dns/` directory (it is the
//! lock).

use cni::store::Store;
use cni::CniError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const PID_FILE: &str = "daemon.pid";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const LOG_FILE: &str = "daemon.log";
const RECORDS: &str = "records";

/// The plugin's store: `<state>/dns`.
pub fn store() -> Store {
    Store::for_plugin("dns")
}

/// The plugin's part of the state dir.
pub fn dns_dir() -> PathBuf {
    store().root().to_path_buf()
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

/// One flat directory of records: network names, container IDs and interface names never
/// contain ':', so the key is unambiguous, and the store hashes it into a file name of
/// bounded length.
fn key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}:{container_id}:{ifname}")
}

pub fn record_path(s: &Store, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    s.path(&[RECORDS, &key(network, container_id, ifname)])
}

pub fn write(s: &Store, rec: &Record) -> Result<(), CniError> {
    s.put(&[RECORDS, &key(&rec.network, &rec.container_id, &rec.ifname)], rec)
}

/// The record of one attachment; `Ok(None)` when there is none, an error naming the file
/// when it is corrupt.
pub fn read(
    s: &Store,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Record>, CniError> {
    s.get(&[RECORDS, &key(network, container_id, ifname)])
}

/// Removes one record; returns it when it existed (a corrupt one is removed all the same,
/// and returned as a record that names no namespace).
pub fn remove(
    s: &Store,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Record>, CniError> {
    let old = match read(s, network, container_id, ifname) {
        Ok(None) => return Ok(None),
        Ok(Some(r)) => r,
        Err(_) => placeholder(network, container_id, ifname),
    };
    s.delete(&[RECORDS, &key(network, container_id, ifname)])?;
    Ok(Some(old))
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

/// Every readable record; unreadable or corrupt ones are reported through `bad`.
pub fn read_all(s: &Store, mut bad: impl FnMut(&Path, CniError)) -> Vec<Record> {
    let mut out = Vec::new();
    for (path, rec) in s.list_lenient::<Record>(&[RECORDS]) {
        match rec {
            Ok(r) => out.push(r),
            Err(e) => bad(&path, e),
        }
    }
    out
}

/// True when any record is left (stops at the first).
pub fn any(s: &Store) -> bool {
    s.any(&[RECORDS])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove_and_long_ids() {
        let dir = std::env::temp_dir().join(format!("dns-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::new(dir.clone());
        let mut r = placeholder("net1", "abc", "eth0");
        r.names = vec!["db".into()];
        r.ips = vec!["10.0.0.2".parse().unwrap()];
        let long_id = "c".repeat(400);
        let mut long = placeholder("net1", &long_id, "eth0");
        long.names = vec!["long".into()];
        {
            let _l = s.lock().unwrap();
            write(&s, &r).unwrap();
            write(&s, &long).unwrap();
        }
        assert!(any(&s));
        let mut all = read_all(&s, |p, e| panic!("{}: {e}", p.display()));
        all.sort_by(|a, b| a.names.cmp(&b.names));
        assert_eq!(all, vec![r.clone(), long.clone()]);
        assert_eq!(read(&s, "net1", &long_id, "eth0").unwrap(), Some(long.clone()));
        assert_eq!(remove(&s, "net1", "abc", "eth0").unwrap(), Some(r));
        assert_eq!(remove(&s, "net1", "abc", "eth0").unwrap(), None);
        assert_eq!(remove(&s, "net1", &long_id, "eth0").unwrap(), Some(long));
        assert!(!any(&s));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "records/ is tidied away");

        // A corrupt record is reported, not read as missing, and DEL still removes it.
        write(&s, &placeholder("net1", "bad", "eth0")).unwrap();
        std::fs::write(record_path(&s, "net1", "bad", "eth0"), b"{not json").unwrap();
        assert!(read(&s, "net1", "bad", "eth0").is_err());
        let mut reported = 0;
        assert!(read_all(&s, |_, _| reported += 1).is_empty());
        assert_eq!(reported, 1);
        assert!(remove(&s, "net1", "bad", "eth0").unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
