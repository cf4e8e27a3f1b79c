//! Synchronous rtnetlink for the CNI plugins: links, addresses, routes, bridge
//! ports and VLANs, traffic control (tbf and ingress qdiscs, redirect filters, ifb links),
//! plus network namespace handling and per-namespace sysctls.
//!
//! Built on `netlink-packet-route` and `netlink-sys` without an async runtime:
//! each request is sent on a blocking socket and its ACK (or dump) is read back
//! before returning. Kernel refusals become [`Error`]s carrying the errno.
//!
//! Namespaces: `setns` only moves the calling thread, and a netlink socket stays
//! in the namespace it was opened in. So open a [`Handle`] with
//! [`Handle::new_in`] for a container namespace and use it from anywhere; use
//! [`NetnsGuard`] / [`with_netns`] for things that go by the thread's namespace
//! (sysctls, opening sockets).

mod addr;
mod bridge;
mod detach;
mod error;
mod handle;
mod link;
mod mac;
mod netns;
mod route;
mod socket;
mod sysctl;
mod tc;

pub use bridge::{BridgePort, BridgeVlan};
pub use detach::delete_link_detached;
pub use error::{Error, Result};
pub use handle::Handle;
pub use link::{check_ifname, Link, LinkUpdate, MacvlanMode, MAX_IFNAME_LEN};
pub use mac::{format_mac, parse_mac, random_mac};
pub use netns::{open_container_netns, with_netns, Netns, NetnsGuard};
pub use route::{Route, SCOPE_HOST, SCOPE_LINK, SCOPE_UNIVERSE, TABLE_MAIN};
pub use sysctl::{ipv6_enabled, sysctl_get, sysctl_set};
pub use tc::{Psched, Qdisc, Tbf, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
