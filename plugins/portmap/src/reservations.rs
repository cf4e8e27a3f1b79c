//! Host port reservations: who published which (protocol, host address, port).
//!
//! One small file per reservation under `$CNI_SUITE_STATE_DIR/portmap/ports/<proto>-<port>/`,
//! named by host address ("any4"/"any6" for all addresses). A conflict check reads only the
//! directory of that protocol and port, so its cost does not grow with the number of
//! published ports. Everything happens under one flock.

use cni::store::{atomic_write, remove_dir_if_empty, remove_if_exists, state_dir, FileLock};
use cni::CniError;
use firewall::PortMapping;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;

pub struct Reservations {
    root: PathBuf,
}

/// What a conflict looks like to the user (Docker's words).
#[derive(Debug, PartialEq)]
pub struct Conflict {
    pub bind: String,
    pub owner: String,
}

fn host_key(m: &PortMapping) -> String {
    match m.specific_host_ip() {
        Some(ip) => ip.to_string().replace(':', "_"),
        None if m.container_ip.is_ipv4() => "any4".to_string(),
        None => "any6".to_string(),
    }
}

/// "0.0.0.0:8080" / "[::]:8080" / "127.0.0.1:8080", as Docker prints a bind address.
pub fn bind_label(m: &PortMapping) -> String {
    let ip = m.specific_host_ip().unwrap_or(if m.container_ip.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    });
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{}", m.host_port),
        v4 => format!("{v4}:{}", m.host_port),
    }
}

impl Reservations {
    pub fn new() -> Reservations {
        Reservations { root: state_dir().join("portmap").join("ports") }
    }

    pub fn lock(&self) -> Result<FileLock, CniError> {
        // The portmap state directory itself is the lock: it is never removed.
        let path = state_dir().join("portmap");
        FileLock::directory(&path)
            .map_err(|e| CniError::io(format!("locking {}: {e}", path.display())))
    }

    fn dir(&self, m: &PortMapping) -> PathBuf {
        self.root.join(format!("{}-{}", m.protocol, m.host_port))
    }

    /// The first reservation by another owner that overlaps `m`: same protocol and port,
    /// same family, and either side listening on all addresses or both on the same one.
    pub fn conflict(&self, m: &PortMapping, owner: &str) -> Option<Conflict> {
        let dir = self.dir(m);
        let entries = fs::read_dir(&dir).ok()?;
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
            let overlaps = name == mine || name.starts_with("any") || mine.starts_with("any");
            if !overlaps {
                continue;
            }
            let holder = fs::read_to_string(e.path()).unwrap_or_default();
            if holder.trim() != owner {
                return Some(Conflict { bind: bind_label(m), owner: holder.trim().to_string() });
            }
        }
        None
    }

    pub fn reserve(&self, m: &PortMapping, owner: &str) -> Result<(), CniError> {
        let path = self.dir(m).join(host_key(m));
        atomic_write(&path, owner.as_bytes())
            .map_err(|e| CniError::io(format!("writing {}: {e}", path.display())))
    }

    /// Releases `m` if `owner` holds it.
    pub fn release(&self, m: &PortMapping, owner: &str) {
        let dir = self.dir(m);
        let path = dir.join(host_key(m));
        if fs::read_to_string(&path).map(|h| h.trim() == owner).unwrap_or(false) {
            let _ = remove_if_exists(&path);
        }
        remove_dir_if_empty(&dir);
        remove_dir_if_empty(&self.root);
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

    fn with_state<T>(f: impl FnOnce(&Reservations) -> T) -> T {
        let dir = std::env::temp_dir().join(format!(
            "pm-res-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let r = Reservations { root: dir.join("ports") };
        let out = f(&r);
        let _ = fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn wildcard_and_specific_overlap_both_ways() {
        with_state(|r| {
            r.reserve(&m(None, 8080, "10.0.0.2"), "a/eth0").unwrap();
            let c = r.conflict(&m(Some("192.0.2.1"), 8080, "10.0.0.3"), "b/eth0").unwrap();
            assert_eq!(c, Conflict { bind: "192.0.2.1:8080".into(), owner: "a/eth0".into() });
            assert!(r.conflict(&m(None, 8081, "10.0.0.3"), "b/eth0").is_none(), "other port");
            assert!(r.conflict(&m(None, 8080, "10.0.0.2"), "a/eth0").is_none(), "same owner again");
            r.release(&m(None, 8080, "10.0.0.2"), "a/eth0");
            r.reserve(&m(Some("127.0.0.1"), 8080, "10.0.0.2"), "a/eth0").unwrap();
            let c = r.conflict(&m(None, 8080, "10.0.0.3"), "b/eth0").unwrap();
            assert_eq!(c.bind, "0.0.0.0:8080");
            assert!(
                r.conflict(&m(Some("192.0.2.1"), 8080, "10.0.0.3"), "b/eth0").is_none(),
                "different specific addresses"
            );
        });
    }

    #[test]
    fn families_do_not_conflict() {
        with_state(|r| {
            r.reserve(&m(None, 8080, "10.0.0.2"), "a/eth0").unwrap();
            assert!(r.conflict(&m(None, 8080, "fd00::2"), "b/eth0").is_none());
            r.reserve(&m(None, 8080, "fd00::2"), "b/eth0").unwrap();
            let c = r.conflict(&m(Some("fd00::1"), 8080, "fd00::3"), "c/eth0").unwrap();
            assert_eq!(c.bind, "[fd00::1]:8080");
            assert_eq!(bind_label(&m(None, 53, "fd00::3")), "[::]:53");
        });
    }

    #[test]
    fn release_only_by_the_holder() {
        with_state(|r| {
            r.reserve(&m(None, 9000, "10.0.0.2"), "a/eth0").unwrap();
            r.release(&m(None, 9000, "10.0.0.2"), "b/eth0");
            assert!(r.conflict(&m(None, 9000, "10.0.0.9"), "c/eth0").is_some());
            r.release(&m(None, 9000, "10.0.0.2"), "a/eth0");
            assert!(r.conflict(&m(None, 9000, "10.0.0.9"), "c/eth0").is_none());
        });
    }
}
