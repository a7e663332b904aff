//! RFC 5426 syslog over UDP: one message per datagram, no framing, no
//! feedback beyond what ICMP happens to report.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::error::TransportError;
use super::net::within;
use super::url::Scheme;

/// Largest UDP payload over IPv4 (65535 − 20 IP − 8 UDP).
pub const MAX_DATAGRAM_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms (65535 − 8 UDP).
pub const MAX_DATAGRAM_V6: usize = 65_527;

pub(crate) struct UdpLink {
    socket: UdpSocket,
    peer: SocketAddr,
    timeout: Duration,
}

impl UdpLink {
    /// A socket connected to `peer`, so that an ICMP "port unreachable" for an
    /// earlier datagram surfaces as an error on a later send.
    pub(crate) async fn connect(
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let local: SocketAddr = match peer {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let io_error = |source| TransportError::Io {
            stage: "UDP socket set-up",
            peer,
            source,
        };
        let socket = UdpSocket::bind(local).await.map_err(io_error)?;
        socket.connect(peer).await.map_err(io_error)?;
        Ok(UdpLink {
            socket,
            peer,
            timeout,
        })
    }

    pub(crate) fn max_message_len(&self) -> usize {
        match self.peer {
            SocketAddr::V4(_) => MAX_DATAGRAM_V4,
            SocketAddr::V6(_) => MAX_DATAGRAM_V6,
        }
    }

    pub(crate) async fn send(&mut self, msgs: &[&[u8]]) -> Result<(), TransportError> {
        // Refuse the whole batch up front: a half-sent batch is harder to account for.
        let max = self.max_message_len();
        if let Some(msg) = msgs.iter().find(|msg| msg.len() > max) {
            return Err(TransportError::MessageTooLarge {
                len: msg.len(),
                max,
                scheme: Scheme::Udp,
            });
        }
        for msg in msgs {
            within("send", self.timeout, self.socket.send(msg))
                .await?
                .map_err(|source| TransportError::Io {
                    stage: "send",
                    peer: self.peer,
                    source,
                })?;
        }
        Ok(())
    }
}
