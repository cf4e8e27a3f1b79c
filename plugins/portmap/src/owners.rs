//! Per-container record of what portmap published, so DEL and GC remove exactly that, also
//! when the container's namespace and the runtime's cache are gone.
//! `$CNI_SUITE_STATE_DIR/portmap/owners/<containerID>_<ifname>.json`.

use cni::store::{atomic_write, remove_if_exists, state_dir};
use cni::CniError;
use firewall::{ContainerPorts, PortMapping, Protocol};
use serde::{Deserialize, Serialize};
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
struct SavedMapping {
    host_ip: Option<IpAddr>,
    host_port: u16,
    container_ip: IpAddr,
    container_port: u16,
    protocol: String,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    network: String,
    container_id: String,
    ifname: String,
    backend: String,
    masquerade_hairpin: bool,
    masq_all: bool,
    container_nets: Vec<ipnet::IpNet>,
    mappings: Vec<SavedMapping>,
}

pub struct Owners {
    dir: PathBuf,
}

impl Owners {
    pub fn new() -> Owners {
        Owners { dir: state_dir().join("portmap").join("owners") }
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}_{ifname}.json"))
    }

    fn read(&self, path: &std::path::Path) -> Option<Saved> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    fn to_ports(s: Saved) -> ContainerPorts {
        ContainerPorts {
            network: s.network,
            container_id: s.container_id,
            ifname: s.ifname,
            mappings: s
                .mappings
                .into_iter()
                .filter_map(|m| {
                    Some(PortMapping {
                        host_ip: m.host_ip,
                        host_port: m.host_port,
                        container_ip: m.container_ip,
                        container_port: m.container_port,
                        protocol: m.protocol.parse::<Protocol>().ok()?,
                    })
                })
                .collect(),
            masquerade_hairpin: s.masquerade_hairpin,
            masq_all: s.masq_all,
            container_nets: s.container_nets,
        }
    }

    pub fn load(&self, container_id: &str, ifname: &str) -> Option<ContainerPorts> {
        self.read(&self.path(container_id, ifname)).map(Self::to_ports)
    }

    /// The backend that programmed this owner's rules (DEL must use the same one).
    pub fn backend_of(&self, container_id: &str, ifname: &str) -> Option<firewall::BackendKind> {
        self.read(&self.path(container_id, ifname)).and_then(|s| s.backend.parse().ok())
    }

    /// True when another container interface has published ports (stops at the first one).
    pub fn others_exist(&self, container_id: &str, ifname: &str) -> bool {
        let mine = self.path(container_id, ifname);
        let Ok(entries) = fs::read_dir(&self.dir) else { return false };
        entries
            .flatten()
            .any(|e| e.path() != mine && e.file_name().to_string_lossy().ends_with(".json"))
    }

    pub fn all(&self) -> Vec<ContainerPorts> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        entries.flatten().filter_map(|e| self.read(&e.path())).map(Self::to_ports).collect()
    }

    pub fn save(&self, ports: &ContainerPorts, backend: &str) -> Result<(), CniError> {
        let saved = Saved {
            network: ports.network.clone(),
            container_id: ports.container_id.clone(),
            ifname: ports.ifname.clone(),
            backend: backend.to_string(),
            masquerade_hairpin: ports.masquerade_hairpin,
            masq_all: ports.masq_all,
            container_nets: ports.container_nets.clone(),
            mappings: ports
                .mappings
                .iter()
                .map(|m| SavedMapping {
                    host_ip: m.host_ip,
                    host_port: m.host_port,
                    container_ip: m.container_ip,
                    container_port: m.container_port,
                    protocol: m.protocol.as_str().to_string(),
                })
                .collect(),
        };
        let path = self.path(&ports.container_id, &ports.ifname);
        atomic_write(&path, &serde_json::to_vec(&saved).expect("serializes"))
            .map_err(|e| CniError::io(format!("writing {}: {e}", path.display())))
    }

    pub fn remove(&self, container_id: &str, ifname: &str) {
        let _ = remove_if_exists(&self.path(container_id, ifname));
        cni::store::remove_dir_if_empty(&self.dir);
    }
}
