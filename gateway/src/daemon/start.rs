//! From a validated configuration to a boundary in force, in the order that
//! keeps it closed at every step (see the module above): closed ruleset,
//! data plane, policy, XDP on every port, and only then the conduits.

use super::{Signals, Started, emit, interfaces, reload::Running, settings::Settings, systemd};
use crate::{
    audit::AuditEvent,
    config::XdpMode,
    dataplane::{Dataplane, DataplaneError},
    exit,
    siem::Pipeline,
};

/// Why the start stopped short of enforcing; the boundary is closed.
pub(super) struct StartFailure {
    stage: &'static str,
    error: String,
    code: u8,
}

impl StartFailure {
    fn new(stage: &'static str, error: impl ToString, code: u8) -> Self {
        Self {
            stage,
            error: error.to_string(),
            code,
        }
    }

    /// Says why in the journal and the SIEM (if it runs), gives the SIEM a
    /// moment to deliver it, and returns the exit code.
    pub(super) async fn report(self, settings: &Settings, mut siem: Option<Pipeline>) -> u8 {
        let closed = settings.firewall.is_some();
        systemd::status(&format!(
            "start failed ({}: {}); {}",
            self.stage,
            self.error,
            if closed {
                "boundary closed"
            } else {
                "no nftables"
            }
        ));
        emit(
            siem.as_mut(),
            AuditEvent::StartFailed {
                stage: self.stage,
                error: self.error,
                boundary_closed: closed,
            },
        );
        if let Some(p) = siem {
            p.shutdown(super::SIEM_GRACE).await;
        }
        self.code
    }

    /// A start cut short by SIGTERM: nothing failed.
    fn stopped() -> Self {
        Self::new("start", "stopped during start", exit::OK)
    }
}

/// Starts the SIEM pipeline. Its failures never stop enforcement: they are
/// logged here and the pipeline retries what it can.
pub(super) fn siem(settings: &Settings, running: &Running) -> Option<Pipeline> {
    let c = settings.config.as_ref()?;
    let s = c.siem.as_ref()?;
    if s.destinations.is_empty() {
        return None;
    }
    Some(Pipeline::start(
        s,
        &c.policy.site,
        &c.device_id,
        &running.sha256,
    ))
}

/// Puts the boundary in force; see the module documentation for the order.
pub(super) async fn enforce(
    settings: &Settings,
    mut running: Running,
    siem: Option<&mut Pipeline>,
    signals: &mut Signals,
) -> Result<Started, StartFailure> {
    if let Some(fw) = &settings.firewall {
        fw.close()
            .map_err(|e| StartFailure::new("nftables closed ruleset", e, exit::OSERR))?;
        for (conduit, zone) in fw.zones_without_ports(&running.compiled) {
            tracing::warn!(
                conduit,
                zone,
                "no [[interface]] carries this zone: the conduit gets no nftables accept"
            );
        }
    }
    let (mut dp, adopted) = load(settings)?;
    // The ports must exist before they can be bound to their zones (ingress
    // binding is written with the policy); nothing is attached yet.
    tokio::select! {
        waited = interfaces::wait(settings) => waited
            .map_err(|e| StartFailure::new("interfaces", e, exit::TEMPFAIL))?,
        () = signals.stop() => return Err(StartFailure::stopped()),
    }
    if let Some(c) = &settings.config {
        let ports: Vec<(String, String)> = c
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.zone.clone()))
            .collect();
        dp.bind_zones(&ports)
            .map_err(|e| StartFailure::new("zones of the ports", e, exit::TEMPFAIL))?;
    }
    running
        .switch_in(&mut dp)
        .map_err(|e| StartFailure::new("policy", e, exit::OSERR))?;
    let events = dp
        .events()
        .map_err(|e| StartFailure::new("event ring buffer", e, exit::OSERR))?;
    for iface in &settings.ifaces {
        let native = settings.xdp_mode != XdpMode::Generic;
        let generic = settings.xdp_mode != XdpMode::Native;
        match dp.attach(iface, native, generic) {
            Ok(mode) => tracing::info!(iface, mode = mode.as_str(), "attached"),
            Err(e) => {
                return Err(StartFailure::new(
                    "XDP attach",
                    format!("{iface}: {e}"),
                    exit::OSERR,
                ));
            }
        }
    }
    // XDP inspects every port: the conduits may open.
    if let Some(fw) = &settings.firewall {
        fw.apply(&running.compiled)
            .map_err(|e| StartFailure::new("nftables conduits", e, exit::OSERR))?;
        running.nft_sha256 = Some(running.sha256.clone());
    }
    emit(
        siem,
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
    Ok(Started {
        running,
        dp,
        events,
    })
}

/// Loads (or, with pins, adopts) the data plane; true when something
/// pinned by an earlier run was reused.
fn load(settings: &Settings) -> Result<(Dataplane, bool), StartFailure> {
    let failed = |e: DataplaneError| {
        // SAFETY: geteuid has no preconditions.
        let code = if unsafe { libc::geteuid() } != 0 {
            exit::NOPERM
        } else {
            exit::OSERR
        };
        StartFailure::new("XDP load", e, code)
    };
    match &settings.pins {
        Some(pins) => {
            let (dp, adopted) = Dataplane::load_pinned(pins.clone()).map_err(failed)?;
            if !adopted.maps_replaced.is_empty() {
                tracing::warn!(
                    maps = adopted.maps_replaced.join(","),
                    "pinned maps with an older layout were replaced"
                );
            }
            Ok((dp, !adopted.maps_reused.is_empty()))
        }
        None => Ok((Dataplane::load().map_err(failed)?, false)),
    }
}
