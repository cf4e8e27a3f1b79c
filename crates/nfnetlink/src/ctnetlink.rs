//! Deleting conntrack entries over ctnetlink (no `conntrack` child process).
//!
//! A [`Filter`] names the flows to delete by fields of their original and reply tuples and
//! their status; the kernel deletes what matches in one request (see [`delete_matching`]).
//! A namespace with no conntrack entry at all is answered from `nf_conntrack_count` without
//! asking the kernel for anything.

use std::net::IpAddr;

use crate::attr::{self, Attrs};
use crate::socket::{self, Error, Socket, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const SUBSYS_CTNETLINK: u16 = 1;
const MSG_GET: u16 = 1;
const MSG_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_FILTER: u16 = 25;
const CTA_STATUS_MASK: u16 = 26;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const FLAG_IP_SRC: u32 = 1 << 0;
const FLAG_IP_DST: u32 = 1 << 1;
const FLAG_PROTO_NUM: u32 = 1 << 3;
const FLAG_PROTO_SRC_PORT: u32 = 1 << 4;
const FLAG_PROTO_DST_PORT: u32 = 1 << 5;
/// IPS_DST_NAT.
pub const STATUS_DNAT: u32 = 0x20;

/// One side of a tuple to match; `None` fields match anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleMatch {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

impl TupleMatch {
    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.src.is_some() {
            f |= FLAG_IP_SRC;
        }
        if self.dst.is_some() {
            f |= FLAG_IP_DST;
        }
        if self.src_port.is_some() {
            f |= FLAG_PROTO_SRC_PORT;
        }
        if self.dst_port.is_some() {
            f |= FLAG_PROTO_DST_PORT;
        }
        f
    }

    fn encode(&self, a: &mut Attrs, kind: u16, v6: bool, proto: u8) {
        a.nested(kind, |t| {
            t.nested(CTA_TUPLE_IP, |ip| {
                let (s, d) = if v6 { (3, 4) } else { (1, 2) };
                if let Some(x) = self.src {
                    ip.put(s, &crate::expr::ip_bytes(x));
                }
                if let Some(x) = self.dst {
                    ip.put(d, &crate::expr::ip_bytes(x));
                }
            });
            t.nested(CTA_TUPLE_PROTO, |p| {
                p.put(CTA_PROTO_NUM, &[proto]);
                if let Some(x) = self.src_port {
                    p.put(CTA_PROTO_SRC_PORT, &x.to_be_bytes());
                }
                if let Some(x) = self.dst_port {
                    p.put(CTA_PROTO_DST_PORT, &x.to_be_bytes());
                }
            });
        });
    }
}

/// Which flows to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    pub v6: bool,
    /// IPPROTO_UDP = 17, ...
    pub proto: u8,
    pub orig: TupleMatch,
    pub reply: TupleMatch,
    /// Only flows whose status has none of these bits (e.g. not DNATed).
    pub status_clear: u32,
}

/// Number of conntrack entries in the calling thread's namespace, when readable.
pub fn entry_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").ok()?.trim().parse().ok()
}

/// One ctnetlink request. With `version` 1 the kernel keeps a flush to `v6`'s family; with 0
/// (the old protocol) it would flush every family.
fn request(
    sock: &mut Socket,
    m: u16,
    flags: u16,
    v6: bool,
    version: u8,
    attrs: &[u8],
) -> (u32, Vec<u8>) {
    let seq = sock.take_seq(1);
    let mut body =
        socket::nfgen(if v6 { libc::AF_INET6 as u8 } else { libc::AF_INET as u8 }, 0).to_vec();
    body[1] = version;
    body.extend_from_slice(attrs);
    let mut buf = Vec::new();
    socket::put_msg(&mut buf, (SUBSYS_CTNETLINK << 8) | m, flags, seq, &body);
    (seq, buf)
}

/// The filter as ctnetlink attributes: both tuples with what they name, CTA_FILTER saying
/// which of their fields count, and the status bits that must be clear.
fn filter_attrs(f: &Filter) -> Attrs {
    let mut a = Attrs::new();
    f.orig.encode(&mut a, CTA_TUPLE_ORIG, f.v6, f.proto);
    f.reply.encode(&mut a, CTA_TUPLE_REPLY, f.v6, f.proto);
    a.nested(CTA_FILTER, |x| {
        // CTA_FILTER_ORIG_FLAGS / CTA_FILTER_REPLY_FLAGS, host byte order.
        x.put(1, &(f.orig.flags() | FLAG_PROTO_NUM).to_ne_bytes());
        x.put(2, &(f.reply.flags() | FLAG_PROTO_NUM).to_ne_bytes());
    });
    if f.status_clear != 0 {
        // Matches when (status & mask) == 0: none of those bits set.
        a.put(CTA_STATUS, &0u32.to_be_bytes());
        a.put(CTA_STATUS_MASK, &f.status_clear.to_be_bytes());
    }
    a
}

/// Deletes the flows matching `f` in the caller's namespace. No conntrack support, or
/// nothing to delete, is not an error.
///
/// One DELETE that carries the filter: the kernel walks its table itself
/// (`nf_ct_iterate_cleanup_net`, a bucket at a time, with a reschedule point between
/// them). A filtered dump walks the same global table (262,144 buckets here) in one
/// stretch without a quiescent state, 3+ ms during which no RCU grace period can end; a
/// veth delete running meanwhile (the bridge DEL after portmap's) waited for it, and made
/// a UDP mapping's DEL twice a TCP one's even with the flush detached. Kernels that cannot
/// flush by filter (before 6.3) read the partial tuple as an exact one and answer EINVAL
/// without deleting anything; they get the dump and a delete per match. Unlike an aborted
/// nf_tables batch, a refused ctnetlink request costs no grace period.
pub fn delete_matching(f: &Filter) -> Result<(), Error> {
    if entry_count() == Some(0) {
        return Ok(());
    }
    let mut sock = Socket::open()?;
    match flush_by_filter(&mut sock, f) {
        Err(e) if e.errno == libc::EINVAL => dump_and_delete(&mut sock, f).map(|_| ()),
        other => other,
    }
}

/// The kernel-side flush of [`delete_matching`], public so a test can tell it is the path
/// taken on this kernel.
pub fn flush_by_filter(sock: &mut Socket, f: &Filter) -> Result<(), Error> {
    let what = "deleting conntrack entries by filter";
    let a = filter_attrs(f);
    let (seq, buf) = request(sock, MSG_DELETE, NLM_F_REQUEST | NLM_F_ACK, f.v6, 1, a.bytes());
    sock.send(&buf, what)?;
    loop {
        for r in sock.recv(what)? {
            if r.seq != seq || r.kind != socket::NLMSG_ERROR {
                continue;
            }
            return match socket::parse_error(r.flags, &r.body) {
                (0, _) => Ok(()),
                // No conntrack in this kernel or namespace: nothing to delete.
                (libc::ENOENT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT, _) => Ok(()),
                (errno, detail) => Err(Error { errno, what: what.into(), detail }),
            };
        }
    }
}

/// The older way: a filtered dump, then a delete per match by its exact original tuple (a
/// hash lookup); returns how many were deleted.
fn dump_and_delete(sock: &mut Socket, f: &Filter) -> Result<usize, Error> {
    let a = filter_attrs(f);
    let what = "listing conntrack entries";
    let (seq, buf) = request(sock, MSG_GET, NLM_F_REQUEST | NLM_F_DUMP, f.v6, 0, a.bytes());
    sock.send(&buf, what)?;
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    'dump: loop {
        for r in sock.recv(what)? {
            if r.seq != seq {
                continue;
            }
            match r.kind {
                socket::NLMSG_DONE => break 'dump,
                socket::NLMSG_ERROR => {
                    let (errno, detail) = socket::parse_error(r.flags, &r.body);
                    if errno == 0 {
                        break 'dump;
                    }
                    // No conntrack in this kernel / namespace: nothing to delete.
                    if matches!(errno, libc::ENOENT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT) {
                        return Ok(0);
                    }
                    return Err(Error { errno, what: what.into(), detail });
                }
                _ => {
                    let attrs = r.body.get(4..).unwrap_or(&[]);
                    let status = attr::find(attrs, CTA_STATUS).and_then(attr::be32).unwrap_or(0);
                    if status & f.status_clear != 0 {
                        continue;
                    }
                    if let Some(orig) = attr::find(attrs, CTA_TUPLE_ORIG) {
                        doomed.push(orig.to_vec());
                    }
                }
            }
        }
    }
    let mut deleted = 0;
    for orig in doomed {
        // The tuple exactly as the kernel gave it.
        let mut a = Attrs::new();
        a.put(CTA_TUPLE_ORIG | attr::NLA_F_NESTED, &orig);
        let bytes = a.into_bytes();
        let (seq, buf) = request(sock, MSG_DELETE, NLM_F_REQUEST | NLM_F_ACK, f.v6, 0, &bytes);
        sock.send(&buf, "deleting a conntrack entry")?;
        loop {
            let replies = sock.recv("deleting a conntrack entry")?;
            if let Some(r) = replies.iter().find(|r| r.seq == seq && r.kind == socket::NLMSG_ERROR)
            {
                if socket::parse_error(r.flags, &r.body).0 == 0 {
                    deleted += 1;
                }
                break;
            }
        }
    }
    Ok(deleted)
}
