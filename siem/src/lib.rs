//! Conduit and audit events for the SOC (IEC 62443-3-3 SR 2.8, SR 6.1).
//!
//! The pipeline: a typed [`event::Event`] → flood [`aggregate`]ion → a
//! [`format`] (CEF in RFC 5424, RFC 3164, JSON lines) → the [`spool`] (bounded
//! memory in front of a disk spool, so that a SIEM outage loses nothing) →
//! one [`transport`] per destination (UDP, TCP with octet counting, TLS,
//! RELP over TLS).

pub mod aggregate;
pub mod event;
pub mod format;
pub mod spool;
pub mod transport;
