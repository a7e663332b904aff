//! The spool against a plain in-memory queue: with no limit reached, any
//! sequence of push / peek / commit / restart must give the same records.

use std::collections::VecDeque;

use bessai_siem::spool::{Class, FsyncPolicy, Spool, SpoolConfig, SpooledRecord};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push {
        audit: bool,
        len: usize,
    },
    Peek {
        max: usize,
    },
    /// Commit through the `pick`-th record (modulo its length) of the last
    /// peek.
    Commit {
        pick: usize,
    },
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0usize..700).prop_map(|(audit, len)| Op::Push { audit, len }),
        3 => (0usize..12).prop_map(|max| Op::Peek { max }),
        3 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// What the caller sees of a record.
type Seen = (u64, u64, Class, Vec<u8>);

fn seen(record: &SpooledRecord) -> Seen {
    (record.seq, record.id, record.class, record.bytes.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_spool_behaves_like_a_fifo(memory_records in 0usize..6, ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 30,
            memory_records,
            // The smallest segment: a few records each, so that rotation,
            // removal of consumed segments and reads across them happen.
            segment_bytes: SpoolConfig::MIN_SEGMENT_BYTES,
            fsync: FsyncPolicy::Never,
        };
        let mut spool = Spool::open(config.clone()).expect("open");
        let mut model: VecDeque<Seen> = VecDeque::new();
        let mut last_peek: Vec<Seen> = Vec::new();
        let mut next_id = 0u64;

        for op in ops {
            match op {
                Op::Push { audit, len } => {
                    next_id += 1;
                    let class = if audit { Class::Audit } else { Class::Traffic };
                    let bytes: Vec<u8> = (0..len).map(|i| (next_id as usize + i) as u8).collect();
                    let outcome = spool.push(class, next_id, &bytes).expect("push");
                    prop_assert_eq!(outcome.dropped_traffic, 0);
                    if let Some(newest) = model.back() {
                        prop_assert!(outcome.seq > newest.0);
                    }
                    model.push_back((outcome.seq, next_id, class, bytes));
                }
                Op::Peek { max } => {
                    last_peek = spool.peek(max).expect("peek").iter().map(seen).collect();
                    let expected: Vec<Seen> = model.iter().take(max).cloned().collect();
                    prop_assert_eq!(&last_peek, &expected);
                }
                Op::Commit { pick } => {
                    if last_peek.is_empty() {
                        continue;
                    }
                    let through = last_peek[pick % last_peek.len()].0;
                    let removed = spool.commit_through(through).expect("commit");
                    let before = model.len();
                    model.retain(|record| record.0 > through);
                    prop_assert_eq!(removed, (before - model.len()) as u64);
                }
                Op::Flush => spool.flush().expect("flush"),
                Op::Reopen => {
                    drop(spool);
                    spool = Spool::open(config.clone()).expect("reopen");
                    // Commits must follow a peek of the new instance.
                    last_peek.clear();
                }
            }
            prop_assert_eq!(spool.len(), model.len() as u64);
        }
        let rest: Vec<Seen> = spool.peek(usize::MAX).expect("peek").iter().map(seen).collect();
        prop_assert_eq!(rest, Vec::from(model));
    }
}

/// Peeks up to `max` records, "delivers" them and commits them.
fn deliver(
    spool: &mut Spool,
    max: usize,
    delivered: &mut Vec<SpooledRecord>,
) -> Result<(), TestCaseError> {
    let batch = spool.peek(max).expect("peek");
    if let Some(last) = batch.last() {
        let removed = spool.commit_through(last.seq).expect("commit");
        prop_assert_eq!(removed, batch.len() as u64);
    }
    delivered.extend(batch);
    Ok(())
}

#[derive(Debug, Clone)]
enum LimitOp {
    Push { audit: bool, len: usize },
    Deliver { max: usize },
    Reopen,
}

fn limit_op() -> impl Strategy<Value = LimitOp> {
    prop_oneof![
        12 => (prop::bool::weighted(0.2), 0usize..400).prop_map(|(audit, len)| LimitOp::Push { audit, len }),
        2 => (1usize..40).prop_map(|max| LimitOp::Deliver { max }),
        1 => Just(LimitOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// With the disk limit hit: the disk never holds more than the limit,
    /// what comes out is in push order, and the drop counters account for
    /// every record that does not; audit records are lost only when older
    /// audit records alone fill the limit.
    #[test]
    fn under_the_disk_limit_drops_are_bounded_and_counted(
        memory_records in 0usize..20,
        ops in proptest::collection::vec(limit_op(), 1..400),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 3 * SpoolConfig::MIN_SEGMENT_BYTES,
            memory_records,
            segment_bytes: SpoolConfig::MIN_SEGMENT_BYTES,
            fsync: FsyncPolicy::Never,
        };
        let mut spool = Spool::open(config.clone()).expect("open");
        let mut pushed: Vec<(u64, Class)> = Vec::new();
        let mut delivered: Vec<SpooledRecord> = Vec::new();
        let mut dropped = 0;
        let mut dropped_audit = 0;

        for op in ops {
            match op {
                LimitOp::Push { audit, len } => {
                    let id = pushed.len() as u64 + 1;
                    let class = if audit { Class::Audit } else { Class::Traffic };
                    let outcome = spool.push(class, id, &vec![id as u8; len]).expect("push");
                    prop_assert!(spool.disk_bytes() <= config.max_bytes, "{} bytes", spool.disk_bytes());
                    if outcome.dropped_audit > 0 {
                        // Only when the disk holds nothing a drop could free.
                        prop_assert!(spool.disk_bytes() + 25 + len as u64 > config.max_bytes);
                    }
                    pushed.push((id, class));
                }
                LimitOp::Deliver { max } => deliver(&mut spool, max, &mut delivered)?,
                LimitOp::Reopen => {
                    // Flush first so that the drops the spill causes are
                    // still counted by this instance.
                    spool.flush().expect("flush");
                    dropped += spool.stats().dropped_traffic;
                    dropped_audit += spool.stats().dropped_audit;
                    drop(spool);
                    spool = Spool::open(config.clone()).expect("reopen");
                }
            }
        }
        spool.flush().expect("flush");
        while !spool.is_empty() {
            deliver(&mut spool, 64, &mut delivered)?;
        }
        dropped += spool.stats().dropped_traffic;
        dropped_audit += spool.stats().dropped_audit;

        let delivered_ids: Vec<u64> = delivered.iter().map(|r| r.id).collect();
        prop_assert!(delivered_ids.windows(2).all(|w| w[0] < w[1]), "order: {:?}", delivered_ids);
        let audit_pushed: Vec<u64> = pushed.iter().filter(|p| p.1 == Class::Audit).map(|p| p.0).collect();
        let audit_delivered: Vec<u64> = delivered.iter().filter(|r| r.class == Class::Audit).map(|r| r.id).collect();
        prop_assert!(audit_delivered.iter().all(|id| audit_pushed.contains(id)));
        prop_assert_eq!(dropped_audit, (audit_pushed.len() - audit_delivered.len()) as u64);
        let traffic_pushed = pushed.iter().filter(|p| p.1 == Class::Traffic).count() as u64;
        let traffic_delivered = delivered.iter().filter(|r| r.class == Class::Traffic).count() as u64;
        prop_assert_eq!(dropped, traffic_pushed - traffic_delivered);
        prop_assert!(delivered.iter().all(|r| r.bytes.iter().all(|&b| b == r.id as u8)));
    }
}
