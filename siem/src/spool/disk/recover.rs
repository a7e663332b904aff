//! Opening a spool directory: taking the lock, and rebuilding the per-segment
//! bookkeeping from the files a previous process left, crashed or not.
//!
//! Every frame is checked (length and CRC). A segment is cut at its first
//! invalid frame: after a crash that is the torn last record; anywhere else
//! it is damage, and the frames after it cannot be delimited reliably. What
//! is cut is counted, never returned.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
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
        for index in segment_indices(dir)? {
            let path = segment::segment_path(dir, index);
            let scan = scan_segment(&path, committed, &mut last_seq, sync)?;
            discarded_bytes += scan.discarded_bytes;
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

struct Scan {
    size: u64,
    live: LiveCounts,
    first_live_offset: u64,
    discarded_bytes: u64,
}

/// Checks every frame of a segment, cuts it at the first invalid one, and
/// counts the live records.
fn scan_segment(
    path: &Path,
    committed: u64,
    last_seq: &mut u64,
    sync: bool,
) -> Result<Scan, SpoolError> {
    let mut reader = SegmentReader::open(path, 0, *last_seq)?;
    let mut live = LiveCounts::default();
    let mut first_live_offset = None;
    let valid_end = loop {
        match reader.next(u64::MAX)? {
            Step::Record { header, end } => {
                if header.seq > committed {
                    first_live_offset.get_or_insert(end - header.frame_len());
                    live.add(header.class, header.payload_len);
                }
            }
            Step::End => break reader.offset(),
            Step::Invalid { offset, reason } => {
                tracing::warn!(path = %path.display(), offset, %reason, "cutting a damaged spool segment");
                break offset;
            }
        }
    };
    *last_seq = reader.last_seq();
    let file_len = fs::metadata(path).at(path)?.len();
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
    })
}
