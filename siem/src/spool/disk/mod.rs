//! The on-disk part of the queue: segment files, the commit position, the
//! disk limit.
//!
//! In RAM it keeps one [`Segment`] entry per file, the batch of frames being
//! written, and the records handed out by `peek` but not yet committed;
//! never an index of all records.

mod read;
mod reclaim;
mod recover;

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::SpooledRecord;
use super::config::FsyncPolicy;
use super::error::SpoolError;
use super::frame::{self, Class, RecordRef};
use super::head::HeadFile;
use super::segment::{self, LiveCounts, Segment, SegmentWriter};
use super::syncer::Syncer;
use read::{Cached, Cursor};
pub(super) use recover::Skipped;

/// Frames are collected and written with one `write` once this many bytes
/// are waiting (or when the push ends).
const WRITE_BATCH_BYTES: u64 = 256 * 1024;

/// What the disk limit removed, cumulative.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dropped {
    pub(super) traffic: u64,
    pub(super) traffic_payload_bytes: u64,
    /// Audit records that found the disk full of older audit records.
    pub(super) audit: u64,
}

pub(super) struct DiskQueue {
    dir: PathBuf,
    dir_handle: Arc<File>,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    /// Held for the life of the queue: a second process on the same
    /// directory would interleave appends.
    _lock: File,
    head: HeadFile,
    head_handle: Arc<File>,
    /// Highest delivered sequence number; every record on disk above it is
    /// live.
    committed: u64,
    /// Oldest first. The front holds the first live record, at `head_offset`.
    segments: VecDeque<Segment>,
    head_offset: u64,
    /// Appends go to `segments.back()` while this is `Some`.
    writer: Option<SegmentWriter>,
    next_segment: u64,
    /// Sum of segment sizes.
    bytes: u64,
    /// Live records over all segments.
    records: u64,
    /// Records whose fate is settled: written to the OS, or dropped on
    /// arrival because the disk was full. Lets the caller release exactly
    /// those from its memory queue.
    settled: u64,
    /// Records written since the last sync (or sync request).
    unsynced: u64,
    syncer: Option<Syncer>,
    cache: VecDeque<Cached>,
    cursor: Cursor,
    dropped: Dropped,
}

impl DiskQueue {
    pub(super) fn len(&self) -> u64 {
        self.records
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub(super) fn cached_count(&self) -> usize {
        self.cache.len()
    }

    pub(super) fn dropped(&self) -> Dropped {
        self.dropped
    }

    pub(super) fn settled(&self) -> u64 {
        self.settled
    }

    pub(super) fn over_limit(&self) -> bool {
        self.bytes > self.max_bytes
    }

    /// Reports a failure of a background sync since the last call.
    pub(super) fn check_background_sync(&self) -> Result<(), SpoolError> {
        match self.syncer.as_ref().and_then(Syncer::take_error) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Queues one record behind everything on disk. It reaches the OS by
    /// the next [`DiskQueue::write_pending`] at the latest. A record that
    /// finds the disk full of audit records is dropped and counted: audit
    /// records too, so that a flood's bookkeeping cannot grow the spool
    /// past its limit.
    pub(super) fn stage(&mut self, record: RecordRef<'_>) -> Result<(), SpoolError> {
        let need = frame::frame_len(record.payload.len());
        let staged = self.writer.as_ref().map_or(0, SegmentWriter::staged_bytes);
        if self.bytes + staged + need > self.max_bytes {
            self.write_pending()?;
            let room = self.make_room(need)?;
            if !room {
                match record.class {
                    Class::Traffic => {
                        self.dropped.traffic += 1;
                        self.dropped.traffic_payload_bytes += record.payload.len() as u64;
                    }
                    Class::Audit => {
                        self.dropped.audit += 1;
                        tracing::error!(
                            seq = record.seq,
                            dropped = self.dropped.audit,
                            "SIEM spool full of audit records: audit record dropped"
                        );
                    }
                }
                self.settled += 1;
                return Ok(());
            }
        }
        let segment_bytes = self.segment_bytes;
        let fitting = match (self.writer.as_mut(), self.segments.back()) {
            (Some(writer), Some(active))
                if active.size + writer.staged_bytes() + need <= segment_bytes =>
            {
                Some(writer)
            }
            _ => None,
        };
        let writer = match fitting {
            Some(writer) => writer,
            None => {
                self.write_pending()?;
                self.start_segment()?
            }
        };
        writer.stage(&record);
        if writer.staged_bytes() >= WRITE_BATCH_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Hands the staged frames to the OS. On failure they are discarded
    /// (their records stay where the caller had them) and the segment is
    /// closed, so that later appends never sit behind a partial frame.
    pub(super) fn write_pending(&mut self) -> Result<(), SpoolError> {
        let (Some(writer), Some(active)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        let written = match writer.write_staged(active.size) {
            Ok(written) => written,
            Err(error) => {
                self.writer = None;
                return Err(error);
            }
        };
        active.size += written.bytes;
        active.live.add_all(written.live);
        self.bytes += written.bytes;
        self.records += written.records;
        self.settled += written.records;
        self.unsynced += written.records;
        Ok(())
    }

    /// Applies the fsync policy to what has been written.
    pub(super) fn sync_per_policy(&mut self) -> Result<(), SpoolError> {
        let due = match self.fsync {
            FsyncPolicy::Always => self.unsynced > 0,
            FsyncPolicy::EveryN(n) => self.unsynced >= u64::from(n),
            FsyncPolicy::Never => false,
        };
        if due {
            self.sync_active(false)?;
        }
        Ok(())
    }

    /// Writes what is staged and forces the active segment and the commit
    /// position to stable storage, on this thread.
    pub(super) fn sync_now(&mut self) -> Result<(), SpoolError> {
        self.write_pending()?;
        self.sync_active(true)?;
        self.head.store(self.committed, true)?;
        segment::sync_dir(&self.dir)
    }

    /// Syncs the active segment: on this thread under `Always` or when
    /// `wait`, else through the background syncer.
    fn sync_active(&mut self, wait: bool) -> Result<(), SpoolError> {
        if let Some(writer) = &self.writer {
            match (&self.syncer, wait) {
                (Some(syncer), false) => syncer.request(writer.path(), writer.file()),
                _ => writer.sync()?,
            }
        }
        self.unsynced = 0;
        Ok(())
    }

    /// Closes the active segment (if any; nothing may be staged) and opens
    /// the next one.
    fn start_segment(&mut self) -> Result<&mut SegmentWriter, SpoolError> {
        if self.unsynced > 0 && self.fsync != FsyncPolicy::Never {
            self.sync_active(false)?;
        }
        self.writer = None;
        // Sealed now, it can go if the forwarder has already taken it all.
        self.remove_consumed_front()?;
        let writer = SegmentWriter::create(&self.dir, self.next_segment)?;
        self.next_segment += 1;
        self.sync_dir_per_policy()?;
        self.segments.push_back(Segment {
            index: writer.index,
            path: writer.path().to_path_buf(),
            size: 0,
            live: LiveCounts::default(),
        });
        Ok(self.writer.insert(writer))
    }

    fn sync_dir_per_policy(&self) -> Result<(), SpoolError> {
        match (self.fsync, &self.syncer) {
            (FsyncPolicy::Never, _) => Ok(()),
            (_, Some(syncer)) => {
                syncer.request(&self.dir, &self.dir_handle);
                Ok(())
            }
            (_, None) => segment::sync_dir(&self.dir),
        }
    }

    /// Whether `segment` is the one being appended to.
    fn is_active(&self, segment: &Segment) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|w| w.index == segment.index)
    }

    /// Persists the commit position per policy.
    fn store_head(&mut self) -> Result<(), SpoolError> {
        match (self.fsync, &self.syncer) {
            (FsyncPolicy::Always, _) => self.head.store(self.committed, true),
            (FsyncPolicy::Never, _) => self.head.store(self.committed, false),
            (_, syncer) => {
                self.head.store(self.committed, false)?;
                if let Some(syncer) = syncer {
                    syncer.request(self.head.path(), &self.head_handle);
                }
                Ok(())
            }
        }
    }
}

impl SpooledRecord {
    pub(super) fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            seq: self.seq,
            id: self.id,
            class: self.class,
            payload: &self.bytes,
        }
    }
}
