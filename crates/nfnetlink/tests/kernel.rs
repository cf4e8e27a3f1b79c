//! Kernel test: a transaction built here is what `nft list` prints back. Runs in a private
//! network namespace (`nfnltest-<pid>`); skipped when not root or without `nft` (failed under CI).

use std::process::Command;

use nfnetlink::tables::{types, Family, Hook};
use nfnetlink::{commit, Elem, ElemData, Op, Rule, SetDef, Socket, Verdict};

fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).expect("open netns");
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        f()
    })
    .join()
    .unwrap()
}

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn nft(ns: &str, args: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &format!("nft {args}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn what_we_send_is_what_nft_lists() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("nft").arg("--version").output().is_err() {
        cni::prereq::skip("kernel tests need root and nft");
        return;
    }
    let name = format!("nfnltest-{}", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    let ns = Ns(name);
    let t = "t".to_string();
    let f = Family::Inet;
    let ops = vec![
        Op::AddTable { family: f, name: t.clone() },
        Op::AddChain {
            family: f,
            table: t.clone(),
            name: "c".into(),
            hook: None,
            comment: Some("cni network x".into()),
        },
        Op::AddSet {
            family: f,
            table: t.clone(),
            def: SetDef::vmap("m4", &[types::IPADDR]).interval(),
        },
        Op::AddSet { family: f, table: t.clone(), def: SetDef::set("bridges", &[types::IFNAME]) },
        Op::AddSet {
            family: f,
            table: t.clone(),
            def: SetDef::map(
                "hp4",
                &[types::IPADDR, types::INET_PROTO, types::INET_SERVICE],
                &[types::IPADDR, types::INET_SERVICE],
            )
            .timeout(),
        },
        Op::AddChain {
            family: f,
            table: t.clone(),
            name: "post".into(),
            hook: Some(Hook { kind: "nat", num: 4, priority: 100 }),
            comment: None,
        },
        Op::AddRule {
            family: f,
            table: t.clone(),
            chain: "post".into(),
            rule: Rule::new().addr_vmap(false, false, "m4"),
        },
        Op::AddRule {
            family: f,
            table: t.clone(),
            chain: "c".into(),
            rule: Rule::new()
                .oifname_ne("br0")
                .ifname_in(true, "bridges")
                .verdict(Verdict::Drop)
                .comment("hi"),
        },
        Op::AddRule {
            family: f,
            table: t.clone(),
            chain: "c".into(),
            rule: Rule::new()
                .addr_in_net(true, ("10.88.0.0".parse().unwrap(), 16))
                .verdict(Verdict::Return),
        },
        Op::AddChain { family: f, table: t.clone(), name: "d".into(), hook: None, comment: None },
        Op::AddRule {
            family: f,
            table: t.clone(),
            chain: "d".into(),
            rule: Rule::new().ct_dnat(false).daddr_is_local().dnat_map(false, true, "hp4"),
        },
        Op::AddElems {
            family: f,
            table: t.clone(),
            set: "hp4".into(),
            elems: vec![Elem::new(
                vec![192, 0, 2, 1, 6, 0, 0, 0, 0, 80, 0, 0],
                "192.0.2.1 . tcp . 80",
            )
            .comment("abc/eth0")
            .data(ElemData::Value(vec![10, 88, 0, 5, 0, 80, 0, 0], "10.88.0.5 . 80".into()))],
        },
        Op::AddElems {
            family: f,
            table: t.clone(),
            set: "m4".into(),
            elems: vec![
                Elem::new(vec![10, 88, 0, 0], "10.88.0.0")
                    .data(ElemData::Verdict(Verdict::Jump("c".into()))),
                Elem { interval_end: true, ..Elem::new(vec![10, 89, 0, 0], "10.89.0.0") },
            ],
        },
    ];
    let sent = ops.clone();
    let r = in_netns(&ns.0, move || {
        let mut s = Socket::open().unwrap();
        commit(&mut s, &ops).map_err(|e| e.to_string())
    });
    let listed = nft(&ns.0, "list ruleset");
    println!("{listed}");
    r.unwrap();
    assert!(listed.contains("comment \"cni network x\""), "{listed}");
    assert!(listed.contains("oifname != \"br0\" oifname @bridges drop comment \"hi\""), "{listed}");
    assert!(listed.contains("ip daddr 10.88.0.0/16 return"), "{listed}");
    assert!(
        listed.contains("192.0.2.1 . tcp . 80 comment \"abc/eth0\" : 10.88.0.5 . 80"),
        "{listed}"
    );
    assert!(listed.contains("10.88.0.0/16 : jump c"), "{listed}");
    assert!(listed.contains("ip saddr vmap @m4"), "{listed}");
    // A failing transaction names the operation.
    let e = in_netns(&ns.0, || {
        let mut s = Socket::open().unwrap();
        commit(
            &mut s,
            &[Op::DelChain { family: Family::Inet, table: "t".into(), name: "nope".into() }],
        )
        .unwrap_err()
    });
    assert_eq!(e.errno, libc::ENOENT, "{e}");
    assert!(e.what.contains("delete chain inet t nope"), "{e}");
    let h = in_netns(&ns.0, || {
        let mut s = Socket::open().unwrap();
        (
            nfnetlink::tables::table_handle(&mut s, Family::Inet, "t").unwrap(),
            nfnetlink::tables::table_handle(&mut s, Family::Inet, "absent").unwrap(),
        )
    });
    assert!(h.0.is_some() && h.1.is_none(), "{h:?}");
    // Every rule reads back from the kernel (a GETRULE dump) as the expressions we sent.
    for chain in ["c", "d", "post"] {
        let want: Vec<_> = sent
            .iter()
            .filter_map(|o| match o {
                Op::AddRule { chain: c, rule, .. } if c == chain => Some(rule.exprs.clone()),
                _ => None,
            })
            .collect();
        let got = in_netns(&ns.0, move || {
            let mut s = Socket::open().unwrap();
            nfnetlink::tables::chain_rules(&mut s, Family::Inet, "t", chain).unwrap()
        });
        assert_eq!(got.iter().map(|r| r.exprs.clone()).collect::<Vec<_>>(), want, "chain {chain}");
        assert!(got.iter().all(|r| r.handle > 0));
    }
    let absent = in_netns(&ns.0, || {
        let mut s = Socket::open().unwrap();
        (
            nfnetlink::tables::chain_rules(&mut s, Family::Inet, "t", "absent").unwrap(),
            nfnetlink::tables::chain_rules(&mut s, Family::Ip, "absent", "c").unwrap(),
            nfnetlink::tables::chain_info(&mut s, Family::Inet, "t", "post").unwrap(),
            nfnetlink::tables::table_info(&mut s, Family::Inet, "t").unwrap(),
        )
    });
    assert!(absent.0.is_empty() && absent.1.is_empty(), "{absent:?}");
    let post = absent.2.expect("chain post");
    assert_eq!(post.hook, Some(Hook { kind: "nat", num: 4, priority: 100 }));
    assert_eq!(post.policy, Some(1));
    // chains c, d, post and sets m4, bridges, hp4
    assert_eq!(absent.3.map(|t| t.objects), Some(6));
}
