//! Carrying out a fence action. Shared by the heartbeat loop and the backup deadline thread:
//! attempts are serialized, and once one succeeded no other runs.

use super::config::FenceAction;
use crate::core::interlock::{Gate, Interlock};
use crate::core::{FenceOutcome, FenceReason};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BACKUP_NONE: u8 = 0;
const BACKUP_DONE: u8 = 1;
const BACKUP_FAILED: u8 = 2;

pub struct Fencer {
    action: FenceAction,
    exec_timeout: Duration,
    /// One attempt at a time.
    running: Mutex<()>,
    done: AtomicBool,
    /// The backup thread's last outcome, for the loop to reconcile (taken once).
    backup: AtomicU8,
    /// The fence interlock (`core::interlock`): the VM thread asks it before every start and
    /// publish, the fence before its action. Held only for those calls, never across one.
    pub interlock: Mutex<Interlock>,
}

impl Fencer {
    pub fn new(action: FenceAction, exec_timeout: Duration) -> Fencer {
        Fencer {
            action,
            exec_timeout,
            running: Mutex::new(()),
            done: AtomicBool::new(false),
            backup: AtomicU8::new(BACKUP_NONE),
            interlock: Mutex::new(Interlock::new()),
        }
    }

    /// Whether the action stops this host's VMs when it succeeds (published in every record).
    pub fn stops_vms(&self) -> bool {
        !matches!(self.action, FenceAction::LogOnly)
    }

    /// Whether an attempt succeeded.
    pub fn has_fenced(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// The heartbeat loop's attempt: never waits on another thread. `Waiting` when a VM start
    /// is in flight (the interlock) or the backup thread's attempt is running: the node asks
    /// again shortly. `reboot` does not return unless both reboot paths failed; `exec:` succeeds
    /// only on exit status 0 within the io timeout.
    pub fn fence(&self, reason: &str) -> FenceOutcome {
        let _guard = match self.running.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return FenceOutcome::Waiting,
        };
        self.attempt(reason, false)
    }

    /// The backup thread's and the panic hook's attempt: waits (bounded, on its own thread) for a
    /// VM start in flight and for another attempt in progress.
    pub fn fence_waiting(&self, reason: &str) -> FenceOutcome {
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.attempt(reason, true)
    }

    /// One attempt, under `running`.
    fn attempt(&self, reason: &str, wait: bool) -> FenceOutcome {
        if self.has_fenced() {
            return FenceOutcome::Done;
        }
        // The interlock's rule: no start begins from now on, and the action waits for the starts
        // in flight (bounded): if they do not end, the attempt fails (and is retried) rather than
        // claim the VMs stopped.
        let limit_ms = self.exec_timeout.as_millis() as u64;
        loop {
            let gate = self.interlock().fence_gate(super::now_ms(), limit_ms);
            match gate {
                Gate::Go => break,
                Gate::Wait if wait => std::thread::sleep(Duration::from_millis(5)),
                Gate::Wait => return FenceOutcome::Waiting,
                Gate::Fail => {
                    tracing::error!("a VM start is still in flight: this fence attempt fails and is retried");
                    return FenceOutcome::Failed;
                }
            }
        }
        tracing::error!(reason, action = ?self.action, "SELF-FENCING");
        let outcome = self.run(reason);
        if outcome == FenceOutcome::Done {
            self.done.store(true, Ordering::SeqCst);
        } else {
            tracing::error!(action = ?self.action, "FENCE ACTION FAILED: this host is NOT fenced; retrying");
        }
        outcome
    }

    pub fn interlock(&self) -> std::sync::MutexGuard<'_, Interlock> {
        self.interlock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backup thread's attempt: its outcome is kept for the loop.
    pub fn backup_fence(&self, reason: &str) {
        let code = match self.fence_waiting(reason) {
            FenceOutcome::Done => BACKUP_DONE,
            FenceOutcome::Failed | FenceOutcome::Waiting => BACKUP_FAILED,
        };
        self.backup.store(code, Ordering::SeqCst);
    }

    /// The outcome of a backup attempt not yet reported to the loop.
    pub fn take_backup_result(&self) -> Option<FenceOutcome> {
        match self.backup.swap(BACKUP_NONE, Ordering::SeqCst) {
            BACKUP_DONE => Some(FenceOutcome::Done),
            BACKUP_FAILED => Some(FenceOutcome::Failed),
            _ => None,
        }
    }

    fn run(&self, reason: &str) -> FenceOutcome {
        match &self.action {
            FenceAction::LogOnly => {
                tracing::error!("fence action is log-only: this host keeps running (test/dry-run mode)");
                FenceOutcome::Done
            }
            FenceAction::Reboot => {
                // sysrq 'b': immediate reboot without syncing or unmounting: nothing may run on.
                if let Err(e) = std::fs::write("/proc/sysrq-trigger", b"b") {
                    tracing::error!(error = %e, "sysrq reboot failed; trying reboot(2)");
                }
                if let Some(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT).err() {
                    tracing::error!(error = %e, "reboot(2) failed");
                }
                // Still here: both failed.
                FenceOutcome::Failed
            }
            FenceAction::Exec(cmd) => self.exec(cmd, reason),
        }
    }

    fn exec(&self, cmd: &str, reason: &str) -> FenceOutcome {
        let mut child = match std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("DISKBEAT_FENCE_REASON", reason)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot run the fence command");
                return FenceOutcome::Failed;
            }
        };
        let deadline = std::time::Instant::now() + self.exec_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    tracing::error!(%status, "fence command succeeded");
                    return FenceOutcome::Done;
                }
                Ok(Some(status)) => {
                    tracing::error!(%status, "fence command failed");
                    return FenceOutcome::Failed;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    tracing::error!(
                        "fence command still running after {} ms: killed, counted as failed",
                        self.exec_timeout.as_millis()
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    return FenceOutcome::Failed;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for the fence command");
                    return FenceOutcome::Failed;
                }
            }
        }
    }
}

pub fn describe(reason: &FenceReason) -> String {
    match reason {
        FenceReason::StorageLost { since_ms } => {
            format!("no verified heartbeat since monotonic {since_ms} ms (storage lost)")
        }
        FenceReason::ForeignWrite => "another writer is using our slot".into(),
        FenceReason::DiskChanged => {
            "the heartbeat disk's superblock changed or became invalid (re-formatted or replaced)".into()
        }
        FenceReason::FenceRequest { sender_slot, request_id } => {
            if *sender_slot == crate::format::mailbox::SENDER_TOOL {
                format!("fence request {request_id} from the fence tool")
            } else {
                format!("fence request {request_id} from slot {sender_slot}")
            }
        }
        FenceReason::Partition { rule, survivors_lowest, survivors } => format!(
            "network partition: this host is outside the surviving part ({}{}; {})",
            crate::text::count(u64::from(*survivors), "host", "hosts"),
            survivors_lowest.map(|s| format!(", lowest slot {s}")).unwrap_or_default(),
            crate::daemon::status::partition_reason_text(rule)
        ),
    }
}
