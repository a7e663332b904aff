//! Opening a spool directory: taking the lock, and rebuilding the per-segment
//! bookkeeping from the files a previous process left, crashed or not.
//!
//! Every frame is checked (length and CRC). A damaged frame with valid
//! frames after it is skipped: the segment is rewritten without it, so the
//! records behind it are still delivered, and the skip is counted. Invalid
//! bytes with no valid frame after them (the torn last record of a crash)
//! are cut. Nothing invalid is ever returned, and every byte removed is
//! counted.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use super::DiskQueue;
use super::read::Cursor;
use crate::spool::config::{FsyncPolicy, SpoolConfig};
use crate::spool::error::{IoContext, SpoolError};
use crate::spool::head::HeadFile;
use crate::spool::segment::{self, LiveCounts, Segment, SegmentReader, Step};
use crate::spool::syncer::Syncer;

const LOCK_FILE: &str = "lock";

/// A reopened disk queue and what recovery found.
pub(in crate::spool) struct Recovered {
    pub(in crate::spool) disk: DiskQueue,
    /// Highest sequence number on disk or committed: numbering resumes
    /// above it.
    pub(in crate::spool) last_seq: u64,
    /// Bytes cut from segments because they were not valid frames.
    pub(in crate::spool) discarded_bytes: u64,
    /// Damaged stretches skipped with live records after them, and the
    /// sequence numbers missing across them (records lost, at most).
    pub(in crate::spool) skipped: Skipped,
    /// The commit position was unreadable: everything on disk will be
    /// delivered again.
    pub(in crate::spool) head_was_damaged: bool,
}

impl DiskQueue {
    pub(in crate::spool) fn open(config: &SpoolConfig) -> Result<Recovered, SpoolError> {
        let dir = config.dir.as_path();
        fs::create_dir_all(dir).at(dir)?;
        let lock = lock_dir(dir)?;
        let loaded = HeadFile::open(dir)?;
        if loaded.was_damaged {
            tracing::error!(dir = %dir.display(), "spool commit position unreadable: redelivering everything on disk");
        }
        let committed = loaded.committed;
        let sync = config.fsync != FsyncPolicy::Never;

        let mut last_seq = committed;
        let mut segments = VecDeque::new();
        let mut head_offset = 0;
        let mut discarded_bytes = 0;
        let mut skipped = Skipped::default();
        for index in segment_indices(dir)? {
            let path = segment::segment_path(dir, index);
            let scan = scan_segment(&path, committed, &mut last_seq, sync)?;
            discarded_bytes += scan.discarded_bytes;
            skipped.frames += scan.skipped.frames;
            skipped.records += scan.skipped.records;
            if scan.live.records() == 0 {
                // Delivered to the end (or emptied by a cut).
                segment::remove(&path)?;
                continue;
            }
            if segments.is_empty() {
                head_offset = scan.first_live_offset;
            }
            segments.push_back(Segment {
                index,
                path,
                size: scan.size,
                live: scan.live,
            });
        }
        if sync {
            segment::sync_dir(dir)?;
        }

        let next_segment = segments.back().map_or(0, |s| s.index + 1);
        let front = segments.front().map_or(next_segment, |s| s.index);
        let syncer = match config.fsync {
            FsyncPolicy::EveryN(_) => Some(Syncer::start()?),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        let disk = DiskQueue {
            dir: dir.to_path_buf(),
            dir_handle: Arc::new(File::open(dir).at(dir)?),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            fsync: config.fsync,
            _lock: lock,
            head_handle: Arc::new(loaded.head.try_clone_file()?),
            head: loaded.head,
            committed,
            bytes: segments.iter().map(|s| s.size).sum(),
            records: segments.iter().map(|s| s.live.records()).sum(),
            segments,
            head_offset,
            writer: None,
            next_segment,
            settled: 0,
            unsynced: 0,
            syncer,
            cache: VecDeque::new(),
            cursor: Cursor::at(front, head_offset, committed),
            dropped: Default::default(),
        };
        Ok(Recovered {
            disk,
            last_seq,
            discarded_bytes,
            skipped,
            head_was_damaged: loaded.was_damaged,
        })
    }
}

fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(SpoolError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(SpoolError::Io { path, source }),
    }
}

/// Segment indices in queue order; removes what an unfinished compaction
/// left.
fn segment_indices(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut indices = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = segment::parse_segment_name(name) {
            indices.push(index);
        } else if segment::is_temp_name(name) {
            segment::remove(&entry.path())?;
        }
    }
    indices.sort_unstable();
    Ok(indices)
}

/// Damage skipped inside segments (see [`Recovered::skipped`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(in crate::spool) struct Skipped {
    pub(in crate::spool) frames: u64,
    pub(in crate::spool) records: u64,
}

struct Scan {
    size: u64,
    live: LiveCounts,
    first_live_offset: u64,
    discarded_bytes: u64,
    skipped: Skipped,
}

/// Checks every frame of a segment, skips damaged frames that valid ones
/// follow (rewriting the file without them), cuts invalid bytes at its end,
/// and counts the live records.
fn scan_segment(
    path: &Path,
    committed: u64,
    last_seq: &mut u64,
    sync: bool,
) -> Result<Scan, SpoolError> {
    let file_len = fs::metadata(path).at(path)?.len();
    let start_seq = *last_seq;
    let mut reader = SegmentReader::open(path, 0, start_seq)?;
    let mut live = LiveCounts::default();
    let mut first_live_offset = None;
    let mut damaged = Vec::new();
    let mut skipped = Skipped::default();
    // The sequence number in front of the damage just skipped.
    let mut before_damage = None;
    let valid_end = loop {
        match reader.next(file_len)? {
            Step::Record { header, end } => {
                if let Some(before) = before_damage.take() {
                    // Records of the damaged stretch were numbered between
                    // its neighbours; those at or below `committed` were
                    // delivered already, and no gap means the bytes held no
                    // record (a failed append's remains).
                    let missing = (header.seq - 1).max(committed) - u64::max(before, committed);
                    if missing > 0 {
                        skipped.frames += 1;
                        skipped.records += missing;
                    }
                }
                if header.seq > committed {
                    first_live_offset.get_or_insert(end - header.frame_len());
                    live.add(header.class, header.payload_len);
                }
            }
            Step::End => break reader.offset(),
            Step::Invalid { offset, reason } => {
                let before = reader.last_seq();
                match segment::find_next_frame(path, offset + 1, file_len, before)? {
                    Some(next) => {
                        tracing::warn!(path = %path.display(), offset, skipped_bytes = next - offset,
                            %reason, "skipping a damaged spool frame");
                        damaged.push((offset, next));
                        before_damage = Some(before);
                        reader = SegmentReader::open(path, next, before)?;
                    }
                    None => {
                        tracing::warn!(path = %path.display(), offset, %reason, "cutting a damaged spool segment");
                        break offset;
                    }
                }
            }
        }
    };
    if !damaged.is_empty() {
        rewrite_without(path, &damaged, valid_end, sync)?;
        // The clean copy has other offsets: read it again.
        *last_seq = start_seq;
        let clean = scan_segment(path, committed, last_seq, sync)?;
        return Ok(Scan {
            discarded_bytes: file_len - clean.size,
            skipped,
            ..clean
        });
    }
    *last_seq = reader.last_seq();
    let discarded_bytes = file_len.saturating_sub(valid_end);
    if discarded_bytes > 0 {
        let file = OpenOptions::new().write(true).open(path).at(path)?;
        file.set_len(valid_end).at(path)?;
        if sync {
            file.sync_data().at(path)?;
        }
    }
    Ok(Scan {
        size: valid_end,
        live,
        first_live_offset: first_live_offset.unwrap_or(valid_end),
        discarded_bytes,
        skipped,
    })
}

/// Replaces the segment at `path` with its bytes up to `end` minus the
/// `damaged` stretches (in order, not overlapping), through a temporary file
/// renamed over it, so that a crash leaves the old file or the new one.
fn rewrite_without(
    path: &Path,
    damaged: &[(u64, u64)],
    end: u64,
    sync: bool,
) -> Result<(), SpoolError> {
    segment::replace(path, |temp| copy_without(path, temp, damaged, end, sync))
}

fn copy_without(
    path: &Path,
    temp: &Path,
    damaged: &[(u64, u64)],
    end: u64,
    sync: bool,
) -> Result<(), SpoolError> {
    let mut source = File::open(path).at(path)?;
    let mut out = File::create(temp).at(temp)?;
    let mut at = 0;
    for &(from, to) in damaged.iter().chain(std::iter::once(&(end, end))) {
        source.seek(SeekFrom::Start(at)).at(path)?;
        let copied = io::copy(&mut (&mut source).take(from - at), &mut out).at(temp)?;
        if copied != from - at {
            return Err(SpoolError::Io {
                path: path.to_path_buf(),
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        at = to;
    }
    if sync {
        out.sync_data().at(temp)?;
    }
    Ok(())
}
