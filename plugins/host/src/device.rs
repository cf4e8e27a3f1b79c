//! Device mode: hand a host interface to the container and give it back.
//!
//! Moving a link to another namespace takes it down and flushes its addresses and routes,
//! so they are read first (into the record), and put back on whichever side the device ends
//! up. Between namespaces the device carries a transit name of ours, so neither CNI_IFNAME
//! nor the original name can clash on the other side.
//!
//! When the container namespace dies with the device still in it, the kernel returns
//! physical devices to the INITIAL namespace (under the same name, or `dev<N>` when that is
//! taken), and destroys virtual ones such as veths. DEL therefore also looks in its own
//! namespace for a link with the recorded MAC named CNI_IFNAME or `dev<N>`: that finds a
//! returned physical device when the plugin runs in the initial namespace (production). A
//! plugin running in another namespace (the tests' private "host") cannot see such a device;
//! DEL then only forgets it.

use crate::config::{pci_device_dir, single_interface, Selector};
use crate::state::{DeviceRecord, SavedRoute};
use cni::{code, CniError, CniResult, Interface, IpConfig, Request, Route};
use ipnet::IpNet;
use netlink::{Handle, Link, Netns};
use std::path::Path;

/// Addresses worth carrying along: all but IPv6 link-local ones (the kernel makes those).
fn carried_address(a: &IpNet) -> bool {
    !matches!(a, IpNet::V6(v6) if (v6.addr().segments()[0] & 0xffc0) == 0xfe80)
}

/// Routes worth carrying along: the device's unicast routes, except IPv6 link-local ones.
fn carried_route(r: &netlink::Route) -> bool {
    carried_address(&r.dst)
}

fn not_found(sel: &Selector, why: &str) -> CniError {
    let (key, value) = match sel {
        Selector::Name(n) => ("device", n.clone()),
        Selector::Mac(m) => ("hwaddr", netlink::format_mac(m)),
        Selector::KernelPath(p) => ("kernelpath", p.display().to_string()),
        Selector::Pci(id) => ("pciBusID", id.clone()),
    };
    CniError::bad_value(key, format!("{value:?}"), why)
}

/// The host link the selector names. `sys` is where sysfs is mounted (/sys).
pub fn resolve(sel: &Selector, host: &mut Handle, sys: &Path) -> Result<Link, CniError> {
    let by_name = |host: &mut Handle, name: &str| -> Result<Link, CniError> {
        host.link_by_name(name)?.ok_or_else(|| {
            not_found(sel, &format!("interface {name} is not in the host namespace"))
        })
    };
    let link = match sel {
        Selector::Name(n) => by_name(host, n)?,
        Selector::Mac(m) => {
            let matches: Vec<Link> =
                host.links()?.into_iter().filter(|l| l.mac.as_ref() == Some(m)).collect();
            match matches.len() {
                0 => {
                    return Err(not_found(
                        sel,
                        "no interface in the host namespace has this MAC address",
                    ))
                }
                1 => matches.into_iter().next().expect("one"),
                _ => {
                    let names: Vec<&str> = matches.iter().map(|l| l.name.as_str()).collect();
                    return Err(not_found(
                        sel,
                        &format!(
                            "several interfaces have this MAC address ({}): name one with \
                            \"device\"",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        Selector::KernelPath(p) => {
            by_name(host, &single_interface(p, &format!("kernelpath {}", p.display()))?)?
        }
        Selector::Pci(id) => by_name(
            host,
            &single_interface(&pci_device_dir(sys, id), &format!("PCI device {id}"))?,
        )?,
    };
    if link.name == "lo" {
        return Err(not_found(sel, "the loopback interface cannot be handed to a container"));
    }
    Ok(link)
}

/// The record of `dev` as it is in the host now (before anything moves).
pub fn snapshot(
    req: &Request,
    host: &mut Handle,
    dev: &Link,
    transit: String,
) -> Result<DeviceRecord, CniError> {
    let addresses: Vec<IpNet> = host
        .addresses(Some(dev.index))?
        .into_iter()
        .map(|(_, a)| a)
        .filter(carried_address)
        .collect();
    let mut routes = Vec::new();
    for v6 in [false, true] {
        for r in host.routes(v6)? {
            if r.oif == Some(dev.index) && carried_route(&r) {
                routes.push(SavedRoute::from_route(&r));
            }
        }
    }
    let master = match dev.master {
        Some(m) => host.link_by_index(m)?.map(|l| l.name),
        None => None,
    };
    Ok(DeviceRecord {
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        netns: req.env.netns.as_ref().map(|p| p.display().to_string()),
        original_name: dev.name.clone(),
        mac: dev.mac,
        up: dev.up,
        master,
        addresses,
        routes,
        transit_name: transit,
    })
}

fn add_addresses(h: &mut Handle, index: u32, addrs: &[IpNet]) -> Result<(), CniError> {
    for a in addrs {
        let r = if a.addr().is_ipv6() {
            h.add_address_nodad(index, *a)
        } else {
            h.add_address(index, *a)
        };
        match r {
            Err(e) if !e.is_exists() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Adds routes, tolerating ones already there; failures are reported, not fatal, when
/// `best_effort`.
fn add_routes(
    h: &mut Handle,
    routes: &[netlink::Route],
    best_effort: bool,
) -> Result<(), CniError> {
    for r in routes {
        match h.add_route(r) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) if best_effort => eprintln!("host: warning: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What the device carries into the container, decided before anything moves: IPAM's
/// addresses and routes when IPAM ran, else the ones it had in the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    pub addrs: Vec<IpNet>,
    pub routes: Vec<Route>,
    /// The addresses with their gateways (a route without `gw` goes via its family's).
    pub ips: Vec<IpConfig>,
    /// IPAM's routes are the runtime's request: failures count. Carried routes are best
    /// effort (one via a gateway outside the device's own subnets cannot be recreated).
    pub routes_best_effort: bool,
    pub dns: cni::Dns,
}

/// The [`Handover`] for `rec` with an optional IPAM allocation (pure).
pub fn plan_handover(rec: &DeviceRecord, allocated: Option<&CniResult>) -> Handover {
    match allocated {
        Some(r) => Handover {
            addrs: r.ips.iter().map(|i| i.address).collect(),
            routes: r.routes.clone(),
            ips: r.ips.clone(),
            routes_best_effort: false,
            dns: r.dns.clone(),
        },
        None => Handover {
            addrs: rec.addresses.clone(),
            routes: rec
                .routes
                .iter()
                .map(|r| Route {
                    priority: r.metric,
                    table: r.table,
                    scope: r.scope,
                    mtu: r.mtu,
                    advmss: r.advmss,
                    ..Route::new(r.dst, r.gateway)
                })
                .collect(),
            ips: rec
                .addresses
                .iter()
                .map(|a| IpConfig { address: *a, gateway: None, interface: None })
                .collect(),
            routes_best_effort: true,
            dns: cni::Dns::default(),
        },
    }
}

/// Moves the device into the container under CNI_IFNAME and configures it as `plan` says.
#[allow(clippy::too_many_arguments)]
pub fn hand_over(
    req: &Request,
    rec: &DeviceRecord,
    dev: &Link,
    ns: &Netns,
    host: &mut Handle,
    ctr: &mut Handle,
    plan: &Handover,
    pci_id: Option<String>,
) -> Result<CniResult, CniError> {
    let ifname = &req.env.ifname;
    if dev.up {
        host.set_down(dev.index)?;
    }
    host.set_name(dev.index, &rec.transit_name)?;
    host.set_netns(dev.index, ns).map_err(|e| {
        let hint = if e.errno() == Some(libc::EINVAL) {
            " (netns-local devices such as bridges cannot change namespace)"
        } else {
            ""
        };
        CniError::new(
            code::KERNEL,
            format!("moving device {} into the container: {e}{hint}", rec.original_name),
        )
    })?;
    let l = ctr.require_link(&rec.transit_name)?;
    ctr.set_name(l.index, ifname)?;

    if plan.addrs.iter().any(|a| a.addr().is_ipv6()) {
        let _ = netlink::with_netns(ns, || {
            netlink::sysctl_set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")
        });
    }
    add_addresses(ctr, l.index, &plan.addrs)?;
    ctr.set_up(l.index)?;
    let nl_routes: Vec<netlink::Route> = plan
        .routes
        .iter()
        .map(|r| netlink::Route {
            dst: r.dst,
            gateway: ipam::iface::route_gateway(r, &plan.ips),
            oif: Some(l.index),
            metric: r.priority,
            table: r.table,
            scope: r.scope,
            mtu: r.mtu,
            advmss: r.advmss,
        })
        .collect();
    add_routes(ctr, &nl_routes, plan.routes_best_effort)?;

    let l = ctr.require_link(ifname)?;
    let result = CniResult {
        interfaces: vec![Interface {
            name: ifname.clone(),
            mac: l.mac.as_ref().map(netlink::format_mac),
            mtu: Some(l.mtu),
            sandbox: Some(ns.path().display().to_string()),
            pci_id,
            ..Default::default()
        }],
        ips: plan.ips.iter().map(|ip| IpConfig { interface: Some(0), ..ip.clone() }).collect(),
        routes: plan.routes.clone(),
        dns: cni::plan::result_dns(&plan.dns, req.conf.dns.as_ref()),
    };
    Ok(result)
}

/// What `give_back` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Returned {
    /// The device is in the host again under its original name.
    Restored,
    /// Nowhere to be seen: destroyed with the namespace (virtual devices), or returned by
    /// the kernel to the initial namespace that this plugin does not run in.
    Gone,
}

/// `dev<N>`: the name the kernel gives a device it returns from a dying namespace when its
/// own name is taken in the initial namespace.
pub fn is_kernel_fallback_name(name: &str) -> bool {
    name.strip_prefix("dev").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Picks, among host links, the device a dead namespace gave back: same MAC, named
/// CNI_IFNAME (its name in the container) or `dev<N>`. Without a recorded MAC nothing is
/// picked: a name alone could be another device.
pub fn pick_returned<'a>(links: &'a [Link], rec: &DeviceRecord) -> Option<&'a Link> {
    let mac = rec.mac?;
    links
        .iter()
        .find(|l| l.mac == Some(mac) && (l.name == rec.ifname || is_kernel_fallback_name(&l.name)))
}

/// Brings the device back to the plugin's namespace (when it is still in `ns`), renames it
/// to its original name and restores its master (bridge/bond), addresses, state and routes.
pub fn give_back(
    rec: &DeviceRecord,
    ns: Option<&Netns>,
    host: &mut Handle,
) -> Result<Returned, CniError> {
    let here = Netns::current()?;
    if let Some(ns) = ns.filter(|ns| !ns.same_as(&here)) {
        let mut ctr = Handle::new_in(ns)?;
        // CNI_IFNAME (or our transit name) is this attachment's own name in the container.
        let mut found = None;
        for name in [&rec.ifname, &rec.transit_name] {
            if let Some(l) = ctr.link_by_name(name)? {
                found = Some(l);
                break;
            }
        }
        if let Some(l) = found {
            if l.up {
                ctr.set_down(l.index)?;
            }
            if l.name != rec.transit_name {
                ctr.set_name(l.index, &rec.transit_name)?;
            }
            ctr.set_netns(l.index, &here)?;
        }
    }
    let same_mac = |l: &Link| rec.mac.is_none() || l.mac == rec.mac;
    let mut dev = host.link_by_name(&rec.transit_name)?;
    if dev.is_none() {
        dev = host.link_by_name(&rec.original_name)?.filter(same_mac);
    }
    if dev.is_none() {
        let links = host.links()?;
        dev = pick_returned(&links, rec).cloned();
    }
    let Some(dev) = dev else { return Ok(Returned::Gone) };
    if dev.name != rec.original_name {
        if dev.up {
            host.set_down(dev.index)?;
        }
        host.set_name(dev.index, &rec.original_name).map_err(|e| {
            CniError::new(
                code::KERNEL,
                format!(
                    "giving device {} back to the host: {e} (is the name taken by another \
                    interface?)",
                    rec.original_name
                ),
            )
        })?;
    }
    if let Some(m) = &rec.master {
        match host.link_by_name(m)? {
            Some(master) if dev.master != Some(master.index) => {
                host.set_master(dev.index, Some(master.index))?
            }
            Some(_) => {}
            None => eprintln!(
                "host: warning: {} was enslaved to {m}, which no longer exists",
                rec.original_name
            ),
        }
    }
    add_addresses(host, dev.index, &rec.addresses)?;
    if rec.up {
        host.set_up(dev.index)?;
    }
    let routes: Vec<netlink::Route> = rec.routes.iter().map(|r| r.to_route(dev.index)).collect();
    add_routes(host, &routes, true)?;
    Ok(Returned::Restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: [u8; 6]) -> Link {
        Link { index, name: name.into(), mac: Some(mac), mtu: 1500, ..Default::default() }
    }

    fn record(mac: Option<[u8; 6]>) -> DeviceRecord {
        DeviceRecord {
            container_id: "c".into(),
            ifname: "net1".into(),
            netns: None,
            original_name: "eth1".into(),
            mac,
            up: true,
            master: None,
            addresses: vec![],
            routes: vec![],
            transit_name: "hd00000000".into(),
        }
    }

    #[test]
    fn kernel_fallback_names() {
        assert!(is_kernel_fallback_name("dev3"));
        assert!(is_kernel_fallback_name("dev12"));
        assert!(!is_kernel_fallback_name("dev"));
        assert!(!is_kernel_fallback_name("devx"));
        assert!(!is_kernel_fallback_name("eth0"));
    }

    #[test]
    fn a_device_returned_by_a_dead_namespace_is_found_by_mac_and_name() {
        let mac = [2, 0, 0, 0, 0, 7];
        let other = [2, 0, 0, 0, 0, 8];
        // Came back under its container name.
        let links = vec![link(1, "eth0", other), link(5, "net1", mac)];
        assert_eq!(pick_returned(&links, &record(Some(mac))).map(|l| l.index), Some(5));
        // Came back as dev<N> because net1 was taken.
        let links = vec![link(1, "net1", other), link(6, "dev6", mac)];
        assert_eq!(pick_returned(&links, &record(Some(mac))).map(|l| l.index), Some(6));
        // Same MAC under an unrelated name (e.g. a VLAN of it): not ours to rename.
        let links = vec![link(7, "eth1.10", mac)];
        assert_eq!(pick_returned(&links, &record(Some(mac))), None);
        // Right name, wrong MAC: another device.
        let links = vec![link(8, "net1", other)];
        assert_eq!(pick_returned(&links, &record(Some(mac))), None);
        // No recorded MAC: never guess.
        let links = vec![link(9, "net1", mac)];
        assert_eq!(pick_returned(&links, &record(None)), None);
    }

    #[test]
    fn the_handover_carries_ipam_or_the_devices_own_addresses() {
        let mut rec = record(None);
        rec.addresses = vec!["192.0.2.5/24".parse().unwrap()];
        rec.routes = vec![SavedRoute {
            dst: "198.51.100.0/24".parse().unwrap(),
            gateway: Some("192.0.2.1".parse().unwrap()),
            metric: Some(7),
            table: None,
            scope: None,
            mtu: None,
            advmss: None,
        }];
        let own = plan_handover(&rec, None);
        assert_eq!(own.addrs, rec.addresses);
        assert_eq!(own.routes[0].priority, Some(7));
        assert!(own.routes_best_effort);
        assert!(own.ips.iter().all(|i| i.gateway.is_none()));
        let ipam = CniResult {
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: None,
            }],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        };
        let given = plan_handover(&rec, Some(&ipam));
        assert_eq!(given.addrs, vec!["10.1.0.5/24".parse::<IpNet>().unwrap()]);
        assert!(!given.routes_best_effort);
        assert_eq!(
            ipam::iface::route_gateway(&given.routes[0], &given.ips),
            Some("10.1.0.1".parse().unwrap())
        );
    }

    #[test]
    fn link_local_addresses_stay_behind() {
        assert!(carried_address(&"192.0.2.1/24".parse().unwrap()));
        assert!(carried_address(&"fd00::1/64".parse().unwrap()));
        assert!(!carried_address(&"fe80::1/64".parse().unwrap()));
    }
}
