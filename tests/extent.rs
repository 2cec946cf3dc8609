//! Data-extent payloads on real loop devices (docs/FORMAT.md §7): written payloads read back
//! identical, a torn or corrupted payload is reported as such (never data), every write bumps the
//! header sequence by one, and writing one slot's extent touches nothing else on the device.

mod common;
use common::*;
use diskbeat::disk::{CopyView, Disk, DiskError, ExtentRead, EXTENT_PAYLOAD_IO_MAX};
use diskbeat::format::extent::host_info::HostInfo;
use diskbeat::format::extent::{kind, Extent, ExtentCopy, Payload, PAYLOAD_OFFSET};
use diskbeat::format::Corruption;
use diskbeat::io::{Access, EngineKind};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
/// The writer's host uuid in the headers these tests write (format 1.6).
const HOST: uuid::Uuid = uuid::Uuid::from_u128(0xfeed);

fn formatted(sector: u32, slots: u32) -> LoopDev {
    common::formatted(sector, slots, "ext")
}

fn host_info_payload(buf: &mut [u8]) -> usize {
    let h =
        HostInfo::new(&["192.0.2.10:7400".parse().unwrap(), "[2001:db8::1]:7401".parse().unwrap()]).unwrap();
    h.encode(buf).unwrap()
}

/// Device offset of `copy`'s header block of `slot`'s extent.
fn copy_at(disk: &Disk, slot: u32, copy: ExtentCopy) -> u64 {
    disk.superblock().layout.extent_offset(slot) + disk.extent_geometry().copy_offset(copy)
}

/// Flips one byte of the header at `at` (a checksum mismatch), bypassing the engine.
/// Returns the block as it was.
fn tear_header(lo: &LoopDev, at: u64, _disk: &Disk) -> Vec<u8> {
    let mut block = read_direct(lo.path(), at, Some(4096));
    let before = block.clone();
    block[100] ^= 1;
    write_direct(lo.path(), at, &block);
    before
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
        let seq = disk.write_extent(3, kind::HOST_INFO, HOST, 7, &payload[..n], T).unwrap();
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
        assert_eq!(disk.write_extent(3, kind::HOST_INFO, HOST, 7, &big, T).unwrap(), 2);
        assert!(matches!(disk.read_extent(3, &mut out, T).unwrap(), ExtentRead::Payload(_)));
        assert_eq!(out, big);
        assert_eq!(disk.write_extent(3, kind::HOST_INFO, HOST, 7, &big[..5000], T).unwrap(), 3);
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
        assert_eq!(disk.write_extent(1, k, HOST, 2, p, T).unwrap(), want);
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
    assert_eq!(disk.write_extent(1, kind::HOST_INFO, HOST, 3, b"x", T).unwrap(), 6, "sequence kept on disk");
    // Other slots' sequences are their own.
    assert_eq!(disk.write_extent(2, kind::HOST_INFO, HOST, 1, b"y", T).unwrap(), 1);
}

#[test]
fn torn_or_corrupted_payload_is_never_data() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 8);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let mut payload = [0u8; 64];
    let n = host_info_payload(&mut payload);
    assert_eq!(disk.write_extent(3, kind::HOST_INFO, HOST, 1, &payload[..n], T).unwrap(), 1);
    // Sequence 1 went to copy B (mkfs's copies tie at 0: A counts as newest). Copy A still holds
    // mkfs's empty header, whose (empty) payload cannot tear: make it torn too, so that this test
    // sees what a single copy would (the two-copy fallback has its own tests below).
    let payload_at = copy_at(&disk, 3, ExtentCopy::B) + PAYLOAD_OFFSET;
    let a_header = tear_header(&lo, copy_at(&disk, 3, ExtentCopy::A), &disk);
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

    // The next complete write heals it (copy A's header back first: a writer refuses to guess a
    // sequence past a corrupt header).
    write_direct(lo.path(), copy_at(&disk, 3, ExtentCopy::A), &a_header);
    assert_eq!(disk.write_extent(3, kind::HOST_INFO, HOST, 1, &payload[..n], T).unwrap(), 2);
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
        disk.write_extent(s, kind::HOST_INFO, HOST, 1, &[s as u8; 9000], T).unwrap();
    }
    let before = hash_except(&lo, ext.clone());
    let ext_before = read_direct(lo.path(), ext.start, Some(l.extent_size as usize));
    let mut payload = [0u8; 64];
    let n = host_info_payload(&mut payload);
    for _ in 0..3 {
        disk.write_extent(3, kind::HOST_INFO, HOST, 4, &payload[..n], T).unwrap();
    }
    disk.write_extent(3, kind::HOST_INFO, HOST, 4, &[0xA5; 6000], T).unwrap();
    assert_eq!(hash_except(&lo, ext.clone()), before, "bytes outside slot 3's extent changed");
    // Inside the extent: sequences 1 and 3 went to copy B (header + 1 payload block), 2 and 4 to
    // copy A (header + 2 payload blocks for the last one); nothing else.
    let ext_after = read_direct(lo.path(), ext.start, Some(l.extent_size as usize));
    let b = disk.extent_geometry().copy_offset(ExtentCopy::B) as usize;
    assert_eq!(&ext_after[3 * 4096..b], &ext_before[3 * 4096..b]);
    assert_eq!(&ext_after[b + 2 * 4096..], &ext_before[b + 2 * 4096..]);
    assert!(ext_after[512..4096].iter().all(|&b| b == 0), "header block padding zero");
    assert!(ext_after[b + 512..b + 4096].iter().all(|&b| b == 0), "header block padding zero");
    assert!(ext_after[4096 + 6000..3 * 4096].iter().all(|&b| b == 0), "last payload block zero-padded");
    assert!(ext_after[b + 4096 + n..b + 2 * 4096].iter().all(|&b| b == 0), "last payload block zero-padded");
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
    let err = disk.write_extent(2, kind::HOST_INFO, HOST, 1, b"abc", T).unwrap_err();
    assert!(matches!(err, DiskError::ExtentHeader { slot: 2, reason: Corruption::BadChecksum }), "{err:?}");
    assert_eq!(lo.hash(), before, "a refused write writes nothing");
    let mut out = [0u8; 16];
    // Copy B (mkfs's empty header) still reads: the readers fall back to it.
    let c = disk.read_extent_copies(2, &mut out, T).unwrap();
    assert_eq!((c.copy, c.a), (Some(ExtentCopy::B), CopyView::Corrupt(Corruption::BadChecksum)));
    assert!(matches!(c.read, ExtentRead::Payload(h) if h.sequence == 0));
    // Both headers corrupt: corrupt (copy A's reason), and still nothing is written.
    tear_header(&lo, copy_at(&disk, 2, ExtentCopy::B), &disk);
    let before = lo.hash();
    assert!(matches!(
        disk.write_extent(2, kind::HOST_INFO, HOST, 1, b"abc", T),
        Err(DiskError::ExtentHeader { .. })
    ));
    assert_eq!(lo.hash(), before);
    let c = disk.read_extent_copies(2, &mut out, T).unwrap();
    assert_eq!(c.read, ExtentRead::Corrupt(Corruption::BadChecksum));
    assert_eq!((c.copy, c.b), (None, CopyView::Corrupt(Corruption::BadChecksum)));
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
        disk.write_extent(1, kind::HOST_INFO, HOST, 1, &too_big, T),
        Err(DiskError::PayloadTooLarge { len, max: EXTENT_PAYLOAD_IO_MAX }) if len == too_big.len()
    ));
    assert!(matches!(disk.write_extent(1, 3, HOST, 1, b"x", T), Err(DiskError::UnknownKind(3))));
    assert!(matches!(
        disk.write_extent(4, kind::HOST_INFO, HOST, 1, b"x", T),
        Err(DiskError::NoSuchSlot { .. })
    ));
    assert_eq!(lo.hash(), before, "refusals write nothing");
    // A payload larger than the caller's buffer is not read.
    disk.write_extent(1, kind::HOST_INFO, HOST, 1, &[7u8; 100], T).unwrap();
    let mut small = [0u8; 99];
    assert!(
        matches!(disk.read_extent(1, &mut small, T).unwrap(), ExtentRead::TooLarge(h) if h.payload_len == 100)
    );
    // A read-only disk cannot write.
    let mut ro = Disk::open(lo.path(), Access::ReadOnly, EngineKind::Auto, None).unwrap();
    assert!(ro.write_extent(1, kind::HOST_INFO, HOST, 1, b"x", T).is_err());
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
    disk.write_extent(0, kind::HOST_INFO, HOST, 1, &[3u8; 5000], T).unwrap();
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
    disk.write_extent(3, kind::HOST_INFO, HOST, 7, &payload[..n], T).unwrap();
    let seq = disk.write_extent(3, kind::HOST_INFO, HOST, 7, &payload[..n], T).unwrap();
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
    // The writer the header names (format 1.6) is the record's incarnation.
    assert_eq!(rows[3]["extent"]["host_uuid"], HOST.to_string());
    assert_eq!(
        (&rows[3]["extent"]["generation"], &rows[3]["extent"]["record_incarnation"]),
        (&7.into(), &true.into())
    );

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
    assert!(text.contains(&format!("; writer {HOST} generation 7\n")), "{text}");
    // Another host's record in the slot: the extent is not its incarnation's.
    let mut other = r;
    (other.host_uuid, other.sequence) = (uuid::Uuid::from_u128(0xbeef), 2);
    assert!(disk.write_record(&other, T).unwrap().is_done());
    let v2 = stdout_json(&run(&["inspect", lo.s(), "--slot", "3", "--sample", "0", "--json"]));
    assert_eq!(v2["slots"][0]["extent"]["record_incarnation"], false);
    let out = run(&["inspect", lo.s(), "--slot", "3", "--sample", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("; writer {HOST} generation 7, not the record's incarnation")), "{text}");
    assert!(disk.write_record(&r, T).unwrap().is_done());

    assert_eq!(v["slots"][0]["extent"]["copy"], "a", "sequence 2 is in copy A");
    assert_eq!(v["slots"][0]["extent"]["other_copy"], "older");
    // The newest copy torn: inspect shows the previous one, and says so.
    let at = copy_at(&disk, 3, ExtentCopy::A) + PAYLOAD_OFFSET;
    let mut block = read_direct(lo.path(), at, Some(4096));
    block[0] ^= 1;
    write_direct(lo.path(), at, &block);
    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "3", "--sample", "0", "--json"]));
    let e = &v["slots"][0]["extent"];
    assert_eq!((&e["payload"], &e["sequence"]), (&"ok".into(), &1.into()));
    assert_eq!((&e["copy"], &e["other_copy"]), (&"b".into(), &"torn".into()));
    let out = run(&["inspect", lo.s(), "--slot", "3", "--sample", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("payload ok (copy b; other copy torn)"), "{text}");
    // Both torn: shows as such.
    let at = copy_at(&disk, 3, ExtentCopy::B) + PAYLOAD_OFFSET;
    let mut block = read_direct(lo.path(), at, Some(4096));
    block[0] ^= 1;
    write_direct(lo.path(), at, &block);
    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "3", "--sample", "0", "--json"]));
    assert_eq!(v["slots"][0]["extent"]["payload"], "torn");
    assert!(v["slots"][0]["extent"]["heartbeat_addrs"].is_null());
}

/// sha256 of one copy (header block and payload area) of `slot`'s extent.
fn copy_hash(lo: &LoopDev, disk: &Disk, slot: u32, copy: ExtentCopy) -> Vec<u8> {
    let len = disk.extent_geometry().copy_size as usize;
    sha(&read_direct(lo.path(), copy_at(disk, slot, copy), Some(len)))
}

/// The header of `copy` as on the device (bypassing `Disk`).
fn header_at(lo: &LoopDev, disk: &Disk, slot: u32, copy: ExtentCopy) -> Extent {
    let bytes = read_direct(lo.path(), copy_at(disk, slot, copy), Some(4096));
    let copy_size = disk.extent_geometry().copy_size;
    Extent::decode(&bytes, &disk.superblock().cluster_uuid, slot, copy_size).unwrap()
}

/// Writes alternate between the copies (B, A, B, ...), each write leaves the copy that held the
/// newest contents byte-identical, and readers always get the newest.
#[test]
fn double_buffer_alternation() {
    if skip_unless_root() {
        return;
    }
    for (sector, engine) in SECTOR_ENGINES {
        let lo = formatted(sector, 4);
        let mut disk = Disk::open(lo.path(), Access::ReadWrite, engine, Some(1)).unwrap();
        assert_eq!(disk.extent_geometry().copies, 2);
        assert_eq!(disk.extent_geometry().copy_size, 1 << 20);
        // mkfs wrote both copies' headers: empty, sequence 0.
        for c in [ExtentCopy::A, ExtentCopy::B] {
            assert_eq!((header_at(&lo, &disk, 1, c).sequence, header_at(&lo, &disk, 1, c).kind), (0, 0));
        }
        let mut out = vec![0u8; EXTENT_PAYLOAD_IO_MAX];
        let mut newest = ExtentCopy::A;
        for seq in 1..=6u64 {
            let payload: Vec<u8> = (0..1000 * seq as usize).map(|i| (i as u64 * seq) as u8).collect();
            let kept = copy_hash(&lo, &disk, 1, newest);
            assert_eq!(disk.write_extent(1, kind::HOST_INFO, HOST, 9, &payload, T).unwrap(), seq);
            assert_eq!(copy_hash(&lo, &disk, 1, newest), kept, "write {seq} touched the newest copy");
            let target = newest.other();
            assert_eq!(header_at(&lo, &disk, 1, target).sequence, seq, "sector {sector} {engine:?}");
            let c = disk.read_extent_copies(1, &mut out, T).unwrap();
            assert_eq!(c.copy, Some(target));
            assert!(
                matches!(c.read, ExtentRead::Payload(h) if h.sequence == seq && h.payload_len == payload.len() as u64)
            );
            assert_eq!(&out[..payload.len()], &payload[..]);
            assert!(matches!(c.view(newest), CopyView::Header(h) if h.sequence == seq - 1), "{c:?}");
            assert!(!c.fell_back());
            newest = target;
        }
    }
}

/// A writer that crashes between the payload write and the header write (simulated: the real
/// writer's write, then the target's header block put back as it was before) leaves the previous
/// copy readable, and the next write heals. With the newest copy's payload torn, readers fall
/// back to the older copy and report it; when both are torn, the extent is torn.
#[test]
fn crash_between_payload_and_header_keeps_the_previous_copy() {
    if skip_unless_root() {
        return;
    }
    for sector in [512, 4096] {
        let lo = formatted(sector, 4);
        let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, Some(2)).unwrap();
        let mut out = vec![0u8; EXTENT_PAYLOAD_IO_MAX];
        let p1 = vec![0x11u8; 5000];
        let p2 = vec![0x22u8; 7000];
        assert_eq!(disk.write_extent(2, kind::HOST_INFO, HOST, 1, &p1, T).unwrap(), 1); // copy B
        assert_eq!(disk.write_extent(2, kind::HOST_INFO, HOST, 1, &p2, T).unwrap(), 2); // copy A
                                                                                        // Write 3 "crashes" after its payload: copy B's header block is what it was before.
        let b_at = copy_at(&disk, 2, ExtentCopy::B);
        let b_header_before = read_direct(lo.path(), b_at, Some(4096));
        let p3 = vec![0x33u8; 6000];
        assert_eq!(disk.write_extent(2, kind::HOST_INFO, HOST, 1, &p3, T).unwrap(), 3);
        write_direct(lo.path(), b_at, &b_header_before);
        let c = disk.read_extent_copies(2, &mut out, T).unwrap();
        assert_eq!(c.copy, Some(ExtentCopy::A), "sector {sector}: {c:?}");
        assert!(matches!(c.read, ExtentRead::Payload(h) if h.sequence == 2));
        assert_eq!(&out[..p2.len()], &p2[..], "the previous complete payload survives");
        assert!(matches!(c.b, CopyView::Header(h) if h.sequence == 1), "{c:?}");
        // Readers never take the half-written copy even if asked for it first: its old header
        // (sequence 1) no longer matches its payload.
        // The next write continues the sequence and heals copy B.
        assert_eq!(disk.write_extent(2, kind::HOST_INFO, HOST, 1, &p3, T).unwrap(), 3);
        let c = disk.read_extent_copies(2, &mut out, T).unwrap();
        assert_eq!(c.copy, Some(ExtentCopy::B));
        assert!(matches!(c.read, ExtentRead::Payload(h) if h.sequence == 3));
        assert_eq!(&out[..p3.len()], &p3[..]);

        // The newest copy (B, sequence 3) torn: readers fall back to A (sequence 2) and say so.
        let at = b_at + PAYLOAD_OFFSET;
        let mut block = read_direct(lo.path(), at, Some(4096));
        block[17] ^= 0x40;
        write_direct(lo.path(), at, &block);
        let c = disk.read_extent_copies(2, &mut out, T).unwrap();
        assert_eq!(c.copy, Some(ExtentCopy::A));
        assert!(matches!(c.read, ExtentRead::Payload(h) if h.sequence == 2));
        assert!(matches!(c.b, CopyView::Torn(h) if h.sequence == 3));
        assert!(c.fell_back());
        assert_eq!(&out[..p2.len()], &p2[..]);
        // The writer now rewrites the torn copy (B) and keeps A, the last complete one.
        let a_before = copy_hash(&lo, &disk, 2, ExtentCopy::A);
        assert_eq!(disk.write_extent(2, kind::HOST_INFO, HOST, 1, &p1, T).unwrap(), 4);
        assert_eq!(copy_hash(&lo, &disk, 2, ExtentCopy::A), a_before);
        assert_eq!(header_at(&lo, &disk, 2, ExtentCopy::B).sequence, 4);

        // Both copies torn: Torn with the newest header, both views torn, nothing copied out.
        for c in [ExtentCopy::A, ExtentCopy::B] {
            let at = copy_at(&disk, 2, c) + PAYLOAD_OFFSET;
            let mut block = read_direct(lo.path(), at, Some(4096));
            block[0] ^= 1;
            write_direct(lo.path(), at, &block);
        }
        out.fill(0xEE);
        let c = disk.read_extent_copies(2, &mut out, T).unwrap();
        assert!(matches!(c.read, ExtentRead::Torn(h) if h.sequence == 4), "{c:?}");
        assert!(matches!((c.a, c.b), (CopyView::Torn(_), CopyView::Torn(_))));
        assert!(!c.fell_back());
        assert!(out.iter().all(|&b| b == 0xEE), "a torn payload is never handed out");
        assert!(matches!(disk.read_extent(2, &mut out, T).unwrap(), ExtentRead::Torn(_)));
    }
}

/// Kind 2 (host state) through the disk: 200 VMs with 4.5 KiB definitions (the FORMAT.md sizing
/// example; with one IPv4 and one IPv6 address, 939272 bytes) written, read back by another open, decoded equal; `inspect` shows its
/// addresses and VM count.
#[test]
fn host_state_round_trip_through_the_disk() {
    use diskbeat::format::host_state::{HostCapacity, HostState, VmEntry, VmState};
    if skip_unless_root() {
        return;
    }
    let lo = formatted(4096, 4);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, Some(0)).unwrap();
    let state = HostState {
        hb_addrs: vec!["192.0.2.10:7400".parse().unwrap(), "[2001:db8::1]:7401".parse().unwrap()],
        capacity: Some(HostCapacity { memory_mib: 512 * 1024, vcpus: 128, accepts_restarts: true }),
        vms: (0..200u128)
            .map(|i| VmEntry {
                uuid: uuid::Uuid::from_u128(0x1000 + i),
                name: format!("vm-{i:013}"),
                memory_mib: 2048,
                vcpus: 2,
                state: if i % 7 == 0 { VmState::Stopped } else { VmState::Running },
                protection: diskbeat::planner::Protection::Protect,
                order: (i % 3 == 0).then_some(i as i64),
                anti_affinity: Some("group-01".into()),
                claim: i as u64,
                attempt: 0,
                failure: None,
                definition: (0..4608).map(|j| b"<domain/>"[(j + i as usize) % 9]).collect(),
            })
            .collect(),
        plan: None,
    };
    let mut payload = Vec::new();
    state.encode(&mut payload).unwrap();
    assert_eq!(payload.len(), 939_272);
    let seq = disk.write_extent(0, kind::HOST_STATE, HOST, 3, &payload, T).unwrap();
    let mut other = Disk::open(lo.path(), Access::ReadOnly, EngineKind::Auto, None).unwrap();
    let mut out = vec![0u8; EXTENT_PAYLOAD_IO_MAX];
    let h = match other.read_extent(0, &mut out, T).unwrap() {
        ExtentRead::Payload(h) => h,
        x => panic!("{x:?}"),
    };
    assert_eq!(
        (h.kind, h.sequence, h.payload_len, h.version_minor),
        (kind::HOST_STATE, seq, 939_272, diskbeat::format::VERSION_MINOR)
    );
    assert_eq!((h.host_uuid, h.generation), (HOST, 3), "the writer it names");
    assert_eq!(Payload::decode(&h, &out[..h.payload_len as usize]), Ok(Payload::HostState(state)));

    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "0", "--sample", "0", "--json"]));
    let e = &v["slots"][0]["extent"];
    assert_eq!(
        (&e["kind_name"], &e["payload"], &e["vm_count"]),
        (&"host_state".into(), &"ok".into(), &200.into())
    );
    assert_eq!(e["heartbeat_addrs"], serde_json::json!(["192.0.2.10:7400", "[2001:db8::1]:7401"]));
    let text = run(&["inspect", lo.s(), "--slot", "0", "--sample", "0"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("host_state (kind 2), 939272-byte payload ok, 200 VMs"), "{text}");
}

/// A device whose superblock says 1.4 (formatted before 1.5) keeps one copy per extent: this build
/// reads and writes it with the 1.2 protocol and never touches the second half of an extent.
#[test]
fn single_copy_device_of_minor_4() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 4);
    // Rewrite the superblock as minor 4 (the layout is the same; only the minor differs).
    let mut block0 = read_direct(lo.path(), 0, Some(4096));
    block0[14] = 4;
    let crc = diskbeat::format::checksum(&block0[4..512]);
    block0[..4].copy_from_slice(&crc.to_le_bytes());
    write_direct(lo.path(), 0, &block0);
    let mut disk = Disk::open(lo.path(), Access::ReadWrite, EngineKind::Auto, None).unwrap();
    let g = disk.extent_geometry();
    assert_eq!((g.copies, g.copy_size), (1, disk.superblock().layout.extent_size));
    let half = disk.superblock().layout.extent_offset(1) + (1 << 20);
    let second_half = read_direct(lo.path(), half, Some(1 << 20));
    let mut out = vec![0u8; EXTENT_PAYLOAD_IO_MAX];
    for seq in 1..=3u64 {
        assert_eq!(disk.write_extent(1, kind::HOST_INFO, HOST, 1, &[seq as u8; 3000], T).unwrap(), seq);
        let c = disk.read_extent_copies(1, &mut out, T).unwrap();
        assert_eq!((c.copy, c.b), (Some(ExtentCopy::A), CopyView::Absent));
        assert!(matches!(c.read, ExtentRead::Payload(h) if h.sequence == seq));
    }
    assert_eq!(read_direct(lo.path(), half, Some(1 << 20)), second_half, "copy B's place untouched");
    // And its torn payload is torn (no second copy to fall back to).
    let at = disk.superblock().layout.extent_offset(1) + PAYLOAD_OFFSET;
    let mut block = read_direct(lo.path(), at, Some(4096));
    block[0] ^= 1;
    write_direct(lo.path(), at, &block);
    assert!(matches!(disk.read_extent(1, &mut out, T).unwrap(), ExtentRead::Torn(h) if h.sequence == 3));
}
