//! `bridge`: Docker's bridge networks on CNI. A Linux bridge per network, a veth per
//! container (created directly in the container namespace with its final name), a gateway
//! address on the bridge, outbound NAT, and isolation between networks.
//!
//! The flow of ADD is parse -> allocate -> apply, and any failure undoes what was applied.

mod config;
mod setup;
mod state;

use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::BridgeConf;
use netlink::{Handle, Netns};
use state::{host_veth_name, AttachmentRecord, NetworkRecord, NetworkState};

struct BridgePlugin;

pub(crate) fn kernel(e: netlink::Error) -> CniError {
    CniError::new(code::KERNEL, e.to_string())
}

pub(crate) fn fw_err(e: firewall::Error) -> CniError {
    CniError::new(code::KERNEL, format!("firewall: {e}"))
}

fn has_ipam(req: &Request) -> bool {
    req.conf.ipam.as_ref().is_some_and(|v| v.is_object())
}

/// The rules this network needs, or None when there is nothing to enforce.
fn network_rules(
    req: &Request,
    conf: &BridgeConf,
    subnets: &[ipnet::IpNet],
) -> Option<firewall::NetworkRules> {
    let rules = firewall::NetworkRules {
        network: req.conf.name.clone(),
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

/// Removes one attachment's links (host side by its stable name; container side when the
/// namespace still exists). Links already gone are not an error.
fn remove_links(req: &Request, host_veth: &str) -> Result<(), CniError> {
    if let Some(Ok(ns)) = req.env.netns.as_deref().map(Netns::open) {
        let mut ctr = Handle::new_in(&ns).map_err(kernel)?;
        if let Some(link) = ctr.link_by_name(&req.env.ifname).map_err(kernel)? {
            if link.kind.as_deref() == Some("veth") {
                match ctr.delete_link(link.index) {
                    Err(e) if !e.is_not_found() => return Err(kernel(e)),
                    _ => {}
                }
            }
        }
    }
    let mut host = Handle::new().map_err(kernel)?;
    if let Some(link) = host.link_by_name(host_veth).map_err(kernel)? {
        match host.delete_link(link.index) {
            Err(e) if !e.is_not_found() => return Err(kernel(e)),
            _ => {}
        }
    }
    Ok(())
}

/// After the last attachment left: the network's rules go, and the bridge if we created it
/// and nothing else is plugged into it.
fn teardown_network(
    req: &Request,
    conf: &BridgeConf,
    state: &NetworkState,
) -> Result<(), CniError> {
    let record = state.network();
    let fw = firewall::backend(conf.firewall).map_err(fw_err)?;
    fw.remove_network(&req.conf.name).map_err(fw_err)?;
    if let Some(rec) = &record {
        if rec.created_bridge {
            let mut host = Handle::new().map_err(kernel)?;
            if let Some(br) = host.link_by_name(&rec.bridge).map_err(kernel)? {
                let ports = host
                    .links()
                    .map_err(kernel)?
                    .iter()
                    .filter(|l| l.master == Some(br.index))
                    .count();
                if ports == 0 {
                    match host.delete_link(br.index) {
                        Err(e) if !e.is_not_found() => return Err(kernel(e)),
                        _ => {}
                    }
                }
            }
        }
    }
    state.remove_network();
    Ok(())
}

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = BridgeConf::from_request(req)?;
        let netns_path = req.netns()?;
        let ns = Netns::open(netns_path).map_err(|e| {
            CniError::unknown_container(format!("CNI_NETNS {}: {e}", netns_path.display()))
        })?;
        let fw = firewall::backend(conf.firewall).map_err(fw_err)?;
        let state = NetworkState::new(&req.conf.name);
        let _lock = state.lock()?;

        let allocated = if has_ipam(req) { ipam::add(req)? } else { CniResult::default() };
        let mut created = setup::Created::default();
        let outcome = setup::apply(req, &conf, &ns, &allocated, &mut created).and_then(|result| {
            let subnets = setup::subnets(&result);
            let rules = network_rules(req, &conf, &subnets);
            let previous = state.network();
            let record = NetworkRecord {
                bridge: conf.bridge.clone(),
                created_bridge: created.bridge
                    || previous
                        .as_ref()
                        .is_some_and(|p| p.created_bridge && p.bridge == conf.bridge),
                subnets,
                internal: conf.internal,
                firewall: fw.name().to_string(),
                rules: rules.as_ref().map(|r| format!("{r:?}")).unwrap_or_default(),
            };
            // Rules are per network: only the first container (or a changed config) pays
            // for programming them. CHECK still verifies them against the kernel.
            if previous.as_ref() != Some(&record) {
                if let Some(rules) = &rules {
                    fw.apply_network(rules).map_err(fw_err)?;
                }
                state.save_network(&record)?;
            }
            state.save_attachment(&AttachmentRecord {
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
                host_veth: created.host_veth.clone().unwrap_or_default(),
                netns: Some(netns_path.display().to_string()),
                ips: result.ips.iter().map(|ip| ip.address).collect(),
                mac_guard: created.mac_guard.as_ref().map(|(_, mac)| netlink::format_mac(mac)),
            })?;
            Ok(result)
        });
        match outcome {
            Ok(result) => Ok(result),
            Err(e) => {
                // Undo in reverse order; the original error is what the runtime needs to see.
                created.undo();
                if has_ipam(req) {
                    let _ = ipam::del(req);
                }
                if !state.has_attachments() && state.network().is_none() {
                    let _ = fw.remove_network(&req.conf.name);
                    state.remove_network();
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        let state = NetworkState::new(&req.conf.name);
        let _lock = state.lock()?;
        let record = state.attachment(&req.env.container_id, &req.env.ifname);
        let host_veth =
            record.as_ref().map(|a| a.host_veth.clone()).filter(|n| !n.is_empty()).unwrap_or_else(
                || host_veth_name(&req.conf.name, &req.env.container_id, &req.env.ifname),
            );
        // The guard's MAC: from our record, else from the container interface in prevResult.
        let guard_mac = record.as_ref().and_then(|a| a.mac_guard.clone()).or_else(|| {
            let prev = req.prev.as_ref()?;
            let i = prev.sandbox_interface(&req.env.ifname)?;
            prev.interfaces[i].mac.clone().filter(|_| conf.macspoofchk)
        });
        if let Some(mac) = guard_mac.as_deref().and_then(netlink::parse_mac) {
            firewall::macspoof::unguard_port(&host_veth, &mac).map_err(fw_err)?;
        }
        remove_links(req, &host_veth)?;
        if has_ipam(req) {
            ipam::del(req)?;
        }
        state.remove_attachment(&req.env.container_id, &req.env.ifname)?;
        if !state.has_attachments() {
            teardown_network(req, &conf, &state)?;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        let prev = req
            .prev
            .as_ref()
            .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of ADD)"))?;
        let netns_path = req.netns()?;
        let ns = Netns::open(netns_path).map_err(|e| {
            CniError::unknown_container(format!("CNI_NETNS {}: {e}", netns_path.display()))
        })?;
        setup::verify(req, &conf, &ns, prev)?;
        let subnets = setup::subnets(prev);
        if let Some(rules) = network_rules(req, &conf, &subnets) {
            let fw = firewall::backend(conf.firewall).map_err(fw_err)?;
            fw.check_network(&rules).map_err(fw_err)?;
        }
        if has_ipam(req) {
            ipam::check(req)?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
        let state = NetworkState::new(&req.conf.name);
        let _lock = state.lock()?;
        let mut host = Handle::new().map_err(kernel)?;
        for att in state.attachments() {
            let keep =
                valid.iter().any(|v| v.container_id == att.container_id && v.ifname == att.ifname);
            if keep {
                continue;
            }
            if let Some(mac) = att.mac_guard.as_deref().and_then(netlink::parse_mac) {
                firewall::macspoof::unguard_port(&att.host_veth, &mac).map_err(fw_err)?;
            }
            if let Some(link) = host.link_by_name(&att.host_veth).map_err(kernel)? {
                match host.delete_link(link.index) {
                    Err(e) if !e.is_not_found() => return Err(kernel(e)),
                    _ => {}
                }
            }
            state.remove_attachment(&att.container_id, &att.ifname)?;
        }
        if has_ipam(req) {
            ipam::gc(req, valid)?;
        }
        if !state.has_attachments() && state.network().is_some() {
            teardown_network(req, &conf, &state)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::from_request(req)?;
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
        let state = NetworkState::new(&req.conf.name);
        if let Some(rec) = state.network() {
            if state.has_attachments() {
                let mut host = Handle::new().map_err(kernel)?;
                if host.link_by_name(&rec.bridge).map_err(kernel)?.is_none() {
                    return Err(CniError::new(
                        code::LIMITED_CONNECTIVITY,
                        format!("bridge {} of network {} is missing: its containers have no connectivity", rec.bridge, req.conf.name),
                    ));
                }
            }
        }
        if has_ipam(req) {
            ipam::status(req)?;
        }
        Ok(())
    }
}

fn main() {
    cni::run(&BridgePlugin)
}
