//! Programs the benchmark runs beside `bessai_xdp` in the same run, as its
//! baselines (never attached by the daemon): what BPF_PROG_TEST_RUN itself
//! costs, what dropping costs, and what a minimal Modbus filter without flow
//! state costs (the bar issue 10 sets for the real one).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};

/// Passes everything.
#[xdp]
pub fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Drops everything: the floor for a flood of forbidden frames.
#[xdp]
pub fn xdp_drop_baseline(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Bounds-checked pointer to `N` bytes at `off` of the packet.
#[inline(always)]
fn at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*const [u8; N]> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const [u8; N])
}

/// The reference filter: Ethernet, IPv4 without options, TCP to port 502,
/// one MBAP-framed FC 3 read of holding registers 0-99 from unit 1 passes;
/// any other segment to port 502 is dropped; everything else passes. Plain
/// checks with direct packet access, no maps, no flow state: a lower bound
/// for the per-packet cost of a Modbus filter.
#[xdp]
pub fn xdp_reference_filter(ctx: XdpContext) -> u32 {
    reference(&ctx).unwrap_or(XDP_DROP)
}

#[inline(always)]
fn reference(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: every pointer comes from `at`, which checked it against data_end.
    unsafe {
        let eth = &*at::<14>(ctx, 0)?;
        if eth[12] != 0x08 || eth[13] != 0x00 {
            return Some(XDP_PASS);
        }
        let ip = &*at::<20>(ctx, 14)?;
        if ip[0] != 0x45 || ip[9] != 6 {
            return Some(XDP_PASS);
        }
        let tcp = &*at::<20>(ctx, 34)?;
        if u16::from_be_bytes([tcp[2], tcp[3]]) != 502 {
            return Some(XDP_PASS);
        }
        let doff = (tcp[12] >> 4) as usize * 4;
        if doff != 20 {
            return Some(XDP_DROP);
        }
        let adu = at::<12>(ctx, 54)?;
        let a = &*adu;
        let len = u16::from_be_bytes([a[4], a[5]]);
        let addr = u16::from_be_bytes([a[8], a[9]]);
        let qty = u16::from_be_bytes([a[10], a[11]]);
        let ok = a[2] == 0
            && a[3] == 0
            && len == 6
            && a[6] == 1
            && a[7] == 3
            && (1..=125).contains(&qty)
            && addr as u32 + qty as u32 <= 100;
        Some(if ok { XDP_PASS } else { XDP_DROP })
    }
}
