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
