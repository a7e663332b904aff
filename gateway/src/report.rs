//! `bessai-gw policy test`: the replay's output for engineers and for tools.

use std::{io::Write, path::Path};

use crate::{exit, replay};

/// How `policy test` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// Summary per conduit, then the denied transactions.
    Text,
    /// One JSON object per transaction.
    Json,
}

impl std::str::FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("\"text\" or \"json\", not {other:?}")),
        }
    }
}

/// Denied transactions listed in the text report before it summarises.
const TEXT_LIST_MAX: usize = 200;

pub fn policy_test(policy: &Path, pcap: &Path, format: ReportFormat) -> u8 {
    let compiled = match bessai_policy::load(policy) {
        Ok(p) => p.compile(),
        Err(errors) => {
            eprintln!("{errors}");
            return exit::DATAERR;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut denied_list = Vec::new();
    let mut listed_more = 0u64;
    let result = replay::replay(&compiled, pcap, |t| match format {
        ReportFormat::Json => {
            let _ = serde_json::to_writer(&mut out, t);
            let _ = out.write_all(b"\n");
        }
        ReportFormat::Text if t.verdict == "deny" => {
            if denied_list.len() < TEXT_LIST_MAX {
                denied_list.push(t.clone());
            } else {
                listed_more += 1;
            }
        }
        ReportFormat::Text => {}
    });
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = out.flush();
            eprintln!("{e}");
            return exit::DATAERR;
        }
    };
    if format == ReportFormat::Text {
        let _ = writeln!(
            out,
            "{}: {} packets, {} transactions, {} denied",
            pcap.display(),
            summary.packets,
            summary.transactions,
            summary.denied
        );
        if summary.picked_up_mid_stream > 0 {
            let _ = writeln!(
                out,
                "  {} connections picked up mid-stream (the gateway would reset them: unknown-flow)",
                summary.picked_up_mid_stream
            );
        }
        if summary.denied_segments_without_adu > 0 {
            let _ = writeln!(
                out,
                "  {} segments to a conduit port denied before any ADU could be read",
                summary.denied_segments_without_adu
            );
        }
        for (conduit, (allowed, denied)) in &summary.by_conduit {
            let reasons: Vec<String> = denied.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(
                out,
                "  conduit {conduit}: {allowed} allowed, denied: {}",
                if reasons.is_empty() {
                    "none".into()
                } else {
                    reasons.join(", ")
                }
            );
        }
        if !denied_list.is_empty() {
            let _ = writeln!(out, "denied transactions:");
        }
        for t in &denied_list {
            let _ = writeln!(
                out,
                "  {:.6} {} -> {} unit {} fc {} address {} quantity {}: {} ({}){}",
                t.ts,
                t.src,
                t.dst,
                t.unit,
                t.function,
                t.address,
                t.quantity,
                t.reason,
                t.conduit.as_deref().unwrap_or("no conduit"),
                t.response
                    .as_ref()
                    .map(|r| format!(", server answered {r}"))
                    .unwrap_or_default()
            );
        }
        if listed_more > 0 {
            let _ = writeln!(
                out,
                "  ... and {listed_more} more (use --format json for all)"
            );
        }
    }
    let _ = out.flush();
    if summary.denied > 0 { 1 } else { exit::OK }
}
