//! The systemd unit shipped in packaging/systemd: valid for systemd, and
//! hardened to an exposure score under 2.0 ("OK") by `systemd-analyze
//! security`. The daemon's side of the unit (sd_notify, running with only
//! the unit's capabilities) is tested in appliance.rs.

use std::{fs, process::Command};

use bessai_integration::netns::{bin, repo_root};

fn analyze_available() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have systemd-analyze"
        );
        eprintln!("skipped: systemd-analyze not installed");
    }
    ok
}

const UNITS: [&str; 2] = ["bessai-gateway.service", "bessai-boundary.service"];

/// The shipped units, side by side, with ExecStart pointing at the binary
/// this build made (verify checks that the executable exists); the path of
/// `name` among them.
fn unit_for_this_build(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bessai-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let exe = bin("bessai-gw");
    for unit in UNITS {
        let text = fs::read_to_string(repo_root().join("packaging/systemd").join(unit))
            .expect("unit file");
        assert!(
            text.contains("ExecStart=/usr/bin/bessai-gw "),
            "ExecStart moved"
        );
        fs::write(
            dir.join(unit),
            text.replace("/usr/bin/bessai-gw", exe.to_str().unwrap()),
        )
        .unwrap();
    }
    dir.join(name)
}

/// `systemd-analyze dump`-free reading of one setting: the values of `key`
/// in the unit file, space-separated lists split.
fn setting(unit: &std::path::Path, key: &str) -> Vec<String> {
    fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// The boundary is closed before any interface is configured, and opened
/// by the gateway only after READY=1.
#[test]
fn the_boundary_closes_before_the_network_and_opens_after_ready() {
    let boot = unit_for_this_build("bessai-boundary.service");
    let gateway = unit_for_this_build("bessai-gateway.service");
    assert_eq!(setting(&boot, "DefaultDependencies"), ["no"]);
    assert!(setting(&boot, "Before").contains(&"network-pre.target".to_string()));
    assert!(setting(&boot, "Wants").contains(&"network-pre.target".to_string()));
    assert!(setting(&boot, "ExecStart").contains(&"close".to_string()));
    assert!(setting(&gateway, "After").contains(&"bessai-boundary.service".to_string()));
    assert_eq!(
        setting(&gateway, "Type"),
        ["notify"],
        "ExecStartPost waits for READY=1"
    );
    assert!(setting(&gateway, "ExecStartPost").contains(&"forward".to_string()));
    assert_eq!(
        setting(&gateway, "StartLimitIntervalSec"),
        ["0"],
        "retries never stop"
    );
}

#[test]
fn systemd_accepts_the_unit() {
    if !analyze_available() {
        return;
    }
    let units: Vec<_> = UNITS.iter().map(|u| unit_for_this_build(u)).collect();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );
}

#[test]
fn exposure_score_is_under_2() {
    if !analyze_available() {
        return;
    }
    let unit = unit_for_this_build("bessai-gateway.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in {text}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line}"));
    println!("{line}");
    assert!(score < 2.0, "{line}");
    for capability in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"] {
        assert!(fs::read_to_string(&unit).unwrap().contains(capability));
    }
}
