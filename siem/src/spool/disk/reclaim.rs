//! The disk limit: dropping the oldest traffic records, never audit ones.
//!
//! Work is per segment, never per record: the oldest sealed segment that
//! holds live traffic is deleted whole when it holds no live audit record,
//! else rewritten in place with only its live audit records (a temporary
//! file renamed over it), so the audit records keep their place in the
//! queue. Survivors therefore come out in their original order, and every
//! dropped traffic record is older than every surviving one, except for
//! the segment being appended to: it is not rewritten while written (that
//! could cost a segment copy per push when audit records fill the disk);
//! a traffic record that finds no sealed segment to reclaim is dropped on
//! arrival instead.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::DiskQueue;
use crate::spool::config::FsyncPolicy;
use crate::spool::error::{IoContext, SpoolError};
use crate::spool::frame::{self, Class, FrameError, RecordRef};
use crate::spool::segment::{self, Segment, SegmentReader, Step};

impl DiskQueue {
    /// Frees space until `need` more bytes fit under the limit, if it can.
    /// Nothing may be staged. Returns whether they fit.
    pub(super) fn make_room(&mut self, need: u64) -> Result<bool, SpoolError> {
        let mut reclaimed = false;
        let outcome = loop {
            if self.bytes + need <= self.max_bytes {
                break Ok(true);
            }
            let Some(pos) = self.reclaim_candidate() else {
                break Ok(false);
            };
            reclaimed = true;
            if let Err(error) = self.reclaim(pos) {
                break Err(error);
            }
        };
        if reclaimed {
            // Records read ahead by peek may be gone.
            self.rewind();
        }
        outcome
    }

    /// The oldest segment whose removal or rewrite frees space: a sealed
    /// one with live traffic, or one (even the active one) with no live
    /// record at all.
    fn reclaim_candidate(&self) -> Option<usize> {
        self.segments.iter().position(|s| {
            let consumed = s.live.records() == 0 && s.size > 0;
            consumed || (s.live.traffic > 0 && !self.is_active(s))
        })
    }

    fn reclaim(&mut self, pos: usize) -> Result<(), SpoolError> {
        if self.segments.get(pos).is_some_and(|s| self.is_active(s)) {
            // Only an empty-of-live-records active segment is a candidate;
            // the next append opens a new one.
            self.writer = None;
        }
        let Some(victim) = self.segments.get(pos) else {
            return Ok(());
        };
        let dropped = victim.live;
        if victim.live.audit == 0 {
            segment::remove(&victim.path)?;
            self.bytes -= victim.size;
            self.records -= victim.live.records();
            self.segments.remove(pos);
        } else {
            let start = if pos == 0 { self.head_offset } else { 0 };
            let sync = self.fsync != FsyncPolicy::Never;
            let new_size = keep_only_audit(victim, start, self.committed, sync)?;
            if sync {
                segment::sync_dir(&self.dir)?;
            }
            self.bytes = self.bytes - victim.size + new_size;
            self.records -= victim.live.traffic;
            if let Some(victim) = self.segments.get_mut(pos) {
                victim.size = new_size;
                victim.live.traffic = 0;
                victim.live.traffic_payload_bytes = 0;
            }
        }
        if pos == 0 {
            self.head_offset = 0;
        }
        self.dropped.traffic += dropped.traffic;
        self.dropped.traffic_payload_bytes += dropped.traffic_payload_bytes;
        if dropped.traffic > 0 {
            tracing::warn!(
                records = dropped.traffic,
                bytes = dropped.traffic_payload_bytes,
                "SIEM spool full: dropped the oldest traffic events"
            );
        }
        Ok(())
    }
}

/// Rewrites `victim` with only its audit records from `start` on, through a
/// temporary file renamed over it so that a crash leaves either the old or
/// the new file. Returns the new size.
fn keep_only_audit(
    victim: &Segment,
    start: u64,
    committed: u64,
    sync: bool,
) -> Result<u64, SpoolError> {
    segment::replace(&victim.path, |temp| {
        write_audit_copy(victim, start, committed, sync, temp)
    })
}

fn write_audit_copy(
    victim: &Segment,
    start: u64,
    committed: u64,
    sync: bool,
    temp: &Path,
) -> Result<u64, SpoolError> {
    let mut out = BufWriter::new(File::create(temp).at(temp)?);
    let mut reader = SegmentReader::open(&victim.path, start, committed)?;
    let mut frame_bytes = Vec::new();
    let mut size = 0;
    loop {
        match reader.next(victim.size)? {
            Step::Record { header, .. } if header.class == Class::Audit => {
                frame_bytes.clear();
                let record = RecordRef {
                    seq: header.seq,
                    id: header.id,
                    class: header.class,
                    payload: reader.payload(),
                };
                frame::encode(&mut frame_bytes, &record);
                out.write_all(&frame_bytes).at(temp)?;
                size += frame_bytes.len() as u64;
            }
            Step::Record { .. } => {}
            Step::End if reader.offset() >= victim.size => break,
            Step::End => {
                return Err(SpoolError::Corrupt {
                    path: victim.path.clone(),
                    offset: reader.offset(),
                    reason: FrameError::Truncated,
                });
            }
            Step::Invalid { offset, reason } => {
                return Err(SpoolError::Corrupt {
                    path: victim.path.clone(),
                    offset,
                    reason,
                });
            }
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error()).at(temp)?;
    if sync {
        file.sync_data().at(temp)?;
    }
    Ok(size)
}
