//! Storage faults on one host only (faultfs): every test host has its own loop device over the
//! same backing file, kept on a FUSE file system that injects EIO, latency and hangs per view.
//!
//! A host whose path returns EIO or hangs past the deadline self-fences, and its peers mark it
//! dead after that, never before; latency spikes below the io timeout cause no fence and no
//! false `dead`. T = 4 s: interval 200 ms, io timeout 1 s, self-fence 2 s, host dead 4 s.
//!
//! Needs root, /dev/fuse and a built faultfs (`cargo build --workspace`); skipped otherwise.

mod common;
#[path = "../tools/faultfs/src/harness.rs"]
mod harness;

use common::peer_changes;
use harness::{Fault, FaultFs, LoopDev};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VIEWS: [&str; 3] = ["a", "b", "c"];
const BASE_TIMEOUT_MS: u64 = 4000;

/// Three daemons (slots 0, 1, 2 = views a, b, c) on one heartbeat disk seen through faultfs.
/// Drop: clear faults (hung I/O completes), stop the daemons (SIGTERM, then SIGKILL), detach
/// the loop devices, unmount faultfs, remove the tempdir; also on panic.
struct Cluster {
    daemons: Vec<Child>,
    sockets: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    loops: Vec<LoopDev>,
    fs: Option<FaultFs>,
    dir: Option<tempfile::TempDir>,
}

fn skip() -> bool {
    if let Some(why) = harness::skip_reason() {
        eprintln!("SKIPPED: {why}");
        return true;
    }
    if harness::find_binary().is_none() {
        // Under CI a missing resource fails the test: a skipped test proves nothing.
        assert!(
            !std::env::var("CI").is_ok_and(|v| !v.is_empty()),
            "faultfs binary not built and CI is set: run `cargo build --workspace` first (tools/test.sh does)"
        );
        eprintln!("SKIPPED: faultfs binary not built (cargo build --workspace)");
        return true;
    }
    false
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::Builder::new().prefix("diskbeat-faults").tempdir_in("/var/tmp").expect("tempdir");
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img).and_then(|f| f.set_len(64 << 20)).expect("sparse disk.img");
        let mut c = Cluster {
            daemons: Vec::new(),
            sockets: Vec::new(),
            logs: Vec::new(),
            loops: Vec::new(),
            fs: None,
            dir: Some(dir),
        };
        let root = c.dir.as_ref().unwrap().path().to_path_buf();
        c.fs = Some(FaultFs::start(&root, &VIEWS).expect("start faultfs"));
        for v in VIEWS {
            let lo = LoopDev::attach(&c.fs().path(v, "disk.img"), Some(512)).expect("losetup");
            assert_eq!(lo.direct_io(), Some(true), "loop device over view {v} without direct I/O");
            c.loops.push(lo);
        }
        let dev_a = c.loops[0].path().to_str().unwrap().to_string();
        let out = common::run(&["mkfs", &dev_a, "--slots", "8", "--timeout", "4s", "--cluster", "faults"]);
        assert!(out.status.success(), "mkfs failed: {}", common::stderr(&out));
        for (slot, v) in VIEWS.iter().enumerate() {
            let socket = root.join(format!("{v}.sock"));
            let log = root.join(format!("{v}.log"));
            let child = Command::new(common::bin())
                .args(["daemon", "--device"])
                .arg(c.loops[slot].path())
                .args(["--slot", &slot.to_string(), "--name", &format!("h{v}"), "--fence-action", "log-only"])
                .arg("--socket")
                .arg(&socket)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn diskbeat daemon");
            c.daemons.push(child);
            c.sockets.push(socket);
            c.logs.push(log);
        }
        c
    }

    fn fs(&self) -> &FaultFs {
        self.fs.as_ref().expect("faultfs running")
    }

    fn set(&self, view: &str, fault: Fault) {
        self.fs().set(view, fault).expect("faultfs set");
    }

    /// One daemon's status JSON (Value::Null if it does not answer).
    fn status(&self, slot: usize) -> Value {
        let query = || -> std::io::Result<Value> {
            let mut s = UnixStream::connect(&self.sockets[slot])?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"status\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            serde_json::from_str(&text).map_err(std::io::Error::other)
        };
        query().unwrap_or(Value::Null)
    }

    fn statuses(&self) -> Vec<Value> {
        (0..VIEWS.len()).map(|i| self.status(i)).collect()
    }

    fn dump(&self, last: &[Value]) -> String {
        let mut out = String::new();
        for (i, st) in last.iter().enumerate() {
            out +=
                &format!("\n=== status of {} ===\n{}\n", VIEWS[i], serde_json::to_string_pretty(st).unwrap());
        }
        for (i, log) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            out += &format!("\n=== log of {} (last 60 lines) ===\n", VIEWS[i]);
            for l in tail.iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        if let Ok(show) = self.fs().show() {
            out += &format!("\n=== faultfs ===\n{show}\n");
        }
        out
    }

    /// Polls all statuses until `cond` holds; panics (with statuses and logs) after `timeout`.
    /// `cond` may itself panic on an invariant violation: the panic message is kept.
    fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let st = self.statuses();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cond(&st))) {
                Ok(true) => return st,
                Ok(false) => {}
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    panic!("while waiting for {what}: {msg}{}", self.dump(&st));
                }
            }
            if start.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}{}", self.dump(&st));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// All three live, each seeing the other two live.
    fn wait_all_live(&self) -> Vec<Value> {
        self.wait_until(Duration::from_secs(60), "all three hosts live", |st| {
            (0..3).all(|i| {
                self_state(&st[i]) == "live"
                    && (0..3)
                        .filter(|&j| j != i)
                        .all(|j| peer(&st[i], j).map(|p| p["state"] == "live") == Some(true))
            })
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(fs) = &self.fs {
            let _ = fs.request("clear *");
        }
        for d in &self.daemons {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.id() as i32), nix::sys::signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for d in &mut self.daemons {
            while Instant::now() < deadline && matches!(d.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(d.try_wait(), Ok(None)) {
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        // `losetup -d` of a device still open (udev) only sets autoclear: wait for the detach so
        // faultfs can unmount cleanly instead of lazily.
        let img = self.fs.as_ref().map(|fs| fs.path("a", "disk.img"));
        self.loops.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(img) = &img {
            let names: Vec<PathBuf> =
                VIEWS.iter().map(|v| img.parent().unwrap().with_file_name(v).join("disk.img")).collect();
            let attached = names.iter().any(|n| {
                Command::new("losetup").arg("-j").arg(n).output().is_ok_and(|o| !o.stdout.is_empty())
            });
            if !attached || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fs = None;
        if std::thread::panicking() {
            // Keep the logs of a failed run.
            if let Some(dir) = self.dir.take() {
                eprintln!("daemon logs kept in {}", dir.keep().display());
            }
        }
    }
}

fn self_state(st: &Value) -> &str {
    st["self"]["state"].as_str().unwrap_or("?")
}

fn peer(st: &Value, slot: usize) -> Option<&Value> {
    st["peers"].as_array()?.iter().find(|p| p["slot"] == slot)
}

fn fenced_at(st: &Value) -> Option<u64> {
    st["self"]["fenced_at_ms"].as_u64()
}

/// Panics unless the healthy hosts are live and have never fenced.
fn assert_healthy(st: &[Value], slots: &[usize]) {
    for &i in slots {
        assert_eq!(self_state(&st[i]), "live", "healthy host {} is not live", VIEWS[i]);
        assert_eq!(fenced_at(&st[i]), None, "healthy host {} fenced", VIEWS[i]);
    }
}

fn events_with(st: &Value, needle: &str) -> Vec<(u64, String)> {
    st["recent_events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .filter_map(|e| Some((e["at_ms"].as_u64()?, e["text"].as_str()?.to_string())))
                .filter(|(_, t)| t.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// The fault on view a makes host a fence itself; b and c declare slot 0 dead strictly later.
fn faulted_host_fences_before_peers_declare_it_dead(fault: Fault) {
    let c = Cluster::start();
    c.wait_all_live();
    c.set("a", fault);
    let set_at = Instant::now();

    // a fences itself (the loop or the backup deadline thread) and keeps answering status.
    let st = c.wait_until(Duration::from_secs(30), "host a to fence itself", |st| {
        // (A peer seeing slot 0 dead here is checked below: its dead_at_ms must follow the fence.)
        assert_healthy(st, &[1, 2]);
        fenced_at(&st[0]).is_some() && matches!(self_state(&st[0]), "self_fencing" | "fenced")
    });
    let a_fenced = fenced_at(&st[0]).unwrap();
    eprintln!("a fenced {:?} after the fault; state {}", set_at.elapsed(), self_state(&st[0]));
    let log_a = std::fs::read_to_string(&c.logs[0]).unwrap_or_default();
    if let Some(line) = log_a.lines().find(|l| l.contains("SELF-FENCING")) {
        eprintln!("a: {}", line.split_once("SELF-FENCING").map_or(line, |x| x.1).trim());
    }

    // b and c declare slot 0 dead, after a fenced, after a silence of at least T.
    let st = c.wait_until(Duration::from_secs(30), "b and c to declare slot 0 dead", |st| {
        assert_healthy(st, &[1, 2]);
        [1, 2].iter().all(|&i| peer(&st[i], 0).map(|p| p["state"] == "dead") == Some(true))
    });
    assert_eq!(fenced_at(&st[0]), Some(a_fenced), "a's fence time changed");
    assert!(matches!(self_state(&st[0]), "self_fencing" | "fenced"), "a left the fenced state");
    for i in [1, 2] {
        let p = peer(&st[i], 0).unwrap();
        let dead_at = p["dead_at_ms"].as_u64().expect("dead_at_ms");
        let silent = p["silent_ms_at_death"].as_u64().expect("silent_ms_at_death");
        eprintln!(
            "{}: slot 0 dead at {dead_at} ms, {} ms after a fenced at {a_fenced} ms; silent {silent} ms",
            VIEWS[i],
            dead_at as i64 - a_fenced as i64
        );
        assert!(
            dead_at > a_fenced,
            "{} declared a dead at {dead_at} ms, not after a fenced at {a_fenced} ms",
            VIEWS[i]
        );
        assert!(silent >= BASE_TIMEOUT_MS, "{} declared a dead after only {silent} ms of silence", VIEWS[i]);
        // Every "slot 0: ... -> dead" event is after the fence too.
        for (at, text) in peer_changes(&st[i], 0, &["dead"]) {
            assert!(at > a_fenced, "{}: '{text}' at {at} ms, before a fenced at {a_fenced} ms", VIEWS[i]);
        }
    }
    // The healthy hosts stay live a little longer (no collateral damage).
    std::thread::sleep(Duration::from_secs(1));
    assert_healthy(&c.statuses(), &[1, 2]);
}

#[test]
fn eio_host_self_fences_before_peers_declare_it_dead() {
    if skip() {
        return;
    }
    faulted_host_fences_before_peers_declare_it_dead(Fault::eio());
}

#[test]
fn hung_host_self_fences_before_peers_declare_it_dead() {
    if skip() {
        return;
    }
    faulted_host_fences_before_peers_declare_it_dead(Fault::hang());
}

/// Reads fail but writes work: a cannot confirm its own heartbeat, so it fences; its `fenced`
/// mark still reaches the disk, and b and c see it gone (fenced or dead) only after it fenced.
#[test]
fn eio_on_reads_only_host_self_fences_before_peers_see_it_gone() {
    if skip() {
        return;
    }
    let c = Cluster::start();
    c.wait_all_live();
    c.set("a", Fault::eio_read());
    let st = c.wait_until(Duration::from_secs(30), "host a to fence itself", |st| {
        assert_healthy(st, &[1, 2]);
        fenced_at(&st[0]).is_some()
    });
    let a_fenced = fenced_at(&st[0]).unwrap();
    let st = c.wait_until(Duration::from_secs(30), "b and c to see slot 0 fenced or dead", |st| {
        assert_healthy(st, &[1, 2]);
        [1, 2]
            .iter()
            .all(|&i| peer(&st[i], 0).map(|p| p["state"] == "fenced" || p["state"] == "dead") == Some(true))
    });
    for i in [1, 2] {
        let gone = peer_changes(&st[i], 0, &["fenced", "dead"]);
        assert!(!gone.is_empty(), "{}: no event for slot 0 going away", VIEWS[i]);
        for (at, text) in gone {
            eprintln!("{}: '{text}' at {at} ms, {} ms after a fenced", VIEWS[i], at as i64 - a_fenced as i64);
            assert!(at > a_fenced, "{}: '{text}' at {at} ms, before a fenced at {a_fenced} ms", VIEWS[i]);
        }
    }
}

#[test]
fn latency_below_io_timeout_causes_no_fence() {
    if skip() {
        return;
    }
    let c = Cluster::start();
    c.wait_all_live();
    // io timeout = T/4 = 1000 ms; every read, write and fsync of view a takes 300 ms more.
    c.set("a", Fault::delay(300));
    let start = Instant::now();
    let a_seq_before = c.status(0)["self"]["sequence"].as_u64().unwrap_or(0);
    while start.elapsed() < Duration::from_millis(2 * BASE_TIMEOUT_MS) {
        let st = c.statuses();
        let check = std::panic::catch_unwind(|| {
            assert_healthy(&st, &[0, 1, 2]);
            for i in [1, 2] {
                assert_eq!(
                    peer(&st[i], 0).map(|p| p["state"].clone()),
                    Some("live".into()),
                    "{} on slot 0",
                    VIEWS[i]
                );
            }
        });
        if check.is_err() {
            panic!("invariant broken under latency{}", c.dump(&st));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = c.statuses();
    let report = c.dump(&st);
    assert_healthy(&st, &[0, 1, 2]);
    for i in 0..3 {
        assert!(events_with(&st[i], "-> dead").is_empty(), "{} saw a peer dead{report}", VIEWS[i]);
        assert!(events_with(&st[i], "self-fencing").is_empty(), "{} fenced{report}", VIEWS[i]);
        for j in (0..3).filter(|&j| j != i) {
            let p = peer(&st[i], j).expect("peer listed");
            assert_eq!(p["state"], "live", "{} sees slot {j}{report}", VIEWS[i]);
            assert!(p["dead_at_ms"].is_null(), "{} sees slot {j} dead{report}", VIEWS[i]);
        }
    }
    // a really was slowed down and kept heartbeating.
    let a = &st[0]["self"];
    let seq = a["sequence"].as_u64().unwrap_or(0);
    // (Latency histograms count from the daemon's start: max, not p50, shows the delay.)
    let write_max = a["latency"]["write"]["max_us"].as_u64().unwrap_or(0);
    let sweep_max = a["latency"]["sweep"]["max_us"].as_u64().unwrap_or(0);
    eprintln!(
        "a: {} heartbeats in {:?}, write max {write_max} us, sweep max {sweep_max} us, failed cycles {}",
        seq - a_seq_before,
        start.elapsed(),
        a["failed_cycles"]
    );
    assert!(seq > a_seq_before + 4, "a did not keep heartbeating under latency{report}");
    assert!(write_max >= 250_000, "the delay did not reach a's writes (max {write_max} us){report}");
    assert!(sweep_max >= 250_000, "the delay did not reach a's sweeps (max {sweep_max} us){report}");
    assert_eq!(a["failed_cycles"], 0, "a cycle of a failed under latency below the io timeout{report}");
}
