//! Deleting a link without waiting for the kernel's deferred work.
//!
//! Deleting a veth unregisters it at once (its name and index are free, the `RTM_DELLINK`
//! notification is sent), then the same `RTM_DELLINK` request blocks in `netdev_run_todo`
//! (`rcu_barrier()`, 13-21 ms measured here) before the kernel acknowledges it. A plugin
//! that returns only after that ACK makes the runtime wait for a grace period that
//! changes nothing it could observe.
//!
//! [`delete_link_detached`] subscribes to link notifications, forks a detached child
//! ([`cni::detach::run_detached`]: its own session, no fd of the runtime, so the runtime
//! never waits for it) that sends the delete, and returns as soon as the kernel reports the
//! link gone. The child finishes the wait on its own and exits. If no notification comes in
//! time, the caller deletes the link itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::Handle;

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
    // Subscribed first, so a delete by someone else from here on is reported too; gone
    // already means no notification will come.
    if Handle::new()?.link_by_index(index)?.is_none() {
        return Ok(());
    }
    cni::detach::run_detached(|| {
        // Gone already (someone else deleted it) is fine; any other failure is caught
        // below, when no notification comes.
        let _ = Handle::new().and_then(|mut h| h.delete_link(index));
    });
    if wait_gone(&events, index, Duration::from_secs(5)) {
        return Ok(());
    }
    // Nothing reported: make sure it is gone before returning.
    sync().map_err(|e| Error::msg(ctx, e.to_string()))
}
