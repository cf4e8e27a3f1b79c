//! The input shape shared by the config targets: the bytes up to the first NUL are CNI_ARGS,
//! the rest is the stdin config, as a runtime hands them over for an ADD.

use cni::dispatch::{build_request, Request};
use cni::Env;

pub fn request(data: &[u8]) -> Option<Request> {
    let (args, stdin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    let env = Env::from_lookup(&|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("0123456789abcdef".into()),
        "CNI_NETNS" => Some("/var/run/netns/fuzz".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        // Nothing is run from here: delegated IPAM types are only looked up.
        "CNI_PATH" => Some("/nonexistent-cni-path".into()),
        "CNI_ARGS" => Some(args.clone()),
        _ => None,
    })
    .ok()?;
    build_request(env, stdin).ok()
}
