use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    diskbeat::io::default_sigpipe();
    let cli = diskbeat::cli::Cli::parse();
    ExitCode::from(diskbeat::cli::run(cli))
}
