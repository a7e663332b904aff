//! Conduit and audit events to the SOC: the daemon's end of the SIEM
//! pipeline (crate bessai-siem). Kernel events and audit records become
//! typed [`Event`]s, pass flood aggregation, are rendered once per
//! destination format and pushed into each destination's disk-backed spool;
//! one forwarder task per destination delivers them.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bessai_common::{Action, EVENT_HAS_ADU, EVENT_MONITOR, NO_CONDUIT, Reason};
use bessai_siem::{
    flood::Aggregator,
    forward::{Destination, ForwardStats, Forwarder},
    record::{Event, EventClass, EventId, now_ms},
    render::{self, Format, Options},
    spool::{Class, Spool, SpoolConfig, SpoolError},
    transport::{Target, TlsOptions},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{audit::AuditEvent, config::Siem as SiemConfig, dataplane::addr};

/// Checks a destination URL the way the transport will read it.
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<Target>()
        .map(drop)
        .map_err(|e| format!("destination {url:?}: {e}"))
}

/// Keys tracked by flood aggregation at most.
const MAX_FLOOD_KEYS: usize = 10_000;
/// Traffic records held in memory per destination before they spill to disk.
const MEMORY_RECORDS: usize = 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn event_id_epochs_never_repeat() {
        let dir = std::env::temp_dir().join(format!("bessai-boot-{}", std::process::id()));
        let a = super::next_boot(&dir);
        let b = super::next_boot(&dir);
        let c = super::next_boot(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error("destination {url}: {reason}")]
    Destination { url: String, reason: String },
    #[error("spool for {url}: {source}")]
    Spool {
        url: String,
        #[source]
        source: SpoolError,
    },
}

struct Sink {
    url: String,
    format: Format,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stats: Arc<ForwardStats>,
    /// Spool drops already reported by an audit event.
    drops_reported: u64,
}

/// The daemon's SIEM pipeline.
pub struct Pipeline {
    site: String,
    device_id: String,
    boot_s: u32,
    seq: u32,
    policy_sha256: String,
    aggregator: Aggregator,
    options: Options,
    sinks: Vec<Sink>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Pipeline {
    /// Opens every destination's spool (resuming what a previous run left)
    /// and starts its forwarder on the current runtime.
    pub fn start(
        config: &SiemConfig,
        site: &str,
        device_id: &str,
        policy_sha256: &str,
    ) -> Result<Self, SiemError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        for (i, d) in config.destinations.iter().enumerate() {
            let err = |reason: String| SiemError::Destination {
                url: d.url.clone(),
                reason,
            };
            let target: Target = d.url.parse().map_err(|e| err(format!("{e}")))?;
            let format: Format = d.format.parse().map_err(err)?;
            let dir = spool_dir(&config.spool_dir, i, &d.url);
            let mut sc = SpoolConfig::new(dir);
            sc.max_bytes = config.spool_max_bytes;
            sc.memory_records = MEMORY_RECORDS;
            let spool = Spool::open(sc).map_err(|source| SiemError::Spool {
                url: d.url.clone(),
                source,
            })?;
            let spool = Arc::new(Mutex::new(spool));
            let wake = Arc::new(Notify::new());
            let stats = Arc::new(ForwardStats::default());
            let forwarder = Forwarder {
                destination: Destination {
                    target,
                    tls: TlsOptions {
                        ca: d.ca.clone(),
                        cert: d.cert.clone(),
                        key: d.key.clone(),
                        server_name: None,
                    },
                },
                spool: spool.clone(),
                wake: wake.clone(),
                stats: stats.clone(),
            };
            let rx = shutdown_rx.clone();
            let url = d.url.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = forwarder.run(rx).await {
                    tracing::error!(target: "bessai::siem", destination = url, error = %e, "forwarder stopped");
                }
            }));
            sinks.push(Sink {
                url: d.url.clone(),
                format,
                spool,
                wake,
                stats,
                drops_reported: 0,
            });
        }
        Ok(Self {
            site: config.site.clone().unwrap_or_else(|| site.to_string()),
            device_id: device_id.to_string(),
            boot_s: next_boot(&config.spool_dir),
            seq: 0,
            policy_sha256: policy_sha256.to_string(),
            aggregator: Aggregator::new(
                i64::from(config.aggregation_window_s) * 1000,
                MAX_FLOOD_KEYS,
            ),
            options: Options {
                app_name: "bessai-gw".into(),
                ..Options::default()
            },
            sinks,
            tasks,
            shutdown,
        })
    }

    fn next_id(&mut self) -> EventId {
        self.seq = self.seq.wrapping_add(1);
        EventId::new(self.boot_s, self.seq)
    }

    fn event(&mut self, class: EventClass, message: impl Into<String>) -> Event {
        let id = self.next_id();
        let mut e = Event::new(id, class, now_ms(), &self.site, &self.device_id, message);
        e.policy_sha256 = Some(self.policy_sha256.clone());
        e
    }

    /// A kernel event; `conduit` is its policy name.
    pub fn traffic(&mut self, k: &bessai_common::Event, conduit: Option<String>) {
        let reason = Reason::from_u8(k.reason);
        let monitor = k.flags & EVENT_MONITOR != 0;
        let class = if monitor {
            EventClass::MonitoredTransaction
        } else {
            match reason {
                Some(r) if is_malformation(r) => EventClass::MalformedFrame,
                _ => EventClass::DeniedTransaction,
            }
        };
        let message = if monitor {
            "would deny (monitor mode)"
        } else {
            "denied"
        };
        let mut e = self.event(class, message);
        e.time_ms = wall_clock_ms(k.ts_ns);
        e.first_ms = e.time_ms;
        e.last_ms = e.time_ms;
        e.conduit = if k.conduit == NO_CONDUIT {
            None
        } else {
            conduit
        };
        e.src = Some(addr(&k.src));
        e.dst = Some(addr(&k.dst));
        e.src_port = Some(k.src_port);
        e.dst_port = Some(k.dst_port);
        if k.flags & EVENT_HAS_ADU != 0 {
            e.unit_id = Some(k.unit);
            e.function = Some(k.function);
            e.address = Some(k.address);
            e.quantity = Some(k.quantity);
        }
        e.reason = reason.map(|r| r.as_str().to_string());
        e.action = Some(if monitor {
            "monitor".to_string()
        } else {
            Action::from_u8(k.action)
                .map_or("drop", Action::as_str)
                .to_string()
        });
        self.submit(e);
    }

    /// An audit record.
    pub fn audit(&mut self, a: &AuditEvent) {
        let (class, message) = match a {
            AuditEvent::Start { .. } => (EventClass::Start, "gateway started"),
            AuditEvent::Stop { .. } => (EventClass::Stop, "gateway stopped"),
            AuditEvent::StartFailed { .. } => (
                EventClass::StartFailed,
                "gateway not enforcing; boundary closed",
            ),
            AuditEvent::ReloadSucceeded { .. } => (EventClass::ReloadSucceeded, "policy reloaded"),
            AuditEvent::ReloadUnchanged { .. } => (EventClass::ReloadSucceeded, "policy unchanged"),
            AuditEvent::ReloadFailed { .. } => (
                EventClass::ReloadFailed,
                "reload rejected, the running policy stays in force",
            ),
            AuditEvent::ConfigChanged { .. } => {
                (EventClass::ConfigChanged, "configuration changed")
            }
        };
        if let AuditEvent::ReloadSucceeded { new_sha256, .. } = a {
            self.policy_sha256 = new_sha256.clone();
        }
        let mut e = self.event(class, message);
        for (k, v) in a.fields() {
            e.detail.push((k.to_string(), v));
        }
        self.submit(e);
    }

    /// The `siem test` marker.
    pub fn test_event(site: &str, device_id: &str) -> Event {
        let now = now_ms();
        Event::new(
            EventId::new((now / 1000) as u32, 0),
            EventClass::Test,
            now,
            site,
            device_id,
            "BESSAI SIEM PIPELINE TEST: not an incident; sent by bessai-gw siem test",
        )
    }

    fn submit(&mut self, e: Event) {
        let now = now_ms();
        for out in self.aggregator.push(e, now) {
            self.spool(&out);
        }
    }

    fn spool(&mut self, e: &Event) {
        let class = if e.is_audit() {
            Class::Audit
        } else {
            Class::Traffic
        };
        for s in &mut self.sinks {
            let bytes = render::render(e, s.format, &self.options);
            let pushed = s
                .spool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(class, e.id.0, &bytes);
            if let Err(err) = pushed {
                tracing::error!(target: "bessai::siem", destination = s.url, error = %err, "cannot spool an event");
            }
            s.wake.notify_one();
        }
    }

    /// Periodic work: closes aggregation windows, and reports traffic
    /// events the spool limit dropped with an audit event.
    pub fn tick(&mut self) {
        for e in self.aggregator.flush(now_ms()) {
            self.spool(&e);
        }
        let mut drops = Vec::new();
        for s in &mut self.sinks {
            let stats = s.spool.lock().unwrap_or_else(|p| p.into_inner()).stats();
            if stats.dropped_traffic > s.drops_reported {
                drops.push((stats.dropped_traffic - s.drops_reported, s.url.clone()));
                s.drops_reported = stats.dropped_traffic;
            }
        }
        for (n, url) in drops {
            let e = self
                .event(
                    EventClass::EventsDropped,
                    format!("{n} traffic events dropped: the spool for {url} is full"),
                )
                .with_detail("dropped", n.to_string())
                .with_detail("destination", url);
            tracing::error!(target: "bessai::audit", audit = "events_dropped", dropped = n, "spool full, oldest traffic events dropped");
            self.spool(&e);
        }
    }

    /// Per destination: (url, spooled records, forwarder counters).
    pub fn status(&self) -> Vec<(String, u64, Arc<ForwardStats>)> {
        self.sinks
            .iter()
            .map(|s| {
                let n = s.spool.lock().unwrap_or_else(|p| p.into_inner()).len();
                (s.url.clone(), n, s.stats.clone())
            })
            .collect()
    }

    /// Flushes aggregation, lets the forwarders deliver what they can
    /// within `grace`, and writes the rest to the spools for the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        for e in self.aggregator.flush_all() {
            self.spool(&e);
        }
        let _ = self.shutdown.send(true);
        let all = futures_join(std::mem::take(&mut self.tasks));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(target: "bessai::siem", "SIEM delivery still pending at exit; it stays spooled");
        }
        for s in &self.sinks {
            let _ = s.spool.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// The high half of this run's event ids: the start time in seconds, but
/// always above the last run's (kept in the spool directory), so that two
/// starts in one second or a clock stepping back never reuse ids that a
/// SIEM would then drop as duplicates.
fn next_boot(spool_dir: &std::path::Path) -> u32 {
    let path = spool_dir.join("boot-id");
    let last: Option<u32> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let now = (now_ms() / 1000) as u32;
    let boot = match last {
        Some(l) if l >= now => l.wrapping_add(1),
        _ => now,
    };
    let _ = std::fs::create_dir_all(spool_dir);
    if let Err(e) = std::fs::write(&path, boot.to_string()) {
        tracing::warn!(target: "bessai::siem", error = %e, path = %path.display(), "cannot record the event id epoch");
    }
    boot
}

/// One spool directory per destination, named so an operator can tell them
/// apart.
fn spool_dir(base: &std::path::Path, index: usize, url: &str) -> PathBuf {
    let safe: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    base.join(format!("{index}-{safe}"))
}

/// Reasons that describe a malformed or evasive frame rather than a
/// transaction the policy forbids.
fn is_malformation(r: Reason) -> bool {
    matches!(
        r,
        Reason::IpFragment
            | Reason::Ipv6Extension
            | Reason::Malformed
            | Reason::Oversize
            | Reason::Encapsulation
            | Reason::TcpUrgent
            | Reason::UnknownFlow
            | Reason::TcpOverlap
            | Reason::OutOfOrder
            | Reason::SynData
            | Reason::MbapProtocol
            | Reason::MbapLength
            | Reason::AduSplit
            | Reason::TooManyAdus
            | Reason::QuantityInvalid
            | Reason::PduMalformed
    )
}

/// The kernel stamps events with `bpf_ktime_get_ns` (CLOCK_MONOTONIC);
/// the SOC wants UTC.
fn wall_clock_ms(ktime_ns: u64) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono_now = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
    let age_ms = (mono_now - ktime_ns as i64).max(0) / 1_000_000;
    now_ms() - age_ms
}

/// `bessai-gw siem test`.
pub struct TestArgs {
    pub target: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub format: String,
    pub timeout: Duration,
}

/// Sends one test event and reports each step; 0 delivered, 69 not, 64 on
/// a bad argument.
pub fn test_command(a: &TestArgs) -> u8 {
    use crate::exit;
    let target: Target = match a.target.parse() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("--target {:?}: {e}", a.target);
            return exit::USAGE;
        }
    };
    let format: Format = match a.format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("--format: {e}");
            return exit::USAGE;
        }
    };
    let tls = TlsOptions {
        ca: a.ca.clone(),
        cert: a.cert.clone(),
        key: a.key.clone(),
        server_name: a.server_name.clone(),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "bessai-gw".into());
    let event = Pipeline::test_event("siem test", &host);
    let message = render::render(&event, format, &Options::default());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return exit::OSERR;
        }
    };
    println!("sending test event {} to {target} ({:?})", event.id, format);
    let result = rt.block_on(bessai_siem::transport::diagnose_with_progress(
        &target,
        &tls,
        a.timeout,
        &message,
        |stage| {
            println!(
                "  ok  {:<14} {:>8.1} ms  {}",
                stage.stage.label(),
                stage.elapsed.as_secs_f64() * 1000.0,
                stage.detail
            );
        },
    ));
    match result {
        Ok(report) => {
            println!("{report}");
            exit::OK
        }
        Err(e) => {
            println!("  FAILED: {e}");
            exit::UNAVAILABLE
        }
    }
}
