//! `none`: Docker's `--network none`. The container gets loopback only.
//!
//! ADD brings `lo` up in the container namespace and reports it; CHECK verifies it; DEL sets it
//! down again and succeeds when the namespace is already gone.

use cni::{code, CniError, CniResult, Interface, IpConfig, Plugin, Request};
use netlink::{Handle, Netns};

struct NonePlugin;

fn kernel(e: netlink::Error) -> CniError {
    CniError::new(code::KERNEL, e.to_string())
}

/// Opens the container's namespace; a missing one is "container unknown" (code 3).
fn open_netns(req: &Request) -> Result<Netns, CniError> {
    let path = req.netns()?;
    Netns::open(path)
        .map_err(|e| CniError::unknown_container(format!("CNI_NETNS {}: {e}", path.display())))
}

/// The loopback link, its addresses, and whether it is up.
fn loopback_state(handle: &mut Handle) -> Result<(netlink::Link, Vec<ipnet::IpNet>), CniError> {
    let lo = handle.link_by_name("lo").map_err(kernel)?.ok_or_else(|| {
        CniError::new(code::KERNEL, "no loopback interface in the container namespace")
    })?;
    let addrs =
        handle.addresses(Some(lo.index)).map_err(kernel)?.into_iter().map(|(_, a)| a).collect();
    Ok((lo, addrs))
}

impl Plugin for NonePlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let ns = open_netns(req)?;
        let mut handle = Handle::new_in(&ns).map_err(kernel)?;
        let (lo, _) = loopback_state(&mut handle)?;
        handle.set_up(lo.index).map_err(kernel)?;
        // Addresses are read back after `up`: the kernel adds ::1 only when IPv6 is enabled.
        let (_, addrs) = loopback_state(&mut handle)?;
        if let Some(prev) = &req.prev {
            // Chained after another plugin: pass its result through unchanged.
            return Ok(prev.clone());
        }
        let sandbox = Some(ns.path().display().to_string());
        let mut result = CniResult {
            interfaces: vec![Interface { name: "lo".into(), sandbox, ..Default::default() }],
            dns: req.conf.dns.clone().unwrap_or_default(),
            ..Default::default()
        };
        for addr in addrs {
            result.ips.push(IpConfig { address: addr, gateway: None, interface: Some(0) });
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        // The namespace may be gone already (container removed first): nothing left to undo.
        let Some(path) = req.env.netns.as_deref() else { return Ok(()) };
        let Ok(ns) = Netns::open(path) else { return Ok(()) };
        let mut handle = Handle::new_in(&ns).map_err(kernel)?;
        if let Some(lo) = handle.link_by_name("lo").map_err(kernel)? {
            handle.set_down(lo.index).map_err(kernel)?;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let ns = open_netns(req)?;
        let mut handle = Handle::new_in(&ns).map_err(kernel)?;
        let (lo, addrs) = loopback_state(&mut handle)?;
        if !lo.up {
            return Err(CniError::new(code::KERNEL, "loopback interface lo is down"));
        }
        let want: ipnet::IpNet = "127.0.0.1/8".parse().expect("literal");
        if !addrs.contains(&want) {
            return Err(CniError::new(code::KERNEL, "loopback interface lo has no 127.0.0.1/8"));
        }
        Ok(())
    }
}

fn main() {
    cni::run(&NonePlugin)
}
