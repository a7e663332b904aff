//! The boundary outside the daemon's lifetime: `bessai-gw boundary close`
//! at boot (before `network-pre.target`), `forward` once the daemon is
//! enforcing (after `READY=1`), `decommission` to open it for good; and
//! `bessai-gw nft` to review the ruleset.
//!
//! Pins live on bpffs, which is memory: after a reboot nothing is enforced
//! until the daemon has attached again. Closing at boot makes that window
//! closed instead of open: our table with forward (bridge) drop and input
//! limited to management, and forwarding off. The daemon replaces the table
//! with the conduits only after XDP is attached on every port.

mod netif;

use std::{borrow::Cow, path::Path};

use nftables::schema::Nftables;

use crate::{
    config::{self, Config, Deployment},
    daemon::FirewallSettings,
    exit,
    firewall::{self, Nft},
};

/// Our table name when the configuration cannot be read.
const DEFAULT_TABLE: &str = "bessai";

/// `bessai-gw boundary close`: the boot ruleset. With a configuration that
/// cannot be read, both families are closed and the box answers nothing
/// but loopback; the exit code (78) says so.
pub fn close_command(path: &Path) -> u8 {
    let c = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "closing every family, no management access, until the configuration is fixed"
            );
            let code = match Nft::default().apply(&closed_everywhere()) {
                Ok(()) => exit::CONFIG,
                Err(e) => {
                    eprintln!("{e}");
                    exit::OSERR
                }
            };
            if let Err(e) = netif::set_forwarding(false) {
                eprintln!("forwarding off: {e}");
            }
            return code;
        }
    };
    let mut code = exit::OK;
    if let Err(e) = set_passing(&c, false) {
        eprintln!("{e}");
        code = exit::OSERR;
    }
    let Some(fw) = FirewallSettings::from_config(&c) else {
        eprintln!(
            "{}: nftables is disabled ([nftables] enabled = false): nothing but XDP closes the boundary",
            path.display()
        );
        return code;
    };
    match fw.close() {
        Ok(()) => {
            tracing::info!(table = fw.table, mode = ?c.deployment, "boundary closed");
            code
        }
        Err(e) => {
            eprintln!("{e}");
            exit::OSERR
        }
    }
}

/// `bessai-gw boundary forward`: run by systemd once the daemon said
/// `READY=1`; IP forwarding (routed) or the bridge ports (bridge) on.
pub fn forward_command(path: &Path) -> u8 {
    let c = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match set_passing(&c, true) {
        Ok(()) => {
            tracing::info!(mode = ?c.deployment, "forwarding on");
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::OSERR
        }
    }
}

/// `bessai-gw boundary decommission`: removes the pins (XDP detaches once
/// no process holds its links: stop the service first) and our nftables
/// tables, and turns forwarding on. The boundary is then open.
pub fn decommission_command(path: &Path) -> u8 {
    let c = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut code = exit::OK;
    match std::fs::remove_dir_all(&c.pin_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            eprintln!("{}: {e}", c.pin_path.display());
            code = exit::OSERR;
        }
    }
    let table = c.nft_table.as_deref().unwrap_or(DEFAULT_TABLE);
    if let Err(e) = Nft::default().remove(table) {
        eprintln!("{e}");
        code = exit::OSERR;
    }
    if let Err(e) = set_passing(&c, true) {
        eprintln!("{e}");
        code = exit::OSERR;
    }
    tracing::warn!(
        target: "bessai::audit",
        audit = "decommissioned",
        pins = %c.pin_path.display(),
        table,
        "boundary decommissioned: XDP pins and nftables tables removed, the boundary is open"
    );
    code
}

/// The configuration, or the exit code after saying what is wrong.
fn load(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        exit::CONFIG
    })
}

/// Forwarding (routed) or the bridge ports' link state (bridge).
fn set_passing(c: &Config, on: bool) -> Result<(), String> {
    match c.deployment {
        Deployment::Routed => netif::set_forwarding(on).map_err(|e| format!("forwarding: {e}")),
        Deployment::Bridge => {
            for i in &c.interfaces {
                match netif::set_link_up(&i.name, on) {
                    Ok(true) => {}
                    // A late port: the network configuration brings it up
                    // into the closed ruleset, or `forward` does later.
                    Ok(false) => tracing::warn!(iface = i.name, "no such port yet"),
                    Err(e) => return Err(format!("{}: {e}", i.name)),
                }
            }
            Ok(())
        }
    }
}

/// The closed ruleset in both families, for a configuration that cannot be
/// read: the mode is unknown, so neither routing nor bridging passes.
fn closed_everywhere() -> Nftables<'static> {
    let closed = |deployment| {
        FirewallSettings {
            table: DEFAULT_TABLE.to_string(),
            deployment,
            zones: Vec::new(),
            management: None,
        }
        .closed_ruleset()
    };
    // Bridge first: it also writes an inet table (input only) that the
    // routed batch then replaces with forward and input.
    let mut objects = closed(Deployment::Bridge).objects.into_owned();
    objects.extend(closed(Deployment::Routed).objects.into_owned());
    Nftables {
        objects: Cow::Owned(objects),
    }
}

/// `bessai-gw nft`: print (`--dry-run`), check, or apply the base ruleset.
pub fn nft_command(path: &Path, dry_run: bool, check: bool) -> u8 {
    let c = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(fw) = FirewallSettings::from_config(&c) else {
        eprintln!(
            "{}: nftables is disabled ([nftables] enabled = false)",
            path.display()
        );
        return exit::CONFIG;
    };
    let compiled = c.policy.compile();
    let ruleset = fw.ruleset(&compiled);
    if dry_run {
        println!("{}", firewall::to_json(&ruleset));
    }
    if check && let Err(e) = Nft::default().check(&ruleset) {
        eprintln!("{e}");
        return exit::DATAERR;
    }
    if !dry_run && let Err(e) = Nft::default().apply(&ruleset) {
        eprintln!("{e}");
        return exit::OSERR;
    }
    exit::OK
}
