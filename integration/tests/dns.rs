//! `dns-alias` end to end: Debian's reference `bridge` + `host-local` create the interfaces,
//! our `dns-alias` is chained after them, and real clients (`dig`, `getent`) inside the
//! container namespaces ask 127.0.0.11. Every namespace is the test's own; the daemon is
//! found through its pid file and killed at the end if it still runs.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::*;
use serde_json::{json, Value};

#[path = "common/runtime.rs"]
mod runtime;

// ---------------------------------------------------------------------------------------
// local helpers

/// A plugin dir with the reference bridge/host-local next to our dns-alias (so the test does
/// not depend on our bridge, written in parallel).
fn plugin_dir(env: &TestEnv) -> Plugins {
    let dir = env.scratch_bin_dir();
    for p in ["bridge", "host-local"] {
        let _ = std::os::unix::fs::symlink(Path::new(REFERENCE_PLUGIN_DIR).join(p), dir.join(p));
    }
    let ours = env.plugin_path(&Plugins::Ours, "dns-alias");
    let _ = std::os::unix::fs::symlink(ours, dir.join("dns-alias"));
    Plugins::Dirs(vec![dir])
}

/// bridge + host-local, then dns-alias with `dns` merged into its entry.
fn conflist(env: &TestEnv, net: &str, bridge: &str, subnet: &str, dns: Value) -> Value {
    let mut d = json!({"type": "dns-alias", "capabilities": {"aliases": true}});
    for (k, v) in dns.as_object().unwrap() {
        d[k] = v.clone();
    }
    json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "subnet": subnet, "dataDir": env.ipam_dir()}},
            d
        ]
    })
}

fn opts(plugins: &Plugins, net: &str, name: &str, aliases: &[&str]) -> CniOpts {
    CniOpts::default()
        .plugins(plugins.clone())
        .args(&format!("IgnoreUnknown=1;K8S_POD_NAME={name}"))
        .cap_args(json!({"aliases": {net: aliases}}))
}

fn add(
    env: &TestEnv,
    p: &Plugins,
    net: &str,
    ctr: &Netns,
    name: &str,
    aliases: &[&str],
) -> (IpAddr, Value) {
    let out = env.cnitool("add", net, ctr, &opts(p, net, name, aliases));
    out.expect_ok();
    let r = out.result().clone();
    (first_ip(&r), r)
}

fn del(env: &TestEnv, p: &Plugins, net: &str, ctr: &Netns, name: &str) {
    env.cnitool("del", net, ctr, &opts(p, net, name, &[])).expect_ok();
}

fn dns_dir(env: &TestEnv) -> PathBuf {
    env.state_dir().join("dns")
}

fn daemon_pid(env: &TestEnv) -> Option<i32> {
    fs::read_to_string(dns_dir(env).join("daemon.pid")).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie has exited: only its entry is left for its parent to reap.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn kill(pid: i32) {
    // SAFETY: SIGKILL to the daemon this test started (read from its own pid file).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Kills the test's daemon (by the PID in its pid file) when the test ends, however it ends.
struct DaemonGuard(PathBuf);

/// A test bed with one network, `net1` on `bridge` with subnet 10.89.`<n>`.0/24 and its
/// gateway 10.89.`<n>`.1 as the upstream; the daemon is killed when the guard drops.
fn one_network(label: &str, bridge: &str, n: u8) -> (TestEnv, DaemonGuard, Plugins) {
    let env = TestEnv::new(label);
    let guard = DaemonGuard(dns_dir(&env));
    let p = plugin_dir(&env);
    let (subnet, upstream) = (format!("10.89.{n}.0/24"), format!("10.89.{n}.1"));
    env.write_conflist(
        "net1",
        &conflist(&env, "net1", bridge, &subnet, json!({ "upstreams": [upstream] })),
    );
    (env, guard, p)
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(self.0.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if alive(pid) {
                kill(pid);
            }
        }
    }
}

/// What `dig` said.
#[derive(Debug)]
struct Dig {
    status: String,
    answers: Vec<String>,
    raw: String,
}

fn dig(ctr: &Netns, args: &[&str]) -> Dig {
    let mut argv =
        vec!["dig", "+time=2", "+tries=1", "+noall", "+comments", "+answer", "@127.0.0.11"];
    argv.extend_from_slice(args);
    let out = ctr.exec(&argv);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    if std::env::var_os("DNS_TEST_VERBOSE").is_some() {
        eprintln!("[{}] dig {}\n{}", ctr.name, args.join(" "), raw.trim_end());
    }
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(str::to_string)
        .unwrap_or_else(|| "NO-ANSWER".into());
    let answers = raw
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    Dig { status, answers, raw }
}

fn dig_ok(ctr: &Netns, args: &[&str]) -> Vec<String> {
    let d = dig(ctr, args);
    assert_eq!(d.status, "NOERROR", "dig {args:?} in {}: {}", ctr.name, d.raw);
    d.answers
}

/// /etc/netns/<ns>/resolv.conf, which `ip netns exec` bind-mounts over /etc/resolv.conf.
/// Removed on drop, with /etc/netns when it did not exist before this test process made it
/// and nothing else is in it (the last of the tests running in parallel removes it).
struct ResolvConf {
    dir: PathBuf,
}

/// Whether /etc/netns existed before any test of this process touched it.
fn etc_netns_was_there() -> bool {
    static THERE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *THERE.get_or_init(|| Path::new("/etc/netns").exists())
}

impl ResolvConf {
    fn new(ctr: &Netns, text: &str) -> ResolvConf {
        etc_netns_was_there();
        let dir = Path::new("/etc/netns").join(&ctr.name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("resolv.conf"), text).unwrap();
        ResolvConf { dir }
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        if !etc_netns_was_there() {
            let _ = fs::remove_dir("/etc/netns"); // fails (kept) while another test uses it
        }
    }
}

fn getent(ctr: &Netns, name: &str) -> Option<String> {
    let out = ctr.exec(&["getent", "hosts", name]);
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_string)
}

/// A minimal authoritative DNS server on threads of the test process (sockets made inside a
/// namespace), so the tests need no extra package. Answers A queries for its names (every
/// address), NXDOMAIN for others; over UDP it truncates (TC, no answers) past 512 bytes, or
/// past 1232 when the query has an OPT record; over TCP it sends everything.
struct MiniDns {
    stop: Arc<AtomicBool>,
    queries: Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn mini_reply(q: &[u8], names: &[(String, Vec<Ipv4Addr>)], limit: usize) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut p = 12;
    let mut labels = Vec::new();
    while *q.get(p)? != 0 {
        let l = q[p] as usize;
        labels.push(String::from_utf8_lossy(q.get(p + 1..p + 1 + l)?).to_ascii_lowercase());
        p += 1 + l;
    }
    let qend = p + 5;
    let qtype = u16::from_be_bytes([*q.get(p + 1)?, *q.get(p + 2)?]);
    let name = labels.join(".");
    let found = names.iter().find(|(n, _)| *n == name);
    let mut out = q[..2].to_vec();
    let rcode = if found.is_some() { 0 } else { 3 };
    out.extend_from_slice(&[0x85, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(q.get(12..qend)?);
    let mut n = 0u16;
    if let (Some((_, ips)), 1) = (found, qtype) {
        for ip in ips {
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            out.extend_from_slice(&ip.octets());
            n += 1;
        }
    }
    out[6..8].copy_from_slice(&n.to_be_bytes());
    if out.len() > limit {
        out.truncate(qend);
        out[2] |= 0x02; // TC
        out[6..8].copy_from_slice(&[0, 0]);
    }
    Some(out)
}

impl MiniDns {
    fn start(ns: &Netns, addr: IpAddr, names: Vec<(String, Vec<Ipv4Addr>)>) -> MiniDns {
        let sa = SocketAddr::new(addr, 53);
        let (udp, tcp) =
            ns.in_ns(|| (UdpSocket::bind(sa).unwrap(), std::net::TcpListener::bind(sa).unwrap()));
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let names = Arc::new(names);
        let (st, qs, nm) = (stop.clone(), queries.clone(), names.clone());
        let t_udp = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    qs.fetch_add(1, Ordering::Relaxed);
                    let limit = if n > 12 && buf[11] > 0 { 1232 } else { 512 };
                    if let Some(r) = mini_reply(&buf[..n], &nm, limit) {
                        let _ = udp.send_to(&r, peer);
                    }
                }
            }
        });
        let (st, qs, nm) = (stop.clone(), queries.clone(), names);
        let t_tcp = std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !st.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut len = [0u8; 2];
                while c.read_exact(&mut len).is_ok() {
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if c.read_exact(&mut q).is_err() {
                        break;
                    }
                    qs.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = mini_reply(&q, &nm, 65535) {
                        let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&r);
                        let _ = c.write_all(&framed);
                    }
                }
            }
        });
        MiniDns { stop, queries, threads: vec![t_udp, t_tcp] }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for MiniDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An "outside" namespace reachable from the host namespace over a veth, with an upstream
/// DNS server at 10.99.0.2 (outside.test, www.outside.test, and big.test with 40 addresses).
struct Outside {
    dns: MiniDns,
    _ns: Netns,
}

const UPSTREAM: &str = "10.99.0.2";

fn outside(env: &TestEnv) -> Outside {
    let ns = Netns::new("out");
    env.host().veth_to("vout", &ns, "eth0");
    env.host().ip_ok(&["addr", "add", "10.99.0.1/24", "dev", "vout"]);
    ns.ip_ok(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    let seven = vec![Ipv4Addr::new(192, 0, 2, 7)];
    let big: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    let dns = MiniDns::start(
        &ns,
        UPSTREAM.parse().unwrap(),
        vec![
            ("outside.test".into(), seven.clone()),
            ("www.outside.test".into(), seven),
            ("big.test".into(), big),
        ],
    );
    let up = eventually(Duration::from_secs(5), || {
        env.host()
            .exec(&["dig", "+time=1", "+tries=1", "+short", "@10.99.0.2", "outside.test"])
            .stdout
            .starts_with(b"192.0.2.7")
    });
    assert!(up, "the upstream server does not answer");
    Outside { dns, _ns: ns }
}

fn listening_sockets(ns: &Netns) -> String {
    ns.exec_ok(&["ss", "-Hlnut"])
}

// ---------------------------------------------------------------------------------------
// tests

/// Names and aliases resolve through dig and getent; after DEL they do not; a re-added
/// container's new address is seen at once. CHECK passes; the result points at 127.0.0.11.
#[test]
fn names_aliases_del_and_comeback() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnsnames");
    let _g = DaemonGuard(dns_dir(&env));
    let p = plugin_dir(&env);
    // Upstream: the gateway, where nothing listens (unknown names fail fast, stay inside).
    env.write_conflist(
        "net1",
        &conflist(
            &env,
            "net1",
            "br-dns1",
            "10.89.1.0/24",
            json!({"domainName": "dns.test", "upstreams": ["10.89.1.1"]}),
        ),
    );
    let a = env.container("a");
    let b = env.container("b");
    let (ip_a, ra) = add(&env, &p, "net1", &a, "web", &[]);
    assert_eq!(ra["dns"]["nameservers"], json!(["127.0.0.11"]), "{ra}");
    assert_eq!(ra["dns"]["search"], json!(["dns.test"]), "{ra}");
    let (ip_b, _) = add(&env, &p, "net1", &b, "db", &["database", "Pg"]);
    let ipb = ip_b.to_string();

    for name in ["db", "DB", "database", "pg", "db.dns.test", "Database.DNS.test."] {
        assert_eq!(dig_ok(&a, &[name]), vec![ipb.clone()], "A asks {name}");
    }
    let short_b = &env.container_id(&b, &CniOpts::default())[..12];
    assert_eq!(dig_ok(&a, &[short_b]), vec![ipb.clone()], "short id");
    assert_eq!(dig_ok(&b, &["web"]), vec![ip_a.to_string()]);
    assert_eq!(dig_ok(&a, &["+tcp", "db"]), vec![ipb.clone()], "over TCP");
    assert_eq!(dig_ok(&a, &["-x", &ipb]), vec!["db.dns.test.".to_string()], "PTR");
    assert_eq!(dig_ok(&a, &["AAAA", "db"]), Vec::<String>::new(), "no IPv6: NODATA");

    let _rc = ResolvConf::new(&a, "nameserver 127.0.0.11\nsearch dns.test\n");
    assert_eq!(getent(&a, "db").as_deref(), Some(ipb.as_str()));
    assert_eq!(getent(&a, "database").as_deref(), Some(ipb.as_str()));
    assert_eq!(getent(&a, "pg.dns.test").as_deref(), Some(ipb.as_str()));

    env.cnitool("check", "net1", &a, &opts(&p, "net1", "web", &[])).expect_ok();

    del(&env, &p, "net1", &b, "db");
    for name in ["db", "database"] {
        let d = dig(&a, &[name]);
        assert!(d.answers.is_empty(), "{name} still answers after DEL: {}", d.raw);
        assert_eq!(getent(&a, name), None);
    }
    // B comes back with another address: A sees it at once.
    let c = env.container("c");
    let (_ip_c, _) = add(&env, &p, "net1", &c, "filler", &[]); // takes B's next address
    let (ip_b2, _) = add(&env, &p, "net1", &b, "db", &["database"]);
    assert_ne!(ip_b2, ip_b);
    assert_eq!(dig_ok(&a, &["db"]), vec![ip_b2.to_string()]);
    assert_eq!(getent(&a, "database").as_deref(), Some(ip_b2.to_string().as_str()));
}

/// Three containers with one alias: every answer has all three, in varying order.
#[test]
fn alias_round_robin() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsrr", "br-rr", 2);
    let asker = env.container("q");
    add(&env, &p, "net1", &asker, "asker", &[]);
    let ctrs: Vec<Netns> = (0..3).map(|i| env.container(&format!("t{i}"))).collect();
    let mut ips: Vec<String> = ctrs
        .iter()
        .enumerate()
        .map(|(i, c)| add(&env, &p, "net1", c, &format!("tg{i}"), &["tg-net"]).0.to_string())
        .collect();
    ips.sort();
    let mut orders = std::collections::HashSet::new();
    for _ in 0..20 {
        let got = dig_ok(&asker, &["tg-net"]);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ips, "every answer has all three");
        orders.insert(got);
    }
    assert!(orders.len() > 1, "order never changed: {orders:?}");
}

/// A container on another network gets NXDOMAIN for A's name (and A for its), outside names
/// are forwarded to the network's upstream over UDP and TCP, and truncated answers are
/// completed over TCP.
#[test]
fn networks_isolated_and_forwarding() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnsiso");
    let _g = DaemonGuard(dns_dir(&env));
    let p = plugin_dir(&env);
    let out = outside(&env);
    env.write_conflist(
        "net1",
        &conflist(&env, "net1", "br-n1", "10.89.3.0/24", json!({"upstreams": [UPSTREAM]})),
    );
    env.write_conflist(
        "net2",
        &conflist(&env, "net2", "br-n2", "10.89.4.0/24", json!({"upstreams": [UPSTREAM]})),
    );
    let a = env.container("a");
    let c = env.container("c");
    let (ip_a, _) = add(&env, &p, "net1", &a, "alpha", &["shared-alias"]);
    let (ip_c, _) = add(&env, &p, "net2", &c, "gamma", &[]);
    assert_eq!(dig_ok(&a, &["alpha"]), vec![ip_a.to_string()]);
    assert_eq!(dig_ok(&c, &["gamma"]), vec![ip_c.to_string()]);
    for name in ["alpha", "shared-alias"] {
        assert_eq!(dig(&c, &[name]).status, "NXDOMAIN", "c must not see {name}");
    }
    assert_eq!(dig(&a, &["gamma"]).status, "NXDOMAIN");
    assert_eq!(dig(&c, &["-x", &ip_a.to_string()]).status, "NXDOMAIN");

    let before = out.dns.queries();
    assert_eq!(dig_ok(&c, &["outside.test"]), vec!["192.0.2.7"]);
    assert!(out.dns.queries() > before, "the answer came from the upstream");
    assert_eq!(dig_ok(&a, &["www.outside.test"]), vec!["192.0.2.7"]);
    assert_eq!(dig_ok(&c, &["+tcp", "outside.test"]), vec!["192.0.2.7"]);
    let big = dig_ok(&a, &["+noedns", "big.test"]);
    assert_eq!(big.len(), 40, "truncated answer completed over TCP: {big:?}");
    let big = dig_ok(&a, &["+bufsize=1232", "big.test"]);
    assert_eq!(big.len(), 40);
    // A container on both networks sees both.
    let both = env.container("both");
    add(&env, &p, "net1", &both, "bee", &[]);
    let out = env.cnitool("add", "net2", &both, &opts(&p, "net2", "bee", &[]).ifname("eth1"));
    out.expect_ok();
    assert_eq!(dig_ok(&both, &["alpha"]), vec![ip_a.to_string()]);
    assert_eq!(dig_ok(&both, &["gamma"]), vec![ip_c.to_string()]);
    assert_eq!(dig_ok(&a, &["bee"]).len(), 1);
    assert_eq!(dig_ok(&c, &["bee"]).len(), 1);
    assert_ne!(dig_ok(&a, &["bee"]), dig_ok(&c, &["bee"]), "each network sees bee's address on it");
}

/// Killing the daemon: the next CHECK, or the next ADD, brings it back with every record.
#[test]
fn daemon_restarts_with_every_record() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsrestart", "br-rs", 5);
    let a = env.container("a");
    let b = env.container("b");
    let (ip_a, _) = add(&env, &p, "net1", &a, "a1", &[]);
    let (ip_b, _) = add(&env, &p, "net1", &b, "b1", &["bee"]);
    assert_eq!(dig_ok(&a, &["bee"]), vec![ip_b.to_string()]);

    // A client that keeps one socket (a caching stub resolver) across the restart.
    let stub = a.in_ns(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect("127.0.0.11:53").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    });
    let ask_stub = |id: u8| -> Option<Vec<u8>> {
        // A query for "bee" A, by hand.
        let mut q = vec![0, id, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'b', b'e', b'e', 0, 0, 1, 0, 1];
        q[0] = 0x42;
        stub.send(&q).ok()?;
        let mut buf = [0u8; 512];
        let n = stub.recv(&mut buf).ok()?;
        (n >= 4 && buf[1] == id).then(|| buf[n - 4..n].to_vec())
    };
    let want_b = match ip_b {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        _ => unreachable!(),
    };
    assert_eq!(ask_stub(1), Some(want_b.clone()));
    let ports_before = daemon_status(&env)["listeners"].clone();

    let pid1 = daemon_pid(&env).expect("pid file");
    kill(pid1);
    assert!(eventually(Duration::from_secs(3), || !alive(pid1)));
    assert!(dig(&a, &["bee"]).answers.is_empty(), "nothing answers while the daemon is dead");

    env.cnitool("check", "net1", &a, &opts(&p, "net1", "a1", &[])).expect_ok();
    let pid2 = daemon_pid(&env).expect("pid file after CHECK");
    assert_ne!(pid1, pid2);
    assert!(alive(pid2));
    assert_eq!(dig_ok(&a, &["bee"]), vec![ip_b.to_string()]);
    assert_eq!(dig_ok(&b, &["a1"]), vec![ip_a.to_string()]);
    let mut ports_after = daemon_status(&env)["listeners"].clone();
    let key = |v: &Value| v["netns"].as_str().unwrap_or("").to_string();
    let mut before = ports_before.as_array().unwrap().clone();
    before.sort_by_key(key);
    ports_after.as_array_mut().unwrap().sort_by_key(key);
    assert_eq!(Value::Array(before), ports_after, "the restarted daemon took the same ports back");
    assert_eq!(
        ask_stub(2),
        Some(want_b.clone()),
        "the long-lived client socket still gets answers"
    );

    kill(pid2);
    assert!(eventually(Duration::from_secs(3), || !alive(pid2)));
    let c = env.container("c");
    let (ip_c, _) = add(&env, &p, "net1", &c, "c1", &[]);
    let pid3 = daemon_pid(&env).expect("pid file after ADD");
    assert!(pid3 != pid2 && alive(pid3));
    assert_eq!(dig_ok(&a, &["bee"]), vec![ip_b.to_string()]);
    assert_eq!(dig_ok(&b, &["c1"]), vec![ip_c.to_string()]);
    assert_eq!(dig_ok(&c, &["a1"]), vec![ip_a.to_string()]);
}

/// A container with its own DNS server on port 53 (on its eth0 address, and a socket on
/// 0.0.0.0:53 in another container) keeps it, and 127.0.0.11 still answers.
#[test]
fn container_runs_its_own_dns_server() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsown", "br-own", 6);
    let a = env.container("a");
    let s = env.container("srv");
    let (ip_a, _) = add(&env, &p, "net1", &a, "client", &[]);
    let (ip_s, _) = add(&env, &p, "net1", &s, "server", &[]);
    let own =
        MiniDns::start(&s, ip_s, vec![("own.test".into(), vec![Ipv4Addr::new(192, 0, 2, 99)])]);
    let got = a.exec(&["dig", "+time=1", "+tries=1", "+short", &format!("@{ip_s}"), "own.test"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "192.0.2.99",
        "the container's own server answers on its address"
    );
    assert_eq!(own.queries(), 1);
    assert_eq!(dig_ok(&s, &["client"]), vec![ip_a.to_string()]);
    assert_eq!(dig_ok(&s, &["+tcp", "client"]), vec![ip_a.to_string()]);
    assert_eq!(own.queries(), 1, "127.0.0.11 in its namespace did not reach its own server");

    // A plain server on 0.0.0.0:53 in the other container: it keeps getting its own traffic,
    // while 127.0.0.11:53 still reaches the daemon.
    let sock = a
        .in_ns(|| UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53))))
        .expect("bind 0.0.0.0:53");
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let served = std::thread::spawn(move || {
        let mut n = 0;
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((len, peer)) = sock.recv_from(&mut buf) {
                n += 1;
                let _ = sock.send_to(&buf[..len], peer); // echo: not a DNS answer
            }
        }
        n
    });
    assert_eq!(dig_ok(&a, &["server"]), vec![ip_s.to_string()]);
    let echoed = s.exec(&["dig", "+time=1", "+tries=1", &format!("@{ip_a}"), "x"]);
    stop.store(true, Ordering::Relaxed);
    let n = served.join().unwrap();
    assert_eq!(
        n,
        1,
        "the container's own 0.0.0.0:53 socket got only the query sent to its address ({})",
        String::from_utf8_lossy(&echoed.stdout)
    );
}

/// After the last DEL: no daemon, no pid file, no records, nothing listening, no table.
#[test]
fn last_del_leaves_nothing() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsclean", "br-cl", 7);
    let a = env.container("a");
    let b = env.container("b");
    add(&env, &p, "net1", &a, "a1", &[]);
    add(&env, &p, "net1", &b, "b1", &[]);
    let pid = daemon_pid(&env).unwrap();
    assert!(nft_ruleset(&a).contains("cni_dns"));
    assert!(listening_sockets(&a).contains("127.0.0.11"));
    assert!(
        !listening_sockets(env.host()).contains(":53 "),
        "nothing on port 53 in the host namespace"
    );
    assert!(!nft_ruleset(env.host()).contains("cni_dns"), "no table in the host namespace");

    del(&env, &p, "net1", &a, "a1");
    assert!(alive(pid), "still serving b");
    assert!(!nft_ruleset(&a).contains("cni_dns"), "a's table went with its DEL");
    assert!(!listening_sockets(&a).contains("127.0.0.11"));
    del(&env, &p, "net1", &b, "b1");
    assert!(eventually(Duration::from_secs(3), || !alive(pid)), "daemon exits after the last DEL");
    assert_eq!(files_under(&dns_dir(&env)), Vec::<PathBuf>::new());
    assert!(!nft_ruleset(&b).contains("cni_dns"));
    for ns in [&a, &b, env.host()] {
        assert_eq!(listening_sockets(ns).trim(), "", "listening in {}", ns.name);
    }
    // DEL again (already gone) still succeeds and starts nothing.
    del(&env, &p, "net1", &b, "b1");
    assert!(daemon_pid(&env).is_none());
}

/// Protocol edges: no prevResult, disableDns, GC, STATUS.
#[test]
fn protocol_edges() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnsproto");
    let _g = DaemonGuard(dns_dir(&env));
    let p = plugin_dir(&env);
    let a = env.container("a");
    let bin = env.plugin_path(&Plugins::Ours, "dns-alias");
    let bin = bin.to_str().unwrap();
    let netns = a.path();
    let netns = netns.to_str().unwrap();
    let base = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ctr1"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
        ]
    };

    // ADD without prevResult: code 7 explaining the chaining.
    let out = env.exec_plugin(
        bin,
        &base("ADD"),
        r#"{"cniVersion":"1.0.0","name":"n","type":"dns-alias"}"#,
    );
    assert_eq!(out.error_code(), Some(7), "{out}");
    assert!(out.stdout.contains("chained"), "{out}");

    // disableDns: prevResult passes through, no record, no daemon.
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": netns}],
                      "ips": [{"address": "10.1.0.5/24", "interface": 0}], "dns": {"nameservers": ["10.1.0.1"]}});
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias", "disableDns": true, "prevResult": prev});
    let out = env.exec_plugin(bin, &base("ADD"), &conf.to_string());
    out.expect_ok();
    assert_eq!(out.result()["dns"]["nameservers"], json!(["10.1.0.1"]));
    assert!(files_under(&dns_dir(&env)).is_empty());

    // A record, then GC without it in the valid list removes it (and the daemon goes).
    let conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "dns-alias", "upstreams": ["10.1.0.1"], "prevResult": prev});
    let out = env.exec_plugin(bin, &base("ADD"), &conf.to_string());
    out.expect_ok();
    assert_eq!(out.result()["dns"]["nameservers"], json!(["127.0.0.11"]));
    assert_eq!(dig_ok(&a, &["ctr1"]), vec!["10.1.0.5"]);
    let pid = daemon_pid(&env).unwrap();
    let gc = json!({"cniVersion": "1.1.0", "name": "n", "type": "dns-alias",
                    "cni.dev/valid-attachments": [{"containerID": "other", "ifname": "eth0"}]});
    env.exec_plugin(bin, &[("CNI_COMMAND", "GC")], &gc.to_string()).expect_ok();
    assert!(eventually(Duration::from_secs(3), || !alive(pid)));
    assert!(files_under(&dns_dir(&env)).is_empty(), "{:?}", files_under(&dns_dir(&env)));
    assert!(!nft_ruleset(&a).contains("cni_dns"));

    // STATUS: fine normally, 50 when the state dir cannot be written.
    let st = json!({"cniVersion": "1.1.0", "name": "n", "type": "dns-alias"}).to_string();
    env.exec_plugin(bin, &[("CNI_COMMAND", "STATUS")], &st).expect_ok();
    let blocker = env.dir().join("not-a-dir");
    fs::write(&blocker, "x").unwrap();
    let out = env.exec_plugin(
        bin,
        &[("CNI_COMMAND", "STATUS"), ("CNI_SUITE_STATE_DIR", blocker.to_str().unwrap())],
        &st,
    );
    assert_eq!(out.error_code(), Some(50), "{out}");
    let _ = p;
}

fn daemon_status(env: &TestEnv) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(dns_dir(env).join("control.sock"))
        .expect("control socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&s).write_all(b"status\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("status {line:?}: {e}"))
}

/// A container whose namespace is gone before its DEL: DEL succeeds, its socket closes, its
/// names go, and the others keep working.
#[test]
fn netns_gone_before_del() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsgone", "br-gone", 8);
    let a = env.container("a");
    let b = env.container("b");
    add(&env, &p, "net1", &a, "a1", &[]);
    let (ip_b, _) = add(&env, &p, "net1", &b, "b1", &[]);
    assert_eq!(dig_ok(&a, &["b1"]), vec![ip_b.to_string()]);
    assert_eq!(daemon_status(&env)["listeners"].as_array().unwrap().len(), 2);
    let b_path = b.path();
    let b_opts = opts(&p, "net1", "b1", &[]);
    let b_id = env.container_id(&b, &b_opts);
    drop(b); // ip netns del: the path is gone (our socket keeps the namespace alive until DEL)
    assert!(!b_path.exists());
    // cnitool needs an existing path; call the chain's dns-alias DEL directly, as a runtime
    // would with a vanished namespace.
    let conf = json!({"cniVersion": "1.0.0", "name": "net1", "type": "dns-alias", "upstreams": ["10.89.8.1"]});
    env.exec_plugin(
        p_bin(&env).to_str().unwrap(),
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &b_id),
            ("CNI_NETNS", b_path.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf.to_string(),
    )
    .expect_ok();
    let st = daemon_status(&env);
    assert_eq!(st["listeners"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["records"], json!(1));
    assert!(dig(&a, &["b1"]).answers.is_empty());
    assert_eq!(dig_ok(&a, &["a1"]).len(), 1);
}

fn p_bin(env: &TestEnv) -> PathBuf {
    env.plugin_path(&Plugins::Ours, "dns-alias")
}

// ---------------------------------------------------------------------------------------
// hardening (issue 14) and podman's dnsname (issue 12)

/// A plugin dir with OUR bridge and host-local, dns-alias, and dns-alias again under
/// podman's name `dnsname` (what `make install` puts in PREFIX).
fn our_plugin_dir(env: &TestEnv) -> Plugins {
    let dir = env.dir().join("bin-ours");
    fs::create_dir_all(&dir).unwrap();
    for p in ["bridge", "host-local", "dns-alias"] {
        let _ = std::os::unix::fs::symlink(env.plugin_path(&Plugins::Ours, p), dir.join(p));
    }
    let _ = std::os::unix::fs::symlink(
        env.plugin_path(&Plugins::Ours, "dns-alias"),
        dir.join("dnsname"),
    );
    Plugins::Dirs(vec![dir])
}

fn dns_conf_with_prev(netns: &str, extra: Value) -> String {
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": netns}],
                      "ips": [{"address": "10.1.0.5/24", "interface": 0}]});
    let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "dns-alias",
                          "upstreams": ["10.1.0.1"], "prevResult": prev});
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf.to_string()
}

/// Kills a process by PID when dropped (a daemon the test stopped with SIGSTOP).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            kill(self.0);
        }
    }
}

/// Issue 14.2: on an internal network (bridge `"internal": true`, nothing on dns-alias)
/// local names answer and nothing is forwarded: other names get SERVFAIL and the upstream
/// never sees them (moby#47538). The same setup on a normal network does forward, and an
/// explicit `internal` key on dns-alias works with any bridge.
#[test]
fn internal_network_does_not_forward() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnsint");
    let _g = DaemonGuard(dns_dir(&env));
    let ours = our_plugin_dir(&env);
    let reference = plugin_dir(&env);
    let out = outside(&env);
    // No `upstreams` anywhere: the daemon takes the host's resolv.conf, which (inside the
    // test's host namespace) names the test's upstream.
    let _rc = ResolvConf::new(env.host(), &format!("nameserver {UPSTREAM}\n"));
    env.write_conflist("open", &conflist(&env, "open", "br-open", "10.89.20.0/24", json!({})));
    let mut internal = conflist(&env, "intl", "br-intl", "10.89.21.0/24", json!({}));
    internal["plugins"][0]["internal"] = json!(true);
    env.write_conflist("intl", &internal);
    env.write_conflist(
        "intl2",
        &conflist(&env, "intl2", "br-intl2", "10.89.22.0/24", json!({"internal": true})),
    );

    let o = env.container("o");
    add(&env, &ours, "open", &o, "opener", &[]);
    let before = out.dns.queries();
    assert_eq!(dig_ok(&o, &["outside.test"]), vec!["192.0.2.7"], "a normal network forwards");
    assert!(out.dns.queries() > before);

    let a = env.container("a");
    let b = env.container("b");
    let (_, ra) = add(&env, &ours, "intl", &a, "alpha", &[]);
    assert!(ra["routes"].as_array().is_none_or(|r| r.is_empty()), "internal: no route {ra}");
    let (ip_b, _) = add(&env, &ours, "intl", &b, "beta", &["bee"]);
    let c = env.container("c");
    let (ip_c, _) = add(&env, &reference, "intl2", &c, "gamma", &[]);
    let before = out.dns.queries();
    assert_eq!(dig_ok(&a, &["bee"]), vec![ip_b.to_string()], "local names still answer");
    assert_eq!(dig_ok(&a, &["+tcp", "beta"]), vec![ip_b.to_string()]);
    assert_eq!(dig_ok(&c, &["gamma"]), vec![ip_c.to_string()]);
    for (ctr, how) in [(&a, "+notcp"), (&a, "+tcp"), (&c, "+notcp")] {
        let d = dig(ctr, &[how, "outside.test"]);
        assert_eq!(d.status, "SERVFAIL", "{} {how}: {}", ctr.name, d.raw);
    }
    assert_eq!(dig(&a, &["-x", "192.0.2.7"]).status, "SERVFAIL");
    assert_eq!(out.dns.queries(), before, "a query left an internal network");

    // internal + upstreams on dns-alias contradict each other: code 7, nothing recorded.
    let bin = env.plugin_path(&Plugins::Ours, "dns-alias");
    let x = env.container("x");
    let xp = x.path();
    let out7 = env.exec_plugin(
        bin.to_str().unwrap(),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctrx"),
            ("CNI_NETNS", xp.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
        ],
        &dns_conf_with_prev(xp.to_str().unwrap(), json!({"internal": true})),
    );
    assert_eq!(out7.error_code(), Some(7), "{out7}");
    assert!(out7.stdout.contains("upstreams"), "{out7}");
}

/// Issue 14.3: ~200 idle TCP connections from one container used to take every daemon
/// thread and block DNS over TCP for all networks. Now TCP costs no thread: other
/// containers (and the same one) still get TCP answers, one container holds at most its
/// per-client share of connections, and idle connections are closed.
#[test]
fn idle_tcp_connections_do_not_block_dns() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnstcp", "br-tcp1", 23);
    env.write_conflist(
        "net2",
        &conflist(&env, "net2", "br-tcp2", "10.89.24.0/24", json!({"upstreams": ["10.89.24.1"]})),
    );
    let a = env.container("a");
    let b = env.container("b");
    let c = env.container("c");
    let (ip_a, _) = add(&env, &p, "net1", &a, "hog", &[]);
    let (ip_b, _) = add(&env, &p, "net1", &b, "bee", &[]);
    let (ip_c, _) = add(&env, &p, "net2", &c, "sea", &[]);
    let idle: Vec<std::net::TcpStream> = a.in_ns(|| {
        (0..200)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(
                    &"127.0.0.11:53".parse().unwrap(),
                    Duration::from_secs(2),
                )
                .ok()
            })
            .collect()
    });
    assert!(idle.len() >= 150, "only {} connections opened", idle.len());
    assert_eq!(dig_ok(&c, &["+tcp", "sea"]), vec![ip_c.to_string()], "another network, TCP");
    assert_eq!(dig_ok(&b, &["+tcp", "hog"]), vec![ip_a.to_string()], "same network, TCP");
    assert_eq!(dig_ok(&a, &["+tcp", "bee"]), vec![ip_b.to_string()], "the hog itself, TCP");
    let st = daemon_status(&env);
    let open = st["tcpConnections"].as_u64().unwrap();
    assert!(open <= 32 + 2, "one container holds {open} connections: {st}");
    // Idle connections are closed by the daemon (10 s without a query).
    assert!(
        eventually(Duration::from_secs(20), || daemon_status(&env)["tcpConnections"] == json!(0)),
        "idle TCP connections stay open: {}",
        daemon_status(&env)
    );
    drop(idle);
}

/// Issue 14.11: a client that keeps its source port across DEL and re-ADD of its namespace
/// used to time out for good (a conntrack entry of the old redirect). It gets answers.
#[test]
fn client_keeping_its_port_survives_del_and_readd() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsct", "br-ct", 25);
    let a = env.container("a");
    let b = env.container("b");
    add(&env, &p, "net1", &a, "a1", &[]);
    let (ip_b, _) = add(&env, &p, "net1", &b, "b1", &["bee"]);
    let want_b = match ip_b {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        _ => unreachable!(),
    };
    let stub = a.in_ns(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect("127.0.0.11:53").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    });
    let ask = |id: u8| -> Option<Vec<u8>> {
        let q = vec![0x42, id, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'b', b'e', b'e', 0, 0, 1, 0, 1];
        stub.send(&q).ok()?;
        let mut buf = [0u8; 512];
        let n = stub.recv(&mut buf).ok()?;
        (n >= 4 && buf[1] == id).then(|| buf[n - 4..n].to_vec())
    };
    assert_eq!(ask(1), Some(want_b.clone()));
    del(&env, &p, "net1", &a, "a1");
    // The client keeps asking while its namespace has no DNS.
    assert_eq!(ask(2), None);
    assert_eq!(ask(3), None);
    add(&env, &p, "net1", &a, "a1", &[]);
    let answered = (4..7).any(|id| ask(id) == Some(want_b.clone()));
    assert!(answered, "the client that kept its source port gets no answer after re-ADD");
}

/// Issue 14.12: a stopped (SIGSTOP) daemon used to hold every ADD and DEL for 60 s and then
/// fail them with code 11. It is replaced: ADD and DEL succeed, names resolve, and the
/// stopped process (our daemon, by its pid file) is gone.
#[test]
fn stopped_daemon_is_replaced() {
    if !require_root() {
        return;
    }
    let (env, _g, p) = one_network("dnsstop", "br-stop", 26);
    let a = env.container("a");
    let b = env.container("b");
    let (ip_a, _) = add(&env, &p, "net1", &a, "a1", &[]);
    let old = daemon_pid(&env).expect("pid file");
    let _stopped = KillOnDrop(old);
    // SAFETY: SIGSTOP to the daemon this test started (read from its own pid file).
    assert_eq!(unsafe { libc::kill(old, libc::SIGSTOP) }, 0);

    let (ip_b, _) = add(&env, &p, "net1", &b, "b1", &[]);
    let new = daemon_pid(&env).expect("pid file after ADD");
    assert_ne!(new, old, "a new daemon serves");
    assert!(eventually(Duration::from_secs(3), || !alive(old)), "the stopped daemon is gone");
    assert_eq!(dig_ok(&b, &["a1"]), vec![ip_a.to_string()]);
    assert_eq!(dig_ok(&a, &["b1"]), vec![ip_b.to_string()]);

    // Stopped again: DEL replaces it too, and the other container keeps its DNS.
    // SAFETY: as above, for the new daemon.
    assert_eq!(unsafe { libc::kill(new, libc::SIGSTOP) }, 0);
    let _stopped2 = KillOnDrop(new);
    del(&env, &p, "net1", &b, "b1");
    assert!(eventually(Duration::from_secs(3), || !alive(new)));
    assert!(!nft_ruleset(&b).contains("cni_dns"), "b's redirect went with its DEL");
    assert_eq!(dig_ok(&a, &["a1"]), vec![ip_a.to_string()]);
    assert!(dig(&a, &["b1"]).answers.is_empty());
}

/// Issue 14.10: an alias of `-` and a domainName of `..` are refused (code 7 naming the
/// field and the value), and a bad CNI_NETNS is code 3 (no such path) or 4 (not a network
/// namespace), not 112. Nothing is recorded.
#[test]
fn bad_names_and_netns_are_refused() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnsbad");
    let _g = DaemonGuard(dns_dir(&env));
    let bin = env.plugin_path(&Plugins::Ours, "dns-alias");
    let bin = bin.to_str().unwrap();
    let a = env.container("a");
    let ap = a.path();
    let ap = ap.to_str().unwrap();
    let add_env = |netns: &'static str| {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr1"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let ap_static: &'static str = Box::leak(ap.to_string().into_boxed_str());
    let cases = [
        (json!({"runtimeConfig": {"aliases": ["-"]}}), "runtimeConfig.aliases", "\"-\""),
        (json!({"runtimeConfig": {"aliases": ["ok", "-x"]}}), "runtimeConfig.aliases", "\"-x\""),
        (json!({"domainName": ".."}), "domainName", "\"..\""),
        (json!({"domainName": "a..b"}), "domainName", "\"a..b\""),
        (json!({"args": {"cni": {"name": "web-"}}}), "args.cni.name", "\"web-\""),
    ];
    for (extra, field, value) in cases {
        let out = env.exec_plugin(bin, &add_env(ap_static), &dns_conf_with_prev(ap, extra.clone()));
        assert_eq!(out.error_code(), Some(7), "{extra}: {out}");
        let msg = out.error_msg();
        assert!(msg.contains(field) && msg.contains(value), "{extra}: {out}");
    }
    let missing: &'static str =
        Box::leak(env.dir().join("no-such-netns").display().to_string().into_boxed_str());
    let out = env.exec_plugin(bin, &add_env(missing), &dns_conf_with_prev(missing, json!({})));
    assert_eq!(out.error_code(), Some(3), "{out}");
    let file = env.dir().join("not-a-netns");
    fs::write(&file, "x").unwrap();
    let file: &'static str = Box::leak(file.display().to_string().into_boxed_str());
    let out = env.exec_plugin(bin, &add_env(file), &dns_conf_with_prev(file, json!({})));
    assert_eq!(out.error_code(), Some(4), "{out}");
    assert!(out.stdout.contains("CNI_NETNS"), "{out}");
    assert!(files_under(&dns_dir(&env)).is_empty(), "{:?}", files_under(&dns_dir(&env)));
    assert!(daemon_pid(&env).is_none());
}

/// Issue 12: podman's `network create` (CNI backend, podman 4.3) ends its conflist with
/// `{"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": true}}` when
/// a `dnsname` binary exists, and passes aliases as a map of network to names. Our binary
/// installed under that name serves it: container names, `--network-alias`, the domain.
#[test]
fn podman_dnsname_config() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnsname");
    let _g = DaemonGuard(dns_dir(&env));
    let p = our_plugin_dir(&env);
    // What podman 4.3 writes for `podman network create podnet` (libnetwork/cni).
    let conf = json!({
        "cniVersion": "0.4.0",
        "name": "podnet",
        "plugins": [
            {"type": "bridge", "bridge": "cni-podman9", "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": "10.89.27.0/24", "gateway": "10.89.27.1"}]],
                      "dataDir": env.ipam_dir()}},
            {"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": true}}
        ]
    });
    env.write_conflist("podnet", &conf);
    let web = env.container("web");
    let cli = env.container("cli");
    let (ip_web, rw) = add(&env, &p, "podnet", &web, "web", &["webalias"]);
    assert_eq!(rw["dns"]["nameservers"], json!(["127.0.0.11"]), "{rw}");
    assert_eq!(rw["dns"]["search"], json!(["dns.podman"]), "{rw}");
    add(&env, &p, "podnet", &cli, "cli", &[]);
    for name in ["web", "webalias", "web.dns.podman", "webalias.dns.podman"] {
        assert_eq!(dig_ok(&cli, &[name]), vec![ip_web.to_string()], "{name}");
    }
    env.cnitool("check", "podnet", &web, &opts(&p, "podnet", "web", &["webalias"])).expect_ok();
    del(&env, &p, "podnet", &web, "web");
    assert!(dig(&cli, &["webalias"]).answers.is_empty());
    del(&env, &p, "podnet", &cli, "cli");
    assert!(eventually(Duration::from_secs(3), || daemon_pid(&env).is_none()));
    assert_eq!(files_under(&dns_dir(&env)), Vec::<PathBuf>::new());
}

/// Issue 12 with the real runtime: `podman network create` (podman 4.3, CNI backend) adds
/// its dnsname entry because our binary is installed under that name, and containers on
/// that network resolve each other by name, by `--network-alias` and under `dns.podman`.
/// Everything podman does stays in the test's private namespaces and directories (see
/// `common/runtime.rs`). firewall and tuning, which podman's list names too, are ours when
/// built, else the reference ones.
#[test]
fn podman_network_create_with_dnsname() {
    use runtime::{
        busybox_rootfs, require_runtime, runtime_usable, tar_dir, CgroupGuard, Holder, Podman,
        PodmanRemoveAll,
    };
    if !require_runtime("podman", &["podman", "runc", "conmon", "unshare", "nsenter", "tar"]) {
        return;
    }
    let env = TestEnv::new("dnspodman");
    let _g = DaemonGuard(dns_dir(&env));
    let bin = env.dir().join("cni-bin");
    fs::create_dir_all(&bin).unwrap();
    let link = |src: PathBuf, name: &str| std::os::unix::fs::symlink(src, bin.join(name)).unwrap();
    for p in ["bridge", "portmap", "host-local"] {
        link(env.plugin_path(&Plugins::Ours, p), p);
    }
    link(env.plugin_path(&Plugins::Ours, "dns-alias"), "dnsname");
    for p in ["firewall", "tuning", "loopback"] {
        let ours = env.our_plugin_dir().join(p);
        link(if ours.is_file() { ours } else { Path::new(REFERENCE_PLUGIN_DIR).join(p) }, p);
    }
    let cg = CgroupGuard::new("dnspodman");
    let var_lib_containers = env.dir().join("var-lib-containers");
    fs::create_dir_all(&var_lib_containers).unwrap();
    let holder = Holder::start(&env, &[(&var_lib_containers, "/var/lib/containers")]);
    let pm = Podman::new(&env, &holder, &bin, &cg);
    let podman = |args: &[&str]| pm.run(args);
    let _remove_all = PodmanRemoveAll(&pm);
    let info = podman(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    if !runtime_usable("podman", &info) {
        return;
    }
    assert_eq!(info.stdout.trim(), "cni", "{info}");

    // docker network create podnet
    podman(&["network", "create", "--subnet", "10.89.28.0/24", "podnet"]).expect_ok();
    let written = fs::read_to_string(Podman::net_dir(&env).join("podnet.conflist")).unwrap();
    let written: Value = serde_json::from_str(&written).unwrap();
    let dnsname: Vec<&Value> = written["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == json!("dnsname"))
        .collect();
    assert_eq!(dnsname.len(), 1, "podman did not add dnsname: {written}");
    assert_eq!(dnsname[0]["domainName"], json!("dns.podman"), "{written}");

    let rootfs = env.dir().join("rootfs");
    busybox_rootfs(&rootfs, "hello");
    let tarball = env.dir().join("rootfs.tar");
    tar_dir(&rootfs, &tarball);
    let image = "localhost/cni-suite-busybox:latest";
    podman(&["import", tarball.to_str().unwrap(), image]).expect_ok();
    let run = |args: &[&str]| pm.run_container(args);
    run(&[
        "-d",
        "--name",
        "web",
        "--network",
        "podnet",
        "--network-alias",
        "webalias",
        image,
        "sleep",
        "3600",
    ])
    .expect_ok();
    let web_ip = pm.ip_of("web");
    assert!(web_ip.starts_with("10.89.28."), "{web_ip}");
    for name in ["web", "webalias", "web.dns.podman", "webalias.dns.podman"] {
        let out = run(&["--rm", "--network", "podnet", image, "nslookup", name, "127.0.0.11"]);
        let answered = out.ok() && out.stdout.lines().any(|l| l.contains(&web_ip));
        assert!(answered, "nslookup {name} 127.0.0.11 did not answer {web_ip}:\n{out}");
    }
    // The container's resolv.conf names 127.0.0.11 and the search domain.
    let out = run(&["--rm", "--network", "podnet", image, "cat", "/etc/resolv.conf"]);
    assert!(
        out.ok()
            && out.stdout.contains("nameserver 127.0.0.11")
            && out.stdout.contains("dns.podman"),
        "{out}"
    );

    podman(&["rm", "--force", "--time", "0", "web"]).expect_ok();
    podman(&["network", "rm", "podnet"]).expect_ok();
    assert!(
        eventually(Duration::from_secs(5), || daemon_pid(&env).is_none()),
        "the DNS daemon outlived the last container"
    );
    assert_eq!(files_under(&dns_dir(&env)), Vec::<PathBuf>::new());
}

/// Issue 14.3, forwards: with an upstream that never answers, at most 1024 forwarded queries
/// are in flight (Docker's cap); the rest get SERVFAIL at once instead of piling up, and
/// local names keep answering during the flood.
#[test]
fn forwards_in_flight_are_capped() {
    if !require_root() {
        return;
    }
    let env = TestEnv::new("dnscap");
    let _g = DaemonGuard(dns_dir(&env));
    let p = plugin_dir(&env);
    // A silent upstream: a socket in another namespace that is never read.
    let out = Netns::new("sink");
    env.host().veth_to("vsink", &out, "eth0");
    env.host().ip_ok(&["addr", "add", "10.99.1.1/24", "dev", "vsink"]);
    out.ip_ok(&["addr", "add", "10.99.1.2/24", "dev", "eth0"]);
    let _sink = out.in_ns(|| UdpSocket::bind("10.99.1.2:53").unwrap());
    env.write_conflist(
        "net1",
        &conflist(&env, "net1", "br-cap", "10.89.29.0/24", json!({"upstreams": ["10.99.1.2"]})),
    );
    let a = env.container("a");
    let (ip_a, _) = add(&env, &p, "net1", &a, "a1", &[]);
    let client = a.in_ns(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect("127.0.0.11:53").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s
    });
    let total = 1500u16;
    for id in 0..total {
        // "x<id>.outside.test" A: not ours, so forwarded
        let name = format!("x{id}");
        let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.push(name.len() as u8);
        q.extend_from_slice(name.as_bytes());
        q.extend_from_slice(b"\x07outside\x04test\x00\x00\x01\x00\x01");
        client.send(&q).unwrap();
    }
    // The daemon reads them as fast as they come: well within the 2 s an attempt may take,
    // so more than 1024 are due at once and the ones over the cap are refused.
    let mut peak = 0;
    let refused = eventually(Duration::from_secs(10), || {
        let st = daemon_status(&env);
        peak = peak.max(st["pending"].as_u64().unwrap());
        st["forwardsRefused"].as_u64().unwrap_or(0) > 0
    });
    assert!(refused, "no query was refused: {}", daemon_status(&env));
    assert!(peak <= 1024, "{peak} forwards in flight");
    // Those got their SERVFAIL without waiting for the upstream.
    let mut servfail = 0;
    let mut buf = [0u8; 512];
    while let Ok(n) = client.recv(&mut buf) {
        if n >= 4 && buf[3] & 0x0f == 2 {
            servfail += 1;
        }
    }
    assert!(servfail > 0, "no SERVFAIL reached the client");
    assert_eq!(dig_ok(&a, &["a1"]), vec![ip_a.to_string()], "local names answer meanwhile");
}
