//! Network namespace handles and a guard that moves the current thread into one.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only, so the
//! guard is not `Send`: it must be dropped on the thread that created it.

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `NS_GET_NSTYPE` ioctl (`_IO(0xb7, 0x3)`): returns the CLONE_NEW* type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// A handle on a network namespace, opened from a path such as /var/run/netns/x or
/// `/proc/<pid>/ns/net`.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens a namespace file and checks that it really is a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        let context = || format!("opening network namespace {}", path.display());
        let file = File::open(path).map_err(|e| Error::from_io(context(), e))?;
        // SAFETY: ioctl on a valid open fd with an argument-less request.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind < 0 {
            let err = std::io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                    Error::msg(context(), "not a namespace file")
                }
                _ => Error::from_io(context(), err),
            });
        }
        if kind != libc::CLONE_NEWNET {
            return Err(Error::msg(context(), "not a network namespace"));
        }
        Ok(Netns { file, path: path.to_path_buf() })
    }

    /// The namespace the calling thread is in now (/proc/thread-self/ns/net).
    pub fn current() -> Result<Netns> {
        Netns::open("/proc/thread-self/ns/net")
    }

    /// The raw file descriptor, e.g. for IFLA_NET_NS_FD; valid as long as `self` lives.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The path this handle was opened from (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when both handles name the same namespace (same st_dev and st_ino).
    pub fn same_as(&self, other: &Netns) -> bool {
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens the namespace a runtime named in CNI_NETNS, with the error a runtime should see:
/// code 4 when the variable is missing or the path is not a network namespace, code 3 when
/// nothing is at the path (the container is gone, or was never made).
pub fn open_container_netns(path: Option<&Path>) -> std::result::Result<Netns, cni::CniError> {
    let Some(path) = path else {
        return Err(cni::CniError::invalid_env(
            "CNI_NETNS",
            "required environment variable is missing",
        ));
    };
    Netns::open(path).map_err(|e| {
        let why = e.to_string();
        if e.is_not_found() {
            cni::CniError::unknown_container(format!(
                "CNI_NETNS {}: no such network namespace (the container is gone or was never \
                created)",
                path.display()
            ))
        } else {
            cni::CniError::invalid_env("CNI_NETNS", format!("{}: {why}", path.display()))
        }
    })
}

/// Moves the calling thread into `ns` (setns is per-thread).
fn set_thread_netns(ns: &Netns) -> Result<()> {
    // SAFETY: setns on a valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(ns.fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::last_os(format!("entering network namespace {}", ns.path.display())));
    }
    Ok(())
}

/// Enters a namespace for the current thread (setns is per-thread) and returns to the original on
/// drop.
#[derive(Debug)]
pub struct NetnsGuard {
    original: Netns,
    // Not Send/Sync: the guard must be dropped on the thread that entered.
    _not_send: PhantomData<*const ()>,
}

impl NetnsGuard {
    /// Remembers the thread's current namespace, then enters `ns`.
    pub fn enter(ns: &Netns) -> Result<NetnsGuard> {
        let original = Netns::current()?;
        set_thread_netns(ns)?;
        Ok(NetnsGuard { original, _not_send: PhantomData })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // A thread left in the wrong namespace would go on to change the wrong
        // network (e.g. the host's), which is worse than stopping.
        if let Err(e) = set_thread_netns(&self.original) {
            eprintln!("fatal: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Convenience: run f with the current thread inside ns, restoring afterwards (also on panic).
pub fn with_netns<T>(ns: &Netns, f: impl FnOnce() -> T) -> Result<T> {
    let _guard = NetnsGuard::enter(ns)?;
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_netns_errors_carry_the_runtime_codes() {
        let e = open_container_netns(None).unwrap_err();
        assert_eq!(e.code, 4);
        let e = open_container_netns(Some(Path::new("/var/run/netns/cni-suite-no-such-ns")))
            .unwrap_err();
        assert_eq!(e.code, 3);
        assert!(e.msg.contains("cni-suite-no-such-ns"), "{}", e.msg);
        let e = open_container_netns(Some(Path::new("/proc/self/status"))).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_NETNS") && e.msg.contains("/proc/self/status"), "{}", e.msg);
    }
}
