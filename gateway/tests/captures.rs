//! `bessai-gw policy test` on public captures that other Modbus analyzers
//! test with (tests/data/README.md), asserting the verdicts their sources'
//! expected outputs imply.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data")).join(name)
}

/// A policy with one catch-all zone and one conduit per server address.
fn policy(servers: &[&str], units: &str, rules: &str) -> String {
    let mut p = String::from("version = 1\n[[zone]]\nname = \"all\"\nnetworks = [\"0.0.0.0/0\"]\n");
    for (i, s) in servers.iter().enumerate() {
        p += &format!(
            "[[asset]]\nname = \"srv-{i}\"\nzone = \"all\"\naddress = \"{s}\"\nunit_ids = [{units}]\n"
        );
    }
    for (i, _) in servers.iter().enumerate() {
        p += &format!(
            "[[conduit]]\nname = \"to-srv-{i}\"\nfrom = \"all\"\nsources = [\"0.0.0.0/0\"]\nto = \"srv-{i}\"\n{rules}\n"
        );
    }
    p
}

/// Runs the replay; returns (exit code, transactions).
fn replay(policy: &str, capture: &str) -> (i32, Vec<Value>) {
    let dir = std::env::temp_dir().join(format!("bessai-captures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stem = std::path::Path::new(capture)
        .file_name()
        .unwrap()
        .to_string_lossy();
    let path = dir.join(format!("{stem}-{n}.toml"));
    std::fs::write(&path, policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(["policy", "test"])
        .arg(&path)
        .arg("--pcap")
        .arg(data(capture))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap(), lines)
}

fn count(ts: &[Value], verdict: &str) -> usize {
    ts.iter().filter(|t| t["verdict"] == verdict).count()
}

const ANY: &str = "[\"0-65535\"]";

#[test]
fn suricata_modbus_three_policies() {
    let servers = ["10.0.0.3", "10.0.0.8"];
    let fc1_fc3 = format!(
        "[[conduit.rule]]\nfunction = 1\naddresses = {ANY}\n[[conduit.rule]]\nfunction = 3\naddresses = {ANY}\n"
    );
    let (code, ts) = replay(
        &policy(&servers, "10", &fc1_fc3),
        "suricata-verify-modbus.pcap",
    );
    assert_eq!(
        (ts.len(), count(&ts, "allow"), count(&ts, "deny")),
        (18, 3, 15)
    );
    assert_eq!(code, 1, "something was denied");
    let denied_fc = |fc: u64| {
        ts.iter()
            .filter(|t| t["verdict"] == "deny" && t["function"] == fc)
            .count()
    };
    assert_eq!(denied_fc(5) + denied_fc(6), 3, "writes");
    assert_eq!((denied_fc(8), denied_fc(43), denied_fc(17)), (8, 2, 2));

    let coil0 = "[[conduit.rule]]\nfunction = 1\naddresses = [0]\n";
    let (_, ts) = replay(
        &policy(&servers, "10", coil0),
        "suricata-verify-modbus.pcap",
    );
    assert_eq!((count(&ts, "allow"), count(&ts, "deny")), (1, 17));

    let everything = format!(
        "[[conduit.rule]]\nfunction = 1\naddresses = {ANY}\n[[conduit.rule]]\nfunction = 3\naddresses = {ANY}\n\
         [[conduit.rule]]\nfunction = 5\naddresses = {ANY}\n[[conduit.rule]]\nfunction = 6\naddresses = {ANY}\n\
         [[conduit.rule]]\nfunction = 8\nsubfunctions = {ANY}\n[[conduit.rule]]\nfunction = 17\n\
         [[conduit.rule]]\nfunction = 43\nmei_types = [\"0-255\"]\n"
    );
    let (_, ts) = replay(
        &policy(&servers, "11", &everything),
        "suricata-verify-modbus.pcap",
    );
    assert_eq!(
        count(&ts, "allow"),
        0,
        "unit 10 traffic under a unit 11 policy"
    );
    assert!(
        ts.iter()
            .all(|t| t["reason"] == "unit-denied" || t["reason"] == "pdu-malformed"),
        "{ts:?}"
    );
}

#[test]
fn suricata_write_keywords() {
    let rules = "[[conduit.rule]]\nfunction = 16\naddresses = [\"100-101\"]\n[[conduit.rule]]\nfunction = 6\naddresses = [\"100-101\"]\n\
                 [[conduit.rule]]\nfunction = 22\naddresses = [\"100-101\"]\n";
    let (_, ts) = replay(
        &policy(&["10.0.0.2"], "1", rules),
        "suricata-verify-modbus-keywords-write.pcap",
    );
    assert_eq!(count(&ts, "allow"), 1);
    let allowed = ts.iter().find(|t| t["verdict"] == "allow").unwrap();
    assert_eq!(
        (allowed["function"].as_u64(), allowed["address"].as_u64()),
        (Some(16), Some(100))
    );
    let denied: Vec<(u64, u64)> = ts
        .iter()
        .filter(|t| t["verdict"] == "deny")
        .map(|t| {
            (
                t["function"].as_u64().unwrap(),
                t["address"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        vec![(22, 200), (6, 300)],
        "a response is not a second write"
    );
}

#[test]
fn zeek_small_read_only() {
    let rules = format!(
        "[[conduit.rule]]\nfunction = 1\naddresses = {ANY}\n[[conduit.rule]]\nfunction = 3\naddresses = {ANY}\n"
    );
    let (_, ts) = replay(
        &policy(&["118.189.96.132"], "1", &rules),
        "zeek-modbusSmall.pcap",
    );
    assert_eq!((count(&ts, "allow"), count(&ts, "deny")), (8, 8));
    assert!(
        ts.iter()
            .filter(|t| t["verdict"] == "deny")
            .all(|t| t["function"] == 15)
    );
}

#[test]
fn out_of_specification_requests_are_denied_whatever_the_policy() {
    let rules = format!("[[conduit.rule]]\nfunction = 4\naddresses = {ANY}\n");
    let (_, ts) = replay(
        &policy(&["10.10.5.104"], "255", &rules),
        "zeek-fuzz-1011.pcap",
    );
    assert!(
        ts.iter().any(|t| t["reason"] == "quantity-invalid"),
        "the quantity-147 read: {ts:?}"
    );
    assert_eq!(count(&ts, "allow"), 0);

    let all_units = (0..=255)
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let rules = format!("[[conduit.rule]]\nfunction = 23\nread = {ANY}\nwrite = {ANY}\n");
    let (_, ts) = replay(
        &policy(&["192.168.88.95"], &all_units, &rules),
        "zeek-4SICS-GeekLounge-151022-min.pcap",
    );
    assert_eq!(
        (ts.len(), count(&ts, "deny")),
        (1, 1),
        "the malformed FC23: {ts:?}"
    );
}

#[test]
fn read_device_identification_only_where_named() {
    let named = "[[conduit.rule]]\nfunction = 43\nmei_types = [14]\n";
    let (code, ts) = replay(
        &policy(&["192.168.88.100"], "0, 255", named),
        "zeek-modbus-eit.pcap",
    );
    assert_eq!((code, count(&ts, "allow"), count(&ts, "deny")), (0, 2, 0));
    let other = format!("[[conduit.rule]]\nfunction = 3\naddresses = {ANY}\n");
    let (code, ts) = replay(
        &policy(&["192.168.88.100"], "0, 255", &other),
        "zeek-modbus-eit.pcap",
    );
    assert_eq!((code, count(&ts, "allow"), count(&ts, "deny")), (1, 0, 2));
}

#[test]
fn malformed_and_truncated_captures_exit_65() {
    let p = policy(
        &["10.0.0.2"],
        "1",
        "[[conduit.rule]]\nfunction = 3\naddresses = [0]\n",
    );
    let dir = std::env::temp_dir().join(format!("bessai-bad-captures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy_path = dir.join("p.toml");
    std::fs::write(&policy_path, p).unwrap();
    let good = std::fs::read(data("suricata-verify-modbus-keywords-write.pcap")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 7].to_vec()),
        (
            "not-a-capture",
            b"hello, this is not a pcap file at all".to_vec(),
        ),
        ("empty", Vec::new()),
        ("corrupt-record", {
            let mut g = good.clone();
            g[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // first record's caplen
            g
        }),
    ];
    for (name, bytes) in cases {
        let path = dir.join(format!("{name}.pcap"));
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
            .args(["policy", "test"])
            .arg(&policy_path)
            .arg("--pcap")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: names the file: {stderr}"
        );
    }
}

/// Zeek's icsnpp-modbus expected log is a golden file for parsed fields: our
/// transactions must agree on function, unit, address and quantity.
#[test]
fn fields_agree_with_the_icsnpp_golden_log() {
    let names = [
        ("READ_COILS", 1),
        ("READ_DISCRETE_INPUTS", 2),
        ("READ_HOLDING_REGISTERS", 3),
        ("READ_INPUT_REGISTERS", 4),
        ("WRITE_SINGLE_COIL", 5),
        ("WRITE_SINGLE_REGISTER", 6),
        ("READ_EXCEPTION_STATUS", 7),
        ("DIAGNOSTICS", 8),
        ("WRITE_MULTIPLE_COILS", 15),
        ("WRITE_MULTIPLE_REGISTERS", 16),
        ("REPORT_SLAVE_ID", 17),
        ("READ_FILE_RECORD", 20),
        ("WRITE_FILE_RECORD", 21),
        ("MASK_WRITE_REGISTER", 22),
        ("READ_WRITE_MULTIPLE_REGISTERS", 23),
        ("READ_FIFO_QUEUE", 24),
        ("ENCAP_INTERFACE_TRANSPORT", 43),
    ];
    let golden =
        std::fs::read_to_string(data("icsnpp-modbus-example.expected-detailed.log")).unwrap();
    // Any conduit: the fields are what is compared, not the verdicts.
    let (_, ts) = replay(
        &policy(&["10.0.0.1"], "1", "[[conduit.rule]]\nfunction = 17\n"),
        "icsnpp-modbus-example.pcap",
    );
    let mut compared = 0;
    for row in golden.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = row.split('\t').collect();
        let (tid, unit, func, address, quantity) = (f[6], f[7], f[8], f[9], f[10]);
        let code = names
            .iter()
            .find(|(n, _)| *n == func)
            .unwrap_or_else(|| panic!("function {func}"))
            .1;
        let t = ts
            .iter()
            .find(|t| {
                t["transaction_id"].as_u64() == tid.parse().ok()
                    && t["unit"].as_u64() == unit.parse().ok()
                    && t["function"] == code
            })
            .unwrap_or_else(|| panic!("no transaction for golden row {row}"));
        if address != "-" {
            assert_eq!(t["address"].to_string(), address, "address of {row}");
        }
        if quantity != "-" {
            assert_eq!(t["quantity"].to_string(), quantity, "quantity of {row}");
        }
        compared += 1;
    }
    assert_eq!(compared, 26, "every golden row");
    assert_eq!(ts.len(), 24, "one transaction per request in the capture");
}

fn gw(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(args)
        .output()
        .unwrap()
}

/// A learned draft is a valid policy under which the same capture replays
/// with nothing denied but what is malformed whatever the policy.
#[test]
fn learned_drafts_allow_their_captures() {
    let dir = std::env::temp_dir().join(format!("bessai-learn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (capture, expect_denied) in [
        ("zeek-modbusSmall.pcap", 0),
        ("icsnpp-modbus-example.pcap", 0),
        ("suricata-verify-modbus.pcap", 2),
    ] {
        let draft = dir.join(format!("{capture}.toml"));
        let pcap = data(capture);
        let out = gw(&[
            "policy",
            "learn",
            "--pcap",
            pcap.to_str().unwrap(),
            "--output",
            draft.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&draft).unwrap();
        let out = gw(&["policy", "check", draft.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{capture}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, ts) = replay(&text, capture);
        let denied: Vec<&Value> = ts.iter().filter(|t| t["verdict"] == "deny").collect();
        assert_eq!(denied.len(), expect_denied, "{capture}: {denied:?}");
        // Only malformed requests (the FC 43 requests with a trailing byte) stay denied.
        assert!(
            denied.iter().all(|t| t["function"] == 43),
            "{capture}: {denied:?}"
        );
    }
    let text = std::fs::read_to_string(dir.join("suricata-verify-modbus.pcap.toml")).unwrap();
    assert!(
        text.contains(
            "# REVIEW: a write function\n  # 2 transactions, first seen 2004-08-26T12:13:52Z"
        ),
        "{text}"
    );
    assert!(
        text.contains("addresses = [\"0\", \"2-3\"]"),
        "coil reads 0 and 2-3 kept apart: {text}"
    );
}

#[test]
fn diff_names_each_change_and_the_transactions_it_flips() {
    let dir = std::env::temp_dir().join(format!("bessai-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = |writes: &str| {
        format!(
            "[[conduit.rule]]\nfunction = 16\naddresses = [{writes}]\n[[conduit.rule]]\nfunction = 6\naddresses = [\"300\"]\n"
        )
    };
    let old = policy(&["10.0.0.2"], "1", &rules("\"100-101\""));
    let new = policy(&["10.0.0.2"], "1", &rules("\"101-102\"")).replacen(
        "to = \"srv-0\"\n",
        "to = \"srv-0\"\nmode = \"monitor\"\n",
        1,
    );
    let (o, n) = (dir.join("old.toml"), dir.join("new.toml"));
    std::fs::write(&o, old).unwrap();
    std::fs::write(&n, new).unwrap();
    let pcap = data("suricata-verify-modbus-keywords-write.pcap");
    let out = gw(&[
        "policy",
        "diff",
        o.to_str().unwrap(),
        n.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("conduit to-srv-0: mode enforce -> monitor"),
        "{text}"
    );
    assert!(
        text.contains("write_multiple_registers (FC 16) widened to addresses 102"),
        "{text}"
    );
    assert!(
        text.contains("write_multiple_registers (FC 16) no longer at addresses 100"),
        "{text}"
    );
    // The FC16 write to 100-101 was allowed and no longer is; the FC6 write to 300 still is.
    assert!(
        text.contains("1 allowed before and denied now, 0 denied before and allowed now"),
        "{text}"
    );
    assert!(
        text.contains("allow -> deny") && text.contains("fc 16 address 100 quantity 2"),
        "{text}"
    );
}

/// The same capture as pcapng (nanosecond timestamps) replays identically.
#[test]
fn pcapng_replays_like_pcap() {
    let pcap = std::fs::read(data("suricata-verify-modbus-keywords-write.pcap")).unwrap();
    let block = |kind: u32, body: &[u8]| {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend(std::iter::repeat_n(0, pad));
        b.extend_from_slice(&len.to_le_bytes());
        b
    };
    let mut ng = block(
        0x0A0D0D0A,
        &[
            0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    );
    // IDB: Ethernet, snaplen 65535, option if_tsresol = 9 (ns), end of options.
    ng.extend(block(
        1,
        &[
            1, 0, 0, 0, 0xff, 0xff, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0,
        ],
    ));
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let u32_at = |o: usize| u32::from_le_bytes(pcap[o..o + 4].try_into().unwrap());
        let (sec, usec, caplen) = (
            u32_at(off) as u64,
            u32_at(off + 4) as u64,
            u32_at(off + 8) as usize,
        );
        let ns = sec * 1_000_000_000 + usec * 1000;
        let mut body = Vec::new();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&((ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ns as u32).to_le_bytes());
        body.extend_from_slice(&(caplen as u32).to_le_bytes());
        body.extend_from_slice(&(caplen as u32).to_le_bytes());
        body.extend_from_slice(&pcap[off + 16..off + 16 + caplen]);
        ng.extend(block(6, &body));
        off += 16 + caplen;
    }
    let name = format!("keywords-{}.pcapng", std::process::id());
    let path = std::env::temp_dir().join(&name);
    std::fs::write(&path, ng).unwrap();
    let rules = "[[conduit.rule]]\nfunction = 16\naddresses = [\"100-101\"]\n";
    let p = policy(&["10.0.0.2"], "1", rules);
    let (_, from_pcap) = replay(&p, "suricata-verify-modbus-keywords-write.pcap");
    let (_, from_ng) = replay(&p, path.to_str().unwrap());
    assert_eq!(from_pcap.len(), 3);
    assert_eq!(from_ng, from_pcap, "same transactions, same timestamps");
}
