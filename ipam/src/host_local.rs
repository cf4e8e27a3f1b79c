//! host-local: leases from configured ranges, kept in the on-disk store.

use crate::alloc::{allocate_next, allocate_requested, io_error};
use crate::config::{self, Range, RangeSet};
use crate::store::{self, Holder, Owner, Store};
use cni::{code, Attachment, CniError, CniResult, IpConfig, Request};
use ipnet::IpNet;
use std::net::IpAddr;

fn owner(req: &Request) -> Owner {
    Owner::new(&req.env.container_id, &req.env.ifname)
}

fn open_error(dir: &std::path::Path, network: &str, e: std::io::Error) -> CniError {
    CniError::io(format!("opening IPAM store {}: {e}", dir.join(network).display()))
}

/// ADD: one address per range set. Idempotent: the same container and interface get back the
/// addresses they already hold. On failure, addresses leased by this call are released again.
/// The network's lease store for DEL, GC and a rollback, which read only `dataDir` from the
/// config (so they work even when the ranges changed): None when there is nothing to release
/// (no readable ipam section, or no store on disk).
fn existing_store(req: &Request) -> Result<Option<Store>, CniError> {
    let Ok(ipam) = config::ipam_section(req) else { return Ok(None) };
    let dir = config::data_dir(ipam)?;
    let name = &req.conf.name;
    Store::open_existing(&dir, name).map_err(|e| open_error(&dir, name, e))
}

pub fn add(req: &Request) -> Result<CniResult, CniError> {
    add_tracked(req).map(|(result, _)| result)
}

/// [`add`], also returning the addresses this call leased (not those the attachment already
/// held): what a caller's rollback may release.
pub fn add_tracked(req: &Request) -> Result<(CniResult, Vec<IpAddr>), CniError> {
    let conf = config::host_local(req)?;
    let owner = owner(req);
    let name = &req.conf.name;

    let mut wanted: Vec<Option<IpAddr>> = vec![None; conf.ranges.len()];
    for &ip in &conf.requested {
        let Some(i) = conf.ranges.iter().position(|s| s.contains(ip)) else {
            let sets: Vec<String> = conf
                .ranges
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{i}: {}", s.describe()))
                .collect();
            return Err(CniError::config(format!(
                "requested address {ip} is outside every range set of network {name} ({})",
                sets.join("; ")
            )));
        };
        if let Some(other) = wanted[i] {
            return Err(CniError::config(format!(
                "requested addresses {other} and {ip} both fall in range set {i} ({}); one \
                address is leased per range set",
                conf.ranges[i].describe()
            )));
        }
        wanted[i] = Some(ip);
    }

    let mut store =
        Store::open(&conf.data_dir, name).map_err(|e| open_error(&conf.data_dir, name, e))?;
    let held = store.indexed(&owner).map_err(|e| io_error(&store, e))?;
    let mut created: Vec<IpAddr> = Vec::new();
    let mut result =
        CniResult { routes: conf.routes.clone(), dns: conf.dns.clone(), ..Default::default() };
    for (i, set) in conf.ranges.iter().enumerate() {
        let leased =
            lease_one(&mut store, i, set, wanted[i], &held, &owner).and_then(|(r, ip, new)| {
                if new {
                    created.push(ip);
                    store.set_last_reserved(i, ip).map_err(|e| io_error(&store, e))?;
                }
                Ok((r, ip))
            });
        match leased {
            Ok((r, ip)) => result.ips.push(IpConfig {
                address: IpNet::new(ip, r.subnet.prefix_len()).expect("prefix of a parsed subnet"),
                gateway: Some(r.gateway),
                interface: None,
            }),
            Err(e) => {
                for ip in created {
                    let _ = store.release(ip, &owner);
                }
                return Err(e);
            }
        }
    }
    Ok((result, created))
}

/// Releases the given leases of this container and interface (a caller's rollback of
/// [`add_tracked`]); leases held by anyone else are left alone.
pub fn release(req: &Request, ips: &[IpAddr]) -> Result<(), CniError> {
    if ips.is_empty() {
        return Ok(());
    }
    let Some(store) = existing_store(req)? else { return Ok(()) };
    let owner = owner(req);
    for ip in ips {
        store.release(*ip, &owner).map_err(|e| io_error(&store, e))?;
    }
    store.forget_cursors_if_empty().map_err(|e| io_error(&store, e))?;
    Ok(())
}

/// The lease for range set `i`: the one `owner` already holds, the requested one, or the next free.
fn lease_one<'a>(
    store: &mut Store,
    i: usize,
    set: &'a RangeSet,
    wanted: Option<IpAddr>,
    held: &[IpAddr],
    owner: &Owner,
) -> Result<(&'a Range, IpAddr, bool), CniError> {
    if let Some((r, ip)) = held.iter().find_map(|&ip| set.range_for(ip).map(|r| (r, ip))) {
        if let Some(w) = wanted.filter(|w| *w != ip) {
            return Err(CniError::new(
                code::ADDRESS_UNAVAILABLE,
                format!(
                    "container {} interface {} already holds {ip} in range set {i}; it cannot \
                    also get the requested {w} (DEL first)",
                    owner.id, owner.ifname
                ),
            ));
        }
        return Ok((r, ip, false));
    }
    match wanted {
        Some(w) => allocate_requested(store, set, w, owner),
        None => allocate_next(store, i, set, owner).map(|(r, ip)| (r, ip, true)),
    }
}

/// DEL: releases every lease of this container and interface. Only `dataDir` is read from the
/// config, so DEL works even when the ranges changed; nothing there is not an error.
pub fn del(req: &Request) -> Result<(), CniError> {
    let Some(store) = existing_store(req)? else { return Ok(()) };
    store.release_owner(&owner(req)).map_err(|e| io_error(&store, e))?;
    store.forget_cursors_if_empty().map_err(|e| io_error(&store, e))?;
    Ok(())
}

/// CHECK: the container holds a lease in every range set, and every address of prevResult that
/// falls in our ranges is leased to it. Code 3 otherwise.
pub fn check(req: &Request) -> Result<(), CniError> {
    let conf = config::host_local(req)?;
    let owner = owner(req);
    let name = &req.conf.name;
    let who = format!("container {} interface {}", owner.id, owner.ifname);
    let Some(store) = Store::open_existing(&conf.data_dir, name)
        .map_err(|e| open_error(&conf.data_dir, name, e))?
    else {
        return Err(CniError::unknown_container(format!(
            "{who} holds no address on network {name}: no leases in {}",
            conf.data_dir.display()
        )));
    };
    let held = store.find(&owner).map_err(|e| io_error(&store, e))?;
    for (i, set) in conf.ranges.iter().enumerate() {
        if !held.iter().any(|ip| set.contains(*ip)) {
            return Err(CniError::unknown_container(format!(
                "{who} holds no lease in range set {i} ({}) of network {name}",
                set.describe()
            )));
        }
    }
    if let Some(prev) = &req.prev {
        for ipc in &prev.ips {
            let a = ipc.address.addr();
            if conf.ranges.iter().any(|s| s.contains(a)) && !held.contains(&a) {
                return Err(CniError::unknown_container(format!(
                    "prevResult address {a} is not leased to {who} on network {name}"
                )));
            }
        }
    }
    Ok(())
}

/// GC: releases every lease whose (container, interface) is not among `valid`.
pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
    let Some(mut store) = existing_store(req)? else { return Ok(()) };
    let keep = |h: &Holder| {
        valid
            .iter()
            .any(|a| a.container_id == h.id && h.ifname.as_deref().is_none_or(|i| i == a.ifname))
    };
    store.gc(&keep).map_err(|e| io_error(&store, e))?;
    store.forget_cursors_if_empty().map_err(|e| io_error(&store, e))?;
    Ok(())
}

/// STATUS: code 50 when a range set has no free address left (reads the directory, no lock).
pub fn status(req: &Request) -> Result<(), CniError> {
    let conf = config::host_local(req)?;
    let name = &req.conf.name;
    let leased = store::leased_ips(&conf.data_dir, name).map_err(|e| {
        CniError::io(format!("reading IPAM store {}: {e}", conf.data_dir.join(name).display()))
    })?;
    for (i, set) in conf.ranges.iter().enumerate() {
        let used = leased
            .iter()
            .filter(|ip| set.range_for(**ip).is_some_and(|r| r.gateway != **ip))
            .count() as u128;
        let capacity = set.usable();
        if used >= capacity {
            return Err(CniError::not_available(format!(
                "network {name}: range set {i} ({}) has no free address: {used} of {capacity} \
                leased",
                set.describe()
            )));
        }
    }
    Ok(())
}
