//! Builds the XDP object with aya-build and leaves it in OUT_DIR for
//! `include_bytes_aligned!`.
//!
//! Toolchain: the one rust-toolchain.toml names (stable, with rust-src),
//! passed explicitly so that `cargo +other build` cannot change what
//! compiles the eBPF object; `-Z build-std=core` needs RUSTC_BOOTSTRAP,
//! which is set for the nested eBPF build only (setting it globally changes
//! how host build scripts probe features). See ../shared/toolchain.md in the
//! steering repo for why not a floating nightly.
use anyhow::Context as _;

include!("../xtask/src/toolchain.rs");

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/bessai-xdp");
    let toolchain = pinned_toolchain()?;
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml")
    );
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/bessai-common/src")
    );
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bessai-xdp",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!("building the XDP object (needs rust-src for {toolchain} and bpf-linker on PATH)")
    })
}
