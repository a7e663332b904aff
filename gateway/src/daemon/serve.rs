//! The enforcing daemon's loop: kernel events to the log and the SIEM,
//! counters, watchdog, reloads; and what a stop leaves behind.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use super::{
    SIEM_GRACE, Signals, Started, emit,
    reload::{ConduitNames, Running},
    settings::Settings,
    systemd,
};
use crate::{
    audit::AuditEvent,
    dataplane::{Dataplane, render_event},
    exit,
    siem::Pipeline,
};

/// How often nftables is retried after a reload left it behind XDP.
const CATCH_UP: Duration = Duration::from_secs(5);

/// What a reload works on; the loop lends it to the reload thread.
struct Policy {
    running: Running,
    dp: Dataplane,
}

type ReloadTask = JoinHandle<(Policy, Vec<AuditEvent>)>;

/// The loop. Reloads (file reads, map writes, `nft`) run on a thread of
/// their own: kernel events, SIEM forwarding and the watchdog go on while
/// they do. Signals that arrive meanwhile wait for the reload to end (a
/// second SIGHUP then reloads again).
pub(super) async fn serve(
    settings: Arc<Settings>,
    started: Started,
    mut siem: Option<Pipeline>,
    signals: &mut Signals,
) -> u8 {
    let Started {
        running,
        dp,
        mut events,
    } = started;
    let names = running.names.clone();
    let mut policy = Some(Policy { running, dp });
    let mut reload: Option<ReloadTask> = None;
    let stats = settings.stats_interval;
    let watchdog = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(Duration::from_secs(stats.max(1)));
    tick.tick().await;
    let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut siem_tick = tokio::time::interval(Duration::from_secs(1));
    let mut catch_up = tokio::time::interval(CATCH_UP);
    let mut loss_tick = tokio::time::interval(Duration::from_secs(1));
    let mut events_lost = policy
        .as_ref()
        .and_then(|p| p.dp.stream_stats().ok())
        .map_or(0, |s| s.ringbuf_full);
    let result = loop {
        tokio::select! {
            r = events.next_batch(|e| traffic_event(e, &names, siem.as_mut())) => {
                if let Err(e) = r {
                    break Err(e);
                }
            }
            _ = tick.tick(), if stats > 0 && policy.is_some() => {
                if let Some(p) = &policy {
                    log_counters(&p.dp, &p.running);
                }
            }
            _ = loss_tick.tick(), if policy.is_some() => {
                if let Some(a) = policy.as_ref().and_then(|p| kernel_losses(&p.dp, &mut events_lost)) {
                    emit(siem.as_mut(), a);
                }
            }
            _ = catch_up.tick(), if policy.is_some() => {
                if let Some(a) = policy.as_mut().and_then(|p| p.running.catch_up(&settings)) {
                    emit(siem.as_mut(), a);
                }
            }
            _ = siem_tick.tick(), if siem.is_some() => {
                if let Some(p) = siem.as_mut() {
                    p.tick();
                }
            }
            _ = dog.tick(), if watchdog.is_some() => {
                // While the data plane answers (a reload in progress owns
                // it; the reload itself is bounded by nft's time limit).
                if policy.as_ref().is_none_or(|p| p.dp.active_generation().is_ok()) {
                    systemd::watchdog();
                }
            }
            _ = signals.hangup.recv(), if policy.is_some() => {
                if let Some(mut p) = policy.take() {
                    systemd::reloading();
                    let settings = settings.clone();
                    reload = Some(tokio::task::spawn_blocking(move || {
                        let audit = p.running.reload(&settings, &mut p.dp);
                        (p, audit)
                    }));
                }
            }
            done = finished(&mut reload), if reload.is_some() => {
                reload = None;
                match done {
                    Ok((p, audit)) => {
                        policy = Some(p);
                        for a in audit {
                            emit(siem.as_mut(), a);
                        }
                        systemd::ready("reloaded");
                    }
                    Err(e) => break Err(std::io::Error::other(format!("reload thread: {e}"))),
                }
            }
            _ = signals.interrupt.recv() => break Ok(()),
            _ = signals.terminate.recv() => break Ok(()),
        }
    };
    systemd::stopping();
    // A reload in progress ends first (nft's time limit bounds it).
    if let Some(t) = reload.take()
        && let Ok((p, audit)) = t.await
    {
        policy = Some(p);
        for a in audit {
            emit(siem.as_mut(), a);
        }
    }
    events.drain(|e| traffic_event(e, &names, siem.as_mut()));
    let opened = match policy.as_mut() {
        Some(p) => {
            log_counters(&p.dp, &p.running);
            shut_down(&settings, &mut p.dp)
        }
        None => false,
    };
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

/// The end of the reload in progress; never, without one.
async fn finished(
    reload: &mut Option<ReloadTask>,
) -> Result<(Policy, Vec<AuditEvent>), tokio::task::JoinError> {
    match reload {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// A traffic event from the kernel: to the log and to the SIEM.
fn traffic_event(e: &bessai_common::Event, names: &ConduitNames, siem: Option<&mut Pipeline>) {
    render_event(e, |id| names.of(id));
    if let Some(p) = siem {
        p.traffic(e, names.of(e.conduit));
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
