//! The on-disk lease store, file-compatible with the reference host-local:
//!
//! ```text
//! <dataDir>/<network>/lock                    flock(LOCK_EX) held for every change
//! <dataDir>/<network>/<ip>                    one lease: "<containerID>\r\n<ifname>"
//! <dataDir>/<network>/last_reserved_ip.<N>    last address handed out from range set N
//!                                             (no newline)
//! <dataDir>/<network>/.by-container/<containerID>:<ifname>/<ip>
//!                                             our index: a hard link to the lease file
//! ```
//!
//! A lease is created by writing its content to a temp file, hard-linking the temp file to the
//! index entry, then hard-linking it to `<ip>`. `link(2)` fails with EEXIST when the name is
//! taken, so creation is exclusive (two allocators never both win) and the lease appears with
//! its full content or not at all. The index entry is written first, as an intent: a crash
//! leaves at worst an index entry without a lease (cleaned up later), never a lease the index
//! does not know about.
//!
//! The index entries have the same content as the lease, so the reference host-local (which
//! walks the whole directory tree on DEL and removes every file whose content matches) removes
//! them together with the lease; when it does, our DEL finds no index and scans the directory
//! like the reference. The reference ignores entries whose name is not an address (the
//! directories), and our `<ip>` entries only ever match a container that really holds the lease.

use cni::store::{remove_if_exists, FileLock};
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Lock file, the same one the reference flocks.
pub const LOCK_FILE: &str = "lock";
/// Our per-(container, interface) index.
pub const INDEX_DIR: &str = ".by-container";
/// Prefix of the round-robin cursor files (suffix: range set index).
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Temp file a lease is linked from (one name: only the lock holder writes it).
const LEASE_TMP: &str = ".lease.tmp";

/// The (container, interface) pair a lease belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(id: &str, ifname: &str) -> Owner {
        Owner { id: id.trim().to_string(), ifname: ifname.to_string() }
    }

    /// The lease file content, byte for byte what the reference writes.
    pub fn content(&self) -> String {
        format!("{}\r\n{}", self.id, self.ifname)
    }

    /// True when lease file content `data` belongs to this owner. Like the reference, a
    /// legacy lease holding only the container id counts too.
    pub fn owns(&self, data: &str) -> bool {
        let t = data.trim();
        t == self.content().trim() || t == self.id
    }

    /// Name of this owner's index directory, when the pair is safe to use as a file name
    /// (`:` appears in neither a container id nor an interface name, so the name is unambiguous).
    fn index_name(&self) -> Option<String> {
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', ':', '\0']) && s != "." && s != "..";
        let name = format!("{}:{}", self.id, self.ifname);
        (ok(&self.id) && ok(&self.ifname) && name.len() <= 255).then_some(name)
    }
}

/// Who holds a lease, as read back from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    /// None for legacy leases that recorded only the container id.
    pub ifname: Option<String>,
}

impl Holder {
    pub fn parse(data: &str) -> Holder {
        let t = data.trim();
        match t.split_once("\r\n").or_else(|| t.split_once('\n')) {
            Some((id, ifname)) => {
                Holder { id: id.trim().to_string(), ifname: Some(ifname.trim().to_string()) }
            }
            None => Holder { id: t.to_string(), ifname: None },
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ifname {
            Some(i) => write!(f, "container {} interface {}", self.id, i),
            None => write!(f, "container {}", self.id),
        }
    }
}

fn not_found_ok<T: Default>(r: io::Result<T>) -> io::Result<T> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(T::default()),
        other => other,
    }
}

/// Names in `dir` that parse as addresses (the lease files), with their paths.
fn lease_names(dir: &Path) -> io::Result<Vec<(IpAddr, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        if let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) {
            out.push((ip, entry.path()));
        }
    }
    Ok(out)
}

/// Addresses currently leased in a network, read without taking the lock (STATUS).
pub fn leased_ips(data_dir: &Path, network: &str) -> io::Result<Vec<IpAddr>> {
    Ok(lease_names(&data_dir.join(network))?.into_iter().map(|(ip, _)| ip).collect())
}

/// An open, locked store for one network. Every method runs under the lock, which is
/// released when the store is dropped.
pub struct Store {
    dir: PathBuf,
    /// Temp file holding the current owner's lease content, linked into place by `reserve`.
    temp: Option<(String, PathBuf)>,
    // Declared last: dropped after `Drop::drop` has removed the temp file.
    _lock: FileLock,
}

impl Store {
    /// Opens (creating it if needed) and locks the store of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> io::Result<Store> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir)?;
        let lock = FileLock::exclusive(&dir.join(LOCK_FILE))?;
        Ok(Store { dir, temp: None, _lock: lock })
    }

    /// Like `open`, but None (and nothing created) when the network has no store yet.
    pub fn open_existing(data_dir: &Path, network: &str) -> io::Result<Option<Store>> {
        let dir = data_dir.join(network);
        if !dir.is_dir() {
            return Ok(None);
        }
        Store::open(data_dir, network).map(Some)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when at least one address is leased. Stops at the first lease file, so it costs
    /// the same with 1 lease or 60,000 (only a handful of non-lease names exist).
    pub fn has_leases(&self) -> io::Result<bool> {
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            if name.to_str().is_some_and(|n| n.parse::<IpAddr>().is_ok()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// After the last lease is gone: drops the round-robin cursors and the empty index, so
    /// nothing but the `lock` file (shared with the reference host-local, which must keep
    /// finding the same file to exclude us) is left behind.
    pub fn forget_cursors_if_empty(&self) -> io::Result<()> {
        if self.has_leases()? {
            return Ok(());
        }
        for e in fs::read_dir(&self.dir)?.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with(LAST_RESERVED_PREFIX)) {
                cni::store::remove_if_exists(&e.path())?;
            }
        }
        cni::store::remove_dir_if_empty(&self.dir.join(INDEX_DIR));
        Ok(())
    }

    pub fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn index_dir(&self, owner: &Owner) -> Option<PathBuf> {
        owner.index_name().map(|n| self.dir.join(INDEX_DIR).join(n))
    }

    /// True when `ip` has a lease file (one stat).
    pub fn is_leased(&self, ip: IpAddr) -> io::Result<bool> {
        match fs::symlink_metadata(self.lease_path(ip)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The content of `ip`'s lease file, None when there is no lease.
    pub fn lease_content(&self, ip: IpAddr) -> io::Result<Option<String>> {
        match fs::read(self.lease_path(ip)) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn owned_by(&self, ip: IpAddr, owner: &Owner) -> io::Result<bool> {
        Ok(self.lease_content(ip)?.is_some_and(|c| owner.owns(&c)))
    }

    /// The temp file with `owner`'s lease content, created (and fsynced) once per owner.
    fn temp_for(&mut self, owner: &Owner) -> io::Result<PathBuf> {
        let content = owner.content();
        if let Some((c, p)) = &self.temp {
            if *c == content {
                return Ok(p.clone());
            }
        }
        let path = self.dir.join(LEASE_TMP);
        // A crash may have left it behind, possibly still linked to a live lease:
        // unlink it rather than write through it.
        remove_if_exists(&path)?;
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path)?;
        f.write_all(content.as_bytes())?;
        f.sync_data()?;
        self.temp = Some((content, path.clone()));
        Ok(path)
    }

    /// Leases `ip` to `owner` if it is free. Returns false when another lease holds it.
    pub fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> io::Result<bool> {
        let lease = self.lease_path(ip);
        if self.is_leased(ip)? {
            return Ok(false);
        }
        let tmp = self.temp_for(owner)?;
        let entry = self.index_dir(owner).map(|d| d.join(ip.to_string()));
        if let Some(e) = &entry {
            fs::create_dir_all(e.parent().expect("index entry has a parent"))?;
            if let Err(err) = fs::hard_link(&tmp, e) {
                if err.kind() != ErrorKind::AlreadyExists {
                    return Err(err);
                }
                // A stale entry (its lease is gone, we just checked): replace it.
                fs::remove_file(e)?;
                fs::hard_link(&tmp, e)?;
            }
        }
        match fs::hard_link(&tmp, &lease) {
            Ok(()) => Ok(true),
            Err(err) => {
                if let Some(e) = &entry {
                    remove_if_exists(e)?;
                    self.prune_index_dir(owner);
                }
                if err.kind() == ErrorKind::AlreadyExists {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Records in the index a lease `owner` already holds (created by the reference plugin).
    pub fn adopt(&self, ip: IpAddr, owner: &Owner) -> io::Result<()> {
        let Some(dir) = self.index_dir(owner) else { return Ok(()) };
        fs::create_dir_all(&dir)?;
        match fs::hard_link(self.lease_path(ip), dir.join(ip.to_string())) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes `ip`'s lease if `owner` holds it, and `owner`'s index entry for it either way.
    pub fn release(&self, ip: IpAddr, owner: &Owner) -> io::Result<bool> {
        let removed = if self.owned_by(ip, owner)? {
            remove_if_exists(&self.lease_path(ip))?;
            true
        } else {
            false
        };
        if let Some(d) = self.index_dir(owner) {
            remove_if_exists(&d.join(ip.to_string()))?;
            self.prune_index_dir(owner);
        }
        Ok(removed)
    }

    fn prune_index_dir(&self, owner: &Owner) {
        if let Some(d) = self.index_dir(owner) {
            cni::store::remove_dir_if_empty(&d);
            cni::store::remove_dir_if_empty(&self.dir.join(INDEX_DIR));
        }
    }

    /// Addresses in `owner`'s index whose lease `owner` still holds. No directory scan.
    pub fn indexed(&self, owner: &Owner) -> io::Result<Vec<IpAddr>> {
        let Some(d) = self.index_dir(owner) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (ip, _) in lease_names(&d)? {
            if self.owned_by(ip, owner)? {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Every lease `owner` holds: the index, or a scan when the index knows none (leases the
    /// reference plugin created).
    pub fn find(&self, owner: &Owner) -> io::Result<Vec<IpAddr>> {
        let found = self.indexed(owner)?;
        if !found.is_empty() {
            return Ok(found);
        }
        let mut out = Vec::new();
        for (ip, path) in lease_names(&self.dir)? {
            if let Some(data) = not_found_ok(fs::read(&path).map(Some))? {
                if owner.owns(&String::from_utf8_lossy(&data)) {
                    out.push(ip);
                }
            }
        }
        Ok(out)
    }

    /// Releases every lease `owner` holds (DEL). Uses the index; falls back to a scan of the
    /// directory when the index is missing or names no live lease.
    pub fn release_owner(&self, owner: &Owner) -> io::Result<Vec<IpAddr>> {
        let mut released = Vec::new();
        if let Some(d) = self.index_dir(owner) {
            for (ip, entry) in lease_names(&d)? {
                if self.owned_by(ip, owner)? {
                    remove_if_exists(&self.lease_path(ip))?;
                    released.push(ip);
                }
                remove_if_exists(&entry)?;
            }
            self.prune_index_dir(owner);
        }
        if released.is_empty() {
            for ip in self.find(owner)? {
                remove_if_exists(&self.lease_path(ip))?;
                released.push(ip);
            }
            // This path already costs a read of every lease: also drop the empty index
            // directories the reference leaves behind when it DELs our leases.
            self.prune_empty_index_dirs()?;
        }
        Ok(released)
    }

    fn prune_empty_index_dirs(&self) -> io::Result<()> {
        let index = self.dir.join(INDEX_DIR);
        match fs::read_dir(&index) {
            Ok(rd) => {
                for d in rd {
                    cni::store::remove_dir_if_empty(&d?.path());
                }
                cni::store::remove_dir_if_empty(&index);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn last_reserved_path(&self, set: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))
    }

    /// The round-robin cursor of range set `set` (None when absent or unreadable).
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.last_reserved_path(set)).ok()?.trim().parse().ok()
    }

    /// Replaces the cursor atomically (temp + rename). Written without a newline: the
    /// reference parses the whole file as an address.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> io::Result<()> {
        let path = self.last_reserved_path(set);
        let tmp = self.dir.join(format!(".{LAST_RESERVED_PREFIX}{set}.tmp"));
        remove_if_exists(&tmp)?;
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        f.write_all(ip.to_string().as_bytes())?;
        drop(f);
        fs::rename(&tmp, &path)
    }

    /// Every lease with its holder (reads the whole directory: GC and tests only).
    pub fn leases(&self) -> io::Result<Vec<(IpAddr, Holder)>> {
        let mut out = Vec::new();
        for (ip, path) in lease_names(&self.dir)? {
            if let Some(data) = not_found_ok(fs::read(&path).map(Some))? {
                out.push((ip, Holder::parse(&String::from_utf8_lossy(&data))));
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Releases every lease whose holder `keep` rejects, then drops index entries that no longer
    /// point at a lease of their owner, and temp files a crash left behind. Returns what was
    /// released.
    pub fn gc(&mut self, keep: &dyn Fn(&Holder) -> bool) -> io::Result<Vec<IpAddr>> {
        let mut released = Vec::new();
        for (ip, holder) in self.leases()? {
            if !keep(&holder) {
                remove_if_exists(&self.lease_path(ip))?;
                released.push(ip);
            }
        }
        let index = self.dir.join(INDEX_DIR);
        let dirs = match fs::read_dir(&index) {
            Ok(rd) => rd.collect::<io::Result<Vec<_>>>()?,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for d in dirs {
            let name = d.file_name().to_string_lossy().into_owned();
            let owner = name.split_once(':').map(|(id, ifname)| Owner::new(id, ifname));
            if d.file_type()?.is_dir() {
                for (ip, entry) in lease_names(&d.path())? {
                    let live = match &owner {
                        Some(o) => self.lease_content(ip)?.is_some_and(|c| c.trim() == o.content()),
                        None => false,
                    };
                    if !live {
                        remove_if_exists(&entry)?;
                    }
                }
                cni::store::remove_dir_if_empty(&d.path());
            }
        }
        cni::store::remove_dir_if_empty(&index);
        if self.temp.is_none() {
            remove_if_exists(&self.dir.join(LEASE_TMP))?;
        }
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!(".{LAST_RESERVED_PREFIX}")) && name.ends_with(".tmp") {
                remove_if_exists(&self.dir.join(name))?;
            }
        }
        released.sort();
        Ok(released)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((_, p)) = self.temp.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "ipam-store-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lease_format_matches_the_reference() {
        let d = tempdir("format");
        let a = Owner::new("abc123", "eth0");
        let mut s = Store::open(&d, "net").unwrap();
        assert!(s.reserve(ip("10.9.0.2"), &a).unwrap());
        assert!(s.reserve(ip("fd00:9::2"), &a).unwrap());
        s.set_last_reserved(0, ip("10.9.0.2")).unwrap();
        s.set_last_reserved(1, ip("fd00:9::2")).unwrap();
        drop(s);
        let net = d.join("net");
        assert_eq!(fs::read(net.join("10.9.0.2")).unwrap(), b"abc123\r\neth0");
        assert_eq!(fs::read(net.join("fd00:9::2")).unwrap(), b"abc123\r\neth0");
        assert_eq!(fs::read(net.join("last_reserved_ip.0")).unwrap(), b"10.9.0.2");
        assert_eq!(fs::read(net.join("last_reserved_ip.1")).unwrap(), b"fd00:9::2");
        // No temp file survives the store; the index holds links named by address.
        assert_eq!(
            names(&net),
            vec![
                ".by-container",
                "10.9.0.2",
                "fd00:9::2",
                "last_reserved_ip.0",
                "last_reserved_ip.1",
                "lock"
            ]
        );
        assert_eq!(names(&net.join(INDEX_DIR).join("abc123:eth0")), vec!["10.9.0.2", "fd00:9::2"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reserve_is_exclusive_and_release_checks_the_owner() {
        let d = tempdir("excl");
        let (a, b) = (Owner::new("a", "eth0"), Owner::new("b", "eth0"));
        let mut s = Store::open(&d, "net").unwrap();
        assert!(s.reserve(ip("10.0.0.2"), &a).unwrap());
        assert!(!s.reserve(ip("10.0.0.2"), &b).unwrap());
        assert!(s.indexed(&b).unwrap().is_empty());
        assert!(!s.release(ip("10.0.0.2"), &b).unwrap());
        assert_eq!(s.lease_content(ip("10.0.0.2")).unwrap().unwrap(), "a\r\neth0");
        assert_eq!(s.indexed(&a).unwrap(), vec![ip("10.0.0.2")]);
        assert!(s.release(ip("10.0.0.2"), &a).unwrap());
        assert!(!s.is_leased(ip("10.0.0.2")).unwrap());
        assert!(!d.join("net").join(INDEX_DIR).exists());
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lease_created_by_link_even_with_stale_temp_file_linked_to_a_live_lease() {
        // A crash after linking left .lease.tmp as a second name of a live lease: the next
        // writer must not write through it.
        let d = tempdir("stale-tmp");
        let net = d.join("net");
        fs::create_dir_all(&net).unwrap();
        fs::write(net.join("10.0.0.2"), "a\r\neth0").unwrap();
        fs::hard_link(net.join("10.0.0.2"), net.join(LEASE_TMP)).unwrap();
        let mut s = Store::open(&d, "net").unwrap();
        assert!(s.reserve(ip("10.0.0.3"), &Owner::new("b", "eth0")).unwrap());
        drop(s);
        assert_eq!(fs::read_to_string(net.join("10.0.0.2")).unwrap(), "a\r\neth0");
        assert_eq!(fs::read_to_string(net.join("10.0.0.3")).unwrap(), "b\r\neth0");
        assert!(!net.join(LEASE_TMP).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn crash_states_leave_no_duplicate_and_no_lost_lease() {
        let d = tempdir("crash");
        let net = d.join("net");
        let a = Owner::new("a", "eth0");
        // 1. Crash after the index entry (intent) but before the lease: the address stays free,
        //    the stale entry is ignored, DEL and GC clean it.
        fs::create_dir_all(net.join(INDEX_DIR).join("a:eth0")).unwrap();
        fs::write(net.join(INDEX_DIR).join("a:eth0").join("10.0.0.5"), "a\r\neth0").unwrap();
        let mut s = Store::open(&d, "net").unwrap();
        assert!(!s.is_leased(ip("10.0.0.5")).unwrap());
        assert!(s.indexed(&a).unwrap().is_empty());
        assert!(s.reserve(ip("10.0.0.5"), &Owner::new("b", "eth0")).unwrap());
        assert!(s.indexed(&a).unwrap().is_empty(), "a stale entry never makes a lease ours");
        assert!(s.release_owner(&a).unwrap().is_empty());
        assert_eq!(s.lease_content(ip("10.0.0.5")).unwrap().unwrap(), "b\r\neth0");
        // 2. Crash after the lease link, before last_reserved and the temp unlink: the lease is
        //    complete and indexed, so DEL finds it.
        assert!(s.reserve(ip("10.0.0.6"), &a).unwrap());
        s.temp = None; // as after a crash: the temp file stays behind, linked to the lease
        drop(s);
        let mut s = Store::open(&d, "net").unwrap();
        assert_eq!(s.release_owner(&a).unwrap(), vec![ip("10.0.0.6")]);
        // 3. GC removes the leftovers of both crashes.
        s.gc(&|_| true).unwrap();
        drop(s);
        assert_eq!(names(&net), vec![".by-container", "10.0.0.5", "lock"]);
        assert_eq!(names(&net.join(INDEX_DIR)), vec!["b:eth0"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn del_falls_back_to_scan_for_reference_leases() {
        let d = tempdir("scan");
        let net = d.join("net");
        fs::create_dir_all(&net).unwrap();
        // What the reference writes (and a legacy id-only lease).
        fs::write(net.join("10.0.0.7"), "ref1\r\neth0").unwrap();
        fs::write(net.join("10.0.0.8"), "ref1\r\neth1").unwrap();
        fs::write(net.join("10.0.0.9"), "old").unwrap();
        let s = Store::open(&d, "net").unwrap();
        assert_eq!(s.find(&Owner::new("ref1", "eth0")).unwrap(), vec![ip("10.0.0.7")]);
        assert_eq!(s.release_owner(&Owner::new("ref1", "eth0")).unwrap(), vec![ip("10.0.0.7")]);
        assert_eq!(s.release_owner(&Owner::new("old", "eth0")).unwrap(), vec![ip("10.0.0.9")]);
        assert!(s.release_owner(&Owner::new("nobody", "eth0")).unwrap().is_empty());
        assert!(s.is_leased(ip("10.0.0.8")).unwrap());
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn gc_keeps_valid_attachments_only() {
        let d = tempdir("gc");
        let mut s = Store::open(&d, "net").unwrap();
        for (n, id) in ["a", "b", "c"].iter().enumerate() {
            assert!(s.reserve(ip(&format!("10.0.0.{}", n + 2)), &Owner::new(id, "eth0")).unwrap());
        }
        let gone = s.gc(&|h| h.id != "b").unwrap();
        assert_eq!(gone, vec![ip("10.0.0.3")]);
        assert_eq!(s.leases().unwrap().len(), 2);
        assert!(s.indexed(&Owner::new("b", "eth0")).unwrap().is_empty());
        assert!(!d.join("net").join(INDEX_DIR).join("b:eth0").exists());
        assert_eq!(s.indexed(&Owner::new("a", "eth0")).unwrap(), vec![ip("10.0.0.2")]);
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_reservers_never_both_win() {
        let d = tempdir("race");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut won = Vec::new();
                    for i in 2..40u8 {
                        let mut s = Store::open(&d, "net").unwrap();
                        if s.reserve(
                            ip(&format!("10.0.0.{i}")),
                            &Owner::new(&format!("t{t}"), "eth0"),
                        )
                        .unwrap()
                        {
                            won.push(i);
                        }
                    }
                    won
                })
            })
            .collect();
        let mut all: Vec<u8> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        assert_eq!(all, (2..40).collect::<Vec<u8>>());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn holder_parsing() {
        assert_eq!(
            Holder::parse("abc\r\neth0"),
            Holder { id: "abc".into(), ifname: Some("eth0".into()) }
        );
        assert_eq!(Holder::parse("abc\n"), Holder { id: "abc".into(), ifname: None });
        assert!(Owner::new("abc", "eth0").owns("abc\r\neth0\n"));
        assert!(Owner::new("abc", "eth0").owns("abc"));
        assert!(!Owner::new("abc", "eth0").owns("abc\r\neth1"));
        assert_eq!(Owner::new("a", "b:c").index_name(), None);
    }
}
