//! Throughput of the spool with 300-byte records and the default fsync
//! policy. A measurement, not a gate (the machine is shared); run with
//! `cargo test --release -p bessai-siem --test spool_throughput -- --ignored --nocapture`.

use std::time::Instant;

use bessai_siem::spool::{Class, FsyncPolicy, Spool, SpoolConfig};

const RECORD_BYTES: usize = 300;
const RECORDS: u64 = 300_000;
const BATCH: usize = 1000;

fn spool(dir: &std::path::Path) -> Spool {
    Spool::open(SpoolConfig {
        memory_records: 1000,
        fsync: FsyncPolicy::EveryN(1000),
        ..SpoolConfig::new(dir)
    })
    .expect("open spool")
}

fn rate(records: u64, started: Instant) -> f64 {
    records as f64 / started.elapsed().as_secs_f64()
}

/// Peeks and commits everything; returns how many records came out.
fn drain(spool: &mut Spool) -> u64 {
    let mut delivered = 0;
    loop {
        let batch = spool.peek(BATCH).expect("peek");
        let Some(last) = batch.last() else {
            return delivered;
        };
        spool.commit_through(last.seq).expect("commit");
        delivered += batch.len() as u64;
    }
}

#[test]
#[ignore = "measurement; run in release"]
fn throughput_of_300_byte_records() {
    let record = [b'x'; RECORD_BYTES];

    // SIEM down: everything goes to disk, then the backlog is delivered.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut backlog = spool(dir.path());
    let started = Instant::now();
    for id in 0..RECORDS {
        backlog.push(Class::Traffic, id, &record).expect("push");
    }
    let push_rate = rate(RECORDS, started);
    let disk_bytes = backlog.disk_bytes();
    let started = Instant::now();
    let delivered = drain(&mut backlog);
    let drain_rate = rate(delivered, started);
    drop(backlog);

    // SIEM up: the forwarder takes batches as they come.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut live = spool(dir.path());
    let started = Instant::now();
    let mut live_delivered = 0;
    for id in 0..RECORDS {
        live.push(Class::Traffic, id, &record).expect("push");
        if id % BATCH as u64 == BATCH as u64 - 1 {
            live_delivered += drain(&mut live);
        }
    }
    let live_rate = rate(RECORDS, started);

    println!(
        "backlog: push {push_rate:.0} records/s ({disk_bytes} bytes spilled), peek+commit {drain_rate:.0} records/s"
    );
    println!("keeping up: push+peek+commit {live_rate:.0} records/s");
    assert_eq!(delivered, RECORDS);
    assert_eq!(live_delivered, RECORDS);
}
