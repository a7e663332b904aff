//! What the appliance tests share: the example site, the enforcement
//! check every scenario ends with, and reading the audit trail.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

use crate::netns::{Deployment, Testbed, json_lines, repo_root};

pub fn example_policy() -> PathBuf {
    repo_root().join("examples/bess-site.toml")
}

/// A client's result line says the transaction succeeded.
pub fn ok(v: &Value) -> bool {
    v["ok"].as_bool() == Some(true)
}

/// A testbed with the inverter simulator and the plain TCP services.
pub fn site(name: &str, deployment: Deployment) -> Testbed {
    let mut tb = Testbed::with(name, deployment).unwrap();
    tb.start_services().unwrap();
    tb
}

/// An allowed read is served and a forbidden write is stopped.
pub fn assert_enforcing(tb: &Testbed, when: &str) {
    let r = tb
        .client("ems", false, &["read-holding:0:2", "write-register:41:999"])
        .unwrap();
    assert!(ok(&r[0]), "{when}: allowed read: {}", r[0]);
    assert!(!ok(&r[1]), "{when}: forbidden write passed: {}", r[1]);
    assert_write_41_absent(tb, when);
}

/// The inverter never saw register 41 written.
pub fn assert_write_41_absent(tb: &Testbed, when: &str) {
    let regs = tb.changed_registers().unwrap();
    assert!(
        regs.get("41").is_none(),
        "{when}: write reached the inverter: {regs}"
    );
}

/// The audit records of one kind in a JSON log.
pub fn audit<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter().filter(|l| l["audit"] == kind).collect()
}

/// Waits (60 s at most: nft has stalled for 35 s while other tests tore
/// down their namespaces) until the gateway log holds `count` records of
/// `kind`.
pub fn wait_for_audit(tb: &Testbed, kind: &str, count: usize) {
    let start = std::time::Instant::now();
    while audit(&json_lines(&tb.gateway_log()), kind).len() < count {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {count} × {kind}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
