//! End-to-end: two loop devices over two faultfs views of one sparse backing file.
//! Needs root, /dev/fuse and losetup; otherwise each test prints why and passes.

#[path = "../src/harness.rs"]
mod harness;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use harness::{Fault, FaultFs, LoopDev};

const BLK: usize = 4096;

/// Temp directory removed on drop (std only, like the harness).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("faultfs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str) -> Option<(TempDir, FaultFs)> {
    if let Some(why) = harness::skip_reason() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = TempDir::new(tag);
    let img = File::create(dir.0.join("disk.img")).expect("create image");
    img.set_len(64 << 20).expect("size image (sparse)");
    let fs = FaultFs::start_with(
        Path::new(env!("CARGO_BIN_EXE_faultfs")),
        &dir.0,
        &dir.0.join("mnt"),
        &["a", "b"],
    )
    .expect("start faultfs");
    Some((dir, fs))
}

/// A `len`-byte window of `buf` aligned for O_DIRECT.
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    buf.resize(len + BLK, 0);
    let off = buf.as_ptr().align_offset(BLK);
    &mut buf[off..off + len]
}

fn open_direct(dev: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(write).custom_flags(libc::O_DIRECT).open(dev)
}

fn direct_read(dev: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let win = aligned(&mut buf, BLK);
    let n = open_direct(dev, false)?.read_at(win, offset)?;
    Ok(win[..n].to_vec())
}

fn direct_write(dev: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::new();
    let win = aligned(&mut buf, data.len());
    win.copy_from_slice(data);
    open_direct(dev, true)?.write_all_at(win, offset)
}

/// Run `f` on a thread we can abandon; `None` if it did not finish within `limit`.
fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (Option<T>, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(limit).ok();
    (r, start.elapsed())
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BLK).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn per_view_faults_over_loop_devices() {
    let Some((_dir, fs)) = setup("loops") else { return };
    // Declared after `fs`: dropped (detached) before the unmount.
    let la = LoopDev::attach(&fs.path("a", "disk.img"), None).expect("losetup view a");
    let lb = LoopDev::attach(&fs.path("b", "disk.img"), None).expect("losetup view b");
    eprintln!(
        "loop a={} dio={:?}, b={} dio={:?}",
        la.path().display(),
        la.direct_io(),
        lb.path().display(),
        lb.direct_io()
    );
    let (a, b) = (la.path().to_path_buf(), lb.path().to_path_buf());
    let t = Duration::from_secs(10);

    // (1) write through A, read back through B: same bytes.
    let off = 100 * BLK as u64;
    direct_write(&a, off, &pattern(1)).expect("write via a");
    assert_eq!(direct_read(&b, off).expect("read via b"), pattern(1), "b must see a's write at once");

    // (2) eio_write on a: O_DIRECT write fails with EIO; b still works.
    fs.set("a", Fault::eio_write()).unwrap();
    let err = direct_write(&a, off, &pattern(2)).expect_err("write via a must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "write error: {err}");
    direct_write(&b, off + BLK as u64, &pattern(3)).expect("write via b while a is faulty");
    assert_eq!(direct_read(&a, off).expect("reads on a still work"), pattern(1));

    // (3) eio_read on a: O_DIRECT read fails with EIO; b still works.
    fs.set("a", Fault::eio_read()).unwrap();
    let err = direct_read(&a, off).expect_err("read via a must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "read error: {err}");
    assert_eq!(direct_read(&b, off + BLK as u64).unwrap(), pattern(3));
    fs.clear("a").unwrap();
    assert_eq!(direct_read(&a, off + BLK as u64).unwrap(), pattern(3), "a sees b's write after clear");

    // (4) delay 300 ms on a: a read on a takes >= 300 ms, b stays fast.
    fs.set("a", Fault::delay(300)).unwrap();
    let start = Instant::now();
    direct_read(&a, off).expect("delayed read");
    let slow = start.elapsed();
    let start = Instant::now();
    direct_read(&b, off).expect("read via b");
    let fast = start.elapsed();
    eprintln!("delay: a read {slow:?}, b read {fast:?}");
    assert!(slow >= Duration::from_millis(300), "a read took {slow:?}");
    assert!(fast < Duration::from_millis(150), "b read took {fast:?}");
    fs.clear("a").unwrap();

    // (5) hang on a: a read blocks, b proceeds, clear releases a.
    fs.set("a", Fault::hang()).unwrap();
    let rx_a = {
        let a = a.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(direct_read(&a, off).map_err(|e| e.to_string()));
        });
        rx
    };
    assert!(rx_a.recv_timeout(Duration::from_millis(500)).is_err(), "read on hung view a returned");
    let (rb, took) = bounded(t, move || direct_read(&b, off).map_err(|e| e.to_string()));
    assert_eq!(rb.expect("b must not hang").unwrap(), pattern(1));
    eprintln!("hang: b read took {took:?} while a hung");
    assert!(fs.show().unwrap().contains("\"parked\":1"), "{}", fs.show().unwrap());
    fs.clear("a").unwrap();
    let ra = rx_a.recv_timeout(t).expect("clear must release the hung read");
    assert_eq!(ra.unwrap(), pattern(1));
}

#[test]
fn shutdown_releases_hung_requests_with_eio() {
    let Some((_dir, fs)) = setup("shutdown") else { return };
    let file = fs.path("a", "disk.img");
    fs.set("a", Fault::hang()).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(direct_read(&file, 0).map_err(|e| e.raw_os_error()));
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "read on hung view returned");
    drop(fs);
    let r = rx.recv_timeout(Duration::from_secs(10)).expect("hung read must be released at shutdown");
    // EIO from our release; ENOTCONN if the connection was already aborted.
    assert!(matches!(r, Err(Some(libc::EIO)) | Err(Some(libc::ENOTCONN))), "{r:?}");
}

#[test]
fn views_share_bytes_without_loop_devices() {
    let Some((_dir, fs)) = setup("plain") else { return };
    let wa = OpenOptions::new().write(true).open(fs.path("a", "disk.img")).unwrap();
    wa.write_all_at(b"heartbeat", 4096).unwrap();
    let rb = File::open(fs.path("b", "disk.img")).unwrap();
    let mut got = [0u8; 9];
    rb.read_exact_at(&mut got, 4096).unwrap();
    assert_eq!(&got, b"heartbeat");
    wa.write_all_at(b"HEARTBEAT", 4096).unwrap();
    rb.read_exact_at(&mut got, 4096).unwrap();
    assert_eq!(&got, b"HEARTBEAT", "no stale page cache in view b");
    assert!(fs.show().unwrap().starts_with("{\"views\""));
    assert!(fs.request("set nosuchview hang").is_err());
    assert!(harness::find_binary().is_some(), "find_binary must locate the built faultfs");
}
