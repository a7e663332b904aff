//! Failures that can heal never stop enforcement (issue 11): a port that
//! appears late, a spool directory that is read-only, a spool disk that is
//! full. Real daemon, real XDP and nftables, a real rsyslog as the SIEM, a
//! real tmpfs for the spool.

#[path = "../../siem/tests/support/mod.rs"]
mod support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use bessai_integration::{
    appliance::{assert_enforcing, audit, example_policy, site},
    have_root,
    netns::{Deployment, Testbed, json_lines},
};
use support::{Listener, Rsyslog};

fn rename_link(tb: &Testbed, from: &str, to: &str) {
    tb.exec("gw", &["ip", "link", "set", from, "down"]).unwrap();
    tb.exec("gw", &["ip", "link", "set", from, "name", to])
        .unwrap();
    tb.exec("gw", &["ip", "link", "set", to, "up"]).unwrap();
}

/// The inverter port enumerates two seconds after the daemon started: it
/// waits (closed meanwhile) and then enforces, without a restart.
#[test]
fn a_late_port_is_waited_for() {
    if !have_root("a_late_port_is_waited_for") {
        return;
    }
    let mut tb = site("late", Deployment::Routed);
    let config = tb.write_config(&example_policy()).unwrap();
    let port = tb.gw_ifaces[1].clone();
    let hidden = format!("x{}", &port[1..]);
    rename_link(&tb, &port, &hidden);
    let (ns, p, h) = (tb.ns("gw"), port.clone(), hidden.clone());
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        for args in [
            vec!["link", "set", &h, "down"],
            vec!["link", "set", &h, "name", &p],
            vec!["link", "set", &p, "up"],
        ] {
            Command::new("ip")
                .args(["-n", &ns])
                .args(&args)
                .status()
                .unwrap();
        }
        Command::new("ip")
            .args(["-n", &ns, "route", "replace", "10.10.2.0/24", "dev", &p])
            .status()
            .unwrap();
    });
    tb.start_gateway_config(&config).unwrap();
    later.join().unwrap();
    assert_enforcing(&tb, "after the late port");
    let log = json_lines(&tb.gateway_log());
    assert!(
        log.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("ports missing"))
            && l["waiting_for"].as_str().unwrap_or("").contains(&port)),
        "the wait is logged"
    );
    assert!(audit(&log, "start_failed").is_empty());
}

/// Runs `args` inside the daemon's mount namespace (`ip netns exec` gave it
/// its own): a remount there is what the daemon sees.
fn in_daemon_mounts(tb: &Testbed, args: &[&str]) {
    let pid = tb.gateway_pid().expect("running").to_string();
    let ok = Command::new("nsenter")
        .args(["-t", &pid, "-m"])
        .args(args)
        .status()
        .unwrap();
    assert!(ok.success(), "{args:?}");
}

/// Waits until the gateway log holds `count` records of `kind`.
fn wait_audit(tb: &Testbed, kind: &str, count: usize, within: Duration) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let log = json_lines(&tb.gateway_log());
        let found: Vec<serde_json::Value> = audit(&log, kind).into_iter().cloned().collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            start.elapsed() < within,
            "no {count} × {kind} in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Denied writes (each one SIEM event: aggregation is off); how many.
fn deny_writes(tb: &Testbed, n: usize) -> usize {
    for _ in 0..n {
        let r = tb.client("ems", false, &["write-register:41:999"]).unwrap();
        assert_ne!(r[0]["ok"], true, "the write is denied");
    }
    n
}

fn denials_in(rsyslog: &Rsyslog) -> usize {
    rsyslog
        .lines()
        .iter()
        .filter(|l| l.contains("|100|Modbus transaction denied|"))
        .count()
}

/// Fills the tmpfs at `dir`, as the daemon sees it, until it is full; the
/// file that fills it.
fn fill(tb: &Testbed, dir: &Path) -> String {
    let path = dir.join("filler").display().to_string();
    let pid = tb.gateway_pid().expect("running").to_string();
    let _ = Command::new("nsenter")
        .args(["-t", &pid, "-m", "dd", "if=/dev/zero", "bs=64k"])
        .arg(format!("of={path}"))
        .stderr(std::process::Stdio::null())
        .status();
    path
}

/// The spool directory is read-only at start, later its disk is full:
/// enforcement never stops, both faults are audited, delivery resumes when
/// the cause is gone, and every event the spool could not take is counted.
#[test]
fn spool_faults_never_stop_enforcement() {
    if !have_root("spool_faults_never_stop_enforcement") {
        return;
    }
    let mut tb = site("spoolfault", Deployment::Routed);
    let Some(rsyslog) = Rsyslog::start_in(Listener::Tcp, Some(&tb.ns("gw"))) else {
        return;
    };
    let spool = tb.work.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mount = |opts: &str| {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&spool)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    mount("size=1m,ro");
    let siem = format!(
        "[siem]\nspool_dir = \"{}\"\nspool_max_bytes = 1048576\naggregation_window_s = 0\n\n[[siem.destination]]\nurl = \"{}\"\nformat = \"cef\"\n",
        spool.display(),
        rsyslog.target(),
    );
    let config = tb.write_config_with(&example_policy(), &siem).unwrap();
    tb.start_gateway_config(&config).unwrap();
    assert_enforcing(&tb, "read-only spool");
    let fault = wait_audit(&tb, "delivery_fault", 1, Duration::from_secs(5));
    assert!(
        fault[0]["error"].as_str().unwrap().contains("Read-only"),
        "{}",
        fault[0]
    );
    let denied_ro = 1 + deny_writes(&tb, 3);

    // The operator fixes the mount: delivery resumes, the loss is counted.
    in_daemon_mounts(&tb, &["mount", "-o", "remount,rw", spool.to_str().unwrap()]);
    let recovered = wait_audit(&tb, "delivery_recovered", 1, Duration::from_secs(40));
    let lost_ro: usize = recovered[0]["lost"].as_u64().unwrap() as usize;
    assert!(
        lost_ro >= denied_ro,
        "{lost_ro} counted, {denied_ro} denied"
    );
    deny_writes(&tb, 2);
    let start = Instant::now();
    while denials_in(&rsyslog) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "delivery resumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("read-only spool: {denied_ro} events while read-only, {lost_ro} counted lost");

    // The spool's disk fills up.
    let before = denials_in(&rsyslog);
    let filler = fill(&tb, &spool);
    let denied_full = deny_writes(&tb, 5);
    // Audit records are written to disk at once; once the last page of the
    // segment file is used up, they cannot be.
    let start = Instant::now();
    while audit(&json_lines(&tb.gateway_log()), "delivery_fault").len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no fault on a full disk"
        );
        tb.signal_gateway(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_enforcing(&tb, "spool disk full");
    in_daemon_mounts(&tb, &["rm", &filler]);
    deny_writes(&tb, 1);
    let start = Instant::now();
    loop {
        let log = json_lines(&tb.gateway_log());
        let lost_full: u64 = audit(&log, "delivery_recovered")
            .iter()
            .skip(1)
            .map(|r| r["lost"].as_u64().unwrap())
            .sum();
        let delivered = denials_in(&rsyslog) - before;
        // Every denial either arrived or is counted lost.
        if lost_full >= 1 && delivered + lost_full as usize > denied_full {
            println!(
                "full spool disk: {denied_full} events while full, {delivered} delivered, {lost_full} counted lost, faults: {}",
                audit(&log, "delivery_fault").len()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{delivered} delivered + {lost_full} lost < {}",
            denied_full + 1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tb.stop_gateway();
    let _ = Command::new("umount").arg(&spool).status();
}

/// A policy whose reload fails with about 300 KiB of errors.
fn policy_with_many_errors() -> String {
    let mut text = std::fs::read_to_string(example_policy()).unwrap();
    for i in 0..1300 {
        text.push_str(&format!(
            "\n[[conduit]]\nname = \"bad-{i}\"\nfrom = \"nowhere-{i}\"\nsources = [\"10.10.1.10\"]\nto = \"pcs-1\"\n\n  [[conduit.rule]]\n  function = \"read_holding_registers\"\n  addresses = [\"0-9\"]\n"
        ));
    }
    text
}

fn wait_line(rsyslog: &Rsyslog, needle: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = rsyslog.lines().into_iter().find(|l| l.contains(needle)) {
            return l;
        }
        assert!(start.elapsed() < within, "no line with {needle:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A 300 KiB audit record (a reload rejected with thousands of errors)
/// toward a RELP and a UDP destination: each gets it truncated with a
/// marker, and the events after it still arrive.
#[test]
fn an_oversized_record_blocks_no_destination() {
    if !have_root("an_oversized_record_blocks_no_destination") {
        return;
    }
    let mut tb = site("oversize", Deployment::Routed);
    let pki = support::Pki::generate();
    let Some(relp) = Rsyslog::start_in(
        Listener::RelpTls {
            require_client_cert: true,
            server: pki.receiver_tls(),
        },
        Some(&tb.ns("gw")),
    ) else {
        return;
    };
    let Some(udp) = Rsyslog::start_in(Listener::Udp, Some(&tb.ns("gw"))) else {
        return;
    };
    let client = pki.mutual_client_options();
    let policy = tb.work.join("policy.toml");
    std::fs::copy(example_policy(), &policy).unwrap();
    let siem = format!(
        "[siem]\nspool_dir = \"{spool}\"\naggregation_window_s = 0\n\n[[siem.destination]]\nurl = \"{relp}\"\nformat = \"cef\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n[[siem.destination]]\nurl = \"{udp}\"\nformat = \"cef\"\n",
        spool = tb.work.join("spool").display(),
        relp = relp.target(),
        ca = client.ca.as_ref().unwrap().display(),
        cert = client.cert.as_ref().unwrap().display(),
        key = client.key.as_ref().unwrap().display(),
        udp = udp.target(),
    );
    let config = tb.write_config_with(&policy, &siem).unwrap();
    tb.start_gateway_config(&config).unwrap();
    for r in [&relp, &udp] {
        wait_line(r, "|200|Gateway started|", Duration::from_secs(10));
    }

    let big = policy_with_many_errors();
    std::fs::write(&policy, &big).unwrap();
    tb.signal_gateway(libc::SIGHUP);
    let failed = wait_audit(&tb, "reload_failed", 1, Duration::from_secs(30));
    let size = failed[0]["error"].as_str().unwrap().len();
    assert!(size > 300 * 1024, "the record is {size} bytes");
    let r = tb.client("ems", false, &["write-register:41:999"]).unwrap();
    assert_ne!(r[0]["ok"], true);
    for (name, r) in [("RELP", &relp), ("UDP", &udp)] {
        let cut = wait_line(r, "|203|Policy reload rejected|", Duration::from_secs(10));
        assert!(
            cut.contains("[truncated "),
            "{name}: {}",
            &cut[cut.len() - 80..]
        );
        wait_line(
            r,
            "|100|Modbus transaction denied|",
            Duration::from_secs(10),
        );
        println!(
            "{name}: a {size}-byte record arrived as {} bytes, the next event after it",
            cut.len()
        );
    }
    let log = json_lines(&tb.gateway_log());
    let truncations = log
        .iter()
        .filter(|l| l["message"] == "record larger than the destination carries, truncated")
        .count();
    assert_eq!(truncations, 2, "one per destination, counted");
}

/// The largest segment file under `dir` (one directory per destination).
fn segment_file(dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
}

/// A segment damaged on disk during a SIEM outage: the forwarder stops on
/// the damage, is restarted on a spool opened afresh (the damaged frame
/// skipped and counted, the records behind it in the same segment kept),
/// and every denial but those in the damaged frame is delivered.
#[test]
fn a_damaged_segment_does_not_stop_delivery() {
    if !have_root("a_damaged_segment_does_not_stop_delivery") {
        return;
    }
    let mut tb = site("damaged", Deployment::Routed);
    let Some(mut rsyslog) = Rsyslog::start_in(Listener::Tcp, Some(&tb.ns("gw"))) else {
        return;
    };
    let spool = tb.work.join("spool");
    let siem = format!(
        "[siem]\nspool_dir = \"{}\"\naggregation_window_s = 0\n\n[[siem.destination]]\nurl = \"{}\"\nformat = \"cef\"\n",
        spool.display(),
        rsyslog.target(),
    );
    let config = tb.write_config_with(&example_policy(), &siem).unwrap();
    tb.start_gateway_config(&config).unwrap();
    wait_line(&rsyslog, "|200|Gateway started|", Duration::from_secs(10));

    rsyslog.stop();
    let during = deny_writes(&tb, 10);
    // The memory queue goes to disk every second.
    std::thread::sleep(Duration::from_secs(3));
    let segment = segment_file(&spool).expect("a segment on disk");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&segment, &bytes).unwrap();
    rsyslog.resume();

    let fault = wait_audit(&tb, "delivery_fault", 1, Duration::from_secs(30));
    assert!(
        fault[0]["error"].as_str().unwrap().contains("corrupt"),
        "{}",
        fault[0]
    );
    deny_writes(&tb, 1);
    let start = Instant::now();
    while denials_in(&rsyslog) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "delivery resumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = wait_audit(&tb, "delivery_recovered", 1, Duration::from_secs(10));
    let field = |name: &str| {
        recovered[0][name]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| recovered[0][name].as_u64())
            .unwrap_or_else(|| panic!("{name} in {}", recovered[0]))
    };
    let (cut, skipped_frames, skipped_records, lost) = (
        field("discarded_bytes"),
        field("skipped_frames"),
        field("skipped_records"),
        // Records that arrived while the spool was being opened afresh.
        field("lost"),
    );
    assert!(cut > 0, "the damage is counted: {}", recovered[0]);
    assert!(
        skipped_frames >= 1,
        "the damaged frame is skipped: {}",
        recovered[0]
    );
    // Records behind the damage in the same segment are delivered: only
    // those counted, as skipped or as lost while the spool was reopened,
    // may be missing.
    let start = Instant::now();
    while (denials_in(&rsyslog) as u64) + skipped_records + lost < during as u64 + 1 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {} denials delivered, {skipped_records} skipped, {lost} lost",
            denials_in(&rsyslog),
            during + 1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "damaged segment: {during} denials during the outage, {} of all {} denials delivered, {skipped_frames} damaged frames skipped (at most {skipped_records} records), {lost} records lost while the spool was reopened, {cut} damaged bytes removed, all reported",
        denials_in(&rsyslog),
        during + 1
    );
    assert_enforcing(&tb, "after the damage");
}
