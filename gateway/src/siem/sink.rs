//! One SIEM destination as the daemon keeps it: a spool and its forwarder,
//! supervised. Nothing that goes wrong here may stop enforcement:
//!
//! * a spool that cannot be opened (a read-only or full disk, a directory
//!   that is not there yet) is opened again with back-off;
//! * a forwarder that ends (a spool error such as an fsync EIO, a damaged
//!   segment) is restarted on a spool opened afresh, which skips damaged
//!   frames, delivers the records after them, and counts what it removed;
//! * every record that could not be spooled is counted; the fault and the
//!   recovery (with the count) are audit records.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bessai_siem::{
    forward::{Destination, ForwardStats, Forwarder, fit, max_record_len},
    render::Format,
    spool::{Class, Spool, SpoolConfig, SpoolError},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A change the audit trail must hear about.
pub enum Health {
    /// The destination stopped taking records (the first failure of an
    /// episode).
    Fault(String),
    /// It takes records again (or its spool was opened and found damaged);
    /// `lost` could not be spooled meanwhile.
    Recovered { lost: u64, damage: Damage },
}

/// What opening a spool removed as damaged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Bytes removed (skipped frames and torn ends).
    pub discarded_bytes: u64,
    /// Damaged frames skipped with records after them still delivered.
    pub skipped_frames: u64,
    /// Records lost in them, at most.
    pub skipped_records: u64,
}

impl Damage {
    fn any(&self) -> bool {
        *self != Damage::default()
    }
}

/// Records a spool's disk limit dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    pub traffic: u64,
    /// Audit records that found the spool full of older audit records.
    pub audit: u64,
}

struct Live {
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    /// None once handed over for the shutdown.
    task: Option<JoinHandle<()>>,
    /// Why the forwarder ended, when it did with an error.
    ended: Arc<Mutex<Option<String>>>,
}

pub struct Sink {
    pub url: String,
    pub format: Format,
    destination: Destination,
    config: SpoolConfig,
    stats: Arc<ForwardStats>,
    live: Option<Live>,
    retry_at: Instant,
    backoff: Duration,
    /// The fault of the current episode, if any.
    fault: Option<String>,
    /// Records that could not be spooled in the current episode.
    lost: u64,
    /// Disk-limit drops already reported.
    pub drops_reported: Drops,
    /// What the last opening of the spool removed as damaged.
    damage: Damage,
}

impl Sink {
    pub fn new(url: String, format: Format, destination: Destination, config: SpoolConfig) -> Self {
        Self {
            url,
            format,
            destination,
            config,
            stats: Arc::new(ForwardStats::default()),
            live: None,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
            fault: None,
            lost: 0,
            drops_reported: Drops::default(),
            damage: Damage::default(),
        }
    }

    /// Opens the spool and starts the forwarder.
    fn open(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), SpoolError> {
        let spool = Spool::open(self.config.clone())?;
        let stats = spool.stats();
        self.damage = Damage {
            discarded_bytes: stats.discarded_at_open_bytes,
            skipped_frames: stats.skipped_at_open_frames,
            skipped_records: stats.skipped_at_open_records,
        };
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let forwarder = Forwarder {
            destination: self.destination.clone(),
            spool: spool.clone(),
            wake: wake.clone(),
            stats: self.stats.clone(),
        };
        let ended = Arc::new(Mutex::new(None));
        let why = ended.clone();
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = forwarder.run(shutdown).await {
                *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        });
        self.live = Some(Live {
            spool,
            wake,
            task: Some(task),
            ended,
        });
        Ok(())
    }

    /// Spools one record; a failure is counted (and starts an episode).
    pub fn push(&mut self, class: Class, id: u64, bytes: &[u8]) -> Option<Health> {
        let Some(live) = &self.live else {
            self.lost += 1;
            return None;
        };
        let mut spool = live.spool.lock().unwrap_or_else(|p| p.into_inner());
        // A record the destination (or the spool) cannot carry is cut here,
        // once, rather than refused or retried forever.
        let max =
            max_record_len(self.destination.target.scheme).min(spool.config().max_record_bytes());
        let record = fit(bytes, max);
        if record.len() < bytes.len() {
            ForwardStats::add(&self.stats.truncated, 1);
            tracing::warn!(
                target: "bessai::siem",
                destination = self.url,
                bytes = bytes.len(),
                max,
                truncated = ForwardStats::get(&self.stats.truncated),
                "record larger than the destination carries, truncated"
            );
        }
        // An audit record counts as stored once it is on stable storage.
        let pushed = spool.push(class, id, &record).and_then(|_| match class {
            Class::Audit => spool.flush(),
            Class::Traffic => Ok(()),
        });
        drop(spool);
        live.wake.notify_one();
        match pushed {
            Ok(()) => self.healed(),
            Err(e) => {
                self.lost += 1;
                self.fault(format!("cannot spool: {e}"))
            }
        }
    }

    fn fault(&mut self, text: String) -> Option<Health> {
        if self.fault.is_some() {
            return None;
        }
        self.fault = Some(text.clone());
        Some(Health::Fault(text))
    }

    /// Ends a fault episode; damage the spool was opened with is reported
    /// even without one (a crash, or damage found at the first start).
    fn healed(&mut self) -> Option<Health> {
        if self.fault.take().is_none() && !self.damage.any() {
            return None;
        }
        self.backoff = BACKOFF_MIN;
        Some(Health::Recovered {
            lost: std::mem::take(&mut self.lost),
            damage: std::mem::take(&mut self.damage),
        })
    }

    /// Once a second: opens a spool that is not open (when its back-off
    /// has passed), restarts a forwarder that ended, and writes the memory
    /// queue out (the in-memory window is at most this period).
    pub fn supervise(&mut self, shutdown: &watch::Receiver<bool>) -> Option<Health> {
        if let Some(live) = &self.live
            && live.task.as_ref().is_some_and(JoinHandle::is_finished)
            && !*shutdown.borrow()
        {
            let live = self.live.take()?;
            let why = match live.ended.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => format!("forwarder stopped: {e}"),
                None => "forwarder stopped".to_string(),
            };
            // The forwarder's reference is gone: dropping ours releases the
            // directory, so that it can be opened afresh. What cannot be
            // written out first is counted.
            let mut spool = live.spool.lock().unwrap_or_else(|p| p.into_inner());
            if spool.flush().is_err() {
                self.lost += spool.stats().memory_records as u64;
            }
            drop(spool);
            drop(live);
            self.retry_at = Instant::now();
            return self.fault(why);
        }
        if let Some(live) = &self.live {
            let flushed = live.spool.lock().unwrap_or_else(|p| p.into_inner()).flush();
            return match flushed {
                Ok(()) => None,
                Err(e) => self.fault(format!("cannot write the spool: {e}")),
            };
        }
        if Instant::now() < self.retry_at {
            return None;
        }
        match self.open(shutdown) {
            Ok(()) => self.healed(),
            Err(e) => {
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.fault(format!("cannot open the spool: {e}"))
            }
        }
    }

    /// Records the disk limit dropped since the spool was opened.
    pub fn dropped(&self) -> Drops {
        self.live.as_ref().map_or(Drops::default(), |l| {
            let stats = l.spool.lock().unwrap_or_else(|p| p.into_inner()).stats();
            Drops {
                traffic: stats.dropped_traffic,
                audit: stats.dropped_audit,
            }
        })
    }

    /// (url, spooled records, forwarder counters).
    pub fn status(&self) -> (String, u64, Arc<ForwardStats>) {
        let n = self.live.as_ref().map_or(0, |l| {
            l.spool.lock().unwrap_or_else(|p| p.into_inner()).len()
        });
        (self.url.clone(), n, self.stats.clone())
    }

    /// The forwarder's task, to await at shutdown.
    pub fn take_task(&mut self) -> Option<JoinHandle<()>> {
        self.live.as_mut()?.task.take()
    }

    /// Writes what is in memory to disk, for the next start.
    pub fn flush(&self) {
        if let Some(l) = &self.live {
            let _ = l.spool.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
    }
}
