//! host's config parsing on arbitrary input: a value or a CNI error, never a panic.
#![no_main]

mod common;

use cni_host::config::{parse_pci_address, HostConf, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    if let Ok(conf) = HostConf::from_request(&req) {
        match &conf.device {
            Some(Selector::Name(n)) => assert!(cni::names::ifname_problem(n).is_none()),
            Some(Selector::Pci(id)) => {
                assert_eq!(parse_pci_address(id).as_deref(), Some(id.as_str()))
            }
            Some(Selector::KernelPath(p)) => assert!(p.starts_with("/sys/devices/")),
            _ => {}
        }
    }
});
