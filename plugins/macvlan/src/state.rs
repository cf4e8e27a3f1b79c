//! What the macvlan plugin remembers, so DEL and GC work without the container's namespace
//! and a VLAN sub-interface we created goes away with the last container using it.
//!
//! Layout under `$CNI_SUITE_STATE_DIR/macvlan/`:
//! - `<network>/<containerID>_<ifname>.json`: one per attachment (master, the VLAN
//!   sub-interface it holds a reference on, the namespace path);
//! - `<network>.lock`: serializes ADD/DEL/GC of one network;
//! - `vlans/<sub-interface>.json`: the users of a VLAN sub-interface this plugin created
//!   (sub-interfaces that existed before are never recorded, so never removed);
//! - `vlans.lock`: serializes reference counting across networks. Always taken after a
//!   network lock, never before, so two calls cannot deadlock.
//!
//! Lock files are removed by the call that leaves nothing to protect (the last attachment
//! of a network, the last VLAN record), so nothing of ours stays behind. That is safe because
//! a locker checks, once it holds the lock, that the file is still the one at the path, and
//! starts over otherwise (see [`FileLock`]).

use cni::store::{atomic_write, remove_dir_if_empty, remove_if_exists, FileLock};
use cni::CniError;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The lock on one network, which removes the network's directory and lock file when it is
/// released with no attachment left.
pub struct NetworkLock {
    // Declared first: the cleanup in Drop runs while the flock is still held.
    state: State,
    network: String,
    _lock: FileLock,
}

impl Drop for NetworkLock {
    fn drop(&mut self) {
        let dir = self.state.network_dir(&self.network);
        remove_dir_if_empty(&dir);
        if !dir.exists() {
            let _ = remove_if_exists(&self.state.root.join(format!("{}.lock", self.network)));
        }
        remove_dir_if_empty(&self.state.root);
    }
}

/// The lock on the VLAN records; removes `vlans.lock` when released with no record left.
pub struct VlansLock {
    state: State,
    _lock: FileLock,
}

impl Drop for VlansLock {
    fn drop(&mut self) {
        let dir = self.state.root.join("vlans");
        remove_dir_if_empty(&dir);
        if !dir.exists() {
            let _ = remove_if_exists(&self.state.root.join("vlans.lock"));
        }
        remove_dir_if_empty(&self.state.root);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachmentRecord {
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<String>,
    pub master: String,
    /// The VLAN sub-interface this attachment holds a reference on (one we created).
    #[serde(default)]
    pub vlan: Option<String>,
    #[serde(default)]
    pub link_in_container: bool,
}

/// Users of a VLAN sub-interface created by this plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VlanRecord {
    pub name: String,
    pub link: String,
    pub id: u16,
    /// "<network>/<containerID>/<ifname>" of each attachment using it.
    pub users: Vec<String>,
}

/// The user key of one attachment in a VLAN record.
pub fn user_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}/{container_id}/{ifname}")
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let data = fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CniError> {
    atomic_write(path, &serde_json::to_vec(value).expect("state serializes"))
        .map_err(|e| io_err("writing", path, e))
}

/// The plugin's state root (`<state dir>/macvlan`).
#[derive(Debug, Clone)]
pub struct State {
    root: PathBuf,
}

impl State {
    pub fn new(root: PathBuf) -> State {
        State { root }
    }

    /// `$CNI_SUITE_STATE_DIR/macvlan` (or /run/cni-suite/macvlan).
    pub fn default_root() -> State {
        State::new(cni::store::state_dir().join("macvlan"))
    }

    fn network_dir(&self, network: &str) -> PathBuf {
        self.root.join(network)
    }

    fn attachment_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.network_dir(network).join(format!("{container_id}_{ifname}.json"))
    }

    fn vlan_path(&self, name: &str) -> PathBuf {
        self.root.join("vlans").join(format!("{name}.json"))
    }

    /// Exclusive lock on one network's attachments for the whole call.
    pub fn lock_network(&self, network: &str) -> Result<NetworkLock, CniError> {
        let p = self.root.join(format!("{network}.lock"));
        let lock = FileLock::removable(&p).map_err(|e| io_err("locking", &p, e))?;
        Ok(NetworkLock { state: self.clone(), network: network.to_string(), _lock: lock })
    }

    /// Exclusive lock on the VLAN reference counts (take after the network lock).
    pub fn lock_vlans(&self) -> Result<VlansLock, CniError> {
        let p = self.root.join("vlans.lock");
        let lock = FileLock::removable(&p).map_err(|e| io_err("locking", &p, e))?;
        Ok(VlansLock { state: self.clone(), _lock: lock })
    }

    pub fn attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Option<AttachmentRecord> {
        read_json(&self.attachment_path(network, container_id, ifname))
    }

    pub fn save_attachment(&self, network: &str, rec: &AttachmentRecord) -> Result<(), CniError> {
        write_json(&self.attachment_path(network, &rec.container_id, &rec.ifname), rec)
    }

    pub fn remove_attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), CniError> {
        let p = self.attachment_path(network, container_id, ifname);
        remove_if_exists(&p).map_err(|e| io_err("removing", &p, e))
    }

    /// Every attachment recorded for `network`.
    pub fn attachments(&self, network: &str) -> Vec<AttachmentRecord> {
        let Ok(entries) = fs::read_dir(self.network_dir(network)) else { return Vec::new() };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| read_json(&e.path()))
            .collect()
    }

    pub fn vlan(&self, name: &str) -> Option<VlanRecord> {
        read_json(&self.vlan_path(name))
    }

    /// Adds `user` to the record of VLAN sub-interface `rec.name` (creating the record).
    pub fn vlan_add_user(&self, rec: &VlanRecord, user: &str) -> Result<(), CniError> {
        let mut cur =
            self.vlan(&rec.name).unwrap_or_else(|| VlanRecord { users: Vec::new(), ..rec.clone() });
        if !cur.users.iter().any(|u| u == user) {
            cur.users.push(user.to_string());
        }
        write_json(&self.vlan_path(&rec.name), &cur)
    }

    /// Removes `user`; returns true when the sub-interface has no user left (its record is
    /// gone and the caller deletes the link). A sub-interface without record is not ours: false.
    pub fn vlan_remove_user(&self, name: &str, user: &str) -> Result<bool, CniError> {
        let Some(mut cur) = self.vlan(name) else { return Ok(false) };
        cur.users.retain(|u| u != user);
        let path = self.vlan_path(name);
        if cur.users.is_empty() {
            remove_if_exists(&path).map_err(|e| io_err("removing", &path, e))?;
            remove_dir_if_empty(&self.root.join("vlans"));
            Ok(true)
        } else {
            write_json(&path, &cur)?;
            Ok(false)
        }
    }

    /// Forgets a VLAN record entirely (undo of a failed creation).
    pub fn vlan_forget(&self, name: &str) {
        let _ = remove_if_exists(&self.vlan_path(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("macvlan-state-{tag}-{}", std::process::id()))
    }

    #[test]
    fn attachments_round_trip_and_clean_up() {
        let root = temp_root("att");
        let st = State::new(root.clone());
        let rec = AttachmentRecord {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/var/run/netns/a".into()),
            master: "eth0.10".into(),
            vlan: Some("eth0.10".into()),
            link_in_container: false,
        };
        {
            let _l = st.lock_network("net").unwrap();
            st.save_attachment("net", &rec).unwrap();
        }
        assert_eq!(st.attachment("net", "c1", "eth0"), Some(rec.clone()));
        assert_eq!(st.attachments("net"), vec![rec]);
        {
            let _l = st.lock_network("net").unwrap();
            st.remove_attachment("net", "c1", "eth0").unwrap();
            st.remove_attachment("net", "c1", "eth0").unwrap();
        }
        assert!(st.attachments("net").is_empty());
        assert!(
            !root.exists(),
            "state root left behind: {:?}",
            fs::read_dir(&root).map(|d| d.count())
        );
    }

    #[test]
    fn vlan_refcount_deletes_after_last_user() {
        let root = temp_root("vlan");
        let st = State::new(root.clone());
        let rec = VlanRecord { name: "eth0.10".into(), link: "eth0".into(), id: 10, users: vec![] };
        let (a, b) = (user_key("n1", "c1", "eth0"), user_key("n2", "c2", "eth0"));
        {
            let _l = st.lock_vlans().unwrap();
            st.vlan_add_user(&rec, &a).unwrap();
            st.vlan_add_user(&rec, &a).unwrap();
            st.vlan_add_user(&rec, &b).unwrap();
        }
        assert_eq!(st.vlan("eth0.10").unwrap().users, vec![a.clone(), b.clone()]);
        {
            let _l = st.lock_vlans().unwrap();
            assert!(!st.vlan_remove_user("eth0.10", &a).unwrap());
            assert!(!st.vlan_remove_user("eth0.10", &a).unwrap(), "removing twice is harmless");
            assert!(
                st.vlan_remove_user("eth0.10", &b).unwrap(),
                "last user leaves: delete the link"
            );
            assert!(
                !st.vlan_remove_user("eth0.10", &b).unwrap(),
                "no record: not ours, never delete"
            );
            assert_eq!(st.vlan("eth0.10"), None);
        }
        assert!(!root.exists());
    }

    #[test]
    fn a_lock_removed_by_its_holder_is_not_inherited() {
        let root = temp_root("lock");
        let st = State::new(root.clone());
        let first = st.lock_network("n").unwrap();
        let st2 = st.clone();
        let waiter = std::thread::spawn(move || {
            let _second = st2.lock_network("n").unwrap();
            // Holding it means the lock file is the one at the path again.
            assert!(st2.root.join("n.lock").exists());
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first); // removes n.lock while the waiter is blocked on the old inode
        waiter.join().unwrap();
        assert!(!root.exists());
    }
}
