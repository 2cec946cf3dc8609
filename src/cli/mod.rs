//! Command-line interface: one module per subcommand, each with `Args` (clap) and `run`.
//!
//! Exit status contract (scripts rely on it):
//! - 0: success (or, for checks, the answer is "yes")
//! - 1: refused, failed, or the answer is "no"
//! - 2: bad input: usage errors, unreadable or invalid files
//! - 3: (`inspect`) read, but some record is corrupt or unreadable
//!
//! `fence-agent` (`fence_diskbeat`) follows fence-agents instead: 0 success, 1 failure (bad
//! options included), 2 `status` says OFF.
//!
//! Under `--json` an error is JSON too, on stderr: `{"error": message, "kind": "failed" | "usage" |
//! ..., "hint": what to do or null, "exit_code": N}`, same exit status. Stdout holds only the
//! command's result document (a command can fail after reporting, e.g. `probe` whose writes
//! failed), so it always parses as one JSON value or is empty.

use clap::{Parser, Subcommand};

pub mod completions;
pub mod daemon;
pub mod events;
pub mod fence;
pub mod fence_agent;
pub mod inspect;
pub mod man;
pub mod mkfs;
pub mod output;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod rekey;
pub mod status;
pub mod vm;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// `inspect`: the device was read, but a shown record is corrupt or unreadable.
pub const EXIT_DEGRADED: u8 = 3;

/// An error that ends a command: printed on stderr as `diskbeat: <message>` (under `--json`, as
/// a JSON object), exit with `code`.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// What to do about it, when the message does not already say.
    pub hint: Option<String>,
}

impl CliError {
    pub fn fail(message: impl Into<String>) -> Self {
        Self { code: EXIT_FAIL, message: message.into(), hint: None }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: EXIT_USAGE, message: message.into(), hint: None }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error's kind in JSON: what its exit status means.
    pub fn kind(&self) -> &'static str {
        match self.code {
            EXIT_USAGE => "usage",
            EXIT_DEGRADED => "degraded",
            _ => "failed",
        }
    }

    /// The JSON form (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.message,
            "kind": self.kind(),
            "hint": self.hint,
            "exit_code": self.code,
        })
    }

    /// Prints the error on stderr: JSON under `--json`, else a line for people.
    pub fn print(&self, json: bool) {
        if json {
            eprintln!("{}", serde_json::to_string_pretty(&self.to_json()).expect("JSON values serialize"));
        } else {
            match &self.hint {
                Some(h) => eprintln!("diskbeat: {}\n  hint: {h}", self.message),
                None => eprintln!("diskbeat: {}", self.message),
            }
        }
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
    /// Show the daemon's decisions and why: fences, peers, partitions, plans, VM restarts.
    Events(events::Args),
    /// Fence a host through its mailbox and confirm it.
    Fence(fence::Args),
    /// Pacemaker fence agent (also installed as `fence_diskbeat`): off with proof, status, list.
    FenceAgent(fence_agent::Args),
    /// Rotate the cluster key stored on the heartbeat disk.
    Rekey(rekey::Args),
    /// Failover planning: host failures tolerated, restart plans, admission checks.
    Plan(plan::Args),
    /// VMs of this host (through the VM driver) and their protection settings.
    Vm(vm::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Write man pages for diskbeat and every subcommand.
    Man(man::Args),
}

impl Command {
    /// Whether the command was asked for JSON output (`daemon` never is: it logs).
    pub fn json(&self) -> bool {
        match self {
            Command::Mkfs(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Probe(a) => a.json,
            Command::Daemon(_) | Command::Completions(_) | Command::Man(_) | Command::FenceAgent(_) => false,
            Command::Status(a) => a.json,
            Command::Events(a) => a.json,
            Command::Fence(a) => a.json,
            Command::Rekey(a) => a.json,
            Command::Plan(a) => a.json,
            Command::Vm(a) => match &a.command {
                vm::VmCommand::List(l) => l.json,
                vm::VmCommand::Protect(p) => p.json,
            },
        }
    }
}

/// Parses the process's arguments and runs the command; returns the exit status. A command line
/// clap rejects is a usage error (exit 2), printed as JSON when `--json` is among the arguments.
pub fn main() -> u8 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The fence agent parses its own options: fence-agents' exit statuses, stdin when none.
    if fence_agent::invoked_as_agent(args.first()) {
        return fence_agent::main(crate::fence_agent::AGENT_NAME, &args[1..]);
    }
    if args.get(1).is_some_and(|a| a == "fence-agent") {
        return fence_agent::main("diskbeat fence-agent", &args[2..]);
    }
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(cli),
        Err(e) if e.use_stderr() && args.iter().any(|a| a == "--json") => {
            let message = e.kind().to_string();
            let detail = e.to_string();
            let detail = detail.lines().next().unwrap_or(&message).trim_start_matches("error: ");
            let err =
                CliError::usage(detail.to_string()).with_hint("see `diskbeat help` or the command's --help");
            err.print(true);
            EXIT_USAGE
        }
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            }
        }
    }
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> u8 {
    let json = cli.command.json();
    let result = match cli.command {
        Command::Mkfs(args) => mkfs::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Status(args) => status::run(args),
        Command::Events(args) => events::run(args),
        Command::Fence(args) => fence::run(args),
        Command::FenceAgent(args) => Ok(fence_agent::run(args)),
        Command::Rekey(args) => rekey::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Vm(args) => vm::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            e.print(json);
            e.code
        }
    }
}
