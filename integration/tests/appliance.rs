//! The gateway as an appliance (issue 5), in both deployments: routed and
//! transparent bridge. A real daemon started from a configuration file, real
//! nftables, XDP pinned on bpffs, real Modbus clients and plain TCP/ICMP.
//!
//! Each scenario runs once per deployment; every test first shows that the
//! traffic it expects to be stopped does flow without the gateway, so that
//! a broken testbed cannot pass for a closed boundary.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bessai_integration::{
    appliance::{assert_enforcing, audit, example_policy, ok, site, wait_for_audit},
    have_root,
    netns::{Deployment, NON_ASSET, PCS1, Testbed, bin, json_lines},
};
use serde_json::Value;

const SHORT: Duration = Duration::from_millis(700);

/// A copy of the example policy with one more line, so its hash differs.
fn variant(tb: &Testbed, n: usize) -> PathBuf {
    let text = fs::read_to_string(example_policy()).unwrap();
    let path = tb.work.join(format!("policy-{n}.toml"));
    fs::write(&path, format!("{text}\n# variant {n}\n")).unwrap();
    path
}

fn non_modbus_is_denied(deployment: Deployment) {
    let name = format!("nonmodbus-{}", deployment.as_str());
    if !have_root(&name) {
        return;
    }
    let mut tb = site("nonmodbus", deployment);
    // Without the gateway everything flows: the probes below can fail.
    for addr in [PCS1, NON_ASSET] {
        assert!(tb.ping_ok("ems", addr), "baseline: ping {addr}");
        for port in [22, 80] {
            assert!(
                tb.tcp_ok("ems", &format!("{addr}:{port}"), SHORT),
                "baseline: {addr}:{port}"
            );
        }
    }
    let gw = format!("{}:22", tb.gateway_addr());
    assert!(
        tb.tcp_ok("ems", &gw, SHORT),
        "baseline: gateway ssh from ems"
    );

    let config = tb.write_config(&example_policy()).unwrap();
    tb.start_gateway_config(&config).unwrap();

    for addr in [PCS1, NON_ASSET] {
        assert!(
            !tb.ping_ok("ems", addr),
            "ICMP to {addr} crossed the boundary"
        );
        assert!(!tb.ping_ok("eng", addr), "ICMP from eng to {addr} crossed");
        for port in [22, 80] {
            let target = format!("{addr}:{port}");
            assert!(
                !tb.tcp_ok("ems", &target, SHORT),
                "TCP {target} crossed the boundary"
            );
            assert!(
                !tb.tcp_ok("eng", &target, SHORT),
                "TCP {target} from eng crossed"
            );
        }
    }
    // Nor from the inverter zone into the control center.
    assert!(
        !tb.ping_ok("inv", "10.10.1.10"),
        "ICMP inverters → control center"
    );
    // What the conduits allow still flows.
    assert_enforcing(&tb, "with nftables");
    let r = tb.client("eng", false, &["read-holding:0:2"]).unwrap();
    assert!(ok(&r[0]), "eng read (its conduit): {}", r[0]);
    // Management SSH to the gateway: only from the management network (eng).
    assert!(tb.tcp_ok("eng", &gw, SHORT), "management SSH from eng");
    assert!(!tb.tcp_ok("ems", &gw, SHORT), "SSH to the gateway from ems");

    // The ruleset counts per conduit.
    let family = match deployment {
        Deployment::Routed => "inet",
        Deployment::Bridge => "bridge",
    };
    let table = tb
        .exec("gw", &["nft", "list", "table", family, "bessai"])
        .unwrap();
    assert!(table.contains("conduit ems-to-pcs-1"), "{table}");
    assert!(table.contains("policy drop"), "{table}");
}

#[test]
fn non_modbus_traffic_is_denied_routed() {
    non_modbus_is_denied(Deployment::Routed);
}

#[test]
fn non_modbus_traffic_is_denied_bridge() {
    non_modbus_is_denied(Deployment::Bridge);
}

fn kill_9_keeps_enforcement(deployment: Deployment) {
    let name = format!("kill9-{}", deployment.as_str());
    if !have_root(&name) {
        return;
    }
    let mut tb = site("kill9", deployment);
    let config = tb.write_config(&example_policy()).unwrap();
    tb.start_gateway_config(&config).unwrap();
    assert_enforcing(&tb, "daemon running");

    let status = tb.kill_gateway().expect("gateway was running");
    assert!(!status.success(), "killed: {status:?}");
    // Dead daemon: the pinned links, program and maps go on judging.
    let links = tb.exec("gw", &["ip", "-d", "link", "show"]).unwrap();
    assert!(links.contains("xdp"), "XDP still attached: {links}");
    assert_enforcing(&tb, "daemon dead");
    assert!(!tb.ping_ok("ems", PCS1), "nftables still in force");

    // A new daemon adopts what is pinned; the denial made while it was
    // dead waited in the pinned ring buffer and is logged now.
    tb.start_gateway_config(&config).unwrap();
    assert_enforcing(&tb, "daemon restarted");
    let log = json_lines(&tb.gateway_log());
    assert!(
        log.iter()
            .any(|l| l["message"] == "attached" && l["mode"] == "adopted"),
        "the restarted daemon adopts the pinned links"
    );
    let starts = audit(&log, "start");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[1]["adopted"], true);
    std::thread::sleep(Duration::from_millis(300));
    tb.stop_gateway();
    let log = json_lines(&tb.gateway_log());
    let denied41 = log
        .iter()
        .filter(|l| l["message"] == "denied" && l["address"] == 41)
        .count();
    assert_eq!(
        denied41, 3,
        "each of the three denied writes is logged once"
    );
    // A clean stop keeps the boundary closed too.
    assert_enforcing(&tb, "daemon stopped");
}

#[test]
fn kill_9_keeps_enforcement_routed() {
    kill_9_keeps_enforcement(Deployment::Routed);
}

#[test]
fn kill_9_keeps_enforcement_bridge() {
    kill_9_keeps_enforcement(Deployment::Bridge);
}

/// Runs `modbus-sim load` from `role` for `ms` with `op`; its summary.
fn load(tb: &Testbed, role: &str, op: &str, ms: u64) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", &tb.ns(role)])
        .arg(bin("modbus-sim"))
        .args(["load", "--connect", &format!("{PCS1}:502"), "--unit", "1"])
        .args(["--duration-ms", &ms.to_string(), "--concurrency", "2"])
        .args(["--op", op, "--timeout-ms", "1000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn summary(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap()
}

fn write_policy_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("tmp");
    fs::copy(target, &tmp).unwrap();
    fs::rename(&tmp, link).unwrap();
}

fn reload_under_load(deployment: Deployment) {
    let name = format!("reload-{}", deployment.as_str());
    if !have_root(&name) {
        return;
    }
    let mut tb = site("reload", deployment);
    let policy = tb.work.join("policy.toml");
    write_policy_link(&policy, &example_policy());
    let config = tb.write_config(&policy).unwrap();
    tb.start_gateway_config(&config).unwrap();

    const RELOADS: usize = 20;
    // Long enough for the reloads even when nft stalls (see wait_for_audit;
    // 35 s has been seen while other tests tore down their namespaces).
    let duration = 90_000;
    let reads = load(&tb, "ems", "read-holding:0:10", duration);
    let writes = load(&tb, "ems", "write-register:41:999", duration);
    std::thread::sleep(Duration::from_millis(1000));
    let reloading = std::time::Instant::now();
    for n in 0..RELOADS {
        write_policy_link(&policy, &variant(&tb, n));
        tb.signal_gateway(libc::SIGHUP);
        // Signals that arrive during a reload coalesce: one at a time.
        wait_for_audit(&tb, "reload_succeeded", n + 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        reloading.elapsed() < Duration::from_millis(duration - 1500),
        "the reloads must all fall inside the load"
    );
    let reads = summary(reads);
    let writes = summary(writes);
    assert!(reads["transactions"].as_u64().unwrap() > 1000, "{reads}");
    assert_eq!(reads["errors"], 0, "allowed reads lost to reloads: {reads}");
    assert_eq!(
        writes["transactions"], 0,
        "forbidden writes passed: {writes}"
    );
    assert!(writes["errors"].as_u64().unwrap() > 0, "{writes}");
    assert!(tb.changed_registers().unwrap().get("41").is_none());

    tb.stop_gateway();
    let log = json_lines(&tb.gateway_log());
    let reloads = audit(&log, "reload_succeeded");
    assert_eq!(reloads.len(), RELOADS, "{:?}", audit(&log, "reload_failed"));
    for pair in reloads.windows(2) {
        assert_eq!(pair[0]["new_sha256"], pair[1]["old_sha256"], "hash chain");
        assert_ne!(pair[1]["old_sha256"], pair[1]["new_sha256"]);
    }
    let generations: Vec<u64> = reloads
        .iter()
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    assert!(
        generations.windows(2).all(|g| g[0] != g[1]),
        "{generations:?}"
    );
}

#[test]
fn reload_under_load_loses_nothing_routed() {
    reload_under_load(Deployment::Routed);
}

#[test]
fn reload_under_load_loses_nothing_bridge() {
    reload_under_load(Deployment::Bridge);
}

fn broken_policy_keeps_the_old_one(deployment: Deployment) {
    let name = format!("broken-{}", deployment.as_str());
    if !have_root(&name) {
        return;
    }
    let mut tb = site("broken", deployment);
    let policy = tb.work.join("policy.toml");
    write_policy_link(&policy, &example_policy());
    let config = tb.write_config(&policy).unwrap();
    tb.start_gateway_config(&config).unwrap();
    let running = json_lines(&tb.gateway_log())
        .iter()
        .find(|l| l["audit"] == "start")
        .map(|l| l["policy_sha256"].clone())
        .unwrap();

    // A typo in a function name on line 3 of an otherwise valid policy.
    let text = fs::read_to_string(example_policy()).unwrap();
    let broken = text.replacen(
        "function = \"read_holding_registers\"",
        "function = \"read_holding_registerz\"",
        1,
    );
    assert_ne!(broken, text);
    fs::write(&policy, broken).unwrap();
    tb.signal_gateway(libc::SIGHUP);
    wait_for_audit(&tb, "reload_failed", 1);
    assert_enforcing(&tb, "after a rejected reload");
    // The engineering workstation still reads (the running policy's rule).
    let r = tb.client("eng", false, &["read-holding:0:2"]).unwrap();
    assert!(ok(&r[0]), "{}", r[0]);

    let log = json_lines(&tb.gateway_log());
    let failed = audit(&log, "reload_failed");
    assert_eq!(failed.len(), 1, "{log:?}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("policy.toml:")
            && error.contains("unknown function \"read_holding_registerz\""),
        "the error names file, line and what is wrong: {error}"
    );
    assert_eq!(failed[0]["running_sha256"], running);
    assert!(audit(&log, "reload_succeeded").is_empty());

    // A bad configuration is rejected the same way.
    let good_config = fs::read_to_string(&config).unwrap();
    fs::write(&config, good_config.replace("mode = ", "mdoe = ")).unwrap();
    write_policy_link(&policy, &variant(&tb, 1));
    tb.signal_gateway(libc::SIGHUP);
    wait_for_audit(&tb, "reload_failed", 2);
    assert_enforcing(&tb, "after a rejected configuration");
    let log = json_lines(&tb.gateway_log());
    let failed = audit(&log, "reload_failed");
    assert_eq!(failed.len(), 2);
    assert!(
        failed[1]["error"]
            .as_str()
            .unwrap()
            .contains("gateway.toml:3:1"),
        "{}",
        failed[1]
    );

    // Fixed: the next reload goes through.
    fs::write(&config, good_config).unwrap();
    tb.signal_gateway(libc::SIGHUP);
    wait_for_audit(&tb, "reload_succeeded", 1);
    let log = json_lines(&tb.gateway_log());
    assert_eq!(audit(&log, "reload_succeeded").len(), 1);
    assert_enforcing(&tb, "after the fixed reload");
}

#[test]
fn broken_policy_on_reload_keeps_the_old_one_routed() {
    broken_policy_keeps_the_old_one(Deployment::Routed);
}

#[test]
fn broken_policy_on_reload_keeps_the_old_one_bridge() {
    broken_policy_keeps_the_old_one(Deployment::Bridge);
}

/// The daemon tells systemd when it is ready and pings the watchdog (here a
/// datagram socket standing in for systemd's notify socket), and it runs
/// with nothing but the unit's three capabilities, as an unprivileged user.
#[test]
fn least_privilege_and_sd_notify() {
    if !have_root("least_privilege_and_sd_notify") {
        return;
    }
    let mut tb = site("notify", Deployment::Routed);
    let socket_path = tb.work.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The unprivileged user must reach the socket, the files and the pins.
    for p in [&tb.work, &socket_path] {
        Command::new("chmod").arg("a+rwx").arg(p).status().unwrap();
    }
    fs::create_dir_all(tb.pin_path()).unwrap();
    Command::new("chown")
        .args(["nobody:nogroup"])
        .arg(tb.pin_path())
        .status()
        .unwrap();
    let config = tb.write_config(&example_policy()).unwrap();
    let caps = "-all,+bpf,+net_admin,+perfmon";
    tb.start_gateway_with(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--bounding-set",
            caps,
            "--inh-caps",
            caps,
            "--ambient-caps",
            caps,
            "--no-new-privs",
        ],
    )
    .unwrap();
    assert_enforcing(
        &tb,
        "as nobody with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON only",
    );
    assert!(!tb.ping_ok("ems", PCS1), "nftables installed without root");

    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=enforcing 4 conduits"), "{ready}");

    tb.signal_gateway(libc::SIGHUP);
    let mut reload = Vec::new();
    while !reload.iter().any(|m: &String| m.contains("READY=1")) {
        let n = socket.recv(&mut buf).expect("reload notifications");
        reload.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        reload
            .iter()
            .any(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC=")),
        "{reload:?}"
    );
    tb.stop_gateway();
}
