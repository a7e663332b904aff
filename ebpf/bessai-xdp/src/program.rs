use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::{
        bpf_ktime_get_ns, bpf_loop, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use bessai_common::{
    AGGREGATE_WINDOW_NS, Action, Addr, AduObserver, AduRun, AggregateKey, AggregateValue,
    CONDUIT_ALLOWED, CONDUIT_DENIED, CONDUIT_KEY_DATA, CONDUIT_MONITORED, CONDUIT_RESETS, Conduit,
    ConduitCounters, ConduitKey, Decision, EVENT_HAS_ADU, EVENT_MONITOR, Event, FRAME_MAX, FlowKey,
    FlowState, Flows, GENERATIONS, HalfOpen, Layout, MAX_ADUS, MAX_ASSETS, MAX_CONDUIT_PREFIXES,
    MAX_CONDUITS, MAX_FLOWS, MAX_HALF_OPEN, MAX_RULES, NUM_STATS, NoObserver, Policy, Reason, Rule,
    RuleKey, STAT_RINGBUF_FULL, Settings, StreamKey, Tables, adu_step, decide,
    frame::Frame,
    iface_zones_key,
    reason::NUM_REASONS,
    rst::{RST_MAX, rst_to_client, rst_to_server},
    stream_hash::{HASH_CHUNK, HashRun},
};

/// Index 0: the policy generation in force (0 or 1). User space writes the
/// next generation's tables completely, then flips this one word: a packet
/// is judged wholly by the old policy or wholly by the new one.
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
/// One entry per generation.
#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(GENERATIONS, 0);
#[map]
static CONDUITS: LpmTrie<[u8; CONDUIT_KEY_DATA], Conduit> =
    LpmTrie::with_max_entries(MAX_CONDUIT_PREFIXES, 0);
#[map]
static RULES: HashMap<RuleKey, Rule> = HashMap::with_max_entries(MAX_RULES, 0);
/// Value: bit `g` set when the address is an asset in generation `g`.
#[map]
static ASSETS: HashMap<Addr, u8> = HashMap::with_max_entries(MAX_ASSETS, 0);
/// Established connections. An LRU, so that a full table evicts the least
/// recently used connection (whose next data is then denied as unknown: fail
/// closed) rather than refusing new ones; only completed handshakes, which
/// need the server, enter it.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
/// Connections in their handshake: a SYN flood churns this table only.
#[map]
static HALF_OPEN: LruHashMap<FlowKey, HalfOpen> = LruHashMap::with_max_entries(MAX_HALF_OPEN, 0);
/// Index 0: the per-boot secret of the stream hash, from user space.
#[map]
static STREAM_KEY: Array<StreamKey> = Array::with_max_entries(1, 0);
/// (generation, interface index) -> bit mask of the policy zones the
/// interface serves (ingress binding; `iface_zones_key`). Interface index 0
/// stands for "any interface" (development runs without zones). An interface
/// missing here serves no zone: conduit traffic on it is dropped as spoofed.
#[map]
static IFACE_ZONES: HashMap<u64, u64> = HashMap::with_max_entries(512, 0);
/// `STAT_*` counters.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_STATS, 0);
/// One event per (source, reason) and window for floods of denials that
/// any host can cause (see `aggregate`).
#[map]
static AGGREGATE: LruHashMap<AggregateKey, AggregateValue> = LruHashMap::with_max_entries(4096, 0);
/// Per-CPU working memory: the frame's head and where its headers are. Kept
/// off the 512-byte stack, which the inlined decision's spills already fill.
#[repr(C)]
struct Scratch {
    frame: [u8; FRAME_MAX],
    layout: Layout,
    decision: Decision,
    forget: ForgetSlot,
    /// A new flow's state, built here because it does not fit the stack.
    flow: FlowState,
    /// The ADU loop's state and inputs. In map memory, whose contents the
    /// verifier does not track: the `bpf_loop` callback then converges after
    /// one pass instead of being verified once per ADU offset.
    adu_run: AduRun,
    adu_conduit: Conduit,
    adu_frame_len: usize,
    adu_wire_len: usize,
    adu_generation: u8,
    /// The stream hash in progress (`bpf_loop`, like the ADU loop).
    hash: HashRun,
    /// The event's addresses and the aggregation key, filled in place.
    aggregate: AggregateKey,
    event_dst: Addr,
}

/// Room for a value passed through `Tables::forget`.
type ForgetSlot = [u64; 16];
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static REASON_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_REASONS as u32, 0);
#[map]
static CONDUIT_COUNTERS: PerCpuArray<ConduitCounters> =
    PerCpuArray::with_max_entries(MAX_CONDUITS, 0);
/// Reason and action of the last frame (`reason | action << 8`), read by the
/// differential test after each BPF_PROG_TEST_RUN.
#[map]
static LAST_VERDICT: Array<u32> = Array::with_max_entries(1, 0);

/// Why the program could not even judge a frame. Every one fails closed.
#[derive(Clone, Copy)]
enum Fault {
    NoScratch,
    LoadBytes,
    Rewrite,
}

impl Fault {
    const fn verdict(self) -> u32 {
        match self {
            // Cannot happen with a loaded program (the map has one entry);
            // nothing judged passes.
            Fault::NoScratch => XDP_DROP,
            // The kernel refused to copy the frame: nothing judged passes.
            Fault::LoadBytes => XDP_DROP,
            // A denied segment that could not be turned into a RST must not
            // reach the server in its original form.
            Fault::Rewrite => XDP_DROP,
        }
    }
}

/// The policy maps as the decision sees them, for one packet: the policy
/// generation is read once, so that every lookup for the packet uses the
/// same policy even when a reload switches in the middle of it.
struct MapPolicy {
    generation: u8,
    ifindex: u32,
}

/// The connection tables.
struct MapFlows;

struct MapTables {
    policy: MapPolicy,
    flows: MapFlows,
}

impl MapTables {
    #[inline(always)]
    fn for_this_packet(ifindex: u32) -> Self {
        // Only ever 0 or 1; masked so that a stray value still names one.
        Self {
            policy: MapPolicy {
                generation: ACTIVE.get(0).map_or(0, |g| (*g & 1) as u8),
                ifindex,
            },
            flows: MapFlows,
        }
    }
}

impl Tables for MapTables {
    type Policy = MapPolicy;
    type Flows = MapFlows;

    #[inline(always)]
    fn split(&mut self) -> (&MapPolicy, &mut MapFlows) {
        (&self.policy, &mut self.flows)
    }
}

extern "C" fn adu_loop_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value, holding the frame being judged and
    // the loop's state; the fields borrowed here do not overlap.
    let s = unsafe { &mut *scratch };
    let frame = Frame::new(&s.frame, s.adu_frame_len, s.adu_wire_len);
    let policy = MapPolicy {
        generation: s.adu_generation,
        ifindex: 0,
    };
    if adu_step(
        &frame,
        &policy,
        &s.adu_conduit,
        &mut s.adu_run,
        &mut NoObserver,
    ) {
        0
    } else {
        1
    }
}

extern "C" fn hash_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value, holding the frame and the hash run;
    // the fields borrowed here do not overlap.
    let s = unsafe { &mut *scratch };
    let frame = Frame::new(&s.frame, s.adu_frame_len, s.adu_wire_len);
    if s.hash.step(&frame) { 0 } else { 1 }
}

impl Policy for MapPolicy {
    #[inline(always)]
    fn generation(&self) -> u8 {
        self.generation
    }

    #[inline(always)]
    fn is_protected_port(&self, port: u16) -> bool {
        match SETTINGS.get(self.generation() as u32) {
            Some(s) => s.is_protected_port(port),
            None => false,
        }
    }

    #[inline(always)]
    fn is_asset(&self, addr: &Addr) -> bool {
        // SAFETY: a u8 copied out at once.
        match unsafe { ASSETS.get(addr) } {
            Some(bits) => (*bits >> self.generation()) & 1 == 1,
            None => false,
        }
    }

    #[inline(always)]
    fn conduit(&self, key: &ConduitKey) -> Option<&Conduit> {
        // SAFETY: ConduitKey is #[repr(C)] { prefix_len: u32, data: [u8; 36] }
        // (size asserted), the layout of lpm_trie::Key<[u8; 36]>.
        let key = unsafe { &*(key as *const ConduitKey).cast::<Key<[u8; CONDUIT_KEY_DATA]>>() };
        CONDUITS.get(key)
    }

    #[inline(always)]
    fn rule(&self, key: &RuleKey) -> Option<&Rule> {
        // SAFETY: rules are replaced only by user space, value-sized writes.
        unsafe { RULES.get(key) }
    }

    #[inline(always)]
    fn ingress_zones(&self) -> u64 {
        let this = iface_zones_key(self.generation, self.ifindex);
        let any = iface_zones_key(self.generation, 0);
        // SAFETY: u64s copied out at once.
        unsafe { IFACE_ZONES.get(this).or_else(|| IFACE_ZONES.get(any)) }
            .copied()
            .unwrap_or(0)
    }

    #[inline(always)]
    fn stream_key(&self) -> StreamKey {
        STREAM_KEY.get(0).copied().unwrap_or_default()
    }

    #[inline(always)]
    fn judge_adus<O: AduObserver>(
        &self,
        f: &Frame,
        conduit: &Conduit,
        off: usize,
        len: usize,
        _obs: &mut O,
    ) -> AduRun {
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            let mut run = AduRun::new(off, len);
            run.reason = Reason::TooManyAdus;
            return run;
        };
        // SAFETY: this CPU's scratch value; the frame field is not touched.
        unsafe {
            (*scratch).adu_run = AduRun::new(off, len);
            (*scratch).adu_conduit = *conduit;
            (*scratch).adu_frame_len = f.len();
            (*scratch).adu_wire_len = f.wire_len();
            (*scratch).adu_generation = self.generation;
        }
        // SAFETY: the callback is a static function of this program and
        // takes no context (its state is in the scratch value).
        unsafe {
            bpf_loop(
                MAX_ADUS as u32,
                adu_loop_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
        // SAFETY: as above; the loop has finished.
        unsafe { (*scratch).adu_run }.finish()
    }

    #[inline(always)]
    fn hash_range(
        &self,
        f: &Frame,
        off: usize,
        len: usize,
        key: &StreamKey,
        power: u64,
    ) -> (u64, u64) {
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            // A hash no record can have: the bytes are then not verified.
            return (u64::MAX, 0);
        };
        // SAFETY: this CPU's scratch value; the frame field is not touched.
        unsafe {
            (*scratch).hash = HashRun::new(key, off, len, power);
            (*scratch).adu_frame_len = f.len();
            (*scratch).adu_wire_len = f.wire_len();
        }
        // SAFETY: a static callback of this program, state in the scratch value.
        unsafe {
            bpf_loop(
                (FRAME_MAX / HASH_CHUNK + 1) as u32,
                hash_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
        // SAFETY: as above; the loop has finished.
        let lanes = unsafe { (*scratch).hash.lanes };
        (lanes.value(), lanes.next_power())
    }

    #[inline(always)]
    fn forget<V: Copy>(&self, v: V) -> V {
        const { assert!(size_of::<V>() <= size_of::<ForgetSlot>() && align_of::<V>() <= 8) };
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            return v;
        };
        // SAFETY: this CPU's scratch value, large and aligned enough for V
        // (asserted above); written, then read back volatile so that the
        // compiler cannot forward the value in registers.
        unsafe {
            let slot = (&raw mut (*scratch).forget).cast::<V>();
            slot.write(v);
            core::ptr::read_volatile(slot)
        }
    }
}

impl Flows for MapFlows {
    #[inline(always)]
    fn flow_mut(&mut self, key: &FlowKey) -> Option<&mut FlowState> {
        // SAFETY: a map value of this program; per-flow state is written only
        // by packets of that flow, which one NIC queue delivers in order.
        FLOWS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn establish(&mut self, key: &FlowKey, next: u32, conduit: u16, server_zone: u8) -> bool {
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: this CPU's scratch value; the new state is built in place
        // and copied into the map by the helper.
        unsafe {
            let slot = &raw mut (*scratch).flow;
            slot.write(FlowState::established(next, conduit, server_zone));
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the 128-byte state would be copied onto the 512-byte stack"
            )]
            let inserted = FLOWS.insert(key, &*slot, 0).is_ok();
            inserted
        }
    }

    #[inline(always)]
    fn remove_flow(&mut self, key: &FlowKey) {
        let _ = FLOWS.remove(key);
    }

    #[inline(always)]
    fn half_open(&self, key: &FlowKey) -> Option<HalfOpen> {
        // SAFETY: copied out at once.
        unsafe { HALF_OPEN.get(key) }.copied()
    }

    #[inline(always)]
    fn set_half_open(&mut self, key: &FlowKey, h: &HalfOpen) {
        // A full table evicts the oldest half-open connection; its client
        // retransmits the SYN.
        let _ = HALF_OPEN.insert(key, h, 0);
    }

    #[inline(always)]
    fn remove_half_open(&mut self, key: &FlowKey) {
        let _ = HALF_OPEN.remove(key);
    }

    #[inline(always)]
    fn count(&mut self, stat: u32) {
        if let Some(c) = STATS.get_ptr_mut(stat) {
            // SAFETY: per-CPU value.
            unsafe { *c += 1 };
        }
    }
}

#[xdp]
pub fn bessai_xdp(ctx: XdpContext) -> u32 {
    match try_filter(&ctx) {
        Ok(action) => action,
        Err(fault) => fault.verdict(),
    }
}

#[inline(always)]
fn try_filter(ctx: &XdpContext) -> Result<u32, Fault> {
    let wire_len = ctx.data_end() - ctx.data();
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Fault::NoScratch)?;
    // SAFETY: a per-CPU map value, used by this invocation only.
    let Scratch {
        frame: buf,
        layout: lay,
        decision,
        ..
    } = unsafe { &mut *scratch };
    let copy = if wire_len > FRAME_MAX {
        FRAME_MAX
    } else {
        wire_len
    };
    if copy == 0 {
        return Ok(XDP_DROP);
    }
    // SAFETY: `copy` is within 1..=FRAME_MAX, the size of `buf`.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, buf.as_mut_ptr().cast(), copy as u32) };
    if rc != 0 {
        return Err(Fault::LoadBytes);
    }
    lay.reset();
    let frame = Frame::new(buf, copy, wire_len);
    *decision = decide(
        &frame,
        &mut MapTables::for_this_packet(ctx.ingress_ifindex() as u32),
        &mut NoObserver,
        lay,
    );
    // Read from map memory, where the verifier does not track values: every
    // verdict then reaches the code below as one state instead of one per
    // (reason, ADU count) pair.
    let d = &*decision;
    account(d, lay, &frame);
    if let Some(p) = LAST_VERDICT.get_ptr_mut(0) {
        // SAFETY: array value of this program.
        unsafe { *p = d.reason as u32 | (d.action as u32) << 8 };
    }
    match d.action {
        Action::Pass => Ok(XDP_PASS),
        Action::Drop => Ok(XDP_DROP),
        Action::ResetServer => {
            let len = rst_to_server(buf, lay, d.rst_seq);
            write_back(ctx, buf, len, wire_len)?;
            Ok(XDP_PASS)
        }
        Action::ResetClient => {
            let len = rst_to_client(buf, lay);
            write_back(ctx, buf, len, wire_len)?;
            Ok(XDP_TX)
        }
    }
}

/// Shrinks the packet to `len` bytes and copies the rewritten head back.
#[inline(always)]
fn write_back(
    ctx: &XdpContext,
    buf: &[u8; FRAME_MAX],
    len: usize,
    wire_len: usize,
) -> Result<(), Fault> {
    if len == 0 || len > RST_MAX || len > wire_len {
        return Err(Fault::Rewrite);
    }
    let delta = len as i32 - wire_len as i32;
    // SAFETY: shrinking only; the helper checks the bounds.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(Fault::Rewrite);
    }
    // SAFETY: `len` is within 1..=RST_MAX <= FRAME_MAX and the packet is `len` long.
    let rc = unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, buf.as_ptr() as *mut _, len as u32) };
    if rc != 0 {
        return Err(Fault::Rewrite);
    }
    Ok(())
}

/// Counters and the event. Not inlined: a subprogram with its own stack
/// frame, since the decision's inlined code nearly fills the main one.
#[inline(never)]
fn account(d: &Decision, lay: &Layout, frame: &Frame) {
    if let Some(c) = REASON_COUNTERS.get_ptr_mut(d.reason as u32) {
        // SAFETY: per-CPU value.
        unsafe { *c += 1 };
    }
    if (d.conduit as u32) < MAX_CONDUITS
        && let Some(c) = CONDUIT_COUNTERS.get_ptr_mut(d.conduit as u32)
    {
        // SAFETY: per-CPU value.
        let c = unsafe { &mut *c };
        if d.allowed_adus > 0 {
            c[CONDUIT_ALLOWED] += d.allowed_adus as u64;
        }
        if d.event {
            if d.monitor {
                c[CONDUIT_MONITORED] += 1;
            } else {
                c[CONDUIT_DENIED] += 1;
            }
        }
        if matches!(d.action, Action::ResetServer | Action::ResetClient) {
            c[CONDUIT_RESETS] += 1;
        }
    }
    if d.event {
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: this CPU's scratch value; the frame and layout fields are
        // only read here.
        let (key, dst) = unsafe { (&mut (*scratch).aggregate, &mut (*scratch).event_dst) };
        lay.src_into(frame, &mut key.src);
        lay.dst_into(frame, dst);
        key.reason = d.reason as u8;
        key._pad = [0; 3];
        if let Some(suppressed) = aggregate(key) {
            emit(d, lay, &key.src, dst, suppressed);
        }
    }
}

/// For denials that any host can cause at line rate (no conduit, malformed,
/// spoofed, no flow, and data without a handshake): `None` while the
/// source already had its event in this window, else the number of events
/// it folded since its last one.
#[inline(always)]
fn aggregate(key: &AggregateKey) -> Option<u32> {
    let aggregated = [
        Reason::NoConduit,
        Reason::Malformed,
        Reason::Spoofed,
        Reason::NoFlow,
        Reason::UnknownFlow,
    ];
    if !aggregated.iter().any(|r| *r as u8 == key.reason) {
        return Some(0);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match AGGREGATE.get_ptr_mut(key) {
        Some(v) => {
            // SAFETY: a map value of this program.
            let v = unsafe { &mut *v };
            if now.wrapping_sub(v.window_start_ns) < AGGREGATE_WINDOW_NS {
                v.suppressed = v.suppressed.saturating_add(1);
                return None;
            }
            let folded = v.suppressed;
            v.window_start_ns = now;
            v.suppressed = 0;
            Some(folded)
        }
        None => {
            let fresh = AggregateValue {
                window_start_ns: now,
                suppressed: 0,
                _pad: 0,
            };
            let _ = AGGREGATE.insert(key, fresh, 0);
            Some(0)
        }
    }
}

#[inline(always)]
fn emit(d: &Decision, lay: &Layout, src: &Addr, dst: &Addr, suppressed: u32) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        // Ring full: the per-reason counter still counts the denial, and
        // this counter tells user space that an event was lost.
        if let Some(c) = STATS.get_ptr_mut(STAT_RINGBUF_FULL) {
            // SAFETY: per-CPU value.
            unsafe { *c += 1 };
        }
        return;
    };
    let mut flags = 0;
    if d.monitor {
        flags |= EVENT_MONITOR;
    }
    if d.has_adu {
        flags |= EVENT_HAS_ADU;
    }
    // FC 23: report the half that was denied.
    let write_denied = d.adu.write_denied;
    // Fields written in place: an Event built on the stack first would cost
    // 64 of the 512 bytes of stack.
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to a reserved ring-buffer slot of size_of::<Event>();
    // every field is written before submit.
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).src = *src;
        (*e).dst = *dst;
        (*e).src_port = lay.src_port;
        (*e).dst_port = lay.dst_port;
        (*e).conduit = d.conduit;
        (*e).address = if write_denied {
            d.adu.write_address
        } else {
            d.adu.address
        };
        (*e).quantity = if write_denied {
            d.adu.write_quantity
        } else {
            d.adu.quantity
        };
        (*e).transaction = d.adu.transaction;
        (*e).reason = d.reason as u8;
        (*e).action = d.action as u8;
        (*e).unit = d.adu.unit;
        (*e).function = d.adu.function;
        (*e).flags = flags;
        (*e)._pad = [0; 3];
        (*e).suppressed = suppressed;
    }
    entry.submit(0);
}
