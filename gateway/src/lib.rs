//! BESSAI Edge Gateway: daemon and CLI around the XDP data plane.
pub mod audit;
pub mod boundary;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod diff;
pub mod exit;
pub mod firewall;
pub mod learn;
pub mod replay;
pub mod report;
pub mod siem;
