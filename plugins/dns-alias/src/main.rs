//! `dns-alias` (also installed as `dnsname`, podman's name for it): Docker's embedded DNS
//! for CNI networks. A chained plugin (after `bridge` or `macvlan`) records each container's
//! names, aliases and addresses per network; a per-host daemon (this same binary,
//! `dns-alias daemon`) answers them at 127.0.0.11 inside each container, scoped to the
//! networks that container shares, and forwards other names.
//!
//! ADD: config -> plan (the record: a plain value) -> apply (lo up, record written, daemon
//! reloaded; undone when the daemon cannot serve it).

use cni::store::Store;
use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use dns_alias::client::{self, Found};
use dns_alias::config::{bridge_says_internal, container_names, DnsConf};
use dns_alias::store::{self, Record};
use dns_alias::{daemon, netns};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

struct DnsAlias;

/// The container-side addresses of this attachment, from the previous plugin's result.
fn container_addrs(prev: &CniResult, ifname: &str) -> Vec<IpAddr> {
    prev.container_ips(ifname).iter().map(|ip| ip.address.addr()).collect()
}

/// After a change: reload a running daemon; when none runs and no record is left, clear
/// what a dead daemon left behind.
fn after_removal(s: &Store) -> Result<(), CniError> {
    let found = client::reload_if_running(s)?;
    if found != Found::Live && !store::any(s) {
        client::remove_stale_files(s.root());
    }
    Ok(())
}

/// The record of this attachment: what the daemon will serve.
fn plan(
    req: &Request,
    conf: &DnsConf,
    prev: &CniResult,
    netns: &Path,
    names: Vec<String>,
) -> Record {
    Record {
        network: req.conf.name.clone(),
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        netns: netns.to_string_lossy().into_owned(),
        names,
        ips: container_addrs(prev, &req.env.ifname),
        domain: conf.domain_name.clone(),
        upstreams: conf.upstreams.clone(),
        ttl: conf.ttl,
        internal: conf.internal || bridge_says_internal(&req.conf.name),
    }
}

impl Plugin for DnsAlias {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let prev = req.prev.clone().ok_or_else(|| {
            CniError::config(
                "dns-alias must be chained after a plugin that creates the container's interface \
                 (e.g. bridge or macvlan): ADD received no prevResult",
            )
        })?;
        let conf = DnsConf::from_request(req)?;
        if conf.disable_dns {
            return Ok(prev);
        }
        let names = container_names(req)?;
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let rec = plan(req, &conf, &prev, ns.path(), names);
        netns::set_lo_up_in(&ns).map_err(|e| {
            CniError::new(code::KERNEL, format!("bringing lo up in {}: {e}", ns.path().display()))
        })?;
        let s = store::store();
        let _lock = s.lock()?;
        store::write(&s, &rec)?;
        let dir = s.root();
        let served =
            client::ensure_running(dir).and_then(|_| client::reload(dir)).and_then(|fails| {
                match fails.into_iter().find(|(ns, _)| *ns == rec.netns) {
                    Some((ns, why)) => {
                        Err(CniError::new(code::KERNEL, format!("cannot serve DNS in {ns}: {why}")))
                    }
                    None => Ok(()),
                }
            });
        if let Err(e) = served {
            let _ = store::remove(&s, &rec.network, &rec.container_id, &rec.ifname);
            let _ = after_removal(&s);
            return Err(e);
        }
        let mut result = prev;
        result.dns.nameservers = vec![firewall::dns_redirect::DNS_ADDR.to_string()];
        if let Some(d) = &conf.domain_name {
            result.dns.search.retain(|s| s != d);
            result.dns.search.insert(0, d.clone());
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let s = store::store();
        if !s.root().exists() {
            return Ok(());
        }
        let _lock = s.lock()?;
        let removed = store::remove(&s, &req.conf.name, &req.env.container_id, &req.env.ifname)?;
        let found = client::reload_if_running(&s)?;
        if found != Found::Live {
            // No daemon closed the socket and dropped the redirect: drop the redirect
            // ourselves when the namespace still exists and no other record of it is left.
            if let (Some(_), Some(ns)) = (&removed, &req.env.netns) {
                let ns_str = ns.to_string_lossy();
                let others = store::read_all(&s, |_, _| {}).iter().any(|r| r.netns == ns_str);
                if !others {
                    let _ = netns::remove_redirect_in(ns, None);
                }
            }
            if !store::any(&s) {
                client::remove_stale_files(s.root());
            }
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = DnsConf::from_request(req)?;
        if conf.disable_dns {
            return Ok(());
        }
        let s = store::store();
        let rec = store::read(&s, &req.conf.name, &req.env.container_id, &req.env.ifname)?
            .ok_or_else(|| {
                CniError::unknown_container(format!(
                    "no DNS record for container {} ({}) on network {}",
                    req.env.container_id, req.env.ifname, req.conf.name
                ))
            })?;
        if let Some(prev) = &req.prev {
            let want: HashSet<IpAddr> =
                container_addrs(prev, &req.env.ifname).into_iter().collect();
            let have: HashSet<IpAddr> = rec.ips.iter().copied().collect();
            if want != have {
                return Err(CniError::config(format!(
                    "DNS record of container {} has addresses {:?}, prevResult has {:?}",
                    req.env.container_id, rec.ips, want
                )));
            }
        }
        {
            let _lock = s.lock()?;
            client::ensure_running(s.root())?;
        }
        client::probe(&rec)
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("dns-alias CHECK: {e}")))
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let s = store::store();
        if !s.root().exists() {
            return Ok(());
        }
        let keep: HashSet<(&str, &str)> =
            valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
        let _lock = s.lock()?;
        s.sweep_temp_files();
        let mut removed = 0;
        // A corrupt record names no network: it is reported by CHECK and left for the admin.
        for r in store::read_all(&s, |_, _| {}) {
            if r.network == req.conf.name
                && !keep.contains(&(r.container_id.as_str(), r.ifname.as_str()))
            {
                store::remove(&s, &r.network, &r.container_id, &r.ifname)?;
                removed += 1;
            }
        }
        if removed > 0 {
            after_removal(&s)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = DnsConf::from_request(req)?;
        if conf.disable_dns {
            return Ok(());
        }
        let dir = store::dns_dir();
        let unavailable = |why: String| {
            CniError::not_available(format!("the dns-alias daemon cannot be started: {why}"))
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let probe = dir.join(".status-probe");
        cni::store::atomic_write(&probe, b"ok")
            .map_err(|e| unavailable(format!("{} is not writable: {e}", dir.display())))?;
        let _ = cni::store::remove_if_exists(&probe);
        let sock = dir.join(store::CONTROL_SOCKET);
        if sock.as_os_str().len() >= 108 {
            return Err(unavailable(format!(
                "control socket path {} is too long for a unix socket",
                sock.display()
            )));
        }
        firewall::dns_redirect::available().map_err(|e| unavailable(e.to_string()))?;
        std::env::current_exe().map_err(|e| unavailable(format!("cannot find own binary: {e}")))?;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("daemon") {
        daemon::main(&args[2..]);
    }
    cni::run(&DnsAlias)
}
