//! Docker's embedded-DNS redirect inside one container namespace: 127.0.0.11:53 (UDP and
//! TCP) is DNATed to the ports where the dns-alias daemon's sockets for that namespace
//! listen, so nothing of ours takes port 53 and the container may run its own server on it.
//!
//! Self-contained on purpose (the rest of the crate's nftables backend may change under it):
//! one table, `ip cni_dns`, with one nat output chain, in the network namespace of the
//! calling thread, programmed over nfnetlink (no `nft` child: an `nft -f` cost ~12 ms per
//! container, the batch ~0.2 ms). What `nft list ruleset` shows in the container is what
//! the `nft` script this replaced made. The API is four calls: [`install`], [`remove`],
//! [`installed`] (what the table points at now, read from the kernel, so a restarted
//! daemon can bind the same ports again and keep long-lived client sockets working) and
//! [`available`].
//!
//! Every call reads the kernel's state first and sends only what changes it (nothing when
//! it is already as wanted), so no call relies on a refusal to find out what is there.
//!
//! Changing where 127.0.0.11:53 leads, or removing it, also drops the conntrack entries of
//! the old redirect ([`crate::conntrack::flush_dns_redirect`]): a client that keeps its source
//! port would otherwise keep being sent to a socket that no longer exists (or, for flows
//! created while no redirect existed, keep bypassing the new one) for as long as it keeps
//! sending.

use crate::{conntrack, Error};
use nfnetlink::expr::{IPPROTO_TCP, IPPROTO_UDP};
use nfnetlink::tables::{self, TableInfo};
use nfnetlink::{Expr, Family, Hook, Op, Rule, Socket};
use std::net::{IpAddr, Ipv4Addr};

/// The table we own inside each container namespace (never in the host namespace).
pub const TABLE: &str = "cni_dns";
/// Its one chain.
pub const CHAIN: &str = "output";
/// Docker's embedded DNS address.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// DNAT in the nat output hook at the usual dstnat priority, like Docker; conntrack
/// rewrites the replies' source port back to 53.
const HOOK: Hook = Hook { kind: "nat", num: 3, priority: -100 };

/// Where 127.0.0.11:53 leads in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub udp_port: u16,
    pub tcp_port: u16,
}

/// What the kernel holds of our table in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub table: Option<TableInfo>,
    /// Our chain with its hook and policy.
    pub chain: Option<nfnetlink::ChainInfo>,
    /// The expressions of the chain's rules, in order.
    pub rules: Vec<Vec<Expr>>,
}

impl State {
    /// The redirect the table holds when it holds exactly what [`install_ops`] makes
    /// (one chain, its hook, its two rules); `None` for no table or anything else in it.
    pub fn redirect(&self) -> Option<Redirect> {
        let (table, chain) = (self.table.as_ref()?, self.chain.as_ref()?);
        if table.objects != 1 || chain.hook != Some(HOOK) || chain.policy != Some(1) {
            return None;
        }
        let [udp, tcp] = self.rules.as_slice() else {
            return None;
        };
        let r = Redirect { udp_port: dnat_port(udp)?, tcp_port: dnat_port(tcp)? };
        let [want_udp, want_tcp] = rules(r);
        (*udp == want_udp.exprs && *tcp == want_tcp.exprs).then_some(r)
    }
}

/// The port a rule's `dnat to` loads (the rule is checked as a whole by the caller).
fn dnat_port(exprs: &[Expr]) -> Option<u16> {
    exprs.iter().find_map(|e| match e {
        Expr::ImmediateData { dreg: nfnetlink::expr::REG_2, data } => {
            Some(u16::from_be_bytes(data.as_slice().try_into().ok()?))
        }
        _ => None,
    })
}

/// Our two rules: `ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:<udp_port>`, and
/// the same for TCP. Other addresses' port 53 are untouched.
pub fn rules(r: Redirect) -> [Rule; 2] {
    let dns = (IpAddr::V4(DNS_ADDR), 32);
    let rule = |proto, port| {
        Rule::ip().addr_in_net(true, dns).dport_eq(proto, 53).dnat_to(IpAddr::V4(DNS_ADDR), port)
    };
    [rule(IPPROTO_UDP, r.udp_port), rule(IPPROTO_TCP, r.tcp_port)]
}

fn drop_table() -> Op {
    Op::DelTable { family: Family::Ip, name: TABLE.into() }
}

/// The transaction that makes the table hold exactly `r`: a table that exists (in any
/// shape) is deleted and made again in the same batch.
pub fn install_ops(table_exists: bool, r: Redirect) -> Vec<Op> {
    let mut ops = Vec::new();
    if table_exists {
        ops.push(drop_table());
    }
    ops.push(Op::AddTable { family: Family::Ip, name: TABLE.into() });
    ops.push(Op::AddChain {
        family: Family::Ip,
        table: TABLE.into(),
        name: CHAIN.into(),
        hook: Some(HOOK),
        comment: None,
    });
    for rule in rules(r) {
        ops.push(Op::AddRule {
            family: Family::Ip,
            table: TABLE.into(),
            chain: CHAIN.into(),
            rule,
        });
    }
    ops
}

/// The transaction that removes the table: nothing when it does not exist.
pub fn remove_ops(table_exists: bool) -> Vec<Op> {
    if table_exists {
        vec![drop_table()]
    } else {
        vec![]
    }
}

fn kerr(e: nfnetlink::Error) -> Error {
    Error::kernel(format!("nftables (table ip {TABLE}): {e}"))
}

/// Reads our table, chain and rules (three requests; one when there is no table).
pub fn read(sock: &mut Socket) -> Result<State, Error> {
    let table = tables::table_info(sock, Family::Ip, TABLE).map_err(kerr)?;
    if table.is_none() {
        return Ok(State { table, chain: None, rules: vec![] });
    }
    let chain = tables::chain_info(sock, Family::Ip, TABLE, CHAIN).map_err(kerr)?;
    let rules = match chain {
        Some(_) => tables::chain_rules(sock, Family::Ip, TABLE, CHAIN)
            .map_err(kerr)?
            .into_iter()
            .map(|r| r.exprs)
            .collect(),
        None => vec![],
    };
    Ok(State { table, chain, rules })
}

/// Points 127.0.0.11:53 at `r` in the calling thread's namespace. When it already does,
/// nothing is sent and live connections are left alone; otherwise the table is replaced in
/// one transaction and the old flows are flushed.
pub fn install(r: Redirect) -> Result<(), Error> {
    let mut sock = Socket::open().map_err(kerr)?;
    let state = read(&mut sock)?;
    if state.redirect() == Some(r) {
        return Ok(());
    }
    nfnetlink::commit(&mut sock, &install_ops(state.table.is_some(), r)).map_err(kerr)?;
    conntrack::flush_dns_redirect();
    Ok(())
}

/// Removes the redirect from the calling thread's namespace, and its flows; nothing to do
/// when the table is not there.
pub fn remove() -> Result<(), Error> {
    let mut sock = Socket::open().map_err(kerr)?;
    let table = tables::table_info(&mut sock, Family::Ip, TABLE).map_err(kerr)?;
    let ops = remove_ops(table.is_some());
    if ops.is_empty() {
        return Ok(());
    }
    nfnetlink::commit(&mut sock, &ops).map_err(kerr)?;
    conntrack::flush_dns_redirect();
    Ok(())
}

/// Where 127.0.0.11:53 leads in the calling thread's namespace, if our table is there and
/// holds exactly our redirect.
pub fn installed() -> Option<Redirect> {
    let mut sock = Socket::open().ok()?;
    read(&mut sock).ok()?.redirect()
}

/// Whether the kernel answers nf_tables requests in the calling thread's namespace (a
/// lookup of our table, present or not).
pub fn available() -> Result<(), Error> {
    let unavailable = |e: nfnetlink::Error| Error::unavailable(format!("nftables: {e}"));
    let mut sock = Socket::open().map_err(unavailable)?;
    tables::table_info(&mut sock, Family::Ip, TABLE).map_err(unavailable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfnetlink::ChainInfo;

    const R: Redirect = Redirect { udp_port: 40000, tcp_port: 40001 };

    #[test]
    fn transaction_reads_like_the_nft_script() {
        assert_eq!(
            nfnetlink::render(&install_ops(false, R)),
            "add table ip cni_dns\n\
             add chain ip cni_dns output { type nat hook output priority -100; policy accept; }\n\
             add rule ip cni_dns output ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40000\n\
             add rule ip cni_dns output ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:40001\n"
        );
        let replace = install_ops(true, R);
        assert_eq!(replace[0].text(), "delete table ip cni_dns");
        assert_eq!(replace[1..], install_ops(false, R)[..]);
        assert_eq!(nfnetlink::render(&remove_ops(true)), "delete table ip cni_dns\n");
        assert!(remove_ops(false).is_empty());
    }

    #[test]
    fn rules_are_what_nft_sends() {
        // `nft --debug=netlink` for `ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40000`
        use nfnetlink::expr::*;
        let [udp, _] = rules(R);
        assert_eq!(
            udp.exprs,
            vec![
                Expr::Payload { base: PAYLOAD_NETWORK, offset: 16, len: 4, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: vec![127, 0, 0, 11] },
                Expr::Meta { key: meta::L4PROTO, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: vec![17] },
                Expr::Payload { base: PAYLOAD_TRANSPORT, offset: 2, len: 2, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: vec![0, 53] },
                Expr::ImmediateData { dreg: REG_1, data: vec![127, 0, 0, 11] },
                Expr::ImmediateData { dreg: REG_2, data: vec![0x9c, 0x40] },
                Expr::Nat { dnat: true, family: NFPROTO_IPV4, addr: REG_1, proto: REG_2, flags: 0 },
            ]
        );
    }

    fn state(objects: u32, hook: Hook, rules: Vec<Vec<Expr>>) -> State {
        State {
            table: Some(TableInfo { handle: 1, objects }),
            chain: Some(ChainInfo { handle: 1, hook: Some(hook), policy: Some(1) }),
            rules,
        }
    }

    #[test]
    fn only_exactly_our_table_is_a_redirect() {
        let ours = || rules(R).map(|r| r.exprs).to_vec();
        assert_eq!(state(1, HOOK, ours()).redirect(), Some(R));
        let none = State { table: None, chain: None, rules: vec![] };
        assert_eq!(none.redirect(), None);
        // another object in the table, another priority, a missing or extra rule
        assert_eq!(state(2, HOOK, ours()).redirect(), None);
        assert_eq!(state(1, Hook { priority: 0, ..HOOK }, ours()).redirect(), None);
        assert_eq!(state(1, HOOK, ours()[..1].to_vec()).redirect(), None);
        let mut extra = ours();
        extra.push(ours()[0].clone());
        assert_eq!(state(1, HOOK, extra).redirect(), None);
        // a rule whose match differs from ours (port 54)
        let mut other = ours();
        other[0][5] = Expr::Cmp { sreg: 1, op: 0, data: vec![0, 54] };
        assert_eq!(state(1, HOOK, other).redirect(), None);
        // the rules swapped (TCP first)
        let mut swapped = ours();
        swapped.reverse();
        assert_eq!(state(1, HOOK, swapped).redirect(), None);
    }
}
