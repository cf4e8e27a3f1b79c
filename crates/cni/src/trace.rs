//! Opt-in timing marks for benchmarks: with `CNI_SUITE_TRACE=1` in the environment, every
//! [`mark`] prints `cni-trace <mark> <CLOCK_MONOTONIC ns>` on stderr (runtimes ignore a
//! successful plugin's stderr). The benchmark subtracts consecutive marks to show where a
//! call's time goes. Off, a mark costs one cached environment lookup.

use std::io::Write;
use std::sync::OnceLock;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CNI_SUITE_TRACE").is_some_and(|v| v == "1"))
}

/// Monotonic time in nanoseconds (the clock `Instant` uses, so a parent can compare).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Prints one mark when tracing is on.
pub fn mark(name: &str) {
    if enabled() {
        let _ = writeln!(std::io::stderr().lock(), "cni-trace {name} {}", now_ns());
    }
}
