//! The engine of `bessai-gw siem test`: walk through every step to the SIEM
//! and say how far it got, so an installer can tell a DNS typo from a
//! firewall, a wrong CA, a refused client certificate or a silent receiver.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Connection;
use super::error::TransportError;
use super::tls::{TlsOptions, TlsSessionInfo};
use super::url::Target;

/// One step on the way to the SIEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Resolve,
    Connect,
    TlsHandshake,
    RelpOpen,
    /// The test message was written (TCP, TLS) or sent (UDP).
    Send,
    /// The SIEM acknowledged the test message (RELP).
    Acknowledged,
    Close,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::TlsHandshake => "TLS handshake",
            Stage::RelpOpen => "RELP open",
            Stage::Send => "send",
            Stage::Acknowledged => "acknowledged",
            Stage::Close => "close",
        }
    }
}

/// A step that succeeded, how long it took, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    pub stage: Stage,
    pub elapsed: Duration,
    pub detail: String,
}

impl StageReport {
    pub(crate) fn new(stage: Stage, started: Instant, detail: String) -> StageReport {
        StageReport {
            stage,
            elapsed: started.elapsed(),
            detail,
        }
    }
}

impl fmt::Display for StageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<14} {:>8.1?}  {}",
            self.stage.label(),
            self.elapsed,
            self.detail
        )
    }
}

/// How much the successful test proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The SIEM acknowledged the message (RELP).
    Acknowledged,
    /// The message left this host; only the SIEM itself can confirm it arrived.
    Unconfirmed,
}

/// The outcome of a successful test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub target: Target,
    pub peer: SocketAddr,
    pub tls: Option<TlsSessionInfo>,
    pub relp_software: Option<String>,
    /// Every step, in order.
    pub stages: Vec<StageReport>,
    pub delivery: Delivery,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({})", self.target, self.peer)?;
        for stage in &self.stages {
            writeln!(f, "  {stage}")?;
        }
        match self.delivery {
            Delivery::Acknowledged => write!(f, "the SIEM acknowledged the test message"),
            Delivery::Unconfirmed => write!(
                f,
                "the test message was sent; {} gives no acknowledgement: check that the SIEM shows it",
                self.target.scheme
            ),
        }
    }
}

/// Resolves, connects, handshakes, sends `test_message` (and for RELP waits
/// for its acknowledgement), then closes. Fails with the error of the first
/// step that failed.
pub async fn diagnose(
    target: &Target,
    tls: &TlsOptions,
    timeout: Duration,
    test_message: &[u8],
) -> Result<Report, TransportError> {
    diagnose_with_progress(target, tls, timeout, test_message, |_| {}).await
}

/// [`diagnose`], calling `progress` as each step succeeds, so a command line
/// can show how far it got before a failure.
pub async fn diagnose_with_progress(
    target: &Target,
    tls: &TlsOptions,
    timeout: Duration,
    test_message: &[u8],
    mut progress: impl FnMut(&StageReport) + Send,
) -> Result<Report, TransportError> {
    let mut stages = Vec::new();
    let mut observe = |report: StageReport| {
        progress(&report);
        stages.push(report);
    };
    let mut connection = Connection::establish(target, tls, timeout, &mut observe).await?;

    let started = Instant::now();
    connection.send(&[test_message]).await?;
    let (stage, delivery, detail) = if connection.acknowledges() {
        (
            Stage::Acknowledged,
            Delivery::Acknowledged,
            format!(
                "the SIEM answered 200 OK to the {}-byte test message",
                test_message.len()
            ),
        )
    } else {
        (
            Stage::Send,
            Delivery::Unconfirmed,
            format!("{}-byte test message written", test_message.len()),
        )
    };
    observe(StageReport::new(stage, started, detail));

    let peer = connection.peer_addr();
    let tls_info = connection.tls_info().cloned();
    let relp_software = connection.relp_software().map(str::to_owned);
    let started = Instant::now();
    connection.close().await?;
    observe(StageReport::new(
        Stage::Close,
        started,
        "connection closed".to_owned(),
    ));

    Ok(Report {
        target: target.clone(),
        peer,
        tls: tls_info,
        relp_software,
        stages,
        delivery,
    })
}
