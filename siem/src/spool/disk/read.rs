//! Handing records out (`peek`) and removing delivered ones (`commit`).

use super::DiskQueue;
use crate::spool::SpooledRecord;
use crate::spool::error::SpoolError;
use crate::spool::frame::FrameError;
use crate::spool::segment::{self, SegmentReader, Step};

/// A record `peek` has read from disk, kept until it is committed so that a
/// retried delivery does not read it again, and so that `commit` knows how
/// far the head moves.
pub(super) struct Cached {
    pub(super) record: SpooledRecord,
    segment: u64,
    /// Offset just past its frame in `segment`.
    end: u64,
}

/// Where the first record not yet in the cache starts.
pub(super) struct Cursor {
    segment: u64,
    offset: u64,
    /// Sequence number of the record before that position.
    last_seq: u64,
    reader: Option<SegmentReader>,
}

impl Cursor {
    pub(super) fn at(segment: u64, offset: u64, last_seq: u64) -> Cursor {
        Cursor {
            segment,
            offset,
            last_seq,
            reader: None,
        }
    }

    fn move_to(&mut self, segment: u64) {
        self.segment = segment;
        self.offset = 0;
        self.reader = None;
    }
}

impl DiskQueue {
    /// Up to `max` of the oldest live records, in order, without removing
    /// them.
    pub(in crate::spool) fn peek(&mut self, max: usize) -> Result<Vec<SpooledRecord>, SpoolError> {
        let live = usize::try_from(self.records).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(max.min(live));
        out.extend(
            self.cache
                .iter()
                .take(max)
                .map(|cached| cached.record.clone()),
        );
        while out.len() < max {
            match self.read_one() {
                Ok(Some(record)) => out.push(record.clone()),
                Ok(None) => break,
                // Deliver the good records in front of the damage first; the
                // cursor stays on it, so the next peek reports it.
                Err(error) if out.is_empty() => return Err(error),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Removes the oldest records while their sequence number is at most
    /// `through`; returns how many.
    pub(in crate::spool) fn commit_through(&mut self, through: u64) -> Result<u64, SpoolError> {
        let mut removed = 0;
        let mut finished_segments = Vec::new();
        while self.records > 0 {
            if self.cache.is_empty() {
                match self.read_one() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    // Commit what lies in front of damage; peek reports it.
                    Err(_) if removed > 0 => break,
                    Err(error) => return Err(error),
                }
            }
            if self
                .cache
                .front()
                .is_none_or(|front| front.record.seq > through)
            {
                break;
            }
            let Some(done) = self.cache.pop_front() else {
                break;
            };
            // Segments in front of the record's own have been read to the
            // end: every record in them is committed now.
            while let Some(front) = self.segments.pop_front_if(|s| s.index < done.segment) {
                self.bytes -= front.size;
                self.records -= front.live.records();
                finished_segments.push(front.path);
            }
            if let Some(front) = self.segments.front_mut() {
                front
                    .live
                    .remove(done.record.class, done.record.bytes.len());
            }
            self.head_offset = done.end;
            self.records -= 1;
            self.committed = done.record.seq;
            removed += 1;
        }
        if removed == 0 {
            return Ok(0);
        }
        // Position first, deletions second: a crash in between leaves
        // segments holding only committed records, which open() removes.
        self.store_head()?;
        for path in finished_segments {
            segment::remove(&path)?;
        }
        self.remove_consumed_front()?;
        Ok(removed)
    }

    /// Records that records through `seq` which never reached the disk were
    /// delivered, so that numbering resumes above them after a restart.
    /// Written to the OS only: with the forwarder keeping up this happens on
    /// every commit, and losing it to a power cut costs nothing but reused
    /// numbers of records that are gone anyway.
    pub(in crate::spool) fn commit_beyond_disk(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq > self.committed {
            self.committed = seq;
            self.head.store(seq, false)?;
        }
        Ok(())
    }

    /// Deletes the front segment once it has been read and committed to its
    /// end, unless it is still being appended to.
    pub(super) fn remove_consumed_front(&mut self) -> Result<(), SpoolError> {
        let consumed = self.segments.front().is_some_and(|front| {
            front.live.records() == 0 && self.head_offset >= front.size && !self.is_active(front)
        });
        if consumed && let Some(front) = self.segments.pop_front() {
            self.bytes -= front.size;
            self.head_offset = 0;
            segment::remove(&front.path)?;
        }
        Ok(())
    }

    /// Forgets what `peek` read ahead: the next read starts again at the
    /// head. Needed after the disk limit rewrote or removed segments.
    pub(super) fn rewind(&mut self) {
        self.cache.clear();
        let front = self.segments.front().map_or(self.next_segment, |s| s.index);
        self.cursor = Cursor::at(front, self.head_offset, self.committed);
    }

    /// Reads the record at the cursor into the cache.
    fn read_one(&mut self) -> Result<Option<&SpooledRecord>, SpoolError> {
        loop {
            let pos = match self
                .segments
                .binary_search_by_key(&self.cursor.segment, |s| s.index)
            {
                Ok(pos) => pos,
                // Its segment was removed once consumed: go on with the next.
                Err(pos) => {
                    let Some(next) = self.segments.get(pos) else {
                        return Ok(None);
                    };
                    self.cursor.move_to(next.index);
                    pos
                }
            };
            let segment = &self.segments[pos];
            if self.cursor.offset >= segment.size {
                let Some(next) = self.segments.get(pos + 1) else {
                    return Ok(None);
                };
                self.cursor.move_to(next.index);
                continue;
            }
            let reader = match &mut self.cursor.reader {
                Some(reader) => reader,
                slot => slot.insert(SegmentReader::open(
                    &segment.path,
                    self.cursor.offset,
                    self.cursor.last_seq,
                )?),
            };
            match reader.next(segment.size)? {
                Step::Record { header, end } => {
                    let record = SpooledRecord {
                        seq: header.seq,
                        id: header.id,
                        class: header.class,
                        bytes: reader.take_payload(),
                    };
                    self.cursor.offset = end;
                    self.cursor.last_seq = header.seq;
                    self.cache.push_back(Cached {
                        record,
                        segment: segment.index,
                        end,
                    });
                    return Ok(self.cache.back().map(|cached| &cached.record));
                }
                // Only repeated records (skipped) were left before the end.
                Step::End if reader.offset() >= segment.size => self.cursor.offset = segment.size,
                Step::End => {
                    let offset = reader.offset();
                    // The reader has consumed the bytes it rejected: a retry
                    // must start from the cursor again.
                    self.cursor.reader = None;
                    return Err(SpoolError::Corrupt {
                        path: segment.path.clone(),
                        offset,
                        reason: FrameError::Truncated,
                    });
                }
                Step::Invalid { offset, reason } => {
                    self.cursor.reader = None;
                    return Err(SpoolError::Corrupt {
                        path: segment.path.clone(),
                        offset,
                        reason,
                    });
                }
            }
        }
    }
}
