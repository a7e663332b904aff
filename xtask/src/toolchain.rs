// The pinned toolchain, read from the repository's rust-toolchain.toml.
// Shared with gateway/build.rs through `include!` (a build script cannot
// depend on xtask); both crates sit one level below the root.

/// The `channel` of rust-toolchain.toml.
fn pinned_toolchain() -> anyhow::Result<String> {
    use anyhow::Context as _;
    let file: toml::Table = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml"))
        .parse()
        .context("rust-toolchain.toml")?;
    file.get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .context("rust-toolchain.toml: no [toolchain] channel")
}
