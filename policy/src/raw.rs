//! The policy file as written, with the source span of every value so that
//! validation errors can name line and column. Unknown keys are errors.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: Spanned<i64>,
    #[serde(default)]
    pub site: Option<Spanned<String>>,
    #[serde(default, rename = "zone")]
    pub zones: Vec<Spanned<RawZone>>,
    #[serde(default, rename = "asset")]
    pub assets: Vec<Spanned<RawAsset>>,
    #[serde(default, rename = "conduit")]
    pub conduits: Vec<Spanned<RawConduit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    pub name: Spanned<String>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "for the engineers who read the file; the gateway ignores it"
    )]
    pub description: Option<String>,
    pub networks: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsset {
    pub name: Spanned<String>,
    pub zone: Spanned<String>,
    pub address: Spanned<String>,
    pub unit_ids: Spanned<Vec<Spanned<i64>>>,
    #[serde(default)]
    pub port: Option<Spanned<i64>>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "for the engineers who read the file; the gateway ignores it"
    )]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConduit {
    pub name: Spanned<String>,
    pub from: Spanned<String>,
    pub sources: Spanned<Vec<Spanned<String>>>,
    pub to: Spanned<String>,
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub on_deny: Option<Spanned<String>>,
    #[serde(default)]
    pub unit_ids: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "for the engineers who read the file; the gateway ignores it"
    )]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub function: Spanned<FunctionSpec>,
    #[serde(default)]
    pub addresses: Option<Spanned<Vec<Spanned<AddrSpec>>>>,
    #[serde(default)]
    pub read: Option<Spanned<Vec<Spanned<AddrSpec>>>>,
    #[serde(default)]
    pub write: Option<Spanned<Vec<Spanned<AddrSpec>>>>,
    #[serde(default)]
    pub subfunctions: Option<Spanned<Vec<Spanned<AddrSpec>>>>,
    #[serde(default)]
    pub mei_types: Option<Spanned<Vec<Spanned<AddrSpec>>>>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "for the engineers who read the file; the gateway ignores it"
    )]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FunctionSpec {
    Code(i64),
    Name(String),
}

/// An address or range: `40`, `"40"`, `"40-49"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AddrSpec {
    Int(i64),
    Text(String),
}
