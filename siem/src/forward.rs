//! One forwarder per SIEM destination: takes formatted records from that
//! destination's [`Spool`] in order and delivers them, reconnecting with
//! back-off while the SIEM is unreachable (the spool holds what waits).
//!
//! What "delivered" means depends on the transport:
//!
//! * **RELP** acknowledges every record: a record leaves the spool only
//!   after its `200 OK`. A broken connection redelivers what was not
//!   acknowledged (at least once; the event id marks duplicates).
//! * **TCP and TLS** (RFC 6587 / RFC 5425) acknowledge nothing: a write that
//!   succeeded may still be lost when the link breaks (bytes in flight, or in
//!   the receiver's socket buffer when it stops). Records written are kept
//!   in a resend window for [`CONFIRM_AFTER`] (at most [`WINDOW_MAX`]); when
//!   the connection breaks, the window is sent again on the next connection.
//!   A record is treated as delivered once its connection has stayed up for
//!   [`CONFIRM_AFTER`] after writing it. The loss this cannot see is bounded
//!   by the window and counted: records pushed out of the window by
//!   [`WINDOW_MAX`] before their time are counted in
//!   [`ForwardStats::unconfirmed_evicted`]; a receiver that keeps a
//!   connection open while discarding what it reads is invisible to any
//!   sender without acknowledgements, which is why RELP is the transport of
//!   record.
//! * **UDP** confirms nothing and cannot notice a dead receiver; every
//!   datagram is counted in [`ForwardStats::unconfirmed_sent`].

mod fit;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, watch};

pub use self::fit::{fit, max_record_len};
use crate::{
    spool::{Spool, SpoolError, SpooledRecord},
    transport::{Connection, Scheme, Target, TlsOptions},
};

/// How long a TCP/TLS connection must stay up after a write before the
/// records written are taken as delivered.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(2);
/// Records at most in the TCP/TLS resend window.
pub const WINDOW_MAX: usize = 100_000;
/// Records per send.
const BATCH: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Counters of one destination, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Records handed to the transport.
    pub sent: AtomicU64,
    /// Records the receiver acknowledged (RELP).
    pub acknowledged: AtomicU64,
    /// Records sent again after a broken connection (possible duplicates).
    pub resent: AtomicU64,
    /// Records sent over UDP (never confirmed).
    pub unconfirmed_sent: AtomicU64,
    /// TCP/TLS records that left the resend window early (window full): if
    /// the connection broke right after, these are the ones that may be lost.
    pub unconfirmed_evicted: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// Failed connection attempts and broken connections.
    pub failures: AtomicU64,
    /// Records cut to what the destination can carry ([`fit`]).
    pub truncated: AtomicU64,
}

impl ForwardStats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A destination as the forwarder needs it.
#[derive(Clone, Debug)]
pub struct Destination {
    pub target: Target,
    pub tls: TlsOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
}

/// Delivers the spool's records to one destination until `shutdown` is set
/// and the spool is empty (or the destination is unreachable at shutdown).
pub struct Forwarder {
    pub destination: Destination,
    pub spool: Arc<Mutex<Spool>>,
    /// Signalled by the pusher after each push.
    pub wake: Arc<Notify>,
    pub stats: Arc<ForwardStats>,
}

/// Written but unconfirmed (TCP/TLS).
struct Window {
    records: VecDeque<(Instant, SpooledRecord)>,
}

impl Window {
    fn new() -> Self {
        Self {
            records: VecDeque::new(),
        }
    }

    fn push(&mut self, records: Vec<SpooledRecord>, stats: &ForwardStats) {
        let now = Instant::now();
        for r in records {
            if self.records.len() == WINDOW_MAX {
                self.records.pop_front();
                ForwardStats::add(&stats.unconfirmed_evicted, 1);
            }
            self.records.push_back((now, r));
        }
    }

    /// Forgets what its connection has outlived by [`CONFIRM_AFTER`].
    fn expire(&mut self) {
        while self
            .records
            .front()
            .is_some_and(|(t, _)| t.elapsed() >= CONFIRM_AFTER)
        {
            self.records.pop_front();
        }
    }

    fn take(&mut self) -> Vec<SpooledRecord> {
        self.records.drain(..).map(|(_, r)| r).collect()
    }
}

impl Forwarder {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ForwardError> {
        let mut conn: Option<Connection> = None;
        let mut backoff = BACKOFF_MIN;
        let mut window = Window::new();
        let mut outage_logged = false;
        loop {
            window.expire();
            let stopping = *shutdown.borrow();
            // Records a broken connection may have lost go first.
            let mut resend = Vec::new();
            if conn.is_none() {
                resend = window.take();
            }
            let fresh = if resend.is_empty() {
                self.spool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .peek(BATCH)?
            } else {
                Vec::new()
            };
            if resend.is_empty() && fresh.is_empty() {
                if stopping {
                    break;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            if conn.is_none() {
                match Connection::connect(
                    &self.destination.target,
                    &self.destination.tls,
                    CONNECT_TIMEOUT,
                )
                .await
                {
                    Ok(c) => {
                        ForwardStats::add(&self.stats.connects, 1);
                        if outage_logged {
                            tracing::info!(target: "bessai::siem", destination = %self.destination.target, "SIEM reachable again");
                        }
                        outage_logged = false;
                        backoff = BACKOFF_MIN;
                        conn = Some(c);
                    }
                    Err(e) => {
                        ForwardStats::add(&self.stats.failures, 1);
                        if !outage_logged {
                            tracing::warn!(target: "bessai::siem", destination = %self.destination.target, error = %e, "SIEM unreachable; events are spooled");
                            outage_logged = true;
                        }
                        // Put the unsent resend window back for next time.
                        window.push(resend, &self.stats);
                        if stopping {
                            break;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let (batch, is_resend) = if resend.is_empty() {
                (fresh, false)
            } else {
                (resend, true)
            };
            let max = max_record_len(self.destination.target.scheme);
            let fitted: Vec<std::borrow::Cow<'_, [u8]>> =
                batch.iter().map(|r| fit(&r.bytes, max)).collect();
            let cut = fitted
                .iter()
                .filter(|f| matches!(f, std::borrow::Cow::Owned(_)))
                .count();
            if cut > 0 && !is_resend {
                ForwardStats::add(&self.stats.truncated, cut);
                tracing::warn!(target: "bessai::siem", destination = %self.destination.target, records = cut, "records larger than the destination carries were truncated");
            }
            let msgs: Vec<&[u8]> = fitted.iter().map(|f| f.as_ref()).collect();
            match c.send(&msgs).await {
                Ok(()) => {
                    ForwardStats::add(&self.stats.sent, batch.len());
                    if is_resend {
                        ForwardStats::add(&self.stats.resent, batch.len());
                    }
                    self.delivered(c, batch, is_resend, &mut window)?;
                }
                Err(e) => {
                    ForwardStats::add(&self.stats.failures, 1);
                    tracing::warn!(target: "bessai::siem", destination = %self.destination.target, error = %e, "SIEM connection broken; resending what it may have lost");
                    if is_resend {
                        window.push(batch, &self.stats);
                    }
                    // A fresh batch was not committed: it stays in the spool.
                    conn = None;
                    outage_logged = true;
                }
            }
        }
        if let Some(c) = conn {
            let _ = c.close().await;
        }
        self.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush()?;
        Ok(())
    }

    fn delivered(
        &self,
        conn: &Connection,
        batch: Vec<SpooledRecord>,
        is_resend: bool,
        window: &mut Window,
    ) -> Result<(), ForwardError> {
        let Some(last) = batch.last().map(|r| r.seq) else {
            return Ok(());
        };
        if conn.acknowledges() {
            ForwardStats::add(&self.stats.acknowledged, batch.len());
        } else if self.destination.target.scheme == Scheme::Udp {
            ForwardStats::add(&self.stats.unconfirmed_sent, batch.len());
        } else {
            window.push(batch, &self.stats);
        }
        // Resent records were committed when first written.
        if !is_resend {
            self.spool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .commit_through(last)?;
        }
        Ok(())
    }
}
