//! `portmap`: Docker's `-p hostIP:hostPort:containerPort/proto` on CNI. Chained after
//! `bridge` or `macvlan`: reads the container's addresses from prevResult, refuses host ports
//! that another container or a host process already holds (Docker's "port is already
//! allocated"), and programs DNAT through `crates/firewall` in one transaction.

mod config;
mod owners;
mod reservations;

use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::PortmapConf;
use firewall::{ContainerPorts, PortMapping, Protocol};
use owners::Owners;
use reservations::{bind_label, Reservations};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

struct Portmap;

fn fw_err(e: firewall::Error) -> CniError {
    CniError::new(code::KERNEL, format!("firewall: {e}"))
}

fn owner_of(req: &Request) -> String {
    format!("{}/{}", req.env.container_id, req.env.ifname)
}

/// Docker's conflict message, with our own error code (documented in the README).
fn allocated(m: &PortMapping, why: String) -> CniError {
    CniError::new(
        code::PORT_ALLOCATED,
        format!("Bind for {} failed: port is already allocated", bind_label(m)),
    )
    .with_details(why)
}

/// Refuses the container's own namespace being the host's: its ports already are the host's.
fn refuse_host_network(req: &Request) -> Result<(), CniError> {
    let Some(path) = req.env.netns.as_deref() else { return Ok(()) };
    let (Ok(ctr), Ok(here)) = (netlink::Netns::open(path), netlink::Netns::current()) else {
        return Ok(());
    };
    if ctr.same_as(&here) {
        return Err(CniError::config(
            "portMappings cannot be used with host networking: the container shares the host's network namespace, so its ports are already the host's ports (publish nothing, or use a bridge network)",
        ));
    }
    Ok(())
}

/// Expands each requested mapping over the container's addresses of the matching family.
fn plan(
    req: &Request,
    conf: &PortmapConf,
    prev: &CniResult,
) -> Result<(Vec<PortMapping>, Vec<ipnet::IpNet>), CniError> {
    let ips = prev.container_ips(&req.env.ifname);
    if ips.is_empty() {
        return Err(CniError::config(format!(
            "portmap: prevResult has no address for interface {:?}; chain portmap after a plugin that assigns addresses",
            req.env.ifname
        )));
    }
    let nets: Vec<ipnet::IpNet> = ips.iter().map(|i| i.address).collect();
    let mut out = Vec::new();
    for r in &conf.mappings {
        let mut matched = false;
        for ip in &ips {
            let cip = ip.address.addr();
            if let Some(h) = r.host_ip.filter(|h| !h.is_unspecified()) {
                if h.is_ipv4() != cip.is_ipv4() {
                    continue;
                }
            } else if let Some(h) = r.host_ip {
                // 0.0.0.0 means IPv4 only, :: means IPv6 only.
                if h.is_ipv4() != cip.is_ipv4() {
                    continue;
                }
            }
            matched = true;
            out.push(PortMapping {
                host_ip: r.host_ip,
                host_port: r.host_port,
                container_ip: cip,
                container_port: r.container_port,
                protocol: r.protocol,
            });
        }
        if !matched {
            return Err(CniError::config(format!(
                "portMappings: hostIP {} has no container address of its IP family on {}",
                r.host_ip.map(|h| h.to_string()).unwrap_or_default(),
                req.env.ifname
            )));
        }
    }
    Ok((out, nets))
}

/// A host process listening on the port makes the mapping unusable: try to bind it.
fn host_process_holds(m: &PortMapping) -> Result<Option<String>, CniError> {
    let ip = m.specific_host_ip().unwrap_or(if m.container_ip.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    });
    let addr = SocketAddr::new(ip, m.host_port);
    let res = match m.protocol {
        // std sets SO_REUSEADDR, so only a listening socket (not TIME_WAIT) conflicts.
        Protocol::Tcp => TcpListener::bind(addr).map(drop),
        Protocol::Udp => UdpSocket::bind(addr).map(drop),
        Protocol::Sctp => Ok(()),
    };
    match res {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Ok(Some(format!("a process on the host is listening on {addr}/{}", m.protocol)))
        }
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            Err(CniError::bad_value("portMappings hostIP", ip, "is not an address of this host"))
        }
        Err(_) => Ok(None),
    }
}

/// 127.0.0.1:hostPort only reaches a container when the outgoing interface accepts
/// loopback-sourced packets: set route_localnet on the host-side interfaces of prevResult.
fn enable_localhost(prev: &CniResult) {
    for iface in prev.interfaces.iter().filter(|i| i.sandbox.is_none()) {
        let key = format!("net/ipv4/conf/{}/route_localnet", iface.name);
        if netlink::sysctl_get(&key).is_ok() {
            let _ = netlink::sysctl_set(&key, "1");
        }
    }
}

fn container_ports(
    req: &Request,
    conf: &PortmapConf,
    mappings: Vec<PortMapping>,
    nets: Vec<ipnet::IpNet>,
) -> ContainerPorts {
    ContainerPorts {
        network: req.conf.name.clone(),
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        mappings,
        masquerade_hairpin: conf.snat,
        masq_all: conf.masq_all,
        container_nets: nets,
    }
}

/// Removes one owner's mappings: rules, UDP conntrack entries, reservations, state.
fn release(
    fw: &dyn firewall::Firewall,
    ports: &ContainerPorts,
    owner: &str,
) -> Result<(), CniError> {
    if Owners::new().others_exist(&ports.container_id, &ports.ifname) {
        // Our tables must stay anyway: skip the backend's "is anything left?" probe.
        fw.remove_ports_others_remain(ports).map_err(fw_err)?;
    } else {
        fw.remove_ports(ports).map_err(fw_err)?;
    }
    // UDP flows outlive the rules: without this a client keeps reaching the old container.
    firewall::conntrack::flush_removed_udp(&ports.mappings);
    let res = Reservations::new();
    for m in &ports.mappings {
        res.release(m, owner);
    }
    Ok(())
}

impl Plugin for Portmap {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = PortmapConf::from_request(req)?;
        let prev = req.prev.clone().ok_or_else(|| {
            CniError::config(
                "portmap must be chained after a plugin that returns a result (no prevResult)",
            )
        })?;
        if conf.mappings.is_empty() {
            return Ok(prev);
        }
        refuse_host_network(req)?;
        let (mappings, nets) = plan(req, &conf, &prev)?;
        let owner = owner_of(req);
        let fw = firewall::backend(conf.backend).map_err(fw_err)?;
        let res = Reservations::new();
        let _lock = res.lock()?;
        let owners = Owners::new();
        // The same container adding the same mapping again is not a conflict; a different
        // set from the same container replaces the old one.
        let previous = owners.load(&req.env.container_id, &req.env.ifname);
        if let Some(old) = &previous {
            if old.mappings != mappings {
                release(fw.as_ref(), old, &owner)?;
            }
        }
        for m in &mappings {
            if let Some(c) = res.conflict(m, &owner) {
                return Err(allocated(m, format!("already published by container {}", c.owner)));
            }
            // A repeated ADD of this container must not mistake its own DNAT for a listener.
            if previous.is_none() {
                if let Some(why) = host_process_holds(m)? {
                    return Err(allocated(m, why));
                }
            }
        }
        let ports = container_ports(req, &conf, mappings, nets);
        fw.add_ports(&ports).map_err(fw_err)?;
        // A UDP flow that existed before the port was published would bypass the new DNAT.
        firewall::conntrack::flush_new_udp(&ports.mappings);
        for m in &ports.mappings {
            res.reserve(m, &owner)?;
        }
        owners.save(&ports, fw.name())?;
        enable_localhost(&prev);
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        let owner = owner_of(req);
        let res = Reservations::new();
        let _lock = res.lock()?;
        let owners = Owners::new();
        let saved = owners.load(&req.env.container_id, &req.env.ifname);
        // Without our state (e.g. created by an older run), fall back to what the runtime
        // passes again on DEL: the mappings and prevResult.
        let ports = match saved {
            Some(p) => Some(p),
            None => match (&req.prev, conf.mappings.is_empty()) {
                (Some(prev), false) => {
                    plan(req, &conf, prev).ok().map(|(m, n)| container_ports(req, &conf, m, n))
                }
                _ => None,
            },
        };
        if let Some(ports) = ports {
            let fw = firewall::backend(
                owners.backend_of(&req.env.container_id, &req.env.ifname).or(conf.backend),
            )
            .map_err(fw_err)?;
            release(fw.as_ref(), &ports, &owner)?;
        }
        owners.remove(&req.env.container_id, &req.env.ifname);
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let ports =
            Owners::new().load(&req.env.container_id, &req.env.ifname).ok_or_else(|| {
                CniError::new(
                    code::KERNEL,
                    format!(
                        "no published ports recorded for container {} ({})",
                        req.env.container_id, req.env.ifname
                    ),
                )
            })?;
        let fw = firewall::backend(conf.backend).map_err(fw_err)?;
        fw.check_ports(&ports).map_err(fw_err)
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        let res = Reservations::new();
        let _lock = res.lock()?;
        let owners = Owners::new();
        for ports in owners.all() {
            let keep = valid
                .iter()
                .any(|v| v.container_id == ports.container_id && v.ifname == ports.ifname);
            if keep || ports.network != req.conf.name {
                continue;
            }
            let fw = firewall::backend(
                owners.backend_of(&ports.container_id, &ports.ifname).or(conf.backend),
            )
            .map_err(fw_err)?;
            release(fw.as_ref(), &ports, &format!("{}/{}", ports.container_id, ports.ifname))?;
            owners.remove(&ports.container_id, &ports.ifname);
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        let fw = firewall::backend(conf.backend)
            .map_err(|e| CniError::not_available(format!("no usable firewall backend: {e}")))?;
        fw.is_available().map_err(|e| {
            CniError::not_available(format!(
                "firewall backend {} cannot program the kernel: {e}",
                fw.name()
            ))
        })
    }
}

fn main() {
    cni::run(&Portmap)
}
