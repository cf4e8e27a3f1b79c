//! Running another plugin (an IPAM plugin named by `ipam.type`) the way a runtime would:
//! same environment and stdin, result parsed in the request's version.

use crate::dispatch::Request;
use crate::env::Command;
use crate::error::CniError;
use crate::result::CniResult;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

/// Finds `plugin` (a bare file name) on CNI_PATH.
pub fn find_plugin(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::bad_value(
            "ipam.type",
            format!("{plugin:?}"),
            "must be a plugin file name",
        ));
    }
    path.iter().map(|dir| dir.join(plugin)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::config(format!(
            "failed to find plugin {plugin:?} in path {:?}",
            path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()
        ))
    })
}

/// Runs `plugin` with `command`. Returns the parsed result for ADD, None otherwise.
pub fn delegate(
    plugin: &str,
    command: Command,
    req: &Request,
) -> Result<Option<CniResult>, CniError> {
    let exe = find_plugin(plugin, &req.env.path)?;
    let args: Vec<String> = req.env.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let path: Vec<String> = req.env.path.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = Process::new(&exe);
    cmd.env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &req.env.container_id)
        .env("CNI_IFNAME", &req.env.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &req.env.netns {
        Some(ns) => cmd.env("CNI_NETNS", ns),
        None => cmd.env_remove("CNI_NETNS"),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| CniError::io(format!("running IPAM plugin {}: {e}", exe.display())))?;
    if let Some(mut sin) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe; its reply says why.
        let _ = sin.write_all(&req.stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("waiting for IPAM plugin {}: {e}", exe.display())))?;
    let stdout: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) if out.stdout.iter().all(u8::is_ascii_whitespace) => serde_json::Value::Null,
        Err(e) => {
            return Err(CniError::decode(format!(
                "IPAM plugin {plugin} printed invalid JSON: {e}"
            )));
        }
    };
    if !out.status.success() {
        return Err(CniError::from_json(&stdout).unwrap_or_else(|| {
            CniError::internal(format!(
                "IPAM plugin {plugin} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }));
    }
    if command != Command::Add {
        return Ok(None);
    }
    CniResult::from_version(&stdout, &req.conf.cni_version)
        .map(Some)
        .map_err(|e| CniError::decode(format!("decoding result of IPAM plugin {plugin}: {e}")))
}
