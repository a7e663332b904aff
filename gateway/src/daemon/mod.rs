//! `bessai-gw run`: the appliance daemon.
//!
//! Closed from the first packet: the boot unit (`bessai-gw boundary close`)
//! loaded the closed ruleset before the network came up, and the daemon
//! only ever widens it after enforcement is complete:
//!
//! 1. configuration and policy are validated before anything is touched
//!    (exit 78 for a configuration that can never work);
//! 2. signals are taken from then on, so one that arrives during the start
//!    is handled, not fatal;
//! 3. [`start`]: the closed ruleset (no conduit accepts) replaces our table,
//!    the SIEM starts, the XDP program loads (adopting what earlier runs
//!    pinned), the policy switches in, and XDP attaches to every port
//!    (late ports are waited for); only then do the conduit accepts go in
//!    and systemd hears `READY=1` (and turns forwarding on). Any failure
//!    leaves the closed ruleset in force, is audited with its stage, and
//!    ends the process with a code systemd retries;
//! 4. [`serve`]: events, counters, watchdog, SIGHUP reloads;
//! 5. on SIGTERM XDP and nftables stay in force (pinned): the boundary
//!    stays closed while the daemon is down. Only `bessai-gw boundary
//!    decommission` opens it.

mod interfaces;
mod reload;
mod serve;
mod settings;
mod start;
mod systemd;

use std::{sync::Arc, time::Duration};

use tokio::signal::unix::{Signal, SignalKind, signal};

use self::reload::Running;
pub use self::settings::{FirewallSettings, RunFrom, Settings};
use crate::{audit::AuditEvent, dataplane::Dataplane, exit, siem::Pipeline};

pub fn run(from: RunFrom) -> u8 {
    let settings = match Settings::from_args(from) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let running = match Running::first(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return if settings.config_path.is_some() {
                exit::CONFIG
            } else {
                exit::DATAERR
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return exit::OSERR;
        }
    };
    rt.block_on(async move {
        let mut signals = match Signals::take() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot take signals");
                return exit::OSERR;
            }
        };
        let mut siem = start::siem(&settings, &running);
        let started = match start::enforce(&settings, running, siem.as_mut(), &mut signals).await {
            Ok(s) => s,
            Err(failure) => return failure.report(&settings, siem).await,
        };
        serve::serve(Arc::new(settings), started, siem, &mut signals).await
    })
}

/// The signals the daemon acts on, taken before anything else happens.
pub(super) struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn take() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves when the daemon is asked to stop.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// How long a stopping daemon waits for the SIEM to take what is queued;
/// the rest stays in the spool for the next start.
const SIEM_GRACE: Duration = Duration::from_secs(3);

/// An audit record: to the log and to the SIEM.
fn emit(siem: Option<&mut Pipeline>, a: AuditEvent) {
    a.log();
    if let Some(p) = siem {
        p.audit(&a);
    }
}

/// What [`start::enforce`] hands to [`serve::serve`].
pub(super) struct Started {
    running: Running,
    dp: Dataplane,
    events: crate::dataplane::EventStream,
}
