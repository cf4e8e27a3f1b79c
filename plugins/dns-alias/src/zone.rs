//! What the daemon knows, rebuilt from the records on every reload, and the answer to one
//! query from one asker.
//!
//! The asker is identified by the listener (the per-container socket) the query came in on;
//! its scope is the set of networks that container is attached to. Names are visible only
//! within a shared network; a name known on some other network is NXDOMAIN (never
//! forwarded); anything else goes to the scope's upstream servers.

use crate::config::parse_upstream;
use crate::store::Record;
use crate::wire::{self, Query, Rdata};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// FNV-1a: names are short and come from our own records, so a fast hash is enough.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf29ce484222325 } else { self.0 };
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
}

type FnvBuild = BuildHasherDefault<Fnv>;
type Map<K, V> = HashMap<K, V, FnvBuild>;
type Set<K> = HashSet<K, FnvBuild>;

/// xorshift64*: shuffles answers and picks forwarded query IDs.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the kernel's random pool (forwarded query IDs must not be guessable);
    /// the clock and pid only when that cannot be read.
    pub fn new() -> Rng {
        use std::io::Read;
        let mut seed = [0u8; 8];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        let seed = match read {
            Ok(()) => u64::from_ne_bytes(seed),
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
            }
        };
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545f4914f6cdd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// One network's names.
#[derive(Debug, Default)]
pub struct NetZone {
    pub name: String,
    pub domains: Vec<String>,
    pub names: Map<Box<str>, Vec<IpAddr>>,
    /// address -> the name a PTR query gets (primary name, with the domain when set).
    pub ptr: Map<IpAddr, Box<str>>,
    pub upstreams: Vec<SocketAddr>,
    pub ttl: u32,
    /// Docker `--internal`: its containers' queries for other names are not forwarded.
    pub internal: bool,
}

impl NetZone {
    fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        if let Some(v) = self.names.get(name) {
            return Some(v);
        }
        for d in &self.domains {
            if let Some(short) = name.strip_suffix(d.as_str()).and_then(|s| s.strip_suffix('.')) {
                if let Some(v) = self.names.get(short) {
                    return Some(v);
                }
            }
        }
        None
    }
}

/// The networks one listener's container is on.
#[derive(Debug, Clone)]
pub struct Scope {
    pub nets: Vec<usize>,
    pub upstreams: Arc<[SocketAddr]>,
}

#[derive(Debug, Default)]
pub struct Zone {
    pub nets: Vec<NetZone>,
    known: Set<Box<str>>,
    known_ips: Set<IpAddr>,
    pub scopes: Map<u64, Scope>,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the reply.
    Reply,
    /// Not ours: ask these servers (never empty).
    Forward(Arc<[SocketAddr]>),
}

/// Per-thread state for answering: reused buffers (no allocation per query) and the RNG
/// that shuffles answers.
#[derive(Default)]
pub struct Scratch {
    ips: Vec<IpAddr>,
    rdata: Vec<Rdata<'static>>,
    pub rng: Rng,
}

impl Zone {
    /// Builds the zone. `listener_of` maps a record's netns path to the id of the listener
    /// serving it (records whose listener could not be opened get no scope).
    pub fn build(
        records: &[Record],
        listener_of: impl Fn(&str) -> Option<u64>,
        host_upstreams: &[SocketAddr],
    ) -> Zone {
        let mut zone = Zone::default();
        let mut net_index: Map<String, usize> = Map::default();
        let mut scope_nets: Map<u64, Vec<usize>> = Map::default();
        for r in records {
            let ni = *net_index.entry(r.network.clone()).or_insert_with(|| {
                zone.nets.push(NetZone {
                    name: r.network.clone(),
                    ttl: r.ttl,
                    ..Default::default()
                });
                zone.nets.len() - 1
            });
            let net = &mut zone.nets[ni];
            net.ttl = net.ttl.min(r.ttl);
            net.internal |= r.internal;
            if let Some(d) = &r.domain {
                if !net.domains.contains(d) {
                    net.domains.push(d.clone());
                }
            }
            for u in &r.upstreams {
                if let Some(sa) = parse_upstream(u) {
                    if !net.upstreams.contains(&sa) {
                        net.upstreams.push(sa);
                    }
                }
            }
            for n in &r.names {
                let v = net.names.entry(n.as_str().into()).or_default();
                for ip in &r.ips {
                    if !v.contains(ip) {
                        v.push(*ip);
                    }
                }
            }
            if let Some(primary) = r.names.first() {
                let fq: Box<str> = match &r.domain {
                    Some(d) => format!("{primary}.{d}").into(),
                    None => primary.as_str().into(),
                };
                for ip in &r.ips {
                    net.ptr.entry(*ip).or_insert_with(|| fq.clone());
                }
            }
            if let Some(id) = listener_of(&r.netns) {
                let s = scope_nets.entry(id).or_default();
                if !s.contains(&ni) {
                    s.push(ni);
                }
            }
        }
        for net in &zone.nets {
            for n in net.names.keys() {
                zone.known.insert(n.clone());
                for d in &net.domains {
                    zone.known.insert(format!("{n}.{d}").into());
                }
            }
            zone.known_ips.extend(net.ptr.keys().copied());
        }
        for (id, nets) in scope_nets {
            // Like Docker: a container forwards when one of its networks has access to the
            // outside; a container only on internal networks never does.
            let mut ups: Vec<SocketAddr> = Vec::new();
            let outside = nets.iter().any(|&ni| !zone.nets[ni].internal);
            for &ni in nets.iter().filter(|&&ni| !zone.nets[ni].internal) {
                for u in &zone.nets[ni].upstreams {
                    if !ups.contains(u) {
                        ups.push(*u);
                    }
                }
            }
            if ups.is_empty() && outside {
                ups = host_upstreams.to_vec();
            }
            zone.scopes.insert(id, Scope { nets, upstreams: ups.into() });
        }
        zone
    }

    pub fn record_count(&self) -> usize {
        self.nets.iter().map(|n| n.names.len()).sum()
    }

    /// Answers `q` (parsed from `msg`) for the asker behind listener `scope_id`.
    pub fn answer(
        &self,
        scope_id: u64,
        msg: &[u8],
        q: &Query,
        limit: usize,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> Outcome {
        let edns = q.edns.is_some();
        let reply = |out: &mut Vec<u8>, rcode: u8, aa: bool, ttl: u32, ans: &[Rdata]| {
            wire::build_reply(out, msg, Some(q.question_end), edns, rcode, aa, ttl, ans, limit);
            Outcome::Reply
        };
        let Some(scope) = self.scopes.get(&scope_id) else {
            return reply(out, wire::REFUSED, false, 0, &[]);
        };
        let ours = q.qclass == wire::C_IN || q.qclass == wire::C_ANY;
        let name = match q.name.as_str() {
            Some(n) if ours => n,
            _ => return self.forward(scope, out, msg, q, limit),
        };
        scratch.ips.clear();
        let mut found = false;
        let mut ttl = u32::MAX;
        for &ni in &scope.nets {
            let net = &self.nets[ni];
            if let Some(ips) = net.lookup(name) {
                found = true;
                ttl = ttl.min(net.ttl);
                scratch.ips.extend_from_slice(ips);
            }
        }
        if found {
            scratch.rng.shuffle(&mut scratch.ips);
            wire::addr_rdata(&scratch.ips, q.qtype, &mut scratch.rdata);
            return reply(out, wire::NOERROR, true, ttl, &scratch.rdata);
        }
        if q.qtype == wire::T_PTR || q.qtype == wire::T_ANY {
            if let Some(ip) = wire::parse_reverse(name) {
                let mut names: Vec<Rdata> = Vec::new();
                let mut ttl = u32::MAX;
                for &ni in &scope.nets {
                    let net = &self.nets[ni];
                    if let Some(n) = net.ptr.get(&ip) {
                        ttl = ttl.min(net.ttl);
                        if !names.contains(&Rdata::Ptr(n)) {
                            names.push(Rdata::Ptr(n));
                        }
                    }
                }
                if !names.is_empty() {
                    return reply(out, wire::NOERROR, true, ttl, &names);
                }
                if self.known_ips.contains(&ip) {
                    return reply(out, wire::NXDOMAIN, true, 0, &[]);
                }
            }
        }
        if self.known.contains(name) {
            return reply(out, wire::NXDOMAIN, true, 0, &[]);
        }
        self.forward(scope, out, msg, q, limit)
    }

    fn forward(
        &self,
        scope: &Scope,
        out: &mut Vec<u8>,
        msg: &[u8],
        q: &Query,
        limit: usize,
    ) -> Outcome {
        if scope.upstreams.is_empty() {
            wire::build_reply(
                out,
                msg,
                Some(q.question_end),
                q.edns.is_some(),
                wire::SERVFAIL,
                false,
                0,
                &[],
                limit,
            );
            return Outcome::Reply;
        }
        Outcome::Forward(scope.upstreams.clone())
    }
}

/// Nameservers from resolv.conf text, loopback ones last (they are only usable from the
/// daemon's own namespace; the issue asks to skip them when others exist).
pub fn resolv_conf_servers(text: &str) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mut good = Vec::new();
    let mut loopback = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() != Some("nameserver") {
            continue;
        }
        let Some(ip) =
            it.next().and_then(|s| s.split('%').next()).and_then(|s| s.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let sa = SocketAddr::new(ip, 53);
        if ip.is_loopback() || ip.is_unspecified() {
            loopback.push(sa);
        } else {
            good.push(sa);
        }
    }
    (good, loopback)
}

/// The host's upstream servers: /etc/resolv.conf without 127.x; when that leaves nothing
/// (systemd-resolved's stub), the real list in /run/systemd/resolve/resolv.conf; as a last
/// resort the loopback servers (the daemon runs in the host namespace, where they work).
pub fn host_upstreams() -> Vec<SocketAddr> {
    let etc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (good, loopback) = resolv_conf_servers(&etc);
    if !good.is_empty() {
        return good;
    }
    let sd = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
    let (sd_good, _) = resolv_conf_servers(&sd);
    if !sd_good.is_empty() {
        return sd_good;
    }
    loopback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{build_query, parse_query, T_A, T_AAAA};
    const T_MX_FOR_TEST: u16 = 15;

    fn rec(net: &str, cid: &str, ns: &str, names: &[&str], ips: &[&str]) -> Record {
        Record {
            network: net.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: ns.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            domain: None,
            upstreams: vec![],
            ttl: 0,
            internal: false,
        }
    }

    fn listener(ns: &str) -> Option<u64> {
        ns.strip_prefix("/ns/").and_then(|n| n.parse().ok())
    }

    fn ask(z: &Zone, scope: u64, name: &str, t: u16) -> (Outcome, u8, Vec<(u16, Vec<u8>)>) {
        let mut m = Vec::new();
        build_query(&mut m, 7, name, t);
        let q = parse_query(&m).unwrap();
        let mut out = Vec::new();
        let o = z.answer(scope, &m, &q, 512, &mut out, &mut Scratch::default());
        if o == Outcome::Reply {
            (o, wire::rcode(&out), wire::answers(&out).unwrap())
        } else {
            (o, 255, vec![])
        }
    }

    fn world() -> Zone {
        let mut a = rec("n1", "a", "/ns/1", &["a", "web"], &["10.1.0.2", "fd00::2"]);
        a.domain = Some("dns.test".into());
        let mut b = rec("n1", "b", "/ns/2", &["b", "web"], &["10.1.0.3"]);
        b.domain = Some("dns.test".into());
        let c = rec("n2", "c", "/ns/3", &["c"], &["10.2.0.2"]);
        let mut c2 = rec("n2", "c", "/ns/3", &["c"], &["10.2.0.2"]);
        c2.upstreams = vec!["10.9.9.9".into()];
        Zone::build(&[a, b, c, c2], listener, &["192.0.2.53:53".parse().unwrap()])
    }

    #[test]
    fn names_and_aliases_within_a_network() {
        let z = world();
        let (o, rc, ans) = ask(&z, 1, "B", T_A);
        assert_eq!((o, rc), (Outcome::Reply, wire::NOERROR));
        assert_eq!(ans, vec![(T_A, vec![10, 1, 0, 3])]);
        let (_, rc, ans) = ask(&z, 2, "a.dns.test", T_AAAA);
        assert_eq!(rc, wire::NOERROR);
        assert_eq!(ans.len(), 1);
        let (_, _, ans) = ask(&z, 2, "web", T_A);
        assert_eq!(ans.len(), 2);
        // known name, no address of that family, or another type: NODATA
        let (_, rc, ans) = ask(&z, 1, "b", T_AAAA);
        assert_eq!((rc, ans.len()), (wire::NOERROR, 0));
        let (_, rc, ans) = ask(&z, 1, "b", T_MX_FOR_TEST);
        assert_eq!((rc, ans.len()), (wire::NOERROR, 0));
    }

    #[test]
    fn other_networks_are_nxdomain_and_the_rest_forwarded() {
        let z = world();
        let (_, rc, _) = ask(&z, 3, "a", T_A);
        assert_eq!(rc, wire::NXDOMAIN);
        let (_, rc, _) = ask(&z, 3, "web.dns.test", T_A);
        assert_eq!(rc, wire::NXDOMAIN);
        let (_, rc, _) = ask(&z, 1, "c", T_A);
        assert_eq!(rc, wire::NXDOMAIN);
        match ask(&z, 3, "example.com", T_A).0 {
            Outcome::Forward(u) => assert_eq!(&u[..], &["10.9.9.9:53".parse().unwrap()]),
            o => panic!("{o:?}"),
        }
        match ask(&z, 1, "example.com", T_A).0 {
            Outcome::Forward(u) => assert_eq!(&u[..], &["192.0.2.53:53".parse().unwrap()]),
            o => panic!("{o:?}"),
        }
        // an unknown listener is refused
        assert_eq!(ask(&z, 99, "a", T_A).1, wire::REFUSED);
    }

    #[test]
    fn ptr() {
        let z = world();
        let (_, rc, ans) = ask(&z, 2, "2.0.1.10.in-addr.arpa", wire::T_PTR);
        assert_eq!(rc, wire::NOERROR);
        assert_eq!(ans[0].1, b"\x01a\x03dns\x04test\x00".to_vec());
        assert_eq!(ask(&z, 3, "2.0.1.10.in-addr.arpa", wire::T_PTR).1, wire::NXDOMAIN);
        assert!(matches!(ask(&z, 3, "9.9.9.9.in-addr.arpa", wire::T_PTR).0, Outcome::Forward(_)));
    }

    #[test]
    fn round_robin_changes_order() {
        let recs: Vec<Record> = (2..5)
            .map(|i| {
                rec(
                    "n",
                    &format!("c{i}"),
                    &format!("/ns/{i}"),
                    &["tg-net"],
                    &[&format!("10.0.0.{i}")],
                )
            })
            .collect();
        let z = Zone::build(&recs, listener, &[]);
        let mut firsts = HashSet::new();
        let mut scratch = Scratch::default();
        for _ in 0..50 {
            let mut m = Vec::new();
            build_query(&mut m, 1, "tg-net", T_A);
            let q = parse_query(&m).unwrap();
            let mut out = Vec::new();
            z.answer(2, &m, &q, 512, &mut out, &mut scratch);
            let ans = wire::answers(&out).unwrap();
            assert_eq!(ans.len(), 3);
            firsts.insert(ans[0].1.clone());
        }
        assert_eq!(firsts.len(), 3, "every address comes first sometimes");
        // nothing to forward to
        assert_eq!(ask(&z, 2, "example.com", T_A).1, wire::SERVFAIL);
    }

    #[test]
    fn internal_networks_do_not_forward() {
        let mut a = rec("int", "a", "/ns/1", &["a"], &["10.5.0.2"]);
        a.internal = true;
        let mut b = rec("int", "b", "/ns/2", &["b"], &["10.5.0.3"]);
        b.internal = true;
        let mut b2 = rec("ext", "b", "/ns/2", &["b"], &["10.6.0.3"]);
        b2.upstreams = vec!["10.9.9.9".into()];
        let z = Zone::build(&[a, b, b2], listener, &["192.0.2.53:53".parse().unwrap()]);
        // a is only on the internal network: local names answer, the rest is SERVFAIL
        let (_, rc, ans) = ask(&z, 1, "b", T_A);
        assert_eq!((rc, ans.len()), (wire::NOERROR, 1));
        assert_eq!(ask(&z, 1, "example.com", T_A).1, wire::SERVFAIL);
        assert_eq!(ask(&z, 1, "9.9.9.9.in-addr.arpa", wire::T_PTR).1, wire::SERVFAIL);
        // b is on an outside network too: it forwards, to that network's servers only
        match ask(&z, 2, "example.com", T_A).0 {
            Outcome::Forward(u) => assert_eq!(&u[..], &["10.9.9.9:53".parse().unwrap()]),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn resolv_conf() {
        let (g, l) = resolv_conf_servers("# x\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\noptions edns0\n");
        assert_eq!(g, vec!["10.0.0.1:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
        assert_eq!(l, vec!["127.0.0.53:53".parse().unwrap()]);
    }
}
