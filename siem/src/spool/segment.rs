//! Segment files: naming, the bookkeeping kept per segment, reading frames
//! back and appending them.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{IoContext, SpoolError};
use super::frame::{self, Class, FrameError, FrameHeader, HEADER_LEN, ReadFrame, RecordRef};

const SUFFIX: &str = ".seg";
const TEMP_SUFFIX: &str = ".tmp";
const READ_BUFFER: usize = 256 * 1024;

pub(super) fn segment_path(dir: &Path, index: u64) -> PathBuf {
    // Zero-padded so that a directory listing sorts in queue order.
    dir.join(format!("{index:020}{SUFFIX}"))
}

/// The index of a segment file name, `None` for any other file.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A file left by a compaction that did not finish.
pub(super) fn is_temp_name(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

pub(super) fn temp_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Records of a segment not yet committed nor dropped, by class: what the
/// disk limit needs to pick a segment and to count what it drops, without
/// reading the file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct LiveCounts {
    pub(super) traffic: u64,
    pub(super) traffic_payload_bytes: u64,
    pub(super) audit: u64,
}

impl LiveCounts {
    pub(super) fn add(&mut self, class: Class, payload_len: usize) {
        match class {
            Class::Traffic => {
                self.traffic += 1;
                self.traffic_payload_bytes += payload_len as u64;
            }
            Class::Audit => self.audit += 1,
        }
    }

    pub(super) fn remove(&mut self, class: Class, payload_len: usize) {
        match class {
            Class::Traffic => {
                self.traffic = self.traffic.saturating_sub(1);
                self.traffic_payload_bytes = self
                    .traffic_payload_bytes
                    .saturating_sub(payload_len as u64);
            }
            Class::Audit => self.audit = self.audit.saturating_sub(1),
        }
    }

    pub(super) fn add_all(&mut self, other: LiveCounts) {
        self.traffic += other.traffic;
        self.traffic_payload_bytes += other.traffic_payload_bytes;
        self.audit += other.audit;
    }

    pub(super) fn records(&self) -> u64 {
        self.traffic + self.audit
    }
}

/// Bookkeeping for one segment file: O(1) memory however many records it
/// holds.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) index: u64,
    pub(super) path: PathBuf,
    /// Bytes of valid frames; reads never go past it (a failed append may
    /// leave bytes beyond it that are not ours to trust).
    pub(super) size: u64,
    pub(super) live: LiveCounts,
}

/// One step of [`SegmentReader::next`].
#[derive(Debug)]
pub(super) enum Step {
    /// A record; its payload is in [`SegmentReader::payload`]. `end` is the
    /// offset just past its frame.
    Record { header: FrameHeader, end: u64 },
    /// No more frames before the limit.
    End,
    /// The bytes at `offset` are not a valid frame.
    Invalid { offset: u64, reason: FrameError },
}

/// Reads the frames of one segment in order.
///
/// Sequence numbers grow strictly along the queue, so a frame whose sequence
/// number is not above the previous one can only be a second copy of a
/// record (an append that reported an error after its bytes did land, then
/// retried). It is skipped rather than treated as damage, which would cut
/// off the valid records after it.
pub(super) struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    last_seq: u64,
    payload: Vec<u8>,
}

impl SegmentReader {
    /// Positions a reader at `offset`; `last_seq` is the sequence number of
    /// the record before that position (or the commit position).
    pub(super) fn open(
        path: &Path,
        offset: u64,
        last_seq: u64,
    ) -> Result<SegmentReader, SpoolError> {
        let mut file = File::open(path).at(path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).at(path)?;
        }
        Ok(SegmentReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUFFER, file),
            offset,
            last_seq,
            payload: Vec::new(),
        })
    }

    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Sequence number of the last record returned (or the starting value).
    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next record before `limit` (a byte offset).
    pub(super) fn next(&mut self, limit: u64) -> Result<Step, SpoolError> {
        loop {
            if self.offset >= limit {
                return Ok(Step::End);
            }
            let at = self.offset;
            match frame::read_frame(&mut self.reader, &mut self.payload).at(&self.path)? {
                ReadFrame::End => return Ok(Step::End),
                ReadFrame::Invalid(reason) => return Ok(Step::Invalid { offset: at, reason }),
                ReadFrame::Frame(header) => {
                    self.offset = at + header.frame_len();
                    if header.seq <= self.last_seq {
                        tracing::warn!(path = %self.path.display(), offset = at, seq = header.seq,
                            "skipping a repeated spool record");
                        continue;
                    }
                    self.last_seq = header.seq;
                    return Ok(Step::Record {
                        header,
                        end: self.offset,
                    });
                }
            }
        }
    }

    pub(super) fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub(super) fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }
}

/// Bytes of a segment examined per read while searching past damage.
const SEARCH_CHUNK: usize = 64 * 1024;

/// The offset of the first valid frame in `[from, limit)` of the segment at
/// `path` whose sequence number is above `last_seq`, if any: where reading
/// can go on after a damaged frame.
///
/// The format has no sync marker, so every offset is a candidate; a cheap
/// header filter (class byte, length, room before `limit`, sequence number)
/// rejects almost all of them, and only the survivors have their CRC
/// checked. Requiring a sequence number above the last good one keeps a
/// stale copy of an earlier record from being taken for the next one.
pub(super) fn find_next_frame(
    path: &Path,
    from: u64,
    limit: u64,
    last_seq: u64,
) -> Result<Option<u64>, SpoolError> {
    let file = File::open(path).at(path)?;
    let mut window = vec![0u8; SEARCH_CHUNK + HEADER_LEN];
    let mut frame_bytes = Vec::new();
    let mut payload = Vec::new();
    let mut base = from;
    while base + HEADER_LEN as u64 <= limit {
        let want = usize::try_from(limit - base).map_or(window.len(), |n| n.min(window.len()));
        let filled = read_at_up_to(&file, &mut window[..want], base).at(path)?;
        if filled < HEADER_LEN {
            return Ok(None);
        }
        for i in 0..=filled - HEADER_LEN {
            let at = base + i as u64;
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&window[i..i + HEADER_LEN]);
            let Some((payload_len, seq)) = frame::plausible_header(&header) else {
                continue;
            };
            let len = frame::frame_len(payload_len);
            if seq <= last_seq || at + len > limit {
                continue;
            }
            frame_bytes.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            file.read_exact_at(&mut frame_bytes, at).at(path)?;
            if let Ok(ReadFrame::Frame(_)) = frame::read_frame(&mut &frame_bytes[..], &mut payload)
            {
                return Ok(Some(at));
            }
        }
        // The last HEADER_LEN - 1 offsets of this window start the next.
        base += (filled - HEADER_LEN + 1) as u64;
    }
    Ok(None)
}

/// Reads from `offset` until `buf` is full or the file ends.
fn read_at_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The segment being appended to, with the frames staged for it.
pub(super) struct SegmentWriter {
    pub(super) index: u64,
    path: PathBuf,
    /// Shared with the background syncer, which only syncs it.
    file: Arc<File>,
    staged: Vec<u8>,
    staged_live: LiveCounts,
    staged_records: u64,
}

/// What one [`SegmentWriter::write_staged`] handed to the OS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) records: u64,
    pub(super) live: LiveCounts,
}

impl SegmentWriter {
    pub(super) fn create(dir: &Path, index: u64) -> Result<SegmentWriter, SpoolError> {
        let path = segment_path(dir, index);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        Ok(SegmentWriter {
            index,
            path,
            file: Arc::new(file),
            staged: Vec::new(),
            staged_live: LiveCounts::default(),
            staged_records: 0,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub(super) fn stage(&mut self, record: &RecordRef<'_>) {
        frame::encode(&mut self.staged, record);
        self.staged_live.add(record.class, record.payload.len());
        self.staged_records += 1;
    }

    pub(super) fn staged_bytes(&self) -> u64 {
        self.staged.len() as u64
    }

    /// Appends the staged frames with one `write`. On failure the file is
    /// cut back to `valid_size`; the caller must then stop using this
    /// writer, since if even the cut failed, a partial frame sits at the end
    /// (this process never reads past `valid_size`; the next `open` cuts it).
    pub(super) fn write_staged(&mut self, valid_size: u64) -> Result<Written, SpoolError> {
        let written = Written {
            bytes: self.staged_bytes(),
            records: self.staged_records,
            live: self.staged_live,
        };
        if written.records == 0 {
            return Ok(written);
        }
        if let Err(source) = (&*self.file).write_all(&self.staged) {
            if let Err(cut) = self.file.set_len(valid_size) {
                tracing::error!(path = %self.path.display(), error = %cut,
                    "cannot cut a failed append from a spool segment");
            }
            return Err(SpoolError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.staged.clear();
        self.staged_live = LiveCounts::default();
        self.staged_records = 0;
        Ok(written)
    }

    pub(super) fn sync(&self) -> Result<(), SpoolError> {
        self.file.sync_data().at(&self.path)
    }
}

/// Makes the creation, replacement and removal of files in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Replaces the segment at `path` with what `write` puts in a temporary
/// file next to it (made durable by `write` when needed), renamed over it,
/// so that a crash leaves either the old file or the new one; a temporary
/// file left by a failure is removed (or by the next `open`).
pub(super) fn replace<T>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, SpoolError>,
) -> Result<T, SpoolError> {
    let temp = temp_path(path);
    let result = write(&temp).and_then(|value| fs::rename(&temp, path).at(path).map(|()| value));
    if result.is_err()
        && let Err(error) = remove(&temp)
    {
        tracing::error!(%error, "cannot remove a spool rewrite leftover");
    }
    result
}

pub(super) fn remove(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SpoolError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_in_queue_order() {
        let dir = Path::new("/spool");
        let names: Vec<String> = [9, 10, 123_456_789]
            .iter()
            .map(|&i| {
                segment_path(dir, i)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();

        let mut sorted = names.clone();
        sorted.sort();

        assert_eq!(sorted, names);
        assert_eq!(
            names
                .iter()
                .map(|n| parse_segment_name(n))
                .collect::<Vec<_>>(),
            [Some(9), Some(10), Some(123_456_789)]
        );
    }

    #[test]
    fn other_files_are_not_segments() {
        for name in [
            "head",
            "lock",
            "00000000000000000001.seg.tmp",
            "1.seg",
            "0000000000000000000x.seg",
        ] {
            assert_eq!(parse_segment_name(name), None, "{name}");
        }
    }
}
