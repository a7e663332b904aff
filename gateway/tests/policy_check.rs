//! `bessai-gw policy check`: exit 0 for a valid file, 65 with file:line:column
//! messages for each kind of bad input.

use std::process::Command;

fn check(source: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("bessai-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("p{n}.toml"));
    std::fs::write(&path, source).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EXAMPLE: &str = include_str!("../../examples/bess-site.toml");

#[test]
fn the_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/bess-site.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(["policy", "check", path])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid: 4 conduits"));
}

#[test]
fn each_bad_input_exits_65_naming_line_and_column() {
    // (replace this, with that, expect this message at this line:column)
    let cases = [
        (
            "function = \"write_single_register\"",
            "function = \"write_single_registr\"",
            "58:14",
            "did you mean \"write_single_register\"",
        ),
        (
            "function = \"write_single_register\"",
            "function = 131",
            "58:14",
            "function code 131 is not a request",
        ),
        (
            "addresses = [\"0-99\"]\n\n  [[conduit.rule]]\n  description = \"DC",
            "addresses = [\"0-99\", \"50-60\"]\n\n  [[conduit.rule]]\n  description = \"DC",
            "49:24",
            "ranges 0-99 and 50-60 overlap",
        ),
        (
            "addresses = [\"0-199\"]\n\n  [[conduit.rule]]\n  description = \"active",
            "addresses = [\"199-0\"]\n\n  [[conduit.rule]]\n  description = \"active",
            "54:16",
            "inverted range 199-0",
        ),
        (
            "addresses = [40, 50]",
            "addresses = [40, 70000]",
            "59:20",
            "address 70000 is outside 0..=65535",
        ),
        (
            "addresses = [40, 50]",
            "addresses = [\"4x0041\", 50]",
            "59:16",
            "its 0-based protocol address is 40",
        ),
        (
            "to = \"pcs-1\"\nmode",
            "to = \"pcs-7\"\nmode",
            "42:6",
            "unknown asset \"pcs-7\"",
        ),
        (
            "name = \"pcs-2\"",
            "name = \"pcs-1\"",
            "31:8",
            "duplicate asset name \"pcs-1\"",
        ),
        (
            "on_deny = \"reset\"",
            "on_deny = \"reset\"\nrate = 5",
            "45:1",
            "unknown field `rate`",
        ),
        (
            "mode = \"enforce\"\non_deny = \"reset\"\n\n  [[conduit.rule]]\n  description = \"status",
            "mode = \"enforce\"\non_deny = \"reset\"\n\n  [[conduit.rule]]\n  quantity = 200\n  description = \"status",
            "47:3",
            "unknown field `quantity`",
        ),
    ];
    for (from, to, position, message) in cases {
        assert!(EXAMPLE.contains(from), "the example contains {from:?}");
        let (code, stderr) = check(&EXAMPLE.replacen(from, to, 1));
        assert_eq!(code, 65, "{to:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("{message:?} in {stderr}"));
        assert!(
            line.contains(&format!(".toml:{position}: error:")),
            "{to:?}: expected {position} in {line}"
        );
    }
}

#[test]
fn an_unreadable_file_exits_65() {
    let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(["policy", "check", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn risky_but_valid_policies_warn_and_deny_warnings_fails_them() {
    let risky = EXAMPLE
        .replacen("mode = \"enforce\"", "mode = \"monitor\"", 1)
        .replacen(
            "sources = [\"10.10.1.10\"]",
            "sources = [\"10.10.1.0/24\"]",
            1,
        )
        .replacen("addresses = [40, 50]", "addresses = [\"0-99\"]", 1)
        .replacen(
            "unit_ids = [1]\n\n[[asset]]",
            "unit_ids = [0, 1]\n\n[[asset]]",
            1,
        )
        .replacen(
            "on_deny = \"reset\"\n",
            "on_deny = \"reset\"\nunit_ids = [0, 1]\n",
            1,
        )
        + "\n  [[conduit.rule]]\n  function = \"diagnostics\"\n  subfunctions = [0]\n";
    let (code, stderr) = check(&risky);
    assert_eq!(code, 0, "warnings alone do not fail: {stderr}");
    for expected in [
        "is in monitor mode",
        "admits a whole subnet (10.10.1.0/24)",
        "allows write_single_register (FC 6) over 0-99",
        "allows unit id 0 (broadcast) with write FC 6",
        "allows FC 8 (diagnostics)",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(": warning: ") && l.contains(expected)),
            "{expected:?} in {stderr}"
        );
    }
    let dir = std::env::temp_dir().join(format!("bessai-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("risky.toml");
    std::fs::write(&path, &risky).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bessai-gw"))
        .args(["policy", "check", "--deny-warnings"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    let (code, stderr) = check(EXAMPLE);
    assert_eq!((code, stderr.as_str()), (0, ""), "the example is clean");
}
