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
//! rules are not added twice. Flow: config (`config`) -> plan (`plan`, from prevResult and
//! state) -> record (`state`, before the kernel is touched) -> apply (here, through
//! `firewall::ingress`).

pub mod config;
pub mod plan;
pub mod state;

use cni::{Attachment, CniError, CniResult, Plugin, Request};
use config::{parse, Policy};
use firewall::ingress::{self, Attachment as Ingress};
use plan::plan;
use state::{key, records, store, Record};

/// The plugin, run by the `firewall` binary.
pub struct FirewallPlugin;

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
        let att = plan(req, &conf, &prev)?;
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
            if !cni::config::in_use(valid, &a.container_id, &a.ifname)
                && rec.network == req.conf.name
            {
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
