//! What the host plugin remembers about a device it handed to a container, so DEL (and GC)
//! can give it back under its original name with its original addresses, also when the
//! container's namespace is already gone.
//!
//! Layout under `$CNI_SUITE_STATE_DIR/host/` (the kit's typed store, file names through
//! `cni::names::file_key`): `<network>/<containerID>_<ifname>.json` per handed-out device.
//! One flock on the store's root serializes all device moves (devices are a host-wide
//! resource: two networks may name the same one). The record is written before the device
//! moves, so a crash at any step leaves something DEL and GC can act on.

use cni::store::{attachment_key, FileLock, Store};
use cni::CniError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

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

/// The plugin's store.
#[derive(Debug, Clone)]
pub struct State {
    store: Store,
}

impl State {
    #[cfg(test)]
    pub fn new(root: std::path::PathBuf) -> State {
        State { store: Store::new(root) }
    }

    /// `$CNI_SUITE_STATE_DIR/host` (or /run/cni-suite/host).
    pub fn default_root() -> State {
        State { store: Store::for_plugin("host") }
    }

    /// One lock for all device moves (devices are a host-wide resource).
    pub fn lock(&self) -> Result<FileLock, CniError> {
        self.store.lock()
    }

    /// The record of one attachment; a corrupt one is an error naming its file.
    pub fn get(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<DeviceRecord>, CniError> {
        self.store.get(&[network, &attachment_key(container_id, ifname)])
    }

    pub fn save(&self, network: &str, rec: &DeviceRecord) -> Result<(), CniError> {
        self.store.put(&[network, &attachment_key(&rec.container_id, &rec.ifname)], rec)
    }

    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        self.store.delete(&[network, &attachment_key(container_id, ifname)])
    }

    /// Every record of `network`, each parsed or with the error naming its file.
    pub fn records(&self, network: &str) -> Vec<(PathBuf, Result<DeviceRecord, CniError>)> {
        self.store.list_lenient(&[network])
    }

    /// Every readable record of every network (which container holds which device).
    pub fn all_records(&self) -> Vec<DeviceRecord> {
        let Ok(entries) = std::fs::read_dir(self.store.root()) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .flat_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                Store::new(self.store.root().join(&name)).list_lenient::<DeviceRecord>(&[])
            })
            .filter_map(|(_, r)| r.ok())
            .collect()
    }

    /// Removes temp files of writers that died before renaming them (GC).
    pub fn sweep_temp_files(&self) -> usize {
        self.store.sweep_temp_files()
    }
}

/// The transit name of (network, container, ifname): "hd" + a 13-character hash, stable, so
/// a DEL after a crash mid-move still finds the device by it.
pub fn transit_name(network: &str, container_id: &str, ifname: &str) -> String {
    cni::names::stable_ifname("hd", &[network, container_id, ifname])
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
        let long = "c".repeat(400);
        {
            let _l = st.lock().unwrap();
            st.save("n", &record("c1")).unwrap();
            st.save("m", &record("c2")).unwrap();
            st.save("m", &record(&long)).unwrap();
        }
        assert_eq!(st.get("n", "c1", "net1").unwrap(), Some(record("c1")));
        assert_eq!(st.get("m", &long, "net1").unwrap(), Some(record(&long)));
        assert_eq!(st.records("n").len(), 1);
        assert_eq!(st.all_records().len(), 3);
        std::fs::write(st.store.path(&["n", "c1_net1"]), b"{").unwrap();
        assert_eq!(st.get("n", "c1", "net1").unwrap_err().code, 5, "corrupt is reported");
        {
            let _l = st.lock().unwrap();
            st.remove("n", "c1", "net1").unwrap();
            st.remove("m", "c2", "net1").unwrap();
            st.remove("m", &long, "net1").unwrap();
            st.remove("m", &long, "net1").unwrap();
        }
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "only the root stays");
        std::fs::remove_dir_all(&root).unwrap();
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
