//! Firewall programming for the CNI plugin suite.
//!
//! One trait ([`Firewall`]) with two backends:
//! - [`nftables::Nftables`] (default): our own tables, per-network chains reached through
//!   verdict maps, port mappings as map elements. Every call is one `nft -f -` transaction
//!   and its cost does not grow with the number of containers or mappings.
//! - [`iptables::Iptables`]: the compatibility path, one `iptables-restore --noflush -w`
//!   (and `ip6tables-restore`) batch per call.
//!
//! The backends program the network namespace of the calling thread: they exec `nft` /
//! `iptables-restore` and the child inherits the caller's namespace.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

pub mod conntrack;
pub mod dns_redirect;
pub mod ingress;
pub mod iptables;
mod listing;
pub mod nftables;

/// Which firewall backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Nftables,
    Iptables,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nftables" | "nft" => Ok(BackendKind::Nftables),
            "iptables" => Ok(BackendKind::Iptables),
            _ => Err(Error::invalid(format!(
                "unknown firewall backend {s:?}: expected \"nftables\" (or \"nft\") or \"iptables\""
            ))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Iptables => "iptables",
        })
    }
}

/// True when an executable file named `program` is in a PATH directory.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Returns the backend of the given kind; `None` picks nftables when `nft` can be run,
/// iptables otherwise.
pub fn backend(kind: Option<BackendKind>) -> Result<Box<dyn Firewall>, Error> {
    let kind = match kind {
        Some(k) => k,
        None => {
            // Looked up on PATH, not run: this is decided on every plugin call, and running
            // `nft --version` cost a process start each time. A broken nft still fails loudly
            // on the real transaction.
            if on_path("nft") {
                BackendKind::Nftables
            } else {
                BackendKind::Iptables
            }
        }
    };
    Ok(match kind {
        BackendKind::Nftables => Box::new(nftables::Nftables::new()),
        BackendKind::Iptables => Box::new(iptables::Iptables::new()),
    })
}

/// What kind of failure a firewall [`Error`] is: decides the CNI error code the user sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A host port is already published (found by the kernel or by the caller's state):
    /// CNI code 110, Docker's "port is already allocated".
    Conflict,
    /// The request itself is wrong (bad name, mapping, backend choice): CNI code 7.
    Invalid,
    /// The backend cannot be used here (tool or kernel support missing): CNI code 50.
    Unavailable,
    /// The kernel (or the tool talking to it) refused an operation: CNI code 112.
    Kernel,
}

/// A firewall error: its kind and a message naming what failed (with the kernel's or the
/// tool's reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
}

impl Error {
    /// A kernel (or tool) failure.
    pub fn new(msg: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Kernel, msg: msg.into() }
    }
    pub fn kernel(msg: impl Into<String>) -> Self {
        Self::new(msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Invalid, msg: msg.into() }
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Conflict, msg: msg.into() }
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Unavailable, msg: msg.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<Error> for cni::CniError {
    fn from(e: Error) -> cni::CniError {
        use cni::code;
        match e.kind {
            ErrorKind::Conflict => {
                // Keep Docker's words in the message whatever found the conflict.
                let msg = if e.msg.contains("port is already allocated") {
                    e.msg
                } else {
                    format!("port is already allocated: {}", e.msg)
                };
                cni::CniError::new(code::PORT_ALLOCATED, msg)
            }
            ErrorKind::Invalid => cni::CniError::new(code::INVALID_CONFIG, e.msg),
            ErrorKind::Unavailable => cni::CniError::new(code::NOT_AVAILABLE, e.msg),
            ErrorKind::Kernel => cni::CniError::new(code::KERNEL, format!("firewall: {}", e.msg)),
        }
    }
}

/// Rules that belong to one CNI network (one bridge). Applying is idempotent: it
/// replaces that network's rules.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkRules {
    /// CNI network name (backends derive safe chain names from it).
    pub network: String,
    /// Bridge interface name.
    pub bridge: String,
    /// Container subnets (v4 and/or v6).
    pub subnets: Vec<ipnet::IpNet>,
    /// Masquerade traffic from the subnets to destinations outside them (multicast excluded).
    pub masquerade: bool,
    /// Docker isolation: drop forwarded traffic between this bridge and any other bridge
    /// managed by us, both directions.
    pub isolate: bool,
    /// Docker `--internal`: drop forwarded traffic between this bridge and any other
    /// interface; no masquerade.
    pub internal: bool,
    /// Inter-container traffic on the bridge; `false` drops bridged traffic between its
    /// ports (nftables backend only).
    pub icc: bool,
}

impl NetworkRules {
    /// Defaults: masquerade, no isolation, not internal, icc allowed.
    pub fn new(
        network: impl Into<String>,
        bridge: impl Into<String>,
        subnets: Vec<ipnet::IpNet>,
    ) -> Self {
        NetworkRules {
            network: network.into(),
            bridge: bridge.into(),
            subnets,
            masquerade: true,
            isolate: false,
            internal: false,
            icc: true,
        }
    }

    /// True when these rules change nothing (no masquerade, isolation, internal or icc
    /// drop, or no subnet): programming them means removing the network's rules.
    pub fn enforces_nothing(&self) -> bool {
        (!self.masquerade && !self.isolate && !self.internal && self.icc) || self.subnets.is_empty()
    }

    /// Masquerade is in effect (requested and the network is not internal).
    pub fn masquerades(&self) -> bool {
        self.masquerade && !self.internal
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.network.is_empty() {
            return Err(Error::invalid("network name must not be empty"));
        }
        validate_ifname("bridge", &self.bridge)?;
        Ok(())
    }
}

/// Transport protocol of a published port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(Error::invalid(format!(
                "unknown protocol {s:?}: expected \"tcp\", \"udp\" or \"sctp\""
            ))),
        }
    }
}

/// One published port: Docker's `-p hostIP:hostPort:containerPort/proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// `None` or an unspecified address (0.0.0.0 / ::) = all host addresses.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// The specific host address, or `None` for "all host addresses".
    pub fn specific_host_ip(&self) -> Option<IpAddr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }

    /// "0.0.0.0:8080" / "[::]:8080" / "127.0.0.1:8080", as Docker prints a bind address.
    pub fn bind_label(&self) -> String {
        let ip = self.specific_host_ip().unwrap_or(if self.container_ip.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        });
        match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{}", self.host_port),
            v4 => format!("{v4}:{}", self.host_port),
        }
    }

    /// Human-readable description, for error messages.
    pub fn describe(&self) -> String {
        let host = match self.specific_host_ip() {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:"),
            Some(ip) => format!("{ip}:"),
            None => String::new(),
        };
        let cont = match self.container_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("{host}{}->{cont}:{}/{}", self.host_port, self.container_port, self.protocol)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.host_port == 0 {
            return Err(Error::invalid(format!(
                "port mapping {}: hostPort must not be 0",
                self.describe()
            )));
        }
        if self.container_port == 0 {
            return Err(Error::invalid(format!(
                "port mapping {}: containerPort must not be 0",
                self.describe()
            )));
        }
        if self.container_ip.is_unspecified() {
            return Err(Error::invalid(format!(
                "port mapping {}: container address must not be unspecified",
                self.describe()
            )));
        }
        if let Some(h) = self.specific_host_ip() {
            if h.is_ipv4() != self.container_ip.is_ipv4() {
                return Err(Error::invalid(format!(
                    "port mapping {}: hostIP and container address are of different IP families",
                    self.describe()
                )));
            }
        }
        Ok(())
    }
}

/// The published ports of one container interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerPorts {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub mappings: Vec<PortMapping>,
    /// Masquerade hairpin traffic (a container reaching a published port of a container on
    /// its own network through the host). CNI portmap's `snat` key, default true.
    pub masquerade_hairpin: bool,
    /// Masquerade every DNATed connection to the container (CNI portmap's `masqAll`).
    pub masq_all: bool,
    /// The container's addresses with their prefix (from the CNI result), e.g.
    /// `10.88.0.5/16`: DNATed connections whose source lies in one of these networks are
    /// hairpin traffic and are masqueraded when `masquerade_hairpin` is set. When empty,
    /// only the container reaching itself is treated as hairpin. Pass the same value to
    /// `remove_ports` as to `add_ports`.
    pub container_nets: Vec<ipnet::IpNet>,
}

impl ContainerPorts {
    pub fn new(
        network: impl Into<String>,
        container_id: impl Into<String>,
        ifname: impl Into<String>,
    ) -> Self {
        ContainerPorts {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
            mappings: Vec::new(),
            masquerade_hairpin: true,
            masq_all: false,
            container_nets: Vec::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.container_id.is_empty() {
            return Err(Error::invalid("container id must not be empty"));
        }
        if self.ifname.is_empty() {
            return Err(Error::invalid("interface name must not be empty"));
        }
        for m in &self.mappings {
            m.validate()?;
        }
        Ok(())
    }

    /// Distinct container addresses of the mappings, in first-seen order.
    pub(crate) fn container_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for m in &self.mappings {
            if !out.contains(&m.container_ip) {
                out.push(m.container_ip);
            }
        }
        out
    }

    /// Source networks treated as hairpin for `ip`: the container nets of the same family,
    /// normalised to their network address; the address itself when there are none.
    pub(crate) fn hairpin_sources(&self, ip: IpAddr) -> Vec<ipnet::IpNet> {
        let mut out: Vec<ipnet::IpNet> = Vec::new();
        for n in &self.container_nets {
            if n.addr().is_ipv4() == ip.is_ipv4() {
                let t = n.trunc();
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        if out.is_empty() {
            out.push(ipnet::IpNet::from(ip));
        }
        out
    }
}

/// Which UDP flows [`Firewall::flush_udp_flows`] deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flows {
    /// Flows to a newly published host port that existed before it was published: they
    /// would bypass the new DNAT.
    ToNewPorts,
    /// Flows DNATed to removed mappings: a client that keeps sending would keep reaching
    /// the old container (or whoever gets its address next).
    ToRemovedMappings,
}

/// What STATUS reports about a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Another table or chain drops forwarded traffic that our accept cannot override
    /// (e.g. Docker's iptables FORWARD policy DROP); describes it.
    pub foreign_drop: Option<String>,
}

/// What every backend implements. Each mutating call is one atomic transaction. The
/// backends keep no state of their own and decide nothing about ownership: callers pass
/// what they want programmed and what they programmed before (from their own state, which
/// they write before any kernel object is created), and whether anything else of theirs is
/// left ("is the table empty" comes from the caller's state, never from a kernel probe).
pub trait Firewall: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// "nftables" or "iptables".
    fn name(&self) -> &'static str {
        match self.kind() {
            BackendKind::Nftables => "nftables",
            BackendKind::Iptables => "iptables",
        }
    }

    /// A cheap identifier of the current incarnation of the network rules' tables (one
    /// lookup, not a listing): `None` when they do not exist. It changes when they are
    /// flushed or deleted behind our back (`nft flush ruleset`, a firewall reload), so a
    /// caller that recorded it after its last change knows whether everything it programmed
    /// is still there.
    fn network_generation(&self) -> Result<Option<u64>, Error>;

    /// Programs one network's rules: `want` replaces `had` (what the caller recorded for this
    /// network last time, `None` for a new network). A `want` that enforces nothing removes
    /// the network's rules.
    fn apply_network(&self, want: &NetworkRules, had: Option<&NetworkRules>) -> Result<(), Error>;

    /// Removes one network's rules (`had`, from the caller's state); already gone is fine.
    /// `last`: no other network of the caller is left, so the tables go too.
    fn remove_network(&self, had: &NetworkRules, last: bool) -> Result<(), Error>;

    /// Re-creates the rules of every network after they were lost (the generation changed).
    fn restore_networks(&self, all: &[NetworkRules]) -> Result<(), Error>;

    /// CHECK: the network's rules are present in the kernel.
    fn check_network(&self, want: &NetworkRules) -> Result<(), Error>;

    /// Like [`Firewall::network_generation`], for the port mappings' tables.
    fn ports_generation(&self) -> Result<Option<u64>, Error>;

    /// Publishes the ports of one container interface (idempotent).
    fn add_ports(&self, ports: &ContainerPorts) -> Result<(), Error>;

    /// Removes exactly these mappings (from the caller's state); already gone is fine.
    /// `last`: no other container has published ports, so the tables go too.
    fn remove_ports(&self, ports: &ContainerPorts, last: bool) -> Result<(), Error>;

    /// Re-creates every container's published ports after they were lost.
    fn restore_ports(&self, all: &[ContainerPorts]) -> Result<(), Error>;

    /// CHECK: the container's mappings are present in the kernel.
    fn check_ports(&self, ports: &ContainerPorts) -> Result<(), Error>;

    /// MAC spoof check (reference bridge `macspoofchk`): frames entering the bridge from
    /// `port` must carry `mac` as source. Layer 2 needs the nftables bridge family whatever
    /// backend programs the L3 rules, so every backend delegates to the nftables one.
    fn guard_mac(&self, port: &str, mac: &[u8; 6]) -> Result<(), Error> {
        nftables::Nftables.guard_mac(port, mac)
    }

    /// Removes the guard of `port`; already gone is fine. `last`: no other port of the
    /// caller is guarded, so the table goes too.
    fn unguard_mac(&self, port: &str, mac: &[u8; 6], last: bool) -> Result<(), Error> {
        nftables::Nftables.unguard_mac(port, mac, last)
    }

    /// CHECK: `port` is guarded with `mac`.
    fn check_mac(&self, port: &str, mac: &[u8; 6]) -> Result<(), Error> {
        nftables::Nftables.check_mac(port, mac)
    }

    /// Deletes conntrack entries of UDP mappings, in a detached child after the plugin has
    /// returned ([`conntrack::flush_detached`]; never fails: nothing to delete, or no
    /// conntrack support, is not an error).
    fn flush_udp_flows(&self, mappings: &[PortMapping], which: Flows) {
        conntrack::flush_detached(mappings, which)
    }

    /// STATUS: the backend can program the kernel here (an `Unavailable` error if not),
    /// and what else on the host may interfere.
    fn status(&self) -> Result<Status, Error>;
}

// ---------------------------------------------------------------------------------------
// Shared helpers.

/// FNV-1a 64-bit: a stable hash for deriving names (not for security).
pub(crate) fn stable_hash(data: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Name-safe identifier of a network: the name itself when it is short and made of
/// `[A-Za-z0-9_-]` starting with an alphanumeric, else `_` + 16 hex digits of its hash
/// (which no plain name can produce).
pub(crate) fn network_id(network: &str) -> String {
    let plain = !network.is_empty()
        && network.len() <= 32
        && network.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && network.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        network.to_string()
    } else {
        format!("_{:016x}", stable_hash(network))
    }
}

fn owner_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '@' | '+' | '=')
        })
}

/// The stored owner tag of a container interface: `<container id>/<ifname>` when short
/// and plain (fits a 127-byte nft comment), else `#<hex hash>`.
pub fn owner_key(container_id: &str, ifname: &str) -> String {
    let k = format!("{container_id}/{ifname}");
    if k.len() <= 120 && owner_part_ok(container_id) && owner_part_ok(ifname) {
        k
    } else {
        format!("#{:016x}{:016x}", stable_hash(&k), stable_hash(&format!("cni-suite:{k}")))
    }
}

/// Owner tag given (container id, ifname) as returned by `list_port_owners`.
pub(crate) fn owner_key_of(container_id: &str, ifname: &str) -> String {
    if ifname.is_empty() && container_id.starts_with('#') {
        container_id.to_string()
    } else {
        owner_key(container_id, ifname)
    }
}

/// Validates an interface name for use in rules.
pub(crate) fn validate_ifname(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '\\' | '\'' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} interface name {name:?}: 1-15 printable characters without '/', quotes, '\\' or ':'"
        )))
    }
}

/// Output of a tool run.
#[derive(Debug)]
pub(crate) struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args...` in the caller's namespace, with `stdin` fed when given.
pub(crate) fn run_tool(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Run, Error> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        cmd.spawn().map_err(|e| Error::unavailable(format!("cannot run {program}: {e}")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let data = input.as_bytes().to_vec();
        // Write from a thread so a tool that writes a lot before reading cannot deadlock us.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
        let out = child
            .wait_with_output()
            .map_err(|e| Error::unavailable(format!("cannot run {program}: {e}")))?;
        let _ = writer.join();
        return Ok(Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::unavailable(format!("cannot run {program}: {e}")))?;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kind_parses() {
        assert_eq!("nft".parse::<BackendKind>().unwrap(), BackendKind::Nftables);
        assert_eq!("nftables".parse::<BackendKind>().unwrap(), BackendKind::Nftables);
        assert_eq!("IPTables".parse::<BackendKind>().unwrap(), BackendKind::Iptables);
        let e = "ebtables".parse::<BackendKind>().unwrap_err();
        assert!(e.msg.contains("\"ebtables\""), "{e}");
    }

    #[test]
    fn network_ids_are_safe_and_distinct() {
        assert_eq!(network_id("podman"), "podman");
        assert_eq!(network_id("my-net_1"), "my-net_1");
        let a = network_id("with space");
        assert!(a.starts_with('_') && a.len() == 17, "{a}");
        assert_ne!(network_id("with space"), network_id("with  space"));
        let long = "a".repeat(40);
        assert!(network_id(&long).starts_with('_'));
        assert!(network_id("-x").starts_with('_'));
        assert!(network_id("").starts_with('_'));
    }

    #[test]
    fn owner_keys_round_trip() {
        let k = owner_key("abc123", "eth0");
        assert_eq!(k, "abc123/eth0");
        let long = "x".repeat(200);
        let k = owner_key(&long, "eth0");
        assert!(k.starts_with('#') && k.len() == 33);
        assert_eq!(owner_key_of(&k, ""), k);
        assert!(owner_key("a\"b", "eth0").starts_with('#'));
    }

    #[test]
    fn ifname_validation() {
        assert!(validate_ifname("bridge", "cni-podman0").is_ok());
        assert!(validate_ifname("bridge", "").is_err());
        assert!(validate_ifname("bridge", "a\"b").is_err());
        assert!(validate_ifname("bridge", "0123456789abcdef").is_err());
    }

    #[test]
    fn mapping_validation() {
        let m = PortMapping {
            host_ip: Some("::1".parse().unwrap()),
            host_port: 80,
            container_ip: "10.0.0.2".parse().unwrap(),
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        assert!(m.validate().unwrap_err().msg.contains("families"));
        let m = PortMapping { host_ip: Some("0.0.0.0".parse().unwrap()), host_port: 0, ..m };
        assert!(m.validate().unwrap_err().msg.contains("hostPort"));
    }

    #[test]
    fn hairpin_sources_default_to_the_container() {
        let mut p = ContainerPorts::new("n", "c", "eth0");
        let ip: IpAddr = "10.88.0.5".parse().unwrap();
        assert_eq!(p.hairpin_sources(ip), vec!["10.88.0.5/32".parse::<ipnet::IpNet>().unwrap()]);
        p.container_nets = vec!["10.88.0.5/16".parse().unwrap(), "fd00::5/64".parse().unwrap()];
        assert_eq!(p.hairpin_sources(ip), vec!["10.88.0.0/16".parse::<ipnet::IpNet>().unwrap()]);
    }
}
