//! `cargo xtask bench`, part 2: policy reload latency of the daemon.
//!
//! A policy of 1,000 conduits and 10,000 rules runs in a namespace site;
//! the bench rewrites it, sends SIGHUP and times, from outside the daemon,
//! how long until the pinned `ACTIVE` map names the new generation (the
//! moment the kernel judges by the new policy). The baseline beside it is
//! the same reload of the 4-conduit example policy. Target: under 50 ms.
//!
//! Writes target/bench/reload.json.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData};
use bessai_integration::netns::{Deployment, Testbed, json_lines, repo_root};
use serde_json::json;

const RELOADS: usize = 15;
const CONDUITS: usize = 1000;

/// A site policy with `conduits` conduits of 10 rules each; `variant`
/// shifts every range so that two variants differ in every rule.
fn big_policy(conduits: usize, variant: u16) -> String {
    let mut p = String::from(
        "version = 1\nsite = \"reload bench\"\n\n\
         [[zone]]\nname = \"control-center\"\nnetworks = [\"10.10.1.0/24\"]\n\n\
         [[zone]]\nname = \"inverters\"\nnetworks = [\"10.10.2.0/24\", \"10.20.0.0/16\"]\n\n",
    );
    for i in 0..conduits {
        let addr = if i == 0 {
            "10.10.2.11".to_string()
        } else {
            format!("10.20.{}.{}", i / 250, i % 250 + 1)
        };
        let _ = write!(
            p,
            "[[asset]]\nname = \"pcs-{i}\"\nzone = \"inverters\"\naddress = \"{addr}\"\nunit_ids = [1]\n\n"
        );
    }
    for i in 0..conduits {
        let _ = write!(
            p,
            "[[conduit]]\nname = \"ems-to-pcs-{i}\"\nfrom = \"control-center\"\nsources = [\"10.10.1.10\"]\nto = \"pcs-{i}\"\n\n"
        );
        for (n, function) in [1, 2, 3, 4, 5, 6, 15, 16, 22, 24].iter().enumerate() {
            let start = variant + n as u16 * 100;
            let _ = write!(
                p,
                "  [[conduit.rule]]\n  function = {function}\n  addresses = [\"{start}-{}\"]\n\n",
                start + 49
            );
        }
    }
    p
}

fn active(map: &Array<MapData, u32>) -> Result<u32> {
    Ok(map.get(&0, 0)?)
}

struct Measured {
    /// SIGHUP to the flip of ACTIVE, seen from outside.
    external_ms: Vec<f64>,
    /// The daemon's own figure (reload start to flip).
    daemon_ms: Vec<f64>,
    conduits: usize,
    rules: usize,
}

fn measure(name: &str, policy_text: &dyn Fn(u16) -> String) -> Result<Measured> {
    let mut tb = Testbed::with(name, Deployment::Routed)?;
    let policy = tb.work.join("policy.toml");
    fs::write(&policy, policy_text(0))?;
    let compiled = bessai_policy::load(&policy)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .compile();
    let config = tb.write_config(&policy)?;
    tb.start_gateway_config(&config)?;
    let pinned = MapData::from_pin(tb.pin_path().join("maps/ACTIVE")).context("pinned ACTIVE")?;
    let map: Array<MapData, u32> = Array::try_from(Map::Array(pinned))?;
    let mut external_ms = Vec::new();
    for n in 0..RELOADS {
        let text = policy_text(n as u16 % 2 + 1);
        let tmp = tb.work.join("policy.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &policy)?;
        let before = active(&map)?;
        let t0 = Instant::now();
        tb.signal_gateway(libc::SIGHUP);
        while active(&map)? == before {
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("reload {n} did not switch within 10 s");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        external_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Let the daemon finish (retire the old generation, nftables).
        wait_reloads(&tb.work.join("gateway.log"), n + 1)?;
    }
    tb.stop_gateway();
    let daemon_ms = json_lines(&tb.gateway_log())
        .iter()
        .filter(|l| l["audit"] == "reload_succeeded")
        .filter_map(|l| l["took_ms"].as_f64())
        .collect();
    Ok(Measured {
        external_ms,
        daemon_ms,
        conduits: compiled.conduits_meta.len(),
        rules: compiled.rules.len(),
    })
}

fn wait_reloads(log: &Path, n: usize) -> Result<()> {
    let t0 = Instant::now();
    while json_lines(log)
        .iter()
        .filter(|l| l["audit"] == "reload_succeeded")
        .count()
        < n
    {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("reload {n} not logged");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn stats(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[s.len() - 1])
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("reload-bench needs root (namespaces, XDP)");
    }
    let example = fs::read_to_string(repo_root().join("examples/bess-site.toml"))?;
    let small = measure("rsmall", &|v| format!("{example}\n# variant {v}\n"))?;
    let big = measure("rbig", &|v| big_policy(CONDUITS, v))?;
    println!(
        "\nPolicy reload: SIGHUP → new generation in force (pinned ACTIVE map flips), {RELOADS} reloads each"
    );
    println!(
        "{:<34} {:>9} {:>7} {:>12} {:>10} {:>16}",
        "policy", "conduits", "rules", "median ms", "max ms", "daemon median ms"
    );
    let mut rows = Vec::new();
    for (label, m) in [
        ("example (baseline)", &small),
        ("1,000 conduits / 10,000 rules", &big),
    ] {
        let (med, max) = stats(&m.external_ms);
        let (dmed, _) = stats(&m.daemon_ms);
        println!(
            "{label:<34} {:>9} {:>7} {med:>12.2} {max:>10.2} {dmed:>16.2}",
            m.conduits, m.rules
        );
        rows.push(json!({
            "policy": label, "conduits": m.conduits, "rules": m.rules,
            "median_ms": med, "max_ms": max, "daemon_median_ms": dmed,
            "samples_ms": m.external_ms,
        }));
    }
    let (big_median, _) = stats(&big.external_ms);
    println!(
        "target: under 50 ms for 1,000 conduits / 10,000 rules: {}",
        if big_median < 50.0 { "met" } else { "MISSED" }
    );
    let out = repo_root().join("target/bench");
    fs::create_dir_all(&out)?;
    fs::write(
        out.join("reload.json"),
        serde_json::to_string_pretty(&json!({ "reload": rows }))?,
    )?;
    Ok(())
}
