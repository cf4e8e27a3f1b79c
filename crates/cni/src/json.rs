//! Decoding JSON the way the runtimes' Go decoders do, so we accept what they send.
//!
//! Go's `encoding/json` matches an object key to a struct field by exact name first and
//! otherwise case-insensitively, and when several keys land on one field the last one in the
//! document wins. Runtimes rely on it without knowing: go-cni marshals capability structs
//! without JSON tags (`{"HostPort":8080,"ContainerPort":80,...}`) and the reference plugins
//! accept them. [`from_value`] gives serde structs the same matching.
//!
//! Only struct *fields* are matched loosely. Map keys are data (network names in podman's
//! alias map, sysctl names) and stay exactly as sent. Field matching works through the names
//! serde passes to `deserialize_struct`, so it does not reach through `#[serde(flatten)]` or
//! `#[serde(untagged)]` (serde buffers those without telling the deserializer the field names);
//! config types must not use them for keys a runtime sends.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// The error of [`from_value`]: the path of the value that failed (`portMappings[0].hostPort`)
/// and what was wrong with it.
#[derive(Debug)]
pub struct DecodeError {
    pub path: String,
    pub inner: serde_json::Error,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.inner)
        } else {
            write!(f, "{}: {}", self.path, self.inner)
        }
    }
}

impl std::error::Error for DecodeError {}

/// Deserializes `value` into `T` with Go's key matching; the error names the failing path.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(GoValue(value))
        .map_err(|e| DecodeError { path: e.path().to_string(), inner: e.into_inner() })
}

/// True when Go would match `key` to a field named `field`: equal ignoring case.
pub fn keys_match(field: &str, key: &str) -> bool {
    if field.len() == key.len() && field.eq_ignore_ascii_case(key) {
        return true;
    }
    // Non-ASCII keys: Go folds Unicode case too.
    !(field.is_ascii() && key.is_ascii()) && field.to_lowercase() == key.to_lowercase()
}

/// The value of `key` in `obj` the way Go would read a field named `key`: the last key in the
/// document that matches it ignoring case (an exact match wins only by coming later).
pub fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if !obj.keys().any(|k| k != key && keys_match(key, k)) {
        return obj.get(key);
    }
    obj.iter().rfind(|(k, _)| keys_match(key, k)).map(|(_, v)| v)
}

/// Like [`get`], for any JSON value (None unless it is an object); null counts as absent.
pub fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object().and_then(|o| get(o, key)).filter(|v| !v.is_null())
}

/// Renames an object's keys to the struct field names they match (exact name first, then
/// ignoring case). Unmatched keys are kept as they are (serde ignores them, as Go does).
fn canonical_keys(obj: Map<String, Value>, fields: &'static [&'static str]) -> Map<String, Value> {
    let mut out = Map::with_capacity(obj.len());
    for (key, value) in obj {
        let name = if fields.contains(&key.as_str()) {
            key
        } else {
            match fields.iter().find(|f| keys_match(f, &key)) {
                Some(f) => (*f).to_string(),
                None => key,
            }
        };
        // Several keys naming one field: the last one wins, as in Go.
        out.insert(name, value);
    }
    out
}

/// A JSON value that deserializes with Go's key matching, all the way down.
struct GoValue(Value);

impl<'de> de::Deserializer<'de> for GoValue {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(GoSeq(items.into_iter())),
            Value::Object(obj) => visitor.visit_map(GoMap::new(obj)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(GoValue(other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(obj) => visitor.visit_map(GoMap::new(canonical_keys(obj, fields))),
            other => GoValue(other).deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Unit variants arrive as strings; data-carrying variants keep serde_json's handling.
        self.0.deserialize_enum(name, variants, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct GoSeq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for GoSeq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(GoValue(v)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct GoMap {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl GoMap {
    fn new(obj: Map<String, Value>) -> GoMap {
        GoMap { entries: obj.into_iter(), value: None }
    }
}

impl<'de> de::MapAccess<'de> for GoMap {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(GoValue(v)),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct PortMapping {
        host_port: u16,
        container_port: u16,
        #[serde(default)]
        protocol: String,
        #[serde(default, rename = "hostIP")]
        host_ip: String,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Runtime {
        #[serde(default)]
        port_mappings: Vec<PortMapping>,
        #[serde(default)]
        aliases: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        bandwidth: Option<Bandwidth>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Bandwidth {
        ingress_rate: u64,
        #[serde(default)]
        egress_burst: u64,
    }

    #[test]
    fn go_clients_untagged_structs_are_accepted() {
        // What go-cni sends: field names as Go spells them, no JSON tags.
        let sent = json!({
            "PortMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "Bandwidth": {"IngressRate": 1000, "EgressBurst": 20},
        });
        let r: Runtime = from_value(sent).unwrap();
        assert_eq!(
            r.port_mappings,
            vec![PortMapping {
                host_port: 18080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: "".into()
            }]
        );
        assert_eq!(r.bandwidth, Some(Bandwidth { ingress_rate: 1000, egress_burst: 20 }));
    }

    #[test]
    fn map_keys_are_data_and_keep_their_case() {
        let r: Runtime = from_value(json!({"Aliases": {"MyNet": ["Web"]}})).unwrap();
        assert_eq!(r.aliases.get("MyNet"), Some(&vec!["Web".to_string()]));
        assert!(!r.aliases.contains_key("mynet"));
    }

    #[test]
    fn the_last_matching_key_wins_like_go() {
        let m: PortMapping =
            from_value(json!({"hostPort": 1, "HOSTPORT": 2, "containerPort": 3})).unwrap();
        assert_eq!(m.host_port, 2);
        let m: PortMapping =
            from_value(json!({"HOSTPORT": 2, "hostPort": 1, "containerPort": 3})).unwrap();
        assert_eq!(m.host_port, 1);
    }

    #[test]
    fn errors_name_the_path_and_value() {
        let e = from_value::<Runtime>(
            json!({"portMappings": [{"HostPort": 70000, "ContainerPort": 1}]}),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("portMappings[0].hostPort"), "{text}");
        assert!(text.contains("70000"), "{text}");
    }

    #[test]
    fn get_reads_fields_like_go() {
        let v = json!({"cniversion": "1.0.0", "Name": "n", "name": "m"});
        let o = v.as_object().unwrap();
        assert_eq!(get(o, "cniVersion"), Some(&json!("1.0.0")));
        assert_eq!(get(o, "name"), Some(&json!("m")));
        assert_eq!(field(&v, "missing"), None);
        assert!(keys_match("hostIP", "HostIp"));
        assert!(!keys_match("hostIP", "hostIPs"));
    }
}
