//! Store-and-forward queue between the gateway and one SIEM destination
//! (IEC 62443-3-3 SR 2.8: an event dropped while the SIEM link is down is
//! evidence lost).
//!
//! # Use
//!
//! One [`Spool`] per destination, each in its own directory: the caller
//! pushes every event to each destination's spool. Destinations then fail
//! and catch up independently, and the disk limit of a dead destination
//! cannot drop events a live one still needs. The cost (a copy per
//! destination) is small next to that of a shared log with per-reader
//! positions and a drop policy that must agree with all of them.
//!
//! ```text
//! gateway ── push(class, id, bytes) ──▶ Spool ◀── peek(n) / commit_through(seq) ── forwarder ──▶ SIEM
//! ```
//!
//! The forwarder loop: `peek(n)`, deliver, `commit_through(last.seq)`. All
//! methods take `&mut self`; when the gateway and the forwarder run in
//! different tasks, share the spool behind a mutex.
//!
//! # Contract
//!
//! * **Records** are opaque bytes with a [`Class`] and a caller id (carried,
//!   never interpreted). The spool numbers each record with a sequence
//!   number `seq`, strictly increasing in push order, also across restarts
//!   (after a power loss, numbers of records that never reached the disk
//!   may be given again).
//! * **Order**: `peek` returns the oldest records not yet committed, in push
//!   order. Records removed by the disk limit leave gaps; the survivors keep
//!   their order.
//! * **Delivery is at least once.** `peek` removes nothing. After
//!   delivering, the caller calls `commit_through(seq)` with the last `seq`
//!   delivered; the records through it are never returned again, also after
//!   a restart. A crash between delivery and commit delivers them again; the
//!   id lets the SIEM recognise the copy. `commit_through` takes a sequence
//!   number rather than a count because the disk limit may remove records
//!   between `peek` and `commit`: a count would then remove records that
//!   were never delivered.
//! * **Memory** is bounded whatever the backlog: up to
//!   [`SpoolConfig::memory_records`] traffic records waiting in memory, the
//!   records of the last `peek` until committed, and a fixed-size entry per
//!   segment file.
//! * **Disk**: traffic records go to memory first and spill, all at once,
//!   to append-only segment files when the memory queue is full; audit
//!   records are written at once (after the traffic records in front of
//!   them, to keep the order). While the forwarder keeps up, traffic never
//!   touches the disk.
//! * **Disk limit** ([`SpoolConfig::max_bytes`], the sum of the segment
//!   file sizes; the memory queue does not count): the oldest traffic
//!   records are dropped first, a whole segment's worth at a time (the file
//!   deleted, or rewritten with only its audit records when it has some, so
//!   that they keep their place). Every dropped traffic record is older than
//!   every surviving one, with one exception: the segment being appended to
//!   is never rewritten while written (with the disk full of audit records
//!   that could mean a segment copy per push), so when it is the only one
//!   holding traffic, an arriving traffic record is dropped instead of the
//!   older traffic in that segment. Audit records are never dropped to make
//!   room; when only they remain and the next record does not fit, that
//!   record is dropped on arrival, audit or not, so the limit holds
//!   whatever is pushed (a week-long outage during a flood, with its "N
//!   events dropped" records, cannot fill the disk). Drops are counted
//!   ([`SpoolStats::dropped_traffic`], [`SpoolStats::dropped_audit`]) so
//!   that the caller can emit an audit event "N events dropped";
//!   [`PushOutcome`] reports the drops one push caused. Records `peek` returned may be dropped before their commit;
//!   they are counted as dropped, and the commit skips them.
//! * **Crashes**: records on disk are framed `[len u32][crc32 u32][class
//!   u8][seq u64][id u64][bytes]`; `open` checks every frame. A damaged
//!   frame with valid frames after it is skipped (the segment rewritten
//!   without it) and the records behind it are delivered; invalid bytes at
//!   the end of a segment (the torn last record of a crash) are cut. Both
//!   are counted ([`SpoolStats::discarded_at_open_bytes`],
//!   [`SpoolStats::skipped_at_open_frames`],
//!   [`SpoolStats::skipped_at_open_records`]). A damaged record is never
//!   returned. The commit position lives in a separate small
//!   file. What the spool handed to the OS survives a crash of the process;
//!   survival of a power loss depends on [`FsyncPolicy`]. Traffic records
//!   still in the memory queue are lost with the process (at most
//!   `memory_records`; set it to 0 to write every record through); dropping
//!   the [`Spool`] or calling [`Spool::flush`] writes them out.
//! * **Errors**: a failed `push` did not queue its record (see
//!   [`Spool::push`] for the one exception). A segment damaged
//!   while the spool runs (the file changed under it) makes `peek` return
//!   [`SpoolError::Corrupt`]; reopening the spool skips the damage and
//!   delivers what follows it.
//! * **One process per directory**: `open` locks it
//!   ([`SpoolError::Locked`]).

mod config;
mod disk;
mod error;
mod frame;
mod head;
mod segment;
mod syncer;

use std::collections::VecDeque;

pub use config::{FsyncPolicy, SpoolConfig};
use disk::DiskQueue;
pub use error::SpoolError;
pub use frame::{Class, FrameError};

/// A record as `peek` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    /// Position in the queue, assigned by `push`; pass the last one
    /// delivered to [`Spool::commit_through`].
    pub seq: u64,
    /// The caller's id, as pushed.
    pub id: u64,
    pub class: Class,
    pub bytes: Vec<u8>,
}

/// What one `push` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Sequence number given to the record.
    pub seq: u64,
    /// Traffic records the disk limit dropped during this push (possibly
    /// including this one).
    pub dropped_traffic: u64,
    /// Their payload bytes.
    pub dropped_traffic_bytes: u64,
    /// Audit records the disk limit dropped during this push (this one,
    /// when the disk is full of older audit records).
    pub dropped_audit: u64,
}

/// Counters and sizes; cheap to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records waiting for delivery (memory and disk).
    pub records: u64,
    /// Of those, in the memory queue.
    pub memory_records: usize,
    /// Payload bytes in the memory queue.
    pub memory_bytes: u64,
    /// Records read from disk by `peek` and held until committed.
    pub peeked_records_held: usize,
    /// Segment files, and entries of per-segment bookkeeping in memory.
    pub segments: usize,
    /// Sum of the segment file sizes.
    pub disk_bytes: u64,
    /// Traffic records dropped by the disk limit since `open`.
    pub dropped_traffic: u64,
    /// Their payload bytes.
    pub dropped_traffic_bytes: u64,
    /// Audit records dropped on arrival since `open` because older audit
    /// records filled the disk limit.
    pub dropped_audit: u64,
    /// `disk_bytes` exceeds `max_bytes` (only after an `open` with a lower
    /// limit than the files on disk already hold: pushes never exceed it).
    pub over_limit: bool,
    /// Bytes `open` cut from segments because they were not valid frames
    /// (a torn write, or damage), skipped frames included.
    pub discarded_at_open_bytes: u64,
    /// Damaged frames `open` skipped inside segments, with live records
    /// after them that are still delivered (each may span several records).
    pub skipped_at_open_frames: u64,
    /// Sequence numbers missing across those frames: records lost to the
    /// damage, at most (the disk limit leaves gaps too).
    pub skipped_at_open_records: u64,
    /// `open` found the commit position unreadable and will deliver
    /// everything on disk again.
    pub head_was_damaged: bool,
}

/// A store-and-forward queue for one SIEM destination; see the module
/// documentation for the contract.
pub struct Spool {
    config: SpoolConfig,
    disk: DiskQueue,
    /// Newest traffic records, not yet on disk; all newer than any record
    /// on disk.
    memory: VecDeque<SpooledRecord>,
    memory_bytes: u64,
    next_seq: u64,
    /// Highest `seq` handed out by `peek`, the limit for `commit_through`.
    peeked_through: u64,
    discarded_at_open_bytes: u64,
    skipped_at_open: disk::Skipped,
    head_was_damaged: bool,
}

impl Spool {
    /// Opens (creating if needed) the spool in `config.dir`, resuming what a
    /// previous process left: records not committed are delivered again.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        config.validate()?;
        let recovered = DiskQueue::open(&config)?;
        Ok(Spool {
            memory: VecDeque::with_capacity(config.memory_records.min(1024)),
            config,
            disk: recovered.disk,
            memory_bytes: 0,
            next_seq: recovered.last_seq + 1,
            peeked_through: 0,
            discarded_at_open_bytes: recovered.discarded_bytes,
            skipped_at_open: recovered.skipped,
            head_was_damaged: recovered.head_was_damaged,
        })
    }

    /// Queues one record behind all others.
    ///
    /// An error means the record was not queued (records may have moved
    /// from memory to disk meanwhile), with one exception: under
    /// [`FsyncPolicy::Always`] a failed `fdatasync` after the record was
    /// written is reported too; the record is then queued, but may not
    /// survive a power loss.
    pub fn push(
        &mut self,
        class: Class,
        id: u64,
        record: &[u8],
    ) -> Result<PushOutcome, SpoolError> {
        let max = self.config.max_record_bytes();
        if record.len() > max {
            return Err(SpoolError::RecordTooLarge {
                len: record.len(),
                max,
            });
        }
        self.disk.check_background_sync()?;
        let dropped_before = self.disk.dropped();
        let seq = self.next_seq;
        if class == Class::Traffic && self.config.memory_records > 0 {
            if self.memory.len() >= self.config.memory_records {
                self.spill_memory()?;
                self.disk.sync_per_policy()?;
            }
            self.memory.push_back(SpooledRecord {
                seq,
                id,
                class,
                bytes: record.to_vec(),
            });
            self.memory_bytes += record.len() as u64;
            self.next_seq += 1;
        } else {
            // Everything in memory is older and goes first.
            self.spill_memory()?;
            self.disk.stage(frame::RecordRef {
                seq,
                id,
                class,
                payload: record,
            })?;
            self.disk.write_pending()?;
            // Queued from here on: the number is taken even if the sync
            // below fails, so that it is never given twice.
            self.next_seq += 1;
            self.disk.sync_per_policy()?;
        }
        let dropped_after = self.disk.dropped();
        Ok(PushOutcome {
            seq,
            dropped_traffic: dropped_after.traffic - dropped_before.traffic,
            dropped_traffic_bytes: dropped_after.traffic_payload_bytes
                - dropped_before.traffic_payload_bytes,
            dropped_audit: dropped_after.audit - dropped_before.audit,
        })
    }

    /// Up to `max` of the oldest records not yet committed, in push order.
    /// Nothing is removed; a second `peek` without a commit returns the same
    /// records (unless the disk limit dropped some meanwhile).
    pub fn peek(&mut self, max: usize) -> Result<Vec<SpooledRecord>, SpoolError> {
        self.disk.check_background_sync()?;
        let mut out = self.disk.peek(max)?;
        if out.len() < max {
            // The disk has nothing more: the memory queue comes next.
            let room = max - out.len();
            out.extend(self.memory.iter().take(room).cloned());
        }
        if let Some(last) = out.last() {
            self.peeked_through = self.peeked_through.max(last.seq);
        }
        Ok(out)
    }

    /// Removes every record with a sequence number up to `seq` (the last
    /// one delivered); returns how many were removed. `seq` must have been
    /// returned by `peek` since `open`.
    pub fn commit_through(&mut self, seq: u64) -> Result<u64, SpoolError> {
        if seq > self.peeked_through {
            return Err(SpoolError::CommitBeyondPeek {
                requested: seq,
                peeked: self.peeked_through,
            });
        }
        self.disk.check_background_sync()?;
        let mut removed = self.disk.commit_through(seq)?;
        // Every record on disk is older than every record in memory, so
        // memory is only reached once the disk part is committed.
        let mut last_from_memory = None;
        while let Some(record) = self.memory.pop_front_if(|r| r.seq <= seq) {
            self.memory_bytes -= record.bytes.len() as u64;
            removed += 1;
            last_from_memory = Some(record.seq);
        }
        if let Some(last) = last_from_memory {
            self.disk.commit_beyond_disk(last)?;
        }
        Ok(removed)
    }

    /// Writes the memory queue to disk and forces segments and the commit
    /// position to stable storage, whatever the [`FsyncPolicy`].
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.spill_memory()?;
        self.disk.sync_now()
    }

    /// Records waiting for delivery.
    pub fn len(&self) -> u64 {
        self.disk.len() + self.memory.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the segment file sizes, what [`SpoolConfig::max_bytes`] limits.
    pub fn disk_bytes(&self) -> u64 {
        self.disk.bytes()
    }

    pub fn stats(&self) -> SpoolStats {
        let dropped = self.disk.dropped();
        SpoolStats {
            records: self.len(),
            memory_records: self.memory.len(),
            memory_bytes: self.memory_bytes,
            peeked_records_held: self.disk.cached_count(),
            segments: self.disk.segment_count(),
            disk_bytes: self.disk.bytes(),
            dropped_traffic: dropped.traffic,
            dropped_traffic_bytes: dropped.traffic_payload_bytes,
            dropped_audit: dropped.audit,
            over_limit: self.disk.over_limit(),
            discarded_at_open_bytes: self.discarded_at_open_bytes,
            skipped_at_open_frames: self.skipped_at_open.frames,
            skipped_at_open_records: self.skipped_at_open.records,
            head_was_damaged: self.head_was_damaged,
        }
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// Moves the memory queue to disk (to the OS; syncing is the caller's
    /// business). On failure the records not written stay in memory.
    fn spill_memory(&mut self) -> Result<(), SpoolError> {
        if self.memory.is_empty() {
            return Ok(());
        }
        let settled_before = self.disk.settled();
        let disk = &mut self.disk;
        let result = self
            .memory
            .iter()
            .try_for_each(|record| disk.stage(record.as_ref()))
            .and_then(|()| disk.write_pending());
        // Staging writes in batches, in order, and drops on arrival in
        // order: exactly the first `settled` records are taken care of.
        let settled = usize::try_from(disk.settled() - settled_before)
            .map_or(self.memory.len(), |n| n.min(self.memory.len()));
        for record in self.memory.drain(..settled) {
            self.memory_bytes -= record.bytes.len() as u64;
        }
        result
    }
}

impl Drop for Spool {
    /// Writes the memory queue out so that a restart resumes with it.
    fn drop(&mut self) {
        let sync = self.config.fsync != FsyncPolicy::Never;
        let result = self
            .spill_memory()
            .and_then(|()| if sync { self.disk.sync_now() } else { Ok(()) });
        if let Err(error) = result {
            tracing::error!(%error, dir = %self.config.dir.display(), "closing the SIEM spool lost records");
        }
    }
}
