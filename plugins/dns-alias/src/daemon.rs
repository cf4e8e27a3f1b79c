//! `dns-alias daemon --state-dir <dir>`: the per-host DNS server.
//!
//! One process per state dir, started on demand by the plugin. It reads the records, opens a
//! UDP and a TCP socket at 127.0.0.11:<ephemeral> inside every container namespace that has a
//! record (plus an nft DNAT from 127.0.0.11:53 to them, in that namespace only), and answers
//! each query for the networks of the container it came from. A single thread runs an epoll
//! loop over the UDP sockets, the forwarded-query sockets, the TCP listeners, the control
//! socket and a signalfd; TCP connections and TCP retries to upstreams get a short-lived
//! thread each (bounded).
//!
//! Control protocol (unix stream socket `<dir>/control.sock`, one line in, lines out):
//! `ping` -> `pong`; `reload` -> zero or more `fail <netns>\t<why>` then `ok`;
//! `status` -> one JSON line then `ok`; `stop` -> `ok` (exits, keeps the records).
//! After a reload that finds no record the daemon removes its pid file, socket and log,
//! answers `ok` and exits.

use crate::nsutil::{self, DNS_ADDR};
use crate::store::{self, CONTROL_SOCKET, LOG_FILE, PID_FILE};
use crate::udp::{self, Batch};
use crate::wire::{self, Bad};
use crate::zone::{self, Outcome, Rng, Scratch, Zone};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One upstream attempt (UDP) before the next server is tried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2000);
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_IO_TIMEOUT: Duration = Duration::from_secs(4);
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_PENDING: usize = 2048;
const MAX_THREADS: usize = 128;
const MAX_TCP_QUERIES: usize = 256;
/// recvmmsg batches per wakeup of one socket (then the others get their turn).
const UDP_BATCHES: usize = 4;
/// How long a freshly started daemon may take to load its records.
const START_TIMEOUT_MS: i32 = 60_000;

const K_CONTROL: u64 = 1;
const K_SIGNAL: u64 = 2;
const K_UDP: u64 = 3;
const K_TCP: u64 = 4;
const K_PENDING: u64 = 5;

macro_rules! log {
    ($($t:tt)*) => {{
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("{}.{:03} dns-alias[{}]: {}", t.as_secs(), t.subsec_millis(), std::process::id(), format!($($t)*));
    }};
}

fn token(kind: u64, idx: usize) -> u64 {
    (kind << 32) | idx as u64
}

/// Entry point of `dns-alias daemon ...`; never returns.
pub fn main(args: &[String]) -> ! {
    let mut dir: Option<PathBuf> = None;
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--state-dir" => dir = it.next().map(PathBuf::from),
            "--foreground" => foreground = true,
            other => {
                eprintln!("dns-alias daemon: unknown argument {other:?}\nusage: dns-alias daemon [--state-dir DIR] [--foreground]");
                std::process::exit(2);
            }
        }
    }
    let dir = dir.unwrap_or_else(store::dns_dir);
    match launch(&dir, foreground) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("dns-alias daemon: {e}");
            std::process::exit(1);
        }
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens and locks the pid file. The lock is the "a daemon lives" fact: it is held for the
/// daemon's whole life and released by the kernel however it dies. Waits a little for an
/// exiting daemon; returns None when another daemon holds it.
fn lock_pid_file(path: &Path) -> io::Result<Option<File>> {
    let start = Instant::now();
    loop {
        let f =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match f.try_lock() {
            Ok(()) => {
                // The previous owner may have unlinked the file between our open and lock.
                match fs::metadata(path) {
                    Ok(m) if m.ino() == f.metadata()?.ino() => return Ok(Some(f)),
                    _ => continue,
                }
            }
            Err(fs::TryLockError::WouldBlock) => {
                if start.elapsed() > Duration::from_secs(3) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

fn launch(dir: &Path, foreground: bool) -> io::Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let pid_path = dir.join(PID_FILE);
    let Some(mut pid_file) = lock_pid_file(&pid_path)? else {
        let pid = fs::read_to_string(&pid_path).unwrap_or_default();
        println!("already running (pid {})", pid.trim());
        return Ok(());
    };
    let sock_path = dir.join(CONTROL_SOCKET);
    cni::store::remove_if_exists(&sock_path)?;
    let control = UnixListener::bind(&sock_path)
        .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", sock_path.display())))?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o600))?;
    let log = OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE))?;

    let mut ready: Option<OwnedFd> = None;
    if !foreground {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds we then own.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: fresh fds from pipe2.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: this process has a single thread here, so fork is sound.
        let pid = cvt(unsafe { libc::fork() })?;
        if pid > 0 {
            drop(w);
            let mut status = 0;
            // SAFETY: reaps the intermediate child, which exits at once.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return wait_ready(r, dir);
        }
        // The intermediate child: new session, fork again so the daemon is no session leader
        // and is reparented away from the plugin.
        // SAFETY: single-threaded child; setsid/fork/_exit are async-signal-safe.
        unsafe {
            libc::setsid();
            match libc::fork() {
                0 => {}
                -1 => libc::_exit(1),
                _ => libc::_exit(0),
            }
        }
        drop(r);
        ready = Some(w);
        // SAFETY: dup2 onto the standard fds; /dev/null and the log stay valid.
        unsafe {
            let null = File::open("/dev/null")?;
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
            libc::umask(0o022);
        }
        let _ = std::env::set_current_dir("/");
    }
    drop(log);
    pid_file.set_len(0)?;
    writeln!(pid_file, "{}", std::process::id())?;
    pid_file.sync_all()?;

    let mut d = Daemon::new(dir.to_path_buf(), control, pid_file)?;
    log!("started, state dir {}", dir.display());
    let fails = d.reload();
    for (ns, why) in &fails {
        log!("cannot serve {ns}: {why}");
    }
    if d.records == 0 {
        log!("no records: exiting");
        d.shutdown(true);
        return Ok(());
    }
    if let Some(w) = ready {
        // SAFETY: writes one byte to our pipe fd.
        unsafe { libc::write(w.as_raw_fd(), b"R".as_ptr() as *const libc::c_void, 1) };
    }
    d.run()
}

/// The launcher's half: waits until the daemon says it is ready (or dies).
fn wait_ready(r: OwnedFd, dir: &Path) -> io::Result<()> {
    let mut pfd = libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, START_TIMEOUT_MS) };
    let mut b = [0u8; 1];
    let got = if n > 0 {
        // SAFETY: reads at most one byte into `b`.
        unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, 1) }
    } else {
        0
    };
    if got == 1 && b[0] == b'R' {
        return Ok(());
    }
    let log = fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(io::Error::other(format!(
        "daemon did not become ready{}: {}",
        if n == 0 { " in time" } else { "" },
        tail.join(" | ")
    )))
}

/// One container namespace we serve.
struct Listener {
    id: u64,
    netns: String,
    ns_ident: (u64, u64),
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
}

/// A query forwarded over UDP, waiting for its upstream.
struct Pending {
    sock: UdpSocket,
    client: SocketAddr,
    reply_via: Arc<UdpSocket>,
    query: Vec<u8>,
    question_end: usize,
    edns: bool,
    client_limit: usize,
    new_id: u16,
    upstreams: Arc<[SocketAddr]>,
    attempt: usize,
    deadline: Instant,
}

/// What the TCP threads share with the loop.
struct Shared {
    zone: RwLock<Arc<Zone>>,
    threads: AtomicUsize,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

struct Daemon {
    dir: PathBuf,
    epfd: OwnedFd,
    control: UnixListener,
    sigfd: OwnedFd,
    _pid_file: File,
    listeners: Vec<Option<Listener>>,
    /// Listener index by namespace identity (st_dev, st_ino): two paths naming one
    /// namespace share a listener, and a path reused for a new namespace gets a new one.
    by_ns: HashMap<(u64, u64), usize>,
    next_id: u64,
    zone: Arc<Zone>,
    shared: Arc<Shared>,
    pending: Vec<Option<Pending>>,
    free_pending: Vec<usize>,
    n_pending: usize,
    scratch: Scratch,
    batch: Batch,
    buf: Vec<u8>,
    out: Vec<u8>,
    records: usize,
    /// True until the first reload: only then can a namespace already hold our table (from a
    /// daemon that died), whose ports are worth taking back.
    first_load: bool,
}

fn ep_add(epfd: RawFd, fd: RawFd, tok: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: tok };
    // SAFETY: epoll_ctl with a valid event struct.
    cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
}

fn ep_del(epfd: RawFd, fd: RawFd) {
    // SAFETY: removing an fd; errors (not registered) are irrelevant.
    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}

fn raise_nofile() {
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn set_rcvbuf(fd: RawFd, bytes: libc::c_int) {
    // SAFETY: setsockopt with a c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Daemon {
    fn new(dir: PathBuf, control: UnixListener, pid_file: File) -> io::Result<Daemon> {
        raise_nofile();
        // Signals arrive through a signalfd in the loop; block them first, before any thread
        // exists, so every thread inherits the mask.
        // SAFETY: sigset manipulation on a local set, then signalfd on it.
        let sigfd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            OwnedFd::from_raw_fd(cvt(libc::signalfd(
                -1,
                &set,
                libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
            ))?)
        };
        // SAFETY: epoll_create1 returns a new fd we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        control.set_nonblocking(true)?;
        ep_add(epfd.as_raw_fd(), control.as_raw_fd(), token(K_CONTROL, 0))?;
        ep_add(epfd.as_raw_fd(), sigfd.as_raw_fd(), token(K_SIGNAL, 0))?;
        let zone = Arc::new(Zone::default());
        Ok(Daemon {
            dir,
            epfd,
            control,
            sigfd,
            _pid_file: pid_file,
            listeners: Vec::new(),
            by_ns: HashMap::new(),
            next_id: 1,
            shared: Arc::new(Shared {
                zone: RwLock::new(zone.clone()),
                threads: AtomicUsize::new(0),
            }),
            zone,
            pending: Vec::new(),
            free_pending: Vec::new(),
            n_pending: 0,
            scratch: Scratch::default(),
            batch: Batch::default(),
            buf: vec![0; 65536],
            out: Vec::with_capacity(4096),
            records: 0,
            first_load: true,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let timeout = self.next_timeout_ms();
            // SAFETY: epoll_wait into a buffer of events.len() entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                let tok = ev.u64;
                let idx = (tok & 0xffff_ffff) as usize;
                match tok >> 32 {
                    K_UDP => self.on_udp(idx),
                    K_PENDING => self.on_pending(idx),
                    K_TCP => self.on_tcp(idx),
                    K_CONTROL => {
                        if self.on_control() == Flow::Exit {
                            return Ok(());
                        }
                        // Listeners may have changed: let level-triggered epoll report the
                        // rest again rather than act on stale indices.
                        break;
                    }
                    K_SIGNAL => {
                        if self.on_signal() == Flow::Exit {
                            return Ok(());
                        }
                        break;
                    }
                    _ => {}
                }
            }
            self.expire_pending();
        }
    }

    // ---- UDP --------------------------------------------------------------------------

    fn on_udp(&mut self, idx: usize) {
        let Some(l) = self.listeners.get(idx).and_then(Option::as_ref) else { return };
        let udp = l.udp.clone();
        let scope = l.id;
        let fd = udp.as_raw_fd();
        for _ in 0..UDP_BATCHES {
            let n = match self.batch.recv(fd) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            for i in 0..n {
                let msg = self.batch.msg(i);
                let forward = match wire::parse_query(msg) {
                    Err(Bad::Ignore) => continue,
                    Err(Bad::Reply { rcode, question_end }) => {
                        wire::build_reply(
                            &mut self.out,
                            msg,
                            question_end,
                            false,
                            rcode,
                            false,
                            0,
                            &[],
                            wire::UDP_MIN,
                        );
                        None
                    }
                    Ok(q) => match self.zone.answer(
                        scope,
                        msg,
                        &q,
                        q.udp_limit(),
                        &mut self.out,
                        &mut self.scratch,
                    ) {
                        Outcome::Reply => None,
                        Outcome::Forward(ups) => Some((msg.to_vec(), q, ups)),
                    },
                };
                match forward {
                    None => self.batch.reply(i, &self.out),
                    Some((query, q, ups)) => {
                        if let Some(peer) = self.batch.peer(i) {
                            self.start_forward(query, &q, ups, udp.clone(), peer);
                        }
                    }
                }
            }
            self.batch.flush(fd);
            if n < udp::BATCH {
                break;
            }
        }
    }

    fn servfail(
        &mut self,
        query: &[u8],
        question_end: usize,
        edns: bool,
        via: &UdpSocket,
        to: SocketAddr,
    ) {
        wire::build_reply(
            &mut self.out,
            query,
            Some(question_end),
            edns,
            wire::SERVFAIL,
            false,
            0,
            &[],
            wire::UDP_MIN,
        );
        let _ = via.send_to(&self.out, to);
    }

    fn start_forward(
        &mut self,
        query: Vec<u8>,
        q: &wire::Query,
        ups: Arc<[SocketAddr]>,
        via: Arc<UdpSocket>,
        client: SocketAddr,
    ) {
        if self.n_pending >= MAX_PENDING {
            self.servfail(&query, q.question_end, q.edns.is_some(), &via, client);
            return;
        }
        let slot = match self.free_pending.pop() {
            Some(s) => s,
            None => {
                self.pending.push(None);
                self.pending.len() - 1
            }
        };
        let mut attempt = 0;
        while attempt < ups.len() {
            match self.send_upstream(&query, ups[attempt], slot) {
                Ok((sock, new_id)) => {
                    self.pending[slot] = Some(Pending {
                        sock,
                        client,
                        reply_via: via,
                        question_end: q.question_end,
                        edns: q.edns.is_some(),
                        client_limit: q.udp_limit(),
                        query,
                        new_id,
                        upstreams: ups,
                        attempt,
                        deadline: Instant::now() + ATTEMPT_TIMEOUT,
                    });
                    self.n_pending += 1;
                    return;
                }
                Err(_) => attempt += 1,
            }
        }
        self.free_pending.push(slot);
        self.servfail(&query, q.question_end, q.edns.is_some(), &via, client);
    }

    /// A fresh socket (random source port) per attempt, connected to the upstream so only its
    /// replies arrive; the query goes out with a new random ID.
    fn send_upstream(
        &mut self,
        query: &[u8],
        up: SocketAddr,
        slot: usize,
    ) -> io::Result<(UdpSocket, u16)> {
        let bind: SocketAddr =
            if up.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let s = UdpSocket::bind(bind)?;
        s.connect(up)?;
        s.set_nonblocking(true)?;
        let new_id = self.scratch.rng.next() as u16;
        self.out.clear();
        self.out.extend_from_slice(query);
        wire::set_id(&mut self.out, new_id);
        s.send(&self.out)?;
        ep_add(self.epfd.as_raw_fd(), s.as_raw_fd(), token(K_PENDING, slot))?;
        Ok((s, new_id))
    }

    fn finish_pending(&mut self, slot: usize) -> Option<Pending> {
        let p = self.pending.get_mut(slot)?.take()?;
        ep_del(self.epfd.as_raw_fd(), p.sock.as_raw_fd());
        self.free_pending.push(slot);
        self.n_pending -= 1;
        Some(p)
    }

    /// Tries the next upstream, or answers SERVFAIL when none is left.
    fn next_upstream(&mut self, slot: usize) {
        let Some(mut p) = self.finish_pending(slot) else { return };
        // finish_pending freed the slot; take it back for the retry.
        self.free_pending.retain(|s| *s != slot);
        p.attempt += 1;
        while p.attempt < p.upstreams.len() {
            if let Ok((sock, id)) = self.send_upstream(&p.query, p.upstreams[p.attempt], slot) {
                p.sock = sock;
                p.new_id = id;
                p.deadline = Instant::now() + ATTEMPT_TIMEOUT;
                self.pending[slot] = Some(p);
                self.n_pending += 1;
                return;
            }
            p.attempt += 1;
        }
        self.free_pending.push(slot);
        let via = p.reply_via.clone();
        self.servfail(&p.query, p.question_end, p.edns, &via, p.client);
    }

    fn on_pending(&mut self, slot: usize) {
        loop {
            let Some(p) = self.pending.get(slot).and_then(Option::as_ref) else { return };
            let n = match p.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // e.g. ICMP port unreachable: this server is not there.
                    self.next_upstream(slot);
                    return;
                }
            };
            let reply = &mut self.buf[..n];
            if n < wire::HEADER_LEN
                || wire::id(reply) != p.new_id
                || !wire::is_response(reply)
                || !wire::same_question(&p.query, p.question_end, reply)
            {
                continue; // not the answer to our question: keep waiting
            }
            let rc = wire::rcode(reply);
            if (rc == wire::SERVFAIL || rc == wire::REFUSED) && p.attempt + 1 < p.upstreams.len() {
                self.next_upstream(slot);
                return;
            }
            wire::set_id(reply, wire::id(&p.query));
            let truncated = wire::is_truncated(reply);
            let reply = reply.to_vec();
            let p = self.finish_pending(slot).expect("pending exists");
            if truncated {
                self.retry_over_tcp(p, reply);
            } else {
                let _ = p.reply_via.send_to(&reply, p.client);
            }
            return;
        }
    }

    /// A truncated upstream answer: ask again over TCP (on a thread) and send the full answer
    /// when it fits the client's UDP size; otherwise the truncated one (the client retries
    /// over TCP itself).
    fn retry_over_tcp(&mut self, p: Pending, truncated: Vec<u8>) {
        let via = p.reply_via.clone();
        let client = p.client;
        let fallback = truncated.clone();
        let started = spawn_limited(&self.shared, move || {
            let answer = match tcp_forward(&p.query, &p.upstreams) {
                Some(full) if full.len() <= p.client_limit => full,
                _ => truncated,
            };
            let _ = p.reply_via.send_to(&answer, p.client);
        });
        if !started {
            // Too many threads: the truncated answer still tells the client to use TCP.
            log!("thread limit reached; passing a truncated answer through");
            let _ = via.send_to(&fallback, client);
        }
    }

    fn next_timeout_ms(&self) -> i32 {
        if self.n_pending == 0 {
            return -1;
        }
        let now = Instant::now();
        let next = self.pending.iter().flatten().map(|p| p.deadline).min();
        match next {
            Some(d) if d > now => ((d - now).as_millis() as i32).saturating_add(1),
            Some(_) => 0,
            None => -1,
        }
    }

    fn expire_pending(&mut self) {
        if self.n_pending == 0 {
            return;
        }
        let now = Instant::now();
        let due: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().filter(|p| p.deadline <= now).map(|_| i))
            .collect();
        for slot in due {
            self.next_upstream(slot);
        }
    }

    // ---- TCP --------------------------------------------------------------------------

    fn on_tcp(&mut self, idx: usize) {
        let Some(l) = self.listeners.get(idx).and_then(Option::as_ref) else { return };
        let scope = l.id;
        while let Ok((stream, _)) = l.tcp.accept() {
            let shared = self.shared.clone();
            if !spawn_limited(&self.shared, move || serve_tcp(stream, scope, &shared)) {
                log!("thread limit reached; closing a TCP connection");
            }
        }
    }

    // ---- control ------------------------------------------------------------------------

    fn on_signal(&mut self) -> Flow {
        let mut info = [0u8; 128];
        let mut flow = Flow::Continue;
        // SAFETY: reads whole signalfd_siginfo records into a 128-byte buffer.
        while unsafe {
            libc::read(self.sigfd.as_raw_fd(), info.as_mut_ptr() as *mut libc::c_void, 128)
        } == 128
        {
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
            if signo == libc::SIGHUP {
                log!("SIGHUP: reloading");
                for (ns, why) in self.reload() {
                    log!("cannot serve {ns}: {why}");
                }
                if self.records == 0 {
                    self.shutdown(true);
                    flow = Flow::Exit;
                }
            } else {
                log!("signal {signo}: stopping (records kept)");
                self.shutdown(false);
                flow = Flow::Exit;
            }
            if flow == Flow::Exit {
                break;
            }
        }
        flow
    }

    fn on_control(&mut self) -> Flow {
        loop {
            match self.control.accept() {
                Ok((s, _)) => {
                    if self.serve_control(s) == Flow::Exit {
                        return Flow::Exit;
                    }
                }
                Err(_) => return Flow::Continue,
            }
        }
    }

    fn serve_control(&mut self, s: UnixStream) -> Flow {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new((&s).take(1024)).read_line(&mut line).is_err() {
            return Flow::Continue;
        }
        let mut w = &s;
        match line.trim() {
            "ping" => {
                let _ = w.write_all(b"pong\n");
            }
            "reload" => {
                let fails = self.reload();
                let mut reply = String::new();
                for (ns, why) in &fails {
                    log!("cannot serve {ns}: {why}");
                    reply.push_str(&format!("fail {ns}\t{}\n", why.replace(['\n', '\t'], " ")));
                }
                reply.push_str("ok\n");
                if self.records == 0 {
                    log!("last record removed: exiting");
                    self.shutdown(true);
                    let _ = w.write_all(reply.as_bytes());
                    return Flow::Exit;
                }
                let _ = w.write_all(reply.as_bytes());
            }
            "status" => {
                let _ = w.write_all(format!("{}\nok\n", self.status()).as_bytes());
            }
            "stop" => {
                log!("stop requested (records kept)");
                self.shutdown(false);
                let _ = w.write_all(b"ok\n");
                return Flow::Exit;
            }
            other => {
                let _ = w.write_all(format!("error unknown command {other:?}\n").as_bytes());
            }
        }
        Flow::Continue
    }

    fn status(&self) -> String {
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .iter()
            .flatten()
            .map(|l| {
                let nets: Vec<&str> = self
                    .zone
                    .scopes
                    .get(&l.id)
                    .map(|s| s.nets.iter().map(|&i| self.zone.nets[i].name.as_str()).collect())
                    .unwrap_or_default();
                serde_json::json!({
                    "netns": l.netns,
                    "udpPort": l.udp.local_addr().map(|a| a.port()).unwrap_or(0),
                    "tcpPort": l.tcp.local_addr().map(|a| a.port()).unwrap_or(0),
                    "networks": nets,
                })
            })
            .collect();
        serde_json::json!({
            "pid": std::process::id(),
            "records": self.records,
            "names": self.zone.record_count(),
            "pending": self.n_pending,
            "listeners": listeners,
        })
        .to_string()
    }

    /// Re-reads the records, opens and closes per-container listeners, and publishes a new
    /// zone. Returns the namespaces that could not be served, with the reason.
    fn reload(&mut self) -> Vec<(String, String)> {
        let records = store::read_all(&self.dir, |p, e| {
            log!("skipping unreadable record {}: {e}", p.display())
        });
        let mut fails = Vec::new();
        let mut idents: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut wanted: BTreeMap<(u64, u64), &str> = BTreeMap::new();
        for r in &records {
            if r.netns.is_empty() || idents.contains_key(r.netns.as_str()) {
                continue;
            }
            match nsutil::ns_ident(Path::new(&r.netns)) {
                Ok(id) => {
                    idents.insert(&r.netns, id);
                    wanted.entry(id).or_insert(&r.netns);
                }
                Err(e) => fails.push((r.netns.clone(), format!("namespace is gone: {e}"))),
            }
        }
        let existing: Vec<((u64, u64), usize)> = self.by_ns.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, idx) in existing {
            if !wanted.contains_key(&id) {
                self.close_listener(idx, "no record left, or the namespace is gone");
            }
        }
        for (id, ns) in wanted {
            if self.by_ns.contains_key(&id) {
                continue;
            }
            match open_listener(Path::new(ns), id, self.first_load) {
                Ok((udp, tcp)) => {
                    if let Err(e) = self.add_listener(ns, udp, tcp, id) {
                        fails.push((ns.to_string(), e.to_string()));
                    }
                }
                Err(e) => fails.push((ns.to_string(), e.to_string())),
            }
        }
        // Every path of a failed namespace fails (the plugin looks for its own path).
        let failed: Vec<(u64, u64)> =
            fails.iter().filter_map(|(ns, _)| idents.get(ns.as_str()).copied()).collect();
        for (path, id) in &idents {
            if failed.contains(id) && !fails.iter().any(|(ns, _)| ns == path) {
                fails.push((path.to_string(), "namespace could not be served".into()));
            }
        }
        let host = zone::host_upstreams();
        let by_ns = &self.by_ns;
        let listeners = &self.listeners;
        let zone = Zone::build(
            &records,
            |ns| {
                idents
                    .get(ns)
                    .and_then(|id| by_ns.get(id))
                    .and_then(|&i| listeners[i].as_ref())
                    .map(|l| l.id)
            },
            &host,
        );
        self.records = records.len();
        self.first_load = false;
        self.zone = Arc::new(zone);
        *self.shared.zone.write().unwrap_or_else(|e| e.into_inner()) = self.zone.clone();
        log!("reloaded: {} records, {} namespaces served", self.records, self.by_ns.len());
        fails
    }

    fn add_listener(
        &mut self,
        ns: &str,
        udp: UdpSocket,
        tcp: TcpListener,
        ns_ident: (u64, u64),
    ) -> io::Result<()> {
        let idx = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        let ep = self.epfd.as_raw_fd();
        ep_add(ep, udp.as_raw_fd(), token(K_UDP, idx))?;
        if let Err(e) = ep_add(ep, tcp.as_raw_fd(), token(K_TCP, idx)) {
            ep_del(ep, udp.as_raw_fd());
            return Err(e);
        }
        let id = self.next_id;
        self.next_id += 1;
        log!(
            "serving {ns} at 127.0.0.11:53 (udp -> {}, tcp -> {})",
            udp.local_addr().map(|a| a.port()).unwrap_or(0),
            tcp.local_addr().map(|a| a.port()).unwrap_or(0)
        );
        self.listeners[idx] =
            Some(Listener { id, netns: ns.to_string(), ns_ident, udp: Arc::new(udp), tcp });
        self.by_ns.insert(ns_ident, idx);
        Ok(())
    }

    /// Closes a listener's sockets and removes our nft table from its namespace when that
    /// namespace still exists (a namespace that is gone took the table with it).
    fn close_listener(&mut self, idx: usize, why: &str) {
        let Some(l) = self.listeners.get_mut(idx).and_then(Option::take) else { return };
        self.by_ns.remove(&l.ns_ident);
        let ep = self.epfd.as_raw_fd();
        ep_del(ep, l.udp.as_raw_fd());
        ep_del(ep, l.tcp.as_raw_fd());
        if let Err(e) = nsutil::delete_table_in(Path::new(&l.netns), Some(l.ns_ident)) {
            log!("removing nft table in {}: {e}", l.netns);
        }
        log!("stopped serving {} ({why})", l.netns);
    }

    /// Stops serving. `last`: no record is left, so nothing of ours may remain.
    fn shutdown(&mut self, last: bool) {
        for idx in 0..self.listeners.len() {
            self.close_listener(idx, if last { "no record left" } else { "daemon stopping" });
        }
        let _ = cni::store::remove_if_exists(&self.dir.join(CONTROL_SOCKET));
        let _ = cni::store::remove_if_exists(&self.dir.join(PID_FILE));
        if last {
            let _ = cni::store::remove_if_exists(&self.dir.join(LOG_FILE));
        }
    }
}

/// Opens the UDP and TCP sockets at 127.0.0.11 inside the namespace and points
/// 127.0.0.11:53 at them.
fn open_listener(
    ns: &Path,
    ident: (u64, u64),
    reuse_ports: bool,
) -> io::Result<(UdpSocket, TcpListener)> {
    let (udp, tcp) = nsutil::in_netns(ns, || {
        // The namespace we entered must be the one we identified (the path may be reused).
        if nsutil::ns_ident(Path::new("/proc/thread-self/ns/net"))? != ident {
            return Err(io::Error::other("namespace changed while opening it"));
        }
        // The ports a previous daemon used here, when its table is still in place.
        let (old_udp, old_tcp) =
            if reuse_ports { nsutil::current_ports().unwrap_or((0, 0)) } else { (0, 0) };
        let bind_udp = |port: u16| {
            UdpSocket::bind((DNS_ADDR, port)).or_else(|_| UdpSocket::bind((DNS_ADDR, 0)))
        };
        let udp = match bind_udp(old_udp) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                nsutil::set_lo_up()?;
                bind_udp(old_udp)?
            }
            r => r?,
        };
        let tcp =
            TcpListener::bind((DNS_ADDR, old_tcp)).or_else(|_| TcpListener::bind((DNS_ADDR, 0)))?;
        nsutil::nft(&nsutil::redirect_script(udp.local_addr()?.port(), tcp.local_addr()?.port()))?;
        Ok((udp, tcp))
    })?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    set_rcvbuf(udp.as_raw_fd(), 1 << 20);
    Ok((udp, tcp))
}

/// Runs `f` on a new thread unless MAX_THREADS are already busy.
fn spawn_limited(shared: &Arc<Shared>, f: impl FnOnce() + Send + 'static) -> bool {
    if shared.threads.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
        shared.threads.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    let sh = shared.clone();
    let r = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
        f();
        sh.threads.fetch_sub(1, Ordering::SeqCst);
    });
    if r.is_err() {
        shared.threads.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

fn read_frame(s: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg)?;
    Ok(Some(msg))
}

fn write_frame(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed)
}

/// One TCP client connection (on its own thread).
fn serve_tcp(mut s: TcpStream, scope: u64, shared: &Shared) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(TCP_IDLE_TIMEOUT));
    let _ = s.set_write_timeout(Some(TCP_IO_TIMEOUT));
    let _ = s.set_nodelay(true);
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for _ in 0..MAX_TCP_QUERIES {
        let Ok(Some(msg)) = read_frame(&mut s) else { return };
        let zone = shared.zone.read().unwrap_or_else(|e| e.into_inner()).clone();
        match wire::parse_query(&msg) {
            Err(Bad::Ignore) => continue,
            Err(Bad::Reply { rcode, question_end }) => {
                wire::build_reply(&mut out, &msg, question_end, false, rcode, false, 0, &[], 65535);
            }
            Ok(q) => match zone.answer(scope, &msg, &q, 65535, &mut out, &mut scratch) {
                Outcome::Reply => {}
                Outcome::Forward(ups) => match tcp_forward(&msg, &ups) {
                    Some(r) => out = r,
                    None => wire::build_reply(
                        &mut out,
                        &msg,
                        Some(q.question_end),
                        q.edns.is_some(),
                        wire::SERVFAIL,
                        false,
                        0,
                        &[],
                        65535,
                    ),
                },
            },
        }
        if write_frame(&mut s, &out).is_err() {
            return;
        }
    }
}

/// Asks the upstreams in turn over TCP; the answer carries the query's own ID.
fn tcp_forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let mut rng = Rng::new();
    let orig = wire::id(query);
    for up in upstreams {
        let Ok(mut s) = TcpStream::connect_timeout(up, TCP_CONNECT_TIMEOUT) else { continue };
        let _ = s.set_read_timeout(Some(TCP_IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(TCP_IO_TIMEOUT));
        let _ = s.set_nodelay(true);
        let new_id = rng.next() as u16;
        let mut m = query.to_vec();
        wire::set_id(&mut m, new_id);
        if write_frame(&mut s, &m).is_err() {
            continue;
        }
        let Ok(Some(mut reply)) = read_frame(&mut s) else { continue };
        if reply.len() < wire::HEADER_LEN
            || wire::id(&reply) != new_id
            || !wire::is_response(&reply)
        {
            continue;
        }
        let rc = wire::rcode(&reply);
        if rc == wire::SERVFAIL || rc == wire::REFUSED {
            continue;
        }
        wire::set_id(&mut reply, orig);
        return Some(reply);
    }
    None
}
