//! What the kernel test files share: a private network namespace per test (`ip netns add
//! <prefix>-<pid>-<n>`, deleted on drop, also when the test panics) and the root check.
//! Nothing here touches the machine's own namespace.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use netlink::{Handle, Netns};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private network namespace, deleted on drop.
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
}

impl TestNs {
    /// A namespace named `<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status().expect("running ip");
        assert!(status.success(), "ip netns add {name} failed");
        // From here on, Drop removes it even if opening fails.
        let mut ns = TestNs { name, ns: Netns::current().unwrap() };
        ns.ns = Netns::open(format!("/var/run/netns/{}", ns.name)).expect("opening test netns");
        ns
    }

    pub fn handle(&self) -> Handle {
        Handle::new_in(&self.ns).expect("opening handle in test netns")
    }

    /// Runs `tool args...` inside the namespace and returns stdout (for cross-checking with
    /// iproute2's `ip` and `tc`).
    pub fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, tool])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip args...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        self.run("ip", args)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Kernel tests need root and iproute2. Without them a test prints a message and passes,
/// except under CI (`CI` or `CNI_SUITE_REQUIRE_ROOT` set), where it fails.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = if !root {
        "kernel tests need root"
    } else if Command::new("ip").arg("-V").output().is_err() {
        "kernel tests need iproute2 (ip)"
    } else {
        return true;
    };
    cni::prereq::skip(missing)
}

/// Returns from the test when [`can_run`] says it cannot run.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::can_run() {
            return;
        }
    };
}
