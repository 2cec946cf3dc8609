//! mkfs -> inspect round trips on real loop devices, JSON checked field by field.

mod common;
use common::*;

fn round_trip(sector: u32, slots: u32) {
    if skip_unless_root() {
        return;
    }
    let size = if slots == 2048 { "200M" } else { "64M" };
    let lo = LoopDev::new(size, sector);
    let slots_s = slots.to_string();
    let out =
        run(&["mkfs", lo.s(), "--slots", &slots_s, "--cluster", "pool-rt", "--timeout", "2s", "--json"]);
    assert!(out.status.success(), "mkfs failed: {}", stderr(&out));
    let m = stdout_json(&out);
    assert_eq!(m["superblock"]["slots"], slots);
    assert_eq!(m["superblock"]["sector_size"], sector);
    assert_eq!(m["logical_sector_size"], sector);

    let out = run(&["inspect", lo.s(), "--all", "--sample", "0", "--json"]);
    assert_eq!(out.status.code(), Some(0), "inspect failed: {}", stderr(&out));
    let v = stdout_json(&out);
    let sb = &v["superblock"];
    assert_eq!(sb["slots"], slots);
    assert_eq!(sb["slot_size"], sector);
    assert_eq!(sb["sector_size"], sector);
    assert_eq!(sb["cluster_name"], "pool-rt");
    assert_eq!(sb["cluster_uuid"], m["superblock"]["cluster_uuid"]);
    assert_eq!(
        sb["format_version"],
        format!("{}.{}", diskbeat::format::VERSION_MAJOR, diskbeat::format::VERSION_MINOR)
    );
    assert_eq!(sb["base_timeout_ms"], 2000);
    assert_eq!(sb["timing"]["interval_ms"], 100);
    assert_eq!(sb["regions"]["records"]["offset"], 4096 + 65536);
    let rows = v["slots"].as_array().unwrap();
    assert_eq!(rows.len(), slots as usize);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["slot"], i);
        assert_eq!(r["state"], "free");
        assert_eq!(r["status"], "ok");
        assert_eq!(r["generation"], 0);
        assert_eq!(r["sequence"], 0);
        assert_eq!(r["host_name"], "");
    }
    // Without --all, free slots are not shown.
    let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "0", "--json"]));
    assert_eq!(v["slots"].as_array().unwrap().len(), 0);
    // The human table works too.
    let out = run(&["inspect", lo.s(), "--sample", "0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pool-rt"));
}

#[test]
fn round_trip_512_1() {
    round_trip(512, 1)
}
#[test]
fn round_trip_512_64() {
    round_trip(512, 64)
}
#[test]
fn round_trip_512_2048() {
    round_trip(512, 2048)
}
#[test]
fn round_trip_4096_1() {
    round_trip(4096, 1)
}
#[test]
fn round_trip_4096_64() {
    round_trip(4096, 64)
}
#[test]
fn round_trip_4096_2048() {
    round_trip(4096, 2048)
}

#[test]
fn slot_size_4096_on_512_device() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    let out = run(&["mkfs", lo.s(), "--slots", "16", "--slot-size", "4096", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&run(&["inspect", lo.s(), "--all", "--sample", "0", "--json"]));
    assert_eq!(v["superblock"]["slot_size"], 4096);
    assert_eq!(v["superblock"]["sector_size"], 512);
    assert_eq!(v["slots"].as_array().unwrap().len(), 16);
}

#[test]
fn inspect_one_slot_and_unformatted() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    let out = run(&["inspect", lo.s()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no diskbeat superblock"), "{}", stderr(&out));
    assert!(run(&["mkfs", lo.s(), "--slots", "8"]).status.success());
    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "3", "--sample", "0", "--json"]));
    assert_eq!(v["slots"].as_array().unwrap().len(), 1);
    assert_eq!(v["slots"][0]["slot"], 3);
    assert_eq!(v["mailbox"]["status"], "ok");
    assert_eq!(v["mailbox"]["command"], "none");
    let out = run(&["inspect", lo.s(), "--slot", "8"]);
    assert_eq!(out.status.code(), Some(2), "a slot the disk does not have is bad input");
    assert!(stderr(&out).contains("slot 8 does not exist"), "{}", stderr(&out));
}
