//! Project tasks: `cargo xtask setup | test | demo | bench`.
//!
//! `test` and `demo` start with `setup`, so that the README's two commands work
//! on a fresh machine: they install what is missing and nothing else.

mod setup;

include!("toolchain.rs");

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain and system packages a fresh machine lacks.
    Setup,
    /// Everything CI checks: fmt, clippy (host and eBPF), all tests incl. root-only ones.
    Test,
    /// Build, start a BESS site in network namespaces, show allowed and denied traffic.
    Demo,
    /// Benchmarks: BPF_PROG_TEST_RUN ns/packet, Modbus tps through the gateway, policy reload
    /// latency, SIEM events/s and daemon memory during a 10-minute SIEM outage.
    Bench,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test => test(),
        Task::Demo => {
            setup::run()?;
            cargo(&["build", "--bins"])?;
            run(&mut Command::new("target/debug/bessai-demo"))
        }
        Task::Bench => {
            setup::run()?;
            cargo(&["build", "--release", "--bins"])?;
            run(&mut Command::new("target/release/dataplane-bench"))?;
            run(&mut Command::new("target/release/reload-bench"))?;
            run(&mut Command::new("target/release/siem-bench"))
        }
    }
}

fn test() -> Result<()> {
    setup::run()?;
    cargo(&["fmt", "--all", "--check"]).context("cargo fmt --check: run `cargo fmt --all`")?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    clippy_ebpf()?;
    cargo(&["build", "--bins"])?;
    // Root-only tests run here too (CI is root); they say why when they skip.
    cargo(&["test", "--no-fail-fast"])?;
    fuzz()
}

/// Seconds each fuzz target runs in `test` (env FUZZ_SECONDS overrides).
const FUZZ_SECONDS: &str = "30";

/// The capture reader, the decision function and the SIEM formats under libFuzzer, for a
/// bounded time, seeded with the public captures.
fn fuzz() -> Result<()> {
    let seconds = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| FUZZ_SECONDS.into());
    let corpus = std::path::Path::new("fuzz/corpus/capture_and_decide");
    std::fs::create_dir_all(corpus)?;
    for entry in std::fs::read_dir("tests/data")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pcap") {
            std::fs::copy(&path, corpus.join(path.file_name().unwrap_or_default()))?;
        }
    }
    for target in ["capture_and_decide", "decide_frame", "siem_format"] {
        let toolchain = format!("+{}", setup::FUZZ_TOOLCHAIN);
        run(Command::new("cargo")
            .current_dir("fuzz")
            .args([toolchain.as_str(), "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}")))?;
    }
    Ok(())
}

/// The XDP crate is linted for its real target: on the host it is a stub.
fn clippy_ebpf() -> Result<()> {
    let mut c = Command::new("cargo");
    c.arg(format!("+{}", pinned_toolchain()?));
    c.args([
        "clippy",
        "-p",
        "bessai-xdp",
        "--release",
        "--target",
        "bpfel-unknown-none",
    ])
    .args([
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ])
    .env("RUSTC_BOOTSTRAP", "1");
    run(&mut c)
}

pub fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new("cargo").args(args))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
