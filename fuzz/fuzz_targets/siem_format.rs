//! Arbitrary text in every field of an event: no format may contain a line
//! break or a control character, the CEF header keeps exactly seven
//! separators, and every CEF extension value reads back as written.
#![no_main]

use bessai_siem::{
    record::{Event, EventClass, EventId},
    render::{self, Format, Options},
};
use libfuzzer_sys::fuzz_target;

/// Splits the input into strings at 0xff bytes.
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0xff)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn unescape_value(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => panic!("dangling escape in {v:?}"),
            }
        } else {
            assert!(c != '=', "unescaped '=' in value {v:?}");
            out.push(c);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
    let class = EventClass::ALL[data.first().copied().unwrap_or(0) as usize % EventClass::ALL.len()];
    let mut e = Event::new(EventId(u64::from(data.len() as u32)), class, 1_795_418_521_123, &get(1), &get(2), get(3));
    e.conduit = Some(get(4));
    e.reason = Some(get(5));
    e.action = Some(get(6));
    e.detail = vec![(get(7), get(8))];
    let o = Options::default();
    for format in [Format::Cef, Format::Rfc3164, Format::Json] {
        let out = String::from_utf8(render::render(&e, format, &o)).expect("UTF-8");
        assert!(
            !out.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
            "{format:?} produced a control character: {out:?}"
        );
    }
    // The CEF message: exactly 7 unescaped '|' before the extension.
    let cef = render::cef(&e, &o);
    let mut seps = 0;
    let mut chars = cef.char_indices();
    let mut ext_start = cef.len();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '|' => {
                seps += 1;
                if seps == 7 {
                    ext_start = i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(seps, 7, "{cef:?}");
    // msg is last: its value reads back as the (control-free) message.
    let ext = &cef[ext_start..];
    let msg = ext.rsplit_once(" msg=").map(|(_, v)| v).expect("msg key");
    let clean: String = e
        .message
        .chars()
        .map(|c| if (c.is_control() && c != '\n' && c != '\r') || matches!(c, '\u{2028}' | '\u{2029}') { ' ' } else { c })
        .collect();
    if !clean.contains(" msg=") {
        assert_eq!(unescape_value(msg), clean, "{cef:?}");
    }
});
