//! BESSAI Edge Gateway: daemon and CLI around the XDP data plane.
pub mod cli;
pub mod dataplane;
pub mod diff;
pub mod exit;
pub mod learn;
pub mod replay;
pub mod report;
pub mod run;
