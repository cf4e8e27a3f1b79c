//! Container namespaces, for the plugin and the daemon alike: running code inside one,
//! `lo`, and removing our redirect.

use firewall::dns_redirect;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Identity of a namespace file: (st_dev, st_ino) of the nsfs inode it names.
pub fn ns_ident(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Runs `f` with the calling thread inside the namespace at `path` (and back after).
pub fn in_netns<T>(path: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let ns = netlink::Netns::open(path).map_err(io::Error::other)?;
    in_ns(&ns, f)
}

/// Runs `f` with the calling thread inside `ns` (and back after).
pub fn in_ns<T>(ns: &netlink::Netns, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    netlink::with_netns(ns, f).map_err(io::Error::other)?
}

/// Brings `lo` up in the calling thread's namespace (bridge does not; 127.0.0.11 needs it).
pub fn set_lo_up() -> io::Result<()> {
    let mut h = netlink::Handle::new().map_err(io::Error::other)?;
    let lo = h.require_link("lo").map_err(io::Error::other)?;
    if !lo.up {
        h.set_up(lo.index).map_err(io::Error::other)?;
    }
    Ok(())
}

/// Brings `lo` up in `ns`.
pub fn set_lo_up_in(ns: &netlink::Netns) -> Result<(), netlink::Error> {
    let mut h = netlink::Handle::new_in(ns)?;
    let lo = h.require_link("lo")?;
    if !lo.up {
        h.set_up(lo.index)?;
    }
    Ok(())
}

/// Removes our redirect from the namespace at `path`, if the namespace still exists and
/// (when given) is still the one we set up.
pub fn remove_redirect_in(path: &Path, expect: Option<(u64, u64)>) -> io::Result<()> {
    match ns_ident(path) {
        Ok(id) if expect.is_none_or(|e| e == id) => {
            in_netns(path, || dns_redirect::remove().map_err(io::Error::other))
        }
        _ => Ok(()),
    }
}
