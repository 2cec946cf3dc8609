//! `diskbeat events` answers the 3 a.m. question alone: "why was h2 fenced, and where did its
//! VMs go?" Real daemons on a real loop device, the exec driver (VMs are processes), emulated
//! watchdogs; h2 loses power (its daemon and VMs killed). Asked of a survivor's daemon only,
//! the event history names the proof that h2 is gone, the plan, and the host each VM runs on
//! now, in the same words as the daemon's log; a follower saw it as it happened.

mod common;
#[path = "common/procs_pool.rs"]
mod procs_pool;
use common::*;
use procs_pool::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn events(socket: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["events", "--socket", socket.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "diskbeat events failed: {}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// A `diskbeat events --follow --json` process whose lines are collected as they come.
struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Follower {
    fn start(socket: &std::path::Path) -> Follower {
        let mut child = Command::new(bin())
            .args(["events", "--follow", "--json", "--socket", socket.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str::<Value>(&l).expect("a JSON line"));
            }
        });
        Follower { child, lines }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_alone_say_why_a_host_was_fenced_and_where_its_vms_went() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(3);
    p.vm(2, "web", 256, "protect", Some(1));
    p.vm(2, "db", 256, "protect", None);
    p.vm(2, "scratch", 256, "none", None);
    p.vm(0, "a0", 200, "protect", None);
    for i in 0..3 {
        p.spawn(i, if i == 2 { 4096 } else { 900 }, true);
    }
    p.wait("all live and published", Duration::from_secs(30), |p| {
        p.all_live() && published(p, 2, 3) && published(p, 0, 1) && published(p, 1, 0)
    });
    let socket = p.hosts[1].socket.clone();
    let follower = Follower::start(&socket);
    std::thread::sleep(Duration::from_millis(300));
    let before = run(&["events", "--socket", socket.to_str().unwrap(), "--json"]);
    let seen_before: Vec<Value> =
        String::from_utf8(before.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last_before = seen_before.last().map_or(0, |e| e["seq"].as_u64().unwrap());

    p.hosts[2].kill();
    p.wait("h2's VMs dead", Duration::from_secs(5), |p| running(&p.hosts[2].state).is_empty());
    p.wait("web and db running again", Duration::from_secs(10 * T_MS / 1000), |p| {
        let w = p.where_runs();
        ["web", "db"].iter().all(|n| w.get(*n).is_some_and(|h| h.len() == 1))
    });
    let w = p.where_runs();
    // Every survivor's history has the answer, not only the coordinator's or the target's.
    p.wait("every survivor to report both restarts", Duration::from_secs(10), |p| {
        (0..2).all(|i| {
            let evs = events(&p.hosts[i].socket, &["--kind", "vm_restarted"]);
            ["web", "db"].iter().all(|vm| evs.iter().any(|e| e["vm"] == *vm))
        })
    });

    for i in 0..2 {
        let evs = events(&p.hosts[i].socket, &["--host", "h2"]);
        let dump = evs.iter().map(|e| e["text"].as_str().unwrap().to_string()).collect::<Vec<_>>().join("\n");
        // Why: slot 2 went silent and is proven gone by the watchdog it armed.
        let dead = evs
            .iter()
            .find(|e| e["kind"] == "peer_state" && e["slot"] == 2 && e["data"]["to"] == "dead")
            .unwrap_or_else(|| panic!("h{i}: no event says h2 died:\n{dump}"));
        assert_eq!(dead["peer"], "h2");
        assert_eq!(dead["data"]["proof"], "watchdog_expired", "{dead:#}");
        let text = dead["text"].as_str().unwrap();
        assert!(text.starts_with("slot 2 'h2': live -> dead: silent on the disk for"), "{text}");
        assert!(text.contains("proven gone (watchdog_expired"), "{text}");
        assert!(dead["data"]["silent_ms"].as_u64().unwrap() >= T_MS, "{dead:#}");
        // Where: each protected VM of h2 runs where the hook says it runs, once.
        for vm in ["web", "db"] {
            let to = w[vm][0] as u64;
            let moved: Vec<&Value> =
                evs.iter().filter(|e| e["kind"] == "vm_restarted" && e["vm"] == vm).collect();
            assert_eq!(moved.len(), 1, "h{i}: {vm} reported once:\n{dump}");
            assert_eq!(moved[0]["data"]["from_slot"], 2);
            assert_eq!(moved[0]["data"]["to_slot"], to, "h{i}: {vm} runs on slot {to}:\n{dump}");
            assert_eq!(moved[0]["data"]["to_host"], format!("h{to}"));
            assert!(
                moved[0]["seq"].as_u64() > dead["seq"].as_u64(),
                "h{i}: {vm} restarted before h2 was proven gone:\n{dump}"
            );
        }
    }
    // The coordinator (slot 0) planned it, and says why 'scratch' stays down.
    let plans = events(&p.hosts[0].socket, &["--kind", "plan"]);
    let plan = plans.first().unwrap_or_else(|| panic!("no plan event on the coordinator"));
    let text = plan["text"].as_str().unwrap();
    assert!(text.contains("'scratch' of slot 2 'h2' NOT restarted (protection none)"), "{text}");
    assert!(plan["data"]["moves"].as_array().unwrap().iter().any(|m| m["vm"] == "web"), "{plan:#}");
    // The target of 'web' started it and says how long that took.
    let target = w["web"][0];
    let started = events(&p.hosts[target].socket, &["--vm", "web", "--kind", "vm_started"]);
    assert_eq!(started.len(), 1, "{started:#?}");
    assert!(started[0]["data"]["took_ms"].is_u64());

    // The same words in the log as in the events.
    let log = std::fs::read_to_string(&p.hosts[1].log).unwrap();
    let all = events(&socket, &[]);
    for e in all.iter().filter(|e| e["kind"] == "vm_restarted" || e["kind"] == "peer_state" && e["slot"] == 2)
    {
        let text = e["text"].as_str().unwrap();
        assert!(log.contains(text), "the log lacks the event '{text}'");
    }
    // For people: one line per event, time first.
    let out = run(&["events", "--socket", socket.to_str().unwrap(), "--host", "h2"]);
    let human = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    eprintln!("diskbeat events --host h2 (on h1):\n{human}");
    assert!(human.lines().any(|l| l.contains("WARN   slot 2 'h2': live -> dead")), "{human}");
    assert!(human.lines().any(|l| l.contains("'web' of slot 2 'h2' runs on slot")), "{human}");

    // The follower saw it as it came, in order, nothing twice.
    let want: Vec<u64> =
        all.iter().map(|e| e["seq"].as_u64().unwrap()).filter(|&s| s > last_before).collect();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let got =
            follower.lines.lock().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>();
        if want.iter().all(|s| got.contains(s)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the follower had every event {} ms after the history", start.elapsed().as_millis());
    let followed = follower.lines.lock().unwrap().clone();
    let seqs: Vec<u64> = followed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order or repeated: {seqs:?}");
    for want in all.iter().filter(|e| e["seq"].as_u64().unwrap() > last_before) {
        assert!(
            seqs.contains(&want["seq"].as_u64().unwrap()),
            "the follower missed {want:#} (it has {seqs:?})"
        );
    }
    // `--since` is a time filter: nothing of the failover is newer than a moment from now.
    std::thread::sleep(Duration::from_millis(1500));
    let recent = events(&socket, &["--since", "1s", "--kind", "vm_restarted,peer_state"]);
    assert!(recent.iter().all(|e| e["slot"] != 2 || e["kind"] != "peer_state"), "{recent:#?}");
    assert!(!events(&socket, &["--since", "1h", "--kind", "vm_restarted"]).is_empty());
    // Bad arguments are usage errors; a missing daemon is exit 1.
    let out = run(&["events", "--socket", socket.to_str().unwrap(), "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&["events", "--socket", "/nonexistent/diskbeat.sock"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    p.assert_never_twice();
}
