//! Carrying out a plan in the container's namespace (the calling thread must be in it):
//! reading what is there now, and applying steps with undo.

use crate::plan::{LinkNow, Observed, Step};
use cni::{code, CniError};
use netlink::{format_mac, Handle};

/// Reads the sysctls at `paths` in the current thread's namespace. `strict`: a missing one is
/// a config error naming it; otherwise it is left out.
fn read_sysctls(paths: &[(&str, &str)], strict: bool) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for (key, path) in paths {
        match netlink::sysctl_get(path) {
            Ok(v) => out.push((path.to_string(), v)),
            Err(e) if strict && e.is_not_found() => {
                return Err(CniError::config(format!(
                "sysctl {key:?}: there is no /proc/sys/{path} in the container's network namespace"
            )))
            }
            Err(e) if strict => {
                return Err(CniError::new(code::KERNEL, format!("sysctl {key:?}: {e}")))
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// What the interface and the named sysctls look like now (current thread's namespace).
pub fn observe(
    h: &mut Handle,
    ifname: &str,
    sysctls: &[(&str, &str)],
    strict: bool,
) -> Result<(Observed, Option<u32>), CniError> {
    let link = h.link_by_name(ifname)?;
    let sysctls = read_sysctls(sysctls, strict)?;
    Ok((Observed { link: link.as_ref().map(LinkNow::from), sysctls }, link.map(|l| l.index)))
}

/// A sysctl path as sysctl(8) names it: dotted, unless a component has a dot of its own.
fn sysctl_name(path: &str) -> String {
    if path.split('/').any(|c| c.contains('.')) {
        path.to_string()
    } else {
        path.replace('/', ".")
    }
}

/// Runs one step (current thread inside the container's namespace). Values the kernel
/// refuses are config errors naming the key and value.
pub fn run_step(h: &mut Handle, index: u32, ifname: &str, step: &Step) -> Result<(), CniError> {
    let refused = |key: &str, value: String, e: netlink::Error| {
        if matches!(e.errno(), Some(libc::EINVAL | libc::ERANGE | libc::EADDRNOTAVAIL)) {
            CniError::bad_value(key, value, format!("the kernel refused it for {ifname}: {e}"))
        } else {
            CniError::new(code::KERNEL, format!("setting {key} {value} on {ifname}: {e}"))
        }
    };
    match step {
        Step::Sysctl { path, to, .. } => netlink::sysctl_set(path, to).map_err(|e| {
            let key = format!("sysctl {}", sysctl_name(path));
            let reason = match e.errno() {
                Some(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
                None => e.to_string(),
            };
            match e.errno() {
                Some(libc::EINVAL | libc::ERANGE) => CniError::bad_value(
                    &key,
                    format!("{to:?}"),
                    format!("the kernel refused the value: {reason}"),
                ),
                Some(libc::EPERM | libc::EACCES | libc::EROFS) => CniError::bad_value(
                    &key,
                    format!("{to:?}"),
                    format!("cannot be written inside a container's network namespace: {reason}"),
                ),
                _ => CniError::new(code::KERNEL, format!("{key}: {e}")),
            }
        }),
        Step::Mtu { to, .. } => {
            h.set_mtu(index, *to).map_err(|e| refused("mtu", to.to_string(), e))
        }
        Step::Mac { to, .. } => {
            h.set_mac(index, *to).map_err(|e| refused("mac", format_mac(to), e))
        }
        Step::Promisc { to, .. } => {
            h.set_promisc(index, *to).map_err(|e| refused("promisc", to.to_string(), e))
        }
        Step::Allmulti { to, .. } => {
            h.set_allmulti(index, *to).map_err(|e| refused("allmulti", to.to_string(), e))
        }
        Step::TxQLen { to, .. } => {
            h.set_txqueuelen(index, *to).map_err(|e| refused("txQLen", to.to_string(), e))
        }
    }
}

/// Applies `steps` in order; on a failure undoes the ones done, newest first.
pub fn apply(h: &mut Handle, index: u32, ifname: &str, steps: &[Step]) -> Result<(), CniError> {
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = run_step(h, index, ifname, step) {
            for done in steps[..i].iter().rev() {
                if let Err(u) = run_step(h, index, ifname, &done.reversed()) {
                    eprintln!("tuning: undoing {done:?} after a failed ADD: {}", u.msg);
                }
            }
            return Err(e);
        }
    }
    Ok(())
}
