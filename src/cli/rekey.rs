//! `diskbeat rekey`: rotate the cluster key stored on the heartbeat disk.

use super::output::{ms, print_json, print_pairs};
use super::{CliError, CliResult, EXIT_OK};
use crate::format::escape_name;
use crate::rekey::{rekey, RekeyError, RekeyOptions};
use serde_json::json;
use std::path::PathBuf;

/// Rotate the cluster key on DEVICE: a new random key signs, the old one still verifies for a while.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Reads the cluster keyring from the heartbeat disk (device bytes 512..1024), makes a new random
key with the next key id, keeps the current key as the previous one until the end of the rotation
window (both verify until then), drops the older previous key, writes the keyring in one sector
write (O_DIRECT | O_DSYNC) and reads it back. Prints key ids and times, never key bytes.

Refuses, writing nothing, when the device has no valid superblock, or its keyring is missing
(formatted before format 1.3) or corrupt.

Trust boundary: any host that can write the heartbeat LUN can already fence every host, so the
LUN is where the key lives; whoever can read the LUN can read the key. A site that wants the key
elsewhere gives the daemons a key file instead (owner-only permissions, see docs/FORMAT.md §17).
Run rekey from one host at a time: two concurrent rekeys on different hosts race (the last write
wins; each reports its own key id).

Examples:
  diskbeat rekey /dev/mapper/hb-lun
  diskbeat rekey /dev/loop0 --window 10m --json

Exit status: 0 rotated, 1 refused or failed, 2 bad options.")]
pub struct Args {
    /// Heartbeat device.
    pub device: PathBuf,
    /// How long the old key keeps verifying (e.g. 10m, 400s); rounded up to whole seconds.
    /// Default: 10 x the cluster's base timeout.
    #[arg(long, value_parser = crate::timing::parse_duration_ms)]
    pub window: Option<u32>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> CliResult {
    if args.window == Some(0) {
        return Err(CliError::usage("--window 0: the old key would stop verifying at once; use at least 1s"));
    }
    // Every failure, refusals included, is exit 1 (bad options were caught by clap: exit 2).
    let report = rekey(&args.device, &RekeyOptions { window_ms: args.window })
        .map_err(|e: RekeyError| CliError::fail(e.to_string()))?;
    let sb = &report.superblock;
    let prev = report.new.previous.expect("a rotated keyring has a previous key");
    if args.json {
        print_json(&json!({
            "device": args.device,
            "cluster_name": sb.cluster_name,
            "cluster_uuid": sb.cluster_uuid.to_string(),
            "old_key_id": report.old.current.id,
            "new_key_id": report.new.current.id,
            "new_key_created_unix_s": report.new.current.created_unix_s,
            "previous_key_id": prev.id,
            "previous_valid_until_unix_s": prev.valid_until_unix_s,
            "window_s": report.window_s,
            "dropped_key_id": report.dropped_key_id(),
            "written": { "offset": report.written.0, "len": report.written.1 },
        }));
    } else {
        println!(
            "Rotated the cluster key of {} (cluster '{}')",
            args.device.display(),
            escape_name(&sb.cluster_name)
        );
        let mut pairs = vec![
            ("signing key".to_string(), format!("id {} (new)", report.new.current.id)),
            (
                "previous key".into(),
                format!(
                    "id {} verifies for {} more (until {} Unix s)",
                    prev.id,
                    ms(report.window_s * 1000),
                    prev.valid_until_unix_s
                ),
            ),
        ];
        if let Some(d) = report.dropped_key_id() {
            pairs.push(("dropped key".into(), format!("id {d}")));
        }
        pairs.push((
            "written".into(),
            format!("{} bytes at offset {} (O_DSYNC), read back", report.written.1, report.written.0),
        ));
        print_pairs(&pairs);
    }
    Ok(EXIT_OK)
}
