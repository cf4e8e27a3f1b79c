//! What the bridge plugin remembers, in the kit's typed store (`cni::store::Store`), so DEL
//! and GC work without the container's namespace, and the last DEL (or GC) removes the
//! network's rules and the bridge it created.
//!
//! Layout under `$CNI_SUITE_STATE_DIR/bridge/` (file names through `cni::names::file_key`, so
//! names and container IDs of any length work):
//! - `<network>/network.json`: the bridge, whether we create(d) it, the firewall backend and
//!   rules programmed for the network;
//! - `<network>/<containerID>_<ifname>.json`: one per attachment.
//!
//! Intent first: each record is written before the kernel objects it names are created, with
//! `pending` set on an attachment until its ADD has finished. Whatever point an ADD dies at,
//! DEL and GC find everything it made. One flock on the store's root serializes every call.

use cni::store::{attachment_key, FileLock, Store};
use cni::CniError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

pub use cni::names::may_own;

/// File name (key) of the network record inside the network's directory. Attachment keys
/// always contain '_' (`<id>_<ifname>`), so they never collide with it.
const NETWORK_KEY: &str = "network";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkRecord {
    /// The network's name (records of long names live under a hashed file name).
    #[serde(default)]
    pub network: String,
    pub bridge: String,
    /// True when this plugin creates (or created) the bridge: only then may the last DEL
    /// remove it. Written before the bridge is created.
    pub created_bridge: bool,
    pub subnets: Vec<IpNet>,
    /// Docker `--internal`. Read by dns-alias too (`$CNI_SUITE_STATE_DIR/bridge/<network>/
    /// network.json`, key `internal`): an internal network's DNS never forwards upstream.
    #[serde(default)]
    pub internal: bool,
    /// The firewall backend the rules are programmed with: teardown uses it, whatever is
    /// configured by then. Written before any rule is programmed.
    #[serde(default)]
    pub firewall: String,
    /// What `rules` last programmed for this network (see `rules::Programmed`).
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
    /// Set while the ADD that wrote it has not finished: a record still pending when no ADD
    /// runs (we hold the lock) is what a crashed ADD left.
    #[serde(default)]
    pub pending: bool,
}

/// One network's records.
pub struct NetworkState {
    store: Store,
    network: String,
}

impl NetworkState {
    pub fn new(network: &str) -> NetworkState {
        NetworkState { store: Store::for_plugin("bridge"), network: network.to_string() }
    }

    /// Exclusive lock on all bridge state (networks may share a bridge) for the whole call.
    pub fn lock(&self) -> Result<FileLock, CniError> {
        self.store.lock()
    }

    /// The network record; a corrupt one is an error naming its file.
    pub fn network(&self) -> Result<Option<NetworkRecord>, CniError> {
        self.store.get(&[&self.network, NETWORK_KEY])
    }

    pub fn save_network(&self, rec: &NetworkRecord) -> Result<(), CniError> {
        self.store.put(&[&self.network, NETWORK_KEY], rec)
    }

    /// Forgets the network (after its last attachment left).
    pub fn remove_network(&self) -> Result<(), CniError> {
        self.store.delete(&[&self.network, NETWORK_KEY])
    }

    /// The record of one attachment; a corrupt one is an error naming its file.
    pub fn attachment(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<AttachmentRecord>, CniError> {
        self.store.get(&[&self.network, &attachment_key(container_id, ifname)])
    }

    pub fn save_attachment(&self, rec: &AttachmentRecord) -> Result<(), CniError> {
        self.store.put(&[&self.network, &attachment_key(&rec.container_id, &rec.ifname)], rec)
    }

    pub fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        self.store.delete(&[&self.network, &attachment_key(container_id, ifname)])
    }

    /// The file of one attachment's record.
    #[cfg(test)]
    pub fn attachment_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.store.path(&[&self.network, &attachment_key(container_id, ifname)])
    }

    fn is_attachment_file(name: &str) -> bool {
        !name.starts_with('.') && name.ends_with(".json") && name != "network.json"
    }

    /// True when any attachment is recorded. Stops at the first one, so DEL's "was this the
    /// last container?" costs the same at 1 or 1000 containers.
    pub fn has_attachments(&self) -> bool {
        let Ok(entries) = fs::read_dir(self.store.dir_path(&[&self.network])) else {
            return false;
        };
        entries.flatten().any(|e| Self::is_attachment_file(&e.file_name().to_string_lossy()))
    }

    /// Every attachment record of this network, each parsed or with the error naming its file
    /// (GC goes on past a record it cannot read).
    pub fn attachments(&self) -> Vec<(PathBuf, Result<AttachmentRecord, CniError>)> {
        self.store
            .list_lenient::<AttachmentRecord>(&[&self.network])
            .into_iter()
            .filter(|(path, _)| {
                path.file_name().is_some_and(|n| Self::is_attachment_file(&n.to_string_lossy()))
            })
            .collect()
    }

    /// Removes temp files of writers that died before renaming them (GC).
    pub fn sweep_temp_files(&self) -> usize {
        self.store.sweep_temp_files()
    }
}

/// The host-side veth name: stable for (network, container, ifname), so DEL finds it even
/// when the container namespace and our state are gone. 15 characters with a 55-bit hash; the
/// link also carries its owner tag ([`owner_tag`]), and a link of that name tagged for
/// another attachment is never deleted or reused.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    cni::names::stable_ifname("veth", &[network, container_id, ifname])
}

/// What the host veth of an attachment carries as its alias.
pub fn owner_tag(network: &str, container_id: &str, ifname: &str) -> String {
    cni::names::owner_tag(network, container_id, ifname)
}

/// What a bridge this plugin created carries as its alias.
pub fn bridge_tag(network: &str, bridge: &str) -> String {
    cni::names::owner_tag(network, "", bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_distinct_and_valid() {
        let a = host_veth_name("net1", "ctr1", "eth0");
        assert_eq!(a, host_veth_name("net1", "ctr1", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(cni::names::ifname_problem(&a).is_none());
        assert_ne!(a, host_veth_name("net1", "ctr1", "eth1"));
        assert_ne!(a, host_veth_name("net2", "ctr1", "eth0"));
        let long = "c".repeat(1000);
        assert_eq!(host_veth_name("n", &long, "eth0").len(), 15);
    }

    #[test]
    fn ownership_by_tag() {
        let mine = owner_tag("n", "c1", "eth0");
        assert!(may_own(Some(&mine), &mine));
        assert!(may_own(None, &mine), "untagged: made before tags or by a crashed ADD");
        assert!(!may_own(Some(&owner_tag("n", "c2", "eth0")), &mine));
        assert!(may_own(Some("set by an admin"), &mine), "only our own tags name an owner");
        assert_ne!(bridge_tag("n", "cni0"), bridge_tag("m", "cni0"));
    }

    #[test]
    fn records_of_long_ids_round_trip_and_corruption_is_reported() {
        let dir = std::env::temp_dir().join(format!("bridge-state-{}", std::process::id()));
        let state = NetworkState { store: Store::new(dir.clone()), network: "n".repeat(255) };
        let id = "c".repeat(1000);
        let rec = AttachmentRecord {
            container_id: id.clone(),
            ifname: "eth0".into(),
            host_veth: host_veth_name("n", &id, "eth0"),
            netns: None,
            ips: vec![],
            mac_guard: None,
            pending: true,
        };
        let _l = state.lock().unwrap();
        assert!(!state.has_attachments());
        state.save_attachment(&rec).unwrap();
        state
            .save_network(&NetworkRecord {
                network: state.network.clone(),
                bridge: "cni0".into(),
                created_bridge: true,
                subnets: vec![],
                internal: false,
                firewall: String::new(),
                rules: String::new(),
            })
            .unwrap();
        assert!(state.has_attachments());
        assert_eq!(state.attachment(&id, "eth0").unwrap(), Some(rec.clone()));
        assert_eq!(state.attachments().len(), 1, "the network record is not an attachment");
        fs::write(state.attachment_path(&id, "eth0"), b"{broken").unwrap();
        let e = state.attachment(&id, "eth0").unwrap_err();
        assert_eq!(e.code, 5);
        assert!(state.attachments()[0].1.is_err());
        state.remove_attachment(&id, "eth0").unwrap();
        state.remove_network().unwrap();
        assert!(!state.has_attachments());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing but the lock directory");
        fs::remove_dir_all(&dir).unwrap();
    }
}
