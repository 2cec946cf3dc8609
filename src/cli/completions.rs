//! `diskbeat completions SHELL`: a shell completion script, generated from the command line
//! definitions (so it never lags behind them).

use super::{Cli, CliError, CliResult, EXIT_OK};
use clap::CommandFactory;
use std::io::Write;

/// Print a shell completion script for diskbeat on stdout.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Install it where your shell looks (tools/install.sh does this):
  bash  /usr/share/bash-completion/completions/diskbeat
  zsh   a directory on $fpath, as _diskbeat (e.g. /usr/local/share/zsh/site-functions/_diskbeat)
  fish  /usr/share/fish/vendor_completions.d/diskbeat.fish

Examples:
  diskbeat completions bash > /usr/share/bash-completion/completions/diskbeat
  source <(diskbeat completions bash)        # this shell only
  diskbeat completions zsh > ~/.zfunc/_diskbeat

Exit status: 0 printed, 1 stdout could not be written, 2 unknown shell.")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> CliResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "diskbeat", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::fail(format!("cannot write the completion script: {e}")))?;
    Ok(EXIT_OK)
}
