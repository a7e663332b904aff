//! Waiting for the gateway's ports. Interfaces enumerate late (a slow
//! driver, a USB NIC, a bridge the network configuration creates after us);
//! that is no configuration mistake, so the daemon waits for them, bounded,
//! and then exits for systemd to retry, with the boundary closed meanwhile.

use std::{path::Path, time::Duration};

use super::{settings::Settings, systemd};

/// How long one start waits for its ports (well inside TimeoutStartSec).
pub const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);

/// Waits until every configured port exists (and, in bridge mode, is a
/// port of the bridge); the ports still missing after [`WAIT`] otherwise.
pub async fn wait(settings: &Settings) -> Result<(), String> {
    let bridge = settings.config.as_ref().and_then(|c| c.bridge.as_deref());
    let started = tokio::time::Instant::now();
    let mut announced = false;
    loop {
        let missing = missing(&settings.ifaces, bridge);
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= WAIT {
            return Err(format!("after {WAIT:?}: {}", missing.join("; ")));
        }
        if !announced {
            let text = missing.join("; ");
            tracing::warn!(
                waiting_for = text,
                "ports missing; the boundary stays closed"
            );
            systemd::status(&format!("waiting for {text}; boundary closed"));
            announced = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What is not there yet, one phrase per port.
fn missing(ifaces: &[String], bridge: Option<&str>) -> Vec<String> {
    let net = Path::new("/sys/class/net");
    ifaces
        .iter()
        .filter_map(|i| {
            let dir = net.join(i);
            if !dir.exists() {
                return Some(format!("no interface {i}"));
            }
            let bridge = bridge?;
            let master = std::fs::read_link(dir.join("master"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
            (master.as_deref() != Some(bridge)).then(|| format!("{i} is not a port of {bridge}"))
        })
        .collect()
}
