//! `bessai-gw run`: the appliance daemon.
//!
//! Order of work (nothing is touched before everything is validated):
//! configuration and policy → pinned data plane (adopting what an earlier run
//! left) → policy switched in → nftables base ruleset → XDP on every port →
//! `READY=1` → events, counters, watchdog, SIGHUP reloads → on SIGTERM the
//! boundary stays closed unless the configuration says `on_shutdown = "open"`.

mod reload;
mod settings;
mod systemd;

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use self::reload::Running;
pub use self::settings::Settings;
use crate::{
    audit::AuditEvent,
    cli::RunArgs,
    config::{OnShutdown, XdpMode},
    dataplane::{Dataplane, render_event, split_conduit_id},
    exit,
    siem::{Pipeline, SiemError},
};

pub fn run(args: RunArgs) -> u8 {
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut running = match Running::first(&settings) {
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
    // The SIEM forwarders and the event stream need the runtime.
    let _runtime = rt.enter();
    // The SIEM spools open before the kernel is touched: a problem there is
    // a configuration problem.
    let mut siem = match start_siem(&settings, &running) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot start SIEM forwarding");
            return exit::CONFIG;
        }
    };

    let (mut dp, adopted) = match &settings.pins {
        Some(pins) => match Dataplane::load_pinned(pins.clone()) {
            Ok((dp, adopted)) => {
                if !adopted.maps_replaced.is_empty() {
                    tracing::warn!(
                        maps = adopted.maps_replaced.join(","),
                        "pinned maps with an older layout were replaced"
                    );
                }
                (dp, !adopted.maps_reused.is_empty())
            }
            Err(e) => return load_failed(&e),
        },
        None => match Dataplane::load() {
            Ok(dp) => (dp, false),
            Err(e) => return load_failed(&e),
        },
    };
    if let Some(c) = &settings.config {
        let ports: Vec<(String, String)> = c
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.zone.clone()))
            .collect();
        if let Err(e) = dp.bind_zones(&ports) {
            tracing::error!(error = %e, "cannot bind the ports to their zones");
            return exit::OSERR;
        }
    }
    if let Err(e) = running.switch_in(&mut dp) {
        tracing::error!(error = %e, "cannot install the policy");
        return exit::OSERR;
    }
    if let Some(fw) = &settings.firewall
        && let Err(e) = fw.apply(&running.compiled)
    {
        tracing::error!(error = %e, "cannot install the nftables base ruleset");
        return exit::OSERR;
    }

    let mut events = match dp.events() {
        Ok(ev) => ev,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the event ring buffer");
            return exit::OSERR;
        }
    };
    for iface in &settings.ifaces {
        let native = settings.xdp_mode != XdpMode::Generic;
        let generic = settings.xdp_mode != XdpMode::Native;
        match dp.attach(iface, native, generic) {
            Ok(mode) => tracing::info!(iface, mode = mode.as_str(), "attached"),
            Err(e) => {
                tracing::error!(iface, error = %e, "cannot attach");
                return exit::OSERR;
            }
        }
    }
    emit(
        &mut siem,
        AuditEvent::Start {
            version: env!("CARGO_PKG_VERSION"),
            config: settings.config_display(),
            policy: settings.policy_path.display().to_string(),
            policy_sha256: running.sha256.clone(),
            adopted,
        },
    );
    tracing::info!(
        policy = %settings.policy_path.display(),
        conduits = running.compiled.conduits_meta.len(),
        rules = running.compiled.rules.len(),
        generation = running.generation,
        pinned = settings.pins.is_some(),
        "enforcing"
    );
    systemd::ready(&format!(
        "enforcing {} conduits, policy {}",
        running.compiled.conduits_meta.len(),
        &running.sha256[..12]
    ));

    let stats = settings.stats_interval;
    let watchdog = systemd::watchdog_interval();
    let result = rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(Duration::from_secs(stats.max(1)));
        tick.tick().await;
        let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut siem_tick = tokio::time::interval(Duration::from_secs(1));
        let mut loss_tick = tokio::time::interval(Duration::from_secs(1));
        let mut events_lost = dp.stream_stats().map_or(0, |s| s.ringbuf_full);
        loop {
            tokio::select! {
                r = events.next_batch(|e| traffic_event(e, &running, &mut siem)) => { r?; }
                _ = tick.tick(), if stats > 0 => log_counters(&dp, &running),
                _ = loss_tick.tick() => {
                    if let Some(a) = kernel_losses(&dp, &mut events_lost) {
                        emit(&mut siem, a);
                    }
                }
                _ = siem_tick.tick(), if siem.is_some() => {
                    if let Some(p) = siem.as_mut() {
                        p.tick();
                    }
                }
                _ = dog.tick(), if watchdog.is_some() => {
                    // Only while the data plane answers.
                    if dp.active_generation().is_ok() {
                        systemd::watchdog();
                    }
                }
                _ = sighup.recv() => {
                    systemd::reloading();
                    for a in running.reload(&settings, &mut dp) {
                        emit(&mut siem, a);
                    }
                    systemd::ready("reloaded");
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        systemd::stopping();
        events.drain(|e| traffic_event(e, &running, &mut siem));
        log_counters(&dp, &running);
        let opened = shut_down(&settings, &mut dp);
        emit(&mut siem, AuditEvent::Stop { opened });
        if let Some(p) = siem.take() {
            p.shutdown(SIEM_GRACE).await;
        }
        Ok::<_, std::io::Error>(())
    });
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "event loop failed");
            exit::OSERR
        }
    }
}

/// How long a stopping daemon waits for the SIEM to take what is queued;
/// the rest stays in the spool for the next start.
const SIEM_GRACE: Duration = Duration::from_secs(3);

fn start_siem(settings: &Settings, running: &Running) -> Result<Option<Pipeline>, SiemError> {
    let Some(c) = &settings.config else {
        return Ok(None);
    };
    let Some(s) = &c.siem else { return Ok(None) };
    if s.destinations.is_empty() {
        return Ok(None);
    }
    Pipeline::start(s, &c.policy.site, &c.device_id, &running.sha256).map(Some)
}

/// An audit record: to the log and to the SIEM.
fn emit(siem: &mut Option<Pipeline>, a: AuditEvent) {
    a.log();
    if let Some(p) = siem.as_mut() {
        p.audit(&a);
    }
}

/// A traffic event from the kernel: to the log and to the SIEM.
fn traffic_event(e: &bessai_common::Event, running: &Running, siem: &mut Option<Pipeline>) {
    render_event(e, |id| running.conduit_name(id));
    if let Some(p) = siem.as_mut() {
        p.traffic(e, running.conduit_name(e.conduit));
    }
}

/// Leaves the boundary as the configuration says. Returns true when
/// enforcement was removed.
fn shut_down(settings: &Settings, dp: &mut Dataplane) -> bool {
    match (settings.on_shutdown, &settings.pins) {
        (OnShutdown::Keep, Some(_)) => {
            tracing::info!("exiting; XDP and nftables stay in force (pinned)");
            false
        }
        (OnShutdown::Keep, None) | (OnShutdown::Open, _) => {
            if let Err(e) = dp.unpin_all() {
                tracing::warn!(error = %e, "detach");
            }
            if settings.on_shutdown == OnShutdown::Open
                && let Some(fw) = &settings.firewall
                && let Err(e) = fw.remove()
            {
                tracing::warn!(error = %e, "removing the nftables table");
            }
            tracing::info!("detached, exiting");
            true
        }
    }
}

fn load_failed(e: &crate::dataplane::DataplaneError) -> u8 {
    tracing::error!(error = %e, "cannot load the XDP program");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        exit::NOPERM
    } else {
        exit::OSERR
    }
}

/// An audit record when the kernel lost events since the last look.
fn kernel_losses(dp: &Dataplane, seen: &mut u64) -> Option<AuditEvent> {
    let total = dp.stream_stats().ok()?.ringbuf_full;
    if total <= *seen {
        return None;
    }
    let lost = total - *seen;
    *seen = total;
    Some(AuditEvent::KernelEventsLost { lost, total })
}

fn log_counters(dp: &Dataplane, running: &Running) {
    match dp.counters() {
        Ok(c) => {
            let reasons: Vec<String> = c
                .by_reason
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{}={n}", r.as_str()))
                .collect();
            for (id, t) in c.by_conduit.iter().enumerate() {
                let conduit = running
                    .compiled
                    .conduits_meta
                    .get(id)
                    .map_or("-", |m| m.name.as_str());
                tracing::info!(
                    conduit,
                    allowed_adus = t.allowed_adus,
                    denied = t.denied,
                    monitored = t.monitored,
                    resets = t.resets,
                    "conduit counters"
                );
            }
            tracing::info!(reasons = reasons.join(" "), "packet counters");
            let s = c.stream;
            tracing::info!(
                established = s.established,
                half_open = s.half_open,
                out_of_order = s.out_of_order,
                duplicates = s.duplicates,
                unverifiable = s.unverifiable,
                window_full = s.window_full,
                flow_table_full = s.flow_table_full,
                events_lost = s.ringbuf_full,
                "normalizer counters"
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot read counters"),
    }
}

impl Running {
    /// The policy name of a kernel conduit id, in whichever generation
    /// judged it.
    fn conduit_name(&self, kernel_id: u16) -> Option<String> {
        let (generation, id) = split_conduit_id(kernel_id);
        self.names
            .get(generation as usize)
            .and_then(|names| names.get(id as usize))
            .cloned()
    }
}

/// `bessai-gw nft`: print (`--dry-run`), check, or apply the base ruleset.
pub fn nft_command(path: &std::path::Path, dry_run: bool, check: bool) -> u8 {
    let c = match crate::config::load(path, !dry_run) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return exit::CONFIG;
        }
    };
    let Some(fw) = settings::FirewallSettings::from_config(&c) else {
        eprintln!(
            "{}: nftables is disabled ([nftables] enabled = false)",
            path.display()
        );
        return exit::CONFIG;
    };
    let compiled = c.policy.compile();
    let ruleset = fw.ruleset(&compiled);
    if dry_run {
        println!("{}", crate::firewall::to_json(&ruleset));
    }
    if check && let Err(e) = crate::firewall::Nft::default().check(&ruleset) {
        eprintln!("{e}");
        return exit::DATAERR;
    }
    if !dry_run && let Err(e) = crate::firewall::Nft::default().apply(&ruleset) {
        eprintln!("{e}");
        return exit::OSERR;
    }
    exit::OK
}
