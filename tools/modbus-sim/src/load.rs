//! `modbus-sim load`: a closed-loop load generator. Each of `concurrency`
//! connections sends the OP back to back until the duration is over.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::{
    cli::{Action, LoadArgs},
    wire::{self, Conn},
};

#[derive(Debug, Default)]
struct Tally {
    /// Latencies of the successful transactions, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Successful request/response transactions.
    pub transactions: u64,
    /// Failed transactions and failed connection attempts.
    pub errors: u64,
    pub tps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub duration_ms: f64,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let Action::Modbus(req) = args.op.action else {
        anyhow::bail!("load needs a Modbus request OP");
    };
    let pdu = wire::encode(&req);
    let timeout = Duration::from_millis(args.timeout_ms);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(args.duration_ms);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (req, pdu) = (req.clone(), pdu.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn: Option<Conn> = None;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let result = wire::exchange(&mut conn, args.connect, args.unit, &pdu, timeout)
                    .await
                    .and_then(|rsp| wire::decode(&req, &rsp));
                match result {
                    Ok(_) => tally
                        .latencies
                        .push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)),
                    Err(f) => {
                        tally.errors += 1;
                        if f.breaks_connection() {
                            conn = None;
                        }
                        if conn.is_none() {
                            // Do not spin on a refused or reset connection.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.context("load worker")?;
        all.latencies.extend(t.latencies);
        all.errors += t.errors;
    }
    let summary = summarize(all, start.elapsed());
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn summarize(mut tally: Tally, elapsed: Duration) -> Summary {
    tally.latencies.sort_unstable();
    let n = tally.latencies.len();
    let secs = elapsed.as_secs_f64();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let count = u64::try_from(n).unwrap_or(u64::MAX);
    Summary {
        transactions: count,
        errors: tally.errors,
        tps: round(if secs > 0.0 { count as f64 / secs } else { 0.0 }),
        p50_us: round(percentile(&tally.latencies, 50) as f64 / 1000.0),
        p99_us: round(percentile(&tally.latencies, 99) as f64 / 1000.0),
        duration_ms: round(secs * 1000.0),
    }
}

/// Nearest-rank percentile of sorted values; 0 for none.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50), percentile(&v, 99)), (50, 99));
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn summary() {
        let tally = Tally {
            latencies: vec![3000, 1000, 2000, 4000],
            errors: 1,
        };
        let s = summarize(tally, Duration::from_secs(2));
        assert_eq!(
            s,
            Summary {
                transactions: 4,
                errors: 1,
                tps: 2.0,
                p50_us: 2.0,
                p99_us: 4.0,
                duration_ms: 2000.0
            }
        );
    }
}
