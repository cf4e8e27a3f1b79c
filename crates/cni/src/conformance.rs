//! The protocol conformance table: each malformed input and the exact code and message part
//! a runtime sees, driven through `dispatch` with a recording plugin.

use super::*;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<&'static str>>,
}

impl Plugin for Recorder {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        self.calls.borrow_mut().push("ADD");
        let mut r = req.prev.clone().unwrap_or_default();
        r.interfaces.push(Interface {
            name: req.env.ifname.clone(),
            sandbox: req.env.netns.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        });
        r.ips.push(IpConfig {
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: Some("10.0.0.1".parse().unwrap()),
            interface: Some(r.interfaces.len() - 1),
        });
        Ok(r)
    }
    fn del(&self, _req: &Request) -> Result<(), CniError> {
        self.calls.borrow_mut().push("DEL");
        Ok(())
    }
    fn check(&self, _req: &Request) -> Result<(), CniError> {
        self.calls.borrow_mut().push("CHECK");
        Ok(())
    }
    fn gc(&self, _req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        assert_eq!(valid.len(), 1);
        self.calls.borrow_mut().push("GC");
        Ok(())
    }
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        self.calls.borrow_mut().push("STATUS");
        Ok(())
    }
}

fn base_env(cmd: &str) -> HashMap<&'static str, String> {
    let mut m = HashMap::new();
    m.insert("CNI_COMMAND", cmd.to_string());
    m.insert("CNI_CONTAINERID", "ctr1".to_string());
    m.insert("CNI_NETNS", "/var/run/netns/x".to_string());
    m.insert("CNI_IFNAME", "eth0".to_string());
    m.insert("CNI_PATH", "/opt/cni/bin".to_string());
    m
}

fn call(env: &HashMap<&'static str, String>, stdin: &str) -> (Reply, Vec<&'static str>) {
    let plugin = Recorder::default();
    let reply = dispatch(&plugin, &|k| env.get(k).cloned(), stdin.as_bytes());
    let calls = plugin.calls.borrow().clone();
    (reply, calls)
}

const CONF: &str = r#"{"cniVersion":"1.1.0","name":"net1","type":"recorder"}"#;

/// (case, env change, stdin, expected code, text the message must contain)
#[test]
fn malformed_inputs_get_the_right_code_and_message() {
    type Case =
        (&'static str, Vec<(&'static str, Option<&'static str>)>, &'static str, u32, &'static str);
    let cases: Vec<Case> = vec![
        ("invalid JSON", vec![], "{not json", 6, "decoding network config"),
        ("stdin not an object", vec![], "[1,2]", 6, "not a JSON object"),
        ("missing CNI_COMMAND", vec![("CNI_COMMAND", None)], CONF, 4, "CNI_COMMAND"),
        ("unknown command", vec![("CNI_COMMAND", Some("FROB"))], CONF, 4, "\"FROB\""),
        ("missing CNI_CONTAINERID", vec![("CNI_CONTAINERID", None)], CONF, 4, "CNI_CONTAINERID"),
        (
            "bad CNI_CONTAINERID",
            vec![("CNI_CONTAINERID", Some("-bad id"))],
            CONF,
            4,
            "CNI_CONTAINERID",
        ),
        ("missing CNI_NETNS on ADD", vec![("CNI_NETNS", None)], CONF, 4, "CNI_NETNS"),
        ("missing CNI_IFNAME", vec![("CNI_IFNAME", None)], CONF, 4, "CNI_IFNAME"),
        (
            "CNI_IFNAME too long",
            vec![("CNI_IFNAME", Some("averyveryverylongname"))],
            CONF,
            4,
            "averyveryverylongname",
        ),
        ("CNI_IFNAME with slash", vec![("CNI_IFNAME", Some("a/b"))], CONF, 4, "CNI_IFNAME"),
        ("missing CNI_PATH", vec![("CNI_PATH", None)], CONF, 4, "CNI_PATH"),
        ("bad CNI_ARGS pair", vec![("CNI_ARGS", Some("IP=10.0.0.5;garbage"))], CONF, 4, "garbage"),
        (
            "unsupported cniVersion",
            vec![],
            r#"{"cniVersion":"0.9.0","name":"n","type":"t"}"#,
            1,
            "0.9.0",
        ),
        (
            "CHECK at 0.3.1",
            vec![("CNI_COMMAND", Some("CHECK"))],
            r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#,
            1,
            "CHECK is not supported by cniVersion 0.3.1",
        ),
        (
            "GC at 1.0.0",
            vec![("CNI_COMMAND", Some("GC"))],
            r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
            1,
            "GC is not supported by cniVersion 1.0.0",
        ),
        (
            "STATUS at 1.0.0",
            vec![("CNI_COMMAND", Some("STATUS"))],
            r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
            1,
            "STATUS is not supported",
        ),
        ("config without name", vec![], r#"{"cniVersion":"1.1.0","type":"t"}"#, 7, "\"name\""),
        (
            "bad network name",
            vec![],
            r#"{"cniVersion":"1.1.0","name":"-x y","type":"t"}"#,
            7,
            "-x y",
        ),
        ("name of wrong type", vec![], r#"{"cniVersion":"1.1.0","name":5,"type":"t"}"#, 7, "name"),
        (
            "bad prevResult",
            vec![],
            r#"{"cniVersion":"1.1.0","name":"n","type":"t","prevResult":{"ips":[{"address":"300.1.1.1/24"}]}}"#,
            6,
            "prevResult",
        ),
        (
            "bad GC attachments",
            vec![("CNI_COMMAND", Some("GC"))],
            r#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":"nope"}"#,
            6,
            "cni.dev/valid-attachments",
        ),
    ];
    for (what, changes, stdin, code, text) in cases {
        let mut env = base_env("ADD");
        for (k, v) in changes {
            match v {
                Some(v) => {
                    env.insert(k, v.to_string());
                }
                None => {
                    env.remove(k);
                }
            }
        }
        let (reply, calls) = call(&env, stdin);
        assert_ne!(reply.exit_code, 0, "{what}: must fail");
        let err = reply
            .error_value()
            .unwrap_or_else(|| panic!("{what}: stdout is not a CNI error: {}", reply.stdout));
        assert_eq!(err.code, code, "{what}: code (msg: {})", err.msg);
        assert!(err.msg.contains(text), "{what}: message {:?} should contain {text:?}", err.msg);
        assert!(calls.is_empty(), "{what}: the plugin must not be called");
        let v: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
        assert!(v.get("cniVersion").is_some(), "{what}: error carries cniVersion");
    }
}

#[test]
fn add_prints_result_in_the_requested_version() {
    for ver in version::SUPPORTED_VERSIONS {
        let stdin = format!(r#"{{"cniVersion":"{ver}","name":"n","type":"t"}}"#);
        let (reply, calls) = call(&base_env("ADD"), &stdin);
        assert_eq!(reply.exit_code, 0, "{ver}: {}", reply.stdout);
        assert_eq!(calls, vec!["ADD"]);
        let v: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
        assert_eq!(v["cniVersion"], json!(ver));
        if ver.starts_with("0.1") || ver.starts_with("0.2") {
            assert_eq!(v["ip4"]["ip"], json!("10.0.0.2/24"));
        } else {
            assert_eq!(v["ips"][0]["address"], json!("10.0.0.2/24"));
        }
    }
}

#[test]
fn chained_add_keeps_prev_result() {
    let stdin = r#"{"cniVersion":"0.4.0","name":"n","type":"t","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"br0"}],"ips":[{"version":"4","address":"10.9.0.3/16","interface":0}]}}"#;
    let (reply, _) = call(&base_env("ADD"), stdin);
    let v: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(v["ips"][0]["address"], json!("10.9.0.3/16"));
    assert_eq!(v["ips"][0]["version"], json!("4"));
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
}

#[test]
fn del_without_netns_reaches_plugin() {
    let mut env = base_env("DEL");
    env.remove("CNI_NETNS");
    let (reply, calls) = call(&env, CONF);
    assert_eq!(reply, Reply { exit_code: 0, stdout: String::new() });
    assert_eq!(calls, vec!["DEL"]);
}

#[test]
fn gc_and_status_need_no_container() {
    let mut env = HashMap::new();
    env.insert("CNI_COMMAND", "GC".to_string());
    env.insert("CNI_PATH", "/opt/cni/bin".to_string());
    let (reply, calls) = call(
        &env,
        r#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
    );
    assert_eq!(reply.exit_code, 0, "{}", reply.stdout);
    assert_eq!(calls, vec!["GC"]);
    env.insert("CNI_COMMAND", "STATUS".to_string());
    let (reply, calls) = call(&env, CONF);
    assert_eq!(reply.exit_code, 0);
    assert_eq!(calls, vec!["STATUS"]);
}

#[test]
fn version_lists_every_supported_version() {
    let mut env = HashMap::new();
    env.insert("CNI_COMMAND", "VERSION".to_string());
    let (reply, _) = call(&env, "");
    let v: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    assert_eq!(v["cniVersion"], json!("1.1.0"));
    let (reply, _) = call(&env, r#"{"cniVersion":"0.4.0"}"#);
    let v: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(v["cniVersion"], json!("0.4.0"));
}

#[test]
fn plugin_errors_pass_through_with_config_version() {
    struct Failing;
    impl Plugin for Failing {
        fn add(&self, _: &Request) -> Result<CniResult, CniError> {
            Err(CniError::bad_value("vlan", 5000, "must be 0-4094"))
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
    }
    let env = base_env("ADD");
    let reply = dispatch(
        &Failing,
        &|k| env.get(k).cloned(),
        br#"{"cniVersion":"0.4.0","name":"n","type":"t"}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(v, json!({"cniVersion":"0.4.0","code":7,"msg":"invalid vlan 5000: must be 0-4094"}));
}

/// What containerd's CRI and nerdctl send through go-cni: Go field names without JSON tags,
/// CNI_ARGS in any order, capabilities the plugin does not know.
#[test]
fn go_clients_mixed_case_payloads_are_read_like_the_reference() {
    let stdin = json!({
        "CNIVersion": "1.0.0",
        "Name": "k8s-pod-network",
        "Type": "bridge",
        "RuntimeConfig": {
            "PortMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "Bandwidth": {"IngressRate": 1000000, "IngressBurst": 2000, "EgressRate": 1000000, "EgressBurst": 2000},
            "DNS": {"Servers": ["10.96.0.10"], "Searches": ["svc.cluster.local"], "Options": ["ndots:5"]},
            "io.kubernetes.cri.pod-annotations": {"a": "b"},
            "cgroupPath": "/kubepods/pod1"
        },
        "Args": {"CNI": {"IPs": ["10.1.0.5"]}},
        "DNS": {"Nameservers": ["10.96.0.10"]}
    });
    let (conf, _) = NetConf::parse(stdin.to_string().as_bytes()).unwrap();
    assert_eq!(conf.cni_version, "1.0.0");
    assert_eq!(conf.name, "k8s-pod-network");
    assert_eq!(conf.plugin_type, "bridge");
    assert_eq!(conf.runtime("portMappings").unwrap()[0]["HostPort"], json!(18080));
    assert!(conf.runtime("bandwidth").is_some());
    assert_eq!(conf.args_cni("ips"), Some(&json!(["10.1.0.5"])));
    assert_eq!(conf.dns.as_ref().unwrap().nameservers, vec!["10.96.0.10".to_string()]);
    // Well-known keys are not repeated among the plugin's own keys.
    assert!(conf.extra.is_empty(), "{:?}", conf.extra);

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Mapping {
        host_port: u16,
        container_port: u16,
        protocol: String,
    }
    let m: Vec<Mapping> = json::from_value(conf.runtime("portMappings").unwrap().clone()).unwrap();
    assert_eq!((m[0].host_port, m[0].container_port, m[0].protocol.as_str()), (18080, 80, "tcp"));
}

#[test]
fn del_with_keys_it_does_not_understand_succeeds() {
    let env = base_env("DEL");
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "n", "type": "x",
        "SomethingNew": {"Nested": [1, 2, 3]},
        "runtimeConfig": {"futureCapability": {"Whatever": true}},
        "args": {"k8s": {"Unknown": 1}},
        "prevResult": {"cniVersion": "1.0.0", "IPs": [{"Address": "10.0.0.2/24", "Gateway": "10.0.0.1"}], "FutureField": 7}
    });
    let (reply, calls) = call(&env, &stdin.to_string());
    assert_eq!(reply.exit_code, 0, "{}", reply.stdout);
    assert_eq!(calls, vec!["DEL"]);
}

#[test]
fn prev_result_keys_match_like_go() {
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "n", "type": "x",
        "prevResult": {"CNIVersion": "1.0.0",
            "Interfaces": [{"Name": "eth0", "Sandbox": "/var/run/netns/x", "Mac": "aa:bb:cc:dd:ee:ff"}],
            "IPs": [{"Address": "10.0.0.2/24", "Gateway": "10.0.0.1", "Interface": 0}]}
    });
    let (conf, _) = NetConf::parse(stdin.to_string().as_bytes()).unwrap();
    let prev = conf.prev_result().unwrap().unwrap();
    assert_eq!(prev.interfaces[0].name, "eth0");
    assert_eq!(prev.ips[0].address.to_string(), "10.0.0.2/24");
    assert_eq!(prev.ips[0].interface, Some(0));
}

#[test]
fn gc_accepts_both_attachment_keys() {
    let mut env = base_env("GC");
    env.remove("CNI_CONTAINERID");
    env.remove("CNI_NETNS");
    env.remove("CNI_IFNAME");
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let stdin = json!({"cniVersion": "1.1.0", "name": "n", "type": "x",
            key: [{"containerID": "abc", "ifname": "eth0"}]});
        let (reply, calls) = call(&env, &stdin.to_string());
        assert_eq!(reply.exit_code, 0, "{key}: {}", reply.stdout);
        assert_eq!(calls, vec!["GC"], "{key}");
    }
}
