//! `cargo xtask demo`: a BESS site in network namespaces behind the gateway,
//! running the example policy; shows what passes, what is denied and why.

use anyhow::{Result, bail};
use bessai_integration::netns::{Testbed, json_lines, repo_root};
use serde_json::Value;

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root: it creates network namespaces and attaches XDP");
    }
    let policy = repo_root().join("examples/bess-site.toml");
    println!("BESSAI Edge Gateway demo\n  policy: {}\n", policy.display());
    let mut tb = Testbed::new("demo")?;
    tb.start_gateway(&policy)?;
    println!(
        "  gateway namespace {} enforcing on {:?}\n",
        tb.ns("gw"),
        tb.gw_ifaces
    );

    let steps: [(&str, &str, &[&str]); 6] = [
        ("EMS 10.10.1.10", "ems", &["read-holding:0:4"]),
        ("EMS 10.10.1.10", "ems", &["write-register:40:5000"]),
        ("EMS 10.10.1.10", "ems", &["write-register:41:9999"]),
        ("EMS 10.10.1.10", "ems", &["read-holding:0:4"]),
        ("engineering 10.10.1.20", "eng", &["write-register:40:1"]),
        ("unknown host 10.10.1.99", "out", &["read-holding:0:4"]),
    ];
    println!(
        "  {:<26} {:<24} {:<8} detail",
        "client", "request", "result"
    );
    for (who, role, ops) in steps {
        for r in tb.client(role, false, ops)? {
            let result = if r["ok"] == true { "PASSED" } else { "BLOCKED" };
            let detail = if r["ok"] == true {
                format!(
                    "values {}",
                    r.get("values").map_or("-".into(), Value::to_string)
                )
            } else {
                r["error"].as_str().unwrap_or("").to_string()
            };
            println!(
                "  {who:<26} {:<24} {result:<8} {detail}",
                r["op"].as_str().unwrap_or("")
            );
        }
    }
    println!(
        "\n  inverter registers changed by clients: {}",
        tb.changed_registers()?
    );
    tb.stop_gateway();

    println!("\n  gateway events (denied transactions):");
    println!(
        "  {:<14} {:<20} {:>4} {:>3} {:>7} {:>4}  reason",
        "conduit", "source", "unit", "fc", "address", "qty"
    );
    for e in json_lines(&tb.gateway_log()) {
        if e["message"] != "denied" {
            continue;
        }
        let field = |k: &str| {
            e.get(k).map_or("-".to_string(), |v| {
                v.to_string().trim_matches('"').to_string()
            })
        };
        println!(
            "  {:<14} {:<20} {:>4} {:>3} {:>7} {:>4}  {}",
            field("conduit"),
            field("src"),
            field("unit"),
            field("function"),
            field("address"),
            field("quantity"),
            field("reason")
        );
    }
    println!("\n  counters at exit:");
    for e in json_lines(&tb.gateway_log()) {
        if e["message"] == "packet counters" {
            println!("    {}", e["reasons"].as_str().unwrap_or(""));
        }
    }
    println!("\n  cleaned up: namespaces removed, XDP detached.");
    Ok(())
}
