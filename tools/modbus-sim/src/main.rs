//! `modbus-sim`: Modbus/TCP inverter simulator, scripted client and load
//! generator for the BESSAI integration tests and benchmarks.

mod bank;
mod cli;
mod client;
mod load;
mod server;
mod wire;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// sysexits(3) EX_USAGE.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match cli.command {
        Command::Client(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            match cli.command {
                Command::Server(args) => server::run(args).await,
                Command::Client(args) => client::run(args).await,
                Command::Load(args) => load::run(args).await,
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("modbus-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
