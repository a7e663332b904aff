//! Records larger than a destination can carry. Sending one would fail
//! the same way on every retry, across restarts too, and block every
//! record behind it; so it is cut to the limit with a marker saying how
//! much was cut, and counted.

use std::borrow::Cow;

use crate::transport::{MAX_DATAGRAM_V4, MAX_RELP_MESSAGE, Scheme};

/// The largest record a destination takes. UDP: one IPv4 datagram. RELP:
/// the frame limit. TCP and TLS have no limit of their own; the RELP limit
/// keeps them within what receivers are commonly configured to accept.
pub fn max_record_len(scheme: Scheme) -> usize {
    match scheme {
        Scheme::Udp => MAX_DATAGRAM_V4,
        Scheme::Tcp | Scheme::Tls | Scheme::RelpTls => MAX_RELP_MESSAGE,
    }
}

/// Room kept for the marker: ` [truncated 4294967295 of 4294967295 bytes]`.
const MARKER_ROOM: usize = 48;

/// `record` if it fits in `max` bytes, else its head (cut at a character
/// boundary when it is text) followed by ` [truncated N of M bytes]`.
pub fn fit(record: &[u8], max: usize) -> Cow<'_, [u8]> {
    if record.len() <= max {
        return Cow::Borrowed(record);
    }
    let mut keep = max.saturating_sub(MARKER_ROOM);
    if let Ok(text) = std::str::from_utf8(record) {
        while keep > 0 && !text.is_char_boundary(keep) {
            keep -= 1;
        }
    }
    let marker = format!(
        " [truncated {} of {} bytes]",
        record.len() - keep,
        record.len()
    );
    let mut out = Vec::with_capacity(keep + marker.len());
    out.extend_from_slice(&record[..keep]);
    out.extend_from_slice(marker.as_bytes());
    out.truncate(max);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_records_pass_untouched() {
        assert!(matches!(fit(b"abc", 3), Cow::Borrowed(b"abc")));
    }

    #[test]
    fn large_records_are_cut_with_a_marker_within_the_limit() {
        let record = "é".repeat(200_000); // 400,000 bytes, two per character
        let out = fit(record.as_bytes(), 1000);
        assert!(out.len() <= 1000, "{}", out.len());
        let text = std::str::from_utf8(&out).expect("still UTF-8");
        assert!(text.starts_with("éé"));
        let kept = text.find(" [truncated").unwrap();
        assert!(
            text.ends_with(&format!(" [truncated {} of 400000 bytes]", 400_000 - kept)),
            "{}",
            &text[kept..]
        );
    }
}
