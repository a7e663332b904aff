//! Address lists: parsing the notation, and checks on the list as a whole.
//!
//! Addresses are 0-based protocol addresses, what is on the wire. Data-model
//! references ("40001", "4x0001", "%MW100") are a different numbering; the
//! prefixed forms, and six-digit numbers, are rejected with the protocol
//! address they most likely mean.

use crate::{error::ErrorKind, raw::AddrSpec};

/// An inclusive range.
pub type Range = (u32, u32);

pub fn parse(spec: &AddrSpec, max: u32) -> Result<Range, ErrorKind> {
    match spec {
        AddrSpec::Int(n) => {
            let n = check_value(*n, max, &n.to_string())?;
            Ok((n, n))
        }
        AddrSpec::Text(text) => {
            let t = text.trim();
            if let Some(hint) = data_model_hint(t) {
                return Err(ErrorKind::DataModelNotation {
                    text: text.clone(),
                    hint,
                });
            }
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (t, t),
            };
            let (Some(a), Some(b)) = (number(a), number(b)) else {
                return Err(ErrorKind::BadRange { text: text.clone() });
            };
            let a = check_value(a, max, text)?;
            let b = check_value(b, max, text)?;
            if a > b {
                return Err(ErrorKind::InvertedRange { start: a, end: b });
            }
            Ok((a, b))
        }
    }
}

fn number(s: &str) -> Option<i64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn check_value(n: i64, max: u32, text: &str) -> Result<u32, ErrorKind> {
    if max == 0xffff
        && (100_001..=465_536).contains(&n)
        && let Some(hint) = data_model_hint(text)
    {
        return Err(ErrorKind::DataModelNotation {
            text: text.to_string(),
            hint,
        });
    }
    if n < 0 || n > max as i64 {
        return Err(ErrorKind::OutOfRange {
            what: "address",
            value: n,
            min: 0,
            max: max as i64,
        });
    }
    Ok(n as u32)
}

/// A hint when `t` is written in a data-model notation.
fn data_model_hint(t: &str) -> Option<String> {
    let table = |prefix: char| match prefix {
        '0' => Some("coil"),
        '1' => Some("discrete input"),
        '3' => Some("input register"),
        '4' => Some("holding register"),
        _ => None,
    };
    let explain = |kind: &str, number: i64| {
        if number >= 1 {
            format!(
                "{t} is {kind} {number} in data-model notation; its 0-based protocol address is {}: write \"{}\"",
                number - 1,
                number - 1
            )
        } else {
            format!("{t} is a data-model reference; write the 0-based protocol address instead")
        }
    };
    let first = t.split('-').next().unwrap_or(t).trim();
    if first.starts_with('%') {
        return Some(format!(
            "{t} is an IEC 61131-3 variable; write the 0-based Modbus protocol address the device manual gives for it"
        ));
    }
    let mut chars = first.chars();
    let (p, sep) = (chars.next()?, chars.next()?);
    if (sep == 'x' || sep == 'X' || sep == ':') && table(p).is_some() {
        let n: i64 = first[2..].parse().ok()?;
        return Some(explain(table(p)?, n));
    }
    // Six digits: 4xxxxx style (the register number after the type digit).
    if first.len() == 6 && first.chars().all(|c| c.is_ascii_digit()) && table(p).is_some() {
        let n: i64 = first[1..].parse().ok()?;
        return Some(explain(table(p)?, n));
    }
    None
}

/// Sorted, adjacent ranges joined. Overlaps are reported by `overlaps`.
pub fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 + 1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The first pair of overlapping ranges, by position in the list.
pub fn overlap(ranges: &[Range]) -> Option<(usize, usize)> {
    for (i, a) in ranges.iter().enumerate() {
        for (j, b) in ranges.iter().enumerate().skip(i + 1) {
            if a.0 <= b.1 && b.0 <= a.1 {
                return Some((i, j));
            }
        }
    }
    None
}

pub fn show((s, e): Range) -> String {
    if s == e {
        s.to_string()
    } else {
        format!("{s}-{e}")
    }
}
