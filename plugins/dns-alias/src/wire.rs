//! The DNS wire format, only as much as the daemon needs: parse one question (RFC 1035 4.1),
//! note an EDNS OPT record (RFC 6891), and build answers of type A, AAAA and PTR.
//!
//! Hand-written rather than a general DNS library: the daemon answers a handful of record
//! types, copies the question bytes verbatim (so 0x20 case randomisation round-trips), relays
//! forwarded messages untouched except for the ID, and never allocates on the hot path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const HEADER_LEN: usize = 12;
/// The classic UDP payload limit without EDNS.
pub const UDP_MIN: usize = 512;
/// The largest UDP payload we send, whatever the client advertises (RFC 9715's advice).
pub const UDP_MAX: usize = 1232;
/// What we advertise in our own OPT record.
pub const EDNS_SIZE: u16 = 1232;

pub const T_A: u16 = 1;
pub const T_PTR: u16 = 12;
pub const T_AAAA: u16 = 28;
pub const T_OPT: u16 = 41;
pub const T_ANY: u16 = 255;
pub const C_IN: u16 = 1;
pub const C_ANY: u16 = 255;

pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;

const F_QR: u16 = 0x8000;
const F_OPCODE: u16 = 0x7800;
const F_AA: u16 = 0x0400;
const F_TC: u16 = 0x0200;
const F_RD: u16 = 0x0100;
const F_RA: u16 = 0x0080;

/// A query name in presentation form: labels lowercased and joined by '.', no trailing dot
/// ("" is the root). `text` is false when a label holds a byte that cannot be matched against
/// our names (a literal '.', a control character, non-ASCII): such names are only forwarded.
#[derive(Clone)]
pub struct Name {
    buf: [u8; 255],
    len: usize,
    text: bool,
}

impl Name {
    pub fn as_str(&self) -> Option<&str> {
        if !self.text {
            return None;
        }
        std::str::from_utf8(&self.buf[..self.len]).ok()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.buf[..self.len]))
    }
}

/// One parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question section; `msg[12..question_end]` is copied into replies.
    pub question_end: usize,
    /// The UDP payload size from the client's OPT record, when it sent one.
    pub edns: Option<u16>,
}

impl Query {
    /// Largest UDP reply this client accepts.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(n) => (n as usize).clamp(UDP_MIN, UDP_MAX),
            None => UDP_MIN,
        }
    }
}

/// Why a message is not a query we answer normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Not worth a reply (too short to hold a header, or itself a response).
    Ignore,
    /// Reply with this rcode; `question_end` is set when the question could be parsed.
    Reply { rcode: u8, question_end: Option<usize> },
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

pub fn id(msg: &[u8]) -> u16 {
    be16(msg, 0).unwrap_or(0)
}

pub fn set_id(msg: &mut [u8], id: u16) {
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
}

pub fn flags(msg: &[u8]) -> u16 {
    be16(msg, 2).unwrap_or(0)
}

pub fn is_response(msg: &[u8]) -> bool {
    flags(msg) & F_QR != 0
}

pub fn is_truncated(msg: &[u8]) -> bool {
    flags(msg) & F_TC != 0
}

pub fn rcode(msg: &[u8]) -> u8 {
    (flags(msg) & 0x000f) as u8
}

/// Reads the question name at `at`; returns it and the offset after it. Compression
/// pointers are refused: a question is the first name in a message, nothing precedes it.
fn read_qname(msg: &[u8], mut at: usize) -> Option<(Name, usize)> {
    let mut name = Name { buf: [0; 255], len: 0, text: true };
    let mut wire_len = 0usize;
    loop {
        let l = *msg.get(at)? as usize;
        at += 1;
        if l == 0 {
            return Some((name, at));
        }
        if l & 0xc0 != 0 {
            return None;
        }
        wire_len += l + 1;
        if wire_len > 254 {
            return None;
        }
        let label = msg.get(at..at + l)?;
        if name.len > 0 {
            name.buf[name.len] = b'.';
            name.len += 1;
        }
        for &b in label {
            let c = b.to_ascii_lowercase();
            if !(0x21..0x7f).contains(&c) || c == b'.' {
                name.text = false;
            }
            name.buf[name.len] = c;
            name.len += 1;
        }
        at += l;
    }
}

/// Skips any name (compression pointers allowed) and returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let l = *msg.get(at)? as usize;
        if l == 0 {
            return Some(at + 1);
        }
        if l & 0xc0 == 0xc0 {
            msg.get(at + 1)?;
            return Some(at + 2);
        }
        if l & 0xc0 != 0 {
            return None;
        }
        at += 1 + l;
    }
}

/// Parses a query with exactly one question.
pub fn parse_query(msg: &[u8]) -> Result<Query, Bad> {
    if msg.len() < HEADER_LEN {
        return Err(Bad::Ignore);
    }
    let flags = flags(msg);
    if flags & F_QR != 0 {
        return Err(Bad::Ignore);
    }
    let qd = be16(msg, 4).unwrap_or(0);
    let (an, ns, ar) =
        (be16(msg, 6).unwrap_or(0), be16(msg, 8).unwrap_or(0), be16(msg, 10).unwrap_or(0));
    if qd != 1 {
        let rcode = if (flags & F_OPCODE) != 0 { NOTIMP } else { FORMERR };
        return Err(Bad::Reply { rcode, question_end: None });
    }
    let Some((name, at)) = read_qname(msg, HEADER_LEN) else {
        return Err(Bad::Reply { rcode: FORMERR, question_end: None });
    };
    let (Some(qtype), Some(qclass)) = (be16(msg, at), be16(msg, at + 2)) else {
        return Err(Bad::Reply { rcode: FORMERR, question_end: None });
    };
    let question_end = at + 4;
    if flags & F_OPCODE != 0 {
        return Err(Bad::Reply { rcode: NOTIMP, question_end: Some(question_end) });
    }
    // Look for an OPT record among the remaining records (normally the only one).
    let mut edns = None;
    let mut p = question_end;
    for n in 0..(an as usize + ns as usize + ar as usize) {
        let Some(after) = skip_name(msg, p) else {
            return Err(Bad::Reply { rcode: FORMERR, question_end: Some(question_end) });
        };
        let (Some(rtype), Some(rclass), Some(rdlen)) =
            (be16(msg, after), be16(msg, after + 2), be16(msg, after + 8))
        else {
            return Err(Bad::Reply { rcode: FORMERR, question_end: Some(question_end) });
        };
        if rtype == T_OPT && n >= an as usize + ns as usize {
            edns = Some(rclass);
        }
        p = after + 10 + rdlen as usize;
        if p > msg.len() {
            return Err(Bad::Reply { rcode: FORMERR, question_end: Some(question_end) });
        }
    }
    Ok(Query { name, qtype, qclass, question_end, edns })
}

/// Record data of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rdata<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(&'a str),
}

fn push16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `name` (dotted, no trailing dot needed) in uncompressed wire form.
pub fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

fn response_flags(query_flags: u16, authoritative: bool, rcode: u8) -> u16 {
    F_QR | (query_flags & (F_OPCODE | F_RD))
        | F_RA
        | if authoritative { F_AA } else { 0 }
        | (rcode as u16 & 0x0f)
}

/// Writes a reply to `msg` (whose question ends at `question_end`, or no question) into `out`.
/// When the answers do not fit in `limit` bytes they are left out and TC is set, so the client
/// retries over TCP. An OPT record is added when the query had one.
#[allow(clippy::too_many_arguments)]
pub fn build_reply(
    out: &mut Vec<u8>,
    msg: &[u8],
    question_end: Option<usize>,
    edns: bool,
    rcode: u8,
    authoritative: bool,
    ttl: u32,
    answers: &[Rdata],
    limit: usize,
) {
    out.clear();
    let qflags = flags(msg);
    push16(out, id(msg));
    push16(out, response_flags(qflags, authoritative, rcode));
    push16(out, question_end.is_some() as u16);
    push16(out, 0); // ancount, patched below
    push16(out, 0);
    push16(out, edns as u16);
    if let Some(end) = question_end {
        out.extend_from_slice(&msg[HEADER_LEN..end]);
    }
    let base = out.len();
    let opt_len = if edns { 11 } else { 0 };
    let mut count = 0u16;
    for a in answers {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        match a {
            Rdata::A(ip) => {
                push16(out, T_A);
                push16(out, C_IN);
                out.extend_from_slice(&ttl.to_be_bytes());
                push16(out, 4);
                out.extend_from_slice(&ip.octets());
            }
            Rdata::Aaaa(ip) => {
                push16(out, T_AAAA);
                push16(out, C_IN);
                out.extend_from_slice(&ttl.to_be_bytes());
                push16(out, 16);
                out.extend_from_slice(&ip.octets());
            }
            Rdata::Ptr(name) => {
                push16(out, T_PTR);
                push16(out, C_IN);
                out.extend_from_slice(&ttl.to_be_bytes());
                let len_at = out.len();
                push16(out, 0);
                push_name(out, name);
                let rdlen = (out.len() - len_at - 2) as u16;
                out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
            }
        }
        count += 1;
    }
    if out.len() + opt_len > limit {
        out.truncate(base);
        count = 0;
        let f = response_flags(qflags, authoritative, rcode) | F_TC;
        out[2..4].copy_from_slice(&f.to_be_bytes());
    }
    out[6..8].copy_from_slice(&count.to_be_bytes());
    if edns {
        out.push(0); // root
        push16(out, T_OPT);
        push16(out, EDNS_SIZE);
        out.extend_from_slice(&[0, 0, 0, 0]); // extended rcode, version, flags
        push16(out, 0);
    }
}

/// Answers from a list of addresses, keeping those of the asked family.
pub fn addr_rdata(ips: &[IpAddr], qtype: u16, out: &mut Vec<Rdata<'static>>) {
    out.clear();
    for ip in ips {
        match (ip, qtype) {
            (IpAddr::V4(v4), T_A | T_ANY) => out.push(Rdata::A(*v4)),
            (IpAddr::V6(v6), T_AAAA | T_ANY) => out.push(Rdata::Aaaa(*v6)),
            _ => {}
        }
    }
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa` or 32 nibbles + `ip6.arpa`.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        for (i, l) in labels.iter().enumerate() {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            octets[3 - i] = l.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for (i, n) in nibbles.iter().enumerate() {
            if n.len() != 1 {
                return None;
            }
            let d = u128::from(n.chars().next()?.to_digit(16)? as u8);
            v |= d << (4 * i);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    None
}

/// Encodes a query (for CHECK's probe and tests).
pub fn build_query(out: &mut Vec<u8>, id: u16, name: &str, qtype: u16) {
    out.clear();
    push16(out, id);
    push16(out, F_RD);
    push16(out, 1);
    push16(out, 0);
    push16(out, 0);
    push16(out, 0);
    push_name(out, name);
    push16(out, qtype);
    push16(out, C_IN);
}

/// The answers of a reply, for tests and CHECK: (type, rdata bytes). Skips the question.
pub fn answers(msg: &[u8]) -> Option<Vec<(u16, Vec<u8>)>> {
    let qd = be16(msg, 4)? as usize;
    let an = be16(msg, 6)? as usize;
    let mut p = HEADER_LEN;
    for _ in 0..qd {
        p = skip_name(msg, p)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        p = skip_name(msg, p)?;
        let t = be16(msg, p)?;
        let rdlen = be16(msg, p + 8)? as usize;
        let data = msg.get(p + 10..p + 10 + rdlen)?.to_vec();
        out.push((t, data));
        p += 10 + rdlen;
    }
    Some(out)
}

/// True when `reply` carries the same question as `query` (names compared case-insensitively).
pub fn same_question(query: &[u8], question_end: usize, reply: &[u8]) -> bool {
    let q = &query[HEADER_LEN..question_end];
    match reply.get(HEADER_LEN..question_end) {
        Some(r) => be16(reply, 4) == Some(1) && r.eq_ignore_ascii_case(q),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, t: u16) -> Vec<u8> {
        let mut v = Vec::new();
        build_query(&mut v, 0x1234, name, t);
        v
    }

    #[test]
    fn parses_a_query_and_lowercases() {
        let m = q("Db.Example.", T_A);
        let p = parse_query(&m).unwrap();
        assert_eq!(p.name.as_str(), Some("db.example"));
        assert_eq!(p.qtype, T_A);
        assert_eq!(p.qclass, C_IN);
        assert_eq!(p.question_end, m.len());
        assert_eq!(p.edns, None);
        assert_eq!(p.udp_limit(), 512);
    }

    #[test]
    fn root_and_odd_names() {
        let p = parse_query(&q(".", T_A)).unwrap();
        assert_eq!(p.name.as_str(), Some(""));
        let mut m = q("ab", T_A);
        m[13] = b'.'; // a literal dot inside a label
        assert_eq!(parse_query(&m).unwrap().name.as_str(), None);
    }

    #[test]
    fn edns_is_noticed() {
        let mut m = q("x", T_AAAA);
        m[11] = 1; // arcount
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let p = parse_query(&m).unwrap();
        assert_eq!(p.edns, Some(4096));
        assert_eq!(p.udp_limit(), UDP_MAX);
    }

    #[test]
    fn bad_messages() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), Bad::Ignore);
        let mut m = q("x", T_A);
        m[2] |= 0x80; // a response
        assert_eq!(parse_query(&m).unwrap_err(), Bad::Ignore);
        let mut m = q("x", T_A);
        m[5] = 2; // two questions
        assert!(matches!(parse_query(&m).unwrap_err(), Bad::Reply { rcode: FORMERR, .. }));
        let m = q("x", T_A);
        assert!(matches!(
            parse_query(&m[..m.len() - 1]).unwrap_err(),
            Bad::Reply { rcode: FORMERR, .. }
        ));
        let mut m = q("x", T_A);
        m[2] |= 0x28; // opcode 5 (UPDATE)
        assert!(matches!(
            parse_query(&m).unwrap_err(),
            Bad::Reply { rcode: NOTIMP, question_end: Some(_) }
        ));
        let mut m = q("x", T_A);
        m[12] = 0xc0; // compression pointer in the question
        assert!(matches!(parse_query(&m).unwrap_err(), Bad::Reply { rcode: FORMERR, .. }));
        // an additional record that runs past the end
        let mut m = q("x", T_A);
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 9]);
        assert!(matches!(parse_query(&m).unwrap_err(), Bad::Reply { rcode: FORMERR, .. }));
        // a name longer than 255 bytes
        let long = vec!["a".repeat(63); 5].join(".");
        assert!(parse_query(&q(&long, T_A)).is_err());
    }

    #[test]
    fn reply_copies_question_bytes_and_sets_flags() {
        let m = q("dB", T_A);
        let p = parse_query(&m).unwrap();
        let mut out = Vec::new();
        let ans = [Rdata::A("10.0.0.2".parse().unwrap()), Rdata::A("10.0.0.3".parse().unwrap())];
        build_reply(&mut out, &m, Some(p.question_end), false, NOERROR, true, 0, &ans, 512);
        assert_eq!(id(&out), 0x1234);
        assert!(is_response(&out));
        assert_eq!(flags(&out) & (F_AA | F_RD | F_RA), F_AA | F_RD | F_RA);
        assert_eq!(&out[12..p.question_end], &m[12..p.question_end]);
        let a = answers(&out).unwrap();
        assert_eq!(a, vec![(T_A, vec![10, 0, 0, 2]), (T_A, vec![10, 0, 0, 3])]);
    }

    #[test]
    fn reply_truncates_and_keeps_opt() {
        let mut m = q("many", T_A);
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41, 0x02, 0, 0, 0, 0, 0, 0, 0]);
        let p = parse_query(&m).unwrap();
        let ans: Vec<Rdata> = (0..40u8).map(|i| Rdata::A(Ipv4Addr::new(10, 0, 0, i))).collect();
        let mut out = Vec::new();
        build_reply(
            &mut out,
            &m,
            Some(p.question_end),
            true,
            NOERROR,
            true,
            0,
            &ans,
            p.udp_limit(),
        );
        assert!(is_truncated(&out));
        assert_eq!(answers(&out).unwrap().len(), 0);
        assert_eq!(u16::from_be_bytes([out[10], out[11]]), 1);
        assert!(out.len() <= 512);
        // over TCP everything fits
        build_reply(&mut out, &m, Some(p.question_end), true, NOERROR, true, 0, &ans, 65535);
        assert!(!is_truncated(&out));
        assert_eq!(answers(&out).unwrap().len(), 40);
    }

    #[test]
    fn ptr_and_error_replies() {
        let m = q("2.0.0.10.in-addr.arpa", T_PTR);
        let p = parse_query(&m).unwrap();
        assert_eq!(parse_reverse(p.name.as_str().unwrap()), Some("10.0.0.2".parse().unwrap()));
        let mut out = Vec::new();
        build_reply(
            &mut out,
            &m,
            Some(p.question_end),
            false,
            NOERROR,
            true,
            5,
            &[Rdata::Ptr("db.example")],
            512,
        );
        let a = answers(&out).unwrap();
        assert_eq!(a[0].0, T_PTR);
        assert_eq!(a[0].1, b"\x02db\x07example\x00".to_vec());
        build_reply(&mut out, &m, None, false, FORMERR, false, 0, &[], 512);
        assert_eq!(out.len(), 12);
        assert_eq!(rcode(&out), FORMERR);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(parse_reverse("1.2.3.4.in-addr.arpa"), Some("4.3.2.1".parse().unwrap()));
        assert_eq!(parse_reverse("1.2.3.in-addr.arpa"), None);
        assert_eq!(parse_reverse("256.2.3.4.in-addr.arpa"), None);
        let v6: Ipv6Addr = "fd00::1:2".parse().unwrap();
        let nib: Vec<String> =
            format!("{:032x}", u128::from(v6)).chars().rev().map(|c| c.to_string()).collect();
        assert_eq!(parse_reverse(&format!("{}.ip6.arpa", nib.join("."))), Some(IpAddr::V6(v6)));
        assert_eq!(parse_reverse("db"), None);
    }

    #[test]
    fn same_question_ignores_case() {
        let a = q("Db.x", T_A);
        let b = q("dB.X", T_A);
        let p = parse_query(&a).unwrap();
        assert!(same_question(&a, p.question_end, &b));
        let c = q("dc.x", T_A);
        assert!(!same_question(&a, p.question_end, &c));
    }
}
