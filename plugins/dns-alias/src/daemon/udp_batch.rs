//! Batched UDP I/O: up to `BATCH` queries per recvmmsg(2) and their replies in one
//! sendmmsg(2), so a busy container costs two syscalls per batch instead of two per query.
//! The headers are allocated once; nothing on this path allocates.

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

pub const BATCH: usize = 32;
/// Largest query we read; anything longer is cut (and then fails to parse).
const SLOT: usize = 4096;

pub struct Batch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    peers: [Option<SockaddrStorage>; BATCH],
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// Replies queued for `flush`: (offset in `arena`, length); `to[k]` is where each goes.
    replies: Vec<(usize, usize)>,
    to: [Option<SockaddrStorage>; BATCH],
    arena: Vec<u8>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            peers: [None; BATCH],
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            replies: Vec::with_capacity(BATCH),
            to: [None; BATCH],
            arena: Vec::with_capacity(BATCH * 512),
        }
    }
}

impl Batch {
    /// Reads up to BATCH datagrams without blocking; returns how many (0: none waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.replies.clear();
        self.arena.clear();
        let mut chunks = self.bufs.chunks_mut(SLOT);
        let mut iovs: [[IoSliceMut; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().expect("BATCH slots"))]);
        let got = match recvmmsg(
            fd,
            &mut self.recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut n = 0;
        for (i, m) in got.enumerate() {
            self.lens[i] = m.bytes.min(SLOT);
            self.peers[i] = m.address;
            n = i + 1;
        }
        Ok(n)
    }

    pub fn msg(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT..i * SLOT + self.lens[i]]
    }

    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        let p = self.peers[i].as_ref()?;
        if let Some(v4) = p.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        p.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }

    /// Queues `reply` to the sender of message `i`.
    pub fn reply(&mut self, i: usize, reply: &[u8]) {
        let off = self.arena.len();
        self.arena.extend_from_slice(reply);
        self.to[self.replies.len()] = self.peers[i];
        self.replies.push((off, reply.len()));
    }

    /// Sends every queued reply (best effort: a full socket buffer drops the rest, as it
    /// would drop the queries).
    pub fn flush(&mut self, fd: RawFd) {
        let count = self.replies.len();
        let arena = &self.arena;
        let mut sent = 0;
        while sent < count {
            let iovs: [[IoSlice; 1]; BATCH] = std::array::from_fn(|k| {
                let (off, len) = self.replies.get(sent + k).copied().unwrap_or((0, 0));
                [IoSlice::new(&arena[off..off + len])]
            });
            let r = sendmmsg(
                fd,
                &mut self.send_headers,
                &iovs[..count - sent],
                &self.to[sent..count],
                [] as [ControlMessage; 0],
                MsgFlags::MSG_DONTWAIT,
            );
            match r {
                Ok(res) => {
                    let n = res.count();
                    // EAGAIN or an error for one destination: skip that one.
                    sent += n.max(1);
                }
                Err(_) => sent += 1,
            }
        }
        self.replies.clear();
        self.arena.clear();
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
