//! The CNI error reply: a well-known code, a short message naming what was wrong,
//! and optional details. Printed on stdout with a non-zero exit status.

use std::fmt;

/// Well-known error codes from the CNI spec (0-99), plus the suite's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Suite-specific: a published host port is already taken (Docker's "port is already
    /// allocated").
    pub const PORT_ALLOCATED: u32 = 110;
    /// Suite-specific: an IPAM range has no free address, or a requested address is taken.
    pub const ADDRESS_UNAVAILABLE: u32 = 111;
    /// Suite-specific: the kernel refused an operation (netlink, firewall).
    pub const KERNEL: u32 = 112;
    pub const INTERNAL: u32 = 999;
}

/// An error a plugin returns to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    /// Code 1: the config's cniVersion (or the verb at that version) is not supported.
    pub fn incompatible(msg: impl Into<String>) -> Self {
        Self::new(code::INCOMPATIBLE_VERSION, msg)
    }
    /// Code 2: a field this plugin does not support; the message names key and value.
    pub fn unsupported_field(key: &str, value: impl fmt::Display) -> Self {
        Self::new(code::UNSUPPORTED_FIELD, format!("unsupported field {key:?} with value {value}"))
    }
    /// Code 3.
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(code::UNKNOWN_CONTAINER, msg)
    }
    /// Code 4: names the environment variable.
    pub fn invalid_env(var: &str, why: impl fmt::Display) -> Self {
        Self::new(code::INVALID_ENV, format!("{var}: {why}"))
    }
    /// Code 5.
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(code::IO_FAILURE, msg)
    }
    /// Code 6.
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODE_FAILURE, msg)
    }
    /// Code 7: invalid network configuration; callers name the key and value.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }
    /// Code 7 with the conventional "key: value: why" shape.
    pub fn bad_value(key: &str, value: impl fmt::Display, why: impl fmt::Display) -> Self {
        Self::new(code::INVALID_CONFIG, format!("invalid {key} {value}: {why}"))
    }
    /// Code 11.
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN, msg)
    }
    /// Code 50 (STATUS): the plugin cannot serve ADDs right now.
    pub fn not_available(msg: impl Into<String>) -> Self {
        Self::new(code::NOT_AVAILABLE, msg)
    }
    /// Code 999.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// The JSON object printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("cniVersion".into(), cni_version.into());
        obj.insert("code".into(), self.code.into());
        obj.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            obj.insert("details".into(), self.details.clone().into());
        }
        serde_json::Value::Object(obj)
    }

    /// Parses an error reply printed by another plugin (delegated IPAM).
    pub fn from_json(v: &serde_json::Value) -> Option<CniError> {
        let code = v.get("code")?.as_u64()? as u32;
        let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("").to_string();
        let details = v.get("details").and_then(|m| m.as_str()).unwrap_or("").to_string();
        Some(CniError { code, msg, details })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

pub type CniResultOf<T> = Result<T, CniError>;
