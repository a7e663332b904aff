//! Policy files: parse, validate, compile. Pure data: no I/O beyond reading
//! the file, no kernel. See docs/policy.md for the format.
#![forbid(unsafe_code)]

pub mod capture;
mod compile;
pub mod error;
pub mod functions;
pub mod lint;
pub mod net;
pub mod ranges;
mod raw;
mod validate;

use std::{net::IpAddr, path::Path};

pub use bessai_common::Addr;
pub use compile::{Compiled, ConduitMeta};
pub use error::{ErrorKind, PolicyError, PolicyErrors};
pub use net::IpNet;

/// The example site policy, embedded for the demo and tests.
pub const EXAMPLE_POLICY: &str = include_str!("../../examples/bess-site.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Monitor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeny {
    Reset,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub networks: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub name: String,
    pub zone: String,
    pub address: IpAddr,
    pub unit_ids: Vec<u8>,
    pub port: u16,
}

/// One allowed function on a conduit; ranges are merged, inclusive, 0-based
/// protocol addresses (sub-functions for FC 8, MEI types for FC 43).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub function: u8,
    pub ranges: Vec<(u16, u16)>,
    /// FC 23 only: the write half.
    pub write_ranges: Vec<(u16, u16)>,
    /// Where the rule starts in the file.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conduit {
    pub name: String,
    pub from: String,
    pub sources: Vec<IpNet>,
    /// Index into [`Policy::assets`].
    pub asset: usize,
    pub mode: Mode,
    pub on_deny: OnDeny,
    pub unit_ids: Vec<u8>,
    pub rules: Vec<Rule>,
    pub line: usize,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub file: String,
    pub site: String,
    pub zones: Vec<Zone>,
    pub assets: Vec<Asset>,
    pub conduits: Vec<Conduit>,
}

impl Policy {
    pub fn compile(&self) -> Compiled {
        compile::compile(self)
    }
}

/// Parses and validates `source`; `file` names it in errors.
pub fn parse(source: &str, file: &str) -> Result<Policy, PolicyErrors> {
    validate::validate(source, file)
}

/// Reads, parses and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse(&source, &file),
        Err(e) => Err(PolicyErrors(vec![PolicyError {
            file,
            line: 1,
            column: 1,
            kind: ErrorKind::Io(e.to_string()),
        }])),
    }
}

#[cfg(test)]
mod tests;
