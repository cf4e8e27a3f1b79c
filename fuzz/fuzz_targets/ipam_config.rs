//! The IPAM config parsers (host-local, static, the requested addresses) on arbitrary input:
//! a value or a CNI error, never a panic; candidate addresses stay inside their ranges.
#![no_main]

mod common;

use ipam::alloc::Candidates;
use ipam::config::{host_local, requested_ips, static_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let _ = ipam::configured(&req);
    let _ = requested_ips(&req);
    let _ = static_config(&req);
    if let Ok(conf) = host_local(&req) {
        assert!(!conf.ranges.is_empty());
        for set in &conf.ranges {
            for (range, ip) in Candidates::new(set, None).take(8) {
                assert!(range.contains(ip) && set.contains(ip), "{ip} outside {}", set.describe());
            }
        }
    }
});
