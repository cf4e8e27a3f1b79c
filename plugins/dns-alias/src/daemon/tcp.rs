//! DNS over TCP from the containers (RFC 7766): non-blocking connections in the event loop,
//! so an idle or slow client costs a socket and a few bytes, never a thread.
//!
//! Limits, so that no container can starve the others:
//! - `MAX_PER_CLIENT` open connections per container (per listener): a new one past that
//!   replaces the container's least recently active idle connection;
//! - `MAX_CONNS` in all, the same way across containers;
//! - `IDLE_TIMEOUT` without a complete query or write progress closes a connection (a
//!   client trickling a query byte by byte is closed just the same);
//! - `MAX_QUERIES` per connection, and queries are answered one at a time in order.

use super::forward::Origin;
use super::{log, token, Daemon, K_TCP_CONN};
use crate::wire::{self, Bad};
use crate::zone::Outcome;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const MAX_PER_CLIENT: usize = 32;
pub const MAX_CONNS: usize = 4096;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_QUERIES: usize = 256;
/// Answers waiting to be written before we stop reading more queries.
const MAX_PENDING_OUT: usize = 64 * 1024;

pub struct Conn {
    stream: TcpStream,
    listener: usize,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// A query of this connection is being forwarded; later ones wait.
    busy: bool,
    /// Inside `conn_service` (a forward that fails at once delivers re-entrantly).
    servicing: bool,
    eof: bool,
    queries: usize,
    deadline: Instant,
    last_active: Instant,
    gen: u64,
    interest: EpollFlags,
}

#[derive(Default)]
pub struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    count: usize,
    next_gen: u64,
}

impl Conns {
    pub fn count(&self) -> usize {
        self.count
    }
    fn get(&self, slot: usize) -> Option<&Conn> {
        self.slots.get(slot).and_then(Option::as_ref)
    }
    fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }
    /// The least recently active connection that waits for nothing (of one listener, or
    /// of all).
    fn idlest(&self, listener: Option<usize>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| !c.busy && listener.is_none_or(|l| c.listener == l))
            .min_by_key(|(_, c)| c.last_active)
            .map(|(i, _)| i)
    }
}

impl Daemon {
    pub(super) fn on_tcp_listen(&mut self, idx: usize) {
        loop {
            let Some(l) = self.listeners.get(idx) else { return };
            let stream = match l.tcp.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and the like: the backlog keeps the client until a slot frees.
                    log!("accepting a TCP connection: {e}");
                    return;
                }
            };
            let full_here = l.tcp_conns >= MAX_PER_CLIENT;
            if full_here || self.conns.count >= MAX_CONNS {
                let victim = self.conns.idlest(if full_here { Some(idx) } else { None });
                match victim {
                    Some(v) => self.close_conn(v),
                    None => continue, // every connection is waiting for an answer: refuse this one
                }
            }
            if let Err(e) = self.add_conn(idx, stream) {
                log!("cannot serve a TCP connection: {e}");
            }
        }
    }

    fn add_conn(&mut self, listener: usize, stream: TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let slot = self.conns.free.pop().unwrap_or_else(|| {
            self.conns.slots.push(None);
            self.conns.slots.len() - 1
        });
        let tok = token(K_TCP_CONN, slot);
        if let Err(e) = self.epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, tok)) {
            self.conns.free.push(slot);
            return Err(e.into());
        }
        let now = Instant::now();
        self.conns.next_gen += 1;
        let gen = self.conns.next_gen;
        self.conns.slots[slot] = Some(Conn {
            stream,
            listener,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            busy: false,
            servicing: false,
            eof: false,
            queries: 0,
            deadline: now + IDLE_TIMEOUT,
            last_active: now,
            gen,
            interest: EpollFlags::EPOLLIN,
        });
        self.conns.count += 1;
        if let Some(l) = self.listeners.get_mut(listener) {
            l.tcp_conns += 1;
        }
        self.timers.push(now + IDLE_TIMEOUT, tok, gen);
        Ok(())
    }

    pub(super) fn close_conn(&mut self, slot: usize) {
        let Some(c) = self.conns.slots.get_mut(slot).and_then(Option::take) else { return };
        let _ = self.epoll.delete(&c.stream);
        self.conns.count -= 1;
        self.conns.free.push(slot);
        if let Some(l) = self.listeners.get_mut(c.listener) {
            l.tcp_conns = l.tcp_conns.saturating_sub(1);
        }
    }

    /// Closes every connection that came in through one listener.
    pub(super) fn close_conns_of(&mut self, listener: usize) {
        let mine: Vec<usize> = (0..self.conns.slots.len())
            .filter(|&i| self.conns.get(i).is_some_and(|c| c.listener == listener))
            .collect();
        for slot in mine {
            self.close_conn(slot);
        }
    }

    pub(super) fn on_tcp_conn(&mut self, slot: usize, events: EpollFlags) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        // Both directions shut (or reset): no answer can be written any more, and a hangup
        // stays reported while the connection is open, so close it now.
        if events.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
            self.close_conn(slot);
            return;
        }
        if events.contains(EpollFlags::EPOLLIN) {
            let mut chunk = [0u8; 4096];
            // Read what is there, but not more than a few queries ahead of the answers.
            while c.rbuf.len() < 4 * 65538 {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        c.eof = true;
                        break;
                    }
                    Ok(n) => c.rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.close_conn(slot);
                        return;
                    }
                }
            }
        }
        self.conn_service(slot);
    }

    /// Writes what is pending, answers the complete queries that are buffered (one at a
    /// time; a forwarded one holds the rest back), and adjusts what epoll watches.
    fn conn_service(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        c.servicing = true;
        loop {
            if !self.conn_flush(slot) {
                return; // closed
            }
            let Some(c) = self.conns.get_mut(slot) else { return };
            if c.busy || c.wbuf.len() - c.wpos > MAX_PENDING_OUT || c.queries >= MAX_QUERIES {
                break;
            }
            if c.rbuf.len() < 2 {
                break;
            }
            let len = u16::from_be_bytes([c.rbuf[0], c.rbuf[1]]) as usize;
            if c.rbuf.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = c.rbuf[2..2 + len].to_vec();
            c.rbuf.drain(..2 + len);
            c.queries += 1;
            let now = Instant::now();
            c.last_active = now;
            c.deadline = now + IDLE_TIMEOUT;
            let (listener, gen) = (c.listener, c.gen);
            let Some(scope) = self.listeners.get(listener).map(|l| l.id) else { break };
            match wire::parse_query(&msg) {
                Err(Bad::Ignore) => continue,
                Err(Bad::Reply { rcode, question_end }) => {
                    wire::build_reply(
                        &mut self.out,
                        &msg,
                        question_end,
                        false,
                        rcode,
                        false,
                        0,
                        &[],
                        65535,
                    );
                }
                Ok(q) => {
                    match self.zone.answer(scope, &msg, &q, 65535, &mut self.out, &mut self.scratch)
                    {
                        Outcome::Reply => {}
                        Outcome::Forward(ups) => {
                            if let Some(c) = self.conns.get_mut(slot) {
                                c.busy = true;
                            }
                            self.start_forward(Origin::Tcp { conn: slot, gen }, msg, &q, ups);
                            continue;
                        }
                    }
                }
            }
            let out = std::mem::take(&mut self.out);
            if let Some(c) = self.conns.get_mut(slot) {
                push_frame(&mut c.wbuf, &out);
            }
            self.out = out;
        }
        let Some(c) = self.conns.get_mut(slot) else { return };
        c.servicing = false;
        let pending_out = c.wbuf.len() > c.wpos;
        let done = c.eof || c.queries >= MAX_QUERIES;
        if done && !c.busy && !pending_out {
            self.close_conn(slot);
            return;
        }
        let mut want = EpollFlags::empty();
        if !c.busy && !c.eof && c.queries < MAX_QUERIES && c.wbuf.len() - c.wpos <= MAX_PENDING_OUT
        {
            want |= EpollFlags::EPOLLIN;
        }
        if pending_out {
            want |= EpollFlags::EPOLLOUT;
        }
        if want != c.interest {
            c.interest = want;
            let mut ev = EpollEvent::new(want, token(K_TCP_CONN, slot));
            if self.epoll.modify(&c.stream, &mut ev).is_err() {
                self.close_conn(slot);
            }
        }
    }

    /// Writes pending answers without blocking; false when the connection had to close.
    fn conn_flush(&mut self, slot: usize) -> bool {
        let Some(c) = self.conns.get_mut(slot) else { return false };
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.wpos += n;
                    c.deadline = Instant::now() + IDLE_TIMEOUT;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_conn(slot);
                    return false;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        }
        true
    }

    /// The answer to a forwarded query of connection `slot` (when it is still the same one).
    pub(super) fn conn_deliver(&mut self, slot: usize, gen: u64, answer: &[u8]) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        if c.gen != gen {
            return;
        }
        push_frame(&mut c.wbuf, answer);
        c.busy = false;
        let now = Instant::now();
        c.last_active = now;
        c.deadline = now + IDLE_TIMEOUT;
        if !c.servicing {
            self.conn_service(slot);
        }
    }

    /// A connection's deadline (or an older one) came up.
    pub(super) fn conn_timer(&mut self, slot: usize, gen: u64, now: Instant) {
        let Some(c) = self.conns.get(slot) else { return };
        if c.gen != gen {
            return;
        }
        if c.busy || c.deadline > now {
            // Waiting for a forward (which has its own deadline), or active since.
            let next = if c.busy { now + IDLE_TIMEOUT } else { c.deadline };
            self.timers.push(next, token(K_TCP_CONN, slot), gen);
            return;
        }
        self.close_conn(slot);
    }
}

fn push_frame(buf: &mut Vec<u8>, msg: &[u8]) {
    buf.extend_from_slice(&(msg.len().min(65535) as u16).to_be_bytes());
    buf.extend_from_slice(&msg[..msg.len().min(65535)]);
}
