//! Harness for tests/netns.rs: real `diskbeat daemon` processes, each in its own network
//! namespace, on one shared heartbeat disk (a loop device, or one loop device per host over the
//! same file on faultfs), with faults injected with `ip link`, nftables and AF_PACKET sockets.
//!
//! Topology of one pool (`<id>` = test process id and a counter, so tests can run in parallel):
//!
//! ```text
//!   netns dbb-<id>:   br0 10.S.0.254/24 (the isolation address) ── v0, v1, ... (veth ports)
//!   netns dbh-<id>-i: eth0 10.S.0.(i+1)/24 (peer of vi), daemon of slot i on 10.S.0.(i+1):7788
//! ```
//!
//! Faults: `cut` (the bridge side of a host's veth down), nft rules in a host's namespace (input
//! by source address: a split, one-way drops, random loss), per-host disk faults (faultfs), a
//! userspace delayer in the bridge namespace, and raw packets sent from the bridge namespace.
//! `Drop` kills the daemons, deletes the namespaces, detaches the loop devices and unmounts
//! faultfs, also when the test panics (the daemon logs are then kept).
#![allow(dead_code)]

use crate::common;
use crate::faultfs;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Base timeout the disk is formatted with, and what derives from it (src/timing.rs).
pub const T_MS: u64 = 4000;
pub const INTERVAL_MS: u64 = T_MS / 20;
pub const IO_TIMEOUT_MS: u64 = T_MS / 4;
pub const SELF_FENCE_MS: u64 = T_MS / 2;
/// A peer is heard while its last packet is younger than this.
pub const NET_TIMEOUT_MS: u64 = T_MS / 2;
/// A partition decision is acted on once the views are stable this long (0.6 T).
pub const PARTITION_DELAY_MS: u64 = 2 * (INTERVAL_MS + IO_TIMEOUT_MS);
/// Whole-LUN ride-through: the cap (2 T past the self-fence deadline) of writers older than
/// format 1.7; a 1.7 pool rides past it.
pub const RIDE_MAX_MS: u64 = 2 * T_MS;
pub const PORT: u16 = 7788;

/// CLOCK_MONOTONIC in ms: the daemons' clock (`now_ms`, `fenced_at_ms`, `dead_at_ms`, event times).
pub fn mono_ms() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

/// Whether these tests must be skipped here (root, loop devices, `ip`, `nft`, and with
/// `faultfs` also /dev/fuse and the faultfs binary). Under CI a missing requirement panics: a
/// CI run that cannot run them fails instead of passing by skipping.
pub fn skip(with_faultfs: bool) -> bool {
    let why = missing(with_faultfs);
    let Some(why) = why else { return false };
    if ci() {
        panic!("{why}; CI is set, so this test must not be skipped (tools/test.sh installs what it needs)");
    }
    eprintln!("SKIPPED: {why}");
    true
}

fn missing(with_faultfs: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(format!("needs root for network namespaces (euid {})", nix::unistd::geteuid()));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("/dev/loop-control is missing (modprobe loop)".into());
    }
    let works =
        |cmd: &str, args: &[&str]| Command::new(cmd).args(args).output().is_ok_and(|o| o.status.success());
    if !works("ip", &["netns", "list"]) {
        return Some("`ip netns` does not work (install iproute2)".into());
    }
    if !works("nft", &["--version"]) {
        return Some("nft not found (install nftables)".into());
    }
    if !works("losetup", &["--version"]) {
        return Some("losetup not found (install util-linux)".into());
    }
    if with_faultfs {
        if !Path::new("/dev/fuse").exists() {
            return Some("/dev/fuse is missing (modprobe fuse)".into());
        }
        if faultfs::find_binary().is_none() {
            return Some("faultfs binary not built (cargo build --workspace; tools/test.sh does)".into());
        }
    }
    None
}

/// Runs a command, panicking with its stderr if it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft -f -` with `script`, in namespace `ns`.
pub fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft in {ns} failed: {}\n{script}", String::from_utf8_lossy(&out.stderr));
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static STALE: std::sync::Once = std::sync::Once::new();

/// Namespaces left by a test process that died without cleaning up (SIGKILL): removed once per
/// process, with whatever still runs in them. Only ours (dbb-/dbh-) of processes that are gone.
fn cleanup_stale() {
    STALE.call_once(|| {
        let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("dbb-").or_else(|| name.strip_prefix("dbh-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let pids = Command::new("ip").args(["netns", "pids", &name]).output();
            for p in pids
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
            {
                if let Ok(p) = p.parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL);
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            eprintln!("netns harness: removed stale namespace {name}");
        }
    });
}

/// How to build a pool.
#[derive(Clone, Debug)]
pub struct Opts {
    pub hosts: usize,
    /// `--isolation-addr` = the bridge address on every host.
    pub isolation: bool,
    /// One loop device per host over the same file on faultfs (per-host disk faults).
    pub faultfs: bool,
    /// Build the disk and the network but start no daemon: the test sets each host's
    /// [`Launch`] first, then calls [`Pool::spawn`].
    pub defer_spawn: bool,
    /// Base timeout T the disk is formatted with (default [`T_MS`]). The constants above assume
    /// `T_MS`.
    pub t_ms: u64,
}

impl Opts {
    pub fn new(hosts: usize) -> Opts {
        Opts { hosts, isolation: false, faultfs: false, defer_spawn: false, t_ms: T_MS }
    }
}

/// How a host's daemon is started, beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Runs the daemon through this command instead of `ip netns exec NS` (e.g. `nsenter ...
    /// --` into an emulated hypervisor that lives in the host's namespace, tests/common/libvirt.rs).
    pub prefix: Option<Vec<String>>,
    /// `--fence-action` (default `log-only`).
    pub fence_action: Option<String>,
    /// More daemon arguments (`--watchdog`, `--vm-driver`, ...).
    pub args: Vec<String>,
}

pub struct Host {
    pub slot: usize,
    pub launch: Launch,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub dev: PathBuf,
    child: Option<Child>,
}

pub struct Pool {
    pub id: String,
    pub bridge: String,
    pub subnet: u8,
    pub hosts: Vec<Host>,
    pub opts: Opts,
    /// When every host was first seen live and hearing every other (`wait_ready`).
    pub ready_at: Option<Instant>,
    namespaces: Vec<String>,
    loops: Vec<faultfs::LoopDev>,
    fs: Option<faultfs::FaultFs>,
    dir: Option<tempfile::TempDir>,
    delayer: Option<Delayer>,
}

pub fn view(slot: usize) -> String {
    format!("h{slot}")
}

impl Pool {
    /// Formats the disk (T = `opts.t_ms`, 4 s by default), builds the namespaces and starts one daemon per host.
    pub fn start(opts: Opts) -> Pool {
        cleanup_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("diskbeat-netns-{id}-"))
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let mut pool = Pool {
            bridge: format!("dbb-{id}"),
            id,
            subnet: 20 + (n % 200) as u8,
            hosts: Vec::new(),
            opts: opts.clone(),
            ready_at: None,
            namespaces: Vec::new(),
            loops: Vec::new(),
            fs: None,
            dir: Some(dir),
            delayer: None,
        };
        let devs = pool.setup_disk();
        pool.setup_network(&devs);
        if !opts.defer_spawn {
            for i in 0..opts.hosts {
                pool.spawn(i);
            }
        }
        pool
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    fn setup_disk(&mut self) -> Vec<PathBuf> {
        let hosts = self.opts.hosts;
        let devs: Vec<PathBuf> = if self.opts.faultfs {
            let backing = self.dir().join("backing");
            std::fs::create_dir(&backing).unwrap();
            std::fs::File::create(backing.join("disk.img")).and_then(|f| f.set_len(32 << 20)).unwrap();
            let views: Vec<String> = (0..hosts).map(view).collect();
            let views: Vec<&str> = views.iter().map(String::as_str).collect();
            self.fs = Some(faultfs::FaultFs::start(&backing, &views).expect("start faultfs"));
            for v in &views {
                let file = self.fs.as_ref().unwrap().path(v, "disk.img");
                let lo = faultfs::LoopDev::attach(&file, Some(512)).expect("losetup");
                assert_eq!(lo.direct_io(), Some(true), "loop device over view {v} without direct I/O");
                self.loops.push(lo);
            }
            self.loops.iter().map(|l| l.path().to_path_buf()).collect()
        } else {
            let file = self.dir().join("disk.img");
            std::fs::File::create(&file).and_then(|f| f.set_len(32 << 20)).unwrap();
            let lo = faultfs::LoopDev::attach(&file, Some(512)).expect("losetup");
            let dev = lo.path().to_path_buf();
            self.loops.push(lo);
            vec![dev; hosts]
        };
        let timeout = format!("{}ms", self.opts.t_ms);
        let out = common::run(&[
            "mkfs",
            devs[0].to_str().unwrap(),
            "--slots",
            "8",
            "--timeout",
            &timeout,
            "--cluster",
            "netns",
        ]);
        assert!(out.status.success(), "mkfs failed: {}", common::stderr(&out));
        devs
    }

    pub fn ip_of(&self, slot: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, slot as u8 + 1)
    }

    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 254)
    }

    fn setup_network(&mut self, devs: &[PathBuf]) {
        let br = self.bridge.clone();
        sh("ip", &["netns", "add", &br]);
        self.namespaces.push(br.clone());
        sh("ip", &["-n", &br, "link", "set", "lo", "up"]);
        sh("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"]);
        sh("ip", &["-n", &br, "addr", "add", &format!("{}/24", self.bridge_ip()), "dev", "br0"]);
        sh("ip", &["-n", &br, "link", "set", "br0", "up"]);
        for (i, dev) in devs.iter().enumerate() {
            let ns = format!("dbh-{}-{i}", self.id);
            sh("ip", &["netns", "add", &ns]);
            self.namespaces.push(ns.clone());
            let port = format!("v{i}");
            sh(
                "ip",
                &["link", "add", &port, "netns", &br, "type", "veth", "peer", "name", "eth0", "netns", &ns],
            );
            sh("ip", &["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            sh("ip", &["-n", &ns, "addr", "add", &format!("{}/24", self.ip_of(i)), "dev", "eth0"]);
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            let socket = self.dir().join(format!("h{i}.sock"));
            let log = self.dir().join(format!("h{i}.log"));
            self.hosts.push(Host {
                slot: i,
                launch: Launch::default(),
                ns,
                ip: self.ip_of(i),
                socket,
                log,
                dev: dev.clone(),
                child: None,
            });
        }
    }

    /// Starts (or restarts) the daemon of slot `i` in its namespace.
    pub fn spawn(&mut self, i: usize) {
        let bridge_ip = self.bridge_ip().to_string();
        let h = &mut self.hosts[i];
        assert!(h.child.is_none(), "h{i} already runs");
        let mut cmd = match &h.launch.prefix {
            Some(prefix) => {
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]);
                c
            }
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.ns]);
                c
            }
        };
        let fence = h.launch.fence_action.as_deref().unwrap_or("log-only");
        cmd.arg(common::bin())
            .args(["daemon", "--device"])
            .arg(&h.dev)
            .args(["--slot", &i.to_string(), "--name", &format!("h{i}"), "--fence-action", fence])
            .arg("--socket")
            .arg(&h.socket)
            .args(["--hb-addr", &format!("{}:{PORT}", h.ip), "--no-mlock"])
            .args(&h.launch.args);
        if self.opts.isolation {
            cmd.args(["--isolation-addr", &bridge_ip]);
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&h.log).expect("log file");
        // `ip netns exec` execs the daemon: the child's pid is the daemon's (with a `nsenter
        // --pid` prefix it is nsenter's, the daemon being its child).
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn diskbeat daemon");
        h.child = Some(child);
    }

    pub fn pid(&self, i: usize) -> Option<i32> {
        self.hosts[i].child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILL the daemon of slot `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    // --- status -------------------------------------------------------------------------------

    /// One daemon's status JSON (Null if it does not answer).
    pub fn status(&self, i: usize) -> Value {
        let query = || -> std::io::Result<Value> {
            let mut s = UnixStream::connect(&self.hosts[i].socket)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"status\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            serde_json::from_str(&text).map_err(std::io::Error::other)
        };
        query().unwrap_or(Value::Null)
    }

    pub fn statuses(&self) -> Vec<Value> {
        (0..self.hosts.len()).map(|i| self.status(i)).collect()
    }

    /// Statuses, log tails, faultfs state and the nft rules: for failure messages.
    pub fn dump(&self, last: &[Value]) -> String {
        let mut out = String::new();
        for (i, st) in last.iter().enumerate() {
            out += &format!("\n=== status of h{i} ===\n{}\n", serde_json::to_string_pretty(st).unwrap());
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let text = std::fs::read_to_string(&h.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(50).collect();
            out += &format!("\n=== log of h{i} (last 50 lines) ===\n");
            for l in tail.iter().rev() {
                out += l;
                out.push('\n');
            }
            let rules = Command::new("ip").args(["netns", "exec", &h.ns, "nft", "list", "ruleset"]).output();
            if let Ok(r) = rules {
                if !r.stdout.is_empty() {
                    out += &format!("--- nft in h{i} ---\n{}", String::from_utf8_lossy(&r.stdout));
                }
            }
        }
        if let Ok(l) = Command::new("ip").args(["-n", &self.bridge, "-br", "link"]).output() {
            out += &format!("\n=== links in {} ===\n{}", self.bridge, String::from_utf8_lossy(&l.stdout));
        }
        if let Some(Ok(show)) = self.fs.as_ref().map(|f| f.show()) {
            out += &format!("\n=== faultfs ===\n{show}\n");
        }
        out
    }

    /// Polls every status each 100 ms until `cond` holds; panics (with statuses and logs) after
    /// `timeout`. `cond` may panic on an invariant violation: the message is kept.
    pub fn wait_until(
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
                    panic!("pool {}: while waiting for {what}: {msg}{}", self.id, self.dump(&st));
                }
            }
            if start.elapsed() > timeout {
                panic!("pool {}: timed out after {timeout:?} waiting for {what}{}", self.id, self.dump(&st));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls for `duration`, checking `check` on every poll (it panics to fail).
    pub fn hold(&self, duration: Duration, what: &str, mut check: impl FnMut(&[Value])) -> Vec<Value> {
        let end = Instant::now() + duration;
        let mut last = Vec::new();
        self.wait_until(duration + Duration::from_secs(10), what, |st| {
            check(st);
            last = st.to_vec();
            Instant::now() >= end
        });
        last
    }

    /// Every host live, seeing every other live, and hearing every other on the network (the
    /// views on the disk may still lag: see `wait_ready`).
    pub fn wait_hearing(&mut self) -> Vec<Value> {
        self.wait_hearing_first(self.hosts.len())
    }

    /// `wait_hearing` for the first `n` hosts only (the others not spawned yet).
    pub fn wait_hearing_first(&mut self, n: usize) -> Vec<Value> {
        let start = Instant::now();
        let st = self.wait_until(Duration::from_secs(60), "every host live and hearing every other", |st| {
            (0..n).all(|i| {
                state(&st[i]) == "live"
                    && (0..n).filter(|&j| j != i).all(|j| peer_state(&st[i], j) == "live")
                    && hears(&st[i]) == (0..n).collect::<Vec<_>>()
            })
        });
        eprintln!("pool {}: {n} hosts live and hearing each other in {:?}", self.id, start.elapsed());
        self.ready_at = Some(Instant::now());
        st
    }

    /// `wait_hearing`, then until the views on the disk agree too: every host's partition rule
    /// says "whole" over all hosts.
    pub fn wait_ready(&mut self) -> Vec<Value> {
        self.wait_hearing();
        let n = self.hosts.len();
        self.wait_until(Duration::from_secs(20), "the partition rule to see the whole pool", |st| {
            st.iter().all(|s| {
                s["network"]["partition"]["reason"]["reason"] == "whole"
                    && survivors(s) == (0..n).collect::<Vec<_>>()
            })
        })
    }

    // --- network faults -----------------------------------------------------------------------

    /// Cuts host `i` off the network: the bridge side of its veth goes down.
    pub fn cut(&self, i: usize) {
        sh("ip", &["-n", &self.bridge, "link", "set", &format!("v{i}"), "down"]);
    }

    pub fn reconnect(&self, i: usize) {
        sh("ip", &["-n", &self.bridge, "link", "set", &format!("v{i}"), "up"]);
    }

    /// Adds `rule` to the input chain of host `i`'s namespace (inet table `diskbeat_test`).
    pub fn input_rule(&self, i: usize, rule: &str) {
        nft(
            &self.hosts[i].ns,
            &format!(
                "table inet diskbeat_test {{\n  chain input {{ type filter hook input priority 0; policy accept; }}\n}}\n\
                 add rule inet diskbeat_test input {rule}\n"
            ),
        );
    }

    /// Host `i` drops every packet from the hosts in `from` (one direction only).
    pub fn drop_from(&self, i: usize, from: &[usize]) {
        if from.is_empty() {
            return;
        }
        let set: Vec<String> = from.iter().map(|&j| self.ip_of(j).to_string()).collect();
        self.input_rule(i, &format!("ip saddr {{ {} }} counter drop", set.join(", ")));
    }

    /// Splits the pool into `parts`: every host drops packets from the hosts outside its part.
    pub fn split(&self, parts: &[&[usize]]) {
        for part in parts {
            let others: Vec<usize> = (0..self.hosts.len()).filter(|j| !part.contains(j)).collect();
            for &i in *part {
                self.drop_from(i, &others);
            }
        }
    }

    /// Host `i` drops `pct` % of all incoming packets, at random.
    pub fn loss(&self, i: usize, pct: u32) {
        self.input_rule(i, &format!("numgen random mod 100 < {pct} counter drop"));
    }

    /// Every heartbeat between hosts takes `delay` longer: the bridge drops the frames it would
    /// forward, and a userspace delayer on an AF_PACKET socket re-sends them on the destination's
    /// port after `delay`.
    pub fn delay(&mut self, delay: Duration) {
        assert!(self.delayer.is_none());
        let ports: Vec<(Ipv4Addr, String)> =
            (0..self.hosts.len()).map(|i| (self.ip_of(i), format!("v{i}"))).collect();
        self.delayer = Some(Delayer::start(&self.bridge, ports, delay));
        nft(
            &self.bridge,
            "table bridge diskbeat_delay {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    \
             ether type ip udp dport 7788 counter drop\n  }\n}\n",
        );
    }

    /// Frames the delayer re-sent, and heartbeat frames the bridge dropped.
    pub fn delay_counters(&self) -> (u64, u64) {
        let sent = self.delayer.as_ref().map_or(0, |d| d.sent.load(Ordering::Relaxed));
        let rules =
            sh("ip", &["netns", "exec", &self.bridge, "nft", "list", "table", "bridge", "diskbeat_delay"]);
        let dropped = rules
            .split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (sent, dropped)
    }

    // --- disk faults --------------------------------------------------------------------------

    pub fn disk_fault(&self, i: usize, fault: faultfs::Fault) {
        self.fs.as_ref().expect("a faultfs pool").set(&view(i), fault).expect("faultfs set");
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(d) = self.delayer.take() {
            d.stop();
        }
        if let Some(fs) = &self.fs {
            // Hung I/O completes, so the daemons can leave and the loop devices detach.
            let _ = fs.request("clear *");
        }
        for h in &self.hosts {
            if let Some(c) = &h.child {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for h in &mut self.hosts {
            if let Some(mut c) = h.child.take() {
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if matches!(c.try_wait(), Ok(None)) {
                    let _ = c.kill();
                }
                let _ = c.wait();
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // `losetup -d` of a device still open (udev) only sets autoclear: wait for the detach so
        // faultfs can unmount cleanly instead of lazily.
        let files: Vec<PathBuf> = self
            .fs
            .as_ref()
            .map(|fs| (0..self.hosts.len()).map(|i| fs.path(&view(i), "disk.img")).collect())
            .unwrap_or_default();
        self.loops.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !files.is_empty() && Instant::now() < deadline {
            let attached = files.iter().any(|f| {
                Command::new("losetup").arg("-j").arg(f).output().is_ok_and(|o| !o.stdout.is_empty())
            });
            if !attached {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fs = None;
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("pool {}: daemon logs kept in {}", self.id, dir.keep().display());
            }
        }
    }
}

// --- status accessors -----------------------------------------------------------------------------

pub fn state(st: &Value) -> &str {
    st["self"]["state"].as_str().unwrap_or("?")
}

pub fn peer(st: &Value, slot: usize) -> Option<&Value> {
    st["peers"].as_array()?.iter().find(|p| p["slot"] == slot)
}

pub fn peer_state(st: &Value, slot: usize) -> &str {
    peer(st, slot).and_then(|p| p["state"].as_str()).unwrap_or("?")
}

/// The slots this host hears (itself included).
pub fn hears(st: &Value) -> Vec<usize> {
    st["network"]["hears"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64().map(|v| v as usize)).collect())
        .unwrap_or_default()
}

pub fn fenced_at(st: &Value) -> Option<u64> {
    st["self"]["fenced_at_ms"].as_u64()
}

/// `partition`, `storage_lost`, ... of a fencing or fenced host.
pub fn fence_kind(st: &Value) -> &str {
    st["self"]["fence_reason"]["kind"]["reason"].as_str().unwrap_or("")
}

/// The partition rule's reason of a partition fence (`largest`, `lowest_slot`, ...).
pub fn fence_rule(st: &Value) -> &str {
    st["self"]["fence_reason"]["kind"]["rule"]["reason"].as_str().unwrap_or("")
}

pub fn survivors(st: &Value) -> Vec<usize> {
    st["network"]["partition"]["survivors"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64().map(|v| v as usize)).collect())
        .unwrap_or_default()
}

pub fn drops(st: &Value, reason: &str) -> u64 {
    st["network"]["drops"][reason].as_u64().unwrap_or(0)
}

pub fn riding(st: &Value) -> bool {
    st["network"]["riding_through"] == true
}

/// Whether the host is fencing or fenced.
pub fn gone(st: &Value) -> bool {
    matches!(state(st), "self_fencing" | "fenced")
}

pub fn events_with(st: &Value, needle: &str) -> Vec<(u64, String)> {
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

// --- raw sockets in a namespace ---------------------------------------------------------------

/// Moves the calling thread into network namespace `ns`: sockets it creates afterwards live
/// there (setns(CLONE_NEWNET) is per thread).
pub fn enter_netns(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("open /run/netns entry");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `f` on a thread inside namespace `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .expect("thread in netns panicked")
}

/// An AF_PACKET socket seeing every frame of every interface of its namespace.
pub struct PacketSocket(OwnedFd);

const PACKET_OUTGOING: u8 = 4;

impl PacketSocket {
    pub fn open() -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        let s = PacketSocket(unsafe { OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval { tv_sec: 0, tv_usec: 5_000 };
        // SAFETY: valid fd, pointer and length of a timeval.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        s
    }

    /// One frame: (length, interface index, packet type), or None after the 5 ms timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, i32, u8)> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and sll are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut sll as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        (n > 0).then_some((n as usize, sll.sll_ifindex, sll.sll_pkttype))
    }

    /// Sends a whole Ethernet frame out of interface `ifindex`.
    pub fn send(&self, ifindex: i32, frame: &[u8]) {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sll are valid for the lengths given.
        unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
        }
    }
}

/// An IPv4/UDP datagram in an Ethernet frame: (source, destination, destination port, payload).
pub fn parse_udp(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, &[u8])> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < ihl + 8 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    Some((src, dst, dport, &udp[8..]))
}

/// Heartbeat datagrams seen crossing the bridge of namespace `ns` for `duration` (each once:
/// frames are seen on the ingress port only).
pub fn capture_heartbeats(ns: &str, duration: Duration) -> Vec<Vec<u8>> {
    in_netns(ns, move || {
        let sock = PacketSocket::open();
        let mut buf = vec![0u8; 65536];
        let mut out: Vec<Vec<u8>> = Vec::new();
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let Some((n, _, pkttype)) = sock.recv(&mut buf) else { continue };
            if pkttype == PACKET_OUTGOING {
                continue;
            }
            if let Some((_, _, PORT, payload)) = parse_udp(&buf[..n]) {
                if !out.iter().any(|p| p[..] == payload[..]) {
                    out.push(payload.to_vec());
                }
            }
        }
        out
    })
}

/// The userspace delayer of [`Pool::delay`].
pub struct Delayer {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delayer {
    /// `ports`: each host's address and the bridge port (veth) it sits behind.
    fn start(bridge_ns: &str, ports: Vec<(Ipv4Addr, String)>, delay: Duration) -> Delayer {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let ns = bridge_ns.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let index = |name: &str| {
                let c = std::ffi::CString::new(name).unwrap();
                // SAFETY: a valid C string.
                let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
                assert!(i > 0, "no interface {name}");
                i as i32
            };
            let ports: Vec<(Ipv4Addr, i32)> = ports.iter().map(|(a, n)| (*a, index(n))).collect();
            let sock = PacketSocket::open();
            ready_tx.send(()).unwrap();
            let mut queue: std::collections::VecDeque<(Instant, i32, Vec<u8>)> = Default::default();
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                if let Some((n, ifindex, pkttype)) = sock.recv(&mut buf) {
                    let frame = &buf[..n];
                    let from_port = ports.iter().any(|p| p.1 == ifindex);
                    if pkttype != PACKET_OUTGOING && from_port {
                        if let Some((_, dst, PORT, _)) = parse_udp(frame) {
                            if let Some(&(_, out)) = ports.iter().find(|p| p.0 == dst) {
                                // The sender's checksum may be left to an offload that never
                                // ran (veth): zero it, "no checksum" for UDP over IPv4.
                                let mut frame = frame.to_vec();
                                let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
                                frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
                                queue.push_back((Instant::now() + delay, out, frame));
                            }
                        }
                    }
                }
                while queue.front().is_some_and(|q| q.0 <= Instant::now()) {
                    let (_, out, frame) = queue.pop_front().unwrap();
                    sock.send(out, &frame);
                    sent2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("delayer started");
        Delayer { stop, sent, thread: Some(thread) }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
