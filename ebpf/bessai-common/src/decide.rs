//! The decision function: one frame in, one verdict out.
//!
//! Parsing order: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 or IPv6, TCP,
//! then conduit lookup, TCP stream tracking ([`crate::tcp_flow`]) and the
//! Modbus ADUs ([`crate::modbus`]). Anything on a conduit port that cannot be
//! judged is dropped with its own [`Reason`].

use crate::{
    frame::Frame,
    modbus::{AduInfo, AduVerdict, judge_adu},
    reason::{Action, Reason},
    tcp_flow,
    types::{
        Addr, Conduit, ConduitKey, FlowKey, FlowState, HalfOpen, MAX_ADUS, NO_CONDUIT, Rule,
        StreamKey,
    },
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

/// The policy as the decision reads it: lookups only. The XDP program
/// implements them with BPF maps, the host with in-memory tables compiled
/// from the same policy.
pub trait Policy {
    /// The policy generation in force (see [`crate::types::GENERATIONS`]);
    /// the host tables hold one policy, generation 0.
    fn generation(&self) -> u8 {
        0
    }
    fn is_protected_port(&self, port: u16) -> bool;
    /// True for the address of any asset behind a conduit.
    fn is_asset(&self, addr: &Addr) -> bool;
    /// Longest-prefix match on the source, exact on destination and port.
    fn conduit(&self, key: &ConduitKey) -> Option<&Conduit>;
    fn rule(&self, key: &crate::types::RuleKey) -> Option<&Rule>;
    /// Zones of the interface the frame arrived on, one bit per zone index
    /// (see [`Conduit::client_zone`]). The host, which replays captures
    /// without interfaces, answers every zone.
    fn ingress_zones(&self) -> u64;
    /// The per-boot secret of [`crate::stream_hash`].
    fn stream_key(&self) -> StreamKey;

    /// Judges the ADUs of `len` bytes of client data at `off`. The kernel
    /// runs the same steps ([`adu_step`]) under `bpf_loop`, so that the number
    /// of ADUs is bounded by the segment, not by the verifier.
    #[inline(always)]
    fn judge_adus<O: AduObserver>(
        &self,
        f: &Frame,
        conduit: &Conduit,
        off: usize,
        len: usize,
        obs: &mut O,
    ) -> AduRun {
        let mut run = AduRun::new(off, len);
        let mut i = 0;
        while i < MAX_ADUS && adu_step(f, self, conduit, &mut run, obs) {
            i += 1;
        }
        run.finish()
    }

    /// The stream hash of `len` bytes at frame offset `off`, the first at
    /// the position whose powers are `power` ([`crate::stream_hash`]), and
    /// the powers after them. The kernel runs the same steps under `bpf_loop`.
    #[inline(always)]
    fn hash_range(
        &self,
        f: &Frame,
        off: usize,
        len: usize,
        key: &StreamKey,
        power: u64,
    ) -> (u64, u64) {
        crate::stream_hash::hash_range(f, off, len, key, power)
    }

    /// Returns `v` unchanged. The eBPF side routes it through map memory,
    /// whose contents the verifier does not track, so that the paths that
    /// reach a merge point continue as one state instead of each re-verifying
    /// everything after it: this keeps the program inside the verifier's budget.
    #[inline(always)]
    fn forget<V: Copy>(&self, v: V) -> V {
        v
    }
}

/// Connection state: what the normalizer ([`crate::tcp_flow`]) keeps per
/// flow. The kernel keeps established and half-open connections in separate
/// tables, so that SYNs can never evict an established connection.
pub trait Flows {
    fn flow_mut(&mut self, key: &FlowKey) -> Option<&mut FlowState>;
    /// Starts tracking an established connection (see
    /// [`FlowState::established`]); false when the table is full.
    fn establish(&mut self, key: &FlowKey, next: u32, conduit: u16, server_zone: u8) -> bool;
    fn remove_flow(&mut self, key: &FlowKey);
    fn half_open(&self, key: &FlowKey) -> Option<HalfOpen>;
    fn set_half_open(&mut self, key: &FlowKey, h: &HalfOpen);
    fn remove_half_open(&mut self, key: &FlowKey);
    /// Adds one to a `STAT_*` counter.
    fn count(&mut self, stat: u32);
}

/// Both halves of what the decision needs, borrowed separately so that a
/// connection's state can be updated while the policy is read.
pub trait Tables {
    type Policy: Policy;
    type Flows: Flows;
    fn split(&mut self) -> (&Self::Policy, &mut Self::Flows);
}

/// One step of the ADU loop: judges the ADU at the run's position. Returns
/// false when the run is over (end of the data, or a denied ADU).
#[inline(always)]
pub fn adu_step<P: Policy + ?Sized, O: AduObserver>(
    f: &Frame,
    policy: &P,
    conduit: &Conduit,
    run: &mut AduRun,
    obs: &mut O,
) -> bool {
    if run.consumed >= run.len {
        return false;
    }
    let v = judge_adu(
        f,
        run.off + run.consumed,
        run.len - run.consumed,
        conduit,
        policy,
    );
    obs.adu(conduit.id, &v);
    if v.reason != Reason::Allowed {
        run.reason = v.reason;
        run.has_adu = v.len > 0;
        run.adu = if v.len > 0 {
            v.info
        } else {
            AduInfo::default()
        };
        return false;
    }
    run.consumed += v.len;
    run.allowed += 1;
    run.adu = v.info;
    run.has_adu = true;
    true
}

/// The ADU loop over a stretch of client data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AduRun {
    pub off: usize,
    pub len: usize,
    pub consumed: usize,
    /// ADUs allowed so far.
    pub allowed: u16,
    /// `Allowed` until an ADU is denied.
    pub reason: Reason,
    /// `adu` describes a parsed ADU: the denied one, or the last allowed.
    pub has_adu: bool,
    pub adu: AduInfo,
}

impl AduRun {
    #[inline(always)]
    pub const fn new(off: usize, len: usize) -> Self {
        Self {
            off,
            len,
            consumed: 0,
            allowed: 0,
            reason: Reason::Allowed,
            has_adu: false,
            adu: AduInfo {
                transaction: 0,
                unit: 0,
                function: 0,
                address: 0,
                quantity: 0,
                write_address: 0,
                write_quantity: 0,
                write_denied: false,
            },
        }
    }

    /// After the last step: data left unjudged is a denial of its own.
    #[inline(always)]
    pub fn finish(mut self) -> Self {
        if self.reason == Reason::Allowed && self.consumed < self.len {
            self.reason = Reason::TooManyAdus;
            self.has_adu = false;
        }
        self
    }
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
    pub flags: u8,
    /// The segment's connection, oriented client -> server (for an answer
    /// from a conduit port, its destination is the client). Kept here, in
    /// the kernel's per-CPU scratch, rather than copied from call to call.
    pub key: FlowKey,
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
    /// ADUs allowed in this segment (counted only when the segment passes).
    pub allowed_adus: u16,
    /// `ResetServer`: the sequence number of the RST, the server's expected
    /// next byte as the gateway tracks it (RFC 5961 accepts only that one).
    pub rst_seq: u32,
}

impl Layout {
    /// Source and destination address (IPv4 mapped), read again from the frame
    /// so that they need not be carried through the decision.
    #[inline(always)]
    pub fn addrs(&self, f: &Frame) -> (Addr, Addr) {
        let (mut src, mut dst) = ([0; 16], [0; 16]);
        self.src_into(f, &mut src);
        self.dst_into(f, &mut dst);
        (src, dst)
    }

    /// The source address into `out`, in place (zero when unreadable).
    #[inline(always)]
    pub fn src_into(&self, f: &Frame, out: &mut Addr) {
        let off = if self.ipv6 { self.l3 + 8 } else { self.l3 + 12 };
        if !f.addr_into(off, self.ipv6, out) {
            *out = [0; 16];
        }
    }

    /// The destination address into `out`, in place (zero when unreadable).
    #[inline(always)]
    pub fn dst_into(&self, f: &Frame, out: &mut Addr) {
        let off = if self.ipv6 {
            self.l3 + 24
        } else {
            self.l3 + 16
        };
        if !f.addr_into(off, self.ipv6, out) {
            *out = [0; 16];
        }
    }

    /// Back to the state before parsing, field by field (a `Layout` built
    /// and copied would cost the kernel its size in stack).
    #[inline(always)]
    pub fn reset(&mut self) {
        self.l3 = 0;
        self.l4 = 0;
        self.payload = 0;
        self.payload_len = 0;
        self.ipv6 = false;
        self.rst_ok = false;
        self.src_port = 0;
        self.dst_port = 0;
        self.seq = 0;
        self.ack = 0;
        self.flags = 0;
        self.key.client_port = 0;
        self.key.server_port = 0;
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
                write_denied: false,
            },
            allowed_adus: 0,
            rst_seq: 0,
        }
    }

    pub(crate) const fn pass(reason: Reason) -> Self {
        Self::new(Action::Pass, reason)
    }

    /// A drop without an event: TCP recovers by itself, or the denial was
    /// already reported.
    pub(crate) const fn silent(reason: Reason) -> Self {
        Self::new(Action::Drop, reason)
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
    let (policy, flows) = tables.split();
    decide_with(f, policy, flows, obs, lay)
}

/// Headers first, then the client or server side of a conduit. Each part is
/// a kernel subprogram with its own stack frame: the verifier limits the
/// frames of one call chain to 512 bytes together, and no single inlined
/// function of all of it would fit.
#[inline(always)]
fn decide_with<P: Policy + ?Sized, F: Flows + ?Sized, O: AduObserver>(
    f: &Frame,
    tables: &P,
    flows: &mut F,
    obs: &mut O,
    lay: &mut Layout,
) -> Decision {
    // Results come back through out-parameters and plain return values:
    // an enum returned from a kernel subprogram is written with undefined
    // bytes in its unused variant, which the verifier rejects.
    let mut d = Decision::pass(Reason::NotConduit);
    if !parse_headers(f, tables, lay, &mut d) {
        return d;
    }
    let (src_port, dst_port) = (lay.src_port, lay.dst_port);
    if tables.is_protected_port(dst_port) {
        fill_addrs(f, lay);
        lay.key.client_port = src_port;
        lay.key.server_port = dst_port;
        let mut out = tcp_flow::ClientOut {
            verdict: d,
            pending: tcp_flow::Pending::default(),
        };
        let Some(conduit) = client_side(f, lay, tables, flows, &mut out) else {
            return out.verdict;
        };
        let p = &out.pending;
        let run = tables.judge_adus(f, conduit, p.off, p.len, obs);
        let mut d = tcp_flow::commit(lay, flows, conduit, p, &run);
        d.conduit = conduit.id;
        return d;
    }
    if tables.is_protected_port(src_port) {
        // From a conduit port: an answer, valid only on a tracked connection.
        fill_addrs(f, lay);
        let k = &mut lay.key;
        core::mem::swap(&mut k.client, &mut k.server);
        k.client_port = dst_port;
        k.server_port = src_port;
        return tcp_flow::server_segment(lay, tables, flows);
    }
    Decision::pass(Reason::NotConduit)
}

/// A segment toward a conduit port: the conduit, then the normalizer. Its
/// conduit when the segment's new bytes are to be judged (`out.pending`),
/// else `None` with the verdict in `out.verdict`.
#[inline(never)]
fn client_side<'p, P: Policy + ?Sized, F: Flows + ?Sized>(
    f: &Frame,
    lay: &Layout,
    tables: &'p P,
    flows: &mut F,
    out: &mut tcp_flow::ClientOut,
) -> Option<&'p Conduit> {
    let key = &lay.key;
    let Some(conduit) = tables.conduit(&ConduitKey::new(
        tables.generation(),
        key.server,
        key.server_port,
        key.client,
    )) else {
        out.verdict = Decision::drop(Reason::NoConduit);
        return None;
    };
    if tcp_flow::client_segment(f, lay, tables, flows, conduit, out) {
        return Some(conduit);
    }
    out.verdict.conduit = conduit.id;
    None
}

/// Ethernet, IP and TCP headers into `lay` (its key holds the packet's
/// source as `client`, ports unset): the source and destination ports, or
/// the verdict for a frame that is not a judgeable TCP segment.
#[inline(never)]
fn parse_headers<P: Policy + ?Sized>(
    f: &Frame,
    tables: &P,
    lay: &mut Layout,
    verdict: &mut Decision,
) -> bool {
    match parse_headers_into(f, tables, lay) {
        Ok(()) => true,
        Err(d) => {
            *verdict = d;
            false
        }
    }
}

#[inline(always)]
fn parse_headers_into<P: Policy + ?Sized>(
    f: &Frame,
    tables: &P,
    lay: &mut Layout,
) -> Result<(), Decision> {
    let Some(mut ethertype) = f.be16(12) else {
        // Shorter than an Ethernet header: not IP, nothing of ours.
        return Err(Decision::pass(Reason::NotConduit));
    };
    let mut l3 = 14;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = f.be16(16) else {
            return Err(Decision::drop(Reason::Malformed));
        };
        if inner == ETH_P_8021Q || inner == ETH_P_8021AD {
            return Err(Decision::drop(Reason::Encapsulation));
        }
        ethertype = inner;
        l3 = 18;
    }
    lay.l3 = l3;
    let ip = match ethertype {
        ETH_P_IPV4 => parse_ipv4(f, tables, lay),
        ETH_P_IPV6 => parse_ipv6(f, tables, lay),
        _ => return Err(Decision::pass(Reason::NotConduit)),
    };
    let ip_end = match ip {
        IpOutcome::Tcp { ip_end } => ip_end,
        IpOutcome::Verdict(d) => return Err(d),
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
        return Err(Decision::drop(Reason::Malformed));
    };
    let doff = (off_byte >> 4) as usize * 4;
    if doff < 20 || l4 + doff > ip_end {
        return Err(Decision::drop(Reason::Malformed));
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

    lay.flags = flags;
    Ok(())
}

/// The packet's addresses into `lay.key` (source as `client`), read only
/// for traffic that needs them: most frames a gateway sees are not ours.
#[inline(always)]
fn fill_addrs(f: &Frame, lay: &mut Layout) {
    let (src, dst) = if lay.ipv6 {
        (lay.l3 + 8, lay.l3 + 24)
    } else {
        (lay.l3 + 12, lay.l3 + 16)
    };
    // The IP header was checked to be complete: these reads succeed.
    let ipv6 = lay.ipv6;
    f.addr_into(src, ipv6, &mut lay.key.client);
    f.addr_into(dst, ipv6, &mut lay.key.server);
}

enum IpOutcome {
    /// TCP header at `lay.l4`; IP payload ends at `ip_end`. `lay.key` holds
    /// the packet's source as `client`, destination as `server`, ports unset.
    Tcp {
        ip_end: usize,
    },
    Verdict(Decision),
}

#[inline(always)]
fn parse_ipv4<P: Policy + ?Sized>(f: &Frame, tables: &P, lay: &mut Layout) -> IpOutcome {
    let l3 = lay.l3;
    let (Some(vihl), Some(total), Some(frag), Some(proto)) =
        (f.u8(l3), f.be16(l3 + 2), f.be16(l3 + 6), f.u8(l3 + 9))
    else {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    };
    // Masked: the verifier needs a bounded header length.
    let ihl = (vihl & 0x0f) as usize * 4;
    let total = total as usize;
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > f.wire_len() {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    }
    lay.l4 = l3 + ihl;
    lay.rst_ok = ihl == 20;
    let is_fragment = frag & 0x3fff != 0;
    if is_fragment {
        fill_addrs(f, lay);
        let first = frag & 0x1fff == 0;
        let to_port = proto == IPPROTO_TCP
            && first
            && f.be16(lay.l4 + 2)
                .is_some_and(|p| tables.is_protected_port(p));
        if to_port || tables.is_asset(&lay.key.server) {
            return IpOutcome::Verdict(Decision::drop(Reason::IpFragment));
        }
        return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
    }
    if proto != IPPROTO_TCP {
        return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
    }
    IpOutcome::Tcp { ip_end: l3 + total }
}

#[inline(always)]
fn parse_ipv6<P: Policy + ?Sized>(f: &Frame, tables: &P, lay: &mut Layout) -> IpOutcome {
    let l3 = lay.l3;
    let (Some(v), Some(plen), Some(mut next)) = (f.u8(l3), f.be16(l3 + 4), f.u8(l3 + 6)) else {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    };
    let ip_end = l3 + 40 + plen as usize;
    if v >> 4 != 6 || ip_end > f.wire_len() {
        return IpOutcome::Verdict(Decision::drop(Reason::Malformed));
    }
    lay.ipv6 = true;
    // Read at once (the extension-header checks below need the destination);
    // IPv4 reads them only for traffic of ours.
    fill_addrs(f, lay);
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
                if to_port || tables.is_asset(&lay.key.server) {
                    return IpOutcome::Verdict(Decision::drop(Reason::IpFragment));
                }
                return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
            }
            _ => break,
        }
        i += 1;
    }
    if next != IPPROTO_TCP {
        if tables.is_asset(&lay.key.server) && i > 0 {
            return IpOutcome::Verdict(Decision::drop(Reason::Ipv6Extension));
        }
        return IpOutcome::Verdict(Decision::pass(Reason::NotConduit));
    }
    lay.l4 = l4;
    IpOutcome::Tcp { ip_end }
}
