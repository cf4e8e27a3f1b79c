//! dns-alias's config parsing on arbitrary input, the way a runtime hands it over (see
//! `common`). Parsing must give a value or a CNI error, never a panic.
#![no_main]

mod common;

use dns_alias::config::{container_names, DnsConf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
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
