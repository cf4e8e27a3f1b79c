//! Spec versions this suite speaks, and comparisons between them.

use crate::error::CniError;

/// Every result version the reference plugins accept, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] =
    &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version this suite implements and reports by default.
pub const CURRENT_VERSION: &str = "1.1.0";

/// A parsed "major.minor.patch".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().unwrap_or("0").parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Validates a cniVersion string against the supported list (error code 1 otherwise).
pub fn check_supported(v: &str) -> Result<Version, CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        if let Some(parsed) = Version::parse(v) {
            return Ok(parsed);
        }
    }
    Err(CniError::incompatible(format!(
        "incompatible CNI versions: config is {v:?}, plugin supports {SUPPORTED_VERSIONS:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_follows_semver() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("1.0.0").unwrap() < Version::parse("1.1.0").unwrap());
        assert_eq!(Version::parse("1.1"), Some(Version(1, 1, 0)));
        assert_eq!(Version::parse("x.1.0"), None);
    }

    #[test]
    fn unsupported_version_is_code_1_naming_it() {
        let e = check_supported("0.5.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("0.5.0"), "{}", e.msg);
        assert!(check_supported("1.1.0").is_ok());
    }
}
