//! Shared-namespace mode (Docker's `--network host`): the container runs in the host's own
//! network namespace, so nothing is created or moved; the result describes the host.
//!
//! The result lists the host's interfaces without `sandbox` (nothing lives in a container
//! namespace) and their addresses. Loopback is left out: it is not an attachment to any
//! network, has no MAC, and its 127.0.0.1/::1 would become "the container's IP" for runtimes
//! and for result versions 0.1.0/0.2.0, which keep only the first address of each family.
//! IPv6 link-local addresses are left out for the same reason (not reachable as an address
//! without a zone). The absence of any sandbox interface is also the contract with chained
//! plugins (see the README / report): `portmap` refuses host-network attachments.

use cni::{CniError, CniResult, Interface, IpConfig};
use ipnet::IpNet;
use netlink::{Link, Netns};
use std::path::Path;

/// The explanation given when CNI_NETNS is not the plugin's own namespace.
pub fn not_shared_message(netns: &Path) -> String {
    format!(
        "host networking means the container shares the host's network namespace, but CNI_NETNS \
        {} is a different namespace: run the container in the host's namespace (e.g. \
        /proc/1/ns/net), or name a \"device\" to hand one host interface to it",
        netns.display()
    )
}

/// Code 7 unless `netns` is the namespace the plugin runs in.
pub fn require_shared(netns: &Path) -> Result<(), CniError> {
    let ctr = netlink::open_container_netns(Some(netns))?;
    let here = Netns::current()?;
    if ctr.same_as(&here) {
        Ok(())
    } else {
        Err(CniError::config(not_shared_message(netns)))
    }
}

fn is_link_local_v6(a: &IpNet) -> bool {
    matches!(a, IpNet::V6(v6) if (v6.addr().segments()[0] & 0xffc0) == 0xfe80)
}

/// The result describing the host: its interfaces (no loopback, no sandbox) and addresses.
pub fn host_result(links: &[Link], addrs: &[(u32, IpNet)]) -> CniResult {
    let mut links: Vec<&Link> = links.iter().filter(|l| l.name != "lo").collect();
    links.sort_by_key(|l| l.index);
    let interfaces = links
        .iter()
        .map(|l| Interface {
            name: l.name.clone(),
            mac: l.mac.as_ref().map(netlink::format_mac),
            mtu: Some(l.mtu),
            ..Default::default()
        })
        .collect();
    let mut ips = Vec::new();
    for (i, l) in links.iter().enumerate() {
        for (_, a) in addrs.iter().filter(|(idx, a)| *idx == l.index && !is_link_local_v6(a)) {
            ips.push(IpConfig { address: *a, gateway: None, interface: Some(i) });
        }
    }
    CniResult { interfaces, ips, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: 1500,
            up: true,
            ..Default::default()
        }
    }

    #[test]
    fn host_result_skips_loopback_and_link_local() {
        let links = vec![link(3, "eth1"), link(1, "lo"), link(2, "eth0")];
        let addrs: Vec<(u32, IpNet)> = vec![
            (1, "127.0.0.1/8".parse().unwrap()),
            (2, "192.0.2.10/24".parse().unwrap()),
            (2, "fe80::1/64".parse().unwrap()),
            (3, "2001:db8::10/64".parse().unwrap()),
        ];
        let r = host_result(&links, &addrs);
        let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert!(r.interfaces.iter().all(|i| i.sandbox.is_none()));
        assert_eq!(r.interfaces[0].mac.as_deref(), Some("02:00:00:00:00:02"));
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].address, "192.0.2.10/24".parse::<IpNet>().unwrap());
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(r.ips[1].interface, Some(1));
    }

    #[test]
    fn the_explanation_names_the_namespace() {
        let m = not_shared_message(Path::new("/var/run/netns/ctr"));
        assert!(
            m.contains("/var/run/netns/ctr") && m.contains("shares the host's network namespace"),
            "{m}"
        );
    }
}
