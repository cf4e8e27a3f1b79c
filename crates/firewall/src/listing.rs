//! What `nft -j list ...` shows, parsed: used by CHECK and STATUS only (never on the
//! ADD/DEL path, which programs the kernel in-process).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{run_tool, Error};

/// Lists one table with `nft -j`; `None` when it does not exist.
pub(crate) fn list_table(family: &str, table: &str) -> Result<Option<Listing>, Error> {
    let r = run_tool("nft", &["-j", "list", "table", family, table], None)?;
    if !r.ok {
        if r.stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(Error::new(format!(
            "nft failed (list table {family} {table}): {}",
            r.stderr.trim()
        )));
    }
    Listing::parse(&r.stdout).map(Some)
}

/// Lists every chain (with hooks and policies) with `nft -j`.
pub(crate) fn list_chains() -> Option<Listing> {
    let r = run_tool("nft", &["-j", "list", "chains"], None).ok()?;
    if !r.ok {
        return None;
    }
    Listing::parse(&r.stdout).ok()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Elem {
    /// Key in nft syntax.
    pub key: String,
    /// Data in nft syntax (maps only).
    pub data: Option<String>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ChainInfo {
    pub name: String,
    pub hook: Option<String>,
    pub policy: Option<String>,
    pub family: String,
    pub table: String,
}

/// What `nft -j list ...` showed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Listing {
    pub chains: Vec<ChainInfo>,
    /// Rule count per chain.
    pub rules: BTreeMap<String, usize>,
    /// Elements per set/map name.
    pub sets: BTreeMap<String, Vec<Elem>>,
}

impl Listing {
    pub(crate) fn parse(text: &str) -> Result<Listing, Error> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::new(format!("cannot parse nft JSON output: {e}")))?;
        let mut out = Listing::default();
        let items = v.get("nftables").and_then(|x| x.as_array()).cloned().unwrap_or_default();
        for item in items {
            if let Some(c) = item.get("chain") {
                out.chains.push(ChainInfo {
                    name: str_of(c, "name"),
                    hook: c.get("hook").and_then(|h| h.as_str()).map(str::to_string),
                    policy: c.get("policy").and_then(|h| h.as_str()).map(str::to_string),
                    family: str_of(c, "family"),
                    table: str_of(c, "table"),
                });
            } else if let Some(r) = item.get("rule") {
                *out.rules.entry(str_of(r, "chain")).or_insert(0) += 1;
            } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
                let name = str_of(s, "name");
                let is_map = item.get("map").is_some();
                let key_quoted = s.get("type").and_then(|t| t.as_str()) == Some("ifname");
                let data_quoted = s.get("map").and_then(|t| t.as_str()) == Some("ifname");
                let mut elems = Vec::new();
                for e in s.get("elem").and_then(|x| x.as_array()).cloned().unwrap_or_default() {
                    let (k, d) = if is_map {
                        match e.as_array() {
                            Some(pair) if pair.len() == 2 => {
                                (pair[0].clone(), Some(pair[1].clone()))
                            }
                            _ => (e.clone(), None),
                        }
                    } else {
                        (e.clone(), None)
                    };
                    let (kv, comment) = match k.get("elem") {
                        Some(inner) => (
                            inner.get("val").cloned().unwrap_or(Value::Null),
                            inner.get("comment").and_then(|c| c.as_str()).map(str::to_string),
                        ),
                        None => (k.clone(), None),
                    };
                    elems.push(Elem {
                        key: json_to_nft(&kv, key_quoted),
                        data: d.map(|d| json_to_nft(&d, data_quoted)),
                        comment,
                    });
                }
                out.sets.insert(name, elems);
            }
        }
        Ok(out)
    }

    pub(crate) fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name == name)
    }

    pub(crate) fn elems(&self, set: &str) -> &[Elem] {
        self.sets.get(set).map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub(crate) fn find(&self, set: &str, key: &str) -> Option<&Elem> {
        self.elems(set).iter().find(|e| e.key == key)
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string()
}

/// Renders a JSON value of nft's output back in nft's input syntax.
fn json_to_nft(v: &Value, quote: bool) -> String {
    match v {
        Value::String(s) => {
            if quote {
                format!("\"{s}\"")
            } else {
                s.clone()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(|c| c.as_array()) {
                return c.iter().map(|x| json_to_nft(x, false)).collect::<Vec<_>>().join(" . ");
            }
            if let Some(p) = o.get("prefix") {
                return format!(
                    "{}/{}",
                    p.get("addr").map(|a| json_to_nft(a, false)).unwrap_or_default(),
                    p.get("len").map(|a| json_to_nft(a, false)).unwrap_or_default()
                );
            }
            if let Some(r) = o.get("range").and_then(|r| r.as_array()) {
                if r.len() == 2 {
                    return format!("{}-{}", json_to_nft(&r[0], false), json_to_nft(&r[1], false));
                }
            }
            for verdict in ["jump", "goto"] {
                if let Some(j) = o.get(verdict) {
                    return format!("{verdict} {}", str_of(j, "target"));
                }
            }
            for verdict in ["accept", "drop", "return", "continue"] {
                if o.contains_key(verdict) {
                    return verdict.to_string();
                }
            }
            v.to_string()
        }
        other => other.to_string(),
    }
}
