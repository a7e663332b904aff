//! A reload that fails half-way (issue 11): nft refuses the new ruleset
//! after XDP has switched. XDP goes back to the previous policy, the audit
//! trail says which policy is in force in each layer, and the next reload
//! applies the new policy in both (it is not "unchanged").
//!
//! The failure is injected without touching the daemon: it finds `nft` on
//! its PATH, and the test puts a wrapper first that fails while a marker
//! file exists and runs the real nft otherwise.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use bessai_integration::{
    appliance::{assert_enforcing, audit, example_policy, ok, site, wait_for_audit},
    have_root,
    netns::{Deployment, json_lines},
};

/// A directory holding an `nft` that fails while `marker` exists; the
/// PATH with it first.
fn failing_nft(dir: &Path, marker: &Path) -> String {
    nft_wrapper(
        dir,
        &format!(
            "if [ -e '{}' ]; then echo 'Error: injected failure' >&2; exit 1; fi",
            marker.display()
        ),
    )
}

/// A directory holding an `nft` that takes 3 s longer while `marker`
/// exists; the PATH with it first.
fn slow_nft(dir: &Path, marker: &Path) -> String {
    nft_wrapper(
        dir,
        &format!("if [ -e '{}' ]; then sleep 3; fi", marker.display()),
    )
}

/// An `nft` that runs `before` (shell) and then the real nft.
fn nft_wrapper(dir: &Path, before: &str) -> String {
    let real = which_nft();
    let bin = dir.join("fault-bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nft");
    fs::write(
        &script,
        format!("#!/bin/sh\n{before}\nexec {real} \"$@\"\n"),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn which_nft() -> String {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nft installed")
        .to_string()
}

#[test]
fn an_nft_failure_after_the_xdp_switch_rolls_xdp_back() {
    if !have_root("an_nft_failure_after_the_xdp_switch_rolls_xdp_back") {
        return;
    }
    let mut tb = site("nftfail", Deployment::Routed);
    let policy = tb.work.join("policy.toml");
    fs::copy(example_policy(), &policy).unwrap();
    let config = tb.write_config(&policy).unwrap();
    let marker = tb.work.join("nft-fails");
    let path = failing_nft(&tb.work, &marker);
    tb.start_gateway_with(&config, &[("PATH", &path)], &[])
        .unwrap();
    let start = audit(&json_lines(&tb.gateway_log()), "start")[0].clone();
    let old = start["policy_sha256"].as_str().unwrap().to_string();

    // The new policy lets the EMS write register 41: which policy XDP runs
    // shows on the wire.
    let text = fs::read_to_string(example_policy()).unwrap();
    let wider = text.replacen("addresses = [40, 50]", "addresses = [40, 41, 50]", 1);
    assert_ne!(wider, text);
    fs::write(&policy, &wider).unwrap();
    fs::write(&marker, "").unwrap();
    tb.signal_gateway(libc::SIGHUP);
    wait_for_audit(&tb, "reload_failed", 1);
    let log = json_lines(&tb.gateway_log());
    let failed = audit(&log, "reload_failed")[0];
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("injected failure")
            && failed["error"].as_str().unwrap().contains("switched back"),
        "{failed}"
    );
    assert_eq!(
        failed["running_sha256"],
        old.as_str(),
        "XDP runs the old one"
    );
    assert_eq!(failed["nftables_sha256"], old.as_str(), "nftables too");
    assert_enforcing(&tb, "after the rollback: XDP denies the write again");

    // nft works again: the same file is reloaded, not "unchanged".
    fs::remove_file(&marker).unwrap();
    tb.signal_gateway(libc::SIGHUP);
    wait_for_audit(&tb, "reload_succeeded", 1);
    let log = json_lines(&tb.gateway_log());
    assert!(audit(&log, "reload_unchanged").is_empty());
    let done = audit(&log, "reload_succeeded")[0];
    assert_eq!(done["old_sha256"], old.as_str());
    let r = tb.client("ems", false, &["write-register:41:7"]).unwrap();
    assert!(ok(&r[0]), "the new policy allows it: {}", r[0]);
    assert_eq!(tb.changed_registers().unwrap()["41"], 7);
}

/// `kill -9` at random points of a reload, 50 times: after each, the
/// restarted daemon enforces exactly the policy of the file in XDP and
/// nftables, and its `start` record names it.
#[test]
fn kill_9_during_reloads_leaves_one_policy_in_force() {
    if !have_root("kill_9_during_reloads_leaves_one_policy_in_force") {
        return;
    }
    let mut tb = site("killreload", Deployment::Routed);
    let policy = tb.work.join("policy.toml");
    let narrow = fs::read_to_string(example_policy()).unwrap();
    let wide = narrow.replacen("addresses = [40, 50]", "addresses = [40, 41, 50]", 1);
    fs::write(&policy, &narrow).unwrap();
    let config = tb.write_config(&policy).unwrap();
    tb.start_gateway_config(&config).unwrap();
    let mut seed = u64::from(std::process::id());
    let mut killed_mid_reload = 0;
    for round in 0..50 {
        let allow_41 = round % 2 == 0;
        fs::write(&policy, if allow_41 { &wide } else { &narrow }).unwrap();
        let reloads = |tb: &bessai_integration::netns::Testbed| {
            let log = json_lines(&tb.gateway_log());
            audit(&log, "reload_succeeded").len() + audit(&log, "reload_unchanged").len()
        };
        let before = reloads(&tb);
        tb.signal_gateway(libc::SIGHUP);
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        std::thread::sleep(std::time::Duration::from_millis(seed >> 56));
        tb.kill_gateway();
        if reloads(&tb) == before {
            killed_mid_reload += 1;
        }
        tb.start_gateway_config(&config).unwrap();
        let log = json_lines(&tb.gateway_log());
        let start = audit(&log, "start").last().copied().cloned().unwrap();
        let file_sha = bessai_gateway::audit::sha256_hex(&fs::read(&policy).unwrap());
        assert_eq!(start["policy_sha256"], file_sha.as_str(), "round {round}");
        let r = tb
            .client("ems", false, &[&format!("write-register:41:{round}")])
            .unwrap();
        assert_eq!(
            ok(&r[0]),
            allow_41,
            "round {round}: XDP runs the file's policy"
        );
        let table = tb
            .exec("gw", &["nft", "list", "table", "inet", "bessai"])
            .unwrap();
        assert_eq!(table.matches("conduit ems-to-pcs-1").count(), 1, "{table}");
    }
    println!("50 kills, {killed_mid_reload} before the reload was audited");
}

/// A reload stuck in `nft` holds up neither the kernel's events nor the
/// log: a write denied during the reload is logged before it ends.
#[test]
fn events_are_logged_while_a_reload_waits_for_nft() {
    if !have_root("events_are_logged_while_a_reload_waits_for_nft") {
        return;
    }
    let mut tb = site("slownft", Deployment::Routed);
    let policy = tb.work.join("policy.toml");
    fs::copy(example_policy(), &policy).unwrap();
    let config = tb.write_config(&policy).unwrap();
    let marker = tb.work.join("nft-slow");
    let path = slow_nft(&tb.work, &marker);
    tb.start_gateway_with(&config, &[("PATH", &path)], &[])
        .unwrap();
    let text = fs::read_to_string(example_policy()).unwrap();
    fs::write(&policy, format!("{text}\n# changed\n")).unwrap();
    fs::write(&marker, "").unwrap();
    tb.signal_gateway(libc::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = tb.client("ems", false, &["write-register:41:1"]).unwrap();
    assert!(!ok(&r[0]));
    let denied_at = std::time::Instant::now();
    let log_has = |what: &str| {
        json_lines(&tb.gateway_log())
            .iter()
            .any(|l| l["message"] == what || l["audit"] == what)
    };
    while !log_has("denied") {
        assert!(
            denied_at.elapsed() < std::time::Duration::from_secs(1),
            "the denial waited for the reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!log_has("reload_succeeded"), "the reload was still in nft");
    fs::remove_file(&marker).unwrap();
    wait_for_audit(&tb, "reload_succeeded", 1);
}

/// A SIGHUP during the start (here while the closed ruleset goes in) is a
/// reload after it, not the end of the daemon.
#[test]
fn a_sighup_during_the_start_is_a_reload_afterwards() {
    if !have_root("a_sighup_during_the_start_is_a_reload_afterwards") {
        return;
    }
    let tb = site("earlyhup", Deployment::Routed);
    let config = tb.write_config(&example_policy()).unwrap();
    let marker = tb.work.join("nft-slow");
    fs::write(&marker, "").unwrap();
    let path = slow_nft(&tb.work, &marker);
    let log = tb.work.join("early.log");
    let mut daemon = std::process::Command::new("ip")
        .args(["netns", "exec", &tb.ns("gw")])
        .arg(bessai_integration::netns::bin("bessai-gw"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("PATH", &path)
        .stdout(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    fs::remove_file(&marker).unwrap();
    let start = std::time::Instant::now();
    while audit(&json_lines(&log), "reload_unchanged").is_empty() {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the early SIGHUP ended the daemon"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
}
