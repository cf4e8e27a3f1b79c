//! What the plans of the interface plugins (bridge, macvlan, host) share: who an ADD is for,
//! what a repeated or crashed ADD finds, the refusals that go with them, and the parts of
//! the result and of CHECK they all derive the same way. Plain values, unit-tested here.

use crate::dispatch::Request;
use crate::error::CniError;
use crate::result::{Dns, Route};
use ipnet::IpNet;

/// Who an ADD (or CHECK) is for: the network, the container and its interface, and the
/// namespace it is in. (Not [`crate::Attachment`], the (container, interface) pair GC keeps.)
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// CNI_NETNS as given (the result's `sandbox`).
    pub netns: String,
}

impl Attachment {
    /// The attachment a request is for; CNI_NETNS missing is code 4.
    pub fn of(req: &Request) -> Result<Attachment, CniError> {
        Ok(Attachment {
            network: req.conf.name.clone(),
            container_id: req.env.container_id.clone(),
            ifname: req.env.ifname.clone(),
            netns: req.netns()?.display().to_string(),
        })
    }

    /// The owner tag ([`crate::names::owner_tag`]) of what this attachment creates.
    pub fn owner_tag(&self) -> String {
        crate::names::owner_tag(&self.network, &self.container_id, &self.ifname)
    }

    /// The code-7 error of a repeated ADD.
    pub fn already_attached(&self) -> CniError {
        CniError::config(format!(
            "container {} is already attached to network {} as {} (ADD already succeeded; DEL it \
            before adding it again)",
            self.container_id, self.network, self.ifname
        ))
    }
}

/// The code-7 error of an interface the container already has.
pub fn ifname_taken(ifname: &str) -> CniError {
    CniError::config(format!("container already has an interface named {ifname:?} (CNI_IFNAME)"))
}

/// What an ADD does about an existing record of the same attachment.
#[derive(Debug, Clone, PartialEq)]
pub enum Existing {
    /// No record: a new attachment.
    None,
    /// The attachment exists and is live: a repeated ADD, refused before IPAM runs (so it
    /// cannot release the live lease).
    Live,
    /// A record left by an ADD that died (`pending`), or of an attachment whose interface is
    /// gone from the container: its leftovers are removed, then the ADD goes on.
    Stale,
}

impl Existing {
    /// Classifies the attachment's record (`Some(pending)`, or None without one) against
    /// whether the container has an interface named CNI_IFNAME now.
    pub fn of(record_pending: Option<bool>, interface_exists: bool) -> Existing {
        match record_pending {
            None => Existing::None,
            Some(false) if interface_exists => Existing::Live,
            Some(_) => Existing::Stale,
        }
    }
}

/// The destination of a default route of one family: 0.0.0.0/0 or ::/0.
pub fn default_dst(v4: bool) -> IpNet {
    if v4 {
        "0.0.0.0/0".parse().expect("literal")
    } else {
        "::/0".parse().expect("literal")
    }
}

/// What CHECK finds missing when `routes` (the plan's) ask for a default route of a family
/// and the container has none leaving through `ifname` (`has_v4`, `has_v6`).
pub fn missing_default_routes(
    routes: &[Route],
    has_v4: bool,
    has_v6: bool,
    ifname: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for (v4, has) in [(true, has_v4), (false, has_v6)] {
        if routes.iter().any(|r| r.dst == default_dst(v4)) && !has {
            out.push(format!(
                "container has no default {} route via {ifname}",
                if v4 { "IPv4" } else { "IPv6" }
            ));
        }
    }
    out
}

/// The result's DNS: what IPAM returned, else the config's `dns`.
pub fn result_dns(from_ipam: &Dns, configured: Option<&Dns>) -> Dns {
    if from_ipam.is_empty() {
        configured.cloned().unwrap_or_default()
    } else {
        from_ipam.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att() -> Attachment {
        Attachment {
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
        }
    }

    #[test]
    fn repeated_and_crashed_adds() {
        assert_eq!(Existing::of(None, true), Existing::None);
        assert_eq!(Existing::of(Some(false), true), Existing::Live);
        assert_eq!(Existing::of(Some(true), true), Existing::Stale);
        assert_eq!(Existing::of(Some(false), false), Existing::Stale);
        let e = att().already_attached();
        assert!(e.code == 7 && e.msg.contains("already attached") && e.msg.contains("c1"));
        let e = ifname_taken("eth0");
        assert!(e.code == 7 && e.msg.contains("\"eth0\"") && e.msg.contains("CNI_IFNAME"));
        assert_eq!(att().owner_tag(), crate::names::owner_tag("net", "c1", "eth0"));
    }

    #[test]
    fn default_routes_checked_per_family() {
        let routes = vec![Route::new(default_dst(true), None)];
        assert!(missing_default_routes(&routes, true, false, "eth0").is_empty());
        let d = missing_default_routes(&routes, false, true, "eth0");
        assert_eq!(d, ["container has no default IPv4 route via eth0"]);
        assert!(missing_default_routes(&[], false, false, "eth0").is_empty());
    }

    #[test]
    fn ipam_dns_wins_over_the_configured_one() {
        let conf = Dns { nameservers: vec!["10.0.0.53".into()], ..Default::default() };
        let ipam = Dns { nameservers: vec!["10.1.0.53".into()], ..Default::default() };
        assert_eq!(result_dns(&ipam, Some(&conf)), ipam);
        assert_eq!(result_dns(&Dns::default(), Some(&conf)), conf);
        assert_eq!(result_dns(&Dns::default(), None), Dns::default());
    }
}
