//! Per-reason and per-conduit counters, summed over CPUs.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use bessai_common::{
    CONDUIT_ALLOWED, CONDUIT_DENIED, CONDUIT_MONITORED, CONDUIT_RESETS, ConduitCounters,
    MAX_POLICY_CONDUITS, Reason, STAT_DUPLICATE, STAT_ESTABLISHED, STAT_FLOW_TABLE_FULL,
    STAT_HALF_OPEN, STAT_OUT_OF_ORDER, STAT_RINGBUF_FULL, STAT_UNVERIFIABLE, STAT_WINDOW_FULL,
    reason::NUM_REASONS,
};

use super::DataplaneError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConduitTotals {
    pub allowed_adus: u64,
    pub denied: u64,
    pub monitored: u64,
    pub resets: u64,
}

/// The normalizer's and the event path's own counters (`STAT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Events lost because the ring buffer was full (user space too slow).
    pub ringbuf_full: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub unverifiable: u64,
    pub window_full: u64,
    pub half_open: u64,
    pub established: u64,
    pub flow_table_full: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub by_reason: Vec<(Reason, u64)>,
    /// Index = conduit id.
    pub by_conduit: Vec<ConduitTotals>,
    pub stream: StreamStats,
}

impl Counters {
    pub fn reason(&self, r: Reason) -> u64 {
        self.by_reason
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    }
}

/// Reads the counters; conduits of generation `g`, by policy conduit id.
pub(super) fn read(ebpf: &Ebpf, g: u8) -> Result<Counters, DataplaneError> {
    let err = |source| DataplaneError::Map {
        map: "counters",
        source,
    };
    let reasons: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
        ebpf.map("REASON_COUNTERS")
            .ok_or(DataplaneError::NoMap("REASON_COUNTERS"))?,
    )
    .map_err(err)?;
    let mut by_reason = Vec::new();
    for i in 0..NUM_REASONS as u32 {
        if let Some(r) = Reason::from_u8(i as u8) {
            let total: u64 = reasons.get(&i, 0).map_err(err)?.iter().sum();
            by_reason.push((r, total));
        }
    }
    let conduits: PerCpuArray<&MapData, ConduitCounters> = PerCpuArray::try_from(
        ebpf.map("CONDUIT_COUNTERS")
            .ok_or(DataplaneError::NoMap("CONDUIT_COUNTERS"))?,
    )
    .map_err(err)?;
    let mut by_conduit = Vec::new();
    let first = u32::from(g) * MAX_POLICY_CONDUITS;
    for i in first..first + MAX_POLICY_CONDUITS {
        let mut t = ConduitTotals::default();
        for c in conduits.get(&i, 0).map_err(err)?.iter() {
            t.allowed_adus += c[CONDUIT_ALLOWED];
            t.denied += c[CONDUIT_DENIED];
            t.monitored += c[CONDUIT_MONITORED];
            t.resets += c[CONDUIT_RESETS];
        }
        by_conduit.push(t);
    }
    // Trailing conduits that saw nothing are not reported.
    while by_conduit
        .last()
        .is_some_and(|t| *t == ConduitTotals::default())
    {
        by_conduit.pop();
    }
    Ok(Counters {
        by_reason,
        by_conduit,
        stream: read_stats(ebpf)?,
    })
}

/// The `STAT_*` counters, summed over CPUs.
pub(super) fn read_stats(ebpf: &Ebpf) -> Result<StreamStats, DataplaneError> {
    let err = |source| DataplaneError::Map {
        map: "STATS",
        source,
    };
    let stats: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map("STATS").ok_or(DataplaneError::NoMap("STATS"))?)
            .map_err(err)?;
    let get =
        |i: u32| -> Result<u64, DataplaneError> { Ok(stats.get(&i, 0).map_err(err)?.iter().sum()) };
    Ok(StreamStats {
        ringbuf_full: get(STAT_RINGBUF_FULL)?,
        out_of_order: get(STAT_OUT_OF_ORDER)?,
        duplicates: get(STAT_DUPLICATE)?,
        unverifiable: get(STAT_UNVERIFIABLE)?,
        window_full: get(STAT_WINDOW_FULL)?,
        half_open: get(STAT_HALF_OPEN)?,
        established: get(STAT_ESTABLISHED)?,
        flow_table_full: get(STAT_FLOW_TABLE_FULL)?,
    })
}
