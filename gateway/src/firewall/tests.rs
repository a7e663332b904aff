use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn example() -> Vec<ConduitMeta> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bess-site.toml");
    bessai_policy::load(&path)
        .expect("example policy")
        .compile()
        .conduits_meta
}

fn spec(conduits: &[ConduitMeta], deployment: Deployment) -> RulesetSpec<'_> {
    RulesetSpec {
        table: "bessai".into(),
        deployment,
        zones: vec![
            ZoneInterfaces {
                zone: "control-center".into(),
                ifaces: vec!["eth1".into()],
            },
            ZoneInterfaces {
                zone: "inverters".into(),
                ifaces: vec!["eth2".into()],
            },
        ],
        conduits,
        management: Some(Management {
            networks: vec!["192.168.100.0/24".parse().unwrap()],
            tcp_ports: vec![22],
        }),
    }
}

/// (family, chain, comment) of every rule, in order.
fn rules(r: &Nftables) -> Vec<(String, String, String)> {
    let v = serde_json::to_value(r).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["add"]["rule"].as_object())
        .map(|r| {
            (
                r["family"].as_str().unwrap().to_string(),
                r["chain"].as_str().unwrap().to_string(),
                r.get("comment")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn routed_ruleset_allows_each_conduit_and_denies_the_rest() {
    let conduits = example();
    let r = build(&spec(&conduits, Deployment::Routed));
    let v = serde_json::to_value(&r).unwrap();
    let objects = v["nftables"].as_array().unwrap();
    // Replaced as a whole: add, delete, add the table first.
    assert!(objects[0]["add"]["table"].is_object());
    assert!(objects[1]["delete"]["table"].is_object());
    assert!(objects[2]["add"]["table"].is_object());
    for chain in objects.iter().filter_map(|o| o["add"]["chain"].as_object()) {
        assert_eq!(chain["policy"], "drop", "{chain:?}");
    }
    let rules = rules(&r);
    let forward: Vec<&str> = rules
        .iter()
        .filter(|(_, c, _)| c == "forward")
        .map(|(_, _, comment)| comment.as_str())
        .collect();
    assert_eq!(
        forward,
        [
            "",
            "invalid",
            "conduit ems-to-pcs-1",
            "conduit ems-to-pcs-2",
            "conduit eng-to-pcs-1",
            "conduit eng-to-pcs-2",
            "default deny"
        ]
    );
    assert!(
        rules
            .iter()
            .any(|(_, c, m)| c == "input" && m == "management")
    );
    let json = to_json(&r);
    assert!(json.contains("\"saddr\""), "{json}");
}

#[test]
fn bridge_ruleset_filters_frames_in_the_bridge_family() {
    let conduits = example();
    let r = build(&spec(&conduits, Deployment::Bridge));
    let rules = rules(&r);
    assert!(
        rules
            .iter()
            .any(|(f, c, m)| f == "bridge" && c == "forward" && m == "conduit ems-to-pcs-1")
    );
    assert!(rules.iter().any(|(f, _, m)| f == "bridge" && m == "arp"));
    assert!(
        rules
            .iter()
            .any(|(f, c, m)| f == "inet" && c == "input" && m == "management")
    );
    assert!(!rules.iter().any(|(f, c, _)| f == "inet" && c == "forward"));
}

/// A network namespace of its own, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Option<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let have_nft = std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_ok();
        if !root || !have_nft {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run nft tests as root"
            );
            eprintln!("skipped: needs root and nft");
            return None;
        }
        let name = format!(
            "bnft-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status();
        assert!(ok.is_ok_and(|s| s.success()));
        Some(Self(name))
    }

    fn nft(&self) -> Nft {
        Nft {
            netns: Some(self.0.clone()),
        }
    }

    fn list(&self, family: &str) -> String {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "list", "table", family, "bessai",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn the_kernel_accepts_both_rulesets() {
    let Some(ns) = Netns::new() else { return };
    let conduits = example();
    for d in [Deployment::Routed, Deployment::Bridge] {
        ns.nft().check(&build(&spec(&conduits, d))).unwrap();
    }
}

#[test]
fn applying_replaces_the_table_atomically_and_remove_is_idempotent() {
    let Some(ns) = Netns::new() else { return };
    let conduits = example();
    ns.nft()
        .apply(&build(&spec(&conduits, Deployment::Routed)))
        .unwrap();
    assert!(ns.list("inet").contains("conduit eng-to-pcs-2"));

    // A policy without the engineering conduits: the table is replaced.
    let fewer: Vec<ConduitMeta> = conduits
        .iter()
        .filter(|c| c.name.starts_with("ems"))
        .cloned()
        .collect();
    ns.nft()
        .apply(&build(&spec(&fewer, Deployment::Routed)))
        .unwrap();
    let listed = ns.list("inet");
    assert!(!listed.contains("eng-to-pcs"), "{listed}");
    assert_eq!(
        listed.matches("conduit ems-to-pcs-1").count(),
        1,
        "{listed}"
    );

    // nft rejects an interface name that is too long: nothing changes.
    let mut bad = spec(&conduits, Deployment::Routed);
    bad.zones[0].ifaces = vec!["an-interface-name-far-too-long".into()];
    let err = ns
        .nft()
        .apply(&build(&bad))
        .expect_err("nft accepted a 30-character name");
    assert!(
        err.to_string().contains("exceeds maximum length"),
        "nft's reason: {err}"
    );
    let after = ns.list("inet");
    assert_eq!(after, listed, "a rejected ruleset changed the table");

    ns.nft().remove("bessai", Deployment::Routed).unwrap();
    assert!(ns.list("inet").is_empty());
    ns.nft().remove("bessai", Deployment::Routed).unwrap();
}
