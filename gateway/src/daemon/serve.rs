//! The enforcing daemon's loop: kernel events to the log and the SIEM,
//! counters, watchdog, reloads; and what a stop leaves behind.

use std::time::Duration;

use super::{SIEM_GRACE, Signals, Started, emit, reload::Running, settings::Settings, systemd};
use crate::{
    audit::AuditEvent,
    dataplane::{Dataplane, render_event},
    exit,
    siem::Pipeline,
};

/// How often nftables is retried after a reload left it behind XDP.
const CATCH_UP: Duration = Duration::from_secs(5);

pub(super) async fn serve(
    settings: &Settings,
    started: Started,
    mut siem: Option<Pipeline>,
    signals: &mut Signals,
) -> u8 {
    let Started {
        mut running,
        mut dp,
        mut events,
    } = started;
    let stats = settings.stats_interval;
    let watchdog = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(Duration::from_secs(stats.max(1)));
    tick.tick().await;
    let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut siem_tick = tokio::time::interval(Duration::from_secs(1));
    let mut catch_up = tokio::time::interval(CATCH_UP);
    let result = loop {
        tokio::select! {
            r = events.next_batch(|e| traffic_event(e, &running, siem.as_mut())) => {
                if let Err(e) = r {
                    break Err(e);
                }
            }
            _ = tick.tick(), if stats > 0 => log_counters(&dp, &running),
            _ = catch_up.tick() => {
                if let Some(a) = running.catch_up(settings) {
                    emit(siem.as_mut(), a);
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
            _ = signals.hangup.recv() => {
                systemd::reloading();
                for a in running.reload(settings, &mut dp) {
                    emit(siem.as_mut(), a);
                }
                systemd::ready("reloaded");
            }
            _ = signals.interrupt.recv() => break Ok(()),
            _ = signals.terminate.recv() => break Ok(()),
        }
    };
    systemd::stopping();
    events.drain(|e| traffic_event(e, &running, siem.as_mut()));
    log_counters(&dp, &running);
    let opened = shut_down(settings, &mut dp);
    emit(siem.as_mut(), AuditEvent::Stop { opened });
    if let Some(p) = siem.take() {
        p.shutdown(SIEM_GRACE).await;
    }
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "event loop failed; XDP and nftables stay in force");
            exit::OSERR
        }
    }
}

/// A traffic event from the kernel: to the log and to the SIEM.
fn traffic_event(e: &bessai_common::Event, running: &Running, siem: Option<&mut Pipeline>) {
    render_event(e, |id| running.conduit_name(id));
    if let Some(p) = siem {
        p.traffic(e, running.conduit_name(e.conduit));
    }
}

/// Leaves enforcement in force when it is pinned; returns true when it
/// was removed (development runs without pins, whose links die with the
/// process anyway).
fn shut_down(settings: &Settings, dp: &mut Dataplane) -> bool {
    if settings.pins.is_some() {
        tracing::info!("exiting; XDP and nftables stay in force (pinned)");
        return false;
    }
    if let Err(e) = dp.detach_all() {
        tracing::warn!(error = %e, "detach");
    }
    tracing::info!("detached, exiting");
    true
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
        }
        Err(e) => tracing::warn!(error = %e, "cannot read counters"),
    }
}
