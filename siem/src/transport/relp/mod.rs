//! RELP client session (the protocol of librelp / rsyslog's omrelp+imrelp).
//!
//! Every `syslog` command is answered by a `rsp` carrying the same
//! transaction number, in order; `200 OK` means the receiver accepted the
//! message. Commands are pipelined up to a window of unanswered ones, so
//! throughput does not pay one round trip per message. Any other answer, an
//! answer out of order, or the session ending early fails the batch: the
//! caller then resends it on a new session (at-least-once delivery).

mod frame;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use self::frame::{Frame, Response, decode, encode, next_txnr};
use super::error::{RelpError, TransportError};
use super::net::within;
use super::tcp::IoErrorMapper;
use super::url::Scheme;

/// Largest message sent over RELP: librelp's default maximum frame data.
/// (rsyslog's imrelp accepts up to its `maxDataSize`, by default its global
/// `maxMessageSize`; larger messages are truncated there, not here.)
pub const MAX_RELP_MESSAGE: usize = 128 * 1024;

/// Unanswered `syslog` commands allowed in flight.
pub(crate) const DEFAULT_WINDOW: usize = 128;

/// What we offer when opening: librelp speaks version 0.
const OFFERS: &[u8] = b"relp_version=0\nrelp_software=bessai\ncommands=syslog";

/// Responses are small; the `open` answer carries a few offers.
const MAX_RESPONSE_DATA: usize = 64 * 1024;

pub(crate) struct RelpSession<S> {
    stream: S,
    peer: SocketAddr,
    timeout: Duration,
    map_io: IoErrorMapper,
    window: usize,
    next_txnr: u32,
    /// Transaction numbers sent and not yet answered, oldest first.
    pending: VecDeque<u32>,
    inbox: Vec<u8>,
    inbox_start: usize,
    outbox: Vec<u8>,
    server_software: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RelpSession<S> {
    /// Sends `open` and checks that the receiver accepts `syslog` commands.
    pub(crate) async fn open(
        stream: S,
        peer: SocketAddr,
        timeout: Duration,
        map_io: IoErrorMapper,
        window: usize,
    ) -> Result<Self, TransportError> {
        let mut session = RelpSession {
            stream,
            peer,
            timeout,
            map_io,
            window: window.max(1),
            next_txnr: 1,
            pending: VecDeque::new(),
            inbox: Vec::new(),
            inbox_start: 0,
            outbox: Vec::new(),
            server_software: None,
        };
        const STAGE: &str = "RELP open";
        let txnr = session.take_txnr();
        encode(txnr, "open", OFFERS, &mut session.outbox);
        session.flush_outbox(STAGE).await?;
        let frame = match session.next_frame(STAGE).await {
            // With TLS 1.3 a receiver that refuses our client certificate
            // does so only now, after our side of the handshake completed.
            Err(TransportError::Relp {
                source: RelpError::SessionClosed { .. },
                ..
            }) => return Err(session.relp_error(RelpError::ClosedDuringOpen)),
            other => other?,
        };
        let response = session.expect_response(&frame, txnr)?;
        if response.code != Some(200) {
            return Err(session.refused("open", txnr, response));
        }
        let offers_syslog = response
            .offer("commands")
            .is_some_and(|commands| commands.split(',').any(|command| command == "syslog"));
        if !offers_syslog {
            return Err(session.relp_error(RelpError::NoSyslogCommand {
                offers: response.body.replace('\n', "; "),
            }));
        }
        session.server_software = response.offer("relp_software").map(str::to_owned);
        Ok(session)
    }

    /// The receiver's `relp_software` offer, e.g. `librelp,1.11.0,...`.
    pub(crate) fn server_software(&self) -> Option<&str> {
        self.server_software.as_deref()
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends the messages and returns once every one was answered `200`.
    pub(crate) async fn send(&mut self, msgs: &[&[u8]]) -> Result<(), TransportError> {
        if let Some(msg) = msgs.iter().find(|msg| msg.len() > MAX_RELP_MESSAGE) {
            return Err(TransportError::MessageTooLarge {
                len: msg.len(),
                max: MAX_RELP_MESSAGE,
                scheme: Scheme::RelpTls,
            });
        }
        self.fail_if_session_ended().await?;
        let mut unsent = msgs.iter();
        loop {
            self.outbox.clear();
            while self.pending.len() < self.window {
                let Some(msg) = unsent.next() else { break };
                let txnr = self.take_txnr();
                encode(txnr, "syslog", msg, &mut self.outbox);
                self.pending.push_back(txnr);
            }
            if self.pending.is_empty() {
                return Ok(());
            }
            self.flush_outbox("send").await?;
            // Wait for one answer, then take every answer that already arrived,
            // so the next write refills the window in one go. Frames beyond
            // the last answer (a `serverclose` hint) are left for the next
            // batch: they must not fail a batch that was fully acknowledged.
            let frame = self.next_frame("RELP acknowledgement").await?;
            self.settle(frame)?;
            while !self.pending.is_empty() {
                let Some(frame) = self.buffered_frame()? else {
                    break;
                };
                self.settle(frame)?;
            }
        }
    }

    /// Sends `close` and waits for its answer, then ends the stream.
    pub(crate) async fn close(mut self) -> Result<(), TransportError> {
        const STAGE: &str = "RELP close";
        let txnr = self.take_txnr();
        encode(txnr, "close", b"", &mut self.outbox);
        self.flush_outbox(STAGE).await?;
        match self.next_frame(STAGE).await {
            // The receiver may announce its own close first; either ends it.
            Ok(frame) if is_server_close(&frame) => {}
            Ok(frame) => {
                let response = self.expect_response(&frame, txnr)?;
                if !matches!(response.code, None | Some(200)) {
                    return Err(self.refused("close", txnr, response));
                }
            }
            // Nothing is outstanding (send waits for every answer): a
            // receiver that hangs up instead of answering loses nothing.
            Err(TransportError::Relp {
                source: RelpError::SessionClosed { .. },
                ..
            }) => {}
            Err(other) => return Err(other),
        }
        // The session is over either way; a failing TLS close_notify changes nothing.
        let _ = within(STAGE, self.timeout, self.stream.shutdown()).await;
        Ok(())
    }

    fn take_txnr(&mut self) -> u32 {
        let txnr = self.next_txnr;
        self.next_txnr = next_txnr(txnr);
        txnr
    }

    async fn flush_outbox(&mut self, stage: &'static str) -> Result<(), TransportError> {
        let (stream, outbox) = (&mut self.stream, &self.outbox);
        let written = within(stage, self.timeout, async {
            stream.write_all(outbox).await?;
            stream.flush().await
        })
        .await?;
        self.outbox.clear();
        written.map_err(|source| (self.map_io)(stage, self.peer, source))
    }

    /// Matches an answer to the oldest unanswered `syslog`.
    fn settle(&mut self, frame: Frame) -> Result<(), TransportError> {
        if is_server_close(&frame) {
            return Err(self.session_closed());
        }
        let Some(&expected) = self.pending.front() else {
            return Err(self.relp_error(RelpError::UnexpectedCommand {
                command: format!("{} for transaction {}", frame.command, frame.txnr),
            }));
        };
        let response = self.expect_response(&frame, expected)?;
        if response.code != Some(200) {
            return Err(self.refused("syslog", expected, response));
        }
        self.pending.pop_front();
        Ok(())
    }

    fn expect_response(&self, frame: &Frame, txnr: u32) -> Result<Response, TransportError> {
        if is_server_close(frame) {
            return Err(self.session_closed());
        }
        if frame.command != "rsp" {
            return Err(self.relp_error(RelpError::UnexpectedCommand {
                command: frame.command.clone(),
            }));
        }
        if frame.txnr != txnr {
            return Err(self.relp_error(RelpError::TxnrMismatch {
                expected: txnr,
                got: frame.txnr,
            }));
        }
        Response::parse(&frame.data).map_err(|source| self.relp_error(source))
    }

    /// Between batches the receiver may have announced `serverclose` or hung
    /// up (idle timeout, restart); find out before writing into a dead session.
    async fn fail_if_session_ended(&mut self) -> Result<(), TransportError> {
        match tokio::time::timeout(Duration::ZERO, self.fill_inbox("send")).await {
            Err(_nothing_arrived) => {}
            Ok(result) => result?,
        }
        while let Some(frame) = self.buffered_frame()? {
            // Nothing is pending here, so any frame is unexpected.
            self.settle(frame)?;
        }
        Ok(())
    }

    async fn next_frame(&mut self, stage: &'static str) -> Result<Frame, TransportError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            within(stage, self.timeout, self.fill_inbox(stage)).await??;
        }
    }

    /// Reads once into the inbox; the end of the stream ends the session.
    async fn fill_inbox(&mut self, stage: &'static str) -> Result<(), TransportError> {
        if self.inbox_start > 0 {
            self.inbox.drain(..self.inbox_start);
            self.inbox_start = 0;
        }
        let mut chunk = [0u8; 4096];
        let read = match self.stream.read(&mut chunk).await {
            Ok(read) => read,
            // librelp hangs up without TLS close_notify; for RELP that is
            // simply the end of the session.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(error) => return Err((self.map_io)(stage, self.peer, error)),
        };
        if read == 0 {
            return Err(self.session_closed());
        }
        self.inbox.extend_from_slice(&chunk[..read]);
        Ok(())
    }

    fn buffered_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        match decode(&self.inbox[self.inbox_start..], MAX_RESPONSE_DATA) {
            Ok(Some((frame, used))) => {
                self.inbox_start += used;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(self.relp_error(source)),
        }
    }

    fn session_closed(&self) -> TransportError {
        self.relp_error(RelpError::SessionClosed {
            unacked: self.pending.len(),
        })
    }

    fn refused(&self, command: &'static str, txnr: u32, response: Response) -> TransportError {
        self.relp_error(RelpError::Refused {
            command,
            txnr,
            code: response.code.unwrap_or(0),
            text: response.text,
        })
    }

    fn relp_error(&self, source: RelpError) -> TransportError {
        TransportError::Relp {
            peer: self.peer,
            source,
        }
    }
}

fn is_server_close(frame: &Frame) -> bool {
    frame.txnr == 0 && frame.command == "serverclose"
}

#[cfg(test)]
mod tests;
