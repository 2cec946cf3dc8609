use std::process::ExitCode;

fn main() -> ExitCode {
    diskbeat::io::default_sigpipe();
    ExitCode::from(diskbeat::cli::main())
}
