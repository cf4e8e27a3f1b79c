//! The network configuration a plugin receives on stdin.

use crate::error::CniError;
use crate::json;
use crate::result::{CniResult, Dns};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The well-known keys of a plugin's configuration. Keys a plugin defines itself stay in
/// `extra` (nothing is dropped); a plugin reads them with `Request::plugin_config`.
///
/// Parsed by [`NetConf::parse`] with Go's key matching (see [`crate::json`]): `CNIVersion`
/// or `runtimeconfig` are read as the reference plugins would read them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub capabilities: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(rename = "runtimeConfig", skip_serializing_if = "Map::is_empty")]
    pub runtime_config: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub args: Map<String, Value>,
    #[serde(rename = "prevResult", skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The keys [`NetConf`] reads itself, as the spec spells them.
const WELL_KNOWN_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "ipam",
    "dns",
    "runtimeConfig",
    "args",
    "prevResult",
];

/// One (container, interface) pair a runtime still uses, from `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// GC: whether the runtime still uses the attachment (`container_id`, `ifname`), i.e. it is
/// among the `valid` ones.
pub fn in_use(valid: &[Attachment], container_id: &str, ifname: &str) -> bool {
    valid.iter().any(|v| v.container_id == container_id && v.ifname == ifname)
}

/// Key under which GC receives the attachments that must be kept.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The same list under the name some libcni versions use.
pub const ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// Longest network name accepted: the name is a directory name in the IPAM store that the
/// reference host-local shares (`/var/lib/cni/networks/<name>`), and a file name has at
/// most 255 bytes (NAME_MAX). Plugin state hashes longer keys, but that store cannot.
pub const MAX_NETWORK_NAME_LEN: usize = 255;

/// Network names: an alphanumeric first character, then alphanumerics, `_`, `.` or `-`.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl NetConf {
    /// Parses stdin. Invalid JSON is code 6; structural problems are code 7 naming the key.
    pub fn parse(stdin: &[u8]) -> Result<(NetConf, Value), CniError> {
        let raw: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::decode(format!("decoding network config from stdin: {e}")))?;
        let Some(obj) = raw.as_object() else {
            return Err(CniError::decode("decoding network config from stdin: not a JSON object"));
        };
        let conf = NetConf::from_object(obj)?;
        Ok((conf, raw))
    }

    fn from_object(obj: &Map<String, Value>) -> Result<NetConf, CniError> {
        let mut conf = NetConf::default();
        let mut extra = Map::new();
        for (key, value) in obj {
            if !WELL_KNOWN_KEYS.iter().any(|k| json::keys_match(k, key)) {
                extra.insert(key.clone(), value.clone());
            }
        }
        conf.extra = extra;
        let text = |key: &str| -> Result<String, CniError> {
            match json::get(obj, key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(CniError::config(format!(
                    "network config: {key}: expected a string, got {other}"
                ))),
            }
        };
        let object = |key: &str| -> Result<Map<String, Value>, CniError> {
            match json::get(obj, key) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(other) => Err(CniError::config(format!(
                    "network config: {key}: expected an object, got {other}"
                ))),
            }
        };
        conf.cni_version = text("cniVersion")?;
        conf.name = text("name")?;
        conf.plugin_type = text("type")?;
        conf.capabilities = object("capabilities")?;
        conf.runtime_config = object("runtimeConfig")?;
        conf.args = object("args")?;
        conf.ipam = json::get(obj, "ipam").filter(|v| !v.is_null()).cloned();
        conf.prev_result = json::get(obj, "prevResult").filter(|v| !v.is_null()).cloned();
        conf.dns = match json::get(obj, "dns").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => Some(
                json::from_value(v.clone())
                    .map_err(|e| CniError::config(format!("network config: dns.{e}")))?,
            ),
        };
        Ok(conf)
    }

    /// Name checks shared by every verb that acts on a network.
    pub fn validate_name(&self) -> Result<(), CniError> {
        if self.name.is_empty() {
            return Err(CniError::config("network config: missing required field \"name\""));
        }
        if !valid_network_name(&self.name) {
            return Err(CniError::bad_value(
                "name",
                format!("{:?}", self.name),
                "must start with a letter or digit, followed by letters, digits, '_', '.' or '-'",
            ));
        }
        if self.name.len() > MAX_NETWORK_NAME_LEN {
            let shown: String = self.name.chars().take(40).collect();
            return Err(CniError::bad_value(
                "name",
                format!("\"{shown}...\" ({} characters)", self.name.len()),
                format!("a network name has at most {MAX_NETWORK_NAME_LEN} characters"),
            ));
        }
        Ok(())
    }

    /// The previous plugin's result (chained plugins), in canonical form.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_version(v, &self.cni_version)
                .map(Some)
                .map_err(|e| CniError::decode(format!("decoding prevResult: {e}"))),
        }
    }

    /// Attachments from a GC request: `cni.dev/valid-attachments` (libcni 1.2 and later), or
    /// `cni.dev/attachments`, which some libcni versions send instead.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        for key in [VALID_ATTACHMENTS_KEY, ATTACHMENTS_KEY] {
            match json::get(&self.extra, key) {
                None | Some(Value::Null) => continue,
                Some(v) => {
                    return json::from_value(v.clone())
                        .map_err(|e| CniError::decode(format!("decoding {key}: {e}")))
                }
            }
        }
        Ok(Vec::new())
    }

    /// A capability argument from `runtimeConfig` (e.g. "portMappings", "ips", "mac", "aliases").
    pub fn runtime(&self, key: &str) -> Option<&Value> {
        json::get(&self.runtime_config, key).filter(|v| !v.is_null())
    }

    /// `args.cni.<key>` (the conventional place for per-container arguments in config).
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        json::get(&self.args, "cni").and_then(|c| json::field(c, key))
    }
}

/// Deserializes a plugin's own config struct from the raw stdin JSON with Go's key matching;
/// a bad key gives code 7 naming the key path and the problem.
pub fn parse_plugin_config<T: DeserializeOwned>(raw: &Value) -> Result<T, CniError> {
    json::from_value(raw.clone())
        .map_err(|e| CniError::config(format!("invalid network config key {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_kept() {
        let (conf, _) = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"bridge","bridge":"br9","mtu":1400}"#,
        )
        .unwrap();
        assert_eq!(conf.extra.get("bridge"), Some(&json!("br9")));
        let back = serde_json::to_value(&conf).unwrap();
        assert_eq!(back["mtu"], json!(1400));
    }

    #[test]
    fn overlong_network_names_are_code_7() {
        let conf = |name: &str| NetConf { name: name.to_string(), ..Default::default() };
        conf(&"n".repeat(MAX_NETWORK_NAME_LEN)).validate_name().unwrap();
        let e = conf(&"n".repeat(MAX_NETWORK_NAME_LEN + 1)).validate_name().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("name") && e.msg.contains("255"), "{}", e.msg);
    }

    #[test]
    fn names() {
        assert!(valid_network_name("my-net_1.x"));
        assert!(!valid_network_name("-bad"));
        assert!(!valid_network_name("a b"));
        assert!(!valid_network_name(""));
    }

    #[test]
    fn bad_plugin_key_names_the_path() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct C {
            vlan: Option<u16>,
        }
        let e = parse_plugin_config::<C>(&json!({"vlan": 70000})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("vlan"), "{}", e.msg);
        assert!(e.msg.contains("70000"), "{}", e.msg);
    }

    #[test]
    fn valid_attachments_parse() {
        let (conf, _) = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","type":"x","cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(
            conf.valid_attachments().unwrap(),
            vec![Attachment { container_id: "abc".into(), ifname: "eth0".into() }]
        );
    }
}
