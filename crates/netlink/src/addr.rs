//! IP addresses on links (RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::handle::Handle;

/// The scope `ip addr add` would pick: host for loopback, link for IPv6 link-local, else global.
fn default_scope(addr: IpAddr) -> AddressScope {
    match addr {
        IpAddr::V4(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => AddressScope::Link,
        _ => AddressScope::Universe,
    }
}

/// Builds an address message for `addr` on link `index` (IFA_LOCAL + IFA_ADDRESS for IPv4).
fn address_message(index: u32, addr: IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = addr.prefix_len();
    msg.header.scope = default_scope(addr.addr());
    match addr {
        IpNet::V4(net) => {
            msg.header.family = AddressFamily::Inet;
            msg.attributes.push(AddressAttribute::Local(IpAddr::V4(net.addr())));
            msg.attributes.push(AddressAttribute::Address(IpAddr::V4(net.addr())));
        }
        IpNet::V6(net) => {
            msg.header.family = AddressFamily::Inet6;
            msg.attributes.push(AddressAttribute::Address(IpAddr::V6(net.addr())));
        }
    }
    msg
}

impl Handle {
    /// Lists addresses as (ifindex, address/prefix), for one link or for all links.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        let mut request = AddressMessage::default();
        // One link: let the kernel filter (strict dump), so the cost does not grow with the
        // number of links in the namespace. The loop below still filters, for old kernels.
        let strict = match index {
            Some(i) => {
                request.header.index = i;
                self.sock.set_strict_dump(true)
            }
            None => false,
        };
        let replies = self.sock.dump(RouteNetlinkMessage::GetAddress(request), "listing addresses");
        if strict {
            self.sock.set_strict_dump(false);
        }
        let replies = replies?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if index.is_some_and(|i| i != msg.header.index) {
                continue;
            }
            // IPv4 reports the interface's own address in IFA_LOCAL (IFA_ADDRESS is the
            // peer on point-to-point links); IPv6 only has IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                if let Ok(net) = IpNet::new(ip, msg.header.prefix_len) {
                    out.push((msg.header.index, net));
                }
            }
        }
        Ok(out)
    }

    /// Adds an address (IPv4 with its broadcast address set); EEXIST when already there.
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.add_address_with(index, addr, false)
    }

    /// Adds an address without duplicate address detection (IFA_F_NODAD, for IPv6) so it is usable
    /// at once.
    pub fn add_address_nodad(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.add_address_with(index, addr, true)
    }

    fn add_address_with(&mut self, index: u32, addr: IpNet, nodad: bool) -> Result<()> {
        let mut msg = address_message(index, addr);
        if let IpNet::V4(net) = addr {
            if net.prefix_len() < 31 {
                msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
            }
        }
        if nodad && addr.addr().is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let ctx = format!("adding address {addr} to link #{index}");
        self.sock.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL, &ctx)
    }

    /// Removes an address; a missing one gives is_not_found() (EADDRNOTAVAIL).
    pub fn del_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let msg = address_message(index, addr);
        let ctx = format!("removing address {addr} from link #{index}");
        self.sock.request(RouteNetlinkMessage::DelAddress(msg), 0, &ctx)
    }
}
