//! Putting an IPAM result on a container interface: addresses, link up, then routes. Shared by
//! every plugin that creates an interface (bridge, macvlan, host with `ipam`).

use cni::{CniError, IpConfig, Route};
use netlink::Handle;
use std::net::IpAddr;

/// How to apply the result.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run IPv6 duplicate address detection (otherwise addresses are usable at once).
    pub dad: bool,
    /// Bring the link up and add routes (routes need the link up).
    pub up: bool,
}

/// The gateway a route uses: its own, else the gateway of the first address of its family
/// (a route in an IPAM config without `gw` goes via the network's gateway, like the reference).
pub fn route_gateway(route: &Route, ips: &[IpConfig]) -> Option<IpAddr> {
    let v4 = route.dst.addr().is_ipv4();
    route
        .gw
        .or_else(|| ips.iter().find(|i| i.address.addr().is_ipv4() == v4).and_then(|i| i.gateway))
}

/// Adds `ips` to link `index` in the handle's namespace, brings it up and adds `routes`.
/// Routes that already exist are not an error.
pub fn configure(
    ctr: &mut Handle,
    index: u32,
    ips: &[IpConfig],
    routes: &[Route],
    opts: Options,
) -> Result<(), CniError> {
    for ip in ips {
        let r = if ip.address.addr().is_ipv6() && !opts.dad {
            ctr.add_address_nodad(index, ip.address)
        } else {
            ctr.add_address(index, ip.address)
        };
        r?;
    }
    if !opts.up {
        return Ok(());
    }
    ctr.set_up(index)?;
    for r in routes {
        let route = netlink::Route {
            dst: r.dst,
            gateway: route_gateway(r, ips),
            oif: Some(index),
            metric: r.priority,
            table: r.table,
            scope: r.scope,
            mtu: r.mtu,
            advmss: r.advmss,
        };
        match ctr.add_route(&route) {
            Err(e) if !e.is_exists() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_without_gateway_use_their_familys_gateway() {
        let ips = vec![
            IpConfig {
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: Some("10.0.0.1".parse().unwrap()),
                interface: None,
            },
            IpConfig {
                address: "fd00::5/64".parse().unwrap(),
                gateway: Some("fd00::1".parse().unwrap()),
                interface: None,
            },
        ];
        let v6 = Route::new("::/0".parse().unwrap(), None);
        assert_eq!(route_gateway(&v6, &ips), Some("fd00::1".parse().unwrap()));
        let own = Route::new("0.0.0.0/0".parse().unwrap(), Some("10.0.0.254".parse().unwrap()));
        assert_eq!(route_gateway(&own, &ips), Some("10.0.0.254".parse().unwrap()));
    }
}
