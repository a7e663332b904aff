//! `bessai-gw`: parse the command line, then hand over to the command.
use std::process::ExitCode;

fn main() -> ExitCode {
    bessai_gateway::cli::main()
}
