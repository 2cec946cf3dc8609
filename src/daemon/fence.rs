//! Carrying out a fence action. Shared by the heartbeat loop and the backup watchdog thread;
//! whichever comes first acts, once.

use super::config::FenceAction;
use crate::core::FenceReason;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Ensures the action runs once per process.
pub struct Fencer {
    action: FenceAction,
    started: AtomicBool,
    exec_timeout: Duration,
}

impl Fencer {
    pub fn new(action: FenceAction, exec_timeout: Duration) -> Fencer {
        Fencer { action, started: AtomicBool::new(false), exec_timeout }
    }

    pub fn has_fenced(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Fences now. Returns false if it had already been done. With `Reboot` it does not return.
    pub fn fence(&self, reason: &str) -> bool {
        if self.started.swap(true, Ordering::SeqCst) {
            return false;
        }
        tracing::error!(reason, action = ?self.action, "SELF-FENCING");
        match &self.action {
            FenceAction::LogOnly => {
                tracing::error!("fence action is log-only: this host keeps running (test/dry-run mode)");
            }
            FenceAction::Reboot => {
                // sysrq 'b': immediate reboot without syncing or unmounting: nothing may run on.
                if let Err(e) = std::fs::write("/proc/sysrq-trigger", b"b") {
                    tracing::error!(error = %e, "sysrq reboot failed; trying reboot(2)");
                    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
                }
                // If both failed we must not go on as if fenced: stop the process at least.
                std::process::abort();
            }
            FenceAction::Exec(cmd) => {
                match std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("DISKBEAT_FENCE_REASON", reason)
                    .spawn()
                {
                    Ok(mut child) => {
                        let deadline = std::time::Instant::now() + self.exec_timeout;
                        loop {
                            match child.try_wait() {
                                Ok(Some(status)) => {
                                    tracing::error!(%status, "fence command finished");
                                    break;
                                }
                                Ok(None) if std::time::Instant::now() < deadline => {
                                    std::thread::sleep(Duration::from_millis(10))
                                }
                                _ => {
                                    tracing::error!(
                                        "fence command still running after {:?}; not waiting",
                                        self.exec_timeout
                                    );
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot run the fence command"),
                }
            }
        }
        true
    }
}

pub fn describe(reason: &FenceReason) -> String {
    match reason {
        FenceReason::StorageLost { since_ms } => {
            format!("no successful heartbeat write and read since monotonic {since_ms} ms (storage lost)")
        }
        FenceReason::ForeignWrite => "another host is writing our slot".into(),
        FenceReason::FenceRequest { sender_slot, request_id } => {
            if *sender_slot == crate::format::mailbox::SENDER_TOOL {
                format!("fence request {request_id} from the fence tool")
            } else {
                format!("fence request {request_id} from slot {sender_slot}")
            }
        }
    }
}
