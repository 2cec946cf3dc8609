//! Test harness for faultfs: std only, so any crate's tests can include it with
//!
//! ```ignore
//! #[path = "../tools/faultfs/src/harness.rs"]
//! mod harness;
//! ```
//!
//! `FaultFs` spawns the `faultfs` binary and unmounts + stops it on drop; `LoopDev` attaches a
//! loop device and detaches it on drop. Declare loop devices AFTER the `FaultFs` they sit on
//! so they are dropped (detached) first.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Faults for one view. `Fault::default()` is healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// Reads fail with EIO.
    pub eio_read: bool,
    /// Writes and fsyncs fail with EIO.
    pub eio_write: bool,
    /// Added latency before reads, writes and fsyncs are served.
    pub delay_ms: u64,
    /// Reads, writes and fsyncs block until the fault is changed or cleared.
    pub hang: bool,
}

impl Fault {
    pub fn eio_read() -> Self {
        Fault { eio_read: true, ..Fault::default() }
    }
    pub fn eio_write() -> Self {
        Fault { eio_write: true, ..Fault::default() }
    }
    pub fn eio() -> Self {
        Fault { eio_read: true, eio_write: true, ..Fault::default() }
    }
    pub fn delay(ms: u64) -> Self {
        Fault { delay_ms: ms, ..Fault::default() }
    }
    pub fn hang() -> Self {
        Fault { hang: true, ..Fault::default() }
    }

    /// The control-protocol words of this fault (`eio_read eio_write delay_ms=N hang`).
    pub fn to_words(self) -> String {
        let mut w = Vec::new();
        if self.eio_read {
            w.push("eio_read".to_string());
        }
        if self.eio_write {
            w.push("eio_write".to_string());
        }
        if self.delay_ms > 0 {
            w.push(format!("delay_ms={}", self.delay_ms));
        }
        if self.hang {
            w.push("hang".to_string());
        }
        w.join(" ")
    }
}

/// Why faultfs tests cannot run here, or `None` if they can (root, /dev/fuse, loop devices).
///
/// Under CI (`CI` set and non-empty) a missing requirement is a failure, not a skip: this
/// panics with the reason, so a CI run without root cannot pass by skipping.
pub fn skip_reason() -> Option<String> {
    let why = missing_requirement()?;
    if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
        panic!(
            "faultfs test cannot run: {why}; CI is set, so it must not be skipped \
             (run CI as root with /dev/fuse and loop devices, or unset CI to skip locally)"
        );
    }
    Some(why)
}

fn missing_requirement() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?")
        .to_string();
    if euid != "0" {
        return Some(format!("needs root (euid {euid}) for FUSE mounts and loop devices"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (modprobe fuse)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("/dev/loop-control is missing (modprobe loop)".into());
    }
    if Command::new("losetup").arg("--version").output().is_err() {
        return Some("losetup not found (install util-linux)".into());
    }
    None
}

/// Locate the faultfs binary: `$FAULTFS_BIN`, then the usual cargo target directories
/// relative to the including crate, then `$PATH`.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FAULTFS_BIN") {
        return Some(PathBuf::from(p));
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = Vec::new();
    // Beside the running test binary (target/<profile>/deps/..): right whatever the target
    // directory is (CARGO_TARGET_DIR, a workspace elsewhere).
    if let Some(profile_dir) =
        std::env::current_exe().ok().and_then(|e| e.parent()?.parent().map(PathBuf::from))
    {
        candidates.push(profile_dir.join("faultfs"));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        for profile in ["debug", "release"] {
            candidates.push(PathBuf::from(&dir).join(profile).join("faultfs"));
        }
    }
    for base in [manifest.clone(), manifest.join("tools/faultfs"), manifest.join("../..")] {
        for profile in ["debug", "release"] {
            candidates.push(base.join("target").join(profile).join("faultfs"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("faultfs")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A running faultfs mount. Drop = release hung requests with EIO, unmount, stop the daemon.
pub struct FaultFs {
    child: Option<Child>,
    backing: PathBuf,
    mountpoint: PathBuf,
    control: PathBuf,
}

impl FaultFs {
    /// Mount `<backing_dir>/mnt` with `views`, using [`find_binary`].
    pub fn start(backing_dir: &Path, views: &[&str]) -> io::Result<FaultFs> {
        let bin = find_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "faultfs binary not found: run `cargo build --manifest-path tools/faultfs/Cargo.toml` \
                 or set FAULTFS_BIN",
            )
        })?;
        Self::start_with(&bin, backing_dir, &backing_dir.join("mnt"), views)
    }

    /// Mount `mountpoint` (created if missing) exposing `backing_dir` under `views`.
    pub fn start_with(
        bin: &Path,
        backing_dir: &Path,
        mountpoint: &Path,
        views: &[&str],
    ) -> io::Result<FaultFs> {
        std::fs::create_dir_all(mountpoint)?;
        let backing = backing_dir.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        let control = backing.join("faultfs.sock");
        let _ = std::fs::remove_file(&control);
        let child = Command::new(bin)
            .arg("mount")
            .arg("--backing")
            .arg(&backing)
            .arg("--mountpoint")
            .arg(&mountpoint)
            .arg("--views")
            .arg(views.join(","))
            .arg("--control")
            .arg(&control)
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut fs = FaultFs { child: Some(child), backing, mountpoint, control };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = fs.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                fs.child = None;
                return Err(io::Error::other(format!(
                    "faultfs exited early with {st} (see its stderr above)"
                )));
            }
            // The daemon binds the control socket only after the mount handshake completed.
            if fs.request("ping").is_ok() && is_mountpoint(&fs.mountpoint) {
                return Ok(fs);
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "faultfs not mounted after 15 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// `MNT/<view>/<file>`.
    pub fn path(&self, view: &str, file: &str) -> PathBuf {
        self.mountpoint.join(view).join(file)
    }

    /// Replace the fault of `view` (parked requests are re-evaluated under the new fault).
    pub fn set(&self, view: &str, fault: Fault) -> io::Result<()> {
        self.request(&format!("set {view} {}", fault.to_words())).map(drop)
    }

    /// Make `view` healthy again; hung requests are served.
    pub fn clear(&self, view: &str) -> io::Result<()> {
        self.request(&format!("clear {view}")).map(drop)
    }

    /// JSON snapshot of faults and per-view op counters.
    pub fn show(&self) -> io::Result<String> {
        self.request("show")
    }

    /// Raw control request; returns the payload of an `ok` reply.
    pub fn request(&self, line: &str) -> io::Result<String> {
        let mut s = UnixStream::connect(&self.control)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        writeln!(s, "{line}")?;
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply)?;
        let reply = reply.trim_end();
        match reply.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim_start().to_string()),
            None => Err(io::Error::other(format!("faultfs: {reply}"))),
        }
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // `shutdown` releases hung requests with EIO before unmounting.
        let _ = self.request("shutdown");
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mountpoint(&self.mountpoint) {
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
        let _ = std::fs::remove_file(&self.control);
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    // Field 5 is the mount point (octal-escaped; our test paths need no escaping).
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

/// An attached loop device. Drop = `losetup -d`.
pub struct LoopDev {
    dev: PathBuf,
}

impl LoopDev {
    /// `losetup --find --show --direct-io=on [--sector-size N] file`.
    pub fn attach(file: &Path, sector_size: Option<u32>) -> io::Result<LoopDev> {
        Self::attach_with(file, true, sector_size)
    }

    pub fn attach_with(file: &Path, direct_io: bool, sector_size: Option<u32>) -> io::Result<LoopDev> {
        let mut cmd = Command::new("losetup");
        cmd.arg("--find").arg("--show").arg(format!("--direct-io={}", if direct_io { "on" } else { "off" }));
        if let Some(n) = sector_size {
            cmd.arg("--sector-size").arg(n.to_string());
        }
        let out = cmd.arg(file).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "losetup {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(LoopDev { dev })
    }

    pub fn path(&self) -> &Path {
        &self.dev
    }

    /// Whether the loop driver really does direct I/O (`/sys/block/loopN/loop/dio`).
    pub fn direct_io(&self) -> Option<bool> {
        let name = self.dev.file_name()?.to_string_lossy().into_owned();
        let s = std::fs::read_to_string(format!("/sys/block/{name}/loop/dio")).ok()?;
        Some(s.trim() == "1")
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // Detach can fail transiently with EBUSY while udev still has the device open.
        for _ in 0..50 {
            match Command::new("losetup").arg("-d").arg(&self.dev).stderr(Stdio::null()).status() {
                Ok(st) if st.success() => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        eprintln!("harness: could not detach {}", self.dev.display());
    }
}
