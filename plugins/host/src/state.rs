//! What the host plugin remembers about a device it handed to a container, so DEL (and GC)
//! can give it back under its original name with its original addresses, also when the
//! container's namespace is already gone.
//!
//! Layout under `$CNI_SUITE_STATE_DIR/host/`: `<network>/<containerID>_<ifname>.json` per
//! handed-out device, and `devices.lock`, one lock for all device moves (devices are a
//! host-wide resource: two networks may name the same one). The record is written before
//! the device moves, so a crash at any step leaves something DEL can act on. The lock file
//! is removed by the call that leaves no record behind; a locker that finds its lock file
//! unlinked once it holds it starts over (see [`FileLock`]).

use cni::store::{atomic_write, remove_dir_if_empty, remove_if_exists, FileLock};
use cni::CniError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A route of the device, as it was in the host (netlink::Route minus the interface index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRoute {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
}

impl SavedRoute {
    pub fn from_route(r: &netlink::Route) -> SavedRoute {
        SavedRoute {
            dst: r.dst,
            gateway: r.gateway,
            metric: r.metric,
            table: r.table,
            scope: r.scope,
            mtu: r.mtu,
            advmss: r.advmss,
        }
    }

    pub fn to_route(&self, oif: u32) -> netlink::Route {
        netlink::Route {
            dst: self.dst,
            gateway: self.gateway,
            oif: Some(oif),
            metric: self.metric,
            table: self.table,
            scope: self.scope,
            mtu: self.mtu,
            advmss: self.advmss,
        }
    }
}

/// One device handed to one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<String>,
    /// The device's name in the host, restored on DEL.
    pub original_name: String,
    /// The device's MAC: how it is recognized after the kernel returned it from a dead namespace.
    pub mac: Option<[u8; 6]>,
    /// Whether it was up in the host.
    pub up: bool,
    /// The bridge or bond it was enslaved to in the host (moving releases it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Its addresses and routes in the host (moved with it without IPAM, restored on DEL).
    pub addresses: Vec<IpNet>,
    pub routes: Vec<SavedRoute>,
    /// The name used while the device is between namespaces (never clashes with CNI_IFNAME
    /// or the original name on either side).
    pub transit_name: String,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

/// The devices lock; on release, removes empty network directories and, when no record is
/// left at all, the lock file and the state root.
pub struct DevicesLock {
    state: State,
    _lock: FileLock,
}

impl Drop for DevicesLock {
    fn drop(&mut self) {
        let root = &self.state.root;
        let Ok(entries) = fs::read_dir(root) else { return };
        let mut others = false;
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_dir_if_empty(&e.path());
                others |= e.path().exists();
            } else if e.file_name() != "devices.lock" {
                others = true;
            }
        }
        if !others {
            let _ = remove_if_exists(&root.join("devices.lock"));
            remove_dir_if_empty(root);
        }
    }
}

#[derive(Debug, Clone)]
pub struct State {
    root: PathBuf,
}

impl State {
    pub fn new(root: PathBuf) -> State {
        State { root }
    }

    /// `$CNI_SUITE_STATE_DIR/host` (or /run/cni-suite/host).
    pub fn default_root() -> State {
        State::new(cni::store::state_dir().join("host"))
    }

    pub fn lock(&self) -> Result<DevicesLock, CniError> {
        let p = self.root.join("devices.lock");
        let lock = FileLock::removable(&p).map_err(|e| io_err("locking", &p, e))?;
        Ok(DevicesLock { state: self.clone(), _lock: lock })
    }

    fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.root.join(network).join(format!("{container_id}_{ifname}.json"))
    }

    pub fn get(&self, network: &str, container_id: &str, ifname: &str) -> Option<DeviceRecord> {
        let data = fs::read(self.path(network, container_id, ifname)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn save(&self, network: &str, rec: &DeviceRecord) -> Result<(), CniError> {
        let p = self.path(network, &rec.container_id, &rec.ifname);
        atomic_write(&p, &serde_json::to_vec(rec).expect("state serializes"))
            .map_err(|e| io_err("writing", &p, e))
    }

    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let p = self.path(network, container_id, ifname);
        remove_if_exists(&p).map_err(|e| io_err("removing", &p, e))
    }

    /// Every record of `network`.
    pub fn records(&self, network: &str) -> Vec<DeviceRecord> {
        read_records(&self.root.join(network))
    }

    /// Every record of every network (which container holds which device).
    pub fn all_records(&self) -> Vec<DeviceRecord> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|e| read_records(&e.path()))
            .collect()
    }
}

fn read_records(dir: &Path) -> Vec<DeviceRecord> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|d| serde_json::from_slice(&d).ok())
        .collect()
}

/// The transit name of (network, container, ifname): "hd" + 8 hex digits, stable, so a DEL
/// after a crash mid-move still finds the device by it.
pub fn transit_name(network: &str, container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in network.bytes().chain([0]).chain(container_id.bytes()).chain([0]).chain(ifname.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("hd{:08x}", (h ^ (h >> 32)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cid: &str) -> DeviceRecord {
        DeviceRecord {
            container_id: cid.into(),
            ifname: "net1".into(),
            netns: Some("/var/run/netns/a".into()),
            original_name: "eth1".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            up: true,
            master: Some("br0".into()),
            addresses: vec!["192.0.2.5/24".parse().unwrap()],
            routes: vec![SavedRoute {
                dst: "198.51.100.0/24".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
                metric: None,
                table: None,
                scope: None,
                mtu: None,
                advmss: None,
            }],
            transit_name: transit_name("n", cid, "net1"),
        }
    }

    #[test]
    fn records_round_trip_and_nothing_stays() {
        let root = std::env::temp_dir().join(format!("host-state-{}", std::process::id()));
        let st = State::new(root.clone());
        {
            let _l = st.lock().unwrap();
            st.save("n", &record("c1")).unwrap();
            st.save("m", &record("c2")).unwrap();
        }
        assert_eq!(st.get("n", "c1", "net1"), Some(record("c1")));
        assert_eq!(st.records("n"), vec![record("c1")]);
        assert_eq!(st.all_records().len(), 2);
        {
            let _l = st.lock().unwrap();
            st.remove("n", "c1", "net1").unwrap();
        }
        assert!(root.join("devices.lock").exists(), "m still has a record");
        assert!(!root.join("n").exists());
        {
            let _l = st.lock().unwrap();
            st.remove("m", "c2", "net1").unwrap();
            st.remove("m", "c2", "net1").unwrap();
        }
        assert!(!root.exists());
    }

    #[test]
    fn transit_names_are_short_stable_and_distinct() {
        let a = transit_name("n", "c1", "eth0");
        assert_eq!(a, transit_name("n", "c1", "eth0"));
        assert!(a.len() <= 15 && netlink::check_ifname(&a).is_ok());
        assert_ne!(a, transit_name("n", "c2", "eth0"));
        assert_ne!(a, transit_name("n", "c1", "eth1"));
    }
}
