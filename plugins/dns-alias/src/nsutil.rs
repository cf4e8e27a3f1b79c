//! Kernel effects inside a container's network namespace: entering it on a thread, bringing
//! `lo` up, and the small nftables table that sends 127.0.0.11:53 to the daemon's sockets.
//!
//! setns(CLONE_NEWNET) changes only the calling thread, so each of these runs on a fresh
//! thread that enters the namespace and ends there; the daemon's main thread never moves.
//! Sockets created on such a thread stay in the container namespace for their whole life.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The table we own inside each container namespace (never in the host namespace).
pub const TABLE: &str = "cni_dns";
/// Docker's embedded DNS address.
pub const DNS_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// Identity of a namespace file: (st_dev, st_ino) of the nsfs inode it names.
pub fn ns_ident(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Runs `f` on a new thread that has entered the network namespace at `path`.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening netns {}: {e}", path.display())))?;
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: setns on a valid fd; it changes only this (short-lived) thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("entering netns {}: {e}", path.display()),
                ));
            }
            f()
        });
        h.join().unwrap_or_else(|_| Err(io::Error::other("thread in netns panicked")))
    })
}

/// Brings `lo` up in the current thread's namespace (bridge does not; 127.0.0.11 needs it).
pub fn set_lo_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo"; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 && (ifr.ifr_ifru.ifru_flags as libc::c_int & libc::IFF_UP) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(io::Error::new(err.kind(), format!("bringing lo up: {err}")));
        }
    }
    Ok(())
}

/// The nft binary: on PATH, else the usual sbin directories (runtimes may pass a bare PATH).
pub fn nft_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(PathBuf::from))
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
}

/// Runs `nft -f -` with `script` in the current thread's namespace (the child inherits it).
pub fn nft(script: &str) -> io::Result<()> {
    let bin = nft_binary().ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "nft not found (install nftables)")
    })?;
    let mut child = Command::new(&bin)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", bin.display())))?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft -f -: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Replaces our table in one transaction: 127.0.0.11:53 (udp, tcp) -> the daemon's ports.
/// DNAT in the nat output hook, like Docker; conntrack rewrites the replies' source port back
/// to 53. Other addresses' port 53 are untouched, so a container can run its own server.
pub fn redirect_script(udp_port: u16, tcp_port: u16) -> String {
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr {DNS_ADDR} udp dport 53 dnat to {DNS_ADDR}:{udp_port}\n\
         \t\tip daddr {DNS_ADDR} tcp dport 53 dnat to {DNS_ADDR}:{tcp_port}\n\
         \t}}\n}}\n"
    )
}

/// The ports our table in the current namespace points at, if it exists: a restarted daemon
/// binds the same ones again when it can, so conntrack entries of clients that keep one
/// socket open (a caching stub resolver) still lead to a live socket.
pub fn current_ports() -> Option<(u16, u16)> {
    let bin = nft_binary()?;
    let out = Command::new(bin)
        .args(["list", "table", "ip", TABLE])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_ports(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ports(listing: &str) -> Option<(u16, u16)> {
    let port = |proto: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!("{proto} dport 53 dnat")))
            .and_then(|l| l.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok()))
    };
    Some((port("udp")?, port("tcp")?))
}

/// Deletes our table; succeeds when it is already gone.
pub fn delete_script() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Deletes our table in the namespace at `path`, if the namespace still exists and (when
/// given) is still the one we set up.
pub fn delete_table_in(path: &Path, expect: Option<(u64, u64)>) -> io::Result<()> {
    match ns_ident(path) {
        Ok(id) if expect.is_none_or(|e| e == id) => in_netns(path, || nft(&delete_script())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts() {
        let s = super::redirect_script(40000, 40001);
        assert!(s.contains("udp dport 53 dnat to 127.0.0.11:40000"), "{s}");
        assert!(s.contains("tcp dport 53 dnat to 127.0.0.11:40001"), "{s}");
        assert!(s.starts_with("table ip cni_dns\ndelete table ip cni_dns\n"));
        // what `nft list table` prints back
        let listing = "table ip cni_dns {\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\
                       \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40000\n\
                       \t\tip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:40001\n\t}\n}\n";
        assert_eq!(super::parse_ports(listing), Some((40000, 40001)));
        assert_eq!(super::parse_ports("table ip cni_dns {\n}\n"), None);
    }
}
