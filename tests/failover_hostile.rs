//! Issue 15, with real daemons: failover exactly once when VM drivers lie or fail and disks hold
//! garbage. The pool of tests/failover.rs (tests/common/procs_pool.rs: daemons over a loop device,
//! the exec driver over tools/vm-hook-procs.sh whose VMs are processes, emulated watchdogs,
//! T = 4 s); the hook's test-only markers (NAME.fail-start, NAME.fail-destroy, NAME.hidden,
//! NAME.absent) and call log (DISKBEAT_HOOK_LOG) make it hostile on purpose.
//!
//! No timed assertion about speed beyond the product's promise, stated once ([`restart_bound`]);
//! everything else polls the status JSON, the hook state directories and the hook call logs.

mod common;
#[path = "common/procs_pool.rs"]
mod procs_pool;
use common::*;
use diskbeat::disk::{Disk, ExtentRead};
use diskbeat::format::extent::{kind, Payload};
use diskbeat::format::host_state::{HostCapacity, HostState, VmEntry, VmState};
use diskbeat::io::{Access, EngineKind};
use procs_pool::*;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The pool's timing (T = 4 s): host-dead time T, inventory every io timeout (T/4, at least 500 ms).
fn timing() -> diskbeat::timing::Timing {
    diskbeat::timing::Timing::from_base(T_MS as u32).unwrap()
}

fn inventory_interval() -> Duration {
    Duration::from_millis(u64::from(timing().io_timeout_ms).max(500))
}

/// The product's promise for a failover (docs/FAILOVER.md, "Time to recover": detection after the
/// host-dead time, then about two heartbeat intervals and the start), stated generously: a
/// proven-gone host's protected VMs run again within the host-dead time + 3 T of its death.
fn restart_bound() -> Duration {
    Duration::from_millis(u64::from(timing().host_dead_ms) + 3 * T_MS)
}

/// Every string in a JSON value, with its path (`vms.own[0].name`).
fn strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| strings(x, &format!("{path}[{i}]"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| strings(x, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// Why status says `vm` is not running, if it does: a text anywhere under `vms` that mentions the
/// VM (and says more than its name), or a non-empty text field beside `"name": vm` in an object
/// (`own`, `held`, `missing`...; e.g. a `failure` or `why` field).
fn reason_for(vms: &Value, vm: &str) -> Option<String> {
    let mut all = Vec::new();
    strings(vms, "vms", &mut all);
    if let Some((path, s)) = all.iter().find(|(_, s)| s.contains(vm) && s.trim() != vm) {
        return Some(format!("{path}: {s}"));
    }
    fn objects<'a>(v: &'a Value, out: &mut Vec<&'a serde_json::Map<String, Value>>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| objects(x, out)),
            Value::Object(o) => {
                out.push(o);
                o.values().for_each(|x| objects(x, out));
            }
            _ => {}
        }
    }
    let mut objs = Vec::new();
    objects(vms, &mut objs);
    objs.iter().filter(|o| o.get("name").and_then(Value::as_str) == Some(vm)).find_map(|o| {
        o.iter()
            .filter(|(k, _)| *k != "name" && *k != "state")
            .find_map(|(k, v)| v.as_str().filter(|s| !s.trim().is_empty()).map(|s| format!("{k}: {s}")))
    })
}

/// Words that say an extent could not be used.
const UNREADABLE: [&str; 8] = [
    "unreadable",
    "cannot be read",
    "can't be read",
    "not readable",
    "corrupt",
    "invalid",
    "undecodable",
    "garbage",
];

/// Where status says slot `slot`'s extent is unreadable: a text naming `slot N` with one of
/// [`UNREADABLE`], or such a text in an object whose `slot` is N (e.g. a `held` entry).
fn says_unreadable(vms: &Value, slot: u32) -> Option<String> {
    let unreadable = |s: &str| {
        let s = s.to_lowercase();
        UNREADABLE.iter().any(|w| s.contains(w))
    };
    let mut all = Vec::new();
    strings(vms, "vms", &mut all);
    if let Some((path, s)) = all.iter().find(|(_, s)| s.contains(&format!("slot {slot}")) && unreadable(s)) {
        return Some(format!("{path}: {s}"));
    }
    let mut found = None;
    fn walk(v: &Value, slot: u32, unreadable: &dyn Fn(&str) -> bool, found: &mut Option<String>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, slot, unreadable, found)),
            Value::Object(o) => {
                if o.get("slot").and_then(Value::as_u64) == Some(u64::from(slot)) {
                    let mut texts = Vec::new();
                    strings(v, "", &mut texts);
                    if let Some((_, s)) = texts.iter().find(|(_, s)| unreadable(s)) {
                        found.get_or_insert(format!("{}: {s}", Value::Object(o.clone())));
                    }
                }
                o.values().for_each(|x| walk(x, slot, unreadable, found));
            }
            _ => {}
        }
    }
    walk(vms, slot, &unreadable, &mut found);
    found
}

/// One hook call from a DISKBEAT_HOOK_LOG file: (Unix time in seconds, arguments).
fn hook_calls(log: &Path) -> Vec<(f64, Vec<String>)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            let t = it.next()?.parse().ok()?;
            Some((t, it.map(str::to_string).collect()))
        })
        .collect()
}

/// The last `n` lines of a file (a daemon log in a failure message).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `vms` part of each host's status, as pretty JSON (`null`: it does not answer).
fn vms_json(p: &Pool) -> String {
    let all: Vec<Value> = p.vms_status().into_iter().map(|v| v.unwrap_or(Value::Null)).collect();
    serde_json::to_string_pretty(&all).unwrap()
}

/// One VM's entry in a slot's extent: (slot, state, claim).
type DiskEntry = (u32, VmState, u64);

/// Every entry for `uuid` in the extents on the disk.
fn entries_on_disk(dev: &Path, uuid: uuid::Uuid) -> Vec<DiskEntry> {
    let mut disk = Disk::open(dev, Access::ReadOnly, EngineKind::Sync, None).unwrap();
    let mut buf = vec![0u8; disk.extent_payload_cap()];
    let mut out = Vec::new();
    for slot in 0..disk.superblock().layout.slot_count {
        if let Ok(ExtentRead::Payload(h)) = disk.read_extent(slot, &mut buf, Duration::from_secs(5)) {
            if let Ok(Payload::HostState(st)) = Payload::decode(&h, &buf[..h.payload_len as usize]) {
                out.extend(st.vms.iter().filter(|e| e.uuid == uuid).map(|e| (slot, e.state, e.claim)));
            }
        }
    }
    out
}

/// Slot `slot`'s data extent on the device: (offset, size), both copies.
fn extent_region(dev: &Path, slot: u32) -> (u64, u64) {
    let disk = Disk::open(dev, Access::ReadOnly, EngineKind::Sync, None).unwrap();
    let l = disk.superblock().layout;
    (l.extent_offset(slot), l.extent_size)
}

fn touch(path: &Path) {
    std::fs::write(path, "").unwrap();
}

/// Issue 15: the target's hypervisor can neither start nor stop one VM of a proven-gone host
/// (tools/vm-hook-procs.sh: NAME.fail-start, NAME.fail-destroy). The host's other protected VMs,
/// assigned to the same target, in the same wave and in a later one, still run again within the
/// promise; the failed VM's destroy is retried with backoff, not in a loop; status says why it
/// does not run.
#[test]
fn a_destroy_that_keeps_failing_does_not_stop_other_restarts() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(2);
    p.log_hook_calls = true;
    // Host 1's VMs; host 0 is the only target. `wedged` and p1 start in the first wave (order 1),
    // p2 in the next (unordered).
    p.vm(1, "wedged", 256, "protect", Some(1));
    p.vm(1, "p1", 256, "protect", Some(1));
    p.vm(1, "p2", 256, "protect", None);
    for i in 0..2 {
        p.spawn(i, 4096, true);
    }
    let checker = p.start_checker();
    p.wait("all live and published", Duration::from_secs(30), |p| p.all_live() && published(p, 1, 3));
    touch(&p.hosts[0].state.join("wedged.fail-start"));
    touch(&p.hosts[0].state.join("wedged.fail-destroy"));
    let killed = Instant::now();
    p.hosts[1].kill();
    let bound = restart_bound();
    let log = p.hosts[0].hook_log.clone();
    let destroys = |log: &Path| -> Vec<f64> {
        hook_calls(log)
            .into_iter()
            .filter(|(_, a)| a[..] == ["destroy", "--", "wedged"])
            .map(|(t, _)| t)
            .collect()
    };
    let mut problems: Vec<String> = Vec::new();

    // 1. The other VMs run again on host 0, in the usual time.
    let others_up = |p: &Pool| {
        let w = p.where_runs();
        ["p1", "p2"].iter().all(|n| w.get(*n).is_some_and(|h| h == &vec![0]))
    };
    while !others_up(&p) && killed.elapsed() < bound {
        p.assert_never_twice();
        std::thread::sleep(Duration::from_millis(100));
    }
    if !others_up(&p) {
        problems.push(format!(
            "p1 and p2 (host 1's other protected VMs, assigned to host 0) were expected to run on host 0 \
             within {bound:?} of host 1's death (host-dead time + 3 T); they run: {:?} \
             (name -> hosts; p1 shares the failing VM's wave, p2 is in the next wave)",
            p.where_runs()
        ));
    }

    // 2. The failing destroy is retried with backoff: at most one call per 0.5 s on average over
    // 20 s from the first destroy (the start failed, so the VM may have half-started).
    let start = Instant::now();
    while destroys(&log).is_empty() && start.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100));
    }
    let window = Duration::from_secs(20);
    match destroys(&log).first().copied() {
        None => problems.push(format!(
            "host 0 never called `destroy -- wedged` after its start failed (within {bound:?}); hook calls \
             for wedged: {:?}",
            hook_calls(&log).into_iter().filter(|(_, a)| a.iter().any(|x| x == "wedged")).collect::<Vec<_>>()
        )),
        Some(first) => {
            std::thread::sleep(window);
            let calls = destroys(&log);
            let in_window = calls.iter().filter(|&&t| t <= first + window.as_secs_f64()).count();
            let most = 1 + (window.as_millis() / 500) as usize;
            if in_window > most {
                problems.push(format!(
                    "`destroy -- wedged` was called {in_window} times in the {window:?} after the first \
                     (expected at most {most}: one per 0.5 s on average, retried with backoff); {} calls \
                     so far",
                    calls.len()
                ));
            }
            // Still held (the destroy never succeeded): it must have been retried. (Settled by
            // positive evidence instead, e.g. a lookup that finds it not defined, it need not be.)
            let holding = p.hosts[0].status().is_some_and(|s| {
                s["vms"]["own"].as_array().is_some_and(|o| {
                    o.iter().any(|e| {
                        e["name"] == "wedged" && (e["state"] == "starting" || e["state"] == "running")
                    })
                })
            });
            if holding && in_window < 2 {
                problems.push(format!(
                    "wedged is still held on host 0 but its failed destroy was not retried: {in_window} \
                     destroy calls in {window:?}"
                ));
            }
        }
    }

    // 3. Status says why `wedged` does not run.
    let vms = p.hosts[0].status().map(|s| s["vms"].clone()).unwrap_or(Value::Null);
    let why = reason_for(&vms, "wedged");
    if why.is_none() {
        problems.push(
            "host 0's `status --json` does not say why wedged is not running (no text under `vms` \
             mentioning it, no reason field beside its name)"
                .to_string(),
        );
    }
    // Nothing else happened meanwhile: wedged never ran, p1 and p2 run once.
    p.assert_never_twice();
    let w = p.where_runs();
    if w.contains_key("wedged") {
        problems.push(format!("wedged runs although every start of it fails: {w:?}"));
    }
    p.stop.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}\nreason in status: {why:?}\nVMs running: {w:?}\nhook calls on host 0: {} \
         (destroy -- wedged: {})\nhost 0 status vms: {vms:#}\nhost 0 log (tail):\n{}",
        problems.len(),
        problems.join("\n- "),
        hook_calls(&log).len(),
        destroys(&log).len(),
        tail(&p.hosts[0].log, 40),
    );
}

/// Issue 15: two hosts die (watchdog armed); one's data extent is overwritten, both copies, with
/// random bytes before the survivors read its final state. The other dead host's protected VMs
/// run again within the promise; the garbage host's VMs are held (never restarted: nobody knows
/// what it held last), and status says so, and why.
#[test]
fn a_gone_hosts_extent_of_random_bytes_holds_only_its_vms() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(4);
    p.vm(2, "p1", 256, "protect", None);
    p.vm(2, "p2", 256, "protect", Some(1));
    p.vm(3, "g1", 256, "protect", None);
    p.vm(3, "g2", 256, "protect", Some(1));
    for i in 0..4 {
        p.spawn(i, 4096, true);
    }
    let checker = p.start_checker();
    p.wait("all live and published", Duration::from_secs(30), |p| {
        p.all_live() && published(p, 2, 2) && published(p, 3, 2)
    });
    let (offset, size) = extent_region(p.lo.path(), 3);
    let mut garbage = vec![0u8; size as usize];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut garbage).unwrap();
    let killed = Instant::now();
    p.hosts[2].kill();
    p.hosts[3].kill();
    // Long before anyone sees them dead (host-dead time T): the final read of slot 3 gets garbage.
    write_direct(p.lo.path(), offset, &garbage);
    assert!(read_direct(p.lo.path(), offset, Some(size as usize)) == garbage, "the garbage is on the device");
    let written_ms = killed.elapsed().as_millis();
    let out = run(&["inspect", p.lo.s(), "--slot", "3", "--sample", "0", "--json"]);
    let inspected = stdout_json(&out);
    let bound = restart_bound();
    let mut problems: Vec<String> = Vec::new();
    let mut held_restarted: Option<String> = None;
    let mut why: Option<String> = None;
    let up = |p: &Pool| {
        let w = p.where_runs();
        ["p1", "p2"].iter().all(|n| w.get(*n).is_some_and(|h| h.len() == 1 && h[0] < 2))
    };
    let watch_held = |p: &Pool, held_restarted: &mut Option<String>| {
        let w = p.where_runs();
        if ["g1", "g2"].iter().any(|n| w.contains_key(*n)) && held_restarted.is_none() {
            *held_restarted = Some(format!("at {:?} after the kill: {w:?}", killed.elapsed()));
        }
    };
    while killed.elapsed() < bound && !(up(&p) && why.is_some()) {
        p.assert_never_twice();
        watch_held(&p, &mut held_restarted);
        if why.is_none() {
            why = (0..2).find_map(|i| {
                p.hosts[i]
                    .status()
                    .and_then(|s| says_unreadable(&s["vms"], 3))
                    .map(|w| format!("slot {i}: {w}"))
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !up(&p) {
        problems.push(format!(
            "p1 and p2 (slot 2's protected VMs; slot 2's extent is intact) were expected to run again on \
             slot 0 or 1 within {bound:?} of the kill (host-dead time + 3 T); they run: {:?}",
            p.where_runs()
        ));
    }
    if why.is_none() {
        problems.push(format!(
            "no survivor's `status --json` says slot 3's VMs are held because its extent is unreadable \
             (a text naming slot 3 with one of {UNREADABLE:?}, or such a text in an object with \"slot\": 3)"
        ));
    }
    // Held for good: g1 and g2 never run again (watched 2 T more).
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_millis(2 * T_MS) {
        p.assert_never_twice();
        watch_held(&p, &mut held_restarted);
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(h) = &held_restarted {
        problems.push(format!("g1 or g2 (slot 3's VMs, whose last state is unknown) ran again: {h}"));
    }
    p.stop.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}\n(garbage written {written_ms} ms after the kill; `inspect --slot 3`: \
         extent {})\nVMs running: {:?}\nvms status of each slot: {}\nslot 0 log (tail):\n{}",
        problems.len(),
        problems.join("\n- "),
        inspected["slots"][0]["extent"],
        p.where_runs(),
        vms_json(&p),
        tail(&p.hosts[0].log, 30),
    );
}

/// Issue 15: names from an extent are hostile input. A VM named `--help` (a valid name) is
/// published, restarted elsewhere, and reaches the hook only as a name, after `--`. A VM named
/// with a terminal escape cannot be published (the encoder refuses control characters), so its
/// extent is crafted by hand: the decoder refuses it, and `inspect`, `plan --device`, `status`
/// (text and JSON) and the daemon logs never print a raw ESC byte.
#[test]
fn hostile_names_from_an_extent_are_never_options_and_always_escaped() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(4);
    p.log_hook_calls = true;
    p.vm(2, "--help", 256, "protect", None);
    p.vm(3, "s3", 256, "protect", None);
    for i in 0..4 {
        // Slot 3 without a watchdog: its VMs stay held when it dies, so its extent never holds up
        // a restart (a claim round reads it only while a start is pending: phase 1 is done first).
        p.spawn(i, 4096, i != 3);
    }
    let checker = p.start_checker();
    p.wait("all live and published", Duration::from_secs(30), |p| {
        p.all_live() && published(p, 2, 1) && published(p, 3, 1)
    });

    // Phase 1: `--help` is restarted by the survivors' hooks, as a name.
    p.hosts[2].kill();
    p.wait("--help restarted on slot 0 or 1", restart_bound(), |p| {
        p.where_runs().get("--help").is_some_and(|h| h.len() == 1 && h[0] < 2)
    });
    let x = p.where_runs()["--help"][0];
    let calls: Vec<(usize, Vec<String>)> =
        (0..4).flat_map(|i| hook_calls(&p.hosts[i].hook_log).into_iter().map(move |(_, a)| (i, a))).collect();
    assert!(
        calls.iter().any(|(i, a)| *i == x && a[..] == ["start", "--", "--help"]),
        "slot {x}'s hook got `start -- --help`: {calls:?}"
    );
    for (i, a) in &calls {
        if let Some(at) = a.iter().position(|s| s == "--help") {
            assert!(
                at >= 2
                    && a[at - 1] == "--"
                    && at == a.len() - 1
                    && !a[..at - 1].iter().any(|s| s.starts_with('-')),
                "slot {i}'s hook got `--help` where an option parser would take it for an option: {a:?}"
            );
        }
    }
    // The hook runs the VM before its start call returns: the state says `running` once it has.
    p.wait("--help published running where it runs", restart_bound(), |p| {
        p.hosts[x].status().is_some_and(|st| {
            st["vms"]["own"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["name"] == "--help" && e["state"] == "running"))
        })
    });

    // Phase 2: slot 3 dies; before anyone reads its final state, its extent is replaced by one
    // naming a VM "\x1b[31mred" (a terminal escape), crafted with the library's encoder on a
    // placeholder name and patched, since the encoder refuses control characters.
    // The crafted extent names its writer as the real one did (format 1.6): the hostile payload,
    // not a foreign writer, is what is tested here.
    let (writer, generation) = {
        let mut disk = Disk::open(p.lo.path(), Access::ReadOnly, EngineKind::Sync, None).unwrap();
        let h = disk.read_extent_header(3, Duration::from_secs(5)).unwrap().unwrap();
        (h.writer_uuid().expect("a 1.6 header names its writer"), h.generation)
    };
    let vm = |name: &str, claim| VmEntry {
        uuid: uuid::Uuid::new_v4(),
        name: name.to_string(),
        memory_mib: 64,
        vcpus: 1,
        state: VmState::Running,
        protection: diskbeat::planner::Protection::Protect,
        order: None,
        anti_affinity: None,
        claim,
        attempt: 0,
        failure: None,
        definition: b"memory_mib=64 vcpus=1".to_vec(),
    };
    let crafted = HostState {
        hb_addrs: vec![],
        capacity: Some(HostCapacity { memory_mib: 4096, vcpus: 4, accepts_restarts: true }),
        vms: vec![vm("s3", 1), vm("X[31mred", 1)],
        plan: None,
    };
    let mut refused = crafted.clone();
    refused.vms[1].name = "\u{1b}[31mred".into();
    assert!(refused.encode(&mut Vec::new()).is_err(), "the encoder refuses a control character in a name");
    let mut payload = Vec::new();
    crafted.encode(&mut payload).unwrap();
    let at =
        payload.windows(8).position(|w| w == b"X[31mred").expect("the placeholder name is in the payload");
    payload[at] = 0x1b;
    let decoded = HostState::decode(&payload, diskbeat::format::VERSION_MINOR);
    assert!(decoded.is_err(), "the decoder refuses a control character in a name: {decoded:?}");
    p.hosts[3].kill();
    {
        let mut disk = Disk::open(p.lo.path(), Access::ReadWrite, EngineKind::Sync, None).unwrap();
        disk.write_extent(3, kind::HOST_STATE, writer, generation, &payload, Duration::from_secs(5)).unwrap();
    }
    // The survivors see slot 3 dead and read its final extent (the crafted one), then some more.
    p.wait("slot 3 dead for slots 0 and 1", Duration::from_millis(3 * T_MS), |p| {
        (0..2).all(|i| {
            p.hosts[i].status().is_some_and(|s| {
                s["peers"].as_array().unwrap().iter().any(|x| x["slot"] == 3 && x["state"] == "dead")
            })
        })
    });
    std::thread::sleep(3 * inventory_interval());

    let dev = p.lo.s();
    let mut outputs: Vec<(String, std::process::Output)> = Vec::new();
    let mut cli = |args: &[&str]| outputs.push((args.join(" "), run(args)));
    cli(&["inspect", dev, "--sample", "0"]);
    cli(&["inspect", dev, "--sample", "0", "--json"]);
    cli(&["inspect", dev, "--sample", "0", "--slot", "3"]);
    cli(&["inspect", dev, "--sample", "0", "--slot", "3", "--json"]);
    cli(&["plan", "--device", dev]);
    cli(&["plan", "--device", dev, "--json"]);
    for i in 0..2 {
        let socket = p.hosts[i].socket.to_str().unwrap();
        cli(&["status", "--socket", socket]);
        cli(&["status", "--socket", socket, "--all"]);
        cli(&["status", "--socket", socket, "--json"]);
    }
    for (what, out) in &outputs {
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes.contains(&0x1b),
                "`diskbeat {what}` printed a raw ESC byte on {stream}:\n{}",
                String::from_utf8_lossy(bytes).escape_debug()
            );
        }
    }
    // What was read is the crafted extent, refused.
    let inspected = &outputs.iter().find(|(w, _)| w.ends_with("--slot 3 --json")).unwrap().1;
    let extent = stdout_json(inspected)["slots"][0]["extent"].clone();
    assert_eq!(
        extent["payload"], "invalid",
        "inspect --slot 3 reads the crafted payload and refuses it: {extent:#}"
    );
    for h in &p.hosts {
        let log = std::fs::read(&h.log).unwrap_or_default();
        assert!(!log.contains(&0x1b), "slot {}'s daemon log has a raw ESC byte", h.slot);
        let hooks = std::fs::read(&h.hook_log).unwrap_or_default();
        assert!(!hooks.contains(&0x1b), "slot {}'s hook got a raw ESC byte", h.slot);
    }
    p.stop.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
}

/// Issue 15: an administrator starts a protected VM by hand on a second host (same UUID, same
/// definition), so it runs twice. The copy on the host whose entry does not hold the VM's highest
/// claim (on a tie: the higher slot, as the claim rule orders holders) is destroyed within a few
/// inventory intervals; the copy with the highest claim keeps running all along (polled every
/// 100 ms).
#[test]
fn two_copies_started_by_hand_lose_the_lower_claim() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(2);
    let uuid = p.vm(0, "p1", 256, "protect", None);
    for i in 0..2 {
        p.spawn(i, 4096, true);
    }
    p.wait("all live and published", Duration::from_secs(30), |p| {
        p.all_live() && published(p, 0, 1) && published(p, 1, 0)
    });
    let request = std::fs::read_to_string(p.hosts[0].state.join("p1.json")).unwrap();
    let protection = std::fs::read_to_string(p.hosts[0].state.join("p1.protect")).unwrap();
    hook_call(&p.hosts[1].state, "start", "p1", request.trim());
    hook_call(&p.hosts[1].state, "protect", "p1", protection.trim());
    let started = Instant::now();
    assert_eq!(p.where_runs().get("p1"), Some(&vec![0, 1]), "p1 runs on both hosts now");

    // Poll every 100 ms: where p1 runs and, while both copies run, the entries on the disk.
    let publish_bound = Duration::from_millis(2 * T_MS);
    let settle_bound = Duration::from_millis(3 * T_MS);
    let mut timeline: Vec<(u128, Vec<usize>)> = Vec::new();
    // Since when both copies are published `running`, and the entries last read while both ran
    // (the claims the decision is made on).
    let mut both_since: Option<Instant> = None;
    let mut last_both: Vec<DiskEntry> = Vec::new();
    // One copy left: when, and where.
    let mut settled: Option<(Instant, usize)> = None;
    let fail = |p: &Pool, what: String, timeline: &[(u128, Vec<usize>)]| -> ! {
        panic!(
            "{what}\np1 ran on (ms after the second copy started -> hosts): {timeline:?}\nentries on the \
             disk now (slot, state, claim): {:?}\nvms status of each slot: {}\n{}",
            entries_on_disk(p.lo.path(), uuid),
            vms_json(p),
            p.logs()
        )
    };
    // The holder of the highest claim: highest claim, then lowest slot (the claim rule's order).
    let top = |entries: &[DiskEntry]| {
        entries
            .iter()
            .filter(|(_, s, _)| matches!(s, VmState::Running | VmState::Starting))
            .max_by_key(|(slot, _, claim)| (*claim, std::cmp::Reverse(*slot)))
            .map(|e| e.0 as usize)
    };
    loop {
        let now = p.where_runs().get("p1").cloned().unwrap_or_default();
        if timeline.last().is_none_or(|(_, w)| *w != now) {
            timeline.push((started.elapsed().as_millis(), now.clone()));
        }
        if now.is_empty() {
            fail(&p, "p1 runs nowhere: both copies were stopped".into(), &timeline);
        }
        if now.len() == 2 {
            let e = entries_on_disk(p.lo.path(), uuid);
            if e.iter().filter(|(_, s, _)| *s == VmState::Running).count() == 2 {
                both_since.get_or_insert_with(Instant::now);
                last_both = e;
            } else if both_since.is_none() && started.elapsed() > publish_bound {
                fail(
                    &p,
                    format!("after {publish_bound:?}, the two copies of p1 are not both published running"),
                    &timeline,
                );
            }
        }
        if now.len() == 1 && settled.is_none() {
            settled = Some((Instant::now(), now[0]));
            // The survivor holds the highest claim: as last published while both ran, or (if one
            // copy was stopped before both were published) as the disk says now.
            let entries =
                if last_both.is_empty() { entries_on_disk(p.lo.path(), uuid) } else { last_both.clone() };
            if top(&entries) != Some(now[0]) {
                fail(
                    &p,
                    format!(
                        "the copy left running is on slot {}, but the highest claim was slot {:?}'s \
                         (entries (slot, state, claim): {entries:?})",
                        now[0],
                        top(&entries)
                    ),
                    &timeline,
                );
            }
        }
        if let Some((s, winner)) = settled {
            // Stays so: the winner keeps running, the loser does not come back.
            if now != [winner] {
                fail(
                    &p,
                    format!("p1's copies changed again after one was destroyed (kept: slot {winner})"),
                    &timeline,
                );
            }
            if s.elapsed() > Duration::from_millis(2 * T_MS) {
                break;
            }
        }
        if let (None, Some(t)) = (settled, both_since) {
            if t.elapsed() > settle_bound {
                let winner = top(&last_both).unwrap_or(0);
                fail(
                    &p,
                    format!(
                        "p1 still runs on both hosts {settle_bound:?} (3 T, {} inventory intervals) after \
                         both copies were published running (entries (slot, state, claim): {last_both:?}); \
                         expected the copy on slot {} (the lower claim; on equal claims the higher slot) \
                         destroyed and slot {winner}'s kept running",
                        settle_bound.as_millis() / inventory_interval().as_millis(),
                        1 - winner
                    ),
                    &timeline,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 15 (and issue "positive evidence only"): a VM restarted on host x after its host died;
/// x's hook then hides it from its inventory (NAME.hidden), and later also answers its lookup by
/// UUID with "absent" while it runs (NAME.absent: a driver that lost track of it). Polled every
/// 100 ms (and by the pool's 50 ms checker): it never runs on two hosts, and no host starts it
/// again. (tests/failover.rs's `a_vm_missing_from_its_new_hosts_inventory_is_held_not_restarted_again`
/// covers the hidden VM with a truthful lookup and the status it shows.)
#[test]
fn a_hook_that_hides_a_restarted_vm_never_gets_a_second_copy() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(3);
    p.log_hook_calls = true;
    let uuid = p.vm(2, "p1", 256, "protect", None);
    for i in 0..3 {
        p.spawn(i, 4096, true);
    }
    let checker = p.start_checker();
    p.wait("all live and published", Duration::from_secs(30), |p| p.all_live() && published(p, 2, 1));
    p.hosts[2].kill();
    p.wait("p1 restarted", restart_bound(), |p| {
        p.where_runs().get("p1").is_some_and(|h| h.len() == 1 && h[0] != 2)
    });
    let x = p.where_runs()["p1"][0];
    let starts =
        |p: &Pool| p.logs().lines().filter(|l| l.contains("starting a VM") && l.contains("vm=p1")).count();
    let before = starts(&p);
    let watch = |p: &Pool, what: &str| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(3 * T_MS) {
            p.assert_never_twice();
            let w = p.where_runs();
            assert_eq!(
                w.get("p1"),
                Some(&vec![x]),
                "{what}: p1 must run exactly on slot {x}, as restarted ({:?} in)\nvms status of each slot: {}\n{}",
                t.elapsed(),
                vms_json(p),
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(starts(p), before, "{what}: no failover start of p1 since it was hidden\n{}", p.logs());
    };
    touch(&p.hosts[x].state.join("p1.hidden"));
    watch(&p, "hidden from the inventory, found by lookup");
    let lied_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    touch(&p.hosts[x].state.join("p1.absent"));
    watch(&p, "hidden from the inventory, lookup says absent");
    // The lie was told: x's daemon looked p1 up after its hook started answering "absent".
    let lookups = hook_calls(&p.hosts[x].hook_log)
        .into_iter()
        .filter(|(t, a)| *t > lied_at && a[..] == ["lookup", "--", &uuid.to_string()])
        .count();
    assert!(lookups > 0, "slot {x}'s daemon never looked p1 up after the hook began to lie");
    p.stop.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
}

/// VmHWM (peak resident set) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Issue "hostile input" item 4 at the daemon level (tests/vm_exec.rs checks the driver alone): a
/// hook that prints 300 MB on every `inventory` leaves the daemon's peak memory under 100 MB, status
/// shows the driver error, and what the host published stays as it was.
#[test]
fn a_hook_printing_300_mb_on_inventory_leaves_the_daemon_small() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pool::new(1);
    let wrapper = p.dir.path().join("flood-hook.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# The procs hook, except that `inventory` floods once $DISKBEAT_HOOK_STATE/flood exists.\n\
             if [ \"$1\" = inventory ] && [ -e \"$DISKBEAT_HOOK_STATE/flood\" ]; then exec head -c 300000000 /dev/zero; fi\n\
             exec {} \"$@\"\n",
            hook()
        ),
    )
    .unwrap();
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&wrapper, mode).unwrap();
    p.vm(0, "p1", 256, "protect", None);
    p.spawn_with_hook(0, 4096, false, wrapper.to_str().unwrap());
    p.wait("live and published", Duration::from_secs(30), |p| p.live(0, &[]) && published(p, 0, 1));
    let pid = p.hosts[0].daemon_pid().unwrap();
    let before_kib = peak_rss_kib(pid);
    touch(&p.hosts[0].state.join("flood"));
    let error = |p: &Pool| {
        p.hosts[0]
            .status()
            .and_then(|s| s["vms"]["driver_error"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let interval = inventory_interval();
    p.wait(
        "the driver error in status",
        3 * interval + Duration::from_millis(timing().vm_call_timeout_ms()),
        |p| error(p).contains("16 MiB"),
    );
    // A few more floods.
    let flooded = Instant::now();
    while flooded.elapsed() < 5 * interval {
        std::thread::sleep(Duration::from_millis(100));
    }
    let peak_kib = peak_rss_kib(pid);
    assert!(
        peak_kib < 100 * 1024,
        "the daemon's peak RSS is {} MiB (before the floods: {} MiB): more than 100 MiB\n{}",
        peak_kib / 1024,
        before_kib / 1024,
        tail(&p.hosts[0].log, 20)
    );
    let st = p.hosts[0].status().unwrap();
    assert_eq!(st["vms"]["published_vms"], 1, "what was published stays: {:#}", st["vms"]);
    assert!(
        st["vms"]["own"].as_array().unwrap().iter().any(|e| e["name"] == "p1" && e["state"] == "running"),
        "{:#}",
        st["vms"]
    );
    assert_eq!(p.where_runs().get("p1"), Some(&vec![0]));
    // The hook behaves again: the error clears.
    std::fs::remove_file(p.hosts[0].state.join("flood")).unwrap();
    p.wait(
        "the driver error cleared",
        3 * interval + Duration::from_millis(timing().vm_call_timeout_ms()),
        |p| error(p).is_empty(),
    );
    eprintln!("DAEMON_PEAK_RSS before_floods_kib={before_kib} after_floods_kib={peak_kib}");
}
