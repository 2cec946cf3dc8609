//! mkfs over live and half-wiped clusters, shrunk devices and concurrent formats; probe leaving a
//! blank device blank; names from disk escaped on the terminal; out-of-range slots as bad input.
//!
//! Writers here are threads that keep writing a record until mkfs has exited, so whether mkfs sees
//! them never depends on how fast this machine is: only on mkfs watching the right blocks for
//! long enough.

mod common;
use common::*;
use diskbeat::disk::Disk;
use diskbeat::format::layout::{Layout, Params};
use diskbeat::format::record::{Record, State};
use diskbeat::format::superblock::Superblock;
use diskbeat::io::{Access, EngineKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A host heartbeating into `slot` from a thread, through a disk opened before any wipe.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Record>>,
}

impl Writer {
    /// Writes the record once now, then (after `delay`) every `period` until dropped or stopped.
    fn start(lo: &LoopDev, slot: u32, name: &str, period: Duration, delay: Duration) -> Writer {
        let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
        let t = diskbeat::timing::Timing::from_base(disk.superblock().base_timeout_ms).unwrap();
        let mut rec = Record::free(disk.superblock().cluster_uuid, slot);
        rec.state = State::Live;
        rec.generation = 1;
        rec.io_timeout_ms = t.io_timeout_ms;
        rec.interval_ms = t.interval_ms;
        rec.set_host_name(name).unwrap();
        let io = Duration::from_secs(5);
        assert!(disk.write_record(&rec, io).unwrap().is_done());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(delay);
            while !stop2.load(Ordering::Relaxed) {
                rec.sequence += 1;
                disk.write_record(&rec, io).unwrap();
                // Wakes for `stop` (a long period means "write once": stop must not wait it out).
                let until = std::time::Instant::now() + period;
                while !stop2.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5).min(period));
                }
            }
            rec
        });
        Writer { stop, thread: Some(thread) }
    }

    fn stop(mut self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mkfs(lo: &LoopDev, args: &[&str]) -> std::process::Output {
    let mut full = vec!["mkfs", lo.s()];
    full.extend_from_slice(args);
    run(&full)
}

/// A mkfs that must succeed.
fn format(lo: &LoopDev, args: &[&str]) {
    let out = mkfs(lo, args);
    assert!(out.status.success(), "mkfs {args:?}: {}", stderr(&out));
}

/// Zeroes the superblock block and the probe area (what `wipefs`/`dd` over the head would do).
fn wipe_head(lo: &LoopDev) {
    write_direct(lo.path(), 0, &vec![0u8; 4096 + 65536]);
}

fn assert_refused(out: &std::process::Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    for n in needles {
        assert!(stderr(out).contains(n), "expected '{n}' in: {}", stderr(out));
    }
}

// ---- 1a: a wiped superblock over live records --------------------------------------------------

#[test]
fn wiped_superblock_with_old_records_is_refused_without_force() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "1s"]);
    Writer::start(&lo, 3, "old-host", Duration::from_secs(3600), Duration::ZERO).stop();
    wipe_head(&lo);
    let before = lo.hash();
    let out = mkfs(&lo, &["--slots", "8"]);
    assert_refused(&out, &["heartbeat record or mailbox sectors", "--force"]);
    assert_eq!(lo.hash(), before, "a refused mkfs changed the device");
}

#[test]
fn wiped_superblock_with_a_live_writer_is_refused_even_with_force() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "1s"]);
    let writer = Writer::start(&lo, 3, "busy-host", Duration::from_millis(20), Duration::ZERO);
    wipe_head(&lo);
    let out = mkfs(&lo, &["--force", "--slots", "8"]);
    let last = writer.stop();
    assert_refused(&out, &["live cluster", "slot 3 (busy-host)"]);
    assert!(read_direct(lo.path(), 0, Some(4096)).iter().all(|&b| b == 0), "mkfs wrote a superblock");
    // Another slot still holds the old cluster's free record: nothing was formatted.
    let slot5 = read_direct(lo.path(), 69632, Some(4096));
    assert_eq!(Record::decode(&slot5[5 * 512..], &last.cluster_uuid, 5).unwrap().state, State::Free);
}

// ---- 1b: --force watches the old layout, for the old cluster's time ----------------------------

#[test]
fn force_with_fewer_slots_watches_every_old_slot() {
    if skip_unless_root() {
        return;
    }
    // A corrupt superblock over a 64-slot cluster whose host in slot 40 still heartbeats: the new
    // 1-slot layout's tables end long before slot 40's record.
    let lo = LoopDev::new("160M", 512);
    format(&lo, &["--slots", "64", "--timeout", "1s"]);
    let writer = Writer::start(&lo, 40, "far-host", Duration::from_millis(20), Duration::ZERO);
    let mut sb = read_direct(lo.path(), 0, Some(4096));
    sb[40] ^= 0x01; // cluster name: the checksum no longer matches
    write_direct(lo.path(), 0, &sb);
    let out = mkfs(&lo, &["--force", "--slots", "1", "--observe", "50ms"]);
    writer.stop();
    assert_refused(&out, &["live cluster", "slot 40 (far-host)"]);
    assert_eq!(read_direct(lo.path(), 0, Some(4096)), sb, "mkfs wrote the superblock block");
}

#[test]
fn short_observe_cannot_shorten_the_watch() {
    if skip_unless_root() {
        return;
    }
    // A 4 s cluster whose host beats late (every 400 ms) and only from 300 ms on: a 50 ms watch
    // misses it; the old cluster's T (4.4 s) cannot.
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "4s"]);
    let writer = Writer::start(&lo, 2, "slow-host", Duration::from_millis(400), Duration::from_millis(300));
    let out = mkfs(&lo, &["--force", "--slots", "8", "--observe", "50ms"]);
    writer.stop();
    assert_refused(&out, &["live cluster", "slot 2 (slow-host)"]);
}

#[test]
fn json_reports_the_watch_and_a_raised_observe() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "16", "--timeout", "1s"]);
    Writer::start(&lo, 9, "gone-host", Duration::from_secs(3600), Duration::ZERO).stop();
    let out = mkfs(&lo, &["--force", "--slots", "2", "--observe", "10ms", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    let w = &v["watch"];
    assert_eq!(w["required_ms"], 1100, "T = 1 s plus two 50 ms intervals: {w}");
    assert_eq!(w["requested_ms"], 10);
    assert!(w["duration_ms"].as_u64().unwrap() >= 1100, "{w}");
    assert!(w["passes"].as_u64().unwrap() >= 2, "{w}");
    let parts: Vec<&str> =
        w["parts"].as_array().unwrap().iter().map(|p| p["what"].as_str().unwrap()).collect();
    for p in [
        "old_records",
        "old_mailboxes",
        "old_extent_headers",
        "new_layout",
        "new_extent_headers",
        "found_structures",
    ] {
        assert!(parts.contains(&p), "{p} not in {parts:?}");
    }
    assert!(w["found_structures"].as_u64().unwrap() >= 32, "16 records + 16 mailboxes: {w}");
    assert_eq!(v["observed_ms"], w["duration_ms"]);
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|s| s.as_str().unwrap().contains("--observe 10 ms is shorter")),
        "{warnings:?}"
    );
}

#[test]
fn records_alone_set_the_watch_when_the_superblock_is_gone() {
    if skip_unless_root() {
        return;
    }
    // No superblock: the watch comes from the timings the old record carries (T = 2 s).
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "2s"]);
    Writer::start(&lo, 1, "was-here", Duration::from_secs(3600), Duration::ZERO).stop();
    wipe_head(&lo);
    let out = mkfs(&lo, &["--force", "--slots", "8", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let w = &stdout_json(&out)["watch"];
    assert_eq!(w["required_ms"], 2200, "{w}");
    assert!(w["basis"].as_str().unwrap().contains("was-here"), "{w}");
}

// ---- 1c: no valid superblock over slots that do not verify; concurrent mkfs --------------------

#[test]
fn mkfs_refuses_while_another_holds_the_lock() {
    if skip_unless_root() {
        return;
    }
    // An image file: no O_EXCL there, so only the lock keeps two formats apart.
    let dir = tempfile::Builder::new().prefix("diskbeat-test").tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let held = nix::fcntl::Flock::lock(
        std::fs::File::open(&img).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    let out = run(&["mkfs", img.to_str().unwrap(), "--slots", "8"]);
    assert_refused(&out, &["cannot lock the device", "another `diskbeat mkfs`"]);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0), "a refused mkfs wrote");
    drop(held);
    let out = run(&["mkfs", img.to_str().unwrap(), "--slots", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn two_concurrent_mkfs_leave_one_consistent_cluster() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("160M", 512);
    let spawn = |name: &str| {
        std::process::Command::new(bin())
            .args(["mkfs", lo.s(), "--slots", "64", "--cluster", name, "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("one"), spawn("two"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok: Vec<&std::process::Output> = [&a, &b].into_iter().filter(|o| o.status.success()).collect();
    assert_eq!(ok.len(), 1, "exactly one mkfs wins:\n{}\n{}", stderr(&a), stderr(&b));
    let loser = if a.status.success() { &b } else { &a };
    assert_eq!(loser.status.code(), Some(1), "{}", stderr(loser));
    let winner = stdout_json(ok[0]);
    let v = stdout_json(&run(&["inspect", lo.s(), "--all", "--sample", "0", "--json"]));
    assert_eq!(v["superblock"]["cluster_uuid"], winner["superblock"]["cluster_uuid"]);
    let rows = v["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 64);
    assert!(rows.iter().all(|r| r["status"] == "ok" && r["state"] == "free"), "{rows:?}");
}

// ---- 3: a superblock whose layout exceeds the device ------------------------------------------

/// Writes a valid superblock for `slots` slots of `slot_size` bytes with a 1 s base timeout.
fn write_superblock(lo: &LoopDev, name: &str, slots: u32, slot_size: u32, device_size: u64) -> Superblock {
    let layout =
        Layout::new(Params { sector_size: 512, slot_size, slot_count: slots, extent_size: 65536 }).unwrap();
    let sb = Superblock {
        cluster_uuid: uuid::Uuid::new_v4(),
        cluster_name: name.into(),
        version_minor: diskbeat::format::VERSION_MINOR,
        layout,
        base_timeout_ms: 1000,
        device_size,
        format_time_unix_s: 1_700_000_000,
    };
    let mut block = vec![0u8; 4096];
    sb.encode(&mut block).unwrap();
    write_direct(lo.path(), 0, &block);
    sb
}

#[test]
fn superblock_from_a_bigger_lun_is_named_and_force_reformats() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("16M", 512);
    // 2048 slots of 4096 bytes: even the old mailbox table runs past the end of this device.
    let sb = write_superblock(&lo, "big-pool", 2048, 4096, 256 << 20);
    assert!(sb.layout.mailboxes.end() > 16 << 20);
    let before = lo.hash();
    let out = mkfs(&lo, &["--slots", "4"]);
    let needs = format!("needs {} bytes but the device has 16777216", sb.layout.total_size());
    assert_refused(&out, &["big-pool", "does not match this device", &needs]);
    assert_eq!(lo.hash(), before);
    let out = mkfs(&lo, &["--force", "--slots", "4", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["replaced"]["cluster_name"], "big-pool");
    // The old mailbox table's tail and every old extent header (both copies', format 1.5) lie
    // past the device's end.
    let g = diskbeat::format::extent::Geometry::new(sb.layout.extent_size, sb.version_minor);
    let headers_past_end = (0..sb.layout.slot_count)
        .flat_map(|s| g.all().iter().map(move |&c| sb.layout.extent_offset(s) + g.copy_offset(c)))
        .filter(|&at| at >= 16 << 20)
        .count() as u64
        * 4096;
    let clipped = sb.layout.mailboxes.end() - (16 << 20) + headers_past_end;
    assert_eq!(v["watch"]["clipped_bytes"].as_u64().unwrap(), clipped, "{}", v["watch"]);
    assert_eq!(run(&["inspect", lo.s(), "--all", "--sample", "0"]).status.code(), Some(0));
}

// ---- 4: names ---------------------------------------------------------------------------------

#[test]
fn unprintable_cluster_names_are_bad_input() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    let before = lo.hash();
    for name in ["\x1b[2J", "a\nb", "zero\u{200b}width", "\u{202e}evil", "tab\there"] {
        let out = mkfs(&lo, &["--slots", "4", "--cluster", name]);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid cluster name"), "{name:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains(name), "{name:?} echoed raw: {}", stderr(&out));
    }
    assert_eq!(lo.hash(), before);
}

/// Rewrites the name field (`at`..`at + 64`) of the 512-byte structure at device `offset` and
/// reseals its checksum: what a crafted disk can hold, which no diskbeat writer would write.
fn plant_name(lo: &LoopDev, offset: u64, at: usize, name: &[u8]) {
    let block_off = offset / 4096 * 4096;
    let mut block = read_direct(lo.path(), block_off, Some(4096));
    let s = (offset - block_off) as usize;
    let field = &mut block[s + at..s + at + 64];
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
    let crc = diskbeat::format::checksum(&block[s + 4..s + 512]);
    block[s..s + 4].copy_from_slice(&crc.to_le_bytes());
    write_direct(lo.path(), block_off, &block);
}

#[test]
fn names_from_disk_cannot_drive_the_terminal() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "1s"]);
    let mut rec = Writer::start(&lo, 2, "placeholder", Duration::from_secs(3600), Duration::ZERO).stop();
    rec.state = State::Leaving;
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    disk.write_record(&rec, Duration::from_secs(5)).unwrap();
    drop(disk);
    let evil = b"\x1b[2J\x1b]0;pwned\x07\nfake line";
    plant_name(&lo, 0, 32, b"pool\x1b[31m");
    plant_name(&lo, 69632 + 2 * 512, 88, evil);

    let check = |out: &std::process::Output, what: &str| {
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
        assert!(!all.contains('\x1b') && !all.contains('\x07'), "{what}: raw escapes in: {all:?}");
        all
    };
    let out = run(&["inspect", lo.s(), "--sample", "0"]);
    let text = check(&out, "inspect");
    assert!(text.contains("\\u{1b}[2J"), "{text}");
    assert!(text.contains("pool\\u{1b}[31m"), "{text}");
    assert!(!text.contains("\nfake line"), "{text}");
    let text = check(&run(&["inspect", lo.s(), "--slot", "2", "--sample", "0"]), "inspect --slot");
    assert!(text.contains("\\u{1b}]0;pwned\\u{7}\\nfake line"), "{text}");
    // JSON keeps the exact name (serde escapes it).
    let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "0", "--json"]));
    assert_eq!(v["slots"][0]["host_name"].as_str().unwrap().as_bytes(), evil);
    // fence prints the target's name (it left: nothing is sent).
    let out = run(&["fence", lo.s(), "--slot", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check(&out, "fence");
    // mkfs names the cluster it refuses to overwrite.
    let out = mkfs(&lo, &["--slots", "8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(check(&out, "mkfs").contains("pool\\u{1b}[31m"));
}

// ---- 5: slots out of range ---------------------------------------------------------------------

#[test]
fn out_of_range_slot_is_bad_input() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "1s"]);
    let before = lo.hash();
    for args in [
        vec!["inspect", lo.s(), "--slot", "8"],
        vec!["inspect", lo.s(), "--slot", "4000000000", "--json"],
        vec!["fence", lo.s(), "--slot", "8"],
        vec!["fence", lo.s(), "--slot", "2048", "--json"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not exist: this disk has 8 slots"), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(lo.hash(), before);
}

/// Review finding: a host that only publishes in its extent (payload, then header) is a writer
/// too: `--force` watches every old extent header and refuses while one changes.
#[test]
fn a_host_writing_only_its_extent_is_seen_by_the_watch() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    format(&lo, &["--slots", "8", "--timeout", "1s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let path = lo.path().to_path_buf();
    let thread = std::thread::spawn(move || {
        let mut disk = Disk::open(&path, Access::ReadWrite, EngineKind::Auto, None).unwrap();
        let mut n = 0u8;
        while !stop2.load(Ordering::Relaxed) {
            n = n.wrapping_add(1);
            disk.write_extent(6, 0, uuid::Uuid::nil(), 1, &[n; 16], Duration::from_secs(5)).ok();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let before_sb = read_direct(lo.path(), 0, Some(4096));
    let out = mkfs(&lo, &["--force", "--slots", "2", "--json"]);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    assert!(!out.status.success(), "formatted under a host writing its extent: {}", stderr(&out));
    assert!(stderr(&out).contains("extent of slot 6"), "{}", stderr(&out));
    assert_eq!(read_direct(lo.path(), 0, Some(4096)), before_sb, "mkfs wrote the superblock block");
}

/// A finished mkfs leaves no claim behind: an O_EXCL open right after it exits succeeds at once,
/// every time (no retry here). Its io_uring ring used to drop the registered device fd later,
/// from a kernel worker, so the next `mkfs --force` met EBUSY on a busy machine.
#[test]
fn exclusive_open_right_after_mkfs_exits_succeeds() {
    if skip_unless_root() {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let lo = LoopDev::new("64M", 512);
    for i in 0..8 {
        let args: &[&str] = if i == 0 {
            &["--slots", "8", "--timeout", "1s"]
        } else {
            &["--force", "--slots", "8", "--timeout", "1s"]
        };
        let out = mkfs(&lo, args);
        assert!(out.status.success(), "mkfs #{i}: {}", stderr(&out));
        let open =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_EXCL).open(lo.path());
        assert!(open.is_ok(), "O_EXCL open right after mkfs #{i} exited: {:?}", open.err());
    }
}
