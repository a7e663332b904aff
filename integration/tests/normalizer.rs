//! The TCP normalizer against attackers who control their own TCP (issue 10),
//! judged by what the server behind the gateway executed: a raw-socket
//! injector (integration/clients/tcp_inject.py, scapy) in the engineering
//! workstation's namespace, whose conduit allows reads only, against the
//! inverter simulator's real Linux TCP stack.
//!
//! Every attack is first run with no gateway in the path, where the write
//! must land: that shows the attack works against this server, so a run with
//! the gateway that leaves the server untouched proves the gateway stopped
//! it, not that the attack was broken.

use std::{path::PathBuf, time::Duration};

use bessai_integration::{
    have_root,
    netns::{ENG, PCS1, Testbed, json_lines, packet_counters, repo_root, wait_until},
};
use serde_json::{Value, json};

fn example_policy() -> PathBuf {
    repo_root().join("examples/bess-site.toml")
}

/// Runs `scenarios` from the engineering workstation, each on a connection
/// of its own; `seed` picks ports and ISNs (a different one per phase, so a
/// connection never reuses an earlier phase's 4-tuple).
fn attack(tb: &Testbed, seed: u32, scenarios: &[&str]) -> Vec<Value> {
    let seed = seed.to_string();
    let mut args = vec!["--src", ENG, "--dst", PCS1, "--seed", &seed];
    args.extend_from_slice(scenarios);
    let lines = tb.inject("eng", &args).unwrap();
    assert_eq!(
        lines.len(),
        scenarios.len(),
        "one line per scenario: {lines:?}"
    );
    for (line, name) in lines.iter().zip(scenarios) {
        assert_eq!(line["scenario"], *name, "{line}");
        // The connection really was open: an allowed read was answered.
        assert_eq!(
            line["read"].as_array().map(Vec::len),
            Some(2),
            "{name}: the allowed read before the attack: {line}"
        );
    }
    lines
}

/// The server's state (`writes`, `holding`, `coils`) once it holds exactly
/// `writes` writes; panics if it does not get there.
fn server_after_writes(tb: &Testbed, writes: u64) -> Value {
    wait_until(
        &format!("the simulator executing {writes} writes"),
        Duration::from_secs(5),
        || {
            let s = tb.server_state().map_err(|e| e.to_string())?;
            if s["writes"] == writes {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
}

/// Without the gateway: each attack's bytes are taken by the server's TCP
/// and its write is executed, with exactly the expected effect.
fn attacks_land_without_the_gateway(
    tb: &Testbed,
    scenarios: &[&str],
    holding: Value,
    coils: Value,
) {
    let before = tb.server_state().unwrap();
    assert_eq!(before["writes"], 0, "a fresh simulator: {before}");
    let lines = attack(tb, 1, scenarios);
    for line in &lines {
        assert_eq!(line["reset"], false, "{line}");
        assert_eq!(
            line["accepted"], line["attack_bytes"],
            "without a gateway the server's TCP takes every attack byte: {line}"
        );
    }
    let after = server_after_writes(tb, scenarios.len() as u64);
    assert_eq!(
        (&after["holding"], &after["coils"]),
        (&holding, &coils),
        "the attacks wrote what they were built to write: {after}"
    );
    for line in &lines {
        assert!(
            !writes_from(tb, line).is_empty(),
            "the simulator logged no write from attack connection {line}"
        );
    }
}

/// The simulator's write events from the attack connection of `line`.
fn writes_from(tb: &Testbed, line: &Value) -> Vec<Value> {
    let peer = format!("{ENG}:{}", line["sport"]);
    json_lines(&tb.work.join("inverter.log"))
        .into_iter()
        .filter(|l| l["event"] == "write" && l["peer"] == peer.as_str())
        .collect()
}

/// With the gateway: the server's TCP took none of the attack bytes (or the
/// connection was reset), the simulator executed nothing, and the read-only
/// conduit still serves reads, to both clients, on new connections.
fn attacks_stopped_by_the_gateway(tb: &mut Testbed, scenarios: &[&str]) -> Vec<Value> {
    tb.start_gateway(&example_policy()).unwrap();
    let before = tb.server_state().unwrap();
    let lines = attack(tb, 2, scenarios);
    for line in &lines {
        assert!(
            line["reset"] == true || line["accepted"] == 0,
            "the server's TCP took attack bytes through the gateway: {line}"
        );
    }
    for python in [false, true] {
        let r = tb
            .client("eng", python, &["read-holding:0:2", "read-input:0:3"])
            .unwrap();
        assert!(
            r.iter().all(|l| l["ok"] == true),
            "reads on a new connection after the attacks (pymodbus: {python}): {r:?}"
        );
    }
    let after = tb.server_state().unwrap();
    assert_eq!(
        after, before,
        "the simulator executed a write through the gateway"
    );
    for line in &lines {
        let writes = writes_from(tb, line);
        assert!(
            writes.is_empty(),
            "the simulator logged writes from attack connection {line}: {writes:?}"
        );
    }
    lines
}

/// Stops the gateway (it drains its events and logs its counters) and
/// returns its log.
fn gateway_log(tb: &mut Testbed) -> Vec<Value> {
    let status = tb.stop_gateway().expect("the gateway was running");
    assert!(status.success(), "clean exit: {status:?}");
    json_lines(&tb.gateway_log())
}

/// The denial events for the attack connection of `line`.
fn denials<'a>(log: &'a [Value], line: &Value) -> Vec<&'a Value> {
    let src = format!("{ENG}:{}", line["sport"]);
    log.iter()
        .filter(|l| l["message"] == "denied" && l["src"] == src.as_str())
        .collect()
}

/// Issue 10, finding 1: a SYN on an open connection (with a good or a bad
/// checksum) must not move what the gateway parses, so bytes the server
/// trims cannot hide a write behind allowed reads.
#[test]
fn syn_resync_cannot_make_a_read_only_client_write() {
    if !have_root("syn_resync_cannot_make_a_read_only_client_write") {
        return;
    }
    let mut tb = Testbed::new("resync").unwrap();
    let scenarios = [
        "syn-resync-fc6",
        "syn-resync-fc15",
        "badsum-syn-resync-fc15",
    ];
    attacks_land_without_the_gateway(
        &tb,
        &scenarios,
        json!({"0": 6}),
        // Both FC 15 attacks force coils 0-5: the first sets 0 and 1, the
        // second (its byte is 4) leaves only 2 on.
        json!({"2": 1}),
    );
    let lines = attacks_stopped_by_the_gateway(&mut tb, &scenarios);
    let log = gateway_log(&mut tb);
    // Reported, not only stopped: the segment's new bytes (past what the
    // server acknowledged) are a write, and the gateway has to say so.
    let unreported: Vec<&Value> = lines
        .iter()
        .filter(|l| denials(&log, l).is_empty())
        .collect();
    assert!(
        unreported.is_empty(),
        "attacks stopped without a denial event: {unreported:?}; packet counters: {:?}",
        packet_counters(&log)
    );
}

/// Issue 10, finding 2: bytes the gateway judged and the server has not
/// acknowledged may be sent again only as they were. A first copy with a
/// bad checksum (the server drops it; the gateway cannot know) and a
/// different second copy is the evasion a trimming receiver makes
/// dangerous; the splice covers two judged segments with one whose second
/// half is a write.
#[test]
fn different_bytes_in_a_retransmission_are_denied() {
    if !have_root("different_bytes_in_a_retransmission_are_denied") {
        return;
    }
    let mut tb = Testbed::new("retrans").unwrap();
    let scenarios = ["retransmit-different", "splice", "partial-splice"];
    attacks_land_without_the_gateway(
        &tb,
        &scenarios,
        json!({"7": 0x0BAD, "10": 0xD00D}),
        json!({"9": 1}),
    );
    let lines = attacks_stopped_by_the_gateway(&mut tb, &scenarios);
    let log = gateway_log(&mut tb);
    for line in &lines[..2] {
        let denied = denials(&log, line);
        assert!(
            denied
                .iter()
                .any(|d| d["reason"] == "tcp-retransmit-mismatch"),
            "{}: a tcp-retransmit-mismatch denial: {denied:?}",
            line["scenario"]
        );
        assert_eq!(
            line["reset"], true,
            "{line}: the connection of a denied segment is reset"
        );
    }
    // The partial splice overlaps only part of a judged segment: the gateway
    // cannot compare it, drops it without an event and counts it.
    let counters = packet_counters(&log);
    assert!(
        counters
            .get("tcp-retransmit-unverifiable")
            .is_some_and(|n| *n >= 2),
        "both partial copies dropped as unverifiable: {counters:?}"
    );
}

/// The cause of the unreported SYN-resync attempts above, on the host
/// decision (the kernel runs the same code): once the server acknowledged
/// everything judged, a segment that starts a few bytes below that point and
/// carries new bytes has an empty overlap to verify; its old bytes are
/// harmless (the server discards them) and its new bytes must be judged from
/// the ADU boundary where the judged stream ended. They are dropped as
/// "unverifiable" instead: a write in them goes unreported, and an allowed
/// request sent that way by a client's TCP never gets through.
#[test]
fn new_bytes_behind_an_acknowledged_overlap_are_judged() {
    use bessai_common::{
        Reason,
        craft::{TCP_ACK, TCP_PSH, TCP_SYN, TcpFrame, adu, pdu},
    };
    use bessai_integration::{example_compiled, host_tables, host_verdict};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let (client, server) = (ip(ENG), ip(PCS1));
    let verdict = |seq_from_isn: u32, payload: Vec<u8>| {
        let mut host = host_tables(&example_compiled());
        let (isn, server_isn) = (1000u32, 7000u32);
        let c = |seq: u32| TcpFrame::new(client, server, 40000, 502).seq(isn + seq);
        let s = |ack: u32| {
            TcpFrame::new(server, client, 502, 40000)
                .seq(server_isn + 1)
                .ack(isn + ack)
        };
        let steps = [
            (c(0).ack(0).flags(TCP_SYN), Reason::TcpControl),
            (
                s(1).seq(server_isn).flags(TCP_SYN | TCP_ACK),
                Reason::Response,
            ),
            (c(1).ack(server_isn + 1).flags(TCP_ACK), Reason::TcpControl),
            (
                c(1).ack(server_isn + 1)
                    .payload(adu(1, 1, &pdu::read_holding(0, 2))),
                Reason::Allowed,
            ),
            // The answer acknowledges all 12 request bytes.
            (
                s(13)
                    .flags(TCP_ACK | TCP_PSH)
                    .payload(vec![0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 0, 0, 1]),
                Reason::Response,
            ),
        ];
        for (frame, want) in steps {
            assert_eq!(
                host_verdict(&mut host, &frame.build()).reason,
                want,
                "{frame:?}"
            );
        }
        let last = c(seq_from_isn).ack(server_isn + 14).payload(payload);
        host_verdict(&mut host, &last.build()).reason
    };
    let read = adu(1, 1, &pdu::read_holding(0, 2));
    // The last 6 bytes of the read again, then a new allowed read.
    let mut allowed = read[6..].to_vec();
    allowed.extend(adu(2, 1, &pdu::read_holding(0, 2)));
    // The last 6 bytes again, then FC 15 (what the SYN-resync server parses).
    let mut write = read[6..].to_vec();
    write.extend(adu(3, 1, &pdu::write_coils(0, 6)));
    let got = (verdict(7, allowed), verdict(7, write));
    assert_eq!(
        got,
        (Reason::Allowed, Reason::FunctionDenied),
        "new bytes after an acknowledged overlap: (allowed read, write)"
    );
}
