//! portmap's state: the one owner of "who published which host port".
//!
//! Under `$CNI_SUITE_STATE_DIR/portmap/` (locked as a whole for every call):
//! - `owners/<key>.json`: one record per container interface, with every mapping it
//!   publishes and the firewall backend that programmed them. It is written *before* any
//!   kernel object is created (write intent first), so DEL (also without prevResult) and
//!   GC (also with an empty valid list) always find everything to remove, even after a
//!   `kill -9` in the middle of an ADD.
//! - `ports/<proto>-<port>/<host address>`: a reservation, a symlink whose target is the
//!   owner's key. A conflict check reads only the directory of that protocol and port, so
//!   its cost does not grow with the number of published ports; creating it is one
//!   syscall.
//! - `tables.json`: per backend, the generation of the port tables recorded after our last
//!   change to them (a different one means they were flushed behind our back).
//! - `localnet.json`: the interfaces we set `route_localnet` on, reset after the last DEL.
//!
//! The firewall backends keep no ownership of their own: they program what this says.

use cni::store::{io_error, remove_dir_if_empty, remove_if_exists, FileLock, Store};
use cni::CniError;
use firewall::{ContainerPorts, PortMapping};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One container interface's published ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The firewall backend that programs (programmed) these ports: DEL and GC use it.
    pub backend: String,
    pub ports: ContainerPorts,
}

/// Who holds a reservation that overlaps a requested mapping.
#[derive(Debug, PartialEq)]
pub struct Conflict {
    pub owner: String,
}

/// The state store (the kit's: atomic writes, no fsync under /run or a tmpfs, corrupt
/// records reported) plus the reservation links beside it.
pub struct PortmapState {
    store: Store,
    root: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CniError {
    io_error(what, path, e)
}

/// The owner key of a container interface (also the reservations' symlink target).
pub fn owner_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

fn host_key(m: &PortMapping) -> String {
    match m.specific_host_ip() {
        Some(ip) => ip.to_string().replace(':', "_"),
        None if m.container_ip.is_ipv4() => "any4".to_string(),
        None => "any6".to_string(),
    }
}

#[derive(Default, Serialize, Deserialize, PartialEq, Clone)]
struct Tables {
    generations: BTreeMap<String, u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct Localnet {
    interfaces: Vec<String>,
}

impl Default for PortmapState {
    fn default() -> PortmapState {
        PortmapState::new()
    }
}

impl PortmapState {
    pub fn new() -> PortmapState {
        Self::at(Store::for_plugin("portmap"))
    }

    fn at(store: Store) -> PortmapState {
        let root = store.root().to_path_buf();
        PortmapState { store, root }
    }

    /// Removes temp files of writers that died before their rename (GC).
    pub fn sweep_temp_files(&self) -> usize {
        self.store.sweep_temp_files()
    }

    /// The lock for a whole call: the portmap state directory itself (never removed).
    pub fn lock(&self) -> Result<FileLock, CniError> {
        self.store.lock()
    }

    pub fn owner(&self, container_id: &str, ifname: &str) -> Result<Option<OwnerRecord>, CniError> {
        self.store.get(&["owners", &owner_key(container_id, ifname)])
    }

    /// Every owner record (for GC and for restoring lost tables); one that cannot be read
    /// is skipped here (its file is named by DEL of its owner, which reads it directly).
    pub fn owners(&self) -> Vec<OwnerRecord> {
        self.store.list_lenient(&["owners"]).into_iter().filter_map(|(_, r)| r.ok()).collect()
    }

    /// True when an owner other than this one has ports programmed by `backend` (stops at
    /// the first one in the common case of one backend: DEL's "am I the last?" costs the
    /// same at 1 or 1000 owners).
    pub fn others_with(&self, container_id: &str, ifname: &str, backend: &str) -> bool {
        let mine = self.store.path(&["owners", &owner_key(container_id, ifname)]);
        let Ok(entries) = fs::read_dir(self.store.dir_path(&["owners"])) else { return false };
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            e.path() != mine
                && !name.starts_with('.')
                && name.ends_with(".json")
                && fs::read(e.path())
                    .ok()
                    .and_then(|d| serde_json::from_slice::<OwnerRecord>(&d).ok())
                    .is_some_and(|r| r.backend == backend)
        })
    }

    /// Records an owner and reserves its ports: the intent, written before the kernel is
    /// touched (one record write; each reservation is one symlink).
    pub fn save_owner(&self, rec: &OwnerRecord) -> Result<(), CniError> {
        let key = owner_key(&rec.ports.container_id, &rec.ports.ifname);
        self.store.put(&["owners", &key], rec)?;
        for m in &rec.ports.mappings {
            self.reserve(m, &key)?;
        }
        Ok(())
    }

    /// Forgets an owner: its reservations (those still pointing at it), then its record.
    pub fn remove_owner(&self, rec: &OwnerRecord) -> Result<(), CniError> {
        let key = owner_key(&rec.ports.container_id, &rec.ports.ifname);
        for m in &rec.ports.mappings {
            self.release(m, &key);
        }
        self.store.delete(&["owners", &key])
    }

    fn port_dir(&self, m: &PortMapping) -> PathBuf {
        self.root.join("ports").join(format!("{}-{}", m.protocol, m.host_port))
    }

    /// The first reservation by another owner that overlaps `m`: same protocol and port,
    /// same family, and either side on all addresses or both on the same one.
    pub fn conflict(&self, m: &PortMapping, owner: &str) -> Option<Conflict> {
        let entries = fs::read_dir(self.port_dir(m)).ok()?;
        let mine = host_key(m);
        let v4 = m.container_ip.is_ipv4();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let theirs_v4 = name == "any4" || (!name.starts_with("any") && !name.contains('_'));
            if theirs_v4 != v4 {
                continue;
            }
            if !(name == mine || name.starts_with("any") || mine.starts_with("any")) {
                continue;
            }
            let holder = fs::read_link(e.path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if holder != owner {
                return Some(Conflict { owner: holder });
            }
        }
        None
    }

    fn reserve(&self, m: &PortMapping, owner: &str) -> Result<(), CniError> {
        let dir = self.port_dir(m);
        fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let path = dir.join(host_key(m));
        match std::os::unix::fs::symlink(owner, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Ours already (a repeated ADD), or a leftover of an owner whose record is
                // gone: the conflict check ran before, so it is not a live owner's.
                if fs::read_link(&path).is_ok_and(|t| t.to_string_lossy() == owner) {
                    return Ok(());
                }
                remove_if_exists(&path).map_err(|e| io("removing", &path, e))?;
                std::os::unix::fs::symlink(owner, &path).map_err(|e| io("writing", &path, e))
            }
            Err(e) => Err(io("writing", &path, e)),
        }
    }

    fn release(&self, m: &PortMapping, owner: &str) {
        let dir = self.port_dir(m);
        let path = dir.join(host_key(m));
        if fs::read_link(&path).is_ok_and(|t| t.to_string_lossy() == owner) {
            let _ = remove_if_exists(&path);
        }
        remove_dir_if_empty(&dir);
        remove_dir_if_empty(&self.root.join("ports"));
    }

    /// Does `owner` hold the reservation of `m`?
    pub fn holds(&self, m: &PortMapping, owner: &str) -> bool {
        fs::read_link(self.port_dir(m).join(host_key(m)))
            .is_ok_and(|t| t.to_string_lossy() == owner)
    }

    fn tables(&self) -> Tables {
        self.store.get(&["tables"]).ok().flatten().unwrap_or_default()
    }

    /// The recorded generation of `backend`'s port tables.
    pub fn generation(&self, backend: &str) -> Option<u64> {
        self.tables().generations.get(backend).copied()
    }

    /// Records the generation (written only when it changed: tables created or restored).
    pub fn save_generation(&self, backend: &str, g: Option<u64>) -> Result<(), CniError> {
        let before = self.tables();
        let mut t = before.clone();
        match g {
            Some(g) => t.generations.insert(backend.to_string(), g),
            None => t.generations.remove(backend),
        };
        if t == before {
            return Ok(());
        }
        if t.generations.is_empty() {
            return self.store.delete(&["tables"]);
        }
        self.store.put(&["tables"], &t)
    }

    /// Interfaces we set `route_localnet` on.
    pub fn localnet(&self) -> Vec<String> {
        let l: Option<Localnet> = self.store.get(&["localnet"]).ok().flatten();
        l.map(|l| l.interfaces).unwrap_or_default()
    }

    pub fn save_localnet(&self, interfaces: &[String]) -> Result<(), CniError> {
        if interfaces.is_empty() {
            return self.store.delete(&["localnet"]);
        }
        self.store.put(&["localnet"], &Localnet { interfaces: interfaces.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall::Protocol;

    fn m(host: Option<&str>, port: u16, ctr: &str) -> PortMapping {
        PortMapping {
            host_ip: host.map(|h| h.parse().unwrap()),
            host_port: port,
            container_ip: ctr.parse().unwrap(),
            container_port: 80,
            protocol: Protocol::Tcp,
        }
    }

    fn with_state<T>(f: impl FnOnce(&PortmapState) -> T) -> T {
        let dir = std::env::temp_dir().join(format!(
            "pm-state-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let s = PortmapState::at(Store::new(dir.clone()));
        let out = f(&s);
        let _ = fs::remove_dir_all(&dir);
        out
    }

    fn owner(id: &str, maps: Vec<PortMapping>) -> OwnerRecord {
        let mut p = ContainerPorts::new("n", id, "eth0");
        p.mappings = maps;
        OwnerRecord { backend: "nftables".into(), ports: p }
    }

    #[test]
    fn wildcard_and_specific_overlap_both_ways() {
        with_state(|s| {
            s.save_owner(&owner("a", vec![m(None, 8080, "10.0.0.2")])).unwrap();
            let c = s.conflict(&m(Some("192.0.2.1"), 8080, "10.0.0.3"), "b/eth0").unwrap();
            assert_eq!(c, Conflict { owner: "a/eth0".into() });
            assert!(s.conflict(&m(None, 8081, "10.0.0.3"), "b/eth0").is_none(), "other port");
            assert!(s.conflict(&m(None, 8080, "10.0.0.2"), "a/eth0").is_none(), "same owner");
            s.remove_owner(&owner("a", vec![m(None, 8080, "10.0.0.2")])).unwrap();
            s.save_owner(&owner("a", vec![m(Some("127.0.0.1"), 8080, "10.0.0.2")])).unwrap();
            assert!(s.conflict(&m(None, 8080, "10.0.0.3"), "b/eth0").is_some());
            assert!(
                s.conflict(&m(Some("192.0.2.1"), 8080, "10.0.0.3"), "b/eth0").is_none(),
                "different specific addresses"
            );
        });
    }

    #[test]
    fn families_do_not_conflict() {
        with_state(|s| {
            s.save_owner(&owner("a", vec![m(None, 8080, "10.0.0.2")])).unwrap();
            assert!(s.conflict(&m(None, 8080, "fd00::2"), "b/eth0").is_none());
            s.save_owner(&owner("b", vec![m(None, 8080, "fd00::2")])).unwrap();
            assert!(s.conflict(&m(Some("fd00::1"), 8080, "fd00::3"), "c/eth0").is_some());
        });
    }

    #[test]
    fn release_only_by_the_holder_and_nothing_left() {
        with_state(|s| {
            let a = owner("a", vec![m(None, 9000, "10.0.0.2")]);
            s.save_owner(&a).unwrap();
            // A record of another owner naming the same port (a stale one) does not free it.
            s.remove_owner(&owner("b", vec![m(None, 9000, "10.0.0.2")])).unwrap();
            assert!(s.holds(&a.ports.mappings[0], "a/eth0"));
            assert!(s.others_with("b", "eth0", "nftables"));
            assert!(!s.others_with("a", "eth0", "nftables"));
            assert_eq!(s.owner("a", "eth0").unwrap(), Some(a.clone()));
            s.remove_owner(&a).unwrap();
            assert!(s.conflict(&m(None, 9000, "10.0.0.9"), "c/eth0").is_none());
            assert!(s.owners().is_empty());
            assert!(!s.root.join("ports").exists() && !s.root.join("owners").exists());
        });
    }

    #[test]
    fn long_keys_work() {
        with_state(|s| {
            let long = "x".repeat(300);
            let a = owner(&long, vec![m(None, 9100, "10.0.0.2")]);
            s.save_owner(&a).unwrap();
            assert_eq!(s.owner(&long, "eth0").unwrap(), Some(a.clone()));
            assert!(s.owner(&"x".repeat(299), "eth0").unwrap().is_none());
            s.remove_owner(&a).unwrap();
            assert!(s.owners().is_empty());
        });
    }
}
