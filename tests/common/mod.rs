//! Shared test helpers: real loop devices (via tools/loopdev.sh), the built binary, device hashes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_diskbeat"))
}

/// Tests that need root resources return early (with a note) when not root, or when loop
/// devices are missing. Under CI (`CI` set and non-empty) they panic instead: a CI run that
/// cannot run them must fail, not pass by skipping.
pub fn skip_unless_root() -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        format!("needs root for loop devices (euid {})", nix::unistd::geteuid())
    } else if !Path::new("/dev/loop-control").exists() {
        "/dev/loop-control is missing (modprobe loop)".to_string()
    } else {
        return false;
    };
    if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
        panic!("{why}; CI is set, so this test must not be skipped (run CI as root, or unset CI to skip locally)");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// A loop device over a sparse file with direct I/O on; detached and deleted on drop.
pub struct LoopDev {
    pub dev: PathBuf,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDev {
    pub fn new(size: &str, sector: u32) -> LoopDev {
        let dir = tempfile::Builder::new().prefix("diskbeat-test").tempdir_in("/var/tmp").expect("tempdir");
        let file = dir.path().join("disk.img");
        let out = Command::new(repo().join("tools/loopdev.sh"))
            .args(["create", file.to_str().unwrap(), size, &sector.to_string()])
            .output()
            .expect("run tools/loopdev.sh");
        assert!(out.status.success(), "loopdev create failed: {}", String::from_utf8_lossy(&out.stderr));
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        LoopDev { dev, file, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.dev
    }

    pub fn s(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    /// sha256 of the whole device, read with O_DIRECT (no page cache in the way).
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let bytes = read_direct(&self.dev, 0, None);
        hex(&sha2::Sha256::digest(&bytes))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tools/loopdev.sh"))
            .args(["remove", self.s(), self.file.to_str().unwrap()])
            .status();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn open_direct(path: &Path, write: bool) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("open O_DIRECT")
}

fn device_size(f: &std::fs::File) -> u64 {
    use std::io::Seek;
    let mut f = f;
    f.seek(std::io::SeekFrom::End(0)).unwrap()
}

/// Reads `len` bytes (default: to the end) at a 4096-aligned `offset` with O_DIRECT.
pub fn read_direct(path: &Path, offset: u64, len: Option<usize>) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = open_direct(path, false);
    let len = len.unwrap_or((device_size(&f) - offset) as usize);
    let mut out = Vec::with_capacity(len);
    let mut buf = diskbeat::io::AlignedBuf::new(1 << 20).unwrap();
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(1 << 20).next_multiple_of(4096);
        let got = f.read_at(&mut buf.as_mut_slice()[..n], offset + pos as u64).unwrap();
        assert!(got > 0, "short device read");
        let take = got.min(len - pos);
        out.extend_from_slice(&buf.as_slice()[..take]);
        pos += take;
    }
    out
}

/// Writes 4096-aligned `data` at a 4096-aligned `offset` with O_DIRECT.
pub fn write_direct(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    assert_eq!(data.len() % 512, 0);
    let f = open_direct(path, true);
    let mut buf = diskbeat::io::AlignedBuf::new(data.len()).unwrap();
    buf.as_mut_slice().copy_from_slice(data);
    f.write_all_at(buf.as_slice(), offset).unwrap();
}

/// Runs the diskbeat binary.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run diskbeat")
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout={} stderr={}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loop device (sparse: 2 MiB per slot for the default data extents, plus 16 MiB) formatted by
/// the real `diskbeat mkfs` (T = 2 s) as cluster `name`.
pub fn formatted(sector: u32, slots: u32, name: &str) -> LoopDev {
    let lo = LoopDev::new(&format!("{}M", 2 * slots + 16), sector);
    let out = run(&["mkfs", lo.s(), "--slots", &slots.to_string(), "--cluster", name, "--timeout", "2s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lo
}

/// Every engine on both sector sizes: what engine-level tests run through.
pub const SECTOR_ENGINES: [(u32, diskbeat::io::EngineKind); 4] = [
    (512, diskbeat::io::EngineKind::Uring),
    (4096, diskbeat::io::EngineKind::Uring),
    (512, diskbeat::io::EngineKind::Sync),
    (4096, diskbeat::io::EngineKind::Sync),
];

/// The changes of `slot`'s state to one of `to` this host reported: (at_ms, its text).
pub fn peer_changes(st: &serde_json::Value, slot: u64, to: &[&str]) -> Vec<(u64, String)> {
    st["recent_events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .filter(|e| e["kind"] == "peer_state" && e["slot"] == slot)
                .filter(|e| to.iter().any(|t| e["data"]["to"] == *t))
                .filter_map(|e| Some((e["at_ms"].as_u64()?, e["text"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
