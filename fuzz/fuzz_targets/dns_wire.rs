//! The DNS wire decoder on arbitrary bytes, as the daemon meets them: a datagram or TCP
//! frame from a container (parse, then answer from a small zone or build the error reply),
//! and an upstream's answer to a forwarded query (the checks before it is relayed).
#![no_main]

use dns_alias::store::Record;
use dns_alias::wire::{self, Bad};
use dns_alias::zone::{Outcome, Scratch, Zone};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let rec = |net: &str, cid: &str, names: &[&str], ips: &[&str]| Record {
            network: net.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: format!("/ns/{cid}"),
            names: names.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            domain: Some("dns.test".into()),
            upstreams: vec![],
            ttl: 0,
            internal: false,
        };
        let records = [
            rec("n1", "1", &["web", "alias"], &["10.1.0.2", "fd00::2"]),
            rec("n1", "2", &["db", "alias"], &["10.1.0.3"]),
            rec("n2", "3", &["other"], &["10.2.0.2"]),
        ];
        Zone::build(
            &records,
            |ns| ns.strip_prefix("/ns/").and_then(|n| n.parse().ok()),
            &["192.0.2.53:53".parse().unwrap()],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    match wire::parse_query(data) {
        Ok(q) => {
            for scope in [1u64, 3, 99] {
                for limit in [wire::UDP_MIN, q.udp_limit(), 65535] {
                    if zone().answer(scope, data, &q, limit, &mut out, &mut scratch)
                        == Outcome::Reply
                    {
                        assert!(out.len() >= wire::HEADER_LEN);
                        assert!(out.len() <= limit.max(512));
                    }
                }
            }
            if let Some(name) = q.name.as_str() {
                let _ = wire::parse_reverse(name);
            }
            let _ = wire::same_question(data, q.question_end, data);
        }
        Err(Bad::Reply { rcode, question_end }) => {
            wire::build_reply(&mut out, data, question_end, false, rcode, false, 0, &[], 512);
            assert!(out.len() >= wire::HEADER_LEN);
        }
        Err(Bad::Ignore) => {}
    }
    // As an upstream's reply.
    let _ = wire::answers(data);
    let _ = (wire::id(data), wire::rcode(data), wire::is_truncated(data), wire::is_response(data));
});
