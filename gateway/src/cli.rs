//! Command line: `policy check`, `run`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{config::XdpMode, daemon::RunFrom, exit, report::ReportFormat};

#[derive(Parser, Debug)]
#[command(
    name = "bessai-gw",
    version,
    about = "BESSAI Edge Gateway: Modbus/TCP zone boundary enforced in XDP"
)]
pub struct Cli {
    /// Log format on stdout.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Policy files: validate.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The daemon: load (or adopt) the XDP program, install the policy and
    /// the nftables base ruleset, enforce; SIGHUP reloads, SIGTERM stops.
    Run(RunArgs),
    /// The SIEM link: `siem test` proves the pipeline before go-live.
    Siem {
        #[command(subcommand)]
        command: SiemCommand,
    },
    /// The boundary outside the daemon: closed at boot, forwarding after
    /// the daemon is enforcing, opened only to decommission.
    Boundary {
        #[command(subcommand)]
        command: BoundaryCommand,
    },
    /// The nftables base ruleset the configuration gives.
    Nft {
        #[arg(long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print the ruleset (JSON, as applied) instead of applying it.
        #[arg(long)]
        dry_run: bool,
        /// Also have nft validate it against the kernel (changes nothing).
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BoundaryCommand {
    /// At boot, before the network: our nftables table without a single
    /// conduit (forward drop, input only from management) and forwarding
    /// (routed) or the bridge ports (bridge) off. 78 when the configuration
    /// is invalid, after closing every family anyway.
    Close {
        #[arg(long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Once the daemon is enforcing (systemd runs it after READY=1):
    /// forwarding (routed) or the bridge ports (bridge) on.
    Forward {
        #[arg(long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Decommissioning: remove the pinned XDP programs and our nftables
    /// tables and turn forwarding on. THE BOUNDARY IS OPEN AFTERWARDS.
    /// Stop and disable the services first.
    Decommission {
        #[arg(long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file: exit 0 when valid (warnings for risky rules
    /// are printed), 65 with one line per error.
    Check {
        file: PathBuf,
        /// Treat warnings as errors (exit 65).
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Replay a capture through the data plane's decision function: exit 0
    /// when nothing was denied, 1 when something was, 65 on bad input.
    Test {
        policy: PathBuf,
        #[arg(long)]
        pcap: PathBuf,
        /// `text`: summary per conduit, then the denied transactions;
        /// `json`: one object per transaction.
        #[arg(long, default_value = "text")]
        format: ReportFormat,
    },
    /// What changed between two policies; with --pcap, which transactions
    /// of the capture change verdict.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        pcap: Option<PathBuf>,
    },
    /// Write a draft policy that allows exactly what the captures show.
    Learn {
        #[arg(long = "pcap", required = true)]
        pcaps: Vec<PathBuf>,
        /// The Modbus/TCP port of the servers.
        #[arg(long, default_value_t = 502)]
        port: u16,
        /// Write the draft here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SiemCommand {
    /// Send one clearly marked test event; exit 0 when it was delivered
    /// (acknowledged with RELP), 69 with what failed: resolve, connect, TLS
    /// verification (certificate subject and reason), timeout.
    Test {
        /// udp://host:514, tcp://host:601, tls://host:6514, relp+tls://host:2514
        #[arg(long)]
        target: String,
        /// CA certificate(s) (PEM) that sign the SIEM's certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Client certificate for mutual TLS (PEM), with --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Name to verify in the SIEM's certificate (default: the host of --target).
        #[arg(long)]
        server_name: Option<String>,
        #[arg(long, default_value = "cef")]
        format: String,
        /// Time limit of each step.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Appliance configuration (see examples/gateway.toml); exit 78 when invalid.
    #[arg(long, conflicts_with_all = ["policy", "ifaces", "pin_path"])]
    pub config: Option<PathBuf>,
    /// Without --config: policy file (TOML, see docs/policy.md).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Without --config: interface to enforce on; repeat for each side.
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// Without --config: pin programs, links and maps here (bpffs) so that
    /// enforcement outlives the process; without it, exiting detaches.
    #[arg(long)]
    pub pin_path: Option<PathBuf>,
    /// XDP attach mode: `auto` (native where the driver supports it, else
    /// generic), `native` or `generic`.
    #[arg(long, default_value = "auto")]
    pub xdp_mode: XdpMode,
    /// Seconds between counter summaries in the log (0: only at exit).
    #[arg(long, default_value_t = 60)]
    pub stats_interval: u64,
}

impl From<RunArgs> for RunFrom {
    fn from(a: RunArgs) -> Self {
        match a.config {
            Some(path) => RunFrom::Config(path),
            None => RunFrom::Flags {
                policy: a.policy,
                ifaces: a.ifaces,
                pin_path: a.pin_path,
                xdp_mode: a.xdp_mode,
                stats_interval: a.stats_interval,
            },
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { exit::USAGE } else { exit::OK });
        }
    };
    init_logging(cli.log_format);
    ExitCode::from(match cli.command {
        Command::Policy {
            command:
                PolicyCommand::Check {
                    file,
                    deny_warnings,
                },
        } => policy_check(&file, deny_warnings),
        Command::Policy {
            command:
                PolicyCommand::Test {
                    policy,
                    pcap,
                    format,
                },
        } => crate::report::policy_test(&policy, &pcap, format),
        Command::Policy {
            command:
                PolicyCommand::Learn {
                    pcaps,
                    port,
                    output,
                },
        } => policy_learn(&pcaps, port, output.as_deref()),
        Command::Policy {
            command: PolicyCommand::Diff { old, new, pcap },
        } => crate::diff::policy_diff(&old, &new, pcap.as_deref()),
        Command::Run(args) => crate::daemon::run(args.into()),
        Command::Nft {
            config,
            dry_run,
            check,
        } => crate::boundary::nft_command(&config, dry_run, check),
        Command::Boundary { command } => match command {
            BoundaryCommand::Close { config } => crate::boundary::close_command(&config),
            BoundaryCommand::Forward { config } => crate::boundary::forward_command(&config),
            BoundaryCommand::Decommission { config } => {
                crate::boundary::decommission_command(&config)
            }
        },
        Command::Siem {
            command:
                SiemCommand::Test {
                    target,
                    ca,
                    cert,
                    key,
                    server_name,
                    format,
                    timeout_ms,
                },
        } => crate::siem::test_command(&crate::siem::TestArgs {
            target,
            ca,
            cert,
            key,
            server_name,
            format,
            timeout: std::time::Duration::from_millis(timeout_ms),
        }),
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn policy_check(file: &std::path::Path, deny_warnings: bool) -> u8 {
    match bessai_policy::load(file) {
        Ok(policy) => {
            let warnings = bessai_policy::lint::lint(&policy);
            for w in &warnings {
                eprintln!("{w}");
            }
            if deny_warnings && !warnings.is_empty() {
                eprintln!(
                    "{}: {} warnings, denied by --deny-warnings",
                    file.display(),
                    warnings.len()
                );
                return exit::DATAERR;
            }
            let compiled = policy.compile();
            println!(
                "{}: valid: {} conduits, {} rules",
                file.display(),
                compiled.conduits_meta.len(),
                compiled.rules.len()
            );
            exit::OK
        }
        Err(errors) => {
            eprintln!("{errors}");
            exit::DATAERR
        }
    }
}

fn policy_learn(pcaps: &[PathBuf], port: u16, output: Option<&std::path::Path>) -> u8 {
    let learned = match crate::learn::learn(pcaps, port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return exit::DATAERR;
        }
    };
    let toml = learned.to_toml(pcaps);
    match output {
        None => print!("{toml}"),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &toml) {
                eprintln!("{}: {e}", path.display());
                return exit::CANTCREAT;
            }
            eprintln!(
                "{}: draft policy from {} packets",
                path.display(),
                learned.packets
            );
        }
    }
    exit::OK
}
