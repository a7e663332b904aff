use std::path::{Path, PathBuf};

use super::*;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Parses `text` as if it were a file in examples/ (so that the example
/// policy resolves), without looking at the system's interfaces.
fn parse_example(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, &examples().join("test-gateway.toml"))
}

fn errors(text: &str) -> Vec<String> {
    match parse_example(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str = r#"
[gateway]
policy = "bess-site.toml"

[[interface]]
name = "eth1"
zone = "control-center"

[[interface]]
name = "eth2"
zone = "inverters"
"#;

#[test]
fn the_shipped_example_is_valid() {
    let c = load(&examples().join("gateway.toml")).expect("valid");
    assert_eq!(c.deployment, Deployment::Routed);
    assert_eq!(c.interfaces.len(), 2);
    assert_eq!(c.nft_table.as_deref(), Some("bessai"));
    let m = c.management.expect("management");
    assert_eq!(m.tcp_ports, vec![22, 8443]);
    let s = c.siem.expect("siem");
    assert_eq!(s.destinations[0].format, "cef");
    assert_eq!(c.policy.conduits.len(), 4);
}

#[test]
fn defaults_keep_the_boundary_closed() {
    let c = parse_example(MINIMAL).expect("valid");
    assert_eq!(c.pin_path, PathBuf::from(DEFAULT_PIN_PATH));
    assert_eq!(c.nft_table.as_deref(), Some("bessai"));
    assert_eq!(c.xdp_mode, XdpMode::Auto);
}

#[test]
fn errors_name_file_line_and_reason() {
    let text = MINIMAL.replace("zone = \"inverters\"", "zone = \"inverterz\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("test-gateway.toml:11:8: error: zone \"inverterz\" is not in the policy"),
        "{errs:?}"
    );
    assert!(errs[0].contains("control-center, inverters"), "{errs:?}");
}

#[test]
fn on_shutdown_open_is_refused_with_the_way_to_decommission() {
    let text = MINIMAL.replace(
        "policy = \"bess-site.toml\"",
        "policy = \"bess-site.toml\"\non_shutdown = \"open\"",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains(":4:15: error: on_shutdown = \"open\" would open the boundary")
            && errs[0].contains("bessai-gw boundary decommission"),
        "{errs:?}"
    );
    let keep = MINIMAL.replace(
        "policy = \"bess-site.toml\"",
        "policy = \"bess-site.toml\"\non_shutdown = \"keep\"",
    );
    parse_example(&keep).expect("keep is what happens anyway");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[gateway]
policy = "bess-site.toml"
mode = "transparent"
on_shutdown = "detach"
stats_interval = -1

[[interface]]
name = "this-name-is-too-long"
zone = "control-center"

[[interface]]
name = "eth1"
zone = "nowhere"

[[interface]]
name = "eth1"
zone = "inverters"

[management]
networks = ["10.0.0.0/33"]
tcp_ports = [0]
listen = "nowhere"

[[siem.destination]]
url = "http://siem:80"
format = "xml"
"#;
    let errs = errors(text);
    let expect = [
        ":4:8: error: mode must be one of \"routed\", \"bridge\", not \"transparent\"",
        ":5:15: error: on_shutdown must be one of",
        ":6:18: error: stats_interval -1 is outside 0..=86400",
        ":9:8: error: interface name \"this-name-is-too-long\"",
        ":14:8: error: zone \"nowhere\"",
        ":17:8: error: interface \"eth1\" listed twice (first on line 13)",
        ":21:13: error: \"10.0.0.0/33\" is not an address or network",
        ":22:14: error: tcp_ports 0 is outside 1..=65535",
        ":23:10: error: \"nowhere\" is not an address:port",
        ":26:7: error: destination \"http://siem:80\"",
        ":27:10: error: format must be one of",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.contains(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn unknown_keys_and_syntax_errors_are_positioned() {
    let errs = errors(&MINIMAL.replace("[gateway]\n", "[gateway]\npolcy = 1\n"));
    assert!(
        errs[0].contains(":3:1: error: unknown field `polcy`"),
        "{errs:?}"
    );
    let errs = errors("[gateway\npolicy = 1");
    assert!(errs[0].contains(":1:"), "{errs:?}");
}

#[test]
fn a_broken_policy_is_reported_through_the_configuration() {
    let dir = std::env::temp_dir().join(format!("bessai-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.toml"), "version = 1\n[[zone]]\nname = 3\n").unwrap();
    let text = MINIMAL.replace("bess-site.toml", "p.toml");
    let err = parse(&text, &dir.join("gw.toml")).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("gw.toml:3:10: error: the policy"), "{err}");
    assert!(err.contains("p.toml:3:"), "{err}");
}

#[test]
fn bridge_mode_needs_its_bridge() {
    let errs = errors(&MINIMAL.replace("[gateway]\n", "[gateway]\nmode = \"bridge\"\n"));
    assert!(errs[0].contains("needs a [bridge] section"), "{errs:?}");
    let ok = MINIMAL.replace("[gateway]\n", "[gateway]\nmode = \"bridge\"\n")
        + "[bridge]\nname = \"br0\"\n";
    assert_eq!(parse_example(&ok).unwrap().bridge.as_deref(), Some("br0"));
    let errs = errors(&(MINIMAL.to_string() + "[bridge]\nname = \"br0\"\n"));
    assert!(errs[0].contains("only for mode \"bridge\""), "{errs:?}");
}

#[test]
fn a_missing_interface_is_no_configuration_error() {
    // Ports enumerate late; the daemon waits for them (daemon/interfaces.rs).
    let c = parse(
        &MINIMAL.replace("eth1", "bgwnosuch0"),
        &examples().join("x.toml"),
    )
    .expect("valid");
    assert_eq!(c.interfaces[0].name, "bgwnosuch0");
}

#[test]
fn management_access_can_name_a_policy_zone() {
    let c = parse_example(
        &(MINIMAL.to_string() + "[management]\nzone = \"control-center\"\ntcp_ports = [22]\n"),
    )
    .expect("valid");
    let m = c.management.unwrap();
    assert_eq!(m.networks, vec!["10.10.1.0/24".parse().unwrap()]);
    let errs = errors(&(MINIMAL.to_string() + "[management]\nzone = \"dmz\"\n"));
    assert!(
        errs[0].contains("zone \"dmz\" is not in the policy"),
        "{errs:?}"
    );
    let errs = errors(&(MINIMAL.to_string() + "[management]\ntcp_ports = [22]\n"));
    assert!(errs[0].contains("needs zone"), "{errs:?}");
}
