//! Deleting a link without waiting for the kernel's deferred work.
//!
//! Deleting a veth unregisters it at once (its name and index are free, the `RTM_DELLINK`
//! notification is sent), then the same `RTM_DELLINK` request blocks in `netdev_run_todo`
//! (`rcu_barrier()`, 13-21 ms measured here) before the kernel acknowledges it. A plugin
//! that returns only after that ACK makes the runtime wait for a grace period that
//! changes nothing it could observe.
//!
//! [`delete_link_detached`] subscribes to link notifications, starts this same binary as a
//! detached helper (its own session, stdin/stdout/stderr on /dev/null, no fd of the
//! runtime, so the runtime never waits for it) that sends the delete, and returns as soon
//! as the kernel reports the link gone. The helper finishes the wait on its own and exits.
//! [`run_helper_if_asked`] is the helper's entry point, called first thing in `main`.
//! If no notification comes in time, the caller deletes the link itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::Handle;

/// The hidden first argument that makes a plugin binary the delete helper.
pub const HELPER_ARG: &str = "__cni-suite-delete-link";

/// In a plugin's `main`, before anything else: when started as the helper, deletes the
/// link and exits; otherwise returns.
pub fn run_helper_if_asked() {
    let mut args = std::env::args();
    if args.nth(1).as_deref() != Some(HELPER_ARG) {
        return;
    }
    let code = match args.next().and_then(|a| a.parse::<u32>().ok()) {
        Some(index) => match Handle::new().and_then(|mut h| h.delete_link(index)) {
            Ok(()) => 0,
            Err(e) if e.is_not_found() => 0,
            Err(_) => 1,
        },
        None => 2,
    };
    std::process::exit(code);
}

/// A NETLINK_ROUTE socket subscribed to link notifications (RTMGRP_LINK).
fn link_events() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = 1; // RTMGRP_LINK
                        // SAFETY: bind with a valid sockaddr_nl.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits for `RTM_DELLINK` of `index` on `fd`, up to `limit`. True when it came.
fn wait_gone(fd: &OwnedFd, index: u32, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if rc <= 0 {
            if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if rc == 0 {
                return false;
            }
            continue;
        }
        // SAFETY: recv into our buffer.
        let n = unsafe {
            libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0)
        };
        if n < 0 {
            // ENOBUFS (a burst of other link events overflowed us): the link may be gone.
            return false;
        }
        let n = n as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                break;
            }
            // RTM_DELLINK = 17; the body is an ifinfomsg: family, pad, type, index (i32).
            if kind == 17 && len >= 16 + 8 {
                let idx = i32::from_ne_bytes(buf[off + 20..off + 24].try_into().unwrap());
                if idx as u32 == index {
                    return true;
                }
            }
            off += (len + 3) & !3;
        }
    }
}

/// Deletes link `index` (in the calling thread's namespace) through a detached helper and
/// returns once the link is gone; falls back to deleting it here if the helper cannot be
/// started or nothing is reported within a few seconds. A link already gone is fine.
pub fn delete_link_detached(index: u32) -> Result<()> {
    let ctx = "deleting a link off the critical path";
    let sync = || match Handle::new()?.delete_link(index) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    };
    let Ok(events) = link_events() else { return sync() };
    let Ok(exe) = std::env::current_exe() else { return sync() };
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ARG)
        .arg(index.to_string())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the helper from the runtime's
    // session and process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    if cmd.spawn().is_err() {
        return sync();
    }
    if wait_gone(&events, index, Duration::from_secs(5)) {
        return Ok(());
    }
    // Nothing reported: make sure it is gone before returning.
    sync().map_err(|e| Error::msg(ctx, e.to_string()))
}
