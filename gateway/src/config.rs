//! The appliance configuration, `/etc/bessai/gateway.toml`: interfaces and
//! their zones, deployment mode, policy path, pins, nftables, management and
//! SIEM settings. Parsed and validated completely (the policy it names
//! included) before the daemon touches the kernel; every problem is reported
//! as `file:line:column: error: …` and the daemon exits 78 (EX_CONFIG).

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use bessai_policy::{IpNet, Policy, PolicyErrors, error::Positions};
use serde::Deserialize;
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/bessai/gateway.toml";
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/bessai";
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/bessai/spool";
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

// ---- raw, as written ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: Spanned<RawGateway>,
    #[serde(default, rename = "interface")]
    interfaces: Vec<Spanned<RawInterface>>,
    bridge: Option<Spanned<RawBridge>>,
    #[serde(default)]
    nftables: Option<Spanned<RawNftables>>,
    management: Option<Spanned<RawManagement>>,
    siem: Option<Spanned<RawSiem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    policy: Spanned<String>,
    mode: Option<Spanned<String>>,
    device_id: Option<Spanned<String>>,
    pin_path: Option<Spanned<String>>,
    xdp_mode: Option<Spanned<String>>,
    on_shutdown: Option<Spanned<String>>,
    stats_interval: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    zone: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNftables {
    enabled: Option<bool>,
    table: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    /// A policy zone whose networks may manage the box, and/or networks.
    zone: Option<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    tcp_ports: Vec<Spanned<i64>>,
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSiem {
    site: Option<Spanned<String>>,
    spool_dir: Option<Spanned<String>>,
    spool_max_bytes: Option<Spanned<i64>>,
    aggregation_window_s: Option<Spanned<i64>>,
    #[serde(default, rename = "destination")]
    destinations: Vec<Spanned<RawDestination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

// ---- validated ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// The gateway routes between the zones' subnets.
    Routed,
    /// A bump in the wire: a Linux bridge between the ports, no re-addressing.
    Bridge,
}

/// How XDP attaches; the one definition, for the file and `run --xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode where available, else generic.
    Auto,
    /// Driver mode only; fail where the driver lacks it.
    Native,
    /// Generic (SKB) mode: works on every interface, slower.
    Generic,
}

impl XdpMode {
    const NAMES: [(&'static str, XdpMode); 3] = [
        ("auto", XdpMode::Auto),
        ("native", XdpMode::Native),
        ("generic", XdpMode::Generic),
    ];
    const NAMES_TEXT: &'static str = "\"auto\", \"native\", \"generic\"";
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| format!("one of {}, not {s:?}", Self::NAMES_TEXT))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub zone: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Management {
    pub networks: Vec<IpNet>,
    pub tcp_ports: Vec<u16>,
    /// Where the management API will listen (issue: management API).
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiemDestination {
    pub url: String,
    pub format: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Siem {
    pub site: Option<String>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub aggregation_window_s: u32,
    pub destinations: Vec<SiemDestination>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub policy_path: PathBuf,
    /// The policy, validated with the configuration.
    pub policy: Policy,
    /// SHA-256 of the policy file's bytes, the ones validated.
    pub policy_sha256: String,
    pub deployment: Deployment,
    pub device_id: String,
    pub pin_path: PathBuf,
    pub xdp_mode: XdpMode,
    pub stats_interval: u64,
    pub interfaces: Vec<Interface>,
    pub bridge: Option<String>,
    /// `None`: nftables disabled.
    pub nft_table: Option<String>,
    pub management: Option<Management>,
    pub siem: Option<Siem>,
}

// ---- errors ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("{0}")]
    Syntax(String),
    #[error("{key} must be one of {allowed}, not {value:?}")]
    NotOneOf {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{key} {value} is outside {min}..={max}")]
    OutOfRange {
        key: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("no [[interface]]: the gateway needs at least two ports")]
    NoInterfaces,
    #[error("interface name {0:?} is not a Linux interface name (1-15 bytes, no '/' or spaces)")]
    BadInterfaceName(String),
    #[error("interface {name:?} listed twice (first on line {first_line})")]
    DuplicateInterface { name: String, first_line: usize },
    #[error(
        "on_shutdown = \"open\" would open the boundary on every restart and upgrade; \
         decommission with `bessai-gw boundary decommission` instead"
    )]
    OpenOnShutdown,
    #[error("zone {zone:?} is not in the policy {policy} (zones: {known})")]
    UnknownZone {
        zone: String,
        policy: String,
        known: String,
    },
    #[error("mode \"bridge\" needs a [bridge] section naming the bridge")]
    BridgeMissing,
    #[error("[bridge] is only for mode \"bridge\"")]
    BridgeUnused,
    #[error("{0:?} is not an address or network (CIDR)")]
    BadNetwork(String),
    #[error("[management] needs zone = \"<policy zone>\" or networks = [...]")]
    NoManagementSource,
    #[error("{0:?} is not an address:port")]
    BadListen(String),
    #[error("{0}")]
    BadDestination(String),
    #[error("{what} file {path:?} cannot be read: {reason}")]
    UnreadableFile {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the policy {path} is invalid:\n{errors}")]
    Policy { path: String, errors: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub kind: ConfigErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.kind
        )
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bessai_policy::error::write_lines(f, &self.0)
    }
}

/// Collects errors with positions.
struct Checker<'a> {
    file: String,
    positions: Positions<'a>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, kind: ConfigErrorKind) {
        let (line, column) = self.positions.line_col(span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            kind,
        });
    }

    fn line(&self, span: &std::ops::Range<usize>) -> usize {
        self.positions.line_col(span.start).0
    }

    fn one_of<T: Copy>(
        &mut self,
        key: &'static str,
        value: Option<&Spanned<String>>,
        default: T,
        allowed: &'static [(&'static str, T)],
        allowed_text: &'static str,
    ) -> T {
        let Some(v) = value else { return default };
        match allowed.iter().find(|(name, _)| *name == v.get_ref()) {
            Some((_, t)) => *t,
            None => {
                self.err(
                    v.span(),
                    ConfigErrorKind::NotOneOf {
                        key,
                        value: v.get_ref().clone(),
                        allowed: allowed_text,
                    },
                );
                default
            }
        }
    }

    fn number(
        &mut self,
        key: &'static str,
        value: Option<&Spanned<i64>>,
        default: i64,
        (min, max): (i64, i64),
    ) -> i64 {
        let Some(v) = value else { return default };
        let n = *v.get_ref();
        if n < min || n > max {
            self.err(
                v.span(),
                ConfigErrorKind::OutOfRange {
                    key,
                    value: n,
                    min,
                    max,
                },
            );
            return default;
        }
        n
    }

    fn readable(&mut self, what: &'static str, path: &Spanned<String>, base: &Path) -> PathBuf {
        let p = base.join(path.get_ref());
        if let Err(e) = std::fs::metadata(&p) {
            self.err(
                path.span(),
                ConfigErrorKind::UnreadableFile {
                    what,
                    path: p.display().to_string(),
                    reason: e.to_string(),
                },
            );
        }
        p
    }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && !name.contains(['/', ' ', '\t', '\n', ':'])
        && name != "."
        && name != ".."
}

/// Reads and validates `path`, and the policy it names. Whether the
/// interfaces exist is no question of the file: ports enumerate late, and
/// the daemon waits for them.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            kind: ConfigErrorKind::Io(e.to_string()),
        }])
    })?;
    parse(&source, path)
}

/// Validates configuration text; relative paths are relative to `path`'s
/// directory.
pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut ck = Checker {
        file,
        positions: Positions::new(source),
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(source) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            ck.err(span, ConfigErrorKind::Syntax(e.message().to_string()));
            return Err(ConfigErrors(ck.errors));
        }
    };
    let gw = raw.gateway.get_ref();

    let policy_path = base.join(gw.policy.get_ref());
    let mut policy_sha256 = String::new();
    let policy = match read_policy(&policy_path, &mut policy_sha256) {
        Ok(p) => Some(p),
        Err(PolicyErrors(errors)) => {
            let text = errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n");
            ck.err(
                gw.policy.span(),
                ConfigErrorKind::Policy {
                    path: policy_path.display().to_string(),
                    errors: text,
                },
            );
            None
        }
    };

    let deployment = ck.one_of(
        "mode",
        gw.mode.as_ref(),
        Deployment::Routed,
        &[
            ("routed", Deployment::Routed),
            ("bridge", Deployment::Bridge),
        ],
        "\"routed\", \"bridge\"",
    );
    let xdp_mode = ck.one_of(
        "xdp_mode",
        gw.xdp_mode.as_ref(),
        XdpMode::Auto,
        &XdpMode::NAMES,
        XdpMode::NAMES_TEXT,
    );
    // A clean stop always leaves the boundary closed; "keep" is accepted
    // because it says so.
    if let Some(v) = &gw.on_shutdown {
        match v.get_ref().as_str() {
            "keep" => {}
            "open" => ck.err(v.span(), ConfigErrorKind::OpenOnShutdown),
            other => ck.err(
                v.span(),
                ConfigErrorKind::NotOneOf {
                    key: "on_shutdown",
                    value: other.to_string(),
                    allowed: "\"keep\"",
                },
            ),
        }
    }
    let stats_interval = ck.number(
        "stats_interval",
        gw.stats_interval.as_ref(),
        60,
        (0, 86_400),
    ) as u64;
    let device_id = gw
        .device_id
        .as_ref()
        .map(|d| d.get_ref().clone())
        .unwrap_or_else(hostname);
    let pin_path = gw.pin_path.as_ref().map_or_else(
        || PathBuf::from(DEFAULT_PIN_PATH),
        |p| PathBuf::from(p.get_ref()),
    );

    // Interfaces and their zones.
    if raw.interfaces.is_empty() {
        ck.err(raw.gateway.span(), ConfigErrorKind::NoInterfaces);
    }
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for i in &raw.interfaces {
        let name = i.get_ref().name.get_ref();
        let name_span = i.get_ref().name.span();
        if !valid_ifname(name) {
            ck.err(
                name_span.clone(),
                ConfigErrorKind::BadInterfaceName(name.clone()),
            );
        } else if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
            let first_line = *first;
            ck.err(
                name_span.clone(),
                ConfigErrorKind::DuplicateInterface {
                    name: name.clone(),
                    first_line,
                },
            );
        }
        seen.push((name.clone(), ck.line(&name_span)));
        let zone = i.get_ref().zone.get_ref();
        if let Some(p) = &policy
            && !p.zones.iter().any(|z| &z.name == zone)
        {
            ck.err(
                i.get_ref().zone.span(),
                ConfigErrorKind::UnknownZone {
                    zone: zone.clone(),
                    policy: policy_path.display().to_string(),
                    known: p
                        .zones
                        .iter()
                        .map(|z| z.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            );
        }
        interfaces.push(Interface {
            name: name.clone(),
            zone: zone.clone(),
        });
    }

    let bridge = match (&raw.bridge, deployment) {
        (None, Deployment::Bridge) => {
            ck.err(raw.gateway.span(), ConfigErrorKind::BridgeMissing);
            None
        }
        (Some(b), Deployment::Routed) => {
            ck.err(b.span(), ConfigErrorKind::BridgeUnused);
            None
        }
        (Some(b), Deployment::Bridge) => {
            let name = b.get_ref().name.get_ref().clone();
            if !valid_ifname(&name) {
                ck.err(
                    b.get_ref().name.span(),
                    ConfigErrorKind::BadInterfaceName(name.clone()),
                );
            }
            Some(name)
        }
        (None, Deployment::Routed) => None,
    };

    let nft_table = match &raw.nftables {
        Some(n) if n.get_ref().enabled == Some(false) => None,
        Some(n) => Some(
            n.get_ref()
                .table
                .as_ref()
                .map_or_else(|| "bessai".to_string(), |t| t.get_ref().clone()),
        ),
        None => Some("bessai".to_string()),
    };

    let management = raw.management.as_ref().map(|m_spanned| {
        let m = m_spanned.get_ref();
        let mut networks = Vec::new();
        if let Some(zone) = &m.zone {
            match policy
                .as_ref()
                .map(|p| p.zones.iter().find(|z| &z.name == zone.get_ref()))
            {
                Some(Some(z)) => networks.extend(z.networks.iter().cloned()),
                Some(None) => ck.err(
                    zone.span(),
                    ConfigErrorKind::UnknownZone {
                        zone: zone.get_ref().clone(),
                        policy: policy_path.display().to_string(),
                        known: policy.as_ref().map_or_else(String::new, |p| {
                            p.zones
                                .iter()
                                .map(|z| z.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }),
                    },
                ),
                None => {}
            }
        } else if m.networks.is_empty() {
            ck.err(m_spanned.span(), ConfigErrorKind::NoManagementSource);
        }
        for n in &m.networks {
            match IpNet::from_str(n.get_ref()) {
                Ok(net) => networks.push(net),
                Err(_) => ck.err(n.span(), ConfigErrorKind::BadNetwork(n.get_ref().clone())),
            }
        }
        let tcp_ports = m
            .tcp_ports
            .iter()
            .map(|p| ck.number("tcp_ports", Some(p), 0, (1, 65535)) as u16)
            .collect();
        let listen = m.listen.as_ref().and_then(|l| match l.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                ck.err(l.span(), ConfigErrorKind::BadListen(l.get_ref().clone()));
                None
            }
        });
        Management {
            networks,
            tcp_ports,
            listen,
        }
    });

    let siem = raw.siem.as_ref().map(|s| {
        let s = s.get_ref();
        let mut destinations = Vec::new();
        for d in &s.destinations {
            let d = d.get_ref();
            if let Err(e) = crate::siem::check_url(d.url.get_ref()) {
                ck.err(d.url.span(), ConfigErrorKind::BadDestination(e));
            }
            let format = ck.one_of(
                "format",
                d.format.as_ref(),
                "cef",
                &[
                    ("cef", "cef"),
                    ("rfc5424", "rfc5424"),
                    ("rfc3164", "rfc3164"),
                    ("json", "json"),
                ],
                "\"cef\", \"rfc5424\", \"rfc3164\", \"json\"",
            );
            destinations.push(SiemDestination {
                url: d.url.get_ref().clone(),
                format: format.to_string(),
                ca: d.ca.as_ref().map(|p| ck.readable("CA", p, base)),
                cert: d.cert.as_ref().map(|p| ck.readable("certificate", p, base)),
                key: d.key.as_ref().map(|p| ck.readable("key", p, base)),
            });
        }
        Siem {
            site: s.site.as_ref().map(|x| x.get_ref().clone()),
            spool_dir: s.spool_dir.as_ref().map_or_else(
                || PathBuf::from(DEFAULT_SPOOL_DIR),
                |p| base.join(p.get_ref()),
            ),
            spool_max_bytes: ck.number(
                "spool_max_bytes",
                s.spool_max_bytes.as_ref(),
                256 << 20,
                (1 << 20, 1 << 40),
            ) as u64,
            aggregation_window_s: ck.number(
                "aggregation_window_s",
                s.aggregation_window_s.as_ref(),
                10,
                (0, 3600),
            ) as u32,
            destinations,
        }
    });

    // A missing policy has recorded its error.
    let (Some(policy), true) = (policy, ck.errors.is_empty()) else {
        return Err(ConfigErrors(ck.errors));
    };
    Ok(Config {
        path: path.to_path_buf(),
        policy_path,
        policy,
        policy_sha256,
        deployment,
        device_id,
        pin_path,
        xdp_mode,
        stats_interval,
        interfaces,
        bridge,
        nft_table,
        management,
        siem,
    })
}

/// Reads a policy file once: its hash and its validated content come from
/// the same bytes.
pub fn read_policy(path: &Path, sha256: &mut String) -> Result<Policy, PolicyErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        PolicyErrors(vec![bessai_policy::PolicyError {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            kind: bessai_policy::ErrorKind::Io(e.to_string()),
        }])
    })?;
    *sha256 = crate::audit::sha256_hex(&bytes);
    bessai_policy::parse(
        &String::from_utf8_lossy(&bytes),
        &path.display().to_string(),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "bessai-gw".to_string())
}

#[cfg(test)]
mod tests;
