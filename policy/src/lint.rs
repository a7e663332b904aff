//! Warnings for valid but risky policies: `policy check` prints them and
//! still exits 0, unless `--deny-warnings`.

use std::fmt;

use bessai_common::modbus::{FC_DIAGNOSTICS, FC_ENCAPSULATED_INTERFACE, is_write};

use crate::{Mode, Policy, functions};

/// Registers (or coils) a single write rule may span before it is "wide".
pub const WIDE_WRITE: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    WideWrite {
        conduit: String,
        function: u8,
        range: String,
    },
    Diagnostics {
        conduit: String,
    },
    DeviceIdentification {
        conduit: String,
    },
    SubnetSource {
        conduit: String,
        source: String,
    },
    MonitorMode {
        conduit: String,
    },
    BroadcastWrite {
        conduit: String,
        function: u8,
    },
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::WideWrite {
                conduit,
                function,
                range,
            } => write!(
                f,
                "conduit {conduit:?} allows {} (FC {function}) over {range}, more than {WIDE_WRITE} addresses: list only the setpoints the client must write",
                functions::name(*function)
            ),
            WarningKind::Diagnostics { conduit } => write!(
                f,
                "conduit {conduit:?} allows FC 8 (diagnostics): some sub-functions restart communications or force listen-only mode"
            ),
            WarningKind::DeviceIdentification { conduit } => write!(
                f,
                "conduit {conduit:?} allows FC 43: it reveals vendor, model and firmware to whoever may use it"
            ),
            WarningKind::SubnetSource { conduit, source } => write!(
                f,
                "conduit {conduit:?} admits a whole subnet ({source}): name the hosts that need it"
            ),
            WarningKind::MonitorMode { conduit } => {
                write!(
                    f,
                    "conduit {conduit:?} is in monitor mode: it logs but does not block"
                )
            }
            WarningKind::BroadcastWrite { conduit, function } => write!(
                f,
                "conduit {conduit:?} allows unit id 0 (broadcast) with write FC {function}: one request writes to every device behind a gateway"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub line: usize,
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:1: warning: {}", self.file, self.line, self.kind)
    }
}

pub fn lint(p: &Policy) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |line, kind| {
        out.push(Warning {
            file: p.file.clone(),
            line,
            kind,
        })
    };
    for c in &p.conduits {
        let conduit = || c.name.clone();
        if c.mode == Mode::Monitor {
            warn(c.line, WarningKind::MonitorMode { conduit: conduit() });
        }
        for s in &c.sources {
            if s.prefix < if s.addr.is_ipv4() { 32 } else { 128 } {
                warn(
                    c.line,
                    WarningKind::SubnetSource {
                        conduit: conduit(),
                        source: s.to_string(),
                    },
                );
            }
        }
        for r in &c.rules {
            if r.function == FC_DIAGNOSTICS {
                warn(r.line, WarningKind::Diagnostics { conduit: conduit() });
            }
            if r.function == FC_ENCAPSULATED_INTERFACE {
                warn(
                    r.line,
                    WarningKind::DeviceIdentification { conduit: conduit() },
                );
            }
            if !is_write(r.function) {
                continue;
            }
            let spans = if r.write_ranges.is_empty() {
                &r.ranges
            } else {
                &r.write_ranges
            };
            for (s, e) in spans {
                if (*e as u32) - (*s as u32) + 1 > WIDE_WRITE {
                    let range = crate::ranges::show((*s as u32, *e as u32));
                    warn(
                        r.line,
                        WarningKind::WideWrite {
                            conduit: conduit(),
                            function: r.function,
                            range,
                        },
                    );
                }
            }
            if c.unit_ids.contains(&0) {
                warn(
                    r.line,
                    WarningKind::BroadcastWrite {
                        conduit: conduit(),
                        function: r.function,
                    },
                );
            }
        }
    }
    out
}
