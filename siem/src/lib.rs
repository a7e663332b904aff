//! Conduit and audit events for the SOC (IEC 62443-3-3 SR 2.8, SR 6.1).
//!
//! The pipeline: a typed [`record::Event`] → [`flood`] aggregation → a
//! [`render`]ed format (CEF in RFC 5424, CEF in RFC 3164, JSON lines) → one
//! [`spool`] per destination (bounded memory in front of a disk spool, so
//! that a SIEM outage loses nothing) → its [`forward`]er over a
//! [`transport`] (UDP, TCP with octet counting, TLS, RELP over TLS).

pub mod flood;
pub mod forward;
pub mod record;
pub mod render;
pub mod spool;
pub mod transport;
