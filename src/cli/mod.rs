//! Command-line interface: one module per subcommand, each with `Args` (clap) and `run`.
//!
//! Exit status contract (scripts rely on it):
//! - 0: success (or, for checks, the answer is "yes")
//! - 1: refused, failed, or the answer is "no"
//! - 2: bad input: usage errors, unreadable or invalid files
//! - 3: (`inspect`) read, but some record is corrupt or unreadable

use clap::{Parser, Subcommand};

pub mod daemon;
pub mod fence;
pub mod inspect;
pub mod mkfs;
pub mod output;
pub mod plan;
pub mod probe;
pub mod rekey;
pub mod status;
pub mod vm;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// `inspect`: the device was read, but a shown record is corrupt or unreadable.
pub const EXIT_DEGRADED: u8 = 3;

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
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Format a device into per-host heartbeat slots.
    Mkfs(mkfs::Args),
    /// Show the superblock and slots of a heartbeat disk.
    Inspect(inspect::Args),
    /// Measure write and sweep latency and recommend a base timeout.
    Probe(probe::Args),
    /// Run the per-host heartbeat daemon.
    Daemon(daemon::Args),
    /// Show the local daemon's view of the cluster.
    Status(status::Args),
    /// Fence a host through its mailbox and confirm it.
    Fence(fence::Args),
    /// Rotate the cluster key stored on the heartbeat disk.
    Rekey(rekey::Args),
    /// Failover planning: host failures tolerated, restart plans, admission checks.
    Plan(plan::Args),
    /// VMs of this host (through the VM driver) and their protection settings.
    Vm(vm::Args),
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> u8 {
    let result = match cli.command {
        Command::Mkfs(args) => mkfs::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Status(args) => status::run(args),
        Command::Fence(args) => fence::run(args),
        Command::Rekey(args) => rekey::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Vm(args) => vm::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("diskbeat: {}", e.message);
            e.code
        }
    }
}
