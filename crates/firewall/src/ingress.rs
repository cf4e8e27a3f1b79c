//! The `firewall` plugin's rules (the reference plugin's `ingressPolicy` and its per-container
//! accepts), split like the backends into pure diff functions and apply.
//!
//! nftables (default), in-process:
//! - `table inet cni_firewall`: `set iso_br` (bridges whose containers take traffic from
//!   their own bridge only) and `set same_br` (`"br" . "br"` pairs); `chain fw_forward`
//!   (hook forward): `iifname @iso_br oifname @iso_br iifname . oifname != @same_br drop`:
//!   traffic between two isolated bridges is dropped, Docker's isolation between networks.
//! - `table bridge cni_fw_icc`: `set ctr4`/`ctr6` (containers with policy `isolated`);
//!   `chain fw_bridged` (bridge forward hook): their bridged traffic is dropped, Docker's
//!   `enable_icc=false`.
//!
//! An accept in our tables cannot override a drop in another table on the same hook, so
//! when another firewall (Docker) sets the iptables FORWARD policy to DROP, the accepts go
//! where that drop is: `iptables` filter `FORWARD` jumps to `CNI-SUITE-FW`, which jumps to
//! the admin chain (`iptablesAdminChainName`, created empty, never flushed) and accepts
//! traffic from each container and the replies to it. That chain is rebuilt from the
//! caller's state on each change (one `iptables-restore --noflush` per family).
//!
//! The backend keeps no state: the plugin passes every attachment it has recorded.

use std::net::IpAddr;

use nfnetlink::tables::{self, types, Family, Hook};
use nfnetlink::{Elem, Op, Rule, SetDef, Socket, Verdict};
use serde::{Deserialize, Serialize};

use crate::nftables::Kernel;
use crate::{run_tool, Error};

pub const TABLE: &str = "cni_firewall";
pub const ICC_TABLE: &str = "cni_fw_icc";
pub const ACCEPT_CHAIN: &str = "CNI-SUITE-FW";
pub const ISO1_CHAIN: &str = "CNI-SUITE-FW-ISO1";
pub const ISO2_CHAIN: &str = "CNI-SUITE-FW-ISO2";

/// What one container interface asks of the firewall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// The bridge the container is on (from prevResult), if any.
    pub bridge: Option<String>,
    pub ips: Vec<IpAddr>,
    /// Isolate the bridge from other isolated bridges (ingressPolicy same-bridge or
    /// isolated), unless the bridge plugin already does.
    pub isolate_bridge: bool,
    /// Drop bridged traffic from this container (ingressPolicy isolated), unless the bridge
    /// plugin already does (icc=false).
    pub isolate_container: bool,
    /// Accept this container's traffic in iptables FORWARD (another firewall drops there).
    pub accept: bool,
}

fn kerr(e: nfnetlink::Error) -> Error {
    Error::kernel(format!("nftables: {e}"))
}

fn ifname_elem(name: &str) -> Elem {
    Elem::new(nfnetlink::expr::ifname_bytes(name), format!("\"{name}\""))
}

fn pair_elem(name: &str) -> Elem {
    let k = nfnetlink::expr::ifname_bytes(name);
    Elem::new([k.clone(), k].concat(), format!("{name} . {name}"))
}

fn ip_elem(ip: IpAddr) -> (String, Elem) {
    let set = if ip.is_ipv4() { "ctr4" } else { "ctr6" };
    (set.into(), Elem::new(nfnetlink::expr::ip_bytes(ip), ip.to_string()))
}

fn op_add(family: Family, table: &str, set: &str, elems: Vec<Elem>) -> Op {
    Op::AddElems { family, table: table.into(), set: set.into(), elems }
}

/// Both tables with their sets and chains.
pub(crate) fn base_ops() -> Vec<Op> {
    let (i, b) = (Family::Inet, Family::Bridge);
    let t = TABLE.to_string();
    let c = ICC_TABLE.to_string();
    vec![
        Op::AddTable { family: i, name: t.clone() },
        Op::AddSet {
            family: i,
            table: t.clone(),
            def: SetDef::set("iso_br", &[types::IFNAME]).timeout(),
        },
        Op::AddSet {
            family: i,
            table: t.clone(),
            def: SetDef::set("same_br", &[types::IFNAME, types::IFNAME]).timeout(),
        },
        Op::AddChain {
            family: i,
            table: t.clone(),
            name: "fw_forward".into(),
            hook: Some(Hook { kind: "filter", num: 2, priority: 0 }),
            comment: None,
        },
        Op::AddRule {
            family: i,
            table: t,
            chain: "fw_forward".into(),
            rule: Rule::new()
                .ifname_in(false, "iso_br")
                .ifname_in(true, "iso_br")
                .ifname_pair_not_in("same_br")
                .verdict(Verdict::Drop)
                .comment("ingressPolicy: isolation between networks"),
        },
        Op::AddTable { family: b, name: c.clone() },
        Op::AddSet {
            family: b,
            table: c.clone(),
            def: SetDef::set("ctr4", &[types::IPADDR]).timeout(),
        },
        Op::AddSet {
            family: b,
            table: c.clone(),
            def: SetDef::set("ctr6", &[types::IP6ADDR]).timeout(),
        },
        Op::AddChain {
            family: b,
            table: c.clone(),
            name: "fw_bridged".into(),
            hook: Some(Hook { kind: "filter", num: 2, priority: 0 }),
            comment: None,
        },
        Op::AddRule {
            family: b,
            table: c.clone(),
            chain: "fw_bridged".into(),
            rule: Rule::bridge().addr_in_set(false, false, "ctr4").verdict(Verdict::Drop),
        },
        Op::AddRule {
            family: b,
            table: c,
            chain: "fw_bridged".into(),
            rule: Rule::bridge().addr_in_set(true, false, "ctr6").verdict(Verdict::Drop),
        },
    ]
}

/// What one attachment adds to the tables.
pub(crate) fn add_ops(a: &Attachment) -> Vec<Op> {
    let mut ops = Vec::new();
    if let (true, Some(br)) = (a.isolate_bridge, &a.bridge) {
        ops.push(op_add(Family::Inet, TABLE, "iso_br", vec![ifname_elem(br)]));
        ops.push(op_add(Family::Inet, TABLE, "same_br", vec![pair_elem(br)]));
    }
    if a.isolate_container {
        for ip in &a.ips {
            let (set, e) = ip_elem(*ip);
            ops.push(op_add(Family::Bridge, ICC_TABLE, &set, vec![e]));
        }
    }
    ops
}

/// What one attachment removes: its addresses, and its bridge's elements when it was the
/// last isolated container of that bridge (`last_of_bridge`, from the caller's state).
/// Elements expire instead of being deleted where the kernel can update expiry.
pub(crate) fn remove_ops(a: &Attachment, last_of_bridge: bool, kernel: Kernel) -> Vec<Op> {
    let mut victims: Vec<(Family, &str, String, Elem)> = Vec::new();
    if let (true, true, Some(br)) = (a.isolate_bridge, last_of_bridge, &a.bridge) {
        victims.push((Family::Inet, TABLE, "iso_br".into(), ifname_elem(br)));
        victims.push((Family::Inet, TABLE, "same_br".into(), pair_elem(br)));
    }
    if a.isolate_container {
        for ip in &a.ips {
            let (set, e) = ip_elem(*ip);
            victims.push((Family::Bridge, ICC_TABLE, set, e));
        }
    }
    let mut ops = Vec::new();
    for (family, table, set, e) in victims {
        if kernel.expiry_updates {
            ops.push(op_add(family, table, &set, vec![e.timeout(1)]));
        } else {
            ops.push(op_add(family, table, &set, vec![e.clone()]));
            ops.push(Op::DelElems { family, table: table.into(), set, elems: vec![e] });
        }
    }
    ops
}

/// Drops both tables (whether or not they exist).
pub(crate) fn drop_ops() -> Vec<Op> {
    vec![
        Op::AddTable { family: Family::Inet, name: TABLE.into() },
        Op::DelTable { family: Family::Inet, name: TABLE.into() },
        Op::AddTable { family: Family::Bridge, name: ICC_TABLE.into() },
        Op::DelTable { family: Family::Bridge, name: ICC_TABLE.into() },
    ]
}

/// Everything, from scratch, for every attachment.
pub(crate) fn restore_ops(all: &[Attachment]) -> Vec<Op> {
    let mut ops = drop_ops();
    if all.iter().any(|a| a.isolate_bridge || a.isolate_container) {
        ops.extend(base_ops());
        for a in all {
            ops.extend(add_ops(a));
        }
    }
    ops
}

/// Does another firewall drop forwarded traffic by policy in the iptables FORWARD chain
/// (iptables-nft's `ip filter` / `ip6 filter` tables)? One lookup per family.
pub fn foreign_forward_drop() -> bool {
    let Ok(mut s) = Socket::open() else { return false };
    [Family::Ip, Family::Ip6]
        .iter()
        .any(|f| matches!(tables::chain_policy(&mut s, *f, "filter", "FORWARD"), Ok(Some(0))))
}

/// Programs the nftables side for `a` (which is in `all`, the caller's state): a restore
/// when the tables are missing (first use, or flushed behind our back), else `a`'s elements.
pub fn nft_add(a: &Attachment, all: &[Attachment]) -> Result<(), Error> {
    if !(a.isolate_bridge || a.isolate_container) {
        return Ok(());
    }
    let mut s = Socket::open().map_err(kerr)?;
    let present = tables::table_handle(&mut s, Family::Inet, TABLE).map_err(kerr)?.is_some()
        && tables::table_handle(&mut s, Family::Bridge, ICC_TABLE).map_err(kerr)?.is_some();
    let ops = if present { add_ops(a) } else { restore_ops(all) };
    nfnetlink::commit(&mut s, &ops).map_err(kerr)
}

/// Removes `a`'s nftables side; `remaining` are the attachments left (caller's state).
pub fn nft_remove(a: &Attachment, remaining: &[Attachment]) -> Result<(), Error> {
    let mut s = Socket::open().map_err(kerr)?;
    if !remaining.iter().any(|r| r.isolate_bridge || r.isolate_container) {
        return nfnetlink::commit(&mut s, &drop_ops()).map_err(kerr);
    }
    if tables::table_handle(&mut s, Family::Inet, TABLE).map_err(kerr)?.is_none() {
        return Ok(());
    }
    let last_of_bridge =
        !remaining.iter().any(|r| r.isolate_bridge && r.bridge.is_some() && r.bridge == a.bridge);
    nfnetlink::commit(&mut s, &remove_ops(a, last_of_bridge, Kernel::running())).map_err(kerr)
}

/// Re-creates the nftables side from scratch (GC, or a documented repair).
pub fn nft_restore(all: &[Attachment]) -> Result<(), Error> {
    let mut s = Socket::open().map_err(kerr)?;
    nfnetlink::commit(&mut s, &restore_ops(all)).map_err(kerr)
}

/// CHECK of the nftables side: `a`'s bridge and addresses are in their sets.
pub fn nft_check(a: &Attachment) -> Result<(), Error> {
    let mut missing = Vec::new();
    if let (true, Some(br)) = (a.isolate_bridge, &a.bridge) {
        let l = crate::listing::list_table("inet", TABLE)?;
        if l.is_none_or(|l| l.find("iso_br", &format!("\"{br}\"")).is_none()) {
            missing.push(format!("bridge {br} in {TABLE} iso_br"));
        }
    }
    if a.isolate_container {
        let l = crate::listing::list_table("bridge", ICC_TABLE)?;
        for ip in &a.ips {
            let (set, _) = ip_elem(*ip);
            if l.as_ref().is_none_or(|l| l.find(&set, &ip.to_string()).is_none()) {
                missing.push(format!("{ip} in {ICC_TABLE} {set}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::kernel(format!("firewall rules missing: {}", missing.join(", "))))
    }
}

/// CHECK of the iptables accepts of `a`.
pub fn iptables_check(a: &Attachment) -> Result<(), Error> {
    for ip in &a.ips {
        let (save, net) = if ip.is_ipv4() {
            ("iptables-save", format!("{ip}/32"))
        } else {
            ("ip6tables-save", format!("{ip}/128"))
        };
        let cur = run_tool(save, &["-t", "filter"], None)?;
        if !cur.stdout.contains(&format!("-A {ACCEPT_CHAIN} -s {net} -j ACCEPT")) {
            return Err(Error::kernel(format!("{save}: no accept for {ip} in {ACCEPT_CHAIN}")));
        }
    }
    Ok(())
}

/// The `iptables-restore --noflush` batch of one family: our chain rebuilt with every
/// attachment's accepts (and, with `iso`, the isolation chains when the iptables backend
/// does isolation too); everything removed when nothing is left.
pub fn iptables_batch(
    v6: bool,
    admin_chain: &str,
    all: &[Attachment],
    iso: bool,
    present: bool,
) -> String {
    let mut s = String::from("*filter\n");
    let accepts: Vec<&Attachment> = all.iter().filter(|a| a.accept).collect();
    let iso_bridges: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for a in all.iter().filter(|a| iso && a.isolate_bridge) {
            if let Some(b) = a.bridge.as_deref() {
                if !v.contains(&b) {
                    v.push(b);
                }
            }
        }
        v
    };
    if accepts.is_empty() && iso_bridges.is_empty() {
        if present {
            s += &format!(
                "-D FORWARD -j {ACCEPT_CHAIN}\n:{ACCEPT_CHAIN} - [0:0]\n-X {ACCEPT_CHAIN}\n"
            );
            s += &format!("-D FORWARD -j {ISO1_CHAIN}\n:{ISO1_CHAIN} - [0:0]\n-X {ISO1_CHAIN}\n");
            s += &format!(":{ISO2_CHAIN} - [0:0]\n-X {ISO2_CHAIN}\n");
        }
        return s + "COMMIT\n";
    }
    s += &format!(":{ACCEPT_CHAIN} - [0:0]\n:{ISO1_CHAIN} - [0:0]\n:{ISO2_CHAIN} - [0:0]\n");
    s += &format!(":{admin_chain} - [0:0]\n");
    if !present {
        s += &format!("-I FORWARD 1 -j {ACCEPT_CHAIN}\n-I FORWARD 1 -j {ISO1_CHAIN}\n");
    }
    s += &format!("-A {ACCEPT_CHAIN} -j {admin_chain}\n");
    for a in accepts {
        for ip in a.ips.iter().filter(|ip| ip.is_ipv6() == v6) {
            let net = if v6 { format!("{ip}/128") } else { format!("{ip}/32") };
            s += &format!("-A {ACCEPT_CHAIN} -s {net} -j ACCEPT\n");
            s += &format!(
                "-A {ACCEPT_CHAIN} -d {net} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            );
        }
    }
    for b in &iso_bridges {
        s += &format!("-A {ISO1_CHAIN} -i {b} ! -o {b} -j {ISO2_CHAIN}\n");
        s += &format!("-A {ISO2_CHAIN} -o {b} -j DROP\n");
    }
    s + "COMMIT\n"
}

/// Applies the iptables side for every attachment (both families). The admin chain is
/// declared with `-N` semantics only when missing, so an administrator's rules in it stay.
pub fn iptables_apply(admin_chain: &str, all: &[Attachment], iso: bool) -> Result<(), Error> {
    for (v6, save, restore) in [
        (false, "iptables-save", "iptables-restore"),
        (true, "ip6tables-save", "ip6tables-restore"),
    ] {
        let cur = run_tool(save, &["-t", "filter"], None)?;
        if !cur.ok {
            if v6 {
                continue;
            }
            return Err(Error::kernel(format!("{save} failed: {}", cur.stderr.trim())));
        }
        let present = cur.stdout.contains(&format!(":{ACCEPT_CHAIN} "));
        let mut batch = iptables_batch(v6, admin_chain, all, iso, present);
        if cur.stdout.contains(&format!(":{admin_chain} ")) {
            // Keep the administrator's rules: do not re-declare (flush) the chain.
            batch = batch.replace(&format!(":{admin_chain} - [0:0]\n"), "");
        }
        let r = run_tool(restore, &["--noflush", "-w"], Some(&batch))?;
        if !r.ok {
            return Err(Error::kernel(format!("{restore} failed: {}", r.stderr.trim())));
        }
        if !all.iter().any(|a| a.accept || (iso && a.isolate_bridge)) && present {
            // Our last accept is gone: the admin chain goes too when it is empty.
            let _ = run_tool(
                if v6 { "ip6tables" } else { "iptables" },
                &["-w", "-t", "filter", "-X", admin_chain],
                None,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str, br: &str, ip: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
            bridge: Some(br.into()),
            ips: vec![ip.parse().unwrap()],
            isolate_bridge: true,
            isolate_container: true,
            accept: true,
        }
    }

    #[test]
    fn golden_ingress() {
        let a = att("a", "br-a", "10.1.0.2");
        let text = nfnetlink::render(&restore_ops(&[a.clone(), att("b", "br-b", "fd00::2")]));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/ingress_restored.nft");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        assert_eq!(text, std::fs::read_to_string(&path).unwrap());
        let k = Kernel { expiry_updates: true, destroy: true };
        assert!(remove_ops(&a, true, k).iter().all(|o| !o.deletes()));
        assert_eq!(remove_ops(&a, false, k).len(), 1, "the bridge stays for others");
    }

    #[test]
    fn iptables_batches() {
        let b = iptables_batch(false, "CNI-ADMIN", &[att("a", "br-a", "10.1.0.2")], true, false);
        assert!(b.contains("-I FORWARD 1 -j CNI-SUITE-FW\n"), "{b}");
        assert!(b.contains("-A CNI-SUITE-FW -j CNI-ADMIN\n"));
        assert!(b.contains("-A CNI-SUITE-FW -s 10.1.0.2/32 -j ACCEPT\n"));
        assert!(b.contains("-A CNI-SUITE-FW-ISO1 -i br-a ! -o br-a -j CNI-SUITE-FW-ISO2\n"));
        let gone = iptables_batch(false, "CNI-ADMIN", &[], true, true);
        assert!(gone.contains("-X CNI-SUITE-FW\n"), "{gone}");
        assert!(!gone.contains("CNI-ADMIN"));
    }
}
