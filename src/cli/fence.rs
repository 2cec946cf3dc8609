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

With --confirm-down SLOT, nothing is asked of the host: YOU vouch that it is off (powered down,
its VMs stopped), like Pacemaker's manual fence confirmation. The slot must stay unchanged for the
host-dead timeout (a daemon still writing it is refused); then its record is marked fenced by the
operator and the pool restarts its protected VMs. This is the only way to restart the VMs of a
host that died without a watchdog and without a fence mark. If you are wrong, they run twice.

Examples:
  diskbeat fence /dev/mapper/hb-lun --slot 3
  diskbeat fence /dev/loop0 --slot 1 --json
  diskbeat fence /dev/mapper/hb-lun --confirm-down 3

Exit status: 0 fenced (or already gone), 1 not confirmed or refused, 2 bad options (including a
--slot the disk does not have).")]
pub struct Args {
    /// Heartbeat device.
    pub device: PathBuf,
    /// Slot of the host to fence.
    #[arg(long, required_unless_present = "confirm_down", conflicts_with = "confirm_down")]
    pub slot: Option<u32>,
    /// Slot of a host YOU have verified is off: mark it fenced on your word (see below).
    #[arg(long, value_name = "SLOT")]
    pub confirm_down: Option<u32>,
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
    let r = match (args.slot, args.confirm_down) {
        (_, Some(slot)) => crate::fence::confirm_down(&args.device, slot, args.engine, &mut progress),
        (Some(slot), None) => crate::fence::fence(&args.device, slot, args.engine, &mut progress),
        (None, None) => return Err(CliError::usage("give --slot N, or --confirm-down N")),
    }
    .map_err(|e| match e {
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
            crate::fence::Confirmed::OperatorConfirmed { silent_ms } => {
                format!("was silent for {silent_ms} ms and is now marked fenced on your word")
            }
        };
        println!(
            "slot {} ('{}', generation {}) {how} after {} ms.",
            r.slot,
            escape_name(&r.host_name),
            r.generation,
            r.elapsed_ms
        );
        if let Some(why) = r.why_not {
            println!(
                "its VMs are NOT proven gone ({}): do not restart them elsewhere without checking the host",
                crate::fence::why_not_text(why)
            );
            // --confirm-down needs a readable record to mark.
            if why != crate::core::NotProven::Corrupt {
                println!(
                    "once you have checked that it is off: diskbeat fence {} --confirm-down {}",
                    args.device.display(),
                    r.slot
                );
            }
        }
    }
    Ok(EXIT_OK)
}
