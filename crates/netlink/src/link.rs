//! Links: listing, creating (bridge, veth, macvlan, vlan), changing and deleting.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoData, InfoKind, InfoMacVlan,
    InfoVeth, InfoVlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::mac::format_mac;
use crate::netns::Netns;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// A network interface as reported by RTM_GETLINK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Interface index in its namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind from IFLA_INFO_KIND ("veth", "bridge", "macvlan", ...); None for e.g. loopback.
    pub kind: Option<String>,
    /// Hardware address, when it is a 6-byte Ethernet address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Ifindex of the master (bridge) this link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// IFLA_LINK: veth peer / macvlan parent ifindex (in the namespace named by `link_netnsid`, if
    /// set).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: set when the peer/parent lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// Macvlan mode, for macvlan links.
    pub macvlan_mode: Option<MacvlanMode>,
    /// Promiscuous mode requested by user space (IFF_PROMISC; not bridge-port promiscuity).
    pub promisc: bool,
    /// All-multicast mode requested by user space (IFF_ALLMULTI).
    pub allmulti: bool,
    /// Transmit queue length.
    pub txqlen: u32,
    /// IFLA_IFALIAS, the free-text alias (`ip link set X alias Y`); the suite stores the
    /// owner tag of the links it creates there.
    pub alias: Option<String>,
}

/// Macvlan modes (IFLA_MACVLAN_MODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacvlanMode {
    /// No traffic between macvlans on the same parent.
    Private,
    /// Traffic between macvlans goes out to the adjacent switch.
    Vepa,
    /// Macvlans on the same parent talk directly (the usual mode).
    Bridge,
    /// A single macvlan takes over the parent.
    Passthru,
    /// Only frames from listed source MACs are accepted.
    Source,
}

impl MacvlanMode {
    /// Parses the names used by `ip link` and CNI configs ("bridge", "private", "vepa", "passthru",
    /// "source").
    pub fn parse(s: &str) -> Option<MacvlanMode> {
        Some(match s {
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "bridge" => MacvlanMode::Bridge,
            "passthru" => MacvlanMode::Passthru,
            "source" => MacvlanMode::Source,
            _ => return None,
        })
    }

    /// The mode's name as `ip link` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        }
    }

    fn to_packet(self) -> netlink_packet_route::link::MacVlanMode {
        use netlink_packet_route::link::MacVlanMode as M;
        match self {
            MacvlanMode::Private => M::Private,
            MacvlanMode::Vepa => M::Vepa,
            MacvlanMode::Bridge => M::Bridge,
            MacvlanMode::Passthru => M::Passthrough,
            MacvlanMode::Source => M::Source,
        }
    }

    fn from_packet(mode: netlink_packet_route::link::MacVlanMode) -> Option<MacvlanMode> {
        use netlink_packet_route::link::MacVlanMode as M;
        Some(match mode {
            M::Private => MacvlanMode::Private,
            M::Vepa => MacvlanMode::Vepa,
            M::Bridge => MacvlanMode::Bridge,
            M::Passthrough => MacvlanMode::Passthru,
            M::Source => MacvlanMode::Source,
            _ => return None,
        })
    }
}

impl std::fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks an interface name before sending it, so a bad name gets a clear message.
pub fn check_ifname(name: &str) -> Result<()> {
    match cni::names::ifname_problem(name) {
        Some(why) => {
            Err(Error::from_errno(format!("invalid interface name {name:?} ({why})"), libc::EINVAL))
        }
        None => Ok(()),
    }
}

/// Refuses an alias the kernel would truncate (IFALIASZ - 1 = 255 bytes).
pub(crate) fn check_alias(alias: &str, ctx: &str) -> Result<()> {
    if alias.len() > 255 {
        return Err(Error::from_errno(format!("{ctx}: alias longer than 255 bytes"), libc::EINVAL));
    }
    Ok(())
}

/// Settings of an existing link changed together in one RTM_SETLINK ([`Handle::update_link`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkUpdate<'a> {
    /// IFLA_IFALIAS (at most 255 bytes); None leaves it.
    pub alias: Option<&'a str>,
    /// Set IFF_UP; false leaves the flag as it is.
    pub up: bool,
    /// IFLA_INET6_ADDR_GEN_MODE none: the link gets no IPv6 link-local address, so no
    /// duplicate address detection, solicited-node group or router solicitations for it
    /// either. The kernel takes this only for an existing link (RTM_NEWLINK refuses
    /// IFLA_AF_SPEC with EAFNOSUPPORT), and only where it has IPv6 (EAFNOSUPPORT with
    /// `ipv6.disable=1`; ask [`crate::ipv6_enabled`] first).
    pub no_ipv6_link_local: bool,
}

impl Link {
    fn from_message(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            link: None,
            link_netnsid: None,
            macvlan_mode: None,
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            allmulti: msg.header.flags.contains(LinkFlags::Allmulti),
            txqlen: 0,
            alias: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::TxQueueLen(q) => link.txqlen = q,
                LinkAttribute::Address(bytes) => link.mac = bytes.try_into().ok(),
                LinkAttribute::Controller(master) if master != 0 => link.master = Some(master),
                LinkAttribute::Link(index) if index != 0 => link.link = Some(index),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => link.alias = Some(alias),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                            LinkInfo::Data(InfoData::MacVlan(data)) => {
                                for item in data {
                                    if let InfoMacVlan::Mode(mode) = item {
                                        link.macvlan_mode = MacvlanMode::from_packet(mode);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A link message addressed to an existing interface.
pub(crate) fn link_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

impl Handle {
    /// Lists every link in this handle's namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self.sock.dump(RouteNetlinkMessage::GetLink(msg), "listing links")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
                _ => None,
            })
            .collect())
    }

    /// Every link of the given kind ("ifb", "veth", ...) in this handle's namespace.
    pub fn links_of_kind(&mut self, kind: &str) -> Result<Vec<Link>> {
        Ok(self.links()?.into_iter().filter(|l| l.kind.as_deref() == Some(kind)).collect())
    }

    /// Looks a link up by name; Ok(None) when there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(msg, &format!("looking up link {name}"))
    }

    /// Looks a link up by ifindex; Ok(None) when there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(msg, &format!("looking up link #{index}"))
    }

    /// Like `link_by_name`, but a missing link is an ENODEV error.
    pub fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| Error::from_errno(format!("looking up link {name}"), libc::ENODEV))
    }

    fn get_link(&mut self, msg: LinkMessage, ctx: &str) -> Result<Option<Link>> {
        match self.sock.get(RouteNetlinkMessage::GetLink(msg), ctx) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a link with RTM_NEWLINK and NLM_F_CREATE | NLM_F_EXCL.
    fn new_link(&mut self, msg: LinkMessage, ctx: &str) -> Result<()> {
        self.sock.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, ctx)
    }

    /// Changes an existing link with RTM_SETLINK.
    pub(crate) fn set_link(&mut self, msg: LinkMessage, ctx: &str) -> Result<()> {
        self.sock.request(RouteNetlinkMessage::SetLink(msg), 0, ctx)
    }

    /// Creates a Linux bridge, optionally with an MTU and VLAN filtering; EEXIST surfaces as
    /// is_exists().
    pub fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<Link> {
        self.create_bridge_with_mac(name, mtu, vlan_filtering, None)
    }

    /// `create_bridge` with the bridge's own MAC given at creation. A bridge whose MAC was set
    /// keeps it (the kernel marks it NET_ADDR_SET); one left to the kernel takes the lowest
    /// MAC of its ports, recomputed over every port on each port added or removed, and
    /// changes whenever the port with the lowest MAC comes or goes.
    pub fn create_bridge_with_mac(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
        mac: Option<[u8; 6]>,
    ) -> Result<Link> {
        let ctx = format!("creating bridge {name}");
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        if vlan_filtering {
            info.push(LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.new_link(msg, &ctx)?;
        self.created_link(name, &ctx)
    }

    /// Creates a veth pair: `name` in this handle's namespace, `peer_name` created directly
    /// inside `peer_ns` (IFLA_NET_NS_FD on the peer) with its final name, mtu on both ends,
    /// optional peer MAC. Returns the host-side Link.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: Option<&Netns>,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<Link> {
        self.create_veth_port(name, peer_name, peer_ns, mtu, peer_mac, None)
    }

    /// `create_veth` with the host end enslaved to `master` (a bridge's ifindex) in the same
    /// RTM_NEWLINK (IFLA_MASTER): the kernel adds the port before it acknowledges, and
    /// unregisters the pair again if that fails, so no half-made pair is left behind.
    pub fn create_veth_port(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: Option<&Netns>,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
        master: Option<u32>,
    ) -> Result<Link> {
        let ctx = match master {
            Some(m) => format!("creating veth {name} (peer {peer_name}) on master #{m}"),
            None => format!("creating veth {name} (peer {peer_name})"),
        };
        check_ifname(name)?;
        check_ifname(peer_name)?;
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(peer_name.to_string()));
        if let Some(mtu) = mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(ns) = peer_ns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.new_link(msg, &ctx)?;
        self.created_link(name, &ctx)
    }

    /// Creates a macvlan on `parent` (ifindex in this namespace), placed directly in `target_ns`
    /// with final name.
    pub fn create_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: MacvlanMode,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        target_ns: Option<&Netns>,
    ) -> Result<()> {
        self.create_macvlan_with_queue(name, parent, mode, mtu, mac, target_ns, None)
    }

    /// `create_macvlan` plus the broadcast/multicast queue length the macvlan requests
    /// (IFLA_MACVLAN_BC_QUEUE_LEN, Linux 5.11+; None keeps the kernel default of 1000).
    #[allow(clippy::too_many_arguments)]
    pub fn create_macvlan_with_queue(
        &mut self,
        name: &str,
        parent: u32,
        mode: MacvlanMode,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        target_ns: Option<&Netns>,
        bc_queue_len: Option<u32>,
    ) -> Result<()> {
        let ctx = format!("creating macvlan {name} on link #{parent}");
        check_ifname(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(ns) = target_ns {
            msg.attributes.push(LinkAttribute::NetNsFd(ns.fd()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan({
                let mut data = vec![InfoMacVlan::Mode(mode.to_packet())];
                if let Some(q) = bc_queue_len {
                    data.push(InfoMacVlan::BcQueueLen(q));
                }
                data
            })),
        ]));
        self.new_link(msg, &ctx)
    }

    /// Creates an 802.1q VLAN link on `parent`; a kernel without 8021q gives an EOPNOTSUPP error.
    pub fn create_vlan(&mut self, name: &str, parent: u32, vlan_id: u16) -> Result<()> {
        let ctx = format!("creating vlan {name} (id {vlan_id}) on link #{parent}");
        check_ifname(name)?;
        if vlan_id == 0 || vlan_id > 4094 {
            return Err(Error::from_errno(format!("{ctx}: vlan id must be 1-4094"), libc::EINVAL));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vlan_id)])),
        ]));
        self.new_link(msg, &ctx)
    }

    /// Reads back a link just created (the kernel does not return it with the ACK).
    pub(crate) fn created_link(&mut self, name: &str, ctx: &str) -> Result<Link> {
        self.link_by_name(name)?.ok_or_else(|| {
            Error::from_errno(format!("{ctx}: link vanished after creation"), libc::ENODEV)
        })
    }

    /// Deletes a link (and, for a veth, its peer); a missing link gives is_not_found().
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let ctx = format!("deleting link #{index}");
        self.sock.request(RouteNetlinkMessage::DelLink(link_message(index)), 0, &ctx)
    }

    /// Sets IFF_UP.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_flag(index, LinkFlags::Up, true, format!("setting link #{index} up"))
    }

    /// Clears IFF_UP.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_flag(index, LinkFlags::Up, false, format!("setting link #{index} down"))
    }

    /// Turns user-requested promiscuous mode (IFF_PROMISC) on or off.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        self.set_flag(
            index,
            LinkFlags::Promisc,
            on,
            format!("setting promisc {state} on link #{index}"),
        )
    }

    /// Turns all-multicast mode (IFF_ALLMULTI) on or off.
    pub fn set_allmulti(&mut self, index: u32, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        self.set_flag(
            index,
            LinkFlags::Allmulti,
            on,
            format!("setting allmulticast {state} on link #{index}"),
        )
    }

    /// Changes one IFF_* flag through the header's change mask.
    fn set_flag(&mut self, index: u32, flag: LinkFlags, on: bool, ctx: String) -> Result<()> {
        let mut msg = link_message(index);
        msg.header.change_mask = flag;
        if on {
            msg.header.flags = flag;
        }
        self.set_link(msg, &ctx)
    }

    /// Enslaves the link to a bridge (`Some(master)`) or releases it (`None`).
    pub fn set_master(&mut self, index: u32, master: Option<u32>) -> Result<()> {
        let ctx = match master {
            Some(m) => format!("attaching link #{index} to master #{m}"),
            None => format!("detaching link #{index} from its master"),
        };
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::Controller(master.unwrap_or(0)));
        self.set_link(msg, &ctx)
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(msg, &format!("setting mtu {mtu} on link #{index}"))
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(msg, &format!("setting mac {} on link #{index}", format_mac(&mac)))
    }

    /// Renames the link (the kernel refuses with EBUSY while it is up).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        check_ifname(name)?;
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(msg, &format!("renaming link #{index} to {name}"))
    }

    /// Moves the link into another namespace (it keeps its name there; its index may change).
    pub fn set_netns(&mut self, index: u32, ns: &Netns) -> Result<()> {
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::NetNsFd(ns.fd()));
        self.set_link(msg, &format!("moving link #{index} to {}", ns.path().display()))
    }

    /// Sets the alias (IFLA_IFALIAS, at most 255 bytes; an empty one removes it). The kernel
    /// ignores an alias in RTM_NEWLINK, so it is set on the link once it exists.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        check_alias(alias, &format!("setting alias on link #{index}"))?;
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(msg, &format!("setting alias {alias:?} on link #{index}"))
    }

    /// Changes the settings in `update` with one RTM_SETLINK (nothing to change: no request).
    /// An alias or the IPv6 setting sends a change notification (NETDEV_CHANGE); on a link
    /// that is up without carrier IPv6 answers it by walking the whole IPv6 routing table
    /// twice, so set them while the link is down where the routing table may be large.
    pub fn update_link(&mut self, index: u32, update: &LinkUpdate<'_>) -> Result<()> {
        let ctx = format!("updating link #{index} ({update:?})");
        if let Some(alias) = update.alias {
            check_alias(alias, &ctx)?;
        }
        if update.alias.is_none() && !update.up && !update.no_ipv6_link_local {
            return Ok(());
        }
        let mut msg = link_message(index);
        if let Some(alias) = update.alias {
            msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        }
        if update.up {
            msg.header.change_mask = LinkFlags::Up;
            msg.header.flags = LinkFlags::Up;
        }
        if update.no_ipv6_link_local {
            msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
                AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
            ])]));
        }
        self.set_link(msg, &ctx)
    }

    /// Sets the transmit queue length.
    pub fn set_txqueuelen(&mut self, index: u32, qlen: u32) -> Result<()> {
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::TxQueueLen(qlen));
        self.set_link(msg, &format!("setting txqueuelen {qlen} on link #{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        assert!(check_ifname("a234567890123456").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }

    #[test]
    fn macvlan_mode_names_round_trip() {
        for mode in [
            MacvlanMode::Private,
            MacvlanMode::Vepa,
            MacvlanMode::Bridge,
            MacvlanMode::Passthru,
            MacvlanMode::Source,
        ] {
            assert_eq!(MacvlanMode::parse(mode.as_str()), Some(mode));
            assert_eq!(MacvlanMode::from_packet(mode.to_packet()), Some(mode));
        }
        assert_eq!(MacvlanMode::parse("bogus"), None);
    }
}
