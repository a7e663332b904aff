//! Conduit and audit events to the SOC: the daemon's end of the SIEM
//! pipeline (crate bessai-siem). Kernel events and audit records become
//! typed [`Event`]s, pass flood aggregation, are rendered once per
//! destination format and pushed into each destination's disk-backed spool;
//! one forwarder task per destination delivers them.

mod sink;

use std::{path::PathBuf, sync::Arc, time::Duration};

use bessai_common::{Action, EVENT_HAS_ADU, EVENT_MONITOR, NO_CONDUIT, Reason};
use bessai_siem::{
    flood::Aggregator,
    forward::{Destination, ForwardStats},
    record::{Event, EventClass, EventId, now_ms},
    render::{self, Format, Options},
    spool::{Class, SpoolConfig},
    transport::{Target, TlsOptions},
};
use tokio::sync::watch;

use self::sink::{Damage, Drops, Health, Sink};

use crate::{audit::AuditEvent, config::Siem as SiemConfig, dataplane::addr};

/// Checks a destination URL the way the transport will read it.
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<Target>()
        .map(drop)
        .map_err(|e| format!("destination {url:?}: {e}"))
}

/// Keys tracked by flood aggregation at most.
const MAX_FLOOD_KEYS: usize = 10_000;
/// Traffic records held in memory per destination before they spill to
/// disk; the memory queue is also written out every second (`tick`).
pub const MEMORY_RECORDS: usize = 1024;
/// The shortest time between two "events dropped" records of one
/// destination, so that a flood cannot fill the spool with them.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The daemon's SIEM pipeline.
pub struct Pipeline {
    site: String,
    device_id: String,
    spool_dir: PathBuf,
    boot_s: u32,
    seq: u32,
    policy_sha256: String,
    aggregator: Aggregator,
    options: Options,
    sinks: Vec<Sink>,
    shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    last_drop_report: Option<tokio::time::Instant>,
}

impl Pipeline {
    /// Opens every destination's spool (resuming what a previous run left)
    /// and starts its forwarder on the current runtime. Never fails: a
    /// destination whose spool cannot be opened is retried (see sink.rs).
    pub fn start(config: &SiemConfig, site: &str, device_id: &str, policy_sha256: &str) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        for (i, d) in config.destinations.iter().enumerate() {
            // Both were checked with the configuration.
            let (Ok(target), Ok(format)) = (d.url.parse::<Target>(), d.format.parse::<Format>())
            else {
                tracing::error!(target: "bessai::siem", destination = d.url, "unusable destination skipped");
                continue;
            };
            let mut sc = SpoolConfig::new(spool_dir(&config.spool_dir, i, &d.url));
            sc.max_bytes = config.spool_max_bytes;
            // The disk limit drops a segment at a time: four segments at
            // least, so that a small limit still works and drops little.
            sc.segment_bytes = sc
                .segment_bytes
                .min(config.spool_max_bytes / 4)
                .max(SpoolConfig::MIN_SEGMENT_BYTES);
            sc.memory_records = MEMORY_RECORDS;
            let destination = Destination {
                target,
                tls: TlsOptions {
                    ca: d.ca.clone(),
                    cert: d.cert.clone(),
                    key: d.key.clone(),
                    server_name: None,
                },
            };
            sinks.push(Sink::new(d.url.clone(), format, destination, sc));
        }
        let mut p = Self {
            site: config.site.clone().unwrap_or_else(|| site.to_string()),
            device_id: device_id.to_string(),
            spool_dir: config.spool_dir.clone(),
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
            shutdown,
            shutdown_rx,
            last_drop_report: None,
        };
        p.supervise();
        p
    }

    /// Ids never repeat: when the counter would wrap (2^32 events, hours
    /// of a flood), a new epoch above every earlier one starts.
    fn next_id(&mut self) -> EventId {
        if self.seq == u32::MAX {
            self.boot_s = next_boot(&self.spool_dir);
            self.seq = 0;
        }
        self.seq += 1;
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
        // The kernel folds floods of no-conduit, malformed, spoofed, no-flow
        // and unknown-flow denials from one source into one event per second.
        e.count = 1 + k.suppressed;
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
            AuditEvent::KernelEventsLost { .. } => (
                EventClass::EventsDropped,
                "kernel events lost (ring buffer full)",
            ),
            AuditEvent::LayersAgree { .. } => (
                EventClass::ReloadSucceeded,
                "nftables caught up with the XDP policy",
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
        let mut changes = Vec::new();
        for s in &mut self.sinks {
            let bytes = render::render(e, s.format, &self.options);
            if let Some(h) = s.push(class, e.id.0, &bytes) {
                changes.push((s.url.clone(), h));
            }
        }
        self.report(changes);
    }

    /// Audit records for destinations that failed or recovered.
    fn report(&mut self, changes: Vec<(String, Health)>) {
        for (url, health) in changes {
            let e = match health {
                Health::Fault(why) => {
                    tracing::error!(target: "bessai::audit", audit = "delivery_fault", destination = url, error = why, "SIEM destination failing; enforcement goes on, records are counted");
                    self.event(
                        EventClass::DeliveryFault,
                        format!("SIEM destination {url} failing: {why}"),
                    )
                    .with_detail("destination", url)
                    .with_detail("error", why)
                }
                Health::Recovered { lost, damage } => {
                    let Damage {
                        discarded_bytes,
                        skipped_frames,
                        skipped_records,
                    } = damage;
                    tracing::warn!(target: "bessai::audit", audit = "delivery_recovered", destination = url, lost, discarded_bytes, skipped_frames, skipped_records, "SIEM destination takes records again");
                    self.event(
                        EventClass::DeliveryFault,
                        format!(
                            "SIEM destination {url} recovered; {lost} records could not be spooled; {skipped_frames} damaged spool frames skipped (at most {skipped_records} records), {discarded_bytes} bytes of damaged spool removed"
                        ),
                    )
                    .with_detail("destination", url)
                    .with_detail("lost", lost.to_string())
                    .with_detail("discarded_bytes", discarded_bytes.to_string())
                    .with_detail("skipped_frames", skipped_frames.to_string())
                    .with_detail("skipped_records", skipped_records.to_string())
                }
            };
            self.spool(&e);
        }
    }

    fn supervise(&mut self) {
        let mut changes = Vec::new();
        for s in &mut self.sinks {
            if let Some(h) = s.supervise(&self.shutdown_rx) {
                changes.push((s.url.clone(), h));
            }
        }
        self.report(changes);
    }

    /// Periodic work (every second): closes aggregation windows, supervises
    /// the destinations, and reports records the spool limit dropped (at
    /// most every [`DROP_REPORT_EVERY`]). Each report also carries the
    /// totals since the spool was opened: a report that is itself dropped
    /// (the spool full of audit records) is made up for by the next one.
    pub fn tick(&mut self) {
        for e in self.aggregator.flush(now_ms()) {
            self.spool(&e);
        }
        self.supervise();
        let now = tokio::time::Instant::now();
        if self
            .last_drop_report
            .is_some_and(|t| now - t < DROP_REPORT_EVERY)
        {
            return;
        }
        let mut drops = Vec::new();
        for s in &mut self.sinks {
            let total = s.dropped();
            // A reopened spool counts from zero again.
            if total.traffic < s.drops_reported.traffic || total.audit < s.drops_reported.audit {
                s.drops_reported = Drops::default();
            }
            let new = Drops {
                traffic: total.traffic - s.drops_reported.traffic,
                audit: total.audit - s.drops_reported.audit,
            };
            if new != Drops::default() {
                drops.push((new, total, s.url.clone()));
                s.drops_reported = total;
            }
        }
        if drops.is_empty() {
            return;
        }
        self.last_drop_report = Some(now);
        for (new, total, url) in drops {
            let e = self
                .event(
                    EventClass::EventsDropped,
                    format!(
                        "{} traffic events and {} audit records dropped: the spool for {url} is full",
                        new.traffic, new.audit
                    ),
                )
                .with_detail("dropped", new.traffic.to_string())
                .with_detail("dropped_audit", new.audit.to_string())
                .with_detail("dropped_total", total.traffic.to_string())
                .with_detail("dropped_audit_total", total.audit.to_string())
                .with_detail("destination", url.clone());
            tracing::error!(target: "bessai::audit", audit = "events_dropped", destination = url, dropped = new.traffic, dropped_audit = new.audit, dropped_total = total.traffic, dropped_audit_total = total.audit, "spool full, records dropped");
            self.spool(&e);
        }
    }

    /// Per destination: (url, spooled records, forwarder counters).
    pub fn status(&self) -> Vec<(String, u64, Arc<ForwardStats>)> {
        self.sinks.iter().map(Sink::status).collect()
    }

    /// Flushes aggregation, lets the forwarders deliver what they can
    /// within `grace`, and writes the rest to the spools for the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        for e in self.aggregator.flush_all() {
            self.spool(&e);
        }
        let _ = self.shutdown.send(true);
        let tasks: Vec<_> = self.sinks.iter_mut().filter_map(Sink::take_task).collect();
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(target: "bessai::siem", "SIEM delivery still pending at exit; it stays spooled");
        }
        for s in &self.sinks {
            s.flush();
        }
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
    if let Err(e) = write_atomic(&path, boot.to_string().as_bytes()) {
        tracing::warn!(target: "bessai::siem", error = %e, path = %path.display(), "cannot record the event id epoch");
    }
    boot
}

/// Replaces `path` so that a crash or power cut leaves the old content or
/// the new, never a torn file: a temporary file, fsync, rename, fsync of
/// the directory.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
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

    #[test]
    fn event_ids_never_repeat_when_the_counter_wraps() {
        let dir = std::env::temp_dir().join(format!("bessai-wrap-{}", std::process::id()));
        let config = crate::config::Siem {
            site: None,
            spool_dir: dir.clone(),
            spool_max_bytes: 1 << 20,
            aggregation_window_s: 0,
            destinations: Vec::new(),
        };
        let mut p = super::Pipeline::start(&config, "site", "gw", "sha");
        p.seq = u32::MAX - 1;
        let ids: Vec<u64> = (0..3).map(|_| p.next_id().0).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:x?}");
    }

    /// A spool left with a damaged frame in the middle of a segment (as a
    /// crash or a bad disk block leaves it): at start the frame is skipped,
    /// the records behind it in the same segment are delivered, and the skip
    /// is an audit record at the destination. Real spool files, a real UDP
    /// receiver.
    #[tokio::test]
    async fn a_damaged_spool_frame_is_skipped_audited_and_the_rest_delivered() {
        use bessai_siem::spool::{Class, FsyncPolicy, Spool, SpoolConfig};

        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let url = format!("udp://{}", receiver.local_addr().unwrap());
        let dir = std::env::temp_dir().join(format!("bessai-damaged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let records: Vec<String> = (1..=5)
            .map(|n| format!("left by the last run {n}"))
            .collect();
        let spool_path = super::spool_dir(&dir, 0, &url);
        {
            let mut spool = Spool::open(SpoolConfig {
                memory_records: 0,
                fsync: FsyncPolicy::Never,
                ..SpoolConfig::new(&spool_path)
            })
            .unwrap();
            for (id, r) in (1..).zip(&records) {
                spool.push(Class::Audit, id, r.as_bytes()).unwrap();
            }
        }
        let segment = std::fs::read_dir(&spool_path)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let third = bytes
            .windows(records[2].len())
            .position(|w| w == records[2].as_bytes())
            .unwrap();
        bytes[third] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();

        let config = crate::config::Siem {
            site: None,
            spool_dir: dir.clone(),
            spool_max_bytes: 1 << 20,
            aggregation_window_s: 0,
            destinations: vec![crate::config::SiemDestination {
                url: url.clone(),
                format: "cef".into(),
                ca: None,
                cert: None,
                key: None,
            }],
        };
        let pipeline = super::Pipeline::start(&config, "site", "gw", "sha");
        let mut received = Vec::new();
        let receiver = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 65536];
            while received.len() < 5 {
                let n = receiver.recv(&mut buf).expect("a datagram within 10 s");
                received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            received
        });
        let received = receiver.await.unwrap();
        pipeline.shutdown(std::time::Duration::from_secs(1)).await;
        std::fs::remove_dir_all(&dir).unwrap();

        for (n, r) in records.iter().enumerate() {
            let arrived = received.iter().any(|line| line.ends_with(r.as_str()));
            assert_eq!(arrived, n != 2, "{r}: {received:#?}");
        }
        let audit = received
            .iter()
            .find(|line| line.contains("damaged spool frames skipped"))
            .unwrap_or_else(|| panic!("an audit record of the skip: {received:#?}"));
        assert!(
            audit.contains("skipped_frames: 1;") && audit.contains("skipped_records: 1"),
            "{audit}"
        );
    }
}
