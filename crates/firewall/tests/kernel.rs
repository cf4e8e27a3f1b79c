//! Kernel tests: every test makes its own network namespaces (`fwtest-<pid>-<n>`), runs
//! the backend in a thread that entered them with setns (children inherit it), and
//! deletes them on drop, also when the test panics. The machine's own namespace is never
//! touched. Skipped (with a message) when not root or when a tool is missing.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use firewall::{
    iptables::Iptables, nftables::Nftables, ContainerPorts, Firewall, NetworkRules, PortMapping,
    Protocol,
};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name =
            format!("fwtest-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Runs `f` in a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Runs a shell command in the namespace; panics on failure.
    fn sh(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `sh` but tolerates failure.
    fn sh_any(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("run ip netns exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn can_run(tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return cni::prereq::skip("kernel tests need root");
    }
    for t in ["ip"].iter().chain(tools) {
        if !have(t) {
            return cni::prereq::skip(&format!("kernel tests need {t}"));
        }
    }
    true
}

fn net(name: &str, bridge: &str, subnet: &str) -> NetworkRules {
    NetworkRules::new(name, bridge, vec![subnet.parse().unwrap()])
}

fn mapping(
    host_ip: Option<&str>,
    host_port: u16,
    cip: &str,
    cport: u16,
    proto: Protocol,
) -> PortMapping {
    PortMapping {
        host_ip: host_ip.map(|h| h.parse().unwrap()),
        host_port,
        container_ip: cip.parse().unwrap(),
        container_port: cport,
        protocol: proto,
    }
}

fn ports(id: &str, maps: Vec<PortMapping>) -> ContainerPorts {
    let mut p = ContainerPorts::new("testnet", id, "eth0");
    p.mappings = maps;
    p
}

fn nft_ruleset(ns: &Netns) -> String {
    ns.sh("nft list ruleset")
}

/// Our chains in iptables-save output of both families, without counters/comments lines.
fn ipt_ours(ns: &Netns) -> String {
    let mut s = String::new();
    for save in ["iptables-save", "ip6tables-save"] {
        for l in ns.sh(save).lines() {
            if l.contains("CNI-SUITE") {
                s += l;
                s.push('\n');
            }
        }
    }
    s
}

/// Makes a backend.
type Maker = Box<dyn Fn() -> Box<dyn Firewall> + Send + Sync>;

fn backends() -> Vec<(&'static str, Maker)> {
    let mut v: Vec<(&'static str, Maker)> = Vec::new();
    if have("nft") {
        v.push(("nftables", Box::new(|| Box::new(Nftables::new()))));
    }
    if have("iptables-restore") && have("ip6tables-restore") {
        v.push(("iptables", Box::new(|| Box::new(Iptables::new()))));
    }
    v
}

fn dump(ns: &Netns, kind: &str) -> String {
    if kind == "nftables" {
        nft_ruleset(ns)
    } else {
        ipt_ours(ns)
    }
}

// ------------------------------------------------------------------------------------

#[test]
fn network_rules_are_idempotent_and_removed() {
    if !can_run(&[]) {
        return;
    }
    for (kind, mk) in backends() {
        let ns = Netns::new();
        let mut a = net("alpha", "br-alpha", "10.77.1.0/24");
        a.isolate = true;
        a.subnets.push("fd77:1::/64".parse().unwrap());
        let b = net("beta net", "br-beta", "10.77.2.0/24");
        let fw = mk();
        let (a2, b2) = (a.clone(), b.clone());
        let fw2 = mk();
        ns.run(move || {
            fw2.apply_network(&a2, None).unwrap();
            fw2.apply_network(&b2, None).unwrap();
            fw2.check_network(&a2).unwrap();
            fw2.check_network(&b2).unwrap();
        });
        let first = dump(&ns, kind);
        assert!(!first.is_empty(), "{kind}: nothing applied");
        let (a2, b2) = (a.clone(), b.clone());
        let fw3 = mk();
        let took = ns.run(move || {
            let t = Instant::now();
            fw3.apply_network(&a2, Some(&a2)).unwrap();
            fw3.apply_network(&b2, Some(&b2)).unwrap();
            t.elapsed() / 2
        });
        println!("{kind}: apply_network of an unchanged network: {took:?}");
        let second = dump(&ns, kind);
        assert_eq!(
            first.lines().count(),
            second.lines().count(),
            "{kind}: not idempotent\n{first}\n---\n{second}"
        );
        assert_eq!(first, second, "{kind}: not idempotent");
        println!("{kind}: two networks applied twice, {} lines both times", second.lines().count());

        // Changing a network replaces its rules.
        let mut a3 = a.clone();
        a3.subnets = vec!["10.77.3.0/24".parse().unwrap()];
        a3.isolate = false;
        let fw4 = mk();
        let (a3c, ac) = (a3.clone(), a.clone());
        ns.run(move || fw4.apply_network(&a3c, Some(&ac)).unwrap());
        let changed = dump(&ns, kind);
        assert!(
            !changed.contains("10.77.1.0/24") && changed.contains("10.77.3.0/24"),
            "{kind}:\n{changed}"
        );

        // CHECK detects a missing rule.
        if kind == "nftables" {
            ns.sh("nft flush chain inet cni_bridge nm_alpha");
        } else {
            let nm = ns.sh("iptables-save -t nat | grep -o 'CNI-SUITE-NM-[0-9a-f]*' | head -1");
            ns.sh(&format!("iptables -t nat -F {}", nm.trim()));
        }
        let fw5 = mk();
        let a3c = a3.clone();
        let err = ns.run(move || fw5.check_network(&a3c)).unwrap_err();
        println!("{kind}: check after tampering: {err}");
        let fw6 = mk();
        let (a3c, bc) = (a3.clone(), b.clone());
        ns.run(move || {
            fw6.restore_networks(&[a3c.clone(), bc]).unwrap();
            fw6.check_network(&a3c).unwrap();
        });

        // Removal: one network, then the other; twice is fine.
        let fw7 = mk();
        let a3c = a3.clone();
        ns.run(move || {
            fw7.remove_network(&a3c, false).unwrap();
            fw7.remove_network(&a3c, false).unwrap();
        });
        let left = dump(&ns, kind);
        assert!(!left.contains("10.77.3.0/24") && left.contains("10.77.2.0/24"), "{kind}:\n{left}");
        let fw8 = mk();
        let b2 = b.clone();
        ns.run(move || {
            fw8.remove_network(&b2, true).unwrap();
            fw8.remove_network(&b2, true).unwrap();
        });
        let end = dump(&ns, kind);
        if kind == "nftables" {
            assert_eq!(end.trim(), "", "nftables: ruleset not empty after removal:\n{end}");
        } else {
            assert_eq!(end.trim(), "", "iptables: CNI-SUITE chains left:\n{end}");
        }
        drop(fw);
    }
}

#[test]
fn nft_icc_false_and_iptables_refusal() {
    if !can_run(&["nft", "iptables-restore"]) {
        return;
    }
    let ns = Netns::new();
    let mut n = net("noicc", "br-noicc", "10.78.0.0/24");
    n.icc = false;
    let n2 = n.clone();
    ns.run(move || {
        let fw = Nftables::new();
        fw.apply_network(&n2, None).unwrap();
        fw.check_network(&n2).unwrap();
        let e = Iptables::new().apply_network(&n2, None).unwrap_err();
        assert!(e.msg.contains("icc=false needs the nftables backend"), "{e}");
    });
    let rs = nft_ruleset(&ns);
    assert!(
        rs.contains("table bridge cni_icc")
            && rs.contains("10.78.0.0/24 comment \"cni network noicc\" : drop"),
        "{rs}"
    );
    // icc back on: the drop goes.
    let mut n3 = n.clone();
    n3.icc = true;
    let (n4, n5) = (n3.clone(), n.clone());
    ns.run(move || Nftables::new().apply_network(&n4, Some(&n5)).unwrap());
    let rs = nft_ruleset(&ns);
    assert!(!rs.contains(": drop"), "{rs}");
    ns.run(move || Nftables::new().remove_network(&n3, true).unwrap());
    assert_eq!(nft_ruleset(&ns).trim(), "");
}

#[test]
fn ports_add_remove_exact() {
    if !can_run(&[]) {
        return;
    }
    for (kind, mk) in backends() {
        let ns = Netns::new();
        let mut p1 = ports(
            "c1",
            vec![
                mapping(None, 8080, "10.77.0.2", 80, Protocol::Tcp),
                mapping(Some("192.0.2.10"), 5353, "10.77.0.2", 53, Protocol::Udp),
            ],
        );
        p1.container_nets = vec!["10.77.0.2/24".parse().unwrap()];
        let p2 = ports(
            "c2",
            vec![
                mapping(None, 9090, "10.77.0.3", 90, Protocol::Tcp),
                mapping(None, 9090, "fd77::3", 90, Protocol::Tcp),
            ],
        );
        let fw = mk();
        let (q1, q2) = (p1.clone(), p2.clone());
        ns.run(move || {
            fw.add_ports(&q1).unwrap();
            fw.add_ports(&q1).unwrap(); // idempotent
            fw.add_ports(&q2).unwrap();
            fw.check_ports(&q1).unwrap();
            fw.check_ports(&q2).unwrap();
        });
        if kind == "nftables" {
            // Another container's mapping of a published host port: the kernel refuses it
            // (ownership is decided by portmap's state before the backend is called).
            let fw = mk();
            ns.run(move || {
                let thief = ports("c3", vec![mapping(None, 8080, "10.77.0.9", 80, Protocol::Tcp)]);
                let e = fw.add_ports(&thief).unwrap_err();
                assert_eq!(e.kind, firewall::ErrorKind::Conflict, "{e}");
            });
        }
        let d = dump(&ns, kind);
        println!("{kind} with two containers:\n{d}");
        assert!(
            d.contains("8080") && d.contains("5353") && d.contains("9090") && d.contains("fd77::3")
        );
        assert!(!d.contains("10.77.0.9"), "{kind}: failed add left state:\n{d}");

        // CHECK detects a missing mapping.
        if kind == "nftables" {
            ns.sh("nft delete element inet cni_portmap ap4 '{ tcp . 8080 }'");
        } else {
            let dn = ns.sh("iptables-save -t nat | grep -- '--dport 8080' | head -1");
            ns.sh(&format!("iptables -t nat {}", dn.trim().replacen("-A", "-D", 1)));
        }
        let fw = mk();
        let q1 = p1.clone();
        let e = ns.run(move || fw.check_ports(&q1)).unwrap_err();
        println!("{kind}: check after tampering: {e}");
        let fw = mk();
        let q1 = p1.clone();
        ns.run(move || {
            fw.add_ports(&q1).unwrap();
            fw.check_ports(&q1).unwrap();
        });

        // Removing c1 removes exactly c1's mappings.
        let fw = mk();
        let (q1, q2) = (p1.clone(), p2.clone());
        ns.run(move || {
            fw.remove_ports(&q1, false).unwrap();
            fw.remove_ports(&q1, false).unwrap(); // already gone
            fw.check_ports(&q2).unwrap();
            assert!(fw.check_ports(&q1).is_err());
        });
        let d = dump(&ns, kind);
        assert!(!d.contains("8080") && !d.contains("5353") && d.contains("9090"), "{kind}:\n{d}");

        // The port tables go with the last container.
        let fw = mk();
        let q2 = p2.clone();
        ns.run(move || fw.remove_ports(&q2, true).unwrap());
        let d = dump(&ns, kind);
        assert_eq!(d.trim(), "", "{kind}: left after last removal:\n{d}");
    }
}

/// CPU time (user + system) used by waited-for child processes so far.
fn children_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wall time and the tools' CPU time of one call.
fn measure(f: impl FnOnce()) -> (Duration, Duration) {
    let (c, t) = (children_cpu(), Instant::now());
    f();
    (t.elapsed(), children_cpu().saturating_sub(c))
}

/// Adds `n` containers one call at a time and prints the per-call cost (wall time, which
/// other load on the machine disturbs, and the CPU time of the nft/iptables processes).
fn scale(kind: &str, mk: &(dyn Fn() -> Box<dyn Firewall> + Send + Sync), n: usize) {
    let ns = Netns::new();
    let fw = mk();
    let kind_s = kind.to_string();
    let report = ns.run(move || {
        let kind = kind_s;
        let p = |i: usize| {
            let mut p = ports(
                &format!("{i:064x}"),
                vec![mapping(None, 10000 + i as u16, &format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256), 80, Protocol::Tcp)],
            );
            p.container_nets = vec![format!("10.{}.0.0/16", 100 + i / 65536).parse().unwrap()];
            p
        };
        let mut lines = Vec::new();
        let mut add = Vec::new();
        for i in 0..n {
            add.push(measure(|| fw.add_ports(&p(i)).unwrap()));
        }
        let avg = |v: &[(Duration, Duration)]| {
            let k = v.len().max(1) as u32;
            (v.iter().map(|x| x.0).sum::<Duration>() / k, v.iter().map(|x| x.1).sum::<Duration>() / k)
        };
        let w = 20.min(n);
        let (a0, a1) = (avg(&add[..w]), avg(&add[n - w..]));
        lines.push(format!(
            "{kind}: add_ports, {w} calls at 0..{w} existing: wall {:?} cpu {:?}; at {}..{n} existing: wall {:?} cpu {:?}",
            a0.0, a0.1, n - w, a1.0, a1.1
        ));
        let (wall, cpu) = measure(|| fw.check_ports(&p(n / 2)).unwrap());
        lines.push(format!("{kind}: check_ports at {n} mappings: wall {wall:?} cpu {cpu:?}"));
        let mut rm = Vec::new();
        for i in (0..n).rev() {
            rm.push(measure(|| fw.remove_ports(&p(i), i == 0).unwrap()));
        }
        let (r0, r1) = (avg(&rm[..w]), avg(&rm[n - w..]));
        lines.push(format!(
            "{kind}: remove_ports, {w} calls at {n}..{} existing: wall {:?} cpu {:?}; at {w}..0 existing: wall {:?} cpu {:?}",
            n - w, r0.0, r0.1, r1.0, r1.1
        ));
        lines
    });
    for l in report {
        println!("{l}");
    }
    let d = dump(&ns, if kind == "nftables" { "nftables" } else { "iptables" });
    assert_eq!(d.trim(), "", "left after removing all mappings:\n{d}");
}

/// Scale runs belong to `make bench` (scripts/bench.sh runs them with `--ignored`).
#[test]
#[ignore = "scale run: make bench"]
fn scale_1000_mappings_nftables() {
    if !can_run(&["nft"]) {
        return;
    }
    scale("nftables", &|| Box::new(Nftables::new()), 1000);
}

#[test]
#[ignore = "scale run: make bench"]
fn scale_1000_mappings_iptables() {
    if !can_run(&["iptables-restore", "ip6tables-restore"]) {
        return;
    }
    scale("iptables", &|| Box::new(Iptables::new()), 1000);
}

// ------------------------------------------------------------------------------------
// End to end: client ns --veth-- host ns (bridge) --veth-- container ns(es).

/// A TCP server in a namespace answering each connection with the peer's address.
fn echo_peer_server(ns: &Netns, port: u16) {
    let path = format!("/var/run/netns/{}", ns.name);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).unwrap();
        // Serves until the namespace goes away (the process ends with the test binary).
        for s in l.incoming().flatten() {
            let mut s: TcpStream = s;
            let peer = s.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = s.write_all(peer.as_bytes());
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server started");
}

/// Connects from inside `ns` and returns what the server said (its view of our address).
fn fetch(ns: &Netns, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

struct Topo {
    host: Netns,
    client: Netns,
    c1: Netns,
    c2: Netns,
}

fn topo() -> Topo {
    let host = Netns::new();
    let client = Netns::new();
    let c1 = Netns::new();
    let c2 = Netns::new();
    host.sh("sysctl -qw net.ipv4.ip_forward=1");
    host.sh("ip link add br-e2e type bridge && ip addr add 10.79.0.1/24 dev br-e2e && ip link set br-e2e up");
    for (i, c) in [(2, &c1), (3, &c2)] {
        host.sh(&format!("ip link add vh{i} type veth peer name eth0 netns {}", c.name));
        host.sh(&format!("ip link set vh{i} master br-e2e up"));
        // Hairpin mode lets a container reach itself through the host (bridge plugin's
        // hairpinMode).
        host.sh(&format!("ip link set vh{i} type bridge_slave hairpin on"));
        c.sh(&format!("ip addr add 10.79.0.{i}/24 dev eth0 && ip link set eth0 up && ip route add default via 10.79.0.1"));
    }
    host.sh(&format!("ip link add up0 type veth peer name eth0 netns {}", client.name));
    host.sh("ip addr add 10.80.0.1/24 dev up0 && ip link set up0 up");
    client.sh("ip addr add 10.80.0.2/24 dev eth0 && ip link set eth0 up");
    host.sh("sysctl -qw net.ipv4.conf.br-e2e.route_localnet=1");
    Topo { host, client, c1, c2 }
}

#[test]
fn end_to_end_published_port() {
    if !can_run(&[]) {
        return;
    }
    for (kind, mk) in backends() {
        let t = topo();
        echo_peer_server(&t.c1, 80);
        echo_peer_server(&t.c2, 80);
        let n = net("e2e", "br-e2e", "10.79.0.0/24");
        let mut p = ports(
            "c1",
            vec![
                mapping(None, 8080, "10.79.0.2", 80, Protocol::Tcp),
                mapping(Some("10.80.0.1"), 8081, "10.79.0.2", 80, Protocol::Tcp),
            ],
        );
        p.container_nets = vec!["10.79.0.2/24".parse().unwrap()];
        let fw = mk();
        let (n2, p2) = (n.clone(), p.clone());
        t.host.run(move || {
            fw.apply_network(&n2, None).unwrap();
            fw.add_ports(&p2).unwrap();
        });
        // From outside: DNAT, client address preserved.
        assert_eq!(
            fetch(&t.client, "10.80.0.1:8080").unwrap(),
            "10.80.0.2",
            "{kind}: outside -> published port"
        );
        assert_eq!(
            fetch(&t.client, "10.80.0.1:8081").unwrap(),
            "10.80.0.2",
            "{kind}: outside -> host-ip port"
        );
        // From the host itself (its own address is the source, reachable from the
        // container), also via 127.0.0.1 (masqueraded to the bridge address).
        assert_eq!(
            fetch(&t.host, "10.80.0.1:8080").unwrap(),
            "10.80.0.1",
            "{kind}: host -> own address"
        );
        assert_eq!(
            fetch(&t.host, "127.0.0.1:8080").unwrap(),
            "10.79.0.1",
            "{kind}: host -> 127.0.0.1"
        );
        // Hairpin: a container on the same bridge through the host address.
        assert_eq!(fetch(&t.c2, "10.80.0.1:8080").unwrap(), "10.79.0.1", "{kind}: hairpin from c2");
        assert_eq!(
            fetch(&t.c1, "10.80.0.1:8080").unwrap(),
            "10.79.0.1",
            "{kind}: hairpin to itself"
        );
        // Masquerade towards the outside.
        echo_peer_server(&t.client, 7000);
        assert_eq!(
            fetch(&t.c1, "10.80.0.2:7000").unwrap(),
            "10.80.0.1",
            "{kind}: outbound masquerade"
        );
        // Containers reach each other directly (icc).
        assert_eq!(fetch(&t.c1, "10.79.0.3:80").unwrap(), "10.79.0.2", "{kind}: icc");
        println!("{kind}: end to end DNAT/hairpin/localhost/masquerade ok");

        // Removal: the port is closed again and nothing is left.
        let fw = mk();
        let (n2, p2) = (n.clone(), p.clone());
        t.host.run(move || {
            fw.remove_ports(&p2, true).unwrap();
            fw.remove_network(&n2, true).unwrap();
        });
        assert!(fetch(&t.client, "10.80.0.1:8080").is_err(), "{kind}: port still published");
        assert_eq!(dump(&t.host, kind).trim(), "");
    }
}

#[test]
fn end_to_end_icc_internal_isolation_nft() {
    if !can_run(&["nft"]) {
        return;
    }
    let t = topo();
    echo_peer_server(&t.c2, 80);
    echo_peer_server(&t.client, 7000);
    let mut n = net("e2e", "br-e2e", "10.79.0.0/24");
    n.icc = false;
    let n2 = n.clone();
    t.host.run(move || Nftables::new().apply_network(&n2, None).unwrap());
    let e = fetch(&t.c1, "10.79.0.3:80");
    assert!(e.is_err(), "icc=false: c1 reached c2: {e:?}");
    assert_eq!(fetch(&t.c1, "10.80.0.2:7000").unwrap(), "10.80.0.1", "icc=false still routes out");

    let before = n.clone();
    n.icc = true;
    n.internal = true;
    let n2 = n.clone();
    t.host.run(move || Nftables::new().apply_network(&n2, Some(&before)).unwrap());
    assert_eq!(fetch(&t.c1, "10.79.0.3:80").unwrap(), "10.79.0.2", "internal: icc restored");
    assert!(fetch(&t.c1, "10.80.0.2:7000").is_err(), "internal: reached the outside");

    // Isolation: a second network on another bridge (the client link stands in for it).
    let before = n.clone();
    n.internal = false;
    n.isolate = true;
    let other = net("other", "up0", "10.80.0.0/24");
    let (n2, o2) = (n.clone(), other.clone());
    t.host.run(move || {
        let fw = Nftables::new();
        fw.apply_network(&n2, Some(&before)).unwrap();
        fw.apply_network(&o2, None).unwrap();
    });
    assert!(fetch(&t.c1, "10.80.0.2:7000").is_err(), "isolated: reached another managed bridge");
    t.host.run(move || Nftables::new().remove_network(&other, false).unwrap());
    assert_eq!(
        fetch(&t.c1, "10.80.0.2:7000").unwrap(),
        "10.80.0.1",
        "isolation lifted with the other network"
    );
    t.host.run(move || Nftables::new().remove_network(&n, true).unwrap());
    assert_eq!(nft_ruleset(&t.host).trim(), "");
}

#[test]
fn status_and_foreign_drop() {
    if !can_run(&[]) {
        return;
    }
    let ns = Netns::new();
    for (kind, mk) in backends() {
        let fw = mk();
        let r = ns.run(move || fw.status());
        let st = r.unwrap_or_else(|e| panic!("{kind}: not available: {e}"));
        assert_eq!(st.foreign_drop, None, "{kind}");
    }
    if have("iptables") {
        ns.sh("iptables -P FORWARD DROP");
        for (kind, mk) in backends() {
            let fw = mk();
            let d = ns.run(move || fw.status().unwrap().foreign_drop);
            println!("{kind}: {d:?}");
            assert!(d.is_some_and(|d| d.contains("FORWARD")), "{kind}");
        }
    }
    let _ = ns.sh_any("true");
    let _: Option<IpAddr> = None;
}

/// Prints the nftables layout of one network and two mappings (documentation aid).
#[test]
fn layout_one_network_two_mappings() {
    if !can_run(&["nft"]) {
        return;
    }
    let ns = Netns::new();
    ns.run(|| {
        let fw = Nftables::new();
        let mut n = net("podman", "cni-podman0", "10.88.0.0/16");
        n.isolate = true;
        fw.apply_network(&n, None).unwrap();
        let mut p = ports(
            "3f2a9c",
            vec![
                mapping(None, 8080, "10.88.0.5", 80, Protocol::Tcp),
                mapping(Some("127.0.0.1"), 5353, "10.88.0.5", 53, Protocol::Udp),
            ],
        );
        p.network = "podman".into();
        p.container_nets = vec!["10.88.0.5/16".parse().unwrap()];
        fw.add_ports(&p).unwrap();
    });
    println!("{}", nft_ruleset(&ns));
}

/// UDP flows through a published port are deleted over ctnetlink when the mapping goes:
/// a client that keeps its source port must not keep reaching the old container.
#[test]
fn udp_flows_of_removed_mappings_are_deleted() {
    if !can_run(&["conntrack"]) {
        return;
    }
    let t = topo();
    // A UDP echo in c1 on port 53.
    let path = format!("/var/run/netns/{}", t.c1.name);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).expect("open netns");
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let s = std::net::UdpSocket::bind("0.0.0.0:53").expect("bind");
        tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut p = ports("c1", vec![mapping(None, 5353, "10.79.0.2", 53, Protocol::Udp)]);
    p.container_nets = vec!["10.79.0.2/24".parse().unwrap()];
    let (p2, p3) = (p.clone(), p.clone());
    t.host.run(move || Nftables::new().add_ports(&p2).unwrap());
    let got = t.client.run(|| {
        let s = std::net::UdpSocket::bind("10.80.0.2:40000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"hi", "10.80.0.1:5353").unwrap();
        let mut buf = [0u8; 8];
        s.recv(&mut buf).map(|n| buf[..n].to_vec())
    });
    assert_eq!(got.unwrap(), b"hi");
    let before = t.host.sh_any("conntrack -L -p udp --orig-port-dst 5353 2>/dev/null");
    assert!(before.contains("dport=5353"), "no flow to delete: {before}");
    // A flow of someone else's (another port) that the filter must leave alone.
    t.host.sh("conntrack -I -p udp -s 10.80.0.2 -d 10.80.0.1 --sport 40001 --dport 5354 \
         --timeout 120 >/dev/null");
    let p4 = p3.clone();
    t.host
        .run(move || firewall::conntrack::flush(&p3.mappings, firewall::Flows::ToRemovedMappings));
    let after = t.host.sh_any("conntrack -L -p udp 2>/dev/null");
    assert!(!after.contains("dport=5353"), "flow left: {after}");
    assert!(after.contains("dport=5354"), "an unrelated flow was deleted: {after}");
    // On this kernel the flush is the kernel's own filtered one, not the dump fallback.
    let direct = t.host.run(move || {
        let mut sock = nfnetlink::Socket::open().unwrap();
        let removed = firewall::conntrack::removed_mapping_filter(&p4.mappings[0]);
        // ADD's filter also carries a status mask (flows that were not DNATed).
        let new = firewall::conntrack::new_mapping_filter(&p4.mappings[0]);
        nfnetlink::ctnetlink::flush_by_filter(&mut sock, &removed)
            .and_then(|_| nfnetlink::ctnetlink::flush_by_filter(&mut sock, &new))
    });
    assert!(direct.is_ok(), "the kernel refused a flush by filter: {direct:?}");
    t.host.run(move || Nftables::new().remove_ports(&p, true).unwrap());
}

// ------------------------------------------------------------------------------------
// The DNS redirect (dns_redirect): programmed over nfnetlink, read back from the kernel.

use firewall::dns_redirect::{self, Redirect};

/// What `nft list ruleset` printed for the `nft -f` script the redirect used to be.
fn dns_listing(r: Redirect) -> String {
    format!(
        "table ip cni_dns {{\n\tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:{}\n\
         \t\tip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:{}\n\t}}\n}}\n",
        r.udp_port, r.tcp_port
    )
}

fn dns_table_handle(ns: &Netns) -> Option<u64> {
    ns.run(|| {
        let mut s = nfnetlink::Socket::open().unwrap();
        dns_redirect::read(&mut s).unwrap().table.map(|t| t.handle)
    })
}

#[test]
fn dns_redirect_install_replace_remove() {
    if !can_run(&["nft"]) {
        return;
    }
    let ns = Netns::new();
    assert_eq!(ns.run(dns_redirect::available).map_err(|e| e.to_string()), Ok(()));
    assert_eq!(ns.run(dns_redirect::installed), None);
    // A UDP server where the redirect will lead; the client asks 127.0.0.11:53.
    let (server, port) = ns.run(|| {
        let s = std::net::UdpSocket::bind("127.0.0.11:0").unwrap();
        let p = s.local_addr().unwrap().port();
        (s, p)
    });
    let r1 = Redirect { udp_port: port, tcp_port: 40001 };
    ns.run(move || dns_redirect::install(r1)).unwrap();
    assert_eq!(ns.run(dns_redirect::installed), Some(r1));
    assert_eq!(nft_ruleset(&ns), dns_listing(r1));
    let client = ns.run(|| {
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"q", "127.0.0.11:53").unwrap();
        c
    });
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = server.recv_from(&mut buf).expect("redirected query");
    assert_eq!(&buf[..n], b"q");
    assert_eq!(from, client.local_addr().unwrap());

    // The same redirect again: nothing sent (the table is the same object).
    let handle = dns_table_handle(&ns);
    ns.run(move || dns_redirect::install(r1)).unwrap();
    assert_eq!(dns_table_handle(&ns), handle);

    // Another redirect replaces it in one transaction.
    let r2 = Redirect { udp_port: 40002, tcp_port: 40003 };
    ns.run(move || dns_redirect::install(r2)).unwrap();
    assert_eq!(ns.run(dns_redirect::installed), Some(r2));
    assert_eq!(nft_ruleset(&ns), dns_listing(r2));
    assert_ne!(dns_table_handle(&ns), handle);

    // Anything added to our table makes it not ours: it reads as no redirect and is replaced.
    ns.sh("nft add rule ip cni_dns output counter");
    assert_eq!(ns.run(dns_redirect::installed), None);
    ns.run(move || dns_redirect::install(r2)).unwrap();
    assert_eq!(nft_ruleset(&ns), dns_listing(r2));
    ns.sh("nft add chain ip cni_dns extra");
    assert_eq!(ns.run(dns_redirect::installed), None);
    ns.run(move || dns_redirect::install(r2)).unwrap();
    assert_eq!(nft_ruleset(&ns), dns_listing(r2));

    ns.run(dns_redirect::remove).unwrap();
    assert_eq!(nft_ruleset(&ns).trim(), "", "left after remove");
    assert_eq!(ns.run(dns_redirect::installed), None);
    // A missing table is not an error.
    ns.run(dns_redirect::remove).unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The cost of the redirect on ADD, in a fresh namespace each run: the `nft -f` child it
/// used to be against the nfnetlink install, both with and without the conntrack flush
/// every first install does. Run: `cargo test -p firewall --test kernel --release --
/// --ignored dns_redirect_install_time --nocapture`.
#[test]
#[ignore = "timing run"]
fn dns_redirect_install_time() {
    if !can_run(&["nft"]) {
        return;
    }
    let r = Redirect { udp_port: 40000, tcp_port: 40001 };
    let script = format!(
        "table ip cni_dns\ndelete table ip cni_dns\ntable ip cni_dns {{\n\tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:{}\n\
         \t\tip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:{}\n\t}}\n}}\n",
        r.udp_port, r.tcp_port
    );
    let runs = 25;
    let (mut nft_child, mut nft_flush, mut ours, mut ours_flush) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        for (i, out) in
            [&mut nft_child, &mut nft_flush, &mut ours, &mut ours_flush].into_iter().enumerate()
        {
            let ns = Netns::new();
            let script = script.clone();
            let took = ns.run(move || {
                let t = Instant::now();
                if i < 2 {
                    let mut c = Command::new("nft")
                        .args(["-f", "-"])
                        .stdin(std::process::Stdio::piped())
                        .spawn()
                        .unwrap();
                    c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
                    assert!(c.wait().unwrap().success());
                    if i == 1 {
                        firewall::conntrack::flush_dns_redirect();
                    }
                } else if i == 2 {
                    let mut s = nfnetlink::Socket::open().unwrap();
                    let state = dns_redirect::read(&mut s).unwrap();
                    let ops = dns_redirect::install_ops(state.table.is_some(), r);
                    nfnetlink::commit(&mut s, &ops).unwrap();
                } else {
                    dns_redirect::install(r).unwrap();
                }
                t.elapsed()
            });
            assert_eq!(nft_ruleset(&ns), dns_listing(r));
            out.push(took);
        }
    }
    println!(
        "dns redirect install in a fresh netns, median of {runs}: nft -f child {:?} \
         (+ conntrack flush {:?}); nfnetlink {:?} (+ conntrack flush, = install() {:?})",
        median(nft_child),
        median(nft_flush),
        median(ours),
        median(ours_flush)
    );
}
