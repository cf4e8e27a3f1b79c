//! Docker's embedded-DNS redirect inside one container namespace: 127.0.0.11:53 (UDP and
//! TCP) is DNATed to the ports where the dns-alias daemon's sockets for that namespace
//! listen, so nothing of ours takes port 53 and the container may run its own server on it.
//!
//! Self-contained on purpose (the rest of the crate's nftables backend may change under it):
//! one table, `ip cni_dns`, with one nat output chain, in the network namespace of the
//! calling thread (the `nft` child inherits it). The API is three calls: [`install`],
//! [`remove`] and [`installed`] (what the table points at now, so a restarted daemon can
//! bind the same ports again and keep long-lived client sockets working).
//!
//! Changing where 127.0.0.11:53 leads, or removing it, also drops the conntrack entries of
//! the old redirect ([`crate::conntrack::flush_dns_redirect`]): a client that keeps its source
//! port would otherwise keep being sent to a socket that no longer exists (or, for flows
//! created while no redirect existed, keep bypassing the new one) for as long as it keeps
//! sending.

use crate::{conntrack, run_tool, Error};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The table we own inside each container namespace (never in the host namespace).
pub const TABLE: &str = "cni_dns";
/// Docker's embedded DNS address.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Where 127.0.0.11:53 leads in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub udp_port: u16,
    pub tcp_port: u16,
}

/// The `nft` binary: on PATH, else the usual sbin directories (runtimes may pass a PATH
/// without them).
pub fn nft_binary() -> Option<PathBuf> {
    crate::tool_binary("nft")
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<crate::Run, Error> {
    let bin = nft_binary().ok_or_else(|| Error::new("nft not found (install nftables)"))?;
    run_tool(&bin.to_string_lossy(), args, stdin)
}

/// Replaces our table in one transaction. DNAT in the nat output hook, like Docker;
/// conntrack rewrites the replies' source port back to 53. Other addresses' port 53 are
/// untouched.
pub fn install_script(r: Redirect) -> String {
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr {DNS_ADDR} udp dport 53 dnat to {DNS_ADDR}:{}\n\
         \t\tip daddr {DNS_ADDR} tcp dport 53 dnat to {DNS_ADDR}:{}\n\
         \t}}\n}}\n",
        r.udp_port, r.tcp_port
    )
}

/// Deletes our table; succeeds when it is already gone.
pub fn remove_script() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Points 127.0.0.11:53 at `r` in the calling thread's namespace. `previous` is what the
/// caller knows was there ([`installed`], or its own last install; None: nothing or
/// unknown). When that differs from `r`, the old flows are flushed; when it already pointed
/// at `r`, live connections are left alone.
pub fn install(r: Redirect, previous: Option<Redirect>) -> Result<(), Error> {
    let out = nft(&["-f", "-"], Some(&install_script(r)))?;
    if !out.ok {
        return Err(Error::new(format!("nft -f - (table ip {TABLE}): {}", out.stderr.trim())));
    }
    if previous != Some(r) {
        conntrack::flush_dns_redirect();
    }
    Ok(())
}

/// Removes the redirect from the calling thread's namespace, and its flows.
pub fn remove() -> Result<(), Error> {
    let out = nft(&["-f", "-"], Some(&remove_script()))?;
    if !out.ok {
        return Err(Error::new(format!(
            "nft -f - (delete table ip {TABLE}): {}",
            out.stderr.trim()
        )));
    }
    conntrack::flush_dns_redirect();
    Ok(())
}

/// Where 127.0.0.11:53 leads in the calling thread's namespace, if our table is there.
pub fn installed() -> Option<Redirect> {
    let out = nft(&["list", "table", "ip", TABLE], None).ok()?;
    if !out.ok {
        return None;
    }
    parse_listing(&out.stdout)
}

fn parse_listing(listing: &str) -> Option<Redirect> {
    let port = |proto: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!("{proto} dport 53 dnat")))
            .and_then(|l| l.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok()))
    };
    Some(Redirect { udp_port: port("udp")?, tcp_port: port("tcp")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_listing() {
        let r = Redirect { udp_port: 40000, tcp_port: 40001 };
        let s = install_script(r);
        assert!(s.contains("udp dport 53 dnat to 127.0.0.11:40000"), "{s}");
        assert!(s.contains("tcp dport 53 dnat to 127.0.0.11:40001"), "{s}");
        assert!(s.starts_with("table ip cni_dns\ndelete table ip cni_dns\n"));
        assert_eq!(remove_script(), "table ip cni_dns\ndelete table ip cni_dns\n");
        // what `nft list table` prints back
        let listing = "table ip cni_dns {\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\
                       \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40000\n\
                       \t\tip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:40001\n\t}\n}\n";
        assert_eq!(parse_listing(listing), Some(r));
        assert_eq!(parse_listing("table ip cni_dns {\n}\n"), None);
    }
}
