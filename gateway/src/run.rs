//! `bessai-gw run`: load, install, attach, then log events until a signal.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{RunArgs, XdpModeArg},
    dataplane::{Dataplane, render_event},
    exit,
};

pub fn run(args: RunArgs) -> u8 {
    // Validate everything before touching the kernel.
    let policy = match bessai_policy::load(&args.policy) {
        Ok(p) => p,
        Err(errors) => {
            eprintln!("{errors}");
            return exit::DATAERR;
        }
    };
    let compiled = policy.compile();
    let names: Vec<String> = compiled
        .conduits_meta
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let conduit_name = |id: u16| names.get(id as usize).cloned();

    let mut dp = match Dataplane::load() {
        Ok(dp) => dp,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the XDP program");
            // SAFETY: geteuid has no preconditions.
            return if unsafe { libc::geteuid() } != 0 {
                exit::NOPERM
            } else {
                exit::OSERR
            };
        }
    };
    if let Err(e) = dp.install(&compiled) {
        tracing::error!(error = %e, "cannot install the policy");
        return exit::OSERR;
    }
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
    // The event stream registers with the runtime's reactor.
    let _runtime = rt.enter();
    let mut events = match dp.events() {
        Ok(ev) => ev,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the event ring buffer");
            return exit::OSERR;
        }
    };
    for iface in &args.ifaces {
        let native = args.xdp_mode != XdpModeArg::Generic;
        let generic = args.xdp_mode != XdpModeArg::Native;
        match dp.attach(iface, native, generic) {
            Ok(mode) => tracing::info!(iface, mode = mode.as_str(), "attached"),
            Err(e) => {
                tracing::error!(iface, error = %e, "cannot attach");
                return exit::OSERR;
            }
        }
    }
    tracing::info!(
        policy = %args.policy.display(),
        conduits = compiled.conduits_meta.len(),
        rules = compiled.rules.len(),
        "enforcing"
    );

    let stats = args.stats_interval;
    let result = rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(stats.max(1)));
        tick.tick().await;
        loop {
            tokio::select! {
                r = events.next_batch(|e| render_event(e, conduit_name)) => { r?; }
                _ = tick.tick(), if stats > 0 => log_counters(&dp, &names),
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        events.drain(|e| render_event(e, conduit_name));
        Ok::<_, std::io::Error>(())
    });
    log_counters(&dp, &names);
    if let Err(e) = dp.detach_all() {
        tracing::warn!(error = %e, "detach");
    }
    match result {
        Ok(()) => {
            tracing::info!("detached, exiting");
            exit::OK
        }
        Err(e) => {
            tracing::error!(error = %e, "event loop failed");
            exit::OSERR
        }
    }
}

fn log_counters(dp: &Dataplane, names: &[String]) {
    match dp.counters() {
        Ok(c) => {
            let reasons: Vec<String> = c
                .by_reason
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{}={n}", r.as_str()))
                .collect();
            for (id, t) in c.by_conduit.iter().enumerate() {
                let conduit = names.get(id).map_or("-", String::as_str);
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
