//! The crate's error type: what we were doing, plus the kernel's errno when there is one.

use std::fmt;
use std::io;

/// Result of every fallible operation in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An error with a context message ("creating veth veth0") and, when the kernel
/// refused, its errno and optional extended-ack text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    context: String,
    errno: Option<i32>,
    detail: Option<String>,
}

impl Error {
    /// An error carrying an errno (positive value, e.g. `libc::EEXIST`).
    pub fn from_errno(context: impl Into<String>, errno: i32) -> Error {
        Error { context: context.into(), errno: Some(errno), detail: None }
    }

    /// An error from an `io::Error`, keeping its errno when it has one.
    pub fn from_io(context: impl Into<String>, err: io::Error) -> Error {
        let errno = err.raw_os_error();
        let detail = if errno.is_none() { Some(err.to_string()) } else { None };
        Error { context: context.into(), errno, detail }
    }

    /// An error without errno (bad input, undecodable reply, ...).
    pub fn msg(context: impl Into<String>, detail: impl Into<String>) -> Error {
        Error { context: context.into(), errno: None, detail: Some(detail.into()) }
    }

    /// Builds an error from the current thread's `errno` after a failed libc call.
    pub(crate) fn last_os(context: impl Into<String>) -> Error {
        Error::from_io(context, io::Error::last_os_error())
    }

    /// Adds a detail text (the kernel's extended-ack message) to an errno error.
    pub(crate) fn with_detail(mut self, detail: Option<String>) -> Error {
        if detail.is_some() {
            self.detail = detail;
        }
        self
    }

    /// Replaces the context, e.g. to say which request failed.
    pub(crate) fn with_context(mut self, context: impl Into<String>) -> Error {
        self.context = context.into();
        self
    }

    /// The errno returned by the kernel, if any (positive, e.g. 17 for EEXIST).
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The context message alone ("creating veth veth0").
    pub fn context(&self) -> &str {
        &self.context
    }

    /// True when the object (link, address, route, namespace) does not exist:
    /// ENODEV, ENOENT, ESRCH or EADDRNOTAVAIL.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
        )
    }

    /// True when the object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }

    /// True when the kernel does not support the request (EOPNOTSUPP), e.g. a missing link type.
    pub fn is_not_supported(&self) -> bool {
        self.errno == Some(libc::EOPNOTSUPP)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        match (self.errno, &self.detail) {
            (Some(errno), Some(detail)) => {
                write!(f, ": {} ({detail})", io::Error::from_raw_os_error(errno))
            }
            (Some(errno), None) => write!(f, ": {}", io::Error::from_raw_os_error(errno)),
            (None, Some(detail)) => write!(f, ": {detail}"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

/// What a plugin reports when the kernel refused: code 112 with the context and the kernel's
/// reason ("creating veth veth0: File exists (os error 17)").
impl From<Error> for cni::CniError {
    fn from(e: Error) -> cni::CniError {
        cni::CniError::new(cni::code::KERNEL, e.to_string())
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e.errno {
            Some(errno) => {
                io::Error::new(io::Error::from_raw_os_error(errno).kind(), e.to_string())
            }
            None => io::Error::other(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_errno() {
        let e = Error::from_errno("creating veth vethX", libc::EEXIST);
        assert_eq!(e.to_string(), "creating veth vethX: File exists (os error 17)");
        assert!(e.is_exists());
        assert!(!e.is_not_found());
    }

    #[test]
    fn display_with_detail() {
        let e = Error::from_errno("creating vlan v0", libc::EOPNOTSUPP)
            .with_detail(Some("Unknown device type".into()));
        assert!(e.to_string().ends_with("(os error 95) (Unknown device type)"), "{e}");
        assert!(e.is_not_supported());
        let e = Error::msg("parsing mac", "bad length");
        assert_eq!(e.to_string(), "parsing mac: bad length");
        assert_eq!(e.errno(), None);
    }

    #[test]
    fn not_found_errnos() {
        for errno in [libc::ENODEV, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL] {
            assert!(Error::from_errno("x", errno).is_not_found());
        }
    }
}
