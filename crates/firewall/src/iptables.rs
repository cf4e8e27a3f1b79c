//! iptables backend: the compatibility path.
//!
//! Each call reads the current state once per family (`iptables-save` /
//! `ip6tables-save`) and applies one `iptables-restore --noflush -w` batch per family that
//! has work. Chains (all names <= 28 characters):
//!
//! filter: `CNI-SUITE-FORWARD` (jumped from `FORWARD`) holds, per network `<h>` (12 hex
//! digits of the network name's hash), `-i <bridge> -j CNI-SUITE-NF-<h>` and
//! `-o <bridge> -j CNI-SUITE-NT-<h>`; `CNI-SUITE-ISO-OUT` / `CNI-SUITE-ISO-IN` drop
//! traffic to / from every managed bridge (Docker's two-stage isolation).
//! nat: `CNI-SUITE-POSTROUTING` (from `POSTROUTING`): `-s <subnet> -j CNI-SUITE-NM-<h>`,
//! which returns for the subnets and multicast and masquerades the rest.
//! Ports (nat): `CNI-SUITE-HOSTPORTS` (from `PREROUTING` and `OUTPUT`, local destinations)
//! jumps per owner `<o>` (hash of container id + ifname) to `CNI-SUITE-DN-<o>` (DNAT
//! rules); `CNI-SUITE-PM-POST` (from `POSTROUTING`) masquerades DNATed connections from
//! 127.0.0.0/8 and jumps per container address to `CNI-SUITE-SN-<o>` (hairpin /
//! masqAll masquerade).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    owner_key, owner_key_of, run_tool, stable_hash, ContainerPorts, Error, Firewall, NetworkRules,
    PortMapping,
};

pub const FORWARD: &str = "CNI-SUITE-FORWARD";
pub const ISO_OUT: &str = "CNI-SUITE-ISO-OUT";
pub const ISO_IN: &str = "CNI-SUITE-ISO-IN";
pub const POSTROUTING: &str = "CNI-SUITE-POSTROUTING";
pub const HOSTPORTS: &str = "CNI-SUITE-HOSTPORTS";
pub const PM_POST: &str = "CNI-SUITE-PM-POST";
/// filter INPUT: drops traffic to 127.0.0.0/8 from anything but `lo` that was not DNATed
/// to a published port (portmap sets route_localnet on bridges).
pub const PM_INPUT: &str = "CNI-SUITE-PM-INPUT";

/// IP family of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    fn of_net(n: &IpNet) -> Family {
        Family::of(n.addr())
    }
}

/// The iptables backend.
#[derive(Clone, Debug)]
pub struct Iptables {
    v4: (String, String),
    v6: (String, String),
}

impl Default for Iptables {
    fn default() -> Self {
        Self::new()
    }
}

/// Parsed `iptables-save` output: per table, its chains and its rule lines (`-A ...`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Saved {
    pub tables: BTreeMap<String, SavedTable>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct SavedTable {
    /// Chain name -> policy ("-" for user chains).
    pub chains: BTreeMap<String, String>,
    pub rules: Vec<String>,
}

impl Saved {
    pub(crate) fn parse(text: &str) -> Saved {
        let mut s = Saved::default();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(t) = line.strip_prefix('*') {
                cur = Some(t.to_string());
                s.tables.entry(t.to_string()).or_default();
            } else if let (Some(c), Some(t)) = (line.strip_prefix(':'), cur.as_ref()) {
                let mut it = c.split_whitespace();
                let name = it.next().unwrap_or_default().to_string();
                let policy = it.next().unwrap_or("-").to_string();
                s.tables.get_mut(t).expect("table entered").chains.insert(name, policy);
            } else if let (true, Some(t)) = (line.starts_with("-A "), cur.as_ref()) {
                s.tables.get_mut(t).expect("table entered").rules.push(line.to_string());
            } else if line == "COMMIT" {
                cur = None;
            }
        }
        s
    }

    fn table(&self, t: &str) -> Option<&SavedTable> {
        self.tables.get(t)
    }

    fn has_chain(&self, t: &str, chain: &str) -> bool {
        self.table(t).is_some_and(|x| x.chains.contains_key(chain))
    }

    /// Rule lines of one chain.
    fn rules(&self, t: &str, chain: &str) -> Vec<&str> {
        let prefix = format!("-A {chain} ");
        self.table(t)
            .map(|x| {
                x.rules.iter().filter(|r| r.starts_with(&prefix)).map(String::as_str).collect()
            })
            .unwrap_or_default()
    }

    fn chains_with_prefix(&self, t: &str, prefix: &str) -> Vec<String> {
        self.table(t)
            .map(|x| x.chains.keys().filter(|c| c.starts_with(prefix)).cloned().collect())
            .unwrap_or_default()
    }
}

/// Value following `flag` in a rule line.
fn arg_of<'a>(rule: &'a str, flag: &str) -> Option<&'a str> {
    let mut it = rule.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == flag {
            return it.next();
        }
    }
    None
}

fn jump_target(rule: &str) -> Option<&str> {
    arg_of(rule, "-j")
}

/// The `-D` line removing a saved `-A` rule.
fn delete_line(rule: &str) -> String {
    format!("-D{}", &rule[2..])
}

fn h12(s: &str) -> String {
    format!("{:012x}", stable_hash(s) >> 16)
}

/// Per-network chain names.
pub(crate) struct NetChains {
    pub tag: String,
    pub from: String,
    pub to: String,
    pub masq: String,
}

pub(crate) fn net_chains(network: &str) -> NetChains {
    let h = h12(&format!("net:{network}"));
    NetChains {
        tag: format!("cni-suite net={h}"),
        from: format!("CNI-SUITE-NF-{h}"),
        to: format!("CNI-SUITE-NT-{h}"),
        masq: format!("CNI-SUITE-NM-{h}"),
    }
}

/// Per-owner chain names.
pub(crate) struct OwnerChains {
    pub tag: String,
    pub dnat: String,
    pub snat: String,
}

pub(crate) fn owner_chains(owner: &str) -> OwnerChains {
    let h = h12(&format!("owner:{owner}"));
    OwnerChains {
        tag: format!("cni-suite owner={owner}"),
        dnat: format!("CNI-SUITE-DN-{h}"),
        snat: format!("CNI-SUITE-SN-{h}"),
    }
}

fn comment(tag: &str) -> String {
    format!("-m comment --comment \"{tag}\"")
}

fn has_tag(rule: &str, tag: &str) -> bool {
    rule.contains(&format!("\"{tag}\"")) || rule.contains(&format!(" {tag} "))
}

/// A batch being built for one family: lines per table, emitted in order.
#[derive(Default)]
struct Batch {
    tables: BTreeMap<&'static str, Vec<String>>,
}

impl Batch {
    fn push(&mut self, table: &'static str, line: String) {
        self.tables.entry(table).or_default().push(line);
    }
    fn is_empty(&self) -> bool {
        self.tables.values().all(|v| v.is_empty())
    }
    fn render(&self) -> String {
        let mut s = String::new();
        for (t, lines) in &self.tables {
            if lines.is_empty() {
                continue;
            }
            s += &format!("*{t}\n");
            // Chain declarations first (each flushes its chain), then everything else in
            // order, minus deletions of rules in a flushed chain.
            let mut declared: Vec<&str> = Vec::new();
            for l in lines.iter().filter(|l| l.starts_with(':')) {
                let name = l[1..].split_whitespace().next().unwrap_or_default();
                if !declared.contains(&name) {
                    declared.push(name);
                    s += l;
                    s.push('\n');
                }
            }
            for l in lines.iter().filter(|l| !l.starts_with(':')) {
                if let Some(rest) = l.strip_prefix("-D ") {
                    let chain = rest.split_whitespace().next().unwrap_or_default();
                    if declared.contains(&chain) {
                        continue;
                    }
                }
                s += l;
                s.push('\n');
            }
            s += "COMMIT\n";
        }
        s
    }
}

fn fam_nets(nets: &[IpNet], f: Family) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in nets.iter().filter(|n| Family::of_net(n) == f) {
        let t = n.trunc();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn host_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Batch of `apply_network` (when `net` is `Some`) or `remove_network` for one family.
pub(crate) fn network_batch(
    f: Family,
    network: &str,
    net: Option<&NetworkRules>,
    cur: &Saved,
) -> String {
    let nc = net_chains(network);
    let mut b = Batch::default();
    // filter: rebuild CNI-SUITE-FORWARD and the isolation chains from the other networks'
    // rules plus ours.
    let others: Vec<&str> =
        cur.rules("filter", FORWARD).into_iter().filter(|r| !has_tag(r, &nc.tag)).collect();
    let mut bridges: Vec<String> = Vec::new();
    for r in &others {
        if let Some(i) = arg_of(r, "-i") {
            if !bridges.iter().any(|x| x == i) {
                bridges.push(i.to_string());
            }
        }
    }
    let anything_left = !others.is_empty() || net.is_some();
    let mut rebuilt: Vec<String> = others.iter().map(|r| r.to_string()).collect();
    if let Some(n) = net {
        let br = &n.bridge;
        if !bridges.contains(br) {
            bridges.push(br.clone());
        }
        b.push("filter", format!(":{} - [0:0]", nc.from));
        b.push("filter", format!(":{} - [0:0]", nc.to));
        if n.internal {
            b.push("filter", format!("-A {} ! -o {br} -j DROP", nc.from));
            b.push("filter", format!("-A {} ! -i {br} -j DROP", nc.to));
        } else if n.isolate {
            b.push("filter", format!("-A {} ! -o {br} -j {ISO_OUT}", nc.from));
            b.push("filter", format!("-A {} ! -i {br} -j {ISO_IN}", nc.to));
        }
        let c = comment(&nc.tag);
        rebuilt.push(format!("-A {FORWARD} -i {br} {c} -j {}", nc.from));
        rebuilt.push(format!("-A {FORWARD} -o {br} {c} -j {}", nc.to));
    }
    if anything_left {
        b.push("filter", format!(":{FORWARD} - [0:0]"));
        b.push("filter", format!(":{ISO_OUT} - [0:0]"));
        b.push("filter", format!(":{ISO_IN} - [0:0]"));
        for r in rebuilt {
            b.push("filter", r);
        }
        for br in &bridges {
            b.push("filter", format!("-A {ISO_OUT} -o {br} -j DROP"));
            b.push("filter", format!("-A {ISO_IN} -i {br} -j DROP"));
        }
        if !cur.rules("filter", "FORWARD").iter().any(|r| jump_target(r) == Some(FORWARD)) {
            b.push("filter", format!("-I FORWARD 1 -j {FORWARD}"));
        }
    } else {
        for r in cur.rules("filter", "FORWARD").iter().filter(|r| jump_target(r) == Some(FORWARD)) {
            b.push("filter", delete_line(r));
        }
        for c in [FORWARD, ISO_OUT, ISO_IN] {
            if cur.has_chain("filter", c) {
                b.push("filter", format!(":{c} - [0:0]"));
                b.push("filter", format!("-X {c}"));
            }
        }
    }
    if net.is_none() {
        for c in [&nc.from, &nc.to] {
            if cur.has_chain("filter", c) {
                b.push("filter", format!(":{c} - [0:0]"));
                b.push("filter", format!("-X {c}"));
            }
        }
    }

    // nat: masquerade.
    let others: Vec<&str> =
        cur.rules("nat", POSTROUTING).into_iter().filter(|r| !has_tag(r, &nc.tag)).collect();
    let mut rebuilt: Vec<String> = others.iter().map(|r| r.to_string()).collect();
    let subnets = net.map(|n| fam_nets(&n.subnets, f)).unwrap_or_default();
    let masq = net.is_some_and(|n| n.masquerades()) && !subnets.is_empty();
    if masq {
        b.push("nat", format!(":{} - [0:0]", nc.masq));
        for s in &subnets {
            b.push("nat", format!("-A {} -d {s} -j RETURN", nc.masq));
        }
        let mcast = if f == Family::V4 { "224.0.0.0/4" } else { "ff00::/8" };
        b.push("nat", format!("-A {} -d {mcast} -j RETURN", nc.masq));
        b.push("nat", format!("-A {} -j MASQUERADE", nc.masq));
        for s in &subnets {
            rebuilt.push(format!("-A {POSTROUTING} -s {s} {} -j {}", comment(&nc.tag), nc.masq));
        }
    }
    let had_ours =
        cur.rules("nat", POSTROUTING).len() != others.len() || cur.has_chain("nat", &nc.masq);
    if !rebuilt.is_empty() {
        if had_ours || masq {
            b.push("nat", format!(":{POSTROUTING} - [0:0]"));
            for r in rebuilt {
                b.push("nat", r);
            }
        }
        if !cur.rules("nat", "POSTROUTING").iter().any(|r| jump_target(r) == Some(POSTROUTING)) {
            b.push("nat", format!("-A POSTROUTING -j {POSTROUTING}"));
        }
    } else {
        for r in
            cur.rules("nat", "POSTROUTING").iter().filter(|r| jump_target(r) == Some(POSTROUTING))
        {
            b.push("nat", delete_line(r));
        }
        if cur.has_chain("nat", POSTROUTING) {
            b.push("nat", format!(":{POSTROUTING} - [0:0]"));
            b.push("nat", format!("-X {POSTROUTING}"));
        }
    }
    if !masq && cur.has_chain("nat", &nc.masq) {
        b.push("nat", format!(":{} - [0:0]", nc.masq));
        b.push("nat", format!("-X {}", nc.masq));
    }
    if b.is_empty() {
        String::new()
    } else {
        b.render()
    }
}

/// Expected (chain, rule count) of a network in one family; jumps checked separately.
fn network_expectations(f: Family, net: &NetworkRules) -> Vec<(String, usize)> {
    let nc = net_chains(&net.network);
    let n = if net.internal || net.isolate { 1 } else { 0 };
    let mut out = vec![(nc.from.clone(), n), (nc.to.clone(), n)];
    let subnets = fam_nets(&net.subnets, f);
    if net.masquerades() && !subnets.is_empty() {
        out.push((nc.masq, subnets.len() + 2));
    }
    out
}

/// Comment tag of one mapping's DNAT rule (identifies it for exact removal).
fn mapping_tag(m: &PortMapping) -> String {
    let host = m.specific_host_ip().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
    format!("cni-suite hp={}/{host}/{}", m.protocol, m.host_port)
}

fn dnat_rule(chain: &str, m: &PortMapping) -> String {
    let dest = match m.container_ip {
        IpAddr::V4(a) => format!("{a}:{}", m.container_port),
        IpAddr::V6(a) => format!("[{a}]:{}", m.container_port),
    };
    let host = m.specific_host_ip().map(|h| format!("-d {} ", host_net(h))).unwrap_or_default();
    let p = m.protocol;
    format!(
        "-A {chain} {host}-p {p} -m {p} --dport {} {} -j DNAT --to-destination {dest}",
        m.host_port,
        comment(&mapping_tag(m))
    )
}

/// Batch of `add_ports` for one family. Who may publish a port is the caller's decision
/// (portmap's reservations): this programs what it is told.
pub(crate) fn add_ports_batch(f: Family, p: &ContainerPorts, cur: &Saved) -> Result<String, Error> {
    let owner = owner_key(&p.container_id, &p.ifname);
    let oc = owner_chains(&owner);
    let maps: Vec<&PortMapping> =
        p.mappings.iter().filter(|m| Family::of(m.container_ip) == f).collect();
    if maps.is_empty() {
        return Ok(String::new());
    }
    let ips: Vec<IpAddr> =
        p.container_ips().into_iter().filter(|ip| Family::of(*ip) == f).collect();
    let mut b = Batch::default();

    // Shared chains.
    if !cur.has_chain("nat", HOSTPORTS) {
        b.push("nat", format!(":{HOSTPORTS} - [0:0]"));
    }
    if !cur.has_chain("nat", PM_POST) {
        b.push("nat", format!(":{PM_POST} - [0:0]"));
        if f == Family::V4 {
            b.push(
                "nat",
                format!(
                    "-A {PM_POST} -s 127.0.0.0/8 ! -o lo -m conntrack --ctstate DNAT -j MASQUERADE"
                ),
            );
        }
    }
    for base in ["PREROUTING", "OUTPUT"] {
        if !cur.rules("nat", base).iter().any(|r| jump_target(r) == Some(HOSTPORTS)) {
            b.push("nat", format!("-A {base} -m addrtype --dst-type LOCAL -j {HOSTPORTS}"));
        }
    }
    if !cur.rules("nat", "POSTROUTING").iter().any(|r| jump_target(r) == Some(PM_POST)) {
        b.push("nat", format!("-A POSTROUTING -j {PM_POST}"));
    }
    if f == Family::V4 && !cur.has_chain("filter", PM_INPUT) {
        b.push("filter", format!(":{PM_INPUT} - [0:0]"));
        b.push(
            "filter",
            format!(
                "-A {PM_INPUT} ! -i lo -d 127.0.0.0/8 -m conntrack ! --ctstate DNAT -m comment --comment \"containers must not reach the host's loopback\" -j DROP"
            ),
        );
    }
    if f == Family::V4
        && !cur.rules("filter", "INPUT").iter().any(|r| jump_target(r) == Some(PM_INPUT))
    {
        b.push("filter", format!("-I INPUT 1 -j {PM_INPUT}"));
    }

    // The owner's chains, flushed and refilled; its jumps replaced.
    for r in cur.rules("nat", HOSTPORTS).iter().chain(cur.rules("nat", PM_POST).iter()) {
        if has_tag(r, &oc.tag) {
            b.push("nat", delete_line(r));
        }
    }
    b.push("nat", format!(":{} - [0:0]", oc.dnat));
    b.push("nat", format!(":{} - [0:0]", oc.snat));
    let c = comment(&oc.tag);
    let mut seen = Vec::new();
    for m in &maps {
        let r = dnat_rule(&oc.dnat, m);
        if !seen.contains(&r) {
            b.push("nat", r.clone());
            seen.push(r);
        }
    }
    let mut protos: Vec<_> = maps.iter().map(|m| m.protocol).collect();
    protos.sort();
    protos.dedup();
    for proto in protos {
        let mut ports: Vec<u16> =
            maps.iter().filter(|m| m.protocol == proto).map(|m| m.host_port).collect();
        ports.sort();
        ports.dedup();
        let filter = if ports.len() <= 15 {
            let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            format!("-p {proto} -m multiport --dports {} ", list.join(","))
        } else {
            format!("-p {proto} ")
        };
        b.push("nat", format!("-A {HOSTPORTS} {filter}{c} -j {}", oc.dnat));
    }
    let mut need_snat = false;
    for ip in &ips {
        if p.masquerade_hairpin {
            for n in p.hairpin_sources(*ip) {
                b.push("nat", format!("-A {} -s {n} -j MASQUERADE", oc.snat));
                need_snat = true;
            }
        }
        if p.masq_all {
            b.push("nat", format!("-A {} -j MASQUERADE", oc.snat));
            need_snat = true;
        }
    }
    if need_snat {
        for ip in &ips {
            b.push(
                "nat",
                format!(
                    "-A {PM_POST} -d {} -m conntrack --ctstate DNAT {c} -j {}",
                    host_net(*ip),
                    oc.snat
                ),
            );
        }
    }
    Ok(b.render())
}

/// Removes an owner's jumps and chains.
fn purge_owner(b: &mut Batch, cur: &Saved, oc: &OwnerChains, dnat_chain: &str) {
    for r in cur.rules("nat", HOSTPORTS).iter().chain(cur.rules("nat", PM_POST).iter()) {
        let t = jump_target(r).unwrap_or_default();
        if has_tag(r, &oc.tag) || t == dnat_chain || t == oc.snat {
            b.push("nat", delete_line(r));
        }
    }
    for c in [dnat_chain, oc.snat.as_str()] {
        if cur.has_chain("nat", c) {
            b.push("nat", format!(":{c} - [0:0]"));
            b.push("nat", format!("-X {c}"));
        }
    }
}

/// Removes the shared port chains when no owner is left after this batch.
fn drop_shared_if_empty(b: &mut Batch, cur: &Saved, removed_chains: &[String]) {
    let left = cur
        .chains_with_prefix("nat", "CNI-SUITE-DN-")
        .into_iter()
        .filter(|c| !removed_chains.contains(c))
        .count();
    if left > 0 {
        return;
    }
    for base in ["PREROUTING", "OUTPUT", "POSTROUTING"] {
        for r in cur.rules("nat", base) {
            if matches!(jump_target(r), Some(HOSTPORTS) | Some(PM_POST)) {
                b.push("nat", delete_line(r));
            }
        }
    }
    for c in [HOSTPORTS, PM_POST] {
        if cur.has_chain("nat", c) {
            b.push("nat", format!(":{c} - [0:0]"));
            b.push("nat", format!("-X {c}"));
        }
    }
    for r in cur.rules("filter", "INPUT") {
        if jump_target(r) == Some(PM_INPUT) {
            b.push("filter", delete_line(r));
        }
    }
    if cur.has_chain("filter", PM_INPUT) {
        b.push("filter", format!(":{PM_INPUT} - [0:0]"));
        b.push("filter", format!("-X {PM_INPUT}"));
    }
    // Leftover per-owner SNAT chains.
    for c in cur.chains_with_prefix("nat", "CNI-SUITE-SN-") {
        if !removed_chains.contains(&c) {
            b.push("nat", format!(":{c} - [0:0]"));
            b.push("nat", format!("-X {c}"));
        }
    }
}

/// Batch of `remove_ports` for one family: exactly these mappings; the owner's chains go
/// once it has no mapping left, the shared chains once no owner is left.
pub(crate) fn remove_ports_batch(f: Family, p: &ContainerPorts, cur: &Saved) -> String {
    let owner = owner_key(&p.container_id, &p.ifname);
    let oc = owner_chains(&owner);
    let mut b = Batch::default();
    let rules = cur.rules("nat", &oc.dnat);
    let maps: Vec<&PortMapping> =
        p.mappings.iter().filter(|m| Family::of(m.container_ip) == f).collect();
    let (gone, kept): (Vec<&str>, Vec<&str>) =
        rules.iter().partition(|r| maps.iter().any(|m| has_tag(r, &mapping_tag(m))));
    let mut removed = Vec::new();
    if kept.is_empty() {
        if cur.has_chain("nat", &oc.dnat) || cur.has_chain("nat", &oc.snat) {
            purge_owner(&mut b, cur, &oc, &oc.dnat);
            removed.push(oc.dnat.clone());
            removed.push(oc.snat.clone());
        }
    } else {
        for r in gone {
            b.push("nat", delete_line(r));
        }
    }
    if !removed.is_empty() {
        drop_shared_if_empty(&mut b, cur, &removed);
    }
    b.render()
}

/// Batch removing everything of one owner (GC).
pub(crate) fn remove_owner_batch(owner: &str, cur: &Saved) -> String {
    let oc = owner_chains(owner);
    let mut b = Batch::default();
    if cur.has_chain("nat", &oc.dnat) || cur.has_chain("nat", &oc.snat) {
        purge_owner(&mut b, cur, &oc, &oc.dnat);
        drop_shared_if_empty(&mut b, cur, &[oc.dnat.clone(), oc.snat.clone()]);
    }
    b.render()
}

impl Iptables {
    pub fn new() -> Self {
        Iptables {
            v4: ("iptables-save".into(), "iptables-restore".into()),
            v6: ("ip6tables-save".into(), "ip6tables-restore".into()),
        }
    }

    fn tools(&self, f: Family) -> &(String, String) {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn save(&self, f: Family) -> Result<Saved, Error> {
        let (save, _) = self.tools(f);
        let r = run_tool(save, &[], None)?;
        if !r.ok {
            return Err(Error::new(format!("{save} failed: {}", r.stderr.trim())));
        }
        Ok(Saved::parse(&r.stdout))
    }

    fn restore(&self, f: Family, what: &str, batch: &str) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let (_, restore) = self.tools(f);
        let r = run_tool(restore, &["--noflush", "-w"], Some(batch))?;
        if r.ok {
            Ok(())
        } else {
            Err(Error::new(format!("{restore} failed ({what}): {}", r.stderr.trim())))
        }
    }

    /// Families a container's mappings need.
    fn port_families(p: &ContainerPorts) -> Vec<Family> {
        let mut out = Vec::new();
        for f in [Family::V4, Family::V6] {
            if p.mappings.iter().any(|m| Family::of(m.container_ip) == f) {
                out.push(f);
            }
        }
        out
    }

    /// Families where the owner has or may have state (mapped or remembered chains).
    fn owner_families(&self, owner: &str) -> Result<Vec<(Family, Saved)>, Error> {
        let oc = owner_chains(owner);
        let mut out = Vec::new();
        for f in [Family::V4, Family::V6] {
            let cur = match self.save(f) {
                Ok(c) => c,
                Err(e) if f == Family::V6 => {
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if cur.has_chain("nat", &oc.dnat) || cur.has_chain("nat", &oc.snat) {
                out.push((f, cur));
            }
        }
        Ok(out)
    }
}

/// The listing-based operations the [`Firewall`] impl below is built on.
impl Iptables {
    pub(crate) fn op_apply_network(&self, net: &NetworkRules) -> Result<(), Error> {
        net.validate()?;
        if !net.icc {
            return Err(Error::new(format!(
                "network {:?}: icc=false needs the nftables backend",
                net.network
            )));
        }
        for f in [Family::V4, Family::V6] {
            let cur = self.save(f)?;
            let batch = network_batch(f, &net.network, Some(net), &cur);
            self.restore(f, &format!("apply network {}", net.network), &batch)?;
        }
        Ok(())
    }

    pub(crate) fn op_remove_network(&self, network: &str) -> Result<(), Error> {
        for f in [Family::V4, Family::V6] {
            let cur = match self.save(f) {
                Ok(c) => c,
                Err(_) if f == Family::V6 => continue,
                Err(e) => return Err(e),
            };
            let batch = network_batch(f, network, None, &cur);
            self.restore(f, &format!("remove network {network}"), &batch)?;
        }
        Ok(())
    }

    pub(crate) fn op_add_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        ports.validate()?;
        for f in Self::port_families(ports) {
            let cur = self.save(f)?;
            let batch = add_ports_batch(f, ports, &cur)?;
            self.restore(
                f,
                &format!("add ports of {}/{}", ports.container_id, ports.ifname),
                &batch,
            )?;
        }
        Ok(())
    }

    pub(crate) fn op_remove_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        ports.validate()?;
        if ports.mappings.is_empty() {
            return self.op_remove_port_owner(&ports.container_id, &ports.ifname);
        }
        let owner = owner_key(&ports.container_id, &ports.ifname);
        for (f, cur) in self.owner_families(&owner)? {
            let batch = remove_ports_batch(f, ports, &cur);
            self.restore(
                f,
                &format!("remove ports of {}/{}", ports.container_id, ports.ifname),
                &batch,
            )?;
        }
        Ok(())
    }

    pub(crate) fn op_check_network(&self, net: &NetworkRules) -> Result<(), Error> {
        net.validate()?;
        if !net.icc {
            return Err(Error::new(format!(
                "network {:?}: icc=false needs the nftables backend",
                net.network
            )));
        }
        let nc = net_chains(&net.network);
        let mut missing = Vec::new();
        for f in [Family::V4, Family::V6] {
            let cur = self.save(f)?;
            let fam = if f == Family::V4 { "iptables" } else { "ip6tables" };
            for (chain, n) in network_expectations(f, net) {
                let t = if chain == nc.masq { "nat" } else { "filter" };
                if !cur.has_chain(t, &chain) {
                    missing.push(format!("{fam} chain {chain}"));
                } else if cur.rules(t, &chain).len() != n {
                    missing.push(format!(
                        "{fam} chain {chain} has {} rules, expected {n}",
                        cur.rules(t, &chain).len()
                    ));
                }
            }
            let jumps = cur.rules("filter", FORWARD);
            for c in [&nc.from, &nc.to] {
                if !jumps.iter().any(|r| jump_target(r) == Some(c.as_str())) {
                    missing.push(format!("{fam} jump to {c}"));
                }
            }
            if !cur.rules("filter", "FORWARD").iter().any(|r| jump_target(r) == Some(FORWARD)) {
                missing.push(format!("{fam} jump FORWARD -> {FORWARD}"));
            }
            let subnets = fam_nets(&net.subnets, f);
            if net.masquerades() && !subnets.is_empty() {
                let n = cur
                    .rules("nat", POSTROUTING)
                    .iter()
                    .filter(|r| jump_target(r) == Some(nc.masq.as_str()))
                    .count();
                if n != subnets.len() {
                    missing.push(format!("{fam} masquerade jumps to {}", nc.masq));
                }
                if !cur
                    .rules("nat", "POSTROUTING")
                    .iter()
                    .any(|r| jump_target(r) == Some(POSTROUTING))
                {
                    missing.push(format!("{fam} jump POSTROUTING -> {POSTROUTING}"));
                }
            }
            if net.isolate && !net.internal {
                for (c, flag) in [(ISO_OUT, "-o"), (ISO_IN, "-i")] {
                    if !cur
                        .rules("filter", c)
                        .iter()
                        .any(|r| arg_of(r, flag) == Some(net.bridge.as_str()))
                    {
                        missing.push(format!("{fam} isolation rule for {} in {c}", net.bridge));
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "network {:?}: firewall rules missing: {}",
                net.network,
                missing.join(", ")
            )))
        }
    }

    pub(crate) fn op_check_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        ports.validate()?;
        let oc = owner_chains(&owner_key(&ports.container_id, &ports.ifname));
        let mut missing = Vec::new();
        for f in Self::port_families(ports) {
            let cur = self.save(f)?;
            let rules = cur.rules("nat", &oc.dnat);
            for m in ports.mappings.iter().filter(|m| Family::of(m.container_ip) == f) {
                let tag = mapping_tag(m);
                let dest = match m.container_ip {
                    IpAddr::V4(a) => format!("{a}:{}", m.container_port),
                    IpAddr::V6(a) => format!("[{a}]:{}", m.container_port),
                };
                if !rules.iter().any(|r| {
                    has_tag(r, &tag) && arg_of(r, "--to-destination") == Some(dest.as_str())
                }) {
                    missing.push(m.describe());
                }
            }
            if !cur.rules("nat", HOSTPORTS).iter().any(|r| jump_target(r) == Some(oc.dnat.as_str()))
            {
                missing.push(format!("jump to {}", oc.dnat));
            }
            for base in ["PREROUTING", "OUTPUT"] {
                if !cur.rules("nat", base).iter().any(|r| jump_target(r) == Some(HOSTPORTS)) {
                    missing.push(format!("jump {base} -> {HOSTPORTS}"));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "ports of {}/{}: missing {}",
                ports.container_id,
                ports.ifname,
                missing.join(", ")
            )))
        }
    }

    pub(crate) fn op_remove_port_owner(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), Error> {
        let owner = owner_key_of(container_id, ifname);
        for (f, cur) in self.owner_families(&owner)? {
            let batch = remove_owner_batch(&owner, &cur);
            self.restore(f, &format!("remove ports of {container_id}/{ifname}"), &batch)?;
        }
        Ok(())
    }

    pub(crate) fn op_is_available(&self) -> Result<(), Error> {
        for f in [Family::V4, Family::V6] {
            let (_, restore) = self.tools(f);
            let r = run_tool(
                restore,
                &["--test", "--noflush", "-w"],
                Some("*filter\nCOMMIT\n*nat\nCOMMIT\n"),
            )?;
            if !r.ok {
                return Err(Error::new(format!(
                    "{restore} cannot program the kernel: {}",
                    r.stderr.trim()
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn op_foreign_drop_policy(&self) -> Option<String> {
        let mut found = Vec::new();
        for (f, name) in [(Family::V4, "iptables"), (Family::V6, "ip6tables")] {
            if let Ok(cur) = self.save(f) {
                if cur.table("filter").and_then(|t| t.chains.get("FORWARD")).map(String::as_str)
                    == Some("DROP")
                {
                    found.push(format!("{name} filter FORWARD"));
                }
            }
        }
        if found.is_empty() {
            None
        } else {
            Some(format!(
                "policy DROP in {} (e.g. Docker's): forwarded container traffic not accepted by an earlier rule is dropped",
                found.join(", ")
            ))
        }
    }
}

impl Iptables {
    /// A generation of our chain in `table`: with iptables-nft (Debian's default) the
    /// chain's nf_tables handle, read in-process with one lookup (a flush re-creates it with
    /// another); with legacy iptables, 1 when `iptables -S` finds it. `None` when absent.
    fn chain_present(&self, table: &str, chain: &str) -> Result<Option<u64>, Error> {
        if let Ok(mut s) = nfnetlink::Socket::open() {
            if let Ok(Some(h)) =
                nfnetlink::tables::chain_handle(&mut s, nfnetlink::Family::Ip, table, chain)
            {
                return Ok(Some(h));
            }
        }
        let legacy = std::fs::read_to_string("/proc/net/ip_tables_names")
            .is_ok_and(|t| !t.trim().is_empty());
        if !legacy {
            return Ok(None);
        }
        let r = run_tool("iptables", &["-w", "-t", table, "-S", chain], None)?;
        Ok(r.ok.then_some(1))
    }
}

impl Firewall for Iptables {
    fn kind(&self) -> crate::BackendKind {
        crate::BackendKind::Iptables
    }

    fn network_generation(&self) -> Result<Option<u64>, Error> {
        self.chain_present("filter", FORWARD)
    }

    fn apply_network(&self, want: &NetworkRules, had: Option<&NetworkRules>) -> Result<(), Error> {
        if want.enforces_nothing() {
            return match had {
                Some(h) => self.op_remove_network(&h.network),
                None => Ok(()),
            };
        }
        self.op_apply_network(want)
    }

    fn remove_network(&self, had: &NetworkRules, _last: bool) -> Result<(), Error> {
        self.op_remove_network(&had.network)
    }

    fn restore_networks(&self, all: &[NetworkRules]) -> Result<(), Error> {
        for n in all.iter().filter(|n| !n.enforces_nothing()) {
            self.op_apply_network(n)?;
        }
        Ok(())
    }

    fn check_network(&self, want: &NetworkRules) -> Result<(), Error> {
        self.op_check_network(want)
    }

    fn ports_generation(&self) -> Result<Option<u64>, Error> {
        self.chain_present("nat", HOSTPORTS)
    }

    fn add_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        self.op_add_ports(ports)
    }

    fn remove_ports(&self, ports: &ContainerPorts, _last: bool) -> Result<(), Error> {
        self.op_remove_ports(ports)
    }

    fn restore_ports(&self, all: &[ContainerPorts]) -> Result<(), Error> {
        for p in all {
            self.op_add_ports(p)?;
        }
        Ok(())
    }

    fn check_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        self.op_check_ports(ports)
    }

    fn status(&self) -> Result<crate::Status, Error> {
        self.op_is_available().map_err(|e| Error::unavailable(e.msg))?;
        Ok(crate::Status { foreign_drop: self.op_foreign_drop_policy() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    #[test]
    fn chain_names_fit() {
        let nc = net_chains("a-very-long-network-name-that-goes-on-and-on");
        for c in [&nc.from, &nc.to, &nc.masq] {
            assert!(c.len() <= 28, "{c}");
        }
        let oc = owner_chains(&owner_key(&"f".repeat(64), "eth0"));
        assert!(oc.dnat.len() <= 28 && oc.snat.len() <= 28);
        for c in [FORWARD, ISO_OUT, ISO_IN, POSTROUTING, HOSTPORTS, PM_POST] {
            assert!(c.len() <= 28);
        }
    }

    fn net() -> NetworkRules {
        let mut n =
            NetworkRules::new("podman", "cni-podman0", vec!["10.88.0.0/16".parse().unwrap()]);
        n.isolate = true;
        n
    }

    #[test]
    fn fresh_network_batch() {
        let b = network_batch(Family::V4, "podman", Some(&net()), &Saved::default());
        let nc = net_chains("podman");
        assert!(b.contains(&format!(":{} - [0:0]", nc.from)), "{b}");
        assert!(b.contains(&format!(
            "-A {FORWARD} -i cni-podman0 -m comment --comment \"{}\" -j {}",
            nc.tag, nc.from
        )));
        assert!(b.contains(&format!("-A {} ! -o cni-podman0 -j {ISO_OUT}", nc.from)));
        assert!(b.contains(&format!("-A {ISO_OUT} -o cni-podman0 -j DROP")));
        assert!(b.contains("-I FORWARD 1 -j CNI-SUITE-FORWARD"));
        assert!(b.contains(&format!("-A {} -d 224.0.0.0/4 -j RETURN", nc.masq)));
        assert!(b.contains(&format!("-A {POSTROUTING} -s 10.88.0.0/16")));
        assert!(b.contains("-A POSTROUTING -j CNI-SUITE-POSTROUTING"));
        // v6 has no subnets: filter rules only.
        let b6 = network_batch(Family::V6, "podman", Some(&net()), &Saved::default());
        assert!(b6.contains("*filter") && !b6.contains("*nat"), "{b6}");
    }

    #[test]
    fn remove_last_network_removes_everything() {
        let nc = net_chains("podman");
        let saved = format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:{FORWARD} - [0:0]\n:{ISO_OUT} - [0:0]\n:{ISO_IN} - [0:0]\n:{f} - [0:0]\n:{t} - [0:0]\n\
             -A FORWARD -j {FORWARD}\n-A {FORWARD} -i cni-podman0 -m comment --comment \"{tag}\" -j {f}\n\
             -A {FORWARD} -o cni-podman0 -m comment --comment \"{tag}\" -j {t}\nCOMMIT\n\
             *nat\n:POSTROUTING ACCEPT [0:0]\n:{POSTROUTING} - [0:0]\n:{m} - [0:0]\n-A POSTROUTING -j {POSTROUTING}\n\
             -A {POSTROUTING} -s 10.88.0.0/16 -m comment --comment \"{tag}\" -j {m}\n-A {m} -j MASQUERADE\nCOMMIT\n",
            f = nc.from,
            t = nc.to,
            m = nc.masq,
            tag = nc.tag
        );
        let cur = Saved::parse(&saved);
        let b = network_batch(Family::V4, "podman", None, &cur);
        assert!(b.contains(&format!("-D FORWARD -j {FORWARD}")), "{b}");
        assert!(b.contains(&format!("-X {FORWARD}")));
        assert!(b.contains(&format!("-X {}", nc.from)));
        assert!(b.contains(&format!("-D POSTROUTING -j {POSTROUTING}")));
        assert!(b.contains(&format!("-X {}", nc.masq)));
        // Re-applying keeps the jump once.
        let b = network_batch(Family::V4, "podman", Some(&net()), &cur);
        assert!(!b.contains("-I FORWARD"), "{b}");
        assert_eq!(b.matches(&format!("-j {}", nc.from)).count(), 1);
    }

    #[test]
    fn ports_batch_and_conflicts() {
        let mut p = ContainerPorts::new("podman", "abc", "eth0");
        p.mappings.push(PortMapping {
            host_ip: None,
            host_port: 8080,
            container_ip: "10.88.0.5".parse().unwrap(),
            container_port: 80,
            protocol: Protocol::Tcp,
        });
        let b = add_ports_batch(Family::V4, &p, &Saved::default()).unwrap();
        let oc = owner_chains("abc/eth0");
        assert!(b.contains(&format!(
            "-A {} -p tcp -m tcp --dport 8080 -m comment --comment \"cni-suite hp=tcp/*/8080\" -j DNAT --to-destination 10.88.0.5:80",
            oc.dnat
        )), "{b}");
        assert!(b.contains(&format!("-A {HOSTPORTS} -p tcp -m multiport --dports 8080 -m comment --comment \"cni-suite owner=abc/eth0\" -j {}", oc.dnat)));
        assert!(b.contains(&format!("-A {} -s 10.88.0.5/32 -j MASQUERADE", oc.snat)));
        assert!(add_ports_batch(Family::V6, &p, &Saved::default()).unwrap().is_empty());
    }
}
