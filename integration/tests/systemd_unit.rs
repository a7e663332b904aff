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

/// The unit with ExecStart pointing at the binary this build made (verify
/// checks that the executable exists).
fn unit_for_this_build() -> std::path::PathBuf {
    let text = fs::read_to_string(repo_root().join("packaging/systemd/bessai-gateway.service"))
        .expect("unit file");
    assert!(
        text.contains("ExecStart=/usr/bin/bessai-gw "),
        "ExecStart moved"
    );
    let dir = std::env::temp_dir().join(format!("bessai-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bessai-gateway.service");
    let exe = bin("bessai-gw");
    fs::write(
        &path,
        text.replace("/usr/bin/bessai-gw", exe.to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn systemd_accepts_the_unit() {
    if !analyze_available() {
        return;
    }
    let unit = unit_for_this_build();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
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
    let unit = unit_for_this_build();
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
