//! Every mkfs refusal leaves the device byte-identical (hash before and after) and exits non-zero.

mod common;
use common::*;
use diskbeat::disk::Disk;
use diskbeat::format::record::{Record, State};
use diskbeat::io::{Access, EngineKind};
use std::time::Duration;

/// Runs mkfs with `args` on `lo`, expects exit `code` and `needle` in stderr, and an unchanged device.
fn refused(lo: &LoopDev, args: &[&str], code: i32, needle: &str) {
    let before = lo.hash();
    let mut full = vec!["mkfs", lo.s()];
    full.extend_from_slice(args);
    let out = run(&full);
    assert_eq!(out.status.code(), Some(code), "mkfs {args:?}: {}", stderr(&out));
    assert!(stderr(&out).contains(needle), "mkfs {args:?}: expected '{needle}' in: {}", stderr(&out));
    assert_eq!(lo.hash(), before, "mkfs {args:?} changed the device");
}

#[test]
fn too_small_says_how_many_fit() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("8M", 512);
    refused(&lo, &["--slots", "2048"], 1, "device too small");
    refused(&lo, &["--slots", "2048"], 1, "slots would fit (use --slots");
}

#[test]
fn already_formatted_names_the_cluster() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("160M", 512);
    let out = run(&["mkfs", lo.s(), "--cluster", "prod-pool", "--slots", "8", "--json"]);
    assert!(out.status.success());
    let uuid = stdout_json(&out)["superblock"]["cluster_uuid"].as_str().unwrap().to_owned();
    refused(&lo, &["--slots", "8"], 1, "already holds diskbeat cluster 'prod-pool'");
    refused(&lo, &["--slots", "8"], 1, &uuid);
}

#[test]
fn foreign_data_and_corrupt_superblock() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("160M", 512);
    let mut junk = vec![0u8; 4096];
    junk[..4].copy_from_slice(b"\xEB\x3C\x90M"); // looks like a boot sector
    write_direct(lo.path(), 0, &junk);
    refused(&lo, &[], 1, "holds other data");

    assert!(run(&["mkfs", lo.s(), "--force", "--observe", "100ms", "--slots", "4"]).status.success());
    let mut sb = read_direct(lo.path(), 0, Some(4096));
    sb[40] ^= 0x01; // inside the cluster name: checksum no longer matches
    write_direct(lo.path(), 0, &sb);
    refused(&lo, &[], 1, "corrupt diskbeat superblock");
    let out = run(&["inspect", lo.s()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("superblock is corrupt"), "{}", stderr(&out));
}

#[test]
fn bad_options_are_usage_errors() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("160M", 4096);
    refused(&lo, &["--slots", "0"], 2, "slot count 0 is out of range");
    refused(&lo, &["--slots", "4096"], 2, "use 1 to 2048");
    refused(&lo, &["--slot-size", "512"], 2, "slot size 512 is invalid");
    refused(&lo, &["--slot-size", "3000"], 2, "slot size 3000 is invalid");
    refused(&lo, &["--timeout", "100ms"], 2, "base timeout 100 ms is out of range");
    refused(&lo, &["--timeout", "soon"], 2, "not a duration");
    refused(&lo, &["--cluster", ""], 2, "name is empty");
    refused(&lo, &["--cluster", &"x".repeat(65)], 2, "at most 64 bytes");
    refused(&lo, &["--data-size", "1000"], 2, "data extent size 1000 is invalid");
}

#[test]
fn unopenable_paths_say_why() {
    let out = run(&["mkfs", "/nonexistent/disk"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("check the path exists"), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["mkfs", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a block device or regular file"), "{}", stderr(&out));
    let out = run(&["mkfs", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn live_cluster_refuses_even_with_force() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("160M", 512);
    assert!(run(&["mkfs", lo.s(), "--slots", "8", "--timeout", "2s"]).status.success());
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let t = Duration::from_secs(2);
    let mut rec = Record::free(disk.superblock().cluster_uuid, 6);
    rec.state = State::Live;
    rec.generation = 1;
    rec.set_host_name("busy-host").unwrap();
    disk.write_record(&rec, t).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            rec.sequence += 1;
            disk.write_record(&rec, t).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        rec
    });
    std::thread::sleep(Duration::from_millis(50));
    let out = run(&["mkfs", lo.s(), "--force", "--slots", "8"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("live cluster"), "{}", stderr(&out));
    assert!(stderr(&out).contains("slot 6 (busy-host)"), "{}", stderr(&out));
    // Everything but the writer's own slot is as before: the superblock and every other record.
    let v = stdout_json(&run(&["inspect", lo.s(), "--all", "--sample", "0", "--json"]));
    let rows = v["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for r in rows {
        if r["slot"] == 6 {
            assert_eq!(r["sequence"], last.sequence);
        } else {
            assert_eq!(r["state"], "free");
        }
    }
    // Once the writer stops, --force re-formats (after the observation window).
    let out = run(&["mkfs", lo.s(), "--force", "--slots", "8", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout_json(&out)["replaced"]["cluster_name"].is_string());
}

#[test]
fn lvm_label_and_ext4_superblock_are_other_data() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("160M", 512);
    let mut head = vec![0u8; 4096];
    head[512..520].copy_from_slice(b"LABELONE"); // LVM physical volume label
    write_direct(lo.path(), 0, &head);
    refused(&lo, &[], 1, "non-zero bytes at offset 512");
    let mut head = vec![0u8; 4096];
    head[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]); // ext4 superblock magic
    write_direct(lo.path(), 0, &head);
    refused(&lo, &[], 1, "holds other data");
}
