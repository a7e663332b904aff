//! Closed from power-on and after every failure (issue 11): the boot
//! ruleset before any daemon, a daemon that cannot attach XDP, and the one
//! command that opens the boundary. Real kernel, real nftables, real XDP.

use std::{fs, process::Command, time::Duration};

use bessai_integration::{
    appliance::{assert_enforcing, assert_write_41_absent, audit, example_policy, ok, site},
    have_root,
    netns::{Deployment, NON_ASSET, PCS1, Testbed, bin, json_lines},
};

const SHORT: Duration = Duration::from_millis(700);

/// Nothing crosses: no Modbus (allowed or not), no other TCP, no ICMP.
fn assert_closed(tb: &Testbed, when: &str) {
    let r = tb
        .client("ems", false, &["read-holding:0:2", "write-register:41:999"])
        .unwrap();
    assert!(!ok(&r[0]), "{when}: a Modbus read crossed: {}", r[0]);
    assert_write_41_absent(tb, when);
    for addr in [PCS1, NON_ASSET] {
        assert!(!tb.ping_ok("ems", addr), "{when}: ICMP to {addr} crossed");
        assert!(
            !tb.tcp_ok("ems", &format!("{addr}:80"), SHORT),
            "{when}: TCP to {addr}:80 crossed"
        );
    }
}

/// The network configuration turning forwarding on (routed) or the ports
/// up (bridge) on its own, as it may at boot before the daemon runs.
fn network_config_opens_the_switches(tb: &Testbed) {
    match tb.deployment {
        Deployment::Routed => {
            tb.exec("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .unwrap();
        }
        Deployment::Bridge => {
            for i in &tb.gw_ifaces {
                tb.exec("gw", &["ip", "link", "set", i, "up"]).unwrap();
            }
        }
    }
}

fn power_on(deployment: Deployment) {
    let name = format!("power_on_{}", deployment.as_str());
    if !have_root(&name) {
        return;
    }
    let mut tb = site("poweron", deployment);
    // Without any gateway the site is open: the checks below can fail.
    assert!(tb.ping_ok("ems", PCS1), "baseline: ping");
    let r = tb.client("ems", false, &["read-holding:0:2"]).unwrap();
    assert!(ok(&r[0]), "baseline: read {}", r[0]);

    // Power-on: bpffs is empty, no daemon; the boot unit runs.
    let config = tb.write_config(&example_policy()).unwrap();
    assert!(tb.pin_path().read_dir().is_err(), "no pins at power-on");
    let status = tb.boundary("close", &config).unwrap();
    assert!(status.success(), "boundary close: {status:?}");
    assert_closed(&tb, "boot ruleset, forwarding off");
    // nftables alone keeps it closed when the network configuration turns
    // forwarding or the ports on before the daemon runs.
    network_config_opens_the_switches(&tb);
    assert_closed(&tb, "boot ruleset, forwarding on");
    // Management reaches the box meanwhile, and only management.
    let gw = format!("{}:22", tb.gateway_addr());
    assert!(tb.tcp_ok("eng", &gw, SHORT), "management SSH at boot");
    assert!(!tb.tcp_ok("ems", &gw, SHORT), "SSH from ems at boot");

    // The daemon starts; systemd runs `boundary forward` after READY=1.
    tb.start_gateway_config(&config).unwrap();
    let status = tb.boundary("forward", &config).unwrap();
    assert!(status.success(), "boundary forward: {status:?}");
    assert_enforcing(&tb, "daemon enforcing");
    let r = tb.client("eng", false, &["read-holding:0:2"]).unwrap();
    assert!(ok(&r[0]), "eng read (its conduit): {}", r[0]);
    assert!(!tb.ping_ok("ems", PCS1), "ICMP stays denied");
}

#[test]
fn power_on_is_closed_until_the_daemon_enforces_routed() {
    power_on(Deployment::Routed);
}

#[test]
fn power_on_is_closed_until_the_daemon_enforces_bridge() {
    power_on(Deployment::Bridge);
}

/// A copy of the example policy in monitor mode: an XDP program that lets
/// every write through, standing in for a foreign program on the port.
fn permissive_policy(tb: &Testbed) -> std::path::PathBuf {
    let text = fs::read_to_string(example_policy()).unwrap();
    let path = tb.work.join("monitor.toml");
    fs::write(
        &path,
        text.replace("mode = \"enforce\"", "mode = \"monitor\""),
    )
    .unwrap();
    path
}

/// Another program holds XDP on the inverter port: the daemon cannot
/// attach there, says so, and the boundary stays closed; once the port is
/// free, the next start (systemd's retry) enforces.
#[test]
fn a_foreign_xdp_program_keeps_the_boundary_closed() {
    if !have_root("a_foreign_xdp_program_keeps_the_boundary_closed") {
        return;
    }
    let mut tb = site("foreign", Deployment::Routed);
    let config = tb.write_config(&example_policy()).unwrap();
    assert!(tb.boundary("close", &config).unwrap().success());
    network_config_opens_the_switches(&tb);

    let foreign_policy = permissive_policy(&tb);
    let port = tb.gw_ifaces[1].clone();
    let foreign_log = fs::File::create(tb.work.join("foreign.log")).unwrap();
    let mut foreign = Command::new("ip")
        .args(["netns", "exec", &tb.ns("gw")])
        .arg(bin("bessai-gw"))
        .args(["run", "--stats-interval", "0", "--xdp-mode", "generic"])
        .arg("--policy")
        .arg(&foreign_policy)
        .args(["--iface", &port])
        .stdout(foreign_log)
        .spawn()
        .unwrap();
    bessai_integration::netns::wait_for_line(
        &tb.work.join("foreign.log"),
        "enforcing",
        Duration::from_secs(20),
    )
    .unwrap();

    let status = tb
        .run_gateway_to_exit(&config, Duration::from_secs(30))
        .unwrap()
        .expect("the daemon gives up on the attach");
    assert!(!status.success(), "{status:?}");
    assert_ne!(
        status.code(),
        Some(78),
        "an occupied port is no config error"
    );
    let log = json_lines(&tb.gateway_log());
    let failed = audit(&log, "start_failed");
    assert_eq!(failed.len(), 1, "{log:?}");
    assert_eq!(failed[0]["stage"], "XDP attach");
    assert!(
        failed[0]["error"].as_str().unwrap().contains(&port),
        "{}",
        failed[0]
    );
    assert_eq!(failed[0]["boundary_closed"], true);

    // The read-only engineering conduit must not write, whatever runs on
    // the port; and nothing else crosses either.
    let r = tb.client("eng", false, &["write-register:41:999"]).unwrap();
    assert!(!ok(&r[0]), "a write crossed: {}", r[0]);
    assert_closed(&tb, "attach failed");
    let table = tb
        .exec("gw", &["nft", "list", "table", "inet", "bessai"])
        .unwrap();
    assert!(!table.contains("conduit"), "conduit accepts in: {table}");

    // The port is free again: the retry enforces.
    let _ = foreign.kill();
    let _ = foreign.wait();
    tb.start_gateway_config(&config).unwrap();
    assert_enforcing(&tb, "after the retry");
}

/// Stopping never opens the boundary; `boundary decommission` does.
#[test]
fn only_decommission_opens_the_boundary() {
    if !have_root("only_decommission_opens_the_boundary") {
        return;
    }
    let mut tb = site("decom", Deployment::Routed);
    let config = tb.write_config(&example_policy()).unwrap();
    tb.start_gateway_config(&config).unwrap();
    let status = tb.stop_gateway().expect("running");
    assert!(status.success(), "{status:?}");
    assert_enforcing(&tb, "stopped");
    assert!(!tb.ping_ok("ems", PCS1), "stopped: nftables in force");
    assert_eq!(
        audit(&json_lines(&tb.gateway_log()), "stop")[0]["opened"],
        false
    );

    let status = tb.boundary("decommission", &config).unwrap();
    assert!(status.success(), "{status:?}");
    let links = tb.exec("gw", &["ip", "-d", "link", "show"]).unwrap();
    assert!(!links.contains("prog/xdp"), "XDP detached: {links}");
    assert!(!tb.pin_path().exists(), "pins removed");
    let tables = tb.exec("gw", &["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("bessai"), "{tables}");
    assert!(tb.ping_ok("ems", PCS1), "the boundary is open");
}

/// A configuration that can never work: exit 78, and the boot unit has
/// closed every family anyway.
#[test]
fn an_unreadable_configuration_closes_every_family() {
    if !have_root("an_unreadable_configuration_closes_every_family") {
        return;
    }
    let tb = site("badcfg", Deployment::Bridge);
    let config = tb.work.join("broken.toml");
    fs::write(&config, "[gateway]\npolicy = \"nowhere.toml\"\n").unwrap();
    let status = tb.boundary("close", &config).unwrap();
    assert_eq!(status.code(), Some(78), "{status:?}");
    for i in &tb.gw_ifaces {
        tb.exec("gw", &["ip", "link", "set", i, "up"]).unwrap();
    }
    assert_closed(&tb, "unreadable configuration");
    for family in ["bridge", "inet"] {
        let t = tb
            .exec("gw", &["nft", "list", "table", family, "bessai"])
            .unwrap();
        assert!(t.contains("policy drop"), "{family}: {t}");
    }
}

/// Router advertisements sent on the inverter side that reach the EMS.
fn router_adverts_crossing(tb: &Testbed) -> u64 {
    let script =
        bessai_integration::netns::repo_root().join("integration/clients/router_advert.py");
    let listener = Command::new("ip")
        .args(["netns", "exec", &tb.ns("ems"), "python3"])
        .arg(&script)
        .args(["count", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = tb
        .exec(
            "inv",
            &[
                "python3",
                script.to_str().unwrap(),
                "send",
                &format!("h{}i", tb.tag),
            ],
        )
        .unwrap();
    assert_eq!(sent.trim(), "3", "router advertisements sent");
    let out = listener.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Whether `role` holds a link-layer address for `addr` (ARP answered).
fn resolved(tb: &Testbed, role: &str, addr: &str) -> bool {
    tb.exec(role, &["ip", "neigh", "show", addr])
        .unwrap()
        .contains("lladdr")
}

/// Try to reach `addr` from `role` with a fresh neighbour table.
fn resolve_from(tb: &Testbed, role: &str, addr: &str) -> bool {
    tb.exec(role, &["ip", "neigh", "flush", "all"]).unwrap();
    let _ = tb.ping_ok(role, addr);
    resolved(tb, role, addr)
}

/// In bridge mode ARP crosses only between a conduit's clients and its
/// asset, and router advertisements never cross.
#[test]
fn bridge_passes_only_the_address_resolution_conduits_need() {
    if !have_root("bridge_passes_only_the_address_resolution_conduits_need") {
        return;
    }
    let mut tb = site("l2", Deployment::Bridge);
    // Without the gateway a plain bridge passes all of it.
    assert!(router_adverts_crossing(&tb) > 0, "baseline: RAs cross");
    assert!(resolve_from(&tb, "out", NON_ASSET), "baseline: ARP crosses");

    let config = tb.write_config(&example_policy()).unwrap();
    tb.start_gateway_config(&config).unwrap();
    assert_eq!(router_adverts_crossing(&tb), 0, "RAs crossed the boundary");
    assert!(
        !resolve_from(&tb, "out", PCS1),
        "ARP for an asset from no conduit"
    );
    assert!(!resolve_from(&tb, "ems", NON_ASSET), "ARP for a non-asset");
    tb.exec("ems", &["ip", "neigh", "flush", "all"]).unwrap();
    assert_enforcing(&tb, "conduit clients resolve their asset");
    assert!(resolved(&tb, "ems", PCS1));
}
