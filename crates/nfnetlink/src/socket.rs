//! A blocking NETLINK_NETFILTER socket: sends nf_tables batches and single requests and
//! reads their replies, turning kernel refusals into [`Error`]s with the errno, the
//! kernel's extended-ack text and the operation that failed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::attr;

pub const NETLINK_NETFILTER: libc::c_int = 12;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
const HDR: usize = 16;

/// A kernel refusal (or a socket failure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Positive errno (0 for a malformed reply).
    pub errno: i32,
    /// What was being done (the failing message of a batch).
    pub what: String,
    /// The kernel's extended-ack text, if any.
    pub detail: Option<String>,
}

impl Error {
    fn io(what: &str, e: io::Error) -> Error {
        Error { errno: e.raw_os_error().unwrap_or(0), what: what.to_string(), detail: None }
    }
    fn msg(what: &str, detail: impl Into<String>) -> Error {
        Error { errno: 0, what: what.to_string(), detail: Some(detail.into()) }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.what)?;
        if self.errno != 0 {
            write!(f, ": {}", io::Error::from_raw_os_error(self.errno))?;
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Appends one netlink message (header + body) to `out`.
pub fn put_msg(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, body: &[u8]) {
    let len = (HDR + body.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out.resize((out.len() + 3) & !3, 0);
}

/// The 4-byte `nfgenmsg` every nfnetlink message starts with.
pub fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

/// One reply message: type, flags, seq and its body.
#[derive(Debug)]
pub struct Reply {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub body: Vec<u8>,
}

/// A NETLINK_NETFILTER socket in the namespace of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> Result<Socket, Error> {
        let what = "opening a netfilter netlink socket";
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER)
        };
        if fd < 0 {
            return Err(Error::io(what, io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bind with a valid sockaddr_nl of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::io(what, io::Error::last_os_error()));
        }
        let s = Socket { fd, seq: std::process::id().wrapping_mul(7919), buf: vec![0; 1 << 16] };
        // Short ACKs with the kernel's error text; both best effort.
        s.setsockopt_int(libc::SOL_NETLINK, 10, 1); // NETLINK_CAP_ACK
        s.setsockopt_int(libc::SOL_NETLINK, 11, 1); // NETLINK_EXT_ACK
                                                    // A bounded wait: a reply that never comes must not hang a plugin.
        let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
        // SAFETY: setsockopt with a live timeval.
        unsafe {
            libc::setsockopt(
                s.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(s)
    }

    fn setsockopt_int(&self, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> bool {
        // SAFETY: setsockopt on our socket with a live c_int.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            ) == 0
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next `n` sequence numbers; returns the first.
    pub fn take_seq(&mut self, n: u32) -> u32 {
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(n);
        first
    }

    pub fn send(&self, bytes: &[u8], what: &str) -> Result<(), Error> {
        if bytes.len() > 200 * 1024 {
            // A big batch (a full restore) must fit the socket's send buffer in one datagram.
            let size = (bytes.len() + 64 * 1024) as libc::c_int;
            if !self.setsockopt_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size) {
                self.setsockopt_int(libc::SOL_SOCKET, libc::SO_SNDBUF, size);
            }
        }
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        loop {
            // SAFETY: sendto with a valid buffer and address.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr() as *const libc::c_void,
                    bytes.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(what, e));
            }
        }
    }

    /// Reads one datagram and splits it into messages.
    pub fn recv(&mut self, what: &str) -> Result<Vec<Reply>, Error> {
        let n = loop {
            // SAFETY: recv into our buffer; MSG_TRUNC reports the real size.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(what, e));
            }
        };
        if n > self.buf.len() {
            // Grow and let the caller's loop read the next datagram: a truncated one is lost.
            self.buf.resize(n.next_power_of_two(), 0);
            return Err(Error::msg(what, format!("netlink reply of {n} bytes truncated")));
        }
        let mut out = Vec::new();
        let mut off = 0;
        while off + HDR <= n {
            let b = &self.buf[off..n];
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            if len < HDR || len > b.len() {
                return Err(Error::msg(what, "malformed netlink reply"));
            }
            out.push(Reply {
                kind: u16::from_ne_bytes([b[4], b[5]]),
                flags: u16::from_ne_bytes([b[6], b[7]]),
                seq: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
                body: b[HDR..len].to_vec(),
            });
            off += (len + 3) & !3;
        }
        Ok(out)
    }
}

/// The errno and extended-ack text of an NLMSG_ERROR body (errno 0 = an ACK).
pub fn parse_error(flags: u16, body: &[u8]) -> (i32, Option<String>) {
    if body.len() < 4 {
        return (0, None);
    }
    let err = -i32::from_ne_bytes(body[0..4].try_into().unwrap());
    let mut detail = None;
    if flags & NLM_F_ACK_TLVS != 0 && body.len() >= 4 + HDR {
        // The echoed request: its header only when capped (NLM_F_CAPPED = 0x100).
        let echoed = if flags & 0x100 != 0 {
            HDR
        } else {
            (u32::from_ne_bytes(body[4..8].try_into().unwrap()) as usize + 3) & !3
        };
        if let Some(tlvs) = body.get(4 + echoed..) {
            detail = attr::find(tlvs, NLMSGERR_ATTR_MSG).map(attr::string);
        }
    }
    (err, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let mut out = Vec::new();
        put_msg(&mut out, 0x0a00, NLM_F_REQUEST | NLM_F_CREATE, 7, &nfgen(1, 0));
        assert_eq!(out.len(), 20);
        assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()), 20);
        assert_eq!(&out[16..20], &[1, 0, 0, 0]);
        assert_eq!(nfgen(0, 10), [0, 0, 0, 10]);
    }
}
