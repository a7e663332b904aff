//! RELP frames: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, and the data of a
//! `rsp` frame: `CODE [SP TEXT] [LF BODY]` (librelp's `doc/relp.md`).

use crate::transport::error::RelpError;

/// Transaction numbers count 1..=999,999,999 and then start over at 1;
/// 0 is reserved for hints such as `serverclose`.
pub(crate) const MAX_TXNR: u32 = 999_999_999;
/// TXNR and DATALEN are at most nine digits.
const MAX_DIGITS: usize = 9;
/// Commands are 1 to 32 letters.
const MAX_COMMAND_LEN: usize = 32;

pub(crate) fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR { 1 } else { txnr + 1 }
}

/// Appends one frame to `out`.
pub(crate) fn encode(txnr: u32, command: &str, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{txnr} {command} {}", data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) txnr: u32,
    pub(crate) command: String,
    pub(crate) data: Vec<u8>,
}

/// Decodes the frame at the start of `buf`: `Ok(None)` while it is
/// incomplete, otherwise the frame and the number of bytes it occupied.
pub(crate) fn decode(buf: &[u8], max_data: usize) -> Result<Option<(Frame, usize)>, RelpError> {
    let Some((txnr, after_txnr, _)) = number(buf, 0, "transaction number", b" ")? else {
        return Ok(None);
    };
    let Some((command, after_command)) = command(buf, after_txnr)? else {
        return Ok(None);
    };
    let Some((datalen, after_datalen, separator)) =
        number(buf, after_command, "data length", b" \n")?
    else {
        return Ok(None);
    };
    let datalen = datalen as usize;
    if datalen > max_data {
        return Err(malformed(format!(
            "{command} frame announces {datalen} bytes, more than the {max_data} accepted"
        )));
    }
    if separator == b'\n' {
        if datalen != 0 {
            return Err(malformed(format!(
                "{command} frame announces {datalen} bytes but carries none"
            )));
        }
        let frame = Frame {
            txnr,
            command,
            data: Vec::new(),
        };
        return Ok(Some((frame, after_datalen)));
    }
    let trailer = after_datalen + datalen;
    let Some(&last) = buf.get(trailer) else {
        return Ok(None);
    };
    if last != b'\n' {
        return Err(malformed(format!(
            "{command} frame of {datalen} bytes is not followed by LF"
        )));
    }
    let frame = Frame {
        txnr,
        command,
        data: buf[after_datalen..trailer].to_vec(),
    };
    Ok(Some((frame, trailer + 1)))
}

fn malformed(reason: String) -> RelpError {
    RelpError::Malformed { reason }
}

/// A decimal field of at most nine digits ended by one of `terminators`;
/// returns its value, the position after the terminator, and the terminator.
fn number(
    buf: &[u8],
    start: usize,
    what: &str,
    terminators: &[u8],
) -> Result<Option<(u32, usize, u8)>, RelpError> {
    let mut value: u32 = 0;
    for (offset, &byte) in buf[start.min(buf.len())..].iter().enumerate() {
        match byte {
            b'0'..=b'9' if offset < MAX_DIGITS => value = value * 10 + u32::from(byte - b'0'),
            _ if offset > 0 && terminators.contains(&byte) => {
                return Ok(Some((value, start + offset + 1, byte)));
            }
            _ => {
                return Err(malformed(format!(
                    "bad {what} (byte {byte:#04x} at offset {})",
                    start + offset
                )));
            }
        }
    }
    Ok(None)
}

fn command(buf: &[u8], start: usize) -> Result<Option<(String, usize)>, RelpError> {
    for (offset, &byte) in buf[start.min(buf.len())..].iter().enumerate() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' if offset < MAX_COMMAND_LEN => {}
            b' ' if offset > 0 => {
                let name = String::from_utf8_lossy(&buf[start..start + offset]).into_owned();
                return Ok(Some((name, start + offset + 1)));
            }
            _ => {
                return Err(malformed(format!(
                    "bad command (byte {byte:#04x} at offset {})",
                    start + offset
                )));
            }
        }
    }
    Ok(None)
}

/// The data of a `rsp` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// `None` for an empty response (librelp answers `close` that way).
    pub(crate) code: Option<u16>,
    pub(crate) text: String,
    /// What follows the first line: the accepted offers for `open`.
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn parse(data: &[u8]) -> Result<Response, RelpError> {
        if data.is_empty() {
            return Ok(Response {
                code: None,
                text: String::new(),
                body: String::new(),
            });
        }
        let text = String::from_utf8_lossy(data);
        let (first_line, body) = text.split_once('\n').unwrap_or((&text, ""));
        let (code, human) = first_line.split_once(' ').unwrap_or((first_line, ""));
        let code = match code.parse::<u16>() {
            Ok(value) if code.len() == 3 => value,
            _ => {
                return Err(malformed(format!(
                    "response does not start with a status code: {first_line:?}"
                )));
            }
        };
        Ok(Response {
            code: Some(code),
            text: human.to_owned(),
            body: body.to_owned(),
        })
    }

    /// The value of offer `name` in the body of an `open` response.
    pub(crate) fn offer(&self, name: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|line| match line.split_once('=') {
                Some((key, value)) if key == name => Some(value),
                None if line == name => Some(""),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(txnr: u32, command: &str, data: &[u8]) -> Frame {
        Frame {
            txnr,
            command: command.to_owned(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn encodes_with_and_without_data() {
        let mut out = Vec::new();
        encode(7, "syslog", "ü\nx".as_bytes(), &mut out);
        encode(8, "close", b"", &mut out);
        assert_eq!(out, "7 syslog 4 ü\nx\n8 close 0\n".as_bytes());
    }

    #[test]
    fn decodes_what_it_encodes_including_lf_in_data() {
        let mut wire = Vec::new();
        encode(42, "rsp", b"200 OK\nrelp_version=0", &mut wire);
        encode(0, "serverclose", b"", &mut wire);
        let (first, used) = decode(&wire, 1024).expect("valid").expect("complete");
        assert_eq!(first, frame(42, "rsp", b"200 OK\nrelp_version=0"));
        let (second, rest) = decode(&wire[used..], 1024)
            .expect("valid")
            .expect("complete");
        assert_eq!(second, frame(0, "serverclose", b""));
        assert_eq!(used + rest, wire.len());
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_not_an_error() {
        let wire = b"123 rsp 6 200 OK\n";
        for end in 0..wire.len() {
            assert_eq!(
                decode(&wire[..end], 1024).expect("valid prefix"),
                None,
                "prefix {end}"
            );
        }
    }

    #[test]
    fn rejects_malformed_frames() {
        for wire in [
            &b"x rsp 0\n"[..],
            b"1234567890 rsp 0\n",
            b"1  rsp 0\n",
            b"1 rs1 0\n",
            b"1 rsp 3 abcX",
            b"1 rsp 3\n",
            b"1 rsp -1\n",
        ] {
            assert!(
                matches!(decode(wire, 1024), Err(RelpError::Malformed { .. })),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn refuses_frames_over_the_size_limit() {
        assert!(matches!(
            decode(b"1 rsp 2000 ", 1024),
            Err(RelpError::Malformed { reason }) if reason.contains("2000")
        ));
    }

    #[test]
    fn txnr_wraps_to_one_after_nine_digits() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(MAX_TXNR), 1);
    }

    #[test]
    fn parses_responses_and_offers() {
        let open = Response::parse(
            b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog",
        )
        .expect("valid");
        assert_eq!(open.code, Some(200));
        assert_eq!(open.text, "OK");
        assert_eq!(open.offer("commands"), Some("syslog"));
        assert_eq!(
            open.offer("relp_software"),
            Some("librelp,1.11.0,http://librelp.adiscon.com")
        );
        assert_eq!(open.offer("missing"), None);

        let refused = Response::parse(b"500 queue full").expect("valid");
        assert_eq!(
            (refused.code, refused.text.as_str()),
            (Some(500), "queue full")
        );
        assert_eq!(Response::parse(b"").expect("valid").code, None);
        assert!(Response::parse(b"OK").is_err());
    }
}
