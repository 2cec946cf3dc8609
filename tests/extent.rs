//! Data-extent payloads on real loop devices (docs/FORMAT.md §7): written payloads read back
//! identical, a torn or corrupted payload is reported as such (never data), every write bumps the
//! header sequence by one, and writing one slot's extent touches nothing else on the device.

mod common;
use common::*;
use diskbeat::disk::{Disk, DiskError, ExtentRead, EXTENT_PAYLOAD_IO_MAX};
use diskbeat::format::extent::host_info::HostInfo;
use diskbeat::format::extent::{kind, Extent, Payload, PAYLOAD_OFFSET};
use diskbeat::format::Corruption;
use diskbeat::io::{Access, EngineKind};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn formatted(sector: u32, slots: u32) -> LoopDev {
    common::formatted(sector, slots, "ext")
}

fn host_info_payload(buf: &mut [u8]) -> usize {
    let h =
        HostInfo::new(&["192.0.2.10:7400".parse().unwrap(), "[2001:db8::1]:7401".parse().unwrap()]).unwrap();
    h.encode(buf).unwrap()
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// sha256 of the whole device except `skip` (a byte range).
fn hash_except(lo: &LoopDev, skip: std::ops::Range<u64>) -> (Vec<u8>, Vec<u8>) {
    let all = read_direct(lo.path(), 0, None);
    (sha(&all[..skip.start as usize]), sha(&all[skip.end as usize..]))
}

#[test]
fn write_then_read_back_on_both_engines_and_sector_sizes() {
    if skip_unless_root() {
        return;
    }
    for (sector, engine) in SECTOR_ENGINES {
        let lo = formatted(sector, 8);
        let mut disk = Disk::open(lo.path(), Access::ReadWrite, engine, Some(3)).unwrap();
        assert_eq!(disk.engine().kind(), engine);
        let mut out = vec![0u8; EXTENT_PAYLOAD_IO_MAX];
        // mkfs's header: kind 0, sequence 0, no payload.
        match disk.read_extent(3, &mut out, T).unwrap() {
            ExtentRead::Payload(h) => assert_eq!((h.kind, h.sequence, h.payload_len), (0, 0, 0)),
            other => panic!("{other:?}"),
        }
        let mut payload = [0u8; 64];
        let n = host_info_payload(&mut payload);
        let seq = disk.write_extent(3, kind::HOST_INFO, 7, &payload[..n], T).unwrap();
        assert_eq!(seq, 1, "sector {sector} {engine:?}");
        let h = match disk.read_extent(3, &mut out, T).unwrap() {
            ExtentRead::Payload(h) => h,
            other => panic!("sector {sector} {engine:?}: {other:?}"),
        };
        assert_eq!((h.kind, h.generation, h.sequence, h.payload_len), (kind::HOST_INFO, 7, 1, n as u64));
        assert_eq!(&out[..n], &payload[..n]);
        let info = Payload::decode(&h, &out[..n]).unwrap();
        assert_eq!(info, Payload::HostInfo(HostInfo::decode(&payload[..n], 2).unwrap()));
        // Another reader (a fresh open, read-only) sees the same.
        let mut other = Disk::open(lo.path(), Access::ReadOnly, engine, None).unwrap();
        let mut out2 = vec![0u8; 256];
        assert_eq!(other.read_extent(3, &mut out2, T).unwrap(), ExtentRead::Payload(h));
        assert_eq!(&out2[..n], &payload[..n]);

        // A payload of exactly the largest size this build moves, then a non-block-multiple one.
        let big: Vec<u8> = (0..EXTENT_PAYLOAD_IO_MAX).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(disk.write_extent(3, kind::HOST_INFO, 7, &big, T).unwrap(), 2);
        assert!(matches!(disk.read_extent(3, &mut out, T).unwrap(), ExtentRead::Payload(_)));
        assert_eq!(out, big);
        assert_eq!(disk.write_extent(3, kind::HOST_INFO, 7, &big[..5000], T).unwrap(), 3);
        match disk.read_extent(3, &mut out, T).unwrap() {
            ExtentRead::Payload(h) => assert_eq!(h.payload_len, 5000),
            other => panic!("{other:?}"),
        }
        assert_eq!(&out[..5000], &big[..5000]);
    }
}

#[test]
fn sequence_increments_by_one_per_write_and_survives_reopen() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 4);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, Some(1)).unwrap();
    let mut out = [0u8; 128];
    for want in 1..=5u64 {
        let payload = [want as u8; 10];
        // Empty payloads (kind 0) bump the sequence too.
        let (k, p): (u16, &[u8]) = if want == 3 { (kind::EMPTY, &[]) } else { (kind::HOST_INFO, &payload) };
        assert_eq!(disk.write_extent(1, k, 2, p, T).unwrap(), want);
        match disk.read_extent(1, &mut out, T).unwrap() {
            ExtentRead::Payload(h) => {
                assert_eq!((h.sequence, h.kind, h.payload_len), (want, k, p.len() as u64));
                assert_eq!(&out[..p.len()], p);
            }
            other => panic!("{other:?}"),
        }
    }
    drop(disk);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, Some(1)).unwrap();
    assert_eq!(disk.write_extent(1, kind::HOST_INFO, 3, b"x", T).unwrap(), 6, "sequence kept on disk");
    // Other slots' sequences are their own.
    assert_eq!(disk.write_extent(2, kind::HOST_INFO, 1, b"y", T).unwrap(), 1);
}

#[test]
fn torn_or_corrupted_payload_is_never_data() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let l = disk.superblock().layout;
    let payload_at = l.extent_offset(3) + PAYLOAD_OFFSET;
    let mut payload = [0u8; 64];
    let n = host_info_payload(&mut payload);
    assert_eq!(disk.write_extent(3, kind::HOST_INFO, 1, &payload[..n], T).unwrap(), 1);
    let mut out = [0u8; 256];
    let good = match disk.read_extent(3, &mut out, T).unwrap() {
        ExtentRead::Payload(h) => h,
        other => panic!("{other:?}"),
    };

    // A writer that crashed between step 1 (payload) and step 2 (header): a new payload on disk,
    // the old header.
    let mut block = read_direct(lo.path(), payload_at, Some(4096));
    block[..n].copy_from_slice(&[0x5A; 64][..n]);
    write_direct(lo.path(), payload_at, &block);
    assert_eq!(disk.read_extent(3, &mut out, T).unwrap(), ExtentRead::Torn(good));

    // The good payload back, then one corrupted byte (every bit position of one byte, and a byte
    // of each entry).
    block[..n].copy_from_slice(&payload[..n]);
    write_direct(lo.path(), payload_at, &block);
    assert_eq!(disk.read_extent(3, &mut out, T).unwrap(), ExtentRead::Payload(good));
    for (byte, bit) in [(0, 0), (5, 3), (n - 1, 7), (12, 1), (20, 6)] {
        block[byte] ^= 1 << bit;
        write_direct(lo.path(), payload_at, &block);
        assert_eq!(
            disk.read_extent(3, &mut out, T).unwrap(),
            ExtentRead::Torn(good),
            "byte {byte} bit {bit}"
        );
        block[byte] ^= 1 << bit;
    }
    // Bytes past payload_len are not covered and do not matter.
    block[n] ^= 0xFF;
    write_direct(lo.path(), payload_at, &block);
    assert_eq!(disk.read_extent(3, &mut out, T).unwrap(), ExtentRead::Payload(good));

    // The next complete write heals it.
    assert_eq!(disk.write_extent(3, kind::HOST_INFO, 1, &payload[..n], T).unwrap(), 2);
    assert!(matches!(disk.read_extent(3, &mut out, T).unwrap(), ExtentRead::Payload(h) if h.sequence == 2));
}

#[test]
fn writing_slot_3_leaves_every_other_byte_identical() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(4096, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, Some(3)).unwrap();
    let l = disk.superblock().layout;
    let ext = l.extent_offset(3)..l.extent_offset(3) + l.extent_size;
    // Give the neighbours' extents non-trivial content first.
    for s in [2, 4] {
        disk.write_extent(s, kind::HOST_INFO, 1, &[s as u8; 9000], T).unwrap();
    }
    let before = hash_except(&lo, ext.clone());
    let ext_before = read_direct(lo.path(), ext.start, Some(l.extent_size as usize));
    let mut payload = [0u8; 64];
    let n = host_info_payload(&mut payload);
    for _ in 0..3 {
        disk.write_extent(3, kind::HOST_INFO, 4, &payload[..n], T).unwrap();
    }
    disk.write_extent(3, kind::HOST_INFO, 4, &[0xA5; 6000], T).unwrap();
    assert_eq!(hash_except(&lo, ext.clone()), before, "bytes outside slot 3's extent changed");
    // Inside the extent: only the header block and the payload blocks written (2 x 4096).
    let ext_after = read_direct(lo.path(), ext.start, Some(l.extent_size as usize));
    assert_eq!(&ext_after[3 * 4096..], &ext_before[3 * 4096..]);
    assert!(ext_after[512..4096].iter().all(|&b| b == 0), "header block padding zero");
    assert!(ext_after[4096 + 6000..3 * 4096].iter().all(|&b| b == 0), "last payload block zero-padded");
}

#[test]
fn corrupt_header_refuses_the_write_and_writes_nothing() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 4);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let at = disk.superblock().layout.extent_offset(2);
    let mut block = read_direct(lo.path(), at, Some(4096));
    block[100] ^= 1;
    write_direct(lo.path(), at, &block);
    let before = lo.hash();
    let err = disk.write_extent(2, kind::HOST_INFO, 1, b"abc", T).unwrap_err();
    assert!(matches!(err, DiskError::ExtentHeader { slot: 2, reason: Corruption::BadChecksum }), "{err:?}");
    assert_eq!(lo.hash(), before, "a refused write writes nothing");
    let mut out = [0u8; 16];
    assert_eq!(disk.read_extent(2, &mut out, T).unwrap(), ExtentRead::Corrupt(Corruption::BadChecksum));
}

#[test]
fn limits_and_refusals() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 4);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let before = lo.hash();
    let too_big = vec![1u8; EXTENT_PAYLOAD_IO_MAX + 1];
    assert!(matches!(
        disk.write_extent(1, kind::HOST_INFO, 1, &too_big, T),
        Err(DiskError::PayloadTooLarge { len, max: EXTENT_PAYLOAD_IO_MAX }) if len == too_big.len()
    ));
    assert!(matches!(disk.write_extent(1, 2, 1, b"x", T), Err(DiskError::UnknownKind(2))));
    assert!(matches!(disk.write_extent(4, kind::HOST_INFO, 1, b"x", T), Err(DiskError::NoSuchSlot { .. })));
    assert_eq!(lo.hash(), before, "refusals write nothing");
    // A payload larger than the caller's buffer is not read.
    disk.write_extent(1, kind::HOST_INFO, 1, &[7u8; 100], T).unwrap();
    let mut small = [0u8; 99];
    assert!(
        matches!(disk.read_extent(1, &mut small, T).unwrap(), ExtentRead::TooLarge(h) if h.payload_len == 100)
    );
    // A read-only disk cannot write.
    let mut ro = Disk::open(lo.path(), Access::ReadOnly, EngineKind::Auto, None).unwrap();
    assert!(ro.write_extent(1, kind::HOST_INFO, 1, b"x", T).is_err());
    let _ = Extent::empty(disk.superblock().cluster_uuid, 0);
}

/// Extent I/O between a sweep and its use does not disturb the sweep's results. (A smoke check:
/// with every op completing, a shared op index would go unnoticed too; the separate index matters
/// when an extent op fails or times out.)
#[test]
fn extent_io_leaves_the_last_sweep_intact() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, Some(0)).unwrap();
    assert!(disk.sweep(T).unwrap().complete());
    let slots: Vec<Vec<u8>> = (0..8).map(|s| disk.slot_bytes(s).unwrap().to_vec()).collect();
    let mailbox = disk.mailbox_bytes().unwrap().to_vec();
    disk.write_extent(0, kind::HOST_INFO, 1, &[3u8; 5000], T).unwrap();
    let mut out = [0u8; 5000];
    assert!(matches!(disk.read_extent(0, &mut out, T).unwrap(), ExtentRead::Payload(_)));
    for (s, want) in slots.iter().enumerate() {
        assert_eq!(disk.slot_bytes(s as u32).unwrap(), &want[..], "slot {s}");
    }
    assert_eq!(disk.mailbox_bytes().unwrap(), &mailbox[..]);
}

/// `inspect` shows each slot's extent header and its record's `extent_sequence`; `--slot N` also
/// checks the payload and decodes host info.
#[test]
fn inspect_shows_extent_and_record_extent_sequence() {
    use diskbeat::format::record::{Record, State};
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let mut payload = [0u8; 64];
    let n = host_info_payload(&mut payload);
    disk.write_extent(3, kind::HOST_INFO, 7, &payload[..n], T).unwrap();
    let seq = disk.write_extent(3, kind::HOST_INFO, 7, &payload[..n], T).unwrap();
    let mut r = Record::free(disk.superblock().cluster_uuid, 3);
    r.state = State::Live;
    r.host_uuid = uuid::Uuid::from_u128(0xfeed);
    r.generation = 7;
    r.sequence = 1;
    r.io_timeout_ms = 500;
    r.interval_ms = 100;
    r.set_host_name("host-3").unwrap();
    r.extent_sequence = seq;
    assert!(disk.write_record(&r, T).unwrap().is_done());

    let v = stdout_json(&run(&["inspect", lo.s(), "--all", "--sample", "0", "--json"]));
    let rows = v["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        let (want_seq, want_kind, want_len) = if row["slot"] == 3 { (2, 1, n) } else { (0, 0, 0) };
        let e = &row["extent"];
        assert_eq!(e["status"], "ok", "{row}");
        assert_eq!(e["sequence"], want_seq);
        assert_eq!(e["kind"], want_kind);
        assert_eq!(e["payload_len"], want_len);
        assert!(e["payload"].is_null(), "payload read only with --slot");
        assert_eq!(row["extent_sequence"], want_seq);
    }
    assert_eq!(rows[3]["extent"]["kind_name"], "host_info");
    assert_eq!(rows[0]["extent"]["kind_name"], "empty");

    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "3", "--sample", "0", "--json"]));
    let e = &v["slots"][0]["extent"];
    assert_eq!(e["payload"], "ok");
    assert_eq!(e["heartbeat_addrs"], serde_json::json!(["192.0.2.10:7400", "[2001:db8::1]:7401"]));

    let out = run(&["inspect", lo.s(), "--slot", "3", "--sample", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 (record)"), "{text}");
    assert!(text.contains(&format!("sequence 2, host_info (kind 1), {n}-byte payload ok")), "{text}");
    assert!(text.contains("192.0.2.10:7400, [2001:db8::1]:7401"), "{text}");

    // A torn payload shows as such.
    let at = disk.superblock().layout.extent_offset(3) + PAYLOAD_OFFSET;
    let mut block = read_direct(lo.path(), at, Some(4096));
    block[0] ^= 1;
    write_direct(lo.path(), at, &block);
    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "3", "--sample", "0", "--json"]));
    assert_eq!(v["slots"][0]["extent"]["payload"], "torn");
    assert!(v["slots"][0]["extent"]["heartbeat_addrs"].is_null());
}
