//! `Handle`: the entry point for rtnetlink requests in one namespace.

use crate::error::Result;
use crate::netns::{Netns, NetnsGuard};
use crate::socket::RtSocket;

/// An rtnetlink socket bound to the namespace that was current when it was opened (sockets keep
/// their namespace).
pub struct Handle {
    pub(crate) sock: RtSocket,
}

impl Handle {
    /// Opens a handle in the calling thread's current namespace.
    pub fn new() -> Result<Handle> {
        Ok(Handle { sock: RtSocket::open()? })
    }

    /// Opens a handle in `ns`: enters it, opens the socket, and returns the thread to where it was.
    pub fn new_in(ns: &Netns) -> Result<Handle> {
        let _guard = NetnsGuard::enter(ns)?;
        Handle::new()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle")
    }
}
