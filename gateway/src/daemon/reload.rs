//! The policy in force and atomic reloads (SIGHUP).
//!
//! A reload reads the configuration and the policy again and validates them
//! completely. Anything invalid is rejected with its file position and the
//! running policy stays in force. A valid policy is written into the spare
//! generation of the maps and switched in with one write (dataplane/maps.rs),
//! then the nftables table is replaced in one transaction.
//!
//! Both layers always run the same policy, or the audit trail says which
//! runs where: when nftables refuses the new ruleset after the XDP switch,
//! XDP is switched back to the previous policy. Should that fail too, XDP
//! keeps the new policy and nftables is brought forward to it, retried
//! until it takes ([`Running::catch_up`]).

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bessai_policy::{Compiled, Policy};

use super::settings::{FirewallSettings, Settings};
use crate::{
    audit::AuditEvent,
    config::{self, Config},
    dataplane::{Dataplane, DataplaneError, split_conduit_id},
};

/// Why a policy cannot be put in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{0}")]
    Policy(#[from] bessai_policy::PolicyErrors),
    #[error("the nftables ruleset for this policy is rejected: {0}")]
    Nft(#[from] crate::firewall::NftError),
    #[error("the data plane refused the policy: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("nftables refused the ruleset ({nft}); XDP was switched back to the previous policy")]
    RolledBack { nft: crate::firewall::NftError },
    #[error(
        "nftables refused the ruleset ({nft}) and XDP could not be switched back ({xdp}); \
         XDP runs the new policy, nftables the previous one until a retry succeeds"
    )]
    Split {
        nft: crate::firewall::NftError,
        xdp: Box<DataplaneError>,
    },
}

/// The policy names of the conduits of both generations.
#[derive(Clone, Default)]
pub struct ConduitNames(Arc<Mutex<[Vec<String>; 2]>>);

impl ConduitNames {
    fn set(&self, generation: u8, names: Vec<String>) {
        if let Some(slot) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(generation as usize)
        {
            *slot = names;
        }
    }

    /// The policy name of a kernel conduit id, in whichever generation
    /// judged it.
    pub fn of(&self, kernel_id: u16) -> Option<String> {
        let (generation, id) = split_conduit_id(kernel_id);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(generation as usize)
            .and_then(|names| names.get(id as usize))
            .cloned()
    }
}

pub struct Running {
    pub compiled: Compiled,
    /// The policy XDP enforces.
    pub sha256: String,
    /// The policy of the nftables ruleset in force (None: no nftables).
    pub nft_sha256: Option<String>,
    pub generation: u8,
    /// Conduit names of each generation, for events judged by either;
    /// shared with the event loop, which names events while a reload runs.
    pub names: ConduitNames,
    /// The configuration in force (None with `--policy` flags).
    config: Option<Config>,
}

/// The policy (and its hash) named by the configuration or the flags; with
/// a configuration, already parsed and validated with it.
fn policy_of(config: Option<&Config>, path: &Path) -> Result<(Policy, String), ReloadError> {
    if let Some(c) = config {
        return Ok((c.policy.clone(), c.policy_sha256.clone()));
    }
    let mut sha256 = String::new();
    let policy = config::read_policy(path, &mut sha256)?;
    Ok((policy, sha256))
}

impl Running {
    /// The policy the daemon starts with (already validated with the
    /// configuration, read again here for its hash).
    pub fn first(settings: &Settings) -> Result<Self, ReloadError> {
        let (policy, sha256) = policy_of(settings.config.as_ref(), &settings.policy_path)?;
        Ok(Self {
            compiled: policy.compile(),
            sha256,
            nft_sha256: None,
            generation: 0,
            names: ConduitNames::default(),
            config: settings.config.clone(),
        })
    }

    /// Puts `self.compiled` in force; returns how long the switch took to
    /// take effect.
    pub fn switch_in(&mut self, dp: &mut Dataplane) -> Result<Duration, DataplaneError> {
        let sw = dp.install(&self.compiled)?;
        self.generation = sw.to;
        self.names.set(
            sw.to,
            self.compiled
                .conduits_meta
                .iter()
                .map(|c| c.name.clone())
                .collect(),
        );
        Ok(sw.to_enforced)
    }

    /// Handles SIGHUP; returns the audit records of what happened.
    pub fn reload(&mut self, settings: &Settings, dp: &mut Dataplane) -> Vec<AuditEvent> {
        let started = Instant::now();
        let policy_path = settings.policy_path.display().to_string();
        let mut audit = Vec::new();
        let last = match self.try_reload(settings, dp, started, &mut audit) {
            Ok(event) => event,
            Err(e) => AuditEvent::ReloadFailed {
                policy: policy_path,
                running_sha256: self.sha256.clone(),
                nftables_sha256: self.nft_sha256.clone(),
                error: e.to_string(),
            },
        };
        audit.push(last);
        audit
    }

    fn try_reload(
        &mut self,
        settings: &Settings,
        dp: &mut Dataplane,
        started: Instant,
        audit: &mut Vec<AuditEvent>,
    ) -> Result<AuditEvent, ReloadError> {
        // The configuration first: it names the policy and the firewall.
        let (config, firewall) = match &settings.config_path {
            Some(path) => {
                let c = config::load(path)?;
                // Table, family and ports stay as started (restart-only);
                // management networks follow the new configuration.
                let fw = settings.firewall.as_ref().map(|f| FirewallSettings {
                    table: f.table.clone(),
                    deployment: f.deployment,
                    zones: f.zones.clone(),
                    management: c.management.clone(),
                });
                (Some(c), fw)
            }
            None => (None, None),
        };
        let mut phases = Phases::new(started);
        phases.mark("config");
        let policy_path = config
            .as_ref()
            .map_or_else(|| settings.policy_path.clone(), |c| c.policy_path.clone());
        let (policy, sha256) = policy_of(config.as_ref(), &policy_path)?;
        if let (Some(old), Some(new)) = (&self.config, &config) {
            let needs_restart = restart_only_changes(old, new);
            if !needs_restart.is_empty() || !same_reloadable(old, new) {
                audit.push(AuditEvent::ConfigChanged {
                    config: new.path.display().to_string(),
                    needs_restart,
                });
            }
        }
        let firewall_changed = match (&self.config, &config) {
            (Some(old), Some(new)) => !same_reloadable(old, new),
            _ => false,
        };
        if sha256 == self.sha256 && !firewall_changed {
            self.config = config;
            return Ok(AuditEvent::ReloadUnchanged {
                policy_sha256: sha256,
            });
        }
        let compiled = policy.compile();
        phases.mark("compile");
        let old_sha256 = std::mem::replace(&mut self.sha256, sha256);
        let previous = std::mem::replace(&mut self.compiled, compiled);
        let before_switch = started.elapsed();
        let to_enforced = match self.switch_in(dp) {
            Ok(d) => d,
            Err(e) => {
                self.compiled = previous;
                self.sha256 = old_sha256;
                return Err(e.into());
            }
        };
        let took_ms = (before_switch + to_enforced).as_secs_f64() * 1000.0;
        phases.mark("maps");
        // After the switch: nftables and XDP must both allow a connection,
        // so either order fails closed, and this one keeps the ruleset
        // (100 ms of nft for a large policy) off the reload's critical path.
        // nft applies a batch atomically: if it rejects the new ruleset the
        // previous table stays whole, and XDP goes back to match it.
        if let Some(fw) = &firewall {
            if let Err(nft) = fw.apply(&self.compiled) {
                let new_compiled = std::mem::replace(&mut self.compiled, previous);
                let new_sha256 = std::mem::replace(&mut self.sha256, old_sha256);
                return match self.switch_in(dp) {
                    Ok(_) => Err(ReloadError::RolledBack { nft }),
                    Err(xdp) => {
                        self.compiled = new_compiled;
                        self.sha256 = new_sha256;
                        Err(ReloadError::Split {
                            nft,
                            xdp: Box::new(xdp),
                        })
                    }
                };
            }
            self.nft_sha256 = Some(self.sha256.clone());
        }
        phases.mark("nft_apply");
        self.config = config;
        Ok(AuditEvent::ReloadSucceeded {
            policy: policy_path.display().to_string(),
            old_sha256,
            new_sha256: self.sha256.clone(),
            generation: self.generation,
            took_ms,
            phases: phases.text,
        })
    }
}

impl Running {
    /// After a split reload: applies the ruleset of the policy XDP runs,
    /// so that both layers agree again. None when nothing was pending.
    pub fn catch_up(&mut self, settings: &Settings) -> Option<AuditEvent> {
        let fw = settings.firewall.as_ref()?;
        if self.nft_sha256.as_ref() == Some(&self.sha256) {
            return None;
        }
        match fw.apply(&self.compiled) {
            Ok(()) => {
                self.nft_sha256 = Some(self.sha256.clone());
                Some(AuditEvent::LayersAgree {
                    policy_sha256: self.sha256.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "nftables still behind the XDP policy; retrying");
                None
            }
        }
    }
}

/// Settings a reload cannot change on a running boundary.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.interfaces != new.interfaces {
        changed.push("interfaces".to_string());
    }
    if old.deployment != new.deployment || old.bridge != new.bridge {
        changed.push("mode".to_string());
    }
    if old.pin_path != new.pin_path {
        changed.push("pin_path".to_string());
    }
    if old.xdp_mode != new.xdp_mode {
        changed.push("xdp_mode".to_string());
    }
    if old.nft_table != new.nft_table {
        changed.push("nftables.table".to_string());
    }
    if old.siem != new.siem || old.device_id != new.device_id {
        changed.push("siem".to_string());
    }
    changed
}

/// Settings a reload applies besides the policy.
fn same_reloadable(old: &Config, new: &Config) -> bool {
    old.management == new.management && old.policy_path == new.policy_path
}

/// Where a reload's time goes, for the log: `config=1.2 policy=3.4 ...` (ms).
struct Phases {
    last: Instant,
    text: String,
}

impl Phases {
    fn new(started: Instant) -> Self {
        Self {
            last: started,
            text: String::new(),
        }
    }

    fn mark(&mut self, phase: &str) {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1000.0;
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(&format!("{phase}={ms:.1}"));
        self.last = now;
    }
}
