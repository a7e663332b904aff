//! `policy diff`: what changed between two policies, rule by rule, in words
//! for a change review; with a capture, which transactions change verdict.

use std::{collections::BTreeSet, fmt::Write as _, path::Path};

use bessai_policy::{Conduit, Policy, Rule, functions, ranges::show};

use crate::{exit, replay};

/// `a` minus `b`, both sorted disjoint inclusive ranges.
fn minus(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(s, e) in a {
        let mut pieces = vec![(s as u32, e as u32)];
        for &(bs, be) in b {
            let (bs, be) = (bs as u32, be as u32);
            pieces = pieces
                .into_iter()
                .flat_map(|(ps, pe)| {
                    let mut v = Vec::new();
                    if pe < bs || ps > be {
                        v.push((ps, pe));
                    } else {
                        if ps < bs {
                            v.push((ps, bs - 1));
                        }
                        if pe > be {
                            v.push((be + 1, pe));
                        }
                    }
                    v
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

fn list(v: &[(u32, u32)]) -> String {
    v.iter().map(|r| show(*r)).collect::<Vec<_>>().join(", ")
}

fn what(rule: &Rule) -> &'static str {
    match rule.function {
        8 => "sub-functions",
        43 => "MEI types",
        23 => "read addresses",
        _ => "addresses",
    }
}

fn describe_rule(r: &Rule) -> String {
    let name = functions::name(r.function);
    if r.ranges.is_empty() {
        return format!("{name} (FC {})", r.function);
    }
    let ranges: Vec<(u32, u32)> = r
        .ranges
        .iter()
        .map(|(s, e)| (*s as u32, *e as u32))
        .collect();
    let mut s = format!(
        "{name} (FC {}) at {} {}",
        r.function,
        what(r),
        list(&ranges)
    );
    if !r.write_ranges.is_empty() {
        let w: Vec<(u32, u32)> = r
            .write_ranges
            .iter()
            .map(|(s, e)| (*s as u32, *e as u32))
            .collect();
        let _ = write!(s, ", writing {}", list(&w));
    }
    s
}

fn conduit_changes(out: &mut Vec<String>, old: &Policy, new: &Policy, a: &Conduit, b: &Conduit) {
    let name = &a.name;
    let (asset_a, asset_b) = (&old.assets[a.asset], &new.assets[b.asset]);
    if asset_a.name != asset_b.name
        || asset_a.address != asset_b.address
        || asset_a.port != asset_b.port
    {
        out.push(format!(
            "conduit {name}: now leads to {} ({}:{}) instead of {} ({}:{})",
            asset_b.name,
            asset_b.address,
            asset_b.port,
            asset_a.name,
            asset_a.address,
            asset_a.port
        ));
    }
    if a.mode != b.mode {
        let word = |m| {
            if m == bessai_policy::Mode::Monitor {
                "monitor"
            } else {
                "enforce"
            }
        };
        out.push(format!(
            "conduit {name}: mode {} -> {}",
            word(a.mode),
            word(b.mode)
        ));
    }
    if a.on_deny != b.on_deny {
        out.push(
            format!("conduit {name}: on_deny {:?} -> {:?}", a.on_deny, b.on_deny).to_lowercase(),
        );
    }
    let (sa, sb): (BTreeSet<String>, BTreeSet<String>) = (
        a.sources.iter().map(ToString::to_string).collect(),
        b.sources.iter().map(ToString::to_string).collect(),
    );
    for s in sb.difference(&sa) {
        out.push(format!("conduit {name}: admits source {s}"));
    }
    for s in sa.difference(&sb) {
        out.push(format!("conduit {name}: no longer admits source {s}"));
    }
    let (ua, ub): (BTreeSet<u8>, BTreeSet<u8>) = (
        a.unit_ids.iter().copied().collect(),
        b.unit_ids.iter().copied().collect(),
    );
    for u in ub.difference(&ua) {
        out.push(format!("conduit {name}: allows unit id {u}"));
    }
    for u in ua.difference(&ub) {
        out.push(format!("conduit {name}: no longer allows unit id {u}"));
    }
    for rb in &b.rules {
        match a.rules.iter().find(|r| r.function == rb.function) {
            None => out.push(format!("conduit {name}: now allows {}", describe_rule(rb))),
            Some(ra) => {
                let fname = functions::name(rb.function);
                for (label, old_r, new_r) in [
                    (what(rb), &ra.ranges, &rb.ranges),
                    ("write addresses", &ra.write_ranges, &rb.write_ranges),
                ] {
                    let added = minus(new_r, old_r);
                    let removed = minus(old_r, new_r);
                    if !added.is_empty() {
                        out.push(format!(
                            "conduit {name}: {fname} (FC {}) widened to {label} {}",
                            rb.function,
                            list(&added)
                        ));
                    }
                    if !removed.is_empty() {
                        out.push(format!(
                            "conduit {name}: {fname} (FC {}) no longer at {label} {}",
                            rb.function,
                            list(&removed)
                        ));
                    }
                }
            }
        }
    }
    for ra in &a.rules {
        if !b.rules.iter().any(|r| r.function == ra.function) {
            out.push(format!(
                "conduit {name}: no longer allows {}",
                describe_rule(ra)
            ));
        }
    }
}

/// The changes from `old` to `new`, one sentence each.
pub fn changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for b in &new.conduits {
        match old.conduits.iter().find(|a| a.name == b.name) {
            Some(a) => conduit_changes(&mut out, old, new, a, b),
            None => {
                let asset = &new.assets[b.asset];
                let sources: Vec<String> = b.sources.iter().map(ToString::to_string).collect();
                out.push(format!(
                    "new conduit {}: {} -> {} ({}:{})",
                    b.name,
                    sources.join(", "),
                    asset.name,
                    asset.address,
                    asset.port
                ));
                for r in &b.rules {
                    out.push(format!("conduit {}: allows {}", b.name, describe_rule(r)));
                }
            }
        }
    }
    for a in &old.conduits {
        if !new.conduits.iter().any(|b| b.name == a.name) {
            out.push(format!(
                "conduit {} removed: its traffic is now denied",
                a.name
            ));
        }
    }
    out
}

pub fn policy_diff(old: &Path, new: &Path, pcap: Option<&Path>) -> u8 {
    let (old_p, new_p) = match (bessai_policy::load(old), bessai_policy::load(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            for e in [a.err(), b.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return exit::DATAERR;
        }
    };
    let lines = changes(&old_p, &new_p);
    println!(
        "{} -> {}: {} changes",
        old.display(),
        new.display(),
        lines.len()
    );
    for l in &lines {
        println!("  {l}");
    }
    let Some(pcap) = pcap else { return exit::OK };
    let collect = |p: &Policy| {
        let mut v = Vec::new();
        replay::replay(&p.compile(), pcap, |t| v.push(t.clone())).map(|_| v)
    };
    let (before, after) = match (collect(&old_p), collect(&new_p)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return exit::DATAERR;
        }
    };
    let key = |t: &replay::Transaction| (t.ts.to_bits(), t.src, t.dst, t.transaction_id);
    let mut newly_denied = Vec::new();
    let mut newly_allowed = Vec::new();
    for b in &before {
        if let Some(a) = after.iter().find(|a| key(a) == key(b))
            && a.verdict != b.verdict
        {
            if a.verdict == "deny" {
                newly_denied.push(a)
            } else {
                newly_allowed.push(a)
            }
        }
    }
    println!(
        "{}: {} transactions; {} allowed before and denied now, {} denied before and allowed now",
        pcap.display(),
        before.len(),
        newly_denied.len(),
        newly_allowed.len()
    );
    for (label, v) in [
        ("allow -> deny", &newly_denied),
        ("deny -> allow", &newly_allowed),
    ] {
        for t in v.iter() {
            println!(
                "  {label}: {:.6} {} -> {} unit {} fc {} address {} quantity {} ({})",
                t.ts, t.src, t.dst, t.unit, t.function, t.address, t.quantity, t.reason
            );
        }
    }
    exit::OK
}
