//! The TCP normalizer: what the gateway must know of a connection so that the
//! byte stream the server's TCP delivers to its Modbus server holds only
//! ADUs the policy allows, whatever a client inside a conduit sends.
//!
//! Threat model: the attacker controls a client (its addresses, ports,
//! sequence numbers, flags, checksums and timing) but not the server, and
//! cannot inject on the asset's side of the gateway. Rules, each checkable
//! against RFC 9293 (TCP), RFC 5961 (blind in-window attacks) and RFC 1122:
//! - **Handshake** ([`client_syn`], [`server_segment`], [`complete_handshake`]):
//!   a connection is tracked only once the server's SYN-ACK acknowledged the
//!   client's ISN + 1 and the client's ACK carries ISN + 1 and the server's
//!   ISN + 1. Until then no client data passes. A SYN never moves an open
//!   connection (the server answers it with a challenge ACK, RFC 5961 §4); a
//!   tuple is reused only after both FINs, a RST, or our own reset.
//! - **Judged stream** ([`FlowState`]): `judged_end` is the next byte to
//!   judge, always an ADU boundary; `acked` is the highest byte the server
//!   acknowledged. A server never delivers a byte twice and discards bytes
//!   below its `RCV.NXT` (RFC 9293 §3.10.7.4), so:
//!   - bytes at or below `acked` pass unjudged (keep-alives, old duplicates);
//!   - bytes in `[acked, judged_end)` may still be missing at the server, and
//!     a receiver may keep any copy of them (Linux replaces queued
//!     out-of-order data with a newer covering copy; lwIP trims and keeps
//!     the first): every copy must equal the judged bytes. Judged segments
//!     are recorded with a keyed hash ([`crate::stream_hash`]); a
//!     retransmission must cover whole records and hash to their sum;
//!   - new bytes are judged from `judged_end`, an ADU boundary, so the
//!     gateway and the server parse the same ADUs;
//!   - bytes ahead of `judged_end` are dropped silently: the client
//!     retransmits the missing bytes first (out of order is not a denial).
//! - **State changes need the server's word**: a bad checksum cannot open a
//!   bypass, because no state change lets unjudged bytes through: a client
//!   RST closes the tracked connection only at exactly `judged_end` (where
//!   the server would accept it), after which data is denied as unknown, and
//!   establishment needs the server's SYN-ACK, which arrives only from the
//!   asset's zone.
//! - **Answers** pass only on tracked connections, from the asset's zone.

use crate::{
    decide::{AduRun, Decision, Flows, Layout, Policy},
    frame::Frame,
    reason::{Action, Reason},
    stream_hash,
    types::{
        Conduit, FLOW_DROPPED, FLOW_RESETTING, FlowKey, FlowState, HALF_OPEN_SYN,
        HALF_OPEN_SYN_ACK, HalfOpen, MODE_MONITOR, ON_DENY_RESET, STAT_DUPLICATE, STAT_ESTABLISHED,
        STAT_FLOW_TABLE_FULL, STAT_HALF_OPEN, STAT_OUT_OF_ORDER, STAT_UNVERIFIABLE,
        STAT_WINDOW_FULL, STREAM_RECORDS, StreamKey,
    },
};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// `a < b` in sequence space (RFC 9293 §3.4).
#[inline(always)]
pub const fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline(always)]
pub const fn seq_le(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}

#[inline(always)]
const fn in_zone(zones: u64, zone: u8) -> bool {
    (zones >> (zone & 63)) & 1 == 1
}

/// What [`client_segment`] found: a verdict, or bytes to judge.
pub(crate) struct ClientOut {
    pub verdict: Decision,
    pub pending: Pending,
}

/// True when the segment's new bytes are to be judged (described in
/// `out.pending`), false with the verdict in `out.verdict`.
#[inline(always)]
pub(crate) fn client_segment<P: Policy + ?Sized, F: Flows + ?Sized>(
    f: &Frame,
    lay: &Layout,
    policy: &P,
    flows: &mut F,
    conduit: &Conduit,
    out: &mut ClientOut,
) -> bool {
    match client_step(f, lay, policy, flows, conduit) {
        Step::Done(verdict) => {
            out.verdict = verdict;
            false
        }
        Step::Judge(p) => {
            out.pending = p;
            true
        }
    }
}

#[inline(always)]
fn client_step<P: Policy + ?Sized, F: Flows + ?Sized>(
    f: &Frame,
    lay: &Layout,
    policy: &P,
    flows: &mut F,
    conduit: &Conduit,
) -> Step {
    let (key, flags) = (&lay.key, lay.flags);
    if !in_zone(policy.ingress_zones(), conduit.client_zone) {
        return Step::Done(Decision::drop(Reason::Spoofed));
    }
    let len = lay.payload_len as u32;
    if flags & TCP_SYN != 0 {
        return Step::Done(client_syn(flows, conduit, key, flags, lay.seq, len));
    }
    if flows.flow_mut(key).is_none() {
        complete_handshake(flows, conduit, key, flags, lay);
    }
    let stream_key = policy.stream_key();
    let Some(flow) = flows.flow_mut(key) else {
        if len == 0 || flags & TCP_RST != 0 {
            // Nothing here reaches the server's application (a RST's payload
            // is never delivered); the server answers a stray ACK or FIN with
            // a RST of its own.
            return Step::Done(Decision::pass(Reason::TcpControl));
        }
        return Step::Done(deny_untracked(conduit, Reason::UnknownFlow, lay));
    };
    let out = established(f, policy, &stream_key, flow, conduit, flags, lay);
    if let Some(stat) = out.stat {
        flows.count(stat);
    }
    if out.close {
        flows.remove_flow(key);
    }
    out.step
}

/// What [`established`] decided, and what to do to the tables afterwards
/// (the connection's state is borrowed while it runs).
struct Outcome {
    step: Step,
    stat: Option<u32>,
    close: bool,
}

impl Outcome {
    const fn of(decision: Decision) -> Self {
        Self::of_step(Step::Done(decision))
    }

    const fn of_step(step: Step) -> Self {
        Self {
            step,
            stat: None,
            close: false,
        }
    }

    const fn counted(decision: Decision, stat: u32) -> Self {
        Self {
            step: Step::Done(decision),
            stat: Some(stat),
            close: false,
        }
    }
}

#[inline(always)]
fn client_syn<F: Flows + ?Sized>(
    flows: &mut F,
    conduit: &Conduit,
    key: &FlowKey,
    flags: u8,
    seq: u32,
    len: u32,
) -> Decision {
    if len > 0 {
        // TCP Fast Open data: nothing judges it, so it does not pass.
        return deny_stateless(conduit, Reason::SynData);
    }
    if flags & TCP_ACK != 0 {
        // A SYN-ACK from the client side (simultaneous open): no Modbus
        // server opens connections to its clients.
        return Decision::silent(Reason::TcpControl);
    }
    if let Some(flow) = flows.flow_mut(key) {
        let closed = (flow.client_fin != 0 && flow.server_fin != 0) || flow.state == FLOW_RESETTING;
        if !closed {
            // The server answers with a challenge ACK and keeps its state;
            // so does the gateway.
            return Decision::pass(Reason::TcpControl);
        }
        flows.remove_flow(key);
    }
    if flows
        .half_open(key)
        .is_some_and(|h| h.client_isn == seq && h.state == HALF_OPEN_SYN_ACK)
    {
        // A retransmitted SYN (its SYN-ACK was lost behind us): the server's
        // ISN stays known, and the server answers with the same SYN-ACK.
        return Decision::pass(Reason::TcpControl);
    }
    flows.set_half_open(
        key,
        &HalfOpen {
            client_isn: seq,
            server_isn: 0,
            state: HALF_OPEN_SYN,
            server_zone: conduit.server_zone,
            _pad: [0; 2],
        },
    );
    flows.count(STAT_HALF_OPEN);
    Decision::pass(Reason::TcpControl)
}

/// The client's ACK that completes a handshake the server accepted.
#[inline(always)]
fn complete_handshake<F: Flows + ?Sized>(
    flows: &mut F,
    conduit: &Conduit,
    key: &FlowKey,
    flags: u8,
    lay: &Layout,
) {
    if flags & (TCP_ACK | TCP_RST) != TCP_ACK {
        return;
    }
    let Some(h) = flows.half_open(key) else {
        return;
    };
    let next = h.client_isn.wrapping_add(1);
    if h.state != HALF_OPEN_SYN_ACK || lay.seq != next || lay.ack != h.server_isn.wrapping_add(1) {
        return;
    }
    flows.remove_half_open(key);
    if flows.establish(key, next, conduit.id, conduit.server_zone) {
        flows.count(STAT_ESTABLISHED);
    } else {
        flows.count(STAT_FLOW_TABLE_FULL);
    }
}

/// A client segment on a tracked connection.
#[inline(always)]
fn established<P: Policy + ?Sized>(
    f: &Frame,
    policy: &P,
    stream_key: &StreamKey,
    flow: &mut FlowState,
    conduit: &Conduit,
    flags: u8,
    lay: &Layout,
) -> Outcome {
    let seq = lay.seq;
    let len = lay.payload_len as u32;
    if flow.state == FLOW_RESETTING {
        if flags & TCP_RST != 0 {
            return Outcome::of(Decision::silent(Reason::ResetRepeat));
        }
        // The server already got a RST; answer the client so it reconnects.
        let mut d = Decision::silent(Reason::ResetRepeat);
        if lay.rst_ok {
            d.action = Action::ResetClient;
        }
        return Outcome::of(d);
    }
    if flow.state == FLOW_DROPPED && len > 0 {
        return Outcome::of(Decision::silent(Reason::DeniedRepeat));
    }
    if flags & TCP_URG != 0 {
        return Outcome::of(deny(flow, conduit, Reason::TcpUrgent, lay));
    }
    if flags & TCP_RST != 0 {
        let mut out = Outcome::of(Decision::pass(Reason::TcpControl));
        // RFC 5961 §3.2: the server resets only at exactly RCV.NXT.
        out.close = seq == flow.judged_end;
        return out;
    }
    if len == 0 {
        if flags & TCP_FIN != 0 && seq == flow.judged_end {
            flow.client_fin = 1;
        }
        return Outcome::of(Decision::pass(Reason::TcpControl));
    }
    if !stream_hash::key_is_set(stream_key) {
        return Outcome::of(deny(flow, conduit, Reason::NoStreamKey, lay));
    }
    let end = seq.wrapping_add(len);
    let judged = flow.judged_end;
    // Offset in the payload of the first byte not judged yet.
    let mut new_off = 0;
    if seq_lt(seq, judged) {
        if seq_le(end, flow.acked) {
            return Outcome::counted(Decision::pass(Reason::Duplicate), STAT_DUPLICATE);
        }
        let from = if seq_lt(seq, flow.acked) {
            flow.acked
        } else {
            seq
        };
        let to = if seq_lt(judged, end) { judged } else { end };
        // Bytes in [from, to) may still be missing at the server: compare
        // them. None at all (the server acknowledged everything judged) and
        // only the new bytes after `judged` are left.
        if from != to {
            let Some(expected) = recorded_hash(flow, from, to) else {
                return Outcome::counted(Decision::silent(Reason::Unverifiable), STAT_UNVERIFIABLE);
            };
            let at = stream_hash::position(flow, from);
            let power = stream_hash::pack(
                stream_hash::pow(stream_key.r[0], at),
                stream_hash::pow(stream_key.r[1], at),
            );
            let (copy, _) = policy.hash_range(
                f,
                lay.payload + from.wrapping_sub(seq) as usize,
                to.wrapping_sub(from) as usize,
                stream_key,
                power,
            );
            if copy != expected {
                return Outcome::of(deny(flow, conduit, Reason::RetransmitMismatch, lay));
            }
        }
        if seq_le(end, judged) {
            return Outcome::of(Decision::pass(Reason::Retransmission));
        }
        new_off = judged.wrapping_sub(seq) as usize;
    } else if seq != judged {
        return Outcome::counted(Decision::silent(Reason::OutOfOrder), STAT_OUT_OF_ORDER);
    }
    forget_acked(flow);
    if flow.count as usize >= STREAM_RECORDS {
        return Outcome::counted(Decision::silent(Reason::WindowFull), STAT_WINDOW_FULL);
    }
    let new_len = end.wrapping_sub(judged) as usize;
    let (hash, end_power) = policy.hash_range(
        f,
        lay.payload + new_off,
        new_len,
        stream_key,
        flow.next_power,
    );
    Outcome::of_step(Step::Judge(Pending {
        off: lay.payload + new_off,
        len: new_len,
        start: judged,
        end,
        hash,
        end_power,
        fin: flags & TCP_FIN != 0,
    }))
}

/// What the normalizer asks for when a segment carries new bytes: judge the
/// ADUs of `len` bytes at frame offset `off`, then [`commit`]. The ADU loop
/// runs between the two, at the top of the decision, where the kernel's
/// `bpf_loop` callback finds the most stack room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub off: usize,
    pub len: usize,
    /// Stream range of the new bytes: `[start, end)`, `start` the old `judged_end`.
    pub start: u32,
    pub end: u32,
    pub hash: u64,
    /// The stream hash powers at `end` ([`FlowState::next_power`]).
    pub end_power: u64,
    pub fin: bool,
}

enum Step {
    Done(Decision),
    Judge(Pending),
}

/// Records judged bytes that pass (allowed, or a conduit in monitor mode),
/// or applies the denial of the first denied ADU.
#[inline(never)]
pub(crate) fn commit<F: Flows + ?Sized>(
    lay: &Layout,
    flows: &mut F,
    conduit: &Conduit,
    p: &Pending,
    run: &AduRun,
) -> Decision {
    let Some(flow) = flows.flow_mut(&lay.key) else {
        // Evicted while its ADUs were judged: nothing passes untracked.
        return Decision::silent(Reason::UnknownFlow);
    };
    // Another CPU may have moved this connection on while the ADUs were
    // judged: record only onto the state they were judged against.
    if flow.judged_end != p.start {
        return Decision::silent(Reason::OutOfOrder);
    }
    if flow.count as usize >= STREAM_RECORDS {
        return Decision::silent(Reason::WindowFull);
    }
    let mut d = Decision::pass(Reason::Allowed);
    d.has_adu = run.has_adu;
    d.adu = run.adu;
    if run.reason != Reason::Allowed {
        let denied = deny(flow, conduit, run.reason, lay);
        d.action = denied.action;
        d.reason = denied.reason;
        d.event = denied.event;
        d.monitor = denied.monitor;
        d.rst_seq = denied.rst_seq;
        if !d.monitor {
            return d;
        }
    }
    d.allowed_adus = run.allowed;
    record(flow, p.start, p.hash);
    flow.judged_end = p.end;
    flow.next_power = p.end_power;
    if p.fin {
        flow.client_fin = 1;
    }
    d
}

/// A segment from a conduit port toward a client: valid only on a tracked
/// connection (or as the SYN-ACK or refusal of one being opened), arriving
/// from the asset's zone. Its ACK tells how much of the judged stream the
/// server holds. Not inlined: in the kernel it is a subprogram with a stack
/// frame of its own.
#[inline(never)]
pub(crate) fn server_segment<P: Policy + ?Sized, F: Flows + ?Sized>(
    lay: &Layout,
    policy: &P,
    flows: &mut F,
) -> Decision {
    let (key, flags) = (&lay.key, lay.flags);
    let zones = policy.ingress_zones();
    if let Some(flow) = flows.flow_mut(key) {
        if !in_zone(zones, flow.server_zone) {
            return Decision::drop(Reason::Spoofed);
        }
        let mut d = Decision::pass(Reason::Response);
        d.conduit = flow.conduit;
        if flags & TCP_ACK != 0 {
            note_ack(flow, lay.ack);
        }
        if flags & TCP_FIN != 0 {
            flow.server_fin = 1;
        }
        if flags & TCP_RST != 0 {
            flows.remove_flow(key);
        }
        return d;
    }
    let Some(mut h) = flows.half_open(key) else {
        return no_flow(flags, lay);
    };
    if !in_zone(zones, h.server_zone) {
        return Decision::drop(Reason::Spoofed);
    }
    if flags & TCP_RST != 0 {
        // The server refused the connection.
        flows.remove_half_open(key);
        return Decision::pass(Reason::Response);
    }
    let syn_ack = flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
    if syn_ack && lay.ack == h.client_isn.wrapping_add(1) && lay.payload_len == 0 {
        h.server_isn = lay.seq;
        h.state = HALF_OPEN_SYN_ACK;
        flows.set_half_open(key, &h);
        return Decision::pass(Reason::Response);
    }
    no_flow(flags, lay)
}

/// From a conduit port, not on a tracked connection: dropped. Reported when
/// it carries data or opens a connection (an asset reaching out to a client);
/// a bare ACK, FIN or RST is what a server sends after a close that removed
/// the connection (duplicates, retransmitted FINs), and only counted.
#[inline(always)]
fn no_flow(flags: u8, lay: &Layout) -> Decision {
    if lay.payload_len == 0 && flags & TCP_SYN == 0 {
        Decision::silent(Reason::NoFlow)
    } else {
        Decision::drop(Reason::NoFlow)
    }
}

/// Moves `acked` forward to what the server acknowledged, never past what
/// the gateway passed (an ACK of its FIN counts one more). Only `acked` is
/// written here: the records belong to the client side, which drops the
/// acknowledged ones itself (see [`FlowState`] on concurrency).
#[inline(always)]
fn note_ack(flow: &mut FlowState, ack: u32) {
    let judged = flow.judged_end;
    if seq_lt(flow.acked, ack) && seq_le(ack, judged.wrapping_add(1)) {
        flow.acked = if seq_lt(judged, ack) { judged } else { ack };
    }
}

/// Where record `i` (0 = oldest live) ends.
#[inline(always)]
fn record_end(flow: &FlowState, i: usize) -> u32 {
    if i + 1 < flow.count as usize {
        flow.rec_start[(flow.head as usize + i + 1) % STREAM_RECORDS]
    } else {
        flow.judged_end
    }
}

/// Drops records the server has acknowledged completely.
#[inline(always)]
fn forget_acked(flow: &mut FlowState) {
    let mut i = 0;
    while i < STREAM_RECORDS {
        if flow.count == 0 || !seq_le(record_end(flow, 0), flow.acked) {
            break;
        }
        flow.head = ((flow.head as usize + 1) % STREAM_RECORDS) as u8;
        flow.count -= 1;
        i += 1;
    }
}

#[inline(always)]
fn record(flow: &mut FlowState, start: u32, hash: u64) {
    let slot = (flow.head as usize + flow.count as usize) % STREAM_RECORDS;
    flow.rec_start[slot] = start;
    flow.rec_hash[slot] = hash;
    flow.count += 1;
}

/// The sum of the hashes of the records that exactly cover `[from, to)`, or
/// `None` when `from` or `to` falls inside a record (or outside them all).
#[inline(always)]
fn recorded_hash(flow: &FlowState, from: u32, to: u32) -> Option<u64> {
    let mut sum = 0u64;
    let mut started = false;
    let mut i = 0;
    while i < STREAM_RECORDS {
        if i >= flow.count as usize {
            break;
        }
        let slot = (flow.head as usize + i) % STREAM_RECORDS;
        let end = record_end(flow, i);
        if !started && flow.rec_start[slot] == from {
            started = true;
        }
        if started {
            sum = stream_hash::add(sum, flow.rec_hash[slot]);
            if end == to {
                return Some(sum);
            }
            if seq_lt(to, end) {
                return None;
            }
        }
        i += 1;
    }
    None
}

/// A denial on a tracked connection, by the conduit's mode and action.
#[inline(always)]
fn deny(flow: &mut FlowState, conduit: &Conduit, reason: Reason, lay: &Layout) -> Decision {
    let mut d = Decision::drop(reason);
    if conduit.mode == MODE_MONITOR {
        d.action = Action::Pass;
        d.monitor = true;
        return d;
    }
    if conduit.on_deny == ON_DENY_RESET && lay.rst_ok {
        d.action = Action::ResetServer;
        // Where the server's RCV.NXT most likely is: after everything passed,
        // unless the client is retransmitting (then bytes were lost, and the
        // server holds what it acknowledged).
        d.rst_seq = if reason == Reason::RetransmitMismatch {
            flow.acked
        } else {
            flow.judged_end
        };
        flow.state = FLOW_RESETTING;
        return d;
    }
    // Silent drop: the connection stalls; its retransmissions are dropped
    // without a new event.
    flow.state = FLOW_DROPPED;
    flow.denied_seq = lay.seq;
    d
}

/// A denial where no connection is tracked: nothing to record.
#[inline(always)]
fn deny_untracked(conduit: &Conduit, reason: Reason, lay: &Layout) -> Decision {
    let mut d = deny_stateless(conduit, reason);
    if d.action == Action::Drop && conduit.on_deny == ON_DENY_RESET && lay.rst_ok {
        d.action = Action::ResetServer;
        d.rst_seq = lay.seq;
    }
    d
}

#[inline(always)]
fn deny_stateless(conduit: &Conduit, reason: Reason) -> Decision {
    let mut d = Decision::drop(reason);
    if conduit.mode == MODE_MONITOR {
        d.action = Action::Pass;
        d.monitor = true;
    }
    d
}
