//! Transports: how already-formatted syslog messages reach a SIEM.
//!
//! A transport moves opaque message bytes (one syslog message each, without
//! framing and without a trailing newline); it knows nothing about events or
//! formats. Four schemes:
//!
//! | URL            | Framing                               | Delivery known when            |
//! |----------------|---------------------------------------|--------------------------------|
//! | `udp://`       | one datagram per message (RFC 5426)    | never                          |
//! | `tcp://`       | octet counting (RFC 6587)             | never: bytes were written      |
//! | `tls://`       | octet counting inside TLS (RFC 5425)  | never: bytes were written      |
//! | `relp+tls://`  | RELP inside TLS                       | the SIEM answered `200 OK`     |
//!
//! Only RELP proves delivery. A successful TCP or TLS write only means the
//! bytes are in our kernel's send buffer; a SIEM that crashes, or (with TLS
//! 1.3) rejects our client certificate after our side of the handshake has
//! already completed, still lets those writes succeed. Callers therefore
//! count messages sent over TCP/TLS as "unconfirmed", and keep RELP messages
//! spooled until [`Connection::send`] returns.
//!
//! After any error the connection is unusable: drop it, reconnect, and
//! resend the whole batch (a receiver may then see duplicates, never gaps).

mod diagnose;
mod error;
mod net;
mod relp;
mod tcp;
mod tls;
mod udp;
mod url;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use self::diagnose::{Delivery, Report, Stage, StageReport, diagnose, diagnose_with_progress};
pub use self::error::{RelpError, TlsConfigError, TransportError};
pub use self::relp::MAX_RELP_MESSAGE;
pub use self::tls::{TlsOptions, TlsSessionInfo};
pub use self::udp::{MAX_DATAGRAM_V4, MAX_DATAGRAM_V6};
pub use self::url::{Scheme, Target, TargetError};

use self::relp::{DEFAULT_WINDOW, RelpSession};
use self::tcp::{OctetCountingLink, plain_io_error};
use self::tls::{TlsClient, tls_io_error};
use self::udp::UdpLink;

/// An open path to one SIEM.
pub struct Connection {
    link: Link,
    target: Target,
    peer: SocketAddr,
    tls: Option<TlsSessionInfo>,
}

enum Link {
    Udp(UdpLink),
    Tcp(OctetCountingLink<TcpStream>),
    Tls(Box<OctetCountingLink<TlsStream<TcpStream>>>),
    Relp(Box<RelpSession<TlsStream<TcpStream>>>),
}

impl Connection {
    /// Resolves, connects and (for TLS) handshakes; for RELP also opens the
    /// session. Each of these steps may take up to `timeout`, and so may each
    /// later write or wait for an acknowledgement.
    pub async fn connect(
        target: &Target,
        tls: &TlsOptions,
        timeout: Duration,
    ) -> Result<Connection, TransportError> {
        Connection::establish(target, tls, timeout, &mut |_| {}).await
    }

    /// [`Connection::connect`], reporting each completed step to `observe`.
    pub(crate) async fn establish(
        target: &Target,
        tls: &TlsOptions,
        timeout: Duration,
        observe: &mut (dyn FnMut(StageReport) + Send),
    ) -> Result<Connection, TransportError> {
        // TLS files are checked first: a wrong path is not a network problem.
        let tls_client = match target.scheme.uses_tls() {
            true => Some(TlsClient::new(tls, &target.host)?),
            false => None,
        };

        let started = Instant::now();
        let addrs = net::resolve(target, timeout).await?;
        observe(StageReport::new(
            Stage::Resolve,
            started,
            resolved(target, &addrs),
        ));
        let first = addrs
            .first()
            .copied()
            .ok_or_else(|| TransportError::NoAddress {
                host: target.host.clone(),
            })?;

        let started = Instant::now();
        if target.scheme == Scheme::Udp {
            let link = UdpLink::connect(first, timeout).await?;
            let detail = format!(
                "UDP socket aimed at {first} (UDP has no connection: nothing can be checked)"
            );
            observe(StageReport::new(Stage::Connect, started, detail));
            return Ok(Connection::new(Link::Udp(link), target, first, None));
        }
        let (tcp, peer) = net::connect_tcp(target, &addrs, timeout).await?;
        let local = tcp
            .local_addr()
            .map_or_else(|_| "an unknown address".to_owned(), |addr| addr.to_string());
        observe(StageReport::new(
            Stage::Connect,
            started,
            format!("connected to {peer} from {local}"),
        ));

        let Some(tls_client) = tls_client else {
            let link = OctetCountingLink::new(tcp, peer, timeout, plain_io_error);
            return Ok(Connection::new(Link::Tcp(link), target, peer, None));
        };
        let started = Instant::now();
        let (stream, info) = tls_client.handshake(tcp, peer, timeout).await?;
        observe(StageReport::new(
            Stage::TlsHandshake,
            started,
            handshake_detail(&info),
        ));

        let link = if target.scheme == Scheme::RelpTls {
            let started = Instant::now();
            let session =
                RelpSession::open(stream, peer, timeout, tls_io_error, DEFAULT_WINDOW).await?;
            let software = session.server_software().unwrap_or("not announced");
            observe(StageReport::new(
                Stage::RelpOpen,
                started,
                format!("RELP session open (SIEM software: {software})"),
            ));
            Link::Relp(Box::new(session))
        } else {
            Link::Tls(Box::new(OctetCountingLink::new(
                stream,
                peer,
                timeout,
                tls_io_error,
            )))
        };
        Ok(Connection::new(link, target, peer, Some(info)))
    }

    fn new(
        link: Link,
        target: &Target,
        peer: SocketAddr,
        tls: Option<TlsSessionInfo>,
    ) -> Connection {
        Connection {
            link,
            target: target.clone(),
            peer,
            tls,
        }
    }

    /// Sends the messages in order. Returns `Ok` once the transport considers
    /// them delivered:
    /// RELP: after the receiver acknowledged every one (`rsp 200`), proof of delivery;
    /// TCP/TLS: after the bytes were written and flushed (no proof: count them as "unconfirmed");
    /// UDP: after each datagram was sent.
    pub async fn send(&mut self, msgs: &[&[u8]]) -> Result<(), TransportError> {
        match &mut self.link {
            Link::Udp(link) => link.send(msgs).await,
            Link::Tcp(link) => link.send(msgs).await,
            Link::Tls(link) => link.send(msgs).await,
            Link::Relp(session) => session.send(msgs).await,
        }
    }

    /// Whether [`Connection::send`] returning `Ok` proves delivery (RELP only).
    pub fn acknowledges(&self) -> bool {
        matches!(self.link, Link::Relp(_))
    }

    /// Ends the connection in an orderly way. RELP: sends `close` and waits
    /// for its answer; TLS: sends close_notify; TCP: shuts down the write side.
    pub async fn close(self) -> Result<(), TransportError> {
        match self.link {
            Link::Udp(_) => Ok(()),
            Link::Tcp(link) => link.close().await,
            Link::Tls(link) => link.close().await,
            Link::Relp(session) => session.close().await,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The address actually connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// What the TLS handshake settled on (`None` for UDP and TCP).
    pub fn tls_info(&self) -> Option<&TlsSessionInfo> {
        self.tls.as_ref()
    }

    /// The receiver's RELP software offer, e.g. `librelp,1.11.0,...`.
    pub fn relp_software(&self) -> Option<&str> {
        match &self.link {
            Link::Relp(session) => session.server_software(),
            _ => None,
        }
    }

    /// The local address of a stream connection (for diagnostics).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.link {
            Link::Udp(_) => None,
            Link::Tcp(link) => link.stream().local_addr().ok(),
            Link::Tls(link) => link.stream().get_ref().0.local_addr().ok(),
            Link::Relp(session) => session.stream().get_ref().0.local_addr().ok(),
        }
    }
}

fn resolved(target: &Target, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!("{} is {}", target.host, list.join(", "))
}

fn handshake_detail(info: &TlsSessionInfo) -> String {
    format!(
        "{}, {}; SIEM certificate \"{}\" issued by \"{}\", valid until {}",
        info.version,
        info.cipher_suite,
        info.server_subject,
        info.server_issuer,
        info.server_not_after
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forwarder runs connections on tokio's multi-threaded runtime.
    #[test]
    fn connections_and_their_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let target = Target {
            scheme: Scheme::RelpTls,
            host: "siem".to_owned(),
            port: 2514,
        };
        let tls = TlsOptions::default();
        assert_send(&Connection::connect(&target, &tls, Duration::from_secs(1)));
        assert_send(&diagnose(&target, &tls, Duration::from_secs(1), b"test"));
        let _send = |connection: &mut Connection| assert_send(&connection.send(&[]));
        let _close = |connection: Connection| assert_send(&connection.close());
    }
}
