//! `diskbeat status`: this host's view, from the daemon's control socket.

use super::output::{ms, print_json, print_table};
use super::{CliError, CliResult, EXIT_OK};
use crate::format::escape_name;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

/// Show the local daemon's view of the cluster.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Peer states: unknown (not yet seen advancing), live, dead (unchanged for the host-dead timeout
between two of this host's reads), leaving (left cleanly), fenced, self_fencing, corrupt, free.

Examples:
  diskbeat status
  diskbeat status --json | jq '.peers[] | select(.state == \"dead\")'

Exit status: 0 shown, 1 no daemon answers on the socket.")]
pub struct Args {
    /// Control socket of the daemon.
    #[arg(long, default_value = crate::daemon::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Include free slots.
    #[arg(long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Asks the daemon at `socket` for its status.
pub fn query(socket: &std::path::Path, all: bool) -> Result<serde_json::Value, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!("cannot reach the daemon at {}: {e} (is it running? --socket?)", socket.display())
    })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
    s.write_all(if all { b"status all\n" } else { b"status\n" }).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| format!("no answer from the daemon: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer from the daemon: {e}"))
}

/// A string of the daemon's answer, escaped for the terminal: host and cluster names come from the
/// disk, where anyone who can write the LUN can put terminal escapes in them.
fn text(v: &serde_json::Value, missing: &str) -> String {
    escape_name(v.as_str().unwrap_or(missing)).into_owned()
}

pub fn run(args: Args) -> CliResult {
    let v = query(&args.socket, args.all).map_err(CliError::fail)?;
    if args.json {
        print_json(&v);
        return Ok(EXIT_OK);
    }
    let me = &v["self"];
    let lat = |k: &str| {
        let l = &me["latency"][k];
        format!("p50 {} us, p99 {} us, max {} us", l["p50_us"], l["p99_us"], l["max_us"])
    };
    println!(
        "slot {} '{}' in cluster {}: {} (generation {}, sequence {})",
        me["slot"],
        text(&me["name"], "?"),
        text(&me["cluster_name"], "?"),
        text(&me["state"], "?"),
        me["generation"],
        me["sequence"]
    );
    if me["fence_reason"]["text"].is_string() {
        println!("  fenced: {}", text(&me["fence_reason"]["text"], ""));
    }
    if let Some(n) = me["fence_failures"].as_u64().filter(|&n| n > 0) {
        println!("  FENCE ACTION FAILED {n} time(s): this host is NOT fenced (retrying every interval)");
    }
    println!(
        "  watchdog {}; fence action {}",
        if me["watchdog_armed"] == true {
            "armed"
        } else {
            "none (if this daemon dies, peers cannot prove its VMs gone)"
        },
        if me["fence_stops_vms"] == true { "stops VMs" } else { "log-only (proves nothing)" }
    );
    println!(
        "  last good cycle {} ago; {} cycles, {} failed",
        ms(me["last_ok_age_ms"].as_u64().unwrap_or(0)),
        me["cycles"],
        me["failed_cycles"]
    );
    println!("  write  {}", lat("write"));
    println!("  sweep  {}", lat("sweep"));
    let net = &v["network"];
    let networked = net["enabled"] == true;
    if networked {
        let addrs: Vec<String> =
            net["addresses"].as_array().map(|a| a.iter().map(|x| text(x, "?")).collect()).unwrap_or_default();
        println!(
            "  network heartbeat on {}; weight {}; {}",
            addrs.join(", "),
            net["weight"],
            match (net["isolation_configured"] == true, net["isolated"] == true) {
                (false, _) => "no isolation addresses",
                (true, false) => "isolation addresses reachable",
                (true, true) => "ISOLATED: no isolation address answers",
            }
        );
        let p = &net["partition"];
        if p["text"].is_string() {
            let stable = ms(p["stable_for_ms"].as_u64().unwrap_or(0));
            let fenced = matches!(me["state"].as_str(), Some("fenced" | "self_fencing"));
            let verdict = match p["we_survive"].as_bool() {
                Some(true) => "this host survives".to_string(),
                Some(false) if fenced => "this host is outside the survivors".to_string(),
                Some(false) => format!(
                    "this host must FENCE (views stable for {stable}, acts at {})",
                    ms(p["decision_delay_ms"].as_u64().unwrap_or(0))
                ),
                None => "no decision".to_string(),
            };
            println!("  partition rule: {} ({verdict})", text(&p["text"], "?"));
        }
        if net["riding_through"] == true {
            println!(
                "  HEARTBEAT DISK LOST FOR THE WHOLE POOL: riding through on network evidence ({} members)",
                net["members"]
            );
        }
        if let Some(total) = net["drops_total"].as_u64().filter(|&t| t > 0) {
            let by: Vec<String> = net["drops"]
                .as_object()
                .map(|o| {
                    o.iter().filter(|(_, n)| n.as_u64() != Some(0)).map(|(k, n)| format!("{k} {n}")).collect()
                })
                .unwrap_or_default();
            println!("  packets dropped: {total} ({})", by.join(", "));
        }
    }
    print_vms(&v["vms"]);
    println!();
    let rows: Vec<Vec<String>> = v["peers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                p["slot"].to_string(),
                text(&p["name"], ""),
                text(&p["state"], "?"),
                p["generation"].to_string(),
                p["sequence"].to_string(),
                ms(p["age_ms"].as_u64().unwrap_or(0)),
                match (&p["vms_gone"]["proven"], &p["vms_gone"]["proof"], &p["vms_gone"]["why_not"]) {
                    (serde_json::Value::Bool(true), proof, _) => {
                        format!("gone ({})", proof.as_str().unwrap_or("?"))
                    }
                    (_, _, why) if why == "alive" => "running".into(),
                    (_, _, why) => format!("not proven ({})", why.as_str().unwrap_or("?")),
                },
                network_cell(&p["network"]),
                p["corrupt_reason"].as_str().map(|r| escape_name(r).into_owned()).unwrap_or_else(|| {
                    match (p["unreadable"] == true, p["state"] == "live", p["network"]["heard"] == false) {
                        (true, _, _) => "unreadable".into(),
                        // The disk says alive, the network does not: a network failure, never a
                        // reason to fail over.
                        (false, true, true) if networked => "disk beats, network silent".into(),
                        _ => String::new(),
                    }
                }),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No peers.");
    } else {
        print_table(&["SLOT", "HOST", "STATE", "GEN", "SEQ", "AGE", "VMS", "NETWORK", "NOTE"], &rows);
    }
    Ok(EXIT_OK)
}

/// The failover lines: tolerance, role, plan progress, held VMs, alarms.
fn print_vms(f: &serde_json::Value) {
    if f["enabled"] != true {
        return;
    }
    if let Some(k) = f["host_failures_tolerated"].as_u64() {
        let warn = if f["below_target"] == true {
            format!(" -- BELOW THE TARGET OF {}: add capacity or lower protection", f["tolerance_target"])
        } else {
            String::new()
        };
        println!("  host failures tolerated: {k}{warn}");
    }
    match f["coordinator_slot"].as_u64() {
        Some(c) if f["is_coordinator"] == true => println!("  failover coordinator: this host (slot {c})"),
        Some(c) => println!("  failover coordinator: slot {c}"),
        None => println!("  failover coordinator: none (this host is not live)"),
    }
    if let Some(plan) = f["plan"].as_object() {
        let n = plan.get("assignments").and_then(|a| a.as_array()).map_or(0, |a| a.len());
        let u = plan.get("unplaced").and_then(|a| a.as_array()).map_or(0, |a| a.len());
        println!(
            "  restart plan {}: {n} VM(s) being restarted, {u} not restarted (see --json for reasons)",
            plan["epoch"]["number"]
        );
    }
    for h in f["held"].as_array().map(|a| a.as_slice()).unwrap_or_default() {
        println!("  HELD: {}", escape_name(&text(&h["text"], "")));
    }
    for t in f["running_twice"].as_array().map(|a| a.as_slice()).unwrap_or_default() {
        println!(
            "  ALARM: VM '{}' is reported running on slots {}: stop all but one NOW",
            escape_name(&text(&t["name"], "?")),
            t["slots"]
        );
    }
    if let Some(e) = f["driver_error"].as_str() {
        println!("  VM driver error: {} (inventory kept from the last good poll)", escape_name(e));
    }
    if let Some(b) = f["blocked"].as_str() {
        println!("  restarts waiting: {}", escape_name(b));
    }
}

/// Per network: `ok` (heard), `--` (not heard), with how long ago it was last heard.
fn network_cell(n: &serde_json::Value) -> String {
    let Some(nets) = n["networks"].as_array() else { return String::new() };
    nets.iter()
        .map(|x| {
            let ago = x["last_heard_ms_ago"].as_u64().map(ms).unwrap_or_else(|| "never".into());
            if x["heard"] == true {
                format!("net{} ok", x["network"])
            } else {
                format!("net{} -- ({ago})", x["network"])
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
        let v = serde_json::json!({"name": "evil\u{1b}[2J\nhost", "n": 3});
        assert_eq!(text(&v["name"], "?"), "evil\\u{1b}[2J\\nhost");
        assert_eq!(text(&v["missing"], "?"), "?");
        assert!(!text(&v["name"], "?").contains('\u{1b}'));
    }
}
