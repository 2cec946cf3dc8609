use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = diskbeat::cli::Cli::parse();
    ExitCode::from(diskbeat::cli::run(cli))
}
