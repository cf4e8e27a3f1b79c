//! Verb dispatch: reads the environment and stdin, checks them against the spec, calls the
//! plugin, and renders its answer. Returns a `Reply` instead of exiting, so every path is
//! unit-tested; `crate::run` is the thin wrapper that prints and exits.

use crate::config::{Attachment, NetConf};
use crate::env::{Command, Env};
use crate::error::CniError;
use crate::result::{version_reply, CniResult};
use crate::version::{check_supported, Version, CURRENT_VERSION};
use serde_json::Value;

/// Everything a plugin needs to serve one call.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Env,
    pub conf: NetConf,
    /// The whole stdin document (plugin-specific keys are read from here).
    pub raw: Value,
    /// stdin bytes exactly as received, handed unchanged to a delegated IPAM plugin.
    pub stdin: Vec<u8>,
    /// prevResult in canonical form (chained plugins, CHECK and DEL).
    pub prev: Option<CniResult>,
}

impl Request {
    /// Deserializes the plugin's own config type; errors are code 7 naming the key.
    pub fn plugin_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        crate::config::parse_plugin_config(&self.raw)
    }
    pub fn version(&self) -> Version {
        Version::parse(&self.conf.cni_version).unwrap_or(Version::V1_1_0)
    }
    /// prevResult for CHECK, which needs it to know what ADD made (code 7 without it).
    pub fn prev_for_check(&self) -> Result<&CniResult, CniError> {
        self.prev
            .as_ref()
            .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of ADD)"))
    }
    /// CNI_NETNS, or code 4 when a verb needs it and it is absent.
    pub fn netns(&self) -> Result<&std::path::Path, CniError> {
        self.env.netns.as_deref().ok_or_else(|| {
            CniError::invalid_env("CNI_NETNS", "required environment variable is missing")
        })
    }
}

/// A plugin: one method per verb. GC and STATUS default to "nothing to do / available".
pub trait Plugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn gc(&self, _req: &Request, _valid: &[Attachment]) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// What the process prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub exit_code: i32,
    pub stdout: String,
}

impl Reply {
    fn ok(v: Option<Value>) -> Reply {
        Reply { exit_code: 0, stdout: v.map(|v| v.to_string()).unwrap_or_default() }
    }
    fn error(e: &CniError, version: &str) -> Reply {
        Reply { exit_code: 1, stdout: e.to_json(version).to_string() }
    }
    /// The parsed error, if this reply is one.
    pub fn error_value(&self) -> Option<CniError> {
        if self.exit_code == 0 {
            return None;
        }
        serde_json::from_str(&self.stdout).ok().as_ref().and_then(CniError::from_json)
    }
}

/// The cniVersion an error reply should carry: the config's when it is readable and supported.
fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(str::to_string))
        .filter(|v| check_supported(v).is_ok())
        .unwrap_or_else(|| CURRENT_VERSION.to_string())
}

/// Parses and validates one invocation, then calls the plugin.
pub fn dispatch(
    plugin: &dyn Plugin,
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Reply {
    let version = reply_version(stdin);
    match dispatch_inner(plugin, get_env, stdin) {
        Ok(v) => Reply::ok(v),
        Err(e) => Reply::error(&e, &version),
    }
}

fn dispatch_inner(
    plugin: &dyn Plugin,
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let env = Env::from_lookup(get_env)?;
    if env.command == Command::Version {
        // stdin is optional for VERSION; it may name the version the caller speaks.
        let asked = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_else(|| CURRENT_VERSION.to_string());
        return Ok(Some(version_reply(&asked)));
    }
    let request = build_request(env, stdin)?;
    let req = &request;
    match req.env.command {
        Command::Add => {
            let result = plugin.add(req)?;
            Ok(Some(result.to_version(&req.conf.cni_version)?))
        }
        Command::Del => plugin.del(req).map(|_| None),
        Command::Check => plugin.check(req).map(|_| None),
        Command::Gc => {
            let valid = req.conf.valid_attachments()?;
            plugin.gc(req, &valid).map(|_| None)
        }
        Command::Status => plugin.status(req).map(|_| None),
        Command::Version => unreachable!("handled above"),
    }
}

/// A request built exactly as [`dispatch`] builds one from a runtime's environment, for unit
/// tests and fuzz targets: `command` (CNI_COMMAND), the container, its interface and CNI_ARGS
/// as given, CNI_NETNS `/var/run/netns/x`, and a CNI_PATH where nothing is found (no
/// delegated plugin can run).
pub fn request_for(
    command: &str,
    container_id: &str,
    ifname: &str,
    cni_args: &str,
    stdin: &[u8],
) -> Result<Request, CniError> {
    let env = Env::from_lookup(&|k| match k {
        "CNI_COMMAND" => Some(command.into()),
        "CNI_CONTAINERID" => Some(container_id.into()),
        "CNI_NETNS" => Some("/var/run/netns/x".into()),
        "CNI_IFNAME" => Some(ifname.into()),
        "CNI_PATH" => Some("/nonexistent-cni-path".into()),
        "CNI_ARGS" => Some(cni_args.into()),
        _ => None,
    })?;
    build_request(env, stdin)
}

/// Parses stdin into a Request and applies the spec's version gates.
pub fn build_request(env: Env, stdin: &[u8]) -> Result<Request, CniError> {
    let (mut conf, raw) = NetConf::parse(stdin)?;
    if conf.cni_version.is_empty() {
        // The spec's oldest configs had no cniVersion; runtimes treat them as 0.1.0.
        conf.cni_version = "0.1.0".to_string();
    }
    let v = check_supported(&conf.cni_version)?;
    let needs = match env.command {
        Command::Check => Some(Version::V0_4_0),
        Command::Gc | Command::Status => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = needs {
        if v < min {
            return Err(CniError::incompatible(format!(
                "{} is not supported by cniVersion {} (needs {} or later)",
                env.command.as_str(),
                conf.cni_version,
                min
            )));
        }
    }
    conf.validate_name()?;
    let prev = match env.command {
        Command::Add | Command::Check | Command::Del => conf.prev_result()?,
        _ => None,
    };
    Ok(Request { env, conf, raw, stdin: stdin.to_vec(), prev })
}
