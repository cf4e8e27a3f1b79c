//! What the bridge plugin remembers per network, so DEL and GC work without the container's
//! namespace and the last DEL can remove the network's rules and the bridge it created.
//!
//! Layout under `$CNI_SUITE_STATE_DIR/bridge/<network>/`: `network.json` (bridge name, whether
//! we created it, subnets) and one `<containerID>_<ifname>.json` per attachment. A lock
//! on the `bridge` state directory (kept, so no lock file is ever left or deleted while held)
//! serializes ADD/DEL/GC.

use cni::store::{atomic_write, remove_dir_if_empty, remove_if_exists, state_dir, FileLock};
use cni::CniError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkRecord {
    pub bridge: String,
    /// True when this plugin created the bridge: only then may the last DEL remove it.
    pub created_bridge: bool,
    pub subnets: Vec<IpNet>,
    /// Docker `--internal`. Read by dns-alias too (`$CNI_SUITE_STATE_DIR/bridge/<network>/
    /// network.json`, key `internal`): an internal network's DNS never forwards upstream.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub firewall: String,
    /// The firewall rules last applied for this network (their debug form). An ADD whose
    /// rules match skips the firewall call: the rules are per network, not per container.
    #[serde(default)]
    pub rules: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachmentRecord {
    pub container_id: String,
    pub ifname: String,
    pub host_veth: String,
    pub netns: Option<String>,
    pub ips: Vec<IpNet>,
    /// Container MAC the host port is guarded with (macspoofchk), so DEL can remove the guard.
    #[serde(default)]
    pub mac_guard: Option<String>,
}

pub struct NetworkState {
    dir: PathBuf,
    lock_path: PathBuf,
}

fn io_err(what: &str, path: &std::path::Path, e: std::io::Error) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

impl NetworkState {
    pub fn new(network: &str) -> NetworkState {
        let root = state_dir().join("bridge");
        NetworkState { dir: root.join(network), lock_path: root }
    }

    /// Exclusive lock on this network's state for the whole call.
    pub fn lock(&self) -> Result<FileLock, CniError> {
        FileLock::directory(&self.lock_path).map_err(|e| io_err("locking", &self.lock_path, e))
    }

    fn attachment_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}_{ifname}.json"))
    }

    pub fn network(&self) -> Option<NetworkRecord> {
        let data = fs::read(self.dir.join("network.json")).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn save_network(&self, rec: &NetworkRecord) -> Result<(), CniError> {
        let path = self.dir.join("network.json");
        atomic_write(&path, &serde_json::to_vec(rec).expect("serializes"))
            .map_err(|e| io_err("writing", &path, e))
    }

    pub fn attachment(&self, container_id: &str, ifname: &str) -> Option<AttachmentRecord> {
        let data = fs::read(self.attachment_path(container_id, ifname)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn save_attachment(&self, rec: &AttachmentRecord) -> Result<(), CniError> {
        let path = self.attachment_path(&rec.container_id, &rec.ifname);
        atomic_write(&path, &serde_json::to_vec(rec).expect("serializes"))
            .map_err(|e| io_err("writing", &path, e))
    }

    pub fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.attachment_path(container_id, ifname);
        remove_if_exists(&path).map_err(|e| io_err("removing", &path, e))
    }

    /// True when any attachment is recorded. Stops at the first one, so DEL's "was this the
    /// last container?" costs the same at 1 or 1000 containers.
    pub fn has_attachments(&self) -> bool {
        let Ok(entries) = fs::read_dir(&self.dir) else { return false };
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && name != "network.json"
        })
    }

    /// Every attachment recorded for this network.
    pub fn attachments(&self) -> Vec<AttachmentRecord> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".json") && name != "network.json"
            })
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect()
    }

    /// Forgets the network entirely (after its last attachment left).
    pub fn remove_network(&self) {
        let _ = remove_if_exists(&self.dir.join("network.json"));
        remove_dir_if_empty(&self.dir);
    }
}

/// The host-side veth name: stable for (network, container, ifname), so DEL finds it even
/// when the container namespace and our state are gone. "veth" + 8 hex digits = 12 chars.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a: tiny, stable across releases (unlike std's hasher).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in network.bytes().chain([0]).chain(container_id.bytes()).chain([0]).chain(ifname.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("veth{:08x}", (h ^ (h >> 32)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("net1", "ctr1", "eth0");
        assert_eq!(a, host_veth_name("net1", "ctr1", "eth0"));
        assert!(a.len() <= 15);
        assert_ne!(a, host_veth_name("net1", "ctr1", "eth1"));
        assert_ne!(a, host_veth_name("net2", "ctr1", "eth0"));
        let names: std::collections::HashSet<_> =
            (0..10000).map(|i| host_veth_name("n", &format!("c{i}"), "eth0")).collect();
        assert_eq!(names.len(), 10000);
    }
}
