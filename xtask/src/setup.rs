//! Idempotent bootstrap (see the eBPF toolchain recipe in docs/development.md):
//! Debian packages, rust-src for the pinned toolchain, bpf-linker built
//! against Debian's LLVM 22, pymodbus for the second test client, scapy for
//! the raw-socket attacker of the normalizer tests.

use std::process::Command;

use anyhow::Result;

use crate::run as exec;

/// LLVM for bpf-linker (its major must equal rustc's: 22 for 1.95), the
/// namespace and firewall tools the tests drive, Python for pymodbus.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "nftables",
    "tcpdump",
    "ethtool",
    "python3-pip",
    "iputils-ping",
    "systemd",
    "rsyslog",
    "rsyslog-gnutls",
    "rsyslog-openssl",
    "rsyslog-relp",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const PYMODBUS: &str = "pymodbus==3.8.6";
/// Builds the raw TCP segments of integration/clients/tcp_inject.py.
const SCAPY: &str = "scapy==2.8.0";
/// Fuzzing needs nightly (sanitizers, libFuzzer); pinned for reproducible CI.
pub const FUZZ_TOOLCHAIN: &str = "nightly-2026-05-20";
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    let run = exec;
    let toolchain = crate::pinned_toolchain()?;
    let toolchain = toolchain.as_str();
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !succeeds(
                Command::new("dpkg-query").args(["-W", "-f=${Status}", p]),
                "install ok installed",
            )
        })
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing);
        install.env("DEBIAN_FRONTEND", "noninteractive");
        // A concurrent apt run can clean the archive cache under us: try twice.
        if run(&mut install).is_err() {
            run(&mut install)?;
        }
    }
    if !succeeds(
        Command::new("rustup").args(["component", "list", "--installed", "--toolchain", toolchain]),
        "rust-src",
    ) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
        ]))?;
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "clippy",
            "rustfmt",
            "--toolchain",
            toolchain,
        ]))?;
    }
    if !succeeds(
        Command::new("bpf-linker").arg("--version"),
        BPF_LINKER_VERSION,
    ) {
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    if !succeeds(
        Command::new("rustup").args(["toolchain", "list"]),
        FUZZ_TOOLCHAIN,
    ) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            FUZZ_TOOLCHAIN,
            "--profile",
            "minimal",
        ]))?;
    }
    if !succeeds(
        Command::new("cargo").args(["fuzz", "--version"]),
        CARGO_FUZZ_VERSION,
    ) {
        run(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    for (module, pin) in [("pymodbus", PYMODBUS), ("scapy", SCAPY)] {
        if !python_has(module, pin) {
            run(Command::new("python3").args(["-m", "pip", "install", "-q", pin]))?;
        }
    }
    Ok(())
}

/// True when Python imports `module` at the version `pin` names.
fn python_has(module: &str, pin: &str) -> bool {
    let version = pin.rsplit("==").next().unwrap_or_default();
    succeeds(
        Command::new("python3").args([
            "-c",
            &format!("import {module}; print({module}.__version__)"),
        ]),
        version,
    )
}

/// True when `cmd` exits 0 and its stdout contains `needle`.
fn succeeds(cmd: &mut Command, needle: &str) -> bool {
    cmd.output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(needle))
}
