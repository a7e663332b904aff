//! Settings of one spool.

use std::path::PathBuf;

use super::error::SpoolError;
use super::frame::{HEADER_LEN, MAX_RECORD_BYTES};

/// When records on disk and the commit position are forced to stable
/// storage. Whatever the policy, what the spool writes reaches the OS before
/// `push`/`commit_through` return, so a crash of the process alone loses
/// nothing written; the policy is about power loss and kernel crashes.
/// (Traffic records waiting in the memory queue are not written at all yet:
/// see [`SpoolConfig::memory_records`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A `push` that writes to disk and a `commit_through` of records on
    /// disk return only after an `fdatasync`: nothing written is lost, but
    /// each such call waits for the storage (about 4 ms on the VM disk
    /// measured), capping them at a few hundred per second.
    Always,
    /// After every `n` records written, and after every commit of records on
    /// disk, a background thread syncs the files; the caller never waits. A
    /// power loss loses at most the records written since the last completed
    /// sync (`n`, plus what arrived while a sync ran) and may deliver the
    /// last commits' records again.
    EveryN(u32),
    /// The OS writes back when it likes (Linux: within about 30 s). A power
    /// loss can lose that window of records and deliver committed ones
    /// again.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::EveryN(1000)
    }
}

/// Settings of one spool (one SIEM destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory holding this spool's files; created if missing. One
    /// directory per destination.
    pub dir: PathBuf,
    /// Disk limit: sum of the segment file sizes the spool aims to stay
    /// under, by dropping the oldest traffic records. Audit records alone
    /// may exceed it.
    pub max_bytes: u64,
    /// Traffic records held in memory before they spill to disk. Memory use
    /// is about this many records whatever the backlog. They die with the
    /// process (dropping the [`Spool`](super::Spool) writes them out); 0
    /// writes every record straight to disk.
    pub memory_records: usize,
    /// Size at which a segment file is closed and a new one started; also
    /// the granularity of dropping: a reclaim drops the traffic records of
    /// one whole segment. A record's frame must fit in one segment.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl SpoolConfig {
    /// Smallest accepted `segment_bytes`.
    pub const MIN_SEGMENT_BYTES: u64 = 4096;

    /// Defaults for a gateway: 1 GiB on disk, 10 000 records in memory,
    /// 16 MiB segments, fsync every 1000 records.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            max_bytes: 1 << 30,
            memory_records: 10_000,
            segment_bytes: 16 << 20,
            fsync: FsyncPolicy::default(),
        }
    }

    /// Largest record `push` accepts with this configuration.
    pub fn max_record_bytes(&self) -> usize {
        let fits_in_segment = usize::try_from(self.segment_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(HEADER_LEN);
        fits_in_segment.min(MAX_RECORD_BYTES)
    }

    pub(super) fn validate(&self) -> Result<(), SpoolError> {
        let invalid = |field, reason| Err(SpoolError::InvalidConfig { field, reason });
        if self.segment_bytes < Self::MIN_SEGMENT_BYTES {
            return invalid("segment_bytes", "must be at least 4096");
        }
        if self.max_bytes < self.segment_bytes {
            return invalid("max_bytes", "must be at least segment_bytes");
        }
        if self.fsync == FsyncPolicy::EveryN(0) {
            return invalid("fsync", "EveryN needs n >= 1");
        }
        Ok(())
    }
}
