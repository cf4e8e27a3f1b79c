//! Carrying out a plan on the host-side veth through netlink, with undo, and removing what a
//! record says an ADD made.

use crate::plan::Plan;
use crate::state::Record;
use cni::{code, CniError, CniResult, Interface};
use netlink::{format_mac, Handle, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};

/// The host-side veth: the peer of the container's CNI_IFNAME, which must be an interface
/// of prevResult without a sandbox (the reference's rule). Returns (name, index, mtu).
pub fn host_veth(
    prev: &CniResult,
    ifname: &str,
    ns: &netlink::Netns,
) -> Result<(String, u32, u32), CniError> {
    let chain_hint = "bandwidth shapes the host end of a veth: chain it after bridge or ptp";
    let ctr = Handle::new_in(ns)?.link_by_name(ifname)?.ok_or_else(|| {
        CniError::config(format!(
            "the container has no interface {ifname:?} (CNI_IFNAME); {chain_hint}"
        ))
    })?;
    let peer = match (ctr.kind.as_deref(), ctr.link) {
        (Some("veth"), Some(peer)) => peer,
        (kind, _) => {
            return Err(CniError::config(format!(
                "the container's {ifname} is not a veth (kind {}); {chain_hint}",
                kind.unwrap_or("none")
            )))
        }
    };
    // IFLA_LINK is an index in the peer's namespace: make sure the link found here really is
    // the other end (a veth pointing back at the container's interface) and is in prevResult.
    let host = Handle::new()?.link_by_index(peer)?;
    match host {
        Some(h)
            if h.kind.as_deref() == Some("veth")
                && h.link == Some(ctr.index)
                && prev.interfaces.iter().any(|i| i.sandbox.is_none() && i.name == h.name) =>
        {
            Ok((h.name, h.index, h.mtu))
        }
        _ => Err(CniError::config(format!(
            "the peer of the container's {ifname} is not a host interface of prevResult in this \
            namespace; {chain_hint}"
        ))),
    }
}

/// Removes an ifb called `name` when it is ours (our owner tag) or untagged (the reference
/// makes its ifbs without one); one with another owner's tag is left alone.
pub fn remove_ifb(h: &mut Handle, name: &str, owner: &str) -> Result<(), CniError> {
    let Some(link) = h.link_by_name(name)? else { return Ok(()) };
    if link.kind.as_deref() != Some("ifb") {
        return Ok(());
    }
    match link.alias.as_deref() {
        None => {}
        Some(a) if a == owner => {}
        Some(other) => {
            eprintln!("bandwidth: leaving ifb {name}: it belongs to {other}, not {owner}");
            return Ok(());
        }
    }
    ignore_gone(h.delete_link(link.index))
}

/// Undoes what `rec` says was made; whatever is already gone is fine.
pub fn teardown(h: &mut Handle, rec: &Record, owner: &str) -> Result<(), CniError> {
    let host = h.link_by_index(rec.host_index)?.filter(|l| l.name == rec.host_veth);
    if let Some(host) = host {
        let qdiscs = h.qdiscs(host.index)?;
        let ours = |q: &&netlink::Qdisc| q.is_root() && q.kind == "tbf" && q.handle == TBF_HANDLE;
        if rec.ingress && qdiscs.iter().any(|q| ours(&q)) {
            ignore_gone(h.delete_qdisc(host.index, TC_H_ROOT, TBF_HANDLE))?;
        }
        if let Some(ifb) = &rec.ifb {
            let ifb_index = h.link_by_name(ifb)?.map(|l| l.index);
            let targets = h.ingress_redirect_targets(host.index)?;
            // Only an ingress qdisc that redirects nowhere else than our ifb is ours to remove.
            let ours = targets.iter().all(|t| Some(*t) == ifb_index || ifb_index.is_none());
            if ours && qdiscs.iter().any(|q| q.kind == "ingress") {
                ignore_gone(h.delete_qdisc(host.index, TC_H_INGRESS, INGRESS_HANDLE))?;
            }
        }
    }
    if let Some(ifb) = &rec.ifb {
        remove_ifb(h, ifb, owner)?;
    }
    Ok(())
}

/// A removal's outcome, where "already gone" is success.
pub fn ignore_gone(r: netlink::Result<()>) -> Result<(), CniError> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// What `apply` made, newest last: undone in reverse when a later step fails.
enum Made {
    RootTbf(u32),
    Ifb(u32),
    IngressQdisc(u32),
}

fn undo(h: &mut Handle, made: Vec<Made>) {
    for m in made.into_iter().rev() {
        let r = match m {
            Made::RootTbf(i) => h.delete_qdisc(i, TC_H_ROOT, TBF_HANDLE),
            Made::IngressQdisc(i) => h.delete_qdisc(i, TC_H_INGRESS, INGRESS_HANDLE),
            Made::Ifb(i) => h.delete_link(i),
        };
        if let Err(e) = ignore_gone(r) {
            eprintln!("bandwidth: undoing a failed ADD: {}", e.msg);
        }
    }
}

/// Builds the plan on the host-side veth; on failure removes exactly what it made.
pub fn apply(
    h: &mut Handle,
    plan: &Plan,
    rec: &Record,
    owner: &str,
) -> Result<Option<Interface>, CniError> {
    let host = rec.host_index;
    let busy = |what: &str, e: netlink::Error| -> CniError {
        if e.is_exists() {
            CniError::new(
                code::KERNEL,
                format!(
                    "{} already has {what} that this plugin did not make (other traffic shaping \
                    on it?): {e}",
                    rec.host_veth
                ),
            )
        } else {
            e.into()
        }
    };
    let mut made = Vec::new();
    let result = (|| -> Result<Option<Interface>, CniError> {
        if let Some(tbf) = &plan.ingress {
            h.add_tbf(host, tbf).map_err(|e| busy("a root qdisc", e))?;
            made.push(Made::RootTbf(host));
        }
        let Some((name, tbf)) = &plan.egress else { return Ok(None) };
        if let Some(existing) = h.link_by_name(name)? {
            let stale = existing.kind.as_deref() == Some("ifb")
                && existing.alias.as_deref().is_none_or(|a| a == owner);
            if !stale {
                return Err(CniError::new(
                    code::KERNEL,
                    format!(
                        "an interface named {name} already exists (kind {}, owner {}); it is not \
                        this container's ifb",
                        existing.kind.as_deref().unwrap_or("none"),
                        existing.alias.as_deref().unwrap_or("unknown")
                    ),
                ));
            }
            // Left by an earlier ADD of this same container (ours, or the reference's).
            h.delete_link(existing.index)?;
        }
        let mtu = h.link_by_index(host)?.map(|l| l.mtu).unwrap_or(1500);
        let ifb = h.create_ifb(name, mtu, owner)?;
        made.push(Made::Ifb(ifb.index));
        h.add_tbf(ifb.index, tbf)?;
        h.add_ingress_qdisc(host).map_err(|e| busy("an ingress qdisc", e))?;
        made.push(Made::IngressQdisc(host));
        h.add_ingress_redirect(host, ifb.index)?;
        Ok(Some(Interface {
            name: name.clone(),
            mac: ifb.mac.map(|m| format_mac(&m)),
            ..Interface::default()
        }))
    })();
    if result.is_err() {
        undo(h, made);
    }
    result
}
