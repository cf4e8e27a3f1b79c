//! `none` (Docker's `--network none`) driven by the real cnitool, and the protocol as every
//! binary speaks it (VERSION, error replies), exercised through real processes.

use integration::*;
use serde_json::json;

const ALL_PLUGINS: &[&str] = &[
    "bridge",
    "portmap",
    "host",
    "none",
    "loopback",
    "macvlan",
    "dns-alias",
    "host-local",
    "static",
];

fn none_conf(version: &str) -> serde_json::Value {
    json!({"cniVersion": version, "name": "nonet", "plugins": [{"type": "none"}]})
}

#[test]
fn none_add_check_del_with_cnitool() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("none");
    // cniVersion 1.0.0, what the examples use (podman 4.3's libcni reads results up to 1.0.0);
    // 1.1.0 is exercised directly below.
    env.write_conflist("nonet", &none_conf("1.0.0"));
    let ctr = env.container("c");
    // Start from a container whose loopback is down, as a fresh namespace has it.
    ctr.ip_ok(&["link", "set", "lo", "down"]);
    let opts = CniOpts::ours();

    let add = env.cnitool("add", "nonet", &ctr, &opts);
    add.expect_ok();
    let result = add.result();
    assert_eq!(result["interfaces"][0]["name"], json!("lo"));
    assert_eq!(result["interfaces"][0]["sandbox"], json!(ctr.path().display().to_string()));
    let ips: Vec<&str> =
        result["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
    assert!(ips.contains(&"127.0.0.1/8"), "{ips:?}");
    assert!(ips.contains(&"::1/128"), "{ips:?}");
    // What a user would check: loopback answers inside the container, and nothing else exists.
    assert!(ping(&ctr, "127.0.0.1"));
    assert_eq!(links(&ctr), vec!["lo".to_string()]);

    env.cnitool("check", "nonet", &ctr, &opts).expect_ok();
    env.cnitool("del", "nonet", &ctr, &opts).expect_ok();
    assert!(!ping(&ctr, "127.0.0.1"), "lo should be down again after DEL");
    // CHECK now fails: lo is down.
    let check = env.exec_plugin(
        "none",
        &[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_NETNS", &ctr.path().display().to_string()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ],
        r#"{"cniVersion":"1.1.0","name":"nonet","type":"none"}"#,
    );
    check.expect_err();
    assert!(check.stdout.contains("lo is down"), "{}", check.stdout);
}

#[test]
fn none_del_succeeds_when_netns_is_gone() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("nonegone");
    env.write_conflist("nonet", &none_conf("1.0.0"));
    let ctr = env.container("c");
    let opts = CniOpts::ours();
    env.cnitool("add", "nonet", &ctr, &opts).expect_ok();
    let path = ctr.path().display().to_string();
    drop(ctr);
    let del = env.exec_plugin(
        "none",
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_NETNS", &path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ],
        r#"{"cniVersion":"1.0.0","name":"nonet","type":"none"}"#,
    );
    del.expect_ok();
    assert!(del.stdout.trim().is_empty());
    // ADD into a namespace that does not exist: code 3, naming the path.
    let add = env.exec_plugin(
        "none",
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_NETNS", &path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ],
        r#"{"cniVersion":"1.0.0","name":"nonet","type":"none"}"#,
    );
    assert_eq!(add.error_code(), Some(3), "{}", add.stdout);
    assert!(add.stdout.contains(&path));
}

#[test]
fn none_result_in_old_versions() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("nonever");
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0"] {
        let name = format!("nonet{}", version.replace('.', ""));
        env.write_conflist(
            &name,
            &json!({"cniVersion": version, "name": name, "plugins": [{"type": "none"}]}),
        );
        let ctr = env.container("c");
        let add = env.cnitool("add", &name, &ctr, &CniOpts::ours());
        add.expect_ok();
        assert_eq!(add.result()["cniVersion"], json!(version));
        if version == "0.2.0" {
            assert_eq!(add.result()["ip4"]["ip"], json!("127.0.0.1/8"), "{}", add.stdout);
        } else {
            assert_eq!(add.result()["ips"][0]["address"], json!("127.0.0.1/8"), "{}", add.stdout);
        }
        env.cnitool("del", &name, &ctr, &CniOpts::ours()).expect_ok();
    }
}

#[test]
fn every_binary_answers_version_with_all_versions() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("version");
    env.require_plugins(&Plugins::Ours, ALL_PLUGINS);
    for plugin in ALL_PLUGINS {
        let out =
            env.exec_plugin(plugin, &[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
        out.expect_ok();
        assert_eq!(
            out.result()["supportedVersions"],
            json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
            "{plugin}"
        );
        // Bad input through a real process: code and message on stdout, non-zero exit.
        let bad = env.exec_plugin(plugin, &[("CNI_COMMAND", "FROB"), ("CNI_PATH", "/x")], "{}");
        assert_eq!(bad.error_code(), Some(4), "{plugin}: {}", bad.stdout);
        assert!(bad.stdout.contains("FROB"), "{plugin}: {}", bad.stdout);
        let bad = env.exec_plugin(
            plugin,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/nonexistent"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x"),
            ],
            "{nope",
        );
        assert_eq!(bad.error_code(), Some(6), "{plugin}: {}", bad.stdout);
    }
}

/// Run by hand (no CNI_COMMAND), every binary says what it is on stderr and succeeds, in the
/// reference's words: nerdctl parses `CNI firewall plugin v<semver>` from there and needs at
/// least v1.1.0 before it uses `ingressPolicy`, and v1.7.1 before it uses `isolated`.
#[test]
fn every_binary_run_by_hand_prints_its_name_and_version() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("about");
    env.require_plugins(&Plugins::Ours, ALL_PLUGINS);
    for plugin in ALL_PLUGINS {
        let out = env.exec_plugin(plugin, &[("CNI_COMMAND", "")], "");
        assert_eq!(out.code, 0, "{plugin}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{plugin}: {}", out.stdout);
        let first = out.stderr.lines().next().unwrap_or_default().to_string();
        let version = first
            .strip_prefix(&format!("CNI {plugin} plugin v"))
            .unwrap_or_else(|| panic!("{plugin}: unexpected first line {first:?}"));
        let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
        assert!(
            parts.len() == 3 && (parts[0], parts[1], parts[2]) >= (1, 7, 1),
            "{plugin}: {version}"
        );
        assert!(
            out.stderr.contains(
                "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
            ),
            "{plugin}: {}",
            out.stderr
        );
    }
    // The reference prints the same shape (checked on its bridge).
    env.require_plugins(&Plugins::Reference, &["bridge"]);
    let reference = env.exec_plugin(
        &env.plugin_path(&Plugins::Reference, "bridge").display().to_string(),
        &[("CNI_COMMAND", "")],
        "",
    );
    assert_eq!(reference.code, 0);
    assert!(reference.stderr.starts_with("CNI bridge plugin v"), "{}", reference.stderr);
}
