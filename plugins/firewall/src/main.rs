//! `firewall`: the reference `firewall` plugin's keys and behaviour on this suite's firewall
//! crate, as nerdctl and podman chain it after `bridge`:
//! - `ingressPolicy` `open` (default), `same-bridge` (isolation between networks, Docker's
//!   isolation chains) or `isolated` (also between the containers of one bridge, Docker's
//!   `enable_icc=false`);
//! - per-container accepts in iptables FORWARD when another firewall there drops by policy
//!   (Docker), so the containers keep working;
//! - `backend` `iptables`, `firewalld` or `""`: mapped onto our nftables backend (or the
//!   iptables one where nft is absent); the choice is reported by STATUS on stderr;
//!   `iptablesAdminChainName` (default `CNI-ADMIN`) names the admin chain our accepts jump
//!   to first; `firewalldZone` is accepted (there is no firewalld here to put it in).
//!
//! When our own `bridge` already isolates the network (`isolation`, `icc=false`), the same
//! rules are not added twice. Flow: config -> plan (from prevResult and state) -> record
//! (before the kernel is touched) -> apply.

use cni::store::Store;
use cni::{Attachment, CniError, CniResult, Plugin, Request};
use firewall::ingress::{self, Attachment as Ingress};
use serde::{Deserialize, Serialize};

struct FirewallPlugin;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Policy {
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

struct Conf {
    policy: Policy,
    admin_chain: String,
    backend: firewall::BackendKind,
    requested: String,
}

fn parse(req: &Request) -> Result<Conf, CniError> {
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

/// What we record per container interface, before touching the kernel.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    network: String,
    policy: Policy,
    backend: String,
    admin_chain: String,
    attachment: Ingress,
}

fn store() -> Store {
    Store::for_plugin("firewall")
}

fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// What our `bridge` plugin already enforces for this network (its record): (isolation
/// between networks, no traffic between its containers).
fn bridge_enforces(network: &str) -> (bool, bool) {
    let rec: Option<serde_json::Value> =
        Store::for_plugin("bridge").get(&[network, "network"]).ok().flatten();
    // `rules`: what bridge programmed, as JSON (see the bridge plugin's rules.rs).
    let applied: Option<serde_json::Value> = rec
        .as_ref()
        .and_then(|r| r.get("rules"))
        .and_then(|v| v.as_str())
        .and_then(|s| serde_json::from_str(s).ok());
    let applied = applied.as_ref().filter(|a| a.is_object());
    let flag = |k: &str| applied.and_then(|a| a.get(k)).and_then(|v| v.as_bool());
    let isolates = flag("isolate") == Some(true) || flag("internal") == Some(true);
    let icc_off = flag("icc") == Some(false);
    (isolates, icc_off)
}

fn plan(req: &Request, conf: &Conf, prev: &CniResult) -> Ingress {
    let ips = prev.container_ips(&req.env.ifname).iter().map(|i| i.address.addr()).collect();
    // The bridge: the first host-side interface of the result (the bridge plugin lists the
    // bridge first, then the host end of the veth).
    let bridge = prev.interfaces.iter().find(|i| i.sandbox.is_none()).map(|i| i.name.clone());
    let (bridge_isolates, bridge_icc_off) = bridge_enforces(&req.conf.name);
    let iptables = conf.backend == firewall::BackendKind::Iptables;
    Ingress {
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        isolate_bridge: conf.policy != Policy::Open && !bridge_isolates && bridge.is_some(),
        isolate_container: conf.policy == Policy::Isolated && !bridge_icc_off,
        bridge,
        ips,
        accept: iptables || ingress::foreign_forward_drop(),
    }
}

fn records() -> Vec<Record> {
    store().list_lenient(&["attachments"]).into_iter().filter_map(|(_, r)| r.ok()).collect()
}

/// Programs (or removes, when `rec` is not in `all`) the rules of one attachment, given
/// every recorded one.
fn apply(rec: &Record, all: &[Record], adding: bool) -> Result<(), CniError> {
    let atts: Vec<Ingress> = all.iter().map(|r| r.attachment.clone()).collect();
    let iptables = rec.backend == "iptables";
    if !iptables {
        if adding {
            ingress::nft_add(&rec.attachment, &atts)?;
        } else {
            ingress::nft_remove(&rec.attachment, &atts)?;
        }
    }
    let any_ipt = iptables || all.iter().any(|r| r.attachment.accept);
    if rec.attachment.accept || (iptables && rec.attachment.isolate_bridge) || (!adding && any_ipt)
    {
        let ipt: Vec<Ingress> = all
            .iter()
            .filter(|r| r.attachment.accept || r.backend == "iptables")
            .map(|r| r.attachment.clone())
            .collect();
        ingress::iptables_apply(&rec.admin_chain, &ipt, iptables)?;
    }
    Ok(())
}

impl Plugin for FirewallPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = parse(req)?;
        let prev = req.prev.clone().ok_or_else(|| {
            CniError::config(
                "prevResult is missing: firewall must be chained after a plugin that returns a \
                result",
            )
        })?;
        let att = plan(req, &conf, &prev);
        if conf.policy == Policy::Open && !att.accept {
            // Nothing to enforce or open for this container.
            return Ok(prev);
        }
        let st = store();
        let _lock = st.lock()?;
        let rec = Record {
            network: req.conf.name.clone(),
            policy: conf.policy,
            backend: conf.backend.to_string(),
            admin_chain: conf.admin_chain,
            attachment: att,
        };
        let k = key(&req.env.container_id, &req.env.ifname);
        // Intent first: DEL and GC find whatever this call creates.
        st.put(&["attachments", &k], &rec)?;
        let all = records();
        if let Err(e) = apply(&rec, &all, true) {
            let rest: Vec<Record> = all
                .into_iter()
                .filter(|r| key(&r.attachment.container_id, &r.attachment.ifname) != k)
                .collect();
            let _ = apply(&rec, &rest, false);
            let _ = st.delete(&["attachments", &k]);
            return Err(e);
        }
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let st = store();
        let _lock = st.lock()?;
        let k = key(&req.env.container_id, &req.env.ifname);
        let Some(rec) = st.get::<Record>(&["attachments", &k])? else { return Ok(()) };
        let rest: Vec<Record> = records()
            .into_iter()
            .filter(|r| key(&r.attachment.container_id, &r.attachment.ifname) != k)
            .collect();
        apply(&rec, &rest, false)?;
        st.delete(&["attachments", &k])
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        parse(req)?;
        let k = key(&req.env.container_id, &req.env.ifname);
        let Some(rec) = store().get::<Record>(&["attachments", &k])? else { return Ok(()) };
        if rec.backend != "iptables" {
            ingress::nft_check(&rec.attachment)?;
        }
        if rec.attachment.accept {
            ingress::iptables_check(&rec.attachment)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = parse(req)?;
        let st = store();
        let _lock = st.lock()?;
        st.sweep_temp_files();
        for rec in records() {
            let a = &rec.attachment;
            let keep =
                valid.iter().any(|v| v.container_id == a.container_id && v.ifname == a.ifname);
            if !keep && rec.network == req.conf.name {
                st.delete(&["attachments", &key(&a.container_id, &a.ifname)])?;
            }
        }
        // Rebuild everything from what is left (also repairs a flushed ruleset).
        let all = records();
        let atts: Vec<Ingress> =
            all.iter().filter(|r| r.backend != "iptables").map(|r| r.attachment.clone()).collect();
        ingress::nft_restore(&atts)?;
        let ipt: Vec<Ingress> = all
            .iter()
            .filter(|r| r.attachment.accept || r.backend == "iptables")
            .map(|r| r.attachment.clone())
            .collect();
        if !ipt.is_empty() || conf.backend == firewall::BackendKind::Iptables {
            ingress::iptables_apply(
                &conf.admin_chain,
                &ipt,
                conf.backend == firewall::BackendKind::Iptables,
            )?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = parse(req)?;
        let fw = firewall::backend(Some(conf.backend))?;
        let requested =
            if conf.requested.is_empty() { "(default)" } else { conf.requested.as_str() };
        eprintln!(
            "firewall: backend {requested} requested; rules are programmed with {}",
            fw.name()
        );
        let st = fw.status().map_err(|e| {
            CniError::not_available(format!(
                "firewall backend {} cannot program the kernel: {e}",
                fw.name()
            ))
        })?;
        if let Some(drop) = st.foreign_drop {
            eprintln!(
                "firewall: {drop}: containers are accepted in iptables FORWARD ({})",
                ingress::ACCEPT_CHAIN
            );
        }
        Ok(())
    }
}

fn main() {
    cni::run(&FirewallPlugin)
}
