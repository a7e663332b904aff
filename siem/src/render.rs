//! Event formats: CEF (ArcSight Common Event Format, version 0) inside RFC
//! 5424 syslog with structured data, CEF inside RFC 3164 for legacy
//! receivers, and JSON lines. Each renders one message without transport
//! framing, and no input can put a line break or an unescaped delimiter
//! into it (unit tests with the specs' examples; property tests; the
//! `siem_format` fuzz target).

use std::{fmt::Write as _, str::FromStr};

use time::OffsetDateTime;

use crate::record::Event;

/// How messages are written for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CEF as the MSG of an RFC 5424 message with structured data.
    Cef,
    /// CEF as the MSG of an RFC 3164 message.
    Rfc3164,
    /// One JSON object.
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cef" | "rfc5424" => Ok(Format::Cef),
            "rfc3164" => Ok(Format::Rfc3164),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown format {other:?}: cef (CEF in RFC 5424), rfc3164, json"
            )),
        }
    }
}

/// What the syslog header says about the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Syslog facility, 0-23 (default 20, local4).
    pub facility: u8,
    pub app_name: String,
    /// Structured-data id. 32473 is the example Private Enterprise Number
    /// of RFC 5612; a vendor registers its own.
    pub sd_id: String,
    pub product_version: String,
    /// Process id for the PROCID field.
    pub proc_id: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            facility: 20,
            app_name: "bessai-gw".into(),
            sd_id: "bessai@32473".into(),
            product_version: env!("CARGO_PKG_VERSION").into(),
            proc_id: std::process::id(),
        }
    }
}

/// Renders `e` as `format`.
pub fn render(e: &Event, format: Format, o: &Options) -> Vec<u8> {
    match format {
        Format::Cef => rfc5424(e, &cef(e, o), o),
        Format::Rfc3164 => rfc3164(e, &cef(e, o), o),
        Format::Json => json(e),
    }
    .into_bytes()
}

// ---- CEF -------------------------------------------------------------------

/// A character that some receiver could take for a line break, or a
/// control character: none may reach the output raw.
fn is_break_or_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// CEF header field: `\` and `|` escaped; line breaks and other control
/// characters become spaces (the spec forbids them in the header).
pub fn cef_header_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if is_break_or_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// CEF extension value: `\`, `=` escaped, CR and LF written as `\r`, `\n`,
/// other control characters as spaces.
pub fn cef_value_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_break_or_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The CEF record. Keys: `rt` (ms), `externalId` (event id), `cat`
/// (traffic or audit), `deviceExternalId`, `dvchost`, `src`, `dst`, `spt`,
/// `dpt`, `proto`, `act`, `reason`, `cs1` conduit, `cs2` policy SHA-256,
/// `cs3` site, `cs4` Modbus quantity, `cs5` audit details (`key: value;
/// …`), `cn1` unit id, `cn2` function code, `cn3` address, `cnt`, `start`,
/// `end` (aggregated events), `msg`.
pub fn cef(e: &Event, o: &Options) -> String {
    let mut s = format!(
        "CEF:0|BESSAI|Edge Gateway|{}|{}|{}|{}|",
        cef_header_escape(&o.product_version),
        e.class.id(),
        cef_header_escape(e.class.name()),
        e.severity.min(10)
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", e.time_ms.to_string()),
        ("externalId", e.id.to_string()),
        (
            "cat",
            if e.is_audit() { "audit" } else { "traffic" }.to_string(),
        ),
        ("deviceExternalId", e.device_id.clone()),
        ("dvchost", e.device_id.clone()),
    ];
    let mut opt = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            ext.push((k, v));
        }
    };
    opt("src", e.src.map(|a| a.to_string()));
    opt("dst", e.dst.map(|a| a.to_string()));
    opt("spt", e.src_port.map(|p| p.to_string()));
    opt("dpt", e.dst_port.map(|p| p.to_string()));
    opt(
        "proto",
        e.src_port.or(e.dst_port).map(|_| "TCP".to_string()),
    );
    opt("act", e.action.clone());
    opt("reason", e.reason.clone());
    if let Some(c) = &e.conduit {
        ext.push(("cs1", c.clone()));
        ext.push(("cs1Label", "conduit".into()));
    }
    if let Some(h) = &e.policy_sha256 {
        ext.push(("cs2", h.clone()));
        ext.push(("cs2Label", "policySha256".into()));
    }
    ext.push(("cs3", e.site.clone()));
    ext.push(("cs3Label", "site".into()));
    if let Some(q) = e.quantity {
        ext.push(("cs4", q.to_string()));
        ext.push(("cs4Label", "modbusQuantity".into()));
    }
    if !e.detail.is_empty() {
        let d = e
            .detail
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        ext.push(("cs5", d));
        ext.push(("cs5Label", "detail".into()));
    }
    if let Some(u) = e.unit_id {
        ext.push(("cn1", u.to_string()));
        ext.push(("cn1Label", "modbusUnitId".into()));
    }
    if let Some(f) = e.function {
        ext.push(("cn2", f.to_string()));
        ext.push(("cn2Label", "modbusFunctionCode".into()));
    }
    if let Some(a) = e.address {
        ext.push(("cn3", a.to_string()));
        ext.push(("cn3Label", "modbusAddress".into()));
    }
    if e.count > 1 {
        ext.push(("cnt", e.count.to_string()));
        ext.push(("start", e.first_ms.to_string()));
        ext.push(("end", e.last_ms.to_string()));
    }
    ext.push(("msg", e.message.clone()));
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{k}={}", cef_value_escape(v));
    }
    s
}

// ---- syslog ----------------------------------------------------------------

/// CEF severity 0-10 to syslog severity (RFC 5424 table 2): 9-10 critical,
/// 7-8 error, 5-6 warning, 3-4 notice, 0-2 informational.
pub const fn syslog_severity(cef: u8) -> u8 {
    match cef {
        9.. => 2,
        7..=8 => 3,
        5..=6 => 4,
        3..=4 => 5,
        _ => 6,
    }
}

fn pri(e: &Event, o: &Options) -> u16 {
    u16::from(o.facility.min(23)) * 8 + u16::from(syslog_severity(e.severity))
}

/// An RFC 5424 header field: PRINTUSASCII (33-126) only, at most `max`
/// characters, `-` (NILVALUE) when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

/// SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 6.3.3); control
/// characters and line breaks become spaces.
pub fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if is_break_or_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-23T07:22:01.123Z`: UTC, always three decimals.
fn rfc3339_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An SD-ID or SD-NAME: printable ASCII without `=`, space, `]` and `"`
/// (RFC 5424 6.3.2), at most 32 characters.
fn sd_name(s: &str) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect();
    if f.is_empty() {
        "bessai@32473".into()
    } else {
        f
    }
}

/// RFC 5424 message: header, structured data (event id, class, conduit,
/// policy hash, count), then `msg`.
pub fn rfc5424(e: &Event, msg: &str, o: &Options) -> String {
    let mut sd = format!(
        "[{} id=\"{}\" class=\"{}\"",
        sd_name(&o.sd_id),
        e.id,
        e.class.id()
    );
    if let Some(c) = &e.conduit {
        let _ = write!(sd, " conduit=\"{}\"", sd_escape(c));
    }
    if let Some(h) = &e.policy_sha256 {
        let _ = write!(sd, " policySha256=\"{}\"", sd_escape(h));
    }
    if e.count > 1 {
        let _ = write!(sd, " count=\"{}\"", e.count);
    }
    sd.push(']');
    format!(
        "<{}>1 {} {} {} {} {} {} {}",
        pri(e, o),
        rfc3339_ms(e.time_ms),
        header_field(&e.device_id, 255),
        header_field(&o.app_name, 48),
        o.proc_id,
        header_field(e.class.token(), 32),
        sd,
        single_line(msg)
    )
}

/// RFC 3164: `<PRI>Mmm dd hh:mm:ss HOST TAG: MSG`, the day padded with a
/// space (`Nov  3`), UTC.
pub fn rfc3164(e: &Event, msg: &str, o: &Options) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.time_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "<{}>{} {:>2} {:02}:{:02}:{:02} {} {}[{}]: {}",
        pri(e, o),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        header_field(&e.device_id, 255),
        header_field(&o.app_name, 32),
        o.proc_id,
        single_line(msg)
    )
}

/// Whatever the caller passed, no raw line break leaves here.
fn single_line(s: &str) -> String {
    s.chars()
        .map(|c| if is_break_or_control(c) { ' ' } else { c })
        .collect()
}

/// One JSON object; serde escapes the C0 control characters, and what it
/// leaves raw (DEL, the C1 controls with U+0085, U+2028, U+2029) is
/// escaped here.
pub fn json(e: &Event) -> String {
    #[derive(serde::Serialize)]
    struct WithClassId<'a> {
        class_id: u16,
        #[serde(flatten)]
        event: &'a Event,
    }
    let s = serde_json::to_string(&WithClassId {
        class_id: e.class.id(),
        event: e,
    })
    .unwrap_or_default();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_break_or_control(c) {
            // Only inside strings (serde escaped the rest): as \uXXXX.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
