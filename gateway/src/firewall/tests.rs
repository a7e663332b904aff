use std::{
    os::unix::fs::MetadataExt,
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::{Value, json};

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
            listen: None,
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

/// The `expr` of the rule commented `comment` in `family`.
fn rule_expr(r: &Nftables, family: &str, comment: &str) -> Value {
    let v = serde_json::to_value(r).unwrap();
    let found: Vec<Value> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["add"]["rule"])
        .filter(|r| r["family"] == family && r["comment"] == comment)
        .map(|r| r["expr"].clone())
        .collect();
    assert_eq!(found.len(), 1, "one {family} rule {comment:?}: {found:?}");
    found[0].clone()
}

fn is(protocol: &str, field: &str, right: Value) -> Value {
    json!({"match": {"left": {"payload": {"protocol": protocol, "field": field}},
                     "right": right, "op": "=="}})
}

fn on_port(key: &str, name: &str) -> Value {
    json!({"match": {"left": {"meta": {"key": key}}, "right": name, "op": "=="}})
}

fn ct_new() -> Value {
    json!({"match": {"left": {"ct": {"key": "state"}}, "right": "new", "op": "in"}})
}

fn conduit(name: &str, sources: &[&str], address: &str, to: &str) -> ConduitMeta {
    ConduitMeta {
        name: name.into(),
        from: "control-center".into(),
        sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
        asset: "asset".into(),
        to: to.into(),
        address: address.parse().unwrap(),
        port: 502,
        mode: bessai_policy::Mode::Enforce,
        on_deny: bessai_policy::OnDeny::Reset,
    }
}

#[test]
fn a_conduit_rule_admits_only_new_connections_from_its_clients_to_its_asset() {
    let conduits = example();
    let r = build(&spec(&conduits, Deployment::Routed));
    assert_eq!(
        rule_expr(&r, "inet", "conduit ems-to-pcs-1"),
        json!([
            on_port("iifname", "eth1"),
            on_port("oifname", "eth2"),
            is("ip", "saddr", json!("10.10.1.10")),
            is("ip", "daddr", json!("10.10.2.11")),
            is("tcp", "dport", json!(502)),
            ct_new(),
            {"counter": null},
            {"accept": null}
        ])
    );
}

#[test]
fn a_monitor_mode_conduit_keeps_its_l3_l4_accept() {
    let mut conduits = example();
    conduits[0].mode = bessai_policy::Mode::Monitor;
    let r = build(&spec(&conduits, Deployment::Routed));
    let expr = rule_expr(&r, "inet", "conduit ems-to-pcs-1");
    assert_eq!(
        expr.as_array().unwrap().last(),
        Some(&json!({"accept": null}))
    );
}

#[test]
fn an_ipv6_asset_is_matched_with_ip6_and_only_its_ipv6_clients() {
    // Mixed sources: the IPv4 client can never reach an IPv6 address, so
    // the rule names only the IPv6 networks.
    let conduits = [conduit(
        "v6",
        &["10.10.1.10", "fd00:1::/64", "fd00:2::5"],
        "fd00:9::11",
        "inverters",
    )];
    let r = build(&spec(&conduits, Deployment::Routed));
    assert_eq!(
        rule_expr(&r, "inet", "conduit v6"),
        json!([
            on_port("iifname", "eth1"),
            on_port("oifname", "eth2"),
            is("ip6", "saddr", json!({"set": [{"prefix": {"addr": "fd00:1::", "len": 64}}, "fd00:2::5"]})),
            is("ip6", "daddr", json!("fd00:9::11")),
            is("tcp", "dport", json!(502)),
            ct_new(),
            {"counter": null},
            {"accept": null}
        ])
    );
}

#[test]
fn bridge_conduits_pass_replies_statelessly_back_to_the_clients_only() {
    // No bridge conntrack in the kernel: the replies need their own rule.
    let conduits = example();
    let r = build(&spec(&conduits, Deployment::Bridge));
    assert_eq!(
        rule_expr(&r, "bridge", "conduit eng-to-pcs-2 replies"),
        json!([
            on_port("iifname", "eth2"),
            on_port("oifname", "eth1"),
            is("ip", "saddr", json!("10.10.2.12")),
            is("tcp", "sport", json!(502)),
            is("ip", "daddr", json!("10.10.1.20")),
            {"counter": null},
            {"accept": null}
        ])
    );
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
    assert!(!rules.iter().any(|(f, _, m)| f == "bridge" && m == "arp"));
    assert!(rules.iter().any(|(f, c, m)| f == "bridge"
        && c == "forward"
        && m == "conduit ems-to-pcs-1 address resolution"));
    assert!(
        rules
            .iter()
            .any(|(f, c, m)| f == "inet" && c == "input" && m == "management")
    );
    assert!(!rules.iter().any(|(f, c, _)| f == "inet" && c == "forward"));
}

#[test]
fn bridge_arp_crosses_only_between_a_conduits_sources_and_its_asset() {
    let conduits = example();
    let r = build(&spec(&conduits, Deployment::Bridge));
    let v = serde_json::to_value(&r).unwrap();
    let arp: Vec<&Value> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["add"]["rule"].as_object())
        .filter(|r| r.get("comment") == Some(&json!("conduit eng-to-pcs-2 address resolution")))
        .map(|r| &r["expr"])
        .collect();
    assert_eq!(
        arp,
        [
            &json!([
                on_port("iifname", "eth1"),
                on_port("oifname", "eth2"),
                is("ether", "type", json!("arp")),
                is("arp", "saddr ip", json!("10.10.1.20")),
                is("arp", "daddr ip", json!("10.10.2.12")),
                {"counter": null},
                {"accept": null}
            ]),
            &json!([
                on_port("iifname", "eth2"),
                on_port("oifname", "eth1"),
                is("ether", "type", json!("arp")),
                is("arp", "saddr ip", json!("10.10.2.12")),
                is("arp", "daddr ip", json!("10.10.1.20")),
                {"counter": null},
                {"accept": null}
            ]),
        ]
    );
    // Router advertisements are no neighbour resolution: nothing lets them
    // across.
    let text = to_json(&r);
    let forward_part = &text[..text.find("\"input\"").unwrap_or(text.len())];
    assert!(!forward_part.contains("nd-router-advert"), "{forward_part}");
}

#[test]
fn a_conduit_whose_zone_has_no_port_gets_no_accept() {
    let conduits = example();
    let mut sp = spec(&conduits, Deployment::Routed);
    sp.zones.retain(|z| z.zone != "inverters");
    let r = build(&sp);
    let forward: Vec<String> = rules(&r)
        .into_iter()
        .filter(|(_, c, _)| c == "forward")
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(forward, ["", "invalid", "default deny"]);
}

/// A network namespace of its own, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Option<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        // /proc/self belongs to the process's effective user.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
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

    /// Packets counted by the rule commented `comment`, as `nft -j` shows.
    fn counted(&self, family: &str, comment: &str) -> Option<u64> {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "-j", "list", "table", family, "bessai",
            ])
            .output()
            .unwrap();
        let listed: Value = serde_json::from_slice(&out.stdout).ok()?;
        listed["nftables"]
            .as_array()?
            .iter()
            .map(|o| &o["rule"])
            .find(|r| r["comment"] == comment)?["expr"]
            .as_array()?
            .iter()
            .find_map(|e| e["counter"]["packets"].as_u64())
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
    let mut conduits = example();
    conduits.push(conduit(
        "v6",
        &["10.10.1.10", "fd00:1::/64", "fd00:2::5"],
        "fd00:9::11",
        "inverters",
    ));
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
    assert_eq!(ns.counted("inet", "conduit eng-to-pcs-2"), Some(0));
    assert_eq!(ns.counted("inet", "default deny"), Some(0));

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

    ns.nft().remove("bessai").unwrap();
    assert!(ns.list("inet").is_empty());
    ns.nft().remove("bessai").unwrap();
}

#[test]
fn a_bridge_deployment_installs_and_removes_both_tables() {
    let Some(ns) = Netns::new() else { return };
    let conduits = example();
    ns.nft()
        .apply(&build(&spec(&conduits, Deployment::Bridge)))
        .unwrap();
    assert_eq!(ns.counted("bridge", "conduit ems-to-pcs-1"), Some(0));
    assert_eq!(ns.counted("inet", "management"), Some(0));
    assert!(!ns.list("inet").contains("conduit"));

    ns.nft().remove("bessai").unwrap();
    assert!(ns.list("bridge").is_empty());
    assert!(ns.list("inet").is_empty());
}
