//! What the daemon runs with: from `--config FILE` (the appliance), or from
//! `--policy` and `--iface` flags (development and tests).

use std::path::PathBuf;

use bessai_policy::Compiled;

use crate::{
    cli::{RunArgs, XdpModeArg},
    config::{self, Config, Deployment, Management, OnShutdown, XdpMode},
    dataplane::PinPaths,
    exit,
    firewall::{self as nft, Nft, NftError},
};

pub struct Settings {
    pub config_path: Option<PathBuf>,
    /// The configuration as loaded at start (to tell what a reload changed).
    pub config: Option<Config>,
    pub policy_path: PathBuf,
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub pins: Option<PinPaths>,
    pub firewall: Option<FirewallSettings>,
    pub on_shutdown: OnShutdown,
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

    pub fn ruleset(&self, compiled: &Compiled) -> nftables::schema::Nftables<'static> {
        nft::build(&nft::RulesetSpec {
            table: self.table.clone(),
            deployment: match self.deployment {
                Deployment::Routed => nft::Deployment::Routed,
                Deployment::Bridge => nft::Deployment::Bridge,
            },
            zones: self.zones.clone(),
            conduits: &compiled.conduits_meta,
            management: self.management.as_ref().map(|m| nft::Management {
                networks: m.networks.clone(),
                tcp_ports: m.tcp_ports.clone(),
            }),
        })
    }

    /// Validates the ruleset against the kernel without changing anything.
    pub fn check(&self, compiled: &Compiled) -> Result<(), NftError> {
        Nft::default().check(&self.ruleset(compiled))
    }

    /// Replaces our table with the ruleset for `compiled`, in one transaction.
    pub fn apply(&self, compiled: &Compiled) -> Result<(), NftError> {
        Nft::default().apply(&self.ruleset(compiled))
    }

    pub fn remove(&self) -> Result<(), NftError> {
        Nft::default().remove(
            &self.table,
            match self.deployment {
                Deployment::Routed => nft::Deployment::Routed,
                Deployment::Bridge => nft::Deployment::Bridge,
            },
        )
    }
}

impl Settings {
    /// Reads the configuration (exit 78 on error) or the flags (exit 64).
    pub fn from_args(args: &RunArgs) -> Result<Self, u8> {
        if let Some(path) = &args.config {
            let c = match config::load(path, true) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Err(exit::CONFIG);
                }
            };
            return Ok(Self::from_config(c));
        }
        let Some(policy) = &args.policy else {
            eprintln!("run: give --config FILE, or --policy FILE with --iface");
            return Err(exit::USAGE);
        };
        if args.ifaces.is_empty() {
            eprintln!("run: --policy needs at least one --iface");
            return Err(exit::USAGE);
        }
        let pins = args.pin_path.clone().map(PinPaths::new);
        Ok(Self {
            config_path: None,
            config: None,
            policy_path: policy.clone(),
            ifaces: args.ifaces.clone(),
            xdp_mode: match args.xdp_mode {
                XdpModeArg::Auto => XdpMode::Auto,
                XdpModeArg::Native => XdpMode::Native,
                XdpModeArg::Generic => XdpMode::Generic,
            },
            // Without pins the links belong to the process: stopping opens.
            on_shutdown: if pins.is_some() {
                OnShutdown::Keep
            } else {
                OnShutdown::Open
            },
            pins,
            firewall: None,
            stats_interval: args.stats_interval,
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
            on_shutdown: c.on_shutdown,
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
