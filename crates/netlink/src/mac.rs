//! MAC address text form and random generation.

/// Parses "aa:bb:cc:dd:ee:ff" (also upper case or '-' separated); None when malformed.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

/// Formats a MAC as "aa:bb:cc:dd:ee:ff" (lower case).
pub fn format_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// A random locally administered unicast MAC (first byte: bit 1 set, bit 0 clear).
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    fill_random(&mut mac);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Fills `buf` from the kernel's random source (getrandom(2)).
fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: writes at most rest.len() bytes into a valid buffer.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom cannot fail on Linux >= 3.17 with a valid buffer; fall back to
            // time and address entropy rather than panic.
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                ^ (buf.as_ptr() as u128);
            for (i, b) in buf[filled..].iter_mut().enumerate() {
                *b = (seed >> ((i % 16) * 8)) as u8;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let m = parse_mac("AA:bb:0c:dd:ee:FF").unwrap();
        assert_eq!(m, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        assert_eq!(format_mac(&m), "aa:bb:0c:dd:ee:ff");
        assert_eq!(parse_mac("aa-bb-0c-dd-ee-ff"), Some(m));
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "zz:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:+f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_mac_is_local_unicast() {
        for _ in 0..100 {
            let m = random_mac();
            assert_eq!(m[0] & 0x01, 0, "multicast bit set");
            assert_eq!(m[0] & 0x02, 0x02, "local bit clear");
        }
        assert_ne!(random_mac(), random_mac());
    }
}
