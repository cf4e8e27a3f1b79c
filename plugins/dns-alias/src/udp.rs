//! Batched UDP I/O: up to `BATCH` queries per recvmmsg(2) and their replies in one
//! sendmmsg(2), so a busy container costs two syscalls per batch instead of two per query.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

pub const BATCH: usize = 32;
/// Largest query we read; anything longer is cut (and then fails to parse).
const SLOT: usize = 4096;

pub struct Batch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    namelens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    /// Replies queued for `flush`: (message index, offset in `arena`, length).
    replies: Vec<(usize, usize, usize)>,
    arena: Vec<u8>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { zeroed() }; BATCH],
            namelens: vec![0; BATCH],
            lens: vec![0; BATCH],
            replies: Vec::with_capacity(BATCH),
            arena: Vec::with_capacity(BATCH * 512),
        }
    }
}

impl Batch {
    /// Reads up to BATCH datagrams without blocking; returns how many (0: none waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.replies.clear();
        self.arena.clear();
        // SAFETY: zeroed iovec/mmsghdr arrays are valid; every pointer set below points into
        // buffers owned by `self` that outlive the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = self.bufs[i * SLOT..].as_mut_ptr() as *mut libc::c_void;
            iov[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs describes BATCH valid buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = (h.msg_len as usize).min(SLOT);
            self.namelens[i] = h.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    pub fn msg(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT..i * SLOT + self.lens[i]]
    }

    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        sockaddr_to_std(&self.addrs[i], self.namelens[i])
    }

    /// Queues `reply` to the sender of message `i`.
    pub fn reply(&mut self, i: usize, reply: &[u8]) {
        let off = self.arena.len();
        self.arena.extend_from_slice(reply);
        self.replies.push((i, off, reply.len()));
    }

    /// Sends every queued reply (best effort: a full socket buffer drops the rest, as it
    /// would drop the queries).
    pub fn flush(&mut self, fd: RawFd) {
        let count = self.replies.len();
        if count == 0 {
            return;
        }
        // SAFETY: as in `recv`; the arena is not touched until sendmmsg returns.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (k, &(i, off, len)) in self.replies.iter().enumerate() {
            iov[k].iov_base = self.arena[off..].as_ptr() as *mut libc::c_void;
            iov[k].iov_len = len;
            hdrs[k].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            hdrs[k].msg_hdr.msg_namelen = self.namelens[i];
            hdrs[k].msg_hdr.msg_iov = &mut iov[k];
            hdrs[k].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: hdrs[sent..count] are initialised above.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[sent..].as_mut_ptr(),
                    (count - sent) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                // EAGAIN or an error for one destination: skip that one.
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
        self.replies.clear();
        self.arena.clear();
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        for i in 0..5u8 {
            client.send_to(&[i; 3], server.local_addr().unwrap()).unwrap();
        }
        let mut b = Batch::default();
        let mut got = 0;
        while got < 5 {
            let n = b.recv(server.as_raw_fd()).unwrap();
            for i in 0..n {
                assert_eq!(b.peer(i), Some(client.local_addr().unwrap()));
                let m = b.msg(i).to_vec();
                b.reply(i, &[m[0], 42]);
            }
            b.flush(server.as_raw_fd());
            got += n;
        }
        let mut seen = Vec::new();
        for _ in 0..5 {
            let mut buf = [0u8; 8];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(n, 2);
            assert_eq!(buf[1], 42);
            seen.push(buf[0]);
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }
}
