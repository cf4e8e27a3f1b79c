//! End to end with Kubernetes' path: containerd 2.x's CRI plugin, driven by `crictl` (and
//! by `critest`'s networking specs), with only this workspace's plugins in the CNI bin
//! directory. The CRI runs its own `loopback` network (cniVersion 0.3.1, `CNI_IFNAME=lo`)
//! beside the pod network, passes `portMappings`, `bandwidth` and `dns` the way go-cni
//! marshals them (Go field names: `HostPort`, `IngressRate`, `Servers`), calls DEL at
//! StopPodSandbox and again at RemovePodSandbox, and STATUS for a 1.1.0 conflist.
//!
//! containerd runs inside the test's private host network namespace and a private mount
//! namespace (see `common/runtime.rs`) in which `/opt/cni/bin` and `/etc/cni/net.d` are the
//! test's temp dirs; its root, state and socket are in the test's temp dir. Images (a
//! pause stand-in, busybox, a busybox httpd) are built offline and imported into the
//! `k8s.io` namespace.

#[path = "common/runtime.rs"]
mod runtime;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::*;
use runtime::*;
use serde_json::{json, Value};

const NET: &str = "k8s-pod-network";
const HOST_CIDR: &str = "198.51.100.1/24";
const HOST_ADDR: &str = "198.51.100.1";
const OUTSIDE_CIDR: &str = "198.51.100.2/24";
const HOST_PORT: u16 = 18080;
/// The pod's bandwidth annotations, in bits per second (Kubernetes' unit).
const RATE_BITS: f64 = 1_000_000.0;

/// A Kubernetes-style pod network: cniVersion 1.1.0, bridge + portmap + bandwidth (what
/// `loopback` does is the CRI's own network).
fn conflist(subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": "cni-k8s", "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    })
}

/// What a crictl test needs: plugins, conflist, holder, containerd with CRI, images.
struct Bed {
    env: TestEnv,
    cg: CgroupGuard,
    holder: Holder,
    ctd: Containerd,
    crictl_config: PathBuf,
}

impl Bed {
    fn new(label: &'static str, plugins: &[&str], conflist: &Value) -> Option<Bed> {
        if !require_built(
            label,
            &["containerd", "containerd-shim-runc-v2", "ctr", "crictl", "critest"],
            &["runc", "unshare", "nsenter", "tar", "busybox"],
        ) {
            return None;
        }
        let env = TestEnv::new(label);
        let bin = our_plugins_dir(&env, plugins);
        let netd = env.dir().join("etc-cni-net.d");
        fs::create_dir_all(&netd).unwrap();
        fs::write(netd.join("10-pods.conflist"), serde_json::to_vec_pretty(conflist).unwrap())
            .unwrap();
        let cg = CgroupGuard::new(label);
        let holder = Holder::start(&env, &[(&bin, "/opt/cni/bin"), (&netd, "/etc/cni/net.d")]);
        let ctd = Containerd::start(
            &env,
            &holder,
            Some(&CriConfig { bin_dir: "/opt/cni/bin", conf_dir: "/etc/cni/net.d" }),
        );
        let images = TestImages::build(&env, "hello from the pod");
        ctd.import(&holder, "k8s.io", &images);
        let crictl_config = env.dir().join("crictl.yaml");
        fs::write(
            &crictl_config,
            format!(
                "runtime-endpoint: unix://{a}\nimage-endpoint: unix://{a}\ntimeout: 60\n",
                a = ctd.address
            ),
        )
        .unwrap();
        for d in ["pods", "logs"] {
            fs::create_dir_all(env.dir().join(d)).unwrap();
        }
        Some(Bed { env, cg, holder, ctd, crictl_config })
    }

    fn crictl(&self, args: &[&str]) -> Run {
        let mut argv = vec!["crictl", "--config", self.crictl_config.to_str().unwrap()];
        argv.extend_from_slice(args);
        self.holder.run(&argv, &self.ctd.env, CLIENT_TIMEOUT)
    }

    fn crictl_ok(&self, args: &[&str]) -> String {
        self.crictl(args).expect_ok().trim().to_string()
    }

    /// Writes a pod sandbox config (`extra` merged in at the top level) and returns its path.
    fn pod_config(&self, name: &str, extra: Value) -> PathBuf {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "attempt": 0},
            "hostname": name,
            "log_directory": self.env.dir().join("logs").join(name),
            "linux": {"cgroup_parent": self.cg.child(name)}
        });
        for (k, v) in extra.as_object().unwrap() {
            pod[k] = v.clone();
        }
        let path = self.env.dir().join("pods").join(format!("{name}.json"));
        fs::write(&path, pod.to_string()).unwrap();
        path
    }

    /// `crictl runp`: the pod's id, or the failed run.
    fn run_pod(&self, name: &str, extra: Value) -> Result<String, Run> {
        let cfg = self.pod_config(name, extra);
        let out = self.crictl(&["runp", cfg.to_str().unwrap()]);
        if out.ok() {
            Ok(out.stdout.trim().to_string())
        } else {
            Err(out)
        }
    }

    /// Creates and starts a container in a pod; returns its id.
    fn start_container(
        &self,
        pod: &str,
        pod_name: &str,
        name: &str,
        image: &str,
        cmd: &[&str],
    ) -> String {
        let mut c = json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "log_path": format!("{name}.log"),
            "linux": {}
        });
        if !cmd.is_empty() {
            c["command"] = json!(cmd);
        }
        let path = self.env.dir().join("pods").join(format!("{pod_name}-{name}.json"));
        fs::write(&path, c.to_string()).unwrap();
        let pod_cfg = self.env.dir().join("pods").join(format!("{pod_name}.json"));
        let id =
            self.crictl_ok(&["create", pod, path.to_str().unwrap(), pod_cfg.to_str().unwrap()]);
        self.crictl_ok(&["start", &id]);
        id
    }

    fn pod_ip(&self, pod: &str) -> String {
        let v = parse_json(&self.crictl_ok(&["inspectp", "--output", "json", pod]));
        v["status"]["network"]["ip"].as_str().unwrap_or_default().to_string()
    }

    /// Pod ids, also of pods that are not ready.
    fn pods(&self) -> Vec<String> {
        self.crictl(&["pods", "--quiet"]).stdout.lines().map(str::to_string).collect()
    }

    /// (NetworkReady, its message) from `crictl info`.
    fn network_ready(&self) -> (bool, String) {
        let v = parse_json(&self.crictl_ok(&["info"]));
        let cond = v["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "NetworkReady"))
            .cloned()
            .unwrap_or_else(|| panic!("no NetworkReady condition in crictl info: {v}"));
        (cond["status"] == json!(true), cond["message"].as_str().unwrap_or_default().to_string())
    }

    /// Everything of ours left in the host namespace and the state dirs, plus network
    /// namespaces the CRI left in the holder's /run/netns.
    fn leftovers(&self, keep_links: &[&str]) -> Vec<String> {
        let mut left = leftovers(&self.env, keep_links, &[self.holder.pid(), self.ctd.pid()]);
        if let Ok(rd) = fs::read_dir(self.holder.inside("/run/netns")) {
            for e in rd.flatten() {
                left.push(format!("netns {}", e.file_name().to_string_lossy()));
            }
        }
        left
    }
}

/// Stops and removes every pod on drop (also when the test panics).
struct RemovePods<'a>(&'a Bed);

impl Drop for RemovePods<'_> {
    fn drop(&mut self) {
        for id in self.0.pods() {
            let _ = self.0.crictl(&["stopp", &id]);
            let out = self.0.crictl(&["rmp", "--force", &id]);
            if !out.ok() {
                eprintln!("cleanup: crictl rmp {id} failed:\n{out}");
            }
        }
    }
}

/// A TCP connection to `addr` (IPv4) whose socket buffers are 16 KiB, set before the
/// handshake: little data is ever in flight, so what one side counts is what crossed the
/// shaper, and no backlog is left queued in it afterwards (a full tbf queue would delay
/// every later packet of the pod, for minutes at 1 Mbit/s).
fn connect_small_buffers(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only: {addr}") };
    // SAFETY: a new socket we own; setsockopt/connect get valid pointers and lengths; the
    // fd is handed to TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 16 * 1024;
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let stream = TcpStream::from_raw_fd(fd);
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let rc = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert!(rc == 0, "connect {addr}: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Removes the (empty) top-level cgroup `name` from every hierarchy on drop, if it did not
/// exist when created.
struct CgroupCleanup {
    name: &'static str,
    existed: bool,
}

impl CgroupCleanup {
    fn unless_present(name: &'static str) -> CgroupCleanup {
        CgroupCleanup { name, existed: !Self::dirs(name).is_empty() }
    }
    fn dirs(name: &str) -> Vec<PathBuf> {
        fs::read_dir("/sys/fs/cgroup")
            .map(|rd| rd.flatten().map(|h| h.path().join(name)).filter(|d| d.is_dir()).collect())
            .unwrap_or_default()
    }
}

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        if self.existed {
            return;
        }
        for d in Self::dirs(self.name) {
            // rmdir only succeeds on an empty cgroup: nothing running is touched.
            if let Err(e) = fs::remove_dir(&d) {
                eprintln!("warning: cannot remove cgroup {}: {e}", d.display());
            }
        }
    }
}

/// Reads from `addr` for `total` and returns the rate over the last `window`, in bits/s.
fn download_rate(from: &Netns, addr: SocketAddr, total: Duration, window: Duration) -> f64 {
    from.in_ns(|| {
        let mut s = connect_small_buffers(addr);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let start = Instant::now();
        let mut marks: Vec<(Duration, u64)> = Vec::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while start.elapsed() < total {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) => panic!("reading from {addr} after {n} bytes: {e}"),
            }
            marks.push((start.elapsed(), n));
        }
        window_rate(&marks, total, window)
    })
}

/// Writes to `addr` for `total` and returns the rate over the last `window`, in bits/s.
fn upload_rate(from: &Netns, addr: SocketAddr, total: Duration, window: Duration) -> f64 {
    from.in_ns(|| {
        let mut s = connect_small_buffers(addr);
        let start = Instant::now();
        let mut marks: Vec<(Duration, u64)> = Vec::new();
        let mut n = 0u64;
        let buf = vec![0u8; 8 * 1024];
        while start.elapsed() < total {
            match s.write(&buf) {
                Ok(k) => n += k as u64,
                Err(e) => panic!("writing to {addr} after {n} bytes: {e}"),
            }
            marks.push((start.elapsed(), n));
        }
        window_rate(&marks, total, window)
    })
}

fn window_rate(marks: &[(Duration, u64)], total: Duration, window: Duration) -> f64 {
    let from = total.saturating_sub(window);
    let first = marks.iter().find(|(t, _)| *t >= from).copied();
    let last = marks.last().copied();
    match (first, last) {
        (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
            (n1 - n0) as f64 * 8.0 / (t1 - t0).as_secs_f64()
        }
        _ => panic!("no data in the last {window:?} of {total:?}: {} samples", marks.len()),
    }
}

#[test]
fn crictl_pod_with_host_port_dns_and_bandwidth() {
    let Some(bed) = Bed::new(
        "crictl",
        &["bridge", "portmap", "bandwidth", "host-local", "loopback"],
        &conflist("10.89.72.0/24"),
    ) else {
        return;
    };
    let mut t = Phases::new("crictl");
    let outside = outside_world(&bed.env, HOST_CIDR, OUTSIDE_CIDR);
    let _remove = RemovePods(&bed);
    let (ready, msg) = bed.network_ready();
    assert!(ready, "CRI network not ready with our plugins: {msg}");
    t.mark("setup: containerd + CRI up, images imported");

    // --- a pod publishing hostPort 18080, with a DNS config and bandwidth annotations
    let rate = format!("{}", RATE_BITS as u64);
    let web_extra = json!({
        "port_mappings": [{"protocol": 0, "container_port": 80, "host_port": HOST_PORT}],
        "dns_config": {"servers": ["192.0.2.53"], "searches": ["svc.cluster.local"],
                       "options": ["ndots:5"]},
        "annotations": {"kubernetes.io/ingress-bandwidth": rate,
                        "kubernetes.io/egress-bandwidth": rate}
    });
    let web = bed
        .run_pod("web", web_extra.clone())
        .unwrap_or_else(|r| panic!("crictl runp web failed:\n{r}\n{}", bed.ctd.log_tail(20)));
    let httpd = bed.start_container(&web, "web", "httpd", WEB_IMAGE, &[]);
    bed.start_container(
        &web,
        "web",
        "zeros",
        BUSYBOX_IMAGE,
        &["sh", "-c", "nc -l -p 5001 < /dev/zero"],
    );
    bed.start_container(
        &web,
        "web",
        "sink",
        BUSYBOX_IMAGE,
        &["sh", "-c", "nc -l -p 5002 > /dev/null"],
    );
    let ip = bed.pod_ip(&web);
    assert!(ip.starts_with("10.89.72."), "pod address {ip:?} is not from the pod network");
    assert_eq!(
        leases(&bed.env, NET),
        vec![ip.clone()],
        "the plugins' state is not in CNI_SUITE_STATE_DIR"
    );
    t.mark("runp web + 3 containers");

    // The CRI's loopback network brought lo up.
    let lo = bed.crictl_ok(&["exec", &httpd, "ip", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        lo.contains("inet 127.0.0.1/8"),
        "lo in the pod has no 127.0.0.1 (loopback plugin):\n{lo}"
    );

    // --- hostPort on 127.0.0.1, on the host's address, and from outside
    for url in
        [format!("http://127.0.0.1:{HOST_PORT}/"), format!("http://{HOST_ADDR}:{HOST_PORT}/")]
    {
        let out = bed.holder.wget(&url);
        assert!(out.ok() && out.stdout.trim() == "hello from the pod", "host: GET {url}:\n{out}");
    }
    let out = wget_from(&outside, &format!("http://{HOST_ADDR}:{HOST_PORT}/"));
    assert!(
        out.ok() && out.stdout.trim() == "hello from the pod",
        "outside: GET {HOST_ADDR}:{HOST_PORT}:\n{out}"
    );
    t.mark("hostPort from 3 clients");

    // --- the DNS config (the `dns` capability) is the pod's resolv.conf
    let resolv = bed.crictl_ok(&["exec", &httpd, "cat", "/etc/resolv.conf"]);
    for line in ["nameserver 192.0.2.53", "search svc.cluster.local", "options ndots:5"] {
        assert!(resolv.lines().any(|l| l.trim() == line), "resolv.conf lacks {line:?}:\n{resolv}");
    }

    // --- bandwidth: past the token bucket, traffic flows at the annotated rate
    let pod_ip: IpAddr = ip.parse().unwrap();
    let (total, window) = (Duration::from_secs(4), Duration::from_secs(2));
    let egress = download_rate(bed.env.host(), SocketAddr::new(pod_ip, 5001), total, window);
    let ingress = upload_rate(bed.env.host(), SocketAddr::new(pod_ip, 5002), total, window);
    eprintln!(
        "[crictl] bandwidth annotations {:.1} Mbit/s: measured egress {:.2} Mbit/s, ingress {:.2} Mbit/s",
        RATE_BITS / 1e6,
        egress / 1e6,
        ingress / 1e6
    );
    for (dir, got) in [("egress", egress), ("ingress", ingress)] {
        assert!(
            got > 0.4 * RATE_BITS && got < 1.6 * RATE_BITS,
            "{dir}: {:.2} Mbit/s over the last {window:?}, annotated {:.2} Mbit/s",
            got / 1e6,
            RATE_BITS / 1e6
        );
    }
    t.mark("bandwidth measured both ways");

    // --- the same hostPort again: refused in Docker's words, and nothing of it stays
    let out = bed.run_pod("web2", web_extra).expect_err("a second pod got hostPort 18080");
    assert!(
        out.all_output().contains("port is already allocated"),
        "second pod with hostPort {HOST_PORT} not refused with \"port is already allocated\":\n{out}"
    );
    let web2: Vec<String> = bed
        .crictl(&["pods", "--name", "web2", "--quiet"])
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    for id in &web2 {
        bed.crictl_ok(&["stopp", id]);
        bed.crictl_ok(&["rmp", id]);
    }
    assert_eq!(leases(&bed.env, NET), vec![ip.clone()], "the refused pod kept an address");
    let out = bed.holder.wget(&format!("http://127.0.0.1:{HOST_PORT}/"));
    assert!(
        out.ok() && out.stdout.trim() == "hello from the pod",
        "web broken by the refused pod:\n{out}"
    );
    t.mark("hostPort conflict refused + removed");

    // --- StopPodSandbox (DEL with the netns) then RemovePodSandbox (DEL without): nothing left
    bed.crictl_ok(&["stopp", &web]);
    bed.crictl_ok(&["rmp", &web]);
    assert!(bed.pods().is_empty(), "pods left: {:?}", bed.pods());
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(10), || {
        left = bed.leftovers(&["lo", "ext0"]);
        left.is_empty()
    });
    assert!(clean, "left behind after stopp + rmp: {left:#?}");
    let fallback = bed.holder.inside("/run/cni-suite");
    assert!(
        !fallback.exists(),
        "a plugin used the default state dir: {:?}",
        files_under(&fallback)
    );
    let errors: Vec<String> = bed
        .ctd
        .log_tail(2000)
        .lines()
        .filter(|l| l.contains("Failed to destroy network") || l.contains("failed (delete)"))
        .map(str::to_string)
        .collect();
    assert!(errors.is_empty(), "a DEL failed during the test:\n{}", errors.join("\n"));
    t.mark("stopp + rmp + leftover checks");
    t.total();
}

/// containerd sends STATUS for a 1.1.0 conflist (`crictl info`): with the only address of
/// a /30 taken, host-local's STATUS says the range is full and the CRI reports the network
/// not ready with our message; once the pod is gone it is ready again.
#[test]
fn crictl_status_of_a_1_1_0_conflist() {
    let Some(bed) = Bed::new(
        "crictl-status",
        &["bridge", "portmap", "bandwidth", "host-local", "loopback"],
        &conflist("10.89.73.0/30"),
    ) else {
        return;
    };
    let _remove = RemovePods(&bed);
    let (ready, msg) = bed.network_ready();
    assert!(ready, "CRI network not ready before any pod: {msg}");
    let pod = bed
        .run_pod("only", json!({}))
        .unwrap_or_else(|r| panic!("crictl runp failed:\n{r}\n{}", bed.ctd.log_tail(20)));
    assert_eq!(bed.pod_ip(&pod), "10.89.73.2");
    let (ready, msg) = bed.network_ready();
    assert!(!ready, "NetworkReady stayed true with the /30 full (no STATUS sent?)");
    assert!(
        msg.contains("no free address"),
        "NetworkReady message is not host-local's STATUS error: {msg}"
    );
    bed.crictl_ok(&["stopp", &pod]);
    bed.crictl_ok(&["rmp", &pod]);
    let (ready, msg) = bed.network_ready();
    assert!(ready, "network still not ready after the pod left: {msg}");
    let left = bed.leftovers(&["lo"]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// critest's networking specs (`--ginkgo.focus=Networking`): DNS config, hostname, port
/// mapping with only a container port, port mapping with host port 12000.
#[test]
fn critest_networking_specs() {
    let Some(bed) = Bed::new(
        "critest",
        &["bridge", "portmap", "bandwidth", "host-local", "loopback"],
        &conflist("10.89.74.0/24"),
    ) else {
        return;
    };
    // critest's pods have no cgroup parent (cgroupfs driver), so containerd puts them under
    // /k8s.io in every hierarchy: removed again afterwards unless it was there before.
    let _k8s_cgroup = CgroupCleanup::unless_present("k8s.io");
    let _remove = RemovePods(&bed);
    let images = bed.env.dir().join("critest-images.yaml");
    fs::write(
        &images,
        format!("defaultTestContainerImage: {BUSYBOX_IMAGE}\nwebServerTestImage: {WEB_IMAGE}\n"),
    )
    .unwrap();
    let endpoint = format!("unix://{}", bed.ctd.address);
    let out = bed.holder.run(
        &[
            "critest",
            &format!("--runtime-endpoint={endpoint}"),
            &format!("--image-endpoint={endpoint}"),
            &format!("--test-images-file={}", images.display()),
            "--ginkgo.focus=Networking",
            "--ginkgo.no-color",
        ],
        &bed.ctd.env,
        Duration::from_secs(600),
    );
    let ran = out.stdout.lines().find(|l| l.starts_with("Ran ")).unwrap_or_default().to_string();
    eprintln!("[critest] {ran}");
    assert!(out.ok(), "critest networking specs failed:\n{out}\n{}", bed.ctd.log_tail(30));
    assert!(ran.starts_with("Ran 4 of "), "expected the 4 networking specs to run: {ran}\n{out}");
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(10), || {
        left = bed.leftovers(&["lo"]);
        left.is_empty()
    });
    assert!(clean, "left behind after critest: {left:#?}");
}
