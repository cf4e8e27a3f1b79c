//! End to end with a real runtime: podman 4 (Debian) with its CNI backend and only this
//! workspace's plugins in `cni_plugin_dirs`. What a Docker user does:
//!
//! ```text
//! docker network create mynet                      (a conflist: bridge + portmap + dns-alias)
//! docker run -d --name web --network mynet --network-alias webalias -p 18080:80 busybox httpd
//! docker run --rm --network mynet busybox nslookup web 127.0.0.11     (and webalias)
//! curl http://127.0.0.1:18080/   curl http://<host address>:18080/    (and from outside)
//! docker run -p 18080:80 ...     -> "port is already allocated"
//! docker rm -f ...               -> nothing left behind
//! ```
//!
//! podman runs inside the test's private host network namespace and a private mount
//! namespace (see `common/runtime.rs`); all its state, config and storage live in the
//! test's temp dir (`--root`, `--runroot`, `--tmpdir`, `CONTAINERS_CONF`,
//! `CONTAINERS_STORAGE_CONF`, and `/var/lib/containers`, where containers/image keeps a
//! cache whatever `--root` says); the image is a busybox-static rootfs, `podman import`ed.
//!
//! podman hands its own environment to the plugins (libcni passes it through), so
//! `CNI_SUITE_STATE_DIR` reaches ADD and the DELs podman itself makes. The DEL that runs
//! when a container stops comes from `podman container cleanup`, which conmon starts with
//! only `conmon_env_vars` from containers.conf: the state dir is listed there too (without
//! it that DEL looks in `/run/cni-suite`, finds nothing, and the bridge, its nftables table
//! and the attachment record stay behind).

#[path = "common/runtime.rs"]
mod runtime;

use std::fs;
use std::time::Duration;

use integration::*;
use runtime::*;
use serde_json::json;

const IMAGE: &str = "localhost/cni-suite-busybox:latest";
const NET: &str = "mynet";
const SUBNET: &str = "10.89.70.0/24";
const HOST_CIDR: &str = "198.51.100.1/24";
const HOST_ADDR: &str = "198.51.100.1";
const OUTSIDE_CIDR: &str = "198.51.100.2/24";
fn conflist() -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": "cni-mynet", "isGateway": true, "isDefaultGateway": true,
             "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "dns-alias", "capabilities": {"aliases": true}}
        ]
    })
}

/// The answer lines of a busybox `nslookup` (after the server block).
fn answer_addresses(out: &str) -> Vec<String> {
    let mut seen_name = false;
    let mut addrs = Vec::new();
    for line in out.lines() {
        if line.starts_with("Name:") {
            seen_name = true;
        } else if seen_name && line.starts_with("Address") {
            if let Some(a) = line.split_whitespace().last() {
                addrs.push(a.to_string());
            }
        }
    }
    addrs
}

#[test]
fn podman_cni_backend_with_our_plugins_only() {
    if !require_runtime("podman", &["podman", "runc", "conmon", "unshare", "nsenter", "tar"]) {
        return;
    }
    let mut t = Phases::new("podman");
    let env = TestEnv::new("podman");
    let plugins = our_plugins_dir(&env, &["bridge", "portmap", "dns-alias", "host-local"]);
    let cg = CgroupGuard::new("podman");
    // containers/image keeps its blob-info cache in /var/lib/containers/cache whatever
    // --root says: give it the test's own directory.
    let var_lib_containers = env.dir().join("var-lib-containers");
    fs::create_dir_all(&var_lib_containers).unwrap();
    let holder = Holder::start(&env, &[(&var_lib_containers, "/var/lib/containers")]);
    let outside = outside_world(&env, HOST_CIDR, OUTSIDE_CIDR);
    let podman = Podman::new(&env, &holder, &plugins, &cg);
    let _remove_all = PodmanRemoveAll(&podman);
    fs::write(
        Podman::net_dir(&env).join(format!("{NET}.conflist")),
        serde_json::to_vec_pretty(&conflist()).unwrap(),
    )
    .unwrap();
    t.mark("setup");

    let info =
        podman.run(&["info", "--format", "{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}}"]);
    if !runtime_usable("podman", &info) {
        return;
    }
    assert_eq!(
        info.stdout.trim(),
        "cni runc",
        "podman does not use the CNI backend with runc:\n{info}"
    );
    let nets = podman.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(nets.lines().any(|l| l == NET), "podman does not see {NET}: {nets}");

    let rootfs = env.dir().join("rootfs");
    busybox_rootfs(&rootfs, "hello from web");
    let tarball = env.dir().join("rootfs.tar");
    tar_dir(&rootfs, &tarball);
    podman.ok(&["import", tarball.to_str().unwrap(), IMAGE]);
    t.mark("podman info + image import");

    // --- docker run -d --name web --network mynet --network-alias webalias -p 18080:80
    podman
        .run_container(&[
            "-d",
            "--name",
            "web",
            "--network",
            NET,
            "--network-alias",
            "webalias",
            "-p",
            "18080:80",
            IMAGE,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .expect_ok();
    let web_ip = podman.ip_of("web");
    assert!(web_ip.starts_with("10.89.70."), "web's address {web_ip:?} is not from {SUBNET}");
    t.mark("podman run -d web");

    // podman passed its environment to the plugins: their state is in our state dir.
    assert!(
        env.state_dir().join("bridge").join(NET).is_dir() && env.state_dir().join("dns").is_dir(),
        "CNI_SUITE_STATE_DIR did not reach the plugins: {:?}",
        files_under(&env.state_dir())
    );
    // ... and libcni's result cache is the test's /var/lib/cni, not the machine's.
    let cache = files_under(&env.libcni_dir().join("results"));
    assert_eq!(cache.len(), 1, "libcni cache entries for web: {cache:?}");
    let veths = links_of_kind(env.host(), "veth");
    assert!(
        veths.iter().any(|l| l != "ext0"),
        "no container veth in the host namespace: {veths:?}"
    );

    // --- names and aliases at 127.0.0.11, from another container on the network
    for name in ["web", "webalias"] {
        let out = podman.run_container(&[
            "--rm",
            "--network",
            NET,
            IMAGE,
            "nslookup",
            name,
            "127.0.0.11",
        ]);
        assert!(
            out.ok() && answer_addresses(&out.stdout).contains(&web_ip),
            "nslookup {name} 127.0.0.11 did not answer {web_ip}:\n{out}"
        );
    }
    // The result's dns block reached the container's resolv.conf, so a plain lookup asks
    // 127.0.0.11 first. (Not `wget http://web/`: static glibc busybox cannot resolve names
    // through NSS and segfaults; its nslookup speaks DNS itself.)
    let out = podman.run_container(&[
        "--rm",
        "--network",
        NET,
        IMAGE,
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo ---; nslookup webalias",
    ]);
    assert!(out.ok(), "resolv.conf / plain nslookup failed:\n{out}");
    let (resolv, lookup) = out.stdout.split_once("---\n").unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        resolv.lines().next(),
        Some("nameserver 127.0.0.11"),
        "resolv.conf does not start with 127.0.0.11:\n{out}"
    );
    assert!(answer_addresses(lookup).contains(&web_ip), "nslookup webalias (resolv.conf):\n{out}");
    t.mark("DNS from 3 other containers");

    // --- published port from the host namespace and from outside
    for url in ["http://127.0.0.1:18080/".to_string(), format!("http://{HOST_ADDR}:18080/")] {
        let out = holder.wget(&url);
        assert!(out.ok() && out.stdout.trim() == "hello from web", "host: GET {url}:\n{out}");
    }
    let out = wget_from(&outside, &format!("http://{HOST_ADDR}:18080/"));
    assert!(
        out.ok() && out.stdout.trim() == "hello from web",
        "outside: GET {HOST_ADDR}:18080:\n{out}"
    );
    t.mark("published port (3 clients)");

    // --- docker restart web: DEL then ADD while conmon holds the published port; the new
    // attachment answers on the port and by name.
    podman.ok(&["restart", "--time", "0", "web"]);
    let web_ip = podman.ip_of("web");
    let out = holder.wget("http://127.0.0.1:18080/");
    assert!(out.ok() && out.stdout.trim() == "hello from web", "after podman restart web:\n{out}");
    let out =
        podman.run_container(&["--rm", "--network", NET, IMAGE, "nslookup", "web", "127.0.0.11"]);
    assert!(
        out.ok() && answer_addresses(&out.stdout).contains(&web_ip),
        "after podman restart web, nslookup web did not answer {web_ip}:\n{out}"
    );
    t.mark("podman restart web");

    // --- the same host port again is refused in Docker's words, nothing half-applied
    let leases_before = leases(&env, NET);
    let out = podman.run_container(&[
        "-d",
        "--name",
        "web2",
        "--network",
        NET,
        "-p",
        "18080:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
    ]);
    out.expect_err();
    assert!(
        out.all_output().contains("port is already allocated"),
        "second -p 18080:80 not refused with \"port is already allocated\":\n{out}"
    );
    assert_eq!(leases(&env, NET), leases_before, "the refused container kept an address");
    let out = holder.wget("http://127.0.0.1:18080/");
    assert!(
        out.ok() && out.stdout.trim() == "hello from web",
        "web broken by the refused run:\n{out}"
    );
    t.mark("port conflict refused");

    // --- docker rm -f: nothing of ours left
    podman.ok(&["rm", "--force", "--time", "0", "web", "web2"]);
    let ps = podman.ok(&["ps", "--all", "--quiet"]);
    assert!(ps.trim().is_empty(), "containers left: {ps}");
    assert_nothing_left(&env, &holder, Duration::from_secs(5), "podman rm -f");
    let netns_left: Vec<_> = fs::read_dir(holder.inside("/run/netns"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(netns_left.is_empty(), "podman left network namespaces: {netns_left:?}");
    t.mark("podman rm -f + leftover checks");
    t.total();
}

/// Nothing of ours is left once conmon's cleanup ran (waiting up to `wait` for it), and the
/// plugins never fell back to their default state dir (/run/cni-suite): conmon's cleanup
/// calls had the state dir too.
fn assert_nothing_left(env: &TestEnv, holder: &Holder, wait: Duration, after: &str) {
    let mut left = Vec::new();
    let clean = eventually(wait, || {
        left = leftovers(env, &["lo", "ext0"], &[holder.pid()]);
        left.is_empty()
    });
    assert!(clean, "left behind after {after}: {left:#?}");
    let fallback = holder.inside("/run/cni-suite");
    assert!(
        !fallback.exists(),
        "a plugin used the default state dir: {:?}",
        files_under(&fallback)
    );
}

/// The conflist `podman network create` wrote for `name`.
fn created_conflist(env: &TestEnv, name: &str) -> serde_json::Value {
    let path = Podman::net_dir(env).join(format!("{name}.conflist"));
    parse_json(
        &fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("podman wrote no {}: {e}", path.display())),
    )
}

fn plugin_types(conf: &serde_json::Value) -> Vec<String> {
    conf["plugins"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["type"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// What podman users do: `podman network create` (no options, `--subnet`, `--internal`)
/// writes the conflists (cniVersion 0.4.0: bridge, portmap, firewall, tuning, and
/// `dnsname` because a binary of that name is in the plugin dir: our dns-alias under
/// podman's name); containers on them publish ports, resolve names and
/// `--network-alias`es through dnsname, an internal network (no dnsname, podman's choice)
/// has no way out, and
/// `podman network rm` leaves nothing.
#[test]
fn podman_network_create_with_our_plugins_only() {
    if !require_runtime("podman", &["podman", "runc", "conmon", "unshare", "nsenter", "tar"]) {
        return;
    }
    let mut t = Phases::new("podnet");
    let env = TestEnv::new("podnet");
    let plugins = our_plugins_dir(
        &env,
        &["bridge", "portmap", "firewall", "tuning", "host-local", "dnsname"],
    );
    let cg = CgroupGuard::new("podnet");
    let var_lib_containers = env.dir().join("var-lib-containers");
    fs::create_dir_all(&var_lib_containers).unwrap();
    let holder = Holder::start(&env, &[(&var_lib_containers, "/var/lib/containers")]);
    let outside = outside_world(&env, HOST_CIDR, OUTSIDE_CIDR);
    // A web server in the outside world, to tell a network with a way out from one without.
    let www = env.dir().join("outside-www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("index.html"), "outside\n").unwrap();
    let _outside_httpd = outside.spawn(&[
        "busybox",
        "httpd",
        "-f",
        "-p",
        "198.51.100.2:80",
        "-h",
        www.to_str().unwrap(),
    ]);
    let podman = Podman::new(&env, &holder, &plugins, &cg);
    let _remove_all = PodmanRemoveAll(&podman);
    let info = podman.run(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    if !runtime_usable("podman", &info) {
        return;
    }
    let rootfs = env.dir().join("rootfs");
    busybox_rootfs(&rootfs, "hello from podman");
    let tarball = env.dir().join("rootfs.tar");
    tar_dir(&rootfs, &tarball);
    podman.ok(&["import", tarball.to_str().unwrap(), IMAGE]);
    t.mark("setup + image import");

    // --- podman network create: no options, --subnet, --internal
    let default_net = podman.ok(&["network", "create"]).trim().to_string();
    podman.ok(&["network", "create", "--subnet", "10.89.90.0/24", "appnet"]);
    podman.ok(&["network", "create", "--internal", "--subnet", "10.89.91.0/24", "closednet"]);
    for (name, want) in [
        (default_net.as_str(), &["bridge", "portmap", "firewall", "tuning", "dnsname"][..]),
        ("appnet", &["bridge", "portmap", "firewall", "tuning", "dnsname"][..]),
        // podman 4.3 gives an internal network no dnsname.
        ("closednet", &["bridge", "portmap", "firewall", "tuning"][..]),
    ] {
        let conf = created_conflist(&env, name);
        assert_eq!(plugin_types(&conf), want, "podman's chain for {name}: {conf}");
    }
    t.mark("3 x network create");

    let httpd = |name: &str, net: &str, extra: &[&str]| -> String {
        let mut args = vec!["-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
        podman.run_container(&args).expect_ok();
        podman.ip_of(name)
    };
    let probe = |net: &str, script: &str| -> Run {
        podman.run_container(&["--rm", "--network", net, IMAGE, "sh", "-c", script])
    };

    // --- a container on the default-created network answers the host
    let d_ip = httpd("plain", &default_net, &[]);
    let out = holder.wget(&format!("http://{d_ip}/"));
    assert!(out.ok() && out.stdout.trim() == "hello from podman", "host -> {d_ip}:\n{out}");

    // --- appnet: -p, --network-alias through dnsname, a way out
    let web_ip = httpd("web", "appnet", &["--network-alias", "webalias", "-p", "18081:80"]);
    assert!(web_ip.starts_with("10.89.90."), "web's address {web_ip} is not from --subnet");
    for url in ["http://127.0.0.1:18081/".to_string(), format!("http://{HOST_ADDR}:18081/")] {
        let out = holder.wget(&url);
        assert!(out.ok() && out.stdout.trim() == "hello from podman", "host: GET {url}:\n{out}");
    }
    for name in ["web", "webalias"] {
        let out = probe("appnet", &format!("nslookup {name}; exit $?"));
        assert!(
            out.ok() && answer_addresses(&out.stdout).contains(&web_ip),
            "nslookup {name} (resolv.conf from dnsname's result) did not answer {web_ip}:\n{out}"
        );
    }
    let out = probe("appnet", "timeout 3 wget -qO- http://198.51.100.2/; exit $?");
    assert!(out.ok() && out.stdout.trim() == "outside", "appnet -> outside:\n{out}");
    t.mark("default net + appnet: -p, names, way out");

    // --- closednet (--internal): containers reach each other, nothing outside
    let c_ip = httpd("inner", "closednet", &[]);
    let out = probe("closednet", &format!("timeout 3 wget -qO- http://{c_ip}/; exit $?"));
    assert!(
        out.ok() && out.stdout.trim() == "hello from podman",
        "closednet -> inner {c_ip}:\n{out}"
    );
    let out = probe("closednet", "timeout 3 wget -qO- http://198.51.100.2/; exit $?");
    assert!(!out.ok(), "a container on an --internal network reached the outside:\n{out}");
    t.mark("internal network");

    // --- podman rm -f, podman network rm: nothing of ours left
    podman.ok(&["rm", "--force", "--time", "0", "plain", "web", "inner"]);
    for n in [default_net.as_str(), "appnet", "closednet"] {
        podman.ok(&["network", "rm", n]);
    }
    assert_nothing_left(&env, &holder, Duration::from_secs(10), "podman rm -f + network rm");
    t.mark("rm -f + network rm + leftover checks");
    t.total();
}
