//! The zone boundary on the wire: a real kernel running the real XDP object
//! in a gateway namespace between SCADA hosts and an inverter simulator, with
//! real Modbus/TCP clients (our tokio-modbus based one and pymodbus).

use std::{fs, path::PathBuf};

use bessai_integration::{
    have_root,
    netns::{Testbed, json_lines, repo_root},
};
use serde_json::Value;

fn example_policy() -> PathBuf {
    repo_root().join("examples/bess-site.toml")
}

fn ok(v: &Value) -> bool {
    v["ok"].as_bool() == Some(true)
}

fn ms(v: &Value) -> f64 {
    v["ms"].as_f64().unwrap_or(f64::MAX)
}

/// The checks of the enforce-mode test, run with one client implementation.
fn enforce_checks(tb: &Testbed, python: bool) {
    let who = if python { "pymodbus" } else { "modbus-sim" };
    // EMS: allowed read, forbidden write, then the next allowed read after
    // the client's reconnect, an allowed setpoint write.
    let r = tb
        .client(
            "ems",
            python,
            &[
                "read-holding:0:2",
                "write-register:41:999",
                "read-holding:0:2",
                "write-register:40:123",
            ],
        )
        .unwrap();
    assert!(ok(&r[0]), "{who}: allowed read returns data: {}", r[0]);
    assert_eq!(
        r[0]["values"],
        serde_json::json!([0, 1]),
        "{who}: register contents"
    );
    assert!(!ok(&r[1]), "{who}: the forbidden write fails: {}", r[1]);
    assert!(ok(&r[2]), "{who}: the next allowed read succeeds: {}", r[2]);
    let recovery = ms(&r[1]) + ms(&r[2]);
    assert!(
        recovery < 1000.0,
        "{who}: denied write to next allowed read took {recovery} ms"
    );
    assert!(
        ok(&r[3]),
        "{who}: the allowed setpoint write passes: {}",
        r[3]
    );
    let regs = tb.changed_registers().unwrap();
    assert!(
        regs.get("41").is_none(),
        "{who}: the forbidden write reached the server: {regs}"
    );
    assert_eq!(
        regs["40"], 123,
        "{who}: the allowed write reached the server"
    );

    // Engineering workstation: reads only.
    let r = tb
        .client(
            "eng",
            python,
            &["read-holding:0:2", "write-register:40:7", "read-input:0:2"],
        )
        .unwrap();
    assert!(ok(&r[0]), "{who}: eng read: {}", r[0]);
    assert!(!ok(&r[1]), "{who}: eng write denied: {}", r[1]);
    assert_eq!(
        tb.changed_registers().unwrap()["40"],
        123,
        "{who}: eng write never reached the server"
    );

    // A host in no conduit gets nothing through, not even the handshake.
    let r = tb.client("out", python, &["read-holding:0:2"]).unwrap();
    assert!(!ok(&r[0]), "{who}: outsider read must fail: {}", r[0]);
}

#[test]
fn forbidden_write_never_reaches_the_inverter() {
    if !have_root("forbidden_write_never_reaches_the_inverter") {
        return;
    }
    let mut tb = Testbed::new("enforce").unwrap();
    tb.start_gateway(&example_policy()).unwrap();
    enforce_checks(&tb, false);
    enforce_checks(&tb, true);

    let status = tb.stop_gateway().expect("gateway was running");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let log = json_lines(&tb.gateway_log());
    let denied: Vec<&Value> = log.iter().filter(|l| l["message"] == "denied").collect();
    let write41 = denied
        .iter()
        .find(|l| l["function"] == 6 && l["address"] == 41)
        .unwrap_or_else(|| panic!("a denied event for the write to 41 in {denied:?}"));
    assert_eq!(write41["reason"], "address-denied");
    assert_eq!(write41["unit"], 1);
    assert_eq!(write41["quantity"], 1);
    assert!(
        write41["conduit"].as_str().unwrap().contains("ems"),
        "{write41}"
    );
    assert!(write41["src"].as_str().unwrap().starts_with("10.10.1.10:"));
    assert!(denied.iter().any(
        |l| l["reason"] == "no-conduit" && l["src"].as_str().unwrap().starts_with("10.10.1.99")
    ));
    assert!(log.iter().any(|l| l["message"] == "detached, exiting"));
    // After the gateway detached, nothing judges: the boundary program is gone.
    let links = tb.exec("gw", &["ip", "-d", "link", "show"]).unwrap();
    assert!(!links.contains("prog/xdp"), "XDP detached on exit: {links}");
}

#[test]
fn monitor_mode_passes_and_logs() {
    if !have_root("monitor_mode_passes_and_logs") {
        return;
    }
    let mut tb = Testbed::new("monitor").unwrap();
    let policy = fs::read_to_string(example_policy()).unwrap();
    let monitored = policy.replace("mode = \"enforce\"", "mode = \"monitor\"");
    assert_ne!(policy, monitored, "the example names its mode explicitly");
    let path = tb.work.join("monitor.toml");
    fs::write(&path, monitored).unwrap();
    tb.start_gateway(&path).unwrap();

    let r = tb
        .client("ems", false, &["write-register:41:555", "read-holding:0:1"])
        .unwrap();
    assert!(ok(&r[0]) && ok(&r[1]), "monitor mode passes: {r:?}");
    assert_eq!(tb.changed_registers().unwrap()["41"], 555);
    tb.stop_gateway();
    let log = json_lines(&tb.gateway_log());
    let hit = log
        .iter()
        .find(|l| l["function"] == 6 && l["address"] == 41)
        .expect("the monitored write is logged");
    assert_eq!(hit["monitor"], true);
    assert_eq!(hit["message"], "would deny (monitor mode)");
}

/// A capture taken on the wire, replayed with `policy test`, gives the same
/// allowed and denied transactions as the XDP program did.
#[test]
fn replaying_a_wire_capture_agrees_with_the_kernel() {
    if !have_root("replaying_a_wire_capture_agrees_with_the_kernel") {
        return;
    }
    let mut tb = Testbed::new("replay").unwrap();
    tb.start_gateway(&example_policy()).unwrap();
    // Captured at the EMS host, so the capture holds what the client sent
    // before the gateway judged it.
    let pcap = tb.work.join("ems.pcap");
    let tcpdump = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.ns("ems"),
            "tcpdump",
            "-i",
            "any",
            "-U",
            "-w",
        ])
        .arg(&pcap)
        .arg("tcp port 502")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let ops = [
        "read-holding:0:2",
        "write-register:41:7",
        "read-holding:10:5",
        "write-registers:40:1,2",
        "read-input:0:3",
    ];
    let r = tb.client("ems", false, &ops).unwrap();
    let wire: Vec<bool> = r.iter().map(ok).collect();
    assert_eq!(wire, vec![true, false, true, true, true], "{r:?}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our child; SIGTERM makes tcpdump flush and exit.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGTERM) };
    let tcpdump = tcpdump.wait_with_output().unwrap();
    let tcpdump_said = format!(
        "{}; {}",
        tcpdump.status,
        String::from_utf8_lossy(&tcpdump.stderr)
    );
    tb.stop_gateway();
    let kernel_denied: Vec<(u64, u64)> = json_lines(&tb.gateway_log())
        .iter()
        .filter(|l| l["message"] == "denied")
        .map(|l| {
            (
                l["function"].as_u64().unwrap(),
                l["address"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(kernel_denied, vec![(6, 41)]);

    let gw = bessai_integration::netns::bin("bessai-gw");
    let out = std::process::Command::new(gw)
        .args(["policy", "test"])
        .arg(example_policy())
        .arg("--pcap")
        .arg(&pcap)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "something was denied: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdicts: Vec<(u64, u64, &str)> = replayed
        .iter()
        .map(|t| {
            (
                t["function"].as_u64().unwrap(),
                t["address"].as_u64().unwrap(),
                t["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    let mut verdicts = verdicts;
    verdicts.sort();
    let mut expected = vec![
        (3, 0, "allow"),
        (6, 41, "deny"),
        (3, 10, "allow"),
        (16, 40, "allow"),
        (4, 0, "allow"),
    ];
    expected.sort();
    assert_eq!(
        verdicts, expected,
        "replay of the wire capture: {replayed:?}; tcpdump: {tcpdump_said}"
    );
}
