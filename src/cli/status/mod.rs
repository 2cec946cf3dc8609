//! `diskbeat status`: this host's view, from the daemon's control socket; `--watch` redraws it
//! (`watch.rs`).

use super::output::{format_table, ms};
use super::{CliError, CliResult, EXIT_OK};
use crate::core::peer::NotProven;
use crate::daemon::report::{FailoverReport, Latency, PeerNetwork, StatusReport};
use crate::format::escape_name;
use crate::text::count;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

mod watch;

/// One line into a `String` frame (`say!(out)` for an empty line).
macro_rules! say {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Show the local daemon's view of the cluster.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Peer states: unknown (not yet seen advancing), live, dead (unchanged for the host-dead timeout
between two of this host's reads), leaving (left cleanly), fenced, self_fencing, corrupt, free.

--watch redraws the report in place every --interval (alternate screen) with a header (time, host,
state), the network matrix (who hears whom, from each peer's last packet) and the restarts in
progress, until q or Ctrl-C. When the daemon stops answering it says since when and keeps retrying.
Without a terminal on stdout, each frame is printed after a blank line, without escape codes; with
--json, one status document per line (a stream for scripts; a failed query is a JSON error line on
stderr).

Examples:
  diskbeat status
  diskbeat status --json | jq '.peers[] | select(.state == \"dead\")'
  diskbeat status --watch
  diskbeat status --watch --interval 5s --all
  diskbeat status --watch --json --interval 10s | jq -c '.self.state'

Exit status: 0 shown (--watch: stopped by q, Ctrl-C or SIGTERM), 1 no daemon answers on the socket
(not with --watch, which keeps retrying).")]
pub struct Args {
    /// Control socket of the daemon.
    #[arg(long, default_value = crate::daemon::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Include free slots.
    #[arg(long)]
    pub all: bool,
    /// Print JSON (with --watch: one document per line).
    #[arg(long)]
    pub json: bool,
    /// Redraw the status every --interval until q or Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch asks the daemon (e.g. 1s, 500ms, 5s).
    #[arg(long, default_value = "1s", value_parser = parse_interval_ms, requires = "watch")]
    pub interval: u32,
}

/// `--interval`: a duration of 100 ms to 1 hour.
fn parse_interval_ms(s: &str) -> Result<u32, String> {
    let v = crate::timing::parse_duration_ms(s)?;
    if !(100..=3_600_000).contains(&v) {
        return Err(format!("{s}: the interval must be between 100ms and 1h"));
    }
    Ok(v)
}

/// Asks the daemon at `socket` for its status.
pub fn query(socket: &std::path::Path, all: bool) -> Result<StatusReport, String> {
    query_within(socket, all, Duration::from_secs(10))
}

/// `query`, waiting at most `timeout` for the answer.
fn query_within(socket: &std::path::Path, all: bool, timeout: Duration) -> Result<StatusReport, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!("cannot reach the daemon at {}: {e} (is it running? --socket?)", socket.display())
    })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.write_all(if all { b"status all\n" } else { b"status\n" }).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| format!("no answer from the daemon: {e}"))?;
    serde_json::from_str(&line).map_err(|e| {
        format!(
            "the daemon's answer is not a status this diskbeat understands ({e}): is it the same version?"
        )
    })
}

/// A string of the daemon's answer, escaped for the terminal: host and cluster names come from the
/// disk, where anyone who can write the LUN can put terminal escapes in them.
fn text(s: &str) -> String {
    escape_name(s).into_owned()
}

pub fn run(args: Args) -> CliResult {
    if args.watch {
        return watch::run(&args);
    }
    let v = query(&args.socket, args.all).map_err(CliError::fail)?;
    if args.json {
        // The report itself, not a Value: fields keep the report's order (self, then network, ...).
        println!("{}", serde_json::to_string_pretty(&v).expect("a status report serializes"));
        return Ok(EXIT_OK);
    }
    print!("{}", render(&v));
    Ok(EXIT_OK)
}

/// The report for people, as `diskbeat status` prints it (and `--watch` redraws it).
pub fn render(v: &StatusReport) -> String {
    let mut out = String::new();
    let me = &v.me;
    let lat = |l: &Latency| format!("p50 {} us, p99 {} us, max {} us", l.p50_us, l.p99_us, l.max_us);
    say!(
        out,
        "slot {} '{}' in cluster {}: {} (generation {}, sequence {})",
        me.slot,
        text(&me.name),
        text(&me.cluster_name),
        text(&me.state),
        me.generation,
        me.sequence
    );
    if let Some(r) = &me.fence_reason {
        say!(out, "  fenced: {}", text(&r.text));
    }
    if me.fence_failures > 0 {
        say!(
            out,
            "  FENCE ACTION FAILED {}: this host is NOT fenced (retrying every interval)",
            count(u64::from(me.fence_failures), "time", "times")
        );
    }
    say!(
        out,
        "  watchdog {}; fence action {}",
        if me.watchdog_armed {
            "armed"
        } else {
            "none (if this daemon dies, peers cannot prove its VMs gone)"
        },
        if me.fence_stops_vms { "stops VMs" } else { "log-only (proves nothing)" }
    );
    say!(
        out,
        "  last good cycle {} ago; {} cycles, {} failed",
        ms(me.last_ok_age_ms),
        me.cycles,
        me.failed_cycles
    );
    say!(out, "  write  {} (io engine)", lat(&me.latency.write));
    say!(out, "  sweep  {} (io engine)", lat(&me.latency.sweep));
    if let Some(c) = &me.latency.cycle {
        say!(out, "  cycle  {} (sweep + write, wall time)", lat(c));
    }
    if let Some(a) = &me.metrics_addr {
        say!(out, "  metrics at http://{}/metrics", text(a));
    }
    let net = v.network.heartbeat.as_ref();
    if let Some(net) = net {
        let addrs: Vec<String> = net.addresses.iter().map(|a| text(a)).collect();
        say!(
            out,
            "  network heartbeat on {}; weight {}; {}",
            addrs.join(", "),
            net.weight,
            match (net.isolation_configured, net.isolated) {
                (false, _) => "no isolation addresses",
                (true, false) => "isolation addresses reachable",
                (true, true) => "ISOLATED: no isolation address answers",
            }
        );
        if let Some(p) = &net.partition {
            let stable = ms(p.stable_for_ms);
            let fenced = matches!(me.state.as_str(), "fenced" | "self_fencing");
            let verdict = match p.we_survive {
                Some(true) => "this host survives".to_string(),
                Some(false) if fenced => "this host is outside the survivors".to_string(),
                Some(false) => format!(
                    "this host must FENCE if the views stay so (stable for {stable}, acts at {})",
                    ms(p.decision_delay_ms.unwrap_or(0))
                ),
                None => "no decision".to_string(),
            };
            say!(out, "  partition rule: {} ({verdict})", text(&p.text));
        }
        if net.riding_through {
            say!(
                out,
                "  HEARTBEAT DISK LOST FOR THE WHOLE POOL: riding through on network evidence ({})",
                count(u64::from(net.members), "member", "members")
            );
            if let Some(r) = &net.ride {
                let who: Vec<String> = r
                    .vouching
                    .iter()
                    .map(|m| match m.evidence_age_ms {
                        Some(a) => format!("slot {} ({:.1} s ago)", m.slot, a as f64 / 1000.0),
                        None => format!("slot {} (no evidence)", m.slot),
                    })
                    .collect();
                say!(
                    out,
                    "    disk lost for {:.1} s, riding for {:.1} s; vouching: {}",
                    r.disk_lost_for_ms as f64 / 1000.0,
                    r.riding_for_ms as f64 / 1000.0,
                    who.join(", ")
                );
                say!(out, "    {}", text(&r.ends_when));
                say!(out, "    rule for a further failure: {}", text(&r.rule));
            }
        }
        if net.drops_total > 0 {
            let by: Vec<String> =
                net.drops.iter().filter(|(_, &n)| n != 0).map(|(k, n)| format!("{} {n}", text(k))).collect();
            say!(out, "  packets dropped: {} ({})", net.drops_total, by.join(", "));
        }
    }
    if let Some(f) = &v.vms.failover {
        render_vms(&mut out, f);
    }
    say!(out);
    let rows: Vec<Vec<String>> = v
        .peers
        .iter()
        .map(|p| {
            let link = p.network.as_ref();
            vec![
                p.slot.to_string(),
                text(&p.name),
                text(&p.state),
                p.generation.to_string(),
                p.sequence.to_string(),
                ms(p.age_ms),
                match (p.vms_gone.proof, p.vms_gone.why_not) {
                    (Some(proof), _) => format!("proven ({})", proof.name()),
                    (None, Some(NotProven::Alive)) => "no: alive".into(),
                    (None, Some(why)) => format!("NOT proven ({})", why.name()),
                    (None, None) => "?".into(),
                },
                link.map(network_cell).unwrap_or_default(),
                p.corrupt_reason.as_deref().map(text).unwrap_or_else(|| {
                    if let Some(d) = &p.fence_device {
                        return format!("fence device: {} (attempt {})", d.stage, d.attempts.max(1));
                    }
                    match (p.unreadable, p.state == "live", link.is_some_and(|l| !l.heard)) {
                        (true, _, _) => "unreadable".into(),
                        // Never declared dead by us: it may ride through without knowing us.
                        _ if p.state == "silent" => {
                            "silent, but its records do not list this host: not declared dead (back, or \
                             `diskbeat fence --confirm-down` once off)"
                                .into()
                        }
                        // The disk says alive, the network does not: a network failure, never a
                        // reason to fail over.
                        (false, true, true) if net.is_some() => "disk beats, network silent".into(),
                        _ => String::new(),
                    }
                }),
            ]
        })
        .collect();
    if rows.is_empty() {
        say!(out, "No peers.");
    } else {
        out.push_str(&format_table(
            &["SLOT", "HOST", "STATE", "GEN", "SEQ", "AGE", "VMS GONE", "NETWORK", "NOTE"],
            &rows,
        ));
    }
    out
}

/// The failover lines: tolerance, role, plan progress, held VMs, alarms.
fn render_vms(out: &mut String, f: &FailoverReport) {
    if let Some(k) = f.host_failures_tolerated {
        let warn = match f.tolerance_target {
            Some(target) if f.below_target => {
                format!(" -- BELOW THE TARGET OF {target}: add capacity or lower protection")
            }
            _ => String::new(),
        };
        say!(out, "  host failures tolerated: {k}{warn}");
    }
    match f.coordinator_slot {
        Some(c) if f.is_coordinator => say!(out, "  failover coordinator: this host (slot {c})"),
        Some(c) => say!(out, "  failover coordinator: slot {c}"),
        None => say!(out, "  failover coordinator: none (this host is not live)"),
    }
    if let Some(plan) = &f.plan {
        say!(
            out,
            "  restart plan {}: {} being restarted, {} not restarted (see --json for reasons)",
            plan.epoch.number,
            count(plan.assignments.len() as u64, "VM", "VMs"),
            count(plan.unplaced.len() as u64, "VM", "VMs")
        );
    }
    for h in &f.held {
        say!(out, "  HELD: {}", text(&h.text));
    }
    for m in &f.missing {
        say!(
            out,
            "  MISSING: VM '{}' is not in this host's VM inventory for {}: still held here, never restarted \
             elsewhere ({})",
            text(&m.name),
            ms(m.missing_for_ms),
            text(&m.why)
        );
    }
    for t in &f.running_twice {
        say!(
            out,
            "  ALARM: VM '{}' is reported running on slots {:?}: stop all but one NOW",
            text(&t.name),
            t.slots
        );
    }
    for w in &f.waiting {
        let what = match (&w.vm, w.slot) {
            (Some(vm), _) => format!("VM '{}'", text(vm)),
            (None, Some(slot)) => format!("slot {slot}"),
            (None, None) => "VMs".to_string(),
        };
        let since = w.waiting_for_ms.map(|t| format!(" for {}", ms(t))).unwrap_or_default();
        say!(out, "  WAITING: {what}{since}: {}", text(&w.reason));
    }
    if let Some(e) = &f.driver_error {
        say!(out, "  VM driver error: {} (inventory kept from the last good poll)", text(e));
    }
    if let Some(b) = &f.blocked {
        say!(out, "  restarts waiting: {}", text(b));
    }
}

/// Per network: `ok` (heard), `--` (not heard), with how long ago it was last heard.
fn network_cell(n: &PeerNetwork) -> String {
    n.networks
        .iter()
        .map(|x| {
            let ago = x.last_heard_ms_ago.map(ms).unwrap_or_else(|| "never".into());
            if x.heard {
                format!("net{} ok", x.network)
            } else {
                format!("net{} -- ({ago})", x.network)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_daemon_are_escaped() {
        assert_eq!(text("evil\u{1b}[2J\nhost"), "evil\\u{1b}[2J\\nhost");
        assert!(!text("evil\u{1b}[2J\nhost").contains('\u{1b}'));
    }
}
