//! RFC 6587 octet counting (`<length> SP <message>`) over a byte stream: plain
//! TCP for `tcp://`, and the same framing inside TLS for `tls://` (RFC 5425).
//!
//! Octet counting, unlike newline framing, carries any byte (including LF)
//! inside a message, so a multi-line message cannot be split or used to forge
//! a second one.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::TransportError;
use super::net::within;

/// Frames are gathered up to this size before a write, so that a large batch
/// needs neither one syscall per message nor one huge buffer.
const WRITE_CHUNK: usize = 64 * 1024;

/// Turns an I/O error of the underlying stream into a transport error
/// (TLS streams carry alerts inside their I/O errors).
pub(crate) type IoErrorMapper = fn(&'static str, SocketAddr, io::Error) -> TransportError;

pub(crate) fn plain_io_error(
    stage: &'static str,
    peer: SocketAddr,
    source: io::Error,
) -> TransportError {
    TransportError::Io {
        stage,
        peer,
        source,
    }
}

/// Appends one octet-counted frame to `out`.
pub(crate) fn encode_frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

pub(crate) struct OctetCountingLink<S> {
    stream: S,
    peer: SocketAddr,
    timeout: Duration,
    map_io: IoErrorMapper,
    buffer: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> OctetCountingLink<S> {
    pub(crate) fn new(
        stream: S,
        peer: SocketAddr,
        timeout: Duration,
        map_io: IoErrorMapper,
    ) -> Self {
        OctetCountingLink {
            stream,
            peer,
            timeout,
            map_io,
            buffer: Vec::with_capacity(WRITE_CHUNK),
        }
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// Writes and flushes all frames. Success means the bytes left this
    /// process, not that the SIEM stored them.
    pub(crate) async fn send(&mut self, msgs: &[&[u8]]) -> Result<(), TransportError> {
        self.fail_if_peer_closed().await?;
        self.buffer.clear();
        for msg in msgs {
            encode_frame(msg, &mut self.buffer);
            if self.buffer.len() >= WRITE_CHUNK {
                self.write_buffer().await?;
            }
        }
        self.write_buffer().await?;
        let flushed = within("send", self.timeout, self.stream.flush()).await?;
        flushed.map_err(|source| (self.map_io)("send", self.peer, source))
    }

    async fn write_buffer(&mut self) -> Result<(), TransportError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = within("send", self.timeout, self.stream.write_all(&self.buffer)).await?;
        self.buffer.clear();
        written.map_err(|source| (self.map_io)("send", self.peer, source))
    }

    /// A syslog receiver never talks back over TCP, so anything readable means
    /// it closed the connection or (TLS) sent an alert. Checking before
    /// writing keeps a batch from vanishing into a connection that is
    /// already gone: the first write to a closed socket still "succeeds".
    async fn fail_if_peer_closed(&mut self) -> Result<(), TransportError> {
        let mut scratch = [0u8; 256];
        // A zero timeout polls the read exactly once: ready data or nothing.
        match tokio::time::timeout(Duration::ZERO, self.stream.read(&mut scratch)).await {
            Err(_nothing_to_read) => Ok(()),
            Ok(Ok(0)) => Err(TransportError::ClosedByPeer { peer: self.peer }),
            Ok(Ok(_unexpected_bytes)) => Ok(()),
            Ok(Err(source)) => Err((self.map_io)("send", self.peer, source)),
        }
    }

    /// Ends the stream in an orderly way (for TLS: sends close_notify).
    pub(crate) async fn close(mut self) -> Result<(), TransportError> {
        let shutdown = within("close", self.timeout, self.stream.shutdown()).await?;
        shutdown.map_err(|source| (self.map_io)("close", self.peer, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_octets_not_characters() {
        let mut out = Vec::new();
        encode_frame("ü\n2 x".as_bytes(), &mut out);
        encode_frame(b"", &mut out);
        assert_eq!(out, "6 ü\n2 x0 ".as_bytes());
    }
}
