//! Arbitrary text in every text field of an event (and in the product
//! version and app name the header carries), arbitrary numbers in the rest:
//! no format may contain a line break or a control character, the CEF
//! header keeps exactly seven separators and reads back, every CEF
//! extension key is an identifier and every value reads back as written,
//! the RFC 5424 structured data reads back, and both syslog formats carry
//! the CEF record unchanged as their MSG. Any violation panics.
//!
//! Input layout (no `arbitrary` dependency): the first 40 bytes are numbers
//! (missing bytes are zero), the rest is split into strings at 0xff bytes.
#![no_main]

use std::net::IpAddr;

use bessai_siem::{
    record::{Event, EventClass, EventId},
    render::{self, Format, Options},
};
use libfuzzer_sys::fuzz_target;

const NUMBERS: usize = 40;

/// Reads fixed-size little-endian numbers from the front of the input.
struct Numbers<'a>(&'a [u8]);

impl Numbers<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = self.0.len().min(N);
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    /// An IPv4 or IPv6 address (16 bytes either way, so the layout stays put).
    fn ip(&mut self, v6: bool) -> IpAddr {
        let b: [u8; 16] = self.take();
        if v6 {
            IpAddr::from(b)
        } else {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        }
    }
}

/// What a CEF extension value must read back as: CR and LF survive as
/// escapes, any other control character (and U+2028/U+2029) is a space.
fn cef_value_clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c.is_control() && c != '\n' && c != '\r') || is_line_separator(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// What a CEF header field or RFC 5424 SD-PARAM value must read back as:
/// every control character and line break is a space.
fn no_control_clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_line_separator(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// Splits a CEF record into its seven unescaped header fields and the raw
/// extension; panics unless there are exactly seven separators.
fn cef_header(cef: &str) -> (Vec<String>, &str) {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = cef.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, n @ ('\\' | '|'))) => cur.push(n),
                other => panic!("header escape of {other:?} in {cef:?}"),
            },
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 7 {
                    return (fields, &cef[i + 1..]);
                }
            }
            c => cur.push(c),
        }
    }
    panic!("{} header separators in {cef:?}", fields.len());
}

/// Reads a CEF extension the way a receiver does: a key is the word before
/// an unescaped `=`, its value runs to the space before the next key.
/// Panics on a key that is not an identifier or an unknown escape.
fn cef_extension(ext: &str) -> Vec<(String, String)> {
    // Raw segments between unescaped '=' (escapes kept for now).
    let mut segments = vec![String::new()];
    let mut chars = ext.chars();
    while let Some(c) = chars.next() {
        let cur = segments.last_mut().expect("one segment");
        match c {
            '\\' => {
                cur.push('\\');
                cur.push(
                    chars
                        .next()
                        .unwrap_or_else(|| panic!("dangling escape in {ext:?}")),
                );
            }
            '=' => segments.push(String::new()),
            c => cur.push(c),
        }
    }
    assert!(segments.len() >= 2, "no key in {ext:?}");
    let last = segments.len() - 1;
    let mut key = segments[0].clone();
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate().skip(1) {
        let (value, next_key) = if i == last {
            (seg.as_str(), "")
        } else {
            let (v, k) = seg
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no key after value {seg:?} in {ext:?}"));
            (v, k)
        };
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "key {key:?} in {ext:?}"
        );
        out.push((std::mem::take(&mut key), cef_unescape(value)));
        key = next_key.to_string();
    }
    out
}

fn cef_unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(o @ ('\\' | '=')) => out.push(o),
            other => panic!("value escape of {other:?} in {v:?}"),
        }
    }
    out
}

/// An RFC 5424 message: the six header fields, the SD-ID and params of its
/// one SD-ELEMENT, and MSG. Panics on anything that is not RFC 5424 syntax.
struct Syslog5424 {
    header: Vec<String>,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

fn parse_5424(m: &str) -> Syslog5424 {
    let mut parts = m.splitn(7, ' ');
    let mut header: Vec<String> = (0..6)
        .map(|_| {
            parts
                .next()
                .unwrap_or_else(|| panic!("short header: {m:?}"))
                .to_string()
        })
        .collect();
    let rest = parts.next().unwrap_or_else(|| panic!("no SD in {m:?}"));
    let pri_version = header.remove(0);
    let (pri, version) = pri_version
        .strip_prefix('<')
        .and_then(|p| p.split_once('>'))
        .unwrap_or_else(|| panic!("PRI in {m:?}"));
    assert_eq!(version, "1", "{m:?}");
    let pri: u16 = pri.parse().unwrap_or_else(|_| panic!("PRI in {m:?}"));
    assert!(pri <= 191, "{m:?}");
    header.insert(0, pri.to_string());
    for (field, max) in header.iter().skip(1).zip([usize::MAX, 255, 48, 128, 32]) {
        assert!(
            !field.is_empty() && field.len() <= max && field.bytes().all(|b| b.is_ascii_graphic()),
            "header field {field:?} in {m:?}"
        );
    }
    let mut chars = rest
        .strip_prefix('[')
        .unwrap_or_else(|| panic!("SD in {m:?}"))
        .chars()
        .peekable();
    let name = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut s = String::new();
        while let Some(&c) = chars.peek() {
            if matches!(c, ' ' | '=' | ']' | '"') {
                break;
            }
            assert!(c.is_ascii_graphic(), "SD name char {c:?} in {m:?}");
            s.push(c);
            chars.next();
        }
        assert!(!s.is_empty() && s.len() <= 32, "SD name {s:?} in {m:?}");
        s
    };
    let sd_id = name(&mut chars);
    let mut params = Vec::new();
    loop {
        match chars.next() {
            Some(']') => break,
            Some(' ') => {}
            other => panic!("{other:?} after an SD param in {m:?}"),
        }
        let key = name(&mut chars);
        assert_eq!(
            (chars.next(), chars.next()),
            (Some('='), Some('"')),
            "{m:?}"
        );
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c @ ('"' | '\\' | ']')) => value.push(c),
                    other => panic!("SD escape of {other:?} in {m:?}"),
                },
                Some(']') => panic!("unescaped ']' in an SD value: {m:?}"),
                Some(c) => value.push(c),
                None => panic!("unterminated SD value in {m:?}"),
            }
        }
        params.push((key, value));
    }
    let rest: String = chars.collect();
    let msg = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no MSG in {m:?}"))
        .to_string();
    Syslog5424 {
        header,
        sd_id,
        params,
        msg,
    }
}

fuzz_target!(|data: &[u8]| {
    let (numbers, text) = data.split_at(data.len().min(NUMBERS));
    let mut n = Numbers(numbers);
    let texts: Vec<String> = text
        .split(|b| *b == 0xff)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let text = |i: usize| texts.get(i).cloned().unwrap_or_default();

    let flags = n.u8();
    let class = EventClass::ALL[usize::from(n.u8()) % EventClass::ALL.len()];
    let id = EventId(u64::from(n.u32()) << 32 | u64::from(n.u32()));
    let time_ms = n.i64();
    let mut e = Event::new(id, class, time_ms, &text(0), &text(1), text(2));
    e.severity = n.u8();
    let count = n.u32();
    e.count = count.max(1);
    e.first_ms = time_ms.wrapping_sub(i64::from(n.u16()));
    e.src = (flags & 1 != 0).then(|| n.ip(flags & 2 != 0));
    e.dst = Some(IpAddr::from([10, 0, 0, n.u8()]));
    e.src_port = (flags & 4 != 0).then(|| n.u16());
    e.dst_port = Some(502);
    e.unit_id = Some(n.u8());
    e.function = (flags & 8 != 0).then(|| n.u8());
    e.address = Some(n.u16());
    e.quantity = (flags & 16 != 0).then_some(7);
    e.conduit = (flags & 32 == 0).then(|| text(3));
    e.reason = Some(text(4));
    e.action = Some(text(5));
    e.policy_sha256 = (flags & 64 == 0).then(|| text(6));
    if flags & 128 == 0 {
        e.detail = vec![(text(7), text(8))];
    }
    let o = Options {
        product_version: text(9),
        app_name: text(10),
        ..Options::default()
    };

    for format in [Format::Cef, Format::Rfc3164, Format::Json] {
        let out = String::from_utf8(render::render(&e, format, &o)).expect("UTF-8");
        assert!(
            !out.chars().any(|c| c.is_control() || is_line_separator(c)),
            "{format:?} produced a control character: {out:?}"
        );
    }

    let cef = render::cef(&e, &o);
    let (header, ext) = cef_header(&cef);
    let product_version = no_control_clean(&o.product_version);
    let class_id = class.id().to_string();
    let severity = e.severity.min(10).to_string();
    let expected = [
        "CEF:0",
        "BESSAI",
        "Edge Gateway",
        product_version.as_str(),
        class_id.as_str(),
        class.name(),
        severity.as_str(),
    ];
    assert_eq!(header, expected, "{cef:?}");

    let kv = cef_extension(ext);
    let mut keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "a key twice in {cef:?}");
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let clean = |s: &str| Some(cef_value_clean(s));
    assert_eq!(get("msg"), clean(&e.message), "{cef:?}");
    assert_eq!(get("cs3"), clean(&e.site), "{cef:?}");
    assert_eq!(get("deviceExternalId"), clean(&e.device_id), "{cef:?}");
    assert_eq!(get("dvchost"), clean(&e.device_id), "{cef:?}");
    assert_eq!(get("cs1"), e.conduit.as_deref().and_then(clean), "{cef:?}");
    assert_eq!(
        get("cs2"),
        e.policy_sha256.as_deref().and_then(clean),
        "{cef:?}"
    );
    assert_eq!(
        get("reason"),
        e.reason.as_deref().and_then(clean),
        "{cef:?}"
    );
    assert_eq!(get("act"), e.action.as_deref().and_then(clean), "{cef:?}");
    let detail = e.detail.first().map(|(k, v)| format!("{k}: {v}"));
    assert_eq!(get("cs5"), detail.as_deref().and_then(clean), "{cef:?}");
    assert_eq!(get("externalId"), Some(id.to_string()), "{cef:?}");
    assert_eq!(get("rt"), Some(time_ms.to_string()), "{cef:?}");
    assert_eq!(get("src"), e.src.map(|a| a.to_string()), "{cef:?}");
    assert_eq!(get("spt"), e.src_port.map(|p| p.to_string()), "{cef:?}");
    assert_eq!(get("cn1"), e.unit_id.map(|u| u.to_string()), "{cef:?}");
    assert_eq!(get("cn2"), e.function.map(|f| f.to_string()), "{cef:?}");
    assert_eq!(get("cn3"), e.address.map(|a| a.to_string()), "{cef:?}");
    let aggregated = e.count > 1;
    assert_eq!(
        get("cnt"),
        aggregated.then(|| e.count.to_string()),
        "{cef:?}"
    );
    assert_eq!(
        get("start"),
        aggregated.then(|| e.first_ms.to_string()),
        "{cef:?}"
    );

    let m = String::from_utf8(render::render(&e, Format::Cef, &o)).expect("UTF-8");
    let s = parse_5424(&m);
    assert_eq!(s.msg, cef, "MSG of {m:?}");
    assert_eq!(s.sd_id, o.sd_id, "{m:?}");
    assert_eq!(
        s.header[0],
        (8 * u16::from(o.facility) + u16::from(render::syslog_severity(e.severity))).to_string()
    );
    let param = |k: &str| {
        s.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("id"), Some(id.to_string()), "{m:?}");
    assert_eq!(param("class"), Some(class_id.clone()), "{m:?}");
    assert_eq!(
        param("conduit"),
        e.conduit.as_deref().map(no_control_clean),
        "{m:?}"
    );
    assert_eq!(
        param("policySha256"),
        e.policy_sha256.as_deref().map(no_control_clean),
        "{m:?}"
    );
    assert_eq!(
        param("count"),
        aggregated.then(|| e.count.to_string()),
        "{m:?}"
    );

    // RFC 3164: "<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: " and the CEF record.
    let legacy = String::from_utf8(render::render(&e, Format::Rfc3164, &o)).expect("UTF-8");
    let head = legacy
        .strip_suffix(cef.as_str())
        .unwrap_or_else(|| panic!("MSG of {legacy:?}"));
    let after_pri = head
        .split_once('>')
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("PRI in {legacy:?}"));
    assert!(
        after_pri.len() > 16 && after_pri.is_char_boundary(15),
        "{legacy:?}"
    );
    let (date, host_tag) = after_pri.split_at(15);
    assert!(
        date.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b':'),
        "date {date:?}"
    );
    let host_tag: Vec<&str> = host_tag.split(' ').collect();
    assert!(
        host_tag.len() == 4
            && host_tag[0].is_empty()
            && host_tag[3].is_empty()
            && host_tag[2].ends_with("]:"),
        "{legacy:?}"
    );
});
