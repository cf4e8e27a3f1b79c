//! Flushing UDP conntrack entries of port mappings.
//!
//! UDP "connections" live in conntrack until they time out, so after a published UDP port
//! is removed, a client that keeps sending would keep being DNATed to the old container;
//! and a flow that existed before a port was published keeps bypassing the new DNAT.
//! Both are fixed by deleting the entries. This uses the `conntrack` tool (one exec per
//! UDP mapping) in the caller's namespace and never fails: a missing tool or no matching
//! entry is not an error.

use crate::{run_tool, PortMapping, Protocol};

fn family_args(m: &PortMapping) -> [&'static str; 2] {
    ["-f", if m.container_ip.is_ipv4() { "ipv4" } else { "ipv6" }]
}

/// `conntrack` arguments deleting every flow to this mapping's host port (for a newly
/// published port: flows created before it would bypass the DNAT).
pub fn new_mapping_args(m: &PortMapping) -> Vec<String> {
    let mut a: Vec<String> = vec!["-D".into()];
    a.extend(family_args(m).iter().map(|s| s.to_string()));
    a.extend(["-p".into(), "udp".into(), "--orig-port-dst".into(), m.host_port.to_string()]);
    if let Some(h) = m.specific_host_ip() {
        a.extend(["--orig-dst".into(), h.to_string()]);
    }
    a
}

/// `conntrack` arguments deleting the flows DNATed to this mapping's container port: the
/// flows to its host port whose replies come from the container.
pub fn removed_mapping_args(m: &PortMapping) -> Vec<String> {
    let mut a = new_mapping_args(m);
    a.extend([
        "--reply-src".into(),
        m.container_ip.to_string(),
        "--reply-port-src".into(),
        m.container_port.to_string(),
    ]);
    a
}

fn run_all(
    program: &str,
    mappings: &[PortMapping],
    args: fn(&PortMapping) -> Vec<String>,
) -> usize {
    let mut deleted = 0;
    for m in mappings.iter().filter(|m| m.protocol == Protocol::Udp) {
        let a = args(m);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        match run_tool(program, &refs, None) {
            Ok(r) if r.ok => deleted += 1,
            // Exit 1 with "0 flow entries have been deleted", or no conntrack support.
            Ok(_) => {}
            // Tool missing: nothing we can do, and nothing to report.
            Err(_) => return deleted,
        }
    }
    deleted
}

/// Deletes the UDP flows DNATed to removed mappings. Returns how many `conntrack` runs
/// deleted something.
pub fn flush_removed_udp(mappings: &[PortMapping]) -> usize {
    run_all("conntrack", mappings, removed_mapping_args)
}

/// Deletes the UDP flows to newly published host ports.
pub fn flush_new_udp(mappings: &[PortMapping]) -> usize {
    run_all("conntrack", mappings, new_mapping_args)
}

/// `conntrack` arguments deleting every flow addressed to Docker's embedded DNS address
/// (127.0.0.11) in the caller's namespace: only the DNS redirect creates such flows there.
/// One run for both protocols (each run walks the whole conntrack hash).
pub fn dns_redirect_args() -> Vec<String> {
    ["-D", "-f", "ipv4", "--orig-dst", "127.0.0.11"].iter().map(|s| s.to_string()).collect()
}

/// Deletes the flows of the 127.0.0.11 redirect in the caller's namespace (see
/// [`crate::dns_redirect`]). Returns true when something was deleted.
pub fn flush_dns_redirect() -> bool {
    let Some(bin) = crate::tool_binary("conntrack") else { return false };
    let a = dns_redirect_args();
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    run_tool(&bin.to_string_lossy(), &refs, None).is_ok_and(|r| r.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let m = PortMapping {
            host_ip: Some("192.168.1.1".parse().unwrap()),
            host_port: 53,
            container_ip: "10.88.0.5".parse().unwrap(),
            container_port: 5353,
            protocol: Protocol::Udp,
        };
        assert_eq!(
            removed_mapping_args(&m).join(" "),
            "-D -f ipv4 -p udp --orig-port-dst 53 --orig-dst 192.168.1.1 --reply-src 10.88.0.5 --reply-port-src 5353"
        );
        assert_eq!(dns_redirect_args().join(" "), "-D -f ipv4 --orig-dst 127.0.0.11");
        let m6 = PortMapping { host_ip: None, container_ip: "fd00::5".parse().unwrap(), ..m };
        assert_eq!(new_mapping_args(&m6).join(" "), "-D -f ipv6 -p udp --orig-port-dst 53");
    }

    #[test]
    fn tcp_and_missing_tool_are_ignored() {
        let m = PortMapping {
            host_ip: None,
            host_port: 80,
            container_ip: "10.88.0.5".parse().unwrap(),
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        assert_eq!(run_all("/nonexistent/conntrack", &[m], removed_mapping_args), 0);
        let u = PortMapping { protocol: Protocol::Udp, ..m };
        assert_eq!(run_all("/nonexistent/conntrack", &[u], removed_mapping_args), 0);
    }
}
