//! The per-interface settings a tuning plugin changes and restores: MTU, MAC, promiscuous
//! and all-multicast mode, transmit queue length, plus the interface alias (where the suite
//! records who owns a link it created).

use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::Result;
use crate::handle::Handle;
use crate::link::{check_ifname, link_message};

/// What `ip link show` reports about one interface's tunable settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind ("veth", "ifb", ...); None for e.g. loopback.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Hardware address, when it is a 6-byte Ethernet address.
    pub mac: Option<[u8; 6]>,
    /// IFF_PROMISC as requested by user space.
    pub promisc: bool,
    /// IFF_ALLMULTI as requested by user space.
    pub allmulti: bool,
    /// Transmit queue length.
    pub txqlen: u32,
    /// IFLA_IFALIAS, when set.
    pub alias: Option<String>,
}

impl LinkSettings {
    fn from_message(msg: LinkMessage) -> LinkSettings {
        let mut s = LinkSettings {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mtu: 0,
            mac: None,
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            allmulti: msg.header.flags.contains(LinkFlags::Allmulti),
            txqlen: 0,
            alias: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => s.name = name,
                LinkAttribute::Mtu(mtu) => s.mtu = mtu,
                LinkAttribute::Address(bytes) => s.mac = bytes.try_into().ok(),
                LinkAttribute::TxQueueLen(q) => s.txqlen = q,
                LinkAttribute::IfAlias(a) if !a.is_empty() => s.alias = Some(a),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let netlink_packet_route::link::LinkInfo::Kind(kind) = info {
                            s.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }
}

impl Handle {
    /// The tunable settings of the link called `name`; Ok(None) when there is none.
    pub fn link_settings(&mut self, name: &str) -> Result<Option<LinkSettings>> {
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link_settings(msg, &format!("looking up link {name}"))
    }

    /// The tunable settings of link `index`; Ok(None) when there is none.
    pub fn link_settings_by_index(&mut self, index: u32) -> Result<Option<LinkSettings>> {
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link_settings(msg, &format!("looking up link #{index}"))
    }

    /// Every link of the given kind ("ifb", "veth", ...) in this namespace.
    pub fn links_of_kind(&mut self, kind: &str) -> Result<Vec<LinkSettings>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self.sock.dump(RouteNetlinkMessage::GetLink(msg), "listing links")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(m) => Some(LinkSettings::from_message(m)),
                _ => None,
            })
            .filter(|l| l.kind.as_deref() == Some(kind))
            .collect())
    }

    fn get_link_settings(&mut self, msg: LinkMessage, ctx: &str) -> Result<Option<LinkSettings>> {
        match self.sock.get(RouteNetlinkMessage::GetLink(msg), ctx) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(m) => Some(LinkSettings::from_message(m)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Turns all-multicast mode (IFF_ALLMULTI) on or off.
    pub fn set_allmulti(&mut self, index: u32, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        let mut msg = link_message(index);
        msg.header.change_mask = LinkFlags::Allmulti;
        if on {
            msg.header.flags = LinkFlags::Allmulti;
        }
        self.set_link(msg, &format!("setting allmulticast {state} on link #{index}"))
    }
}
