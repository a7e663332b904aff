//! Audit trail (IEC 62443-3-3 SR 2.8): what happened to the gateway itself,
//! distinct from traffic events: start, stop, reloads (with the policy's
//! SHA-256 before and after), configuration changes.
//!
//! Each record is a structured tracing event with target `bessai::audit`
//! and an `audit` field naming its kind, so that a log pipeline can route
//! them apart from `bessai::conduit` traffic events; the SIEM forwarder
//! receives the same records.

use sha2::{Digest, Sha256};

/// SHA-256, hex. A policy is identified by the bytes the engineer wrote.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditEvent {
    Start {
        version: &'static str,
        config: String,
        policy: String,
        policy_sha256: String,
        adopted: bool,
    },
    Stop {
        /// True when enforcement was removed (development runs without pins).
        opened: bool,
    },
    /// The daemon could not put the boundary in force and exits for the
    /// service manager to retry.
    StartFailed {
        stage: &'static str,
        error: String,
        /// The closed ruleset is in force (nftables configured).
        boundary_closed: bool,
    },
    ReloadSucceeded {
        policy: String,
        old_sha256: String,
        new_sha256: String,
        generation: u8,
        /// From SIGHUP to the new generation in force.
        took_ms: f64,
        /// Milliseconds per step, for whoever tunes reloads.
        phases: String,
    },
    ReloadUnchanged {
        policy_sha256: String,
    },
    ReloadFailed {
        policy: String,
        /// The policy XDP enforces after the failure.
        running_sha256: String,
        /// The policy of the nftables ruleset after the failure (None
        /// without nftables); differs from `running_sha256` only when a
        /// rollback failed, until [`AuditEvent::LayersAgree`].
        nftables_sha256: Option<String>,
        error: String,
    },
    /// nftables caught up with the policy XDP runs after a split reload.
    LayersAgree {
        policy_sha256: String,
    },
    ConfigChanged {
        config: String,
        /// What changed that a reload cannot apply.
        needs_restart: Vec<String>,
    },
    /// The kernel could not hand denial events to the daemon (its ring
    /// buffer was full): the per-reason counters still count them.
    KernelEventsLost {
        /// Lost since the last report.
        lost: u64,
        /// Lost since the program was loaded.
        total: u64,
    },
}

impl AuditEvent {
    pub const fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Start { .. } => "start",
            AuditEvent::Stop { .. } => "stop",
            AuditEvent::StartFailed { .. } => "start_failed",
            AuditEvent::ReloadSucceeded { .. } => "reload_succeeded",
            AuditEvent::ReloadUnchanged { .. } => "reload_unchanged",
            AuditEvent::ReloadFailed { .. } => "reload_failed",
            AuditEvent::LayersAgree { .. } => "layers_agree",
            AuditEvent::ConfigChanged { .. } => "config_changed",
            AuditEvent::KernelEventsLost { .. } => "kernel_events_lost",
        }
    }

    /// The record's fields, for the SIEM (CEF `cs5`, JSON `detail`).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            AuditEvent::Start {
                version,
                config,
                policy,
                policy_sha256,
                adopted,
            } => vec![
                ("version", (*version).to_string()),
                ("config", config.clone()),
                ("policy", policy.clone()),
                ("policy_sha256", policy_sha256.clone()),
                ("adopted", adopted.to_string()),
            ],
            AuditEvent::Stop { opened } => vec![("opened", opened.to_string())],
            AuditEvent::StartFailed {
                stage,
                error,
                boundary_closed,
            } => vec![
                ("stage", (*stage).to_string()),
                ("error", error.clone()),
                ("boundary_closed", boundary_closed.to_string()),
            ],
            AuditEvent::ReloadSucceeded {
                policy,
                old_sha256,
                new_sha256,
                generation,
                took_ms,
                ..
            } => vec![
                ("policy", policy.clone()),
                ("old_sha256", old_sha256.clone()),
                ("new_sha256", new_sha256.clone()),
                ("generation", generation.to_string()),
                ("took_ms", format!("{took_ms:.2}")),
            ],
            AuditEvent::ReloadUnchanged { policy_sha256 } => {
                vec![("policy_sha256", policy_sha256.clone())]
            }
            AuditEvent::ReloadFailed {
                policy,
                running_sha256,
                nftables_sha256,
                error,
            } => vec![
                ("policy", policy.clone()),
                ("running_sha256", running_sha256.clone()),
                (
                    "nftables_sha256",
                    nftables_sha256.clone().unwrap_or_else(|| "-".into()),
                ),
                ("error", error.clone()),
            ],
            AuditEvent::LayersAgree { policy_sha256 } => {
                vec![("policy_sha256", policy_sha256.clone())]
            }
            AuditEvent::ConfigChanged {
                config,
                needs_restart,
            } => vec![
                ("config", config.clone()),
                ("needs_restart", needs_restart.join(", ")),
            ],
            AuditEvent::KernelEventsLost { lost, total } => {
                vec![("lost", lost.to_string()), ("total", total.to_string())]
            }
        }
    }

    /// Writes the record to the log.
    pub fn log(&self) {
        let audit = self.kind();
        match self {
            AuditEvent::Start {
                version,
                config,
                policy,
                policy_sha256,
                adopted,
            } => tracing::info!(
                target: "bessai::audit", audit, version, config, policy, policy_sha256,
                adopted, "gateway started"
            ),
            AuditEvent::Stop { opened } => tracing::info!(
                target: "bessai::audit", audit, opened,
                "{}", if *opened { "gateway stopped, enforcement removed" } else { "gateway stopped, enforcement stays in force" }
            ),
            AuditEvent::StartFailed {
                stage,
                error,
                boundary_closed,
            } => tracing::error!(
                target: "bessai::audit", audit, stage, error, boundary_closed,
                "{}", if *boundary_closed { "start failed; the boundary stays closed" } else { "start failed" }
            ),
            AuditEvent::ReloadSucceeded {
                policy,
                old_sha256,
                new_sha256,
                generation,
                took_ms,
                phases,
            } => tracing::info!(
                target: "bessai::audit", audit, policy, old_sha256, new_sha256, generation,
                took_ms, phases, "policy reloaded"
            ),
            AuditEvent::ReloadUnchanged { policy_sha256 } => tracing::info!(
                target: "bessai::audit", audit, policy_sha256, "policy unchanged"
            ),
            AuditEvent::ReloadFailed {
                policy,
                running_sha256,
                nftables_sha256,
                error,
            } => tracing::error!(
                target: "bessai::audit", audit, policy, running_sha256,
                nftables_sha256 = nftables_sha256.as_deref().unwrap_or("-"), error,
                "{}", if nftables_sha256.as_ref().is_none_or(|n| n == running_sha256) {
                    "reload rejected, the running policy stays in force in every layer"
                } else {
                    "reload failed half-way: XDP runs running_sha256, nftables nftables_sha256"
                }
            ),
            AuditEvent::LayersAgree { policy_sha256 } => tracing::warn!(
                target: "bessai::audit", audit, policy_sha256,
                "nftables caught up: every layer runs this policy"
            ),
            AuditEvent::ConfigChanged {
                config,
                needs_restart,
            } => tracing::warn!(
                target: "bessai::audit", audit, config, needs_restart = needs_restart.join(", "),
                "configuration changed; these changes take effect at the next restart"
            ),
            AuditEvent::KernelEventsLost { lost, total } => tracing::error!(
                target: "bessai::audit", audit, lost, total,
                "denial events lost in the kernel (ring buffer full); counters still count them"
            ),
        }
    }
}
