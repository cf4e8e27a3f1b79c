//! Per-namespace listeners: for every container namespace with a record, a UDP and a TCP
//! socket at 127.0.0.11:<ephemeral> opened from inside that namespace, and the redirect of
//! 127.0.0.11:53 to them. Reload opens what a new record needs, closes what no record needs
//! any more, and publishes the new zone.

use super::{log, token, Daemon, K_TCP_LISTEN, K_UDP};
use crate::netns::{in_netns, ns_ident, remove_redirect_in, set_lo_up};
use crate::store;
use crate::zone::{self, Zone};
use firewall::dns_redirect::{self, Redirect, DNS_ADDR};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{setsockopt, sockopt};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// One container namespace we serve.
pub struct Listener {
    /// Scope id in the zone (never reused, unlike the slot index).
    pub id: u64,
    pub netns: String,
    pub ns_ident: (u64, u64),
    pub udp: Rc<UdpSocket>,
    pub tcp: TcpListener,
    /// Open TCP connections from this container (the per-client limit counts them).
    pub tcp_conns: usize,
}

pub struct Listeners {
    pub slots: Vec<Option<Listener>>,
    /// Slot by namespace identity (st_dev, st_ino): two paths naming one namespace share a
    /// listener, and a path reused for a new namespace gets a new one.
    by_ns: HashMap<(u64, u64), usize>,
    next_id: u64,
    /// True until the first reload: only then can a namespace already hold our redirect
    /// (from a daemon that died), whose ports are worth taking back.
    first_load: bool,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners { slots: Vec::new(), by_ns: HashMap::new(), next_id: 1, first_load: true }
    }
}

impl Listeners {
    pub fn get(&self, idx: usize) -> Option<&Listener> {
        self.slots.get(idx).and_then(Option::as_ref)
    }
    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Listener> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }
    pub fn served(&self) -> usize {
        self.by_ns.len()
    }
}

/// Opens the UDP and TCP sockets at 127.0.0.11 inside the namespace and points
/// 127.0.0.11:53 at them.
fn open_sockets(
    ns: &Path,
    ident: (u64, u64),
    reuse_ports: bool,
) -> io::Result<(UdpSocket, TcpListener)> {
    let (udp, tcp) = in_netns(ns, || {
        // The namespace we entered must be the one we identified (the path may be reused).
        if ns_ident(Path::new("/proc/thread-self/ns/net"))? != ident {
            return Err(io::Error::other("namespace changed while opening it"));
        }
        // The ports a previous daemon used here, when its redirect is still in place.
        let previous = if reuse_ports { dns_redirect::installed() } else { None };
        let (old_udp, old_tcp) = previous.map(|r| (r.udp_port, r.tcp_port)).unwrap_or((0, 0));
        let bind_udp = |port: u16| {
            UdpSocket::bind((DNS_ADDR, port)).or_else(|_| UdpSocket::bind((DNS_ADDR, 0)))
        };
        let udp = match bind_udp(old_udp) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => {
                set_lo_up()?;
                bind_udp(old_udp)?
            }
            r => r?,
        };
        let tcp =
            TcpListener::bind((DNS_ADDR, old_tcp)).or_else(|_| TcpListener::bind((DNS_ADDR, 0)))?;
        let now =
            Redirect { udp_port: udp.local_addr()?.port(), tcp_port: tcp.local_addr()?.port() };
        dns_redirect::install(now).map_err(io::Error::other)?;
        Ok((udp, tcp))
    })?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let _ = setsockopt(&udp, sockopt::RcvBuf, &(1 << 20));
    Ok((udp, tcp))
}

impl Daemon {
    /// Re-reads the records, opens and closes per-container listeners, and publishes a new
    /// zone. Returns the namespaces that could not be served, with the reason.
    pub(super) fn reload(&mut self) -> Vec<(String, String)> {
        let records = store::read_all(&cni::store::Store::new(self.dir.clone()), |p, e| {
            log!("skipping unreadable record {}: {e}", p.display())
        });
        let mut fails = Vec::new();
        let mut idents: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut wanted: BTreeMap<(u64, u64), &str> = BTreeMap::new();
        for r in &records {
            if r.netns.is_empty() || idents.contains_key(r.netns.as_str()) {
                continue;
            }
            match ns_ident(Path::new(&r.netns)) {
                Ok(id) => {
                    idents.insert(&r.netns, id);
                    wanted.entry(id).or_insert(&r.netns);
                }
                Err(e) => fails.push((r.netns.clone(), format!("namespace is gone: {e}"))),
            }
        }
        let existing: Vec<((u64, u64), usize)> =
            self.listeners.by_ns.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, idx) in existing {
            if !wanted.contains_key(&id) {
                self.close_listener(idx, "no record left, or the namespace is gone");
            }
        }
        let first_load = self.listeners.first_load;
        for (id, ns) in wanted {
            if self.listeners.by_ns.contains_key(&id) {
                continue;
            }
            match open_sockets(Path::new(ns), id, first_load) {
                Ok((udp, tcp)) => {
                    if let Err(e) = self.add_listener(ns, udp, tcp, id) {
                        fails.push((ns.to_string(), e.to_string()));
                    }
                }
                Err(e) => fails.push((ns.to_string(), e.to_string())),
            }
        }
        // Every path of a failed namespace fails (the plugin looks for its own path).
        let failed: Vec<(u64, u64)> =
            fails.iter().filter_map(|(ns, _)| idents.get(ns.as_str()).copied()).collect();
        for (path, id) in &idents {
            if failed.contains(id) && !fails.iter().any(|(ns, _)| ns == path) {
                fails.push((path.to_string(), "namespace could not be served".into()));
            }
        }
        let host = zone::host_upstreams();
        let by_ns = &self.listeners.by_ns;
        let slots = &self.listeners.slots;
        let zone = Zone::build(
            &records,
            |ns| {
                idents
                    .get(ns)
                    .and_then(|id| by_ns.get(id))
                    .and_then(|&i| slots[i].as_ref())
                    .map(|l| l.id)
            },
            &host,
        );
        self.records = records.len();
        self.listeners.first_load = false;
        self.zone = Arc::new(zone);
        log!("reloaded: {} records, {} namespaces served", self.records, self.listeners.served());
        fails
    }

    fn add_listener(
        &mut self,
        ns: &str,
        udp: UdpSocket,
        tcp: TcpListener,
        ns_ident: (u64, u64),
    ) -> io::Result<()> {
        let slots = &mut self.listeners.slots;
        let idx = match slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                slots.push(None);
                slots.len() - 1
            }
        };
        self.epoll.add(&udp, EpollEvent::new(EpollFlags::EPOLLIN, token(K_UDP, idx)))?;
        if let Err(e) =
            self.epoll.add(&tcp, EpollEvent::new(EpollFlags::EPOLLIN, token(K_TCP_LISTEN, idx)))
        {
            let _ = self.epoll.delete(&udp);
            return Err(e.into());
        }
        let id = self.listeners.next_id;
        self.listeners.next_id += 1;
        log!(
            "serving {ns} at 127.0.0.11:53 (udp -> {}, tcp -> {})",
            udp.local_addr().map(|a| a.port()).unwrap_or(0),
            tcp.local_addr().map(|a| a.port()).unwrap_or(0)
        );
        self.listeners.slots[idx] = Some(Listener {
            id,
            netns: ns.to_string(),
            ns_ident,
            udp: Rc::new(udp),
            tcp,
            tcp_conns: 0,
        });
        self.listeners.by_ns.insert(ns_ident, idx);
        Ok(())
    }

    /// Closes a listener's sockets and its TCP connections, and removes our redirect from
    /// its namespace when that namespace still exists (one that is gone took it along).
    pub(super) fn close_listener(&mut self, idx: usize, why: &str) {
        let Some(l) = self.listeners.slots.get_mut(idx).and_then(Option::take) else { return };
        self.listeners.by_ns.remove(&l.ns_ident);
        let _ = self.epoll.delete(&*l.udp);
        let _ = self.epoll.delete(&l.tcp);
        self.close_conns_of(idx);
        if let Err(e) = remove_redirect_in(Path::new(&l.netns), Some(l.ns_ident)) {
            log!("removing the DNS redirect in {}: {e}", l.netns);
        }
        log!("stopped serving {} ({why})", l.netns);
    }

    pub(super) fn close_all_listeners(&mut self, why: &str) {
        for idx in 0..self.listeners.slots.len() {
            self.close_listener(idx, why);
        }
    }
}
