//! `diskbeat events`: the daemon's event history, and new events as they come (`--follow`).

use super::{CliError, CliResult, EXIT_OK};
use crate::daemon::journal::{EventEntry, Level, Query};
use crate::format::escape_name;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

/// Show what the local daemon decided and saw, and why: fences, peers, partitions, plans, VM
/// starts, destroys.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Every decision is an event with its reason, in the words the daemon's log uses. The daemon keeps
the newest 4096; the log has every one.

Kinds: peer_state, peer_restarted, peer_generation_back, peer_corrupt, partition, self_fence,
fence_done, fence_failed, backup_fence, lun_lost, ride_through_ended, cycle_failed, slow_write,
slow_sweep, superblock_changed, superblock_unreadable, mailbox_test, mailbox_corrupt,
waiting_for_slot, joined, live, left, refused, plan, vm_claimed, vm_withdrawn, vm_starting,
vm_started, vm_start_failed, vm_restarted, vm_running_twice, vm_destroying, vm_destroyed,
vm_destroy_failed, events_missed.

Examples:
  diskbeat events
  diskbeat events --since 1h --host h3        # why was h3 fenced, and where did its VMs go?
  diskbeat events --follow                    # like tail -f (Ctrl-C ends it)
  diskbeat events --vm web1 --since 2026-12-07T03:00:00Z
  diskbeat events --json | jq 'select(.kind == \"vm_restarted\") | .data'

--json prints one JSON object per line (JSON Lines): seq, time, unix_ms, at_ms, level, kind,
host, host_slot, slot, peer, vm, text, data.

Exit status: 0 shown (also when nothing matched), 1 no daemon answers on the socket, or it went
away while following, 2 bad arguments.")]
pub struct Args {
    /// Control socket of the daemon.
    #[arg(long, default_value = crate::daemon::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Keep printing new events as they come.
    #[arg(short, long)]
    pub follow: bool,
    /// Only events from this time on: a duration ago (`90s`, `10m`, `2h`) or an RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events about this slot (the slot it concerns, or a VM moving from or to it).
    #[arg(long)]
    pub slot: Option<u32>,
    /// Only events about this host name (as `--slot`, by name).
    #[arg(long)]
    pub host: Option<String>,
    /// Only events about this VM.
    #[arg(long)]
    pub vm: Option<String>,
    /// Only these kinds (comma-separated, or the option repeated).
    #[arg(long, value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only events at this level or above: debug, info, warn, error.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    pub level: Level,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    match s {
        "debug" => Ok(Level::Debug),
        "info" => Ok(Level::Info),
        "warn" => Ok(Level::Warn),
        "error" => Ok(Level::Error),
        _ => Err(format!("'{s}': one of debug, info, warn, error")),
    }
}

/// `--since`: a duration ago or an RFC 3339 time, as Unix milliseconds.
pub fn parse_since(s: &str, now: std::time::SystemTime) -> Result<u64, String> {
    let at = match humantime::parse_duration(s) {
        Ok(ago) => now.checked_sub(ago).ok_or_else(|| format!("'{s}' reaches before 1970"))?,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            format!("'{s}' is neither a duration (90s, 10m, 2h) nor an RFC 3339 time (2026-12-07T03:00:00Z)")
        })?,
    };
    Ok(at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// Whether `e` is about slot `slot` or host `host`: the slot it concerns, or any `*_slot` /
/// `*_host` fact (a VM moved from or to it, a plan's moves).
fn about(e: &EventEntry, slot: Option<u32>, host: Option<&str>) -> bool {
    fn walk(v: &serde_json::Value, slot: Option<u32>, host: Option<&str>) -> bool {
        match v {
            serde_json::Value::Object(m) => m.iter().any(|(k, v)| {
                (k.ends_with("_slot") && slot.is_some_and(|s| v.as_u64() == Some(u64::from(s))))
                    || (k.ends_with("_host") && host.is_some_and(|h| v.as_str() == Some(h)))
                    || walk(v, slot, host)
            }),
            serde_json::Value::Array(a) => a.iter().any(|v| walk(v, slot, host)),
            _ => false,
        }
    }
    (slot.is_some() && e.slot == slot)
        || (host.is_some() && e.peer.as_deref() == host)
        || walk(&e.data, slot, host)
}

impl Args {
    fn wants(&self, e: &EventEntry) -> bool {
        (e.level >= self.level || e.kind == "events_missed")
            && (self.kind.is_empty() || self.kind.contains(&e.kind))
            && (self.vm.is_none() || e.vm == self.vm)
            && (self.slot.is_none() && self.host.is_none() || about(e, self.slot, self.host.as_deref()))
    }
}

/// One event for people: `2026-12-07 03:12:04.123  WARN   text`.
pub fn line(e: &EventEntry) -> String {
    let time = e.time.replacen('T', " ", 1);
    let time = time.trim_end_matches('Z');
    let level = match e.level {
        Level::Error => "ERROR",
        Level::Warn => "WARN ",
        Level::Info => "info ",
        Level::Debug => "debug",
    };
    format!("{time}  {level}  {}", escape_name(&e.text))
}

pub fn run(args: Args) -> CliResult {
    let since = match &args.since {
        Some(s) => Some(parse_since(s, std::time::SystemTime::now()).map_err(CliError::usage)?),
        None => None,
    };
    let q = Query { after_seq: None, since_unix_ms: since, follow: args.follow };
    let socket = &args.socket;
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        CliError::fail(format!(
            "cannot reach the daemon at {}: {e} (is it running? --socket?)",
            socket.display()
        ))
    })?;
    if !args.follow {
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
    }
    s.write_all(format!("{}\n", q.request()).as_bytes()).map_err(|e| CliError::fail(e.to_string()))?;
    let stdout = std::io::stdout();
    let mut reader = BufReader::new(s);
    let mut text = String::new();
    loop {
        text.clear();
        match reader.read_line(&mut text) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(CliError::fail(format!("reading the daemon's events failed: {e}"))),
        }
        let e: EventEntry = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(parse) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                return Err(CliError::fail(match v["error"].as_str() {
                    Some(err) => format!("the daemon refused: {err}"),
                    None => format!(
                        "the daemon's answer is not an event this diskbeat understands ({parse}): is it the same \
                         version?"
                    ),
                }));
            }
        };
        if !args.wants(&e) {
            continue;
        }
        let out = if args.json { serde_json::to_string(&e).expect("an event serializes") } else { line(&e) };
        let mut o = stdout.lock();
        // A closed pipe (`| head`) ends the command quietly.
        if writeln!(o, "{out}").and_then(|_| o.flush()).is_err() {
            return Ok(EXIT_OK);
        }
    }
    if args.follow {
        return Err(CliError::fail("the daemon closed the event stream (stopped or restarted)"));
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slot: Option<u32>, data: serde_json::Value) -> EventEntry {
        EventEntry {
            seq: 1,
            time: "2026-12-07T03:12:04.123Z".into(),
            unix_ms: 0,
            at_ms: 0,
            level: Level::Warn,
            kind: "vm_restarted".into(),
            host: "h1".into(),
            host_slot: 0,
            slot,
            peer: None,
            vm: Some("web".into()),
            text: "x".into(),
            data,
        }
    }

    #[test]
    fn an_event_is_about_a_slot_or_host_it_names_anywhere() {
        let moved =
            entry(None, serde_json::json!({"moves": [{"from_slot": 2, "from_host": "h3", "to_slot": 0}]}));
        assert!(
            about(&moved, Some(2), None) && about(&moved, None, Some("h3")) && about(&moved, Some(0), None)
        );
        assert!(!about(&moved, Some(1), None) && !about(&moved, None, Some("h2")));
        assert!(about(&entry(Some(4), serde_json::Value::Null), Some(4), None));
    }

    #[test]
    fn since_takes_a_duration_ago_or_a_time() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        assert_eq!(parse_since("10m", now), Ok(1_000_000_000 - 600_000));
        assert_eq!(parse_since("1970-01-02T00:00:00Z", now), Ok(86_400_000));
        assert!(parse_since("yesterday", now).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn a_line_for_people_has_the_time_level_and_escaped_text() {
        let mut e = entry(None, serde_json::Value::Null);
        e.text = "slot 2 'h\x1b[2J3': live -> dead".into();
        let l = line(&e);
        assert!(l.starts_with("2026-12-07 03:12:04.123  WARN   slot 2"), "{l}");
        assert!(!l.contains('\x1b'), "{l}");
    }
}
