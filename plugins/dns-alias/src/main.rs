//! `dns-alias` (also installed as `dnsname`, podman's name for it): Docker's embedded DNS
//! for CNI networks. A chained plugin (after `bridge` or `macvlan`) records each container's
//! names, aliases and addresses per network; a per-host daemon (this same binary,
//! `dns-alias daemon`) answers them at 127.0.0.11 inside each container, scoped to the
//! networks that container shares, and forwards other names.
//!
//! ADD: config -> plan (the record: a plain value) -> apply (lo up, record written, daemon
//! reloaded; undone when the daemon cannot serve it).

use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use dns_alias::client::{self, Found};
use dns_alias::config::{bridge_says_internal, container_names, DnsConf};
use dns_alias::store::{self, dns_dir, Record, StoreLock};
use dns_alias::{daemon, netns};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

struct DnsAlias;

fn io_err(what: &str) -> impl Fn(std::io::Error) -> CniError + '_ {
    move |e| CniError::io(format!("{what}: {e}"))
}

fn lock(dir: &Path) -> Result<StoreLock, CniError> {
    StoreLock::acquire(dir).map_err(|e| CniError::io(format!("locking {}: {e}", dir.display())))
}

/// The container-side addresses of this attachment, from the previous plugin's result.
fn container_addrs(prev: &CniResult, ifname: &str) -> Vec<IpAddr> {
    prev.container_ips(ifname).iter().map(|ip| ip.address.addr()).collect()
}

/// After a change: reload a running daemon; when none runs and no record is left, clear
/// what a dead daemon left behind.
fn after_removal(dir: &Path) -> Result<(), CniError> {
    let found = client::reload_if_running(dir)?;
    if found != Found::Live && store::record_files(dir, None).is_empty() {
        client::remove_stale_files(dir);
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
        let netns_path = req.netns()?;
        let ns = netns::open(netns_path)?;
        let rec = plan(req, &conf, &prev, netns_path, names);
        netns::set_lo_up_in(&ns).map_err(|e| {
            CniError::new(code::KERNEL, format!("bringing lo up in {}: {e}", netns_path.display()))
        })?;
        let dir = dns_dir();
        let _lock = lock(&dir)?;
        store::write(&dir, &rec).map_err(io_err("writing the DNS record"))?;
        let served =
            client::ensure_running(&dir).and_then(|_| client::reload(&dir)).and_then(|fails| {
                match fails.into_iter().find(|(ns, _)| *ns == rec.netns) {
                    Some((ns, why)) => {
                        Err(CniError::new(code::KERNEL, format!("cannot serve DNS in {ns}: {why}")))
                    }
                    None => Ok(()),
                }
            });
        if let Err(e) = served {
            let _ = store::remove(&dir, &rec.network, &rec.container_id, &rec.ifname);
            let _ = after_removal(&dir);
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
        let dir = dns_dir();
        if !dir.exists() {
            return Ok(());
        }
        let _lock = lock(&dir)?;
        let removed = store::remove(&dir, &req.conf.name, &req.env.container_id, &req.env.ifname)
            .map_err(io_err("removing the DNS record"))?;
        let found = client::reload_if_running(&dir)?;
        if found != Found::Live {
            // No daemon closed the socket and dropped the redirect: drop the redirect
            // ourselves when the namespace still exists and no other record of it is left.
            if let (Some(_), Some(ns)) = (&removed, &req.env.netns) {
                let ns_str = ns.to_string_lossy();
                let others = store::read_all(&dir, |_, _| {}).iter().any(|r| r.netns == ns_str);
                if !others {
                    let _ = netns::remove_redirect_in(ns, None);
                }
            }
            if store::record_files(&dir, None).is_empty() {
                client::remove_stale_files(&dir);
            }
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = DnsConf::from_request(req)?;
        if conf.disable_dns {
            return Ok(());
        }
        let dir = dns_dir();
        let path = store::record_path(&dir, &req.conf.name, &req.env.container_id, &req.env.ifname);
        let rec = store::read(&path).map_err(|e| {
            CniError::unknown_container(format!(
                "no DNS record for container {} ({}) on network {}: {e}",
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
            let _lock = lock(&dir)?;
            client::ensure_running(&dir)?;
        }
        client::probe(&rec)
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("dns-alias CHECK: {e}")))
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let dir = dns_dir();
        if !dir.exists() {
            return Ok(());
        }
        let keep: HashSet<(&str, &str)> =
            valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
        let _lock = lock(&dir)?;
        let mut removed = 0;
        for p in store::record_files(&dir, Some(&req.conf.name)) {
            let Ok(r) = store::read(&p) else { continue };
            if !keep.contains(&(r.container_id.as_str(), r.ifname.as_str())) {
                cni::store::remove_if_exists(&p).map_err(io_err("removing a DNS record"))?;
                removed += 1;
            }
        }
        store::tidy(&dir, &req.conf.name);
        if removed > 0 {
            after_removal(&dir)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = DnsConf::from_request(req)?;
        if conf.disable_dns {
            return Ok(());
        }
        let dir = dns_dir();
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
        if firewall::dns_redirect::nft_binary().is_none() {
            return Err(unavailable("nft not found (install nftables)".into()));
        }
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
