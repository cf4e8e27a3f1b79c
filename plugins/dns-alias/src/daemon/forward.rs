//! Queries for names that are not ours, relayed to the scope's upstream servers.
//!
//! Each forward is a small state machine in the event loop: one attempt per upstream, in
//! order, over UDP (for UDP clients) or TCP (for TCP clients, and for UDP clients whose UDP
//! answer came back truncated). Every attempt has its own socket (a random source port),
//! a new random ID and a deadline. At most `MAX_FORWARDS` are in flight, like Docker's cap;
//! past that a client gets SERVFAIL at once rather than a queue that grows.

use super::{log, token, Daemon, K_FORWARD};
use crate::wire::{self, Query};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Forwards in flight, UDP and TCP together (Docker caps its embedded DNS at 1024 too).
pub const MAX_FORWARDS: usize = 1024;
/// One UDP attempt before the next server is tried.
const UDP_ATTEMPT: Duration = Duration::from_secs(2);
/// One TCP attempt: connect, send, and the whole answer.
const TCP_ATTEMPT: Duration = Duration::from_secs(4);

/// Who gets the answer.
pub enum Origin {
    Udp { via: Rc<UdpSocket>, client: SocketAddr, limit: usize },
    Tcp { conn: usize, gen: u64 },
}

enum Phase {
    Connecting,
    Sending,
    Receiving,
}

enum Transport {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, phase: Phase, buf: Vec<u8>, pos: usize },
}

pub struct Forward {
    origin: Origin,
    query: Vec<u8>,
    question_end: usize,
    edns: bool,
    upstreams: Arc<[SocketAddr]>,
    attempt: usize,
    tcp: bool,
    new_id: u16,
    transport: Option<Transport>,
    deadline: Instant,
    gen: u64,
    /// A truncated UDP answer, kept while the question is asked again over TCP.
    truncated: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct Forwards {
    slots: Vec<Option<Forward>>,
    free: Vec<usize>,
    count: usize,
    next_gen: u64,
    /// Queries answered SERVFAIL at once because `MAX_FORWARDS` were in flight.
    refused: u64,
}

impl Forwards {
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn refused(&self) -> u64 {
        self.refused
    }
    fn reserve(&mut self) -> Option<usize> {
        if self.count >= MAX_FORWARDS {
            return None;
        }
        self.count += 1;
        Some(self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        }))
    }
    fn release(&mut self, slot: usize) {
        self.count -= 1;
        self.free.push(slot);
    }
}

fn udp_upstream(up: SocketAddr, msg: &[u8]) -> io::Result<UdpSocket> {
    let bind: SocketAddr =
        if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = UdpSocket::bind(bind)?;
    s.connect(up)?;
    s.set_nonblocking(true)?;
    s.send(msg)?;
    Ok(s)
}

/// A non-blocking connect: returns at once, the socket reports writable when it is done.
fn tcp_upstream(up: SocketAddr) -> io::Result<TcpStream> {
    let family = if up.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = sock::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let stream = TcpStream::from(fd);
    match sock::connect(std::os::fd::AsRawFd::as_raw_fd(&stream), &SockaddrStorage::from(up)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Daemon {
    /// Starts relaying `query` (parsed as `q`) to `upstreams` for `origin`.
    pub(super) fn start_forward(
        &mut self,
        origin: Origin,
        query: Vec<u8>,
        q: &Query,
        upstreams: Arc<[SocketAddr]>,
    ) {
        let tcp = matches!(origin, Origin::Tcp { .. });
        let f = Forward {
            origin,
            query,
            question_end: q.question_end,
            edns: q.edns.is_some(),
            upstreams,
            attempt: 0,
            tcp,
            new_id: 0,
            transport: None,
            deadline: Instant::now(),
            gen: 0,
            truncated: None,
        };
        match self.forwards.reserve() {
            Some(slot) => self.attempt(slot, f),
            None => {
                if self.forwards.refused == 0 {
                    log!("{MAX_FORWARDS} forwards in flight: answering SERVFAIL past that");
                }
                self.forwards.refused += 1;
                self.deliver(f, None);
            }
        }
    }

    /// Sends the question to the current upstream (or the next ones, when sending fails
    /// at once). Without any left, answers the origin.
    fn attempt(&mut self, slot: usize, mut f: Forward) {
        while f.attempt < f.upstreams.len() {
            let up = f.upstreams[f.attempt];
            f.new_id = self.scratch.rng.next_u64() as u16;
            let mut msg = f.query.clone();
            wire::set_id(&mut msg, f.new_id);
            let opened = if f.tcp {
                tcp_upstream(up).map(|stream| {
                    let mut buf = Vec::with_capacity(msg.len() + 2);
                    buf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                    buf.extend_from_slice(&msg);
                    (Transport::Tcp { stream, phase: Phase::Connecting, buf, pos: 0 }, TCP_ATTEMPT)
                })
            } else {
                udp_upstream(up, &msg).map(|s| (Transport::Udp(s), UDP_ATTEMPT))
            };
            let registered = opened.and_then(|(t, timeout)| {
                let (fd, flags) = match &t {
                    Transport::Udp(s) => (std::os::fd::AsFd::as_fd(s), EpollFlags::EPOLLIN),
                    Transport::Tcp { stream, .. } => {
                        (std::os::fd::AsFd::as_fd(stream), EpollFlags::EPOLLOUT)
                    }
                };
                self.epoll.add(fd, EpollEvent::new(flags, token(K_FORWARD, slot)))?;
                Ok((t, timeout))
            });
            match registered {
                Ok((t, timeout)) => {
                    self.forwards.next_gen += 1;
                    f.gen = self.forwards.next_gen;
                    f.deadline = Instant::now() + timeout;
                    f.transport = Some(t);
                    self.timers.push(f.deadline, token(K_FORWARD, slot), f.gen);
                    self.forwards.slots[slot] = Some(f);
                    return;
                }
                Err(_) => f.attempt += 1,
            }
        }
        self.forwards.release(slot);
        self.deliver(f, None);
    }

    /// Gives up on the current upstream and tries the next one.
    fn next_upstream(&mut self, slot: usize) {
        let Some(mut f) = self.forwards.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.drop_transport(&mut f);
        f.attempt += 1;
        self.attempt(slot, f);
    }

    fn drop_transport(&mut self, f: &mut Forward) {
        match f.transport.take() {
            Some(Transport::Udp(s)) => {
                let _ = self.epoll.delete(&s);
            }
            Some(Transport::Tcp { stream, .. }) => {
                let _ = self.epoll.delete(&stream);
            }
            None => {}
        }
    }

    /// A forward's deadline passed (or an old one, for an earlier attempt or slot user).
    pub(super) fn forward_timer(&mut self, slot: usize, gen: u64, now: Instant) {
        let due = match self.forwards.slots.get(slot).and_then(Option::as_ref) {
            Some(f) if f.gen == gen => f.deadline <= now,
            _ => return,
        };
        if due {
            self.next_upstream(slot);
        }
    }

    pub(super) fn on_forward(&mut self, slot: usize) {
        let Some(mut f) = self.forwards.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        match self.progress(slot, &mut f) {
            Step::Wait => self.forwards.slots[slot] = Some(f),
            Step::Next => {
                self.forwards.slots[slot] = Some(f);
                self.next_upstream(slot);
            }
            Step::Truncated(reply) => {
                // Ask the same server again over TCP; the truncated answer is the fallback.
                self.drop_transport(&mut f);
                f.truncated = Some(reply);
                f.tcp = true;
                self.attempt(slot, f);
            }
            Step::Done(reply) => {
                self.drop_transport(&mut f);
                self.forwards.release(slot);
                let answer = if f.tcp { Answer::OverTcp(reply) } else { Answer::OverUdp(reply) };
                self.deliver(f, Some(answer));
            }
        }
    }

    /// Advances the forward's I/O as far as it goes without blocking.
    fn progress(&mut self, slot: usize, f: &mut Forward) -> Step {
        let more_left = f.attempt + 1 < f.upstreams.len();
        match f.transport.as_mut() {
            None => Step::Next,
            Some(Transport::Udp(s)) => loop {
                let n = match s.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                    // e.g. ICMP port unreachable: this server is not there.
                    Err(_) => return Step::Next,
                };
                let reply = &self.buf[..n];
                if n < wire::HEADER_LEN
                    || wire::id(reply) != f.new_id
                    || !wire::is_response(reply)
                    || !wire::same_question(&f.query, f.question_end, reply)
                {
                    continue; // not the answer to our question: keep waiting
                }
                let rc = wire::rcode(reply);
                if (rc == wire::SERVFAIL || rc == wire::REFUSED) && more_left {
                    return Step::Next;
                }
                let reply = reply.to_vec();
                return if wire::is_truncated(&reply) {
                    Step::Truncated(reply)
                } else {
                    Step::Done(reply)
                };
            },
            Some(Transport::Tcp { stream, phase, buf, pos }) => {
                if let Phase::Connecting = phase {
                    match sock::getsockopt(&*stream, sockopt::SocketError) {
                        Ok(0) => *phase = Phase::Sending,
                        _ => return Step::Next,
                    }
                }
                if let Phase::Sending = phase {
                    while *pos < buf.len() {
                        match stream.write(&buf[*pos..]) {
                            Ok(0) => return Step::Next,
                            Ok(n) => *pos += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                            Err(_) => return Step::Next,
                        }
                    }
                    *phase = Phase::Receiving;
                    buf.clear();
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, token(K_FORWARD, slot));
                    if self.epoll.modify(&*stream, &mut ev).is_err() {
                        return Step::Next;
                    }
                }
                // Receiving: a 2-byte length, then the message.
                loop {
                    let want = if buf.len() < 2 {
                        2
                    } else {
                        2 + u16::from_be_bytes([buf[0], buf[1]]) as usize
                    };
                    if buf.len() >= want && want > 2 {
                        break;
                    }
                    let mut chunk = [0u8; 4096];
                    let room = (want - buf.len()).min(chunk.len());
                    match stream.read(&mut chunk[..room]) {
                        Ok(0) => return Step::Next,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(_) => return Step::Next,
                    }
                }
                let reply = &buf[2..];
                if reply.len() < wire::HEADER_LEN
                    || wire::id(reply) != f.new_id
                    || !wire::is_response(reply)
                {
                    return Step::Next;
                }
                let rc = wire::rcode(reply);
                if (rc == wire::SERVFAIL || rc == wire::REFUSED) && more_left {
                    return Step::Next;
                }
                Step::Done(reply.to_vec())
            }
        }
    }

    /// Answers the origin: the upstream's answer under the client's own ID, or SERVFAIL.
    /// A UDP answer goes to a UDP client as it came (the upstream sized it for the client's
    /// own EDNS size). A UDP client whose answer was truncated gets the full one fetched over
    /// TCP when it fits the client's size, else the truncated one (it retries over TCP).
    fn deliver(&mut self, f: Forward, reply: Option<Answer>) {
        let client_id = wire::id(&f.query);
        let limit = match &f.origin {
            Origin::Udp { limit, .. } => *limit,
            Origin::Tcp { .. } => 65535,
        };
        let answer = match reply {
            Some(Answer::OverUdp(r)) => Some(r),
            Some(Answer::OverTcp(r)) if r.len() <= limit => Some(r),
            _ => f.truncated,
        };
        let mut answer = match answer {
            Some(a) => a,
            None => {
                wire::build_reply(
                    &mut self.out,
                    &f.query,
                    Some(f.question_end),
                    f.edns,
                    wire::SERVFAIL,
                    false,
                    0,
                    &[],
                    limit,
                );
                self.out.clone()
            }
        };
        wire::set_id(&mut answer, client_id);
        match f.origin {
            Origin::Udp { via, client, .. } => {
                let _ = via.send_to(&answer, client);
            }
            Origin::Tcp { conn, gen } => self.conn_deliver(conn, gen, &answer),
        }
    }
}

/// An upstream's answer, and how it came.
enum Answer {
    OverUdp(Vec<u8>),
    OverTcp(Vec<u8>),
}

enum Step {
    Wait,
    Next,
    Truncated(Vec<u8>),
    Done(Vec<u8>),
}
