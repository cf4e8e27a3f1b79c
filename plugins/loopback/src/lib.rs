//! Loopback only: the reference `loopback` plugin, which `none` (Docker's `--network none`)
//! shares. ADD brings `lo` up in the container namespace and reports it (MAC
//! 00:00:00:00:00:00, its first IPv4 and first IPv6 address), or passes a prevResult through
//! unchanged; CHECK verifies `lo` is up; DEL sets it down again, and succeeds without a
//! namespace (CNI_NETNS empty, as containerd sends at RemovePodSandbox) or when the namespace
//! is gone. CNI_IFNAME is ignored: this only ever configures `lo`.
//!
//! The flow: `config` is the protocol's own (nothing of the plugin's), the kernel snapshot is
//! `lo` and its addresses, the plan ([`result`]) is computed from them without root, `apply`
//! is one link-up, and nothing is recorded (nothing outlives the namespace).

use cni::{code, CniError, CniResult, Interface, IpConfig, Plugin, Request};
use ipnet::IpNet;
use netlink::Handle;

/// The one interface this plugin configures.
const LO: &str = "lo";

/// The plugin (both `loopback` and `none`).
pub struct Loopback;

/// The result for `lo` with `addrs` in the namespace at `netns`: its first IPv4 and first
/// IPv6 address. An address on `lo` that is not a loopback address means this is not the
/// loopback interface we know: refused, like the reference.
pub fn result(netns: &str, addrs: &[IpNet]) -> Result<CniResult, CniError> {
    if let Some(odd) = addrs.iter().find(|a| !a.addr().is_loopback()) {
        return Err(CniError::new(
            code::KERNEL,
            format!("loopback interface lo has a non-loopback address {odd}"),
        ));
    }
    let first = |v4: bool| addrs.iter().find(|a| a.addr().is_ipv4() == v4);
    let ips = [first(true), first(false)]
        .into_iter()
        .flatten()
        .map(|a| IpConfig { address: *a, gateway: None, interface: Some(0) })
        .collect();
    Ok(CniResult {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: Some("00:00:00:00:00:00".into()),
            sandbox: Some(netns.to_string()),
            ..Default::default()
        }],
        ips,
        ..Default::default()
    })
}

fn lo(handle: &mut Handle) -> Result<netlink::Link, CniError> {
    handle.link_by_name(LO)?.ok_or_else(|| {
        CniError::new(code::KERNEL, "no loopback interface lo in the container namespace")
    })
}

impl Plugin for Loopback {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let mut handle = Handle::new_in(&ns)?;
        let link = lo(&mut handle)?;
        if !link.up {
            handle.set_up(link.index)?;
        }
        // Read after `up`: the kernel adds ::1 only when IPv6 is enabled, and only then.
        let addrs: Vec<IpNet> =
            handle.addresses(Some(link.index))?.into_iter().map(|(_, a)| a).collect();
        let mut mine = result(&req.netns()?.display().to_string(), &addrs)?;
        mine.dns = req.conf.dns.clone().unwrap_or_default();
        // Chained after another plugin: its result passes through unchanged.
        Ok(req.prev.clone().unwrap_or(mine))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        // No namespace (containerd's second DEL), or one already gone: nothing to undo.
        let Some(path) = req.env.netns.as_deref() else { return Ok(()) };
        let Ok(ns) = netlink::Netns::open(path) else { return Ok(()) };
        let mut handle = Handle::new_in(&ns)?;
        if let Some(link) = handle.link_by_name(LO)? {
            if link.up {
                handle.set_down(link.index)?;
            }
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let ns = netlink::open_container_netns(req.env.netns.as_deref())?;
        let mut handle = Handle::new_in(&ns)?;
        if !lo(&mut handle)?.up {
            return Err(CniError::new(code::KERNEL, "loopback interface lo is down"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_result_names_lo_and_its_first_address_of_each_family() {
        let r = result("/run/netns/x", &nets(&["127.0.0.1/8", "127.0.0.2/8", "::1/128"])).unwrap();
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].name, "lo");
        assert_eq!(r.interfaces[0].mac.as_deref(), Some("00:00:00:00:00:00"));
        assert_eq!(r.interfaces[0].sandbox.as_deref(), Some("/run/netns/x"));
        let ips: Vec<String> = r.ips.iter().map(|i| i.address.to_string()).collect();
        assert_eq!(ips, ["127.0.0.1/8", "::1/128"]);
        assert!(r.ips.iter().all(|i| i.interface == Some(0) && i.gateway.is_none()));
        // IPv6 disabled: IPv4 only.
        let r = result("/run/netns/x", &nets(&["127.0.0.1/8"])).unwrap();
        assert_eq!(r.ips.len(), 1);
    }

    #[test]
    fn a_non_loopback_address_on_lo_is_refused() {
        let e = result("/run/netns/x", &nets(&["127.0.0.1/8", "10.0.0.1/8"])).unwrap_err();
        assert_eq!(e.code, 112);
        assert!(e.msg.contains("10.0.0.1/8"), "{}", e.msg);
    }
}
