//! The macvlan plugin's configuration: the reference plugin's keys (`master`, `mode`, `mtu`,
//! `mac`, `linkInContainer`, `bcqueuelen`, `ipam`) plus Docker's `parent` spelling of a VLAN
//! sub-interface (`eth0.10`). Everything is validated before anything changes; every error is
//! code 7 naming the key and the value.

use cni::{CniError, Request};
use netlink::MacvlanMode;
use serde::Deserialize;

/// Keys as written in the network config (reference names).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    master: Option<String>,
    mode: Option<String>,
    mtu: Option<u64>,
    mac: Option<String>,
    #[serde(default)]
    link_in_container: bool,
    /// Not camelCase in the reference.
    #[serde(rename = "bcqueuelen")]
    bc_queue_len: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MacvlanConf {
    /// None: the interface of the default route (resolved at ADD time).
    pub master: Option<String>,
    pub mode: MacvlanMode,
    /// None: the kernel's choice (the parent's MTU).
    pub mtu: Option<u32>,
    /// The container interface's MAC, from runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC or `mac`.
    pub mac: Option<[u8; 6]>,
    pub link_in_container: bool,
    pub bc_queue_len: Option<u32>,
    /// True when `ipam` names an IPAM type (an empty `ipam: {}` means "no addresses", as in the
    /// reference; see `ipam::configured`).
    pub has_ipam: bool,
    /// The config's `dns`, reported when IPAM gives none.
    pub dns: Option<cni::Dns>,
}

/// A VLAN sub-interface name in Docker's `parent` notation: `<link>.<vlan id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanParent {
    /// The full sub-interface name (`eth0.10`).
    pub name: String,
    /// The link that carries the tagged frames (`eth0`).
    pub link: String,
    pub id: u16,
}

/// Parses `eth0.10` into (eth0, 10). Anything else (no dot, empty link, id not a number
/// between 1 and 4094, a name longer than 15 bytes) is not a VLAN sub-interface name.
pub fn parse_vlan_parent(name: &str) -> Option<VlanParent> {
    if name.len() > netlink::MAX_IFNAME_LEN {
        return None;
    }
    let (link, id) = name.rsplit_once('.')?;
    if link.is_empty()
        || id.is_empty()
        || !id.bytes().all(|b| b.is_ascii_digit())
        || id.starts_with('0')
    {
        return None;
    }
    let id: u16 = id.parse().ok()?;
    if !(1..=4094).contains(&id) {
        return None;
    }
    Some(VlanParent { name: name.to_string(), link: link.to_string(), id })
}

/// The message of a VLAN sub-interface creation the kernel refused for lack of 802.1q.
pub fn no_8021q_message(vlan: &VlanParent) -> String {
    format!(
        "cannot create VLAN sub-interface {} (VLAN {} on {}) for master: the kernel has no 802.1q \
        support (modprobe 8021q)",
        vlan.name, vlan.id, vlan.link
    )
}

/// The mode names the reference accepts ("source" needs MAC lists, which CNI cannot express).
pub fn parse_mode(s: &str) -> Result<MacvlanMode, CniError> {
    match s {
        "" => Ok(MacvlanMode::Bridge),
        "bridge" | "private" | "vepa" | "passthru" => {
            Ok(MacvlanMode::parse(s).expect("known mode"))
        }
        other => Err(CniError::bad_value(
            "mode",
            format!("{other:?}"),
            "expected one of \"bridge\", \"private\", \"vepa\", \"passthru\"",
        )),
    }
}

/// The container MAC, in order of precedence: runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC, `mac`.
pub fn requested_mac(req: &Request, conf_mac: Option<&str>) -> Result<Option<[u8; 6]>, CniError> {
    let (key, value) = if let Some(v) = req.conf.runtime("mac") {
        ("runtimeConfig.mac", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
    } else if let Some(v) = req.conf.args_cni("mac") {
        ("args.cni.mac", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
    } else if let Some(v) = req.env.arg("MAC") {
        ("CNI_ARGS MAC", v.to_string())
    } else if let Some(v) = conf_mac.filter(|m| !m.is_empty()) {
        ("mac", v.to_string())
    } else {
        return Ok(None);
    };
    match netlink::parse_mac(&value) {
        Some(m) if m[0] & 1 == 0 && m != [0; 6] => Ok(Some(m)),
        Some(_) => Err(CniError::bad_value(
            key,
            &value,
            "a multicast or all-zero MAC cannot be used for an interface",
        )),
        None => Err(CniError::bad_value(key, &value, "not a MAC address (aa:bb:cc:dd:ee:ff)")),
    }
}

impl MacvlanConf {
    /// Parses and validates (no kernel access: the master's existence and MTU are checked at ADD).
    pub fn from_request(req: &Request) -> Result<MacvlanConf, CniError> {
        let raw: RawConf = req.plugin_config()?;
        let master = match raw.master {
            None => None,
            Some(m) if m.is_empty() => None,
            Some(m) => {
                cni::names::check_ifname("master", &m)?;
                Some(m)
            }
        };
        let mode = parse_mode(raw.mode.as_deref().unwrap_or(""))?;
        let mtu = match raw.mtu {
            None | Some(0) => None,
            Some(m) if !(68..=65535).contains(&m) => {
                return Err(CniError::bad_value(
                    "mtu",
                    m,
                    "must be between 68 and 65535 (and at most the master's MTU)",
                ));
            }
            Some(m) => Some(m as u32),
        };
        let bc_queue_len = match raw.bc_queue_len {
            None => None,
            Some(n) if n > u32::MAX as u64 => {
                return Err(CniError::bad_value(
                    "bcqueuelen",
                    n,
                    "must be between 0 and 4294967295",
                ));
            }
            Some(n) => Some(n as u32),
        };
        let mac = requested_mac(req, raw.mac.as_deref())?;
        if mac.is_some() && mode == MacvlanMode::Passthru {
            // A passthru macvlan takes over the parent: its MAC is the parent's.
            return Err(CniError::config(
                "invalid config: a MAC address cannot be set in mode \"passthru\" (the macvlan \
                uses the master's)",
            ));
        }
        Ok(MacvlanConf {
            master,
            mode,
            mtu,
            mac,
            link_in_container: raw.link_in_container,
            bc_queue_len,
            has_ipam: ipam::configured(req)?,
            dns: req.conf.dns.clone(),
        })
    }
}

/// The MTU check against the master: code 7 naming both values.
pub fn check_mtu(mtu: Option<u32>, master: &str, master_mtu: u32) -> Result<(), CniError> {
    match mtu {
        Some(m) if master_mtu > 0 && m > master_mtu => Err(CniError::bad_value(
            "mtu",
            m,
            format!(
                "larger than the MTU {master_mtu} of master {master} (must be at most the \
                master's MTU)"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An ADD request for container c1, eth0, with `conf` on stdin and CNI_ARGS `args`.
    pub(crate) fn request(conf: serde_json::Value, args: &str) -> Request {
        cni::dispatch::request_for("ADD", "c1", "eth0", args, conf.to_string().as_bytes()).unwrap()
    }

    fn base() -> serde_json::Value {
        json!({"cniVersion": "1.1.0", "name": "mv", "type": "macvlan", "master": "eth0"})
    }

    #[test]
    fn defaults() {
        let c = MacvlanConf::from_request(&request(base(), "")).unwrap();
        assert_eq!(c.master.as_deref(), Some("eth0"));
        assert_eq!(c.mode, MacvlanMode::Bridge);
        assert_eq!(c.mtu, None);
        assert_eq!(c.mac, None);
        assert!(!c.link_in_container);
        assert!(!c.has_ipam);
        let mut v = base();
        v.as_object_mut().unwrap().remove("master");
        assert_eq!(MacvlanConf::from_request(&request(v, "")).unwrap().master, None);
    }

    #[test]
    fn modes() {
        for (m, want) in [
            ("bridge", MacvlanMode::Bridge),
            ("private", MacvlanMode::Private),
            ("vepa", MacvlanMode::Vepa),
            ("passthru", MacvlanMode::Passthru),
        ] {
            let mut v = base();
            v["mode"] = json!(m);
            assert_eq!(MacvlanConf::from_request(&request(v, "")).unwrap().mode, want);
        }
        for bad in ["source", "Bridge", "passthrough", "x"] {
            let mut v = base();
            v["mode"] = json!(bad);
            let e = MacvlanConf::from_request(&request(v, "")).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains("mode") && e.msg.contains(bad), "{}", e.msg);
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, val, needle) in [
            ("master", json!("a/b"), "master"),
            ("master", json!("waytoolonginterfacename"), "master"),
            ("mtu", json!(10), "mtu"),
            ("mtu", json!("big"), "mtu"),
            ("mac", json!("zz:zz"), "mac"),
            ("mac", json!("01:00:5e:00:00:01"), "mac"),
            ("bcqueuelen", json!(-1), "bcqueuelen"),
            ("linkInContainer", json!("yes"), "linkInContainer"),
        ] {
            let mut v = base();
            v[key] = val.clone();
            let e = MacvlanConf::from_request(&request(v, "")).unwrap_err();
            assert_eq!(e.code, 7, "{key}");
            assert!(e.msg.contains(needle), "{key}: {}", e.msg);
        }
    }

    #[test]
    fn mac_precedence() {
        let mut v = base();
        v["mac"] = json!("02:00:00:00:00:01");
        assert_eq!(
            MacvlanConf::from_request(&request(v.clone(), "")).unwrap().mac,
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            MacvlanConf::from_request(&request(v.clone(), "MAC=02:00:00:00:00:02")).unwrap().mac,
            Some([2, 0, 0, 0, 0, 2])
        );
        v["args"] = json!({"cni": {"mac": "02:00:00:00:00:03"}});
        assert_eq!(
            MacvlanConf::from_request(&request(v.clone(), "MAC=02:00:00:00:00:02")).unwrap().mac,
            Some([2, 0, 0, 0, 0, 3])
        );
        v["runtimeConfig"] = json!({"mac": "02:00:00:00:00:04"});
        assert_eq!(
            MacvlanConf::from_request(&request(v.clone(), "MAC=02:00:00:00:00:02")).unwrap().mac,
            Some([2, 0, 0, 0, 0, 4])
        );
        v["runtimeConfig"] = json!({"mac": "nope"});
        let e = MacvlanConf::from_request(&request(v, "")).unwrap_err();
        assert!(e.msg.contains("runtimeConfig.mac") && e.msg.contains("nope"), "{}", e.msg);
        let mut v = base();
        v["mode"] = json!("passthru");
        v["mac"] = json!("02:00:00:00:00:01");
        assert_eq!(MacvlanConf::from_request(&request(v, "")).unwrap_err().code, 7);
    }

    #[test]
    fn ipam_presence() {
        let mut v = base();
        v["ipam"] = json!({});
        assert!(!MacvlanConf::from_request(&request(v.clone(), "")).unwrap().has_ipam);
        v["ipam"] = json!({"type": "host-local", "subnet": "10.0.0.0/24"});
        assert!(MacvlanConf::from_request(&request(v.clone(), "")).unwrap().has_ipam);
        v["ipam"] = json!({"type": 5});
        assert!(MacvlanConf::from_request(&request(v.clone(), ""))
            .unwrap_err()
            .msg
            .contains("ipam.type"));
        for bad in [json!("host-local"), json!(3), json!([])] {
            v["ipam"] = bad;
            let e = MacvlanConf::from_request(&request(v.clone(), "")).unwrap_err();
            assert!(e.code == 7 && e.msg.contains("ipam"), "{}", e.msg);
        }
        v["ipam"] = json!({"type": "macvlan"});
        let e = MacvlanConf::from_request(&request(v, "")).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("ipam.type"), "{}", e.msg);
    }

    #[test]
    fn mtu_bound_by_master() {
        assert!(check_mtu(Some(1500), "eth0", 1500).is_ok());
        assert!(check_mtu(None, "eth0", 1500).is_ok());
        let e = check_mtu(Some(9000), "eth0", 1500).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("9000") && e.msg.contains("1500") && e.msg.contains("eth0"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn vlan_parent_parsing() {
        assert_eq!(
            parse_vlan_parent("eth0.10"),
            Some(VlanParent { name: "eth0.10".into(), link: "eth0".into(), id: 10 })
        );
        assert_eq!(parse_vlan_parent("bond0.4094").map(|v| v.id), Some(4094));
        assert_eq!(parse_vlan_parent("a.b.7").map(|v| v.link), Some("a.b".to_string()));
        for not in [
            "eth0",
            "eth0.",
            ".10",
            "eth0.0",
            "eth0.4095",
            "eth0.010",
            "eth0.x",
            "eth0.-1",
            "eth0.1a",
            "averylongname.10",
        ] {
            assert_eq!(parse_vlan_parent(not), None, "{not}");
        }
    }

    #[test]
    fn no_8021q_message_text() {
        let v = parse_vlan_parent("eth0.10").unwrap();
        assert_eq!(
            no_8021q_message(&v),
            "cannot create VLAN sub-interface eth0.10 (VLAN 10 on eth0) for master: the kernel has no 802.1q support (modprobe 8021q)"
        );
    }
}
