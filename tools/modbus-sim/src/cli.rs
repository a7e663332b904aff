//! Command line: subcommands, their arguments and the OP syntax shared by
//! `client` and `load` (and by `integration/clients/pymodbus_client.py`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

/// Most registers one FC 16 request may carry (Modbus application protocol
/// v1.1b3, 6.12).
pub const MAX_WRITE_REGISTERS: usize = 123;

#[derive(Debug, Parser)]
#[command(
    name = "modbus-sim",
    version,
    about = "Modbus/TCP inverter simulator, scripted client and load generator"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inverter simulator: a Modbus/TCP server that logs every write as a JSON line.
    Server(ServerArgs),
    /// Runs OPs in order on one connection, one JSON line per OP.
    Client(ClientArgs),
    /// Closed-loop load generator; prints one JSON summary line.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:502")]
    pub listen: SocketAddr,
    /// Nominal unit id (reported only: requests for every unit id are answered).
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// After every write, atomically dump the registers and coils that differ
    /// from their initial value to this JSON file.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Also print a JSON line for every read.
    #[arg(long)]
    pub log_reads: bool,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Unit id put into every request.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Time limit of each OP, connecting included.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// read-holding:ADDR:QTY, read-input:ADDR:QTY, read-coils:ADDR:QTY,
    /// write-register:ADDR:VALUE, write-registers:ADDR:V1,V2,..., write-coil:ADDR:0|1,
    /// sleep:MS, reconnect
    #[arg(required = true, value_parser = parse_op)]
    pub ops: Vec<Op>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Unit id put into every request.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// How long to keep sending.
    #[arg(
        long,
        value_parser = clap::value_parser!(u64).range(1..),
        required_unless_present = "transactions",
        conflicts_with = "transactions"
    )]
    pub duration_ms: Option<u64>,
    /// Send exactly this many transactions in all (spread over the
    /// connections), then stop: every one either completes or is counted as
    /// failed.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub transactions: Option<u64>,
    /// Connections, each opened once and used until it fails.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Requests in flight on each connection, each written on its own (with
    /// TCP_NODELAY, one segment each), as a SCADA master pipelines its polls.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub pipeline: u16,
    /// The Modbus OP every transaction sends (not sleep or reconnect).
    #[arg(long, default_value = "read-holding:0:10", value_parser = parse_modbus_op)]
    pub op: Op,
    /// Time limit of each transaction.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

/// One step of a client script, with the text it was given as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub text: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Modbus(Request),
    Sleep(u64),
    Reconnect,
}

/// A client request, as the OP syntax spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ReadHolding { addr: u16, qty: u16 },
    ReadInput { addr: u16, qty: u16 },
    ReadCoils { addr: u16, qty: u16 },
    WriteRegister { addr: u16, value: u16 },
    WriteRegisters { addr: u16, values: Vec<u16> },
    WriteCoil { addr: u16, on: bool },
}

/// Parses one OP. Numbers are decimal or 0x-prefixed hexadecimal.
pub fn parse_op(text: &str) -> Result<Op, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let action = match parts.as_slice() {
        ["reconnect"] => Action::Reconnect,
        ["sleep", ms] => Action::Sleep(number::<u64>(ms, "milliseconds")?),
        ["read-holding", a, q] => Action::Modbus(Request::ReadHolding {
            addr: addr(a)?,
            qty: qty(q)?,
        }),
        ["read-input", a, q] => Action::Modbus(Request::ReadInput {
            addr: addr(a)?,
            qty: qty(q)?,
        }),
        ["read-coils", a, q] => Action::Modbus(Request::ReadCoils {
            addr: addr(a)?,
            qty: qty(q)?,
        }),
        ["write-register", a, v] => Action::Modbus(Request::WriteRegister {
            addr: addr(a)?,
            value: number::<u16>(v, "value")?,
        }),
        ["write-registers", a, vs] => {
            let values = vs
                .split(',')
                .map(|v| number::<u16>(v, "value"))
                .collect::<Result<Vec<_>, _>>()?;
            if values.len() > MAX_WRITE_REGISTERS {
                return Err(format!(
                    "{text}: at most {MAX_WRITE_REGISTERS} values per request"
                ));
            }
            Action::Modbus(Request::WriteRegisters {
                addr: addr(a)?,
                values,
            })
        }
        ["write-coil", a, v] => {
            let on = match *v {
                "0" => false,
                "1" => true,
                _ => return Err(format!("{text}: coil value must be 0 or 1, not {v:?}")),
            };
            Action::Modbus(Request::WriteCoil { addr: addr(a)?, on })
        }
        _ => return Err(format!("{text}: unknown OP or wrong number of fields")),
    };
    Ok(Op {
        text: text.to_owned(),
        action,
    })
}

/// [`parse_op`] restricted to OPs that send a request (for `load`).
pub fn parse_modbus_op(text: &str) -> Result<Op, String> {
    let op = parse_op(text)?;
    match op.action {
        Action::Modbus(_) => Ok(op),
        _ => Err(format!("{text}: load needs a Modbus request OP")),
    }
}

fn addr(s: &str) -> Result<u16, String> {
    number(s, "address")
}

fn qty(s: &str) -> Result<u16, String> {
    // Zero and over-long quantities are deliberately allowed: tests send them
    // to check that the gateway and the server refuse them.
    number(s, "quantity")
}

fn number<T>(s: &str, what: &str) -> Result<T, String>
where
    T: TryFrom<u64>,
{
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    parsed
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("bad {what} {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modbus(text: &str) -> Request {
        match parse_op(text).unwrap().action {
            Action::Modbus(r) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn reads() {
        assert_eq!(
            modbus("read-holding:0:2"),
            Request::ReadHolding { addr: 0, qty: 2 }
        );
        assert_eq!(
            modbus("read-input:100:125"),
            Request::ReadInput {
                addr: 100,
                qty: 125
            }
        );
        assert_eq!(
            modbus("read-coils:0x10:8"),
            Request::ReadCoils { addr: 16, qty: 8 }
        );
        assert_eq!(
            modbus("read-holding:65535:0"),
            Request::ReadHolding {
                addr: 65535,
                qty: 0
            }
        );
    }

    #[test]
    fn writes() {
        assert_eq!(
            modbus("write-register:40:123"),
            Request::WriteRegister {
                addr: 40,
                value: 123
            }
        );
        assert_eq!(
            modbus("write-register:40:0xffff"),
            Request::WriteRegister {
                addr: 40,
                value: 65535
            }
        );
        assert_eq!(
            modbus("write-registers:10:1,2,3"),
            Request::WriteRegisters {
                addr: 10,
                values: vec![1, 2, 3]
            }
        );
        assert_eq!(
            modbus("write-coil:3:1"),
            Request::WriteCoil { addr: 3, on: true }
        );
        assert_eq!(
            modbus("write-coil:3:0"),
            Request::WriteCoil { addr: 3, on: false }
        );
    }

    #[test]
    fn control_ops_and_text() {
        let op = parse_op("sleep:250").unwrap();
        assert_eq!(op.action, Action::Sleep(250));
        assert_eq!(op.text, "sleep:250");
        assert_eq!(parse_op("reconnect").unwrap().action, Action::Reconnect);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "read-holding",
            "read-holding:0",
            "read-holding:0:2:3",
            "read-holding:-1:2",
            "read-holding:65536:1",
            "read-holding:0:70000",
            "read-holding:a:1",
            "write-register:40:65536",
            "write-registers:10:",
            "write-registers:10:1,,2",
            "write-coil:3:2",
            "write-coil:3:on",
            "sleep:",
            "sleep:-5",
            "reconnect:1",
            "read-discrete:0:1",
            "READ-HOLDING:0:1",
        ] {
            assert!(parse_op(bad).is_err(), "{bad:?} should be rejected");
        }
        let many = (0..124)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_op(&format!("write-registers:0:{many}")).is_err());
        let max = (0..123)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_op(&format!("write-registers:0:{max}")).is_ok());
    }

    #[test]
    fn load_needs_a_request() {
        assert!(parse_modbus_op("read-holding:0:10").is_ok());
        assert!(parse_modbus_op("sleep:10").is_err());
        assert!(parse_modbus_op("reconnect").is_err());
    }

    #[test]
    fn command_line() {
        let cli = Cli::try_parse_from([
            "modbus-sim",
            "client",
            "--connect",
            "127.0.0.1:502",
            "read-holding:0:2",
            "sleep:5",
        ])
        .unwrap();
        let Command::Client(c) = cli.command else {
            panic!("client")
        };
        assert_eq!((c.unit, c.timeout_ms, c.ops.len()), (1, 2000, 2));
        assert!(
            Cli::try_parse_from(["modbus-sim", "client", "--connect", "127.0.0.1:502"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["modbus-sim", "client", "--connect", "x:1", "reconnect"]).is_err()
        );
        assert!(
            Cli::try_parse_from([
                "modbus-sim",
                "load",
                "--connect",
                "127.0.0.1:1",
                "--duration-ms",
                "5"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "modbus-sim",
                "load",
                "--connect",
                "127.0.0.1:1",
                "--duration-ms",
                "5",
                "--op",
                "sleep:1"
            ])
            .is_err()
        );
        let load = |extra: &[&str]| {
            let mut argv = vec!["modbus-sim", "load", "--connect", "127.0.0.1:1"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let Command::Load(l) = load(&["--transactions", "100", "--pipeline", "4"])
            .unwrap()
            .command
        else {
            panic!("load")
        };
        assert_eq!(
            (l.transactions, l.duration_ms, l.pipeline),
            (Some(100), None, 4)
        );
        assert!(load(&[]).is_err(), "a duration or a count is needed");
        assert!(load(&["--transactions", "1", "--duration-ms", "1"]).is_err());
        assert!(load(&["--transactions", "1", "--pipeline", "0"]).is_err());
    }
}
