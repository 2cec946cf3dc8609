//! `diskbeat fence`: fence a host through its mailbox and confirm it.

use super::output::print_json;
use super::{CliError, CliResult, EXIT_OK};
use crate::disk::DiskError;
use crate::fence::FenceError;
use crate::format::escape_name;
use crate::io::EngineKind;
use std::path::PathBuf;

/// Ask the host in a slot to fence itself, and wait for proof.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Writes a fence request into the slot's mailbox. Succeeds only once the target's record says
`fenced` with this request acknowledged, or its record has not changed for the host-dead
timeout (it fenced itself or died). Only then is it safe to restart its VMs elsewhere.

Examples:
  diskbeat fence /dev/mapper/hb-lun --slot 3
  diskbeat fence /dev/loop0 --slot 1 --json

Exit status: 0 fenced (or already gone), 1 not confirmed or refused, 2 bad options (including a
--slot the disk does not have).")]
pub struct Args {
    /// Heartbeat device.
    pub device: PathBuf,
    /// Slot of the host to fence.
    #[arg(long)]
    pub slot: u32,
    /// I/O engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> CliResult {
    let json = args.json;
    let mut progress = |l: &str| {
        if !json {
            eprintln!("fence: {l}")
        }
    };
    let r =
        crate::fence::fence(&args.device, args.slot, args.engine, &mut progress).map_err(|e| match e {
            // A slot the disk does not have is bad input, like any other bad option.
            FenceError::Disk(DiskError::NoSuchSlot { .. }) => CliError::usage(e.to_string()),
            e => CliError::fail(e.to_string()),
        })?;
    if json {
        print_json(&serde_json::to_value(&r).expect("serializable"));
    } else {
        let how = match &r.confirmed {
            crate::fence::Confirmed::Fenced => "marked itself fenced".to_string(),
            crate::fence::Confirmed::Stopped { silent_ms } => {
                format!("stopped heartbeating ({silent_ms} ms silent)")
            }
            crate::fence::Confirmed::AlreadyGone { state } => format!("was already {state}: nothing sent"),
        };
        println!(
            "slot {} ('{}', generation {}) {how} after {} ms.",
            r.slot,
            escape_name(&r.host_name),
            r.generation,
            r.elapsed_ms
        );
        if let Some(why) = r.why_not {
            println!("its VMs are NOT proven gone ({why:?}): do not restart them elsewhere without checking the host");
        }
    }
    Ok(EXIT_OK)
}
