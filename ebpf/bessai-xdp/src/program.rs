use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::{
        bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use bessai_common::{
    Action, Addr, CONDUIT_ALLOWED, CONDUIT_DENIED, CONDUIT_KEY_DATA, CONDUIT_MONITORED,
    CONDUIT_RESETS, Conduit, ConduitCounters, ConduitKey, Decision, EVENT_HAS_ADU, EVENT_MONITOR,
    Event, FRAME_MAX, FlowKey, FlowState, GENERATIONS, Layout, MAX_ASSETS, MAX_CONDUIT_PREFIXES,
    MAX_CONDUITS, MAX_FLOWS, MAX_RULES, NoObserver, Rule, RuleKey, Settings, Tables, decide,
    frame::Frame,
    reason::NUM_REASONS,
    rst::{RST_MAX, rst_to_client, rst_to_server},
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
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
/// Per-CPU working memory: the frame's head and where its headers are. Kept
/// off the 512-byte stack, which the inlined decision's spills already fill.
#[repr(C)]
struct Scratch {
    frame: [u8; FRAME_MAX],
    layout: Layout,
    decision: Decision,
    forget: ForgetSlot,
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

/// The maps as the decision sees them, for one packet: the policy
/// generation is read once, so that every lookup for the packet uses the
/// same policy even when a reload switches in the middle of it.
struct MapTables {
    generation: u8,
}

impl MapTables {
    #[inline(always)]
    fn for_this_packet() -> Self {
        // Only ever 0 or 1; masked so that a stray value still names one.
        Self {
            generation: ACTIVE.get(0).map_or(0, |g| (*g & 1) as u8),
        }
    }
}

impl Tables for MapTables {
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
    fn conduit(&self, key: &ConduitKey) -> Option<Conduit> {
        // SAFETY: ConduitKey is #[repr(C)] { prefix_len: u32, data: [u8; 36] }
        // (size asserted), the layout of lpm_trie::Key<[u8; 36]>.
        let key = unsafe { &*(key as *const ConduitKey).cast::<Key<[u8; CONDUIT_KEY_DATA]>>() };
        CONDUITS.get(key).copied()
    }

    #[inline(always)]
    fn rule(&self, key: &RuleKey) -> Option<&Rule> {
        // SAFETY: rules are replaced only by user space, value-sized writes.
        unsafe { RULES.get(key) }
    }

    #[inline(always)]
    fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        // SAFETY: copied out at once.
        unsafe { FLOWS.get(key) }.copied()
    }

    #[inline(always)]
    fn forget<V: Copy>(&mut self, v: V) -> V {
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

    #[inline(always)]
    fn set_flow(&mut self, key: &FlowKey, state: &FlowState) {
        match FLOWS.get_ptr_mut(key) {
            // SAFETY: points into the map value; this CPU's write of a POD.
            Some(p) => unsafe { *p = *state },
            None => {
                // A full LRU evicts the least recently used flow; that flow's
                // next data segment is then denied as unknown (fail closed).
                let _ = FLOWS.insert(key, state, 0);
            }
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
    *lay = Layout::default();
    let frame = Frame::new(buf, copy, wire_len);
    *decision = decide(
        &frame,
        &mut MapTables::for_this_packet(),
        &mut NoObserver,
        lay,
    );
    // Read back from map memory, where the verifier does not track values:
    // every verdict then reaches the code below as one state instead of one
    // per (reason, ADU count) pair, which would exceed the 1M-instruction
    // verification budget.
    // SAFETY: a valid, initialised map value of this invocation.
    let d = unsafe { core::ptr::read_volatile(decision) };
    account(&d, lay, &frame);
    if let Some(p) = LAST_VERDICT.get_ptr_mut(0) {
        // SAFETY: array value of this program.
        unsafe { *p = d.reason as u32 | (d.action as u32) << 8 };
    }
    match d.action {
        Action::Pass => Ok(XDP_PASS),
        Action::Drop => Ok(XDP_DROP),
        Action::ResetServer => {
            let len = rst_to_server(buf, lay);
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

#[inline(always)]
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
        emit(d, lay, frame);
    }
}

#[inline(always)]
fn emit(d: &Decision, lay: &Layout, frame: &Frame) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        // Ring full: the per-reason counter still counts the denial.
        return;
    };
    let mut flags = 0;
    if d.monitor {
        flags |= EVENT_MONITOR;
    }
    if d.has_adu {
        flags |= EVENT_HAS_ADU;
    }
    let (src, dst) = lay.addrs(frame);
    let write_denied =
        d.adu.write_quantity != 0 && d.reason == bessai_common::Reason::AddressDenied;
    // Fields written in place: an Event built on the stack first would cost
    // 64 of the 512 bytes of stack.
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to a reserved ring-buffer slot of size_of::<Event>();
    // every field is written before submit.
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).src = src;
        (*e).dst = dst;
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
        (*e)._pad = [0; 7];
    }
    entry.submit(0);
}

/// Passes everything. Not attached anywhere: the benchmark runs it beside
/// `bessai_xdp` to show what BPF_PROG_TEST_RUN itself costs per packet.
#[xdp]
pub fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    XDP_PASS
}
