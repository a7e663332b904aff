//! `#[repr(C)]` map keys and values. No implicit padding anywhere: every struct
//! spells its pad bytes, and a compile-time assert pins each size, because the
//! kernel compares keys bytewise and the verifier rejects uninitialised stack reads.

use core::mem::size_of;

/// Bytes of a frame the decision function can see. A power of two so that the
/// eBPF side can mask offsets; larger frames to a conduit port are dropped
/// (`Reason::Oversize`), never judged on a prefix.
pub const FRAME_MAX: usize = 2048;
/// Address ranges per rule (bounded loop in the verifier).
pub const MAX_RANGES: usize = 16;
/// ADUs judged in one TCP segment. The smallest request ADU is 8 bytes, so a
/// full-size segment (MSS 1460) carries at most 182; a segment carrying more
/// than this is dropped (`Reason::TooManyAdus`).
pub const MAX_ADUS: usize = 192;
/// Distinct TCP ports that conduits protect.
pub const MAX_PORTS: usize = 8;
pub const MAX_CONDUITS: u32 = 4096;
pub const MAX_RULES: u32 = 65536;
pub const MAX_FLOWS: u32 = 65536;
/// Connections between a client's SYN and the end of the handshake. Their own
/// table, so that a SYN flood can never evict an established connection.
pub const MAX_HALF_OPEN: u32 = 16384;
/// Judged client segments per connection whose bytes the server has not yet
/// acknowledged (see [`FlowState`]); new data beyond this waits (dropped
/// silently, the client retransmits it once acknowledgements free a slot).
pub const STREAM_RECORDS: usize = 8;
/// Zones a policy may have: ingress interfaces carry a bit mask of them.
pub const MAX_ZONES: usize = 64;

/// Key of the kernel's interface-zones map: per policy generation, because a
/// policy's zone indices may change on reload; interface index 0 means any
/// interface.
pub const fn iface_zones_key(generation: u8, ifindex: u32) -> u64 {
    (generation as u64) << 32 | ifindex as u64
}
pub const MAX_ASSETS: u32 = 4096;
pub const MAX_CONDUIT_PREFIXES: u32 = 65536;
/// Conduit id used in events for traffic that matched no conduit.
pub const NO_CONDUIT: u16 = u16::MAX;

/// An IPv6 address, or an IPv4 address mapped as `::ffff:a.b.c.d`, network order.
pub type Addr = [u8; 16];

pub const fn ipv4_mapped(v4: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

pub const fn is_ipv4_mapped(a: &Addr) -> bool {
    a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
}

/// Key of the conduit LPM trie, laid out as the kernel's `bpf_lpm_trie_key`
/// (prefix length, then data) so that the eBPF side passes it without a copy:
/// the policy generation, destination address and port are always matched
/// exactly (the first [`CONDUIT_KEY_FIXED_BITS`] bits), the source by prefix.
///
/// The generation lets a reload write a complete second policy beside the
/// running one and then switch with one 4-byte write (see [`GENERATIONS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConduitKey {
    /// Bits of the data that count: [`CONDUIT_KEY_BITS`] for a lookup.
    pub prefix_len: u32,
    /// Policy generation, 0 or 1.
    pub generation: u8,
    pub _pad: u8,
    pub dst: Addr,
    /// Network byte order.
    pub dst_port: [u8; 2],
    pub src: Addr,
}
const _: () = assert!(size_of::<ConduitKey>() == 40);
/// Bytes of LPM data after the prefix length.
pub const CONDUIT_KEY_DATA: usize = 36;
/// Bits of a [`ConduitKey`] before the source address.
pub const CONDUIT_KEY_FIXED_BITS: u32 = 160;
/// A full-length lookup key.
pub const CONDUIT_KEY_BITS: u32 = 288;

impl ConduitKey {
    /// A lookup key (all bits significant).
    pub const fn new(generation: u8, dst: Addr, dst_port: u16, src: Addr) -> Self {
        Self::with_prefix(generation, dst, dst_port, src, 128)
    }

    /// An entry matching sources in `src/src_prefix` (prefix of the 128-bit,
    /// IPv4-mapped address).
    pub const fn with_prefix(
        generation: u8,
        dst: Addr,
        dst_port: u16,
        src: Addr,
        src_prefix: u32,
    ) -> Self {
        Self {
            prefix_len: CONDUIT_KEY_FIXED_BITS + src_prefix,
            generation,
            _pad: 0,
            dst,
            dst_port: dst_port.to_be_bytes(),
            src,
        }
    }

    /// The same entry in another policy generation.
    pub const fn in_generation(mut self, generation: u8) -> Self {
        self.generation = generation;
        self
    }

    /// The LPM data bytes, in the kernel's comparison order.
    pub fn data(&self) -> [u8; CONDUIT_KEY_DATA] {
        let mut d = [0u8; CONDUIT_KEY_DATA];
        d[0] = self.generation;
        d[2..18].copy_from_slice(&self.dst);
        d[18..20].copy_from_slice(&self.dst_port);
        d[20..36].copy_from_slice(&self.src);
        d
    }
}

/// Policy generations held in the maps at once: the running one and the one
/// a reload is writing. Conduit ids of generation `g` are offset by
/// `g * MAX_POLICY_CONDUITS`, so rules, counters and events of the two never
/// mix.
pub const GENERATIONS: u32 = 2;
/// Conduits one policy may have.
pub const MAX_POLICY_CONDUITS: u32 = MAX_CONDUITS / GENERATIONS;

pub const MODE_ENFORCE: u8 = 0;
pub const MODE_MONITOR: u8 = 1;
pub const ON_DENY_RESET: u8 = 0;
pub const ON_DENY_DROP: u8 = 1;

/// What a conduit is: its id (index into counters and names), mode, deny
/// action and the unit ids it may address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conduit {
    pub id: u16,
    pub port: u16,
    /// `MODE_ENFORCE` or `MODE_MONITOR`.
    pub mode: u8,
    /// `ON_DENY_RESET` or `ON_DENY_DROP`.
    pub on_deny: u8,
    /// Index of the clients' zone: their packets are accepted only on an
    /// interface whose zone mask has this bit (ingress binding).
    pub client_zone: u8,
    /// Index of the asset's zone: its answers are accepted only on an
    /// interface of that zone.
    pub server_zone: u8,
    /// Bit `u` set: unit id `u` allowed.
    pub units: [u64; 4],
}
const _: () = assert!(size_of::<Conduit>() == 40);

impl Conduit {
    #[inline(always)]
    pub const fn allows_unit(&self, unit: u8) -> bool {
        (self.units[(unit >> 6) as usize] >> (unit & 63)) & 1 == 1
    }
}

/// Which address list of a rule: FC 23 carries a read and a write range.
pub const PART_MAIN: u8 = 0;
pub const PART_WRITE: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    pub conduit: u16,
    pub function: u8,
    /// `PART_MAIN`, or `PART_WRITE` for the write half of FC 23.
    pub part: u8,
}
const _: () = assert!(size_of::<RuleKey>() == 4);

/// Inclusive range of 0-based protocol addresses (or of FC 8 sub-functions /
/// FC 43 MEI types, for those functions).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AddrRange {
    pub start: u16,
    pub end: u16,
}

/// One allowed function on one conduit. For functions that address data the
/// request must lie wholly inside one range; `count == 0` then allows nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub count: u8,
    pub _pad: [u8; 3],
    pub ranges: [AddrRange; MAX_RANGES],
}
const _: () = assert!(size_of::<Rule>() == 68);

impl Rule {
    pub const EMPTY: Rule = Rule {
        count: 0,
        _pad: [0; 3],
        ranges: [AddrRange { start: 0, end: 0 }; MAX_RANGES],
    };

    /// True when `[first, last]` lies inside one range.
    #[inline(always)]
    pub fn covers(&self, first: u16, last: u16) -> bool {
        let mut i = 0;
        while i < MAX_RANGES {
            if i >= self.count as usize {
                return false;
            }
            let r = &self.ranges[i];
            if r.start <= first && last <= r.end {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// A TCP connection on a conduit, always oriented client -> server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: Addr,
    pub server: Addr,
    pub client_port: u16,
    pub server_port: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 36);

/// Connection states of [`FlowState::state`]. See `docs/architecture.md`.
/// Handshake done; client data is judged.
pub const FLOW_ESTABLISHED: u8 = 1;
/// A segment was denied with a reset: the server got a RST; every later client
/// packet is answered with a RST.
pub const FLOW_RESETTING: u8 = 2;
/// A segment was denied silently (`on_deny = "drop"`): its retransmissions are
/// dropped without a new event, and nothing after it is judged.
pub const FLOW_DROPPED: u8 = 3;

/// What the gateway has judged of an established connection's client byte
/// stream, and what the server has acknowledged of it.
///
/// Client segments and server segments of one connection may be judged on
/// two CPUs at once (they arrive on different ports): each field has one
/// writer. Client segments write everything but `acked` and `server_fin`;
/// server segments write only those two (a stale `acked` read by the client
/// side is lower, which only makes it compare more bytes).
///
/// Sequence numbers compare modulo 2^32 (RFC 9293 section 3.4). Invariant:
/// `acked <= judged_end`, and the live records cover `[acked', judged_end)`
/// exactly, where `acked'` is the start of the oldest live record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// Next client sequence number to judge: every byte before it was judged
    /// (and passed). Always an ADU boundary.
    pub judged_end: u32,
    /// Highest client sequence number the server acknowledged (its
    /// `RCV.NXT` as far as the gateway saw). Bytes below it can never reach
    /// the server's application again, whatever their content.
    pub acked: u32,
    /// Sequence number of the segment that was denied (`FLOW_DROPPED`).
    pub denied_seq: u32,
    /// Conduit id that admitted the connection (for counters of responses).
    pub conduit: u16,
    pub state: u8,
    /// The client sent its FIN (written by client segments only).
    pub client_fin: u8,
    /// Index of the oldest live record, and how many are live.
    pub head: u8,
    pub count: u8,
    /// Zone the server's packets must arrive from (the conduit's).
    pub server_zone: u8,
    /// The server sent its FIN (written by server segments only).
    pub server_fin: u8,
    /// The client's first data byte (ISN + 1): hash positions count from it.
    pub base: u32,
    /// Both lanes' `r^position(judged_end)` ([`crate::stream_hash::pack`]):
    /// new bytes are hashed from here without an exponentiation.
    pub next_power: u64,
    /// Start of each judged, unacknowledged segment; a record ends where the
    /// next one starts, the newest at `judged_end`.
    pub rec_start: [u32; STREAM_RECORDS],
    /// Keyed hash of each record's bytes ([`crate::stream_hash`]).
    pub rec_hash: [u64; STREAM_RECORDS],
}
const _: () = assert!(size_of::<FlowState>() == 32 + 4 * STREAM_RECORDS + 8 * STREAM_RECORDS);

impl FlowState {
    /// A connection whose handshake just completed: the client's first data
    /// byte is `next`.
    pub const fn established(next: u32, conduit: u16, server_zone: u8) -> Self {
        Self {
            judged_end: next,
            acked: next,
            denied_seq: 0,
            conduit,
            state: FLOW_ESTABLISHED,
            client_fin: 0,
            head: 0,
            count: 0,
            server_zone,
            server_fin: 0,
            base: next,
            // r^0 in both lanes.
            next_power: 1 << 32 | 1,
            rec_start: [0; STREAM_RECORDS],
            rec_hash: [0; STREAM_RECORDS],
        }
    }
}

pub const HALF_OPEN_SYN: u8 = 1;
pub const HALF_OPEN_SYN_ACK: u8 = 2;

/// A connection during its handshake, keyed like the flow it becomes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HalfOpen {
    /// The client's initial sequence number (from its SYN).
    pub client_isn: u32,
    /// The server's, once its SYN-ACK acknowledged `client_isn + 1`.
    pub server_isn: u32,
    /// `HALF_OPEN_SYN` or `HALF_OPEN_SYN_ACK`.
    pub state: u8,
    /// The conduit's asset zone: the SYN-ACK must arrive from it.
    pub server_zone: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<HalfOpen>() == 12);

/// The per-boot secret of [`crate::stream_hash`]: two multipliers in
/// `1..P` (P = 2^31 - 1), written by user space from the OS's random source
/// before the program is attached. All zero means "not set": conduit data is
/// then dropped (fail closed), since the hash would be predictable.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StreamKey {
    pub r: [u64; 2],
}
const _: () = assert!(size_of::<StreamKey>() == 16);

/// Global data-plane settings (array map, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// TCP ports protected by conduits, host order; 0 = unused slot.
    pub ports: [u16; MAX_PORTS],
}
const _: () = assert!(size_of::<Settings>() == 16);

impl Settings {
    #[inline(always)]
    pub fn is_protected_port(&self, port: u16) -> bool {
        let mut i = 0;
        while i < MAX_PORTS {
            if self.ports[i] != 0 && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

pub const EVENT_MONITOR: u8 = 1;
/// Unit, function, address and quantity are valid.
pub const EVENT_HAS_ADU: u8 = 2;

/// A denied (or, in monitor mode, would-be-denied) segment, sent to user space
/// through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    /// `bpf_ktime_get_ns` in the kernel; capture time on the host.
    pub ts_ns: u64,
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub conduit: u16,
    pub address: u16,
    pub quantity: u16,
    pub transaction: u16,
    pub reason: u8,
    pub action: u8,
    pub unit: u8,
    pub function: u8,
    pub flags: u8,
    pub _pad: [u8; 3],
    /// Further denials of the same kind from the same source that the kernel
    /// folded into this event (no-conduit and malformed floods, see
    /// `AGGREGATE_WINDOW_NS`); 0 for an ordinary event.
    pub suppressed: u32,
}
const _: () = assert!(size_of::<Event>() == 64);

/// Window in which the kernel reports one no-conduit, malformed, spoofed,
/// no-flow or unknown-flow denial per source and reason; the next event of that kind carries the count of the
/// ones in between. A flood from one host then costs one event per second and
/// cannot crowd a denied write out of the ring buffer.
pub const AGGREGATE_WINDOW_NS: u64 = 1_000_000_000;

/// Key of the kernel's aggregation table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AggregateKey {
    pub src: Addr,
    pub reason: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<AggregateKey>() == 20);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AggregateValue {
    pub window_start_ns: u64,
    /// Denials since the last event.
    pub suppressed: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<AggregateValue>() == 16);

/// Data-plane counters that are not per reason or conduit (per-CPU array).
pub const STAT_RINGBUF_FULL: u32 = 0;
/// Out-of-order client data ahead of the judged stream, dropped silently.
pub const STAT_OUT_OF_ORDER: u32 = 1;
/// Old duplicates and keep-alives passed (bytes the server already acknowledged).
pub const STAT_DUPLICATE: u32 = 2;
/// Retransmissions whose overlap the gateway could not compare (it does not
/// start and end on judged segment boundaries), dropped silently.
pub const STAT_UNVERIFIABLE: u32 = 3;
/// New data dropped because the connection had `STREAM_RECORDS` unacknowledged segments.
pub const STAT_WINDOW_FULL: u32 = 4;
/// Half-open connections created (SYNs accepted).
pub const STAT_HALF_OPEN: u32 = 5;
/// Connections established through the gateway.
pub const STAT_ESTABLISHED: u32 = 6;
/// Flow-table inserts that failed (table full).
pub const STAT_FLOW_TABLE_FULL: u32 = 7;
pub const NUM_STATS: u32 = 8;

/// Per-conduit counters, indexed by `CONDUIT_*`.
pub const CONDUIT_ALLOWED: usize = 0;
pub const CONDUIT_DENIED: usize = 1;
pub const CONDUIT_MONITORED: usize = 2;
pub const CONDUIT_RESETS: usize = 3;
pub type ConduitCounters = [u64; 4];

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], contain only integers and byte arrays,
    // and have no padding (sizes asserted above).
    unsafe impl aya::Pod for ConduitKey {}
    unsafe impl aya::Pod for Conduit {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for AddrRange {}
    unsafe impl aya::Pod for Rule {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for HalfOpen {}
    unsafe impl aya::Pod for StreamKey {}
    unsafe impl aya::Pod for AggregateKey {}
    unsafe impl aya::Pod for AggregateValue {}
}
