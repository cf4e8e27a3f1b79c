//! End to end with nerdctl 2.x (Docker's commands on containerd 2.x) and only this
//! workspace's plugins in its CNI path. `nerdctl network create` writes
//! `[bridge, portmap, firewall{ingressPolicy}, tuning]` at cniVersion 1.0.0 (firewall and
//! tuning must exist, and nerdctl reads firewall's version from its no-command output);
//! `nerdctl run` calls the plugins from its OCI createRuntime hook (a DEL with an empty
//! netns first, then ADD), with nerdctl's environment, so `CNI_SUITE_STATE_DIR` reaches
//! them; `nerdctl rm` calls DEL from the postStop hook. nerdctl also lists any conflist in
//! its config directory as a network.
//!
//! containerd (no CRI) and nerdctl run inside the test's private host network namespace and
//! a private mount namespace (see `common/runtime.rs`); containerd's root, state and socket
//! and nerdctl's data root and CNI config dir are in the test's temp dir.

#[path = "common/runtime.rs"]
mod runtime;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use integration::*;
use runtime::*;
use serde_json::{json, Value};

const HOST_CIDR: &str = "198.51.100.1/24";
const HOST_ADDR: &str = "198.51.100.1";
const OUTSIDE_CIDR: &str = "198.51.100.2/24";

/// containerd + nerdctl with only `plugins` (ours) in the CNI path.
struct Bed {
    env: TestEnv,
    cg: CgroupGuard,
    holder: Holder,
    ctd: Containerd,
    netconf: PathBuf,
    env_vars: Vec<(String, String)>,
}

impl Bed {
    fn new(label: &'static str, plugins: &[&str]) -> Option<Bed> {
        if !require_built(
            label,
            &["containerd", "containerd-shim-runc-v2", "ctr", "nerdctl"],
            &["runc", "unshare", "nsenter", "tar", "busybox"],
        ) {
            return None;
        }
        let env = TestEnv::new(label);
        let bin = our_plugins_dir(&env, plugins);
        let cg = CgroupGuard::new(label);
        let holder = Holder::start(&env, &[]);
        let ctd = Containerd::start(&env, &holder, None);
        let images = TestImages::build(&env, "hello from nerdctl");
        ctd.import(&holder, "default", &images);
        let netconf = env.dir().join("nerdctl-net.d");
        let data = env.dir().join("nerdctl-data");
        fs::create_dir_all(&netconf).unwrap();
        fs::create_dir_all(&data).unwrap();
        let toml = env.dir().join("nerdctl.toml");
        fs::write(
            &toml,
            format!(
                "address = \"{}\"\nnamespace = \"default\"\nsnapshotter = \"native\"\n\
                 cgroup_manager = \"cgroupfs\"\ndata_root = \"{}\"\ncni_path = \"{}\"\n\
                 cni_netconfpath = \"{}\"\n",
                ctd.address,
                data.display(),
                bin.display(),
                netconf.display()
            ),
        )
        .unwrap();
        let mut env_vars = ctd.env.clone();
        env_vars.push(("NERDCTL_TOML".into(), toml.display().to_string()));
        env_vars.push(("HOME".into(), env.dir().display().to_string()));
        Some(Bed { env, cg, holder, ctd, netconf, env_vars })
    }

    fn nerdctl(&self, args: &[&str]) -> Run {
        let mut argv = vec!["nerdctl"];
        argv.extend_from_slice(args);
        self.holder.run(&argv, &self.env_vars, CLIENT_TIMEOUT)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.nerdctl(args).expect_ok().trim().to_string()
    }

    /// `nerdctl run` with the test's cgroup parent.
    fn run(&self, args: &[&str]) -> Run {
        let parent = format!("--cgroup-parent={}", self.cg.parent());
        let mut full = vec!["run", parent.as_str()];
        full.extend_from_slice(args);
        self.nerdctl(&full)
    }

    /// `nerdctl run -d --name <name> --network <net> [extra] <web image>`: its address.
    fn web(&self, name: &str, net: &str, extra: &[&str]) -> String {
        let mut args = vec!["-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        args.push(WEB_IMAGE);
        let out = self.run(&args);
        if !out.ok() {
            panic!("nerdctl run {name} failed:\n{out}");
        }
        self.ip_of(name)
    }

    fn ip_of(&self, name: &str) -> String {
        // `container inspect`, not `inspect`: a bare name like "db" also matches an
        // image whose ID starts with those hex digits, and nerdctl then shows the image.
        let format = "{{json .NetworkSettings}}";
        let v = parse_json(&self.ok(&["container", "inspect", "--format", format, name]));
        v["IPAddress"].as_str().unwrap_or_default().to_string()
    }

    /// `wget` from a throwaway container on `net` (3 s budget). The shell stays PID 1 (a
    /// command after wget keeps it from exec'ing), so `timeout` can kill wget: PID 1 of a
    /// PID namespace ignores signals it has no handler for.
    fn wget_from_container(&self, net: &str, url: &str) -> Run {
        let script = format!("timeout 3 wget -qO- {url}; exit $?");
        self.run(&["--rm", "--network", net, BUSYBOX_IMAGE, "sh", "-c", &script])
    }

    /// Removes every container and every network nerdctl created; then nothing of ours
    /// may be left.
    fn remove_all_and_check(&self, networks: &[&str]) {
        let ids = self.ok(&["ps", "--all", "--quiet"]);
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force"];
            args.extend(ids);
            self.ok(&args);
        }
        for n in networks {
            self.ok(&["network", "rm", n]);
        }
        let mut left = Vec::new();
        let clean = eventually(Duration::from_secs(10), || {
            left = leftovers(&self.env, &["lo", "ext0"], &[self.holder.pid(), self.ctd.pid()]);
            left.is_empty()
        });
        assert!(clean, "left behind after nerdctl rm -f and network rm: {left:#?}");
        let fallback = self.holder.inside("/run/cni-suite");
        assert!(
            !fallback.exists(),
            "a plugin used the default state dir: {:?}",
            files_under(&fallback)
        );
    }
}

/// Removes every container on drop (also when the test panics).
struct RemoveAll<'a>(&'a Bed);

impl Drop for RemoveAll<'_> {
    fn drop(&mut self) {
        let ids = self.0.nerdctl(&["ps", "--all", "--quiet"]).stdout;
        for id in ids.lines() {
            let out = self.0.nerdctl(&["rm", "--force", id]);
            if !out.ok() {
                eprintln!("cleanup: nerdctl rm -f {id} failed:\n{out}");
            }
        }
    }
}

const NERDCTL_PLUGINS: &[&str] = &["bridge", "portmap", "firewall", "tuning", "host-local"];

/// docker network create --subnet --ip-range --gateway; docker run -d -p 8080:80; --ip;
/// a second -p 8080:80 is refused in Docker's words; rm -f and network rm leave nothing.
#[test]
fn nerdctl_network_create_run_publish() {
    let Some(bed) = Bed::new("nerdctl", NERDCTL_PLUGINS) else { return };
    let mut t = Phases::new("nerdctl");
    let outside = outside_world(&bed.env, HOST_CIDR, OUTSIDE_CIDR);
    let _remove = RemoveAll(&bed);

    bed.ok(&[
        "network",
        "create",
        "--subnet",
        "10.89.80.0/24",
        "--ip-range",
        "10.89.80.128/25",
        "--gateway",
        "10.89.80.1",
        "appnet",
    ]);
    let conf: Vec<PathBuf> = files_under(&bed.netconf)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with("nerdctl-appnet.conflist"))
        .collect();
    assert_eq!(
        conf.len(),
        1,
        "nerdctl wrote no conflist for appnet: {:?}",
        files_under(&bed.netconf)
    );
    let conf: Value = parse_json(&fs::read_to_string(&conf[0]).unwrap());
    let types: Vec<&str> =
        conf["plugins"].as_array().unwrap().iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(types, ["bridge", "portmap", "firewall", "tuning"], "nerdctl's chain: {conf}");
    t.mark("network create");

    // --- run -d --name web --network appnet -p 8080:80
    let web_ip = bed.web("web", "appnet", &["-p", "8080:80"]);
    let last: u8 = web_ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        web_ip.starts_with("10.89.80.") && last >= 128,
        "web's address {web_ip} is not from --ip-range 10.89.80.128/25"
    );
    for url in ["http://127.0.0.1:8080/".to_string(), format!("http://{HOST_ADDR}:8080/")] {
        let out = bed.holder.wget(&url);
        assert!(out.ok() && out.stdout.trim() == "hello from nerdctl", "host: GET {url}:\n{out}");
    }
    let out = wget_from(&outside, &format!("http://{HOST_ADDR}:8080/"));
    assert!(out.ok() && out.stdout.trim() == "hello from nerdctl", "outside: GET :8080:\n{out}");
    let out = bed.wget_from_container("appnet", &format!("http://{web_ip}/"));
    assert!(out.ok() && out.stdout.trim() == "hello from nerdctl", "container -> web:\n{out}");
    t.mark("run -d -p 8080:80 + 4 clients");

    // --- run --ip
    let fixed = bed.web("fixed", "appnet", &["--ip", "10.89.80.150"]);
    assert_eq!(fixed, "10.89.80.150", "--ip 10.89.80.150 not honoured");
    let out = bed.holder.wget("http://10.89.80.150/");
    assert!(out.ok(), "host -> fixed 10.89.80.150:\n{out}");

    // --- the same host port again
    let out = bed.run(&["-d", "--name", "web2", "--network", "appnet", "-p", "8080:80", WEB_IMAGE]);
    out.expect_err();
    assert!(
        out.all_output().contains("port is already allocated"),
        "second -p 8080:80 not refused with \"port is already allocated\":\n{out}"
    );
    let out = bed.holder.wget("http://127.0.0.1:8080/");
    assert!(
        out.ok() && out.stdout.trim() == "hello from nerdctl",
        "web broken by the refused run:\n{out}"
    );
    t.mark("--ip + port conflict");

    bed.remove_all_and_check(&["appnet"]);
    t.mark("rm -f + network rm + leftover checks");
    t.total();
}

/// Containers on two nerdctl networks cannot reach each other; `-o icc=false` (firewall
/// `ingressPolicy: isolated`) keeps one network's containers apart while the host still
/// reaches them.
#[test]
fn nerdctl_network_isolation() {
    let Some(bed) = Bed::new("nerdctl-iso", NERDCTL_PLUGINS) else { return };
    let mut t = Phases::new("nerdctl-iso");
    let _remove = RemoveAll(&bed);
    bed.ok(&["network", "create", "--subnet", "10.89.82.0/24", "neta"]);
    bed.ok(&["network", "create", "--subnet", "10.89.83.0/24", "netb"]);
    bed.ok(&["network", "create", "--subnet", "10.89.84.0/24", "-o", "icc=false", "isonet"]);
    let iso_conf = files_under(&bed.netconf)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("nerdctl-isonet.conflist"))
        .expect("no conflist for isonet");
    let iso: Value = parse_json(&fs::read_to_string(&iso_conf).unwrap());
    let fw = iso["plugins"].as_array().unwrap().iter().find(|p| p["type"] == "firewall").cloned();
    assert_eq!(
        fw.as_ref().and_then(|f| f["ingressPolicy"].as_str()),
        Some("isolated"),
        "nerdctl did not choose ingressPolicy isolated (it reads firewall's version text): {iso}"
    );

    t.mark("3 networks");
    let a = bed.web("ca", "neta", &[]);
    let b = bed.web("cb", "netb", &[]);
    // Positive control: same network.
    let out = bed.wget_from_container("neta", &format!("http://{a}/"));
    assert!(out.ok(), "neta -> a {a} failed (same network):\n{out}");
    let out = bed.wget_from_container("neta", &format!("http://{b}/"));
    assert!(!out.ok(), "a container on neta reached b {b} on netb:\n{out}");
    let out = bed.wget_from_container("netb", &format!("http://{a}/"));
    assert!(!out.ok(), "a container on netb reached a {a} on neta:\n{out}");

    t.mark("two networks apart");
    let i1 = bed.web("iso1", "isonet", &[]);
    let out = bed.holder.wget(&format!("http://{i1}/"));
    assert!(out.ok(), "host -> i1 {i1} on the isolated network failed:\n{out}");
    let out = bed.wget_from_container("isonet", &format!("http://{i1}/"));
    assert!(!out.ok(), "two containers on isonet (icc=false) reached each other:\n{out}");

    t.mark("isolated network");
    bed.remove_all_and_check(&["neta", "netb", "isonet"]);
    t.mark("rm -f + network rm + leftover checks");
    t.total();
}

/// A hand-written dns-alias conflist in nerdctl's config dir is a network nerdctl can run
/// containers on, and answers at 127.0.0.11 for the container's name (nerdctl passes the
/// hostname as CNI_ARGS `NERDCTL_CNI_DHCP_HOSTNAME`; it passes no container name) and its
/// short id (nerdctl's CNI_CONTAINERID is `<namespace>-<id>`).
#[test]
fn nerdctl_dns_alias_conflist() {
    let Some(bed) = Bed::new(
        "nerdctl-dns",
        &["bridge", "portmap", "firewall", "tuning", "dns-alias", "host-local"],
    ) else {
        return;
    };
    let _remove = RemoveAll(&bed);
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "dnsnet",
        "plugins": [
            {"type": "bridge", "bridge": "cni-dns", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.81.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "dns-alias", "capabilities": {"aliases": true}}
        ]
    });
    fs::write(bed.netconf.join("dnsnet.conflist"), conflist.to_string()).unwrap();
    let nets = bed.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(nets.lines().any(|l| l == "dnsnet"), "nerdctl does not list dnsnet: {nets}");

    let db = bed.web("db", "dnsnet", &["--hostname", "db"]);
    let id = bed.ok(&["container", "inspect", "--format", "{{.ID}}", "db"]);
    let short = &id[..12];
    for name in ["db", short] {
        let out = bed.run(&[
            "--rm",
            "--network",
            "dnsnet",
            BUSYBOX_IMAGE,
            "nslookup",
            name,
            "127.0.0.11",
        ]);
        assert!(
            out.ok() && out.stdout.contains(&format!("Address: {db}")),
            "nslookup {name} 127.0.0.11 on dnsnet did not answer {db}:\n{out}"
        );
    }
    bed.remove_all_and_check(&[]);
    // The hand-written network is the user's: nerdctl network rm refuses to touch it.
    assert!(bed.netconf.join("dnsnet.conflist").is_file());
}

/// What `nerdctl network create --subnet 10.89.85.0/24 --ip-range 10.89.85.252/30` writes
/// (`rangeEnd` = the subnet's last address, as for every --ip-range that ends where the
/// subnet does), run through cnitool without nerdctl: the range's usable addresses are
/// handed out, never the broadcast address.
#[test]
fn nerdctl_ip_range_ending_at_the_subnet_end() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("nerdctl-range");
    env.write_conflist(
        "rangenet",
        &json!({"cniVersion": "1.0.0", "name": "rangenet", "plugins": [
            {"type": "bridge", "bridge": "cni-range", "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"gateway": "10.89.85.1", "ipRange": "10.89.85.252/30",
                                   "rangeStart": "10.89.85.253", "rangeEnd": "10.89.85.255",
                                   "subnet": "10.89.85.0/24"}]]}}]}),
    );
    let a = env.container("a");
    let b = env.container("b");
    let add = env.cnitool("add", "rangenet", &a, &CniOpts::ours());
    assert!(add.ok(), "ADD with nerdctl's rangeEnd (the broadcast address) failed:\n{add}");
    let ips = |r: &Value| -> Vec<String> {
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ips(add.result()), ["10.89.85.253/24"]);
    let add = env.cnitool("add", "rangenet", &b, &CniOpts::ours()).expect_ok().clone();
    assert_eq!(ips(add.result()), ["10.89.85.254/24"], "the second address of the range");
    let c = env.container("c");
    let full = env.cnitool("add", "rangenet", &c, &CniOpts::ours());
    assert!(!full.ok(), "a third container got an address (the broadcast?):\n{full}");
    for ns in [&a, &b, &c] {
        env.cnitool("del", "rangenet", ns, &CniOpts::ours()).expect_ok();
    }
}
