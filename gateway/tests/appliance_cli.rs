//! The appliance commands as an integrator meets them: `run --config` with a
//! broken configuration exits 78 before touching anything, `nft --dry-run`
//! prints the ruleset for review, `siem test` exits 69 saying what failed.

use std::process::Command;

fn gw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EXAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gateway.toml");

#[test]
fn a_broken_configuration_exits_78_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("bessai-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let text = std::fs::read_to_string(EXAMPLE_CONFIG)
        .unwrap()
        .replace("bess-site.toml", "/nonexistent/policy.toml")
        .replace("mode = \"routed\"", "mode = \"bump\"");
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = gw(&["run", "--config", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("gateway.toml:5:10: error: the policy"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gateway.toml:8:8: error: mode must be one of"),
        "{stderr}"
    );
}

#[test]
fn nft_dry_run_prints_the_ruleset_for_review() {
    let (code, stdout, stderr) = gw(&["nft", "--config", EXAMPLE_CONFIG, "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let objects = v["nftables"].as_array().unwrap();
    let comments: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["add"]["rule"]["comment"].as_str())
        .collect();
    for c in [
        "conduit ems-to-pcs-1",
        "conduit eng-to-pcs-2",
        "management",
        "default deny",
    ] {
        assert!(comments.contains(&c), "{c} missing from {comments:?}");
    }
    assert!(
        objects
            .iter()
            .filter_map(|o| o["add"]["chain"].as_object())
            .all(|c| c["policy"] == "drop")
    );
}

#[test]
fn siem_test_exits_69_and_says_what_failed() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (code, stdout, _) = gw(&[
        "siem",
        "test",
        "--target",
        &format!("tcp://127.0.0.1:{port}"),
        "--timeout-ms",
        "1000",
    ]);
    assert_eq!(code, 69, "{stdout}");
    assert!(stdout.contains("ok  resolve"), "{stdout}");
    assert!(stdout.contains("FAILED: cannot connect"), "{stdout}");
    let (code, _, stderr) = gw(&["siem", "test", "--target", "http://siem"]);
    assert_eq!(code, 64, "{stderr}");
    // TLS without a CA is refused: the SIEM is never trusted blindly.
    let (code, stdout, _) = gw(&["siem", "test", "--target", "tls://127.0.0.1:1"]);
    assert_eq!(code, 69);
    assert!(stdout.to_lowercase().contains("ca"), "{stdout}");
}
