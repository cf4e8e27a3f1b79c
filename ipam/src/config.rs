//! The `ipam` section of a network config, for host-local and static, in every key form the
//! reference plugins accept. Parsing is by hand from the JSON value so that every error is
//! code 7 and names the key path and the value
//! (`invalid ipam.ranges[0][0].subnet "10.0.0.0/33": ...`).

use crate::addr::{family_name, from_u128, same_family, subnet_bounds, to_u128};
use cni::{CniError, Dns, IpConfig, Request, Route};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;

/// One range of a range set: a subnet and the part of it addresses are handed out from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, host bits clear (10.1.0.0/16).
    pub subnet: IpNet,
    /// First address handed out (inclusive).
    pub start: IpAddr,
    /// Last address handed out (inclusive).
    pub end: IpAddr,
    /// Never handed out; returned as the gateway of addresses from this range.
    pub gateway: IpAddr,
}

impl Range {
    pub fn is_v4(&self) -> bool {
        self.start.is_ipv4()
    }

    /// True when `ip` lies between `start` and `end` (inclusive) and is of the same family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(ip, self.start) && {
            let v = to_u128(ip);
            to_u128(self.start) <= v && v <= to_u128(self.end)
        }
    }

    /// Number of addresses from start to end.
    pub fn size(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }

    /// Addresses that can actually be leased (the gateway is skipped when it falls inside).
    pub fn usable(&self) -> u128 {
        self.size() - u128::from(self.contains(self.gateway))
    }

    /// "10.1.0.0/24 [10.1.0.1-10.1.0.254]"
    pub fn describe(&self) -> String {
        format!("{} [{}-{}]", self.subnet, self.start, self.end)
    }

    fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

/// A list of ranges of one family; one address is leased from each range set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    pub fn is_v4(&self) -> bool {
        self.ranges[0].is_v4()
    }
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }
    /// Leasable addresses in the whole set (saturating: an IPv6 /64 is "plenty").
    pub fn usable(&self) -> u128 {
        self.ranges.iter().fold(0u128, |acc, r| acc.saturating_add(r.usable()))
    }
    pub fn describe(&self) -> String {
        self.ranges.iter().map(Range::describe).collect::<Vec<_>>().join(", ")
    }
}

/// Everything host-local needs for ADD, CHECK and STATUS.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLocalConfig {
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    pub data_dir: PathBuf,
    /// Addresses the runtime asked for (runtimeConfig.ips, args.cni.ips, CNI_ARGS IP),
    /// deduplicated.
    pub requested: Vec<IpAddr>,
}

/// Everything static needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticConfig {
    pub addresses: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

// ---------------------------------------------------------------------------
// small typed accessors with named errors

fn show(v: &Value) -> String {
    v.to_string()
}

/// The `ipam` object, or code 7 naming it.
pub fn ipam_section(req: &Request) -> Result<&Map<String, Value>, CniError> {
    match &req.conf.ipam {
        None | Some(Value::Null) => {
            Err(CniError::config("missing \"ipam\" section in network config"))
        }
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(CniError::bad_value("ipam", show(other), "must be a JSON object")),
    }
}

/// A string key: absent, null and "" are None; any other non-string is an error.
fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, CniError> {
    match cni::json::get(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(other) => Err(CniError::bad_value(&join(path, key), show(other), "must be a string")),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Vec<Value>>, CniError> {
    match cni::json::get(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(other) => Err(CniError::bad_value(&join(path, key), show(other), "must be a list")),
    }
}

/// Parses an address; `key` names where it came from.
pub fn parse_ip(key: &str, s: &str) -> Result<IpAddr, CniError> {
    s.trim()
        .parse::<IpAddr>()
        .map(crate::addr::canonical)
        .map_err(|_| CniError::bad_value(key, format!("{s:?}"), "not an IP address"))
}

/// Parses "address/prefix" keeping the host bits (10.1.0.5/24), with a precise reason on failure.
pub fn parse_cidr(key: &str, s: &str) -> Result<IpNet, CniError> {
    let s = s.trim();
    let bad = |why: String| CniError::bad_value(key, format!("{s:?}"), why);
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| bad("not in CIDR notation (address/prefix-length)".into()))?;
    let ip: IpAddr = a.parse().map_err(|_| bad(format!("{a:?} is not an IP address")))?;
    let prefix: u8 = p.parse().map_err(|_| bad(format!("prefix length {p:?} is not a number")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad(format!(
            "prefix length {prefix} is longer than {max}, the most an {} address has",
            family_name(ip)
        )));
    }
    Ok(IpNet::new(ip, prefix).expect("prefix checked"))
}

fn opt_ip(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>, CniError> {
    opt_str(obj, key, path)?.map(|s| parse_ip(&join(path, key), s)).transpose()
}

fn check_family(key: &str, ip: IpAddr, subnet: &IpNet, subnet_key: &str) -> Result<(), CniError> {
    if same_family(ip, subnet.addr()) {
        Ok(())
    } else {
        Err(CniError::bad_value(
            key,
            format!("{:?}", ip.to_string()),
            format!(
                "is {} but {subnet_key} {subnet} is {}",
                family_name(ip),
                family_name(subnet.addr())
            ),
        ))
    }
}

// ---------------------------------------------------------------------------
// ranges

/// Parses and canonicalizes one range object at `path` (e.g. "ipam.ranges[0][1]" or "ipam"
/// for the legacy top-level keys): defaults and checks follow the reference host-local.
pub fn parse_range(obj: &Map<String, Value>, path: &str) -> Result<Range, CniError> {
    let subnet_key = join(path, "subnet");
    let subnet_str = opt_str(obj, "subnet", path)?
        .ok_or_else(|| CniError::config(format!("missing {subnet_key}")))?;
    let given = parse_cidr(&subnet_key, subnet_str)?;
    let subnet = given.trunc();
    let bad_subnet = |why: String| CniError::bad_value(&subnet_key, format!("{subnet_str:?}"), why);
    if subnet.addr() != given.addr() {
        return Err(bad_subnet(format!("host bits are set; the network address is {subnet}")));
    }
    let v4 = subnet.addr().is_ipv4();
    let max = subnet.max_prefix_len();
    if subnet.prefix_len() + 2 > max {
        return Err(bad_subnet(format!(
            "too small to allocate from (the smallest usable {} subnet is /{})",
            family_name(subnet.addr()),
            max - 2
        )));
    }
    let (lo, hi) = subnet_bounds(&subnet);
    // IPv4 has a broadcast address; IPv6 only reserves the network (subnet-router anycast) address.
    let last_usable = if v4 { hi - 1 } else { hi };

    let gateway = match opt_ip(obj, "gateway", path)? {
        Some(gw) => {
            check_family(&join(path, "gateway"), gw, &subnet, &subnet_key)?;
            gw
        }
        None => from_u128(lo + 1, v4),
    };

    let inside = |key: &str, ip: IpAddr| -> Result<u128, CniError> {
        let k = join(path, key);
        check_family(&k, ip, &subnet, &subnet_key)?;
        let v = to_u128(ip);
        if v < lo || v > hi {
            let why = format!("is outside {subnet_key} {subnet}");
            return Err(CniError::bad_value(&k, format!("{:?}", ip.to_string()), why));
        }
        Ok(v)
    };
    // A range may name the subnet's edges: nerdctl writes `rangeEnd` = the subnet's broadcast
    // address for every --ip-range that ends where the subnet does. They mean "up to the
    // edge"; the network and broadcast addresses themselves are never handed out.
    let start = match opt_ip(obj, "rangeStart", path)? {
        Some(ip) => inside("rangeStart", ip)?.max(lo + 1),
        None => lo + 1,
    };
    let end = match opt_ip(obj, "rangeEnd", path)? {
        Some(ip) => {
            let v = inside("rangeEnd", ip)?.min(last_usable);
            if v < start {
                return Err(CniError::bad_value(
                    &join(path, "rangeEnd"),
                    format!("{:?}", ip.to_string()),
                    format!("comes before rangeStart {}", from_u128(start, v4)),
                ));
            }
            v
        }
        None => last_usable,
    };
    if end < start {
        // Only reachable when rangeStart is the last usable address and rangeEnd is defaulted
        // lower.
        return Err(CniError::bad_value(
            &join(path, "rangeStart"),
            format!("{:?}", from_u128(start, v4).to_string()),
            "leaves an empty range",
        ));
    }
    let range = Range { subnet, start: from_u128(start, v4), end: from_u128(end, v4), gateway };
    if range.usable() == 0 {
        return Err(CniError::config(format!(
            "{path}: range {} holds only the gateway {gateway}; nothing to hand out",
            range.describe()
        )));
    }
    Ok(range)
}

/// Parses one range set (a list of range objects of one family, not overlapping).
pub fn parse_range_set(v: &Value, path: &str) -> Result<RangeSet, CniError> {
    let list = v
        .as_array()
        .ok_or_else(|| CniError::bad_value(path, show(v), "must be a list of ranges"))?;
    if list.is_empty() {
        return Err(CniError::config(format!("{path}: a range set needs at least one range")));
    }
    let mut ranges: Vec<Range> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| CniError::bad_value(&p, show(item), "must be a JSON object"))?;
        let r = parse_range(obj, &p)?;
        if let Some(first) = ranges.first() {
            if first.is_v4() != r.is_v4() {
                return Err(CniError::config(format!(
                    "{p}: subnet {} is {} but {path}[0] is {}; one range set holds one family",
                    r.subnet,
                    family_name(r.start),
                    family_name(first.start)
                )));
            }
        }
        if let Some((j, o)) = ranges.iter().enumerate().find(|(_, o)| o.overlaps(&r)) {
            return Err(CniError::config(format!(
                "{p} ({}) overlaps {path}[{j}] ({})",
                r.describe(),
                o.describe()
            )));
        }
        ranges.push(r);
    }
    Ok(RangeSet { ranges })
}

fn parse_range_sets(v: &Value, path: &str) -> Result<Vec<RangeSet>, CniError> {
    let list = v
        .as_array()
        .ok_or_else(|| CniError::bad_value(path, show(v), "must be a list of range sets"))?;
    list.iter().enumerate().map(|(i, s)| parse_range_set(s, &format!("{path}[{i}]"))).collect()
}

// ---------------------------------------------------------------------------
// routes, dns, data dir, requested addresses

/// `routes`: [{"dst": CIDR, "gw": IP, and the 1.1.0 attributes}].
pub fn parse_routes(v: Option<&Value>, path: &str) -> Result<Vec<Route>, CniError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let list = v
        .as_array()
        .ok_or_else(|| CniError::bad_value(path, show(v), "must be a list of routes"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| CniError::bad_value(&p, show(item), "must be a JSON object"))?;
        let dst_key = join(&p, "dst");
        let dst = opt_str(obj, "dst", &p)?
            .ok_or_else(|| CniError::config(format!("missing {dst_key}")))?;
        let dst = parse_cidr(&dst_key, dst)?.trunc();
        let gw = opt_ip(obj, "gw", &p)?;
        if let Some(gw) = gw {
            check_family(&join(&p, "gw"), gw, &dst, &dst_key)?;
        }
        let mut route = Route::new(dst, gw);
        let num = |key: &str, max: u64| -> Result<Option<u64>, CniError> {
            match cni::json::get(obj, key) {
                None | Some(Value::Null) => Ok(None),
                Some(n) => match n.as_u64() {
                    Some(x) if x <= max => Ok(Some(x)),
                    _ => Err(CniError::bad_value(
                        &join(&p, key),
                        show(n),
                        format!("must be a whole number from 0 to {max}"),
                    )),
                },
            }
        };
        route.mtu = num("mtu", u32::MAX as u64)?.map(|x| x as u32);
        route.advmss = num("advmss", u32::MAX as u64)?.map(|x| x as u32);
        route.priority = num("priority", u32::MAX as u64)?.map(|x| x as u32);
        route.table = num("table", u32::MAX as u64)?.map(|x| x as u32);
        route.scope = num("scope", u8::MAX as u64)?.map(|x| x as u8);
        out.push(route);
    }
    Ok(out)
}

/// Parses resolv.conf text: nameserver, domain, search and options lines.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("domain") => dns.domain = words.next().map(str::to_string),
            Some("search") => dns.search = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// The most of `ipam.resolvConf` that is read.
const RESOLV_CONF_MAX: u64 = 64 * 1024;

/// `ipam.dataDir`, or the default (honours CNI_SUITE_STATE_DIR).
pub fn data_dir(ipam: &Map<String, Value>) -> Result<PathBuf, CniError> {
    Ok(opt_str(ipam, "dataDir", "ipam")?
        .map(PathBuf::from)
        .unwrap_or_else(cni::store::default_ipam_data_dir))
}

/// Addresses from a JSON list of strings at `key` (bare or CIDR form).
fn ips_from_list(v: &Value, key: &str, cidr_required: bool) -> Result<Vec<IpNet>, CniError> {
    let list = v
        .as_array()
        .ok_or_else(|| CniError::bad_value(key, show(v), "must be a list of addresses"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let s =
            item.as_str().ok_or_else(|| CniError::bad_value(&k, show(item), "must be a string"))?;
        out.push(ip_entry(&k, s, cidr_required)?);
    }
    Ok(out)
}

fn ip_entry(key: &str, s: &str, cidr_required: bool) -> Result<IpNet, CniError> {
    if cidr_required || s.contains('/') {
        parse_cidr(key, s)
    } else {
        let ip = parse_ip(key, s)?;
        Ok(IpNet::from(ip))
    }
}

/// CNI_ARGS `KEY=a,b,c` split on commas.
fn env_list(req: &Request, key: &str, cidr_required: bool) -> Result<Vec<IpNet>, CniError> {
    let Some(v) = req.env.arg(key) else { return Ok(Vec::new()) };
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| ip_entry(&format!("CNI_ARGS {key}"), s, cidr_required))
        .collect()
}

/// Requested addresses for host-local, from CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips
/// (all three are honoured, like the reference), deduplicated in that order.
pub fn requested_ips(req: &Request) -> Result<Vec<IpAddr>, CniError> {
    let mut all: Vec<IpNet> = env_list(req, "IP", false)?;
    if let Some(v) = req.conf.args_cni("ips") {
        all.extend(ips_from_list(v, "args.cni.ips", false)?);
    }
    if let Some(v) = req.conf.runtime("ips") {
        all.extend(ips_from_list(v, "runtimeConfig.ips", false)?);
    }
    let mut out: Vec<IpAddr> = Vec::with_capacity(all.len());
    for n in all {
        let ip = crate::addr::canonical(n.addr());
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// cniVersion 0.1.0/0.2.0 results carry one address per family.
fn check_one_per_family(version: &str, v4: usize, v6: usize) -> Result<(), CniError> {
    let old =
        cni::version::Version::parse(version).is_some_and(|v| v < cni::version::Version::V0_3_0);
    if old && (v4 > 1 || v6 > 1) {
        return Err(CniError::incompatible(format!(
            "cniVersion {version} results carry at most one IPv4 and one IPv6 address, but {v4} \
            IPv4 and {v6} IPv6 are configured; use cniVersion 0.3.0 or later"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// host-local

/// Parses the host-local configuration: `ranges`, the legacy top-level range keys (prepended,
/// like the reference), `runtimeConfig.ipRanges` (replaces the configured ranges), `routes`,
/// `resolvConf`, `dataDir` and the requested addresses.
pub fn host_local(req: &Request) -> Result<HostLocalConfig, CniError> {
    let ipam = ipam_section(req)?;
    let mut ranges = Vec::new();
    if opt_str(ipam, "subnet", "ipam")?.is_some() {
        ranges.push(RangeSet { ranges: vec![parse_range(ipam, "ipam")?] });
    } else {
        for key in ["rangeStart", "rangeEnd", "gateway"] {
            if opt_str(ipam, key, "ipam")?.is_some() {
                return Err(CniError::config(format!(
                    "ipam.{key} is set but ipam.subnet is missing"
                )));
            }
        }
    }
    if let Some(v) = cni::json::get(ipam, "ranges").filter(|v| !v.is_null()) {
        ranges.extend(parse_range_sets(v, "ipam.ranges")?);
    }
    if let Some(v) = req.conf.runtime("ipRanges") {
        let runtime = parse_range_sets(v, "runtimeConfig.ipRanges")?;
        if !runtime.is_empty() {
            ranges = runtime;
        }
    }
    if ranges.is_empty() {
        return Err(CniError::config(
            "ipam: no address ranges configured (set ipam.ranges or ipam.subnet)",
        ));
    }
    for i in 0..ranges.len() {
        for j in i + 1..ranges.len() {
            for a in &ranges[i].ranges {
                if let Some(b) = ranges[j].ranges.iter().find(|b| a.overlaps(b)) {
                    return Err(CniError::config(format!(
                        "range set {i} ({}) overlaps range set {j} ({}); each address may belong \
                        to one range set only",
                        a.describe(),
                        b.describe()
                    )));
                }
            }
        }
    }
    let v4 = ranges.iter().filter(|s| s.is_v4()).count();
    check_one_per_family(&req.conf.cni_version, v4, ranges.len() - v4)?;

    let routes = parse_routes(cni::json::get(ipam, "routes"), "ipam.routes")?;
    let dns = match opt_str(ipam, "resolvConf", "ipam")? {
        None => Dns::default(),
        Some(path) => {
            // A resolv.conf is a few hundred bytes; a bound keeps a config naming a device
            // (/dev/zero) or a huge file from exhausting memory.
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| {
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(f, RESOLV_CONF_MAX),
                        &mut text,
                    )
                })
                .map_err(|e| CniError::io(format!("reading ipam.resolvConf {path:?}: {e}")))?;
            parse_resolv_conf(&text)
        }
    };
    Ok(HostLocalConfig {
        ranges,
        routes,
        dns,
        data_dir: data_dir(ipam)?,
        requested: requested_ips(req)?,
    })
}

// ---------------------------------------------------------------------------
// static

/// Parses the static configuration. Order of precedence follows the reference: `ipam.addresses`
/// plus CNI_ARGS `IP=` (with `GATEWAY=` applied to the addresses whose subnet holds it); then
/// `args.cni.ips` replaces them, then `runtimeConfig.ips` replaces them.
pub fn static_config(req: &Request) -> Result<StaticConfig, CniError> {
    let ipam = ipam_section(req)?;
    let mut addresses: Vec<IpConfig> = Vec::new();
    if let Some(list) = opt_array(ipam, "addresses", "ipam")? {
        for (i, item) in list.iter().enumerate() {
            let p = format!("ipam.addresses[{i}]");
            let obj = item
                .as_object()
                .ok_or_else(|| CniError::bad_value(&p, show(item), "must be a JSON object"))?;
            let key = join(&p, "address");
            let s = opt_str(obj, "address", &p)?
                .ok_or_else(|| CniError::config(format!("missing {key}")))?;
            let address = parse_cidr(&key, s)?;
            let gateway = opt_ip(obj, "gateway", &p)?;
            if let Some(gw) = gateway {
                check_family(&join(&p, "gateway"), gw, &address, &key)?;
            }
            addresses.push(IpConfig { address, gateway, interface: None });
        }
    }
    addresses.extend(env_list(req, "IP", true)?.into_iter().map(|address| IpConfig {
        address,
        gateway: None,
        interface: None,
    }));
    if let Some(gws) = req.env.arg("GATEWAY") {
        for g in gws.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let gw = parse_ip("CNI_ARGS GATEWAY", g)?;
            for a in addresses.iter_mut().filter(|a| a.address.trunc().contains(&gw)) {
                a.gateway = Some(gw);
            }
        }
    }
    let override_with = |v: &Value, key: &str| -> Result<Vec<IpConfig>, CniError> {
        Ok(ips_from_list(v, key, true)?
            .into_iter()
            .map(|address| IpConfig { address, gateway: None, interface: None })
            .collect())
    };
    if let Some(v) = req.conf.args_cni("ips") {
        addresses = override_with(v, "args.cni.ips")?;
    }
    if let Some(v) = req.conf.runtime("ips") {
        addresses = override_with(v, "runtimeConfig.ips")?;
    }
    if addresses.is_empty() {
        return Err(CniError::config(
            "static: no addresses configured (set ipam.addresses, CNI_ARGS IP=, args.cni.ips or \
            runtimeConfig.ips)",
        ));
    }
    let v4 = addresses.iter().filter(|a| a.address.addr().is_ipv4()).count();
    check_one_per_family(&req.conf.cni_version, v4, addresses.len() - v4)?;
    let routes = parse_routes(cni::json::get(ipam, "routes"), "ipam.routes")?;
    let dns = match cni::json::get(ipam, "dns").filter(|v| !v.is_null()) {
        None => Dns::default(),
        Some(v) => cni::json::from_value(v.clone())
            .map_err(|e| CniError::bad_value("ipam.dns", show(v), e))?,
    };
    Ok(StaticConfig { addresses, routes, dns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::request;
    use serde_json::json;

    fn hl(ipam: Value) -> Result<HostLocalConfig, CniError> {
        host_local(&request(
            "ADD",
            json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": ipam}),
            "",
        ))
    }

    fn err(ipam: Value) -> CniError {
        hl(ipam).unwrap_err()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn legacy_single_range_with_defaults() {
        let c = hl(json!({"type": "host-local", "subnet": "10.1.0.0/24"})).unwrap();
        assert_eq!(c.ranges.len(), 1);
        let r = &c.ranges[0].ranges[0];
        assert_eq!(r.subnet, "10.1.0.0/24".parse::<IpNet>().unwrap());
        assert_eq!((r.start, r.end, r.gateway), (ip("10.1.0.1"), ip("10.1.0.254"), ip("10.1.0.1")));
        assert_eq!(r.usable(), 253);
        assert_eq!(c.data_dir, cni::store::default_ipam_data_dir());
    }

    #[test]
    fn ranges_that_name_the_subnet_edges_stop_short_of_them() {
        // nerdctl's --ip-range 10.1.0.252/30 in 10.1.0.0/24.
        let c = hl(
            json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.253", "rangeEnd": "10.1.0.255"}),
        )
        .unwrap();
        let r = &c.ranges[0].ranges[0];
        assert_eq!((r.start, r.end), (ip("10.1.0.253"), ip("10.1.0.254")));
        let c =
            hl(json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.0", "rangeEnd": "10.1.0.3"}))
                .unwrap();
        let r = &c.ranges[0].ranges[0];
        assert_eq!((r.start, r.end), (ip("10.1.0.1"), ip("10.1.0.3")));
        // IPv6 has no broadcast address: the subnet's last address is usable.
        let c =
            hl(json!({"subnet": "fd00::/120", "rangeStart": "fd00::f0", "rangeEnd": "fd00::ff"}))
                .unwrap();
        assert_eq!(c.ranges[0].ranges[0].end, ip("fd00::ff"));
    }

    #[test]
    fn legacy_keys_all_given() {
        let c = hl(json!({"subnet": "10.1.0.0/16", "rangeStart": "10.1.1.10", "rangeEnd": "10.1.1.20", "gateway": "10.1.0.254", "dataDir": "/tmp/x"})).unwrap();
        let r = &c.ranges[0].ranges[0];
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.1.10"), ip("10.1.1.20"), ip("10.1.0.254"))
        );
        assert_eq!(r.usable(), 11);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn dual_stack_ranges_and_legacy_prepended() {
        let c = hl(json!({
            "subnet": "10.9.0.0/24",
            "ranges": [
                [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50", "gateway": "10.10.0.254"},
                 {"subnet": "172.16.5.0/24"}],
                [{"subnet": "3ffe:ffff:0:1ff::/64", "rangeStart": "3ffe:ffff:0:1ff::10", "rangeEnd": "3ffe:ffff:0:1ff::20"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}, {"dst": "3ffe:ffff:0:1ff::1/64", "mtu": 1400}]
        }))
        .unwrap();
        assert_eq!(c.ranges.len(), 3);
        assert_eq!(c.ranges[0].ranges[0].subnet.to_string(), "10.9.0.0/24");
        assert_eq!(c.ranges[1].ranges.len(), 2);
        assert!(!c.ranges[2].is_v4());
        let v6 = &c.ranges[2].ranges[0];
        assert_eq!(v6.gateway, ip("3ffe:ffff:0:1ff::1"));
        assert_eq!(v6.usable(), 17);
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.routes[1].gw, Some(ip("10.10.5.1")));
        assert_eq!(c.routes[2].dst.to_string(), "3ffe:ffff:0:1ff::/64");
        assert_eq!(c.routes[2].mtu, Some(1400));
    }

    #[test]
    fn ipv6_default_end_is_last_address() {
        let c = hl(json!({"ranges": [[{"subnet": "fd00::/120"}]]})).unwrap();
        let r = &c.ranges[0].ranges[0];
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::ff")));
        let big = hl(json!({"ranges": [[{"subnet": "fd00::/8"}]]})).unwrap();
        assert!(big.ranges[0].usable() > u64::MAX as u128);
    }

    #[test]
    fn runtime_ip_ranges_replace_configured_ranges() {
        let req = request(
            "ADD",
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x",
                   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]},
                   "runtimeConfig": {"ipRanges": [[{"subnet": "10.8.0.0/24"}]]}}),
            "",
        );
        let c = host_local(&req).unwrap();
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.ranges[0].ranges[0].subnet.to_string(), "10.8.0.0/24");
    }

    #[test]
    fn requested_from_all_three_places() {
        let req = request(
            "ADD",
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x",
                   "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"},
                   "args": {"cni": {"ips": ["10.9.0.7"]}},
                   "runtimeConfig": {"ips": ["10.9.0.8/24", "10.9.0.5"]}}),
            "IP=10.9.0.5, 10.9.0.6;FOO=bar",
        );
        let c = host_local(&req).unwrap();
        assert_eq!(
            c.requested,
            vec![ip("10.9.0.5"), ip("10.9.0.6"), ip("10.9.0.7"), ip("10.9.0.8")]
        );
        let bad = request(
            "ADD",
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"subnet": "10.9.0.0/24"}}),
            "IP=10.9.0.300",
        );
        let e = host_local(&bad).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("CNI_ARGS IP") && e.msg.contains("10.9.0.300"), "{}", e.msg);
    }

    #[test]
    fn errors_name_key_and_value() {
        let cases: Vec<(Value, &[&str])> = vec![
            (json!({"subnet": "10.0.0.0/33"}), &["ipam.subnet", "10.0.0.0/33", "longer than 32"]),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
                &["ipam.ranges[0][0].subnet", "10.0.0.0/33"],
            ),
            (json!({"ranges": [[{"subnet": "10.0.0.0"}]]}), &["ipam.ranges[0][0].subnet", "CIDR"]),
            (
                json!({"ranges": [[{"subnet": "10.0.0.x/24"}]]}),
                &["ipam.ranges[0][0].subnet", "10.0.0.x"],
            ),
            (json!({"subnet": "10.9.0.5/24"}), &["ipam.subnet", "host bits", "10.9.0.0/24"]),
            (json!({"subnet": "10.9.0.0/31"}), &["ipam.subnet", "too small"]),
            (
                json!({"subnet": "10.9.0.0/24", "rangeStart": "10.9.1.1"}),
                &["ipam.rangeStart", "10.9.1.1", "outside"],
            ),
            (
                json!({"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.50", "rangeEnd": "10.9.0.40"}),
                &["ipam.rangeEnd", "10.9.0.40", "before rangeStart"],
            ),
            (
                json!({"subnet": "10.9.0.0/24", "gateway": "fd00::1"}),
                &["ipam.gateway", "fd00::1", "IPv6"],
            ),
            (
                json!({"subnet": "10.9.0.0/24", "rangeStart": "nope"}),
                &["ipam.rangeStart", "nope", "not an IP"],
            ),
            (json!({"subnet": 42}), &["ipam.subnet", "42", "string"]),
            (json!({"rangeStart": "10.0.0.5"}), &["ipam.rangeStart", "ipam.subnet is missing"]),
            (json!({"ranges": [[]]}), &["ipam.ranges[0]", "at least one range"]),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                &["ipam.ranges[0][1]", "one family"],
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
                &["ipam.ranges[0][1]", "overlaps"],
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]}),
                &["range set 0", "range set 1", "overlaps"],
            ),
            (json!({"ranges": [[{}]]}), &["missing ipam.ranges[0][0].subnet"]),
            (json!({"type": "host-local"}), &["no address ranges"]),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/40"}]}),
                &["ipam.routes[0].dst", "0.0.0.0/40"],
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
                &["ipam.routes[0].gw"],
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "mtu": -1}]}),
                &["ipam.routes[0].mtu", "-1"],
            ),
            (json!({"subnet": "10.0.0.0/24", "dataDir": 7}), &["ipam.dataDir", "7"]),
            (
                json!({"subnet": "10.0.0.2/30", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.1"}),
                &["ipam.subnet"],
            ),
            (
                json!({"subnet": "10.0.0.0/30", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.1"}),
                &["only the gateway"],
            ),
        ];
        for (ipam, words) in cases {
            let e = err(ipam.clone());
            assert_eq!(e.code, 7, "{ipam}: {}", e.msg);
            for w in words {
                assert!(e.msg.contains(w), "{ipam}: message {:?} lacks {w:?}", e.msg);
            }
        }
        // A device is read up to a bound, not forever.
        let c = hl(json!({"subnet": "10.0.0.0/24", "resolvConf": "/dev/zero"})).unwrap();
        assert!(c.dns.nameservers.is_empty());
        let e = err(json!({"subnet": "10.0.0.0/24", "resolvConf": "/nonexistent/resolv.conf"}));
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("/nonexistent/resolv.conf"));
    }

    #[test]
    fn missing_ipam_section_is_code_7() {
        let req = request("ADD", json!({"cniVersion": "1.0.0", "name": "n", "type": "x"}), "");
        let e = host_local(&req).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam"));
    }

    #[test]
    fn old_versions_take_one_address_per_family() {
        let req = request(
            "ADD",
            json!({"cniVersion": "0.2.0", "name": "n", "type": "x",
                   "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}}),
            "",
        );
        assert_eq!(host_local(&req).unwrap_err().code, 1);
    }

    #[test]
    fn resolv_conf_parsing() {
        let dir = std::env::temp_dir().join(format!("ipam-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("resolv.conf");
        std::fs::write(&f, "# comment\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.org\nsearch a.example b.example\noptions ndots:2 edns0\n").unwrap();
        let c = hl(json!({"subnet": "10.0.0.0/24", "resolvConf": f})).unwrap();
        assert_eq!(c.dns.nameservers, vec!["10.0.0.53", "fd00::53"]);
        assert_eq!(c.dns.domain.as_deref(), Some("example.org"));
        assert_eq!(c.dns.search, vec!["a.example", "b.example"]);
        assert_eq!(c.dns.options, vec!["ndots:2", "edns0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn st(conf: Value, args: &str) -> Result<StaticConfig, CniError> {
        static_config(&request("ADD", conf, args))
    }

    #[test]
    fn static_addresses_routes_dns() {
        let c = st(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"type": "static",
                "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}, {"address": "3ffe:ffff:0:1ff::1/64"}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}}}),
            "",
        )
        .unwrap();
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.addresses[0].address.to_string(), "10.10.0.1/24");
        assert_eq!(c.addresses[0].gateway, Some(ip("10.10.0.254")));
        assert_eq!(c.addresses[1].gateway, None);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.dns.nameservers, vec!["8.8.8.8"]);
    }

    #[test]
    fn static_env_args_and_overrides() {
        let base = json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"type": "static",
            "addresses": [{"address": "10.10.0.1/24"}]}});
        let c = st(base.clone(), "IP=192.168.10.4/24,fd00::4/64;GATEWAY=192.168.10.1").unwrap();
        assert_eq!(c.addresses.len(), 3);
        assert_eq!(c.addresses[1].address.to_string(), "192.168.10.4/24");
        assert_eq!(c.addresses[1].gateway, Some(ip("192.168.10.1")));
        assert_eq!(c.addresses[0].gateway, None);
        let mut with_args = base.clone();
        with_args["args"] = json!({"cni": {"ips": ["10.20.0.5/16"]}});
        let c = st(with_args.clone(), "").unwrap();
        assert_eq!(
            c.addresses.iter().map(|a| a.address.to_string()).collect::<Vec<_>>(),
            vec!["10.20.0.5/16"]
        );
        with_args["runtimeConfig"] = json!({"ips": ["10.30.0.5/16"]});
        let c = st(with_args, "").unwrap();
        assert_eq!(
            c.addresses.iter().map(|a| a.address.to_string()).collect::<Vec<_>>(),
            vec!["10.30.0.5/16"]
        );
    }

    #[test]
    fn static_errors() {
        let e = st(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"type": "static"}}),
            "",
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("no addresses"), "{}", e.msg);
        let e = st(json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"addresses": [{"address": "10.0.0.1"}]}}), "").unwrap_err();
        assert!(e.msg.contains("ipam.addresses[0].address") && e.msg.contains("CIDR"), "{}", e.msg);
        let e = st(json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {}, "runtimeConfig": {"ips": ["10.0.0.1"]}}), "").unwrap_err();
        assert!(e.msg.contains("runtimeConfig.ips[0]"), "{}", e.msg);
        let e = st(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {}}),
            "IP=10.0.0.1/24;GATEWAY=zz",
        )
        .unwrap_err();
        assert!(e.msg.contains("CNI_ARGS GATEWAY") && e.msg.contains("zz"), "{}", e.msg);
        let e = st(json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"addresses": [{"address": "10.0.0.1/24", "gateway": "fd00::1"}]}}), "").unwrap_err();
        assert!(e.msg.contains("ipam.addresses[0].gateway"), "{}", e.msg);
        let e = st(json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": {"addresses": [{"address": "10.0.0.1/24"}], "dns": {"nameservers": "x"}}}), "").unwrap_err();
        assert!(e.msg.contains("ipam.dns"), "{}", e.msg);
    }
}
