//! MAC spoof check for bridge ports (the reference bridge's `macspoofchk`): frames entering
//! the bridge from a guarded port must carry that port's container MAC as source.
//!
//! Layer-2 filtering needs the nftables `bridge` family whatever backend programs the L3
//! rules (iptables alone would need ebtables). One table, `bridge cni_macspoof`, with a set of
//! guarded ports, a set of allowed (port . MAC) pairs and one rule, so the cost per frame and
//! per ADD does not depend on how many ports are guarded.

use crate::{run_tool, Error};

pub const TABLE: &str = "cni_macspoof";

fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Declarations every script starts with (all `add`: idempotent).
fn skeleton() -> String {
    format!(
        "add table bridge {TABLE}\n\
         add set bridge {TABLE} ports {{ type ifname; }}\n\
         add set bridge {TABLE} allowed {{ type ifname . ether_addr; }}\n\
         add chain bridge {TABLE} guard {{ type filter hook prerouting priority -300; policy accept; }}\n"
    )
}

/// Script guarding `port` so only `mac` may be the source of its frames.
pub fn guard_script(port: &str, mac: &[u8; 6]) -> String {
    let mut s = skeleton();
    // Flush and re-add the single rule so repeated calls never duplicate it.
    s += &format!("flush chain bridge {TABLE} guard\n");
    s += &format!(
        "add rule bridge {TABLE} guard iifname @ports iifname . ether saddr != @allowed drop\n"
    );
    s += &format!("add element bridge {TABLE} ports {{ \"{port}\" }}\n");
    s += &format!("add element bridge {TABLE} allowed {{ \"{port}\" . {} }}\n", mac_str(mac));
    s
}

/// Script removing `port`'s guard; adding before deleting makes it succeed when already gone.
pub fn unguard_script(port: &str, mac: &[u8; 6]) -> String {
    let mut s = skeleton();
    s += &format!("add element bridge {TABLE} ports {{ \"{port}\" }}\n");
    s += &format!("delete element bridge {TABLE} ports {{ \"{port}\" }}\n");
    s += &format!("add element bridge {TABLE} allowed {{ \"{port}\" . {} }}\n", mac_str(mac));
    s += &format!("delete element bridge {TABLE} allowed {{ \"{port}\" . {} }}\n", mac_str(mac));
    s
}

fn nft(script: &str, what: &str) -> Result<(), Error> {
    let run = run_tool("nft", &["-f", "-"], Some(script))?;
    if run.ok {
        Ok(())
    } else {
        Err(Error::new(format!("{what}: nft: {}", run.stderr.trim())))
    }
}

/// Drops frames entering the bridge from `port` whose source MAC is not `mac`.
pub fn guard_port(port: &str, mac: &[u8; 6]) -> Result<(), Error> {
    nft(&guard_script(port, mac), &format!("mac spoof check on {port}"))
}

/// Removes the guard of `port`; the table goes once no port is guarded. Already gone is fine.
pub fn unguard_port(port: &str, mac: &[u8; 6]) -> Result<(), Error> {
    nft(&unguard_script(port, mac), &format!("removing mac spoof check on {port}"))?;
    let listed = run_tool("nft", &["list", "set", "bridge", TABLE, "ports"], None)?;
    if listed.ok && !listed.stdout.contains("elements") {
        // The table is empty: remove it. A concurrent guard_port re-creates what it needs.
        let _ = run_tool("nft", &["delete", "table", "bridge", TABLE], None);
    }
    Ok(())
}

/// CHECK: `port` is guarded with `mac`.
pub fn check_port(port: &str, mac: &[u8; 6]) -> Result<(), Error> {
    let listed = run_tool("nft", &["list", "set", "bridge", TABLE, "allowed"], None)?;
    let want = format!("\"{port}\" . {}", mac_str(mac));
    if listed.ok && listed.stdout.contains(&want) {
        Ok(())
    } else {
        Err(Error::new(format!("mac spoof check for {port} ({}) is missing", mac_str(mac))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_port_and_mac() {
        let mac = [0x02, 0, 0, 0, 0xab, 0x01];
        let g = guard_script("veth1234", &mac);
        assert!(
            g.contains(
                "add element bridge cni_macspoof allowed { \"veth1234\" . 02:00:00:00:ab:01 }"
            ),
            "{g}"
        );
        assert_eq!(g.matches("add rule").count(), 1);
        let u = unguard_script("veth1234", &mac);
        assert!(u.contains("delete element bridge cni_macspoof ports { \"veth1234\" }"), "{u}");
    }
}
