//! Records written through the engine read back identical; any flipped bit is `corrupt`, never live.

mod common;
use common::*;
use diskbeat::disk::{Disk, SlotView};
use diskbeat::format::record::{flags, Record, State};
use diskbeat::io::{Access, EngineKind};
use proptest::prelude::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn formatted(sector: u32, slots: u32) -> LoopDev {
    common::formatted(sector, slots, "rec")
}

fn live_record(disk: &Disk, slot: u32, seq: u64) -> Record {
    let mut r = Record::free(disk.superblock().cluster_uuid, slot);
    r.state = State::Live;
    r.host_uuid = uuid::Uuid::from_u128(0xfeed_0000 + u128::from(slot));
    r.generation = 7;
    r.sequence = seq;
    r.monotonic_ms = 1000 + seq;
    r.io_timeout_ms = 500;
    r.interval_ms = 100;
    r.set_host_name(&format!("host-{slot}")).unwrap();
    r.net_view.set(slot, true);
    r.net_view.set(0, true);
    // Format 1.4's fields travel through the engine too.
    r.flags = flags::NET_ENABLED | flags::ISOLATION_CONFIGURED;
    r.weight = 1000 + slot;
    r
}

#[test]
fn written_records_read_back_identical_on_both_engines() {
    if skip_unless_root() {
        return;
    }
    for (sector, engine) in SECTOR_ENGINES {
        let lo = formatted(sector, 64);
        let mut disk = Disk::open(lo.path(), Access::ReadWrite, engine, Some(5)).unwrap();
        assert_eq!(disk.engine().kind(), engine);
        let mut written = Vec::new();
        for slot in [0u32, 5, 31, 63] {
            let r = live_record(&disk, slot, 100 + u64::from(slot));
            assert!(disk.write_record(&r, T).unwrap().is_done());
            written.push(r);
        }
        let stats = disk.sweep(T).unwrap();
        assert!(stats.complete() && stats.mailbox_ok, "{stats:?}");
        let snap = disk.snapshot();
        for r in &written {
            assert_eq!(snap[r.slot as usize], SlotView::Record(*r), "sector {sector} {engine:?}");
        }
        // Another process (inspect) sees the same.
        let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "0", "--json"]));
        let rows = v["slots"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1]["host_name"], "host-5");
        assert_eq!(rows[1]["state"], "live");
        assert_eq!(rows[1]["generation"], 7);
        assert_eq!(rows[1]["sequence"], 105);
        assert_eq!(rows[1]["net_view"], serde_json::json!([0, 5]));
    }
}

#[test]
fn inspect_sees_advancing_and_stale() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    disk.write_record(&live_record(&disk, 2, 1), T).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut seq = 10;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let r = live_record(&disk, 1, seq);
            disk.write_record(&r, T).unwrap();
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "300ms", "--json"]));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let rows = v["slots"].as_array().unwrap();
    assert_eq!(rows[0]["slot"], 1);
    assert_eq!(rows[0]["observed"], "advancing");
    assert_eq!(rows[1]["slot"], 2);
    assert_eq!(rows[1]["observed"], "stale");
    assert!(rows[1]["stale_ms_at_least"].as_u64().unwrap() >= 300);
}

/// Flips bit `bit` of slot 3's record on the device and checks both the library and the CLI.
fn flip_and_check(lo: &LoopDev, disk: &mut Disk, bit: usize, check_cli: bool) {
    let l = disk.superblock().layout;
    let slot_off = l.record_offset(3);
    let block = slot_off / 4096 * 4096;
    let mut data = read_direct(lo.path(), block, Some(4096));
    let pos = (slot_off - block) as usize + bit / 8;
    data[pos] ^= 1 << (bit % 8);
    write_direct(lo.path(), block, &data);
    disk.sweep(T).unwrap();
    let view = disk.snapshot()[3];
    assert!(matches!(view, SlotView::Corrupt(_)), "bit {bit}: {view:?}");
    if check_cli {
        let out = run(&["inspect", lo.s(), "--sample", "0", "--json"]);
        assert_eq!(out.status.code(), Some(3), "a corrupt record must give exit 3");
        let v = stdout_json(&out);
        let row = v["slots"].as_array().unwrap().iter().find(|r| r["slot"] == 3).unwrap().clone();
        assert_eq!(row["state"], "corrupt");
        assert_eq!(row["status"], "corrupt");
        assert!(row["reason"].as_str().unwrap().len() > 5);
        assert!(row["generation"].is_null());
    }
    data[pos] ^= 1 << (bit % 8);
    write_direct(lo.path(), block, &data);
}

#[test]
fn every_flipped_bit_is_corrupt() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let r = live_record(&disk, 3, 42);
    disk.write_record(&r, T).unwrap();
    // All 4096 bit positions of the record, through the library; a sample through the CLI.
    for bit in 0..512 * 8 {
        flip_and_check(&lo, &mut disk, bit, bit % 509 == 0);
    }
    disk.sweep(T).unwrap();
    assert_eq!(disk.snapshot()[3], SlotView::Record(r));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A random bit on a 4Kn device, checked through the CLI.
    #[test]
    fn flipped_bit_on_4k_device(bit in 0usize..4096) {
        if !skip_unless_root() {
            let lo = formatted(4096, 4);
            let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
            disk.write_record(&live_record(&disk, 3, 9), T).unwrap();
            flip_and_check(&lo, &mut disk, bit, true);
        }
    }
}

/// A write after a sweep must not overwrite what the sweep recorded: `slot_bytes` after a write
/// still answers from the sweep (writes record their outcome at their own op index).
#[test]
fn a_write_after_a_sweep_leaves_the_sweep_results_alone() {
    if skip_unless_root() {
        return;
    }
    for engine in [EngineKind::Uring, EngineKind::Sync] {
        let lo = formatted(512, 64);
        let mut disk = Disk::open(lo.path(), Access::ReadWrite, engine, Some(5)).unwrap();
        assert!(disk.sweep(T).unwrap().complete());
        let outcomes: Vec<_> = (0..4).map(|i| disk.engine().outcome(i)).collect();
        let before = disk.snapshot();
        let r = live_record(&disk, 5, 1);
        assert!(disk.write_record(&r, T).unwrap().is_done());
        let mut mb = diskbeat::format::mailbox::Mailbox::empty(disk.superblock().cluster_uuid, 7);
        mb.request_id = 9;
        mb.command = diskbeat::format::mailbox::Command::Test;
        assert!(disk.write_mailbox(&mb, T).unwrap().is_done());
        let after: Vec<_> = (0..4).map(|i| disk.engine().outcome(i)).collect();
        assert_eq!(outcomes, after, "{engine:?}: a write overwrote the sweep's recorded outcomes");
        assert_eq!(disk.snapshot(), before, "{engine:?}: the sweep's bytes changed without a sweep");
    }
}
