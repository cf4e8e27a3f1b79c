//! The CNI_* environment variables, read and validated per verb.

use crate::error::CniError;
use std::path::PathBuf;

/// The verbs of spec 1.1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND",
                    format!(
                    "unknown command {other:?} (expected ADD, DEL, CHECK, VERSION, GC or STATUS)"
                ),
                ))
            }
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// Validated environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    /// Empty for VERSION, GC and STATUS.
    pub container_id: String,
    /// None when not given (allowed for DEL: the namespace may already be gone).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS as ordered key/value pairs.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    /// The value of CNI_ARGS key `key` (e.g. "IP", "MAC", "K8S_POD_NAME").
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Reads the environment through `get` (std::env::var in production, a map in tests).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match get("CNI_COMMAND") {
            Some(c) if !c.is_empty() => Command::parse(&c)?,
            _ => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND",
                    "required environment variable is missing",
                ))
            }
        };
        let present = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut missing = Vec::new();
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        if needs_container {
            for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
                if present(var).is_none() {
                    missing.push(var);
                }
            }
            if command != Command::Del && present("CNI_NETNS").is_none() {
                missing.push("CNI_NETNS");
            }
        }
        if command != Command::Version && get("CNI_PATH").is_none() {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                crate::error::code::INVALID_ENV,
                format!("required environment variables missing: {}", missing.join(", ")),
            ));
        }
        let container_id = present("CNI_CONTAINERID").unwrap_or_default();
        if needs_container {
            validate_container_id(&container_id)?;
        }
        let ifname = present("CNI_IFNAME").unwrap_or_default();
        if needs_container {
            validate_ifname(&ifname)?;
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(Env {
            command,
            container_id,
            netns: present("CNI_NETNS").map(PathBuf::from),
            ifname,
            args,
            path,
        })
    }
}

/// Container ids: alphanumeric first, then alphanumerics, `_`, `.`, `-` (spec rule).
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            "CNI_CONTAINERID",
            format!(
                "invalid container id {id:?}: must start with a letter or digit, then letters, \
                digits, '_', '.' or '-'"
            ),
        ))
    }
}

/// CNI_IFNAME must be a valid Linux interface name (code 4 naming the variable otherwise).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    match crate::names::ifname_problem(name) {
        Some(why) => Err(CniError::invalid_env(
            "CNI_IFNAME",
            format!("invalid interface name {name:?}: {why}"),
        )),
        None => Ok(()),
    }
}

/// CNI_ARGS: "K1=V1;K2=V2". A pair without '=' is an error naming CNI_ARGS.
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(CniError::invalid_env(
                    "CNI_ARGS",
                    format!("invalid pair {pair:?}: expected KEY=VALUE"),
                ))
            }
        }
    }
    Ok(out)
}
