//! A SIEM outage under traffic, with a real rsyslog: events are rendered as
//! CEF in RFC 5424, spooled, and forwarded; rsyslog goes away for a while
//! and comes back. Every event must arrive, in order; duplicates only where
//! the event id shows them. With RELP nothing may be lost; with plain TLS
//! the loss must equal what the forwarder's counters report.

mod support;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bessai_siem::{
    forward::{Destination, ForwardStats, Forwarder},
    record::{Event, EventClass, EventId},
    render::{self, Format, Options},
    spool::{Class, Spool, SpoolConfig},
};
use support::{Driver, Listener, Pki, Rsyslog};
use tokio::sync::{Notify, watch};

const EVENTS: u32 = 6000;

fn event(n: u32) -> Event {
    let mut e = Event::new(
        EventId::new(0x6742_0000, n),
        EventClass::DeniedTransaction,
        1_795_418_521_000 + i64::from(n),
        "Atacama BESS 1",
        "bgw-test",
        format!("denied write {n} | with = and \\ inside"),
    );
    e.conduit = Some("ems-to-pcs-1".into());
    e.src = Some("10.10.1.10".parse().unwrap());
    e.dst = Some("10.10.2.11".parse().unwrap());
    e.dst_port = Some(502);
    e.function = Some(6);
    e.address = Some(41);
    e.reason = Some("address-denied".into());
    e
}

/// The event ids in rsyslog's file, in arrival order.
fn ids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split("externalId=").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .map(|id| id as u32)
        .collect()
}

struct Outcome {
    lines: Vec<String>,
    stats: Arc<ForwardStats>,
}

/// Pushes EVENTS events at a steady rate; rsyslog is down from 30% to 60%
/// of the run.
async fn run_outage(
    mut rsyslog: Rsyslog,
    tls: bessai_siem::transport::TlsOptions,
    graceful: bool,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SpoolConfig::new(dir.path());
    config.memory_records = 256;
    let spool = Arc::new(Mutex::new(Spool::open(config).unwrap()));
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(ForwardStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let forwarder = Forwarder {
        destination: Destination {
            target: rsyslog.target(),
            tls,
        },
        spool: spool.clone(),
        wake: wake.clone(),
        stats: stats.clone(),
    };
    let task = tokio::spawn(forwarder.run(stop_rx));
    let options = Options::default();
    for n in 0..EVENTS {
        if n == EVENTS * 3 / 10 {
            if graceful {
                rsyslog.stop();
            } else {
                rsyslog.kill();
            }
        }
        if n == EVENTS * 6 / 10 {
            rsyslog.resume();
        }
        let bytes = render::render(&event(n), Format::Cef, &options);
        spool
            .lock()
            .unwrap()
            .push(Class::Traffic, u64::from(n), &bytes)
            .unwrap();
        wake.notify_one();
        if n % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Until the spool is empty, then the TLS resend window has passed.
    let start = Instant::now();
    while !spool.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "spool never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(bessai_siem::forward::CONFIRM_AFTER).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let lines = rsyslog.lines_after(Duration::from_millis(500));
    Outcome { lines, stats }
}

fn check_order_and_duplicates(got: &[u32]) -> (usize, usize) {
    // First arrivals are in order; a repeat is an earlier id sent again.
    let mut seen = HashSet::new();
    let mut last_new: Option<u32> = None;
    let mut duplicates = 0;
    for id in got {
        if seen.insert(*id) {
            if let Some(prev) = last_new {
                assert!(*id > prev, "out of order: {id} after {prev}");
            }
            last_new = Some(*id);
        } else {
            duplicates += 1;
        }
    }
    let lost = (0..EVENTS).filter(|n| !seen.contains(n)).count();
    (lost, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_outage_loses_nothing() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(Listener::RelpTls {
        require_client_cert: true,
        server: pki.receiver_tls(),
    }) else {
        return;
    };
    let out = run_outage(rsyslog, pki.mutual_client_options(), false).await;
    let got = ids(&out.lines);
    let (lost, duplicates) = check_order_and_duplicates(&got);
    let acked = ForwardStats::get(&out.stats.acknowledged);
    println!(
        "RELP: {} lines, {lost} lost, {duplicates} duplicates, {acked} acknowledged, {} failures",
        got.len(),
        ForwardStats::get(&out.stats.failures)
    );
    assert_eq!(lost, 0, "RELP lost events");
    assert!(
        ForwardStats::get(&out.stats.failures) > 0,
        "the outage was noticed"
    );
    // The CEF fields arrive intact, escaping included.
    let line = out
        .lines
        .iter()
        .find(|l| l.contains("externalId=6742000000000007 "))
        .unwrap();
    assert!(
        line.contains("msg=denied write 7 | with \\= and \\\\ inside"),
        "{line}"
    );
    assert!(line.contains("CEF:0|BESSAI|Edge Gateway|"), "{line}");
    assert!(
        line.contains(" cs1=ems-to-pcs-1 cs1Label=conduit "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_outage_loss_equals_the_counters() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(Listener::Tls {
        driver: Driver::GnuTls,
        only: None,
        require_client_cert: false,
        server: pki.receiver_tls(),
    }) else {
        return;
    };
    let out = run_outage(rsyslog, pki.client_options(), true).await;
    let got = ids(&out.lines);
    let (lost, duplicates) = check_order_and_duplicates(&got);
    let reported = ForwardStats::get(&out.stats.unconfirmed_evicted);
    let resent = ForwardStats::get(&out.stats.resent);
    println!(
        "TLS: {} lines, {lost} lost, {duplicates} duplicates, {resent} resent, {reported} reported at risk",
        got.len()
    );
    assert_eq!(
        lost as u64, reported,
        "loss must equal what the counters report"
    );
    assert!(
        duplicates as u64 <= resent,
        "duplicates come only from resending"
    );
}
