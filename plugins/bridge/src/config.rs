//! The bridge plugin's configuration: every key of the reference `bridge` plugin plus
//! Docker's network options (isolation, internal, icc), validated before anything changes.

use cni::{CniError, Request};
use serde::Deserialize;

/// A trunk entry: one VLAN id or an inclusive range.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TrunkEntry {
    #[serde(rename = "id")]
    pub id: Option<u32>,
    #[serde(rename = "minID")]
    pub min_id: Option<u32>,
    #[serde(rename = "maxID")]
    pub max_id: Option<u32>,
}

/// Keys as written in the network config (reference names, camelCase).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    mtu: Option<u64>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    vlan: Option<i64>,
    vlan_trunk: Option<Vec<TrunkEntry>>,
    preserve_default_vlan: Option<bool>,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    enabledad: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default)]
    port_isolation: bool,
    /// Docker: containers on different networks cannot reach each other (default on).
    isolation: Option<bool>,
    /// Docker `--internal`: no route out, no NAT.
    #[serde(default)]
    internal: bool,
    /// Docker `com.docker.network.bridge.enable_icc`: traffic between containers of this network.
    icc: Option<bool>,
    /// "nftables" (default) or "iptables".
    firewall_backend: Option<String>,
    /// Reference compatibility: `ipMasqBackend` means the same thing.
    ip_masq_backend: Option<String>,
    mac: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConf {
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    pub vlan: Option<u16>,
    pub vlan_trunk: Vec<u16>,
    pub preserve_default_vlan: bool,
    pub macspoofchk: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    pub isolation: bool,
    pub internal: bool,
    pub icc: bool,
    pub firewall: Option<firewall::BackendKind>,
    /// MAC for the container interface: runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC, or `mac`.
    pub mac: Option<[u8; 6]>,
    /// `ipam` names an IPAM plugin (see `ipam::configured`: a malformed section is refused).
    pub has_ipam: bool,
    /// The config's `dns`, reported when IPAM gives none.
    pub dns: Option<cni::Dns>,
}

fn vlan_id(key: &str, v: i64) -> Result<u16, CniError> {
    if (1..=4094).contains(&v) {
        Ok(v as u16)
    } else {
        Err(CniError::bad_value(key, v, "a VLAN id must be between 1 and 4094"))
    }
}

impl BridgeConf {
    /// Parses and validates; every error is code 7 naming the key and the value.
    pub fn from_request(req: &Request) -> Result<BridgeConf, CniError> {
        let raw: RawConf = req.plugin_config()?;
        let bridge = raw.bridge.unwrap_or_else(|| "cni0".to_string());
        cni::names::check_ifname("bridge", &bridge)?;
        let mtu = match raw.mtu {
            None | Some(0) => None,
            Some(m) if !(68..=65535).contains(&m) => {
                return Err(CniError::bad_value("mtu", m, "must be between 68 and 65535"));
            }
            Some(m) => Some(m as u32),
        };
        let vlan = match raw.vlan {
            None | Some(0) => None,
            Some(v) => Some(vlan_id("vlan", v)?),
        };
        let mut vlan_trunk = Vec::new();
        for entry in raw.vlan_trunk.unwrap_or_default() {
            match (entry.id, entry.min_id, entry.max_id) {
                (Some(id), None, None) => vlan_trunk.push(vlan_id("vlanTrunk.id", id as i64)?),
                (None, Some(lo), Some(hi)) => {
                    let (lo, hi) = (
                        vlan_id("vlanTrunk.minID", lo as i64)?,
                        vlan_id("vlanTrunk.maxID", hi as i64)?,
                    );
                    if lo > hi {
                        return Err(CniError::bad_value(
                            "vlanTrunk.minID",
                            lo,
                            format!("greater than maxID {hi}"),
                        ));
                    }
                    vlan_trunk.extend(lo..=hi);
                }
                _ => {
                    return Err(CniError::config(
                        "invalid vlanTrunk entry: give either \"id\" or both \"minID\" and \
                        \"maxID\"",
                    ));
                }
            }
        }
        if vlan.is_some() && !vlan_trunk.is_empty() {
            return Err(CniError::config(
                "invalid config: \"vlan\" and \"vlanTrunk\" cannot both be set",
            ));
        }
        let backend_name = raw.firewall_backend.or(raw.ip_masq_backend);
        let firewall = match backend_name.as_deref() {
            None | Some("") => None,
            Some(name) => Some(name.parse::<firewall::BackendKind>().map_err(|_| {
                CniError::bad_value(
                    "firewallBackend",
                    format!("{name:?}"),
                    "expected \"nftables\" or \"iptables\"",
                )
            })?),
        };
        let mac = Self::requested_mac(req, raw.mac.as_deref())?;
        let has_ipam = ipam::configured(req)?;
        let internal = raw.internal;
        Ok(BridgeConf {
            bridge,
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway && !internal,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq && !internal,
            mtu,
            hairpin: raw.hairpin_mode,
            promisc: raw.promisc_mode,
            vlan,
            vlan_trunk,
            preserve_default_vlan: raw.preserve_default_vlan.unwrap_or(true),
            macspoofchk: raw.macspoofchk,
            enable_dad: raw.enabledad,
            disable_container_interface: raw.disable_container_interface,
            port_isolation: raw.port_isolation,
            isolation: raw.isolation.unwrap_or(true),
            internal,
            icc: raw.icc.unwrap_or(true),
            firewall,
            mac,
            has_ipam,
            dns: req.conf.dns.clone(),
        })
    }

    /// The container MAC, in order of precedence: runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC.
    fn requested_mac(req: &Request, conf_mac: Option<&str>) -> Result<Option<[u8; 6]>, CniError> {
        let (key, value) = if let Some(v) = req.conf.runtime("mac").and_then(|v| v.as_str()) {
            ("runtimeConfig.mac", v.to_string())
        } else if let Some(v) = req.conf.args_cni("mac").and_then(|v| v.as_str()) {
            ("args.cni.mac", v.to_string())
        } else if let Some(v) = req.env.arg("MAC") {
            ("CNI_ARGS MAC", v.to_string())
        } else if let Some(v) = conf_mac {
            ("mac", v.to_string())
        } else {
            return Ok(None);
        };
        match netlink::parse_mac(&value) {
            Some(m) if m[0] & 1 == 0 => Ok(Some(m)),
            Some(_) => Err(CniError::bad_value(
                key,
                &value,
                "a multicast MAC cannot be used for an interface",
            )),
            None => Err(CniError::bad_value(key, &value, "not a MAC address (aa:bb:cc:dd:ee:ff)")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The config of network "n" with the keys of `extra`, CNI_ARGS `args`.
    pub(crate) fn parse(extra: serde_json::Value, args: &str) -> Result<BridgeConf, CniError> {
        let mut c = json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let req = cni::dispatch::request_for("ADD", "c1", "eth0", args, c.to_string().as_bytes())
            .unwrap();
        BridgeConf::from_request(&req)
    }

    #[test]
    fn defaults_and_docker_options() {
        let c = parse(json!({}), "").unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(c.isolation && c.icc && !c.internal && !c.has_ipam);
        assert!(c.preserve_default_vlan);
        // internal turns off NAT and the default route, and still makes a gateway.
        let c =
            parse(json!({"internal": true, "ipMasq": true, "isDefaultGateway": true}), "").unwrap();
        assert!(!c.ip_masq && !c.is_default_gateway && c.is_gateway);
    }

    #[test]
    fn go_clients_may_spell_keys_in_any_case() {
        let c = parse(json!({"IsGateway": true, "IPMASQ": true, "Mtu": 1400}), "").unwrap();
        assert!(c.is_gateway && c.ip_masq);
        assert_eq!(c.mtu, Some(1400));
    }

    #[test]
    fn bad_values_are_code_7_naming_key_and_value() {
        for (extra, needle) in [
            (json!({"bridge": "way-too-long-bridge-name"}), "way-too-long-bridge-name"),
            (json!({"bridge": "a b"}), "bridge"),
            (json!({"mtu": 20}), "mtu"),
            (json!({"vlan": 4095}), "4095"),
            (json!({"vlan": 3, "vlanTrunk": [{"id": 4}]}), "vlanTrunk"),
            (json!({"vlanTrunk": [{"minID": 9, "maxID": 3}]}), "minID"),
            (json!({"vlanTrunk": [{"maxID": 3}]}), "vlanTrunk"),
            (json!({"firewallBackend": "pf"}), "pf"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac"),
            (json!({"isGateway": "yes"}), "isGateway"),
            (json!({"ipam": "host-local"}), "ipam"),
            (json!({"ipam": {"type": "bridge"}}), "ipam.type"),
        ] {
            let e = parse(extra.clone(), "").unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
        }
    }

    #[test]
    fn mac_precedence() {
        let c = parse(json!({"mac": "02:00:00:00:00:01"}), "MAC=02:00:00:00:00:02").unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]), "CNI_ARGS beats the config");
        let c = parse(
            json!({"runtimeConfig": {"mac": "02:00:00:00:00:03"}, "args": {"cni": {"mac": "02:00:00:00:00:04"}}}),
            "MAC=02:00:00:00:00:02",
        )
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]), "runtimeConfig beats all");
    }
}
