use proptest::prelude::*;

use super::*;
use crate::record::{EventClass, EventId};

fn denial() -> Event {
    let mut e = Event::new(
        EventId::new(0x6741_2a00, 7),
        EventClass::DeniedTransaction,
        1_795_418_521_123,
        "Atacama BESS 1",
        "bgw-01",
        "denied",
    );
    e.conduit = Some("ems-to-pcs-1".into());
    e.src = Some("10.10.1.10".parse().unwrap());
    e.dst = Some("10.10.2.11".parse().unwrap());
    e.src_port = Some(40512);
    e.dst_port = Some(502);
    e.unit_id = Some(1);
    e.function = Some(6);
    e.address = Some(41);
    e.quantity = Some(1);
    e.reason = Some("address-denied".into());
    e.action = Some("reset-client".into());
    e.policy_sha256 = Some("ab".repeat(32));
    e
}

fn opts() -> Options {
    Options {
        proc_id: 4242,
        product_version: "0.1.0".into(),
        ..Options::default()
    }
}

/// Splits a CEF extension into (key, unescaped value), the way a receiver
/// reads it: a key is the word before an unescaped `=`.
fn parse_extension(ext: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let chars: Vec<char> = ext.chars().collect();
    let mut i = 0;
    let mut key = String::new();
    let mut value = String::new();
    let mut in_value = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            value.push(match n {
                'n' => '\n',
                'r' => '\r',
                other => other,
            });
            i += 2;
            continue;
        }
        if !in_value {
            if c == '=' {
                in_value = true;
            } else {
                key.push(c);
            }
        } else if c == '=' {
            // The previous word of the value was the next key.
            let split = value.rfind(' ').expect("a key before '='");
            let next_key = value[split + 1..].to_string();
            value.truncate(split);
            out.push((std::mem::take(&mut key), std::mem::take(&mut value)));
            key = next_key;
        } else {
            value.push(c);
        }
        i += 1;
    }
    out.push((key, value));
    out
}

/// The seven header fields and the extension, splitting at unescaped `|`.
fn split_header(cef: &str) -> (Vec<String>, String) {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = cef.chars();
    while let Some(c) = chars.next() {
        if fields.len() == 7 {
            // The extension keeps its escapes; parse_extension reads them.
            cur.push(c);
            continue;
        }
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '|' => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    (fields, cur)
}

#[test]
fn cef_escaping_follows_the_spec_examples() {
    // Header: "detected a | in message" → detected a \| in message.
    assert_eq!(
        cef_header_escape("detected a | in message"),
        "detected a \\| in message"
    );
    assert_eq!(
        cef_header_escape("detected a \\ in packet"),
        "detected a \\\\ in packet"
    );
    // Extension: fileName=c:\Program Files\ArcSight → c:\\Program Files\\ArcSight.
    assert_eq!(
        cef_value_escape("c:\\Program Files\\ArcSight"),
        "c:\\\\Program Files\\\\ArcSight"
    );
    assert_eq!(cef_value_escape("a=b"), "a\\=b");
    assert_eq!(cef_value_escape("line1\nline2\r"), "line1\\nline2\\r");
    // The header needs no '=' escaping, the extension no '|' escaping.
    assert_eq!(cef_header_escape("a=b"), "a=b");
    assert_eq!(cef_value_escape("a|b"), "a|b");
}

#[test]
fn a_denial_in_cef_carries_the_standard_keys() {
    let c = cef(&denial(), &opts());
    assert!(
        c.starts_with(
            "CEF:0|BESSAI|Edge Gateway|0.1.0|100|Modbus transaction denied|7|rt=1795418521123 "
        ),
        "{c}"
    );
    let (_, ext) = split_header(&c);
    let kv = parse_extension(&ext);
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("src"), Some("10.10.1.10"));
    assert_eq!(get("dst"), Some("10.10.2.11"));
    assert_eq!(get("spt"), Some("40512"));
    assert_eq!(get("dpt"), Some("502"));
    assert_eq!(get("proto"), Some("TCP"));
    assert_eq!(get("act"), Some("reset-client"));
    assert_eq!(get("reason"), Some("address-denied"));
    assert_eq!(get("cs1"), Some("ems-to-pcs-1"));
    assert_eq!(get("cs1Label"), Some("conduit"));
    assert_eq!(get("deviceExternalId"), Some("bgw-01"));
    assert_eq!(get("externalId"), Some("67412a0000000007"));
    assert_eq!(get("cn2"), Some("6"));
    assert_eq!(get("cn3"), Some("41"));
    assert_eq!(get("cs3"), Some("Atacama BESS 1"));
    assert_eq!(get("cnt"), None, "a single event has no count");
}

#[test]
fn rfc5424_header_and_structured_data() {
    let e = denial();
    let m = rfc5424(&e, "x", &opts());
    // local4 (20) * 8 + error (3: CEF severity 7) = 163.
    assert!(
        m.starts_with("<163>1 2026-11-23T") && m.contains(".123Z bgw-01 bessai-gw 4242 denied [bessai@32473 id=\"67412a0000000007\" class=\"100\" conduit=\"ems-to-pcs-1\""),
        "{m}"
    );
    assert!(m.ends_with("] x"), "{m}");
    // RFC 5424 6.3.3: '"', '\' and ']' are escaped in PARAM-VALUE.
    assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    let mut odd = e.clone();
    odd.device_id = "has space\nand newline".into();
    let m = rfc5424(&odd, "x", &opts());
    assert!(m.contains(" hasspaceandnewline bessai-gw "), "{m}");
    odd.device_id.clear();
    assert!(rfc5424(&odd, "x", &opts()).contains(" - bessai-gw "));
}

#[test]
fn timestamps_always_have_milliseconds_and_sd_ids_stay_names() {
    let mut e = denial();
    e.time_ms = 1_795_418_521_100;
    assert!(rfc5424(&e, "x", &opts()).contains("T07:22:01.100Z "));
    e.time_ms = 1_795_418_521_000;
    assert!(rfc5424(&e, "x", &opts()).contains(":01.000Z "));
    let bad = Options {
        sd_id: "a]b=c\"d e".into(),
        ..opts()
    };
    assert!(
        rfc5424(&e, "x", &bad).contains(" [abcde id="),
        "{}",
        rfc5424(&e, "x", &bad)
    );
}

#[test]
fn rfc3164_pads_the_day_with_a_space() {
    let mut e = denial();
    e.time_ms = 1_762_153_200_000; // 2025-11-03T07:00:00Z
    let m = rfc3164(&e, "hello", &opts());
    assert_eq!(m, "<163>Nov  3 07:00:00 bgw-01 bessai-gw[4242]: hello");
}

#[test]
fn aggregated_events_say_so() {
    let mut e = denial();
    e.count = 1000;
    e.first_ms = 1;
    e.last_ms = 2;
    let c = cef(&e, &opts());
    assert!(c.contains(" cnt=1000 start=1 end=2 "), "{c}");
    assert!(rfc5424(&e, "m", &opts()).contains(" count=\"1000\"]"));
}

#[test]
fn json_lines_name_the_class() {
    let j = json(&denial());
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["class_id"], 100);
    assert_eq!(v["class"], "denied_transaction");
    assert_eq!(v["conduit"], "ems-to-pcs-1");
    let back: Event = serde_json::from_str(&j).unwrap();
    assert_eq!(back, denial());
}

#[test]
fn formats_parse_from_their_names() {
    assert_eq!("cef".parse::<Format>(), Ok(Format::Cef));
    assert_eq!("rfc3164".parse::<Format>(), Ok(Format::Rfc3164));
    assert_eq!("json".parse::<Format>(), Ok(Format::Json));
    assert!("xml".parse::<Format>().is_err());
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        proptest::collection::vec(
            prop_oneof![
                Just('|'),
                Just('='),
                Just('\\'),
                Just('"'),
                Just(']'),
                Just('\n'),
                Just('\r'),
                Just('\0'),
                Just('\u{2028}'),
                Just('\u{85}'),
                Just(' '),
                Just('a'),
                Just('é')
            ],
            0..40
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #[test]
    fn no_input_breaks_a_line_or_a_field(
        msg in any_text(), conduit in any_text(), device in any_text(), site in any_text(),
        reason in any_text(), dk in "[a-z_]{1,8}", dv in any_text(),
    ) {
        let mut e = denial();
        e.message = msg.clone();
        e.conduit = Some(conduit.clone());
        e.device_id = device.clone();
        e.site = site.clone();
        e.reason = Some(reason.clone());
        e.detail = vec![(dk.clone(), dv.clone())];
        for f in [Format::Cef, Format::Rfc3164, Format::Json] {
            let out = String::from_utf8(render(&e, f, &opts())).unwrap();
            prop_assert!(!out.contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}', '\0']), "{f:?}: {out:?}");
        }
        let c = cef(&e, &opts());
        let (header, ext) = split_header(&c);
        prop_assert_eq!(header.len(), 7);
        prop_assert_eq!(&header[0], "CEF:0");
        let kv = parse_extension(&ext);
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let clean = |s: &str| s.chars().map(|c| if c.is_control() && c != '\n' && c != '\r' || matches!(c, '\u{2028}' | '\u{2029}') { ' ' } else { c }).collect::<String>();
        prop_assert_eq!(get("msg"), Some(clean(&msg)));
        prop_assert_eq!(get("cs1"), Some(clean(&conduit)));
        prop_assert_eq!(get("reason"), Some(clean(&reason)));
        prop_assert_eq!(get("cs5"), Some(clean(&format!("{dk}: {dv}"))));
        let j: Event = serde_json::from_str(&json(&e)).unwrap();
        prop_assert_eq!(j.message, msg);
    }
}
