//! `policy test`: a capture replayed through the same decision function the
//! XDP program runs, one verdict per Modbus transaction.
//!
//! Every frame goes through the kernel's decision, TCP normalizer included
//! (handshakes, retransmissions compared by content, acknowledgements).
//! Two adaptations make a capture answer "what would this policy allow",
//! where the kernel would have cut the connection short:
//! - a connection whose handshake is not in the capture is picked up at its
//!   first data segment (the kernel resets it: `unknown-flow`);
//! - after a denied segment the stream continues as if the client had sent
//!   it again on a new connection, so each later transaction is judged on its
//!   own content (the kernel resets the connection at the first denial).
//!
//! Retransmissions and old duplicates pass the normalizer without being
//! judged again, so they are not reported twice. Requests are paired with
//! responses by connection and transaction id.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    path::Path,
};

use bessai_common::{
    AduObserver, Conduit, ConduitKey, FLOW_ESTABLISHED, FRAME_MAX, FlowKey, FlowState, Flows,
    HalfOpen, Layout, Policy, Reason, Tables, decide,
    frame::Frame,
    host::{HostPolicy, HostTables},
    modbus::{AduInfo, AduVerdict, judge_adu},
};
use bessai_policy::Compiled;
use serde::Serialize;

use bessai_policy::capture::{self, CaptureError, Packet};

/// Requests waiting for their response; beyond this the oldest is reported
/// without one, which keeps memory flat on long captures.
const MAX_PENDING: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    /// Capture time, seconds since the Unix epoch.
    pub ts: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transaction_id: u16,
    pub unit: u8,
    pub function: u8,
    pub address: u16,
    pub quantity: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_address: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_quantity: Option<u16>,
    pub verdict: &'static str,
    pub reason: &'static str,
    /// Conduit name, or null for traffic in no conduit.
    pub conduit: Option<String>,
    /// The conduit is in monitor mode: a denial would have passed.
    pub monitor: bool,
    /// What the server answered: "data", "exception N", or null.
    pub response: Option<String>,
}

/// Counts for the text summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub packets: u64,
    pub transactions: u64,
    pub denied: u64,
    /// Per conduit name ("-" for none): allowed, and denied by reason.
    pub by_conduit:
        std::collections::BTreeMap<String, (u64, std::collections::BTreeMap<&'static str, u64>)>,
    pub picked_up_mid_stream: u64,
    /// Segments to a conduit port denied without a parsable ADU.
    pub denied_segments_without_adu: u64,
}

/// Replays `path` against `compiled`, handing each finished transaction to
/// `sink` (in completion order). Returns the summary.
pub fn replay(
    compiled: &Compiled,
    path: &Path,
    mut sink: impl FnMut(&Transaction),
) -> Result<Summary, CaptureError> {
    let mut r = Replayer::new(compiled);
    let mut buf = Box::new([0u8; FRAME_MAX]);
    capture::for_each_packet(path, |p| r.packet(&mut buf, p, &mut sink))?;
    r.flush(&mut sink);
    Ok(r.summary)
}

type PendingKey = (FlowKey, u16);

struct Replayer<'a> {
    compiled: &'a Compiled,
    tables: HostTables,
    pending: HashMap<PendingKey, Transaction>,
    order: VecDeque<PendingKey>,
    summary: Summary,
}

/// Collects the ADUs `decide` judged in one segment.
#[derive(Default)]
struct Seen {
    adus: Vec<(u16, AduVerdict)>,
}

impl AduObserver for Seen {
    fn adu(&mut self, conduit: u16, v: &AduVerdict) {
        self.adus.push((conduit, *v));
    }
}

fn socket(a: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if bessai_common::is_ipv4_mapped(a) {
        IpAddr::from([a[12], a[13], a[14], a[15]])
    } else {
        IpAddr::from(*a)
    };
    SocketAddr::new(ip, port)
}

impl<'a> Replayer<'a> {
    fn new(compiled: &'a Compiled) -> Self {
        let tables = HostTables::new(
            compiled.settings,
            compiled.conduits.clone(),
            compiled.rules.clone(),
            compiled.assets.clone(),
        );
        Self {
            compiled,
            tables,
            pending: HashMap::new(),
            order: VecDeque::new(),
            summary: Summary::default(),
        }
    }

    fn conduit_name(&self, id: u16) -> Option<String> {
        self.compiled
            .conduits_meta
            .get(id as usize)
            .map(|m| m.name.clone())
    }

    fn packet(
        &mut self,
        buf: &mut [u8; FRAME_MAX],
        p: Packet<'_>,
        sink: &mut impl FnMut(&Transaction),
    ) {
        self.summary.packets += 1;
        let n = p.frame.len().min(FRAME_MAX);
        buf[..n].copy_from_slice(&p.frame[..n]);
        let frame = Frame::new(buf, n, p.frame.len());
        let mut seen = Seen::default();
        // A first look, without changing state: is this a client data segment?
        let before = self.client_flow(&frame);
        if let Some((key, seq, _, Some(conduit))) = before {
            let tracked = self
                .tables
                .flow(&key)
                .is_some_and(|s| s.state == FLOW_ESTABLISHED);
            if !tracked {
                if self.tables.flow(&key).is_none() {
                    self.summary.picked_up_mid_stream += 1;
                }
                // Picked up (or continued after a denial) from this segment on.
                self.tables.flows.remove_flow(&key);
                self.tables
                    .flows
                    .establish(&key, seq, conduit.id, conduit.server_zone);
            }
        }
        let mut lay = Layout::default();
        let d = decide(&frame, &mut self.tables, &mut seen, &mut lay);
        let (src, dst) = lay.addrs(&frame);
        let (src, dst) = (socket(&src, lay.src_port), socket(&dst, lay.dst_port));
        let ts = p.ts_us as f64 / 1e6;
        if let Some((key, _, _, _)) = before {
            // Requests: every ADU the decision judged, then any it did not
            // reach (after a denial, or when the segment was denied whole).
            let mut consumed = 0usize;
            let mut reported = 0;
            for (conduit, v) in &seen.adus {
                if v.len == 0 {
                    break;
                }
                let denied = v.reason != Reason::Allowed;
                self.request(
                    key,
                    ts,
                    src,
                    dst,
                    &v.info,
                    if denied { v.reason } else { Reason::Allowed },
                    Some(*conduit),
                    d.monitor,
                    sink,
                );
                consumed += v.len;
                reported += 1;
            }
            // Retransmissions, duplicates and segments TCP will send again
            // (out of order) are not transactions of their own.
            if d.reason.is_denial() {
                let conduit = (d.conduit != bessai_common::NO_CONDUIT).then_some(d.conduit);
                let rest = walk_adus(&frame, &lay, consumed);
                if rest.is_empty() && reported == 0 && lay.payload_len > 0 {
                    self.summary.denied_segments_without_adu += 1;
                }
                for info in rest {
                    self.request(key, ts, src, dst, &info, d.reason, conduit, d.monitor, sink);
                }
                // Continue the stream past the denied segment (see module doc).
                if lay.payload_len > 0 && d.reason.is_denial() {
                    let next = lay.seq.wrapping_add(lay.payload_len as u32);
                    if let Some(c) = conduit.and_then(|c| self.conduit_value(c)) {
                        self.tables.flows.remove_flow(&key);
                        self.tables.flows.establish(&key, next, c.id, c.server_zone);
                    }
                }
            }
        } else if d.reason == Reason::Response {
            self.response(&frame, &lay, sink);
        }
    }

    /// For a client -> conduit-port segment with data: its flow key,
    /// sequence number, length and conduit (none for a host in no conduit).
    fn client_flow(&self, frame: &Frame) -> Option<(FlowKey, u32, u32, Option<Conduit>)> {
        let mut probe = ProbeTables {
            policy: &self.tables.policy,
            flows: NoFlows,
        };
        let mut lay = Layout::default();
        decide(frame, &mut probe, &mut Seen::default(), &mut lay);
        let policy = &self.tables.policy;
        if !policy.is_protected_port(lay.dst_port) || lay.payload_len == 0 {
            return None;
        }
        let (src, dst) = lay.addrs(frame);
        let key = FlowKey {
            client: src,
            server: dst,
            client_port: lay.src_port,
            server_port: lay.dst_port,
        };
        let conduit = policy
            .conduit(&ConduitKey::new(0, dst, lay.dst_port, src))
            .copied();
        Some((key, lay.seq, lay.payload_len as u32, conduit))
    }

    /// The kernel value of the conduit with id `id` (any of its sources).
    fn conduit_value(&self, id: u16) -> Option<Conduit> {
        self.compiled
            .conduits
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(_, c)| *c)
    }

    #[expect(clippy::too_many_arguments, reason = "one transaction's fields")]
    fn request(
        &mut self,
        key: FlowKey,
        ts: f64,
        src: SocketAddr,
        dst: SocketAddr,
        info: &AduInfo,
        reason: Reason,
        conduit: Option<u16>,
        monitor: bool,
        sink: &mut impl FnMut(&Transaction),
    ) {
        let denied = reason != Reason::Allowed;
        let is_rw = info.function == bessai_common::modbus::FC_READ_WRITE_MULTIPLE_REGISTERS;
        let t = Transaction {
            ts,
            src,
            dst,
            transaction_id: info.transaction,
            unit: info.unit,
            function: info.function,
            address: info.address,
            quantity: info.quantity,
            write_address: is_rw.then_some(info.write_address),
            write_quantity: is_rw.then_some(info.write_quantity),
            verdict: if denied { "deny" } else { "allow" },
            reason: reason.as_str(),
            conduit: conduit.and_then(|c| self.conduit_name(c)),
            monitor: monitor && denied,
            response: None,
        };
        self.count(conduit, reason);
        let pk = (key, info.transaction);
        if let Some(old) = self.pending.insert(pk, t) {
            sink(&old);
        } else {
            self.order.push_back(pk);
        }
        while self.order.len() > MAX_PENDING {
            if let Some(k) = self.order.pop_front()
                && let Some(t) = self.pending.remove(&k)
            {
                sink(&t);
            }
        }
    }

    fn count(&mut self, conduit: Option<u16>, reason: Reason) {
        let name = conduit
            .and_then(|c| self.conduit_name(c))
            .unwrap_or_else(|| "-".into());
        let entry = self.summary.by_conduit.entry(name).or_default();
        if reason == Reason::Allowed {
            entry.0 += 1;
        } else {
            *entry.1.entry(reason.as_str()).or_default() += 1;
            self.summary.denied += 1;
        }
        self.summary.transactions += 1;
    }

    /// Server -> client: pairs each response ADU with its request.
    fn response(&mut self, frame: &Frame, lay: &Layout, sink: &mut impl FnMut(&Transaction)) {
        let (src, dst) = lay.addrs(frame);
        let key = FlowKey {
            client: dst,
            server: src,
            client_port: lay.dst_port,
            server_port: lay.src_port,
        };
        let mut off = lay.payload;
        let end = lay.payload + lay.payload_len;
        while off + 8 <= end {
            let (Some(tid), Some(len), Some(fc)) =
                (frame.be16(off), frame.be16(off + 4), frame.u8(off + 7))
            else {
                break;
            };
            if let Some(mut t) = self.pending.remove(&(key, tid)) {
                t.response = Some(if fc & 0x80 != 0 {
                    format!("exception {}", frame.u8(off + 8).unwrap_or(0))
                } else {
                    "data".into()
                });
                sink(&t);
            }
            if len < 2 {
                break;
            }
            off += 6 + len as usize;
        }
    }

    fn flush(&mut self, sink: &mut impl FnMut(&Transaction)) {
        while let Some(k) = self.order.pop_front() {
            if let Some(t) = self.pending.remove(&k) {
                sink(&t);
            }
        }
    }
}

/// The fields of the request ADUs from `consumed` bytes into the payload on,
/// as far as MBAP framing allows, for segments the decision denied whole.
fn walk_adus(frame: &Frame, lay: &Layout, mut consumed: usize) -> Vec<AduInfo> {
    let mut out = Vec::new();
    let allow_nothing = Conduit {
        id: 0,
        port: 0,
        mode: 0,
        on_deny: 0,
        client_zone: 0,
        server_zone: 0,
        units: [0; 4],
    };
    let none = HostPolicy::default();
    while consumed < lay.payload_len && out.len() < 64 {
        let v = judge_adu(
            frame,
            lay.payload + consumed,
            lay.payload_len - consumed,
            &allow_nothing,
            &none,
        );
        if v.len == 0 {
            break;
        }
        out.push(v.info);
        consumed += v.len;
    }
    out
}

/// Tables that answer from the replay's policy but track no connection:
/// used to look at a segment before judging it for real.
struct ProbeTables<'a> {
    policy: &'a HostPolicy,
    flows: NoFlows,
}

struct NoFlows;

impl Flows for NoFlows {
    fn flow_mut(&mut self, _: &FlowKey) -> Option<&mut FlowState> {
        None
    }
    fn establish(&mut self, _: &FlowKey, _: u32, _: u16, _: u8) -> bool {
        false
    }
    fn remove_flow(&mut self, _: &FlowKey) {}
    fn half_open(&self, _: &FlowKey) -> Option<HalfOpen> {
        None
    }
    fn set_half_open(&mut self, _: &FlowKey, _: &HalfOpen) {}
    fn remove_half_open(&mut self, _: &FlowKey) {}
    fn count(&mut self, _: u32) {}
}

impl Tables for ProbeTables<'_> {
    type Policy = HostPolicy;
    type Flows = NoFlows;

    fn split(&mut self) -> (&HostPolicy, &mut NoFlows) {
        (self.policy, &mut self.flows)
    }
}
