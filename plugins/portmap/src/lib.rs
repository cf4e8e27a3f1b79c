//! `portmap`: Docker's `-p hostIP:hostPort:containerPort/proto` on CNI. Chained after
//! `bridge` or `macvlan`: reads the container's addresses from prevResult, refuses host ports
//! that another container or a host process already holds (Docker's "port is already
//! allocated"), records its intent, then programs DNAT through `crates/firewall` in one
//! transaction.
//!
//! The flow of ADD: config -> plan (mappings from prevResult, conflicts from our state) ->
//! record (the owner record and reservations, before any kernel object exists) -> apply
//! (one firewall transaction; the tables restored for everyone when they were lost).

pub mod config;
pub mod state;

use cni::{code, Attachment, CniError, CniResult, Plugin, Request};
use config::PortmapConf;
use firewall::{ContainerPorts, Firewall, Flows, PortMapping, Protocol};
use state::{owner_key, OwnerRecord, PortmapState};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

/// The plugin, run by the `portmap` binary.
pub struct PortmapPlugin;

/// Docker's conflict message, with our own error code (documented in the README).
fn allocated(m: &PortMapping, why: String) -> CniError {
    CniError::new(
        code::PORT_ALLOCATED,
        format!("Bind for {} failed: port is already allocated", m.bind_label()),
    )
    .with_details(why)
}

/// CNI_NETNS must name a network namespace on ADD; refuses the host's own namespace: its
/// ports already are the host's.
fn check_netns(req: &Request) -> Result<(), CniError> {
    let path = req.netns()?;
    let ctr = netlink::Netns::open(path)
        .map_err(|e| CniError::unknown_container(format!("CNI_NETNS {}: {e}", path.display())))?;
    let Ok(here) = netlink::Netns::current() else { return Ok(()) };
    if ctr.same_as(&here) {
        return Err(CniError::config(
            "portMappings cannot be used with host networking: the container shares the host's network namespace, so its ports are already the host's ports (publish nothing, or use a bridge network)",
        ));
    }
    Ok(())
}

/// Expands each requested mapping over the container's addresses of the matching family
/// (pure: prevResult and the config only).
pub fn plan(
    req: &Request,
    conf: &PortmapConf,
    prev: &CniResult,
) -> Result<(Vec<PortMapping>, Vec<ipnet::IpNet>), CniError> {
    let ips = prev.container_ips(&req.env.ifname);
    if ips.is_empty() {
        return Err(CniError::config(format!(
            "prevResult has no address for interface {:?} (CNI_IFNAME): chain portmap after a plugin that assigns addresses",
            req.env.ifname
        )));
    }
    let nets: Vec<ipnet::IpNet> = ips.iter().map(|i| i.address).collect();
    let mut out = Vec::new();
    for (i, r) in conf.mappings.iter().enumerate() {
        let mut matched = false;
        for ip in &ips {
            let cip = ip.address.addr();
            // A specific hostIP, 0.0.0.0 (IPv4 only) or :: (IPv6 only) picks the family.
            if r.host_ip.is_some_and(|h| h.is_ipv4() != cip.is_ipv4()) {
                continue;
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
            return Err(CniError::bad_value(
                &format!("portMappings[{i}].hostIP"),
                r.host_ip.map(|h| h.to_string()).unwrap_or_default(),
                format!("the container has no address of its IP family on {}", req.env.ifname),
            ));
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
            if runtime_reservation(m.protocol, addr).is_some() {
                // The runtime reserved the port for this container before calling us, as
                // Docker's docker-proxy does (nerdctl 2.x binds it): not a conflict.
                return Ok(None);
            }
            Ok(Some(format!("a process on the host is listening on {addr}/{}", m.protocol)))
        }
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            Err(CniError::bad_value("portMappings hostIP", ip, "is not an address of this host"))
        }
        Err(_) => Ok(None),
    }
}

/// Processes that reserve a published port by holding a socket on it before (or instead of)
/// the plugin programming it: the runtimes themselves and their proxies.
const RESERVERS: &[&str] = &["nerdctl", "docker-proxy", "rootlessport", "rootlesskit", "conmon"];

/// When the socket holding `addr` belongs to a runtime's port reservation, the holder's
/// name. Read only on this rare path: the socket's inode from /proc/net, then its owners
/// among /proc/*/fd.
fn runtime_reservation(proto: Protocol, addr: SocketAddr) -> Option<String> {
    let (file, listening) = match (proto, addr.is_ipv4()) {
        (Protocol::Tcp, true) => ("/proc/net/tcp", Some("0A")),
        (Protocol::Tcp, false) => ("/proc/net/tcp6", Some("0A")),
        (Protocol::Udp, true) => ("/proc/net/udp", None),
        (Protocol::Udp, false) => ("/proc/net/udp6", None),
        (Protocol::Sctp, _) => return None,
    };
    let port = format!(":{:04X}", addr.port());
    let inodes: Vec<String> = std::fs::read_to_string(file)
        .ok()?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_ok = f.get(1).is_some_and(|x| x.ends_with(&port));
            let state_ok = listening.is_none_or(|s| f.get(3) == Some(&s));
            (local_ok && state_ok).then(|| f.get(9).map(|i| format!("socket:[{i}]"))).flatten()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
        });
        if holds {
            let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
            let comm = comm.trim();
            if RESERVERS.contains(&comm) {
                return Some(comm.to_string());
            }
        }
    }
    None
}

/// 127.0.0.1:hostPort only reaches a container when the outgoing interface accepts
/// loopback-sourced packets: set route_localnet on the host-side interfaces of prevResult
/// (remembered, and reset after the last DEL). The port tables' input chain drops what
/// else would arrive for 127.0.0.0/8 on them.
fn enable_localhost(state: &PortmapState, prev: &CniResult) -> Result<(), CniError> {
    let mut known = state.localnet();
    let before = known.len();
    // Only the bridge needs it (the output device of DNATed 127.0.0.1 traffic), not every
    // host-side veth: the result lists the bridge among the host interfaces.
    let host: Vec<&cni::Interface> =
        prev.interfaces.iter().filter(|i| i.sandbox.is_none()).collect();
    let is_bridge =
        |name: &str| std::path::Path::new("/sys/class/net").join(name).join("bridge").is_dir();
    let bridges: Vec<&cni::Interface> = match host.iter().filter(|i| is_bridge(&i.name)).count() {
        0 => host.into_iter().take(1).collect(),
        _ => host.into_iter().filter(|i| is_bridge(&i.name)).collect(),
    };
    for iface in bridges {
        if known.contains(&iface.name) {
            // Set by an earlier ADD (and reset only after the last DEL).
            continue;
        }
        let key = format!("net/ipv4/conf/{}/route_localnet", iface.name);
        if netlink::sysctl_get(&key).is_ok() {
            let _ = netlink::sysctl_set(&key, "1");
            if !known.contains(&iface.name) {
                known.push(iface.name.clone());
            }
        }
    }
    if known.len() != before {
        state.save_localnet(&known)?;
    }
    Ok(())
}

fn reset_localhost(state: &PortmapState) -> Result<(), CniError> {
    for name in state.localnet() {
        let key = format!("net/ipv4/conf/{name}/route_localnet");
        if netlink::sysctl_get(&key).is_ok() {
            let _ = netlink::sysctl_set(&key, "0");
        }
    }
    state.save_localnet(&[])
}

/// What the owner record holds for this attachment: the expanded mappings and the
/// container's networks, with the config's masquerade choices.
pub fn container_ports(
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

fn backend_of(rec: &OwnerRecord) -> Result<Box<dyn Firewall>, CniError> {
    firewall::backend(rec.backend.parse().ok()).map_err(CniError::from)
}

/// Makes the kernel hold `rec`'s ports. One lookup of the tables' generation when nothing
/// was lost; when the tables were flushed or re-created behind our back, every owner's
/// ports are restored in one transaction.
fn program(state: &PortmapState, fw: &dyn Firewall, rec: &OwnerRecord) -> Result<(), CniError> {
    let now = fw.ports_generation()?;
    if now.is_some() && now == state.generation(fw.name()) {
        // The common case: the tables are there; elements only, nothing to record.
        return fw.add_ports(&rec.ports).map_err(CniError::from);
    } else {
        let all: Vec<ContainerPorts> = state
            .owners()
            .into_iter()
            .filter(|o| o.backend == fw.name())
            .map(|o| o.ports)
            .collect();
        fw.restore_ports(&all)?;
    }
    state.save_generation(fw.name(), fw.ports_generation()?)
}

/// Removes one owner: its kernel objects (only the mappings it still holds), its UDP
/// flows, its reservations and record.
fn release(state: &PortmapState, rec: &OwnerRecord) -> Result<(), CniError> {
    let fw = backend_of(rec)?;
    let key = owner_key(&rec.ports.container_id, &rec.ports.ifname);
    let mut held = rec.ports.clone();
    held.mappings.retain(|m| state.holds(m, &key));
    let last = !state.others_with(&rec.ports.container_id, &rec.ports.ifname, &rec.backend);
    // Also when no generation was recorded: an ADD killed after its transaction and before
    // recording it left kernel objects that only this finds.
    fw.remove_ports(&held, last)?;
    cni::trace::mark("portmap:kernel");
    // UDP flows outlive the rules: without this a client keeps reaching the old container.
    fw.flush_udp_flows(&held.mappings, Flows::ToRemovedMappings);
    cni::trace::mark("portmap:conntrack");
    state.remove_owner(rec)?;
    cni::trace::mark("portmap:state-removed");
    if last {
        state.save_generation(fw.name(), None)?;
        if state.owners().is_empty() {
            reset_localhost(state)?;
        }
    }
    Ok(())
}

/// The owners whose tables were lost (generation differs from the recorded one).
fn lost_owners(state: &PortmapState, fw: &dyn Firewall) -> Result<Vec<ContainerPorts>, CniError> {
    let all: Vec<ContainerPorts> =
        state.owners().into_iter().filter(|o| o.backend == fw.name()).map(|o| o.ports).collect();
    if all.is_empty() {
        return Ok(all);
    }
    let now = fw.ports_generation()?;
    if now.is_some() && now == state.generation(fw.name()) {
        return Ok(Vec::new());
    }
    Ok(all)
}

/// Crash-consistency tests: `CNI_SUITE_FAULT=<point>` kills the process at that point, as
/// a `kill -9` would, so a test can check what DEL and GC do with what it left.
fn fault_point(name: &str) {
    if std::env::var("CNI_SUITE_FAULT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Restores every owner's ports when their tables were lost; a lookup of the generation
/// (and of our record of it) when they were not.
fn restore_if_lost(kind: Option<firewall::BackendKind>) -> Result<(), CniError> {
    let fw = firewall::backend(kind)?;
    let state = PortmapState::new();
    let Some(recorded) = state.generation(fw.name()) else { return Ok(()) };
    if fw.ports_generation()? == Some(recorded) {
        return Ok(());
    }
    let _lock = state.lock()?;
    let lost = lost_owners(&state, fw.as_ref())?;
    if !lost.is_empty() {
        fw.restore_ports(&lost)?;
        state.save_generation(fw.name(), fw.ports_generation()?)?;
    }
    Ok(())
}

impl Plugin for PortmapPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = PortmapConf::from_request(req)?;
        let prev = req.prev.clone().ok_or_else(|| {
            CniError::config(
                "prevResult is missing: portmap must be chained after a plugin that returns a result",
            )
        })?;
        if conf.mappings.is_empty() {
            // Still this network's ADD: put back the other containers' ports if a firewall
            // reload took them (one lookup when nothing was lost).
            restore_if_lost(conf.backend)?;
            return Ok(prev);
        }
        check_netns(req)?;
        let (mappings, nets) = plan(req, &conf, &prev)?;
        cni::trace::mark("portmap:plan");
        let fw = firewall::backend(conf.backend)?;
        let state = PortmapState::new();
        let _lock = state.lock()?;
        let key = owner_key(&req.env.container_id, &req.env.ifname);
        // The same container adding the same mappings again is not a conflict; a different
        // set (or backend) from the same container replaces the old one.
        let previous = state.owner(&req.env.container_id, &req.env.ifname)?;
        cni::trace::mark("portmap:state-read");
        let ports = container_ports(req, &conf, mappings, nets);
        let rec = OwnerRecord { backend: fw.name().to_string(), ports };
        if let Some(old) = &previous {
            if *old != rec {
                release(&state, old)?;
            }
        }
        for m in &rec.ports.mappings {
            if let Some(c) = state.conflict(m, &key) {
                return Err(allocated(m, format!("already published by container {}", c.owner)));
            }
            // A repeated ADD of this container must not mistake its own DNAT for a listener.
            if previous.as_ref() != Some(&rec) {
                if let Some(why) = host_process_holds(m)? {
                    return Err(allocated(m, why));
                }
            }
        }
        // Intent first: from here on, DEL and GC find everything this call creates.
        state.save_owner(&rec)?;
        cni::trace::mark("portmap:intent-written");
        if let Err(e) = program(&state, fw.as_ref(), &rec) {
            let _ = release(&state, &rec);
            return Err(e);
        }
        cni::trace::mark("portmap:kernel");
        fault_point("portmap:after-commit");
        // A UDP flow that existed before the port was published would bypass the new DNAT.
        fw.flush_udp_flows(&rec.ports.mappings, Flows::ToNewPorts);
        cni::trace::mark("portmap:conntrack");
        enable_localhost(&state, &prev)?;
        cni::trace::mark("portmap:route_localnet");
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        // DEL needs nothing but our state: never fail on input it does not use.
        let _ = PortmapConf::from_request(req);
        let state = PortmapState::new();
        let _lock = state.lock()?;
        if let Some(rec) = state.owner(&req.env.container_id, &req.env.ifname)? {
            cni::trace::mark("portmap:state-read");
            release(&state, &rec)?;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let rec = PortmapState::new().owner(&req.env.container_id, &req.env.ifname)?.ok_or_else(
            || {
                CniError::new(
                    code::KERNEL,
                    format!(
                        "no published ports recorded for container {} ({})",
                        req.env.container_id, req.env.ifname
                    ),
                )
            },
        )?;
        backend_of(&rec)?.check_ports(&rec.ports).map_err(CniError::from)
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        let state = PortmapState::new();
        let _lock = state.lock()?;
        // Temp files of writers killed before their rename.
        state.sweep_temp_files();
        for rec in state.owners() {
            let p = &rec.ports;
            let keep =
                valid.iter().any(|v| v.container_id == p.container_id && v.ifname == p.ifname);
            if !keep && p.network == req.conf.name {
                release(&state, &rec)?;
            }
        }
        // Tables lost behind our back (a firewall reload): GC puts every owner's ports back.
        let fw = firewall::backend(conf.backend)?;
        let lost = lost_owners(&state, fw.as_ref())?;
        if !lost.is_empty() {
            fw.restore_ports(&lost)?;
            state.save_generation(fw.name(), fw.ports_generation()?)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = PortmapConf::from_request(req)?;
        let fw = firewall::backend(conf.backend)
            .map_err(|e| CniError::not_available(format!("no usable firewall backend: {e}")))?;
        fw.status().map_err(|e| {
            CniError::not_available(format!(
                "firewall backend {} cannot program the kernel: {e}",
                fw.name()
            ))
        })?;
        let lost = lost_owners(&PortmapState::new(), fw.as_ref())?;
        if !lost.is_empty() {
            return Err(CniError::new(
                code::LIMITED_CONNECTIVITY,
                format!(
                    "the {} port mappings of {} containers are gone (flushed or reloaded behind our back): the next ADD, or a GC, restores them",
                    fw.name(),
                    lost.len()
                ),
            ));
        }
        Ok(())
    }
}
