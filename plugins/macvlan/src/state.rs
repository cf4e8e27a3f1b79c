//! What the macvlan plugin remembers, in the kit's typed store (`cni::store::Store`), so DEL
//! and GC work without the container's namespace and a VLAN sub-interface we created goes
//! away with the last container using it.
//!
//! Layout under `$CNI_SUITE_STATE_DIR/macvlan/` (file names through `cni::names::file_key`):
//! - `<network>/<containerID>_<ifname>.json`: one per attachment (master, the VLAN
//!   sub-interface it holds a reference on, the namespace path, `pending` until its ADD is
//!   done);
//! - `_vlans/<sub-interface>.json`: the users of a VLAN sub-interface this plugin created
//!   (sub-interfaces that existed before are never recorded, so never removed). `_` cannot
//!   start a network name, so this directory is no network's.
//!
//! Intent first: the attachment record, then the VLAN user, are written before the VLAN
//! sub-interface or the macvlan is created. One flock on the store's root serializes every
//! call (VLAN sub-interfaces are shared across networks).

use cni::store::{attachment_key, FileLock, Store};
use cni::CniError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const VLANS: &str = "_vlans";

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
    /// Set until the ADD that wrote it has finished (see the module docs).
    #[serde(default)]
    pub pending: bool,
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

/// The plugin's store.
#[derive(Debug, Clone)]
pub struct State {
    store: Store,
}

impl State {
    #[cfg(test)]
    pub fn new(root: PathBuf) -> State {
        State { store: Store::new(root) }
    }

    /// `$CNI_SUITE_STATE_DIR/macvlan` (or /run/cni-suite/macvlan).
    pub fn default_root() -> State {
        State { store: Store::for_plugin("macvlan") }
    }

    /// Exclusive lock on all macvlan state for the whole call.
    pub fn lock(&self) -> Result<FileLock, CniError> {
        self.store.lock()
    }

    /// One attachment's record; a corrupt one is an error naming its file.
    pub fn attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<AttachmentRecord>, CniError> {
        self.store.get(&[network, &attachment_key(container_id, ifname)])
    }

    pub fn save_attachment(&self, network: &str, rec: &AttachmentRecord) -> Result<(), CniError> {
        self.store.put(&[network, &attachment_key(&rec.container_id, &rec.ifname)], rec)
    }

    pub fn remove_attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), CniError> {
        self.store.delete(&[network, &attachment_key(container_id, ifname)])
    }

    /// Every attachment record of `network`, each parsed or with the error naming its file.
    pub fn attachments(&self, network: &str) -> Vec<(PathBuf, Result<AttachmentRecord, CniError>)> {
        self.store.list_lenient(&[network])
    }

    /// The users of a VLAN sub-interface we created; None when it is not ours.
    pub fn vlan(&self, name: &str) -> Result<Option<VlanRecord>, CniError> {
        self.store.get(&[VLANS, name])
    }

    /// Adds `user` to the record of VLAN sub-interface `rec.name` (creating the record).
    pub fn vlan_add_user(&self, rec: &VlanRecord, user: &str) -> Result<(), CniError> {
        let mut cur = self
            .vlan(&rec.name)?
            .unwrap_or_else(|| VlanRecord { users: Vec::new(), ..rec.clone() });
        if !cur.users.iter().any(|u| u == user) {
            cur.users.push(user.to_string());
        }
        self.store.put(&[VLANS, &rec.name], &cur)
    }

    /// Removes `user`; returns true when the sub-interface has no user left (its record is
    /// gone and the caller deletes the link). A sub-interface without record is not ours: false.
    pub fn vlan_remove_user(&self, name: &str, user: &str) -> Result<bool, CniError> {
        let Some(mut cur) = self.vlan(name)? else { return Ok(false) };
        cur.users.retain(|u| u != user);
        if cur.users.is_empty() {
            self.store.delete(&[VLANS, name])?;
            Ok(true)
        } else {
            self.store.put(&[VLANS, name], &cur)?;
            Ok(false)
        }
    }

    /// Removes temp files of writers that died before renaming them (GC).
    pub fn sweep_temp_files(&self) -> usize {
        self.store.sweep_temp_files()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp_root(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("macvlan-state-{tag}-{}", std::process::id()))
    }

    fn record(id: &str) -> AttachmentRecord {
        AttachmentRecord {
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: Some("/var/run/netns/a".into()),
            master: "eth0.10".into(),
            vlan: Some("eth0.10".into()),
            link_in_container: false,
            pending: false,
        }
    }

    #[test]
    fn attachments_round_trip_and_leave_no_file() {
        let root = temp_root("att");
        let st = State::new(root.clone());
        let long = "c".repeat(600);
        {
            let _l = st.lock().unwrap();
            st.save_attachment("net", &record("c1")).unwrap();
            st.save_attachment("net", &record(&long)).unwrap();
        }
        assert_eq!(st.attachment("net", "c1", "eth0").unwrap(), Some(record("c1")));
        assert_eq!(st.attachment("net", &long, "eth0").unwrap(), Some(record(&long)));
        assert_eq!(st.attachments("net").len(), 2);
        {
            let _l = st.lock().unwrap();
            for id in ["c1", &long] {
                st.remove_attachment("net", id, "eth0").unwrap();
                st.remove_attachment("net", id, "eth0").unwrap();
            }
        }
        assert!(st.attachments("net").is_empty());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "only the (locked) root stays");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_reported_not_missing() {
        let root = temp_root("corrupt");
        let st = State::new(root.clone());
        st.save_attachment("net", &record("c1")).unwrap();
        let path = st.store.path(&["net", "c1_eth0"]);
        fs::write(&path, b"{half").unwrap();
        let e = st.attachment("net", "c1", "eth0").unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("corrupt") && e.msg.contains("c1_eth0"), "{}", e.msg);
        assert!(st.attachments("net")[0].1.is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn vlan_refcount_deletes_after_last_user() {
        let root = temp_root("vlan");
        let st = State::new(root.clone());
        let rec = VlanRecord { name: "eth0.10".into(), link: "eth0".into(), id: 10, users: vec![] };
        let (a, b) = (user_key("n1", "c1", "eth0"), user_key("n2", "c2", "eth0"));
        let _l = st.lock().unwrap();
        st.vlan_add_user(&rec, &a).unwrap();
        st.vlan_add_user(&rec, &a).unwrap();
        st.vlan_add_user(&rec, &b).unwrap();
        assert_eq!(st.vlan("eth0.10").unwrap().unwrap().users, vec![a.clone(), b.clone()]);
        assert!(!st.vlan_remove_user("eth0.10", &a).unwrap());
        assert!(!st.vlan_remove_user("eth0.10", &a).unwrap(), "removing twice is harmless");
        assert!(st.vlan_remove_user("eth0.10", &b).unwrap(), "last user leaves: delete the link");
        assert!(!st.vlan_remove_user("eth0.10", &b).unwrap(), "no record: not ours, never delete");
        assert_eq!(st.vlan("eth0.10").unwrap(), None);
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_lock_serializes_read_modify_write() {
        // Threads each add users under the lock; without mutual exclusion some additions
        // would overwrite others (the record is read, changed and written back).
        let root = temp_root("lock");
        let st = State::new(root.clone());
        let rec = VlanRecord { name: "eth0.7".into(), link: "eth0".into(), id: 7, users: vec![] };
        std::thread::scope(|s| {
            for t in 0..4 {
                let (st, rec) = (st.clone(), rec.clone());
                s.spawn(move || {
                    for i in 0..25 {
                        let _l = st.lock().unwrap();
                        st.vlan_add_user(&rec, &user_key("n", &format!("c{t}-{i}"), "eth0"))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(st.vlan("eth0.7").unwrap().unwrap().users.len(), 100);
        fs::remove_dir_all(&root).unwrap();
    }
}
