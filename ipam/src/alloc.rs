//! The allocator: which address a range set hands out next.
//!
//! Round-robin like the reference: candidates start right after the range set's
//! `last_reserved_ip`, run to the end of its range, continue through the following ranges of
//! the set, wrap around, and end with `last_reserved_ip` itself. Gateways are skipped; network
//! and broadcast addresses are never inside a range (config validation). Each candidate costs
//! one stat, and since the address after the cursor is normally free, an ADD costs the same
//! whether the store holds ten leases or sixty thousand.

use crate::addr::{from_u128, to_u128};
use crate::config::{Range, RangeSet};
use crate::store::{Owner, Store};
use cni::{code, CniError};
use std::net::IpAddr;

/// Candidate addresses of a range set, in round-robin order from `last`.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    range: usize,
    cur: u128,
    left: u128,
}

impl<'a> Candidates<'a> {
    pub fn new(set: &'a RangeSet, last: Option<IpAddr>) -> Candidates<'a> {
        let total = set.ranges.iter().fold(0u128, |acc, r| acc.saturating_add(r.size()));
        let mut it = Candidates { set, range: 0, cur: to_u128(set.ranges[0].start), left: total };
        if let Some(last) = last {
            if let Some(i) = set.ranges.iter().position(|r| r.contains(last)) {
                it.range = i;
                it.cur = to_u128(last);
                it.advance();
            }
        }
        it
    }

    fn advance(&mut self) {
        let r = &self.set.ranges[self.range];
        if self.cur >= to_u128(r.end) {
            self.range = (self.range + 1) % self.set.ranges.len();
            self.cur = to_u128(self.set.ranges[self.range].start);
        } else {
            self.cur += 1;
        }
    }
}

impl<'a> Iterator for Candidates<'a> {
    /// The range the address belongs to, and the address.
    type Item = (&'a Range, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            let r: &'a Range = &self.set.ranges[self.range];
            let ip = from_u128(self.cur, r.is_v4());
            self.left -= 1;
            self.advance();
            if ip != r.gateway {
                return Some((r, ip));
            }
        }
        None
    }
}

/// Why a request for a specific address cannot be served, or the range it falls in.
pub fn check_requested(set: &RangeSet, ip: IpAddr) -> Result<&Range, CniError> {
    let r = set.range_for(ip).ok_or_else(|| {
        CniError::config(format!("requested address {ip} is outside range set {}", set.describe()))
    })?;
    if ip == r.gateway {
        return Err(CniError::config(format!(
            "requested address {ip} is the gateway of {}; it is never handed out",
            r.describe()
        )));
    }
    Ok(r)
}

/// Leases the next free address of `set` (index `idx`) to `owner`, round-robin.
pub fn allocate_next<'a>(
    store: &mut Store,
    idx: usize,
    set: &'a RangeSet,
    owner: &Owner,
) -> Result<(&'a Range, IpAddr), CniError> {
    let last = store.last_reserved(idx);
    for (r, ip) in Candidates::new(set, last) {
        if store.reserve(ip, owner).map_err(|e| io_error(store, e))? {
            return Ok((r, ip));
        }
    }
    Err(CniError::new(
        code::ADDRESS_UNAVAILABLE,
        format!(
            "no free address left in range set {idx} ({}): all {} addresses are leased",
            set.describe(),
            set.usable()
        ),
    ))
}

/// Leases the requested address `ip` to `owner`, or says who holds it.
pub fn allocate_requested<'a>(
    store: &mut Store,
    set: &'a RangeSet,
    ip: IpAddr,
    owner: &Owner,
) -> Result<(&'a Range, IpAddr, bool), CniError> {
    let r = check_requested(set, ip)?;
    if store.reserve(ip, owner).map_err(|e| io_error(store, e))? {
        return Ok((r, ip, true));
    }
    match store.lease_content(ip).map_err(|e| io_error(store, e))? {
        Some(c) if owner.owns(&c) => {
            // Ours already (written by the reference plugin, or an earlier ADD): keep it.
            store.adopt(ip, owner).map_err(|e| io_error(store, e))?;
            Ok((r, ip, false))
        }
        Some(c) => Err(CniError::new(
            code::ADDRESS_UNAVAILABLE,
            format!(
                "requested address {ip} is already leased to {}",
                crate::store::Holder::parse(&c)
            ),
        )),
        None => Err(CniError::try_again(format!(
            "requested address {ip} changed hands while it was being leased; try again"
        ))),
    }
}

pub(crate) fn io_error(store: &Store, e: std::io::Error) -> CniError {
    CniError::io(format!("IPAM store {}: {e}", store.dir().display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: serde_json::Value) -> RangeSet {
        crate::config::parse_range_set(&v, "ipam.ranges[0]").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn all(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        Candidates::new(set, last.map(ip)).map(|(_, a)| a.to_string()).collect()
    }

    #[test]
    fn skips_gateway_network_and_broadcast() {
        let s = set(json!([{"subnet": "10.0.0.0/29"}]));
        assert_eq!(all(&s, None), vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        let s = set(json!([{"subnet": "10.0.0.0/29", "gateway": "10.0.0.4"}]));
        assert_eq!(all(&s, None), vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]);
        let s = set(json!([{"subnet": "fd00::/126"}]));
        assert_eq!(all(&s, None), vec!["fd00::2", "fd00::3"]);
    }

    #[test]
    fn round_robin_from_last_reserved_and_wraps_across_ranges() {
        let s = set(json!([{"subnet": "10.0.0.0/29"}, {"subnet": "10.0.1.0/30"}]));
        assert_eq!(
            all(&s, Some("10.0.0.5")),
            vec!["10.0.0.6", "10.0.1.2", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        );
        assert_eq!(
            all(&s, Some("10.0.1.2")),
            vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.2"]
        );
        // A cursor outside the set (the config changed) restarts at the first range.
        assert_eq!(all(&s, Some("192.168.0.1"))[0], "10.0.0.2");
    }

    #[test]
    fn huge_ipv6_ranges_iterate_lazily() {
        let s = set(json!([{"subnet": "fd00::/64"}]));
        let first: Vec<String> = Candidates::new(&s, Some(ip("fd00::ffff")))
            .take(2)
            .map(|(_, a)| a.to_string())
            .collect();
        assert_eq!(first, vec!["fd00::1:0", "fd00::1:1"]);
    }

    #[test]
    fn requested_outside_or_gateway_is_refused() {
        let s = set(
            json!([{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"}]),
        );
        let e = check_requested(&s, ip("10.0.0.5")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("10.0.0.5") && e.msg.contains("outside"), "{}", e.msg);
        let s = set(json!([{"subnet": "10.0.0.0/24"}]));
        let e = check_requested(&s, ip("10.0.0.1")).unwrap_err();
        assert!(e.msg.contains("gateway"), "{}", e.msg);
        assert!(check_requested(&s, ip("10.0.0.255")).is_err());
        assert!(check_requested(&s, ip("10.0.0.0")).is_err());
        assert!(check_requested(&s, ip("10.0.0.254")).is_ok());
    }
}
