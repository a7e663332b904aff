//! What the daemon runs with: from `--config FILE` (the appliance), or from
//! `--policy` and `--iface` flags (development and tests).

use std::path::PathBuf;

use bessai_policy::Compiled;
use nftables::schema::Nftables;

use crate::{
    config::{self, Config, Deployment, Management, XdpMode},
    dataplane::PinPaths,
    exit,
    firewall::{self as nft, Nft, NftError},
};

/// What `run` was asked to run from.
pub enum RunFrom {
    /// The appliance: a configuration file.
    Config(PathBuf),
    /// Development and tests: a policy and ports on the command line.
    Flags {
        policy: Option<PathBuf>,
        ifaces: Vec<String>,
        pin_path: Option<PathBuf>,
        xdp_mode: XdpMode,
        stats_interval: u64,
    },
}

pub struct Settings {
    pub config_path: Option<PathBuf>,
    /// The configuration as loaded at start (to tell what a reload changed).
    pub config: Option<Config>,
    pub policy_path: PathBuf,
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub pins: Option<PinPaths>,
    pub firewall: Option<FirewallSettings>,
    pub stats_interval: u64,
}

/// The nftables base ruleset's inputs besides the policy.
pub struct FirewallSettings {
    pub table: String,
    pub deployment: Deployment,
    pub zones: Vec<nft::ZoneInterfaces>,
    pub management: Option<Management>,
}

impl FirewallSettings {
    pub fn from_config(c: &Config) -> Option<Self> {
        let table = c.nft_table.clone()?;
        let mut zones: Vec<nft::ZoneInterfaces> = Vec::new();
        for i in &c.interfaces {
            match zones.iter_mut().find(|z| z.zone == i.zone) {
                Some(z) => z.ifaces.push(i.name.clone()),
                None => zones.push(nft::ZoneInterfaces {
                    zone: i.zone.clone(),
                    ifaces: vec![i.name.clone()],
                }),
            }
        }
        Some(Self {
            table,
            deployment: c.deployment,
            zones,
            management: c.management.clone(),
        })
    }

    /// The base ruleset with one accept per conduit of `compiled`.
    pub fn ruleset(&self, compiled: &Compiled) -> Nftables<'static> {
        self.ruleset_for(&compiled.conduits_meta)
    }

    /// The base ruleset without a single conduit: nothing crosses the
    /// boundary, the box answers management only. In force from boot until
    /// XDP is attached on every port, and whenever that fails.
    pub fn closed_ruleset(&self) -> Nftables<'static> {
        self.ruleset_for(&[])
    }

    fn ruleset_for(&self, conduits: &[bessai_policy::ConduitMeta]) -> Nftables<'static> {
        nft::build(&nft::RulesetSpec {
            table: self.table.clone(),
            deployment: self.deployment,
            zones: self.zones.clone(),
            conduits,
            management: self.management.clone(),
        })
    }

    /// Replaces our table with the ruleset for `compiled`, in one transaction.
    pub fn apply(&self, compiled: &Compiled) -> Result<(), NftError> {
        Nft::default().apply(&self.ruleset(compiled))
    }

    /// Deletes our tables: nothing of ours filters any more.
    pub fn remove(&self) -> Result<(), NftError> {
        Nft::default().remove(&self.table)
    }

    /// Replaces our table with the closed ruleset.
    pub fn close(&self) -> Result<(), NftError> {
        Nft::default().apply(&self.closed_ruleset())
    }

    /// Policy zones that conduits use but no `[[interface]]` carries: their
    /// conduits get no nftables accept (see firewall.rs).
    pub fn zones_without_ports<'a>(&self, compiled: &'a Compiled) -> Vec<(&'a str, &'a str)> {
        compiled
            .conduits_meta
            .iter()
            .flat_map(|c| {
                [
                    (c.name.as_str(), c.from.as_str()),
                    (c.name.as_str(), c.to.as_str()),
                ]
            })
            .filter(|(_, zone)| !self.zones.iter().any(|z| z.zone == *zone))
            .collect()
    }
}

impl Settings {
    /// Reads the configuration (exit 78 on error) or the flags (exit 64).
    pub fn from_args(from: RunFrom) -> Result<Self, u8> {
        let (policy, ifaces, pin_path, xdp_mode, stats_interval) = match from {
            RunFrom::Config(path) => {
                return config::load(&path)
                    .map(Self::from_config)
                    .map_err(|errors| {
                        eprintln!("{errors}");
                        exit::CONFIG
                    });
            }
            RunFrom::Flags {
                policy,
                ifaces,
                pin_path,
                xdp_mode,
                stats_interval,
            } => (policy, ifaces, pin_path, xdp_mode, stats_interval),
        };
        let Some(policy) = policy else {
            eprintln!("run: give --config FILE, or --policy FILE with --iface");
            return Err(exit::USAGE);
        };
        if ifaces.is_empty() {
            eprintln!("run: --policy needs at least one --iface");
            return Err(exit::USAGE);
        }
        Ok(Self {
            config_path: None,
            config: None,
            policy_path: policy,
            ifaces,
            xdp_mode,
            pins: pin_path.map(PinPaths::new),
            firewall: None,
            stats_interval,
        })
    }

    pub fn from_config(c: Config) -> Self {
        Self {
            config_path: Some(c.path.clone()),
            policy_path: c.policy_path.clone(),
            ifaces: c.interfaces.iter().map(|i| i.name.clone()).collect(),
            xdp_mode: c.xdp_mode,
            pins: Some(PinPaths::new(c.pin_path.clone())),
            firewall: FirewallSettings::from_config(&c),
            stats_interval: c.stats_interval,
            config: Some(c),
        }
    }

    pub fn config_display(&self) -> String {
        self.config_path
            .as_ref()
            .map_or_else(|| "-".to_string(), |p| p.display().to_string())
    }
}
