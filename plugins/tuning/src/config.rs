//! tuning configuration: the reference plugin's keys (`sysctl`, `mac`, `mtu`, `promisc`,
//! `allmulti`, `txQLen`, `dataDir`), the `mac` capability, CNI_ARGS `MAC` and `args.cni`,
//! validated before anything is changed.

use cni::{CniError, Request};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Where the reference looks for its sysctl allowlist (one regular expression per line).
pub const DEFAULT_ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";
/// Points the allowlist elsewhere (tests; hosts that keep it outside /etc).
pub const ALLOWLIST_ENV: &str = "CNI_SUITE_TUNING_ALLOWLIST";

/// The keys tuning reads, from the top level and again from `args.cni` (which overrides).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSettings {
    sysctl: Option<Map<String, Value>>,
    mac: Option<String>,
    promisc: Option<bool>,
    mtu: Option<i64>,
    #[serde(rename = "txQLen")]
    tx_q_len: Option<i64>,
    allmulti: Option<bool>,
}

/// The key only the top level has.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDataDir {
    data_dir: Option<String>,
}

/// One sysctl to set: the key as written in the config and the path under /proc/sys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    /// "net/ipv4/conf/eth0/arp_filter": the path under /proc/sys, `IFNAME` substituted.
    pub path: String,
    pub value: String,
}

/// What tuning will make true of CNI_IFNAME and its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuningConf {
    pub sysctls: Vec<Sysctl>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// The reference only ever turns promiscuous mode on: false leaves it as it is.
    pub promisc: bool,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
    /// `dataDir`: where the original values are kept for DEL.
    pub data_dir: Option<PathBuf>,
}

impl TuningConf {
    /// True when a link setting (not only sysctls) is requested.
    pub fn changes_link(&self) -> bool {
        self.mac.is_some()
            || self.mtu.is_some()
            || self.promisc
            || self.allmulti.is_some()
            || self.txqlen.is_some()
    }

    /// Parses and validates everything; `allowlist` is the allowlist file's text, if any.
    pub fn from_request(req: &Request, allowlist: Option<&str>) -> Result<TuningConf, CniError> {
        if let Some(key) = duplicated_sysctl_key(&req.stdin)? {
            return Err(CniError::config(format!(
                "sysctl: the key {key:?} appears twice; each sysctl may be given once"
            )));
        }
        let raw: RawSettings = req.plugin_config()?;
        let RawDataDir { data_dir } = req.plugin_config()?;
        let args_cni = cni::json::get(&req.conf.args, "cni").filter(|v| !v.is_null());
        let args: RawSettings = match args_cni {
            Some(v) => cni::json::from_value(v.clone())
                .map_err(|e| CniError::config(format!("invalid args.cni.{e}")))?,
            None => RawSettings::default(),
        };
        let ifname = &req.env.ifname;

        // Later sources win, as in the reference: config, CNI_ARGS MAC, the mac capability,
        // then args.cni.
        let mut mac_src = raw.mac.map(|m| ("mac", m));
        if let Some(m) = req.env.arg("MAC").filter(|m| !m.is_empty()) {
            mac_src = Some(("CNI_ARGS MAC", m.to_string()));
        }
        if let Some(v) = req.conf.runtime("mac") {
            match v.as_str() {
                Some("") => {}
                Some(m) => mac_src = Some(("runtimeConfig.mac", m.to_string())),
                None => {
                    return Err(CniError::bad_value("runtimeConfig.mac", v, "expected a string"))
                }
            }
        }
        if let Some(m) = args.mac {
            mac_src = Some(("args.cni.mac", m));
        }
        let mac = match mac_src.filter(|(_, m)| !m.is_empty()) {
            None => None,
            Some((key, m)) => Some(parse_unicast_mac(key, &m)?),
        };

        let mtu = match args.mtu.map(|v| ("args.cni.mtu", v)).or(raw.mtu.map(|v| ("mtu", v))) {
            None | Some((_, 0)) => None,
            Some((key, v)) if v < 0 || v > u32::MAX as i64 => {
                return Err(CniError::bad_value(key, v, "an MTU must be a positive number"))
            }
            Some((_, v)) => Some(v as u32),
        };
        let txqlen = match args
            .tx_q_len
            .map(|v| ("args.cni.txQLen", v))
            .or(raw.tx_q_len.map(|v| ("txQLen", v)))
        {
            None => None,
            Some((key, v)) if v < 0 || v > u32::MAX as i64 => {
                return Err(CniError::bad_value(
                    key,
                    v,
                    "a transmit queue length must be between 0 and 4294967295",
                ))
            }
            Some((_, v)) => Some(v as u32),
        };
        let promisc = args.promisc.or(raw.promisc).unwrap_or(false);
        let allmulti = args.allmulti.or(raw.allmulti);

        // args.cni.sysctl adds to (and overrides keys of) the config's map.
        let mut entries: Vec<(String, Value)> =
            raw.sysctl.unwrap_or_default().into_iter().collect();
        for (k, v) in args.sysctl.unwrap_or_default() {
            entries.retain(|(ek, _)| ek != &k);
            entries.push((k, v));
        }
        let allow = match allowlist {
            Some(text) => Some(Allowlist::parse(text)?),
            None => None,
        };
        let mut sysctls: Vec<Sysctl> = Vec::new();
        for (key, value) in entries {
            let value = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(CniError::bad_value(
                        &format!("sysctl {key:?}"),
                        other,
                        "a sysctl value must be a string",
                    ))
                }
            };
            if let Some(allow) = &allow {
                allow.check(&key)?;
            }
            let path = sysctl_path(&key, ifname)?;
            if let Some(other) = sysctls.iter().find(|s| s.path == path) {
                return Err(CniError::config(format!(
                    "sysctl: the keys {:?} and {key:?} both name /proc/sys/{path}",
                    other.key
                )));
            }
            sysctls.push(Sysctl { key, path, value });
        }

        let data_dir = match data_dir.as_deref() {
            None | Some("") => None,
            Some(d) if !Path::new(d).is_absolute() => {
                return Err(CniError::bad_value(
                    "dataDir",
                    format!("{d:?}"),
                    "must be an absolute path",
                ))
            }
            Some(d) => Some(PathBuf::from(d)),
        };
        Ok(TuningConf { sysctls, mac, mtu, promisc, allmulti, txqlen, data_dir })
    }
}

/// Only `dataDir`, read leniently: DEL must work whatever else the config says.
pub fn data_dir_for_del(req: &Request) -> Option<PathBuf> {
    cni::json::get(&req.conf.extra, "dataDir")
        .and_then(Value::as_str)
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
}

/// A MAC an interface can have: six bytes, not multicast, not all zero.
fn parse_unicast_mac(key: &str, text: &str) -> Result<[u8; 6], CniError> {
    let mac = netlink::parse_mac(text).ok_or_else(|| {
        CniError::bad_value(
            key,
            format!("{text:?}"),
            "expected a MAC address like c2:b0:57:49:47:f1",
        )
    })?;
    if mac[0] & 1 == 1 {
        return Err(CniError::bad_value(
            key,
            format!("{text:?}"),
            "is a multicast address, which an interface cannot have",
        ));
    }
    if mac == [0; 6] {
        return Err(CniError::bad_value(
            key,
            format!("{text:?}"),
            "the all-zero address is not valid",
        ));
    }
    Ok(mac)
}

/// The path under /proc/sys that a sysctl key names, with `IFNAME` replaced by the interface.
///
/// Keys use sysctl(8)'s two spellings: `net.ipv4.conf.eth0.arp_filter`, where a `/` inside a
/// component stands for a dot (`net.ipv4.conf.eth0/10.rp_filter` is interface `eth0.10`), or
/// `net/ipv4/conf/eth0.10/rp_filter`, where dots are literal. The interface name replaces
/// `IFNAME` after splitting, so an interface name with dots stays one component. Only keys
/// under `net` are accepted: /proc/sys/net follows the network namespace, everything else
/// would change the host. Empty, `.` and `..` components are refused: they could leave
/// /proc/sys/net.
pub fn sysctl_path(key: &str, ifname: &str) -> Result<String, CniError> {
    let bad = |why: &str| CniError::config(format!("invalid sysctl key {key:?}: {why}"));
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let slash_form = match (key.find('/'), key.find('.')) {
        (Some(s), Some(d)) => s < d,
        (Some(_), None) => true,
        _ => false,
    };
    let mut parts: Vec<String> = if slash_form {
        key.split('/').map(str::to_string).collect()
    } else {
        key.split('.').map(|p| p.replace('/', ".")).collect()
    };
    if parts.iter().any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(bad(
            "empty, '.' and '..' components are not allowed (the key must stay under \
            /proc/sys/net)",
        ));
    }
    if let Some(p) = parts.iter_mut().find(|p| p.contains("IFNAME")) {
        *p = p.replacen("IFNAME", ifname, 1);
    }
    if parts[0] != "net" {
        return Err(bad(
            "only net.* sysctls can be set: they belong to the container's network namespace, \
            other sysctls would change the host",
        ));
    }
    if parts.len() < 2 {
        return Err(bad("names a directory, not a sysctl"));
    }
    Ok(parts.join("/"))
}

/// The reference's sysctl allowlist: when the file exists, every key must match one of its
/// regular expressions (Go semantics: a match anywhere in the key).
#[derive(Debug)]
pub struct Allowlist {
    patterns: Vec<(String, regex_lite::Regex)>,
}

impl Allowlist {
    pub fn parse(text: &str) -> Result<Allowlist, CniError> {
        let mut patterns = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let re = regex_lite::Regex::new(line).map_err(|e| {
                CniError::config(format!(
                    "sysctl allowlist: invalid regular expression {line:?}: {e}"
                ))
            })?;
            patterns.push((line.to_string(), re));
        }
        Ok(Allowlist { patterns })
    }

    pub fn check(&self, key: &str) -> Result<(), CniError> {
        if self.patterns.iter().any(|(_, re)| re.is_match(key)) {
            return Ok(());
        }
        let list: Vec<&str> = self.patterns.iter().map(|(p, _)| p.as_str()).collect();
        Err(CniError::config(format!(
            "sysctl {key:?} is not allowed by the sysctl allowlist; allowed: {list:?}"
        )))
    }
}

/// Reads the allowlist file when there is one (`$CNI_SUITE_TUNING_ALLOWLIST`, else the
/// reference's path). A file that exists but cannot be read is an error, not "no list".
pub fn read_allowlist() -> Result<Option<String>, CniError> {
    let path = std::env::var_os(ALLOWLIST_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ALLOWLIST));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("reading sysctl allowlist {}: {e}", path.display()))),
    }
}

/// The first key that appears twice in the top-level `sysctl` object of the raw config
/// (a JSON object keeps only the last of equal keys, so this reads the bytes). The reference
/// refuses duplicates too.
fn duplicated_sysctl_key(stdin: &[u8]) -> Result<Option<String>, CniError> {
    struct Top;
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = None;
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) && dup.is_none() {
                    dup = Some(k);
                }
            }
            Ok(dup)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    struct KeysSeed;
    impl<'de> serde::de::DeserializeSeed<'de> for KeysSeed {
        type Value = Option<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Keys)
        }
    }
    impl<'de> Visitor<'de> for Top {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a network configuration object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut dup = None;
            while let Some(k) = map.next_key::<String>()? {
                if cni::json::keys_match("sysctl", &k) {
                    // Like Go, the last matching key is the one that counts.
                    dup = map.next_value_seed(KeysSeed)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(dup)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(stdin);
    match serde::Deserializer::deserialize_map(&mut de, Top) {
        Ok(d) => Ok(d),
        // The "sysctl" value is not an object: the typed parse reports that with its key.
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_map_under_proc_sys_net() {
        let p = |k: &str| sysctl_path(k, "eth0");
        assert_eq!(p("net.core.somaxconn").unwrap(), "net/core/somaxconn");
        assert_eq!(p("net.ipv4.conf.IFNAME.arp_filter").unwrap(), "net/ipv4/conf/eth0/arp_filter");
        assert_eq!(p("net/ipv4/conf/IFNAME/arp_filter").unwrap(), "net/ipv4/conf/eth0/arp_filter");
        // sysctl(8): '/' inside a dotted key is a literal dot, and the reverse.
        assert_eq!(
            p("net.ipv4.conf.eth0/10.rp_filter").unwrap(),
            "net/ipv4/conf/eth0.10/rp_filter"
        );
        assert_eq!(
            p("net/ipv4/conf/eth0.10/rp_filter").unwrap(),
            "net/ipv4/conf/eth0.10/rp_filter"
        );
        // An interface name with a dot stays one component.
        assert_eq!(
            sysctl_path("net.ipv4.conf.IFNAME.rp_filter", "eth0.10").unwrap(),
            "net/ipv4/conf/eth0.10/rp_filter"
        );
    }

    #[test]
    fn sysctl_keys_that_leave_the_namespace_are_refused() {
        for key in [
            "kernel.hostname",
            "vm.swappiness",
            "net/../kernel/hostname",
            "net.ipv4.conf.eth0/../../../kernel.x",
            "net..ipv4",
            "net.",
            ".net.core.x",
            "/net/core/x",
            "net",
            "",
            "net/./core",
        ] {
            let e = sysctl_path(key, "eth0").unwrap_err();
            assert_eq!(e.code, 7, "{key}");
            assert!(e.msg.contains(&format!("{key:?}")), "{key}: {}", e.msg);
        }
        let e = sysctl_path("kernel.hostname", "eth0").unwrap_err();
        assert!(e.msg.contains("only net.* sysctls"), "{}", e.msg);
    }

    #[test]
    fn macs_must_be_unicast() {
        assert_eq!(parse_unicast_mac("mac", "C2:B0:57:49:47:F1").unwrap()[0], 0xc2);
        for bad in ["01:00:5e:00:00:01", "00:00:00:00:00:00", "zz", "c2:b0:57:49:47"] {
            let e = parse_unicast_mac("mac", bad).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains("mac") && e.msg.contains(bad), "{}", e.msg);
        }
    }

    #[test]
    fn allowlist_matches_like_go() {
        let a = Allowlist::parse("^net\\.core\\.[a-z]+$\n\n  net.ipv4.conf.IFNAME.*  \n").unwrap();
        assert!(a.check("net.core.somaxconn").is_ok());
        assert!(a.check("net.ipv4.conf.IFNAME.arp_filter").is_ok());
        let e = a.check("net.ipv4.ip_forward").unwrap_err();
        assert!(
            e.msg.contains("net.ipv4.ip_forward") && e.msg.contains("not allowed"),
            "{}",
            e.msg
        );
        assert!(Allowlist::parse("(").is_err());
    }

    fn request(conf: Value, cni_args: &str) -> Request {
        let stdin = conf.to_string();
        cni::dispatch::request_for("ADD", "ctr1", "net1", cni_args, stdin.as_bytes()).unwrap()
    }

    fn conf(extra: Value) -> Value {
        let mut c = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "tuning"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn mac_sources_in_the_references_order() {
        use serde_json::json;
        let mac = |c: Value, args: &str| {
            TuningConf::from_request(&request(conf(c), args), None)
                .unwrap()
                .mac
                .map(|m| netlink::format_mac(&m))
        };
        assert_eq!(mac(json!({"mac": "c2:00:00:00:00:01"}), ""), Some("c2:00:00:00:00:01".into()));
        assert_eq!(
            mac(json!({"mac": "c2:00:00:00:00:01"}), "IgnoreUnknown=1;MAC=c2:00:00:00:00:02"),
            Some("c2:00:00:00:00:02".into())
        );
        assert_eq!(
            mac(json!({"RuntimeConfig": {"MAC": "c2:00:00:00:00:03"}}), "MAC=c2:00:00:00:00:02"),
            Some("c2:00:00:00:00:03".into())
        );
        assert_eq!(
            mac(
                json!({"runtimeConfig": {"mac": "c2:00:00:00:00:03"}, "args": {"cni": {"mac": "c2:00:00:00:00:04"}}}),
                ""
            ),
            Some("c2:00:00:00:00:04".into())
        );
        let e = TuningConf::from_request(
            &request(conf(json!({"runtimeConfig": {"mac": 5}})), ""),
            None,
        )
        .unwrap_err();
        assert!(e.msg.contains("runtimeConfig.mac"), "{}", e.msg);
    }

    #[test]
    fn args_cni_overrides_and_sysctls_merge() {
        use serde_json::json;
        let c = conf(json!({
            "mtu": 1400, "promisc": true, "txQLen": 100,
            "sysctl": {"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.arp_filter": 1},
            "args": {"cni": {"mtu": 1300, "promisc": false, "allmulti": true,
                             "sysctl": {"net.core.somaxconn": "600"}}}
        }));
        let t = TuningConf::from_request(&request(c, ""), None).unwrap();
        assert_eq!(
            (t.mtu, t.promisc, t.allmulti, t.txqlen),
            (Some(1300), false, Some(true), Some(100))
        );
        let got: Vec<(&str, &str)> =
            t.sysctls.iter().map(|s| (s.path.as_str(), s.value.as_str())).collect();
        assert_eq!(
            got,
            vec![("net/ipv4/conf/net1/arp_filter", "1"), ("net/core/somaxconn", "600")]
        );
        assert!(t.changes_link());
    }

    #[test]
    fn bad_values_name_their_key() {
        use serde_json::json;
        for (c, needle) in [
            (json!({"mtu": -1}), "mtu -1"),
            (json!({"txQLen": -1}), "txQLen -1"),
            (json!({"args": {"cni": {"mtu": -2}}}), "args.cni.mtu -2"),
            (json!({"sysctl": {"net.core.a": ["x"]}}), "sysctl \"net.core.a\""),
            (
                json!({"sysctl": {"net.core.a": "1", "net/core/a": "2"}}),
                "both name /proc/sys/net/core/a",
            ),
            (json!({"dataDir": "relative/dir"}), "dataDir"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac"),
        ] {
            let e = TuningConf::from_request(&request(conf(c.clone()), ""), None).unwrap_err();
            assert_eq!(e.code, 7, "{c}");
            assert!(e.msg.contains(needle), "{c}: {}", e.msg);
        }
        let allow = "^net\\.core\\.";
        let e = TuningConf::from_request(
            &request(conf(json!({"sysctl": {"net.ipv4.ip_forward": "1"}})), ""),
            Some(allow),
        )
        .unwrap_err();
        assert!(e.msg.contains("not allowed"), "{}", e.msg);
    }

    #[test]
    fn duplicated_keys_are_found_in_the_bytes() {
        let d = |s: &str| duplicated_sysctl_key(s.as_bytes()).unwrap();
        assert_eq!(d(r#"{"sysctl":{"net.a":"1","net.b":"2","net.a":"3"}}"#), Some("net.a".into()));
        assert_eq!(d(r#"{"sysctl":{"net.a":"1","net.b":"2"}}"#), None);
        assert_eq!(d(r#"{"SysCtl":{"net.a":"1","net.a":"1"}}"#), Some("net.a".into()));
        assert_eq!(d(r#"{"sysctl":null}"#), None);
        assert_eq!(d(r#"{"other":{"x":1,"x":2}}"#), None);
    }
}
