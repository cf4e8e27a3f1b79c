//! Deleting UDP conntrack entries of port mappings, in-process over ctnetlink.
//!
//! UDP "connections" live in conntrack until they time out, so after a published UDP port
//! is removed, a client that keeps sending would keep being DNATed to the old container
//! (or to whoever gets its address next); and a flow that existed before a port was
//! published keeps bypassing the new DNAT. Both are fixed by deleting the entries, in the
//! caller's namespace. Never fails: no conntrack support, or nothing to delete, is fine.
//! Plugins call [`flush_detached`]; [`flush`] is the same work, done before returning.

use nfnetlink::ctnetlink::{self, Filter, TupleMatch, STATUS_DNAT};

use crate::{Flows, PortMapping, Protocol};

const IPPROTO_UDP: u8 = 17;

/// Flows to this mapping's host port that were not DNATed (they predate the mapping).
pub fn new_mapping_filter(m: &PortMapping) -> Filter {
    Filter {
        v6: m.container_ip.is_ipv6(),
        proto: IPPROTO_UDP,
        orig: TupleMatch {
            dst: m.specific_host_ip(),
            dst_port: Some(m.host_port),
            ..Default::default()
        },
        reply: TupleMatch::default(),
        status_clear: STATUS_DNAT,
    }
}

/// Flows to this mapping's host port whose replies come from the container.
pub fn removed_mapping_filter(m: &PortMapping) -> Filter {
    Filter {
        v6: m.container_ip.is_ipv6(),
        proto: IPPROTO_UDP,
        orig: TupleMatch {
            dst: m.specific_host_ip(),
            dst_port: Some(m.host_port),
            ..Default::default()
        },
        reply: TupleMatch {
            src: Some(m.container_ip),
            src_port: Some(m.container_port),
            ..Default::default()
        },
        status_clear: 0,
    }
}

/// Deletes the UDP flows `which` names for these mappings, now.
pub fn flush(mappings: &[PortMapping], which: Flows) {
    let filter = match which {
        Flows::ToNewPorts => new_mapping_filter,
        Flows::ToRemovedMappings => removed_mapping_filter,
    };
    for m in mappings.iter().filter(|m| m.protocol == Protocol::Udp) {
        // Never fails the plugin: a flow left behind only delays one client.
        let _ = ctnetlink::delete_matching(&filter(m));
    }
}

/// [`flush`] in a detached child, so the plugin returns without waiting for it.
///
/// Whatever the kernel does, it walks every bucket of its conntrack hash, which is global
/// (262,144 buckets here) even when this namespace holds one entry: a few ms of CPU that
/// the runtime need not wait for. Nothing it does next depends on the flush: a stale flow
/// only matters to a client that keeps sending, and it is gone a few milliseconds later.
/// Skipped outright when no mapping is UDP or the namespace has no conntrack entry at all.
pub fn flush_detached(mappings: &[PortMapping], which: Flows) {
    if !mappings.iter().any(|m| m.protocol == Protocol::Udp) {
        return;
    }
    if ctnetlink::entry_count() == Some(0) {
        return;
    }
    cni::detach::run_detached(|| {
        flush(mappings, which);
    });
}

/// Deletes the flows addressed to Docker's embedded DNS address (127.0.0.11) in the caller's
/// namespace, both protocols: only the DNS redirect ([`crate::dns_redirect`]) creates such
/// flows there.
pub fn flush_dns_redirect() {
    let dns = std::net::IpAddr::from(crate::dns_redirect::DNS_ADDR);
    for proto in [IPPROTO_UDP, 6] {
        let _ = ctnetlink::delete_matching(&Filter {
            v6: false,
            proto,
            orig: TupleMatch { dst: Some(dns), ..Default::default() },
            reply: TupleMatch::default(),
            status_clear: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let m = PortMapping {
            host_ip: Some("192.168.1.1".parse().unwrap()),
            host_port: 53,
            container_ip: "10.88.0.5".parse().unwrap(),
            container_port: 5353,
            protocol: Protocol::Udp,
        };
        let f = removed_mapping_filter(&m);
        assert_eq!(f.orig.dst, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(f.reply.src_port, Some(5353));
        assert!(!f.v6);
        let n = new_mapping_filter(&PortMapping { host_ip: None, ..m });
        assert_eq!(n.orig.dst, None);
        assert_eq!(n.status_clear, STATUS_DNAT);
    }
}
