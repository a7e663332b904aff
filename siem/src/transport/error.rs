//! Transport errors, worded for the person installing the gateway: each says
//! which step failed, against which address, and what to check.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::url::Scheme;

/// Why a message could not be handed to the receiver.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve the SIEM host {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("the SIEM host {host:?} resolves to no address")]
    NoAddress { host: String },
    #[error(
        "cannot connect to {addr}: {source} (is the SIEM listening on that port, and does the firewall let us through?)"
    )]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{stage} did not complete within {after:?}")]
    Timeout {
        stage: &'static str,
        after: Duration,
    },
    #[error(transparent)]
    TlsConfig(#[from] TlsConfigError),
    #[error("the SIEM's certificate \"{subject}\" was rejected: {reason}")]
    TlsVerify { subject: String, reason: String },
    #[error("TLS with {peer} failed: {reason}")]
    Tls { peer: SocketAddr, reason: String },
    #[error("{stage} to {peer} failed: {source}")]
    Io {
        stage: &'static str,
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the SIEM at {peer} closed the connection")]
    ClosedByPeer { peer: SocketAddr },
    #[error("RELP with {peer}: {source}")]
    Relp {
        peer: SocketAddr,
        #[source]
        source: RelpError,
    },
    #[error("a message of {len} bytes exceeds the {max}-byte limit of {scheme}")]
    MessageTooLarge {
        len: usize,
        max: usize,
        scheme: Scheme,
    },
}

/// The TLS settings cannot be used (checked before any packet is sent).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(
        "TLS needs the CA certificate that signed the SIEM's certificate (option ca): the SIEM is never trusted blindly"
    )]
    MissingCa,
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {path} is not valid PEM: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the {what} {path} contains no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the CA certificate in {path} is unusable: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("a client certificate needs its private key: set both cert and key, or neither")]
    CertWithoutKey,
    #[error("a client key needs its certificate: set both cert and key, or neither")]
    KeyWithoutCert,
    #[error("the client certificate {cert} and key {key} cannot be used: {reason}")]
    ClientIdentity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{name:?} is not a valid TLS server name")]
    InvalidServerName { name: String },
    #[error("TLS setup failed: {reason}")]
    Setup { reason: String },
}

/// The RELP conversation went wrong.
#[derive(Debug, thiserror::Error)]
pub enum RelpError {
    #[error("malformed frame from the SIEM: {reason}")]
    Malformed { reason: String },
    #[error("the SIEM refused {command} (transaction {txnr}): {code} {text}")]
    Refused {
        command: &'static str,
        txnr: u32,
        code: u16,
        text: String,
    },
    #[error("the SIEM answered transaction {got} while {expected} was due")]
    TxnrMismatch { expected: u32, got: u32 },
    #[error("unexpected {command:?} frame from the SIEM")]
    UnexpectedCommand { command: String },
    #[error("the SIEM does not accept syslog messages over RELP (it offered {offers:?})")]
    NoSyslogCommand { offers: String },
    #[error("the SIEM ended the session with {unacked} message(s) unacknowledged")]
    SessionClosed { unacked: usize },
    #[error(
        "the SIEM hung up instead of answering the RELP open (does it require a client certificate, and does it trust ours? is this its RELP port?)"
    )]
    ClosedDuringOpen,
}
