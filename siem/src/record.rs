//! The one record every SOC event is: traffic events (a denied transaction,
//! a monitor-mode hit, a malformed frame, a rate-limit hit) and audit events
//! (start, stop, reload, configuration change, authentication failure,
//! events dropped), with a stable class id, severity, UTC timestamps in
//! milliseconds, site and device, the conduit and the Modbus fields, the
//! reason and the policy's SHA-256.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

/// What happened. The numeric id is the CEF *Device Event Class ID* and
/// never changes meaning: SIEM rules are written against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    DeniedTransaction,
    MonitoredTransaction,
    MalformedFrame,
    RateLimited,
    Start,
    Stop,
    ReloadSucceeded,
    ReloadFailed,
    ConfigChanged,
    AuthFailure,
    EventsDropped,
    /// The gateway could not put the boundary in force (it stays closed).
    StartFailed,
    /// A destination's spool or forwarder failed and is being retried.
    DeliveryFault,
    /// The marker event of `bessai-gw siem test`.
    Test,
}

impl EventClass {
    pub const ALL: [EventClass; 14] = [
        EventClass::DeniedTransaction,
        EventClass::MonitoredTransaction,
        EventClass::MalformedFrame,
        EventClass::RateLimited,
        EventClass::Start,
        EventClass::Stop,
        EventClass::ReloadSucceeded,
        EventClass::ReloadFailed,
        EventClass::ConfigChanged,
        EventClass::AuthFailure,
        EventClass::EventsDropped,
        EventClass::StartFailed,
        EventClass::DeliveryFault,
        EventClass::Test,
    ];

    pub const fn id(self) -> u16 {
        match self {
            EventClass::DeniedTransaction => 100,
            EventClass::MonitoredTransaction => 101,
            EventClass::MalformedFrame => 102,
            EventClass::RateLimited => 103,
            EventClass::Start => 200,
            EventClass::Stop => 201,
            EventClass::ReloadSucceeded => 202,
            EventClass::ReloadFailed => 203,
            EventClass::ConfigChanged => 204,
            EventClass::AuthFailure => 205,
            EventClass::EventsDropped => 206,
            EventClass::StartFailed => 207,
            EventClass::DeliveryFault => 208,
            EventClass::Test => 900,
        }
    }

    /// Human name (CEF *Name*).
    pub const fn name(self) -> &'static str {
        match self {
            EventClass::DeniedTransaction => "Modbus transaction denied",
            EventClass::MonitoredTransaction => "Modbus transaction would be denied (monitor mode)",
            EventClass::MalformedFrame => "Malformed or evasive frame dropped",
            EventClass::RateLimited => "Rate limit hit",
            EventClass::Start => "Gateway started",
            EventClass::Stop => "Gateway stopped",
            EventClass::ReloadSucceeded => "Policy reloaded",
            EventClass::ReloadFailed => "Policy reload rejected",
            EventClass::ConfigChanged => "Configuration changed",
            EventClass::AuthFailure => "Authentication failure",
            EventClass::EventsDropped => "Events dropped",
            EventClass::StartFailed => "Gateway not enforcing, boundary closed",
            EventClass::DeliveryFault => "SIEM delivery fault",
            EventClass::Test => "SIEM pipeline test",
        }
    }

    /// Short token (syslog MSGID, JSON `class`).
    pub const fn token(self) -> &'static str {
        match self {
            EventClass::DeniedTransaction => "denied",
            EventClass::MonitoredTransaction => "monitored",
            EventClass::MalformedFrame => "malformed",
            EventClass::RateLimited => "rate_limited",
            EventClass::Start => "start",
            EventClass::Stop => "stop",
            EventClass::ReloadSucceeded => "reload_succeeded",
            EventClass::ReloadFailed => "reload_failed",
            EventClass::ConfigChanged => "config_changed",
            EventClass::AuthFailure => "auth_failure",
            EventClass::EventsDropped => "events_dropped",
            EventClass::StartFailed => "start_failed",
            EventClass::DeliveryFault => "delivery_fault",
            EventClass::Test => "test",
        }
    }

    /// CEF severity 0-10.
    pub const fn severity(self) -> u8 {
        match self {
            EventClass::DeniedTransaction => 7,
            EventClass::MonitoredTransaction => 5,
            EventClass::MalformedFrame => 6,
            EventClass::RateLimited => 5,
            EventClass::Start | EventClass::Stop => 3,
            EventClass::ReloadSucceeded => 3,
            EventClass::ReloadFailed => 6,
            EventClass::ConfigChanged => 4,
            EventClass::AuthFailure => 7,
            EventClass::EventsDropped => 8,
            EventClass::StartFailed => 9,
            EventClass::DeliveryFault => 6,
            EventClass::Test => 1,
        }
    }

    pub const fn is_audit(self) -> bool {
        self.id() >= 200
    }
}

/// Unique per gateway: the daemon's start time (seconds) in the high 32
/// bits, a counter in the low 32. Rendered as 16 hex digits (also in JSON:
/// a 64-bit number would lose precision in JavaScript-based SIEMs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct EventId(pub u64);

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for EventId {
    type Error = std::num::ParseIntError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl EventId {
    pub const fn new(boot_s: u32, seq: u32) -> Self {
        Self((boot_s as u64) << 32 | seq as u64)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for EventId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(EventId)
    }
}

/// One SOC event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub class: EventClass,
    pub severity: u8,
    /// UTC, milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub site: String,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conduit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u16>,
    /// Why (e.g. `address-denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the gateway did (`drop`, `reset-client`, `monitor`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
    pub message: String,
    /// Audit details (old_sha256, file, error, ...), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<(String, String)>,
    /// Identical events this one stands for (1 for a single event).
    pub count: u32,
    /// First and last occurrence when `count > 1`.
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Event {
    /// An event of `class` now-ish (`time_ms`), with its default severity.
    pub fn new(
        id: EventId,
        class: EventClass,
        time_ms: i64,
        site: &str,
        device_id: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id,
            class,
            severity: class.severity(),
            time_ms,
            site: site.to_string(),
            device_id: device_id.to_string(),
            conduit: None,
            src: None,
            dst: None,
            src_port: None,
            dst_port: None,
            unit_id: None,
            function: None,
            address: None,
            quantity: None,
            reason: None,
            action: None,
            policy_sha256: None,
            message: message.into(),
            detail: Vec::new(),
            count: 1,
            first_ms: time_ms,
            last_ms: time_ms,
        }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.detail.push((key.to_string(), value.into()));
        self
    }

    pub fn is_audit(&self) -> bool {
        self.class.is_audit()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
