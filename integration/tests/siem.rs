//! Conduit events reach the SOC: a real daemon in the gateway namespace
//! forwards a denied write, as CEF in RFC 5424 over RELP/TLS, to a real
//! rsyslog (in the same namespace, on its loopback), within a second.

#[path = "../../siem/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bessai_integration::{
    have_root,
    netns::{Deployment, PCS1, Testbed, json_lines, repo_root},
};
use support::{Listener, Pki, Rsyslog};

#[test]
fn a_denied_write_reaches_rsyslog_as_cef_within_a_second() {
    if !have_root("a_denied_write_reaches_rsyslog_as_cef_within_a_second") {
        return;
    }
    let mut tb = Testbed::with("siem", Deployment::Routed).unwrap();
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start_in(
        Listener::RelpTls {
            require_client_cert: true,
            server: pki.receiver_tls(),
        },
        Some(&tb.ns("gw")),
    ) else {
        return;
    };
    let client = pki.mutual_client_options();
    let siem = format!(
        "[siem]\nspool_dir = \"{spool}\"\naggregation_window_s = 10\n\n[[siem.destination]]\nurl = \"{url}\"\nformat = \"cef\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        spool = tb.work.join("spool").display(),
        url = rsyslog.target(),
        ca = client.ca.as_ref().unwrap().display(),
        cert = client.cert.as_ref().unwrap().display(),
        key = client.key.as_ref().unwrap().display(),
    );
    let config = tb
        .write_config_with(&repo_root().join("examples/bess-site.toml"), &siem)
        .unwrap();
    tb.start_gateway_config(&config).unwrap();
    // The start is audited to the SIEM first.
    let lines = rsyslog.wait_for_lines(1, Duration::from_secs(5));
    assert!(lines[0].contains("|200|Gateway started|"), "{lines:?}");

    let sent = Instant::now();
    let r = tb.client("ems", false, &["write-register:41:999"]).unwrap();
    assert_ne!(r[0]["ok"], true, "the write is denied");
    let cef = loop {
        if let Some(l) = rsyslog
            .lines()
            .into_iter()
            .find(|l| l.contains("|100|Modbus transaction denied|"))
        {
            break l;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no CEF line for the denial"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let latency = sent.elapsed();
    println!("denied write to CEF line in rsyslog: {latency:?}\n{cef}");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    for field in [
        "src=10.10.1.10",
        &format!("dst={PCS1}"),
        "dpt=502",
        "proto=TCP",
        "reason=address-denied",
        "cs1=ems-to-pcs-1 cs1Label=conduit",
        "cn2=6 cn2Label=modbusFunctionCode",
        "cn3=41 cn3Label=modbusAddress",
        "cn1=1 cn1Label=modbusUnitId",
        "cs2Label=policySha256",
    ] {
        assert!(cef.contains(field), "missing {field} in {cef}");
    }
    assert!(cef.starts_with("<163>1 "), "RFC 5424, local4.err: {cef}");

    // A clean stop is audited too, and the spool is empty afterwards.
    tb.stop_gateway();
    let lines = rsyslog.wait_for_lines(3, Duration::from_secs(5));
    assert!(
        lines.iter().any(|l| l.contains("|201|Gateway stopped|")),
        "{lines:?}"
    );
    let log = json_lines(&tb.gateway_log());
    assert!(!log.iter().any(|l| l["level"] == "ERROR"), "{log:?}");
}

/// `bessai-gw siem test` against a real rsyslog: exit 0 and the marked test
/// event in rsyslog's file; with a server certificate from another CA, exit
/// 69 naming the certificate's subject and the reason.
#[test]
fn siem_test_proves_the_pipeline_and_names_a_bad_certificate() {
    let pki = Pki::generate();
    let Some(rsyslog) = Rsyslog::start(Listener::RelpTls {
        require_client_cert: true,
        server: pki.receiver_tls(),
    }) else {
        return;
    };
    let tls = pki.mutual_client_options();
    let run = |ca: &std::path::Path| {
        std::process::Command::new(bessai_integration::netns::bin("bessai-gw"))
            .args(["siem", "test", "--target", &rsyslog.target().to_string()])
            .arg("--ca")
            .arg(ca)
            .arg("--cert")
            .arg(tls.cert.as_ref().unwrap())
            .arg("--key")
            .arg(tls.key.as_ref().unwrap())
            .output()
            .unwrap()
    };
    let out = run(tls.ca.as_ref().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines = rsyslog.wait_for_lines(1, Duration::from_secs(5));
    assert!(lines[0].contains("|900|SIEM pipeline test|1|"), "{lines:?}");
    assert!(lines[0].contains("BESSAI SIEM PIPELINE TEST"), "{lines:?}");

    // A CA that did not sign the receiver's certificate.
    let other = Pki::generate();
    let out = run(other.client_options().ca.as_ref().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(69), "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.contains("CN="),
        "the certificate's subject: {stdout}"
    );
    assert!(
        stdout.contains("was rejected: ") && stdout.contains("CA"),
        "the reason: {stdout}"
    );
}
