//! Every contact of the bridge plugin with `crates/firewall`, in one place: the network's
//! rules (planned from the config and the subnets, programmed, checked, removed), the
//! macspoofchk guard of a port, and STATUS. The rest of the plugin only passes plain values
//! in and gets `CniError`s back.

use crate::config::BridgeConf;
use crate::state::NetworkRecord;
use cni::{code, CniError};
use ipnet::IpNet;

fn fw_err(e: firewall::Error) -> CniError {
    CniError::new(code::KERNEL, format!("firewall: {e}"))
}

/// The rules a network needs, as a plain value (None: nothing to enforce).
pub fn plan(network: &str, conf: &BridgeConf, subnets: &[IpNet]) -> Option<firewall::NetworkRules> {
    let rules = firewall::NetworkRules {
        network: network.to_string(),
        bridge: conf.bridge.clone(),
        subnets: subnets.to_vec(),
        masquerade: conf.ip_masq,
        isolate: conf.isolation,
        internal: conf.internal,
        icc: conf.icc,
    };
    let nothing = !rules.masquerade && !rules.isolate && !rules.internal && rules.icc;
    if nothing || subnets.is_empty() {
        None
    } else {
        Some(rules)
    }
}

/// The backend a configuration asks for (nftables when `nft` is installed, else iptables).
pub fn backend_name(conf: &BridgeConf) -> Result<String, CniError> {
    Ok(firewall::backend(conf.firewall).map_err(fw_err)?.name().to_string())
}

/// The backend recorded for a network (what its rules were programmed with), else the
/// configured one.
fn recorded_backend(
    record: Option<&NetworkRecord>,
    conf: &BridgeConf,
) -> Result<Box<dyn firewall::Firewall>, CniError> {
    let kind = record.and_then(|r| r.firewall.parse::<firewall::BackendKind>().ok());
    firewall::backend(kind.or(conf.firewall)).map_err(fw_err)
}

/// The record's fingerprint of what is programmed.
fn fingerprint(rules: &Option<firewall::NetworkRules>) -> String {
    rules.as_ref().map(|r| format!("{r:?}")).unwrap_or_default()
}

/// What the network record says before `ensure` runs (intent first): the backend that will
/// program the rules, and, when they are about to change, a marker that is no rule set's
/// fingerprint, so that after a crash the next ADD programs them again and teardown removes
/// whatever may have been programmed.
pub fn intent(
    record: &NetworkRecord,
    want: &Option<firewall::NetworkRules>,
    conf: &BridgeConf,
) -> Result<NetworkRecord, CniError> {
    let firewall =
        if record.firewall.is_empty() { backend_name(conf)? } else { record.firewall.clone() };
    let rules =
        if fingerprint(want) == record.rules { record.rules.clone() } else { PENDING.to_string() };
    Ok(NetworkRecord { firewall, rules, ..record.clone() })
}

/// See [`intent`].
const PENDING: &str = "pending";

/// Makes the kernel hold `want` for the network, with the backend of `record` (the intent
/// written by [`intent`]). Rules are per network: when the record says `want` is already
/// programmed, nothing is sent. When `want` is None, rules an earlier configuration
/// programmed are removed. Returns the record to save once done.
pub fn ensure(
    record: &NetworkRecord,
    want: &Option<firewall::NetworkRules>,
    conf: &BridgeConf,
) -> Result<NetworkRecord, CniError> {
    let fw = recorded_backend(Some(record), conf)?;
    let now = fingerprint(want);
    if now != record.rules {
        match want {
            Some(rules) => fw.apply_network(rules).map_err(fw_err)?,
            None => fw.remove_network(&record.network).map_err(fw_err)?,
        }
    }
    Ok(NetworkRecord { rules: now, firewall: fw.name().to_string(), ..record.clone() })
}

/// Removes the network's rules, with the backend they were programmed with.
pub fn remove(
    network: &str,
    record: Option<&NetworkRecord>,
    conf: &BridgeConf,
) -> Result<(), CniError> {
    if record.is_some_and(|r| r.rules.is_empty() && !r.firewall.is_empty()) {
        // Recorded as programming nothing: no transaction needed.
        return Ok(());
    }
    recorded_backend(record, conf)?.remove_network(network).map_err(fw_err)
}

/// CHECK: the network's rules are in the kernel.
pub fn check(want: &Option<firewall::NetworkRules>, conf: &BridgeConf) -> Result<(), CniError> {
    match want {
        Some(rules) => {
            firewall::backend(conf.firewall).map_err(fw_err)?.check_network(rules).map_err(fw_err)
        }
        None => Ok(()),
    }
}

/// Locks the bridge port `port` to the container MAC `mac` (macspoofchk).
pub fn guard_mac(port: &str, mac: &[u8; 6]) -> Result<(), CniError> {
    firewall::macspoof::guard_port(port, mac).map_err(fw_err)
}

/// Removes the guard of `port` (absent is fine).
pub fn unguard_mac(port: &str, mac: &[u8; 6]) -> Result<(), CniError> {
    firewall::macspoof::unguard_port(port, mac).map_err(fw_err)
}

/// CHECK: the guard of `port` is in place.
pub fn check_mac(port: &str, mac: &[u8; 6]) -> Result<(), CniError> {
    firewall::macspoof::check_port(port, mac).map_err(fw_err)
}

/// STATUS: the backend can program the kernel (code 50 otherwise); a foreign firewall that
/// drops forwarded traffic is reported on stderr.
pub fn status(conf: &BridgeConf) -> Result<(), CniError> {
    let fw = firewall::backend(conf.firewall)
        .map_err(|e| CniError::not_available(format!("no usable firewall backend: {e}")))?;
    fw.is_available().map_err(|e| {
        CniError::not_available(format!(
            "firewall backend {} cannot program the kernel: {e}",
            fw.name()
        ))
    })?;
    if let Some(drop) = fw.foreign_drop_policy() {
        // Not fatal, but say so: our accept cannot override another table's drop.
        eprintln!("bridge: warning: forwarded container traffic may be dropped by another firewall: {drop}");
    }
    Ok(())
}
