//! The exec driver: a hook command speaking JSON (docs/VMS.md, "Exec hook protocol").
//!
//! `HOOK inventory`, `HOOK start -- NAME` (request on stdin), `HOOK destroy -- NAME`,
//! `HOOK protect -- NAME` (settings on stdin), `HOOK lookup -- UUID`: a name always comes after
//! `--`, so no name is ever taken for an option. Exit status 0 is success; otherwise the first 500 bytes of stderr are the
//! message. Every call is killed after the timeout, so a hung hook never hangs the daemon.

use super::{
    Capacity, DriverError, Inventory, ProtectionSettings, StartRequest, VmDriver, VmInfo, VmRunState,
};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hook timeout when no base timeout T is known (`diskbeat vm`): the daemon's rule
/// (`Timing::vm_call_timeout_ms`, 3 io timeouts) at the default T of 40 s.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// How much of the hook's stderr becomes the error message.
pub const MESSAGE_MAX_BYTES: usize = 500;
/// Most bytes a hook may print on stdout (an inventory of thousands of VMs with their domain XML
/// fits many times over): more is a protocol error, and the hook is killed at once. Whatever the
/// hook prints, the driver holds at most this much of it.
pub const STDOUT_MAX_BYTES: usize = 16 << 20;
/// Bytes of stderr kept (the message is the first [`MESSAGE_MAX_BYTES`]); the rest is read and
/// dropped, so a hook that floods stderr neither blocks nor grows the daemon.
pub const STDERR_KEEP_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct ExecDriver {
    hook: PathBuf,
    timeout_ms: u64,
}

#[derive(serde::Deserialize)]
struct InventoryJson {
    capacity: Capacity,
    vms: Vec<VmJson>,
}

#[derive(serde::Deserialize)]
struct VmJson {
    name: String,
    uuid: uuid::Uuid,
    memory_mib: u64,
    vcpus: u32,
    state: VmRunState,
    #[serde(default)]
    protection: ProtectionSettings,
    definition: String,
}

/// `HOOK lookup -- UUID`'s answer.
#[derive(serde::Deserialize)]
struct LookupJson {
    state: LookupState,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum LookupState {
    Running,
    Stopped,
    Absent,
}

#[derive(serde::Serialize)]
struct StartJson<'a> {
    name: &'a str,
    uuid: uuid::Uuid,
    definition: &'a str,
}

/// What a reader thread hands back: all of stdout, the kept part of stderr, or "stdout passed
/// [`STDOUT_MAX_BYTES`]".
enum Piped {
    Out(Vec<u8>),
    Err(Vec<u8>),
    Overflow,
}

/// What one hook run produced.
struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ExecDriver {
    /// A driver running `hook` with the default timeout ([`DEFAULT_TIMEOUT_MS`]).
    pub fn new(hook: &Path) -> Result<ExecDriver, DriverError> {
        ExecDriver::with_timeout_ms(hook, DEFAULT_TIMEOUT_MS)
    }

    /// A driver whose every hook run is killed after `timeout_ms`.
    pub fn with_timeout_ms(hook: &Path, timeout_ms: u64) -> Result<ExecDriver, DriverError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = hook.display();
        let meta = std::fs::metadata(hook)
            .map_err(|e| DriverError::Unreachable(format!("VM hook {shown}: {e}; check the exec: path")))?;
        if !meta.is_file() {
            return Err(DriverError::Unreachable(format!("VM hook {shown} is not a regular file")));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(DriverError::Unreachable(format!(
                "VM hook {shown} is not executable; run `chmod +x {shown}`"
            )));
        }
        Ok(ExecDriver { hook: hook.to_path_buf(), timeout_ms })
    }

    pub fn hook(&self) -> &Path {
        &self.hook
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Runs the hook and returns its output once it exited 0.
    fn call(
        &self,
        op: &'static str,
        name: Option<&str>,
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, DriverError> {
        let vm = name.unwrap_or("").to_string();
        let failed = |message: String| DriverError::Failed { op, vm: vm.clone(), message };
        let out = self.run(op, name, stdin, &failed)?;
        if !out.status.success() {
            // The hook's words reach logs and terminals: control characters escaped (`\n`, `\u{1b}`).
            let head = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(MESSAGE_MAX_BYTES)]);
            let mut text = crate::format::escape_name(head.trim()).into_owned();
            if text.is_empty() {
                text = "(no message on stderr)".into();
            }
            let how = match (out.status.code(), std::os::unix::process::ExitStatusExt::signal(&out.status)) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "failed".to_string(),
            };
            return Err(failed(format!("hook {} {how}: {text}", self.hook.display())));
        }
        Ok(out.stdout)
    }

    fn run(
        &self,
        op: &'static str,
        name: Option<&str>,
        stdin: Option<Vec<u8>>,
        failed: &dyn Fn(String) -> DriverError,
    ) -> Result<Output, DriverError> {
        let mut cmd = Command::new(&self.hook);
        // A name (from the disk or a driver) goes after `--`: a VM named `--help` is a name to
        // any option parser, never an option.
        cmd.arg(op);
        if let Some(name) = name {
            cmd.arg("--").arg(name);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        // Its own process group, so a timeout kills whatever the hook started and waits on.
        cmd.process_group(0);
        // ETXTBSY: the hook was just written and another thread's fork still holds it open for
        // writing (or an installer is replacing it); it clears within milliseconds.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(DriverError::Unreachable(format!(
                        "cannot run VM hook {}: {e}",
                        self.hook.display()
                    )))
                }
            }
        };
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);

        let (tx, rx) = mpsc::channel::<Piped>();
        // Writer and readers on their own threads: a hook that ignores stdin or fills a pipe
        // cannot block us, and the deadline below still holds.
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::thread::spawn(move || {
                // A hook that exits without reading its input is its own business (EPIPE).
                let _ = pipe.write_all(&data);
            });
        }
        let out = child.stdout.take().expect("piped");
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            // One byte past the cap tells "too much" from "exactly the cap".
            let mut buf = Vec::new();
            let _ = out.take(STDOUT_MAX_BYTES as u64 + 1).read_to_end(&mut buf);
            let _ = tx_out.send(if buf.len() > STDOUT_MAX_BYTES { Piped::Overflow } else { Piped::Out(buf) });
            // Dropping the pipe here: a writer still printing gets EPIPE (or SIGPIPE).
        });
        let mut err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut err).take(STDERR_KEEP_BYTES as u64).read_to_end(&mut buf);
            let _ = std::io::copy(&mut err, &mut std::io::sink());
            let _ = tx.send(Piped::Err(buf));
        });

        let kill_group = || {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        };
        let (mut status, mut stdout, mut stderr) = (None, None, None);
        loop {
            let mut step = Duration::from_millis(5);
            // Both readers have sent (or died): only the exit status is still awaited.
            let readers_done = stdout.is_some() && stderr.is_some();
            if !readers_done {
                match rx.recv_timeout(step) {
                    Ok(Piped::Out(b)) => stdout = Some(b),
                    Ok(Piped::Err(b)) => stderr = Some(b),
                    Ok(Piped::Overflow) => {
                        kill_group();
                        let _ = child.wait();
                        return Err(self.protocol(
                            op,
                            format!(
                                "printed more than {} MiB on stdout (the limit) and was killed",
                                STDOUT_MAX_BYTES >> 20
                            ),
                        ));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        stdout.get_or_insert_with(Vec::new);
                        stderr.get_or_insert_with(Vec::new);
                    }
                }
                step = Duration::ZERO;
            }
            if status.is_none() {
                match child.try_wait() {
                    Ok(s) => status = s,
                    Err(e) => {
                        kill_group();
                        let _ = child.wait();
                        return Err(failed(format!("waiting for hook {}: {e}", self.hook.display())));
                    }
                }
            }
            if let (Some(status), Some(_), Some(_)) = (status, &stdout, &stderr) {
                let (stdout, stderr) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
                return Ok(Output { status, stdout, stderr });
            }
            if Instant::now() >= deadline {
                kill_group();
                if status.is_none() {
                    let _ = child.wait();
                    return Err(failed(format!(
                        "hook {} did not finish within {} ms and was killed",
                        self.hook.display(),
                        self.timeout_ms
                    )));
                }
                return Err(failed(format!(
                    "hook {} exited, but a process it started still holds its stdout or stderr \
                     open after {} ms; redirect that process's output",
                    self.hook.display(),
                    self.timeout_ms
                )));
            }
            std::thread::sleep(step);
        }
    }

    fn protocol(&self, op: &str, what: impl std::fmt::Display) -> DriverError {
        DriverError::Protocol(format!("hook {} {op}: {what}", self.hook.display()))
    }
}

impl VmDriver for ExecDriver {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn inventory(&mut self) -> Result<Inventory, DriverError> {
        let out = self.call("inventory", None, None)?;
        let parsed: InventoryJson = serde_json::from_slice(&out).map_err(|e| {
            let head = String::from_utf8_lossy(&out[..out.len().min(200)]).into_owned();
            self.protocol("inventory", format!("{e} (output starts {head:?})"))
        })?;
        let mut vms: Vec<VmInfo> = parsed
            .vms
            .into_iter()
            .map(|v| VmInfo {
                name: v.name,
                uuid: v.uuid,
                memory_mib: v.memory_mib,
                vcpus: v.vcpus,
                state: v.state,
                protection: v.protection,
                definition: v.definition.into_bytes(),
            })
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        let inv = Inventory { capacity: parsed.capacity, vms };
        inv.check().map_err(|why| self.protocol("inventory", why))?;
        Ok(inv)
    }

    fn start(&mut self, vm: &StartRequest<'_>) -> Result<(), DriverError> {
        let definition = std::str::from_utf8(vm.definition)
            .map_err(|e| self.protocol("start", format!("VM '{}': definition is not UTF-8: {e}", vm.name)))?;
        let body = serde_json::to_vec(&StartJson { name: vm.name, uuid: vm.uuid, definition })
            .expect("strings serialize");
        self.call("start", Some(vm.name), Some(body)).map(drop)
    }

    fn destroy(&mut self, name: &str) -> Result<(), DriverError> {
        self.call("destroy", Some(name), None).map(drop)
    }

    fn lookup(&mut self, uuid: uuid::Uuid) -> Result<Option<VmRunState>, DriverError> {
        let text = uuid.to_string();
        let out = self.call("lookup", Some(&text), None)?;
        let parsed: LookupJson = serde_json::from_slice(&out).map_err(|e| {
            let head = String::from_utf8_lossy(&out[..out.len().min(200)]).into_owned();
            self.protocol("lookup", format!("{e} (output starts {head:?})"))
        })?;
        Ok(match parsed.state {
            LookupState::Running => Some(VmRunState::Running),
            LookupState::Stopped => Some(VmRunState::Stopped),
            LookupState::Absent => None,
        })
    }

    fn set_protection(&mut self, name: &str, settings: &ProtectionSettings) -> Result<(), DriverError> {
        let body = serde_json::to_vec(settings).expect("settings serialize");
        self.call("protect", Some(name), Some(body)).map(drop)
    }
}
