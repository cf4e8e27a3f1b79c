//! Deciding, without touching the kernel: the token bucket filters for each direction, the
//! ifb's name, and what CHECK expects to find.

use crate::config::{BandwidthConf, Limit};
use cni::CniError;
use netlink::{Psched, Qdisc, Tbf, TBF_HANDLE};
use sha2::{Digest, Sha512};
use std::time::Duration;

/// How long a packet may wait in a tbf queue: the queue holds this much traffic plus the
/// burst. The reference's fixed value.
pub const LATENCY: Duration = Duration::from_millis(25);

/// The reference's ifb name: "bwp" + the first 12 hex digits of SHA-512(network name +
/// container ID). Using the same name lets DEL remove an ifb the reference made before the
/// binaries were replaced.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::new().chain_update(network).chain_update(container_id).finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("bwp{hex}")
}

/// What ADD builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// tbf at the root of the host-side veth: shapes traffic to the container.
    pub ingress: Option<Tbf>,
    /// tbf on the ifb that the host-side veth's incoming traffic is redirected to: shapes
    /// traffic from the container.
    pub egress: Option<(String, Tbf)>,
}

fn tbf(dir: &str, l: Limit, psched: &Psched) -> Result<Tbf, CniError> {
    Tbf::new(l.rate / 8, l.burst / 8, LATENCY, psched).map_err(|why| {
        CniError::config(format!("invalid {dir}Rate {} / {dir}Burst {}: {why}", l.rate, l.burst))
    })
}

pub fn plan(
    conf: &BandwidthConf,
    network: &str,
    container_id: &str,
    psched: &Psched,
) -> Result<Plan, CniError> {
    let ingress = conf.ingress.map(|l| tbf("ingress", l, psched)).transpose()?;
    let egress = match conf.egress {
        None => None,
        Some(l) => Some((ifb_name(network, container_id), tbf("egress", l, psched)?)),
    };
    Ok(Plan { ingress, egress })
}

/// What the kernel has, for CHECK.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Root qdisc of the host-side veth.
    pub host_root: Option<Qdisc>,
    /// Whether the host-side veth has an ingress qdisc.
    pub host_ingress: bool,
    /// Links the host-side veth's ingress filters redirect to.
    pub redirects: Vec<u32>,
    /// The ifb's index and its root qdisc, when the ifb exists.
    pub ifb: Option<(u32, Option<Qdisc>)>,
}

fn tbf_difference(what: &str, want: &Tbf, root: Option<&Qdisc>) -> Option<String> {
    match root {
        Some(q) if q.kind == "tbf" && q.handle == TBF_HANDLE && q.tbf.as_ref() == Some(want) => {
            None
        }
        Some(q) if q.kind == "tbf" => {
            Some(format!("{what} has a tbf with {:?}, expected {want:?}", q.tbf))
        }
        Some(q) => Some(format!("{what} has root qdisc {}, expected a tbf", q.kind)),
        None => Some(format!("{what} has no root qdisc, expected a tbf")),
    }
}

/// CHECK: the differences between the plan and the kernel.
pub fn differences(plan: &Plan, host_veth: &str, now: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(want) = &plan.ingress {
        out.extend(tbf_difference(host_veth, want, now.host_root.as_ref()));
    }
    if let Some((name, want)) = &plan.egress {
        match &now.ifb {
            None => out.push(format!("ifb {name} does not exist")),
            Some((index, root)) => {
                out.extend(tbf_difference(name, want, root.as_ref()));
                if !now.host_ingress {
                    out.push(format!("{host_veth} has no ingress qdisc"));
                } else if !now.redirects.contains(index) {
                    out.push(format!("{host_veth}'s ingress is not redirected to {name}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::TC_H_ROOT;

    #[test]
    fn ifb_name_is_the_references() {
        // sha512("mynet" + "ctr1"), first 12 hex digits, as the reference computes it.
        let name = ifb_name("mynet", "ctr1");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("bwp"));
        let full: String =
            Sha512::digest(b"mynetctr1").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&name[3..], &full[..12]);
        assert_ne!(ifb_name("mynet", "ctr2"), name);
    }

    #[test]
    fn plan_builds_a_tbf_per_direction() {
        let conf = BandwidthConf {
            ingress: Some(Limit { rate: 8_000_000, burst: 80_000 }),
            egress: Some(Limit { rate: 16_000_000, burst: 160_000 }),
        };
        let p = plan(&conf, "n", "c", &Psched::MODERN).unwrap();
        assert_eq!(p.ingress, Some(Tbf { rate: 1_000_000, buffer: 156_250, limit: 35_000 }));
        let (name, e) = p.egress.unwrap();
        assert_eq!(name, ifb_name("n", "c"));
        assert_eq!(e, Tbf { rate: 2_000_000, buffer: 156_250, limit: 70_000 });
        let only_in = BandwidthConf { egress: None, ..conf };
        assert_eq!(plan(&only_in, "n", "c", &Psched::MODERN).unwrap().egress, None);
    }

    fn tbf_qdisc(index: u32, tbf: Tbf) -> Qdisc {
        Qdisc { index, handle: TBF_HANDLE, parent: TC_H_ROOT, kind: "tbf".into(), tbf: Some(tbf) }
    }

    #[test]
    fn check_compares_qdiscs_ifb_and_redirect() {
        let conf = BandwidthConf {
            ingress: Some(Limit { rate: 8_000_000, burst: 80_000 }),
            egress: Some(Limit { rate: 8_000_000, burst: 80_000 }),
        };
        let p = plan(&conf, "n", "c", &Psched::MODERN).unwrap();
        let t = p.ingress.unwrap();
        let good = Observed {
            host_root: Some(tbf_qdisc(5, t)),
            host_ingress: true,
            redirects: vec![9],
            ifb: Some((9, Some(tbf_qdisc(9, t)))),
        };
        assert!(differences(&p, "veth1", &good).is_empty());
        let mut slower = good.clone();
        slower.host_root = Some(tbf_qdisc(5, Tbf { rate: 1, ..t }));
        assert_eq!(differences(&p, "veth1", &slower).len(), 1);
        let gone = Observed::default();
        let d = differences(&p, "veth1", &gone);
        assert!(d.iter().any(|d| d.contains("veth1 has no root qdisc")), "{d:?}");
        assert!(d.iter().any(|d| d.contains("does not exist")), "{d:?}");
        let mut unredirected = good;
        unredirected.redirects.clear();
        assert!(differences(&p, "veth1", &unredirected)[0].contains("not redirected"));
    }
}
