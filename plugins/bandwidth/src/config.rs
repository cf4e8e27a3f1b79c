//! bandwidth configuration: `ingressRate`/`ingressBurst`/`egressRate`/`egressBurst` (bits per
//! second and bits) from the config, or from the `bandwidth` capability when the config has
//! none of them (the reference's rule). Go clients send the capability with their field names
//! (`{"IngressRate":..}`): keys match in any case.

use cni::{CniError, Request};
use serde::Deserialize;
use serde_json::Value;

/// The four keys, as the config and the capability spell them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
}

impl RawEntry {
    fn any(&self) -> bool {
        self.ingress_rate.is_some()
            || self.ingress_burst.is_some()
            || self.egress_rate.is_some()
            || self.egress_burst.is_some()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
    shaped_subnets: Option<Value>,
    unshaped_subnets: Option<Value>,
}

/// A limit in one direction: bits per second and a bucket of bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u64,
    pub burst: u64,
}

/// The shaping a container gets. `ingress` is traffic to the container, `egress` from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthConf {
    pub ingress: Option<Limit>,
    pub egress: Option<Limit>,
}

impl BandwidthConf {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    pub fn from_request(req: &Request) -> Result<BandwidthConf, CniError> {
        let raw: RawConf = req.plugin_config()?;
        for (key, v) in
            [("shapedSubnets", &raw.shaped_subnets), ("unshapedSubnets", &raw.unshaped_subnets)]
        {
            if let Some(v) = v.as_ref().filter(|v| !v.is_null()) {
                return Err(CniError::unsupported_field(key, v).with_details(
                    "the reference bandwidth plugin had this key only in v1.5.x (removed in \
                    v1.6.0); shaping here applies to all of the container's traffic",
                ));
            }
        }
        let top = RawEntry {
            ingress_rate: raw.ingress_rate,
            ingress_burst: raw.ingress_burst,
            egress_rate: raw.egress_rate,
            egress_burst: raw.egress_burst,
        };
        let (entry, prefix) = if top.any() {
            (top, "")
        } else {
            match req.conf.runtime("bandwidth") {
                None => (RawEntry::default(), ""),
                Some(v) => (
                    cni::json::from_value::<RawEntry>(v.clone()).map_err(|e| {
                        CniError::config(format!("invalid runtimeConfig.bandwidth.{e}"))
                    })?,
                    "runtimeConfig.bandwidth.",
                ),
            }
        };
        Ok(BandwidthConf {
            ingress: limit(prefix, "ingress", entry.ingress_rate, entry.ingress_burst)?,
            egress: limit(prefix, "egress", entry.egress_rate, entry.egress_burst)?,
        })
    }
}

/// One direction's rate and burst: both or neither (0 is "not set", as in the reference).
fn limit(
    prefix: &str,
    dir: &str,
    rate: Option<u64>,
    burst: Option<u64>,
) -> Result<Option<Limit>, CniError> {
    let (rate, burst) = (rate.unwrap_or(0), burst.unwrap_or(0));
    let rate_key = format!("{prefix}{dir}Rate");
    let burst_key = format!("{prefix}{dir}Burst");
    match (rate, burst) {
        (0, 0) => Ok(None),
        (r, 0) => Err(CniError::bad_value(&rate_key, r, format!("{burst_key} must be set too"))),
        (0, b) => Err(CniError::bad_value(&burst_key, b, format!("{rate_key} must be set too"))),
        (r, _) if r < 8 => Err(CniError::bad_value(
            &rate_key,
            r,
            "the rate is in bits per second and must be at least 8 (tc counts bytes)",
        )),
        (_, b) if b / 8 >= u32::MAX as u64 => {
            Err(CniError::bad_value(&burst_key, b, "the burst cannot be more than 4 GiB"))
        }
        (rate, burst) => Ok(Some(Limit { rate, burst })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(conf: Value) -> Request {
        cni::dispatch::request_for("ADD", "ctr1", "eth0", "", conf.to_string().as_bytes()).unwrap()
    }

    fn base() -> Value {
        json!({"cniVersion": "1.0.0", "name": "n", "type": "bandwidth"})
    }

    #[test]
    fn config_keys() {
        let mut c = base();
        c["ingressRate"] = json!(8_000_000);
        c["ingressBurst"] = json!(80_000);
        let conf = BandwidthConf::from_request(&request(c)).unwrap();
        assert_eq!(conf.ingress, Some(Limit { rate: 8_000_000, burst: 80_000 }));
        assert_eq!(conf.egress, None);
    }

    #[test]
    fn go_style_capability_keys() {
        let mut c = base();
        c["runtimeConfig"] = json!({"bandwidth": {"IngressRate": 1_000_000, "IngressBurst": 4_294_967_295u64,
            "EgressRate": 2_000_000, "EgressBurst": 4_294_967_295u64}});
        let conf = BandwidthConf::from_request(&request(c)).unwrap();
        assert_eq!(conf.ingress, Some(Limit { rate: 1_000_000, burst: 4_294_967_295 }));
        assert_eq!(conf.egress, Some(Limit { rate: 2_000_000, burst: 4_294_967_295 }));
    }

    #[test]
    fn config_keys_win_over_the_capability() {
        let mut c = base();
        c["egressRate"] = json!(16);
        c["egressBurst"] = json!(1600);
        c["runtimeConfig"] = json!({"bandwidth": {"ingressRate": 1000, "ingressBurst": 1000}});
        let conf = BandwidthConf::from_request(&request(c)).unwrap();
        assert_eq!(conf.ingress, None);
        assert_eq!(conf.egress, Some(Limit { rate: 16, burst: 1600 }));
    }

    #[test]
    fn half_set_directions_and_bad_values_name_the_key() {
        let cases = [
            (json!({"ingressRate": 1000}), "ingressRate 1000", 7),
            (json!({"egressBurst": 1000}), "egressBurst 1000", 7),
            (json!({"ingressRate": 4, "ingressBurst": 100}), "ingressRate 4", 7),
            (
                json!({"ingressRate": 1000, "ingressBurst": 40_000_000_000u64}),
                "ingressBurst 40000000000",
                7,
            ),
            (json!({"ingressRate": -5, "ingressBurst": 100}), "ingressRate", 7),
            (
                json!({"runtimeConfig": {"bandwidth": {"EgressRate": 1000}}}),
                "runtimeConfig.bandwidth.egressRate 1000",
                7,
            ),
            (json!({"shapedSubnets": ["10.0.0.0/8"]}), "shapedSubnets", 2),
            (json!({"unshapedSubnets": ["10.0.0.0/8"]}), "unshapedSubnets", 2),
        ];
        for (extra, needle, code) in cases {
            let mut c = base();
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            let e = BandwidthConf::from_request(&request(c)).unwrap_err();
            assert_eq!(e.code, code, "{extra}: {e:?}");
            assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
        }
    }

    #[test]
    fn zero_means_unlimited() {
        let mut c = base();
        c["ingressRate"] = json!(0);
        c["ingressBurst"] = json!(0);
        assert!(BandwidthConf::from_request(&request(c)).unwrap().is_empty());
        assert!(BandwidthConf::from_request(&request(base())).unwrap().is_empty());
    }
}
