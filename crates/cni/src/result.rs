//! Result types and conversion between every result version.
//!
//! The in-memory form is the newest (1.1.0). `to_version` renders it in the version a request
//! asked for and `from_version` reads any version, following the spec's upgrade rules:
//! - 0.1.0/0.2.0 carry `ip4`/`ip6` objects (address, gateway, routes) and no interfaces;
//! - 0.3.x/0.4.0 carry `interfaces`, `ips` (with a "version" field), `routes`;
//! - 1.0.0 drops the per-IP "version" field;
//! - 1.1.0 adds interface `mtu`/`socketPath`/`pciID` and route
//!   `mtu`/`advmss`/`priority`/`table`/`scope`.

use crate::error::CniError;
use crate::json;
use crate::version::Version;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// One interface a plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One address assigned to an interface (`address` keeps its host bits: 10.0.0.5/24).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route, with the 1.1.0 attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

/// DNS settings (same shape in every version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The result of ADD, held in the newest form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

fn family(addr: &IpNet) -> &'static str {
    match addr {
        IpNet::V4(_) => "4",
        IpNet::V6(_) => "6",
    }
}

fn parse_version(v: &str) -> Result<Version, CniError> {
    crate::version::check_supported(v)
}

impl CniResult {
    /// Renders this result as JSON in the given spec version.
    pub fn to_version(&self, version: &str) -> Result<Value, CniError> {
        let v = parse_version(version)?;
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), version.into());
        if v < Version::V0_3_0 {
            // 0.1.0 / 0.2.0: first address of each family, routes split by family.
            for (key, want_v4) in [("ip4", true), ("ip6", false)] {
                let Some(ip) = self.ips.iter().find(|ip| ip.address.addr().is_ipv4() == want_v4)
                else {
                    continue;
                };
                let mut o = Map::new();
                o.insert("ip".into(), ip.address.to_string().into());
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), gw.to_string().into());
                }
                let routes: Vec<Value> = self
                    .routes
                    .iter()
                    .filter(|r| r.dst.addr().is_ipv4() == want_v4)
                    .map(|r| {
                        let mut ro = Map::new();
                        ro.insert("dst".into(), r.dst.to_string().into());
                        if let Some(gw) = r.gw {
                            ro.insert("gw".into(), gw.to_string().into());
                        }
                        Value::Object(ro)
                    })
                    .collect();
                if !routes.is_empty() {
                    o.insert("routes".into(), routes.into());
                }
                obj.insert(key.into(), Value::Object(o));
            }
        } else {
            let with_11 = v >= Version::V1_1_0;
            if !self.interfaces.is_empty() {
                let ifaces: Vec<Value> = self
                    .interfaces
                    .iter()
                    .map(|i| {
                        let mut i = i.clone();
                        if !with_11 {
                            i.mtu = None;
                            i.socket_path = None;
                            i.pci_id = None;
                        }
                        serde_json::to_value(i).expect("interface serializes")
                    })
                    .collect();
                obj.insert("interfaces".into(), ifaces.into());
            }
            if !self.ips.is_empty() {
                let ips: Vec<Value> = self
                    .ips
                    .iter()
                    .map(|ip| {
                        let mut o = Map::new();
                        if v < Version::V1_0_0 {
                            o.insert("version".into(), family(&ip.address).into());
                        }
                        if let Some(i) = ip.interface {
                            o.insert("interface".into(), i.into());
                        }
                        o.insert("address".into(), ip.address.to_string().into());
                        if let Some(gw) = ip.gateway {
                            o.insert("gateway".into(), gw.to_string().into());
                        }
                        Value::Object(o)
                    })
                    .collect();
                obj.insert("ips".into(), ips.into());
            }
            if !self.routes.is_empty() {
                let routes: Vec<Value> = self
                    .routes
                    .iter()
                    .map(|r| {
                        let mut r = r.clone();
                        if !with_11 {
                            r.mtu = None;
                            r.advmss = None;
                            r.priority = None;
                            r.table = None;
                            r.scope = None;
                        }
                        serde_json::to_value(r).expect("route serializes")
                    })
                    .collect();
                obj.insert("routes".into(), routes.into());
            }
        }
        if !self.dns.is_empty() {
            obj.insert("dns".into(), serde_json::to_value(&self.dns).expect("dns serializes"));
        }
        Ok(Value::Object(obj))
    }

    /// Reads a result of any supported version. `version` is the version to interpret it as
    /// (the result's own `cniVersion` when present wins).
    pub fn from_version(value: &Value, version: &str) -> Result<CniResult, String> {
        let obj = value.as_object().ok_or("result is not a JSON object")?;
        let declared = json::get(obj, "cniVersion").and_then(|v| v.as_str()).unwrap_or(version);
        let v = Version::parse(declared).ok_or_else(|| format!("bad cniVersion {declared:?}"))?;
        let mut out = CniResult::default();
        if let Some(dns) = json::field(value, "dns") {
            out.dns = json::from_value(dns.clone()).map_err(|e| format!("dns: {e}"))?;
        }
        if v < Version::V0_3_0 {
            for key in ["ip4", "ip6"] {
                let Some(o) = json::field(value, key) else { continue };
                let ip = json::field(o, "ip")
                    .and_then(|x| x.as_str())
                    .ok_or(format!("{key}.ip missing"))?;
                let address: IpNet =
                    ip.parse().map_err(|_| format!("{key}.ip: bad address {ip:?}"))?;
                let gateway = match json::field(o, "gateway").and_then(|x| x.as_str()) {
                    Some(g) => {
                        Some(g.parse().map_err(|_| format!("{key}.gateway: bad address {g:?}"))?)
                    }
                    None => None,
                };
                out.ips.push(IpConfig { address, gateway, interface: None });
                if let Some(routes) = json::field(o, "routes") {
                    let routes: Vec<Route> = json::from_value(routes.clone())
                        .map_err(|e| format!("{key}.routes: {e}"))?;
                    out.routes.extend(routes);
                }
            }
            return Ok(out);
        }
        if let Some(ifaces) = json::field(value, "interfaces") {
            out.interfaces =
                json::from_value(ifaces.clone()).map_err(|e| format!("interfaces: {e}"))?;
        }
        if let Some(ips) = json::field(value, "ips") {
            let arr = ips.as_array().ok_or("ips is not a list")?;
            for (n, ip) in arr.iter().enumerate() {
                let mut ip = ip.clone();
                if let Some(o) = ip.as_object_mut() {
                    o.retain(|k, _| !json::keys_match("version", k));
                }
                let parsed: IpConfig =
                    json::from_value(ip).map_err(|e| format!("ips[{n}]: {e}"))?;
                if let Some(i) = parsed.interface {
                    if i >= out.interfaces.len() {
                        return Err(format!("ips[{n}].interface: index {i} out of range"));
                    }
                }
                out.ips.push(parsed);
            }
        }
        if let Some(routes) = json::field(value, "routes") {
            out.routes = json::from_value(routes.clone()).map_err(|e| format!("routes: {e}"))?;
        }
        Ok(out)
    }

    /// Index of the interface named `ifname` that lives in a sandbox (the container side).
    pub fn sandbox_interface(&self, ifname: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == ifname && i.sandbox.is_some())
    }

    /// Addresses assigned to the container interface `ifname` (or all, when the result does
    /// not say which interface an address belongs to).
    pub fn container_ips(&self, ifname: &str) -> Vec<IpConfig> {
        let idx = self.sandbox_interface(ifname);
        self.ips
            .iter()
            .filter(|ip| match (ip.interface, idx) {
                (Some(i), Some(want)) => i == want,
                _ => true,
            })
            .cloned()
            .collect()
    }
}

/// The reply to VERSION.
pub fn version_reply(request_version: &str) -> Value {
    json!({
        "cniVersion": request_version,
        "supportedVersions": crate::version::SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED_VERSIONS;

    /// The spec's 1.x example result, with the 1.1.0 fields filled.
    fn full_result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("00:11:22:33:44:55".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("99:88:77:66:55:44".into()),
                    mtu: Some(1400),
                    sandbox: Some("/var/run/netns/blue".into()),
                    socket_path: Some("/run/sock".into()),
                    pci_id: Some("0000:00:1f.6".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: None,
                    mtu: Some(1400),
                    advmss: Some(1360),
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0),
                },
                Route::new("::/0".parse().unwrap(), Some("fd00::1".parse().unwrap())),
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                domain: None,
                search: vec!["example.com".into()],
                options: vec![],
            },
        }
    }

    /// What survives a trip through `version` (the fields that version can carry).
    fn projected(r: &CniResult, version: &str) -> CniResult {
        let v = Version::parse(version).unwrap();
        let mut r = r.clone();
        if v < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                *rt = Route::new(rt.dst, rt.gw);
            }
        }
        if v < Version::V0_3_0 {
            r.interfaces.clear();
            let first4 = r.ips.iter().find(|i| i.address.addr().is_ipv4()).cloned();
            let first6 = r.ips.iter().find(|i| i.address.addr().is_ipv6()).cloned();
            r.ips = first4
                .into_iter()
                .chain(first6)
                .map(|mut i| {
                    i.interface = None;
                    i
                })
                .collect();
            let (v4, v6): (Vec<_>, Vec<_>) =
                r.routes.iter().cloned().partition(|rt| rt.dst.addr().is_ipv4());
            r.routes = v4.into_iter().chain(v6).collect();
        }
        r
    }

    #[test]
    fn round_trip_between_every_pair_of_versions() {
        let original = full_result();
        for from in SUPPORTED_VERSIONS {
            for to in SUPPORTED_VERSIONS {
                let first = original.to_version(from).unwrap();
                let parsed = CniResult::from_version(&first, from).unwrap();
                assert_eq!(parsed, projected(&original, from), "parse back {from}");
                let second = parsed.to_version(to).unwrap();
                assert_eq!(second["cniVersion"], json!(to));
                let again = CniResult::from_version(&second, to).unwrap();
                // Converting through `from` then `to` keeps what both versions can carry.
                let expect = projected(&projected(&original, from), to);
                assert_eq!(again, expect, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn spec_0_2_0_example_upgrades() {
        let old = json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "2001:db8::5/64", "gateway": "2001:db8::1"},
            "dns": {"nameservers": ["10.1.0.1"]}
        });
        let r = CniResult::from_version(&old, "0.2.0").unwrap();
        let v1 = r.to_version("1.0.0").unwrap();
        assert_eq!(
            v1,
            json!({
                "cniVersion": "1.0.0",
                "ips": [
                    {"address": "10.1.0.5/16", "gateway": "10.1.0.1"},
                    {"address": "2001:db8::5/64", "gateway": "2001:db8::1"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.1.0.1"]}
            })
        );
        let v031 = r.to_version("0.3.1").unwrap();
        assert_eq!(v031["ips"][0]["version"], json!("4"));
        assert_eq!(v031["ips"][1]["version"], json!("6"));
    }

    #[test]
    fn spec_0_4_0_example_parses_and_downgrades() {
        let v040 = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [{"version": "4", "address": "10.0.0.5/32", "interface": 2}],
            "dns": {"nameservers": ["10.1.0.1"]}
        });
        let r = CniResult::from_version(&v040, "0.4.0").unwrap();
        assert_eq!(r.sandbox_interface("eth0"), Some(2));
        assert_eq!(r.container_ips("eth0").len(), 1);
        let v020 = r.to_version("0.2.0").unwrap();
        assert_eq!(
            v020,
            json!({
                "cniVersion": "0.2.0",
                "ip4": {"ip": "10.0.0.5/32"},
                "dns": {"nameservers": ["10.1.0.1"]}
            })
        );
    }

    #[test]
    fn v1_1_fields_only_in_1_1() {
        let r = full_result();
        let v11 = r.to_version("1.1.0").unwrap();
        assert_eq!(v11["interfaces"][1]["mtu"], json!(1400));
        assert_eq!(v11["interfaces"][1]["socketPath"], json!("/run/sock"));
        assert_eq!(v11["interfaces"][1]["pciID"], json!("0000:00:1f.6"));
        assert_eq!(v11["routes"][0]["advmss"], json!(1360));
        assert_eq!(v11["routes"][0]["table"], json!(100));
        let v10 = r.to_version("1.0.0").unwrap();
        assert!(v10["interfaces"][1].get("mtu").is_none());
        assert!(v10["routes"][0].get("priority").is_none());
        assert!(v10["ips"][0].get("version").is_none());
    }

    #[test]
    fn bad_results_are_rejected_with_the_field() {
        let e = CniResult::from_version(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}),
            "1.0.0",
        )
        .unwrap_err();
        assert!(e.contains("ips[0]"), "{e}");
        let e = CniResult::from_version(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "interface": 3}]}),
            "1.0.0",
        )
        .unwrap_err();
        assert!(e.contains("interface"), "{e}");
        assert!(CniResult::from_version(&json!([1]), "1.0.0").is_err());
    }
}
