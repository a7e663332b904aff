//! The decision function: one frame in, one verdict out.
//!
//! Parsing order: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 or IPv6, TCP,
//! then conduit lookup, TCP stream tracking ([`crate::tcp_flow`]) and the
//! Modbus ADUs ([`crate::modbus`]). Anything on a conduit port that cannot be
//! judged is dropped with its own [`Reason`].

use crate::{
    frame::Frame,
    modbus::{AduInfo, AduVerdict},
    reason::{Action, Reason},
    tcp_flow,
    types::{Addr, Conduit, ConduitKey, FlowKey, FlowState, NO_CONDUIT, Rule, ipv4_mapped},
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;
/// IPv6 extension headers walked before giving up (bounded loop).
const IPV6_MAX_EXT: usize = 4;

/// Lookups the decision needs. The XDP program implements them with BPF maps,
/// the host with in-memory tables compiled from the same policy.
pub trait Tables {
    /// The policy generation in force (see [`crate::types::GENERATIONS`]);
    /// the host tables hold one policy, generation 0.
    fn generation(&self) -> u8 {
        0
    }
    fn is_protected_port(&self, port: u16) -> bool;
    /// True for the address of any asset behind a conduit.
    fn is_asset(&self, addr: &Addr) -> bool;
    /// Longest-prefix match on the source, exact on destination and port.
    fn conduit(&self, key: &ConduitKey) -> Option<Conduit>;
    fn rule(&self, key: &crate::types::RuleKey) -> Option<&Rule>;
    fn flow(&self, key: &FlowKey) -> Option<FlowState>;
    fn set_flow(&mut self, key: &FlowKey, state: &FlowState);

    /// Returns `v` unchanged. The eBPF side routes it through map memory,
    /// whose contents the verifier does not track, so that the paths that
    /// reach a merge point (header variants before the ADU loop, the
    /// iterations of the loop, its exits) continue as one state instead of
    /// each re-verifying everything after it: this keeps the program inside
    /// the verifier's budget of one million instructions.
    #[inline(always)]
    fn forget<V: Copy>(&mut self, v: V) -> V {
        v
    }
}

/// How far the ADU loop got in a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AduProgress {
    pub consumed: usize,
    pub allowed: u8,
    pub last: AduInfo,
}

/// Sees every request ADU judged (host reports); the kernel uses [`NoObserver`].
pub trait AduObserver {
    fn adu(&mut self, conduit: u16, verdict: &AduVerdict);
}

pub struct NoObserver;
impl AduObserver for NoObserver {
    #[inline(always)]
    fn adu(&mut self, _: u16, _: &AduVerdict) {}
}

/// Where the headers are, for building RSTs and events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub l3: usize,
    pub l4: usize,
    pub payload: usize,
    pub payload_len: usize,
    pub ipv6: bool,
    /// The frame's headers allow an in-place RST (no IPv4 options, no IPv6
    /// extension headers); otherwise a reset degrades to a drop.
    pub rst_ok: bool,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    pub conduit: u16,
    /// Send an event to user space (not for repeats of a denial already reported).
    pub event: bool,
    /// A conduit in monitor mode passed what it would have denied.
    pub monitor: bool,
    /// `adu` describes a parsed ADU.
    pub has_adu: bool,
    pub adu: AduInfo,
    /// ADUs allowed in this segment.
    pub allowed_adus: u8,
}

impl Layout {
    /// Source and destination address (IPv4 mapped), read again from the frame
    /// so that they need not be carried through the decision.
    #[inline(always)]
    pub fn addrs(&self, f: &Frame) -> (Addr, Addr) {
        if self.ipv6 {
            (
                f.addr16(self.l3 + 8).unwrap_or_default(),
                f.addr16(self.l3 + 24).unwrap_or_default(),
            )
        } else {
            (
                ipv4_mapped(f.bytes4(self.l3 + 12).unwrap_or_default()),
                ipv4_mapped(f.bytes4(self.l3 + 16).unwrap_or_default()),
            )
        }
    }
}

impl Decision {
    const fn new(action: Action, reason: Reason) -> Self {
        Self {
            action,
            reason,
            conduit: NO_CONDUIT,
            event: false,
            monitor: false,
            has_adu: false,
            adu: AduInfo {
                transaction: 0,
                unit: 0,
                function: 0,
                address: 0,
                quantity: 0,
                write_address: 0,
                write_quantity: 0,
            },
            allowed_adus: 0,
        }
    }

    pub(crate) const fn pass(reason: Reason) -> Self {
        Self::new(Action::Pass, reason)
    }

    /// A drop that is reported to user space.
    pub(crate) const fn drop(reason: Reason) -> Self {
        let mut d = Self::new(Action::Drop, reason);
        d.event = true;
        d
    }
}

/// Judges one frame. `tables` is mutated only through the TCP flow state;
/// `lay` receives where the headers are (for RSTs and events).
#[inline(always)]
pub fn decide<T: Tables + ?Sized, O: AduObserver>(
    f: &Frame,
    tables: &mut T,
    obs: &mut O,
    lay: &mut Layout,
) -> Decision {
    let Some(mut ethertype) = f.be16(12) else {
        // Shorter than an Ethernet header: not IP, nothing of ours.
        return Decision::pass(Reason::NotConduit);
    };
    let mut l3 = 14;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = f.be16(16) else {
            return Decision::drop(Reason::Malformed);
        };
        if inner == ETH_P_8021Q || inner == ETH_P_8021AD {
            return Decision::drop(Reason::Encapsulation);
        }
        ethertype = inner;
        l3 = 18;
    }
    lay.l3 = l3;
    let ip = match ethertype {
        ETH_P_IPV4 => parse_ipv4(f, tables, lay),
        ETH_P_IPV6 => parse_ipv6(f, tables, lay),
        _ => return Decision::pass(Reason::NotConduit),
    };
    let (ip_end, key) = match ip {
        IpOutcome::Tcp { ip_end, key } => (ip_end, key),
        IpOutcome::Verdict(d) => return d,
    };
    let l4 = lay.l4;
    let (Some(src_port), Some(dst_port), Some(seq), Some(ack), Some(off_byte), Some(flags)) = (
        f.be16(l4),
        f.be16(l4 + 2),
        f.be32(l4 + 4),
        f.be32(l4 + 8),
        f.u8(l4 + 12),
        f.u8(l4 + 13),
    ) else {
        return Decision::drop(Reason::Malformed);
    };
    let doff = (off_byte >> 4) as usize * 4;
    if doff < 20 || l4 + doff > ip_end {
        return Decision::drop(Reason::Malformed);
    }
    lay.src_port = src_port;
    lay.dst_port = dst_port;
    lay.seq = seq;
    lay.ack = ack;
    lay.payload = l4 + doff;
    lay.payload_len = ip_end - lay.payload;
    // An RST is built over the original headers, 20 bytes of TCP, in the
    // frame's first RST_MAX bytes.
    lay.rst_ok = lay.rst_ok && l4 + 20 <= crate::rst::RST_MAX;

    // Header variants (VLAN or not, IPv4 or IPv6, extension headers) differ
    // only in these offsets from here on.
    let (l4, payload, payload_len, rst_ok, flags, key) =
        tables.forget((lay.l4, lay.payload, lay.payload_len, lay.rst_ok, flags, key));
    (lay.l4, lay.payload, lay.payload_len, lay.rst_ok) = (l4, payload, payload_len, rst_ok);
    if tables.is_protected_port(dst_port) {
        let Some(conduit) = tables.conduit(&ConduitKey::new(
            tables.generation(),
            key.server,
            dst_port,
            key.client,
        )) else {
            return Decision::drop(Reason::NoConduit);
        };
        let key = FlowKey {
            client_port: src_port,
            server_port: dst_port,
            ..key
        };
        let mut d = tcp_flow::judge_client_segment(f, tables, obs, &conduit, &key, flags, lay);
        d.conduit = conduit.id;
        return d;
    }
    if tables.is_protected_port(src_port) {
        return match tables.conduit(&ConduitKey::new(
            tables.generation(),
            key.client,
            src_port,
            key.server,
        )) {
            Some(conduit) => {
                let mut d = Decision::pass(Reason::Response);
                d.conduit = conduit.id;
                d
            }
            None => Decision::drop(Reason::NoConduit),
        };
    }
    Decision::pass(Reason::NotConduit)
}

enum IpOutcome {
    /// TCP header at `lay.l4`; IP payload ends at `ip_end`. `key` holds the
    /// packet's source as `client`, destination as `server`, ports unset.
    Tcp {
        ip_end: usize,
        key: FlowKey,
    },
    Verdict(Decision),
}

#[inline(always)]
fn parse_ipv4<T: Tables + ?Sized>(f: &Frame, tables: &T, lay: &mut Layout) -> IpOutcome {
    let l3 = lay.l3;
    let (Some(vihl), Some(total), Some(frag), Some(proto), Some(src), Some(dst)) = (
        f.u8(l3),
        f.be16(l3 + 2),
        f.be16(l3 + 6),
        f.u8(l3 + 9),
        f.bytes4(l3 + 12),
        f.bytes4(l3 + 16),
    ) else {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    };
    // Masked: the verifier needs a bounded header length.
    let ihl = (vihl & 0x0f) as usize * 4;
    let total = total as usize;
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > f.wire_len() {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    }
    let key = FlowKey {
        client: ipv4_mapped(src),
        server: ipv4_mapped(dst),
        client_port: 0,
        server_port: 0,
    };
    lay.l4 = l3 + ihl;
    lay.rst_ok = ihl == 20;
    let is_fragment = frag & 0x3fff != 0;
    if is_fragment {
        let first = frag & 0x1fff == 0;
        let to_port = proto == IPPROTO_TCP
            && first
            && f.be16(lay.l4 + 2)
                .is_some_and(|p| tables.is_protected_port(p));
        if to_port || tables.is_asset(&key.server) {
            return IpOutcome::Verdict(Decision::drop(Reason::IpFragment));
        }
        return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
    }
    if proto != IPPROTO_TCP {
        return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
    }
    IpOutcome::Tcp {
        ip_end: l3 + total,
        key,
    }
}

#[inline(always)]
fn parse_ipv6<T: Tables + ?Sized>(f: &Frame, tables: &T, lay: &mut Layout) -> IpOutcome {
    let l3 = lay.l3;
    let (Some(v), Some(plen), Some(mut next), Some(src), Some(dst)) = (
        f.u8(l3),
        f.be16(l3 + 4),
        f.u8(l3 + 6),
        f.addr16(l3 + 8),
        f.addr16(l3 + 24),
    ) else {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    };
    let ip_end = l3 + 40 + plen as usize;
    if v >> 4 != 6 || ip_end > f.wire_len() {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    }
    let key = FlowKey {
        client: src,
        server: dst,
        client_port: 0,
        server_port: 0,
    };
    lay.ipv6 = true;
    let mut l4 = l3 + 40;
    lay.rst_ok = next == IPPROTO_TCP;
    let mut i = 0;
    while i < IPV6_MAX_EXT && next != IPPROTO_TCP {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let (Some(n), Some(len)) = (f.u8(l4), f.u8(l4 + 1)) else {
                    return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
                };
                next = n;
                l4 += (len as usize + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let first = f.be16(l4 + 2).is_some_and(|o| o & 0xfff8 == 0);
                let inner = f.u8(l4);
                let to_port = first
                    && inner == Some(IPPROTO_TCP)
                    && f.be16(l4 + 8 + 2)
                        .is_some_and(|p| tables.is_protected_port(p));
                if to_port || tables.is_asset(&key.server) {
                    return IpOutcome::Verdict(Decision::drop(Reason::IpFragment));
                }
                return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
            }
            _ => break,
        }
        i += 1;
    }
    if next != IPPROTO_TCP {
        if tables.is_asset(&key.server) && i > 0 {
            return IpOutcome::Verdict(Decision::drop(Reason::Ipv6Extension));
        }
        return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
    }
    lay.l4 = l4;
    IpOutcome::Tcp { ip_end, key }
}
