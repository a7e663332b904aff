//! The SIEM spool through its public API, on real files in a temporary
//! directory.

use std::fs;
use std::path::{Path, PathBuf};

use bessai_siem::spool::{Class, FsyncPolicy, Spool, SpoolConfig, SpoolError, SpooledRecord};

/// Bytes a record occupies on disk besides its payload (the documented
/// frame: len, crc, class, seq, id).
const FRAME_HEADER: u64 = 4 + 4 + 1 + 8 + 8;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        memory_records: 100,
        segment_bytes: 64 * 1024,
        fsync: FsyncPolicy::Never,
    }
}

fn open(config: &SpoolConfig) -> Spool {
    Spool::open(config.clone()).expect("open spool")
}

/// The payload pushed for id `id`: distinct per record, varying in length.
fn payload(id: u64) -> Vec<u8> {
    let mut bytes = format!("<134>1 event {id} ").into_bytes();
    bytes.resize(bytes.len() + (id % 50) as usize, b'x');
    bytes
}

/// Pushes ids `ids` with their [`payload`]; every `audit_every`-th is audit.
fn push_range(spool: &mut Spool, ids: std::ops::RangeInclusive<u64>, audit_every: u64) {
    for id in ids {
        let class = if id % audit_every == 0 {
            Class::Audit
        } else {
            Class::Traffic
        };
        spool.push(class, id, &payload(id)).expect("push");
    }
}

/// Delivers everything: peek in batches, commit each batch.
fn drain(spool: &mut Spool, batch: usize) -> Vec<SpooledRecord> {
    let mut delivered = Vec::new();
    loop {
        let records = spool.peek(batch).expect("peek");
        let Some(last) = records.last() else { break };
        let removed = spool.commit_through(last.seq).expect("commit");
        assert_eq!(
            removed,
            records.len() as u64,
            "commit removes exactly what was peeked"
        );
        delivered.extend(records);
    }
    assert!(spool.is_empty());
    delivered
}

fn ids(records: &[SpooledRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read spool dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// What a crash of the process would leave: the files as they are now,
/// opened while the spool that wrote them is still running.
fn crash_copy(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy dir");
    for entry in fs::read_dir(from).expect("read spool dir") {
        let entry = entry.expect("dir entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy spool file");
    }
}

#[test]
fn records_come_out_in_push_order_across_the_spill_to_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 10,
        segment_bytes: 4096,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    let mut delivered = Vec::new();
    let mut disk_was_used = false;

    for round in 0..10u64 {
        push_range(&mut spool, round * 100 + 1..=round * 100 + 100, 7);
        disk_was_used |= spool.disk_bytes() > 0;
        // A forwarder that is slower than the gateway: 33 per round.
        let records = spool.peek(33).expect("peek");
        if let Some(last) = records.last() {
            spool.commit_through(last.seq).expect("commit");
        }
        delivered.extend(records);
    }
    delivered.extend(drain(&mut spool, 64));

    assert!(disk_was_used, "the backlog must have spilled to disk");
    assert_eq!(ids(&delivered), (1..=1000).collect::<Vec<_>>());
    for record in &delivered {
        assert_eq!(record.bytes, payload(record.id));
        let expected = if record.id % 7 == 0 {
            Class::Audit
        } else {
            Class::Traffic
        };
        assert_eq!(record.class, expected, "id {}", record.id);
    }
    assert!(delivered.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn a_restart_resumes_after_the_last_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 1000,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=10_000, 10);
    let mut committed = 0;
    while committed < 4000 {
        let records = spool.peek(4000 - committed).expect("peek");
        let last = records.last().expect("records waiting");
        spool.commit_through(last.seq).expect("commit");
        committed += records.len();
    }

    drop(spool);
    let mut spool = open(&config);

    assert_eq!(spool.len(), 6000);
    assert_eq!(ids(&spool.peek(1).expect("peek")), [4001]);
    let rest = drain(&mut spool, 500);
    assert_eq!(ids(&rest), (4001..=10_000).collect::<Vec<_>>());
    assert!(rest.iter().all(|r| r.bytes == payload(r.id)));
}

#[test]
fn sequence_numbers_keep_growing_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let mut spool = open(&config);
    push_range(&mut spool, 1..=5, 100);
    let first = drain(&mut spool, 10);
    drop(spool);

    let mut spool = open(&config);
    let outcome = spool.push(Class::Traffic, 6, &payload(6)).expect("push");

    assert!(outcome.seq > first.last().expect("delivered").seq);
}

#[test]
fn a_torn_last_record_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 0,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=100, 10);
    drop(spool);
    // The process died in the middle of writing record 100.
    let last_segment = segment_files(dir.path()).pop().expect("a segment");
    let len = fs::metadata(&last_segment).expect("stat").len();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&last_segment)
        .expect("open segment");
    file.set_len(len - 10).expect("truncate");

    let mut spool = open(&config);

    let stats = spool.stats();
    assert_eq!(
        stats.discarded_at_open_bytes,
        FRAME_HEADER + payload(100).len() as u64 - 10
    );
    assert_eq!(ids(&drain(&mut spool, 1000)), (1..=99).collect::<Vec<_>>());
    // The spool goes on after the cut.
    spool.push(Class::Audit, 101, b"restarted").expect("push");
    assert_eq!(ids(&spool.peek(10).expect("peek")), [101]);
}

#[test]
fn a_damaged_record_is_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 0,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=20, 1000);
    drop(spool);
    // Flip one payload byte of record 11 (ids 1..=20 have known sizes).
    let offset: u64 = (1..=10)
        .map(|id| FRAME_HEADER + payload(id).len() as u64)
        .sum::<u64>()
        + FRAME_HEADER
        + 3;
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read segment");
    bytes[offset as usize] ^= 0x20;
    fs::write(&segment, &bytes).expect("write segment");

    let mut spool = open(&config);

    // Only the damaged record is lost, and the loss is reported.
    assert_eq!(spool.stats().skipped_at_open_records, 1);
    let delivered = drain(&mut spool, 100);
    assert_eq!(
        ids(&delivered),
        (1..=20).filter(|&id| id != 11).collect::<Vec<_>>()
    );
    assert!(delivered.iter().all(|r| r.bytes == payload(r.id)));
}

#[test]
fn after_a_crash_committed_records_stay_delivered_and_audit_records_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 50,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=200, 1000);
    let first = spool.peek(120).expect("peek");
    spool
        .commit_through(first.last().expect("records").seq)
        .expect("commit");
    // Traffic 201..=210 waits in memory; audit 211 pushes it to disk ahead
    // of itself. Traffic 212 stays in memory only.
    push_range(&mut spool, 201..=210, 1000);
    spool
        .push(Class::Audit, 211, &payload(211))
        .expect("push audit");
    spool
        .push(Class::Traffic, 212, &payload(212))
        .expect("push traffic");

    crash_copy(dir.path(), crashed.path());
    let mut survivor = open(&SpoolConfig {
        dir: crashed.path().to_path_buf(),
        ..config.clone()
    });

    let delivered = drain(&mut survivor, 1000);
    assert_eq!(ids(&delivered), (121..=211).collect::<Vec<_>>());
    assert_eq!(delivered.last().map(|r| r.class), Some(Class::Audit));
    drop(spool);
}

#[test]
fn the_disk_limit_drops_the_oldest_traffic_and_no_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        max_bytes: 64 * 1024,
        segment_bytes: 4096,
        memory_records: 16,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    let total = 3000;
    let mut dropped_reported = 0;

    for id in 1..=total {
        let class = if id % 10 == 0 {
            Class::Audit
        } else {
            Class::Traffic
        };
        let outcome = spool.push(class, id, &payload(id)).expect("push");
        dropped_reported += outcome.dropped_traffic;
        assert!(
            spool.disk_bytes() <= config.max_bytes,
            "limit exceeded after id {id}"
        );
    }
    let stats = spool.stats();
    let delivered = drain(&mut spool, 256);

    let audit: Vec<u64> = delivered
        .iter()
        .filter(|r| r.class == Class::Audit)
        .map(|r| r.id)
        .collect();
    assert_eq!(
        audit,
        (10..=total).step_by(10).collect::<Vec<_>>(),
        "every audit record, in order"
    );
    let pushed_traffic: Vec<u64> = (1..=total).filter(|id| id % 10 != 0).collect();
    let kept_traffic: Vec<u64> = delivered
        .iter()
        .filter(|r| r.class == Class::Traffic)
        .map(|r| r.id)
        .collect();
    let missing = pushed_traffic.len() - kept_traffic.len();
    assert!(missing > 0, "the test must hit the limit");
    assert_eq!(
        kept_traffic,
        pushed_traffic[missing..],
        "the oldest traffic goes first"
    );
    assert_eq!(stats.dropped_traffic, missing as u64);
    assert_eq!(dropped_reported, missing as u64);
    let missing_bytes: u64 = pushed_traffic[..missing]
        .iter()
        .map(|&id| payload(id).len() as u64)
        .sum();
    assert_eq!(stats.dropped_traffic_bytes, missing_bytes);
    assert!(
        delivered.windows(2).all(|w| w[0].id < w[1].id),
        "survivors in push order"
    );
}

#[test]
fn audit_records_alone_never_push_the_spool_past_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        max_bytes: 8192,
        segment_bytes: 4096,
        memory_records: 4,
        ..config(dir.path())
    };
    let mut spool = open(&config);

    // Audit records only, far more than fit: the oldest are kept (never
    // dropped to make room), the ones that no longer fit are dropped on
    // arrival and counted, and the disk stays under the limit.
    let mut dropped_on_push = 0;
    for id in 1..=200 {
        let outcome = spool.push(Class::Audit, id, &payload(id)).expect("push");
        dropped_on_push += outcome.dropped_audit;
        assert!(spool.disk_bytes() <= config.max_bytes, "after push {id}");
    }
    let full = spool.stats();
    // Traffic finds nothing but audit records to reclaim: it is dropped on
    // arrival at the disk (after passing through the memory queue).
    push_range(&mut spool, 201..=210, 1000);
    spool.flush().expect("flush");
    let delivered = ids(&drain(&mut spool, 64));

    assert!(!full.over_limit);
    assert_eq!(full.dropped_traffic, 0);
    assert!(full.dropped_audit > 0);
    assert_eq!(full.dropped_audit, dropped_on_push);
    assert_eq!(spool.stats().dropped_traffic, 10);
    // Each record that still fits goes in (payload sizes vary), so the
    // survivors are the oldest ones plus a few small late ones, in order.
    assert_eq!(delivered.len() as u64, 200 - full.dropped_audit);
    assert!(delivered.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(delivered[..100], (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_drop_between_peek_and_commit_never_commits_undelivered_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        max_bytes: 16 * 1024,
        segment_bytes: 4096,
        memory_records: 0,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=20, 1000);
    let in_flight = spool.peek(20).expect("peek");
    // Meanwhile the backlog grows past the limit: the oldest traffic,
    // including the records in flight, is dropped.
    push_range(&mut spool, 21..=400, 1000);
    assert!(spool.stats().dropped_traffic >= 20);
    let waiting = spool.len();

    let removed = spool
        .commit_through(in_flight.last().expect("records").seq)
        .expect("commit");

    assert_eq!(removed, 0);
    assert_eq!(spool.len(), waiting);
    let next = spool.peek(1).expect("peek");
    assert!(next[0].id > 20);
}

#[test]
fn memory_stays_flat_however_large_the_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 1000,
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    let record = [0x42u8; 16];

    for id in 0..1_000_000 {
        spool.push(Class::Traffic, id, &record).expect("push");
        if id % 100_000 == 0 {
            let stats = spool.stats();
            assert!(stats.memory_records <= 1000);
            assert!(stats.memory_bytes <= 16 * 1000);
        }
    }
    let stats = spool.stats();
    let batch = spool.peek(500).expect("peek");

    assert_eq!(stats.records, 1_000_000);
    assert!(stats.memory_records <= 1000, "{stats:?}");
    assert_eq!(stats.peeked_records_held, 0);
    // One bookkeeping entry per segment file, nothing per record.
    let expected_disk_bytes = (stats.records - stats.memory_records as u64) * (FRAME_HEADER + 16);
    assert_eq!(stats.disk_bytes, expected_disk_bytes);
    assert!(
        stats.segments as u64 <= stats.disk_bytes / config.segment_bytes + 1,
        "{stats:?}"
    );
    assert_eq!(spool.stats().peeked_records_held, 500);
    assert_eq!(ids(&batch), (0..500).collect::<Vec<_>>());
}

#[test]
fn a_second_spool_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let first = open(&config);

    let second = Spool::open(config.clone());

    assert!(
        matches!(second, Err(SpoolError::Locked { .. })),
        "{:?}",
        second.err()
    );
    drop(first);
    assert!(Spool::open(config).is_ok(), "the lock goes with the spool");
}

#[test]
fn commit_is_refused_beyond_what_peek_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = open(&config(dir.path()));
    push_range(&mut spool, 1..=10, 100);
    let first = spool.peek(3).expect("peek");

    let error = spool
        .commit_through(first[2].seq + 1)
        .expect_err("commit past the peek");

    assert!(
        matches!(error, SpoolError::CommitBeyondPeek { .. }),
        "{error}"
    );
    assert_eq!(spool.len(), 10);
}

#[test]
fn a_record_larger_than_a_segment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        segment_bytes: 4096,
        ..config(dir.path())
    };
    let mut spool = open(&config);

    let error = spool
        .push(Class::Audit, 1, &[0u8; 4096])
        .expect_err("too large");

    assert!(
        matches!(error, SpoolError::RecordTooLarge { len: 4096, max } if max == 4096 - FRAME_HEADER as usize)
    );
    assert!(spool.is_empty());
}

#[test]
fn nonsensical_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = config(dir.path());
    let cases = [
        (
            SpoolConfig {
                segment_bytes: 100,
                ..base.clone()
            },
            "segment_bytes",
        ),
        (
            SpoolConfig {
                max_bytes: 1000,
                segment_bytes: 4096,
                ..base.clone()
            },
            "max_bytes",
        ),
        (
            SpoolConfig {
                fsync: FsyncPolicy::EveryN(0),
                ..base.clone()
            },
            "fsync",
        ),
    ];

    for (config, field) in cases {
        let error = Spool::open(config).err();
        assert!(
            matches!(error, Some(SpoolError::InvalidConfig { field: f, .. }) if f == field),
            "{error:?}"
        );
    }
}

#[test]
fn every_fsync_policy_resumes_after_a_restart() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::EveryN(7),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SpoolConfig {
            fsync,
            memory_records: 5,
            segment_bytes: 4096,
            ..config(dir.path())
        };
        let mut spool = open(&config);
        push_range(&mut spool, 1..=300, 4);
        let first = spool.peek(100).expect("peek");
        spool
            .commit_through(first.last().expect("records").seq)
            .expect("commit");
        drop(spool);

        let mut spool = open(&config);

        assert_eq!(
            ids(&drain(&mut spool, 64)),
            (101..=300).collect::<Vec<_>>(),
            "{fsync:?}"
        );
    }
}

#[test]
fn leftovers_of_an_interrupted_compaction_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 0,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=10, 3);
    drop(spool);
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let mut leftover = segment.into_os_string();
    leftover.push(".tmp");
    fs::write(&leftover, b"half a compaction").expect("write leftover");

    let mut spool = open(&config);

    assert!(!Path::new(&leftover).exists());
    assert_eq!(ids(&drain(&mut spool, 100)), (1..=10).collect::<Vec<_>>());
}

#[test]
fn damage_while_running_stops_delivery_at_the_damage_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 0,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=5, 1000);
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read segment");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&segment, &bytes).expect("write segment");

    let good = spool.peek(10).expect("the records in front of the damage");
    spool
        .commit_through(good.last().expect("records").seq)
        .expect("commit");
    let result = spool.peek(10);
    drop(spool);
    let mut reopened = open(&config);

    assert_eq!(ids(&good), [1, 2, 3, 4]);
    assert!(
        matches!(result, Err(SpoolError::Corrupt { .. })),
        "{result:?}"
    );
    assert!(reopened.stats().discarded_at_open_bytes > 0);
    assert!(reopened.is_empty());
    assert!(reopened.peek(10).expect("peek").is_empty());
}

#[test]
fn a_spool_can_move_to_the_forwarder_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = open(&config(dir.path()));
    spool
        .push(Class::Audit, 1, b"configuration changed")
        .expect("push");

    let forwarder = std::thread::spawn(move || drain(&mut spool, 10));
    let delivered = forwarder.join().expect("forwarder thread");

    assert_eq!(ids(&delivered), [1]);
}

/// Offset and length of the frame of each record pushed with
/// [`push_range`] into one fresh segment, in push order.
fn frame_spans(ids: std::ops::RangeInclusive<u64>) -> Vec<(u64, u64)> {
    let mut at = 0;
    ids.map(|id| {
        let len = FRAME_HEADER + payload(id).len() as u64;
        let span = (at, len);
        at += len;
        span
    })
    .collect()
}

#[test]
fn a_damaged_frame_inside_a_segment_is_skipped_and_counted_and_the_rest_delivered() {
    // Damage in the payload leaves the length intact; damage in the length
    // field leaves no way to find the next frame but searching for it.
    for (what, byte_in_frame) in [("payload", FRAME_HEADER + 3), ("length field", 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SpoolConfig {
            memory_records: 0,
            ..config(dir.path())
        };
        let mut spool = open(&config);
        push_range(&mut spool, 1..=9, 4);
        let segments = segment_files(dir.path());
        assert_eq!(segments.len(), 1, "one segment holds all nine");
        let (at, len) = frame_spans(1..=9)[4];
        let mut bytes = fs::read(&segments[0]).expect("read segment");
        bytes[(at + byte_in_frame) as usize] ^= 0x40;
        fs::write(&segments[0], &bytes).expect("write segment");

        let before = spool.peek(100).expect("the records in front of the damage");
        spool
            .commit_through(before.last().expect("records").seq)
            .expect("commit");
        let at_damage = spool.peek(100);
        drop(spool);
        let mut reopened = open(&config);
        let stats = reopened.stats();
        let after = drain(&mut reopened, 3);

        assert_eq!(ids(&before), [1, 2, 3, 4], "{what}");
        assert!(
            matches!(at_damage, Err(SpoolError::Corrupt { .. })),
            "{what}: {at_damage:?}"
        );
        assert_eq!(ids(&after), [6, 7, 8, 9], "{what}");
        assert_eq!(stats.skipped_at_open_frames, 1, "{what}");
        assert_eq!(stats.skipped_at_open_records, 1, "{what}");
        assert_eq!(stats.discarded_at_open_bytes, len, "{what}");
        // The repair is on disk: a second opening finds nothing to skip.
        drop(reopened);
        let again = open(&config).stats();
        assert_eq!(
            (again.skipped_at_open_frames, again.discarded_at_open_bytes),
            (0, 0),
            "{what}"
        );
    }
}

#[test]
fn damage_among_delivered_records_costs_nothing_and_a_torn_tail_is_still_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        memory_records: 0,
        ..config(dir.path())
    };
    let mut spool = open(&config);
    push_range(&mut spool, 1..=9, 1000);
    let delivered = spool.peek(3).expect("peek");
    spool.commit_through(delivered[2].seq).expect("commit");
    drop(spool);
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let spans = frame_spans(1..=9);
    let mut bytes = fs::read(&segment).expect("read segment");
    // Record 2 (delivered) damaged, record 9 torn half-way.
    bytes[(spans[1].0 + FRAME_HEADER) as usize] ^= 0x01;
    bytes.truncate((spans[8].0 + spans[8].1 / 2) as usize);
    fs::write(&segment, &bytes).expect("write segment");

    let mut reopened = open(&config);
    let stats = reopened.stats();

    assert_eq!(ids(&drain(&mut reopened, 100)), [4, 5, 6, 7, 8]);
    assert_eq!(stats.skipped_at_open_frames, 0);
    assert_eq!(stats.skipped_at_open_records, 0);
    // Record 3, delivered already, goes with the damage in front of it:
    // reading resumes at the first record not yet delivered.
    assert_eq!(
        stats.discarded_at_open_bytes,
        spans[1].1 + spans[2].1 + spans[8].1 / 2
    );
}
