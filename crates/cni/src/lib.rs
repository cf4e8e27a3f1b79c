//! The CNI protocol, spec 1.1.0: environment and stdin parsing, config and result types,
//! conversion between result versions, the error reply, verb dispatch and IPAM delegation.
//!
//! A plugin implements [`Plugin`] and calls [`run`] from `main`. Everything except `run`
//! returns values instead of exiting, so it is tested without spawning processes.

pub mod config;
pub mod delegate;
pub mod detach;
pub mod dispatch;
pub mod env;
pub mod error;
pub mod json;
pub mod names;
pub mod plan;
pub mod prereq;
pub mod result;
pub mod store;
pub mod trace;
pub mod version;

pub use config::{Attachment, NetConf};
pub use dispatch::{dispatch, Plugin, Reply, Request};
pub use env::{Command, Env};
pub use error::{code, CniError};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};

use std::io::{IsTerminal, Read, Write};
use std::sync::OnceLock;

/// cniVersion the panic hook puts in its error reply.
static REPLY_VERSION: OnceLock<String> = OnceLock::new();

/// Installs a panic hook that still prints a code-999 CNI error on stdout (the release profile
/// aborts on panic, so this is the runtime's only clue).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        };
        let location =
            info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let version = REPLY_VERSION.get().map(String::as_str).unwrap_or(version::CURRENT_VERSION);
        let err = CniError::internal(format!("internal error: {msg}")).with_details(location);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", err.to_json(version));
        let _ = out.flush();
    }));
}

/// The suite's version, which is every plugin's version.
pub const SUITE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a plugin run without CNI_COMMAND prints on stderr, in the reference plugins' form:
/// nerdctl reads `CNI firewall plugin v1.1.0` from there to decide whether `ingressPolicy`
/// is supported.
pub fn about_text(plugin_name: &str) -> String {
    format!(
        "CNI {plugin_name} plugin v{SUITE_VERSION}\nCNI protocol versions supported: {}\n",
        version::SUPPORTED_VERSIONS.join(", ")
    )
}

/// The name this binary was invoked as (`dns-alias` installed as `dnsname` says `dnsname`).
fn invoked_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Runs a plugin as a process: reads env and stdin, dispatches, prints, exits.
pub fn run(plugin: &dyn Plugin) -> ! {
    trace::mark("main");
    install_panic_hook();
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) {
        // Not called by a runtime: say what this is, like the reference plugins, and succeed.
        let _ = std::io::stderr().write_all(about_text(&invoked_name()).as_bytes());
        std::process::exit(0);
    }
    let mut stdin = Vec::new();
    let input = std::io::stdin();
    // VERSION may be called without stdin; do not hang on a terminal.
    if !input.is_terminal() {
        let _ = input.lock().read_to_end(&mut stdin);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&stdin) {
        if let Some(ver) = v.get("cniVersion").and_then(|v| v.as_str()) {
            let _ = REPLY_VERSION.set(ver.to_string());
        }
    }
    let reply = dispatch(plugin, &|k| std::env::var(k).ok(), &stdin);
    let mut out = std::io::stdout().lock();
    if !reply.stdout.is_empty() {
        let _ = writeln!(out, "{}", reply.stdout);
    }
    let _ = out.flush();
    trace::mark("exit");
    std::process::exit(reply.exit_code);
}

#[cfg(test)]
mod conformance;
