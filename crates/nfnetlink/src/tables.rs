//! nf_tables objects (tables, chains, sets, rules, elements) and the batch that sends them
//! as one transaction. Every operation is also rendered as the `nft` command that does the
//! same, so a whole transaction can be read (and golden-tested) as text.

use crate::attr::{self, Attrs};
use crate::expr::{Expr, Rule, Verdict};
use crate::socket::{self, Error, Socket, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const BATCH_BEGIN: u16 = 16;
const BATCH_END: u16 = 17;

pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const GETCHAIN: u16 = 4;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const NEWSETELEM: u16 = 12;
    pub const DELSETELEM: u16 = 14;
    pub const DESTROYTABLE: u16 = 26;
    pub const DESTROYCHAIN: u16 = 27;
    pub const DESTROYSETELEM: u16 = 30;
}

/// Address families of tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
    Bridge,
}

impl Family {
    pub fn code(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Bridge => "bridge",
        }
    }
}

/// nft's datatypes, as set key and data types.
pub mod types {
    pub const VERDICT: u32 = 0xffff_ff00;
    pub const IPADDR: (u32, u32) = (7, 4);
    pub const IP6ADDR: (u32, u32) = (8, 16);
    pub const ETHERADDR: (u32, u32) = (9, 6);
    pub const INET_PROTO: (u32, u32) = (12, 1);
    pub const INET_SERVICE: (u32, u32) = (13, 2);
    pub const IFNAME: (u32, u32) = (41, 16);

    /// A concatenation: nft's type id (6 bits per field) and the key length (each field
    /// padded to a 4-byte register).
    pub fn concat(fields: &[(u32, u32)]) -> (u32, u32) {
        let id = fields.iter().fold(0u32, |acc, (t, _)| (acc << 6) | t);
        let len = fields.iter().map(|(_, l)| (l + 3) & !3).sum();
        if fields.len() == 1 {
            (fields[0].0, fields[0].1)
        } else {
            (id, len)
        }
    }

    pub fn name(t: u32) -> &'static str {
        match t {
            7 => "ipv4_addr",
            8 => "ipv6_addr",
            9 => "ether_addr",
            12 => "inet_proto",
            13 => "inet_service",
            41 => "ifname",
            _ => "?",
        }
    }
}

/// A base chain's hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// "filter" or "nat".
    pub kind: &'static str,
    /// NF_INET_PRE_ROUTING 0, LOCAL_IN 1, FORWARD 2, LOCAL_OUT 3, POST_ROUTING 4.
    pub num: u32,
    pub priority: i32,
}

impl Hook {
    fn hook_name(&self) -> &'static str {
        ["prerouting", "input", "forward", "output", "postrouting"][self.num as usize]
    }
    fn prio_name(&self) -> String {
        match (self.kind, self.priority) {
            ("filter", 0) => "filter".into(),
            ("nat", -100) if self.num == 0 => "dstnat".into(),
            ("nat", 100) => "srcnat".into(),
            (_, p) => p.to_string(),
        }
    }
}

/// A set or map declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    /// Key fields (type id, length): more than one is a concatenation.
    pub key: Vec<(u32, u32)>,
    /// Data fields of a map; `[(types::VERDICT, 0)]` for a verdict map.
    pub data: Vec<(u32, u32)>,
    pub interval: bool,
    pub timeout: bool,
}

impl SetDef {
    pub fn set(name: &str, key: &[(u32, u32)]) -> SetDef {
        SetDef {
            name: name.into(),
            key: key.to_vec(),
            data: vec![],
            interval: false,
            timeout: false,
        }
    }
    pub fn map(name: &str, key: &[(u32, u32)], data: &[(u32, u32)]) -> SetDef {
        SetDef {
            name: name.into(),
            key: key.to_vec(),
            data: data.to_vec(),
            interval: false,
            timeout: false,
        }
    }
    pub fn vmap(name: &str, key: &[(u32, u32)]) -> SetDef {
        Self::map(name, key, &[(types::VERDICT, 0)])
    }
    pub fn interval(mut self) -> SetDef {
        self.interval = true;
        self
    }
    pub fn timeout(mut self) -> SetDef {
        self.timeout = true;
        self
    }
    fn is_vmap(&self) -> bool {
        self.data.first().is_some_and(|d| d.0 == types::VERDICT)
    }
    fn type_text(fields: &[(u32, u32)]) -> String {
        if fields.first().is_some_and(|d| d.0 == types::VERDICT) {
            return "verdict".into();
        }
        fields.iter().map(|(t, _)| types::name(*t)).collect::<Vec<_>>().join(" . ")
    }
    fn text(&self) -> String {
        let mut s = format!("type {}", Self::type_text(&self.key));
        if !self.data.is_empty() {
            s += &format!(" : {}", Self::type_text(&self.data));
        }
        s += ";";
        let mut flags = Vec::new();
        if self.interval {
            flags.push("interval");
        }
        if self.timeout {
            flags.push("timeout");
        }
        if !flags.is_empty() {
            s += &format!(" flags {};", flags.join(","));
        }
        s
    }
}

/// The data of a map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ElemData {
    /// Concatenated value fields, each given with its text.
    Value(Vec<u8>, String),
    Verdict(Verdict),
}

/// One set or map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Elem {
    /// Key bytes (concatenated fields padded to 4 bytes each) and its text.
    pub key: Vec<u8>,
    pub key_text: String,
    pub data: Option<ElemData>,
    /// Expire after this many milliseconds (needs a set with timeouts).
    pub timeout_ms: Option<u64>,
    pub comment: Option<String>,
    /// The end of an interval (interval sets store [start, end) as two elements).
    pub interval_end: bool,
}

impl Elem {
    pub fn new(key: Vec<u8>, key_text: impl Into<String>) -> Elem {
        Elem {
            key,
            key_text: key_text.into(),
            data: None,
            timeout_ms: None,
            comment: None,
            interval_end: false,
        }
    }
    pub fn data(mut self, d: ElemData) -> Elem {
        self.data = Some(d);
        self
    }
    pub fn comment(mut self, c: &str) -> Elem {
        self.comment = Some(c.to_string());
        self
    }
    pub fn timeout(mut self, ms: u64) -> Elem {
        self.timeout_ms = Some(ms);
        self
    }
    fn text(&self) -> String {
        let mut s = self.key_text.clone();
        if let Some(t) = self.timeout_ms {
            s += &format!(" timeout {t}ms");
        }
        if let Some(c) = &self.comment {
            s += &format!(" comment \"{c}\"");
        }
        match &self.data {
            Some(ElemData::Value(_, t)) => s += &format!(" : {t}"),
            Some(ElemData::Verdict(v)) => s += &format!(" : {}", v.text()),
            None => {}
        }
        s
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddTable {
        family: Family,
        name: String,
    },
    DelTable {
        family: Family,
        name: String,
    },
    /// Deletes the table if it exists (never fails on absence).
    DestroyTable {
        family: Family,
        name: String,
    },
    AddChain {
        family: Family,
        table: String,
        name: String,
        hook: Option<Hook>,
        comment: Option<String>,
    },
    FlushChain {
        family: Family,
        table: String,
        name: String,
    },
    DelChain {
        family: Family,
        table: String,
        name: String,
    },
    DestroyChain {
        family: Family,
        table: String,
        name: String,
    },
    AddSet {
        family: Family,
        table: String,
        def: SetDef,
    },
    AddRule {
        family: Family,
        table: String,
        chain: String,
        rule: Rule,
    },
    AddElems {
        family: Family,
        table: String,
        set: String,
        elems: Vec<Elem>,
    },
    DelElems {
        family: Family,
        table: String,
        set: String,
        elems: Vec<Elem>,
    },
    DestroyElems {
        family: Family,
        table: String,
        set: String,
        elems: Vec<Elem>,
    },
}

/// Userdata TLVs (libnftnl's format: type byte, length byte, value) that nft reads back.
fn udata(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, value.len() as u8];
    v.extend_from_slice(value);
    v
}

fn comment_udata(c: &str) -> Vec<u8> {
    let mut v = c.as_bytes()[..c.len().min(126)].to_vec();
    v.push(0);
    udata(0, &v)
}

fn encode_elems(a: &mut Attrs, table: &str, set: &str, elems: &[Elem], with_data: bool) {
    a.put_str(1, table).put_str(2, set);
    a.begin(3);
    for e in elems {
        a.begin(1);
        if e.interval_end {
            a.put_be32(3, 1);
        }
        a.nested(1, |k| {
            k.put(1, &e.key);
        });
        if with_data {
            match &e.data {
                Some(ElemData::Value(v, _)) => {
                    a.nested(2, |d| {
                        d.put(1, v);
                    });
                }
                Some(ElemData::Verdict(v)) => {
                    a.nested(2, |d| v.encode(d));
                }
                None => {}
            }
            if let Some(t) = e.timeout_ms {
                a.put_be64(4, t);
            }
            if let Some(c) = &e.comment {
                a.put(6, &comment_udata(c));
            }
        }
        a.end();
    }
    a.end();
}

impl Op {
    /// The `nft` command doing the same thing.
    pub fn text(&self) -> String {
        match self {
            Op::AddTable { family, name } => format!("add table {} {name}", family.name()),
            Op::DelTable { family, name } => format!("delete table {} {name}", family.name()),
            Op::DestroyTable { family, name } => format!("destroy table {} {name}", family.name()),
            Op::AddChain { family, table, name, hook, comment } => {
                let mut inner = Vec::new();
                if let Some(h) = hook {
                    inner.push(format!(
                        "type {} hook {} priority {}; policy accept;",
                        h.kind,
                        h.hook_name(),
                        h.prio_name()
                    ));
                }
                if let Some(c) = comment {
                    inner.push(format!("comment \"{c}\";"));
                }
                let body = if inner.is_empty() {
                    String::new()
                } else {
                    format!(" {{ {} }}", inner.join(" "))
                };
                format!("add chain {} {table} {name}{body}", family.name())
            }
            Op::FlushChain { family, table, name } => {
                format!("flush chain {} {table} {name}", family.name())
            }
            Op::DelChain { family, table, name } => {
                format!("delete chain {} {table} {name}", family.name())
            }
            Op::DestroyChain { family, table, name } => {
                format!("destroy chain {} {table} {name}", family.name())
            }
            Op::AddSet { family, table, def } => format!(
                "add {} {} {table} {} {{ {} }}",
                if def.data.is_empty() { "set" } else { "map" },
                family.name(),
                def.name,
                def.text()
            ),
            Op::AddRule { family, table, chain, rule } => {
                format!("add rule {} {table} {chain} {}", family.name(), rule.text())
            }
            Op::AddElems { family, table, set, elems } => format!(
                "add element {} {table} {set} {{ {} }}",
                family.name(),
                // An interval's end element is implied by its start's prefix (nft syntax).
                elems
                    .iter()
                    .filter(|e| !e.interval_end)
                    .map(Elem::text)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Op::DelElems { family, table, set, elems }
            | Op::DestroyElems { family, table, set, elems } => format!(
                "{} element {} {table} {set} {{ {} }}",
                if matches!(self, Op::DelElems { .. }) { "delete" } else { "destroy" },
                family.name(),
                elems
                    .iter()
                    .filter(|e| !e.interval_end)
                    .map(|e| e.key_text.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Does the kernel destroy something when this is committed (which makes the
    /// socket's close wait for an RCU grace period)?
    pub fn deletes(&self) -> bool {
        matches!(
            self,
            Op::DelTable { .. }
                | Op::DestroyTable { .. }
                | Op::FlushChain { .. }
                | Op::DelChain { .. }
                | Op::DestroyChain { .. }
                | Op::DelElems { .. }
                | Op::DestroyElems { .. }
        )
    }

    /// (message type, flags, family, attributes).
    fn encode(&self) -> (u16, u16, u8, Vec<u8>) {
        let mut a = Attrs::new();
        let create = NLM_F_REQUEST | NLM_F_CREATE;
        let (m, flags, fam) = match self {
            Op::AddTable { family, name } => {
                a.put_str(1, name);
                (msg::NEWTABLE, create, *family)
            }
            Op::DelTable { family, name } | Op::DestroyTable { family, name } => {
                a.put_str(1, name);
                let m = if matches!(self, Op::DelTable { .. }) {
                    msg::DELTABLE
                } else {
                    msg::DESTROYTABLE
                };
                (m, NLM_F_REQUEST, *family)
            }
            Op::AddChain { family, table, name, hook, comment } => {
                a.put_str(1, table).put_str(3, name);
                if let Some(h) = hook {
                    a.nested(4, |n| {
                        n.put_be32(1, h.num).put_be32(2, h.priority as u32);
                    });
                    a.put_be32(5, 1); // policy accept
                    a.put_str(7, h.kind);
                }
                if let Some(c) = comment {
                    a.put(12, &comment_udata(c));
                }
                (msg::NEWCHAIN, create, *family)
            }
            Op::FlushChain { family, table, name } => {
                a.put_str(1, table).put_str(2, name);
                (msg::DELRULE, NLM_F_REQUEST, *family)
            }
            Op::DelChain { family, table, name } | Op::DestroyChain { family, table, name } => {
                a.put_str(1, table).put_str(3, name);
                let m = if matches!(self, Op::DelChain { .. }) {
                    msg::DELCHAIN
                } else {
                    msg::DESTROYCHAIN
                };
                (m, NLM_F_REQUEST, *family)
            }
            Op::AddSet { family, table, def } => {
                let (kt, kl) = types::concat(&def.key);
                let mut flags = 0u32;
                if !def.data.is_empty() {
                    flags |= 0x8; // NFT_SET_MAP
                }
                if def.interval {
                    flags |= 0x4;
                }
                if def.timeout {
                    flags |= 0x10;
                }
                if def.key.len() > 1 {
                    flags |= 0x80; // NFT_SET_CONCAT
                }
                a.put_str(1, table).put_str(2, &def.name).put_be32(3, flags);
                a.put_be32(4, kt).put_be32(5, kl);
                // NFTA_SET_ID (required): unique within the batch.
                a.put_be32(10, set_id(&def.name));
                if def.is_vmap() {
                    a.put_be32(6, types::VERDICT);
                } else if !def.data.is_empty() {
                    let (dt, dl) = types::concat(&def.data);
                    a.put_be32(6, dt).put_be32(7, dl);
                }
                if def.key.len() > 1 {
                    // NFTA_SET_DESC { NFTA_SET_DESC_CONCAT { NFTA_LIST_ELEM { FIELD_LEN } } }
                    a.nested(9, |d| {
                        d.nested(2, |c| {
                            for (_, l) in &def.key {
                                c.nested(1, |f| {
                                    f.put_be32(1, *l);
                                });
                            }
                        });
                    });
                }
                // Byte order of key and data (nft reads them back to print values).
                let order = |f: &[(u32, u32)]| -> u32 {
                    match f {
                        [(41, _)] => 1, // host (strings)
                        [(t, _)] if *t == types::VERDICT => 0,
                        [_] => 2, // big endian (addresses, ports)
                        _ => 0,
                    }
                };
                let mut ud = udata(0, &order(&def.key).to_le_bytes());
                if !def.data.is_empty() {
                    ud.extend(udata(1, &order(&def.data).to_le_bytes()));
                }
                a.put(13, &ud);
                (msg::NEWSET, create, *family)
            }
            Op::AddRule { family, table, chain, rule } => {
                a.put_str(1, table).put_str(2, chain);
                rule.encode_exprs(&mut a);
                if let Some(c) = &rule.comment {
                    a.put(7, &comment_udata(c));
                }
                (msg::NEWRULE, create | NLM_F_APPEND, *family)
            }
            Op::AddElems { family, table, set, elems } => {
                encode_elems(&mut a, table, set, elems, true);
                (msg::NEWSETELEM, create, *family)
            }
            Op::DelElems { family, table, set, elems }
            | Op::DestroyElems { family, table, set, elems } => {
                encode_elems(&mut a, table, set, elems, false);
                let m = if matches!(self, Op::DelElems { .. }) {
                    msg::DELSETELEM
                } else {
                    msg::DESTROYSETELEM
                };
                (m, NLM_F_REQUEST, *family)
            }
        };
        (m, flags, fam.code(), a.into_bytes())
    }
}

/// A batch-local id of a set, from its name (sets are referred to by name anyway).
fn set_id(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193)) | 1
}

/// Renders a transaction as `nft -f` input, one command per line.
pub fn render(ops: &[Op]) -> String {
    ops.iter().map(|o| o.text() + "\n").collect()
}

/// Sends `ops` as one transaction (one batch: all or nothing) on `sock`. An empty list
/// sends nothing.
pub fn commit(sock: &mut Socket, ops: &[Op]) -> Result<(), Error> {
    if ops.is_empty() {
        return Ok(());
    }
    let first = sock.take_seq(ops.len() as u32 + 2);
    let mut buf = Vec::new();
    socket::put_msg(
        &mut buf,
        BATCH_BEGIN,
        NLM_F_REQUEST,
        first,
        &socket::nfgen(0, NFNL_SUBSYS_NFTABLES),
    );
    let last = first + ops.len() as u32;
    for (i, op) in ops.iter().enumerate() {
        let (m, mut flags, fam, attrs) = op.encode();
        let seq = first + 1 + i as u32;
        // Only the last message asks for an ACK: errors are reported anyway, and its ACK
        // (delivered after the commit) tells that the whole batch is done.
        if seq == last {
            flags |= NLM_F_ACK;
        }
        let mut body = socket::nfgen(fam, 0).to_vec();
        body.extend_from_slice(&attrs);
        socket::put_msg(&mut buf, (NFNL_SUBSYS_NFTABLES << 8) | m, flags, seq, &body);
    }
    socket::put_msg(
        &mut buf,
        BATCH_END,
        NLM_F_REQUEST,
        last + 1,
        &socket::nfgen(0, NFNL_SUBSYS_NFTABLES),
    );
    let what = "nf_tables transaction";
    sock.send(&buf, what)?;
    let mut failure: Option<Error> = None;
    loop {
        for r in sock.recv(what)? {
            if r.kind != socket::NLMSG_ERROR || r.seq < first || r.seq > last + 1 {
                continue;
            }
            let (errno, detail) = socket::parse_error(r.flags, &r.body);
            if errno != 0 && failure.is_none() {
                let idx = (r.seq - first) as usize;
                let what = match idx.checked_sub(1).and_then(|i| ops.get(i)) {
                    Some(op) => op.text(),
                    None => "nf_tables batch".to_string(),
                };
                failure = Some(Error { errno, what, detail });
            }
            // The last message's ACK ends the batch; an error on the batch's begin or end
            // message (refused as a whole, or at commit) ends it too.
            if r.seq == last || (errno != 0 && (r.seq == first || r.seq == last + 1)) {
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
    }
}

/// The handle of a table (the kernel numbers tables afresh when they are created), `None`
/// when it does not exist. One request, no listing.
pub fn table_handle(sock: &mut Socket, family: Family, name: &str) -> Result<Option<u64>, Error> {
    let mut a = Attrs::new();
    a.put_str(1, name);
    let reply = get(
        sock,
        msg::GETTABLE,
        family,
        a.bytes(),
        &format!("looking up table {} {name}", family.name()),
    )?;
    Ok(reply.and_then(|b| attr::find(&b, 4).and_then(attr::be64)))
}

/// The handle of a chain, `None` when it (or its table) does not exist.
pub fn chain_handle(
    sock: &mut Socket,
    family: Family,
    table: &str,
    name: &str,
) -> Result<Option<u64>, Error> {
    let mut a = Attrs::new();
    a.put_str(1, table).put_str(3, name);
    let what = format!("looking up chain {} {table} {name}", family.name());
    let reply = get(sock, msg::GETCHAIN, family, a.bytes(), &what)?;
    Ok(reply.and_then(|b| attr::find(&b, 2).and_then(attr::be64)))
}

/// The policy of a base chain (0 = drop, 1 = accept), `None` when the chain (or its table)
/// does not exist or is not a base chain. One request.
pub fn chain_policy(
    sock: &mut Socket,
    family: Family,
    table: &str,
    name: &str,
) -> Result<Option<u32>, Error> {
    let mut a = Attrs::new();
    a.put_str(1, table).put_str(3, name);
    let what = format!("looking up chain {} {table} {name}", family.name());
    let reply = get(sock, msg::GETCHAIN, family, a.bytes(), &what)?;
    Ok(reply.and_then(|b| attr::find(&b, 5).and_then(attr::be32)))
}

/// A table as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub handle: u64,
    /// How many objects (chains, sets, ...) it holds.
    pub objects: u32,
}

/// A table's handle and object count, `None` when it does not exist. One request.
pub fn table_info(
    sock: &mut Socket,
    family: Family,
    name: &str,
) -> Result<Option<TableInfo>, Error> {
    let mut a = Attrs::new();
    a.put_str(1, name);
    let what = format!("looking up table {} {name}", family.name());
    let reply = get(sock, msg::GETTABLE, family, a.bytes(), &what)?;
    Ok(reply.and_then(|b| {
        Some(TableInfo {
            handle: attr::find(&b, 4).and_then(attr::be64)?,
            objects: attr::find(&b, 3).and_then(attr::be32)?,
        })
    }))
}

/// A chain as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    pub handle: u64,
    /// A base chain's hook (its kind is "?" for a type we never create).
    pub hook: Option<Hook>,
    /// A base chain's policy (0 = drop, 1 = accept).
    pub policy: Option<u32>,
}

/// A chain's handle, hook and policy, `None` when it (or its table) does not
/// exist. One request.
pub fn chain_info(
    sock: &mut Socket,
    family: Family,
    table: &str,
    name: &str,
) -> Result<Option<ChainInfo>, Error> {
    let mut a = Attrs::new();
    a.put_str(1, table).put_str(3, name);
    let what = format!("looking up chain {} {table} {name}", family.name());
    let Some(b) = get(sock, msg::GETCHAIN, family, a.bytes(), &what)? else {
        return Ok(None);
    };
    let hook = attr::find(&b, 4).map(|h| Hook {
        kind: match attr::find(&b, 7).map(attr::string).as_deref() {
            Some("filter") => "filter",
            Some("nat") => "nat",
            Some("route") => "route",
            _ => "?",
        },
        num: attr::find(h, 1).and_then(attr::be32).unwrap_or(u32::MAX),
        priority: attr::find(h, 2).and_then(attr::be32).map_or(i32::MIN, |p| p as i32),
    });
    Ok(attr::find(&b, 2).and_then(attr::be64).map(|handle| ChainInfo {
        handle,
        hook,
        policy: attr::find(&b, 5).and_then(attr::be32),
    }))
}

/// A rule as the kernel reports it: its handle and its expressions
/// ([`Expr::decode_list`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub handle: u64,
    pub exprs: Vec<Expr>,
}

/// The rules of one chain in order (a GETRULE dump the kernel filters by table and chain);
/// empty when the chain or its table does not exist.
pub fn chain_rules(
    sock: &mut Socket,
    family: Family,
    table: &str,
    chain: &str,
) -> Result<Vec<RuleInfo>, Error> {
    let mut a = Attrs::new();
    a.put_str(1, table).put_str(2, chain);
    let what = format!("listing the rules of chain {} {table} {chain}", family.name());
    let bodies = dump(sock, msg::GETRULE, family, a.bytes(), &what)?;
    Ok(bodies
        .iter()
        .map(|b| RuleInfo {
            handle: attr::find(b, 3).and_then(attr::be64).unwrap_or(0),
            exprs: attr::find(b, 4).map(Expr::decode_list).unwrap_or_default(),
        })
        .collect())
}

/// One dump request: the attributes of every object in the reply. A dump the kernel
/// marks interrupted (the rule set changed while it was being read) is an error, EINTR.
fn dump(
    sock: &mut Socket,
    m: u16,
    family: Family,
    attrs: &[u8],
    what: &str,
) -> Result<Vec<Vec<u8>>, Error> {
    const NLM_F_DUMP_INTR: u16 = 0x10;
    let seq = sock.take_seq(1);
    let mut body = socket::nfgen(family.code(), 0).to_vec();
    body.extend_from_slice(attrs);
    let mut buf = Vec::new();
    socket::put_msg(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | m,
        NLM_F_REQUEST | socket::NLM_F_DUMP,
        seq,
        &body,
    );
    sock.send(&buf, what)?;
    let mut found = Vec::new();
    let mut interrupted = false;
    loop {
        for r in sock.recv(what)? {
            if r.seq != seq {
                continue;
            }
            interrupted |= r.flags & NLM_F_DUMP_INTR != 0;
            match r.kind {
                socket::NLMSG_DONE if interrupted => {
                    return Err(Error {
                        errno: libc::EINTR,
                        what: what.to_string(),
                        detail: Some("the rule set changed during the dump".into()),
                    })
                }
                socket::NLMSG_DONE => return Ok(found),
                socket::NLMSG_ERROR => {
                    let (errno, detail) = socket::parse_error(r.flags, &r.body);
                    if errno == libc::ENOENT {
                        return Ok(Vec::new());
                    }
                    return Err(Error { errno, what: what.to_string(), detail });
                }
                _ if r.body.len() >= 4 => found.push(r.body[4..].to_vec()),
                _ => {}
            }
        }
    }
}

/// One GET request: the object's attributes, or `None` for ENOENT.
fn get(
    sock: &mut Socket,
    m: u16,
    family: Family,
    attrs: &[u8],
    what: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let seq = sock.take_seq(1);
    let mut body = socket::nfgen(family.code(), 0).to_vec();
    body.extend_from_slice(attrs);
    let mut buf = Vec::new();
    socket::put_msg(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | m,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &body,
    );
    sock.send(&buf, what)?;
    let mut found = None;
    loop {
        for r in sock.recv(what)? {
            if r.seq != seq {
                continue;
            }
            if r.kind == socket::NLMSG_ERROR {
                let (errno, detail) = socket::parse_error(r.flags, &r.body);
                return match errno {
                    0 => Ok(found),
                    libc::ENOENT => Ok(None),
                    _ => Err(Error { errno, what: what.to_string(), detail }),
                };
            }
            if r.body.len() >= 4 {
                found = Some(r.body[4..].to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_types_match_nft() {
        assert_eq!(
            types::concat(&[types::IPADDR, types::INET_PROTO, types::INET_SERVICE]),
            (0x730d, 12)
        );
        assert_eq!(types::concat(&[types::IPADDR, types::INET_SERVICE]), (0x1cd, 8));
        assert_eq!(types::concat(&[types::IFNAME]), (41, 16));
    }

    #[test]
    fn op_texts() {
        let def = SetDef::map(
            "hp4",
            &[types::IPADDR, types::INET_PROTO, types::INET_SERVICE],
            &[types::IPADDR, types::INET_SERVICE],
        )
        .timeout();
        let op = Op::AddSet { family: Family::Inet, table: "t".into(), def };
        assert_eq!(
            op.text(),
            "add map inet t hp4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; flags timeout; }"
        );
        let e = Elem::new(vec![6, 0, 0, 0, 0, 80, 0, 0], "tcp . 80").comment("c/eth0").timeout(1);
        let op = Op::AddElems {
            family: Family::Inet,
            table: "t".into(),
            set: "ap4".into(),
            elems: vec![e],
        };
        assert_eq!(op.text(), "add element inet t ap4 { tcp . 80 timeout 1ms comment \"c/eth0\" }");
        assert!(!op.deletes());
    }
}
