//! `dns-alias daemon --state-dir <dir>`: the per-host DNS server.
//!
//! One process per state dir, started on demand by the plugin. It reads the records, opens a
//! UDP and a TCP socket at 127.0.0.11:<ephemeral> inside every container namespace that has a
//! record (plus the 127.0.0.11:53 redirect to them, `firewall::dns_redirect`, in that
//! namespace only), and answers each query for the networks of the container it came from.
//!
//! One thread, one epoll loop, no thread per connection or per forward:
//! - `control`: the control socket and signals (reload, status, stop);
//! - `listeners`: the per-namespace sockets and redirects, opened and closed on reload;
//! - `udp`: queries over UDP, batched (recvmmsg/sendmmsg);
//! - `tcp`: client connections over TCP (non-blocking, idle timeout, per-container limit);
//! - `forward`: queries for other names, relayed to upstream servers over UDP or TCP
//!   (bounded in number, one deadline per attempt);
//! - `timers`: the deadlines of the two above.
//!
//! Control protocol (unix stream socket `<dir>/control.sock`, one line in, lines out):
//! `ping` -> `pong`; `reload` -> zero or more `fail <netns>\t<why>` then `ok`;
//! `status` -> one JSON line then `ok`; `stop` -> `ok` (exits, keeps the records).
//! After a reload that finds no record the daemon removes its pid file, socket and log,
//! answers `ok` and exits.

mod control;
mod forward;
mod listeners;
mod tcp;
mod timers;
mod udp;
mod udp_batch;

use crate::store::{self, CONTROL_SOCKET, LOG_FILE, PID_FILE};
use crate::zone::{Scratch, Zone};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the plugin's launcher reads on the daemon's stdout once every record is served.
pub const READY: &str = "ready";
/// ... or when another daemon already serves the state dir.
pub const ALREADY_RUNNING: &str = "running";

/// Kinds of epoll tokens (the high 32 bits); the low 32 bits are a slot index.
const K_CONTROL: u64 = 1;
const K_SIGNAL: u64 = 2;
const K_UDP: u64 = 3;
const K_TCP_LISTEN: u64 = 4;
const K_TCP_CONN: u64 = 5;
const K_FORWARD: u64 = 6;

fn token(kind: u64, idx: usize) -> u64 {
    (kind << 32) | idx as u64
}

fn split_token(tok: u64) -> (u64, usize) {
    (tok >> 32, (tok & 0xffff_ffff) as usize)
}

macro_rules! log {
    ($($t:tt)*) => {{
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, ms, pid) = (t.as_secs(), t.subsec_millis(), std::process::id());
        eprintln!("{secs}.{ms:03} dns-alias[{pid}]: {}", format!($($t)*));
    }};
}
pub(crate) use log;

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
                eprintln!(
                    "dns-alias daemon: unknown argument {other:?}\n\
                     usage: dns-alias daemon [--state-dir DIR] [--foreground]"
                );
                std::process::exit(2);
            }
        }
    }
    let dir = dir.unwrap_or_else(store::dns_dir);
    match launch(&dir, foreground) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            log!("{e}");
            std::process::exit(1);
        }
    }
}

/// Opens and locks the pid file. The lock is the "a daemon lives" fact: it is held for the
/// daemon's whole life and released by the kernel however it dies. Waits up to 3 s for an
/// exiting (or just killed) daemon to let go; returns None when another daemon holds it.
fn lock_pid_file(path: &Path) -> io::Result<Option<File>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let f =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let f = match f.try_lock() {
            Ok(()) => f,
            Err(fs::TryLockError::WouldBlock) => {
                // Block on the lock on a helper thread, so the wait ends when the holder
                // lets go, or at the deadline (the thread then goes with the process).
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(f.lock().map(|()| f));
                });
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(locked) => locked?,
                    Err(_) => return Ok(None),
                }
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        };
        // The previous owner may have unlinked the file between our open and lock.
        match fs::metadata(path) {
            Ok(m) if m.ino() == f.metadata()?.ino() => return Ok(Some(f)),
            _ => continue,
        }
    }
}

/// Runs the daemon. The plugin starts it with stdin on /dev/null, stderr on the log and
/// stdout on a pipe it reads: one line, `ready` (or `running <pid>`), then stdout moves to
/// the log too and the plugin goes on.
fn launch(dir: &Path, foreground: bool) -> io::Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    if !foreground {
        // Our own session: signals to the runtime's process group or terminal do not reach
        // us. Fails only for a group leader, which the plugin's child is not.
        let _ = nix::unistd::setsid();
    }
    let pid_path = dir.join(PID_FILE);
    let Some(mut pid_file) = lock_pid_file(&pid_path)? else {
        let pid = fs::read_to_string(&pid_path).unwrap_or_default();
        println!("{ALREADY_RUNNING} {}", pid.trim());
        return Ok(());
    };
    let sock_path = dir.join(CONTROL_SOCKET);
    cni::store::remove_if_exists(&sock_path)?;
    let control = UnixListener::bind(&sock_path)
        .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", sock_path.display())))?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o600))?;
    pid_file.set_len(0)?;
    writeln!(pid_file, "{}", std::process::id())?;
    pid_file.sync_all()?;
    let _ = std::env::set_current_dir("/");

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
    let mut out = io::stdout().lock();
    // A plugin killed while it waited for this line is no reason to stop serving: the records
    // are there, and the runtime's DEL (or GC) will talk to us next.
    if let Err(e) = writeln!(out, "{READY}").and_then(|_| out.flush()) {
        log!("the plugin that started us is gone ({e}); serving anyway");
    }
    drop(out);
    if !foreground {
        // The plugin has its answer: stdout joins stderr in the log (closing the pipe).
        let log = OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE))?;
        nix::unistd::dup2_stdout(log.as_fd())?;
    }
    d.run()
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// The daemon's whole state; each concern's methods live in its own module.
pub(crate) struct Daemon {
    dir: PathBuf,
    epoll: Epoll,
    control: UnixListener,
    signals: SignalFd,
    _pid_file: File,
    listeners: listeners::Listeners,
    conns: tcp::Conns,
    forwards: forward::Forwards,
    timers: timers::Timers,
    zone: Arc<Zone>,
    scratch: Scratch,
    batch: udp_batch::Batch,
    buf: Vec<u8>,
    out: Vec<u8>,
    records: usize,
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(1 << 20), hard);
        }
    }
}

impl Daemon {
    fn new(dir: PathBuf, control: UnixListener, pid_file: File) -> io::Result<Daemon> {
        raise_nofile();
        // Signals arrive through a signalfd in the loop; they are blocked first so they are
        // not delivered the ordinary way.
        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        control.set_nonblocking(true)?;
        epoll.add(&control, EpollEvent::new(EpollFlags::EPOLLIN, token(K_CONTROL, 0)))?;
        epoll.add(&signals, EpollEvent::new(EpollFlags::EPOLLIN, token(K_SIGNAL, 0)))?;
        Ok(Daemon {
            dir,
            epoll,
            control,
            signals,
            _pid_file: pid_file,
            listeners: listeners::Listeners::default(),
            conns: tcp::Conns::default(),
            forwards: forward::Forwards::default(),
            timers: timers::Timers::default(),
            zone: Arc::new(Zone::default()),
            scratch: Scratch::default(),
            batch: udp_batch::Batch::default(),
            buf: vec![0; 65536],
            out: Vec::with_capacity(4096),
            records: 0,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let timeout = match self.timers.next_timeout() {
                None => EpollTimeout::NONE,
                Some(d) => EpollTimeout::try_from(d).unwrap_or(EpollTimeout::MAX),
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for ev in &events[..n] {
                let (kind, idx) = split_token(ev.data());
                match kind {
                    K_UDP => self.on_udp(idx),
                    K_FORWARD => self.on_forward(idx),
                    K_TCP_LISTEN => self.on_tcp_listen(idx),
                    K_TCP_CONN => self.on_tcp_conn(idx, ev.events()),
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
            self.fire_timers();
        }
    }

    /// Runs what is due: forward attempts that timed out, idle TCP connections.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((tok, gen)) = self.timers.pop_due(now) {
            let (kind, idx) = split_token(tok);
            match kind {
                K_FORWARD => self.forward_timer(idx, gen, now),
                K_TCP_CONN => self.conn_timer(idx, gen, now),
                _ => {}
            }
        }
    }

    /// Stops serving. `last`: no record is left, so nothing of ours may remain.
    fn shutdown(&mut self, last: bool) {
        self.close_all_listeners(if last { "no record left" } else { "daemon stopping" });
        let _ = cni::store::remove_if_exists(&self.dir.join(CONTROL_SOCKET));
        let _ = cni::store::remove_if_exists(&self.dir.join(PID_FILE));
        if last {
            let _ = cni::store::remove_if_exists(&self.dir.join(LOG_FILE));
        }
    }
}
