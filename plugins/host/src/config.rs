//! The host plugin's configuration.
//!
//! Without a device selector the plugin serves Docker's `--network host`: the container
//! shares the host's namespace. With one of the reference host-device selectors (`device`,
//! `hwaddr`, `kernelpath`, `pciBusID`, or the `deviceID` capability in runtimeConfig) it
//! hands that host interface to the container. Every error is code 7 naming key and value.

use cni::{CniError, Request};
use serde::Deserialize;
use std::fs;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
struct RawConf {
    device: Option<String>,
    hwaddr: Option<String>,
    kernelpath: Option<String>,
    #[serde(rename = "pciBusID")]
    pci_bus_id: Option<String>,
}

/// How the configuration names the host interface to hand over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `device`: an interface name.
    Name(String),
    /// `hwaddr`: a MAC address.
    Mac([u8; 6]),
    /// `kernelpath`: a device directory under /sys/devices.
    KernelPath(PathBuf),
    /// `pciBusID` or runtimeConfig `deviceID`: a PCI address (normalized to dddd:bb:dd.f).
    Pci(String),
}

impl Selector {
    /// The config key it came from, and the value as written (for messages).
    pub fn describe(&self) -> String {
        match self {
            Selector::Name(n) => format!("device {n}"),
            Selector::Mac(m) => format!("hwaddr {}", netlink::format_mac(m)),
            Selector::KernelPath(p) => format!("kernelpath {}", p.display()),
            Selector::Pci(id) => format!("PCI device {id}"),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConf {
    /// None: shared host namespace mode (Docker's `--network host`).
    pub device: Option<Selector>,
    /// True when `ipam` names an IPAM type (`ipam: {}` counts as none).
    pub has_ipam: bool,
}

/// Normalizes a PCI address: "0000:3d:00.1" (also accepts the domain-less "3d:00.1").
pub fn parse_pci_address(s: &str) -> Option<String> {
    let full = if s.matches(':').count() == 1 { format!("0000:{s}") } else { s.to_string() };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
    let func_ok = func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7');
    if !(hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && func_ok) {
        return None;
    }
    Some(full.to_ascii_lowercase())
}

/// `kernelpath` must be an absolute path under /sys/devices without `..`.
fn parse_kernel_path(s: &str) -> Option<PathBuf> {
    let p = Path::new(s);
    let clean = p.is_absolute()
        && p.starts_with("/sys/devices/")
        && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    clean.then(|| p.to_path_buf())
}

impl HostConf {
    pub fn from_request(req: &Request) -> Result<HostConf, CniError> {
        let raw: RawConf = req.plugin_config()?;
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let mut given: Vec<(&str, String)> = Vec::new();
        if let Some(v) = nonempty(raw.device) {
            given.push(("device", v));
        }
        if let Some(v) = nonempty(raw.hwaddr) {
            given.push(("hwaddr", v));
        }
        if let Some(v) = nonempty(raw.kernelpath) {
            given.push(("kernelpath", v));
        }
        if let Some(v) = nonempty(raw.pci_bus_id) {
            given.push(("pciBusID", v));
        }
        // The runtime's per-container choice (the `deviceID` capability, a PCI address, as
        // SR-IOV device plugins hand it out) wins over the network's keys.
        if let Some(v) = req.conf.runtime("deviceID") {
            let v = v.as_str().ok_or_else(|| {
                CniError::bad_value("runtimeConfig.deviceID", v, "must be a string (a PCI address)")
            })?;
            if !v.is_empty() {
                given = vec![("runtimeConfig.deviceID", v.to_string())];
            }
        }
        if given.len() > 1 {
            let keys: Vec<String> = given.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            return Err(CniError::config(format!(
                "invalid config: give only one of \"device\", \"hwaddr\", \"kernelpath\" or \
                \"pciBusID\" (got {})",
                keys.join(", ")
            )));
        }
        let device = match given.pop() {
            None => None,
            Some(("device", v)) => {
                if v == "lo" {
                    return Err(CniError::bad_value(
                        "device",
                        format!("{v:?}"),
                        "the loopback interface cannot be handed to a container",
                    ));
                }
                cni::names::check_ifname("device", &v)?;
                Some(Selector::Name(v))
            }
            Some(("hwaddr", v)) => match netlink::parse_mac(&v) {
                Some(m) => Some(Selector::Mac(m)),
                None => {
                    return Err(CniError::bad_value(
                        "hwaddr",
                        format!("{v:?}"),
                        "not a MAC address (aa:bb:cc:dd:ee:ff)",
                    ))
                }
            },
            Some(("kernelpath", v)) => match parse_kernel_path(&v) {
                Some(p) => Some(Selector::KernelPath(p)),
                None => {
                    return Err(CniError::bad_value(
                        "kernelpath",
                        format!("{v:?}"),
                        "must be an absolute path under /sys/devices/ without \"..\"",
                    ))
                }
            },
            Some((key, v)) => match parse_pci_address(&v) {
                Some(id) => Some(Selector::Pci(id)),
                None => {
                    return Err(CniError::bad_value(
                        key,
                        format!("{v:?}"),
                        "not a PCI address (dddd:bb:dd.f, e.g. 0000:3d:00.1)",
                    ))
                }
            },
        };
        let has_ipam = ipam::configured(req)?;
        if device.is_none() && has_ipam {
            return Err(CniError::config(
                "invalid config: \"ipam\" needs a device (\"device\", \"hwaddr\", \"kernelpath\" \
                or \"pciBusID\"): with host networking the container uses the host's own addresses",
            ));
        }
        Ok(HostConf { device, has_ipam })
    }
}

/// The network interface names a sysfs device directory exposes (`<dir>/net/<name>`), sorted.
/// Only interfaces of the namespace that mounted /sys are listed.
pub fn net_names_in(device_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(device_dir.join("net"))
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The single interface of a sysfs device directory, or a code-7 error naming `what`.
pub fn single_interface(device_dir: &Path, what: &str) -> Result<String, CniError> {
    if !device_dir.is_dir() {
        return Err(CniError::config(format!(
            "{what}: no such device ({} does not exist)",
            device_dir.display()
        )));
    }
    let names = net_names_in(device_dir);
    match names.len() {
        1 => Ok(names.into_iter().next().expect("one")),
        0 => Err(CniError::config(format!(
            "{what} has no network interface in this namespace (bound to a non-network driver \
            such as vfio-pci, or already handed to a container)"
        ))),
        _ => Err(CniError::config(format!(
            "{what} has several network interfaces ({}): name one with \"device\"",
            names.join(", ")
        ))),
    }
}

/// Where sysfs keeps a PCI device: `<sys>/bus/pci/devices/<id>`.
pub fn pci_device_dir(sys: &Path, id: &str) -> PathBuf {
    sys.join("bus/pci/devices").join(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> Result<HostConf, CniError> {
        let mut v = json!({"cniVersion": "1.1.0", "name": "h", "type": "host"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let stdin = v.to_string();
        HostConf::from_request(
            &cni::dispatch::request_for("ADD", "c1", "eth0", "", stdin.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn shared_namespace_mode_by_default() {
        assert_eq!(conf(json!({})).unwrap(), HostConf { device: None, has_ipam: false });
        assert_eq!(conf(json!({"device": ""})).unwrap().device, None);
        let e = conf(json!({"ipam": {"type": "host-local"}})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam"), "{}", e.msg);
        assert!(conf(json!({"ipam": {}})).is_ok());
    }

    #[test]
    fn selectors() {
        assert_eq!(
            conf(json!({"device": "eth1"})).unwrap().device,
            Some(Selector::Name("eth1".into()))
        );
        assert_eq!(
            conf(json!({"hwaddr": "02:00:00:00:00:0A"})).unwrap().device,
            Some(Selector::Mac([2, 0, 0, 0, 0, 10]))
        );
        assert_eq!(
            conf(json!({"kernelpath": "/sys/devices/pci0000:00/0000:00:1f.6"})).unwrap().device,
            Some(Selector::KernelPath("/sys/devices/pci0000:00/0000:00:1f.6".into()))
        );
        assert_eq!(
            conf(json!({"pciBusID": "0000:3D:00.1"})).unwrap().device,
            Some(Selector::Pci("0000:3d:00.1".into()))
        );
        assert_eq!(
            conf(json!({"pciBusID": "3d:00.1"})).unwrap().device,
            Some(Selector::Pci("0000:3d:00.1".into()))
        );
        // The runtime's deviceID wins over the network's keys.
        assert_eq!(
            conf(json!({"device": "eth1", "runtimeConfig": {"deviceID": "0000:00:1f.6"}}))
                .unwrap()
                .device,
            Some(Selector::Pci("0000:00:1f.6".into()))
        );
        assert!(conf(json!({"device": "eth1", "ipam": {"type": "static"}})).unwrap().has_ipam);
    }

    #[test]
    fn bad_selectors_name_key_and_value() {
        for (extra, needles) in [
            (json!({"device": "a/b"}), vec!["device", "a/b"]),
            (json!({"device": "lo"}), vec!["device", "loopback"]),
            (json!({"hwaddr": "nope"}), vec!["hwaddr", "nope"]),
            (json!({"kernelpath": "/etc/passwd"}), vec!["kernelpath", "/etc/passwd"]),
            (json!({"kernelpath": "/sys/devices/../../etc"}), vec!["kernelpath"]),
            (json!({"pciBusID": "0000:3d:00.9"}), vec!["pciBusID", "0000:3d:00.9"]),
            (json!({"runtimeConfig": {"deviceID": "xyz"}}), vec!["runtimeConfig.deviceID", "xyz"]),
            (
                json!({"device": "eth1", "hwaddr": "02:00:00:00:00:01"}),
                vec!["device", "hwaddr", "only one"],
            ),
            (json!({"device": 5}), vec!["device"]),
        ] {
            let e = conf(extra.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            for n in needles {
                assert!(e.msg.contains(n), "{extra}: {n:?} not in {}", e.msg);
            }
        }
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(parse_pci_address("0000:00:1f.6").as_deref(), Some("0000:00:1f.6"));
        for bad in [
            "",
            "0000:00:1f",
            "000:00:1f.6",
            "0000:0:1f.6",
            "0000:00:1f.8",
            "zzzz:00:1f.6",
            "0000:00:1f.6.1",
        ] {
            assert_eq!(parse_pci_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn sysfs_resolution() {
        let root = std::env::temp_dir().join(format!("host-sysfs-{}", std::process::id()));
        let one = pci_device_dir(&root, "0000:00:1f.6");
        fs::create_dir_all(one.join("net/enp0s31f6")).unwrap();
        let two = pci_device_dir(&root, "0000:3d:00.0");
        fs::create_dir_all(two.join("net/p1")).unwrap();
        fs::create_dir_all(two.join("net/p0")).unwrap();
        let none = pci_device_dir(&root, "0000:3d:00.1");
        fs::create_dir_all(&none).unwrap();
        assert_eq!(single_interface(&one, "PCI device 0000:00:1f.6").unwrap(), "enp0s31f6");
        let e = single_interface(&two, "PCI device 0000:3d:00.0").unwrap_err();
        assert!(e.msg.contains("p0, p1"), "{}", e.msg);
        let e = single_interface(&none, "PCI device 0000:3d:00.1").unwrap_err();
        assert!(e.msg.contains("no network interface"), "{}", e.msg);
        let e = single_interface(&pci_device_dir(&root, "0000:99:00.0"), "PCI device 0000:99:00.0")
            .unwrap_err();
        assert!(e.msg.contains("does not exist"), "{}", e.msg);
        fs::remove_dir_all(&root).unwrap();
    }
}
