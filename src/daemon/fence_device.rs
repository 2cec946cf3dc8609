//! Fence devices: runs a peer's fence agent when the node asks (`Action::FenceDevice`), on a
//! thread of its own so the heartbeat loop never waits for a BMC. The rule of when to call and
//! what a result proves is the node's (`core::Node`, docs/SAFETY.md "Fence devices"); this only
//! executes: `off`, then `status` until it reports OFF, within the device timeout.
//!
//! Agents follow fence-agents' conventions, as Pacemaker's fencer runs them: the arguments as
//! `key=value` lines on stdin (never in argv: `ps` would show a BMC password), `action=off` and
//! `action=status`; exit 0 success (status: ON), 2 status OFF, anything else failure.

use super::config::FenceDevice;
use crate::core::DeviceOutcome;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Agent output kept for the log (the rest is read and dropped).
const OUTPUT_KEEP_BYTES: usize = 2048;
/// How often `status` is asked again while it still says ON.
const STATUS_POLL: Duration = Duration::from_millis(500);

/// What the node asked.
#[derive(Debug, Clone)]
pub struct Request {
    pub slot: u32,
    pub host_name: String,
    pub host_uuid: uuid::Uuid,
    pub generation: u64,
    pub attempt: u32,
}

/// What the device did, for `Node::handle_fence_device`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub slot: u32,
    pub host_uuid: uuid::Uuid,
    pub generation: u64,
    pub outcome: DeviceOutcome,
}

/// The daemon's side: send requests, collect answers.
pub struct Devices {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
    /// Set when an answer is waiting: the loop stops sleeping.
    pub ready: Arc<AtomicBool>,
}

impl Devices {
    /// Starts the dispatcher thread. `default_timeout_ms`: [`crate::timing::Timing::fence_device_timeout_ms`].
    pub fn spawn(devices: BTreeMap<String, FenceDevice>, default_timeout_ms: u64) -> Devices {
        let (requests, rx) = std::sync::mpsc::channel::<Request>();
        let (tx, answers) = std::sync::mpsc::channel::<Answer>();
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        std::thread::Builder::new()
            .name("fence-devices".into())
            .spawn(move || {
                for req in rx {
                    // One worker per call: two dead hosts are fenced in parallel.
                    let dev = devices.get(&req.host_name).cloned();
                    let (tx, flag) = (tx.clone(), flag.clone());
                    let _ = std::thread::Builder::new().name("fence-device".into()).spawn(move || {
                        let outcome = match dev {
                            Some(d) => call(&d, &req, d.timeout_ms.unwrap_or(default_timeout_ms)),
                            None => {
                                tracing::error!(slot = req.slot, host = %crate::format::escape_name(&req.host_name),
                                    "no fence device configured for this host");
                                DeviceOutcome::Failed
                            }
                        };
                        let _ = tx.send(Answer {
                            slot: req.slot,
                            host_uuid: req.host_uuid,
                            generation: req.generation,
                            outcome,
                        });
                        flag.store(true, Ordering::SeqCst);
                    });
                }
            })
            .expect("spawn the fence-device thread");
        Devices { requests, answers, ready }
    }

    pub fn request(&self, r: Request) {
        let _ = self.requests.send(r);
    }

    /// Answers that arrived (never blocks).
    pub fn answers(&self) -> Vec<Answer> {
        self.ready.store(false, Ordering::SeqCst);
        self.answers.try_iter().collect()
    }
}

/// `off`, then `status` until OFF, all within `timeout_ms`.
pub fn call(d: &FenceDevice, req: &Request, timeout_ms: u64) -> DeviceOutcome {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let host = crate::format::escape_name(&req.host_name);
    let agent = d.agent.display().to_string();
    match run(d, "off", deadline) {
        Run::Exit(0, _) => {}
        Run::Exit(code, out) => {
            tracing::error!(slot = req.slot, %host, %agent, code, output = %out, "fence device 'off' failed");
            return DeviceOutcome::Failed;
        }
        Run::TimedOut => {
            tracing::error!(slot = req.slot, %host, %agent, timeout_ms, "fence device 'off' timed out: killed");
            return DeviceOutcome::TimedOut;
        }
        Run::NotStarted(e) => {
            tracing::error!(slot = req.slot, %host, %agent, error = %e, "fence device could not be run");
            return DeviceOutcome::Failed;
        }
    }
    loop {
        match run(d, "status", deadline) {
            Run::Exit(2, _) => return DeviceOutcome::Off,
            Run::Exit(0, _) => {
                // Still ON: some devices take a moment after `off` returns.
                if Instant::now() + STATUS_POLL >= deadline {
                    tracing::error!(slot = req.slot, %host, %agent, "fence device still reports ON after 'off'");
                    return DeviceOutcome::Failed;
                }
                std::thread::sleep(STATUS_POLL);
            }
            Run::Exit(code, out) => {
                tracing::error!(slot = req.slot, %host, %agent, code, output = %out, "fence device 'status' failed");
                return DeviceOutcome::Failed;
            }
            Run::TimedOut => return DeviceOutcome::TimedOut,
            Run::NotStarted(e) => {
                tracing::error!(slot = req.slot, %host, %agent, error = %e, "fence device could not be run");
                return DeviceOutcome::Failed;
            }
        }
    }
}

enum Run {
    Exit(i32, String),
    TimedOut,
    NotStarted(String),
}

/// Runs the agent once with `action`, the arguments on stdin; killed (its whole process group)
/// at `deadline`.
fn run(d: &FenceDevice, action: &str, deadline: Instant) -> Run {
    let mut child = match Command::new(&d.agent)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Run::NotStarted(e.to_string()),
    };
    let mut input = format!("action={action}\n");
    for (k, v) in &d.args {
        input.push_str(k);
        input.push('=');
        input.push_str(v);
        input.push('\n');
    }
    if let Some(mut stdin) = child.stdin.take() {
        // An agent that does not read stdin gets EPIPE: its exit status still counts.
        let _ = stdin.write_all(input.as_bytes());
    }
    let readers: Vec<_> = [
        child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = OUTPUT_KEEP_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        })
    })
    .collect();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Run::NotStarted(e.to_string()),
        }
    };
    // The group is gone (or the agent left children holding the pipes: do not wait for them).
    let mut out = String::new();
    for r in readers {
        if status.is_none() || r.is_finished() {
            if let Ok(bytes) = r.join() {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    let out = crate::format::escape_name(out.trim()).into_owned();
    match status {
        None => Run::TimedOut,
        Some(s) => Run::Exit(s.code().unwrap_or(-1), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(script: &str, dir: &std::path::Path) -> FenceDevice {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("agent");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        FenceDevice { agent: p, args: vec![("secret".into(), "s3cr3t".into())], timeout_ms: None }
    }

    fn req() -> Request {
        Request { slot: 2, host_name: "h2".into(), host_uuid: uuid::Uuid::nil(), generation: 1, attempt: 1 }
    }

    #[test]
    fn off_then_status_off_is_proof() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        // Reads its arguments from stdin like a fence-agents agent; `off` records them.
        let script = format!(
            "args=$(cat); case \"$args\" in *action=off*) echo \"$args\" > {s}; exit 0;; esac; \
             [ -f {s} ] && exit 2; exit 0",
            s = state.display()
        );
        assert_eq!(call(&dev(&script, d.path()), &req(), 5000), DeviceOutcome::Off);
        let args = std::fs::read_to_string(&state).unwrap();
        assert!(args.contains("action=off\n") && args.contains("secret=s3cr3t\n"), "{args}");
    }

    #[test]
    fn failures_and_hangs_prove_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(call(&dev("cat >/dev/null; exit 1", d.path()), &req(), 5000), DeviceOutcome::Failed);
        // `off` succeeds but the host never reports OFF.
        assert_eq!(call(&dev("cat >/dev/null; exit 0", d.path()), &req(), 1200), DeviceOutcome::Failed);
        let t = Instant::now();
        assert_eq!(call(&dev("sleep 30", d.path()), &req(), 300), DeviceOutcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(10), "the agent was killed at its deadline");
        let missing = FenceDevice { agent: "/nonexistent/agent".into(), args: vec![], timeout_ms: None };
        assert_eq!(call(&missing, &req(), 1000), DeviceOutcome::Failed);
    }
}
