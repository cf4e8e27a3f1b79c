//! Routes (RTM_NEWROUTE / RTM_DELROUTE / RTM_GETROUTE).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::Handle;

/// The main routing table (RT_TABLE_MAIN).
pub const TABLE_MAIN: u32 = 254;
/// RT_SCOPE_UNIVERSE: route via a gateway / global.
pub const SCOPE_UNIVERSE: u8 = 0;
/// RT_SCOPE_LINK: destination directly on the link.
pub const SCOPE_LINK: u8 = 253;
/// RT_SCOPE_HOST: local address.
pub const SCOPE_HOST: u8 = 254;

/// A unicast route. `None` fields are left to the kernel when adding and act as
/// wildcards when deleting; `table: None` means the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (0.0.0.0/0 or ::/0 for a default route).
    pub dst: IpNet,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index.
    pub oif: Option<u32>,
    /// Priority / metric.
    pub metric: Option<u32>,
    /// Routing table id; None = main (254).
    pub table: Option<u32>,
    /// Scope (RT_SCOPE_*); when adding, None picks link without gateway, universe with one.
    pub scope: Option<u8>,
    /// Path MTU metric (RTAX_MTU).
    pub mtu: Option<u32>,
    /// Advertised MSS metric (RTAX_ADVMSS).
    pub advmss: Option<u32>,
}

impl Route {
    /// A route to `dst` with every other field unset.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            metric: None,
            table: None,
            scope: None,
            mtu: None,
            advmss: None,
        }
    }

    /// A default route (0.0.0.0/0 or ::/0, following the gateway's family) via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Route {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        Route { gateway: Some(gateway), ..Route::new(dst.expect("prefix 0 is valid")) }
    }

    /// True for 0.0.0.0/0 and ::/0.
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    fn from_message(msg: RouteMessage) -> Option<Route> {
        let h = &msg.header;
        let mut dst_addr = match h.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        let mut route = Route::new(IpNet::new(dst_addr, 0).ok()?);
        let mut table = u32::from(h.table);
        route.scope = Some(u8::from(h.scope));
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst_addr = route_ip(a)?,
                RouteAttribute::Gateway(a) => route.gateway = route_ip(a),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Priority(p) => route.metric = Some(*p),
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        match m {
                            RouteMetric::Mtu(v) => route.mtu = Some(*v),
                            RouteMetric::Advmss(v) => route.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        route.dst = IpNet::new(dst_addr, h.destination_prefix_length).ok()?;
        route.table = (table != TABLE_MAIN).then_some(table);
        Some(route)
    }

    /// The common part of add and delete requests.
    fn to_message(&self) -> Result<RouteMessage> {
        if let Some(gw) = self.gateway {
            if gw.is_ipv4() != self.dst.addr().is_ipv4() {
                return Err(Error::from_errno(
                    format!("route to {}: gateway {gw} is not of the same IP family", self.dst),
                    libc::EINVAL,
                ));
            }
        }
        let mut msg = RouteMessage::default();
        let table = self.table.unwrap_or(TABLE_MAIN);
        msg.header.address_family =
            if self.dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = self.dst.prefix_len();
        msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.attributes.push(RouteAttribute::Table(table));
        if self.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(self.dst.network())));
        }
        if let Some(gw) = self.gateway {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        Ok(msg)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if let Some(table) = self.table {
            write!(f, " table {table}")?;
        }
        Ok(())
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

impl Handle {
    /// Lists the unicast routes of the main table for IPv4 (`v6 = false`) or IPv6.
    pub fn routes(&mut self, v6: bool) -> Result<Vec<Route>> {
        self.routes_in_table(v6, TABLE_MAIN)
    }

    /// Lists the unicast routes of one routing table.
    pub fn routes_in_table(&mut self, v6: bool, table: u32) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let replies = self.sock.dump(RouteNetlinkMessage::GetRoute(req), "listing routes")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(m) if m.header.kind == RouteType::Unicast => {
                    Route::from_message(m)
                }
                _ => None,
            })
            .filter(|r| r.table.unwrap_or(TABLE_MAIN) == table)
            .collect())
    }

    /// Adds a unicast route; EEXIST when an identical one is there.
    pub fn add_route(&mut self, route: &Route) -> Result<()> {
        let ctx = format!("adding route {route}");
        let mut msg = route.to_message().map_err(|e| e.with_context(ctx.clone()))?;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = RouteScope::from(route.scope.unwrap_or(if route.gateway.is_some() {
            SCOPE_UNIVERSE
        } else {
            SCOPE_LINK
        }));
        let mut metrics = Vec::new();
        if let Some(mtu) = route.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = route.advmss {
            metrics.push(RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        self.sock.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL, &ctx)
    }

    /// Deletes the first route matching the set fields; none gives is_not_found() (ESRCH).
    pub fn del_route(&mut self, route: &Route) -> Result<()> {
        let ctx = format!("deleting route {route}");
        let mut msg = route.to_message().map_err(|e| e.with_context(ctx.clone()))?;
        // RT_SCOPE_NOWHERE is the wildcard scope for deletion.
        msg.header.scope = route.scope.map(RouteScope::from).unwrap_or(RouteScope::NoWhere);
        self.sock.request(RouteNetlinkMessage::DelRoute(msg), 0, &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_follows_gateway_family() {
        let r = Route::default_via("10.0.0.1".parse().unwrap());
        assert_eq!(r.dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert!(r.is_default());
        let r = Route::default_via("fd00::1".parse().unwrap());
        assert_eq!(r.dst, "::/0".parse::<IpNet>().unwrap());
    }

    #[test]
    fn mixed_family_gateway_is_rejected() {
        let mut r = Route::new("10.1.0.0/16".parse().unwrap());
        r.gateway = Some("fd00::1".parse().unwrap());
        let err = r.to_message().unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
    }

    #[test]
    fn route_display() {
        let mut r = Route::default_via("10.0.0.1".parse().unwrap());
        r.oif = Some(3);
        r.metric = Some(100);
        assert_eq!(r.to_string(), "0.0.0.0/0 via 10.0.0.1 dev #3 metric 100");
    }
}
