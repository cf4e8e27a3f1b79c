//! Deciding, without touching the kernel: which changes an ADD makes (given what the
//! interface and the sysctls look like now), what DEL puts back, and what CHECK expects.

use crate::config::TuningConf;
use netlink::format_mac;
use serde::{Deserialize, Serialize};

/// What the container's interface and sysctls look like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The interface's settings; None when it does not exist.
    pub link: Option<LinkNow>,
    /// (path under /proc/sys, value) of every sysctl the config or the record names.
    pub sysctls: Vec<(String, String)>,
}

/// The tunable settings of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkNow {
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub promisc: bool,
    pub allmulti: bool,
    pub txqlen: u32,
}

impl From<&netlink::Link> for LinkNow {
    fn from(l: &netlink::Link) -> LinkNow {
        LinkNow {
            mac: l.mac,
            mtu: l.mtu,
            promisc: l.promisc,
            allmulti: l.allmulti,
            txqlen: l.txqlen,
        }
    }
}

impl Observed {
    fn sysctl(&self, path: &str) -> Option<&str> {
        self.sysctls.iter().find(|(p, _)| p == path).map(|(_, v)| v.as_str())
    }
}

/// One change to the container's namespace, with the value it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Sysctl { path: String, from: String, to: String },
    Mtu { from: u32, to: u32 },
    Mac { from: [u8; 6], to: [u8; 6] },
    Promisc { from: bool, to: bool },
    Allmulti { from: bool, to: bool },
    TxQLen { from: u32, to: u32 },
}

impl Step {
    /// The step that undoes this one.
    pub fn reversed(&self) -> Step {
        match self.clone() {
            Step::Sysctl { path, from, to } => Step::Sysctl { path, from: to, to: from },
            Step::Mtu { from, to } => Step::Mtu { from: to, to: from },
            Step::Mac { from, to } => Step::Mac { from: to, to: from },
            Step::Promisc { from, to } => Step::Promisc { from: to, to: from },
            Step::Allmulti { from, to } => Step::Allmulti { from: to, to: from },
            Step::TxQLen { from, to } => Step::TxQLen { from: to, to: from },
        }
    }
}

/// A sysctl ADD changed: DEL writes `original` back while the value is still `applied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSysctl {
    pub path: String,
    pub original: String,
    pub applied: String,
}

/// What ADD changed, as it was before: the state record DEL restores from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Originals {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<SavedSysctl>,
}

impl Originals {
    /// The values `steps` replace.
    pub fn of(steps: &[Step]) -> Originals {
        let mut o = Originals::default();
        for s in steps {
            match s {
                Step::Sysctl { path, from, to } => o.sysctls.push(SavedSysctl {
                    path: path.clone(),
                    original: from.clone(),
                    applied: to.clone(),
                }),
                Step::Mtu { from, .. } => o.mtu = Some(*from),
                Step::Mac { from, .. } => o.mac = Some(format_mac(from)),
                Step::Promisc { from, .. } => o.promisc = Some(*from),
                Step::Allmulti { from, .. } => o.allmulti = Some(*from),
                Step::TxQLen { from, .. } => o.txqlen = Some(*from),
            }
        }
        o
    }

    /// These originals on top of an earlier ADD's for the same attachment: a value the earlier
    /// ADD already changed keeps its first original (the one from before any tuning).
    pub fn merged_onto(self, earlier: &Originals) -> Originals {
        let mut sysctls = earlier.sysctls.clone();
        for s in self.sysctls {
            match sysctls.iter_mut().find(|e| e.path == s.path) {
                Some(e) => e.applied = s.applied,
                None => sysctls.push(s),
            }
        }
        Originals {
            mac: earlier.mac.clone().or(self.mac),
            mtu: earlier.mtu.or(self.mtu),
            promisc: earlier.promisc.or(self.promisc),
            allmulti: earlier.allmulti.or(self.allmulti),
            txqlen: earlier.txqlen.or(self.txqlen),
            sysctls,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Originals::default()
    }
}

/// Values compared the way the kernel prints them back: "1024 65000" reads as "1024\t65000".
pub fn same_sysctl_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The changes ADD makes: sysctls first, then the interface (as the reference orders them).
/// Settings that already have the wanted value are left out (nothing to change or restore).
pub fn add_steps(conf: &TuningConf, now: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    for s in &conf.sysctls {
        let from = now.sysctl(&s.path).unwrap_or_default().to_string();
        if !same_sysctl_value(&from, &s.value) {
            steps.push(Step::Sysctl { path: s.path.clone(), from, to: s.value.clone() });
        }
    }
    let Some(link) = now.link else { return steps };
    let wanted = LinkWanted {
        mac: conf.mac,
        // The reference only ever turns promiscuous mode on.
        promisc: conf.promisc.then_some(true),
        mtu: conf.mtu,
        allmulti: conf.allmulti,
        txqlen: conf.txqlen,
    };
    steps.extend(link_steps(&link, &wanted));
    steps
}

/// Interface settings to reach; None leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default)]
struct LinkWanted {
    mac: Option<[u8; 6]>,
    promisc: Option<bool>,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    txqlen: Option<u32>,
}

/// The steps from `link` to `wanted`, for each setting that differs: MAC, promiscuous mode,
/// MTU, all-multicast mode, transmit queue length, in that order.
fn link_steps(link: &LinkNow, wanted: &LinkWanted) -> Vec<Step> {
    let mut steps = Vec::new();
    if let (Some(to), Some(from)) = (wanted.mac, link.mac) {
        if to != from {
            steps.push(Step::Mac { from, to });
        }
    }
    if let Some(to) = wanted.promisc.filter(|p| *p != link.promisc) {
        steps.push(Step::Promisc { from: link.promisc, to });
    }
    if let Some(to) = wanted.mtu.filter(|m| *m != link.mtu) {
        steps.push(Step::Mtu { from: link.mtu, to });
    }
    if let Some(to) = wanted.allmulti.filter(|a| *a != link.allmulti) {
        steps.push(Step::Allmulti { from: link.allmulti, to });
    }
    if let Some(to) = wanted.txqlen.filter(|q| *q != link.txqlen) {
        steps.push(Step::TxQLen { from: link.txqlen, to });
    }
    steps
}

/// The changes DEL makes to put back what ADD changed: the interface's settings when it still
/// exists (MTU first, as the reference restores), and each sysctl whose value is still the one
/// ADD wrote (a value someone changed since is theirs now).
pub fn restore_steps(saved: &Originals, now: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(link) = now.link {
        steps.extend(link_steps(&link, &LinkWanted { mtu: saved.mtu, ..Default::default() }));
        let rest = LinkWanted {
            mac: saved.mac.as_deref().and_then(netlink::parse_mac),
            promisc: saved.promisc,
            mtu: None,
            allmulti: saved.allmulti,
            txqlen: saved.txqlen,
        };
        steps.extend(link_steps(&link, &rest));
    }
    for s in &saved.sysctls {
        if let Some(cur) = now.sysctl(&s.path) {
            if same_sysctl_value(cur, &s.applied) && !same_sysctl_value(cur, &s.original) {
                steps.push(Step::Sysctl {
                    path: s.path.clone(),
                    from: cur.to_string(),
                    to: s.original.clone(),
                });
            }
        }
    }
    steps
}

/// CHECK: every configured value is what the kernel has. Returns the differences.
pub fn differences(conf: &TuningConf, ifname: &str, now: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    for s in &conf.sysctls {
        match now.sysctl(&s.path) {
            Some(cur) if same_sysctl_value(cur, &s.value) => {}
            Some(cur) => out.push(format!("sysctl {} is {cur:?}, configured {:?}", s.key, s.value)),
            None => out.push(format!("sysctl {} does not exist", s.key)),
        }
    }
    if !conf.changes_link() {
        return out;
    }
    let Some(link) = now.link else {
        out.push(format!("interface {ifname} does not exist"));
        return out;
    };
    if let Some(mac) = conf.mac {
        if link.mac != Some(mac) {
            let cur = link.mac.map(|m| format_mac(&m)).unwrap_or_default();
            out.push(format!("{ifname} has MAC {cur}, configured {}", format_mac(&mac)));
        }
    }
    if conf.promisc && !link.promisc {
        out.push(format!("{ifname} is not in promiscuous mode, configured promisc true"));
    }
    if let Some(mtu) = conf.mtu.filter(|m| *m != link.mtu) {
        out.push(format!("{ifname} has MTU {}, configured {mtu}", link.mtu));
    }
    if let Some(a) = conf.allmulti.filter(|a| *a != link.allmulti) {
        out.push(format!("{ifname} has allmulti {}, configured {a}", link.allmulti));
    }
    if let Some(q) = conf.txqlen.filter(|q| *q != link.txqlen) {
        out.push(format!("{ifname} has txqueuelen {}, configured {q}", link.txqlen));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sysctl;

    const OLD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const NEW_MAC: [u8; 6] = [0xc2, 0xb0, 0x57, 0x49, 0x47, 0xf1];

    fn link() -> LinkNow {
        LinkNow { mac: Some(OLD_MAC), mtu: 1500, promisc: false, allmulti: false, txqlen: 1000 }
    }

    fn conf() -> TuningConf {
        TuningConf {
            sysctls: vec![
                Sysctl {
                    key: "net.core.somaxconn".into(),
                    path: "net/core/somaxconn".into(),
                    value: "500".into(),
                },
                Sysctl {
                    key: "net.ipv4.ip_local_port_range".into(),
                    path: "net/ipv4/ip_local_port_range".into(),
                    value: "1024 65000".into(),
                },
            ],
            mac: Some(NEW_MAC),
            mtu: Some(1400),
            promisc: true,
            allmulti: Some(true),
            txqlen: Some(500),
            data_dir: None,
        }
    }

    /// The interface as ADD left it with `conf()`.
    fn tuned_link() -> LinkNow {
        LinkNow { mac: Some(NEW_MAC), mtu: 1400, promisc: true, allmulti: true, txqlen: 500 }
    }

    fn observed() -> Observed {
        Observed {
            link: Some(link()),
            sysctls: vec![
                ("net/core/somaxconn".into(), "4096".into()),
                // Already what the config wants (the kernel prints a tab).
                ("net/ipv4/ip_local_port_range".into(), "1024\t65000".into()),
            ],
        }
    }

    #[test]
    fn add_changes_only_what_differs_and_records_the_originals() {
        let steps = add_steps(&conf(), &observed());
        assert_eq!(
            steps,
            vec![
                Step::Sysctl {
                    path: "net/core/somaxconn".into(),
                    from: "4096".into(),
                    to: "500".into()
                },
                Step::Mac { from: OLD_MAC, to: NEW_MAC },
                Step::Promisc { from: false, to: true },
                Step::Mtu { from: 1500, to: 1400 },
                Step::Allmulti { from: false, to: true },
                Step::TxQLen { from: 1000, to: 500 },
            ]
        );
        let o = Originals::of(&steps);
        assert_eq!(o.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(
            (o.mtu, o.promisc, o.allmulti, o.txqlen),
            (Some(1500), Some(false), Some(false), Some(1000))
        );
        assert_eq!(o.sysctls.len(), 1);
        // Each step undone puts the old value back.
        assert_eq!(steps[3].reversed(), Step::Mtu { from: 1400, to: 1500 });
    }

    #[test]
    fn promisc_false_and_unset_keys_change_nothing() {
        let c = TuningConf { promisc: false, ..TuningConf::default() };
        let mut now = observed();
        now.link.as_mut().unwrap().promisc = true;
        assert!(add_steps(&c, &now).is_empty());
        assert!(differences(&c, "eth0", &now).is_empty());
    }

    #[test]
    fn delete_restores_what_add_changed() {
        let steps = add_steps(&conf(), &observed());
        let saved = Originals::of(&steps);
        let after_add = Observed {
            link: Some(tuned_link()),
            sysctls: vec![("net/core/somaxconn".into(), "500".into())],
        };
        let restore = restore_steps(&saved, &after_add);
        assert_eq!(
            restore,
            vec![
                Step::Mtu { from: 1400, to: 1500 },
                Step::Mac { from: NEW_MAC, to: OLD_MAC },
                Step::Promisc { from: true, to: false },
                Step::Allmulti { from: true, to: false },
                Step::TxQLen { from: 500, to: 1000 },
                Step::Sysctl {
                    path: "net/core/somaxconn".into(),
                    from: "500".into(),
                    to: "4096".into()
                },
            ]
        );
        // A sysctl someone changed after ADD is left alone; a gone interface is skipped.
        let changed =
            Observed { link: None, sysctls: vec![("net/core/somaxconn".into(), "700".into())] };
        assert!(restore_steps(&saved, &changed).is_empty());
    }

    #[test]
    fn a_repeated_add_keeps_the_first_originals() {
        let first = Originals::of(&add_steps(&conf(), &observed()));
        // The second ADD sees the tuned values and a new MTU target.
        let mut c2 = conf();
        c2.mtu = Some(1300);
        let now = Observed {
            link: Some(tuned_link()),
            sysctls: vec![
                ("net/core/somaxconn".into(), "500".into()),
                ("net/ipv4/ip_local_port_range".into(), "1024 65000".into()),
            ],
        };
        let second = Originals::of(&add_steps(&c2, &now));
        assert_eq!(second.mtu, Some(1400));
        let merged = second.merged_onto(&first);
        assert_eq!(merged.mtu, Some(1500));
        assert_eq!(merged.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(merged.sysctls[0].original, "4096");
    }

    #[test]
    fn check_names_every_difference() {
        let diffs = differences(&conf(), "eth0", &observed());
        assert_eq!(diffs.len(), 6, "{diffs:?}");
        assert!(diffs[0].contains("net.core.somaxconn") && diffs[0].contains("4096"));
        assert!(diffs.iter().any(|d| d.contains("MTU 1500, configured 1400")));
        let none = Observed { link: None, sysctls: vec![] };
        let d = differences(&conf(), "eth0", &none);
        assert!(d.iter().any(|d| d.contains("interface eth0 does not exist")), "{d:?}");
    }

    #[test]
    fn record_round_trips_through_json() {
        let o = Originals::of(&add_steps(&conf(), &observed()));
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("\"txQLen\":1000"), "{text}");
        assert_eq!(serde_json::from_str::<Originals>(&text).unwrap(), o);
        assert!(Originals::default().is_empty());
    }
}
