//! static: the addresses, routes and DNS the config (or the runtime) names. No state.

use crate::config;
use cni::{CniError, CniResult, Request};

pub fn add(req: &Request) -> Result<CniResult, CniError> {
    let c = config::static_config(req)?;
    Ok(CniResult { interfaces: Vec::new(), ips: c.addresses, routes: c.routes, dns: c.dns })
}

/// Nothing to release.
pub fn del(_req: &Request) -> Result<(), CniError> {
    Ok(())
}

/// The config still parses, and when a prevResult is given it carries every configured address.
pub fn check(req: &Request) -> Result<(), CniError> {
    let c = config::static_config(req)?;
    if let Some(prev) = &req.prev {
        for a in &c.addresses {
            if !prev.ips.iter().any(|p| p.address == a.address) {
                return Err(CniError::unknown_container(format!(
                    "static address {} is not in prevResult of container {}",
                    a.address, req.env.container_id
                )));
            }
        }
    }
    Ok(())
}
