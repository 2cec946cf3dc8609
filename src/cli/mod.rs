//! Command-line interface: one module per subcommand, each with `Args` (clap) and `run`.
//!
//! Exit status contract (scripts rely on it):
//! - 0: success (or, for checks, the answer is "yes")
//! - 1: refused, failed, or the answer is "no"
//! - 2: bad input: usage errors, unreadable or invalid files

use clap::{Parser, Subcommand};

pub mod plan;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// An error that ends a command: printed on stderr as `diskbeat: <message>`, exit with `code`.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn fail(message: impl Into<String>) -> Self {
        Self { code: EXIT_FAIL, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: EXIT_USAGE, message: message.into() }
    }
}

pub type CliResult = Result<u8, CliError>;

#[derive(Parser, Debug)]
#[command(
    name = "diskbeat",
    version,
    about = "High availability for virtualization pools over a shared heartbeat disk"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Failover planning: host failures tolerated, restart plans, admission checks.
    Plan(plan::Args),
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> u8 {
    let result = match cli.command {
        Command::Plan(args) => plan::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("diskbeat: {}", e.message);
            e.code
        }
    }
}
