//! Address arithmetic on a flat integer form: IPv4 and IPv6 both map to `u128`, so ranges,
//! iteration and counting are one code path. The family travels alongside as a `bool`.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`]; `v4` says which family the integer belongs to.
pub fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// Same family (IPv4 vs IPv6).
pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// First and last address of a subnet, as integers.
pub fn subnet_bounds(net: &IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// The family's name for messages.
pub fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are written as plain IPv4, the way the
/// reference plugins (Go's net.IP) print them, so lease file names agree.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_families() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(from_u128(to_u128(a), true), a);
        assert_eq!(to_u128(a), 0x0a010203);
        let b: IpAddr = "fd00::ff".parse().unwrap();
        assert_eq!(from_u128(to_u128(b) + 1, false), "fd00::100".parse::<IpAddr>().unwrap());
        let net: IpNet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(subnet_bounds(&net), (0x0a000000, 0x0a000003));
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
