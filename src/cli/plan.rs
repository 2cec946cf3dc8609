//! `diskbeat plan` (stub, to be built by the planner work).

/// Failover planning for a pool description.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> super::CliResult {
    Err(super::CliError::fail("plan: not implemented yet"))
}
