//! Where the suite keeps state, and the two primitives every writer of shared state uses:
//! an exclusive flock and an atomic replace (write temp file, fsync, rename).

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

    /// Locks a lock file that its holder may delete (to leave nothing behind). A file unlinked
    /// by the previous holder while we waited is no longer the lock: open the path again and
    /// retry, so two callers never both believe they hold it. Delete only while holding it.
    pub fn removable(path: &Path) -> io::Result<FileLock> {
        use std::os::unix::fs::MetadataExt;
        loop {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
            {
                Ok(f) => f,
                // The directory went away between create_dir_all and open: start over.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            file.lock()?;
            let held = file.metadata()?;
            match fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(FileLock { file })
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
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

/// Replaces `path` with `data` so a reader sees either the old or the new content, never a mix,
/// even if the process dies between any two steps.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
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
}
