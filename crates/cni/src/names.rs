//! Names the suite derives and names it accepts: kernel object names built from a container's
//! identity, file names for state keys of any length, and the one interface-name check.

use crate::error::CniError;
use sha2::{Digest, Sha256};

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// RFC 4648 base32 alphabet, lower case: only letters and digits, valid in interface, chain
/// and file names.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// SHA-256 of the parts, separated so that ("ab","c") and ("a","bc") differ.
fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// `n` base32 characters of the digest of `parts` (5 bits each).
fn hash_chars(parts: &[&str], n: usize) -> String {
    let d = digest(parts);
    let mut bits: u128 = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
    let mut out = String::with_capacity(n);
    for _ in 0..n.min(25) {
        out.push(BASE32[(bits >> 123) as usize] as char);
        bits <<= 5;
    }
    out
}

/// A name of exactly `len` characters: `prefix` followed by a hash of `parts`. The same parts
/// always give the same name, so DEL finds what ADD made without any state. With the 15
/// characters of an interface name and a 4-character prefix the hash has 55 bits: among
/// 10,000 containers on one host the chance that two share a name is about 1 in 10^9. Callers
/// still tag what they create with its owner ([`owner_tag`]) and refuse to touch an object of
/// that name that carries another owner's tag.
pub fn stable_name(prefix: &str, len: usize, parts: &[&str]) -> String {
    assert!(prefix.len() + 8 <= len, "stable_name: prefix {prefix:?} leaves under 40 bits");
    format!("{prefix}{}", hash_chars(parts, len - prefix.len()))
}

/// An interface name (15 characters) for the object a container's attachment owns.
pub fn stable_ifname(prefix: &str, parts: &[&str]) -> String {
    stable_name(prefix, IFNAME_MAX, parts)
}

/// What a kernel object records about its owner (e.g. as a link alias): the attachment it
/// belongs to. Compared before a DEL or GC removes an object found by its stable name.
pub fn owner_tag(network: &str, container_id: &str, ifname: &str) -> String {
    // Aliases are limited to 255 bytes; a long container ID is represented by its hash.
    let id = if container_id.len() > 64 {
        format!("{}~{}", &container_id[..32], hash_chars(&[container_id], 20))
    } else {
        container_id.to_string()
    };
    let net = if network.len() > 64 {
        format!("{}~{}", &network[..32], hash_chars(&[network], 20))
    } else {
        network.to_string()
    };
    format!("{OWNER_TAG_PREFIX}{net}/{id}/{ifname}")
}

/// What every owner tag starts with.
const OWNER_TAG_PREFIX: &str = "cni-suite:";

/// True when an object whose alias is `alias` may be treated as the one `tag` names: it
/// carries that tag, or no owner tag of ours (made before tags, by an ADD that died before
/// tagging it, or an alias an admin set). An object tagged for another owner is never
/// deleted or reused.
pub fn may_own(alias: Option<&str>, tag: &str) -> bool {
    alias.is_none_or(|a| a == tag || !a.starts_with(OWNER_TAG_PREFIX))
}

/// Longest key kept verbatim as a file name component; longer ones are hashed.
const FILE_KEY_MAX: usize = 100;

/// A file-name component for a state key of any length and content (container IDs may be
/// long, network names contain dots): the key itself when it is short and made of safe
/// characters, otherwise a readable prefix plus a hash. Never empty, never starts with '.',
/// never longer than 100 bytes, and distinct keys give distinct components.
pub fn file_key(key: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let verbatim = !key.is_empty()
        && key.len() <= FILE_KEY_MAX
        && !key.starts_with('.')
        && !key.contains('~')
        && key.chars().all(safe);
    if verbatim {
        return key.to_string();
    }
    // '~' marks a hashed key, so a verbatim key can never equal a hashed one.
    let readable: String = key.chars().filter(|c| safe(*c)).take(40).collect();
    let readable = readable.trim_start_matches('.');
    format!("{readable}~{}", hash_chars(&[key], 25))
}

/// Why `name` cannot be a Linux interface name, or None when it can: 1-15 bytes, not "." or
/// "..", no '/', ':' or whitespace (the kernel's dev_valid_name).
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > IFNAME_MAX {
        Some("longer than 15 characters")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0') {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    }
}

/// Checks an interface name given in the network config: code 7 naming the key and value.
pub fn check_ifname(key: &str, name: &str) -> Result<(), CniError> {
    match ifname_problem(name) {
        Some(why) => Err(CniError::bad_value(key, format!("{name:?}"), why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_names_are_stable_distinct_and_valid() {
        let a = stable_ifname("veth", &["net", "ctr1", "eth0"]);
        assert_eq!(a, stable_ifname("veth", &["net", "ctr1", "eth0"]));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert_eq!(ifname_problem(&a), None);
        assert_ne!(a, stable_ifname("veth", &["net", "ctr2", "eth0"]));
        // Part boundaries count.
        assert_ne!(stable_ifname("v", &["ab", "c"]), stable_ifname("v", &["a", "bc"]));
        let many: std::collections::HashSet<String> =
            (0..20000).map(|i| stable_ifname("veth", &["n", &i.to_string(), "eth0"])).collect();
        assert_eq!(many.len(), 20000);
    }

    #[test]
    fn file_keys_hash_long_or_unsafe_keys() {
        assert_eq!(file_key("abc_eth0"), "abc_eth0");
        let long = "a".repeat(300);
        let k = file_key(&long);
        assert!(k.len() <= 100 && k.contains('~'), "{k}");
        assert_ne!(file_key(&long), file_key(&"a".repeat(301)));
        assert!(!file_key("..").starts_with('.'));
        assert!(!file_key("a/b").contains('/'));
        assert_ne!(file_key(""), "");
        // A verbatim key can never collide with a hashed one.
        assert_ne!(file_key(&file_key(&long)), file_key(&long));
    }

    #[test]
    fn owner_tags_fit_an_alias() {
        let t = owner_tag(&"n".repeat(250), &"c".repeat(1000), "eth0");
        assert!(t.len() < 255, "{}", t.len());
        assert_ne!(t, owner_tag(&"n".repeat(250), &"c".repeat(1001), "eth0"));
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("bridge", "cni0").is_ok());
        let e = check_ifname("bridge", "this-name-is-too-long").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("bridge") && e.msg.contains("this-name-is-too-long"), "{}", e.msg);
        assert!(ifname_problem("a b").is_some());
        assert!(ifname_problem("..").is_some());
        assert!(ifname_problem("").is_some());
    }
}
