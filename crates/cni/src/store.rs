//! Where the suite keeps state, the two primitives every writer of shared state uses (an
//! exclusive flock and an atomic replace: write a temp file, rename it over the record), and
//! [`Store`], the typed JSON record store every plugin keeps its state in.

use crate::error::CniError;
use crate::names::file_key;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Environment variable that redirects all runtime state (tests point it at a temp dir).
pub const STATE_DIR_ENV: &str = "CNI_SUITE_STATE_DIR";

/// Root of the suite's runtime state: `$CNI_SUITE_STATE_DIR` or /run/cni-suite.
pub fn state_dir() -> PathBuf {
    match std::env::var_os(STATE_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/run/cni-suite"),
    }
}

/// Default IPAM lease directory, the reference host-local's (/var/lib/cni/networks) unless
/// state is redirected.
pub fn default_ipam_data_dir() -> PathBuf {
    match std::env::var_os(STATE_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("networks"),
        _ => PathBuf::from("/var/lib/cni/networks"),
    }
}

/// An exclusive advisory lock held until dropped.
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Locks a directory (created if missing) rather than a lock file: the directory stays,
    /// so no lock file is left behind after the last DEL, and none is deleted while held.
    pub fn directory(path: &Path) -> io::Result<FileLock> {
        fs::create_dir_all(path)?;
        let file = File::open(path)?;
        file.lock()?;
        Ok(FileLock { file })
    }

    /// Creates parent directories and the lock file if needed, then blocks until locked.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        file.lock()?;
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Whether a write must reach the disk before it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the rename: state that must survive a power loss (IPAM leases under
    /// /var/lib/cni, like the reference host-local).
    Durable,
    /// No fsync: the state is gone after a reboot anyway (tmpfs, or /run, which is cleared at
    /// boot and is a tmpfs on most hosts). Atomicity against crashes of the process is kept.
    Volatile,
}

/// statfs magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The durability a state directory needs: volatile under /run or on a tmpfs, durable
/// elsewhere. Looks at the nearest existing ancestor when `path` does not exist yet.
pub fn durability_of(path: &Path) -> Durability {
    if path.starts_with("/run") || path.starts_with("/var/run") {
        return Durability::Volatile;
    }
    let mut probe = Some(path);
    while let Some(p) = probe {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
                #[allow(clippy::unnecessary_cast)]
                return if st.f_type as i64 == TMPFS_MAGIC {
                    Durability::Volatile
                } else {
                    Durability::Durable
                };
            }
        }
        probe = p.parent();
    }
    Durability::Durable
}

/// Replaces `path` with `data` so a reader sees either the old or the new content, never a mix,
/// even if the process dies between any two steps; fsyncs before the rename.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    atomic_write_with(path, data, Durability::Durable)
}

/// Prefix of the temp files [`atomic_write_with`] renames into place.
const TEMP_MARK: &str = ".tmp.";

/// [`atomic_write`] with the given durability. The temp file is `.<name>.tmp.<pid>`, so a
/// crash leaves a file [`sweep_temp_files`] can recognise and remove.
pub fn atomic_write_with(path: &Path, data: &[u8], durability: Durability) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if durability == Durability::Durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Removes, under `dir` (recursively), the temp files of writers that died before renaming
/// them: `.<name>.tmp.<pid>` whose process no longer exists. Returns how many were removed.
pub fn sweep_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            removed += sweep_temp_files(&path);
            continue;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit_once(TEMP_MARK)).map(|x| x.1)
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a directory if it is empty (ignores "not empty" and "not found").
pub fn remove_dir_if_empty(path: &Path) {
    let _ = fs::remove_dir(path);
}

/// A directory of typed JSON records, one file per key.
///
/// - Keys are paths of components (`["bridge", network, "ctr1_eth0"]`); each component goes
///   through [`file_key`], so container IDs and network names of any length and content work.
///   Records should carry their own identity (container ID, ifname): a long key's file name is
///   a hash.
/// - Writes are atomic (temp file + rename); [`Durability`] follows the directory (no fsync
///   under /run or a tmpfs).
/// - A record that exists but does not parse is an error naming the file, never "missing":
///   treating it as missing would make DEL forget what it should remove.
/// - [`Store::lock`] serializes writers: a flock on the store's root directory, which stays,
///   so no lock file is ever left behind or deleted while someone waits on it.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    durability: Durability,
}

/// The record key of one attachment inside its network's directory: `<containerID>_<ifname>`
/// (bridge, macvlan, host, tuning and bandwidth keep one record per attachment under it).
pub fn attachment_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}_{ifname}")
}

/// GC's view of a lenient listing ([`Store::list_lenient`]): the records that could be read.
/// Each one that could not is reported on stderr (`<plugin>: GC skips <file>: <error>`) and
/// left alone: GC goes on, and DEL still finds what the stable names point at.
pub fn readable_for_gc<T>(plugin: &str, listing: Vec<(PathBuf, Result<T, CniError>)>) -> Vec<T> {
    listing
        .into_iter()
        .filter_map(|(path, rec)| match rec {
            Ok(rec) => Some(rec),
            Err(e) => {
                eprintln!("{plugin}: GC skips {}: {e}", path.display());
                None
            }
        })
        .collect()
}

/// Like [`readable_for_gc`], but a record that cannot be read is removed (reported on stderr
/// as `<plugin>: GC drops unreadable state: <error>`): for plugins whose records only say
/// what DEL would undo, where an unreadable one can never be acted on and would fail every
/// later DEL.
pub fn readable_or_dropped<T>(
    plugin: &str,
    listing: Vec<(PathBuf, Result<T, CniError>)>,
) -> Result<Vec<T>, CniError> {
    let mut out = Vec::new();
    for (path, rec) in listing {
        match rec {
            Ok(rec) => out.push(rec),
            Err(e) => {
                eprintln!("{plugin}: GC drops unreadable state: {}", e.msg);
                remove_if_exists(&path).map_err(|e| io_error("removing", &path, e))?;
            }
        }
    }
    Ok(out)
}

/// Maps an I/O error on `path` to code 5 naming what was being done.
pub fn io_error(what: &str, path: &Path, e: io::Error) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

impl Store {
    /// A store rooted at `root`.
    pub fn new(root: PathBuf) -> Store {
        let durability = durability_of(&root);
        Store { root, durability }
    }

    /// The store of one plugin: `<state_dir>/<plugin>`.
    pub fn for_plugin(plugin: &str) -> Store {
        Store::new(state_dir().join(plugin))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Exclusive lock on the whole store, held until the guard is dropped.
    pub fn lock(&self) -> Result<FileLock, CniError> {
        FileLock::directory(&self.root).map_err(|e| io_error("locking", &self.root, e))
    }

    /// The directory of a key prefix.
    pub fn dir_path(&self, dir: &[&str]) -> PathBuf {
        let mut p = self.root.clone();
        for part in dir {
            p.push(file_key(part));
        }
        p
    }

    /// The file of a record.
    pub fn path(&self, key: &[&str]) -> PathBuf {
        let (last, dir) = key.split_last().expect("a record key has at least one component");
        self.dir_path(dir).join(format!("{}.json", file_key(last)))
    }

    /// Reads a record: `Ok(None)` when there is none, an error naming the file when it cannot
    /// be read or does not parse.
    pub fn get<T: DeserializeOwned>(&self, key: &[&str]) -> Result<Option<T>, CniError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(data) => decode_record(&path, &data).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    /// Writes (creates or replaces) a record atomically.
    pub fn put<T: Serialize>(&self, key: &[&str], record: &T) -> Result<(), CniError> {
        let path = self.path(key);
        let data = serde_json::to_vec(record).expect("state records serialize");
        atomic_write_with(&path, &data, self.durability).map_err(|e| io_error("writing", &path, e))
    }

    /// Removes a record (absent is fine) and the directories it leaves empty, up to the root.
    pub fn delete(&self, key: &[&str]) -> Result<(), CniError> {
        let path = self.path(key);
        remove_if_exists(&path).map_err(|e| io_error("removing", &path, e))?;
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// File names of the records directly in `dir` (not in subdirectories).
    fn record_files(&self, dir: &[&str]) -> Result<Vec<PathBuf>, CniError> {
        let path = self.dir_path(dir);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing", &path, e)),
        };
        let mut files = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.')
                && name.ends_with(".json")
                && e.file_type().is_ok_and(|t| t.is_file())
            {
                files.push(e.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// Every record directly in `dir`. A corrupt one is an error naming its file.
    pub fn list<T: DeserializeOwned>(&self, dir: &[&str]) -> Result<Vec<T>, CniError> {
        let mut out = Vec::new();
        for path in self.record_files(dir)? {
            match fs::read(&path) {
                Ok(data) => out.push(decode_record(&path, &data)?),
                // Removed by another holder of a different lock between listing and reading.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("reading", &path, e)),
            }
        }
        Ok(out)
    }

    /// Every record directly in `dir`, each parsed or with the error that names its file; for
    /// GC and DEL, which must go on past a record they cannot read.
    pub fn list_lenient<T: DeserializeOwned>(
        &self,
        dir: &[&str],
    ) -> Vec<(PathBuf, Result<T, CniError>)> {
        let Ok(files) = self.record_files(dir) else { return Vec::new() };
        files
            .into_iter()
            .filter_map(|path| match fs::read(&path) {
                Ok(data) => {
                    let rec = decode_record(&path, &data);
                    Some((path, rec))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    let err = io_error("reading", &path, e);
                    Some((path, Err(err)))
                }
            })
            .collect()
    }

    /// True when `dir` holds at least one record. Stops at the first, so "was this the last
    /// container?" costs the same with 1 or 1000 records.
    pub fn any(&self, dir: &[&str]) -> bool {
        let Ok(entries) = fs::read_dir(self.dir_path(dir)) else { return false };
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name.ends_with(".json")
        })
    }

    /// Removes temp files of writers that died (see [`sweep_temp_files`]); for GC.
    pub fn sweep_temp_files(&self) -> usize {
        sweep_temp_files(&self.root)
    }
}

fn decode_record<T: DeserializeOwned>(path: &Path, data: &[u8]) -> Result<T, CniError> {
    serde_json::from_slice(data).map_err(|e| {
        CniError::io(format!(
            "state record {} is corrupt ({e}); remove it to let the plugin forget it",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("cni-store-test-{}", std::process::id()));
        let p = dir.join("a").join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        {
            let _l = FileLock::exclusive(&dir.join("lock")).unwrap();
            let _d = FileLock::directory(&dir.join("d")).unwrap();
        }
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Rec {
        id: String,
        n: u32,
    }

    #[test]
    fn store_round_trips_hashes_long_keys_and_reports_corruption() {
        let dir = std::env::temp_dir().join(format!("cni-store-typed-{}", std::process::id()));
        let store = Store::new(dir.clone());
        let long = "x".repeat(400);
        let _lock = store.lock().unwrap();
        store.put(&["net", &long], &Rec { id: long.clone(), n: 1 }).unwrap();
        store.put(&["net", "b"], &Rec { id: "b".into(), n: 2 }).unwrap();
        assert_eq!(store.get::<Rec>(&["net", &long]).unwrap().unwrap().n, 1);
        assert_eq!(store.get::<Rec>(&["net", "missing"]).unwrap(), None);
        assert_eq!(store.list::<Rec>(&["net"]).unwrap().len(), 2);
        assert!(store.any(&["net"]));

        fs::write(store.path(&["net", "b"]), b"{not json").unwrap();
        let e = store.get::<Rec>(&["net", "b"]).unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("corrupt"), "{}", e.msg);
        assert!(store.list::<Rec>(&["net"]).is_err());
        let lenient = store.list_lenient::<Rec>(&["net"]);
        assert_eq!(lenient.iter().filter(|(_, r)| r.is_ok()).count(), 1);

        store.delete(&["net", "b"]).unwrap();
        store.delete(&["net", &long]).unwrap();
        store.delete(&["net", &long]).unwrap();
        assert!(!store.any(&["net"]));
        assert!(!store.dir_path(&["net"]).exists(), "empty key directories are removed");
        assert!(dir.exists(), "the root (the lock) stays");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept() {
        let dir = std::env::temp_dir().join(format!("cni-store-sweep-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        // PID 0x7fffffff does not exist; our own PID does.
        fs::write(dir.join("sub/.a.json.tmp.2147483647"), b"x").unwrap();
        let mine = format!(".b.json.tmp.{}", std::process::id());
        fs::write(dir.join(&mine), b"x").unwrap();
        fs::write(dir.join("c.json"), b"{}").unwrap();
        assert_eq!(sweep_temp_files(&dir), 1);
        assert!(dir.join(&mine).exists());
        assert!(dir.join("c.json").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_is_volatile() {
        assert_eq!(durability_of(Path::new("/run/cni-suite/x")), Durability::Volatile);
        assert_eq!(durability_of(Path::new("/dev/shm/none/here")), Durability::Volatile);
    }
}
