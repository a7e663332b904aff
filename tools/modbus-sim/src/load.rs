//! `modbus-sim load`: a closed-loop load generator. Each of `concurrency`
//! connections keeps `pipeline` requests in flight (each written on its own,
//! so each is its own TCP segment) until the duration is over or the
//! transaction count is spent.
//!
//! Every request is a transaction: it completes (a well-formed answer to it)
//! or fails, and a failed connection fails every request in flight on it.
//! Connections are opened once and replaced only after a failure, so
//! `connections` above `concurrency` and `resets` tell a test that the path
//! broke connections, which a normalizer in the path must never do to
//! allowed traffic.

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::{
    cli::{Action, LoadArgs, Request},
    wire::{self, Conn, Failure},
};

#[derive(Debug, Default)]
struct Tally {
    /// Latencies of the successful transactions, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    resets: u64,
    timeouts: u64,
    connections: u64,
}

impl Tally {
    fn add(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.resets += other.resets;
        self.timeouts += other.timeouts;
        self.connections += other.connections;
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Successful request/response transactions.
    pub transactions: u64,
    /// Failed transactions (a failed connection attempt fails the
    /// transaction it was opened for).
    pub errors: u64,
    /// Connections that ended in a reset (ECONNRESET, EPIPE, ECONNABORTED),
    /// from the server or from anything in the path.
    pub resets: u64,
    /// Transactions that got no answer within the time limit.
    pub timeouts: u64,
    /// Connections opened, the first of each worker included.
    pub connections: u64,
    pub tps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub duration_ms: f64,
}

/// When to stop sending.
enum Budget {
    Until(Instant),
    /// Transactions started so far, out of a total.
    Count(AtomicU64, u64),
}

impl Budget {
    /// Takes one transaction from the budget; false when it is spent.
    fn take(&self) -> bool {
        match self {
            Self::Until(deadline) => Instant::now() < *deadline,
            Self::Count(started, total) => started
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < *total).then_some(n + 1)
                })
                .is_ok(),
        }
    }
}

/// What every worker sends and to whom.
struct Job {
    connect: SocketAddr,
    unit: u8,
    req: Request,
    pdu: Vec<u8>,
    timeout: Duration,
    pipeline: usize,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let Action::Modbus(req) = args.op.action else {
        anyhow::bail!("load needs a Modbus request OP");
    };
    let job = Arc::new(Job {
        connect: args.connect,
        unit: args.unit,
        pdu: wire::encode(&req),
        req,
        timeout: Duration::from_millis(args.timeout_ms),
        pipeline: usize::from(args.pipeline),
    });
    let start = Instant::now();
    let budget = Arc::new(match (args.transactions, args.duration_ms) {
        (Some(n), _) => Budget::Count(AtomicU64::new(0), n),
        (None, Some(ms)) => Budget::Until(start + Duration::from_millis(ms)),
        (None, None) => anyhow::bail!("load needs --duration-ms or --transactions"),
    });
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (job, budget) = (Arc::clone(&job), Arc::clone(&budget));
        workers.push(tokio::spawn(async move { worker(&job, &budget).await }));
    }
    let mut all = Tally::default();
    for w in workers {
        all.add(w.await.context("load worker")?);
    }
    let summary = summarize(all, start.elapsed());
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

async fn worker(job: &Job, budget: &Budget) -> Tally {
    let mut tally = Tally::default();
    // The connection is opened for a transaction already taken from the
    // budget, so a path that refuses every connection still ends.
    while budget.take() {
        let conn =
            match tokio::time::timeout(job.timeout, Conn::connect(job.connect, job.unit)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tally.errors += 1;
                    tally.resets += u64::from(is_reset(&e));
                    // Do not spin on a refused or reset connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => {
                    tally.errors += 1;
                    tally.timeouts += 1;
                    continue;
                }
            };
        tally.connections += 1;
        if pipelined(conn, job, budget, &mut tally).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            break;
        }
    }
    tally
}

/// Runs transactions on one connection, `job.pipeline` in flight, starting
/// with one already taken from the budget. Ok when the budget is spent and
/// every answer is in; Err when the connection failed (its transactions in
/// flight are counted as failed).
async fn pipelined(
    mut conn: Conn,
    job: &Job,
    budget: &Budget,
    tally: &mut Tally,
) -> Result<(), Broken> {
    // (transaction id, when it was sent), oldest first.
    let mut in_flight: VecDeque<(u16, Instant)> = VecDeque::with_capacity(job.pipeline);
    let mut taken = true;
    loop {
        while in_flight.len() < job.pipeline && (taken || budget.take()) {
            taken = false;
            let Ok((tid, adu)) = conn.request(&job.pdu) else {
                tally.errors += 1;
                continue;
            };
            if let Err(e) = conn.stream().write_all(&adu).await {
                return Err(broken(tally, in_flight.len() + 1, Some(&e)));
            }
            in_flight.push_back((tid, Instant::now()));
        }
        let Some(&(_, oldest)) = in_flight.front() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::from_std(oldest + job.timeout);
        let answer = match tokio::time::timeout_at(deadline, wire::read_adu(conn.stream())).await {
            Err(_) => {
                tally.timeouts += in_flight.len() as u64;
                return Err(broken(tally, in_flight.len(), None));
            }
            Ok(Err(e)) => return Err(broken(tally, in_flight.len(), Some(&e))),
            Ok(Ok(a)) => a,
        };
        let (tid, unit, pdu) = answer;
        let Some(pos) = in_flight.iter().position(|(t, _)| *t == tid) else {
            // An answer to nothing we asked: the stream is out of step.
            return Err(broken(tally, in_flight.len(), None));
        };
        let (_, sent) = in_flight.remove(pos).unwrap_or((tid, oldest));
        match (unit == conn.unit(), wire::decode(&job.req, &pdu)) {
            (true, Ok(_)) => tally
                .latencies
                .push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX)),
            // A Modbus exception fails its transaction only.
            (true, Err(Failure::Exception(_))) => tally.errors += 1,
            _ => return Err(broken(tally, in_flight.len() + 1, None)),
        }
    }
}

/// A connection that failed; its transactions are counted already.
struct Broken;

/// Counts a failed connection with `lost` transactions in flight.
fn broken(tally: &mut Tally, lost: usize, error: Option<&io::Error>) -> Broken {
    tally.errors += lost as u64;
    tally.resets += u64::from(error.is_some_and(is_reset));
    Broken
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
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
        resets: tally.resets,
        timeouts: tally.timeouts,
        connections: tally.connections,
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
            resets: 1,
            timeouts: 0,
            connections: 2,
        };
        let s = summarize(tally, Duration::from_secs(2));
        assert_eq!(
            s,
            Summary {
                transactions: 4,
                errors: 1,
                resets: 1,
                timeouts: 0,
                connections: 2,
                tps: 2.0,
                p50_us: 2.0,
                p99_us: 4.0,
                duration_ms: 2000.0
            }
        );
    }

    #[test]
    fn a_count_budget_is_spent_exactly() {
        let b = Budget::Count(AtomicU64::new(0), 3);
        assert_eq!((0..5).filter(|_| b.take()).count(), 3);
    }

    /// A server that answers only once four requests are in: the load
    /// generator must really keep four in flight, or it stalls and fails.
    #[tokio::test]
    async fn pipelines_and_counts_every_transaction() {
        use tokio::{io::AsyncReadExt, net::TcpListener};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut served = 0u32;
            let mut batch = [0u8; 4 * 12];
            while s.read_exact(&mut batch).await.is_ok() {
                for req in batch.chunks(12) {
                    let mut rsp = req[..4].to_vec();
                    rsp.extend_from_slice(&[0, 7, req[6], 3, 4, 0, 0, 0, 1]);
                    s.write_all(&rsp).await.unwrap();
                    served += 1;
                }
            }
            served
        });
        let job = Job {
            connect: addr,
            unit: 1,
            req: Request::ReadHolding { addr: 0, qty: 2 },
            pdu: wire::encode(&Request::ReadHolding { addr: 0, qty: 2 }),
            timeout: Duration::from_secs(5),
            pipeline: 4,
        };
        let budget = Budget::Count(AtomicU64::new(0), 40);
        let tally = worker(&job, &budget).await;
        assert_eq!(
            (tally.latencies.len(), tally.errors, tally.connections),
            (40, 0, 1)
        );
        assert_eq!(server.await.unwrap(), 40);
    }
}
