//! A blocking rtnetlink socket: sends one request, reads replies until the ACK
//! (or NLMSG_DONE for dumps), and turns kernel errors into `Error`.

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};

/// Receive buffer size: the kernel never sends a datagram larger than 32 KiB for rtnetlink dumps.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Size of `struct nlmsghdr`.
const NLMSG_HDR_LEN: usize = 16;
/// How often a dump is retried when the kernel says it was interrupted.
const DUMP_ATTEMPTS: u32 = 5;
/// `NLMSGERR_ATTR_MSG`: the extended-ack text attribute in an NLMSG_ERROR.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One rtnetlink socket plus the sequence counter of its requests.
pub(crate) struct RtSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl RtSocket {
    /// Opens a NETLINK_ROUTE socket in the calling thread's current namespace.
    pub(crate) fn open() -> Result<RtSocket> {
        let ctx = "opening rtnetlink socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::from_io(ctx, e))?;
        socket.bind_auto().map_err(|e| Error::from_io(ctx, e))?;
        // Short ACKs (no echoed request) that carry the kernel's error text.
        // Both are best effort: old kernels without them still work.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| Error::from_io(ctx, e))?;
        Ok(RtSocket { socket, seq: 0, buf: vec![0; RECV_BUF_LEN] })
    }

    /// Turns kernel-side filtering of dumps on or off (NETLINK_GET_STRICT_CHK, Linux 4.20+).
    /// With it, an address dump for one ifindex returns only that link's addresses instead of
    /// every address in the namespace (thousands of veth link-locals on a busy host).
    /// Returns false when the kernel does not support it (callers then filter themselves).
    pub(crate) fn set_strict_dump(&mut self, on: bool) -> bool {
        use std::os::fd::AsRawFd;
        const SOL_NETLINK: libc::c_int = 270;
        const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
        let val: libc::c_int = on as libc::c_int;
        // SAFETY: setsockopt on our own open socket with a pointer to a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_GET_STRICT_CHK,
                &val as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }

    /// Sends a request that changes something and waits for its ACK.
    /// `flags` are added to NLM_F_REQUEST | NLM_F_ACK (e.g. NLM_F_CREATE | NLM_F_EXCL).
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        ctx: &str,
    ) -> Result<()> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags, ctx).map(|_| ())
    }

    /// Sends a GET request for one object and returns its reply messages
    /// (an error such as ENODEV when it does not exist).
    pub(crate) fn get(
        &mut self,
        msg: RouteNetlinkMessage,
        ctx: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST, ctx)
    }

    /// Sends a dump request and returns every message of the (multipart) reply.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        ctx: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        // A dump that raced with a change is flagged NLM_F_DUMP_INTR and may be
        // inconsistent: run it again (a few times, then take what we got).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (replies, interrupted) =
                self.exchange_raw(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, ctx)?;
            if !interrupted || attempts == DUMP_ATTEMPTS {
                return Ok(replies);
            }
        }
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        ctx: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange_raw(msg, flags, ctx).map(|(replies, _)| replies)
    }

    /// Sends one request and collects its replies; the flag tells whether the
    /// kernel marked the dump as interrupted (NLM_F_DUMP_INTR).
    fn exchange_raw(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        ctx: &str,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.send(&out, ctx)?;

        let is_dump = flags & NLM_F_DUMP != 0;
        let wants_ack = flags & NLM_F_ACK != 0;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.recv(ctx)?;
            let mut offset = 0;
            while offset + NLMSG_HDR_LEN <= len {
                let bytes = &self.buf[offset..len];
                let header = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| Error::msg(ctx, format!("malformed netlink reply: {e}")))?;
                let msg_len = header.length() as usize;
                if msg_len < NLMSG_HDR_LEN || msg_len > bytes.len() {
                    return Err(Error::msg(ctx, "malformed netlink reply length"));
                }
                offset += (msg_len + 3) & !3;
                if header.sequence_number() != seq {
                    continue; // a late reply to an earlier request
                }
                interrupted |= header.flags() & NLM_F_DUMP_INTR != 0;
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..msg_len])
                    .map_err(|e| {
                    Error::msg(ctx, format!("cannot decode netlink reply: {e}"))
                })?;
                let reply_flags = reply.header.flags;
                match reply.payload {
                    NetlinkPayload::Error(err) => match err.code {
                        None => return Ok((replies, interrupted)), // the ACK: end of a request
                        Some(code) => {
                            let detail = ext_ack_message(reply_flags, &err.header);
                            return Err(Error::from_errno(ctx, -code.get()).with_detail(detail));
                        }
                    },
                    NetlinkPayload::Done(_) => return Ok((replies, interrupted)),
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        // A single-object GET without ACK ends with its one reply.
                        if !is_dump && !wants_ack {
                            return Ok((replies, interrupted));
                        }
                    }
                    _ => {} // NOOP / OVERRUN: nothing to keep
                }
            }
        }
    }

    fn send(&mut self, bytes: &[u8], ctx: &str) -> Result<()> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from_io(ctx, e)),
            }
        }
    }

    /// Reads one datagram into `self.buf`, returning its length.
    fn recv(&mut self, ctx: &str) -> Result<usize> {
        loop {
            let mut slice = &mut self.buf[..];
            match self.socket.recv(&mut slice, libc::MSG_TRUNC) {
                Ok(n) if n > RECV_BUF_LEN => {
                    return Err(Error::msg(ctx, format!("netlink reply of {n} bytes truncated")))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from_io(ctx, e)),
            }
        }
    }
}

/// Extracts the kernel's extended-ack text (NLMSGERR_ATTR_MSG) from an error payload
/// (`payload` is the echoed request header, its body unless capped, then the TLVs).
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NLMSG_HDR_LEN {
        return None;
    }
    let echoed_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDR_LEN
    } else {
        let len = u32::from_ne_bytes(payload[..4].try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let mut tlvs = payload.get(echoed_len..)?;
    while tlvs.len() >= 4 {
        let nla_len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let nla_type = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if nla_len < 4 || nla_len > tlvs.len() {
            return None;
        }
        if nla_type == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..nla_len];
            let text = text.split(|b| *b == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get((nla_len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_found_after_capped_header() {
        let mut payload = vec![0u8; NLMSG_HDR_LEN];
        let text = b"Unknown device type\0";
        let nla_len = (4 + text.len()) as u16;
        payload.extend_from_slice(&nla_len.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let got = ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload);
        assert_eq!(got.as_deref(), Some("Unknown device type"));
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &payload), None);
    }
}
