//! The input shape shared by the config targets: the bytes up to the first NUL are CNI_ARGS,
//! the rest is the stdin config, as a runtime hands them over for an ADD.

use cni::dispatch::Request;

pub fn request(data: &[u8]) -> Option<Request> {
    let (args, stdin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    // Nothing is run from here: delegated IPAM types are only looked up.
    cni::dispatch::request_for("ADD", "0123456789abcdef", "eth0", &args, stdin).ok()
}

/// A refused config is a CNI error the runtime can read: a config error's code (1 version,
/// 2 unsupported field, 4 environment, 6 decoding, 7 invalid config), a message, and the
/// same error back from the JSON printed on stdout.
#[allow(dead_code)] // Not every target checks its errors.
pub fn config_error(e: &cni::CniError) {
    assert!([1, 2, 4, 6, 7].contains(&e.code), "code {}: {e:?}", e.code);
    assert!(!e.msg.trim().is_empty(), "{e:?}");
    let printed = e.to_json("1.1.0").to_string();
    let read = serde_json::from_str(&printed).ok().and_then(|v| cni::CniError::from_json(&v));
    assert_eq!(read.as_ref(), Some(e), "{printed}");
}

/// The same value back from its JSON: what ADD records is what DEL and GC read.
#[allow(dead_code)]
pub fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).expect("serializes");
    let back: T = serde_json::from_slice(&json).expect("reads back");
    assert_eq!(&back, v, "{}", String::from_utf8_lossy(&json));
}
