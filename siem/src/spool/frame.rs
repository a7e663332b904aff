//! How one record is laid out in a segment file.
//!
//! ```text
//! [len u32][crc32 u32][class u8][seq u64][id u64][payload: len bytes]     (integers little-endian)
//! ```
//!
//! The CRC-32 (IEEE) covers every byte of the frame except itself: `len`,
//! `class`, `seq`, `id` and the payload. Covering `len` matters: a length
//! damaged by a torn write would otherwise make the reader take a wrong span
//! of bytes as the payload.

use std::io::{self, Read};

/// Bytes in front of the payload.
pub(super) const HEADER_LEN: usize = 4 + 4 + 1 + 8 + 8;

/// Largest payload the decoder accepts. It bounds the allocation a damaged
/// length field could ask for; a configuration can only lower it.
pub(super) const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// What kind of event a record carries; decides whether the disk limit may
/// drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Conduit traffic events. When the disk limit is reached the oldest are
    /// dropped (and counted).
    Traffic,
    /// Audit events (configuration changes, logins, "N events dropped", ...).
    /// Never dropped by the disk limit.
    Audit,
}

impl Class {
    fn to_byte(self) -> u8 {
        // Not 0: a zero-filled tail, which some file systems leave after a
        // crash, must not decode as a valid class.
        match self {
            Class::Traffic => 1,
            Class::Audit => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Class> {
        match byte {
            1 => Some(Class::Traffic),
            2 => Some(Class::Audit),
            _ => None,
        }
    }
}

/// Why bytes in a segment are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the file ends inside a frame (torn write)")]
    Truncated,
    #[error("length field {len} exceeds the {MAX_RECORD_BYTES}-byte limit")]
    BadLength { len: u32 },
    #[error("unknown class byte {byte:#04x}")]
    BadClass { byte: u8 },
    #[error("CRC-32 mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
}

/// The fields of a frame other than its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub(super) class: Class,
    pub(super) seq: u64,
    pub(super) id: u64,
    pub(super) payload_len: usize,
}

impl FrameHeader {
    /// Bytes the whole frame occupies on disk.
    pub(super) fn frame_len(&self) -> u64 {
        frame_len(self.payload_len)
    }
}

/// Bytes a frame with a payload of `payload_len` bytes occupies on disk.
pub(super) fn frame_len(payload_len: usize) -> u64 {
    // usize -> u64 never truncates on the platforms Rust supports.
    (HEADER_LEN + payload_len) as u64
}

/// A record on its way to disk.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordRef<'a> {
    pub(super) seq: u64,
    pub(super) id: u64,
    pub(super) class: Class,
    pub(super) payload: &'a [u8],
}

/// Appends the frame for one record to `out`.
///
/// The caller has checked `payload.len() <= MAX_RECORD_BYTES`, so the length
/// fits in the `u32` field.
pub(super) fn encode(out: &mut Vec<u8>, record: &RecordRef<'_>) {
    let len = u32::try_from(record.payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8] = record.class.to_byte();
    header[9..17].copy_from_slice(&record.seq.to_le_bytes());
    header[17..25].copy_from_slice(&record.id.to_le_bytes());
    let crc = checksum(&header, record.payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(record.payload);
}

/// CRC-32 of the header without its CRC field, followed by the payload.
fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..4]);
    hasher.update(&header[8..HEADER_LEN]);
    hasher.update(payload);
    hasher.finalize()
}

/// Result of reading at one position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadFrame {
    /// A valid frame; its payload is in the caller's buffer.
    Frame(FrameHeader),
    /// The file ends exactly here.
    End,
    /// The bytes here are not a valid frame.
    Invalid(FrameError),
}

/// Reads the frame starting at the reader's position into `payload`
/// (replacing its contents). I/O errors other than an early end of file are
/// returned as such; the caller attaches the path.
pub(super) fn read_frame(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<ReadFrame> {
    let mut header = [0u8; HEADER_LEN];
    let filled = read_up_to(reader, &mut header)?;
    if filled == 0 {
        return Ok(ReadFrame::End);
    }
    if filled < HEADER_LEN {
        return Ok(ReadFrame::Invalid(FrameError::Truncated));
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let Some(class) = Class::from_byte(header[8]) else {
        return Ok(ReadFrame::Invalid(FrameError::BadClass { byte: header[8] }));
    };
    let payload_len = match usize::try_from(len) {
        Ok(n) if n <= MAX_RECORD_BYTES => n,
        _ => return Ok(ReadFrame::Invalid(FrameError::BadLength { len })),
    };
    payload.clear();
    payload.resize(payload_len, 0);
    if read_up_to(reader, payload)? < payload_len {
        return Ok(ReadFrame::Invalid(FrameError::Truncated));
    }
    let computed = checksum(&header, payload);
    if computed != stored {
        return Ok(ReadFrame::Invalid(FrameError::CrcMismatch {
            stored,
            computed,
        }));
    }
    let field = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    Ok(ReadFrame::Frame(FrameHeader {
        class,
        seq: field(9),
        id: field(17),
        payload_len,
    }))
}

/// Length and sequence number of a frame that could start with `header`:
/// a known class byte and a length within the limit. Only a cheap filter for
/// the search after damage; the CRC decides.
pub(super) fn plausible_header(header: &[u8; HEADER_LEN]) -> Option<(usize, u64)> {
    Class::from_byte(header[8])?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let payload_len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_RECORD_BYTES)?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[9..17]);
    Some((payload_len, u64::from_le_bytes(seq)))
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read
/// (less than `buf.len()` only at end of file).
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(class: Class, seq: u64, id: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &mut out,
            &RecordRef {
                seq,
                id,
                class,
                payload,
            },
        );
        out
    }

    fn decode(bytes: &[u8]) -> (ReadFrame, Vec<u8>) {
        let mut payload = Vec::new();
        let outcome =
            read_frame(&mut &bytes[..], &mut payload).expect("reading a slice cannot fail");
        (outcome, payload)
    }

    #[test]
    fn crc_is_the_ieee_crc32() {
        // The check value of CRC-32/ISO-HDLC: other tools must be able to
        // verify a segment.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_frame_round_trips() {
        let bytes = encoded(Class::Audit, 7, 0xDEAD_BEEF, b"user admin logged in");

        let (outcome, payload) = decode(&bytes);

        assert_eq!(bytes.len(), HEADER_LEN + 20);
        assert_eq!(
            outcome,
            ReadFrame::Frame(FrameHeader {
                class: Class::Audit,
                seq: 7,
                id: 0xDEAD_BEEF,
                payload_len: 20
            })
        );
        assert_eq!(payload, b"user admin logged in");
    }

    #[test]
    fn empty_input_is_a_clean_end() {
        assert_eq!(decode(&[]).0, ReadFrame::End);
    }

    #[test]
    fn every_proper_prefix_of_a_frame_is_truncated() {
        let bytes = encoded(Class::Traffic, 1, 1, b"payload");

        for cut in 1..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]).0,
                ReadFrame::Invalid(FrameError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = encoded(Class::Traffic, 3, 4, b"abc");

        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let (outcome, _) = decode(&damaged);
            assert!(
                matches!(outcome, ReadFrame::Invalid(_)),
                "bit {bit} undetected: {outcome:?}"
            );
        }
    }

    #[test]
    fn zero_filled_bytes_are_not_a_frame() {
        assert!(matches!(
            decode(&[0u8; 64]).0,
            ReadFrame::Invalid(FrameError::BadClass { byte: 0 })
        ));
    }
}
