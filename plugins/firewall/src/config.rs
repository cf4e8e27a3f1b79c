//! The reference `firewall` plugin's keys, validated: `ingressPolicy`, `backend`,
//! `iptablesAdminChainName`, `firewalldZone`.

use cni::{CniError, Request};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Open,
    SameBridge,
    Isolated,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    backend: Option<String>,
    ingress_policy: Option<String>,
    iptables_admin_chain_name: Option<String>,
    firewalld_zone: Option<String>,
}

pub struct Conf {
    pub policy: Policy,
    pub admin_chain: String,
    pub backend: firewall::BackendKind,
    /// `backend` as the config gave it (STATUS says what programs the rules instead).
    pub requested: String,
}

pub fn parse(req: &Request) -> Result<Conf, CniError> {
    let raw: RawConf = req.plugin_config()?;
    let requested = raw.backend.clone().unwrap_or_default();
    match requested.as_str() {
        "" | "iptables" | "firewalld" | "nftables" => {}
        other => {
            return Err(CniError::bad_value(
                "backend",
                format!("{other:?}"),
                "expected \"iptables\", \"firewalld\" or \"\"",
            ))
        }
    }
    let policy = match raw.ingress_policy.as_deref().unwrap_or("") {
        "" | "open" => Policy::Open,
        "same-bridge" => Policy::SameBridge,
        "isolated" => Policy::Isolated,
        other => {
            return Err(CniError::bad_value(
                "ingressPolicy",
                format!("{other:?}"),
                "expected \"open\", \"same-bridge\" or \"isolated\"",
            ))
        }
    };
    let admin_chain = raw.iptables_admin_chain_name.unwrap_or_else(|| "CNI-ADMIN".to_string());
    let chain_ok = !admin_chain.is_empty()
        && admin_chain.len() <= 28
        && admin_chain.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !chain_ok {
        return Err(CniError::bad_value(
            "iptablesAdminChainName",
            format!("{admin_chain:?}"),
            "1-28 characters of letters, digits, '-' and '_'",
        ));
    }
    // firewalld does not run here: the zone has nowhere to go, and is not an error.
    let _ = raw.firewalld_zone;
    // Whatever was asked for, the suite's own backend programs the rules.
    let backend = firewall::backend(None)?.kind();
    Ok(Conf { policy, admin_chain, backend, requested })
}
