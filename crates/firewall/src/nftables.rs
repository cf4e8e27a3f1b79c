//! nftables backend (default), programmed in-process over nfnetlink: every call is one
//! batch (one transaction), and no `nft` process runs on the ADD/DEL path.
//!
//! Each operation is split in two:
//! - **diff** (pure): from what the caller wants and what it had (its own state), the list
//!   of [`Op`]s to commit. These functions are golden-tested as whole rendered rule sets
//!   (`Op::text` is the `nft` command doing the same).
//! - **apply**: commit the ops; the only kernel reads are single lookups (a table's handle,
//!   whether a chain exists), never a listing, and never "try, then fall back on error".
//!
//! Layout (all ours, nothing else is touched):
//!
//! `table inet cni_bridge` — network rules
//! - `chain br_forward` (hook forward, policy accept): `iifname vmap @from_br`,
//!   `oifname vmap @to_br`: a packet's path is two map lookups, not a walk over networks.
//! - `chain br_post` (hook postrouting, srcnat): `ip saddr vmap @masq4`, `ip6 saddr vmap
//!   @masq6` (interval maps: one element per subnet).
//! - per network `<id>`: chains `nf_<id>` (forwarded from its bridge), `nt_<id>` (to its
//!   bridge), `nm_<id>` (masquerade), commented with the network's name.
//! - `set bridges`: every managed bridge (isolation).
//!
//! `table bridge cni_icc` — icc=false: bridged IP traffic from the network's subnets is
//! dropped (`ip saddr vmap @icc4`, `ip6 saddr vmap @icc6`).
//!
//! `table inet cni_portmap` — published ports
//! - maps `hp4`/`hp6` (`daddr . l4proto . dport : addr . port`, one host address) and
//!   `ap4`/`ap6` (`l4proto . dport : addr . port`, every local address), used by `chain
//!   pm_dnat`, jumped from `pm_pre` (prerouting) and `pm_out` (output: the host itself and
//!   127.0.0.1 reach published ports).
//! - `chain pm_post`: masquerade DNATed connections from 127.0.0.0/8, hairpin traffic
//!   (`hairpin4`/`hairpin6`: container address -> `jump pm_hp4_<prefix len>`, which
//!   matches `daddr . saddr & mask` in `hpnet4`/`hpnet6`) and `masqall4`/`masqall6`.
//! - `chain pm_input`: drops traffic to 127.0.0.0/8 that arrives on any interface but `lo`
//!   and was not DNATed to a published port (portmap sets `route_localnet` on bridges,
//!   which would otherwise let containers reach the host's loopback-only services).
//! - Every element's comment is its owner (`<container id>/<ifname>`), for people; who
//!   owns a port is decided by portmap's state, never read back from here.
//! - Elements are removed by setting their expiry to 1 ms (kernel 6.10+), not deleted: a
//!   transaction that deletes anything makes the socket's close wait for an RCU grace
//!   period (~10-17 ms). Only the last container's DEL deletes (the whole table).
//!
//! `table bridge cni_macspoof` — `macspoofchk`: frames entering the bridge from a guarded
//! port must carry that port's MAC.

use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;
use nfnetlink::tables::{self, types, Family, Hook};
use nfnetlink::{Elem, ElemData, Op, Rule, SetDef, Socket, Verdict};

use crate::listing::{self, Listing};
use crate::{network_id, owner_key, ContainerPorts, Error, Firewall, NetworkRules, PortMapping};

pub const BRIDGE_TABLE: &str = "cni_bridge";
pub const ICC_TABLE: &str = "cni_icc";
pub const PORTMAP_TABLE: &str = "cni_portmap";
pub const MACSPOOF_TABLE: &str = "cni_macspoof";

/// How long an element we "remove" lives on (it stops matching when it expires).
const EXPIRE_MS: u64 = 1;

/// The nftables backend. Stateless: it programs what it is told, in the namespace of the
/// calling thread.
#[derive(Clone, Debug, Default)]
pub struct Nftables;

impl Nftables {
    pub fn new() -> Self {
        Nftables
    }
}

/// What the running kernel supports, from its release (decided once, never by trying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// Updating an element's timeout (6.10+): remove by expiry instead of deleting.
    pub expiry_updates: bool,
    /// `destroy` (delete if present) for tables, chains and elements (6.3+).
    pub destroy: bool,
}

impl Kernel {
    pub fn of_release(release: &str) -> Kernel {
        let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
        let major: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let minor: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let v = (major, minor);
        Kernel { expiry_updates: v >= (6, 10), destroy: v >= (6, 3) }
    }

    pub fn running() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            Kernel::of_release(release.trim())
        })
    }
}

fn kerr(e: nfnetlink::Error) -> Error {
    Error::kernel(format!("nftables: {e}"))
}

fn open() -> Result<Socket, Error> {
    Socket::open().map_err(kerr)
}

fn commit(sock: &mut Socket, ops: &[Op]) -> Result<(), Error> {
    nfnetlink::commit(sock, ops).map_err(kerr)
}

// ---------------------------------------------------------------------------------------
// Values and elements.

fn ifname_key(name: &str) -> Elem {
    Elem::new(nfnetlink::expr::ifname_bytes(name), format!("\"{name}\""))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    nfnetlink::expr::ip_bytes(ip)
}

/// A concatenation field padded to a 4-byte register.
fn field(mut v: Vec<u8>) -> Vec<u8> {
    v.resize((v.len() + 3) & !3, 0);
    v
}

fn proto_num(p: crate::Protocol) -> u8 {
    match p {
        crate::Protocol::Tcp => 6,
        crate::Protocol::Udp => 17,
        crate::Protocol::Sctp => 132,
    }
}

fn port_field(port: u16) -> Vec<u8> {
    field(port.to_be_bytes().to_vec())
}

fn jump(chain: &str) -> ElemData {
    ElemData::Verdict(Verdict::Jump(chain.to_string()))
}

/// Text form of a subnet the way nft lists an interval element (a /32 or /128 is listed as
/// a plain address).
fn net_key(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// The elements of one interval: its start (with the data) and, unless it reaches the top
/// of the address space, its end.
fn interval(n: &IpNet, data: Option<ElemData>) -> Vec<Elem> {
    let n = n.trunc();
    let mut start = Elem::new(ip_bytes(n.network()), net_key(&n));
    start.data = data;
    let mut out = vec![start];
    let end: Option<IpAddr> = match n {
        IpNet::V4(v) => {
            u32::from(v.broadcast()).checked_add(1).map(|x| IpAddr::from(x.to_be_bytes()))
        }
        IpNet::V6(v) => {
            u128::from(v.broadcast()).checked_add(1).map(|x| IpAddr::from(x.to_be_bytes()))
        }
    };
    if let Some(e) = end {
        out.push(Elem { interval_end: true, ..Elem::new(ip_bytes(e), e.to_string()) });
    }
    out
}

fn normalized(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in nets {
        let t = n.trunc();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn fam(n: &IpNet) -> char {
    if matches!(n, IpNet::V4(_)) {
        '4'
    } else {
        '6'
    }
}

fn v(ip: IpAddr) -> char {
    if ip.is_ipv4() {
        '4'
    } else {
        '6'
    }
}

/// A comment-safe rendering of a free-form name.
fn comment_text(s: &str) -> String {
    let t: String =
        s.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    t.chars().take(100).collect()
}

// ---------------------------------------------------------------------------------------
// Small op builders.

struct T {
    family: Family,
    table: &'static str,
}

const BR: T = T { family: Family::Inet, table: BRIDGE_TABLE };
const ICC: T = T { family: Family::Bridge, table: ICC_TABLE };
const PM: T = T { family: Family::Inet, table: PORTMAP_TABLE };
const MS: T = T { family: Family::Bridge, table: MACSPOOF_TABLE };

impl T {
    fn table(&self) -> Op {
        Op::AddTable { family: self.family, name: self.table.into() }
    }
    /// "add table; delete table": removes the table whether or not it exists (one
    /// transaction, so nothing fails when it is absent).
    fn drop_table(&self) -> Vec<Op> {
        vec![self.table(), Op::DelTable { family: self.family, name: self.table.into() }]
    }
    fn chain(&self, name: &str, comment: Option<&str>) -> Op {
        Op::AddChain {
            family: self.family,
            table: self.table.into(),
            name: name.into(),
            hook: None,
            comment: comment.map(str::to_string),
        }
    }
    fn base_chain(&self, name: &str, kind: &'static str, num: u32, priority: i32) -> Op {
        Op::AddChain {
            family: self.family,
            table: self.table.into(),
            name: name.into(),
            hook: Some(Hook { kind, num, priority }),
            comment: None,
        }
    }
    fn set(&self, def: SetDef) -> Op {
        Op::AddSet { family: self.family, table: self.table.into(), def }
    }
    fn rule(&self, chain: &str, rule: Rule) -> Op {
        Op::AddRule { family: self.family, table: self.table.into(), chain: chain.into(), rule }
    }
    fn del_chain(&self, chain: &str) -> Op {
        Op::DelChain { family: self.family, table: self.table.into(), name: chain.into() }
    }
    fn add(&self, set: &str, elems: Vec<Elem>) -> Op {
        Op::AddElems { family: self.family, table: self.table.into(), set: set.into(), elems }
    }
    fn del(&self, set: &str, elems: Vec<Elem>) -> Op {
        Op::DelElems { family: self.family, table: self.table.into(), set: set.into(), elems }
    }
}

// ---------------------------------------------------------------------------------------
// Networks: diff.

struct NetNames {
    from: String,
    to: String,
    masq: String,
}

fn net_names(network: &str) -> NetNames {
    let id = network_id(network);
    NetNames { from: format!("nf_{id}"), to: format!("nt_{id}"), masq: format!("nm_{id}") }
}

/// The table, its sets and base chains with their rules (for a table being created).
pub(crate) fn bridge_base_ops() -> Vec<Op> {
    vec![
        BR.table(),
        BR.set(SetDef::set("bridges", &[types::IFNAME])),
        BR.set(SetDef::vmap("from_br", &[types::IFNAME])),
        BR.set(SetDef::vmap("to_br", &[types::IFNAME])),
        BR.set(SetDef::vmap("masq4", &[types::IPADDR]).interval()),
        BR.set(SetDef::vmap("masq6", &[types::IP6ADDR]).interval()),
        BR.base_chain("br_forward", "filter", 2, 0),
        BR.rule("br_forward", Rule::new().ifname_vmap(false, "from_br")),
        BR.rule("br_forward", Rule::new().ifname_vmap(true, "to_br")),
        BR.base_chain("br_post", "nat", 4, 100),
        BR.rule("br_post", Rule::new().addr_vmap(false, false, "masq4")),
        BR.rule("br_post", Rule::new().addr_vmap(true, false, "masq6")),
    ]
}

pub(crate) fn icc_base_ops() -> Vec<Op> {
    vec![
        ICC.table(),
        ICC.set(SetDef::vmap("icc4", &[types::IPADDR]).interval()),
        ICC.set(SetDef::vmap("icc6", &[types::IP6ADDR]).interval()),
        ICC.base_chain("icc_forward", "filter", 2, 0),
        ICC.rule("icc_forward", Rule::bridge().addr_vmap(false, false, "icc4")),
        ICC.rule("icc_forward", Rule::bridge().addr_vmap(true, false, "icc6")),
    ]
}

/// The rules of a network's three chains.
pub(crate) fn network_chain_rules(net: &NetworkRules) -> (Vec<Rule>, Vec<Rule>, Vec<Rule>) {
    let b = net.bridge.as_str();
    let mut from = Vec::new();
    let mut to = Vec::new();
    if net.internal {
        from.push(Rule::new().oifname_ne(b).verdict(Verdict::Drop));
        to.push(Rule::new().iifname_ne(b).verdict(Verdict::Drop));
    } else if net.isolate {
        from.push(Rule::new().oifname_ne(b).ifname_in(true, "bridges").verdict(Verdict::Drop));
        to.push(Rule::new().iifname_ne(b).ifname_in(false, "bridges").verdict(Verdict::Drop));
    }
    if !net.icc {
        // Seen here only when br_netfilter passes bridged traffic to the IP hooks.
        from.push(Rule::new().oifname_eq(b).verdict(Verdict::Drop));
    }
    let mut masq = Vec::new();
    if net.masquerades() && !net.subnets.is_empty() {
        let nets = normalized(&net.subnets);
        for n in &nets {
            masq.push(
                Rule::new()
                    .addr_in_net(true, (n.network(), n.prefix_len()))
                    .verdict(Verdict::Return),
            );
        }
        if nets.iter().any(|n| matches!(n, IpNet::V4(_))) {
            let mc = "224.0.0.0".parse().expect("literal");
            masq.push(Rule::new().addr_in_net(true, (mc, 4)).verdict(Verdict::Return));
        }
        if nets.iter().any(|n| matches!(n, IpNet::V6(_))) {
            let mc = "ff00::".parse().expect("literal");
            masq.push(Rule::new().addr_in_net(true, (mc, 8)).verdict(Verdict::Return));
        }
        masq.push(Rule::new().masquerade());
    }
    (from, to, masq)
}

/// Everything one network adds to tables that exist.
pub(crate) fn network_add_ops(net: &NetworkRules) -> Vec<Op> {
    let names = net_names(&net.network);
    let comment = comment_text(&format!("cni network {}", net.network));
    let (from, to, masq) = network_chain_rules(net);
    let mut ops = vec![BR.chain(&names.from, Some(&comment)), BR.chain(&names.to, Some(&comment))];
    ops.extend(from.into_iter().map(|r| BR.rule(&names.from, r)));
    ops.extend(to.into_iter().map(|r| BR.rule(&names.to, r)));
    let want_masq = !masq.is_empty();
    if want_masq {
        ops.push(BR.chain(&names.masq, Some(&comment)));
        ops.extend(masq.into_iter().map(|r| BR.rule(&names.masq, r)));
    }
    let b = &net.bridge;
    ops.push(BR.add("bridges", vec![ifname_key(b)]));
    ops.push(BR.add("from_br", vec![ifname_key(b).data(jump(&names.from))]));
    ops.push(BR.add("to_br", vec![ifname_key(b).data(jump(&names.to))]));
    let subnets = normalized(&net.subnets);
    if want_masq {
        for n in &subnets {
            ops.push(BR.add(&format!("masq{}", fam(n)), interval(n, Some(jump(&names.masq)))));
        }
    }
    if !net.icc {
        for n in &subnets {
            let mut es = interval(n, Some(ElemData::Verdict(Verdict::Drop)));
            es[0].comment = Some(comment.clone());
            ops.push(ICC.add(&format!("icc{}", fam(n)), es));
        }
    }
    ops
}

/// Everything one network (as recorded) removes, leaving the tables. Already gone is fine:
/// `destroy` where the kernel has it, else each object is added (a no-op when present)
/// right before it is deleted, in the same transaction.
pub(crate) fn network_remove_ops(net: &NetworkRules, kernel: Kernel) -> Vec<Op> {
    let names = net_names(&net.network);
    let (_, _, masq) = network_chain_rules(net);
    let b = &net.bridge;
    let subnets = normalized(&net.subnets);
    let mut elems: Vec<(&T, String, Vec<Elem>)> = vec![
        (&BR, "from_br".into(), vec![ifname_key(b).data(jump(&names.from))]),
        (&BR, "to_br".into(), vec![ifname_key(b).data(jump(&names.to))]),
        (&BR, "bridges".into(), vec![ifname_key(b)]),
    ];
    if !masq.is_empty() {
        for n in &subnets {
            elems.push((&BR, format!("masq{}", fam(n)), interval(n, Some(jump(&names.masq)))));
        }
    }
    if !net.icc {
        for n in &subnets {
            let drop = Some(ElemData::Verdict(Verdict::Drop));
            elems.push((&ICC, format!("icc{}", fam(n)), interval(n, drop)));
        }
    }
    let mut chains = vec![&names.from, &names.to];
    if !masq.is_empty() {
        chains.push(&names.masq);
    }
    let mut ops = Vec::new();
    for (t, set, es) in elems {
        if kernel.destroy {
            ops.push(Op::DestroyElems { family: t.family, table: t.table.into(), set, elems: es });
        } else {
            ops.push(t.add(&set, es.clone()));
            ops.push(t.del(&set, es));
        }
    }
    for c in chains {
        if kernel.destroy {
            ops.push(Op::DestroyChain {
                family: BR.family,
                table: BR.table.into(),
                name: c.clone(),
            });
        } else {
            ops.push(BR.chain(c, None));
            ops.push(BR.del_chain(c));
        }
    }
    ops
}

/// An op on the icc table's elements (left out when that table does not exist).
fn is_icc_elems(o: &Op) -> bool {
    matches!(
        o,
        Op::DelElems { family: Family::Bridge, .. }
            | Op::DestroyElems { family: Family::Bridge, .. }
            | Op::AddElems { family: Family::Bridge, .. }
    )
}

/// The transaction of `apply_network`: `had` (recorded) replaced by `want`, with the
/// tables created when `tables_exist` says they are not there (bridge table, icc table).
pub(crate) fn apply_network_ops(
    want: &NetworkRules,
    had: Option<&NetworkRules>,
    tables_exist: (bool, bool),
    kernel: Kernel,
) -> Vec<Op> {
    if had == Some(want) && tables_exist.0 && (want.icc || tables_exist.1) {
        return Vec::new();
    }
    let mut ops = Vec::new();
    if !tables_exist.0 {
        ops.extend(bridge_base_ops());
    }
    if !want.icc && !tables_exist.1 {
        ops.extend(icc_base_ops());
    }
    if let Some(h) = had.filter(|h| !h.enforces_nothing()) {
        if tables_exist.0 {
            ops.extend(
                network_remove_ops(h, kernel)
                    .into_iter()
                    // The icc table of the old rules is gone if it does not exist.
                    .filter(|o| {
                        tables_exist.1 || !matches!(o, Op::DelElems { family: Family::Bridge, .. })
                    }),
            );
        }
    }
    if !want.enforces_nothing() {
        ops.extend(network_add_ops(want));
    }
    ops
}

/// The transaction re-creating every network from scratch (both tables replaced).
pub(crate) fn restore_networks_ops(all: &[NetworkRules]) -> Vec<Op> {
    let live: Vec<&NetworkRules> = all.iter().filter(|n| !n.enforces_nothing()).collect();
    let mut ops = BR.drop_table();
    ops.extend(ICC.drop_table());
    if live.is_empty() {
        return ops;
    }
    ops.extend(bridge_base_ops());
    if live.iter().any(|n| !n.icc) {
        ops.extend(icc_base_ops());
    }
    for n in live {
        ops.extend(network_add_ops(n));
    }
    ops
}

// ---------------------------------------------------------------------------------------
// Ports: diff.

/// The table, its maps and sets (all with timeouts: elements are removed by expiry), base
/// chains and their rules.
pub(crate) fn portmap_base_ops() -> Vec<Op> {
    let a4 = types::IPADDR;
    let a6 = types::IP6ADDR;
    let (pr, sv) = (types::INET_PROTO, types::INET_SERVICE);
    let mut ops = vec![
        PM.table(),
        PM.set(SetDef::map("hp4", &[a4, pr, sv], &[a4, sv]).timeout()),
        PM.set(SetDef::map("ap4", &[pr, sv], &[a4, sv]).timeout()),
        PM.set(SetDef::map("hp6", &[a6, pr, sv], &[a6, sv]).timeout()),
        PM.set(SetDef::map("ap6", &[pr, sv], &[a6, sv]).timeout()),
        PM.set(SetDef::vmap("hairpin4", &[a4]).timeout()),
        PM.set(SetDef::vmap("hairpin6", &[a6]).timeout()),
        PM.set(SetDef::set("hpnet4", &[a4, a4]).timeout()),
        PM.set(SetDef::set("hpnet6", &[a6, a6]).timeout()),
        PM.set(SetDef::set("masqall4", &[a4]).timeout()),
        PM.set(SetDef::set("masqall6", &[a6]).timeout()),
        PM.chain("pm_dnat", None),
        PM.rule("pm_dnat", Rule::new().dnat_map(false, true, "hp4")),
        PM.rule("pm_dnat", Rule::new().dnat_map(true, true, "hp6")),
        PM.rule("pm_dnat", Rule::new().daddr_is_local().dnat_map(false, false, "ap4")),
        PM.rule("pm_dnat", Rule::new().daddr_is_local().dnat_map(true, false, "ap6")),
        PM.base_chain("pm_pre", "nat", 0, -100),
        PM.rule("pm_pre", Rule::new().verdict(Verdict::Jump("pm_dnat".into()))),
        PM.base_chain("pm_out", "nat", 3, -100),
        PM.rule("pm_out", Rule::new().verdict(Verdict::Jump("pm_dnat".into()))),
        PM.base_chain("pm_post", "nat", 4, 100),
    ];
    let lo = ("127.0.0.0".parse().expect("literal"), 8);
    ops.push(PM.rule(
        "pm_post",
        Rule::new().ct_dnat(true).oifname_ne("lo").addr_in_net(false, lo).masquerade(),
    ));
    for v6 in [false, true] {
        let f = if v6 { '6' } else { '4' };
        ops.push(PM.rule(
            "pm_post",
            Rule::new().ct_dnat(true).addr_vmap(v6, true, &format!("hairpin{f}")),
        ));
        ops.push(PM.rule(
            "pm_post",
            Rule::new().ct_dnat(true).addr_in_set(v6, true, &format!("masqall{f}")).masquerade(),
        ));
    }
    ops.push(PM.base_chain("pm_input", "filter", 1, 0));
    ops.push(
        PM.rule(
            "pm_input",
            Rule::new()
                .iifname_ne("lo")
                .addr_in_net(true, lo)
                .ct_dnat(false)
                .verdict(Verdict::Drop)
                .comment("containers must not reach the host's loopback"),
        ),
    );
    ops
}

/// Name of the hairpin chain of one prefix length.
fn hairpin_chain(v6: bool, len: u8) -> String {
    format!("pm_hp{}_{len}", if v6 { 6 } else { 4 })
}

/// A hairpin chain: masquerade when the source is in the container's own network, i.e.
/// `daddr . (saddr & mask)` is a (container address . network address) element of
/// `hpnet4`/`hpnet6`. One chain per prefix length in use.
fn hairpin_chain_ops(v6: bool, len: u8) -> Vec<Op> {
    let c = hairpin_chain(v6, len);
    let set = if v6 { "hpnet6" } else { "hpnet4" };
    vec![
        PM.chain(&c, None),
        PM.rule(&c, Rule::new().daddr_saddr_net_in_set(v6, len, set).masquerade()),
    ]
}

/// (map, key elem, data) of one mapping.
pub(crate) fn mapping_element(m: &PortMapping) -> (String, Elem) {
    let f = v(m.container_ip);
    let proto = m.protocol.as_str();
    let data = ElemData::Value(
        [field(ip_bytes(m.container_ip)), port_field(m.container_port)].concat(),
        format!("{} . {}", m.container_ip, m.container_port),
    );
    let pkey = [field(vec![proto_num(m.protocol)]), port_field(m.host_port)].concat();
    match m.specific_host_ip() {
        Some(h) => (
            format!("hp{f}"),
            Elem::new(
                [field(ip_bytes(h)), pkey].concat(),
                format!("{h} . {proto} . {}", m.host_port),
            )
            .data(data),
        ),
        None => {
            (format!("ap{f}"), Elem::new(pkey, format!("{proto} . {}", m.host_port)).data(data))
        }
    }
}

/// Every element of one owner, grouped per set/map, and the hairpin chains they jump to.
/// (set or map name, element) pairs, and (v6, prefix length) of hairpin chains.
type OwnerElements = (Vec<(String, Elem)>, Vec<(bool, u8)>);

pub(crate) fn owner_elements(p: &ContainerPorts) -> OwnerElements {
    let owner = comment_text(&owner_key(&p.container_id, &p.ifname));
    let mut out: Vec<(String, Elem)> = Vec::new();
    let mut chains = Vec::new();
    for m in &p.mappings {
        let e = mapping_element(m);
        if !out.iter().any(|(s, x)| *s == e.0 && x.key == e.1.key) {
            out.push(e);
        }
    }
    for ip in p.container_ips() {
        if p.masquerade_hairpin {
            let nets = p.hairpin_sources(ip);
            let n = nets.iter().find(|n| n.contains(&ip)).unwrap_or(&nets[0]);
            let chain = (ip.is_ipv6(), n.prefix_len());
            out.push((
                format!("hairpin{}", v(ip)),
                Elem::new(ip_bytes(ip), ip.to_string())
                    .data(jump(&hairpin_chain(chain.0, chain.1))),
            ));
            out.push((
                format!("hpnet{}", v(ip)),
                Elem::new(
                    [ip_bytes(ip), ip_bytes(n.network())].concat(),
                    format!("{ip} . {}", n.network()),
                ),
            ));
            if !chains.contains(&chain) {
                chains.push(chain);
            }
        }
        if p.masq_all {
            out.push((format!("masqall{}", v(ip)), Elem::new(ip_bytes(ip), ip.to_string())));
        }
    }
    for (_, e) in out.iter_mut() {
        e.comment = Some(owner.clone());
    }
    (out, chains)
}

/// Refuses a request that maps one host port twice to different targets.
fn check_self_conflicts(p: &ContainerPorts) -> Result<(), Error> {
    let mut seen: Vec<(String, Vec<u8>, Option<ElemData>, &PortMapping)> = Vec::new();
    for m in &p.mappings {
        let (map, e) = mapping_element(m);
        if let Some((_, _, _, other)) =
            seen.iter().find(|(s, k, d, _)| *s == map && *k == e.key && *d != e.data)
        {
            return Err(Error::invalid(format!(
                "port mappings {} and {} publish the same host port",
                other.describe(),
                m.describe()
            )));
        }
        seen.push((map, e.key.clone(), e.data.clone(), m));
    }
    Ok(())
}

/// The transaction of `add_ports`: the table when it does not exist, the hairpin chains
/// that are missing (`missing_chains`), the owner's elements, one op per element so that
/// a key the kernel refuses (held by someone else) names its mapping.
pub(crate) fn add_ports_ops(
    p: &ContainerPorts,
    table_exists: bool,
    missing_chains: &[(bool, u8)],
) -> Vec<Op> {
    let mut ops = if table_exists { Vec::new() } else { portmap_base_ops() };
    let (elems, _) = owner_elements(p);
    for (v6, len) in missing_chains {
        ops.extend(hairpin_chain_ops(*v6, *len));
    }
    for (set, e) in elems {
        ops.push(PM.add(&set, vec![e]));
    }
    ops
}

/// The transaction of `remove_ports` for an owner when others remain: its elements expire
/// in 1 ms (or are deleted on kernels that cannot update an element's expiry).
pub(crate) fn remove_ports_ops(p: &ContainerPorts, kernel: Kernel) -> Vec<Op> {
    let (elems, _) = owner_elements(p);
    let mut by_set: Vec<(String, Vec<Elem>)> = Vec::new();
    for (set, e) in elems {
        match by_set.iter_mut().find(|(s, _)| *s == set) {
            Some((_, v)) => v.push(e),
            None => by_set.push((set, vec![e])),
        }
    }
    by_set
        .into_iter()
        .map(|(set, es)| {
            if kernel.expiry_updates {
                PM.add(
                    &set,
                    es.into_iter()
                        .map(|e| Elem { comment: None, ..e }.timeout(EXPIRE_MS))
                        .collect(),
                )
            } else {
                PM.del(&set, es)
            }
        })
        .collect()
}

/// The transaction re-creating every owner's ports from scratch.
pub(crate) fn restore_ports_ops(all: &[ContainerPorts]) -> Vec<Op> {
    let mut ops = PM.drop_table();
    let with: Vec<&ContainerPorts> = all.iter().filter(|p| !p.mappings.is_empty()).collect();
    if with.is_empty() {
        return ops;
    }
    ops.extend(portmap_base_ops());
    let mut chains: Vec<(bool, u8)> = Vec::new();
    for p in &with {
        for c in owner_elements(p).1 {
            if !chains.contains(&c) {
                chains.push(c);
            }
        }
    }
    for (v6, len) in &chains {
        ops.extend(hairpin_chain_ops(*v6, *len));
    }
    for p in with {
        ops.extend(owner_elements(p).0.into_iter().map(|(set, e)| PM.add(&set, vec![e])));
    }
    ops
}

// ---------------------------------------------------------------------------------------
// MAC spoof check: diff.

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub(crate) fn macspoof_base_ops() -> Vec<Op> {
    vec![
        MS.table(),
        MS.set(SetDef::set("ports", &[types::IFNAME]).timeout()),
        MS.set(SetDef::set("allowed", &[types::IFNAME, types::ETHERADDR]).timeout()),
        MS.base_chain("guard", "filter", 0, -300),
        MS.rule(
            "guard",
            Rule::new().ifname_in(false, "ports").port_mac_not_in("allowed").verdict(Verdict::Drop),
        ),
    ]
}

fn guard_elems(port: &str, mac: &[u8; 6]) -> (Elem, Elem) {
    let p = ifname_key(port);
    let pair = Elem::new(
        [p.key.clone(), field(mac.to_vec())].concat(),
        format!("\"{port}\" . {}", mac_text(mac)),
    );
    (p, pair)
}

// ---------------------------------------------------------------------------------------
// Apply.

fn handle(sock: &mut Socket, t: &T) -> Result<Option<u64>, Error> {
    tables::table_handle(sock, t.family, t.table).map_err(kerr)
}

fn tag_conflict(e: Error, p: &ContainerPorts) -> Error {
    // A map element the kernel refuses with EEXIST: its key is held with other data.
    if e.msg.contains("File exists") {
        for m in &p.mappings {
            let (map, el) = mapping_element(m);
            if e.msg.contains(&format!("{map} {{ {}", el.key_text)) {
                return Error::conflict(format!(
                    "Bind for {} failed: port is already allocated (the kernel holds another mapping of it: {})",
                    m.bind_label(),
                    e.msg
                ));
            }
        }
    }
    e
}

impl Firewall for Nftables {
    fn kind(&self) -> crate::BackendKind {
        crate::BackendKind::Nftables
    }

    fn network_generation(&self) -> Result<Option<u64>, Error> {
        let mut s = open()?;
        let Some(b) = handle(&mut s, &BR)? else { return Ok(None) };
        let i = handle(&mut s, &ICC)?.unwrap_or(0);
        Ok(Some(b.wrapping_mul(1_000_003).wrapping_add(i)))
    }

    fn apply_network(&self, want: &NetworkRules, had: Option<&NetworkRules>) -> Result<(), Error> {
        want.validate()?;
        let mut s = open()?;
        let exist = (handle(&mut s, &BR)?.is_some(), handle(&mut s, &ICC)?.is_some());
        if !exist.0 && want.enforces_nothing() {
            return Ok(());
        }
        commit(&mut s, &apply_network_ops(want, had, exist, Kernel::running()))
    }

    fn remove_network(&self, had: &NetworkRules, last: bool) -> Result<(), Error> {
        let mut s = open()?;
        if last {
            let mut ops = BR.drop_table();
            ops.extend(ICC.drop_table());
            return commit(&mut s, &ops);
        }
        if had.enforces_nothing() {
            return Ok(());
        }
        let exist = (handle(&mut s, &BR)?.is_some(), handle(&mut s, &ICC)?.is_some());
        if !exist.0 {
            return Ok(());
        }
        let ops: Vec<Op> = network_remove_ops(had, Kernel::running())
            .into_iter()
            .filter(|o| exist.1 || !is_icc_elems(o))
            .collect();
        commit(&mut s, &ops)
    }

    fn restore_networks(&self, all: &[NetworkRules]) -> Result<(), Error> {
        for n in all {
            n.validate()?;
        }
        commit(&mut open()?, &restore_networks_ops(all))
    }

    fn check_network(&self, net: &NetworkRules) -> Result<(), Error> {
        net.validate()?;
        let Some(cur) = listing::list_table("inet", BRIDGE_TABLE)? else {
            return Err(Error::kernel(format!(
                "network {:?}: table inet {BRIDGE_TABLE} does not exist",
                net.network
            )));
        };
        let icc = if net.icc { None } else { listing::list_table("bridge", ICC_TABLE)? };
        let missing = check_network_listing(net, &cur, icc.as_ref());
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::kernel(format!(
                "network {:?}: firewall rules missing: {}",
                net.network,
                missing.join(", ")
            )))
        }
    }

    fn ports_generation(&self) -> Result<Option<u64>, Error> {
        handle(&mut open()?, &PM)
    }

    fn add_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        ports.validate()?;
        check_self_conflicts(ports)?;
        if ports.mappings.is_empty() {
            return Ok(());
        }
        let mut s = open()?;
        let exists = handle(&mut s, &PM)?.is_some();
        let mut missing = Vec::new();
        for (v6, len) in owner_elements(ports).1 {
            let there = exists
                && tables::chain_handle(
                    &mut s,
                    Family::Inet,
                    PORTMAP_TABLE,
                    &hairpin_chain(v6, len),
                )
                .map_err(kerr)?
                .is_some();
            if !there {
                missing.push((v6, len));
            }
        }
        commit(&mut s, &add_ports_ops(ports, exists, &missing)).map_err(|e| tag_conflict(e, ports))
    }

    fn remove_ports(&self, ports: &ContainerPorts, last: bool) -> Result<(), Error> {
        let mut s = open()?;
        if last {
            return commit(&mut s, &PM.drop_table());
        }
        if ports.mappings.is_empty() || handle(&mut s, &PM)?.is_none() {
            return Ok(());
        }
        commit(&mut s, &remove_ports_ops(ports, Kernel::running()))
    }

    fn restore_ports(&self, all: &[ContainerPorts]) -> Result<(), Error> {
        for p in all {
            p.validate()?;
        }
        commit(&mut open()?, &restore_ports_ops(all))
    }

    fn check_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        ports.validate()?;
        if ports.mappings.is_empty() {
            return Ok(());
        }
        let Some(cur) = listing::list_table("inet", PORTMAP_TABLE)? else {
            return Err(Error::kernel(format!(
                "ports of {}/{}: table inet {PORTMAP_TABLE} does not exist",
                ports.container_id, ports.ifname
            )));
        };
        let missing = check_ports_listing(ports, &cur);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::kernel(format!(
                "ports of {}/{}: missing {}",
                ports.container_id,
                ports.ifname,
                missing.join(", ")
            )))
        }
    }

    fn guard_mac(&self, port: &str, mac: &[u8; 6]) -> Result<(), Error> {
        crate::validate_ifname("bridge port", port)?;
        let mut s = open()?;
        let mut ops = if handle(&mut s, &MS)?.is_some() { Vec::new() } else { macspoof_base_ops() };
        let (p, pair) = guard_elems(port, mac);
        ops.push(MS.add("ports", vec![p]));
        ops.push(MS.add("allowed", vec![pair]));
        commit(&mut s, &ops)
    }

    fn unguard_mac(&self, port: &str, mac: &[u8; 6], last: bool) -> Result<(), Error> {
        let mut s = open()?;
        if last {
            return commit(&mut s, &MS.drop_table());
        }
        if handle(&mut s, &MS)?.is_none() {
            return Ok(());
        }
        let (p, pair) = guard_elems(port, mac);
        let ops = if Kernel::running().expiry_updates {
            vec![
                MS.add("ports", vec![p.timeout(EXPIRE_MS)]),
                MS.add("allowed", vec![pair.timeout(EXPIRE_MS)]),
            ]
        } else {
            // Delete if present: add first so the delete cannot fail on absence.
            vec![
                MS.add("ports", vec![p.clone()]),
                MS.del("ports", vec![p]),
                MS.add("allowed", vec![pair.clone()]),
                MS.del("allowed", vec![pair]),
            ]
        };
        commit(&mut s, &ops)
    }

    fn check_mac(&self, port: &str, mac: &[u8; 6]) -> Result<(), Error> {
        let cur = listing::list_table("bridge", MACSPOOF_TABLE)?;
        // nft lists the concatenation without quoting the name.
        let want = format!("{port} . {}", mac_text(mac));
        if cur.is_some_and(|l| l.find("allowed", &want).is_some()) {
            Ok(())
        } else {
            Err(Error::kernel(format!("mac spoof check for {port} ({}) is missing", mac_text(mac))))
        }
    }

    fn status(&self) -> Result<crate::Status, Error> {
        // The kernel answers nf_tables requests (a lookup of our table, present or not).
        let mut s = Socket::open().map_err(|e| Error::unavailable(format!("nftables: {e}")))?;
        tables::table_handle(&mut s, Family::Inet, BRIDGE_TABLE)
            .map_err(|e| Error::unavailable(format!("nftables: {e}")))?;
        Ok(crate::Status {
            foreign_drop: listing::list_chains().and_then(|l| describe_foreign_drops(&l)),
        })
    }
}

// ---------------------------------------------------------------------------------------
// CHECK (from `nft -j` listings; not on the ADD/DEL path).

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// Differences between the wanted network rules and the listing (empty = all present).
pub(crate) fn check_network_listing(
    net: &NetworkRules,
    cur: &Listing,
    icc: Option<&Listing>,
) -> Vec<String> {
    let names = net_names(&net.network);
    let mut missing = Vec::new();
    let (from_rules, to_rules, masq_rules) = network_chain_rules(net);
    for (chain, n) in [("br_forward", 2), ("br_post", 2)] {
        if !cur.has_chain(chain) || cur.rules.get(chain).copied().unwrap_or(0) != n {
            missing.push(format!("base chain {chain}"));
        }
    }
    let mut chains = vec![(&names.from, from_rules.len()), (&names.to, to_rules.len())];
    if !masq_rules.is_empty() {
        chains.push((&names.masq, masq_rules.len()));
    }
    for (chain, n) in chains {
        let have = cur.rules.get(chain.as_str()).copied().unwrap_or(0);
        if !cur.has_chain(chain) {
            missing.push(format!("chain {chain}"));
        } else if have != n {
            missing.push(format!("chain {chain} has {have} rules, expected {n}"));
        }
    }
    let bq = q(&net.bridge);
    let want = |set: &str, key: &str, data: Option<String>, missing: &mut Vec<String>| match cur
        .find(set, key)
    {
        Some(e) if data.is_none() || e.data == data => {}
        _ => missing.push(format!("element {key} in {set}")),
    };
    want("from_br", &bq, Some(format!("jump {}", names.from)), &mut missing);
    want("to_br", &bq, Some(format!("jump {}", names.to)), &mut missing);
    want("bridges", &bq, None, &mut missing);
    let subnets = normalized(&net.subnets);
    if !masq_rules.is_empty() {
        for n in &subnets {
            let data = Some(format!("jump {}", names.masq));
            want(&format!("masq{}", fam(n)), &net_key(n), data, &mut missing);
        }
    }
    if !net.icc {
        match icc {
            None => missing.push(format!("table bridge {ICC_TABLE}")),
            Some(l) => {
                for n in &subnets {
                    let set = format!("icc{}", fam(n));
                    if l.find(&set, &net_key(n)).is_none() {
                        missing.push(format!("element {} in {ICC_TABLE} {set}", net_key(n)));
                    }
                }
            }
        }
    }
    missing
}

const PORTMAP_BASE_RULES: [(&str, usize); 5] =
    [("pm_dnat", 4), ("pm_pre", 1), ("pm_out", 1), ("pm_post", 5), ("pm_input", 1)];

/// What is missing of one owner's mappings (empty = all present).
pub(crate) fn check_ports_listing(p: &ContainerPorts, cur: &Listing) -> Vec<String> {
    let mut missing = Vec::new();
    for (chain, n) in PORTMAP_BASE_RULES {
        if !cur.has_chain(chain) || cur.rules.get(chain).copied().unwrap_or(0) != n {
            missing.push(format!("base chain {chain}"));
        }
    }
    for (set, e) in owner_elements(p).0 {
        let want_data = match &e.data {
            Some(ElemData::Value(_, t)) => Some(t.clone()),
            Some(ElemData::Verdict(v)) => Some(v.text()),
            None => None,
        };
        match cur.find(&set, &e.key_text) {
            Some(x) if want_data.is_none() || x.data == want_data => {}
            Some(x) => missing.push(format!(
                "{set} element {} maps to {} instead of {}",
                e.key_text,
                x.data.as_deref().unwrap_or("?"),
                want_data.unwrap_or_default()
            )),
            None => missing.push(format!("{set} element {}", e.key_text)),
        }
    }
    missing
}

pub(crate) fn describe_foreign_drops(l: &Listing) -> Option<String> {
    let ours = [BRIDGE_TABLE, ICC_TABLE, PORTMAP_TABLE, MACSPOOF_TABLE];
    let found: Vec<String> = l
        .chains
        .iter()
        .filter(|c| {
            c.hook.as_deref() == Some("forward")
                && c.policy.as_deref() == Some("drop")
                && matches!(c.family.as_str(), "ip" | "ip6" | "inet")
                && !ours.contains(&c.table.as_str())
        })
        .map(|c| format!("table {} {} chain {}", c.family, c.table, c.name))
        .collect();
    if found.is_empty() {
        None
    } else {
        Some(format!(
            "forward hook with policy drop in {} (e.g. Docker's iptables FORWARD DROP): forwarded container traffic is dropped there unless that table accepts it",
            found.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    const K: Kernel = Kernel { expiry_updates: true, destroy: true };
    const OLD: Kernel = Kernel { expiry_updates: false, destroy: false };

    fn net() -> NetworkRules {
        let mut n = NetworkRules::new(
            "podman",
            "cni-podman0",
            vec!["10.88.0.1/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
        );
        n.isolate = true;
        n
    }

    fn ports() -> ContainerPorts {
        let mut p = ContainerPorts::new("podman", "abc", "eth0");
        p.mappings = vec![
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_ip: "10.88.0.5".parse().unwrap(),
                container_port: 80,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host_ip: Some("192.168.1.1".parse().unwrap()),
                host_port: 53,
                container_ip: "10.88.0.5".parse().unwrap(),
                container_port: 53,
                protocol: Protocol::Udp,
            },
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_ip: "fd00::5".parse().unwrap(),
                container_port: 80,
                protocol: Protocol::Tcp,
            },
        ];
        p.container_nets = vec!["10.88.0.5/16".parse().unwrap(), "fd00::5/64".parse().unwrap()];
        p
    }

    /// Compares a whole rendered transaction with `tests/golden/<name>.nft`
    /// (`UPDATE_GOLDEN=1` rewrites the file).
    fn golden(name: &str, ops: &[Op]) {
        let text = nfnetlink::render(ops);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.nft"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(text, want, "{name}: rendered transaction differs from {}", path.display());
    }

    #[test]
    fn golden_first_network() {
        golden("network_first", &apply_network_ops(&net(), None, (false, false), K));
    }

    #[test]
    fn golden_network_changed_and_removed() {
        let mut changed = net();
        changed.isolate = false;
        changed.icc = false;
        changed.subnets = vec!["10.89.0.0/24".parse().unwrap()];
        golden("network_changed", &apply_network_ops(&changed, Some(&net()), (true, false), K));
        golden("network_removed", &network_remove_ops(&changed, K));
        golden("network_removed_old_kernel", &network_remove_ops(&changed, OLD));
        // Unchanged: nothing to send.
        assert!(apply_network_ops(&net(), Some(&net()), (true, false), K).is_empty());
        // A config that drops every rule removes the old ones.
        let mut none = net();
        none.isolate = false;
        none.masquerade = false;
        let ops = apply_network_ops(&none, Some(&net()), (true, false), K);
        assert_eq!(ops, network_remove_ops(&net(), K));
    }

    #[test]
    fn golden_restore() {
        let mut other =
            NetworkRules::new("other net", "br-o", vec!["10.90.0.0/24".parse().unwrap()]);
        other.internal = true;
        golden("networks_restored", &restore_networks_ops(&[net(), other]));
    }

    #[test]
    fn golden_ports() {
        golden("ports_first", &add_ports_ops(&ports(), false, &[(false, 16), (true, 64)]));
        golden("ports_next", &add_ports_ops(&ports(), true, &[]));
        let k = Kernel { expiry_updates: true, destroy: true };
        golden("ports_removed", &remove_ports_ops(&ports(), k));
        let old = Kernel { expiry_updates: false, destroy: false };
        golden("ports_removed_old_kernel", &remove_ports_ops(&ports(), old));
        let mut q = ports();
        q.container_id = "def".into();
        q.masq_all = true;
        q.mappings.truncate(1);
        q.mappings[0].container_ip = "10.88.0.6".parse().unwrap();
        q.mappings[0].host_port = 9090;
        golden("ports_restored", &restore_ports_ops(&[ports(), q]));
    }

    #[test]
    fn removing_ports_deletes_nothing_on_new_kernels() {
        let k = Kernel::of_release("6.18.44-fc-v669");
        assert!(k.expiry_updates && k.destroy);
        assert!(!Kernel::of_release("6.1.0-21-amd64").expiry_updates);
        assert!(remove_ports_ops(&ports(), k).iter().all(|o| !o.deletes()));
        assert!(add_ports_ops(&ports(), true, &[]).iter().all(|o| !o.deletes()));
    }

    #[test]
    fn self_conflicts_are_refused() {
        let mut p = ports();
        let mut m = p.mappings[0];
        m.container_port = 81;
        p.mappings.push(m);
        let e = check_self_conflicts(&p).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Invalid);
        assert!(e.msg.contains("same host port"), "{e}");
    }

    #[test]
    fn intervals_end_after_the_subnet() {
        let e = interval(&"10.88.0.1/16".parse().unwrap(), None);
        assert_eq!(e[0].key_text, "10.88.0.0/16");
        assert_eq!(e[1].key, vec![10, 89, 0, 0]);
        assert!(e[1].interval_end);
        assert_eq!(interval(&"255.255.255.0/24".parse().unwrap(), None).len(), 1);
    }

    #[test]
    fn foreign_drop_detection() {
        let l = Listing::parse(r#"{"nftables": [
          {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
          {"chain": {"family": "inet", "table": "cni_bridge", "name": "br_forward", "hook": "forward", "policy": "accept"}}
        ]}"#).unwrap();
        let d = describe_foreign_drops(&l).unwrap();
        assert!(d.contains("table ip filter chain FORWARD"), "{d}");
        assert!(describe_foreign_drops(&Listing::default()).is_none());
    }
}
