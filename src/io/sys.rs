//! Small system interfaces the daemon needs (scheduling, watchdog device, boot id). With the
//! engines (`uring.rs`, `mod.rs`) and `device.rs`, the only `unsafe` in the crate.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);

/// Runs the calling thread (and threads it creates later) under SCHED_RR at `priority`.
pub fn set_sched_rr(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: `param` is a valid sched_param that lives across the call; pid 0 = this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A hardware watchdog (Linux watchdog API). Fed when the node says so (after verified cycles,
/// and by the network thread until the storage deadline or on ride-through evidence), so a hung
/// daemon or a lost disk lets it fire.
pub struct Watchdog {
    file: File,
    /// A FIFO read by a watchdog emulator (tests; machines without a watchdog device): the same
    /// operations as text lines (`timeout S`, `keepalive`, `V`), tools/watchdog-emu.sh.
    emulated: bool,
}

impl Watchdog {
    /// Opens and arms `path` with a timeout of `timeout_s` seconds.
    pub fn open(path: &Path, timeout_s: u32) -> std::io::Result<Watchdog> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        if std::fs::metadata(path)?.file_type().is_fifo() {
            // Non-blocking: fails at once (ENXIO) when no emulator holds the FIFO open.
            let file = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path)?;
            let w = Watchdog { file, emulated: true };
            w.line(&format!("timeout {timeout_s}\n"))?;
            return Ok(w);
        }
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut t = timeout_s as libc::c_int;
        // SAFETY: the ioctl reads and writes one c_int we own; the fd is open.
        unsafe { wdioc_settimeout(file.as_raw_fd(), &mut t) }.map_err(std::io::Error::from)?;
        Ok(Watchdog { file, emulated: false })
    }

    fn line(&self, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        (&self.file).write_all(text.as_bytes())
    }

    pub fn feed(&self) -> std::io::Result<()> {
        if self.emulated {
            return self.line("keepalive\n");
        }
        let mut dummy: libc::c_int = 0;
        // SAFETY: WDIOC_KEEPALIVE takes (and ignores) an int pointer; the fd is open.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut dummy) }.map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Makes the watchdog fire as soon as it can: the shortest timeout (1 s), never fed again.
    pub fn expire(&self) -> std::io::Result<()> {
        if self.emulated {
            return self.line("timeout 1\n");
        }
        let mut t: libc::c_int = 1;
        // SAFETY: the ioctl reads and writes one c_int we own; the fd is open.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut t) }.map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Disarms on a clean stop ("magic close": write 'V' before closing).
    pub fn disarm(mut self) -> std::io::Result<()> {
        use std::io::Write;
        if self.emulated {
            return self.line("V\n");
        }
        self.file.write_all(b"V")
    }
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): changes at every boot. `None` if
/// it cannot be read.
pub fn boot_id() -> Option<uuid::Uuid> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    uuid::Uuid::parse_str(text.trim()).ok()
}
