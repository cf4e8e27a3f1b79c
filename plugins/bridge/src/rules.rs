//! Every contact of the bridge plugin with `crates/firewall`, in one place: the network's
//! rules (planned from the config and the subnets, programmed, checked, removed, restored
//! after a firewall reload), the macspoofchk guard of a port, and STATUS. The rest of the
//! plugin only passes plain values in and gets `CniError`s back.
//!
//! The network record's `rules` is what was last programmed: the rules as JSON, `""` for
//! nothing, or `pending` while a change is under way (intent first). The record says what
//! the kernel should hold; whether it still does is one lookup per ADD: the generation of
//! the backend's tables (the kernel's handle of each table) against the one recorded after
//! our last change. When they differ (the tables were flushed or re-created behind our
//! back), every network's rules are restored from the records, not just this one's.

use crate::config::BridgeConf;
use crate::state::NetworkRecord;
use cni::store::Store;
use cni::{code, CniError};
use firewall::{Firewall, NetworkRules};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// The rules a network needs, as a plain value (None: nothing to enforce).
pub fn plan(network: &str, conf: &BridgeConf, subnets: &[IpNet]) -> Option<NetworkRules> {
    let rules = NetworkRules {
        network: network.to_string(),
        bridge: conf.bridge.clone(),
        subnets: subnets.to_vec(),
        masquerade: conf.ip_masq,
        isolate: conf.isolation,
        internal: conf.internal,
        icc: conf.icc,
    };
    (!rules.enforces_nothing()).then_some(rules)
}

/// The backend a configuration asks for (nftables when `nft` is installed, else iptables).
pub fn backend_name(conf: &BridgeConf) -> Result<String, CniError> {
    Ok(firewall::backend(conf.firewall)?.name().to_string())
}

/// The backend recorded for a network (what its rules were programmed with), else the
/// configured one.
fn recorded_backend(
    record: Option<&NetworkRecord>,
    conf: &BridgeConf,
) -> Result<Box<dyn Firewall>, CniError> {
    let kind = record.and_then(|r| r.firewall.parse::<firewall::BackendKind>().ok());
    Ok(firewall::backend(kind.or(conf.firewall))?)
}

/// The record's form of what is programmed: the rules as JSON, `""` for none.
fn fingerprint(rules: &Option<NetworkRules>) -> String {
    rules.as_ref().map(|r| serde_json::to_string(r).expect("rules serialize")).unwrap_or_default()
}

/// What a record says is programmed: `Some(None)` nothing, `Some(Some(r))` those rules,
/// `None` unknown (a change was under way, or a record of an older version).
fn programmed(rec: &NetworkRecord) -> Option<Option<NetworkRules>> {
    if rec.rules.is_empty() {
        return Some(None);
    }
    serde_json::from_str::<NetworkRules>(&rec.rules).ok().map(Some)
}

/// See [`intent`].
const PENDING: &str = "pending";

/// What the network record says before `ensure` runs (intent first): the backend that will
/// program the rules, and, when they are about to change, a marker that is no rule set, so
/// that after a crash the next ADD restores them and teardown removes whatever may have been
/// programmed.
pub fn intent(
    record: &NetworkRecord,
    want: &Option<NetworkRules>,
    conf: &BridgeConf,
) -> Result<NetworkRecord, CniError> {
    let firewall =
        if record.firewall.is_empty() { backend_name(conf)? } else { record.firewall.clone() };
    let rules =
        if fingerprint(want) == record.rules { record.rules.clone() } else { PENDING.to_string() };
    Ok(NetworkRecord { firewall, rules, ..record.clone() })
}

// ---------------------------------------------------------------------------------------
// The other networks' records and the recorded generations.

fn store() -> Store {
    Store::for_plugin("bridge")
}

/// Every network record (read-only), for restoring and for "is any other left".
fn all_records() -> Vec<NetworkRecord> {
    let Ok(dirs) = std::fs::read_dir(store().root()) else { return Vec::new() };
    dirs.flatten()
        .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|d| std::fs::read(d.path().join("network.json")).ok())
        .filter_map(|data| serde_json::from_slice::<NetworkRecord>(&data).ok())
        .collect()
}

/// The rules every other network of `backend` has programmed (for a restore).
fn others_rules(backend: &str, network: &str) -> Vec<NetworkRules> {
    all_records()
        .into_iter()
        .filter(|r| r.firewall == backend && r.network != network)
        .filter_map(|r| programmed(&r).flatten())
        .collect()
}

/// The key of the recorded generations (a name no network can have: spaces are not
/// allowed in network names).
const GENERATIONS: &str = "firewall generations";

fn recorded_generation(backend: &str) -> Option<u64> {
    let g: Option<BTreeMap<String, u64>> = store().get(&[GENERATIONS]).ok().flatten();
    g.and_then(|g| g.get(backend).copied())
}

/// Records the generation of `fw`'s tables after our change (only when it changed).
fn save_generation(fw: &dyn Firewall) -> Result<(), CniError> {
    let now = fw.network_generation()?;
    let st = store();
    let mut g: BTreeMap<String, u64> = st.get(&[GENERATIONS]).ok().flatten().unwrap_or_default();
    let before = g.clone();
    match now {
        Some(n) => g.insert(fw.name().to_string(), n),
        None => g.remove(fw.name()),
    };
    if g == before {
        return Ok(());
    }
    if g.is_empty() {
        st.delete(&[GENERATIONS])
    } else {
        st.put(&[GENERATIONS], &g)
    }
}

/// True when `fw`'s tables hold what our records say: the generation is the one recorded.
fn intact(fw: &dyn Firewall) -> Result<bool, CniError> {
    let now = fw.network_generation()?;
    Ok(now.is_some() && now == recorded_generation(fw.name()))
}

// ---------------------------------------------------------------------------------------

/// Makes the kernel hold `want` for the network, with the backend of `record` (the intent
/// written by [`intent`]), cheaply: one generation lookup when nothing changed. A `want` of
/// None removes what an earlier configuration programmed. When the tables were lost, or
/// what is programmed is unknown, every network's rules are restored. Returns the record to
/// save once done.
pub fn ensure(
    record: &NetworkRecord,
    want: &Option<NetworkRules>,
    conf: &BridgeConf,
) -> Result<NetworkRecord, CniError> {
    let fw = recorded_backend(Some(record), conf)?;
    let had = programmed(record);
    let done = NetworkRecord {
        rules: fingerprint(want),
        firewall: fw.name().to_string(),
        ..record.clone()
    };
    match (intact(fw.as_ref())?, had) {
        (true, Some(had)) if had == *want => return Ok(done),
        (true, Some(had)) => match (want, had) {
            (Some(w), h) => fw.apply_network(w, h.as_ref())?,
            (None, Some(h)) => {
                let last = others_rules(fw.name(), &record.network).is_empty();
                fw.remove_network(&h, last)?;
            }
            (None, None) => {}
        },
        _ => {
            let mut all = others_rules(fw.name(), &record.network);
            all.extend(want.iter().cloned());
            if !all.is_empty() || fw.network_generation()?.is_some() {
                fw.restore_networks(&all)?;
            }
        }
    }
    save_generation(fw.as_ref())?;
    Ok(done)
}

/// Removes the network's rules, with the backend they were programmed with; the tables go
/// with the last network that has rules.
pub fn remove(
    network: &str,
    record: Option<&NetworkRecord>,
    conf: &BridgeConf,
) -> Result<(), CniError> {
    if record.is_some_and(|r| r.rules.is_empty() && !r.firewall.is_empty()) {
        // Recorded as programming nothing: no transaction needed.
        return Ok(());
    }
    let fw = recorded_backend(record, conf)?;
    let others = others_rules(fw.name(), network);
    match record.and_then(programmed) {
        Some(Some(had)) if intact(fw.as_ref())? => fw.remove_network(&had, others.is_empty())?,
        // Unknown or lost: rebuild the tables from the other networks (none: they go).
        _ => fw.restore_networks(&others)?,
    }
    save_generation(fw.as_ref())
}

/// GC: restores every network's rules when the tables were lost behind our back (a
/// firewall reload); STATUS reports the same condition.
pub fn restore_if_lost(conf: &BridgeConf) -> Result<(), CniError> {
    let fw = firewall::backend(conf.firewall)?;
    let all: Vec<NetworkRules> = others_rules(fw.name(), "");
    if all.is_empty() || intact(fw.as_ref())? {
        return Ok(());
    }
    fw.restore_networks(&all)?;
    save_generation(fw.as_ref())
}

/// CHECK: the network's rules are in the kernel.
pub fn check(want: &Option<NetworkRules>, conf: &BridgeConf) -> Result<(), CniError> {
    match want {
        Some(rules) => Ok(firewall::backend(conf.firewall)?.check_network(rules)?),
        None => Ok(()),
    }
}

/// The MAC guard lives in the nftables bridge family whatever backend does L3.
fn l2() -> firewall::nftables::Nftables {
    firewall::nftables::Nftables::new()
}

/// Locks the bridge port `port` to the container MAC `mac` (macspoofchk).
pub fn guard_mac(port: &str, mac: &[u8; 6]) -> Result<(), CniError> {
    Ok(l2().guard_mac(port, mac)?)
}

/// True when a port other than `port` (of any network) is guarded.
fn other_guards(port: &str) -> bool {
    let Ok(dirs) = std::fs::read_dir(store().root()) else { return false };
    dirs.flatten().filter(|d| d.file_type().is_ok_and(|t| t.is_dir())).any(|d| {
        let Ok(files) = std::fs::read_dir(d.path()) else { return false };
        files.flatten().any(|f| {
            std::fs::read(f.path())
                .ok()
                .and_then(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
                .is_some_and(|v| {
                    !v["mac_guard"].is_null() && v["host_veth"].as_str().is_some_and(|h| h != port)
                })
        })
    })
}

/// Removes the guard of `port` (absent is fine); the guard table goes with the last one.
pub fn unguard_mac(port: &str, mac: &[u8; 6]) -> Result<(), CniError> {
    Ok(l2().unguard_mac(port, mac, !other_guards(port))?)
}

/// CHECK: the guard of `port` is in place.
pub fn check_mac(port: &str, mac: &[u8; 6]) -> Result<(), CniError> {
    Ok(l2().check_mac(port, mac)?)
}

/// STATUS: the backend can program the kernel (code 50 otherwise); rules lost behind our
/// back are code 51 (the next ADD or a GC restores them); a foreign firewall that drops
/// forwarded traffic is reported on stderr.
pub fn status(conf: &BridgeConf) -> Result<(), CniError> {
    let fw = firewall::backend(conf.firewall)
        .map_err(|e| CniError::not_available(format!("no usable firewall backend: {e}")))?;
    let st = fw.status().map_err(|e| {
        CniError::not_available(format!(
            "firewall backend {} cannot program the kernel: {e}",
            fw.name()
        ))
    })?;
    if let Some(drop) = st.foreign_drop {
        // Not fatal, but say so: our accept cannot override another table's drop.
        eprintln!("bridge: warning: forwarded container traffic may be dropped by another firewall: {drop}");
    }
    let with_rules: Vec<String> = all_records()
        .into_iter()
        .filter(|r| r.firewall == fw.name() && programmed(r).is_some_and(|p| p.is_some()))
        .map(|r| r.network)
        .collect();
    if !with_rules.is_empty() && !intact(fw.as_ref())? {
        return Err(CniError::new(
            code::LIMITED_CONNECTIVITY,
            format!(
                "the {} firewall rules of networks {with_rules:?} are gone (flushed or reloaded behind our back): isolation, masquerade and published ports are off until the next ADD or a GC restores them",
                fw.name()
            ),
        ));
    }
    Ok(())
}
