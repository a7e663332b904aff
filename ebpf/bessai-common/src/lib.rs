//! Shared between the XDP program (`no_std`, bpf target) and user space.
//!
//! The one place where a Modbus/TCP frame is judged is [`decide::decide`]: the XDP
//! program calls it with map-backed [`Tables`], the host (tests, pcap replay) with
//! in-memory tables. Both pass the frame as the first [`FRAME_MAX`] bytes in a fixed
//! buffer, so truncation behaves identically on both sides.
//!
//! Byte order: every multi-byte field read from a frame is converted from network
//! byte order when read ([`frame::Frame`]). Map keys keep addresses and the conduit
//! port in network order (they are compared as bytes by the LPM trie); everything
//! else in map values is host order.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

#[cfg(any(test, feature = "user"))]
pub mod craft;
pub mod decide;
pub mod frame;
#[cfg(any(test, feature = "user"))]
pub mod host;
pub mod modbus;
pub mod reason;
pub mod rst;
pub mod stream_hash;
pub mod tcp_flow;
pub mod types;

#[cfg(test)]
mod normalizer_tests;
#[cfg(test)]
mod tests;

pub use decide::{
    AduObserver, AduRun, Decision, Flows, Layout, NoObserver, Policy, Tables, adu_step, decide,
};
pub use reason::{Action, Reason};
pub use types::*;
