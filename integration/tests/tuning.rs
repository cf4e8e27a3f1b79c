//! `tuning` chained after our `bridge` (with `portmap`, as nerdctl and podman chain it) and
//! after our `host` in device mode (a device that goes back to the host on DEL, so restoring
//! matters), driven by the real cnitool, with our binary and the reference one side by side:
//! same scenarios, same assertions, differences stated where the reference differs.

#[path = "common/chained.rs"]
#[macro_use]
mod chained;

use chained::{plugin_binary, plugins_with, Impl};
use integration::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

const MAC: &str = "c2:b0:57:49:47:f1";

/// The (major, minor) version of a plugin build; Debian's reference 1.1.1 reports
/// "version unknown", read as (1, 1).
fn version(env: &TestEnv, which: Impl) -> (u32, u32) {
    if which == Impl::Ours {
        return (u32::MAX, 0);
    }
    let bin = plugin_binary(env, "tuning", which);
    let out = std::process::Command::new(&bin).output().expect("running the reference tuning");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v')).unwrap_or("");
    let nums: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match nums[..] {
        [major, minor, ..] => (major, minor),
        _ => (1, 1),
    }
}

/// `txQLen` arrived in reference v1.4.0.
fn supports_txqlen(env: &TestEnv, which: Impl) -> bool {
    version(env, which) >= (1, 4)
}

/// Everything `tuning` can set on the interface, plus two sysctls.
fn tuning_conf(txqlen: bool) -> Value {
    let mut t = json!({
        "type": "tuning",
        "mac": MAC,
        "mtu": 1400,
        "promisc": true,
        "allmulti": true,
        "sysctl": {"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.arp_filter": "1"}
    });
    if txqlen {
        t["txQLen"] = json!(500);
    }
    t
}

/// What `ip -d link` shows of one interface.
#[derive(Debug, Clone, PartialEq)]
struct LinkView {
    mac: String,
    mtu: u64,
    promisc: bool,
    allmulti: bool,
    txqlen: u64,
}

fn link_view(ns: &Netns, dev: &str) -> LinkView {
    let v = ns.ip_json(&["-d", "link", "show", dev]);
    let l = &v[0];
    let flags = l["flags"].to_string();
    LinkView {
        mac: l["address"].as_str().unwrap_or_default().to_string(),
        mtu: l["mtu"].as_u64().unwrap(),
        promisc: l["promiscuity"].as_u64().unwrap_or(0) > 0 || flags.contains("PROMISC"),
        allmulti: flags.contains("ALLMULTI"),
        txqlen: l["txqlen"].as_u64().unwrap_or(0),
    }
}

fn assert_tuned(ns: &Netns, dev: &str, txqlen: bool) {
    let l = link_view(ns, dev);
    assert_eq!(l.mac, MAC, "{dev}: {l:?}");
    assert_eq!(l.mtu, 1400, "{dev}: {l:?}");
    assert!(l.promisc && l.allmulti, "{dev}: {l:?}");
    if txqlen {
        assert_eq!(l.txqlen, 500, "{dev}: {l:?}");
    }
    assert_eq!(ns.sysctl("net.core.somaxconn"), "500");
    assert_eq!(ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_filter")), "1");
}

fn result_mac(result: &Value, ifname: &str) -> String {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == ifname && i.get("sandbox").is_some())
        .and_then(|i| i["mac"].as_str())
        .unwrap_or_else(|| panic!("no {ifname} with a mac in {result}"))
        .to_ascii_lowercase()
}

/// Every state file but IPAM's (leases and the host-local lock file).
fn state_files(env: &TestEnv) -> Vec<std::path::PathBuf> {
    files_under(&env.state_dir())
        .into_iter()
        .filter(|f| {
            let f = f.to_string_lossy();
            !f.contains("/ipam/") && !f.contains("/networks/")
        })
        .collect()
}

/// tuning's own records.
fn tuning_records(env: &TestEnv) -> Vec<std::path::PathBuf> {
    files_under(&env.state_dir().join("tuning"))
}

/// nerdctl's and podman's chain shape: bridge, portmap, then tuning last.
fn tunes_the_container_interface_in_a_runtime_chain(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("tu{}", which.label()));
    let txqlen = supports_txqlen(&env, which);
    let opts = CniOpts::ours().plugins(plugins_with(&env, "tuning", which)).cap_args(
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    env.write_conflist(
        "tu",
        &json!({"cniVersion": "1.0.0", "name": "tu", "plugins": [
            {"type": "bridge", "bridge": "br-tu", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.32.1.0/24"}]], "dataDir": env.ipam_dir()}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            tuning_conf(txqlen)
        ]}),
    );
    let host_somaxconn = env.host().sysctl("net.core.somaxconn");
    let ctr = env.container("tuc");
    let add = env.cnitool("add", "tu", &ctr, &opts);
    let result = add.expect_ok().result().clone();
    assert_eq!(result_mac(&result, "eth0"), MAC, "the result carries the new MAC");
    assert_tuned(&ctr, "eth0", txqlen);
    // Sysctls changed in the container's namespace only.
    assert_eq!(env.host().sysctl("net.core.somaxconn"), host_somaxconn);
    // The container still works with its new MAC and MTU, directly and through the published port.
    let ip = first_ip(&result);
    assert!(ping(env.host(), ip), "host -> container {ip}");
    let _srv = EchoServer::tcp(&ctr, SocketAddr::new(ip, 80));
    assert_eq!(tcp_echo(env.host(), ip, 80, "direct").as_deref(), Some("direct"));
    assert_eq!(
        tcp_echo(env.host(), "127.0.0.1".parse().unwrap(), 18080, "published").as_deref(),
        Some("published")
    );

    let check = env.cnitool("check", "tu", &ctr, &opts);
    if version(&env, which) < (1, 3) {
        // Before v1.3.0 the reference's CHECK did not substitute IFNAME in sysctl keys.
        check.expect_err();
        assert!(check.stderr.contains("/proc/sys/net/ipv4/conf/IFNAME/arp_filter"), "{check}");
    } else {
        check.expect_ok();
    }
    // CHECK notices a setting someone changed behind our back.
    ctr.ip_ok(&["link", "set", "eth0", "mtu", "1450"]);
    let check = env.cnitool("check", "tu", &ctr, &opts);
    check.expect_err();
    if which == Impl::Ours {
        assert!(check.stderr.contains("MTU 1450, configured 1400"), "{check}");
    }

    env.cnitool("del", "tu", &ctr, &opts).expect_ok();
    assert!(links_of_kind(env.host(), "veth").is_empty());
    let rules = nft_ruleset(env.host());
    assert!(!rules.contains("cni_"), "nft rules left: {rules}");
    assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
    env.cnitool("del", "tu", &ctr, &opts).expect_ok();
}

ours_and_reference!(
    tunes_the_container_interface_in_a_runtime_chain,
    ours_tunes_the_container_interface_in_a_runtime_chain,
    reference_tunes_the_container_interface_in_a_runtime_chain
);

/// podman 4's generated 0.4.0 list ends with a bare `{"type": "tuning"}`: it must pass the
/// 0.4.0 result on unchanged and leave the interface as the bridge made it.
fn passes_a_040_result_through(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("tup{}", which.label()));
    let opts = CniOpts::ours().plugins(plugins_with(&env, "tuning", which));
    let bridge = json!({"type": "bridge", "bridge": "cni-podman1", "isGateway": true, "ipMasq": true,
        "hairpinMode": true, "capabilities": {"ips": true},
        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                 "ranges": [[{"subnet": "10.32.4.0/24", "gateway": "10.32.4.1"}]], "dataDir": env.ipam_dir()}});
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let chain = |with_tuning: bool| {
        let mut plugins = vec![bridge.clone(), portmap.clone()];
        if with_tuning {
            plugins.push(json!({"type": "tuning"}));
        }
        json!({"cniVersion": "0.4.0", "name": "podman1", "plugins": plugins})
    };
    env.write_conflist("podman1", &chain(true));
    let ctr = env.container("tup");
    let result = env.cnitool("add", "podman1", &ctr, &opts).expect_ok().result().clone();
    assert_eq!(result["cniVersion"], "0.4.0", "{result}");
    assert_eq!(result["ips"][0]["version"], "4", "{result}");
    assert_eq!(result_mac(&result, "eth0"), link_view(&ctr, "eth0").mac);
    assert_eq!(link_view(&ctr, "eth0").mtu, 1500);
    env.cnitool("check", "podman1", &ctr, &opts).expect_ok();
    env.cnitool("del", "podman1", &ctr, &opts).expect_ok();
    // The same list without tuning gives the same result shape.
    env.write_conflist("podman1", &chain(false));
    let plain = env.cnitool("add", "podman1", &ctr, &opts).expect_ok().result().clone();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&plain), keys(&result));
    assert_eq!(
        plain["interfaces"].as_array().unwrap().len(),
        result["interfaces"].as_array().unwrap().len()
    );
    env.cnitool("del", "podman1", &ctr, &opts).expect_ok();
    assert!(links_of_kind(env.host(), "veth").is_empty());
    assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
}

ours_and_reference!(
    passes_a_040_result_through,
    ours_passes_a_040_result_through,
    reference_passes_a_040_result_through
);

/// A host device handed to the container and given back on DEL: tuning's DEL must put its
/// original settings back, because the device outlives the container.
fn restores_a_device_that_stays(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("tud{}", which.label()));
    let txqlen = supports_txqlen(&env, which);
    let opts = CniOpts::ours().plugins(plugins_with(&env, "tuning", which));
    env.host().ip_ok(&["link", "add", "hd0", "type", "veth", "peer", "name", "hd0p"]);
    let before = link_view(env.host(), "hd0");
    assert!(!before.promisc && !before.allmulti);
    env.write_conflist(
        "dev",
        &json!({"cniVersion": "1.0.0", "name": "dev", "plugins": [
            {"type": "host", "device": "hd0"},
            tuning_conf(txqlen)
        ]}),
    );
    let ctr = env.container("tud");
    let original_somaxconn = ctr.sysctl("net.core.somaxconn");
    let result = env.cnitool("add", "dev", &ctr, &opts).expect_ok().result().clone();
    assert_eq!(result_mac(&result, "eth0"), MAC);
    assert_tuned(&ctr, "eth0", txqlen);
    if which == Impl::Ours {
        // host's CHECK takes the MAC tuning set from the chain's result, not from its record.
        // (The reference tuning before v1.3.0 fails CHECK on IFNAME sysctl keys.)
        env.cnitool("check", "dev", &ctr, &opts).expect_ok();
    }

    env.cnitool("del", "dev", &ctr, &opts).expect_ok();
    assert_eq!(link_view(env.host(), "hd0"), before, "hd0 is back as it was");
    let somaxconn = ctr.sysctl("net.core.somaxconn");
    match which {
        // Ours also puts back the sysctls it changed (when nobody changed them since).
        Impl::Ours => assert_eq!(somaxconn, original_somaxconn),
        // The reference restores interface settings only.
        Impl::Reference => assert_eq!(somaxconn, "500"),
    }
    assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
}

ours_and_reference!(
    restores_a_device_that_stays,
    ours_restores_a_device_that_stays,
    reference_restores_a_device_that_stays
);

/// The `mac` capability, CNI_ARGS `MAC` and `args.cni` in the config.
fn mac_from_capability_cni_args_and_args(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("tum{}", which.label()));
    let plugins = plugins_with(&env, "tuning", which);
    let bridge = |subnet: &str| {
        json!({"type": "bridge", "bridge": "br-tum",
               "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": env.ipam_dir()}})
    };
    env.write_conflist(
        "cap",
        &json!({"cniVersion": "1.0.0", "name": "cap", "plugins": [
            bridge("10.32.2.0/24"),
            {"type": "tuning", "capabilities": {"mac": true}}
        ]}),
    );
    env.write_conflist(
        "args",
        &json!({"cniVersion": "1.0.0", "name": "args", "plugins": [
            bridge("10.32.2.0/24"),
            {"type": "tuning", "mtu": 1450, "args": {"cni": {"mtu": 1300, "mac": "c2:00:00:00:00:03"}}}
        ]}),
    );
    // Capability (go-cni sends runtimeConfig {"mac": ...}); the bridge does not get it.
    let a = env.container("tma");
    let opts =
        CniOpts::ours().plugins(plugins.clone()).cap_args(json!({"mac": "c2:00:00:00:00:01"}));
    let r = env.cnitool("add", "cap", &a, &opts).expect_ok().result().clone();
    assert_eq!(result_mac(&r, "eth0"), "c2:00:00:00:00:01");
    assert_eq!(link_view(&a, "eth0").mac, "c2:00:00:00:00:01");
    env.cnitool("del", "cap", &a, &opts).expect_ok();

    // CNI_ARGS, with the unknown keys runtimes add.
    let b = env.container("tmb");
    let opts = CniOpts::ours()
        .plugins(plugins.clone())
        .args("IgnoreUnknown=1;K8S_POD_NAME=b;MAC=c2:00:00:00:00:02");
    let r = env.cnitool("add", "cap", &b, &opts).expect_ok().result().clone();
    assert_eq!(result_mac(&r, "eth0"), "c2:00:00:00:00:02");
    assert_eq!(link_view(&b, "eth0").mac, "c2:00:00:00:00:02");
    env.cnitool("del", "cap", &b, &opts).expect_ok();

    // args.cni overrides the config's keys.
    let c = env.container("tmc");
    let opts = CniOpts::ours().plugins(plugins);
    let r = env.cnitool("add", "args", &c, &opts).expect_ok().result().clone();
    assert_eq!(result_mac(&r, "eth0"), "c2:00:00:00:00:03");
    let l = link_view(&c, "eth0");
    assert_eq!((l.mac.as_str(), l.mtu), ("c2:00:00:00:00:03", 1300));
    env.cnitool("check", "args", &c, &opts).expect_ok();
    env.cnitool("del", "args", &c, &opts).expect_ok();
    assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
}

ours_and_reference!(
    mac_from_capability_cni_args_and_args,
    ours_takes_mac_from_capability_cni_args_and_args,
    reference_takes_mac_from_capability_cni_args_and_args
);

/// Runs the plugin binary directly (ADD) against `eth0` in `ctr` with `conf` + a prevResult.
fn add_direct(env: &TestEnv, bin: &str, ctr: &Netns, conf: &str) -> CniOutput {
    let netns = ctr.path();
    let prev = format!(
        r#""prevResult":{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"{}"}}],"ips":[]}}"#,
        netns.display()
    );
    let stdin = format!(r#"{{"cniVersion":"1.0.0","name":"bad","type":"tuning",{prev},{conf}}}"#);
    env.exec_plugin(
        bin,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bad1"),
            ("CNI_NETNS", netns.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
        ],
        &stdin,
    )
}

/// Bad input is refused. Ours: code 7 naming the key, and nothing changed (it validates
/// first and undoes a step the kernel refuses). The reference refuses too, but may leave
/// earlier steps applied (it has no undo), so that is asserted for ours only.
fn refuses_bad_input(which: Impl) {
    if !require_root() {
        return;
    }
    let env = TestEnv::new(&format!("tub{}", which.label()));
    let bin = plugin_binary(&env, "tuning", which);
    let bin = bin.to_str().unwrap();
    let ctr = env.container("tub");
    ctr.ip_ok(&["link", "add", "eth0", "type", "veth", "peer", "name", "p0"]);
    let before = link_view(&ctr, "eth0");
    let somaxconn = ctr.sysctl("net.core.somaxconn");
    let hostname_key = "kernel.hostname";
    let cases: &[(&str, &str, bool)] = &[
        // (config keys, what the error names, the reference refuses it too)
        (r#""sysctl":{"kernel.hostname":"x"}"#, hostname_key, true),
        (
            r#""sysctl":{"net.ipv4.conf.eth0/../../../../kernel.hostname":"x"}"#,
            "kernel.hostname",
            true,
        ),
        (r#""sysctl":{"net/../kernel/hostname":"x"}"#, "net/../kernel/hostname", true),
        (r#""sysctl":{"net.core.no_such_sysctl":"1"}"#, "net.core.no_such_sysctl", true),
        (r#""sysctl":{"net.core.somaxconn":"lots"}"#, "net.core.somaxconn", true),
        (r#""mac":"01:00:5e:00:00:01""#, "01:00:5e:00:00:01", true),
        (r#""mac":"not-a-mac""#, "not-a-mac", true),
        // Sysctl and MAC are valid and set before the MTU, which the kernel refuses.
        (
            r#""sysctl":{"net.core.somaxconn":"501"},"mac":"c2:00:00:00:00:09","mtu":70000"#,
            "mtu 70000",
            true,
        ),
        (r#""txQLen":-1"#, "txQLen -1", false),
        (
            r#""sysctl":{"net.core.somaxconn":"1","net.core.somaxconn":"2"}"#,
            "net.core.somaxconn",
            false,
        ),
    ];
    for (conf, names, reference_refuses) in cases {
        let out = add_direct(&env, bin, &ctr, conf);
        if which == Impl::Reference {
            if *reference_refuses {
                out.expect_err();
            }
            continue;
        }
        assert_eq!(out.error_code(), Some(7), "{conf}: {out}");
        assert!(out.stdout.contains(names), "{conf}: error must name {names}: {out}");
        assert_eq!(link_view(&ctr, "eth0"), before, "{conf}: the interface changed");
        assert_eq!(ctr.sysctl("net.core.somaxconn"), somaxconn, "{conf}: the sysctl changed");
    }
    if which == Impl::Ours {
        // A container sharing the host's namespace: tuning would change the host.
        let netns = env.host().path();
        let stdin = r#"{"cniVersion":"1.0.0","name":"bad","type":"tuning","sysctl":{"net.core.somaxconn":"77"},
            "prevResult":{"cniVersion":"1.0.0","interfaces":[],"ips":[]}}"#;
        let host_value = env.host().sysctl("net.core.somaxconn");
        let env_vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "hostnet"),
            ("CNI_NETNS", netns.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
        ];
        let out = env.exec_plugin(bin, &env_vars, stdin);
        assert_eq!(out.error_code(), Some(7), "{out}");
        assert!(out.stdout.contains("host's own network namespace"), "{out}");
        assert_eq!(env.host().sysctl("net.core.somaxconn"), host_value);
        assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
    }
}

ours_and_reference!(
    refuses_bad_input,
    ours_refuses_bad_input_and_changes_nothing,
    reference_refuses_bad_input
);

/// The sysctl allowlist (the reference reads /etc/cni/tuning/allowlist.conf; ours can be
/// pointed elsewhere, which is how this test avoids the machine's /etc), and GC.
#[test]
fn ours_applies_the_sysctl_allowlist_and_garbage_collects() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("tuallow");
    let allow = env.dir().join("allowlist.conf");
    std::fs::write(&allow, "^net\\.core\\.[a-z_]+$\n^net\\.ipv4\\.conf\\.IFNAME\\.arp_filter$\n")
        .unwrap();
    let opts = CniOpts::ours()
        .plugins(plugins_with(&env, "tuning", Impl::Ours))
        .env("CNI_SUITE_TUNING_ALLOWLIST", allow.to_str().unwrap());
    let conflist = |sysctl: Value| {
        json!({"cniVersion": "1.0.0", "name": "al", "plugins": [
            {"type": "bridge", "bridge": "br-al",
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.32.3.0/24"}]], "dataDir": env.ipam_dir()}},
            {"type": "tuning", "sysctl": sysctl}
        ]})
    };
    env.write_conflist("al", &conflist(json!({"net.ipv4.ip_forward": "1"})));
    let a = env.container("ala");
    let add = env.cnitool("add", "al", &a, &opts);
    add.expect_err();
    assert!(add.stderr.contains("\"net.ipv4.ip_forward\" is not allowed"), "{add}");
    assert_eq!(a.sysctl("net.ipv4.ip_forward"), "0");
    env.cnitool("del", "al", &a, &opts).expect_ok();

    env.write_conflist(
        "al",
        &conflist(json!({"net.core.somaxconn": "600", "net.ipv4.conf.IFNAME.arp_filter": "1"})),
    );
    env.cnitool("add", "al", &a, &opts).expect_ok();
    assert_eq!(a.sysctl("net.core.somaxconn"), "600");
    let b = env.container("alb");
    env.cnitool("add", "al", &b, &opts).expect_ok();
    assert_eq!(tuning_records(&env).len(), 2);

    // GC keeps a's record and drops b's.
    let gc = json!({"cniVersion": "1.1.0", "name": "al", "type": "tuning",
        "cni.dev/valid-attachments": [{"containerID": env.container_id(&a, &opts), "ifname": "eth0"}]});
    let bin = plugin_binary(&env, "tuning", Impl::Ours);
    env.exec_plugin(bin.to_str().unwrap(), &[("CNI_COMMAND", "GC")], &gc.to_string()).expect_ok();
    let left = tuning_records(&env);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(std::fs::read_to_string(&left[0]).unwrap().contains(&env.container_id(&a, &opts)));
    env.cnitool("del", "al", &a, &opts).expect_ok();
    env.cnitool("del", "al", &b, &opts).expect_ok();
    assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
}

/// conf-examples/45-tuned-bridge.conflist, loaded unchanged.
#[test]
fn tuned_bridge_example_runs() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("extuned");
    let path = workspace_root().join("conf-examples/45-tuned-bridge.conflist");
    let conf: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    env.write_conflist("tuned", &conf);
    let ctr = env.container("ext");
    // `docker run --mac-address`: the runtime passes the mac capability.
    let opts = CniOpts::ours().cap_args(json!({"mac": MAC}));
    let result = env.cnitool("add", "tuned", &ctr, &opts).expect_ok().result().clone();
    assert_eq!(result_mac(&result, "eth0"), MAC);
    let l = link_view(&ctr, "eth0");
    assert_eq!((l.mac.as_str(), l.mtu), (MAC, 1400));
    assert_eq!(ctr.sysctl("net.core.somaxconn"), "1024");
    assert_eq!(ctr.sysctl("net.ipv4.conf.eth0.arp_filter"), "1");
    let gw = result["ips"][0]["gateway"].as_str().unwrap().to_string();
    assert!(ping(&ctr, &gw), "container -> gateway {gw}");
    env.cnitool("check", "tuned", &ctr, &opts).expect_ok();
    env.cnitool("del", "tuned", &ctr, &opts).expect_ok();
    let left: Vec<String> = links(env.host()).into_iter().filter(|l| l != "lo").collect();
    assert!(left.is_empty(), "links left: {left:?}");
    assert!(state_files(&env).is_empty(), "state left: {:?}", state_files(&env));
}
