//! Harness for the exec-driver failover tests (tests/failover.rs, tests/failover_hostile.rs): a
//! pool of real `diskbeat daemon` processes on one loop device, each with the exec driver over
//! tools/vm-hook-procs.sh (VMs are processes, one hook state directory per host), an emulated
//! watchdog (tools/watchdog-emu.sh) when asked, and T = 4 s. No namespaces. Hosts are "killed" by
//! killing their daemon and their VM processes. `Drop` kills every daemon, watchdog and VM process
//! and detaches the loop device, also when the test panics.
#![allow(dead_code)]

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pools' base timeout T.
pub const T_MS: u64 = 4000;

pub struct Host {
    pub slot: u32,
    /// The hook's state directory (DISKBEAT_HOOK_STATE).
    pub state: PathBuf,
    pub socket: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
    /// Every hook call of this host's daemon, one line each (DISKBEAT_HOOK_LOG), when the pool
    /// logs hook calls ([`Pool::log_hook_calls`]).
    pub hook_log: PathBuf,
    pub daemon: Option<Child>,
    pub watchdog: Option<Child>,
}

impl Host {
    /// `diskbeat status --json` of this host's daemon, `None` when it does not answer.
    pub fn status(&self) -> Option<Value> {
        let out = run(&["status", "--socket", self.socket.to_str().unwrap(), "--json"]);
        out.status.success().then(|| stdout_json(&out))
    }
    /// Kills the daemon and every VM process: a power loss.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, pid) in running(&self.state) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The VMs running in a procs-hook state directory: name -> pid (checked against /proc).
pub fn running(state: &Path) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(state) else { return out };
    for e in dir.flatten() {
        let p = e.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".pid")) else {
            continue;
        };
        let Some(pid) = std::fs::read_to_string(&p).ok().and_then(|t| t.trim().parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let first = cmd.split(|&b| b == 0).next().unwrap_or_default();
        if first == format!("diskbeat-procvm-{name}").as_bytes() {
            out.insert(name.to_string(), pid);
        }
    }
    out
}

pub fn hook() -> String {
    repo().join("tools/vm-hook-procs.sh").display().to_string()
}

/// Runs the procs hook by hand (as an administrator would) on the host whose hook state is
/// `state`: `HOOK OP -- NAME` with `stdin`; panics unless it succeeds.
pub fn hook_call(state: &Path, op: &str, name: &str, stdin: &str) {
    std::fs::create_dir_all(state).unwrap();
    let mut c = Command::new(hook())
        .args([op, "--", name])
        .env("DISKBEAT_HOOK_STATE", state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "hook {op} {name}: {}", String::from_utf8_lossy(&out.stderr));
}

pub struct Pool {
    pub lo: LoopDev,
    pub dir: tempfile::TempDir,
    pub hosts: Vec<Host>,
    /// Set by the checker the moment a VM runs on two hosts.
    pub twice: Arc<Mutex<Option<String>>>,
    pub stop: Arc<AtomicBool>,
    /// Daemons spawned from now on log their hook calls to `Host::hook_log`.
    pub log_hook_calls: bool,
    /// Network heartbeats on loopback (`--hb-addr 127.0.0.1:PORT`, one port per slot from this
    /// base); `None`: disk only.
    pub hb_port_base: Option<u16>,
    /// A config file every daemon is started with (`--config`; flags still win).
    pub config: Option<PathBuf>,
}

impl Pool {
    pub fn new(n: u32) -> Pool {
        Pool::with_t(n, T_MS)
    }

    /// A pool formatted with base timeout `t_ms` (the waits in the tests assume [`T_MS`]).
    pub fn with_t(n: u32, t_ms: u64) -> Pool {
        let lo = LoopDev::new("64M", 512);
        let t = format!("{t_ms}ms");
        let out = run(&["mkfs", lo.s(), "--slots", &n.to_string(), "--timeout", &t, "--cluster", "fotest"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let dir = tempfile::tempdir().unwrap();
        let hosts = (0..n)
            .map(|slot| Host {
                slot,
                state: dir.path().join(format!("vms-{slot}")),
                socket: dir.path().join(format!("h{slot}.sock")),
                log: dir.path().join(format!("h{slot}.log")),
                hook_log: dir.path().join(format!("hook{slot}.log")),
                daemon: None,
                watchdog: None,
            })
            .collect();
        Pool {
            lo,
            dir,
            hosts,
            twice: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(false)),
            log_hook_calls: false,
            hb_port_base: None,
            config: None,
        }
    }

    /// Turns network heartbeats on (loopback) for daemons spawned from now on.
    pub fn with_network(&mut self) {
        // Distinct per test process: tests run in parallel.
        self.hb_port_base = Some(20_000 + (std::process::id() % 2000) as u16 * 16);
    }

    /// Starts slot `i`'s daemon with the exec driver, `memory_mib` for VMs, and (if `watchdog`)
    /// an emulated watchdog that kills the daemon and its VMs when not fed.
    pub fn spawn(&mut self, i: usize, memory_mib: u64, watchdog: bool) {
        self.spawn_with_hook(i, memory_mib, watchdog, &hook());
    }

    /// [`Pool::spawn`] with another exec hook (a wrapper around the procs hook).
    pub fn spawn_with_hook(&mut self, i: usize, memory_mib: u64, watchdog: bool, hook: &str) {
        let log_hook_calls = self.log_hook_calls;
        let h = &mut self.hosts[i];
        std::fs::create_dir_all(&h.state).unwrap();
        // The fence action kills this host's VM processes (a reboot, for VMs that are processes).
        let fence = self.dir.path().join(format!("fence{i}.sh"));
        std::fs::write(
            &fence,
            format!(
                "#!/bin/sh\nfor f in {}/*.pid; do kill -9 $(cat $f) 2>/dev/null; done\nexit 0\n",
                h.state.display()
            ),
        )
        .unwrap();
        let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(&fence, mode).unwrap();
        let mut args: Vec<String> = [
            "daemon",
            "--device",
            self.lo.s(),
            "--slot",
            &h.slot.to_string(),
            "--name",
            &format!("h{i}"),
            "--no-mlock",
            "--socket",
            h.socket.to_str().unwrap(),
            "--vm-driver",
            &format!("exec:{hook}"),
            "--vm-memory-mib",
            &memory_mib.to_string(),
            "--fence-action",
            &format!("exec:{}", fence.display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(base) = self.hb_port_base {
            args.extend(["--hb-addr".to_string(), format!("127.0.0.1:{}", base + h.slot as u16)]);
        }
        if let Some(c) = &self.config {
            args.extend(["--config".to_string(), c.display().to_string()]);
        }
        let pidfile = self.dir.path().join(format!("h{i}.pid"));
        if watchdog {
            let fifo = self.dir.path().join(format!("wd{i}"));
            let kill = format!(
                "kill -9 $(cat {pid}) 2>/dev/null; for f in {state}/*.pid; do kill -9 $(cat $f) 2>/dev/null; done",
                pid = pidfile.display(),
                state = h.state.display()
            );
            let w = Command::new(repo().join("tools/watchdog-emu.sh"))
                .args([fifo.to_str().unwrap(), "sh", "-c", &kill])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.path().join(format!("wd{i}.log"))).unwrap())
                .spawn()
                .unwrap();
            h.watchdog = Some(w);
            let start = Instant::now();
            while !fifo.exists() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            args.extend(["--watchdog".to_string(), fifo.display().to_string()]);
        }
        let mut cmd = Command::new(bin());
        cmd.args(&args)
            .env("DISKBEAT_HOOK_STATE", &h.state)
            .env("DISKBEAT_HOOK_MEMORY_MIB", "1000000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&h.log).unwrap());
        if log_hook_calls {
            cmd.env("DISKBEAT_HOOK_LOG", &h.hook_log);
        }
        let child = cmd.spawn().unwrap();
        std::fs::write(&pidfile, child.id().to_string()).unwrap();
        h.daemon = Some(child);
    }

    /// Starts a VM on slot `i` through the hook (as an administrator would) and protects it.
    /// Returns its UUID.
    pub fn vm(&self, i: usize, name: &str, memory_mib: u64, level: &str, order: Option<i64>) -> uuid::Uuid {
        let h = &self.hosts[i];
        let uuid = uuid::Uuid::new_v4();
        hook_call(
            &h.state,
            "start",
            name,
            &format!(r#"{{"name":"{name}","uuid":"{uuid}","definition":"memory_mib={memory_mib} vcpus=1"}}"#),
        );
        let order = order.map_or(String::new(), |o| format!(r#","order":{o}"#));
        hook_call(&h.state, "protect", name, &format!(r#"{{"level":"{level}"{order}}}"#));
        uuid
    }

    /// Every ~50 ms until `stop`: fails the test (through `twice`) the moment a VM runs on two hosts.
    pub fn start_checker(&self) -> std::thread::JoinHandle<()> {
        let dirs: Vec<PathBuf> = self.hosts.iter().map(|h| h.state.clone()).collect();
        let (twice, stop) = (self.twice.clone(), self.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (i, d) in dirs.iter().enumerate() {
                    for name in running(d).into_keys() {
                        if let Some(j) = seen.insert(name.clone(), i) {
                            twice
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("VM {name} runs on hosts {j} and {i}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    /// Where each running VM runs: name -> host indexes.
    pub fn where_runs(&self) -> BTreeMap<String, Vec<usize>> {
        let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            for name in running(&h.state).into_keys() {
                m.entry(name).or_default().push(i);
            }
        }
        m
    }

    /// Every daemon's log.
    pub fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!("--- slot {} ---\n{}", h.slot, std::fs::read_to_string(&h.log).unwrap_or_default())
            })
            .collect()
    }

    pub fn assert_never_twice(&self) {
        if let Some(t) = self.twice.lock().unwrap().as_ref() {
            panic!("{t}\n{}", self.logs());
        }
    }

    /// The `vms` part of every host's status (`None`: it does not answer).
    pub fn vms_status(&self) -> Vec<Option<Value>> {
        self.hosts.iter().map(|h| h.status().map(|s| s["vms"].clone())).collect()
    }

    /// Waits until `cond` holds for the pool, checking the no-VM-twice invariant all along.
    pub fn wait(&self, what: &str, limit: Duration, cond: impl Fn(&Pool) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.assert_never_twice();
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; VMs: {:?}\nvms status: {:#?}\n{}",
            self.where_runs(),
            self.vms_status(),
            self.logs()
        );
    }

    /// Slot `i`'s daemon is live and sees every slot in `peers` live.
    pub fn live(&self, i: usize, peers: &[u64]) -> bool {
        self.hosts[i].status().is_some_and(|s| {
            s["self"]["state"] == "live"
                && peers.iter().all(|&p| {
                    s["peers"].as_array().unwrap().iter().any(|x| x["slot"] == p && x["state"] == "live")
                })
        })
    }

    /// Every daemon is live and sees every other slot live.
    pub fn all_live(&self) -> bool {
        let n = self.hosts.len() as u64;
        (0..n).all(|i| self.live(i as usize, &(0..n).filter(|&s| s != i).collect::<Vec<_>>()))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in &mut self.hosts {
            h.kill();
        }
    }
}

/// Slot `i` has published `n` VMs (its last completed extent write).
pub fn published(p: &Pool, i: usize, n: usize) -> bool {
    p.hosts[i].status().is_some_and(|s| s["vms"]["published_vms"] == n)
}
