//! The daemon as real processes on real loop devices (small base timeout: T = 4 s).

mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T_MS: u64 = 4000;
const INTERVAL_MS: u64 = T_MS / 20;
const SAFETY_BOUND_MS: u64 = T_MS / 2 + INTERVAL_MS + T_MS / 4;

struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn status(&self) -> Option<Value> {
        let out = run(&["status", "--socket", self.socket.to_str().unwrap(), "--json"]);
        out.status.success().then(|| stdout_json(&out))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        let c = self.child.as_mut()?;
        while start.elapsed() < limit {
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster {
    lo: LoopDev,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(slots: u32) -> Cluster {
        let lo = LoopDev::new("32M", 512);
        let out =
            run(&["mkfs", lo.s(), "--slots", &slots.to_string(), "--timeout", "4s", "--cluster", "dtest"]);
        assert!(out.status.success(), "{}", stderr(&out));
        Cluster { lo, dir: tempfile::tempdir().unwrap() }
    }

    fn spawn(&self, slot: u32, name: &str, extra: &[&str]) -> Daemon {
        let socket = self.dir.path().join(format!("{name}-{slot}.sock"));
        let log = self.dir.path().join(format!("{name}-{slot}-{}.log", rand_suffix()));
        let child = Command::new(bin())
            .args(["daemon", "--device", self.lo.s(), "--slot", &slot.to_string(), "--name", name])
            .args(if extra.contains(&"--fence-action") {
                &[][..]
            } else {
                &["--fence-action", "log-only"][..]
            })
            .args(["--no-mlock", "--socket", socket.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child: Some(child), socket, log }
    }
}

fn rand_suffix() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 % 100_000
}

/// Polls `cond` on `d`'s status until it holds, or panics with the status and log.
fn wait_for(d: &Daemon, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        if let Some(s) = d.status() {
            if cond(&s) {
                return s;
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}\nlast status: {last:#?}\nlog:\n{}", d.log());
}

fn peer(s: &Value, slot: u64) -> Value {
    s["peers"].as_array().unwrap().iter().find(|p| p["slot"] == slot).cloned().unwrap_or(Value::Null)
}

fn all_live(d: &Daemon, peers: &[u64]) -> Value {
    wait_for(d, "all peers live", Duration::from_secs(30), |s| {
        s["self"]["state"] == "live" && peers.iter().all(|&p| peer(s, p)["state"] == "live")
    })
}

#[test]
fn three_daemons_kill_restart_leave() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new(8);
    let mut d: Vec<Daemon> = (0..3).map(|i| c.spawn(i, &format!("h{i}"), &[])).collect();
    let s0 = all_live(&d[0], &[1, 2]);
    all_live(&d[1], &[0, 2]);
    all_live(&d[2], &[0, 1]);
    assert_eq!(s0["self"]["generation"], 1);
    assert_eq!(peer(&s0, 1)["name"], "h1");
    assert!(s0["self"]["latency"]["write"]["count"].as_u64().unwrap() > 0);
    assert_eq!(s0["self"]["timing"]["host_dead_ms"], T_MS);

    // SIGKILL h2: both survivors mark it dead, never before the safety bound.
    let killed_at = Instant::now();
    d[2].signal(nix::sys::signal::Signal::SIGKILL);
    d[2].wait(Duration::from_secs(5));
    for (i, survivor) in d.iter().take(2).enumerate() {
        let s = wait_for(survivor, "slot 2 dead", Duration::from_secs(20), |s| peer(s, 2)["state"] == "dead");
        let seen_ms = killed_at.elapsed().as_millis() as u64;
        assert!(seen_ms >= SAFETY_BOUND_MS, "h{i} declared h2 dead {seen_ms} ms after the kill");
        let silent = peer(&s, 2)["silent_ms_at_death"].as_u64().unwrap();
        assert!(silent >= T_MS, "declared dead after only {silent} ms of silence");
        assert!(silent <= T_MS + 2 * INTERVAL_MS, "declared dead late: {silent} ms of silence");
    }

    // Restart h2: it waits out the stale record, then joins with generation 2; peers see the restart.
    d[2] = c.spawn(2, "h2", &[]);
    let s = wait_for(&d[2], "h2 live again", Duration::from_secs(30), |s| s["self"]["state"] == "live");
    assert_eq!(s["self"]["generation"], 2);
    let s0 = wait_for(&d[0], "slot 2 live with generation 2", Duration::from_secs(10), |s| {
        peer(s, 2)["state"] == "live" && peer(s, 2)["generation"] == 2
    });
    assert!(
        s0["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "peer_restarted" && e["slot"] == 2),
        "{s0:#}"
    );

    // SIGTERM h1: peers see `leaving` at once (well before the host-dead timeout), never dead.
    let term_at = Instant::now();
    d[1].signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d[1].wait(Duration::from_secs(10)), Some(0), "{}", d[1].log());
    let s = wait_for(&d[0], "slot 1 leaving", Duration::from_secs(10), |s| peer(s, 1)["state"] == "leaving");
    assert!(term_at.elapsed() < Duration::from_millis(T_MS), "leave took {:?}", term_at.elapsed());
    assert!(peer(&s, 1)["dead_at_ms"].is_null());
    // A restart after a clean leave acquires without the host-dead wait: joins with generation 2.
    d[1] = c.spawn(1, "h1", &[]);
    let s = wait_for(&d[1], "h1 live again", Duration::from_secs(10), |s| s["self"]["state"] == "live");
    assert_eq!(s["self"]["generation"], 2);
    assert!(!d[1].log().contains("watching it"), "{}", d[1].log());
    for mut x in d {
        x.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(x.wait(Duration::from_secs(10)), Some(0));
    }
}

#[test]
fn a_live_slot_is_refused_without_writing() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new(4);
    let d0 = c.spawn(0, "owner", &[]);
    let s = wait_for(&d0, "owner live", Duration::from_secs(20), |s| s["self"]["state"] == "live");
    let owner_uuid = s["self"]["host_uuid"].clone();
    let mut intruder = c.spawn(0, "intruder", &[]);
    let code = intruder.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{}", intruder.log());
    let log = intruder.log();
    assert!(log.contains("another host ('owner') is heartbeating in this slot"), "{log}");
    // The owner never noticed anything: still live, same incarnation, slot never written by the intruder.
    let s = d0.status().unwrap();
    assert_eq!(s["self"]["state"], "live");
    assert_eq!(s["self"]["host_uuid"], owner_uuid);
    assert_eq!(s["self"]["failed_cycles"], 0);
}

#[test]
fn two_daemons_forced_onto_one_slot_detect_it() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new(4);
    let a = c.spawn(1, "a", &["--unsafe-skip-acquire"]);
    let b = c.spawn(1, "b", &["--unsafe-skip-acquire"]);
    let fenced = |d: &Daemon| {
        d.status().is_some_and(|s| {
            matches!(s["self"]["state"].as_str(), Some("fenced" | "self_fencing"))
                && s["self"]["fence_reason"]["kind"]["reason"] == "foreign_write"
        })
    };
    let refused = |d: &Daemon| d.log().contains("wrote this slot while we were joining");
    let start = Instant::now();
    while !(fenced(&a) || fenced(&b) || refused(&a) || refused(&b)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nobody noticed the shared slot\n{}\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // At least one of them saw the other's write; whoever fenced never writes again.
    let combined = format!("{}{}", a.log(), b.log());
    assert!(
        combined.contains("another host is writing our slot") || combined.contains("while we were joining"),
        "{combined}"
    );
}

#[test]
fn fence_command_end_to_end() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new(4);
    let d0 = c.spawn(0, "h0", &[]);
    let d1 = c.spawn(1, "h1", &[]);
    all_live(&d0, &[1]);
    all_live(&d1, &[0]);
    let out = run(&["fence", c.lo.s(), "--slot", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d1.log());
    let v = stdout_json(&out);
    assert_eq!(v["outcome"], "fenced");
    assert_eq!(v["host_name"], "h1");
    let s = d1.status().unwrap();
    assert_eq!(s["self"]["state"], "fenced");
    assert_eq!(s["self"]["fence_reason"]["kind"]["reason"], "fence_request");
    let s = wait_for(&d0, "slot 1 fenced", Duration::from_secs(5), |s| peer(s, 1)["state"] == "fenced");
    assert_eq!(peer(&s, 1)["name"], "h1");
    // A second fence of the same slot: already fenced, nothing sent.
    let v = stdout_json(&run(&["fence", c.lo.s(), "--slot", "1", "--json"]));
    assert_eq!(v["outcome"], "already_gone");
    // Free and nonexistent slots are clear errors.
    let out = run(&["fence", c.lo.s(), "--slot", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("slot 3 is free"), "{}", stderr(&out));
    let out = run(&["fence", c.lo.s(), "--slot", "9"]);
    assert_eq!(out.status.code(), Some(2), "an out-of-range slot is bad input");
    assert!(stderr(&out).contains("slot 9 does not exist"), "{}", stderr(&out));
}

#[test]
fn bad_configs_are_refused_without_writing() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new(4);
    let before = c.lo.hash();
    let sock = c.dir.path().join("x.sock");
    let dev = c.lo.s();
    let conf = c.dir.path().join("bad.toml");
    std::fs::write(&conf, "device = \"/dev/null\"\nslott = 1\n").unwrap();
    let base = ["daemon", "--fence-action", "log-only", "--socket", sock.to_str().unwrap()];
    let long_name = "n".repeat(70);
    // A bad fence action in the file (no flag): refused before anything else happens.
    let conf2 = c.dir.path().join("bad2.toml");
    std::fs::write(&conf2, format!("device = \"{dev}\"\nslot = 0\nfence_action = \"shoot\"\n")).unwrap();
    let out = run(&["daemon", "--config", conf2.to_str().unwrap(), "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("fence_action: 'shoot' is not a fence action"), "{}", stderr(&out));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--slot", "0", "--name", "x"], "device is required"),
        (vec!["--device", dev, "--name", "x"], "slot is required"),
        (vec!["--device", dev, "--slot", "7", "--name", "x"], "slot: 7 does not exist"),
        (vec!["--device", dev, "--slot", "0", "--name", &long_name], "name:"),
        (vec!["--device", dev, "--slot", "0", "--timeout", "soon"], "timeout:"),
        (vec!["--device", dev, "--slot", "0", "--timeout", "10s"], "differs from the 4000 ms"),
        (vec!["--device", dev, "--slot", "0", "--watchdog", "/dev/nonexistent-watchdog"], "watchdog:"),
        (vec!["--config", conf.to_str().unwrap()], "unknown field"),
        (vec!["--config", "/nonexistent/diskbeat.toml"], "config file /nonexistent/diskbeat.toml"),
    ];
    for (args, needle) in cases {
        let mut full: Vec<&str> = base.to_vec();
        full.extend(args.iter());
        let out = run(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: expected '{needle}' in {}", stderr(&out));
    }
    assert_eq!(c.lo.hash(), before, "a refused config wrote to the device");
}

#[test]
fn status_without_a_daemon_is_a_clear_error() {
    let out = run(&["status", "--socket", "/nonexistent/diskbeat.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach the daemon"), "{}", stderr(&out));
}

/// The record offset of `slot` (read from the disk's own superblock).
fn record_offset(c: &Cluster, slot: u32) -> u64 {
    let sb = diskbeat::disk::read_superblock(
        &diskbeat::io::Device::open(c.lo.path(), diskbeat::io::Access::ReadOnly).unwrap(),
    )
    .unwrap();
    sb.layout.record_offset(slot)
}

/// Hole (issue 7): a second writer in a live host's slot, writing every 100 ms between the host's
/// own writes, went unnoticed. Any foreign content must fence the host within about an interval.
#[test]
fn a_foreign_writer_between_our_writes_is_detected() {
    if skip_unless_root() {
        return;
    }
    for garbage in [false, true] {
        let c = Cluster::new(4);
        let d = c.spawn(1, "victim", &[]);
        all_live(&d, &[]);
        let off = record_offset(&c, 1);
        let started = Instant::now();
        let mut fenced = None;
        while started.elapsed() < Duration::from_secs(10) {
            // A clone with a valid checksum and a higher sequence, or garbage.
            let mut bytes = read_direct(c.lo.path(), off, Some(512));
            if garbage {
                bytes.fill(0xa5);
            } else {
                let mut r = diskbeat::format::record::Record::decode(
                    &bytes,
                    &uuid::Uuid::from_slice(&bytes[16..32]).unwrap(),
                    1,
                )
                .expect("the victim's record");
                r.sequence += 1000;
                r.encode(&mut bytes);
            }
            write_direct(c.lo.path(), off, &bytes);
            if let Some(s) = d.status() {
                if s["self"]["state"] == "fenced" || s["self"]["state"] == "self_fencing" {
                    fenced = Some(s);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let s =
            fenced.unwrap_or_else(|| panic!("foreign writer (garbage {garbage}) not detected\n{}", d.log()));
        assert_eq!(s["self"]["fence_reason"]["kind"]["reason"], "foreign_write", "{s:#}");
    }
}

/// Hole (issue 7): after the superblock was zeroed (or the disk re-formatted) under running
/// daemons, they kept heartbeating with the old cluster UUID. A changed superblock is a lost disk.
#[test]
fn a_wiped_or_reformatted_superblock_fences_every_daemon() {
    if skip_unless_root() {
        return;
    }
    for reformat in [false, true] {
        let c = Cluster::new(4);
        let d0 = c.spawn(0, "h0", &[]);
        let d1 = c.spawn(1, "h1", &[]);
        all_live(&d0, &[1]);
        all_live(&d1, &[0]);
        let mut sb = read_direct(c.lo.path(), 0, Some(4096));
        if reformat {
            // Another cluster's superblock: a different UUID (checksum still valid).
            let mut parsed = diskbeat::format::superblock::Superblock::decode(&sb).unwrap();
            parsed.cluster_uuid = uuid::Uuid::new_v4();
            parsed.encode(&mut sb).expect("encode the other cluster's superblock");
        } else {
            sb.fill(0);
        }
        write_direct(c.lo.path(), 0, &sb);
        for d in [&d0, &d1] {
            let s = wait_for(d, "self-fence on the changed superblock", Duration::from_secs(5), |s| {
                s["self"]["state"] == "fenced"
            });
            assert_eq!(s["self"]["fence_reason"]["kind"]["reason"], "disk_changed", "{s:#}");
        }
    }
}

/// Hole (issue 7): a fence action that failed was reported as success, and the record said
/// `fenced`. Now: retried, shown on the disk, and `diskbeat fence` says it failed.
#[test]
fn a_failed_fence_action_is_reported_as_failed() {
    if skip_unless_root() {
        return;
    }
    for action in ["exec:exit 7", "exec:/nonexistent/fence-command"] {
        let c = Cluster::new(4);
        let mut d = c.spawn(1, "h1", &["--fence-action", action]);
        all_live(&d, &[]);
        let out = run(&["fence", c.lo.s(), "--slot", "1", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{action}: {}\n{}", stderr(&out), d.log());
        assert!(stderr(&out).contains("fence action FAILED"), "{}", stderr(&out));
        let s = wait_for(&d, "retries", Duration::from_secs(5), |s| {
            s["self"]["fence_failures"].as_u64() > Some(1)
        });
        assert_eq!(s["self"]["state"], "self_fencing", "{s:#}");
        let out = run(&["inspect", c.lo.s(), "--slot", "1", "--json"]);
        let v = stdout_json(&out);
        assert!(!v.to_string().contains("\"state\":\"fenced\""), "{v:#}");
        assert!(v.to_string().contains("\"fence_failed\""), "the record says the fence failed: {v:#}");
        // A stop now exits with the fence-failed status.
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(d.wait(Duration::from_secs(10)), Some(4), "{}", d.log());
    }
}

/// Issue 7: the daemon must never die quietly with VMs running. A panic runs the fence action
/// first, then aborts (never unwinds into a half-working loop).
#[test]
fn a_panicking_daemon_fences_before_it_dies() {
    if skip_unless_root() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let c = Cluster::new(4);
    let marker = c.dir.path().join("fenced");
    let action = format!("exec:touch {}", marker.display());
    let socket = c.dir.path().join("p.sock");
    let log = c.dir.path().join("p.log");
    let status = Command::new(bin())
        .args(["daemon", "--device", c.lo.s(), "--slot", "2", "--name", "panicky", "--no-mlock"])
        .args(["--fence-action", &action, "--socket", socket.to_str().unwrap()])
        .env("DISKBEAT_TEST_PANIC_WHEN_LIVE", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{log}");
    assert!(marker.exists(), "the fence action did not run before the abort\n{log}");
    assert!(log.contains("panicked"), "{log}");
}

fn hears(s: &Value, slot: u64) -> bool {
    s["network"]["hears"].as_array().is_some_and(|a| a.iter().any(|x| x == slot))
}

fn drops(s: &Value, reason: &str) -> u64 {
    s["network"]["drops"][reason].as_u64().unwrap_or(0)
}

/// Two daemons heartbeat over loopback with the key from the disk, find each other's addresses
/// on the disk, keep hearing each other through `diskbeat rekey` (the daemons follow the keyring
/// sector read with every sweep), and a third daemon with a foreign `--key-file` is never heard:
/// its packets are counted as bad MACs.
#[test]
fn network_heartbeats_survive_a_rekey_and_refuse_a_foreign_key() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new(4);
    let base = 20_000 + rand_suffix() % 20_000;
    let addr = |i: u64| format!("127.0.0.1:{}", base + i);
    let a0 = addr(0);
    let a1 = addr(1);
    let d0 = c.spawn(0, "n0", &["--hb-addr", &a0]);
    let d1 = c.spawn(1, "n1", &["--hb-addr", &a1]);
    for (d, other) in [(&d0, 1), (&d1, 0)] {
        wait_for(d, "hearing the peer", Duration::from_secs(30), |s| {
            s["self"]["state"] == "live" && hears(s, other)
        });
    }
    let out = run(&["rekey", c.lo.s(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Through the rotation: never unheard (the net timeout is 2 s; we watch 3 s).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for (d, other) in [(&d0, 1), (&d1, 0)] {
            let s = d.status().expect("status");
            let heard =
                peer(&s, other)["network"]["networks"][0]["last_heard_ms_ago"].as_u64().unwrap_or(u64::MAX);
            assert!(heard < 1000, "slot {other} unheard for {heard} ms after the rekey\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d0.log().contains("cluster keyring loaded from the disk"), "{}", d0.log());
    // A host with another key: its packets are forged as far as the pool is concerned.
    let key_file = c.dir.path().join("other.key");
    std::fs::write(&key_file, format!("current 1 {}\n", "ab".repeat(32))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let a2 = addr(2);
    let _d2 = c.spawn(2, "n2", &["--hb-addr", &a2, "--key-file", key_file.to_str().unwrap()]);
    let s = wait_for(&d0, "the foreign key's packets dropped", Duration::from_secs(30), |s| {
        drops(s, "bad_mac") + drops(s, "unknown_key") > 3
    });
    assert!(!hears(&s, 2), "heard a host signing with another key: {s:#}");
    assert!(hears(&s, 1));
}
