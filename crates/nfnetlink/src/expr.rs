//! nf_tables expressions (the kernel's VM instructions) and the rules built from them.
//!
//! A [`Rule`] is built statement by statement; each builder method appends the
//! expressions `nft` itself would send and the text `nft list` prints for them, so the
//! rendered text of a rule set (golden tests) and what the kernel holds agree.

use std::net::IpAddr;

use crate::attr::{self, Attrs};

// Registers: the verdict register, 16-byte registers 1..4 and 4-byte registers 8..23.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;
const REG32_00: u32 = 8;

/// The register of the `idx`-th 4-byte word, named the way nft names it (a 16-byte
/// register when the word starts one).
pub fn reg_at(word: u32) -> u32 {
    if word.is_multiple_of(4) {
        REG_1 + word / 4
    } else {
        REG32_00 + word
    }
}

pub mod meta {
    pub const PROTOCOL: u32 = 1;
    pub const IIFNAME: u32 = 6;
    pub const OIFNAME: u32 = 7;
    pub const NFPROTO: u32 = 15;
    pub const L4PROTO: u32 = 16;
}

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const CMP_EQ: u32 = 0;
pub const CMP_NEQ: u32 = 1;
pub const PAYLOAD_LL: u32 = 0;
pub const PAYLOAD_NETWORK: u32 = 1;
pub const PAYLOAD_TRANSPORT: u32 = 2;
/// `ct status` bit of a destination-NATed connection (IPS_DST_NAT).
pub const CT_STATUS_DNAT: u32 = 0x20;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// `nat` flags: MAP_IPS goes with an address register (the kernel adds it),
/// PROTO_SPECIFIED with a port register (nft sends it, and so do we; kernels add it too).
pub const NAT_RANGE_MAP_IPS: u32 = 0x1;
pub const NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;

/// A verdict: the data of an immediate or of a verdict map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Return => -5,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
        }
    }

    /// NFTA_DATA_VERDICT inside an NFTA_*_DATA attribute.
    pub fn encode(&self, a: &mut Attrs) {
        a.nested(2, |v| {
            v.put_be32(1, self.code() as u32);
            if let Verdict::Jump(c) = self {
                v.put_str(2, c);
            }
        });
    }
}

/// One expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Bitwise {
        reg: u32,
        mask: Vec<u8>,
    },
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    Immediate(Verdict),
    /// A value loaded into a data register.
    ImmediateData {
        dreg: u32,
        data: Vec<u8>,
    },
    Nat {
        dnat: bool,
        family: u8,
        addr: u32,
        proto: u32,
        /// NF_NAT_RANGE_* flags beyond the ones the registers imply (0 for all we build).
        flags: u32,
    },
    Masq,
    /// `fib daddr type`: the address type of the destination.
    FibDaddrType {
        dreg: u32,
    },
    CtStatus {
        dreg: u32,
    },
    /// Read back from the kernel: an expression (or a form of one) we never build, by name.
    /// It equals nothing we build, so a rule holding one never matches a wanted rule.
    Foreign(String),
}

fn data_value(a: &mut Attrs, kind: u16, v: &[u8]) {
    a.nested(kind, |d| {
        d.put(1, v);
    });
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate(_) | Expr::ImmediateData { .. } => "immediate",
            Expr::Nat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::FibDaddrType { .. } => "fib",
            Expr::CtStatus { .. } => "ct",
            Expr::Foreign(_) => "foreign",
        }
    }

    /// NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }.
    pub fn encode(&self, a: &mut Attrs) {
        a.begin(1);
        a.put_str(1, self.name());
        a.begin(2);
        match self {
            Expr::Meta { key, dreg } => {
                a.put_be32(2, *key).put_be32(1, *dreg);
            }
            Expr::Cmp { sreg, op, data } => {
                a.put_be32(1, *sreg).put_be32(2, *op);
                data_value(a, 3, data);
            }
            Expr::Payload { base, offset, len, dreg } => {
                a.put_be32(1, *dreg).put_be32(2, *base).put_be32(3, *offset).put_be32(4, *len);
            }
            Expr::Bitwise { reg, mask } => {
                a.put_be32(1, *reg).put_be32(2, *reg).put_be32(3, mask.len() as u32);
                data_value(a, 4, mask);
                data_value(a, 5, &vec![0; mask.len()]);
            }
            Expr::Lookup { set, sreg, dreg, invert } => {
                a.put_str(1, set).put_be32(2, *sreg);
                if let Some(d) = dreg {
                    a.put_be32(3, *d);
                }
                if *invert {
                    a.put_be32(5, 1); // NFT_LOOKUP_F_INV
                }
            }
            Expr::Immediate(v) => {
                a.put_be32(1, REG_VERDICT);
                a.nested(2, |d| v.encode(d));
            }
            Expr::ImmediateData { dreg, data } => {
                a.put_be32(1, *dreg);
                data_value(a, 2, data);
            }
            Expr::Nat { dnat, family, addr, proto, flags } => {
                a.put_be32(1, *dnat as u32)
                    .put_be32(2, *family as u32)
                    .put_be32(3, *addr)
                    .put_be32(5, *proto)
                    .put_be32(7, flags | NAT_RANGE_PROTO_SPECIFIED);
            }
            Expr::Masq => {}
            Expr::FibDaddrType { dreg } => {
                // NFTA_FIB_DREG, NFTA_FIB_RESULT = ADDRTYPE, NFTA_FIB_FLAGS = DADDR.
                a.put_be32(1, *dreg).put_be32(2, 3).put_be32(3, 2);
            }
            Expr::CtStatus { dreg } => {
                // NFTA_CT_DREG, NFTA_CT_KEY = NFT_CT_STATUS.
                a.put_be32(1, *dreg).put_be32(2, 2);
            }
            Expr::Foreign(name) => debug_assert!(false, "encoding a foreign expression {name}"),
        }
        a.end();
        a.end();
    }

    /// Decodes the expressions of a rule as the kernel dumps them (the payload of
    /// NFTA_RULE_EXPRESSIONS). The kernel's own derivations are undone (a NAT range whose
    /// max equals its min, the MAP_IPS flag it sets for an address register), so a rule we
    /// built reads back equal to [`Rule::exprs`]; anything else becomes [`Expr::Foreign`].
    pub fn decode_list(list: &[u8]) -> Vec<Expr> {
        attr::parse(list)
            .into_iter()
            .filter(|(k, _)| *k == 1)
            .map(|(_, elem)| {
                let name = attr::find(elem, 1).map(attr::string).unwrap_or_default();
                let data = attr::find(elem, 2).unwrap_or(&[]);
                Expr::decode(&name, data).unwrap_or(Expr::Foreign(name))
            })
            .collect()
    }

    fn decode(name: &str, data: &[u8]) -> Option<Expr> {
        let attrs = attr::parse(data);
        let u32_of = |k: u16| attrs.iter().find(|(t, _)| *t == k).and_then(|(_, v)| attr::be32(v));
        let value_of = |k: u16| {
            attrs
                .iter()
                .find(|(t, _)| *t == k)
                .and_then(|(_, v)| attr::find(v, 1))
                .map(<[u8]>::to_vec)
        };
        // Every attribute present must be one this form of the expression knows.
        let only = |known: &[u16]| attrs.iter().all(|(t, _)| known.contains(t));
        match name {
            "meta" if only(&[1, 2]) => Some(Expr::Meta { key: u32_of(2)?, dreg: u32_of(1)? }),
            "cmp" if only(&[1, 2, 3]) => {
                Some(Expr::Cmp { sreg: u32_of(1)?, op: u32_of(2)?, data: value_of(3)? })
            }
            "payload" if only(&[1, 2, 3, 4]) => Some(Expr::Payload {
                dreg: u32_of(1)?,
                base: u32_of(2)?,
                offset: u32_of(3)?,
                len: u32_of(4)?,
            }),
            // NFTA_BITWISE_OP (6) is dumped as 0 (a mask-and-xor) by newer kernels.
            "bitwise" if only(&[1, 2, 3, 4, 5, 6]) => {
                let (reg, mask) = (u32_of(1)?, value_of(4)?);
                let plain = u32_of(2)? == reg
                    && u32_of(3)? as usize == mask.len()
                    && value_of(5)?.iter().all(|b| *b == 0)
                    && u32_of(6).unwrap_or(0) == 0;
                plain.then_some(Expr::Bitwise { reg, mask })
            }
            "lookup" if only(&[1, 2, 3, 5]) => {
                let flags = u32_of(5).unwrap_or(0);
                (flags & !1 == 0).then_some(())?;
                Some(Expr::Lookup {
                    set: attr::string(attrs.iter().find(|(t, _)| *t == 1)?.1),
                    sreg: u32_of(2)?,
                    dreg: u32_of(3),
                    invert: flags & 1 != 0,
                })
            }
            "immediate" if only(&[1, 2]) => {
                let dreg = u32_of(1)?;
                let d = attrs.iter().find(|(t, _)| *t == 2)?.1;
                if dreg != REG_VERDICT {
                    return Some(Expr::ImmediateData { dreg, data: attr::find(d, 1)?.to_vec() });
                }
                let v = attr::find(d, 2)?;
                let chain = attr::find(v, 2).map(attr::string);
                let verdict = match (attr::find(v, 1).and_then(attr::be32)? as i32, chain) {
                    (0, None) => Verdict::Drop,
                    (1, None) => Verdict::Accept,
                    (-5, None) => Verdict::Return,
                    (-3, Some(c)) => Verdict::Jump(c),
                    _ => return None,
                };
                Some(Expr::Immediate(verdict))
            }
            "nat" if only(&[1, 2, 3, 4, 5, 6, 7]) => {
                let (addr, proto) = (u32_of(3)?, u32_of(5)?);
                // The kernel dumps max = min when no range was given.
                (u32_of(4).unwrap_or(addr) == addr && u32_of(6).unwrap_or(proto) == proto)
                    .then_some(())?;
                Some(Expr::Nat {
                    dnat: u32_of(1)? == 1,
                    family: u8::try_from(u32_of(2)?).ok()?,
                    addr,
                    proto,
                    flags: u32_of(7).unwrap_or(0)
                        & !(NAT_RANGE_MAP_IPS | NAT_RANGE_PROTO_SPECIFIED),
                })
            }
            "masq" if attrs.is_empty() => Some(Expr::Masq),
            "fib" if only(&[1, 2, 3]) && u32_of(2)? == 3 && u32_of(3)? == 2 => {
                Some(Expr::FibDaddrType { dreg: u32_of(1)? })
            }
            "ct" if only(&[1, 2]) && u32_of(2)? == 2 => Some(Expr::CtStatus { dreg: u32_of(1)? }),
            _ => None,
        }
    }
}

/// Interface names are compared as 16 bytes, NUL padded (IFNAMSIZ).
pub fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(16, 0);
    v
}

/// One rule: its expressions, the text `nft list` shows, an optional comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub exprs: Vec<Expr>,
    words: Vec<String>,
    pub comment: Option<String>,
    table: TableKind,
}

/// The family of the table a rule is for, as far as the rule's expressions depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TableKind {
    /// `inet`: an address match checks the family first (`meta nfproto`).
    #[default]
    Inet,
    /// `bridge`: the L3 protocol is the frame's ethertype (`meta protocol`).
    Bridge,
    /// `ip`: IPv4 is implied, no family check.
    Ip,
}

impl Rule {
    pub fn new() -> Rule {
        Rule::default()
    }

    /// A rule for a `bridge` family table.
    pub fn bridge() -> Rule {
        Rule { table: TableKind::Bridge, ..Rule::default() }
    }

    /// A rule for an `ip` family table (IPv4 only).
    pub fn ip() -> Rule {
        Rule { table: TableKind::Ip, ..Rule::default() }
    }

    /// The rule as `nft list` prints it.
    pub fn text(&self) -> String {
        let mut t = self.words.join(" ");
        if let Some(c) = &self.comment {
            t += &format!(" comment \"{c}\"");
        }
        t
    }

    fn push(mut self, words: impl Into<String>, exprs: Vec<Expr>) -> Rule {
        let w = words.into();
        if !w.is_empty() {
            self.words.push(w);
        }
        self.exprs.extend(exprs);
        self
    }

    fn meta_cmp(self, key: u32, word: &str, op: u32, name: &str) -> Rule {
        let o = if op == CMP_NEQ { "!= " } else { "" };
        self.push(
            format!("{word} {o}\"{name}\""),
            vec![
                Expr::Meta { key, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op, data: ifname_bytes(name) },
            ],
        )
    }

    pub fn iifname_eq(self, name: &str) -> Rule {
        self.meta_cmp(meta::IIFNAME, "iifname", CMP_EQ, name)
    }
    pub fn iifname_ne(self, name: &str) -> Rule {
        self.meta_cmp(meta::IIFNAME, "iifname", CMP_NEQ, name)
    }
    pub fn oifname_eq(self, name: &str) -> Rule {
        self.meta_cmp(meta::OIFNAME, "oifname", CMP_EQ, name)
    }
    pub fn oifname_ne(self, name: &str) -> Rule {
        self.meta_cmp(meta::OIFNAME, "oifname", CMP_NEQ, name)
    }

    /// `iifname @set` / `oifname @set`.
    pub fn ifname_in(self, out: bool, set: &str) -> Rule {
        let (key, word) = if out { (meta::OIFNAME, "oifname") } else { (meta::IIFNAME, "iifname") };
        self.push(
            format!("{word} @{set}"),
            vec![
                Expr::Meta { key, dreg: REG_1 },
                Expr::Lookup { set: set.into(), sreg: REG_1, dreg: None, invert: false },
            ],
        )
    }

    /// `iifname vmap @map` / `oifname vmap @map`.
    pub fn ifname_vmap(self, out: bool, map: &str) -> Rule {
        let (key, word) = if out { (meta::OIFNAME, "oifname") } else { (meta::IIFNAME, "iifname") };
        self.push(
            format!("{word} vmap @{map}"),
            vec![
                Expr::Meta { key, dreg: REG_1 },
                Expr::Lookup {
                    set: map.into(),
                    sreg: REG_1,
                    dreg: Some(REG_VERDICT),
                    invert: false,
                },
            ],
        )
    }

    fn nfproto(&self, v6: bool) -> Vec<Expr> {
        if self.table == TableKind::Ip {
            debug_assert!(!v6, "an IPv6 match in an ip table");
            return vec![];
        }
        if self.table == TableKind::Bridge {
            // `meta protocol` (the ethertype, network byte order).
            let et: u16 = if v6 { 0x86dd } else { 0x0800 };
            return vec![
                Expr::Meta { key: meta::PROTOCOL, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: et.to_be_bytes().to_vec() },
            ];
        }
        vec![
            Expr::Meta { key: meta::NFPROTO, dreg: REG_1 },
            Expr::Cmp {
                sreg: REG_1,
                op: CMP_EQ,
                data: vec![if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }],
            },
        ]
    }

    fn addr_load(v6: bool, daddr: bool, dreg: u32) -> Expr {
        let (offset, len) = match (v6, daddr) {
            (false, false) => (12, 4),
            (false, true) => (16, 4),
            (true, false) => (8, 16),
            (true, true) => (24, 16),
        };
        Expr::Payload { base: PAYLOAD_NETWORK, offset, len, dreg }
    }

    fn addr_word(v6: bool, daddr: bool) -> String {
        format!("{} {}", if v6 { "ip6" } else { "ip" }, if daddr { "daddr" } else { "saddr" })
    }

    /// `ip daddr 10.0.0.0/8` (a prefix, or one address): the family check, the address,
    /// masked unless it is a full-length prefix.
    pub fn addr_in_net(self, daddr: bool, net: (IpAddr, u8)) -> Rule {
        let (ip, len) = net;
        let v6 = ip.is_ipv6();
        let bytes = ip_bytes(ip);
        let max = bytes.len() as u8 * 8;
        let mut exprs = self.nfproto(v6);
        exprs.push(Self::addr_load(v6, daddr, REG_1));
        let text = if len >= max {
            format!("{} {ip}", Self::addr_word(v6, daddr))
        } else {
            exprs.push(Expr::Bitwise { reg: REG_1, mask: prefix_mask(bytes.len(), len) });
            format!("{} {ip}/{len}", Self::addr_word(v6, daddr))
        };
        let masked: Vec<u8> =
            bytes.iter().zip(prefix_mask(bytes.len(), len.min(max))).map(|(b, m)| b & m).collect();
        exprs.push(Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: masked });
        self.push(text, exprs)
    }

    /// `ip saddr vmap @map` (v4) / `ip6 saddr vmap @map`.
    pub fn addr_vmap(self, v6: bool, daddr: bool, map: &str) -> Rule {
        let mut exprs = self.nfproto(v6);
        exprs.push(Self::addr_load(v6, daddr, REG_1));
        exprs.push(Expr::Lookup {
            set: map.into(),
            sreg: REG_1,
            dreg: Some(REG_VERDICT),
            invert: false,
        });
        self.push(format!("{} vmap @{map}", Self::addr_word(v6, daddr)), exprs)
    }

    /// `ip daddr @set` / `ip6 daddr @set`.
    pub fn addr_in_set(self, v6: bool, daddr: bool, set: &str) -> Rule {
        let mut exprs = self.nfproto(v6);
        exprs.push(Self::addr_load(v6, daddr, REG_1));
        exprs.push(Expr::Lookup { set: set.into(), sreg: REG_1, dreg: None, invert: false });
        self.push(format!("{} @{set}", Self::addr_word(v6, daddr)), exprs)
    }

    /// `ip daddr . ip saddr & <mask> @set`: the destination and the source's network.
    pub fn daddr_saddr_net_in_set(self, v6: bool, len: u8, set: &str) -> Rule {
        let size = if v6 { 16 } else { 4 };
        let mut exprs = self.nfproto(v6);
        exprs.push(Self::addr_load(v6, true, REG_1));
        let second = reg_at(size as u32 / 4);
        exprs.push(Self::addr_load(v6, false, second));
        let mask = prefix_mask(size, len);
        let mask_ip = bytes_ip(&mask);
        exprs.push(Expr::Bitwise { reg: second, mask });
        exprs.push(Expr::Lookup { set: set.into(), sreg: REG_1, dreg: None, invert: false });
        let w = if v6 { "ip6" } else { "ip" };
        self.push(format!("{w} daddr . {w} saddr & {mask_ip} @{set}"), exprs)
    }

    /// `iifname . ether saddr != @set`: the (port, source MAC) pair is not allowed.
    pub fn port_mac_not_in(self, set: &str) -> Rule {
        self.push(
            format!("iifname . ether saddr != @{set}"),
            vec![
                Expr::Meta { key: meta::IIFNAME, dreg: REG_1 },
                Expr::Payload { base: PAYLOAD_LL, offset: 6, len: 6, dreg: reg_at(4) },
                Expr::Lookup { set: set.into(), sreg: REG_1, dreg: None, invert: true },
            ],
        )
    }

    /// `iifname . oifname != @set`: the (in, out) interface pair is not in the set.
    pub fn ifname_pair_not_in(self, set: &str) -> Rule {
        self.push(
            format!("iifname . oifname != @{set}"),
            vec![
                Expr::Meta { key: meta::IIFNAME, dreg: REG_1 },
                Expr::Meta { key: meta::OIFNAME, dreg: reg_at(4) },
                Expr::Lookup { set: set.into(), sreg: REG_1, dreg: None, invert: true },
            ],
        )
    }

    /// `ct status dnat` / `ct status ! dnat`.
    pub fn ct_dnat(self, is: bool) -> Rule {
        let data = 0u32.to_ne_bytes().to_vec();
        self.push(
            if is { "ct status dnat" } else { "ct status ! dnat" },
            vec![
                Expr::CtStatus { dreg: REG_1 },
                Expr::Bitwise { reg: REG_1, mask: CT_STATUS_DNAT.to_ne_bytes().to_vec() },
                Expr::Cmp { sreg: REG_1, op: if is { CMP_NEQ } else { CMP_EQ }, data },
            ],
        )
    }

    /// `fib daddr type local`.
    pub fn daddr_is_local(self) -> Rule {
        self.push(
            "fib daddr type local",
            vec![
                Expr::FibDaddrType { dreg: REG_1 },
                // RTN_LOCAL, host byte order.
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: 2u32.to_ne_bytes().to_vec() },
            ],
        )
    }

    /// `dnat ip to ip daddr . meta l4proto . th dport map @m` (with `with_daddr`), or
    /// `dnat ip to meta l4proto . th dport map @m`.
    pub fn dnat_map(self, v6: bool, with_daddr: bool, map: &str) -> Rule {
        let mut exprs = Vec::new();
        let mut word = 0u32;
        let w = if v6 { "ip6" } else { "ip" };
        let mut key = Vec::new();
        if with_daddr {
            exprs.extend(self.nfproto(v6));
            exprs.push(Self::addr_load(v6, true, reg_at(0)));
            word += if v6 { 4 } else { 1 };
            key.push(format!("{w} daddr"));
        }
        exprs.push(Expr::Meta { key: meta::L4PROTO, dreg: reg_at(word) });
        word += 1;
        exprs.push(Expr::Payload {
            base: PAYLOAD_TRANSPORT,
            offset: 2,
            len: 2,
            dreg: reg_at(word),
        });
        key.push("meta l4proto".into());
        key.push("th dport".into());
        exprs.push(Expr::Lookup { set: map.into(), sreg: REG_1, dreg: Some(REG_1), invert: false });
        exprs.push(Expr::Nat {
            dnat: true,
            family: if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 },
            addr: REG_1,
            proto: reg_at(if v6 { 4 } else { 1 }),
            flags: 0,
        });
        self.push(format!("dnat {w} to {} map @{map}", key.join(" . ")), exprs)
    }

    /// `udp dport 53` / `tcp dport 53` (`proto` is IPPROTO_UDP or IPPROTO_TCP).
    pub fn dport_eq(self, proto: u8, port: u16) -> Rule {
        let name = if proto == IPPROTO_TCP { "tcp" } else { "udp" };
        debug_assert!(proto == IPPROTO_TCP || proto == IPPROTO_UDP);
        self.push(
            format!("{name} dport {port}"),
            vec![
                Expr::Meta { key: meta::L4PROTO, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: vec![proto] },
                Expr::Payload { base: PAYLOAD_TRANSPORT, offset: 2, len: 2, dreg: REG_1 },
                Expr::Cmp { sreg: REG_1, op: CMP_EQ, data: port.to_be_bytes().to_vec() },
            ],
        )
    }

    /// `dnat to 127.0.0.11:5353` (`dnat ip to ...` / `dnat ip6 to [::1]:5353` in an inet
    /// table): a fixed address and port.
    pub fn dnat_to(self, addr: IpAddr, port: u16) -> Rule {
        let v6 = addr.is_ipv6();
        let to = if v6 { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
        let text = match (self.table, v6) {
            (TableKind::Ip, _) => format!("dnat to {to}"),
            (_, false) => format!("dnat ip to {to}"),
            (_, true) => format!("dnat ip6 to {to}"),
        };
        self.push(
            text,
            vec![
                Expr::ImmediateData { dreg: REG_1, data: ip_bytes(addr) },
                Expr::ImmediateData { dreg: REG_2, data: port.to_be_bytes().to_vec() },
                Expr::Nat {
                    dnat: true,
                    family: if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 },
                    addr: REG_1,
                    proto: REG_2,
                    flags: 0,
                },
            ],
        )
    }

    pub fn masquerade(self) -> Rule {
        self.push("masquerade", vec![Expr::Masq])
    }

    pub fn verdict(self, v: Verdict) -> Rule {
        let t = v.text();
        self.push(t, vec![Expr::Immediate(v)])
    }

    pub fn comment(mut self, c: &str) -> Rule {
        self.comment = Some(c.to_string());
        self
    }

    /// NFTA_RULE_EXPRESSIONS.
    pub fn encode_exprs(&self, a: &mut Attrs) {
        a.begin(4);
        for e in &self.exprs {
            e.encode(a);
        }
        a.end();
    }
}

pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn bytes_ip(b: &[u8]) -> IpAddr {
    if b.len() == 4 {
        IpAddr::from(<[u8; 4]>::try_from(b).unwrap())
    } else {
        IpAddr::from(<[u8; 16]>::try_from(b).unwrap())
    }
}

pub fn prefix_mask(size: usize, len: u8) -> Vec<u8> {
    (0..size)
        .map(|i| {
            let bits = (len as usize).saturating_sub(i * 8).min(8);
            if bits == 0 {
                0
            } else {
                0xffu8 << (8 - bits)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_masks() {
        let r = Rule::new().oifname_ne("br0").ifname_in(true, "bridges").verdict(Verdict::Drop);
        assert_eq!(r.text(), "oifname != \"br0\" oifname @bridges drop");
        let r = Rule::new().addr_in_net(true, ("10.88.0.0".parse().unwrap(), 16));
        assert_eq!(r.text(), "ip daddr 10.88.0.0/16");
        assert_eq!(prefix_mask(4, 12), vec![255, 240, 0, 0]);
        let r = Rule::new().daddr_saddr_net_in_set(false, 16, "hpnet4").masquerade();
        assert_eq!(r.text(), "ip daddr . ip saddr & 255.255.0.0 @hpnet4 masquerade");
        let r = Rule::new().daddr_is_local().dnat_map(true, false, "ap6");
        assert_eq!(r.text(), "fib daddr type local dnat ip6 to meta l4proto . th dport map @ap6");
        assert_eq!(reg_at(0), 1);
        assert_eq!(reg_at(1), 9);
        assert_eq!(reg_at(4), 2);
        assert_eq!(reg_at(5), 13);
    }

    fn encoded(r: &Rule) -> Vec<u8> {
        let mut a = Attrs::new();
        r.encode_exprs(&mut a);
        // the payload of NFTA_RULE_EXPRESSIONS
        crate::attr::find(a.bytes(), 4).unwrap().to_vec()
    }

    #[test]
    fn dnat_to_and_dport() {
        let dns: IpAddr = "127.0.0.11".parse().unwrap();
        let r =
            Rule::ip().addr_in_net(true, (dns, 32)).dport_eq(IPPROTO_UDP, 53).dnat_to(dns, 5353);
        assert_eq!(r.text(), "ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:5353");
        assert!(!r.exprs.iter().any(|e| matches!(e, Expr::Meta { key: meta::NFPROTO, .. })));
        let r = Rule::new().addr_in_net(true, (dns, 32)).dport_eq(IPPROTO_TCP, 53).dnat_to(dns, 1);
        assert_eq!(r.text(), "ip daddr 127.0.0.11 tcp dport 53 dnat ip to 127.0.0.11:1");
        let r = Rule::new().dnat_to("::1".parse().unwrap(), 53);
        assert_eq!(r.text(), "dnat ip6 to [::1]:53");
    }

    #[test]
    fn decode_inverts_encode() {
        let dns: IpAddr = "127.0.0.11".parse().unwrap();
        let rules = [
            Rule::ip().addr_in_net(true, (dns, 32)).dport_eq(IPPROTO_TCP, 53).dnat_to(dns, 40001),
            Rule::new().oifname_ne("br0").ifname_in(true, "bridges").verdict(Verdict::Drop),
            Rule::new()
                .addr_in_net(false, ("10.88.0.0".parse().unwrap(), 16))
                .verdict(Verdict::Jump("c".into())),
            Rule::new().daddr_saddr_net_in_set(true, 64, "s").masquerade(),
            Rule::new().daddr_is_local().dnat_map(false, true, "m"),
            Rule::new().ct_dnat(false).ifname_vmap(false, "v").verdict(Verdict::Return),
            Rule::bridge().port_mac_not_in("p").verdict(Verdict::Accept),
        ];
        for r in rules {
            assert_eq!(Expr::decode_list(&encoded(&r)), r.exprs, "{}", r.text());
        }
    }

    #[test]
    fn decode_undoes_the_kernels_derivations_only() {
        // How the kernel dumps `dnat to 127.0.0.11:40000`: max registers = min, MAP_IPS.
        let nat = |max_reg: u32, flags: u32| {
            let mut a = Attrs::new();
            a.nested(1, |e| {
                e.put_str(1, "nat").nested(2, |d| {
                    d.put_be32(1, 1).put_be32(2, 2).put_be32(3, 1).put_be32(4, max_reg);
                    d.put_be32(5, 2).put_be32(6, 2).put_be32(7, flags);
                });
            });
            Expr::decode_list(a.bytes())
        };
        let want =
            Expr::Nat { dnat: true, family: NFPROTO_IPV4, addr: REG_1, proto: REG_2, flags: 0 };
        assert_eq!(nat(1, 3), vec![want.clone()]);
        // an address range, or a flag we never set, is not ours
        assert_eq!(nat(3, 3), vec![Expr::Foreign("nat".into())]);
        assert_ne!(nat(1, 3 | 0x4), vec![want]);
        // an expression we never build, or a form of one we build (payload set), is foreign
        let mut a = Attrs::new();
        a.nested(1, |e| {
            e.put_str(1, "counter").nested(2, |d| {
                d.put_be64(1, 0);
            });
        });
        a.nested(1, |e| {
            e.put_str(1, "payload").nested(2, |d| {
                d.put_be32(5, 1).put_be32(2, 1).put_be32(3, 0).put_be32(4, 4);
            });
        });
        assert_eq!(
            Expr::decode_list(a.bytes()),
            vec![Expr::Foreign("counter".into()), Expr::Foreign("payload".into())]
        );
    }
}
