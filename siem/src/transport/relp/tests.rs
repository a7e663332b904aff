//! Protocol behaviour a real rsyslog cannot be made to show on demand
//! (refusals, out-of-order answers, hang-ups), against a scripted receiver.
//! Delivery to a real rsyslog is covered by `tests/transport_rsyslog.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;

use super::*;
use crate::transport::tcp::plain_io_error;

const OPEN_OK: &[u8] = b"200 OK\nrelp_version=0\nrelp_software=scripted\ncommands=syslog";
const TIMEOUT: Duration = Duration::from_secs(5);

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2514))
}

/// The receiver's end of an in-memory connection.
struct Receiver {
    stream: DuplexStream,
    inbox: Vec<u8>,
}

impl Receiver {
    /// The next frame from the client, `None` once it hung up.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) =
                decode(&self.inbox, usize::MAX).expect("client frames are valid")
            {
                self.inbox.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.inbox.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// The next frame if one arrives within `wait`.
    async fn frame_within(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.frame())
            .await
            .ok()
            .flatten()
    }

    async fn send(&mut self, txnr: u32, command: &str, data: &[u8]) {
        let mut out = Vec::new();
        encode(txnr, command, data, &mut out);
        self.stream
            .write_all(&out)
            .await
            .expect("client is connected");
    }

    async fn accept_open(&mut self, answer: &[u8]) {
        let open = self.frame().await.expect("client opens");
        assert_eq!((open.txnr, open.command.as_str()), (1, "open"));
        assert_eq!(open.data, OFFERS);
        self.send(open.txnr, "rsp", answer).await;
    }
}

/// Connects a client session to a receiver running `script`.
async fn connect<F, Fut, T>(
    window: usize,
    timeout: Duration,
    script: F,
) -> (
    Result<RelpSession<DuplexStream>, TransportError>,
    JoinHandle<T>,
)
where
    F: FnOnce(Receiver) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (client, server) = duplex(1 << 20);
    let receiver = Receiver {
        stream: server,
        inbox: Vec::new(),
    };
    let script = tokio::spawn(script(receiver));
    let session = RelpSession::open(client, peer(), timeout, plain_io_error, window).await;
    (session, script)
}

fn relp_error(result: Result<(), TransportError>) -> RelpError {
    match result {
        Err(TransportError::Relp { source, .. }) => source,
        other => panic!("expected a RELP error, got {other:?}"),
    }
}

#[tokio::test]
async fn delivers_in_order_and_closes_cleanly() {
    let (session, receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(OPEN_OK).await;
        let mut received = Vec::new();
        while let Some(frame) = receiver.frame().await {
            match frame.command.as_str() {
                "syslog" => {
                    received.push((frame.txnr, frame.data));
                    receiver.send(frame.txnr, "rsp", b"200 OK").await;
                }
                "close" => {
                    receiver.send(frame.txnr, "rsp", b"").await;
                    receiver.send(0, "serverclose", b"").await;
                    return (received, frame.txnr);
                }
                other => panic!("unexpected {other}"),
            }
        }
        panic!("client hung up without close");
    })
    .await;
    let mut session = session.expect("session opens");
    assert_eq!(session.server_software(), Some("scripted"));

    let msgs: [&[u8]; 3] = [b"first", "second\nline ü".as_bytes(), b"12 third"];
    session.send(&msgs).await.expect("all acknowledged");
    session.close().await.expect("close acknowledged");

    let (received, close_txnr) = receiver.await.expect("receiver script");
    let expected: Vec<(u32, Vec<u8>)> = (2..).zip(msgs.iter().map(|m| m.to_vec())).collect();
    assert_eq!(received, expected);
    assert_eq!(close_txnr, 5);
}

#[tokio::test]
async fn a_refused_message_fails_the_batch() {
    let (session, _receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(OPEN_OK).await;
        let first = receiver.frame().await.expect("first message");
        receiver.send(first.txnr, "rsp", b"200 OK").await;
        let second = receiver.frame().await.expect("second message");
        receiver.send(second.txnr, "rsp", b"500 queue full").await;
        receiver
    })
    .await;
    let mut session = session.expect("session opens");

    let error = relp_error(session.send(&[b"one", b"two", b"three"]).await);

    assert!(
        matches!(&error, RelpError::Refused { command: "syslog", txnr: 3, code: 500, text } if text == "queue full"),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_answer_out_of_order_is_an_error() {
    let (session, _receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(OPEN_OK).await;
        let first = receiver.frame().await.expect("first message");
        receiver.send(first.txnr + 1, "rsp", b"200 OK").await;
        receiver
    })
    .await;
    let mut session = session.expect("session opens");

    let error = relp_error(session.send(&[b"one", b"two"]).await);

    assert!(
        matches!(
            error,
            RelpError::TxnrMismatch {
                expected: 2,
                got: 3
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn serverclose_mid_batch_reports_the_unacknowledged() {
    let (session, _receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(OPEN_OK).await;
        let first = receiver.frame().await.expect("first message");
        receiver.send(first.txnr, "rsp", b"200 OK").await;
        receiver.send(0, "serverclose", b"").await;
    })
    .await;
    let mut session = session.expect("session opens");

    let error = relp_error(session.send(&[b"one", b"two", b"three"]).await);

    assert!(
        matches!(error, RelpError::SessionClosed { unacked: 2 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_session_ended_between_batches_is_noticed_before_writing() {
    let (session, receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(OPEN_OK).await;
        let only = receiver.frame().await.expect("first batch");
        receiver.send(only.txnr, "rsp", b"200 OK").await;
        receiver.send(0, "serverclose", b"").await;
        // Keep the connection open: only the hint tells the client.
        receiver.frame_within(Duration::from_millis(500)).await
    })
    .await;
    let mut session = session.expect("session opens");
    session
        .send(&[b"before"])
        .await
        .expect("first batch acknowledged");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let error = relp_error(session.send(&[b"after"]).await);

    assert!(
        matches!(error, RelpError::SessionClosed { unacked: 0 }),
        "{error:?}"
    );
    assert_eq!(
        receiver.await.expect("receiver script"),
        None,
        "nothing was written after the hint"
    );
}

#[tokio::test]
async fn a_silent_receiver_times_out() {
    let (session, _receiver) = connect(
        DEFAULT_WINDOW,
        Duration::from_millis(200),
        |mut receiver| async move {
            receiver.accept_open(OPEN_OK).await;
            // Read but never answer.
            while receiver.frame().await.is_some() {}
        },
    )
    .await;
    let mut session = session.expect("session opens");

    let started = std::time::Instant::now();
    let result = session.send(&[b"into the void"]).await;

    assert!(
        matches!(
            result,
            Err(TransportError::Timeout {
                stage: "RELP acknowledgement",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_receiver_without_the_syslog_command_is_refused() {
    let (session, _receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver
            .accept_open(b"200 OK\nrelp_version=0\ncommands=eventlog")
            .await;
        receiver
    })
    .await;

    let error = match session {
        Err(TransportError::Relp { source, .. }) => source,
        other => panic!("expected a RELP error, got {:?}", other.map(|_| "session")),
    };
    assert!(
        matches!(&error, RelpError::NoSyslogCommand { offers } if offers.contains("eventlog")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_refused_open_names_the_reason() {
    let (session, _receiver) = connect(DEFAULT_WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(b"500 too many sessions").await;
        receiver
    })
    .await;

    let error = session.map(|_| ()).expect_err("open refused");
    assert_eq!(
        error.to_string(),
        "RELP with 127.0.0.1:2514: the SIEM refused open (transaction 1): 500 too many sessions"
    );
}

#[tokio::test]
async fn no_more_than_the_window_is_unanswered() {
    const WINDOW: usize = 4;
    const MESSAGES: usize = 10;
    let (session, receiver) = connect(WINDOW, TIMEOUT, |mut receiver| async move {
        receiver.accept_open(OPEN_OK).await;
        let mut unanswered = Vec::new();
        let mut most_unanswered = 0;
        let mut delivered = 0;
        while delivered < MESSAGES {
            // Collect whatever the client sends without waiting for answers,
            // and answer only when it stops sending.
            match receiver.frame_within(Duration::from_millis(100)).await {
                Some(frame) => {
                    unanswered.push(frame.txnr);
                    most_unanswered = most_unanswered.max(unanswered.len());
                }
                None => {
                    for txnr in unanswered.drain(..) {
                        receiver.send(txnr, "rsp", b"200 OK").await;
                        delivered += 1;
                    }
                }
            }
        }
        most_unanswered
    })
    .await;
    let mut session = session.expect("session opens");
    let payloads: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|n| format!("message {n}").into_bytes())
        .collect();
    let msgs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();

    session.send(&msgs).await.expect("all acknowledged");

    assert_eq!(receiver.await.expect("receiver script"), WINDOW);
}
