//! tuning's config parsing and planning on arbitrary input (see `common`), with and without
//! a sysctl allowlist: a value or a CNI error, never a panic. An accepted config only names
//! sysctls under /proc/sys/net; after its ADD steps CHECK finds nothing to report and a
//! second ADD changes nothing; the recorded originals read back, and DEL's steps from them
//! put back exactly what was there before.
#![no_main]

mod common;

use cni_tuning::config::TuningConf;
use cni_tuning::plan::{add_steps, differences, restore_steps, LinkNow, Observed, Originals, Step};
use libfuzzer_sys::fuzz_target;

/// An allowlist in the reference's format (Go regular expressions, one a line).
const ALLOWLIST: &str = "^net\\.core\\.\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\nnet/ipv6/";

/// The namespace after `steps`, as the kernel would hold it.
fn after(now: &Observed, steps: &[Step]) -> Observed {
    let mut o = now.clone();
    for s in steps {
        let link = o.link.as_mut();
        match (s, link) {
            (Step::Sysctl { path, to, .. }, _) => {
                o.sysctls.iter_mut().find(|(p, _)| p == path).expect("observed").1 = to.clone()
            }
            (Step::Mtu { to, .. }, Some(l)) => l.mtu = *to,
            (Step::Mac { to, .. }, Some(l)) => l.mac = Some(*to),
            (Step::Promisc { to, .. }, Some(l)) => l.promisc = *to,
            (Step::Allmulti { to, .. }, Some(l)) => l.allmulti = *to,
            (Step::TxQLen { to, .. }, Some(l)) => l.txqlen = *to,
            (s, None) => panic!("{s:?} without an interface"),
        }
    }
    o
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data) else { return };
    let listed = TuningConf::from_request(&req, Some(ALLOWLIST));
    let conf = match TuningConf::from_request(&req, None) {
        Ok(c) => c,
        Err(e) => {
            common::config_error(&e);
            // An allowlist only takes keys away.
            assert!(listed.is_err(), "{listed:?}");
            return;
        }
    };
    match &listed {
        Ok(c) => assert_eq!(c, &conf),
        Err(e) => common::config_error(e),
    }
    for (i, s) in conf.sysctls.iter().enumerate() {
        let parts: Vec<&str> = s.path.split('/').collect();
        assert!(parts.len() >= 2 && parts[0] == "net", "{s:?}");
        assert!(parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."), "{s:?}");
        assert!(!s.path.contains('\0'), "{s:?}");
        assert!(conf.sysctls[..i].iter().all(|o| o.path != s.path), "{s:?} twice");
    }
    if let Some(mac) = conf.mac {
        assert!(mac[0] & 1 == 0 && mac != [0; 6], "{mac:?}");
    }
    assert!(conf.data_dir.as_ref().is_none_or(|d| d.is_absolute()));

    let before = Observed {
        link: Some(LinkNow {
            mac: Some([0x02, 0, 0, 0, 0, 1]),
            mtu: 1500,
            promisc: false,
            allmulti: false,
            txqlen: 1000,
        }),
        sysctls: conf.sysctls.iter().map(|s| (s.path.clone(), "0".to_string())).collect(),
    };
    let steps = add_steps(&conf, &before);
    let added = after(&before, &steps);
    let diffs = differences(&conf, &req.env.ifname, &added);
    assert!(diffs.is_empty(), "{diffs:?}");
    assert_eq!(add_steps(&conf, &added), vec![], "a second ADD changes something");

    let saved = Originals::of(&steps);
    common::round_trips(&saved);
    assert_eq!(saved.clone().merged_onto(&saved), saved);
    let restored = after(&added, &restore_steps(&saved, &added));
    assert_eq!(restored, before);
});
