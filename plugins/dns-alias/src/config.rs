//! The plugin's own config keys, and the names a container gets on a network.

use cni::{CniError, Request};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// Keys of the `dns-alias` entry in a conflist.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsConf {
    /// Turns name resolution off for this network (Docker's default bridge has none).
    #[serde(default)]
    pub disable_dns: bool,
    /// Search domain: names answer with and without it, and it goes into `dns.search`.
    #[serde(default)]
    pub domain_name: Option<String>,
    /// Where other names are forwarded ("10.0.0.1", "10.0.0.1:5353", "[fd00::1]:53");
    /// default: the host's /etc/resolv.conf nameservers.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// TTL of local answers in seconds (0: clients do not cache, round-robin stays fresh).
    #[serde(default)]
    pub ttl: u32,
    /// Docker `--internal`: answer local names only, never forward (moby#47538). Also set
    /// when the network's bridge is internal (see [`bridge_says_internal`]).
    #[serde(default)]
    pub internal: bool,
}

impl DnsConf {
    pub fn from_request(req: &Request) -> Result<DnsConf, CniError> {
        let mut c: DnsConf = req.plugin_config()?;
        if let Some(raw) = &c.domain_name {
            if raw.trim().is_empty() {
                c.domain_name = None;
            } else {
                let d = normalize(raw);
                validate_name(&d)
                    .map_err(|why| CniError::bad_value("domainName", format!("{raw:?}"), why))?;
                c.domain_name = Some(d);
            }
        }
        if c.internal && !c.upstreams.is_empty() {
            return Err(CniError::bad_value(
                "upstreams",
                format!("{:?}", c.upstreams),
                "an internal network does not forward queries (remove upstreams or internal)",
            ));
        }
        for u in &c.upstreams {
            parse_upstream(u).ok_or_else(|| {
                CniError::bad_value(
                    "upstreams",
                    format!("{u:?}"),
                    "expected an IP address, optionally with :port",
                )
            })?;
        }
        if c.ttl > 86400 {
            return Err(CniError::bad_value("ttl", c.ttl, "must be at most 86400 seconds"));
        }
        Ok(c)
    }
}

/// "10.0.0.1" (port 53), "10.0.0.1:5353", "fd00::1", "[fd00::1]:53".
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// Lowercase, without the one trailing dot of a fully qualified name.
pub fn normalize(name: &str) -> String {
    let n = name.trim();
    n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase()
}

/// A name we can serve: dot-separated labels of 1-63 letters, digits, '-' or '_' that
/// neither start nor end with '-' (the DNS hostname rule; '_' as container names have it),
/// at most 253 characters. Returns why not.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'");
        }
    }
    Ok(())
}

/// True when the network's bridge recorded it as internal: bridge runs before dns-alias in
/// the chain and keeps its network record (`$CNI_SUITE_STATE_DIR/bridge/<network>/
/// network.json` in its typed store, the network name hashed when long) with an `internal`
/// key. A missing or unreadable record says nothing (macvlan, another bridge).
pub fn bridge_says_internal(network: &str) -> bool {
    let path = cni::store::Store::for_plugin("bridge").path(&[network, "network"]);
    std::fs::read(path)
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v.get("internal").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// The names a container answers to on this network, primary first: its name (CNI_ARGS
/// `K8S_POD_NAME`, as podman and Kubernetes pass it, else `args.cni.name`), its aliases
/// (`runtimeConfig.aliases`, a list or podman's `{network: [aliases]}` map), and the short
/// container id (first 12 characters, like Docker).
pub fn container_names(req: &Request) -> Result<Vec<String>, CniError> {
    let mut raw: Vec<(String, String)> = Vec::new();
    if let Some(n) = req.env.arg("K8S_POD_NAME").filter(|n| !n.is_empty()) {
        raw.push(("CNI_ARGS K8S_POD_NAME".into(), n.to_string()));
    } else if let Some(v) = req.conf.args_cni("name") {
        let n = v
            .as_str()
            .ok_or_else(|| CniError::bad_value("args.cni.name", v, "must be a string"))?;
        raw.push(("args.cni.name".into(), n.to_string()));
    } else if let Some(n) = req.env.arg("NERDCTL_CNI_DHCP_HOSTNAME").filter(|n| !n.is_empty()) {
        // nerdctl passes no container name to CNI, only the container's hostname.
        raw.push(("CNI_ARGS NERDCTL_CNI_DHCP_HOSTNAME".into(), n.to_string()));
    }
    if let Some(v) = req.conf.runtime("aliases") {
        let list = match v {
            serde_json::Value::Array(a) => Some(a),
            serde_json::Value::Object(m) => match m.get(&req.conf.name) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Array(a)) => Some(a),
                Some(other) => {
                    return Err(CniError::bad_value(
                        &format!("runtimeConfig.aliases.{}", req.conf.name),
                        other,
                        "must be a list of names",
                    ))
                }
            },
            other => {
                return Err(CniError::bad_value(
                    "runtimeConfig.aliases",
                    other,
                    "must be a list of names or a map of network name to a list of names",
                ))
            }
        };
        for a in list.into_iter().flatten() {
            let s = a.as_str().ok_or_else(|| {
                CniError::bad_value("runtimeConfig.aliases", a, "each alias must be a string")
            })?;
            raw.push(("runtimeConfig.aliases".into(), s.to_string()));
        }
    }
    raw.push(("CNI_CONTAINERID".into(), short_id(&req.env.container_id)));

    let mut names: Vec<String> = Vec::new();
    for (source, n) in raw {
        let norm = normalize(&n);
        validate_name(&norm).map_err(|why| CniError::bad_value(&source, format!("{n:?}"), why))?;
        if !names.contains(&norm) {
            names.push(norm);
        }
    }
    Ok(names)
}

/// Docker's short id: the first 12 characters of the container id. nerdctl's CNI_CONTAINERID
/// is `<containerd namespace>-<64-hex id>`: the short id is taken from the id part.
fn short_id(container_id: &str) -> String {
    let id = match container_id.rsplit_once('-') {
        Some((_, tail)) if tail.len() == 64 && tail.bytes().all(|b| b.is_ascii_hexdigit()) => tail,
        _ => container_id,
    };
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nerdctl_ids_and_hostnames() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(short_id(&format!("default-{hex}")), "0123456789ab");
        assert_eq!(short_id(&hex), "0123456789ab");
        assert_eq!(short_id("my-pod-sandbox-id"), "my-pod-sandb");
        let r = req(
            "IgnoreUnknown=1;NERDCTL_CNI_DHCP_HOSTNAME=db",
            serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "type": "dns-alias"}),
        );
        assert_eq!(container_names(&r).unwrap(), vec!["db", "abcdef012345"]);
    }

    fn req(args: &str, conf: serde_json::Value) -> Request {
        let stdin = conf.to_string();
        cni::dispatch::request_for("ADD", "ABCDEF0123456789", "eth0", args, stdin.as_bytes())
            .unwrap()
    }

    #[test]
    fn names_from_args_aliases_and_id() {
        let r = req(
            "IgnoreUnknown=1;K8S_POD_NAME=Web_1",
            serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "type": "dns-alias",
                "runtimeConfig": {"aliases": {"net1": ["tg-net", "WEB_1"], "other": ["nope"]}}}),
        );
        assert_eq!(container_names(&r).unwrap(), vec!["web_1", "tg-net", "abcdef012345"]);
    }

    #[test]
    fn plain_alias_list_and_args_cni_name() {
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "type": "dns-alias",
                "args": {"cni": {"name": "db"}}, "runtimeConfig": {"aliases": ["db.", "pg"]}}),
        );
        assert_eq!(container_names(&r).unwrap(), vec!["db", "pg", "abcdef012345"]);
    }

    #[test]
    fn bad_alias_names_the_source() {
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "type": "dns-alias",
                "runtimeConfig": {"aliases": ["has space"]}}),
        );
        let e = container_names(&r).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("runtimeConfig.aliases") && e.msg.contains("has space"),
            "{}",
            e.msg
        );
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "type": "dns-alias",
                "runtimeConfig": {"aliases": 5}}),
        );
        assert_eq!(container_names(&r).unwrap_err().code, 7);
    }

    #[test]
    fn label_rules() {
        for bad in ["-", "-x", "x-", "a.-b", "a..b", "..", ".", "a b", "ü"] {
            assert!(validate_name(&normalize(bad)).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "web_1", "my-db", "x.dns.podman", "db.", "0abc"] {
            assert!(validate_name(&normalize(good)).is_ok(), "{good:?} refused");
        }
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias",
                "runtimeConfig": {"aliases": ["-"]}}),
        );
        let e = container_names(&r).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("runtimeConfig.aliases") && e.msg.contains("\"-\""), "{}", e.msg);
        for d in ["..", ".", "a..b", "-a"] {
            let r = req(
                "",
                serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias", "domainName": d}),
            );
            let e = DnsConf::from_request(&r).unwrap_err();
            assert_eq!(e.code, 7, "{d}");
            assert!(e.msg.contains("domainName") && e.msg.contains(&format!("{d:?}")), "{}", e.msg);
        }
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias", "domainName": ""}),
        );
        assert_eq!(DnsConf::from_request(&r).unwrap().domain_name, None);
    }

    #[test]
    fn internal_refuses_upstreams_and_dnsname_type_is_the_same() {
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias",
                "internal": true, "upstreams": ["10.0.0.1"]}),
        );
        let e = DnsConf::from_request(&r).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("upstreams"), "{}", e.msg);
        // podman's generated entry
        let r = req(
            "IgnoreUnknown=1;K8S_POD_NAME=web",
            serde_json::json!({"cniVersion": "0.4.0", "name": "podnet", "type": "dnsname",
                "domainName": "dns.podman", "capabilities": {"aliases": true},
                "runtimeConfig": {"aliases": {"podnet": ["webalias"]}}}),
        );
        let c = DnsConf::from_request(&r).unwrap();
        assert_eq!(c.domain_name.as_deref(), Some("dns.podman"));
        assert!(!c.internal);
        assert_eq!(container_names(&r).unwrap(), vec!["web", "webalias", "abcdef012345"]);
    }

    #[test]
    fn keys_match_like_gos_decoder() {
        let r = req(
            "K8S_POD_NAME=web",
            serde_json::json!({"cniVersion": "0.4.0", "name": "podnet", "type": "dnsname",
                "DomainName": "Dns.Podman", "UPSTREAMS": ["10.0.0.1"], "Ttl": 3,
                "runtimeConfig": {"Aliases": {"podnet": ["Alias1"]}}}),
        );
        let c = DnsConf::from_request(&r).unwrap();
        assert_eq!(c.domain_name.as_deref(), Some("dns.podman"));
        assert_eq!((c.upstreams.len(), c.ttl), (1, 3));
        assert_eq!(container_names(&r).unwrap(), vec!["web", "alias1", "abcdef012345"]);
    }

    #[test]
    fn conf_keys() {
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias",
                "domainName": "Dns.Test.", "upstreams": ["10.9.0.1", "10.9.0.2:5353", "fd00::1"], "ttl": 5}),
        );
        let c = DnsConf::from_request(&r).unwrap();
        assert_eq!(c.domain_name.as_deref(), Some("dns.test"));
        assert_eq!(c.ttl, 5);
        assert_eq!(parse_upstream("10.9.0.2:5353"), Some("10.9.0.2:5353".parse().unwrap()));
        assert_eq!(parse_upstream("fd00::1"), Some("[fd00::1]:53".parse().unwrap()));
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias", "upstreams": ["dns.google"]}),
        );
        let e = DnsConf::from_request(&r).unwrap_err();
        assert!(e.msg.contains("upstreams") && e.msg.contains("dns.google"), "{}", e.msg);
        let r = req(
            "",
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias", "disableDns": "yes"}),
        );
        assert_eq!(DnsConf::from_request(&r).unwrap_err().code, 7);
    }
}
