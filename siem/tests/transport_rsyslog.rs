//! Transports against a real rsyslog (imudp, imtcp, imtcp+gtls/ossl,
//! imrelp+TLS): what the SIEM receives must be byte for byte what we sent, in
//! order; certificate problems must name the certificate and the reason;
//! unreachable receivers must fail within the timeout.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bessai_siem::transport::{
    Connection, Delivery, RelpError, Scheme, Stage, Target, TlsOptions, TransportError, diagnose,
    diagnose_with_progress,
};
use support::{Driver, Listener, Pki, RECEIVER_CN, Rsyslog, TlsVersion};

const TIMEOUT: Duration = Duration::from_secs(5);
const ARRIVAL: Duration = Duration::from_secs(10);

/// Syslog messages that trip up sloppy framing or escaping: quotes and
/// escapes in structured data, a BOM and non-ASCII UTF-8, a message that
/// starts like an octet count, CEF escapes, trailing blanks, and one over 4 KiB.
fn tricky_messages() -> Vec<Vec<u8>> {
    vec![
        br#"<134>1 2025-06-01T12:00:00.000Z gw-01 bessai-gw 812 conduit [bessai@32473 rule="allow \"plc\" \]" src="10.0.0.5"] allowed"#.to_vec(),
        "<134>1 - gw-01 bessai-gw - - - \u{feff}Größe 日本語 ✓ ünïcödé".as_bytes().to_vec(),
        b"<134>1 - gw-01 bessai-gw - - - 12 looks like an octet count".to_vec(),
        br"<132>Jun  1 12:00:00 gw-01 CEF:0|BESSAI|Edge Gateway|1.0|100|Write denied|7|src=10.0.0.5 msg=a\=b back\\slash pipe\|".to_vec(),
        b"<134>1 - gw-01 bessai-gw - - - trailing blanks   ".to_vec(),
        format!("<134>1 - gw-01 bessai-gw - - - long {}", "0123456789abcdef".repeat(300)).into_bytes(),
    ]
}

/// A message with an LF inside: octet counting must keep it one message.
/// rsyslog escapes control characters on reception, LF as `#012`.
const MULTI_LINE: &[u8] = b"<134>1 - gw-01 bessai-gw - - - first line\nsecond line";
const MULTI_LINE_AS_WRITTEN: &str = "<134>1 - gw-01 bessai-gw - - - first line#012second line";

fn as_lines(msgs: &[Vec<u8>]) -> Vec<String> {
    msgs.iter()
        .map(|msg| String::from_utf8(msg.clone()).expect("test messages are UTF-8"))
        .collect()
}

fn slices(msgs: &[Vec<u8>]) -> Vec<&[u8]> {
    msgs.iter().map(Vec::as_slice).collect()
}

/// Sends `msgs` through a fresh connection and closes it.
async fn deliver(target: &Target, tls: &TlsOptions, msgs: &[&[u8]]) -> Connection {
    let mut connection = Connection::connect(target, tls, TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("connect to {target}: {error}"));
    connection
        .send(msgs)
        .await
        .unwrap_or_else(|error| panic!("send to {target}: {error}"));
    connection
}

/// Sends the tricky messages plus the multi-line one; checks what rsyslog wrote.
async fn assert_stream_delivery(
    rsyslog: &Rsyslog,
    target: &Target,
    tls: &TlsOptions,
) -> Connection {
    let msgs = tricky_messages();
    let mut all = slices(&msgs);
    all.push(MULTI_LINE);

    let connection = deliver(target, tls, &all).await;

    let mut expected = as_lines(&msgs);
    expected.push(MULTI_LINE_AS_WRITTEN.to_owned());
    assert_eq!(rsyslog.wait_for_lines(expected.len(), ARRIVAL), expected);
    connection
}

fn tls_listener(
    pki: &Pki,
    driver: Driver,
    only: Option<TlsVersion>,
    require_client_cert: bool,
) -> Listener {
    Listener::Tls {
        driver,
        only,
        require_client_cert,
        server: pki.receiver_tls(),
    }
}

fn relp_listener(pki: &Pki) -> Listener {
    Listener::RelpTls {
        require_client_cert: true,
        server: pki.receiver_tls(),
    }
}

#[tokio::test]
async fn udp_datagrams_arrive_byte_exact() {
    let Some(rsyslog) = Rsyslog::start(Listener::Udp) else {
        return;
    };
    let msgs = tricky_messages();

    let connection = deliver(&rsyslog.target(), &TlsOptions::default(), &slices(&msgs)).await;

    assert!(!connection.acknowledges());
    assert_eq!(rsyslog.wait_for_lines(msgs.len(), ARRIVAL), as_lines(&msgs));
    connection.close().await.expect("close");
}

#[tokio::test]
async fn tcp_octet_counting_keeps_message_boundaries() {
    let Some(rsyslog) = Rsyslog::start(Listener::Tcp) else {
        return;
    };

    let connection =
        assert_stream_delivery(&rsyslog, &rsyslog.target(), &TlsOptions::default()).await;

    assert!(!connection.acknowledges());
    assert!(connection.tls_info().is_none());
    connection.close().await.expect("close");
}

#[tokio::test]
async fn tls12_to_a_gnutls_receiver() {
    let pki = Pki::generate();
    let listener = tls_listener(&pki, Driver::GnuTls, Some(TlsVersion::Tls12), false);
    let Some(rsyslog) = Rsyslog::start(listener) else {
        return;
    };

    let connection =
        assert_stream_delivery(&rsyslog, &rsyslog.target(), &pki.client_options()).await;

    let info = connection.tls_info().expect("TLS session");
    assert_eq!(info.version, "TLS 1.2");
    assert_eq!(info.server_subject, format!("CN={RECEIVER_CN}"));
    assert_eq!(info.server_issuer, "CN=BESSAI test CA");
    connection.close().await.expect("close_notify");
}

#[tokio::test]
async fn tls13_to_an_openssl_receiver() {
    let pki = Pki::generate();
    let listener = tls_listener(&pki, Driver::OpenSsl, Some(TlsVersion::Tls13), false);
    let Some(rsyslog) = Rsyslog::start(listener) else {
        return;
    };

    let connection =
        assert_stream_delivery(&rsyslog, &rsyslog.target(), &pki.client_options()).await;

    let info = connection.tls_info().expect("TLS session");
    assert_eq!(info.version, "TLS 1.3");
    assert!(
        info.cipher_suite.starts_with("TLS13_"),
        "{}",
        info.cipher_suite
    );
    connection.close().await.expect("close_notify");
}

#[tokio::test]
async fn mutual_tls_with_a_required_client_certificate() {
    let pki = Pki::generate();
    let listener = tls_listener(&pki, Driver::GnuTls, None, true);
    let Some(rsyslog) = Rsyslog::start(listener) else {
        return;
    };
    // By name: "localhost" may resolve to ::1 first, where nothing listens;
    // the next address must be tried, and the name checked against the SAN.
    let target = rsyslog.target_via("localhost");

    let connection = assert_stream_delivery(&rsyslog, &target, &pki.mutual_client_options()).await;

    assert_eq!(connection.peer_addr().port(), rsyslog.port());
    connection.close().await.expect("close_notify");
}

#[tokio::test]
async fn tls12_receiver_requiring_a_client_certificate_fails_the_handshake_without_one() {
    let pki = Pki::generate();
    let listener = tls_listener(&pki, Driver::OpenSsl, Some(TlsVersion::Tls12), true);
    let Some(rsyslog) = Rsyslog::start(listener) else {
        return;
    };

    let result = Connection::connect(&rsyslog.target(), &pki.client_options(), TIMEOUT).await;

    match result {
        Err(TransportError::Tls { reason, .. }) => {
            assert!(reason.contains("client certificate"), "{reason}");
        }
        Err(other) => panic!("expected a TLS error naming the client certificate, got: {other}"),
        Ok(_) => panic!("the handshake succeeded without the required client certificate"),
    }
}

#[tokio::test]
async fn relp_over_tls_delivers_acknowledged_messages_in_order() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(relp_listener(&pki)) else {
        return;
    };
    let msgs = tricky_messages();
    let mut all = slices(&msgs);
    all.push(MULTI_LINE);

    let connection = deliver(&rsyslog.target(), &pki.mutual_client_options(), &all).await;

    assert!(connection.acknowledges());
    assert!(
        connection
            .relp_software()
            .is_some_and(|software| software.starts_with("librelp")),
        "{:?}",
        connection.relp_software()
    );
    connection.close().await.expect("RELP close acknowledged");
    let mut expected = as_lines(&msgs);
    expected.push(MULTI_LINE_AS_WRITTEN.to_owned());
    assert_eq!(rsyslog.wait_for_lines(expected.len(), ARRIVAL), expected);
}

#[tokio::test]
async fn relp_delivers_ten_thousand_messages_all_acknowledged_in_order() {
    const COUNT: usize = 10_000;
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(relp_listener(&pki)) else {
        return;
    };
    let msgs: Vec<Vec<u8>> = (0..COUNT)
        .map(|n| {
            format!("<134>1 2025-06-01T12:00:00.000Z gw-01 bessai-gw - conduit [bessai@32473 seq=\"{n}\"] Modbus write to unit 1 register 40001 denied by rule 17, sequence {n:05}")
                .into_bytes()
        })
        .collect();
    let bytes: usize = msgs.iter().map(Vec::len).sum();

    let started = Instant::now();
    let mut connection =
        Connection::connect(&rsyslog.target(), &pki.mutual_client_options(), TIMEOUT)
            .await
            .expect("connect");
    connection
        .send(&slices(&msgs))
        .await
        .expect("all 10,000 acknowledged");
    connection.close().await.expect("RELP close acknowledged");
    let elapsed = started.elapsed();

    println!(
        "RELP/TLS: {COUNT} messages ({bytes} bytes) acknowledged in {elapsed:.2?}: {:.0} msg/s",
        COUNT as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        rsyslog.wait_for_lines(COUNT, Duration::from_secs(30)),
        as_lines(&msgs)
    );
}

#[tokio::test]
async fn relp_without_the_required_client_certificate_is_refused_before_any_message() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(relp_listener(&pki)) else {
        return;
    };

    // With TLS 1.3 our side of the handshake usually completes before the
    // receiver judges (here: misses) our certificate, and RELP's open fails;
    // if the receiver's refusal overtakes our last handshake flight, the
    // handshake itself fails. Either way no session, no message counted as
    // delivered, and the error points at the client certificate.
    let result = Connection::connect(&rsyslog.target(), &pki.client_options(), TIMEOUT).await;

    match result {
        Err(
            error @ (TransportError::Relp {
                source: RelpError::ClosedDuringOpen,
                ..
            }
            | TransportError::Tls { .. }),
        ) => assert!(error.to_string().contains("client certificate"), "{error}"),
        Err(other) => panic!("expected the RELP open or TLS to fail, got: {other}"),
        Ok(_) => panic!("a RELP session opened without the required client certificate"),
    }
    assert_eq!(
        rsyslog.lines_after(Duration::from_millis(200)),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected_naming_it() {
    let pki = Pki::generate();
    let listener = Listener::Tls {
        driver: Driver::GnuTls,
        only: None,
        require_client_cert: false,
        server: pki.server_tls_with(&pki.impostor),
    };
    let Some(rsyslog) = Rsyslog::start(listener) else {
        return;
    };
    let mut completed = Vec::new();

    let result = diagnose_with_progress(
        &rsyslog.target(),
        &pki.client_options(),
        TIMEOUT,
        b"<134>1 - gw-01 bessai-gw - - - must not arrive",
        |stage| completed.push(stage.stage),
    )
    .await;

    match result {
        Err(TransportError::TlsVerify { subject, reason }) => {
            assert_eq!(subject, pki.impostor.subject);
            assert!(reason.contains("unknown issuer"), "{reason}");
        }
        other => panic!("expected TlsVerify, got {other:?}"),
    }
    assert_eq!(completed, [Stage::Resolve, Stage::Connect]);
    assert_eq!(
        rsyslog.lines_after(Duration::from_millis(200)),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_expired_certificate_is_rejected_naming_it() {
    let pki = Pki::generate();
    let listener = Listener::Tls {
        driver: Driver::OpenSsl,
        only: None,
        require_client_cert: false,
        server: pki.server_tls_with(&pki.expired_receiver),
    };
    let Some(rsyslog) = Rsyslog::start(listener) else {
        return;
    };

    let result = Connection::connect(&rsyslog.target(), &pki.client_options(), TIMEOUT).await;

    match result {
        Err(error @ TransportError::TlsVerify { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&pki.expired_receiver.subject), "{message}");
            assert!(message.contains("expired on"), "{message}");
        }
        Err(other) => panic!("expected TlsVerify, got {other}"),
        Ok(_) => panic!("an expired certificate was accepted"),
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_rejected_naming_both() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(tls_listener(&pki, Driver::GnuTls, None, false)) else {
        return;
    };
    let options = TlsOptions {
        server_name: Some("siem.example.org".to_owned()),
        ..pki.client_options()
    };

    let result = Connection::connect(&rsyslog.target(), &options, TIMEOUT).await;

    match result {
        Err(TransportError::TlsVerify { subject, reason }) => {
            assert_eq!(subject, format!("CN={RECEIVER_CN}"));
            assert!(reason.contains("siem.example.org"), "{reason}");
            assert!(
                reason.contains("localhost"),
                "names in the certificate: {reason}"
            );
        }
        Err(other) => panic!("expected TlsVerify, got {other}"),
        Ok(_) => panic!("a certificate for another name was accepted"),
    }
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let port = support::free_port(Scheme::Tcp);
    let target: Target = format!("tcp://127.0.0.1:{port}")
        .parse()
        .expect("valid URL");

    let result = Connection::connect(&target, &TlsOptions::default(), TIMEOUT).await;

    match result {
        Err(TransportError::Connect { addr, source }) => {
            assert_eq!(addr.port(), port);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        Err(other) => panic!("expected Connect, got {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_within_the_timeout() {
    // The kernel completes the TCP handshake for a listening socket even
    // though nobody accepts, so the connection hangs in the TLS handshake:
    // the behaviour of a black-holing middlebox.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let pki = Pki::generate();
    let timeout = Duration::from_millis(500);

    for scheme in ["tls", "relp+tls"] {
        let target: Target = format!("{scheme}://127.0.0.1:{port}")
            .parse()
            .expect("valid URL");
        let started = Instant::now();
        let result = Connection::connect(&target, &pki.mutual_client_options(), timeout).await;
        let elapsed = started.elapsed();

        assert!(
            matches!(result, Err(TransportError::Timeout { stage: "TLS handshake", after }) if after == timeout),
            "{scheme}: {:?}",
            result.err()
        );
        assert!(
            elapsed >= timeout && elapsed < timeout * 3,
            "{scheme} took {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn relp_pointed_at_a_plain_tls_syslog_port_times_out_at_open() {
    // A common mistake: relp+tls:// aimed at the RFC 5425 port. TLS works,
    // but nobody answers the RELP open.
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(tls_listener(&pki, Driver::GnuTls, None, false)) else {
        return;
    };
    let target = Target {
        scheme: Scheme::RelpTls,
        ..rsyslog.target()
    };
    let timeout = Duration::from_millis(700);

    let result = Connection::connect(&target, &pki.mutual_client_options(), timeout).await;

    assert!(
        matches!(
            result,
            Err(TransportError::Timeout {
                stage: "RELP open",
                ..
            })
        ),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_tcp_receiver_that_went_away_fails_the_next_send() {
    let Some(mut rsyslog) = Rsyslog::start(Listener::Tcp) else {
        return;
    };
    let mut connection = deliver(
        &rsyslog.target(),
        &TlsOptions::default(),
        &[b"<134>1 - gw-01 bessai-gw - - - before"],
    )
    .await;
    rsyslog.wait_for_lines(1, ARRIVAL);

    rsyslog.stop();
    let result = connection
        .send(&[b"<134>1 - gw-01 bessai-gw - - - into a closed connection"])
        .await;

    assert!(
        matches!(result, Err(TransportError::ClosedByPeer { .. })),
        "the first write after the receiver closed must fail, got {result:?}"
    );
}

#[tokio::test]
async fn diagnose_relp_reports_every_stage_and_the_acknowledgement() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(relp_listener(&pki)) else {
        return;
    };
    let message = b"<134>1 - gw-01 bessai-gw - - - bessai-gw siem test";

    let report = diagnose(
        &rsyslog.target(),
        &pki.mutual_client_options(),
        TIMEOUT,
        message,
    )
    .await
    .expect("diagnosis succeeds");

    let stages: Vec<Stage> = report.stages.iter().map(|stage| stage.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Resolve,
            Stage::Connect,
            Stage::TlsHandshake,
            Stage::RelpOpen,
            Stage::Acknowledged,
            Stage::Close
        ]
    );
    assert_eq!(report.delivery, Delivery::Acknowledged);
    assert_eq!(report.peer.port(), rsyslog.port());
    let tls = report.tls.as_ref().expect("TLS details");
    assert_eq!(tls.server_subject, format!("CN={RECEIVER_CN}"));
    let printed = report.to_string();
    assert!(printed.contains(&format!("CN={RECEIVER_CN}")), "{printed}");
    assert!(
        printed.contains("the SIEM acknowledged the test message"),
        "{printed}"
    );
    assert_eq!(
        rsyslog.wait_for_lines(1, ARRIVAL),
        ["<134>1 - gw-01 bessai-gw - - - bessai-gw siem test"]
    );
}

#[tokio::test]
async fn diagnose_tcp_says_delivery_is_unconfirmed() {
    let Some(rsyslog) = Rsyslog::start(Listener::Tcp) else {
        return;
    };

    let report = diagnose(
        &rsyslog.target(),
        &TlsOptions::default(),
        TIMEOUT,
        b"<134>1 - gw-01 bessai-gw - - - tcp test",
    )
    .await
    .expect("diagnosis succeeds");

    let stages: Vec<Stage> = report.stages.iter().map(|stage| stage.stage).collect();
    assert_eq!(
        stages,
        [Stage::Resolve, Stage::Connect, Stage::Send, Stage::Close]
    );
    assert_eq!(report.delivery, Delivery::Unconfirmed);
    assert!(report.to_string().contains("check that the SIEM shows it"));
    assert_eq!(
        rsyslog.wait_for_lines(1, ARRIVAL),
        ["<134>1 - gw-01 bessai-gw - - - tcp test"]
    );
}
