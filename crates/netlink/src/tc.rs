//! Traffic control: token bucket filter (tbf) and ingress qdiscs, a u32 "match everything"
//! filter whose mirred action redirects a link's incoming traffic to another link (an ifb),
//! and ifb links. What the bandwidth plugin builds, the way `tc` would:
//!
//! ```text
//! tc qdisc add dev <veth> root handle 1: tbf rate .. burst .. latency ..
//! tc qdisc add dev <veth> handle ffff: ingress
//! tc filter add dev <veth> parent ffff: protocol all prio 1 u32 match u32 0 0 flowid 1:1 \
//!     action mirred egress redirect dev <ifb>
//! ```
//!
//! `netlink-packet-route` has no tbf types: its options travel as raw attributes built and
//! read here (`struct tc_tbf_qopt`, TCA_TBF_RATE64).

use std::time::Duration;

use netlink_packet_core::{DefaultNla, Nla, NlasIterator, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::{check_alias, check_ifname, Link};

/// Handle of the root qdisc's parent (TC_H_ROOT).
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;
/// Parent of an ingress qdisc (TC_H_INGRESS).
pub const TC_H_INGRESS: u32 = 0xFFFF_FFF1;
/// The handle `tc` gives an ingress qdisc: `ffff:`.
pub const INGRESS_HANDLE: u32 = 0xFFFF_0000;
/// The handle the bandwidth plugin gives its tbf: `1:`.
pub const TBF_HANDLE: u32 = 0x0001_0000;
/// Priority of the redirect filter (`prio 1`).
const REDIRECT_FILTER_PRIO: u16 = 1;
/// ETH_P_ALL: the filter sees every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// Class id the redirect filter reports (`flowid 1:1`), as the reference plugin sets it.
const REDIRECT_CLASSID: TcHandle = TcHandle { major: 1, minor: 1 };

/// TCA_TBF_PARMS: `struct tc_tbf_qopt`.
const TCA_TBF_PARMS: u16 = 1;
/// TCA_TBF_RATE64: the rate in bytes/s when it does not fit the 32-bit field.
const TCA_TBF_RATE64: u16 = 4;
/// TCA_OPTIONS.
const TCA_OPTIONS: u16 = 2;
/// `struct tc_ratespec`: cell_log u8, linklayer u8, overhead u16, cell_align i16, mpu u16, rate
/// u32.
const RATESPEC_LEN: usize = 12;
/// `struct tc_tbf_qopt`: rate and peakrate ratespecs, then limit, buffer, mtu (u32 each).
const TBF_QOPT_LEN: usize = 2 * RATESPEC_LEN + 12;
/// TC_LINKLAYER_ETHERNET in `tc_ratespec.linklayer`.
const LINKLAYER_ETHERNET: u8 = 1;

/// The kernel's packet scheduler clock (/proc/net/psched): how buffer times given in "ticks"
/// map to microseconds. tc and the reference plugins compute tbf buffers with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psched {
    tick_in_usec: f64,
}

impl Psched {
    /// The clock of every kernel since 2.6.31 (`000003e8 00000040 000f4240 3b9aca00`).
    pub const MODERN: Psched = Psched { tick_in_usec: 15.625 };

    /// Reads /proc/net/psched.
    pub fn read() -> Result<Psched> {
        let text = std::fs::read_to_string("/proc/net/psched")
            .map_err(|e| Error::from_io("reading /proc/net/psched", e))?;
        Psched::parse(&text)
            .ok_or_else(|| Error::msg("reading /proc/net/psched", format!("unexpected {text:?}")))
    }

    /// Parses the four hex numbers of /proc/net/psched as iproute2 and Go's netlink do.
    pub fn parse(text: &str) -> Option<Psched> {
        let vals: Vec<u64> = text
            .split_whitespace()
            .map(|w| u64::from_str_radix(w, 16))
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        let [mut t2us, us2t, clock_res, ..] = vals[..] else { return None };
        if us2t == 0 {
            return None;
        }
        if clock_res == 1_000_000_000 {
            // A nanosecond clock reports ticks per usec in the second field.
            t2us = us2t;
        }
        let clock_factor = clock_res as f64 / 1_000_000.0;
        Some(Psched { tick_in_usec: t2us as f64 / us2t as f64 * clock_factor })
    }

    /// Scheduler ticks per microsecond.
    pub fn tick_in_usec(&self) -> f64 {
        self.tick_in_usec
    }
}

/// A token bucket filter as the kernel takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Rate in bytes per second.
    pub rate: u64,
    /// Bucket size as the time it takes to send it at `rate`, in scheduler ticks.
    pub buffer: u32,
    /// Bytes that may wait in the queue.
    pub limit: u32,
}

impl Tbf {
    /// A tbf for `rate` bytes/s with a bucket of `burst` bytes and a queue that holds what
    /// `latency` at that rate sends, plus the bucket (tc's `latency` option). Computed like
    /// the reference bandwidth plugin (Go netlink's `time2Tick`), so both programs set, and
    /// CHECK expects, the same numbers; a bucket beyond the tick field is capped. Errors name
    /// what does not fit the kernel's fields.
    pub fn new(
        rate: u64,
        burst: u64,
        latency: Duration,
        psched: &Psched,
    ) -> std::result::Result<Tbf, String> {
        if rate == 0 {
            return Err("the rate is 0 bytes/s".into());
        }
        if burst == 0 {
            return Err("the burst is 0 bytes".into());
        }
        let burst32 = u32::try_from(burst)
            .map_err(|_| format!("a burst of {burst} bytes is more than 4 GiB"))?;
        let burst_usec = (burst as f64 * 1_000_000.0 / rate as f64).min(u32::MAX as f64);
        // A bucket that takes longer to send than the 32-bit tick count can say (about 274 s)
        // gets the largest one there is: containerd asks for 4294967295 bits ("no burst limit")
        // with rates of a few Mbit/s. (The reference lets Go's float conversion wrap around.)
        let buffer = (burst_usec.trunc() * psched.tick_in_usec()).min(u32::MAX as f64) as u32;
        // Same float steps as Go's netlink (latency in usec, then back), so the truncation
        // lands on the same byte.
        let latency_usec = 1_000_000.0 * latency.as_secs_f64();
        let queued = rate as f64 * latency_usec / 1_000_000.0;
        let limit = queued.trunc() + burst32 as f64;
        if limit >= u32::MAX as f64 {
            return Err(format!("a queue of {limit:.0} bytes is more than 4 GiB"));
        }
        Ok(Tbf { rate, buffer, limit: limit as u32 })
    }

    /// The bucket size in bytes the kernel derives from `buffer` (what `tc` shows as burst).
    pub fn burst_bytes(&self, psched: &Psched) -> u64 {
        let usec = self.buffer as f64 / psched.tick_in_usec();
        (usec * self.rate as f64 / 1_000_000.0) as u64
    }

    /// TCA_OPTIONS content: TCA_TBF_PARMS, and TCA_TBF_RATE64 when the rate needs it.
    fn to_options(self) -> Vec<TcOption> {
        let mut qopt = [0u8; TBF_QOPT_LEN];
        qopt[1] = LINKLAYER_ETHERNET;
        qopt[8..12].copy_from_slice(&(self.rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        let tail = 2 * RATESPEC_LEN;
        qopt[tail..tail + 4].copy_from_slice(&self.limit.to_ne_bytes());
        qopt[tail + 4..tail + 8].copy_from_slice(&self.buffer.to_ne_bytes());
        let mut opts = vec![TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt.to_vec()))];
        if self.rate >= u32::MAX as u64 {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.rate.to_ne_bytes().to_vec(),
            )));
        }
        opts
    }

    /// Reads a tbf back from the nested TCA_OPTIONS bytes of a qdisc dump.
    fn from_nested(bytes: &[u8]) -> Option<Tbf> {
        let mut tbf = None;
        let mut rate64 = None;
        for nla in NlasIterator::new(bytes) {
            let nla = nla.ok()?;
            let v = nla.value();
            match nla.kind() {
                TCA_TBF_PARMS if v.len() >= TBF_QOPT_LEN => {
                    let u32_at = |i: usize| u32::from_ne_bytes(v[i..i + 4].try_into().unwrap());
                    let tail = 2 * RATESPEC_LEN;
                    tbf = Some(Tbf {
                        rate: u32_at(8) as u64,
                        limit: u32_at(tail),
                        buffer: u32_at(tail + 4),
                    });
                }
                TCA_TBF_RATE64 if v.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(v[..8].try_into().unwrap()));
                }
                _ => {}
            }
        }
        let mut tbf = tbf?;
        if let Some(r) = rate64 {
            tbf.rate = r;
        }
        Some(tbf)
    }
}

/// One qdisc as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    /// Ifindex of the link it is attached to.
    pub index: u32,
    /// Its handle (major:minor as one u32, e.g. 0x10000 for `1:`).
    pub handle: u32,
    /// Its parent (TC_H_ROOT, TC_H_INGRESS or a class).
    pub parent: u32,
    /// "tbf", "ingress", "noqueue", ...
    pub kind: String,
    /// The parameters, for a tbf.
    pub tbf: Option<Tbf>,
}

impl Qdisc {
    /// True for the qdisc at the root of the link's egress.
    pub fn is_root(&self) -> bool {
        self.parent == TC_H_ROOT
    }

    fn from_message(msg: TcMessage) -> Qdisc {
        let mut q = Qdisc {
            index: msg.header.index as u32,
            handle: msg.header.handle.into(),
            parent: msg.header.parent.into(),
            kind: String::new(),
            tbf: None,
        };
        let mut options = None;
        for attr in msg.attributes {
            match attr {
                TcAttribute::Kind(k) => q.kind = k,
                TcAttribute::Options(opts) => options = Some(opts),
                _ => {}
            }
        }
        if q.kind == "tbf" {
            // Unknown kinds arrive as the raw TCA_OPTIONS attribute.
            for opt in options.unwrap_or_default() {
                if let TcOption::Other(nla) = opt {
                    if nla.kind() & !netlink_packet_core::NLA_F_NESTED == TCA_OPTIONS {
                        let mut bytes = vec![0u8; nla.value_len()];
                        nla.emit_value(&mut bytes);
                        q.tbf = Tbf::from_nested(&bytes);
                    }
                }
            }
        }
        q
    }
}

/// What the kernel says when a tc or link kind is not built in (nor loadable as a module).
fn kernel_lacks(e: Error, ctx: &str, what: &str, config: &str) -> Error {
    match e.errno() {
        Some(errno @ (libc::ENOENT | libc::EOPNOTSUPP)) => Error::from_errno(
            format!("{ctx}: this kernel has no {what} ({config} is not built in or loadable)"),
            errno,
        ),
        _ => e,
    }
}

fn tc_message(index: u32, parent: u32, handle: u32) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = parent.into();
    msg.header.handle = handle.into();
    msg
}

/// The u32 selector that matches every packet (`match u32 0 0`).
fn match_everything() -> TcU32Selector {
    let mut key = TcU32Key::default();
    key.mask = 0;
    key.val = 0;
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![key];
    sel
}

/// `action mirred egress redirect dev <target>`.
fn redirect_action(target: u32) -> TcAction {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = target;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    action
}

impl Handle {
    /// The qdiscs attached to link `index` (a dump of all qdiscs, filtered here).
    pub fn qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        let ctx = format!("listing qdiscs of link #{index}");
        let replies =
            self.sock.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()), &ctx)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(m) => Some(Qdisc::from_message(m)),
                _ => None,
            })
            .filter(|q| q.index == index)
            .collect())
    }

    /// Replaces the link's default root qdisc with a tbf (handle `1:`); EEXIST when the link
    /// already has a non-default root qdisc.
    pub fn add_tbf(&mut self, index: u32, tbf: &Tbf) -> Result<()> {
        let ctx = format!("adding tbf qdisc (rate {} bytes/s) on link #{index}", tbf.rate);
        let mut msg = tc_message(index, TC_H_ROOT, TBF_HANDLE);
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        msg.attributes.push(TcAttribute::Options(tbf.to_options()));
        self.sock
            .request(RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL, &ctx)
            .map_err(|e| kernel_lacks(e, &ctx, "tbf qdisc", "CONFIG_NET_SCH_TBF"))
    }

    /// Adds an ingress qdisc (`ffff:`); EEXIST when the link has one (or a clsact).
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        let ctx = format!("adding ingress qdisc on link #{index}");
        let mut msg = tc_message(index, TC_H_INGRESS, INGRESS_HANDLE);
        msg.attributes.push(TcAttribute::Kind("ingress".into()));
        self.sock
            .request(RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL, &ctx)
            .map_err(|e| kernel_lacks(e, &ctx, "ingress qdisc", "CONFIG_NET_SCH_INGRESS"))
    }

    /// Deletes the qdisc with `handle` under `parent` on link `index` (the kernel puts the
    /// default back at the root); a missing link or qdisc gives is_not_found().
    pub fn delete_qdisc(&mut self, index: u32, parent: u32, handle: u32) -> Result<()> {
        let ctx = format!("deleting qdisc {:x}: of link #{index}", handle >> 16);
        let msg = tc_message(index, parent, handle);
        match self.sock.request(RouteNetlinkMessage::DelQueueDiscipline(msg), 0, &ctx) {
            // The kernel says EINVAL for "no such qdisc under this parent".
            Err(e) if e.errno() == Some(libc::EINVAL) => {
                Err(Error::from_errno(ctx, libc::ENOENT).with_detail(Some(e.to_string())))
            }
            other => other,
        }
    }

    /// On link `index`'s ingress qdisc, redirects every incoming packet to the egress of link
    /// `target` (u32 match-all filter, prio 1, with a mirred action).
    pub fn add_ingress_redirect(&mut self, index: u32, target: u32) -> Result<()> {
        let ctx = format!("adding a filter redirecting link #{index}'s ingress to link #{target}");
        let mut msg = tc_message(index, INGRESS_HANDLE, 0);
        msg.header.info = ((REDIRECT_FILTER_PRIO as u32) << 16) | ETH_P_ALL.to_be() as u32;
        msg.attributes.push(TcAttribute::Kind("u32".into()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::ClassId(REDIRECT_CLASSID)),
            TcOption::U32(TcFilterU32Option::Selector(match_everything())),
            TcOption::U32(TcFilterU32Option::Action(vec![redirect_action(target)])),
        ]));
        self.sock
            .request(RouteNetlinkMessage::NewTrafficFilter(msg), NLM_F_CREATE | NLM_F_EXCL, &ctx)
            .map_err(|e| {
                // Which of the two modules is missing shows in the kernel's message.
                let text = e.to_string();
                if text.contains("action") {
                    kernel_lacks(e, &ctx, "mirred action", "CONFIG_NET_ACT_MIRRED")
                } else {
                    kernel_lacks(
                        e,
                        &ctx,
                        "u32 classifier or mirred action",
                        "CONFIG_NET_CLS_U32 / CONFIG_NET_ACT_MIRRED",
                    )
                }
            })
    }

    /// The links that filters on link `index`'s ingress qdisc redirect to (mirred targets).
    pub fn ingress_redirect_targets(&mut self, index: u32) -> Result<Vec<u32>> {
        let ctx = format!("listing ingress filters of link #{index}");
        let msg = tc_message(index, INGRESS_HANDLE, 0);
        let replies = match self.sock.dump(RouteNetlinkMessage::GetTrafficFilter(msg), &ctx) {
            Ok(r) => r,
            // No ingress qdisc: no filters.
            Err(e) if e.errno() == Some(libc::EINVAL) || e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut targets = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewTrafficFilter(m) = reply else { continue };
            for attr in m.attributes {
                let TcAttribute::Options(opts) = attr else { continue };
                for opt in opts {
                    let TcOption::U32(TcFilterU32Option::Action(actions)) = opt else { continue };
                    for action in actions {
                        for a in action.attributes {
                            let TcActionAttribute::Options(aopts) = a else { continue };
                            for o in aopts {
                                if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = o {
                                    targets.push(p.ifindex);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(targets)
    }

    /// Creates an ifb link, up, with the given MTU and `alias` (IFLA_IFALIAS: the owner tag;
    /// the kernel ignores an alias in RTM_NEWLINK, so it is set right after), and returns it.
    /// A link that cannot be tagged is deleted again.
    pub fn create_ifb(&mut self, name: &str, mtu: u32, alias: &str) -> Result<Link> {
        let ctx = format!("creating ifb {name}");
        check_ifname(name)?;
        check_alias(alias, &ctx)?;
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        self.sock
            .request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, &ctx)
            .map_err(|e| kernel_lacks(e, &ctx, "ifb device", "CONFIG_IFB"))?;
        let link = self.created_link(name, &ctx)?;
        if let Err(e) = self.set_alias(link.index, alias) {
            let _ = self.delete_link(link.index);
            return Err(e);
        }
        Ok(Link { alias: Some(alias.to_string()).filter(|a| !a.is_empty()), ..link })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psched_of_modern_kernels() {
        let p = Psched::parse("000003e8 00000040 000f4240 3b9aca00\n").unwrap();
        assert_eq!(p, Psched::MODERN);
        assert_eq!(Psched::parse("garbage"), None);
        assert_eq!(Psched::parse("1 0 1 1"), None);
        // An old microsecond clock: 1 tick = 1 usec.
        assert_eq!(Psched::parse("1 1 f4240 64").unwrap().tick_in_usec(), 1.0);
    }

    #[test]
    fn tbf_numbers_match_the_reference_plugin() {
        // The reference for ingressRate 8 Mbit/s, burst 80 kbit: rate 1,000,000 bytes/s,
        // 10,000 bytes = 10 ms = 156,250 ticks; limit 25 ms of traffic + the burst.
        let tbf = Tbf::new(1_000_000, 10_000, Duration::from_millis(25), &Psched::MODERN).unwrap();
        assert_eq!(tbf, Tbf { rate: 1_000_000, buffer: 156_250, limit: 35_000 });
        assert_eq!(tbf.burst_bytes(&Psched::MODERN), 10_000);
        let back = Tbf::from_nested(&encode(&tbf.to_options())).unwrap();
        assert_eq!(back, tbf);
    }

    #[test]
    fn tbf_rates_above_4_gbyte_use_rate64() {
        let tbf =
            Tbf::new(5_000_000_000, 1_000_000, Duration::from_millis(25), &Psched::MODERN).unwrap();
        let opts = tbf.to_options();
        assert_eq!(opts.len(), 2);
        assert_eq!(Tbf::from_nested(&encode(&opts)).unwrap().rate, 5_000_000_000);
    }

    #[test]
    fn tbf_refuses_what_the_kernel_cannot_express() {
        let l = Duration::from_millis(25);
        assert!(Tbf::new(0, 1, l, &Psched::MODERN).is_err());
        assert!(Tbf::new(1, 0, l, &Psched::MODERN).is_err());
        assert!(Tbf::new(1, 1 << 33, l, &Psched::MODERN).unwrap_err().contains("4 GiB"));
    }

    #[test]
    fn bursts_beyond_the_tick_field_are_capped() {
        // containerd: 4294967295 bits of burst at 1 Mbit/s is 4295 s of sending.
        let tbf =
            Tbf::new(125_000, 536_870_911, Duration::from_millis(25), &Psched::MODERN).unwrap();
        assert_eq!(tbf.buffer, u32::MAX);
        assert_eq!(tbf.limit, 3_125 + 536_870_911);
    }

    #[test]
    fn missing_kernel_features_are_named() {
        let e = kernel_lacks(
            Error::from_errno("x", libc::ENOENT),
            "adding tbf qdisc on link #3",
            "tbf qdisc",
            "CONFIG_NET_SCH_TBF",
        );
        assert!(e.to_string().contains("this kernel has no tbf qdisc (CONFIG_NET_SCH_TBF"), "{e}");
        let other = kernel_lacks(Error::from_errno("x", libc::EEXIST), "c", "w", "C");
        assert!(other.is_exists());
    }

    fn encode(opts: &[TcOption]) -> Vec<u8> {
        use netlink_packet_core::Emitable;
        let mut buf = vec![0u8; opts.buffer_len()];
        opts.emit(&mut buf);
        buf
    }
}
