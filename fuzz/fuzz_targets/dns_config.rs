//! dns-alias's config parsing on arbitrary input, the way a runtime hands it over: the bytes
//! up to the first NUL are CNI_ARGS, the rest is the stdin config. Parsing must give a value
//! or a CNI error, never a panic.
#![no_main]

use cni::dispatch::build_request;
use cni::Env;
use dns_alias::config::{container_names, DnsConf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    let env = Env::from_lookup(&|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("0123456789abcdef".into()),
        "CNI_NETNS" => Some("/var/run/netns/fuzz".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_PATH" => Some("/opt/cni/bin".into()),
        "CNI_ARGS" => Some(args.clone()),
        _ => None,
    });
    let Ok(env) = env else { return };
    let Ok(req) = build_request(env, stdin) else { return };
    if let Ok(conf) = DnsConf::from_request(&req) {
        if let Some(d) = &conf.domain_name {
            assert!(dns_alias::config::validate_name(d).is_ok(), "{d:?}");
        }
    }
    if let Ok(names) = container_names(&req) {
        for n in &names {
            assert!(dns_alias::config::validate_name(n).is_ok(), "{n:?}");
        }
    }
});
