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
