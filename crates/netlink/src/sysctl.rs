//! Per-namespace sysctls under /proc/sys.
//!
//! /proc/sys/net follows the network namespace of the *calling thread* (measured:
//! a thread that setns()'d into another namespace reads that namespace's
//! net/ipv4/ip_forward while the other threads still see the root one). So call
//! these with the thread inside the target namespace (`NetnsGuard`/`with_netns`).
//! /proc/net, by contrast, is /proc/self/net and follows the main thread: use
//! /proc/thread-self/net for per-thread views of those files.

use std::fs;

use crate::error::{Error, Result};

/// Maps "net/ipv4/ip_forward" to /proc/sys/net/ipv4/ip_forward, refusing paths that escape
/// /proc/sys.
fn sysctl_path(path: &str) -> Result<String> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(Error::from_errno(format!("invalid sysctl path {path:?}"), libc::EINVAL));
    }
    Ok(format!("/proc/sys/{path}"))
}

/// Reads `/proc/sys/<path>` as seen by the current thread's namespace ("net/ipv4/ip_forward"),
/// trimmed.
pub fn sysctl_get(path: &str) -> Result<String> {
    let file = sysctl_path(path)?;
    let value = fs::read_to_string(&file)
        .map_err(|e| Error::from_io(format!("reading sysctl {path}"), e))?;
    Ok(value.trim().to_string())
}

/// Writes `/proc/sys/<path>` in the current thread's namespace; no write when the value already
/// matches.
pub fn sysctl_set(path: &str, value: &str) -> Result<()> {
    if sysctl_get(path)? == value.trim() {
        return Ok(());
    }
    let file = sysctl_path(path)?;
    fs::write(&file, value)
        .map_err(|e| Error::from_io(format!("writing {value:?} to sysctl {path}"), e))
}

/// Whether the kernel has IPv6 in the current thread's namespace (its sysctls exist; they
/// do not with `ipv6.disable=1`), read before IPv6 settings are sent rather than learned
/// from their refusal.
pub fn ipv6_enabled() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6/conf/all").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_proc_sys() {
        assert_eq!(sysctl_path("net/ipv4/ip_forward").unwrap(), "/proc/sys/net/ipv4/ip_forward");
        for bad in ["", "/etc/passwd", "net/../../etc", "net//ipv4", "net/./x", "net/ipv4/"] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
    }
}
