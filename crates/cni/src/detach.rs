//! Work a plugin must start but that the runtime need not wait for.
//!
//! A runtime waits for a plugin until it has exited and closed its stdout. Some kernel work
//! is correct to finish after the reply, but slow for reasons that change nothing the
//! runtime could observe: a veth delete blocks in `rcu_barrier()` (13-21 ms here) after the
//! link is already gone, and a conntrack dump walks every bucket of the kernel's global
//! conntrack hash (3.3 ms here with 262,144 buckets) however few entries the namespace has.
//! [`run_detached`] runs such work in a forked child that keeps nothing of the runtime's: its
//! own session, stdin/stdout/stderr on /dev/null, every other fd closed. The parent returns at
//! once; the child is reparented and reaped when the plugin exits.
//!
//! A plain `fork` (no exec) costs the parent 0.06-0.07 ms here, where `Command::spawn`
//! waits for the child's exec (0.1-0.2 ms), and needs no helper mode in every binary. The
//! child keeps the calling thread's network namespace, so the work
//! runs where the caller was. glibc makes malloc usable after fork, and the plugins call this
//! from their only thread.

/// In a freshly forked child: leaves the caller's session and process group, points
/// stdin/stdout/stderr at /dev/null and closes every other fd, so that nothing the runtime
/// waits on (its pipe to our stdout, its terminal, its lock files) stays open here.
pub fn leave_caller() {
    // SAFETY: plain syscalls on fds this process owns; failures leave fds as they were,
    // which only means the runtime's pipe may stay open a little longer.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            // Kernels before 5.9: close what /proc says is open.
            close_listed_fds();
        }
    }
}

fn close_listed_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> =
        dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    for fd in fds.into_iter().filter(|fd| *fd > 2) {
        // SAFETY: closing an fd of this process; the directory's own fd may already be gone.
        unsafe { libc::close(fd) };
    }
}

/// Runs `work` in a detached child (see the module comment) and returns at once. When the
/// child cannot be forked, runs `work` here instead: the work must happen either way.
pub fn run_detached(work: impl FnOnce()) {
    // SAFETY: fork in a single-threaded plugin; the child only leaves the caller and runs
    // `work`, then ends with _exit so that no atexit handler or buffered stdio of the
    // parent runs twice.
    match unsafe { libc::fork() } {
        0 => {
            leave_caller();
            work();
            unsafe { libc::_exit(0) };
        }
        pid if pid > 0 => {}
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::time::{Duration, Instant};

    /// The parent sees EOF on a pipe the child inherited as soon as the child has left the
    /// caller, while the work is still running: a runtime reading our stdout is not held.
    #[test]
    fn detached_work_does_not_hold_the_callers_pipe() {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 into a two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
        let (read_end, write_end) = (fds[0], fds[1]);
        let marker = std::env::temp_dir().join(format!("cni-detach-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let m = marker.clone();
        // The test harness runs tests on threads; fork copies only this one, which is fine
        // for a child that sleeps and writes a file.
        run_detached(move || {
            std::thread::sleep(Duration::from_millis(1000));
            let _ = std::fs::write(&m, b"done");
        });
        // SAFETY: our write end; the child's copy is closed by leave_caller.
        unsafe { libc::close(write_end) };
        // SAFETY: the read end is ours alone from here on.
        let mut reader = unsafe { std::fs::File::from_raw_fd(read_end) };
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).unwrap();
        // What matters is the order, not a time: EOF came while the work was still asleep.
        assert!(!marker.exists(), "the caller got EOF only after the work had finished");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !marker.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(marker.exists(), "the detached work never ran");
        let _ = std::fs::remove_file(&marker);
    }
}
