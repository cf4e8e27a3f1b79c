//! nftables backend (default).
//!
//! Layout (all ours, nothing else is touched):
//!
//! `table inet cni_bridge` — network rules
//! - `chain br_forward` (hook forward, policy accept): `iifname vmap @from_br`,
//!   `oifname vmap @to_br`. A packet's path is two map lookups, not a walk over networks.
//! - `chain br_post` (hook postrouting, srcnat): `ip saddr vmap @masq4`, `ip6 saddr vmap @masq6`.
//! - per network `<id>`: regular chains `nf_<id>` (forwarded from its bridge), `nt_<id>`
//!   (forwarded to its bridge), `nm_<id>` (masquerade), flushed and refilled by
//!   `apply_network` in the same transaction.
//! - `set bridges` (every managed bridge, for isolation), `set icc_off` (bridges with
//!   icc=false), interval sets `nets4`/`nets6` (every network's subnets; overlapping
//!   subnets of two networks are refused). Element comments hold the network id.
//! - `map live` (bridge -> `jump br_anchor`): while any network is left, `br_anchor`
//!   cannot be deleted, so the last network's "delete everything" transaction is refused
//!   by the kernel (and retried after listing again) if another network appeared
//!   concurrently.
//! - A network whose `from_br` element carries the fingerprint of the same config is left
//!   alone: re-applying an unchanged network is one listing, no transaction.
//!
//! `table bridge cni_icc` — icc=false: bridged (port to port) IP traffic from the
//! network's subnets is dropped (`ip saddr vmap @icc4` / `ip6 saddr vmap @icc6`). The
//! kernel here has no `meta ibrname` (CONFIG_NFT_BRIDGE_META), so the subnet is the key.
//!
//! `table inet cni_portmap` — published ports
//! - maps `hp4`/`hp6` (`daddr . l4proto . dport : addr . port`, one host address) and
//!   `ap4`/`ap6` (`l4proto . dport : addr . port`, all local addresses, `fib daddr type
//!   local`), used by `chain pm_dnat`, jumped from `pm_pre` (prerouting) and `pm_out`
//!   (output, so the host itself and 127.0.0.1 reach published ports).
//! - `chain pm_post` (postrouting): masquerade DNATed connections from 127.0.0.0/8, from
//!   a hairpin source (`hairpin4`/`hairpin6`: container addr -> `jump pm_hp4_<prefix len>`,
//!   which matches `daddr . saddr & mask` in `hpnet4`/`hpnet6`), or to a
//!   `masqall4`/`masqall6` container.
//! - ownership: `map live` (owner hash -> `jump pm_anchor`) and `owners4`/`owners6`
//!   (container address -> owner hash). Every element's comment is its owner
//!   (`<container id>/<ifname>`). Because `add element` of an existing key with other data
//!   fails, a transaction that adds-then-deletes an element with *our* data removes it
//!   when it is ours or gone and aborts when it belongs to someone else — no listing
//!   needed, so add/remove cost does not depend on how many mappings exist. Only that
//!   rare abort falls back to listing the table. The `live` elements hold references on
//!   `pm_anchor`, so "delete pm_anchor + delete table" succeeds exactly when no owner is
//!   left: the emptiness test is one constant-cost transaction too.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::{
    network_id, owner_key, owner_key_of, run_tool, split_owner_key, stable_hash, ContainerPorts,
    Error, Firewall, NetworkRules, PortMapping,
};

pub const BRIDGE_TABLE: &str = "cni_bridge";
pub const ICC_TABLE: &str = "cni_icc";
pub const PORTMAP_TABLE: &str = "cni_portmap";

/// The nftables backend. Runs `nft` (or the given program) in the caller's namespace.
#[derive(Clone, Debug)]
pub struct Nftables {
    nft: String,
}

impl Default for Nftables {
    fn default() -> Self {
        Self::new()
    }
}

impl Nftables {
    pub fn new() -> Self {
        Nftables { nft: "nft".to_string() }
    }

    /// Uses another `nft` binary (path or name).
    pub fn with_program(program: impl Into<String>) -> Self {
        Nftables { nft: program.into() }
    }

    /// Runs one script as one transaction.
    fn apply(&self, what: &str, script: &str) -> Result<(), Error> {
        let r = run_tool(&self.nft, &["-f", "-"], Some(script))?;
        if r.ok {
            Ok(())
        } else {
            Err(Error::new(format!("nft failed ({what}): {}", r.stderr.trim())))
        }
    }

    /// Lists one of our tables; `None` when it does not exist.
    fn list_table(&self, family: &str, table: &str) -> Result<Option<Listing>, Error> {
        let r = run_tool(&self.nft, &["-j", "list", "table", family, table], None)?;
        if !r.ok {
            if r.stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(Error::new(format!(
                "nft failed (list table {family} {table}): {}",
                r.stderr.trim()
            )));
        }
        Listing::parse(&r.stdout).map(Some)
    }

    fn list_map(&self, family: &str, table: &str, map: &str) -> Result<Option<Listing>, Error> {
        let r = run_tool(&self.nft, &["-j", "list", "map", family, table, map], None)?;
        if !r.ok {
            if r.stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(Error::new(format!(
                "nft failed (list map {family} {table} {map}): {}",
                r.stderr.trim()
            )));
        }
        Listing::parse(&r.stdout).map(Some)
    }

    /// Deletes the portmap table when no owner is left (fails harmlessly otherwise).
    /// Removes this owner's elements (one transaction), without the emptiness probe.
    fn remove_ports_only(&self, ports: &ContainerPorts) -> Result<(), Error> {
        if ports.mappings.is_empty() {
            // Nothing named: remove whatever this owner has.
            ports.validate()?;
            return self.remove_port_owner(&ports.container_id, &ports.ifname);
        }
        let script = remove_ports_script(ports)?;
        let what = format!("remove ports of {}/{}", ports.container_id, ports.ifname);
        if self.apply(&what, &script).is_err() {
            // Someone else holds one of the keys: remove exactly what is ours.
            if let Some(cur) = self.list_table("inet", PORTMAP_TABLE)? {
                let o = owner_key(&ports.container_id, &ports.ifname);
                let s = remove_owner_script(&o, Some(ports), &cur);
                if !s.is_empty() {
                    self.apply(&what, &s)?;
                }
            }
        }
        Ok(())
    }

    fn drop_portmap_if_empty(&self) {
        let _ = run_tool(&self.nft, &["-f", "-"], Some(&portmap_drop_if_empty_script()));
    }
}

// ---------------------------------------------------------------------------------------
// Listing (JSON) model.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Elem {
    /// Key in nft syntax.
    pub key: String,
    /// Data in nft syntax (maps only).
    pub data: Option<String>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ChainInfo {
    pub name: String,
    pub hook: Option<String>,
    pub policy: Option<String>,
    pub family: String,
    pub table: String,
}

/// What `nft -j list ...` showed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Listing {
    pub chains: Vec<ChainInfo>,
    /// Rule count per chain.
    pub rules: BTreeMap<String, usize>,
    /// Elements per set/map name.
    pub sets: BTreeMap<String, Vec<Elem>>,
}

impl Listing {
    pub(crate) fn parse(text: &str) -> Result<Listing, Error> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::new(format!("cannot parse nft JSON output: {e}")))?;
        let mut out = Listing::default();
        let items = v.get("nftables").and_then(|x| x.as_array()).cloned().unwrap_or_default();
        for item in items {
            if let Some(c) = item.get("chain") {
                out.chains.push(ChainInfo {
                    name: str_of(c, "name"),
                    hook: c.get("hook").and_then(|h| h.as_str()).map(str::to_string),
                    policy: c.get("policy").and_then(|h| h.as_str()).map(str::to_string),
                    family: str_of(c, "family"),
                    table: str_of(c, "table"),
                });
            } else if let Some(r) = item.get("rule") {
                *out.rules.entry(str_of(r, "chain")).or_insert(0) += 1;
            } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
                let name = str_of(s, "name");
                let is_map = item.get("map").is_some();
                let key_quoted = s.get("type").and_then(|t| t.as_str()) == Some("ifname");
                let data_quoted = s.get("map").and_then(|t| t.as_str()) == Some("ifname");
                let mut elems = Vec::new();
                for e in s.get("elem").and_then(|x| x.as_array()).cloned().unwrap_or_default() {
                    let (k, d) = if is_map {
                        match e.as_array() {
                            Some(pair) if pair.len() == 2 => {
                                (pair[0].clone(), Some(pair[1].clone()))
                            }
                            _ => (e.clone(), None),
                        }
                    } else {
                        (e.clone(), None)
                    };
                    let (kv, comment) = match k.get("elem") {
                        Some(inner) => (
                            inner.get("val").cloned().unwrap_or(Value::Null),
                            inner.get("comment").and_then(|c| c.as_str()).map(str::to_string),
                        ),
                        None => (k.clone(), None),
                    };
                    elems.push(Elem {
                        key: json_to_nft(&kv, key_quoted),
                        data: d.map(|d| json_to_nft(&d, data_quoted)),
                        comment,
                    });
                }
                out.sets.insert(name, elems);
            }
        }
        Ok(out)
    }

    fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name == name)
    }

    fn elems(&self, set: &str) -> &[Elem] {
        self.sets.get(set).map(|v| v.as_slice()).unwrap_or(&[])
    }

    fn find(&self, set: &str, key: &str) -> Option<&Elem> {
        self.elems(set).iter().find(|e| e.key == key)
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string()
}

/// Renders a JSON value of nft's output back in nft's input syntax.
fn json_to_nft(v: &Value, quote: bool) -> String {
    match v {
        Value::String(s) => {
            if quote {
                format!("\"{s}\"")
            } else {
                s.clone()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(|c| c.as_array()) {
                return c.iter().map(|x| json_to_nft(x, false)).collect::<Vec<_>>().join(" . ");
            }
            if let Some(p) = o.get("prefix") {
                return format!(
                    "{}/{}",
                    p.get("addr").map(|a| json_to_nft(a, false)).unwrap_or_default(),
                    p.get("len").map(|a| json_to_nft(a, false)).unwrap_or_default()
                );
            }
            if let Some(r) = o.get("range").and_then(|r| r.as_array()) {
                if r.len() == 2 {
                    return format!("{}-{}", json_to_nft(&r[0], false), json_to_nft(&r[1], false));
                }
            }
            for verdict in ["jump", "goto"] {
                if let Some(j) = o.get(verdict) {
                    return format!("{verdict} {}", str_of(j, "target"));
                }
            }
            for verdict in ["accept", "drop", "return", "continue"] {
                if o.contains_key(verdict) {
                    return verdict.to_string();
                }
            }
            v.to_string()
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Network rules.

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// A comment-safe rendering of a free-form name.
fn comment_text(s: &str) -> String {
    let t: String =
        s.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    t.chars().take(100).collect()
}

struct NetNames {
    id: String,
    from: String,
    to: String,
    masq: String,
}

fn net_names(network: &str) -> NetNames {
    let id = network_id(network);
    NetNames { from: format!("nf_{id}"), to: format!("nt_{id}"), masq: format!("nm_{id}"), id }
}

/// Is this chain name one of a network's chains?
fn is_network_chain(name: &str) -> bool {
    name.starts_with("nf_") || name.starts_with("nt_") || name.starts_with("nm_")
}

/// Ensures the table, its sets/maps and base chains. `chains` (with their comments) are
/// created right after the table: nft 1.0.6 sends the elements of an interval map that is
/// created in the same batch together with the map, so a chain that its verdicts jump to
/// must already exist at that point.
fn bridge_base_script(chains: &[(&str, &str)]) -> String {
    let t = format!("inet {BRIDGE_TABLE}");
    let mut s = String::new();
    s += &format!("add table {t}\n");
    s += &format!("add chain {t} br_anchor\n");
    for (c, comment) in chains {
        s += &format!("add chain {t} {c} {{ comment {}; }}\n", q(comment));
    }
    s += &format!("add map {t} live {{ type ifname : verdict; }}\n");
    s += &format!("add set {t} bridges {{ type ifname; }}\n");
    s += &format!("add set {t} icc_off {{ type ifname; }}\n");
    s += &format!("add set {t} nets4 {{ type ipv4_addr; flags interval; }}\n");
    s += &format!("add set {t} nets6 {{ type ipv6_addr; flags interval; }}\n");
    s += &format!("add map {t} from_br {{ type ifname : verdict; }}\n");
    s += &format!("add map {t} to_br {{ type ifname : verdict; }}\n");
    s += &format!("add map {t} masq4 {{ type ipv4_addr : verdict; flags interval; }}\n");
    s += &format!("add map {t} masq6 {{ type ipv6_addr : verdict; flags interval; }}\n");
    s += &format!(
        "add chain {t} br_forward {{ type filter hook forward priority filter; policy accept; }}\n"
    );
    s += &format!("flush chain {t} br_forward\n");
    s += &format!("add rule {t} br_forward iifname vmap @from_br\n");
    s += &format!("add rule {t} br_forward oifname vmap @to_br\n");
    s += &format!(
        "add chain {t} br_post {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
    );
    s += &format!("flush chain {t} br_post\n");
    s += &format!("add rule {t} br_post ip saddr vmap @masq4\n");
    s += &format!("add rule {t} br_post ip6 saddr vmap @masq6\n");
    s
}

fn icc_base_script() -> String {
    let t = format!("bridge {ICC_TABLE}");
    let mut s = String::new();
    s += &format!("add table {t}\n");
    s += &format!("add map {t} icc4 {{ type ipv4_addr : verdict; flags interval; }}\n");
    s += &format!("add map {t} icc6 {{ type ipv6_addr : verdict; flags interval; }}\n");
    s += &format!("add chain {t} icc_forward {{ type filter hook forward priority filter; policy accept; }}\n");
    s += &format!("flush chain {t} icc_forward\n");
    s += &format!("add rule {t} icc_forward ip saddr vmap @icc4\n");
    s += &format!("add rule {t} icc_forward ip6 saddr vmap @icc6\n");
    s
}

/// Rules of the three per-network chains.
pub(crate) fn network_chain_rules(net: &NetworkRules) -> (Vec<String>, Vec<String>, Vec<String>) {
    let b = q(&net.bridge);
    let mut from = Vec::new();
    let mut to = Vec::new();
    if net.internal {
        from.push(format!("oifname != {b} drop"));
        to.push(format!("iifname != {b} drop"));
    } else if net.isolate {
        from.push(format!("oifname != {b} oifname @bridges drop"));
        to.push(format!("iifname != {b} iifname @bridges drop"));
    }
    if !net.icc {
        // Seen here only when br_netfilter passes bridged traffic to the IP hooks.
        from.push(format!("oifname {b} drop"));
    }
    let mut masq = Vec::new();
    if net.masquerades() && !net.subnets.is_empty() {
        let nets = normalized(&net.subnets);
        for n in &nets {
            match n {
                IpNet::V4(n) => masq.push(format!("ip daddr {n} return")),
                IpNet::V6(n) => masq.push(format!("ip6 daddr {n} return")),
            }
        }
        if nets.iter().any(|n| matches!(n, IpNet::V4(_))) {
            masq.push("ip daddr 224.0.0.0/4 return".to_string());
        }
        if nets.iter().any(|n| matches!(n, IpNet::V6(_))) {
            masq.push("ip6 daddr ff00::/8 return".to_string());
        }
        masq.push("masquerade".to_string());
    }
    (from, to, masq)
}

fn normalized(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in nets {
        let t = n.trunc();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn fam_set(prefix: &str, n: &IpNet) -> String {
    match n {
        IpNet::V4(_) => format!("{prefix}4"),
        IpNet::V6(_) => format!("{prefix}6"),
    }
}

/// Text form of a subnet the way nft lists an interval element (a /32 or /128 is listed
/// as a plain address).
fn net_key(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Comment of a network's chains and of its `from_br` element (nft 1.0.6 lists element
/// comments in JSON, not chain comments): its name and a fingerprint of everything applied,
/// so an unchanged network is recognised from the listing.
fn network_comment(net: &NetworkRules) -> String {
    let (from, to, masq) = network_chain_rules(net);
    let fp = format!(
        "{}|{}|{:?}|{}|{from:?}|{to:?}|{masq:?}",
        net.network,
        net.bridge,
        normalized(&net.subnets),
        net.icc
    );
    comment_text(&format!("cni network {} cfg={:016x}", net.network, stable_hash(&fp)))
}

/// True when the listing already has exactly this network's rules (nothing to do).
pub(crate) fn network_up_to_date(net: &NetworkRules, cur: &Listing) -> bool {
    let names = net_names(&net.network);
    let want = network_comment(net);
    net.icc
        && cur.find("from_br", &q(&net.bridge)).is_some_and(|e| e.comment.as_deref() == Some(want.as_str()))
        && check_network_listing(net, cur, None).is_empty()
        // No leftovers of an earlier configuration.
        && cur.elems("from_br").iter().filter(|e| e.data.as_deref() == Some(&format!("jump {}", names.from))).count() == 1
        && cur.elems("icc_off").iter().all(|e| e.comment.as_deref() != Some(names.id.as_str()))
        && cur.sets.iter().filter(|(k, _)| k.starts_with("nets")).flat_map(|(_, v)| v).filter(|e| e.comment.as_deref() == Some(names.id.as_str())).count()
            == normalized(&net.subnets).len()
        && cur.sets.iter().filter(|(k, _)| k.starts_with("masq")).flat_map(|(_, v)| v).filter(|e| e.data.as_deref() == Some(&format!("jump {}", names.masq))).count()
            == if net.masquerades() { normalized(&net.subnets).len() } else { 0 }
}

/// The transaction of `apply_network`, given the current `cni_bridge` table.
pub(crate) fn apply_network_script(
    net: &NetworkRules,
    cur: Option<&Listing>,
) -> Result<String, Error> {
    net.validate()?;
    let names = net_names(&net.network);
    let t = format!("inet {BRIDGE_TABLE}");
    let empty = Listing::default();
    let cur = cur.unwrap_or(&empty);
    let bq = q(&net.bridge);
    let jump_from = format!("jump {}", names.from);
    let jump_to = format!("jump {}", names.to);
    let jump_masq = format!("jump {}", names.masq);

    // The bridge must not already belong to another network.
    for map in ["from_br", "to_br"] {
        if let Some(e) = cur.find(map, &bq) {
            let d = e.data.as_deref().unwrap_or("");
            if d != jump_from && d != jump_to {
                let other = d.split_once('_').map(|x| x.1).unwrap_or(d);
                return Err(Error::new(format!(
                    "bridge {:?} of network {:?} is already used by network id {:?}",
                    net.bridge, net.network, other
                )));
            }
        }
    }

    let subnets = normalized(&net.subnets);
    // A subnet must not belong to another network (overlaps are refused by the kernel,
    // identical intervals would be accepted silently).
    for n in &subnets {
        if let Some(e) = cur.find(&fam_set("nets", n), &net_key(n)) {
            if e.comment.as_deref() != Some(names.id.as_str()) {
                return Err(Error::new(format!(
                    "subnet {n} of network {:?} is already used by network id {:?}",
                    net.network,
                    e.comment.as_deref().unwrap_or("?")
                )));
            }
        }
    }
    let (from_rules, to_rules, masq_rules) = network_chain_rules(net);
    let want_masq = !masq_rules.is_empty();

    let comment = network_comment(net);
    let mut early: Vec<(&str, &str)> = vec![(&names.from, &comment), (&names.to, &comment)];
    if want_masq {
        early.push((&names.masq, &comment));
    }
    let mut s = bridge_base_script(&early);

    // Old elements of this network that the new rules do not have.
    for map in ["from_br", "to_br"] {
        for e in cur.elems(map) {
            let d = e.data.as_deref().unwrap_or("");
            // Our bridge's from_br element is re-added below with the new fingerprint.
            if (d == jump_from || d == jump_to) && (e.key != bq || map == "from_br") {
                s += &format!("delete element {t} {map} {{ {} }}\n", e.key);
            }
        }
    }
    for set in ["bridges", "icc_off", "live"] {
        for e in cur.elems(set) {
            if e.comment.as_deref() == Some(names.id.as_str()) {
                if (set == "bridges" || set == "live") && e.key != bq {
                    s += &format!("delete element {t} {set} {{ {} }}\n", e.key);
                }
                if set == "icc_off" && (e.key != bq || net.icc) {
                    s += &format!("delete element {t} {set} {{ {} }}\n", e.key);
                }
            }
        }
    }
    let had_icc_off =
        cur.elems("icc_off").iter().any(|e| e.comment.as_deref() == Some(names.id.as_str()));
    let mut old_nets: Vec<String> = Vec::new();
    for set in ["nets4", "nets6"] {
        for e in cur.elems(set) {
            if e.comment.as_deref() == Some(names.id.as_str()) {
                old_nets.push(e.key.clone());
                if !subnets.iter().any(|n| net_key(n) == e.key) {
                    s += &format!("delete element {t} {set} {{ {} }}\n", e.key);
                }
            }
        }
    }
    for set in ["masq4", "masq6"] {
        for e in cur.elems(set) {
            if e.data.as_deref() == Some(jump_masq.as_str())
                && (!want_masq || !subnets.iter().any(|n| net_key(n) == e.key))
            {
                s += &format!("delete element {t} {set} {{ {} }}\n", e.key);
            }
        }
    }
    // icc elements of the bridge table: drop the old ones (add-then-delete is safe: the
    // data is always `drop`, and the subnets are ours since nets4/nets6 refuse overlaps).
    let mut icc = String::new();
    if had_icc_off {
        for k in &old_nets {
            let set = if k.contains(':') { "icc6" } else { "icc4" };
            let still = !net.icc && subnets.iter().any(|n| &net_key(n) == k);
            if !still {
                icc += &format!("add element bridge {ICC_TABLE} {set} {{ {k} : drop }}\n");
                icc += &format!("delete element bridge {ICC_TABLE} {set} {{ {k} }}\n");
            }
        }
    }

    // Chains (created above), flushed and refilled.
    for (chain, rules) in [(&names.from, &from_rules), (&names.to, &to_rules)] {
        s += &format!("flush chain {t} {chain}\n");
        for r in rules.iter() {
            s += &format!("add rule {t} {chain} {r}\n");
        }
    }
    if want_masq {
        s += &format!("flush chain {t} {}\n", names.masq);
        for r in &masq_rules {
            s += &format!("add rule {t} {} {r}\n", names.masq);
        }
    } else if cur.has_chain(&names.masq) {
        s += &format!("flush chain {t} {}\n", names.masq);
        s += &format!("delete chain {t} {}\n", names.masq);
    }

    // Elements.
    let idq = q(&names.id);
    s += &format!("add element {t} bridges {{ {bq} comment {idq} }}\n");
    s += &format!("add element {t} live {{ {bq} comment {idq} : jump br_anchor }}\n");
    for n in &subnets {
        s +=
            &format!("add element {t} {} {{ {} comment {idq} }}\n", fam_set("nets", n), net_key(n));
    }
    s += &format!("add element {t} from_br {{ {bq} comment {} : {jump_from} }}\n", q(&comment));
    s += &format!("add element {t} to_br {{ {bq} : {jump_to} }}\n");
    if want_masq {
        for n in &subnets {
            s += &format!(
                "add element {t} {} {{ {} : {jump_masq} }}\n",
                fam_set("masq", n),
                net_key(n)
            );
        }
    }
    if !net.icc {
        s += &format!("add element {t} icc_off {{ {bq} comment {idq} }}\n");
    }
    if !icc.is_empty() || !net.icc {
        s += &icc_base_script();
        s += &icc;
        if !net.icc {
            for n in &subnets {
                s += &format!(
                    "add element bridge {ICC_TABLE} {} {{ {} comment {idq} : drop }}\n",
                    fam_set("icc", n),
                    net_key(n)
                );
            }
        }
    }
    Ok(s)
}

/// The transaction of `remove_network`; `None` when there is nothing to do.
pub(crate) fn remove_network_script(network: &str, cur: &Listing) -> Option<String> {
    let names = net_names(network);
    let t = format!("inet {BRIDGE_TABLE}");
    let ours = [names.from.as_str(), names.to.as_str(), names.masq.as_str()];
    let others_left =
        cur.chains.iter().any(|c| is_network_chain(&c.name) && !ours.contains(&c.name.as_str()));
    let present = cur.has_chain(&names.from)
        || cur.has_chain(&names.to)
        || cur.has_chain(&names.masq)
        || cur.sets.values().flatten().any(|e| e.comment.as_deref() == Some(names.id.as_str()));
    let mut s = String::new();
    if !others_left {
        // Last network: everything goes. Every network's `live` element references
        // br_anchor, so if another network was applied since the listing, deleting
        // br_anchor fails (EBUSY), the whole transaction is refused and the caller lists
        // again.
        for e in cur.elems("live") {
            if e.comment.as_deref() == Some(names.id.as_str()) {
                s += &format!("delete element {t} live {{ {} }}\n", e.key);
            }
        }
        s += &format!("delete chain {t} br_anchor\n");
        s += &format!("delete table {t}\n");
        s += &format!("add table bridge {ICC_TABLE}\ndelete table bridge {ICC_TABLE}\n");
        return Some(s);
    }
    if !present {
        return None;
    }
    let had_icc_off =
        cur.elems("icc_off").iter().any(|e| e.comment.as_deref() == Some(names.id.as_str()));
    let targets: Vec<String> = ours.iter().map(|c| format!("jump {c}")).collect();
    for map in ["from_br", "to_br", "masq4", "masq6"] {
        for e in cur.elems(map) {
            if e.data.as_ref().is_some_and(|d| targets.contains(d)) {
                s += &format!("delete element {t} {map} {{ {} }}\n", e.key);
            }
        }
    }
    let mut icc = String::new();
    for set in ["bridges", "icc_off", "nets4", "nets6", "live"] {
        for e in cur.elems(set) {
            if e.comment.as_deref() == Some(names.id.as_str()) {
                s += &format!("delete element {t} {set} {{ {} }}\n", e.key);
                if had_icc_off && set.starts_with("nets") {
                    let icc_set = if set == "nets4" { "icc4" } else { "icc6" };
                    icc += &format!(
                        "add element bridge {ICC_TABLE} {icc_set} {{ {} : drop }}\n",
                        e.key
                    );
                    icc +=
                        &format!("delete element bridge {ICC_TABLE} {icc_set} {{ {} }}\n", e.key);
                }
            }
        }
    }
    for c in ours {
        if cur.has_chain(c) {
            s += &format!("flush chain {t} {c}\n");
            s += &format!("delete chain {t} {c}\n");
        }
    }
    if !icc.is_empty() {
        s += &icc_base_script();
        s += &icc;
    }
    Some(s)
}

/// Differences between the wanted network rules and the listing (empty = all present).
pub(crate) fn check_network_listing(
    net: &NetworkRules,
    cur: &Listing,
    icc: Option<&Listing>,
) -> Vec<String> {
    let names = net_names(&net.network);
    let mut missing = Vec::new();
    let (from_rules, to_rules, masq_rules) = network_chain_rules(net);
    for (chain, n) in [("br_forward", 2), ("br_post", 2)] {
        if !cur.has_chain(chain) || cur.rules.get(chain).copied().unwrap_or(0) != n {
            missing.push(format!("base chain {chain}"));
        }
    }
    let mut chains = vec![(&names.from, from_rules.len()), (&names.to, to_rules.len())];
    if !masq_rules.is_empty() {
        chains.push((&names.masq, masq_rules.len()));
    }
    for (chain, n) in chains {
        if !cur.has_chain(chain) {
            missing.push(format!("chain {chain}"));
        } else if cur.rules.get(chain.as_str()).copied().unwrap_or(0) != n {
            missing.push(format!(
                "chain {chain} has {} rules, expected {n}",
                cur.rules.get(chain.as_str()).copied().unwrap_or(0)
            ));
        }
    }
    let bq = q(&net.bridge);
    let want = |set: &str, key: &str, data: Option<String>, missing: &mut Vec<String>| match cur
        .find(set, key)
    {
        Some(e) if data.is_none() || e.data == data => {}
        _ => missing.push(format!("element {key} in {set}")),
    };
    want("from_br", &bq, Some(format!("jump {}", names.from)), &mut missing);
    want("to_br", &bq, Some(format!("jump {}", names.to)), &mut missing);
    want("bridges", &bq, None, &mut missing);
    want("live", &bq, Some("jump br_anchor".to_string()), &mut missing);
    let subnets = normalized(&net.subnets);
    for n in &subnets {
        want(&fam_set("nets", n), &net_key(n), None, &mut missing);
        if !masq_rules.is_empty() {
            want(
                &fam_set("masq", n),
                &net_key(n),
                Some(format!("jump {}", names.masq)),
                &mut missing,
            );
        }
    }
    if !net.icc {
        want("icc_off", &bq, None, &mut missing);
        match icc {
            None => missing.push(format!("table bridge {ICC_TABLE}")),
            Some(l) => {
                for n in &subnets {
                    let set = fam_set("icc", n);
                    if l.find(&set, &net_key(n)).is_none() {
                        missing.push(format!("element {} in {ICC_TABLE} {set}", net_key(n)));
                    }
                }
            }
        }
    }
    missing
}

// ---------------------------------------------------------------------------------------
// Port mappings.

/// 15 hex digits of the owner's hash: fits an `ifname`-typed key (16 bytes with NUL).
pub(crate) fn owner_hash(owner: &str) -> String {
    format!("{:015x}", stable_hash(owner) >> 4)
}

fn portmap_base_script() -> String {
    let t = format!("inet {PORTMAP_TABLE}");
    let mut s = String::new();
    s += &format!("add table {t}\n");
    s += &format!("add chain {t} pm_anchor\n");
    s += &format!("add map {t} live {{ type ifname : verdict; }}\n");
    s += &format!("add map {t} owners4 {{ type ipv4_addr : ifname; }}\n");
    s += &format!("add map {t} owners6 {{ type ipv6_addr : ifname; }}\n");
    s += &format!("add map {t} hp4 {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}\n");
    s += &format!(
        "add map {t} ap4 {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n"
    );
    s += &format!("add map {t} hp6 {{ type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }}\n");
    s += &format!(
        "add map {t} ap6 {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}\n"
    );
    s += &format!("add map {t} hairpin4 {{ type ipv4_addr : verdict; }}\n");
    s += &format!("add map {t} hairpin6 {{ type ipv6_addr : verdict; }}\n");
    s += &format!("add set {t} hpnet4 {{ type ipv4_addr . ipv4_addr; }}\n");
    s += &format!("add set {t} hpnet6 {{ type ipv6_addr . ipv6_addr; }}\n");
    s += &format!("add set {t} masqall4 {{ type ipv4_addr; }}\n");
    s += &format!("add set {t} masqall6 {{ type ipv6_addr; }}\n");
    s += &format!("add chain {t} pm_dnat\n");
    s += &format!("flush chain {t} pm_dnat\n");
    s += &format!("add rule {t} pm_dnat dnat ip to ip daddr . meta l4proto . th dport map @hp4\n");
    s +=
        &format!("add rule {t} pm_dnat dnat ip6 to ip6 daddr . meta l4proto . th dport map @hp6\n");
    s += &format!(
        "add rule {t} pm_dnat fib daddr type local dnat ip to meta l4proto . th dport map @ap4\n"
    );
    s += &format!(
        "add rule {t} pm_dnat fib daddr type local dnat ip6 to meta l4proto . th dport map @ap6\n"
    );
    s += &format!(
        "add chain {t} pm_pre {{ type nat hook prerouting priority dstnat; policy accept; }}\n"
    );
    s += &format!("flush chain {t} pm_pre\n");
    s += &format!("add rule {t} pm_pre jump pm_dnat\n");
    s +=
        &format!("add chain {t} pm_out {{ type nat hook output priority -100; policy accept; }}\n");
    s += &format!("flush chain {t} pm_out\n");
    s += &format!("add rule {t} pm_out jump pm_dnat\n");
    s += &format!(
        "add chain {t} pm_post {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
    );
    s += &format!("flush chain {t} pm_post\n");
    s += &format!(
        "add rule {t} pm_post ct status dnat oifname != \"lo\" ip saddr 127.0.0.0/8 masquerade\n"
    );
    s += &format!("add rule {t} pm_post ct status dnat ip daddr vmap @hairpin4\n");
    s += &format!("add rule {t} pm_post ct status dnat ip daddr @masqall4 masquerade\n");
    s += &format!("add rule {t} pm_post ct status dnat ip6 daddr vmap @hairpin6\n");
    s += &format!("add rule {t} pm_post ct status dnat ip6 daddr @masqall6 masquerade\n");
    s
}

/// Name of the hairpin chain of one prefix length.
fn hairpin_chain(v6: bool, len: u8) -> String {
    format!("pm_hp{}_{len}", if v6 { 6 } else { 4 })
}

/// A hairpin chain: masquerade when the source is in the container's own network, i.e.
/// `daddr . (saddr & mask)` is a (container address . network address) element of
/// `hpnet4`/`hpnet6`. One chain per prefix length in use; containers reach theirs through
/// the `hairpin4`/`hairpin6` verdict maps keyed by their address. (A concatenated
/// interval set would do this in one lookup, but deleting from it costs the kernel time
/// proportional to its size.)
fn hairpin_chain_script(v6: bool, len: u8) -> String {
    let t = format!("inet {PORTMAP_TABLE}");
    let c = hairpin_chain(v6, len);
    let rule = if v6 {
        let mask = ipnet::Ipv6Net::new(std::net::Ipv6Addr::UNSPECIFIED, len)
            .map(|n| n.netmask())
            .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED);
        format!("ip6 daddr . ip6 saddr & {mask} @hpnet6 masquerade")
    } else {
        let mask = ipnet::Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, len)
            .map(|n| n.netmask())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        format!("ip daddr . ip saddr & {mask} @hpnet4 masquerade")
    };
    format!("add chain {t} {c}\nflush chain {t} {c}\nadd rule {t} {c} {rule}\n")
}

/// The base script plus the hairpin chains this owner needs.
fn portmap_base_for(p: &ContainerPorts) -> String {
    let mut s = portmap_base_script();
    for (v6, len) in owner_elems(p).chains {
        s += &hairpin_chain_script(v6, len);
    }
    s
}

const PORTMAP_BASE_RULES: [(&str, usize); 4] =
    [("pm_dnat", 4), ("pm_pre", 1), ("pm_out", 1), ("pm_post", 5)];

fn portmap_drop_if_empty_script() -> String {
    // Fails with EBUSY while any `live` element references pm_anchor.
    format!("delete chain inet {PORTMAP_TABLE} pm_anchor\ndelete table inet {PORTMAP_TABLE}\n")
}

fn v(ip: IpAddr) -> char {
    if ip.is_ipv4() {
        '4'
    } else {
        '6'
    }
}

/// (map name, key, data) of one mapping in nft syntax.
pub(crate) fn mapping_element(m: &PortMapping) -> (String, String, String) {
    let f = v(m.container_ip);
    let proto = m.protocol.as_str();
    let data = format!("{} . {}", m.container_ip, m.container_port);
    match m.specific_host_ip() {
        Some(h) => (format!("hp{f}"), format!("{h} . {proto} . {}", m.host_port), data),
        None => (format!("ap{f}"), format!("{proto} . {}", m.host_port), data),
    }
}

/// Per-owner element lines: (set, key, data, comment-able).
struct OwnerElems {
    live: (String, String),
    owners: Vec<(String, String, String)>,
    maps: Vec<(String, String, String)>,
    sets: Vec<(String, String)>,
    /// Hairpin chains (v6, prefix length) the elements jump to.
    chains: Vec<(bool, u8)>,
}

fn owner_elems(p: &ContainerPorts) -> OwnerElems {
    let o = owner_key(&p.container_id, &p.ifname);
    let h = owner_hash(&o);
    let mut owners = Vec::new();
    let mut sets = Vec::new();
    let mut maps: Vec<(String, String, String)> = Vec::new();
    let mut chains = Vec::new();
    for ip in p.container_ips() {
        owners.push((format!("owners{}", v(ip)), ip.to_string(), q(&h)));
        if p.masquerade_hairpin {
            let nets = p.hairpin_sources(ip);
            let n = nets.iter().find(|n| n.contains(&ip)).unwrap_or(&nets[0]);
            let chain = (ip.is_ipv6(), n.prefix_len());
            maps.push((
                format!("hairpin{}", v(ip)),
                ip.to_string(),
                format!("jump {}", hairpin_chain(chain.0, chain.1)),
            ));
            sets.push((format!("hpnet{}", v(ip)), format!("{ip} . {}", n.network())));
            if !chains.contains(&chain) {
                chains.push(chain);
            }
        }
        if p.masq_all {
            sets.push((format!("masqall{}", v(ip)), ip.to_string()));
        }
    }
    for m in &p.mappings {
        let e = mapping_element(m);
        if !maps.contains(&e) {
            maps.push(e);
        }
    }
    OwnerElems { live: (q(&h), "jump pm_anchor".to_string()), owners, maps, sets, chains }
}

/// Refuses a request that maps one host port twice to different targets.
fn check_self_conflicts(p: &ContainerPorts) -> Result<(), Error> {
    let mut seen: BTreeMap<(String, String), (String, &PortMapping)> = BTreeMap::new();
    for m in &p.mappings {
        let (map, key, data) = mapping_element(m);
        if let Some((d, other)) = seen.get(&(map.clone(), key.clone())) {
            if *d != data {
                return Err(Error::new(format!(
                    "port mappings {} and {} publish the same host port",
                    other.describe(),
                    m.describe()
                )));
            }
        }
        seen.insert((map, key), (data, m));
    }
    Ok(())
}

/// The constant-cost `add_ports` transaction: our elements only (the table is assumed to
/// exist; when it does not, the caller retries with [`portmap_base_script`] in front).
pub(crate) fn add_ports_script(p: &ContainerPorts) -> Result<String, Error> {
    p.validate()?;
    check_self_conflicts(p)?;
    let t = format!("inet {PORTMAP_TABLE}");
    let oq = q(&owner_key(&p.container_id, &p.ifname));
    let e = owner_elems(p);
    let mut s = String::new();
    s += &format!("add element {t} live {{ {} comment {oq} : {} }}\n", e.live.0, e.live.1);
    for (set, k, d) in &e.owners {
        s += &format!("add element {t} {set} {{ {k} comment {oq} : {d} }}\n");
    }
    for (set, k, d) in &e.maps {
        s += &format!("add element {t} {set} {{ {k} comment {oq} : {d} }}\n");
    }
    for (set, k) in &e.sets {
        s += &format!("add element {t} {set} {{ {k} comment {oq} }}\n");
    }
    Ok(s)
}

/// The constant-cost `remove_ports` transaction: add-then-delete each element with our
/// data, which removes it when ours or gone and aborts when someone else holds the key.
pub(crate) fn remove_ports_script(p: &ContainerPorts) -> Result<String, Error> {
    p.validate()?;
    let t = format!("inet {PORTMAP_TABLE}");
    let e = owner_elems(p);
    let mut s = String::new();
    for (set, k, d) in &e.maps {
        s +=
            &format!("add element {t} {set} {{ {k} : {d} }}\ndelete element {t} {set} {{ {k} }}\n");
    }
    for (set, k) in &e.sets {
        s += &format!("add element {t} {set} {{ {k} }}\ndelete element {t} {set} {{ {k} }}\n");
    }
    for (set, k, d) in &e.owners {
        s +=
            &format!("add element {t} {set} {{ {k} : {d} }}\ndelete element {t} {set} {{ {k} }}\n");
    }
    s += &format!(
        "add element {t} live {{ {} : {} }}\ndelete element {t} live {{ {} }}\n",
        e.live.0, e.live.1, e.live.0
    );
    Ok(s)
}

const OWNED_SETS: [&str; 13] = [
    "hp4", "ap4", "hp6", "ap6", "hairpin4", "hairpin6", "hpnet4", "hpnet6", "masqall4", "masqall6",
    "owners4", "owners6", "live",
];

/// Delete lines for everything that belongs to the owners whose hashes are given.
fn purge_lines(
    cur: &Listing,
    hashes: &HashSet<String>,
    done: &mut HashSet<(String, String)>,
) -> String {
    let t = format!("inet {PORTMAP_TABLE}");
    let mut s = String::new();
    for set in OWNED_SETS {
        for e in cur.elems(set) {
            let by_comment = e.comment.as_deref().is_some_and(|c| hashes.contains(&owner_hash(c)));
            let by_key = set == "live" && hashes.contains(e.key.trim_matches('"'));
            let by_data = set.starts_with("owners")
                && e.data.as_deref().is_some_and(|d| hashes.contains(d.trim_matches('"')));
            if (by_comment || by_key || by_data) && done.insert((set.to_string(), e.key.clone())) {
                s += &format!("delete element {t} {set} {{ {} }}\n", e.key);
            }
        }
    }
    s
}

/// The recovery transaction of `add_ports` when the fast one aborted: stale owners of our
/// addresses and stale holders of our host ports are purged; a live holder is a conflict.
pub(crate) fn add_ports_recovery_script(
    p: &ContainerPorts,
    cur: &Listing,
) -> Result<String, Error> {
    let o = owner_key(&p.container_id, &p.ifname);
    let h = owner_hash(&o);
    let live: HashSet<String> =
        cur.elems("live").iter().map(|e| e.key.trim_matches('"').to_string()).collect();
    let mut stale: HashSet<String> = HashSet::new();
    for ip in p.container_ips() {
        if let Some(e) = cur.find(&format!("owners{}", v(ip)), &ip.to_string()) {
            let holder = e.data.as_deref().unwrap_or("").trim_matches('"').to_string();
            if holder != h {
                // Our address (IPAM gave it to us): the previous holder is gone.
                stale.insert(holder);
            }
        }
    }
    let t = format!("inet {PORTMAP_TABLE}");
    let mut done = HashSet::new();
    let mut purge = purge_lines(cur, &stale, &mut done);
    for m in &p.mappings {
        let (map, key, data) = mapping_element(m);
        let Some(e) = cur.find(&map, &key) else {
            continue;
        };
        if e.data.as_deref() == Some(data.as_str()) {
            continue;
        }
        let holder_owner = e.comment.clone().unwrap_or_default();
        let holder = owner_hash(&holder_owner);
        if stale.contains(&holder) {
            continue;
        }
        // Does the holder still own the address it maps to?
        let holder_ip =
            e.data.as_deref().unwrap_or("").split(" . ").next().unwrap_or("").to_string();
        let fam = if holder_ip.contains(':') { '6' } else { '4' };
        let holds_ip = cur.find(&format!("owners{fam}"), &holder_ip).is_some_and(|x| {
            x.data.as_deref().map(|d| d.trim_matches('"')) == Some(holder.as_str())
        });
        if live.contains(&holder) && holds_ip && holder != h {
            let (c, i) = split_owner_key(&holder_owner);
            return Err(Error::new(format!(
                "host port of mapping {} is already published by container {c} interface {i} (to {})",
                m.describe(),
                e.data.as_deref().unwrap_or("?")
            )));
        }
        if done.insert((map.clone(), key.clone())) {
            purge += &format!("delete element {t} {map} {{ {key} }}\n");
        }
    }
    let add = add_ports_script(p)?;
    // Base first (it only adds what is missing), then the purge, then our elements.
    Ok(format!("{}{purge}{add}", portmap_base_for(p)))
}

/// Removes everything of one owner, found by listing (the slow path).
pub(crate) fn remove_owner_script(
    owner: &str,
    p: Option<&ContainerPorts>,
    cur: &Listing,
) -> String {
    let h = owner_hash(owner);
    let mut hashes = HashSet::new();
    hashes.insert(h.clone());
    let mut done = HashSet::new();
    let mut s = purge_lines(cur, &hashes, &mut done);
    // Elements with our exact data whose recorded owner is no longer live (orphans).
    if let Some(p) = p {
        let live: HashSet<String> =
            cur.elems("live").iter().map(|e| e.key.trim_matches('"').to_string()).collect();
        let t = format!("inet {PORTMAP_TABLE}");
        for m in &p.mappings {
            let (map, key, data) = mapping_element(m);
            if let Some(e) = cur.find(&map, &key) {
                let holder = owner_hash(e.comment.as_deref().unwrap_or(""));
                if e.data.as_deref() == Some(data.as_str())
                    && (holder == h || !live.contains(&holder))
                    && done.insert((map.clone(), key.clone()))
                {
                    s += &format!("delete element {t} {map} {{ {key} }}\n");
                }
            }
        }
    }
    s
}

/// What is missing of one owner's mappings (empty = all present).
pub(crate) fn check_ports_listing(p: &ContainerPorts, cur: &Listing) -> Vec<String> {
    let mut missing = Vec::new();
    for (chain, n) in PORTMAP_BASE_RULES {
        if !cur.has_chain(chain) || cur.rules.get(chain).copied().unwrap_or(0) != n {
            missing.push(format!("base chain {chain}"));
        }
    }
    let e = owner_elems(p);
    if cur.find("live", &e.live.0).is_none() {
        missing.push(format!("owner {}", owner_key(&p.container_id, &p.ifname)));
    }
    for (set, k, d) in e.owners.iter().chain(e.maps.iter()) {
        match cur.find(set, k) {
            Some(x) if x.data.as_deref() == Some(d.as_str()) => {}
            Some(x) => missing.push(format!(
                "{set} element {k} maps to {} instead of {d}",
                x.data.as_deref().unwrap_or("?")
            )),
            None => missing.push(format!("{set} element {k} : {d}")),
        }
    }
    for (set, k) in &e.sets {
        if cur.find(set, k).is_none() {
            missing.push(format!("{set} element {k}"));
        }
    }
    missing
}

// ---------------------------------------------------------------------------------------

impl Firewall for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply_network(&self, net: &NetworkRules) -> Result<(), Error> {
        net.validate()?;
        let mut last = None;
        // A concurrent change between the listing and the transaction makes it fail:
        // list again and retry.
        for _ in 0..3 {
            let cur = self.list_table("inet", BRIDGE_TABLE)?;
            if cur.as_ref().is_some_and(|c| network_up_to_date(net, c)) {
                return Ok(());
            }
            let script = apply_network_script(net, cur.as_ref())?;
            match self.apply(&format!("apply network {}", net.network), &script) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn remove_network(&self, network: &str) -> Result<(), Error> {
        let mut last = None;
        for _ in 0..3 {
            let Some(cur) = self.list_table("inet", BRIDGE_TABLE)? else {
                // Leftover icc table without networks: remove it too.
                let _ = run_tool(
                    &self.nft,
                    &["-f", "-"],
                    Some(&format!(
                        "add table bridge {ICC_TABLE}\ndelete table bridge {ICC_TABLE}\n"
                    )),
                );
                return Ok(());
            };
            let Some(script) = remove_network_script(network, &cur) else {
                return Ok(());
            };
            match self.apply(&format!("remove network {network}"), &script) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn add_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        let script = add_ports_script(ports)?;
        if ports.mappings.is_empty() {
            return Ok(());
        }
        let what = format!("add ports of {}/{}", ports.container_id, ports.ifname);
        // Elements only (the common case, ~4 ms); then with the table ensured (first
        // mapping, or someone removed part of it); then the listing-based recovery.
        if self.apply(&what, &script).is_ok() {
            return Ok(());
        }
        let Err(first) = self.apply(&what, &format!("{}{script}", portmap_base_for(ports))) else {
            return Ok(());
        };
        let Some(cur) = self.list_table("inet", PORTMAP_TABLE)? else {
            return Err(first);
        };
        let recovery = add_ports_recovery_script(ports, &cur)?;
        self.apply(&what, &recovery)
            .map_err(|e| Error::new(format!("{} (first attempt: {})", e.msg, first.msg)))
    }

    fn remove_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        self.remove_ports_only(ports)?;
        self.drop_portmap_if_empty();
        Ok(())
    }

    fn remove_ports_others_remain(&self, ports: &ContainerPorts) -> Result<(), Error> {
        if ports.mappings.is_empty() {
            return self.remove_ports(ports);
        }
        self.remove_ports_only(ports)
    }

    fn check_network(&self, net: &NetworkRules) -> Result<(), Error> {
        net.validate()?;
        let Some(cur) = self.list_table("inet", BRIDGE_TABLE)? else {
            return Err(Error::new(format!(
                "network {:?}: table inet {BRIDGE_TABLE} does not exist",
                net.network
            )));
        };
        let icc = if net.icc { None } else { self.list_table("bridge", ICC_TABLE)? };
        let missing = check_network_listing(net, &cur, icc.as_ref());
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "network {:?}: firewall rules missing: {}",
                net.network,
                missing.join(", ")
            )))
        }
    }

    fn check_ports(&self, ports: &ContainerPorts) -> Result<(), Error> {
        ports.validate()?;
        if ports.mappings.is_empty() {
            return Ok(());
        }
        let Some(cur) = self.list_table("inet", PORTMAP_TABLE)? else {
            return Err(Error::new(format!(
                "ports of {}/{}: table inet {PORTMAP_TABLE} does not exist",
                ports.container_id, ports.ifname
            )));
        };
        let missing = check_ports_listing(ports, &cur);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "ports of {}/{}: missing {}",
                ports.container_id,
                ports.ifname,
                missing.join(", ")
            )))
        }
    }

    fn list_port_owners(&self) -> Result<Vec<(String, String)>, Error> {
        let Some(l) = self.list_map("inet", PORTMAP_TABLE, "live")? else {
            return Ok(Vec::new());
        };
        let mut out: BTreeSet<(String, String)> = BTreeSet::new();
        for e in l.elems("live") {
            if let Some(c) = &e.comment {
                out.insert(split_owner_key(c));
            }
        }
        Ok(out.into_iter().collect())
    }

    fn remove_port_owner(&self, container_id: &str, ifname: &str) -> Result<(), Error> {
        let o = owner_key_of(container_id, ifname);
        if let Some(cur) = self.list_table("inet", PORTMAP_TABLE)? {
            let s = remove_owner_script(&o, None, &cur);
            if !s.is_empty() {
                self.apply(&format!("remove ports of {container_id}/{ifname}"), &s)?;
            }
        }
        self.drop_portmap_if_empty();
        Ok(())
    }

    fn gc_ports(&self, valid: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
        let Some(cur) = self.list_table("inet", PORTMAP_TABLE)? else {
            return Ok(Vec::new());
        };
        let keep: HashSet<String> =
            valid.iter().map(|(c, i)| owner_hash(&owner_key(c, i))).collect();
        let mut stale = HashSet::new();
        let mut removed = BTreeSet::new();
        for e in cur.elems("live") {
            let h = e.key.trim_matches('"').to_string();
            if !keep.contains(&h) {
                if let Some(c) = &e.comment {
                    removed.insert(split_owner_key(c));
                }
                stale.insert(h);
            }
        }
        if !stale.is_empty() {
            let s = purge_lines(&cur, &stale, &mut HashSet::new());
            if !s.is_empty() {
                self.apply("gc ports", &s)?;
            }
        }
        self.drop_portmap_if_empty();
        Ok(removed.into_iter().collect())
    }

    fn is_available(&self) -> Result<(), Error> {
        // A check-only transaction of our base tables: the kernel validates it (nf_tables,
        // nat, fib, bridge family) without committing.
        let script =
            format!("{}{}{}", bridge_base_script(&[]), icc_base_script(), portmap_base_script());
        let r = run_tool(&self.nft, &["-c", "-f", "-"], Some(&script))?;
        if r.ok {
            Ok(())
        } else {
            Err(Error::new(format!("nftables cannot be programmed: {}", r.stderr.trim())))
        }
    }

    fn foreign_drop_policy(&self) -> Option<String> {
        let r = run_tool(&self.nft, &["-j", "list", "chains"], None).ok()?;
        if !r.ok {
            return None;
        }
        let l = Listing::parse(&r.stdout).ok()?;
        describe_foreign_drops(&l)
    }
}

pub(crate) fn describe_foreign_drops(l: &Listing) -> Option<String> {
    let ours = [BRIDGE_TABLE, ICC_TABLE, PORTMAP_TABLE];
    let found: Vec<String> = l
        .chains
        .iter()
        .filter(|c| {
            c.hook.as_deref() == Some("forward")
                && c.policy.as_deref() == Some("drop")
                && matches!(c.family.as_str(), "ip" | "ip6" | "inet")
                && !ours.contains(&c.table.as_str())
        })
        .map(|c| format!("table {} {} chain {}", c.family, c.table, c.name))
        .collect();
    if found.is_empty() {
        None
    } else {
        Some(format!(
            "forward hook with policy drop in {} (e.g. Docker's iptables FORWARD DROP): forwarded container traffic is dropped there unless that table accepts it",
            found.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    fn net() -> NetworkRules {
        NetworkRules::new(
            "podman",
            "cni-podman0",
            vec!["10.88.0.1/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
        )
    }

    fn ports() -> ContainerPorts {
        let mut p = ContainerPorts::new("podman", "abc", "eth0");
        p.mappings = vec![
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_ip: "10.88.0.5".parse().unwrap(),
                container_port: 80,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host_ip: Some("192.168.1.1".parse().unwrap()),
                host_port: 53,
                container_ip: "10.88.0.5".parse().unwrap(),
                container_port: 53,
                protocol: Protocol::Udp,
            },
        ];
        p.container_nets = vec!["10.88.0.5/16".parse().unwrap()];
        p
    }

    #[test]
    fn network_script_fresh() {
        let s = apply_network_script(&net(), None).unwrap();
        assert!(
            s.contains("add chain inet cni_bridge nf_podman { comment \"cni network podman cfg="),
            "{s}"
        );
        assert!(s.contains("add element inet cni_bridge from_br { \"cni-podman0\" comment \"cni network podman cfg="));
        assert!(s.contains("add element inet cni_bridge masq4 { 10.88.0.0/16 : jump nm_podman }"));
        assert!(s.contains("add element inet cni_bridge masq6 { fd00::/64 : jump nm_podman }"));
        assert!(s.contains("add rule inet cni_bridge nm_podman ip daddr 224.0.0.0/4 return"));
        assert!(s.contains("add rule inet cni_bridge nm_podman ip6 daddr ff00::/8 return"));
        assert!(!s.contains("delete"));
        assert!(!s.contains("cni_icc"));
    }

    #[test]
    fn network_rules_by_mode() {
        let mut n = net();
        n.isolate = true;
        n.icc = false;
        let (from, to, masq) = network_chain_rules(&n);
        assert_eq!(
            from,
            vec![
                "oifname != \"cni-podman0\" oifname @bridges drop",
                "oifname \"cni-podman0\" drop"
            ]
        );
        assert_eq!(to, vec!["iifname != \"cni-podman0\" iifname @bridges drop"]);
        assert_eq!(masq.last().unwrap(), "masquerade");
        n.internal = true;
        let (from, to, masq) = network_chain_rules(&n);
        assert_eq!(from[0], "oifname != \"cni-podman0\" drop");
        assert_eq!(to[0], "iifname != \"cni-podman0\" drop");
        assert!(masq.is_empty());
        let s = apply_network_script(&n, None).unwrap();
        assert!(
            s.contains(
                "add element bridge cni_icc icc4 { 10.88.0.0/16 comment \"podman\" : drop }"
            ),
            "{s}"
        );
    }

    const LISTING: &str = r#"{"nftables": [{"metainfo": {}},
      {"table": {"family": "inet", "name": "cni_bridge"}},
      {"set": {"family": "inet", "name": "bridges", "table": "cni_bridge", "type": "ifname", "elem": [{"elem": {"val": "oldbr", "comment": "podman"}}, {"elem": {"val": "br9", "comment": "other"}}]}},
      {"set": {"family": "inet", "name": "nets4", "table": "cni_bridge", "type": "ipv4_addr", "flags": ["interval"], "elem": [{"elem": {"val": {"prefix": {"addr": "10.77.0.0", "len": 16}}, "comment": "podman"}}]}},
      {"map": {"family": "inet", "name": "from_br", "table": "cni_bridge", "type": "ifname", "map": "verdict", "elem": [["oldbr", {"jump": {"target": "nf_podman"}}], ["br9", {"jump": {"target": "nf_other"}}]]}},
      {"map": {"family": "inet", "name": "masq4", "table": "cni_bridge", "type": "ipv4_addr", "map": "verdict", "flags": ["interval"], "elem": [[{"prefix": {"addr": "10.77.0.0", "len": 16}}, {"jump": {"target": "nm_podman"}}]]}},
      {"chain": {"family": "inet", "table": "cni_bridge", "name": "nf_podman"}},
      {"chain": {"family": "inet", "table": "cni_bridge", "name": "nm_podman"}},
      {"chain": {"family": "inet", "table": "cni_bridge", "name": "nf_other"}},
      {"rule": {"family": "inet", "table": "cni_bridge", "chain": "nm_podman", "expr": []}}
    ]}"#;

    #[test]
    fn network_script_replaces_old_elements() {
        let l = Listing::parse(LISTING).unwrap();
        let s = apply_network_script(&net(), Some(&l)).unwrap();
        assert!(s.contains("delete element inet cni_bridge from_br { \"oldbr\" }"), "{s}");
        assert!(s.contains("delete element inet cni_bridge bridges { \"oldbr\" }"));
        assert!(s.contains("delete element inet cni_bridge masq4 { 10.77.0.0/16 }"));
        assert!(s.contains("delete element inet cni_bridge nets4 { 10.77.0.0/16 }"));
        assert!(!s.contains("br9\" }"));
        // Deletes come before adds.
        assert!(s.find("delete element").unwrap() < s.find("add element").unwrap());
    }

    #[test]
    fn network_bridge_conflict() {
        let l = Listing::parse(LISTING).unwrap();
        let mut n = net();
        n.bridge = "br9".into();
        let e = apply_network_script(&n, Some(&l)).unwrap_err();
        assert!(e.msg.contains("already used"), "{e}");
    }

    #[test]
    fn remove_network_scripts() {
        let l = Listing::parse(LISTING).unwrap();
        let s = remove_network_script("podman", &l).unwrap();
        assert!(s.contains("delete element inet cni_bridge from_br { \"oldbr\" }"));
        assert!(s.contains("delete element inet cni_bridge masq4 { 10.77.0.0/16 }"));
        assert!(s.contains("delete chain inet cni_bridge nf_podman"));
        assert!(s.contains("delete chain inet cni_bridge nm_podman"));
        assert!(!s.contains("nt_podman"));
        assert!(!s.contains("delete table"));
        // The last network takes the tables with it.
        let s = remove_network_script(
            "other",
            &Listing::parse(
                &LISTING.replace("nf_podman", "x_podman").replace("nm_podman", "y_podman"),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(s.contains("delete table inet cni_bridge"));
        assert!(remove_network_script("absent", &l).is_none());
    }

    #[test]
    fn port_scripts() {
        let p = ports();
        let s = add_ports_script(&p).unwrap();
        assert!(s.contains("add element inet cni_portmap ap4 { tcp . 8080 comment \"abc/eth0\" : 10.88.0.5 . 80 }"), "{s}");
        assert!(s.contains("add element inet cni_portmap hp4 { 192.168.1.1 . udp . 53 comment \"abc/eth0\" : 10.88.0.5 . 53 }"));
        assert!(s.contains("add element inet cni_portmap hairpin4 { 10.88.0.5 comment \"abc/eth0\" : jump pm_hp4_16 }"), "{s}");
        assert!(s.contains(
            "add element inet cni_portmap hpnet4 { 10.88.0.5 . 10.88.0.0 comment \"abc/eth0\" }"
        ));
        assert!(portmap_base_for(&p).contains("add rule inet cni_portmap pm_hp4_16 ip daddr . ip saddr & 255.255.0.0 @hpnet4 masquerade"));
        let h = owner_hash("abc/eth0");
        assert!(s.contains(&format!(
            "add element inet cni_portmap owners4 {{ 10.88.0.5 comment \"abc/eth0\" : \"{h}\" }}"
        )));
        assert!(s.contains(&format!("live {{ \"{h}\" comment \"abc/eth0\" : jump pm_anchor }}")));
        let r = remove_ports_script(&p).unwrap();
        assert!(r.contains("add element inet cni_portmap ap4 { tcp . 8080 : 10.88.0.5 . 80 }\ndelete element inet cni_portmap ap4 { tcp . 8080 }"), "{r}");
        assert!(r.contains(&format!("delete element inet cni_portmap live {{ \"{h}\" }}")));
        // The script size depends on the request only.
        let mut p2 = p.clone();
        p2.container_id = "def".into();
        assert_eq!(add_ports_script(&p2).unwrap().len(), s.len());
    }

    #[test]
    fn port_self_conflict() {
        let mut p = ports();
        let mut m = p.mappings[0];
        m.container_port = 81;
        p.mappings.push(m);
        assert!(add_ports_script(&p).unwrap_err().msg.contains("same host port"));
    }

    #[test]
    fn recovery_purges_stale_and_reports_live_conflicts() {
        let h_old = owner_hash("old/eth0");
        let h_live = owner_hash("live/eth0");
        let listing = format!(
            r#"{{"nftables": [
          {{"map": {{"name": "live", "type": "ifname", "map": "verdict", "elem": [[{{"elem": {{"val": "{h_live}", "comment": "live/eth0"}}}}, {{"jump": {{"target": "pm_anchor"}}}}], [{{"elem": {{"val": "{h_old}", "comment": "old/eth0"}}}}, {{"jump": {{"target": "pm_anchor"}}}}]]}}}},
          {{"map": {{"name": "owners4", "type": "ipv4_addr", "map": "ifname", "elem": [[{{"elem": {{"val": "10.88.0.5", "comment": "old/eth0"}}}}, "{h_old}"], [{{"elem": {{"val": "10.88.0.6", "comment": "live/eth0"}}}}, "{h_live}"]]}}}},
          {{"map": {{"name": "ap4", "type": ["inet_proto", "inet_service"], "map": "ipv4_addr . inet_service", "elem": [[{{"elem": {{"val": {{"concat": ["tcp", 8080]}}, "comment": "old/eth0"}}}}, {{"concat": ["10.88.0.5", 8000]}}], [{{"elem": {{"val": {{"concat": ["tcp", 9090]}}, "comment": "live/eth0"}}}}, {{"concat": ["10.88.0.6", 80]}}]]}}}}
        ]}}"#
        );
        let l = Listing::parse(&listing).unwrap();
        let p = ports();
        let s = add_ports_recovery_script(&p, &l).unwrap();
        assert!(s.contains("delete element inet cni_portmap ap4 { tcp . 8080 }"), "{s}");
        assert!(s.contains("delete element inet cni_portmap owners4 { 10.88.0.5 }"));
        assert!(s.contains(&format!("delete element inet cni_portmap live {{ \"{h_old}\" }}")));
        assert!(
            s.find("delete element").unwrap()
                < s.find("add element inet cni_portmap live").unwrap()
        );
        let mut p2 = ports();
        p2.mappings[0].host_port = 9090;
        let e = add_ports_recovery_script(&p2, &l).unwrap_err();
        assert!(e.msg.contains("already published by container live interface eth0"), "{e}");
    }

    #[test]
    fn foreign_drop_detection() {
        let l = Listing::parse(r#"{"nftables": [
          {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
          {"chain": {"family": "inet", "table": "cni_bridge", "name": "br_forward", "hook": "forward", "policy": "accept"}}
        ]}"#).unwrap();
        let d = describe_foreign_drops(&l).unwrap();
        assert!(d.contains("table ip filter chain FORWARD"), "{d}");
        assert!(describe_foreign_drops(&Listing::default()).is_none());
    }
}
