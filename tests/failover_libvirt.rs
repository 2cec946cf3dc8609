//! VM failover end to end on real processes: every emulated hypervisor host is one network
//! namespace (tests/common/netns.rs) holding one mount+PID namespace (tests/common/libvirt.rs)
//! with its own libvirtd, its tiny QEMU guests and its diskbeat daemon, so `kill -9` of the
//! host's holder kills daemon, libvirtd and guests at once. Every host has an emulated hardware
//! watchdog outside it (tools/watchdog-emu.sh, firing `kill -9 <holder>`) and the fence action
//! tools/fence-kill-guests.sh (run inside the host's PID namespace: it kills only that host's
//! guests). T = 4 s (`DISKBEAT_E2E_T_MS=40000` for the default T), one shared loop device.
//!
//! A checker thread lists the active domains of every host through libvirt every ~100 ms for
//! the whole test and fails the test when one UUID is active on two hosts
//! (`checker_goes_red_on_a_double_start` shows that it can).
//!
//! Scenarios print `FAILOVER_FIGURES ...` lines (times in ms from the kill): detection (the
//! coordinator's `dead_at_ms` of the peer), proof (its `vms_gone.proven`), plan (its `vms.plan`),
//! start (last protected guest running, as the checker saw it).
//!
//! Needs root, libvirt, QEMU and tini (tools/install-libvirt.sh), loop devices, `ip` and `nft`;
//! skipped otherwise, failing instead under CI.

mod common;
#[path = "../tools/faultfs/src/harness.rs"]
mod faultfs;
#[path = "common/libvirt.rs"]
mod libvirt_host;
#[path = "common/netns.rs"]
mod pool;

use libvirt_host::{tiny_guest_xml, virsh, LibvirtHost};
use pool::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const GUEST_MIB: u64 = 64;

fn skip() -> bool {
    libvirt_host::skip() || pool::skip(false)
}

/// The base timeout T of the pool: `DISKBEAT_E2E_T_MS` (e.g. 40000, the default T of a real
/// pool; each run then takes minutes), otherwise 4 s.
fn t_ms() -> u64 {
    std::env::var("DISKBEAT_E2E_T_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(T_MS)
}

#[derive(Clone, Debug)]
struct Guest {
    name: String,
    uuid: Uuid,
    home: usize,
    /// `protect`, `best-effort` or `none`.
    level: &'static str,
}

// --- the checker ---------------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    /// The last round: the hosts each UUID was active on.
    now: BTreeMap<Uuid, Vec<usize>>,
    /// When (mono ms) each UUID was first seen active on each host.
    first: BTreeMap<(Uuid, usize), u64>,
    violation: Option<String>,
    rounds: u64,
}

/// Lists every host's active domains through libvirt every ~100 ms; records the first moment
/// one UUID is active on two hosts.
struct Checker {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn active(conn: &mut Option<virt::connect::Connect>, uri: &str) -> Option<BTreeSet<Uuid>> {
    if conn.is_none() {
        *conn = virt::connect::Connect::open(Some(uri)).ok();
    }
    let c = conn.as_ref()?;
    match c.list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE) {
        Ok(ds) => Some(ds.iter().filter_map(|d| d.uuid_string().ok()?.parse().ok()).collect()),
        Err(_) => {
            // virt panics when dropping a dead connection: leak it (as the driver does).
            std::mem::forget(conn.take());
            None
        }
    }
}

impl Checker {
    fn start(uris: Vec<String>) -> Checker {
        virt::error::clear_error_callback();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Option<virt::connect::Connect>> = uris.iter().map(|_| None).collect();
            while !stop2.load(Ordering::Relaxed) {
                let mut now: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
                let mut at: Vec<u64> = Vec::new();
                for (i, uri) in uris.iter().enumerate() {
                    // An unreachable libvirtd: the host was killed (its guests with it).
                    for u in active(&mut conns[i], uri).unwrap_or_default() {
                        now.entry(u).or_default().push(i);
                    }
                    at.push(mono_ms());
                }
                let mut violation = None;
                for (u, hosts) in &now {
                    if hosts.len() < 2 {
                        continue;
                    }
                    // Confirm in the reverse order: active on a at t1, on b at t2 > t1, on b at
                    // t3, on a at t4 > t3: a ran through [t1, t4] (no guest restarts within
                    // milliseconds), which contains t2, when b ran it too.
                    let (a, b) = (hosts[0], hosts[1]);
                    let on_b = active(&mut conns[b], &uris[b]).is_some_and(|s| s.contains(u));
                    let on_a = active(&mut conns[a], &uris[a]).is_some_and(|s| s.contains(u));
                    if on_a && on_b {
                        violation =
                            Some(format!("VM {u} is active on h{a} and h{b} at once (mono {})", mono_ms()));
                        break;
                    }
                }
                {
                    let mut s = seen2.lock().unwrap();
                    for (u, hosts) in &now {
                        for &h in hosts {
                            s.first.entry((*u, h)).or_insert(at[h]);
                        }
                    }
                    s.now = now;
                    s.rounds += 1;
                    if s.violation.is_none() {
                        s.violation = violation;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            for c in conns.into_iter().flatten() {
                std::mem::forget(c);
            }
        });
        Checker { stop, seen, thread: Some(thread) }
    }

    fn violation(&self) -> Option<String> {
        self.seen.lock().unwrap().violation.clone()
    }

    fn assert_ok(&self) {
        if let Some(v) = self.violation() {
            panic!("CHECKER: {v}");
        }
    }

    /// Hosts `u` is active on (last round).
    fn hosts_of(&self, u: Uuid) -> Vec<usize> {
        self.seen.lock().unwrap().now.get(&u).cloned().unwrap_or_default()
    }

    /// When `u` was first seen active on host `h`.
    fn first(&self, u: Uuid, h: usize) -> Option<u64> {
        self.seen.lock().unwrap().first.get(&(u, h)).copied()
    }

    /// Waits for two more complete rounds (what it reports is then fresh).
    fn settle(&self) {
        let r = self.seen.lock().unwrap().rounds;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.seen.lock().unwrap().rounds < r + 2 {
            assert!(Instant::now() < deadline, "checker stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// --- the rig -------------------------------------------------------------------------------------

/// One pool of emulated hypervisors. Field order is drop order after `Drop::drop`.
struct Rig {
    checker: Option<Checker>,
    emus: Vec<Child>,
    hosts: Vec<LibvirtHost>,
    pool: Pool,
    guests: Vec<Guest>,
}

struct HostSpec {
    memory_mib: u64,
    levels: &'static [&'static str],
}

fn tools(script: &str) -> String {
    format!("{}/tools/{script}", env!("CARGO_MANIFEST_DIR"))
}

impl Rig {
    fn start(specs: &[HostSpec]) -> Rig {
        let n = specs.len();
        let pool = Pool::start(Opts { defer_spawn: true, t_ms: t_ms(), ..Opts::new(n) });
        let mut rig = Rig { checker: None, emus: Vec::new(), hosts: Vec::new(), pool, guests: Vec::new() };
        for i in 0..n {
            let host = LibvirtHost::start_in(Some(&rig.pool.hosts[i].ns));
            rig.hosts.push(host);
        }
        rig.checker = Some(Checker::start(rig.hosts.iter().map(|h| h.uri()).collect()));
        for (i, spec) in specs.iter().enumerate() {
            let uri = rig.hosts[i].uri();
            for (k, level) in spec.levels.iter().enumerate() {
                let g = Guest { name: format!("g{i}-{k}"), uuid: Uuid::new_v4(), home: i, level };
                let file = rig.pool.dir().join(format!("{}.xml", g.name));
                std::fs::write(&file, tiny_guest_xml(&g.name, g.uuid, GUEST_MIB)).unwrap();
                virsh(&uri, &["define", file.to_str().unwrap()]);
                virsh(&uri, &["start", &g.name]);
                let out = common::run(&[
                    "vm",
                    "protect",
                    &g.name,
                    "--level",
                    level,
                    "--driver",
                    &format!("libvirt:{uri}"),
                ]);
                assert!(out.status.success(), "vm protect: {}", common::stderr(&out));
                rig.guests.push(g);
            }
        }
        for (i, spec) in specs.iter().enumerate() {
            let fifo = rig.pool.dir().join(format!("wd{i}"));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            let log = std::fs::File::create(rig.pool.dir().join(format!("wd{i}.log"))).unwrap();
            let emu = Command::new(tools("watchdog-emu.sh"))
                .arg(&fifo)
                .args(["kill", "-9", &rig.hosts[i].pid().unwrap().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn watchdog-emu.sh");
            rig.emus.push(emu);
            // The daemon's non-blocking open fails until the emulator holds the FIFO.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).is_err()
            {
                assert!(Instant::now() < deadline, "watchdog emulator did not open {}", fifo.display());
                std::thread::sleep(Duration::from_millis(10));
            }
            rig.pool.hosts[i].launch = Launch {
                prefix: Some(rig.hosts[i].enter_prefix()),
                fence_action: Some(format!("exec:{}", tools("fence-kill-guests.sh"))),
                args: vec![
                    "--watchdog".into(),
                    fifo.to_str().unwrap().into(),
                    "--vm-driver".into(),
                    "libvirt".into(),
                    "--vm-memory-mib".into(),
                    spec.memory_mib.to_string(),
                    "--vm-vcpus".into(),
                    "64".into(),
                ],
            };
            rig.pool.spawn(i);
        }
        rig.pool.wait_ready();
        // Every host publishes all its guests running, and the coordinator has read them.
        let guests = rig.guests.clone();
        rig.wait(Duration::from_millis(30_000 + t_ms()), "every guest published running", |st| {
            (0..n).all(|i| {
                guests.iter().filter(|g| g.home == i).all(|g| {
                    st[i]["vms"]["own"].as_array().is_some_and(|a| {
                        a.iter().any(|v| v["name"] == g.name.as_str() && v["state"] == "running")
                    })
                })
            })
        });
        // No wait for the pool to age: since format 1.7 a host declares a peer whose records
        // list it dead after T, however recently it joined (the young-host delay is gone).
        rig.checker().settle();
        for g in &rig.guests {
            assert_eq!(rig.checker().hosts_of(g.uuid), vec![g.home], "{} not running at home", g.name);
        }
        rig
    }

    fn checker(&self) -> &Checker {
        self.checker.as_ref().unwrap()
    }

    /// `Pool::wait_until` that also fails at once on a checker violation and on a daemon's
    /// `running_twice` alarm.
    fn wait(&self, timeout: Duration, what: &str, mut cond: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let checker = self.checker();
        self.pool.wait_until(timeout, what, |st| {
            checker.assert_ok();
            for (i, s) in st.iter().enumerate() {
                let twice = &s["vms"]["running_twice"];
                assert!(twice.as_array().is_none_or(|a| a.is_empty()), "h{i} reports running_twice: {twice}");
            }
            cond(st)
        })
    }

    fn guests_of(&self, home: usize) -> Vec<Guest> {
        self.guests.iter().filter(|g| g.home == home).cloned().collect()
    }

    /// Kills host `i` at once (daemon, libvirtd, guests); returns the moment (mono ms).
    fn kill(&mut self, i: usize) -> u64 {
        let t = mono_ms();
        if let Some(ready) = self.pool.ready_at {
            // The pool's age matters: before format 1.7 a host up less than 3 T waited 2 T more.
            eprintln!("killing h{i} {} ms after the pool was ready", ready.elapsed().as_millis());
        }
        self.hosts[i].kill();
        self.pool.kill9(i); // reaps nsenter, whose daemon died with the host
        t
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.hosts.len() {
            let wd = std::fs::read_to_string(self.pool.dir().join(format!("wd{i}.log"))).unwrap_or_default();
            out += &format!("--- watchdog-emu h{i} ---\n{wd}");
        }
        out
    }
}

use std::os::unix::fs::OpenOptionsExt;

impl Drop for Rig {
    fn drop(&mut self) {
        self.checker = None;
        for e in &mut self.emus {
            let _ = e.kill();
            let _ = e.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // Host first (daemon with it), then the pool reaps what is left and removes the netns.
        for h in &mut self.hosts {
            h.kill();
        }
    }
}

// --- figures -------------------------------------------------------------------------------------

/// Watches the coordinator `coord` after host `dead` was killed at `kill_ms` until every guest of
/// `expect` runs somewhere other than `dead`; returns (detect, prove, plan, last start) in ms
/// from the kill.
fn recover(rig: &Rig, coord: usize, dead: usize, kill_ms: u64, expect: &[Guest]) -> [u64; 4] {
    let (mut detect, mut prove, mut plan) = (None, None, None);
    let checker = rig.checker();
    // The coordinator alone, every 20 ms: a plan may be published and carried out within 0.5 s.
    // Its status is refreshed after every action of the VM thread, so the plan shows while the
    // starts it lists are under way.
    let deadline = Instant::now() + Duration::from_millis(36_000 + t_ms());
    loop {
        checker.assert_ok();
        let st = rig.pool.status(coord);
        let now = mono_ms() - kill_ms;
        let p = peer(&st, dead);
        if detect.is_none() {
            if let Some(at) = p.and_then(|p| p["dead_at_ms"].as_u64()) {
                detect = Some(at.saturating_sub(kill_ms));
            }
        }
        if prove.is_none() && p.is_some_and(|p| p["vms_gone"]["proven"] == true) {
            prove = Some(now);
        }
        if plan.is_none() && st["vms"]["plan"]["assignments"].as_array().is_some_and(|a| !a.is_empty()) {
            plan = Some(now);
        }
        if expect.iter().all(|g| checker.hosts_of(g.uuid).iter().any(|&h| h != dead)) {
            break;
        }
        if Instant::now() > deadline {
            let st = rig.pool.statuses();
            panic!("protected guests not running again {deadline:?} after the kill{}", rig.pool.dump(&st));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = expect
        .iter()
        .map(|g| {
            let h = checker.hosts_of(g.uuid)[0];
            checker.first(g.uuid, h).unwrap().saturating_sub(kill_ms)
        })
        .max()
        .unwrap_or(0);
    let detect = detect.expect("the coordinator never showed the host dead");
    let prove = prove.expect("the coordinator never showed the host's VMs proven gone");
    let plan = plan.expect("the coordinator's status never showed a plan");
    [detect, prove, plan, last]
}

fn print_figures(scenario: &str, f: [u64; 4]) {
    let [detect, prove, plan, last] = f;
    println!(
        "FAILOVER_FIGURES scenario={scenario} t_ms={} detect_ms={detect} prove_ms={} plan_ms={} start_ms={} total_ms={last}",
        t_ms(),
        prove.saturating_sub(detect),
        plan.saturating_sub(prove.max(detect)),
        last.saturating_sub(plan),
    );
}

/// Polls the coordinator `coord` (every 5 ms) after host `dead` was killed until its status
/// shows a plan; returns the plan's assignments.
fn wait_plan(rig: &Rig, coord: usize, dead: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_millis(20_000 + t_ms());
    loop {
        rig.checker().assert_ok();
        let st = rig.pool.status(coord);
        if let Some(a) = st["vms"]["plan"]["assignments"].as_array().filter(|a| !a.is_empty()) {
            return a.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "no plan from h{coord} {deadline:?} after h{dead} died{}",
                rig.pool.dump(&rig.pool.statuses())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where every guest runs now (checker view), after a fresh round.
fn placement(rig: &Rig) -> BTreeMap<String, Vec<usize>> {
    rig.checker().settle();
    rig.guests.iter().map(|g| (g.name.clone(), rig.checker().hosts_of(g.uuid))).collect()
}

fn unplaced_reasons(st: &Value) -> BTreeMap<String, String> {
    st["vms"]["plan"]["unplaced"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    (
                        u["uuid"].as_str().unwrap_or("").to_string(),
                        u["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// --- scenarios -----------------------------------------------------------------------------------

/// The checker itself: the same domain started by hand on a second host turns it red.
#[test]
fn checker_goes_red_on_a_double_start() {
    if skip() {
        return;
    }
    let a = LibvirtHost::start();
    let b = LibvirtHost::start();
    let checker = Checker::start(vec![a.uri(), b.uri()]);
    let dir = tempfile::tempdir().unwrap();
    let uuid = Uuid::new_v4();
    let file = dir.path().join("d.xml");
    std::fs::write(&file, tiny_guest_xml("dup", uuid, GUEST_MIB)).unwrap();
    virsh(&a.uri(), &["define", file.to_str().unwrap()]);
    virsh(&a.uri(), &["start", "dup"]);
    virsh(&b.uri(), &["define", file.to_str().unwrap()]);
    checker.settle();
    assert_eq!(checker.violation(), None);
    assert_eq!(checker.hosts_of(uuid), vec![0]);
    let t = Instant::now();
    virsh(&b.uri(), &["start", "dup"]);
    while checker.violation().is_none() {
        assert!(t.elapsed() < Duration::from_secs(3), "checker missed a double start");
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("checker: red {:?} after the second start: {}", t.elapsed(), checker.violation().unwrap());
}

/// kill -9 of a whole host: its protected guests run again on the survivors, one best-effort
/// guest fits and one does not, the `none` one stays down, nothing ever runs twice.
#[test]
fn failover_kill9_host() {
    if skip() {
        return;
    }
    // Free room on the survivors: 2 + 1 + 1 guests. h3's 3 protected guests and 1 of its 2
    // best-effort ones fit.
    let mut rig = Rig::start(&[
        HostSpec { memory_mib: 5 * GUEST_MIB, levels: &["protect", "best-effort", "none"] },
        HostSpec { memory_mib: 4 * GUEST_MIB, levels: &["protect", "best-effort", "none"] },
        HostSpec { memory_mib: 4 * GUEST_MIB, levels: &["protect", "best-effort", "none"] },
        HostSpec {
            memory_mib: 8 * GUEST_MIB,
            levels: &["protect", "protect", "protect", "best-effort", "best-effort", "none"],
        },
    ]);
    let dead = 3;
    let lost = rig.guests_of(dead);
    let protected: Vec<Guest> = lost.iter().filter(|g| g.level == "protect").cloned().collect();
    let kill_ms = rig.kill(dead);
    let figures = recover(&rig, 0, dead, kill_ms, &protected);
    print_figures("kill9", figures);

    // One more plan round: best-effort placements follow the protected ones.
    let be: Vec<Guest> = lost.iter().filter(|g| g.level == "best-effort").cloned().collect();
    let checker = rig.checker();
    let st =
        rig.wait(Duration::from_millis(20_000 + t_ms() / 2), "one best-effort guest running again", |_| {
            be.iter().filter(|g| !checker.hosts_of(g.uuid).is_empty()).count() >= 1
        });
    // Hold 2 T: nothing else starts, nothing stops.
    std::thread::sleep(Duration::from_millis(2 * t_ms()));
    let st = rig
        .wait(Duration::from_secs(5), "fresh statuses", |_| true)
        .into_iter()
        .chain(st)
        .collect::<Vec<_>>();
    let at = placement(&rig);
    eprintln!("placement after recovery: {at:?}");
    for g in &rig.guests {
        let on = &at[&g.name];
        match (g.home == dead, g.level) {
            (false, _) => assert_eq!(on, &vec![g.home], "{} moved or stopped", g.name),
            (true, "protect") => assert!(on.len() == 1 && on[0] != dead, "{}: {on:?}", g.name),
            (true, "none") => assert!(on.is_empty(), "{} (none) restarted on {on:?}", g.name),
            _ => {}
        }
    }
    let restarted_be: Vec<&Guest> = be.iter().filter(|g| !at[&g.name].is_empty()).collect();
    assert_eq!(restarted_be.len(), 1, "exactly one best-effort guest fits: {at:?}");
    let reasons = unplaced_reasons(&st[0]);
    let left = be.iter().find(|g| at[&g.name].is_empty()).unwrap();
    assert_eq!(reasons.get(&left.uuid.to_string()).map(String::as_str), Some("no-capacity"), "{reasons:?}");
    let none = lost.iter().find(|g| g.level == "none").unwrap();
    assert_eq!(reasons.get(&none.uuid.to_string()).map(String::as_str), Some("not-protected"), "{reasons:?}");
    rig.checker().assert_ok();
}

/// Every guest of `want` runs exactly once, on a host of `on`; every guest of `down` runs
/// nowhere.
fn assert_placed(rig: &Rig, want: &[Guest], on: &[usize], down: &[Guest]) {
    let at = placement(rig);
    eprintln!("placement: {at:?}");
    for g in want {
        let hosts = &at[&g.name];
        assert!(
            hosts.len() == 1 && on.contains(&hosts[0]),
            "{} ({}) runs on {hosts:?}, want once on {on:?}",
            g.name,
            g.level
        );
    }
    for g in down {
        assert!(at[&g.name].is_empty(), "{} ({}) runs on {:?}", g.name, g.level, at[&g.name]);
    }
}

/// A host's network is cut while its disk stays healthy. Its heartbeat on the disk goes on, so
/// nobody may see it dead, and none of its VMs may run anywhere else until its VMs are proven
/// gone. Being alone against three, it loses the partition rule and fences itself: its fence
/// action kills its guests and its fenced mark (fence_stops_vms) proves them gone; then, and
/// only then, its protected guests run again elsewhere, exactly once.
#[test]
fn failover_cut_network_disk_healthy() {
    if skip() {
        return;
    }
    let rig = Rig::start(&[
        HostSpec { memory_mib: 6 * GUEST_MIB, levels: &["protect", "best-effort"] },
        HostSpec { memory_mib: 6 * GUEST_MIB, levels: &["protect", "none"] },
        HostSpec { memory_mib: 6 * GUEST_MIB, levels: &["best-effort", "none"] },
        HostSpec { memory_mib: 8 * GUEST_MIB, levels: &["protect", "protect", "best-effort", "none"] },
    ]);
    let cut = 3;
    let survivors = [0, 1, 2];
    let mine = rig.guests_of(cut);
    let cut_ms = mono_ms();
    rig.pool.cut(cut);
    let mut proven_at = None;
    let checker = rig.checker();
    let end = Instant::now() + Duration::from_millis(3 * t_ms());
    while Instant::now() < end {
        checker.assert_ok();
        let st: Vec<Value> = survivors.iter().map(|&i| rig.pool.status(i)).collect();
        for (k, s) in st.iter().enumerate() {
            let ps = peer_state(s, cut);
            assert!(
                matches!(ps, "live" | "self_fencing" | "fenced"),
                "h{} sees the cut host {ps} although its disk heartbeat goes on{}",
                survivors[k],
                rig.pool.dump(&rig.pool.statuses())
            );
        }
        let proven = st.iter().any(|s| peer(s, cut).is_some_and(|p| p["vms_gone"]["proven"] == true));
        if proven && proven_at.is_none() {
            proven_at = Some(mono_ms() - cut_ms);
        }
        // Proven by the fenced mark, nothing else (statuses are read one after the other: a
        // survivor read before the mark landed may still show self_fencing).
        for (k, s) in st.iter().enumerate() {
            if peer(s, cut).is_some_and(|p| p["vms_gone"]["proven"] == true) {
                assert_eq!(peer_state(s, cut), "fenced", "h{} sees h{cut}'s VMs proven gone", survivors[k]);
            }
        }
        if proven_at.is_none() {
            for g in &mine {
                let on = checker.hosts_of(g.uuid);
                assert!(
                    on.iter().all(|&h| h == cut),
                    "{} runs on {on:?} before h{cut}'s VMs were proven gone",
                    g.name
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let proven_at = proven_at.unwrap_or_else(|| {
        panic!("h{cut} alone against 3 did not fence within 3 T{}", rig.pool.dump(&rig.pool.statuses()))
    });
    let log = std::fs::read_to_string(&rig.pool.hosts[cut].log).unwrap_or_default();
    assert!(log.contains("partition"), "h{cut} fenced, but not by the partition rule:\n{log}");
    // Its fence action killed its own guests.
    assert!(rig.hosts[cut].qemu_pids().is_empty(), "h{cut} fenced with guests still running");
    let protected: Vec<Guest> = mine.iter().filter(|g| g.level == "protect").cloned().collect();
    rig.wait(Duration::from_secs(30), "the cut host's protected guests running again", |_| {
        protected.iter().all(|g| !checker.hosts_of(g.uuid).is_empty())
    });
    // Cut -> proven gone (fenced mark seen, 50 ms polls) -> last protected guest running.
    let done = protected
        .iter()
        .map(|g| checker.first(g.uuid, checker.hosts_of(g.uuid)[0]).unwrap().saturating_sub(cut_ms))
        .max()
        .unwrap();
    println!(
        "FAILOVER_FIGURES scenario=cut t_ms={} proven_ms={proven_at} start_ms={} total_ms={done}",
        t_ms(),
        done.saturating_sub(proven_at)
    );
    std::thread::sleep(Duration::from_millis(t_ms()));
    let be: Vec<Guest> = mine.iter().filter(|g| g.level == "best-effort").cloned().collect();
    let none: Vec<Guest> = mine.iter().filter(|g| g.level == "none").cloned().collect();
    let others: Vec<Guest> = rig.guests.iter().filter(|g| g.home != cut).cloned().collect();
    assert_placed(&rig, &[protected, be].concat(), &survivors, &none);
    for g in &others {
        assert_eq!(checker.hosts_of(g.uuid), vec![g.home], "{} moved or stopped", g.name);
    }
    checker.assert_ok();
}

/// A host with many guests is killed; as soon as the coordinator publishes its plan, the
/// coordinator is killed too. The next coordinator finishes the job: every protected (and here
/// every best-effort) guest of both runs exactly once on the two hosts left.
#[test]
fn failover_coordinator_killed_mid_restart() {
    if skip() {
        return;
    }
    // Best fit puts the first orphans on h0 (least free room), so h0 dies holding some.
    let mut rig = Rig::start(&[
        HostSpec { memory_mib: 4 * GUEST_MIB, levels: &["protect", "none"] },
        HostSpec { memory_mib: 9 * GUEST_MIB, levels: &["protect"] },
        HostSpec { memory_mib: 9 * GUEST_MIB, levels: &["best-effort"] },
        HostSpec {
            memory_mib: 10 * GUEST_MIB,
            levels: &[
                "protect",
                "protect",
                "protect",
                "protect",
                "protect",
                "best-effort",
                "best-effort",
                "none",
            ],
        },
    ]);
    let kill1 = rig.kill(3);
    let log0 = rig.pool.hosts[0].log.clone();
    wait_plan(&rig, 0, 3);
    let kill0 = rig.kill(0);
    eprintln!("killed h3, then h0 {} ms later (its plan just published)", kill0 - kill1);
    let text = std::fs::read_to_string(&log0).unwrap();
    let started_by_h0: Vec<&str> = text.lines().filter(|l| l.contains("vm_starting")).collect();
    eprintln!("h0 had begun {} start(s): {started_by_h0:?}", started_by_h0.len());
    let want: Vec<Guest> =
        rig.guests.iter().filter(|g| (g.home == 0 || g.home == 3) && g.level != "none").cloned().collect();
    let protected: Vec<Guest> = want.iter().filter(|g| g.level == "protect").cloned().collect();
    let figures = recover(&rig, 1, 0, kill0, &protected);
    print_figures("coordinator-killed", figures);
    let checker = rig.checker();
    rig.wait(Duration::from_secs(20), "best-effort guests running again", |_| {
        want.iter().all(|g| !checker.hosts_of(g.uuid).is_empty())
    });
    std::thread::sleep(Duration::from_millis(t_ms()));
    let down: Vec<Guest> =
        rig.guests.iter().filter(|g| g.level == "none" && g.home != 1 && g.home != 2).cloned().collect();
    assert_placed(&rig, &want, &[1, 2], &down);
    for g in rig.guests.iter().filter(|g| g.home == 1 || g.home == 2) {
        assert_eq!(checker.hosts_of(g.uuid), vec![g.home], "{} moved or stopped", g.name);
    }
    checker.assert_ok();
}

/// A host with several guests is killed; as soon as the coordinator (h0) shows its plan, the
/// three survivors are split 1 + 2 with nftables: h0 alone against {h1, h2}. The disk stays
/// healthy, so nobody is declared dead; the partition rule (docs/PARTITIONS.md) keeps the largest
/// mutual clique, {h1, h2}, and h0, the coordinator, must fence while its restarts are under way.
///
/// What must happen, and why:
/// - h1 and h2 never fence (they are the largest part; h3 is dead and takes no part).
/// - h0 fences with reason `partition` (rule `largest`); its fence action (not the watchdog)
///   kills every guest it runs, its own and the orphans of h3 it had started, and its `fenced`
///   mark proves them gone. Until then nobody else may run any of them: h0 is alive on the disk.
/// - Then h1 (the lowest live slot) coordinates and restarts on {h1, h2}: every protected guest of
///   h3 and h0 exactly once. Capacity: {h1, h2} have 7 guests of free room and 8 candidates (h3's
///   4 protected and 2 best-effort, h0's protected and best-effort), so the 5 protected run, and
///   2 of the 3 best-effort ones; the third is reported `no-capacity`. `none` guests stay down.
/// - h1's and h2's own guests never move; the checker never sees a guest on two hosts.
#[test]
fn failover_partition_mid_restart() {
    if skip() {
        return;
    }
    // Free room: h0 2, h1 4, h2 3 guests (capacity exact in units of GUEST_MIB). Best fit puts
    // h3's first orphans on h0, the fullest host, so h0 is fenced holding some of them.
    let mut rig = Rig::start(&[
        HostSpec { memory_mib: 5 * GUEST_MIB, levels: &["protect", "best-effort", "none"] },
        HostSpec { memory_mib: 6 * GUEST_MIB, levels: &["protect", "none"] },
        HostSpec { memory_mib: 4 * GUEST_MIB, levels: &["best-effort"] },
        HostSpec {
            memory_mib: 10 * GUEST_MIB,
            levels: &["protect", "protect", "protect", "protect", "best-effort", "best-effort", "none"],
        },
    ]);
    let (dead, loser, winners) = (3, 0, [1, 2]);
    let kill_ms = rig.kill(dead);
    let plan = wait_plan(&rig, loser, dead);
    let split_ms = mono_ms();
    rig.pool.split(&[&[loser], &winners]);
    let on_loser: Vec<String> = plan
        .iter()
        .filter(|a| a["target_slot"] == loser)
        .filter_map(|a| a["uuid"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "h{dead} killed; h{loser}'s plan showed {} ms later ({} assignments, {} to h{loser}); split {{h{loser}}} | {winners:?}",
        split_ms - kill_ms,
        plan.len(),
        on_loser.len()
    );
    assert!(
        !on_loser.is_empty(),
        "the plan sends nothing to h{loser}: the scenario lost its point: {plan:?}"
    );

    // Until h0's VMs are proven gone, h0's own guests run nowhere but on h0, and the winners stay
    // live (and never see h0 dead: its disk heartbeat goes on).
    let checker = rig.checker();
    let mine = rig.guests_of(loser);
    let proven_st =
        rig.wait(Duration::from_millis(10 * t_ms()), "h0's VMs proven gone (fenced mark)", |st| {
            for &w in &winners {
                assert_eq!(state(&st[w]), "live", "h{w}, on the winning side, is {}", state(&st[w]));
                let ps = peer_state(&st[w], loser);
                assert!(matches!(ps, "live" | "self_fencing" | "fenced"), "h{w} sees h{loser} {ps}");
            }
            let proven =
                winners.iter().any(|&w| peer(&st[w], loser).is_some_and(|p| p["vms_gone"]["proven"] == true));
            if !proven {
                for g in &mine {
                    let on = checker.hosts_of(g.uuid);
                    assert!(
                        on.iter().all(|&h| h == loser),
                        "{} runs on {on:?} before h{loser} was proven gone",
                        g.name
                    );
                }
            }
            proven
        });
    let proven_ms = mono_ms() - split_ms;
    assert_eq!(state(&proven_st[loser]), "fenced", "h{loser}");
    assert_eq!(fence_kind(&proven_st[loser]), "partition", "h{loser} fenced for another reason");
    assert_eq!(fence_rule(&proven_st[loser]), "largest", "h{loser}");
    for &w in &winners {
        if peer(&proven_st[w], loser).is_some_and(|p| p["vms_gone"]["proven"] == true) {
            assert_eq!(peer_state(&proven_st[w], loser), "fenced", "h{w} sees h{loser}'s VMs proven gone");
        }
    }
    // Its guests died by its fence action: none runs there, and its watchdog never fired (its
    // libvirtd still answers).
    assert!(rig.hosts[loser].qemu_pids().is_empty(), "h{loser} fenced with guests still running");
    let wd = std::fs::read_to_string(rig.pool.dir().join(format!("wd{loser}.log"))).unwrap_or_default();
    assert!(!wd.contains("firing"), "h{loser}'s watchdog fired: the fence action did not do it: {wd}");
    checker.settle();
    for g in &rig.guests {
        assert!(!checker.hosts_of(g.uuid).contains(&loser), "{} still runs on fenced h{loser}", g.name);
    }
    let ran: Vec<&str> = rig
        .guests
        .iter()
        .filter(|g| g.home == dead)
        .filter(|g| checker.first(g.uuid, loser).is_some())
        .map(|g| g.name.as_str())
        .collect();
    eprintln!("h{loser} fenced {proven_ms} ms after the split; it had run {ran:?} of h{dead}'s guests");

    // Recovery on the winning side.
    let orphans: Vec<Guest> = rig
        .guests
        .iter()
        .filter(|g| (g.home == dead || g.home == loser) && g.level != "none")
        .cloned()
        .collect();
    let protected: Vec<Guest> = orphans.iter().filter(|g| g.level == "protect").cloned().collect();
    let be: Vec<Guest> = orphans.iter().filter(|g| g.level == "best-effort").cloned().collect();
    let st = rig.wait(
        Duration::from_millis(30_000 + t_ms()),
        "protected and 2 best-effort guests running again",
        |_| {
            protected.iter().all(|g| !checker.hosts_of(g.uuid).is_empty())
                && be.iter().filter(|g| !checker.hosts_of(g.uuid).is_empty()).count() >= 2
        },
    );
    let done = protected
        .iter()
        .map(|g| checker.first(g.uuid, checker.hosts_of(g.uuid)[0]).unwrap().saturating_sub(split_ms))
        .max()
        .unwrap();
    println!(
        "FAILOVER_FIGURES scenario=partition-mid-restart t_ms={} plan_ms={} proven_ms={proven_ms} start_ms={} total_ms={done}",
        t_ms(),
        split_ms - kill_ms,
        done.saturating_sub(proven_ms),
    );
    // Hold T: nothing else starts, nothing stops.
    std::thread::sleep(Duration::from_millis(t_ms()));
    let st = rig
        .wait(Duration::from_secs(5), "fresh statuses", |_| true)
        .into_iter()
        .chain(st)
        .collect::<Vec<_>>();
    let running_be: Vec<Guest> =
        be.iter().filter(|g| !checker.hosts_of(g.uuid).is_empty()).cloned().collect();
    let left: Vec<Guest> = be.iter().filter(|g| checker.hosts_of(g.uuid).is_empty()).cloned().collect();
    assert_eq!(running_be.len(), 2, "2 of the 3 best-effort guests fit on {winners:?}");
    let none: Vec<Guest> = rig
        .guests
        .iter()
        .filter(|g| g.home != winners[0] && g.home != winners[1] && g.level == "none")
        .cloned()
        .collect();
    assert_placed(&rig, &[protected, running_be].concat(), &winners, &[none.clone(), left.clone()].concat());
    // The new coordinator, h1, says why the rest stay down.
    assert_eq!(st[winners[0]]["vms"]["coordinator_slot"], winners[0], "{}", st[winners[0]]["vms"]);
    let reasons = unplaced_reasons(&st[winners[0]]);
    assert_eq!(
        reasons.get(&left[0].uuid.to_string()).map(String::as_str),
        Some("no-capacity"),
        "{reasons:?}"
    );
    for g in &none {
        assert_eq!(
            reasons.get(&g.uuid.to_string()).map(String::as_str),
            Some("not-protected"),
            "{} {reasons:?}",
            g.name
        );
    }
    for g in rig.guests.iter().filter(|g| winners.contains(&g.home)) {
        assert_eq!(checker.hosts_of(g.uuid), vec![g.home], "{} moved or stopped", g.name);
    }
    for &w in &winners {
        assert_eq!(state(&st[w]), "live", "h{w}");
    }
    checker.assert_ok();
}
