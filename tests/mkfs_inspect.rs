//! mkfs -> inspect round trips on real loop devices, JSON checked field by field.

mod common;
use common::*;

fn round_trip(sector: u32, slots: u32) {
    if skip_unless_root() {
        return;
    }
    // Sparse: 2 MiB per slot for the default data extents (2048 slots: 4 GiB), plus the tables.
    let lo = LoopDev::new(&format!("{}M", 2 * slots + 64), sector);
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

/// A fresh image file (no loop device, no root): mkfs'd by the real binary, the directory removed
/// on drop.
fn image(slots: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new().prefix("diskbeat-test").tempdir_in("/var/tmp").expect("tempdir");
    let img = dir.path().join("disk.img");
    let size = (2 * u64::from(slots) + 16) << 20;
    std::fs::File::create(&img).and_then(|f| f.set_len(size)).expect("sparse disk.img");
    let out = run(&[
        "mkfs",
        img.to_str().unwrap(),
        "--slots",
        &slots.to_string(),
        "--cluster",
        "net",
        "--timeout",
        "2s",
    ]);
    assert!(out.status.success(), "mkfs: {}", stderr(&out));
    (dir, img)
}

/// Writes a record into `slot` the way a daemon would: its own bit set in `net_view`, plus `hears`.
fn put(
    disk: &mut diskbeat::disk::Disk,
    slot: u32,
    state: diskbeat::format::record::State,
    flags: u16,
    weight: u32,
    hears: &[u32],
) {
    use diskbeat::format::record::Record;
    let mut r = Record::free(disk.superblock().cluster_uuid, slot);
    r.state = state;
    r.host_uuid = uuid::Uuid::from_u128(0xbeef_0000 + u128::from(slot));
    r.generation = 1;
    r.sequence = 10;
    r.io_timeout_ms = 500;
    r.interval_ms = 100;
    r.set_host_name(&format!("hv-{slot}")).unwrap();
    r.flags = flags;
    r.weight = weight;
    r.net_view.set(slot, true);
    for &s in hears {
        r.net_view.set(s, true);
    }
    assert!(disk.write_record(&r, std::time::Duration::from_secs(5)).unwrap().is_done());
}

/// Not one 8-byte window of the cluster key, in hex, in either output stream.
fn assert_no_key(img: &std::path::Path, out: &std::process::Output) {
    let block = read_direct(img, 0, Some(4096));
    let sb = diskbeat::format::superblock::Superblock::decode(&block).expect("superblock");
    let ring =
        diskbeat::format::keyring::Keyring::decode(&block[512..1024], &sb.cluster_uuid).expect("keyring");
    let hex: String = ring.current.key.expose().iter().map(|b| format!("{b:02x}")).collect();
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream).to_ascii_lowercase();
        for w in 0..=(64 - 16) {
            assert!(!text.contains(&hex[w..w + 16]), "key bytes in inspect output:\n{text}");
        }
    }
}

/// `inspect` shows who hears whom from the records' net_views: mutual, one-way, unheard and
/// disk-only hosts, as a grid and as JSON; the key never appears.
#[test]
fn inspect_shows_who_hears_whom() {
    use diskbeat::format::record::{flags, State};
    use serde_json::json;
    let (_dir, img) = image(8);
    let mut disk = open_rw(&img);
    let net = flags::NET_ENABLED;
    // 0 <-> 1 and 0 <-> 2 mutual; 2 hears 1 but 1 does not hear 2; nobody hears 5 (fenced, it
    // hears nobody either); 4 is disk-only: its net_view claims 0 and 1, and is ignored.
    put(&mut disk, 0, State::Live, net | flags::ISOLATION_CONFIGURED, 3, &[1, 2]);
    put(&mut disk, 1, State::Live, net, 1, &[0]);
    put(
        &mut disk,
        2,
        State::Joining,
        net | flags::ISOLATION_CONFIGURED | flags::ISOLATED | flags::RIDING_THROUGH,
        1,
        &[0, 1],
    );
    put(&mut disk, 4, State::Live, flags::WATCHDOG_ARMED, 0, &[0, 1]);
    put(&mut disk, 5, State::Fenced, net, 2, &[]);
    let s = img.to_str().unwrap();

    let out = run(&["inspect", s, "--sample", "0", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_no_key(&img, &out);
    let v = stdout_json(&out);
    let host = |slot: u32, state: &str, weight: u32, iso: [bool; 3], hears: &[u32], not_heard_by: &[u32]| {
        json!({
            "slot": slot, "name": format!("hv-{slot}"), "state": state, "weight": weight,
            "isolation_configured": iso[0], "isolated": iso[1], "riding_through": iso[2],
            "hears": hears, "not_heard_by": not_heard_by,
        })
    };
    let f = false;
    assert_eq!(
        v["network"],
        json!({
            "hosts": [
                host(0, "live", 3, [true, f, f], &[1, 2], &[5]),
                host(1, "live", 1, [f, f, f], &[0], &[5]),
                host(2, "joining", 1, [true, true, true], &[0, 1], &[1, 5]),
                host(5, "fenced", 2, [f, f, f], &[], &[0, 1, 2]),
            ],
            "one_way": [[2, 1]],
            "partitioned": true,
            "disk_only": [{ "slot": 4, "name": "hv-4", "state": "live" }],
        })
    );
    let row = v["slots"].as_array().unwrap().iter().find(|r| r["slot"] == 2).unwrap();
    assert_eq!(row["flags"], json!(["net_enabled", "isolation_configured", "isolated", "riding_through"]));

    let out = run(&["inspect", s, "--sample", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_no_key(&img, &out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = &text[text.find("Network: who hears whom (from the records on the disk)").expect(&text)..];
    assert!(text.find("SLOT  HOST").unwrap() < text.len() - section.len(), "after the slot table:\n{text}");
    for want in [
        "disk-only, excluded (network not enabled): 4 hv-4 (live)",
        "4 network-enabled hosts",
        "Row hears column: * self, Y hears, . does not hear.",
        "  hears  0  1  2  5\n      0  *  Y  Y  .\n      1  Y  *  .  .\n      2  Y  Y  *  .\n      5  .  .  .  *\n",
        "one-way links (the partition rule counts only mutual links):\n    2 (hv-2) hears 1 (hv-1), 1 does not hear 2\n",
        "no link either way:\n    0 (hv-0) and 5 (hv-5)\n    1 (hv-1) and 5 (hv-5)\n    2 (hv-2) and 5 (hv-5)\n",
        "not heard by anyone: 5 (hv-5)",
        "Partitioned: yes (1 one-way link, 3 pairs with no link).",
    ] {
        assert!(section.contains(want), "{want:?} not in:\n{section}");
    }
    let line = |slot: &str| section.lines().find(|l| l.split_whitespace().next() == Some(slot)).unwrap();
    let cells = |slot: &str| line(slot).split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(cells("0"), "0 hv-0 live 3 ok - 2 of 3");
    assert_eq!(cells("2"), "2 hv-2 joining 1 ISOLATED yes 2 of 3");
    assert_eq!(cells("5"), "5 hv-5 fenced 2 - - 0 of 3");

    let out = run(&["inspect", s, "--sample", "0", "--slot", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("net: hears") && text.contains("0-1 (2 of 3 other network-enabled hosts)"),
        "{text}"
    );
    assert!(text.contains("net: not heard by") && text.contains("1,5"), "{text}");
    let out = run(&["inspect", s, "--sample", "0", "--slot", "4"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("disk only (network not enabled)"));
}

/// `inspect` shows a record's ride-through membership (format 1.7 `members`): a JSON array for a
/// record of minor 7, null for an older one; in text (`--slot N`) only for a network-enabled
/// record of minor 7.
#[test]
fn inspect_shows_ride_through_members() {
    use diskbeat::format::record::{flags, Record, State};
    use serde_json::json;
    let (_dir, img) = image(8);
    let mut disk = open_rw(&img);
    let cluster = disk.superblock().cluster_uuid;
    let record = |slot: u32, flags: u16, members: &[u32]| {
        let mut r = Record::free(cluster, slot);
        r.state = State::Live;
        r.host_uuid = uuid::Uuid::from_u128(0xbeef_0000 + u128::from(slot));
        (r.generation, r.sequence, r.io_timeout_ms, r.interval_ms) = (1, 10, 500, 100);
        r.set_host_name(&format!("hv-{slot}")).unwrap();
        r.flags = flags;
        r.net_view.set(slot, true);
        for &s in members {
            r.members.set(s);
        }
        r
    };
    let net = flags::NET_ENABLED;
    let t = std::time::Duration::from_secs(5);
    for r in [record(0, net, &[1, 3, 7]), record(1, net, &[]), record(2, flags::WATCHDOG_ARMED, &[0])] {
        assert!(disk.write_record(&r, t).unwrap().is_done());
    }
    // Slot 3: a network-enabled record written by 1.6 (minor 6: no members field).
    let mut b = [0u8; 512];
    record(3, net, &[]).encode(&mut b);
    b[14..16].copy_from_slice(&6u16.to_le_bytes());
    let c = diskbeat::format::checksum(&b[4..]);
    b[..4].copy_from_slice(&c.to_le_bytes());
    let at = disk.superblock().layout.record_offset(3);
    let block = at / 4096 * 4096;
    let mut data = read_direct(&img, block, Some(4096));
    data[(at - block) as usize..][..512].copy_from_slice(&b);
    write_direct(&img, block, &data);
    let s = img.to_str().unwrap();

    let v = stdout_json(&run(&["inspect", s, "--sample", "0", "--json"]));
    let members: Vec<(u64, serde_json::Value)> = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["slot"].as_u64().unwrap(), r["members"].clone()))
        .collect();
    assert_eq!(
        members,
        [(0, json!([1, 3, 7])), (1, json!([])), (2, json!([0])), (3, serde_json::Value::Null)],
        "arrays from minor 7 on (disk-only too: the field as written), null for minor 6"
    );

    let slot_text = |slot: &str| {
        let out = run(&["inspect", s, "--sample", "0", "--slot", slot]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let members_line =
        |text: &str| text.lines().find(|l| l.trim_start().starts_with("members ")).map(str::to_owned);
    let t0 = slot_text("0");
    assert_eq!(
        members_line(&t0).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
        Some("members 1,3,7".into()),
        "{t0}"
    );
    let lines: Vec<&str> = t0.lines().collect();
    let view = lines.iter().position(|l| l.trim_start().starts_with("network view")).expect(&t0);
    assert!(lines[view + 1].trim_start().starts_with("members "), "right after the network view:\n{t0}");
    let t1 = slot_text("1");
    assert_eq!(
        members_line(&t1).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
        Some("members none".into()),
        "{t1}"
    );
    for slot in ["2", "3"] {
        let t = slot_text(slot);
        assert_eq!(members_line(&t), None, "slot {slot}: disk-only, or minor 6:\n{t}");
    }
}

/// Above 16 network-enabled hosts, one summary line per host instead of the grid.
#[test]
fn inspect_summarises_a_large_matrix() {
    use diskbeat::format::record::{flags, State};
    let (_dir, img) = image(24);
    let mut disk = open_rw(&img);
    // Slots 0..20: two mutual halves 0..10 and 10..20.
    for slot in 0..20u32 {
        let half: Vec<u32> = if slot < 10 { (0..10).collect() } else { (10..20).collect() };
        put(&mut disk, slot, State::Live, flags::NET_ENABLED, 1, &half);
    }
    let s = img.to_str().unwrap();
    let v = stdout_json(&run(&["inspect", s, "--sample", "0", "--json"]));
    let hosts = v["network"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 20);
    assert_eq!(hosts[3]["not_heard_by"], serde_json::json!((10..20).collect::<Vec<u32>>()));
    assert_eq!(v["network"]["partitioned"], true);
    assert_eq!(v["network"]["one_way"], serde_json::json!([]));
    let out = run(&["inspect", s, "--sample", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Row hears column"), "{text}");
    assert!(
        text.contains("DOES NOT HEAR") && text.contains("20 hosts: a summary instead of the grid"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("  13 ")).expect("row of slot 13");
    assert!(
        line.split_whitespace().collect::<Vec<_>>().ends_with(&["9", "of", "19", "0-9", "0-9"]),
        "{line}"
    );
    assert!(text.contains("Partitioned: yes (0 one-way links, 100 pairs with no link)."), "{text}");
    assert!(!text.contains("no link either way"), "the rows say it; no 100-line pair list:\n{text}");
    assert!(text.lines().all(|l| l.chars().count() < 120), "{text}");
}

/// The image `img`, opened for writing records straight into it.
fn open_rw(img: &std::path::Path) -> diskbeat::disk::Disk {
    diskbeat::disk::Disk::open(img, diskbeat::io::Access::ReadWrite, diskbeat::io::EngineKind::Auto, None)
        .expect("open image")
}
