//! Per-connection stream tracking for client -> server segments.
//!
//! The server reassembles a byte stream; the gateway judges segments. The two
//! views agree only while every judged segment starts where the previous one
//! ended, so anything that could make them diverge fails closed: a segment
//! that partly overlaps bytes already judged (Ptacek & Newsham's overlap
//! evasion), new data ahead of the next expected byte, URG, and data on a
//! connection whose handshake the gateway never saw. TCP retransmits in order,
//! so none of this fires in normal operation. An exact retransmission of the
//! last judged segment is judged again (its content may differ: the first copy
//! may have been lost behind the gateway).

use crate::{
    decide::{AduObserver, AduProgress, Decision, Layout, Tables},
    frame::Frame,
    modbus::{AduInfo, judge_adu},
    reason::{Action, Reason},
    types::{
        Conduit, FLOW_DROPPED, FLOW_OPEN, FLOW_RESETTING, FlowKey, FlowState, MAX_ADUS,
        MODE_MONITOR, ON_DENY_RESET,
    },
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;

#[inline(always)]
pub(crate) fn judge_client_segment<T: Tables + ?Sized, O: AduObserver>(
    f: &Frame,
    tables: &mut T,
    obs: &mut O,
    conduit: &Conduit,
    key: &FlowKey,
    flags: u8,
    lay: &Layout,
) -> Decision {
    let seq = lay.seq;
    let len = lay.payload_len as u32;
    if flags & TCP_RST != 0 {
        return Decision::pass(Reason::TcpControl);
    }
    if flags & TCP_SYN != 0 {
        if len > 0 {
            return deny(tables, conduit, key, None, Reason::SynData, lay);
        }
        if flags & TCP_ACK == 0 {
            let next = seq.wrapping_add(1);
            let fresh = FlowState {
                next_seq: next,
                last_start: next,
                denied_seq: 0,
                state: FLOW_OPEN,
                _pad: [0; 3],
            };
            tables.set_flow(key, &fresh);
        }
        return Decision::pass(Reason::TcpControl);
    }
    let state = tables.flow(key);
    if let Some(s) = state
        && s.state == FLOW_RESETTING
    {
        // The server already got a RST; answer the client so it reconnects.
        let mut d = Decision::pass(Reason::ResetRepeat);
        d.action = if lay.rst_ok {
            Action::ResetClient
        } else {
            Action::Drop
        };
        return d;
    }
    if flags & TCP_URG != 0 {
        return deny(tables, conduit, key, state, Reason::TcpUrgent, lay);
    }
    let Some(s) = state else {
        if len == 0 {
            return Decision::pass(Reason::TcpControl);
        }
        return deny(tables, conduit, key, None, Reason::UnknownFlow, lay);
    };
    if len == 0 {
        return Decision::pass(Reason::TcpControl);
    }
    let ahead = seq.wrapping_sub(s.next_seq) as i32;
    let retransmit = seq == s.last_start && seq.wrapping_add(len) == s.next_seq;
    if ahead != 0 && !retransmit {
        if ahead > 0 {
            // Silent: the missing bytes will be retransmitted, then this.
            return Decision::drop(Reason::OutOfOrder);
        }
        return deny(tables, conduit, key, state, Reason::TcpOverlap, lay);
    }
    let retransmit = tables.forget(retransmit);
    let d = judge_payload(f, tables, obs, conduit, lay);
    let mut d = tables.forget(d);
    if d.reason == Reason::Allowed {
        if !retransmit {
            let fin = if flags & TCP_FIN != 0 { 1 } else { 0 };
            let next = FlowState {
                next_seq: seq.wrapping_add(len).wrapping_add(fin),
                last_start: seq,
                denied_seq: 0,
                state: FLOW_OPEN,
                _pad: [0; 3],
            };
            tables.set_flow(key, &next);
        }
        return d;
    }
    let denied = deny(tables, conduit, key, state, d.reason, lay);
    d.action = denied.action;
    d.event = denied.event;
    d.monitor = denied.monitor;
    if d.monitor && !retransmit {
        // Monitor mode passes the segment: the stream moves on past it.
        let next = FlowState {
            next_seq: seq.wrapping_add(len),
            last_start: seq,
            denied_seq: 0,
            state: FLOW_OPEN,
            _pad: [0; 3],
        };
        tables.set_flow(key, &next);
    }
    d
}

/// Judges every ADU of the segment; the first denied one decides.
#[inline(always)]
fn judge_payload<T: Tables + ?Sized, O: AduObserver>(
    f: &Frame,
    tables: &mut T,
    obs: &mut O,
    conduit: &Conduit,
    lay: &Layout,
) -> Decision {
    let mut d = Decision::pass(Reason::Allowed);
    if lay.payload + lay.payload_len > f.len() {
        d.reason = Reason::Oversize;
        return d;
    }
    let mut progress = AduProgress::default();
    let mut i = 0;
    while i < MAX_ADUS {
        let consumed = progress.consumed;
        if consumed >= lay.payload_len {
            break;
        }
        let v = judge_adu(
            f,
            lay.payload + consumed,
            lay.payload_len - consumed,
            conduit,
            &*tables,
        );
        obs.adu(conduit.id, &v);
        if v.reason != Reason::Allowed {
            d.reason = v.reason;
            d.has_adu = v.len > 0;
            d.adu = if v.len > 0 {
                v.info
            } else {
                AduInfo::default()
            };
            d.allowed_adus = progress.allowed;
            return d;
        }
        progress = tables.forget(AduProgress {
            consumed: consumed + v.len,
            allowed: progress.allowed + 1,
            last: v.info,
        });
        i += 1;
    }
    d.has_adu = progress.allowed > 0;
    d.adu = progress.last;
    d.allowed_adus = progress.allowed;
    let consumed = progress.consumed;
    if consumed < lay.payload_len {
        d.reason = Reason::TooManyAdus;
        d.has_adu = false;
    }
    d
}

/// The verdict for a denied client segment, by the conduit's mode and action.
/// Records in the flow state what later packets of the connection need.
#[inline(always)]
fn deny<T: Tables + ?Sized>(
    tables: &mut T,
    conduit: &Conduit,
    key: &FlowKey,
    state: Option<FlowState>,
    reason: Reason,
    lay: &Layout,
) -> Decision {
    let mut d = Decision::drop(reason);
    if conduit.mode == MODE_MONITOR {
        d.action = Action::Pass;
        d.monitor = true;
        return d;
    }
    let next_seq = match state {
        Some(s) => s.next_seq,
        None => lay.seq,
    };
    if conduit.on_deny == ON_DENY_RESET && lay.rst_ok {
        d.action = Action::ResetServer;
        let s = FlowState {
            next_seq,
            last_start: next_seq,
            denied_seq: lay.seq,
            state: FLOW_RESETTING,
            _pad: [0; 3],
        };
        tables.set_flow(key, &s);
        return d;
    }
    // Silent drop: retransmissions of the same segment are one event. A
    // connection the gateway never saw gets no state: its stream position is
    // unknown, so nothing on it may ever be judged as in order.
    let Some(prev) = state else {
        return d;
    };
    if let Some(s) = state
        && s.state == FLOW_DROPPED
        && s.denied_seq == lay.seq
    {
        d.event = false;
    }
    let s = FlowState {
        next_seq,
        last_start: prev.last_start,
        denied_seq: lay.seq,
        state: FLOW_DROPPED,
        _pad: [0; 3],
    };
    tables.set_flow(key, &s);
    d
}
