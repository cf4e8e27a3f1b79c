//! portmap configuration: the `portMappings` capability plus the reference plugin's keys.

use cni::{CniError, Request};
use firewall::Protocol;
use serde::Deserialize;
use std::net::IpAddr;

/// One entry of `runtimeConfig.portMappings`, as runtimes send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    host_port: i64,
    container_port: i64,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    snat: Option<bool>,
    #[serde(default)]
    masq_all: bool,
    mark_masq_bit: Option<i64>,
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    backend: Option<String>,
}

/// A requested mapping before container addresses are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone)]
pub struct PortmapConf {
    pub mappings: Vec<Requested>,
    pub snat: bool,
    pub masq_all: bool,
    pub backend: Option<firewall::BackendKind>,
}

fn port(key: &str, v: i64) -> Result<u16, CniError> {
    if (1..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(CniError::bad_value(key, v, "a port must be between 1 and 65535"))
    }
}

impl PortmapConf {
    pub fn from_request(req: &Request) -> Result<PortmapConf, CniError> {
        let raw: RawConf = req.plugin_config()?;
        let backend = match raw.backend.as_deref() {
            None | Some("") => None,
            Some(b) => Some(b.parse::<firewall::BackendKind>().map_err(|_| {
                CniError::bad_value(
                    "backend",
                    format!("{b:?}"),
                    "expected \"nftables\" or \"iptables\"",
                )
            })?),
        };
        if let Some(bit) = raw.mark_masq_bit {
            if !(0..=31).contains(&bit) {
                return Err(CniError::bad_value("markMasqBit", bit, "must be between 0 and 31"));
            }
        }
        // These keys program iptables chains that this suite does not create; say so rather
        // than silently ignoring a filter the user relies on.
        if let Some(chain) = &raw.external_set_mark_chain {
            return Err(CniError::unsupported_field("externalSetMarkChain", format!("{chain:?}")));
        }
        for (key, conds) in
            [("conditionsV4", &raw.conditions_v4), ("conditionsV6", &raw.conditions_v6)]
        {
            if let Some(c) = conds.as_ref().filter(|c| !c.is_empty()) {
                return Err(CniError::unsupported_field(key, format!("{c:?}")));
            }
        }
        let mut mappings = Vec::new();
        if let Some(list) = req.conf.runtime("portMappings") {
            // Go field names arrive untagged from go-cni ("HostPort"): matched like Go does.
            let raws: Vec<RawMapping> = cni::json::from_value(list.clone())
                .map_err(|e| CniError::config(format!("invalid runtimeConfig.portMappings{e}")))?;
            for (i, m) in raws.iter().enumerate() {
                let host_port = port(&format!("portMappings[{i}].hostPort"), m.host_port)?;
                let container_port =
                    port(&format!("portMappings[{i}].containerPort"), m.container_port)?;
                let protocol = match m.protocol.as_deref() {
                    None | Some("") => Protocol::Tcp,
                    Some(p) => p.parse().map_err(|_| {
                        CniError::bad_value(
                            &format!("portMappings[{i}].protocol"),
                            format!("{p:?}"),
                            "expected tcp, udp or sctp",
                        )
                    })?,
                };
                let host_ip = match m.host_ip.as_deref() {
                    None | Some("") => None,
                    Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
                        CniError::bad_value(
                            &format!("portMappings[{i}].hostIP"),
                            format!("{s:?}"),
                            "not an IP address",
                        )
                    })?),
                };
                let req = Requested { host_ip, host_port, container_port, protocol };
                if !mappings.contains(&req) {
                    mappings.push(req);
                }
            }
        }
        Ok(PortmapConf {
            mappings,
            snat: raw.snat.unwrap_or(true),
            masq_all: raw.masq_all,
            backend,
        })
    }
}
