//! Deleting UDP conntrack entries of port mappings, in-process over ctnetlink.
//!
//! UDP "connections" live in conntrack until they time out, so after a published UDP port
//! is removed, a client that keeps sending would keep being DNATed to the old container
//! (or to whoever gets its address next); and a flow that existed before a port was
//! published keeps bypassing the new DNAT. Both are fixed by deleting the entries, in the
//! caller's namespace. Never fails: no conntrack support, or nothing to delete, is fine.

use nfnetlink::ctnetlink::{self, Filter, TupleMatch, STATUS_DNAT};

use crate::{PortMapping, Protocol};

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

fn run_all(mappings: &[PortMapping], filter: fn(&PortMapping) -> Filter) -> usize {
    mappings
        .iter()
        .filter(|m| m.protocol == Protocol::Udp)
        .filter(|m| ctnetlink::delete_matching(&filter(m)).is_ok_and(|n| n > 0))
        .count()
}

/// Deletes the UDP flows DNATed to removed mappings; returns how many mappings had some.
pub fn flush_removed_udp(mappings: &[PortMapping]) -> usize {
    run_all(mappings, removed_mapping_filter)
}

/// Deletes the UDP flows to newly published host ports that bypass the DNAT.
pub fn flush_new_udp(mappings: &[PortMapping]) -> usize {
    run_all(mappings, new_mapping_filter)
}

/// Deletes the flows addressed to Docker's embedded DNS address (127.0.0.11) in the caller's
/// namespace, both protocols: only the DNS redirect ([`crate::dns_redirect`]) creates such
/// flows there. Returns true when something was deleted.
pub fn flush_dns_redirect() -> bool {
    let dns = std::net::IpAddr::from(crate::dns_redirect::DNS_ADDR);
    [IPPROTO_UDP, 6]
        .iter()
        .map(|proto| Filter {
            v6: false,
            proto: *proto,
            orig: TupleMatch { dst: Some(dns), ..Default::default() },
            reply: TupleMatch::default(),
            status_clear: 0,
        })
        .map(|f| ctnetlink::delete_matching(&f).unwrap_or(0))
        .sum::<usize>()
        > 0
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
