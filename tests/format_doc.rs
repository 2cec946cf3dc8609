//! Asserts the numbers `docs/FORMAT.md` states. If one of these fails, either the format changed
//! (bump the version and update FORMAT.md) or the document is wrong.
//!
//! Most tests restate the document's numbers; the `doc_*` tests parse FORMAT.md itself (the
//! version it names, the common-header and record tables, the record flags table, the members and
//! fencer slot paragraphs, the record test vector), so those parts of the document cannot drift
//! from the code unnoticed.

use diskbeat::format::extent::host_info::{self, HostInfo};
use diskbeat::format::extent::{kind, kind_defined, Extent, ExtentRaw, Geometry, Payload, PAYLOAD_OFFSET};
use diskbeat::format::host_state::{self, entry, HostState};
use diskbeat::format::keyring::{self, KeyBytes, Keyring, KeyringRaw};
use diskbeat::format::layout::{Layout, Params, DEFAULT_EXTENT_SIZE, PROBE_REGION_SIZE};
use diskbeat::format::mailbox::{Command, Mailbox, MailboxRaw, SENDER_TOOL};
use diskbeat::format::record::{
    flags, Members, NetView, Record, RecordRaw, State, MEMBER_BYTES, MEMBER_SLOTS,
};
use diskbeat::format::superblock::{Superblock, SuperblockRaw};
use diskbeat::format::{
    checksum, Corruption, Header, ALIGN, MAX_SLOTS, NAME_LEN, NET_VIEW_BYTES, STRUCT_SIZE, VERSION_MAJOR,
    VERSION_MINOR,
};
use std::mem::{offset_of, size_of};

const CLUSTER: u128 = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn constants_and_sizes() {
    assert_eq!((VERSION_MAJOR, VERSION_MINOR), (1, 8));
    assert_eq!(STRUCT_SIZE, 512);
    assert_eq!(ALIGN, 4096);
    assert_eq!(MAX_SLOTS, 2048);
    assert_eq!(NAME_LEN, 64);
    assert_eq!(NET_VIEW_BYTES, 256);
    assert_eq!((MEMBER_BYTES, MEMBER_SLOTS), (64, 512));
    assert_eq!(PAYLOAD_OFFSET, 4096);
    assert_eq!(diskbeat::disk::EXTENT_PAYLOAD_IO_MAX, 1_044_480);
    // The cap is one copy of the default (two-copy) extent minus its header block.
    let g = Geometry::new(DEFAULT_EXTENT_SIZE, VERSION_MINOR);
    assert_eq!((g.copies, g.copy_size), (2, DEFAULT_EXTENT_SIZE / 2));
    assert_eq!(diskbeat::disk::EXTENT_PAYLOAD_IO_MAX as u64, g.payload_capacity());
    assert!(DOC.contains("1044480 =\n`EXTENT_PAYLOAD_IO_MAX`"), "§7 states the I/O limit");
    assert_eq!(PROBE_REGION_SIZE, 65536);
    assert_eq!(DEFAULT_EXTENT_SIZE, 2_097_152);
    assert!(DOC.contains("| 2097152 (2 MiB; 65536 before 1.5) |"), "§2 states the default extent size");
    assert_eq!(SENDER_TOOL, 0xFFFF_FFFF);
    assert_eq!(size_of::<Header>(), 32);
    assert_eq!(size_of::<SuperblockRaw>(), 512);
    assert_eq!(size_of::<RecordRaw>(), 512);
    assert_eq!(size_of::<MailboxRaw>(), 512);
    assert_eq!(size_of::<ExtentRaw>(), 512);
    assert_eq!(size_of::<KeyringRaw>(), 512);
    assert_eq!((keyring::OFFSET, keyring::KEY_LEN, keyring::SINCE_MINOR), (512, 32, 3));
}

#[test]
fn crc32c_check_value() {
    assert_eq!(checksum(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(checksum(b""), 0);
}

#[test]
fn magic_bytes() {
    assert_eq!(diskbeat::format::superblock::MAGIC, [0x44, 0x49, 0x53, 0x4B, 0x42, 0x45, 0x41, 0x54]);
    assert_eq!(diskbeat::format::record::MAGIC, [0x44, 0x42, 0x52, 0x45, 0x43, 0x4F, 0x52, 0x44]);
    assert_eq!(diskbeat::format::mailbox::MAGIC, [0x44, 0x42, 0x4D, 0x41, 0x49, 0x4C, 0x42, 0x58]);
    assert_eq!(diskbeat::format::extent::MAGIC, [0x44, 0x42, 0x45, 0x58, 0x54, 0x45, 0x4E, 0x54]);
    assert_eq!(keyring::MAGIC, [0x44, 0x42, 0x4B, 0x45, 0x59, 0x52, 0x4E, 0x47]);
    assert!(DOC.contains("| Cluster keyring (1.3) | `DBKEYRNG` | `44 42 4B 45 59 52 4E 47` |"));
}

#[test]
fn field_offsets() {
    assert_eq!(
        [
            offset_of!(Header, crc32c),
            offset_of!(Header, magic),
            offset_of!(Header, version_major),
            offset_of!(Header, version_minor),
            offset_of!(Header, cluster_uuid),
        ],
        [0, 4, 12, 14, 16]
    );
    assert_eq!(
        [
            offset_of!(SuperblockRaw, cluster_name),
            offset_of!(SuperblockRaw, sector_size),
            offset_of!(SuperblockRaw, slot_size),
            offset_of!(SuperblockRaw, slot_count),
            offset_of!(SuperblockRaw, base_timeout_ms),
            offset_of!(SuperblockRaw, extent_size),
            offset_of!(SuperblockRaw, probe_offset),
            offset_of!(SuperblockRaw, probe_size),
            offset_of!(SuperblockRaw, records_offset),
            offset_of!(SuperblockRaw, records_size),
            offset_of!(SuperblockRaw, mailboxes_offset),
            offset_of!(SuperblockRaw, mailboxes_size),
            offset_of!(SuperblockRaw, extents_offset),
            offset_of!(SuperblockRaw, extents_size),
            offset_of!(SuperblockRaw, device_size),
            offset_of!(SuperblockRaw, format_time_unix_s),
            offset_of!(SuperblockRaw, reserved),
        ],
        [32, 96, 100, 104, 108, 112, 120, 128, 136, 144, 152, 160, 168, 176, 184, 192, 200]
    );
    assert_eq!(
        [
            offset_of!(RecordRaw, slot),
            offset_of!(RecordRaw, state),
            offset_of!(RecordRaw, flags),
            offset_of!(RecordRaw, host_uuid),
            offset_of!(RecordRaw, generation),
            offset_of!(RecordRaw, sequence),
            offset_of!(RecordRaw, monotonic_ms),
            offset_of!(RecordRaw, io_timeout_ms),
            offset_of!(RecordRaw, interval_ms),
            offset_of!(RecordRaw, host_name),
            offset_of!(RecordRaw, net_view),
            offset_of!(RecordRaw, mailbox_ack),
            offset_of!(RecordRaw, extent_sequence),
            offset_of!(RecordRaw, weight),
            offset_of!(RecordRaw, boot_id),
            offset_of!(RecordRaw, members),
            offset_of!(RecordRaw, fencer_slot),
        ],
        [32, 36, 38, 40, 56, 64, 72, 80, 84, 88, 152, 408, 416, 424, 428, 444, 508]
    );
    assert_eq!(
        [
            offset_of!(MailboxRaw, target_slot),
            offset_of!(MailboxRaw, sender_slot),
            offset_of!(MailboxRaw, command),
            offset_of!(MailboxRaw, flags),
            offset_of!(MailboxRaw, reserved0),
            offset_of!(MailboxRaw, request_id),
            offset_of!(MailboxRaw, sender_uuid),
            offset_of!(MailboxRaw, sender_name),
            offset_of!(MailboxRaw, reserved),
        ],
        [32, 36, 40, 42, 44, 48, 56, 72, 136]
    );
    assert_eq!(
        [
            offset_of!(ExtentRaw, slot),
            offset_of!(ExtentRaw, kind),
            offset_of!(ExtentRaw, flags),
            offset_of!(ExtentRaw, generation),
            offset_of!(ExtentRaw, sequence),
            offset_of!(ExtentRaw, payload_len),
            offset_of!(ExtentRaw, payload_crc32c),
            offset_of!(ExtentRaw, host_uuid),
            offset_of!(ExtentRaw, reserved),
        ],
        [32, 36, 38, 40, 48, 56, 64, 68, 84]
    );
}

fn check_header(b: &[u8], magic: &[u8; 8], cluster: uuid::Uuid) {
    assert_eq!(u32_at(b, 0), checksum(&b[4..512]), "crc covers bytes 4..512");
    assert_eq!(&b[4..12], magic);
    assert_eq!(u16_at(b, 12), 1);
    assert_eq!(u16_at(b, 14), 8, "every structure is written with minor 8 since format 1.8");
    // UUIDs are stored in RFC 9562 byte order, not little-endian.
    assert_eq!(&b[16..32], cluster.as_bytes());
    assert_eq!(b[16], 0x01);
}

#[test]
fn record_bytes_at_documented_offsets() {
    let cluster = uuid::Uuid::from_u128(CLUSTER);
    let host = uuid::Uuid::from_u128(0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111);
    let mut r = Record::free(cluster, 1234);
    r.state = State::SelfFencing;
    r.host_uuid = host;
    r.generation = 0x1111_2222_3333_4444;
    r.sequence = 0x5555_6666_7777_8888;
    r.monotonic_ms = 0x0102_0304_0506_0708;
    r.io_timeout_ms = 0x0A0B_0C0D;
    r.interval_ms = 0x1A1B_1C1D;
    r.set_host_name("hv-42.example").unwrap();
    r.net_view = NetView::EMPTY;
    for s in [0, 5, 9, 2047] {
        r.net_view.set(s, true);
    }
    r.mailbox_ack = 0x9999_AAAA_BBBB_CCCC;
    r.flags = flags::WATCHDOG_ARMED | flags::FENCE_STOPS_VMS;
    r.extent_sequence = 0x0D0E_0F10_1112_1314;
    r.weight = 0x2122_2324;
    r.members = Members::EMPTY;
    for s in [0, 5, 9, 511] {
        r.members.set(s);
    }
    let mut b = [0xEEu8; 4096];
    b[512..].fill(0);
    r.encode(&mut b);

    check_header(&b, b"DBRECORD", cluster);
    assert_eq!(u32_at(&b, 32), 1234);
    assert_eq!(u16_at(&b, 36), 4);
    // The §5 flags example: watchdog_armed | fence_stops_vms = 0x0005.
    assert_eq!(&b[38..40], &[0x05, 0x00]);
    assert_eq!(&b[40..56], host.as_bytes());
    assert_eq!(u64_at(&b, 56), 0x1111_2222_3333_4444);
    assert_eq!(u64_at(&b, 64), 0x5555_6666_7777_8888);
    assert_eq!(&b[72..80], &[8, 7, 6, 5, 4, 3, 2, 1], "little-endian");
    assert_eq!(u32_at(&b, 80), 0x0A0B_0C0D);
    assert_eq!(u32_at(&b, 84), 0x1A1B_1C1D);
    assert_eq!(&b[88..101], b"hv-42.example");
    assert!(b[101..152].iter().all(|&x| x == 0), "name is NUL-padded");
    // NetView: bit s%8 of byte s/8, LSB first.
    assert_eq!(b[152], 0b0010_0001);
    assert_eq!(b[153], 0b0000_0010);
    assert!(b[154..152 + 255].iter().all(|&x| x == 0));
    assert_eq!(b[152 + 255], 0b1000_0000);
    assert_eq!(u64_at(&b, 408), 0x9999_AAAA_BBBB_CCCC);
    assert_eq!(&b[416..424], &[0x14, 0x13, 0x12, 0x11, 0x10, 0x0F, 0x0E, 0x0D], "extent_sequence (1.2)");
    assert_eq!(&b[424..428], &[0x24, 0x23, 0x22, 0x21], "weight (1.4)");
    assert!(b[428..444].iter().all(|&x| x == 0), "boot_id (1.5) nil");
    // members (1.7): the same bit order as NetView.
    assert_eq!(b[444], 0b0010_0001);
    assert_eq!(b[445], 0b0000_0010);
    assert!(b[446..444 + 63].iter().all(|&x| x == 0));
    assert_eq!(b[444 + 63], 0b1000_0000);
    assert!(b[508..512].iter().all(|&x| x == 0), "fencer_slot (1.8) zero without a fence flag");
    assert_eq!(Record::decode(&b, &cluster, 1234), Ok(r));
    // The §5 flags example with 1.4's bits: | net_enabled | isolation_configured = 0x001D.
    assert!(DOC.contains("With `net_enabled | isolation_configured` too (1.4): `0x001D`, byte 38 = `0x1D`."));
    r.flags |= flags::NET_ENABLED | flags::ISOLATION_CONFIGURED;
    r.encode(&mut b);
    assert_eq!(&b[38..40], &[0x1D, 0x00]);
    assert_eq!(Record::decode(&b, &cluster, 1234), Ok(r));
    // fencer_slot (1.8): u32 LE at 508, here a member's intent on a self-fencing record.
    r.flags |= flags::FENCE_INTENT;
    r.fencer_slot = 0x0456;
    r.encode(&mut b);
    assert_eq!(&b[38..40], &[0x1D, 0x01], "fence_intent is bit 8: byte 39");
    assert_eq!(&b[508..512], &[0x56, 0x04, 0x00, 0x00]);
    assert_eq!(Record::decode(&b, &cluster, 1234), Ok(r));
}

#[test]
fn state_codes() {
    let all = [State::Free, State::Joining, State::Live, State::Leaving, State::SelfFencing, State::Fenced];
    for (code, s) in all.into_iter().enumerate() {
        assert_eq!(s as u16, code as u16);
        assert_eq!(State::from_code(code as u16), Some(s));
    }
    assert_eq!(State::from_code(6), None);
    assert_eq!((Command::None as u16, Command::Fence as u16, Command::Test as u16), (0, 1, 2));
    assert_eq!(Command::from_code(3), None);
}

#[test]
fn free_record_test_vector() {
    let cluster = uuid::Uuid::from_u128(CLUSTER);
    let mut b = [0u8; 512];
    Record::free(cluster, 5).encode(&mut b);
    // Bytes 4..36; bytes 0..4 are the crc32c, little-endian.
    let head: [u8; 32] = [
        0x44, 0x42, 0x52, 0x45, 0x43, 0x4f, 0x52, 0x44, 0x01, 0x00, 0x08, 0x00, 0x01, 0x23, 0x45, 0x67, 0x89,
        0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x05, 0x00, 0x00, 0x00,
    ];
    assert_eq!(&b[4..36], &head);
    assert!(b[36..].iter().all(|&x| x == 0));
    assert_eq!(&b[..4], &FREE_RECORD_CRC.to_le_bytes());
    assert_eq!(u32_at(&b, 0), FREE_RECORD_CRC, "the 1.8 crc32c of FORMAT.md §5's test vector");
}
/// Format 1.8 changed the vector (version_minor 8 at byte 14); it was 0x3731_786B in 1.7,
/// 0x7FD2_B152 in 1.6, 0xA6F6_EA19 in 1.5, 0xEE15_2320 in 1.4, 0x1152_2A7E in 1.3, 0x59B1_E347 in
/// 1.2, 0x8095_B80C in 1.1 and 0xC876_7135 in 1.0.
/// The 1.8 value, computed independently of this crate (a bitwise CRC-32C in Python; its 1.7
/// counterpart came out as the 1.7 value 0x3731_786B, as a check). Same as FORMAT.md §5.
const FREE_RECORD_CRC: u32 = 0x84b0_d51f;

#[test]
fn validation_order_and_reasons() {
    let cluster = uuid::Uuid::from_u128(CLUSTER);
    let mut good = [0u8; 512];
    Record::free(cluster, 5).encode(&mut good);
    let reseal = |b: &mut [u8; 512]| {
        let c = checksum(&b[4..]);
        b[..4].copy_from_slice(&c.to_le_bytes());
    };
    assert_eq!(Record::decode(&[0u8; 512], &cluster, 5), Err(Corruption::Zeroed));
    let mut b = good;
    b[4] = b'X';
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::BadMagic));
    let mut b = good;
    b[100] ^= 1;
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::BadChecksum));
    let mut b = good;
    b[12] = 2;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::UnsupportedVersion { major: 2, minor: 8 }));
    assert_eq!(Record::decode(&good, &uuid::Uuid::nil(), 5), Err(Corruption::WrongCluster));
    assert_eq!(Record::decode(&good, &cluster, 6), Err(Corruption::WrongSlot { expected: 6, found: 5 }));
    let mut b = good;
    b[36] = 6;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::BadState(6)));
    let mut b = good;
    b[510] = 1;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::ReservedNotZero));
    // Same bytes with a newer minor (9; this build knows 1.8): reserved bytes are ignored.
    b[14] = 9;
    reseal(&mut b);
    assert!(Record::decode(&b, &cluster, 5).is_ok());
    // fencer_slot (508..512) is reserved in a 1.7 record, and zero in a 1.8 one without
    // fence_intent or fence_device (§5 "Fencer slot", §10).
    for minor in [7, 8] {
        let mut b = good;
        b[508] = 2;
        b[14] = minor;
        reseal(&mut b);
        assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::ReservedNotZero), "1.{minor}");
    }
    // With either fence bit: checked against the slot, each other and the state (§10).
    let fenced_by = |state: State, bits: u16, fencer: u32, minor: u16| {
        let mut r = Record::free(cluster, 5);
        r.state = state;
        r.host_uuid = uuid::Uuid::from_u128(0xfeed);
        r.generation = 1;
        r.sequence = 9;
        r.set_host_name("hv-05").unwrap();
        r.flags = bits;
        r.fencer_slot = fencer;
        let mut b = [0u8; 512];
        r.encode(&mut b);
        b[14..16].copy_from_slice(&minor.to_le_bytes());
        reseal(&mut b);
        Record::decode(&b, &cluster, 5).map(|r| (r.state, r.flags, r.fencer_slot))
    };
    let (intent, device, stops) = (flags::FENCE_INTENT, flags::FENCE_DEVICE, flags::FENCE_STOPS_VMS);
    let bad = Err(Corruption::BadField("fencer_slot"));
    assert_eq!(fenced_by(State::Live, intent, 2, 8), Ok((State::Live, intent, 2)));
    assert_eq!(fenced_by(State::SelfFencing, intent, 0, 8), Ok((State::SelfFencing, intent, 0)));
    assert_eq!(fenced_by(State::Fenced, device | stops, 2047, 8), Ok((State::Fenced, device | stops, 2047)));
    assert_eq!(fenced_by(State::Live, intent, 5, 8), bad, "its own slot");
    assert_eq!(fenced_by(State::Live, intent, 2048, 8), bad, "beyond MAX_SLOTS");
    assert_eq!(fenced_by(State::Fenced, device | stops, 5, 8), bad, "its own slot");
    for state in [State::Joining, State::Leaving, State::Fenced] {
        assert_eq!(fenced_by(state, intent, 2, 8), bad, "an intent on a {state:?} record");
    }
    for state in [State::Live, State::SelfFencing, State::Leaving] {
        assert_eq!(fenced_by(state, device | stops, 2, 8), bad, "a proof on a {state:?} record");
    }
    assert_eq!(fenced_by(State::Fenced, device, 2, 8), bad, "a proof without fence_stops_vms");
    assert_eq!(fenced_by(State::Fenced, device | stops | intent, 2, 8), bad, "intent and proof at once");
    // Reserved before 1.8 (checked first); a newer minor keeps the bits' meaning and checks.
    assert_eq!(fenced_by(State::Live, intent, 2, 7), Err(Corruption::ReservedNotZero));
    assert_eq!(fenced_by(State::Fenced, device | stops, 2, 7), Err(Corruption::ReservedNotZero));
    assert_eq!(fenced_by(State::Live, intent | 1 << 10, 5, 8), Err(Corruption::ReservedNotZero));
    assert_eq!(fenced_by(State::Fenced, intent, 2, 9), bad, "a newer minor");
    assert_eq!(fenced_by(State::Live, 0, 2, 9), Ok((State::Live, 0, 2)), "a newer minor's bytes 508..512");
    // BadField("fencer_slot") comes before BadField("host_name") (§16 item 2).
    let mut b = good;
    b[36] = State::Live as u8;
    b[39] = 0x01;
    b[508] = 5;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::BadField("fencer_slot")));
    // members (444..508) is reserved in a 1.6 record, a field in a 1.7 record.
    let mut b = good;
    b[500] = 1;
    b[14] = 6;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::ReservedNotZero));
    b[14] = 7;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5).map(|r| r.members.iter().collect::<Vec<_>>()), Ok(vec![448]));
    // extent_sequence (416..424) is reserved in a 1.1 record, a field in a 1.2 record.
    let mut b = good;
    b[416] = 1;
    b[14] = 1;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::ReservedNotZero));
    b[14] = 2;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5).map(|r| r.extent_sequence), Ok(1));
    // weight (424..428) and flag bits 3..=6 are reserved in a 1.3 record, defined in a 1.4 one.
    let mut b = good;
    b[425] = 1;
    b[14] = 3;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::ReservedNotZero));
    b[14] = 4;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5).map(|r| r.weight), Ok(256));
    for bit in 3..=6 {
        let mut b = good;
        b[38] = 1 << bit;
        b[14] = 3;
        reseal(&mut b);
        assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::ReservedNotZero), "bit {bit}");
        b[14] = 4;
        reseal(&mut b);
        assert_eq!(Record::decode(&b, &cluster, 5).map(|r| r.flags), Ok(1 << bit), "bit {bit}");
    }
    // A non-free record needs a host name.
    let mut b = good;
    b[36] = State::Live as u8;
    reseal(&mut b);
    assert_eq!(Record::decode(&b, &cluster, 5), Err(Corruption::BadField("host_name")));
}

#[test]
fn superblock_bytes() {
    let layout =
        Layout::new(Params { sector_size: 512, slot_size: 512, slot_count: 64, extent_size: 65536 }).unwrap();
    let sb = Superblock {
        cluster_uuid: uuid::Uuid::from_u128(CLUSTER),
        cluster_name: "pool-a".into(),
        version_minor: VERSION_MINOR,
        layout,
        base_timeout_ms: 40_000,
        device_size: 64 << 20,
        format_time_unix_s: 1_700_000_000,
    };
    let mut b = [0u8; 512];
    sb.encode(&mut b).unwrap();
    check_header(&b, b"DISKBEAT", sb.cluster_uuid);
    assert_eq!(&b[32..38], b"pool-a");
    assert!(b[38..96].iter().all(|&x| x == 0));
    let u32s: Vec<u32> = [96, 100, 104, 108].iter().map(|&o| u32_at(&b, o)).collect();
    assert_eq!(u32s, [512, 512, 64, 40_000]);
    let u64s: Vec<u64> = (112..=192).step_by(8).map(|o| u64_at(&b, o)).collect();
    assert_eq!(
        u64s,
        [65536, 4096, 65536, 69632, 32768, 102400, 32768, 135168, 4_194_304, 64 << 20, 1_700_000_000]
    );
    assert!(b[200..].iter().all(|&x| x == 0));
}

#[test]
fn mailbox_and_extent_bytes() {
    let cluster = uuid::Uuid::from_u128(CLUSTER);
    let mut m = Mailbox::empty(cluster, 7);
    let mut b = [0u8; 512];
    m.encode(&mut b);
    check_header(&b, b"DBMAILBX", cluster);
    assert_eq!((u32_at(&b, 32), u32_at(&b, 36), u16_at(&b, 40)), (7, 0xFFFF_FFFF, 0));
    assert!(b[40..].iter().all(|&x| x == 0));
    m.sender_slot = 3;
    m.command = Command::Fence;
    m.request_id = 0x0102_0304_0506_0708;
    m.sender_uuid = uuid::Uuid::from_u128(0xfeed);
    m.set_sender_name("hv-03").unwrap();
    m.encode(&mut b);
    assert_eq!((u32_at(&b, 36), u16_at(&b, 40), u16_at(&b, 42), u32_at(&b, 44)), (3, 1, 0, 0));
    assert_eq!(u64_at(&b, 48), 0x0102_0304_0506_0708);
    assert_eq!(&b[56..72], uuid::Uuid::from_u128(0xfeed).as_bytes());
    assert_eq!(&b[72..77], b"hv-03");
    assert!(b[136..].iter().all(|&x| x == 0));

    let mut e = Extent::empty(cluster, 9);
    e.kind = kind::HOST_INFO;
    e.generation = 11;
    e.host_uuid = uuid::Uuid::from_u128(0xfeed);
    e.sequence = 12;
    e.payload_len = 13;
    e.payload_crc32c = 0xCAFE_F00D;
    e.encode(&mut b);
    check_header(&b, b"DBEXTENT", cluster);
    assert_eq!((u32_at(&b, 32), u16_at(&b, 36), u16_at(&b, 38)), (9, 1, 0));
    assert_eq!((u64_at(&b, 40), u64_at(&b, 48), u64_at(&b, 56)), (11, 12, 13));
    assert_eq!(u32_at(&b, 64), 0xCAFE_F00D);
    assert_eq!(&b[68..84], uuid::Uuid::from_u128(0xfeed).as_bytes(), "host_uuid (1.6), RFC 9562 order");
    assert!(b[84..].iter().all(|&x| x == 0));
    assert_eq!(Extent::decode(&b, &cluster, 9, 8192), Ok(e));
    assert_eq!(e.writer_uuid(), Some(uuid::Uuid::from_u128(0xfeed)));
    // The same bytes in a header of minor 5: bytes 68..84 are reserved there.
    let mut old = b;
    old[14] = 5;
    let c = checksum(&old[4..512]);
    old[..4].copy_from_slice(&c.to_le_bytes());
    assert_eq!(Extent::decode(&old, &cluster, 9, 8192), Err(Corruption::ReservedNotZero));
    assert!(DOC.contains("Zero (reserved) in a header of minor ≤ 5 |"), "§7 host_uuid row");
    e.payload_len = 8192 - 4096 + 1;
    e.encode(&mut b);
    assert_eq!(Extent::decode(&b, &cluster, 9, 8192), Err(Corruption::BadField("payload_len")));
    // An undefined kind in a header of a known minor.
    e.payload_len = 13;
    e.kind = 0x0102;
    e.encode(&mut b);
    assert_eq!(Extent::decode(&b, &cluster, 9, 8192), Err(Corruption::BadField("kind")));
}

#[test]
fn worked_example_64_x_512() {
    let l =
        Layout::new(Params { sector_size: 512, slot_size: 512, slot_count: 64, extent_size: 65536 }).unwrap();
    let regions = [l.superblock, l.probe, l.records, l.mailboxes, l.extents];
    let got: Vec<(u64, u64)> = regions.iter().map(|r| (r.offset, r.size)).collect();
    assert_eq!(got, [(0, 4096), (4096, 65536), (69632, 32768), (102400, 32768), (135168, 4_194_304)]);
    assert_eq!(l.total_size(), 4_329_472);
    assert_eq!((l.record_offset(1), l.record_offset(63)), (70144, 101_888));
    assert_eq!((l.mailbox_offset(1), l.mailbox_offset(63)), (102_912, 134_656));
    assert_eq!((l.extent_offset(1), l.extent_offset(63)), (200_704, 4_263_936));
}

#[test]
fn worked_example_2048_x_4096() {
    let l = Layout::new(Params { sector_size: 4096, slot_size: 4096, slot_count: 2048, extent_size: 65536 })
        .unwrap();
    let regions = [l.superblock, l.probe, l.records, l.mailboxes, l.extents];
    let got: Vec<(u64, u64)> = regions.iter().map(|r| (r.offset, r.size)).collect();
    assert_eq!(
        got,
        [(0, 4096), (4096, 65536), (69632, 8_388_608), (8_458_240, 8_388_608), (16_846_848, 134_217_728)]
    );
    assert_eq!(l.total_size(), 151_064_576);
    assert_eq!((l.record_offset(1), l.record_offset(2047)), (73728, 8_454_144));
    assert_eq!((l.mailbox_offset(1), l.mailbox_offset(2047)), (8_462_336, 16_842_752));
    assert_eq!((l.extent_offset(1), l.extent_offset(2047)), (16_912_384, 150_999_040));
    // 512e with --slot-size 4096 lays out identically.
    let e = Layout::new(Params { sector_size: 512, ..l.params() }).unwrap();
    assert_eq!((e.records, e.mailboxes, e.extents), (l.records, l.mailboxes, l.extents));
}

#[test]
fn padding_example_and_formula() {
    let l =
        Layout::new(Params { sector_size: 512, slot_size: 512, slot_count: 3, extent_size: 65536 }).unwrap();
    assert_eq!((l.records.offset, l.records.size, l.record_table_len()), (69632, 4096, 1536));
    assert_eq!((l.mailboxes.offset, l.extents.offset), (73728, 77824));
    for (sector, slot) in [(512u32, 512u32), (512, 4096), (4096, 4096), (512, 65536)] {
        for n in [1u32, 3, 7, 64, 1000, 2048] {
            for ext in [8192u64, 65536, 1 << 20] {
                let l = Layout::new(Params {
                    sector_size: sector,
                    slot_size: slot,
                    slot_count: n,
                    extent_size: ext,
                })
                .unwrap();
                let t = (u64::from(n) * u64::from(slot)).div_ceil(4096) * 4096;
                assert_eq!(l.total_size(), 69632 + 2 * t + u64::from(n) * ext);
                assert_eq!(l.mailboxes.offset, 69632 + t);
                assert_eq!(l.extents.offset, 69632 + 2 * t);
            }
        }
    }
}

// ---- Tests that parse docs/FORMAT.md ----

const DOC: &str = include_str!("../docs/FORMAT.md");

/// The body rows of the first Markdown table after the first line containing `marker`, as trimmed
/// cells with backticks removed. Panics if there is no such table.
fn doc_table(marker: &str) -> Vec<Vec<String>> {
    let start = DOC.find(marker).unwrap_or_else(|| panic!("FORMAT.md has no {marker:?}"));
    let mut lines = DOC[start..].lines().skip_while(|l| !l.starts_with('|'));
    let header = lines.next().unwrap_or_else(|| panic!("no table after {marker:?}"));
    let sep = lines.next().unwrap();
    assert!(sep.starts_with("|---"), "table after {marker:?} has no separator: {header}");
    let rows: Vec<Vec<String>> = lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().replace('`', "")).collect())
        .collect();
    assert!(!rows.is_empty(), "empty table after {marker:?}");
    rows
}

fn parse_num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("{s:?} is not a number: {e}"))
}

/// (name, offset, size) of every field, sizes from consecutive offsets (structures have no padding).
fn fields(offsets: &[(&str, usize)]) -> Vec<(String, u64, u64)> {
    let ends = offsets.iter().skip(1).map(|&(_, o)| o).chain([STRUCT_SIZE]);
    offsets.iter().zip(ends).map(|(&(n, o), e)| (n.to_string(), o as u64, (e - o) as u64)).collect()
}

/// (field, offset, size) rows of the table after `marker`.
fn doc_fields(marker: &str) -> Vec<(String, u64, u64)> {
    doc_table(marker).iter().map(|r| (r[3].clone(), parse_num(&r[0]), parse_num(&r[1]))).collect()
}

#[test]
fn doc_names_the_current_version() {
    let v = format!("{VERSION_MAJOR}.{VERSION_MINOR}");
    assert_eq!(DOC.lines().next().unwrap(), format!("# diskbeat on-disk format, version {v}"));
    let versioning = doc_table("## 11. Versioning");
    assert!(versioning[0][1].contains(&format!("{v} today")), "§11 Version row: {:?}", versioning[0]);
    let history = doc_table("## 15. Version history");
    assert_eq!(history.last().unwrap()[0], v, "§15 must end with the current version");
}

#[test]
fn doc_header_table() {
    let rows = doc_table("## 3. Common header");
    let header: Vec<(String, u64, u64)> =
        rows[..5].iter().map(|r| (r[3].clone(), parse_num(&r[0]), parse_num(&r[1]))).collect();
    let want = [
        ("crc32c", offset_of!(Header, crc32c)),
        ("magic", offset_of!(Header, magic)),
        ("version_major", offset_of!(Header, version_major)),
        ("version_minor", offset_of!(Header, version_minor)),
        ("cluster_uuid", offset_of!(Header, cluster_uuid)),
    ];
    let want: Vec<_> = fields(&want)
        .into_iter()
        .map(|(n, o, s)| if n == "cluster_uuid" { (n, o, 16) } else { (n, o, s) })
        .collect();
    assert_eq!(header, want);
    // "format major version: `1`", "format minor version: `1` (...)": the first number stated.
    let stated = |row: &[String]| -> u64 {
        let after = row[4].split(": ").nth(1).unwrap_or_else(|| panic!("no value in {row:?}"));
        parse_num(after.split_whitespace().next().unwrap())
    };
    assert_eq!(stated(&rows[2]), u64::from(VERSION_MAJOR));
    assert_eq!(stated(&rows[3]), u64::from(VERSION_MINOR));
}

#[test]
fn doc_record_table() {
    let want = [
        ("header", 0),
        ("slot", offset_of!(RecordRaw, slot)),
        ("state", offset_of!(RecordRaw, state)),
        ("flags", offset_of!(RecordRaw, flags)),
        ("host_uuid", offset_of!(RecordRaw, host_uuid)),
        ("generation", offset_of!(RecordRaw, generation)),
        ("sequence", offset_of!(RecordRaw, sequence)),
        ("monotonic_ms", offset_of!(RecordRaw, monotonic_ms)),
        ("io_timeout_ms", offset_of!(RecordRaw, io_timeout_ms)),
        ("interval_ms", offset_of!(RecordRaw, interval_ms)),
        ("host_name", offset_of!(RecordRaw, host_name)),
        ("net_view", offset_of!(RecordRaw, net_view)),
        ("mailbox_ack", offset_of!(RecordRaw, mailbox_ack)),
        ("extent_sequence", offset_of!(RecordRaw, extent_sequence)),
        ("weight", offset_of!(RecordRaw, weight)),
        ("boot_id", offset_of!(RecordRaw, boot_id)),
        ("members", offset_of!(RecordRaw, members)),
        ("fencer_slot", offset_of!(RecordRaw, fencer_slot)),
    ];
    assert_eq!(doc_fields("## 5. Record"), fields(&want));
    let rows = doc_table("## 5. Record");
    let members = rows.iter().find(|r| r[3] == "members").expect("members row");
    assert!(members[4].starts_with("1.7: "), "{members:?}");
    assert!(members[4].ends_with("Zero (reserved) in a record of minor ≤ 6"), "{members:?}");
    assert_eq!(parse_num(&members[1]), MEMBER_BYTES as u64);
    let fencer = rows.iter().find(|r| r[3] == "fencer_slot").expect("fencer_slot row");
    assert!(fencer[4].starts_with("1.8: "), "{fencer:?}");
    assert!(fencer[4].ends_with("Zero (reserved) in a record of minor ≤ 7"), "{fencer:?}");
    assert_eq!((fencer[1].as_str(), fencer[2].as_str()), ("4", "u32"));
    assert!(!rows.iter().any(|r| r[3] == "reserved"), "1.8 left the record no reserved bytes");
}

/// The §5 members paragraph (1.7): its offsets, and its example, encoded.
#[test]
fn doc_members_bitmap() {
    let start =
        DOC.find("**Members bitmap (1.7)** (`members`, bytes 444..508)").expect("§5 members paragraph");
    let para = &DOC[start
        ..start
            + DOC[start..]
                .find(
                    "

",
                )
                .unwrap()];
    assert_eq!((offset_of!(RecordRaw, members), offset_of!(RecordRaw, fencer_slot)), (444, 508));
    assert!(para.contains("device byte `record + 444 + s/8`, mask `1 << (s % 8)`"), "{para}");
    assert!(para.contains("Example: slots {0, 5, 511} → field byte 0 = `0x21`, byte 63 = `0x80`."), "{para}");
    let mut r = Record::free(uuid::Uuid::from_u128(CLUSTER), 5);
    for s in [0, 5, 511] {
        r.members.set(s);
    }
    let mut b = [0u8; 512];
    r.encode(&mut b);
    let mut want = [0u8; 64];
    (want[0], want[63]) = (0x21, 0x80);
    assert_eq!(&b[444..508], &want);
    assert!(
        DOC.contains("`members` zero if minor ≤ 6 (bytes 444..508 are reserved there)"),
        "§10 Record row"
    );
}

/// A record of slot 5 carrying `flag`, written as `minor`, resealed, decoded; with the flags it
/// was written with. A Free record, except for the 1.8 bits, which §5 allows only on a member's
/// writes: `fence_intent` on a `live` record, `fence_device` on a `fenced` one with
/// `fence_stops_vms` (both from slot 2).
fn decode_flag_with_minor(flag: u16, minor: u16) -> (u16, Result<Record, Corruption>) {
    let cluster = uuid::Uuid::from_u128(CLUSTER);
    let mut r = Record::free(cluster, 5);
    r.flags = flag;
    if flag & (flags::FENCE_INTENT | flags::FENCE_DEVICE) != 0 {
        r.state = State::Live;
        r.host_uuid = uuid::Uuid::from_u128(0xfeed);
        r.generation = 1;
        r.set_host_name("hv-05").unwrap();
        r.fencer_slot = 2;
    }
    if flag & flags::FENCE_DEVICE != 0 {
        r.state = State::Fenced;
        r.flags |= flags::FENCE_STOPS_VMS;
    }
    let mut b = [0u8; 512];
    r.encode(&mut b);
    b[14..16].copy_from_slice(&minor.to_le_bytes());
    let c = checksum(&b[4..]);
    b[..4].copy_from_slice(&c.to_le_bytes());
    (r.flags, Record::decode(&b, &cluster, 5))
}

/// The §5 "Record flags" table is exactly `flags::*`: same names, bits and masks, no bit missing
/// on either side, and the reserved row covers every other bit. A bit whose meaning starts with
/// "(1.8)", "(1.5)" or "(1.4)" is defined by that format (reserved in a record of the minor
/// before), the others by 1.1.
#[test]
fn doc_record_flags_table() {
    let code = [
        ("watchdog_armed", flags::WATCHDOG_ARMED),
        ("fence_failed", flags::FENCE_FAILED),
        ("fence_stops_vms", flags::FENCE_STOPS_VMS),
        ("net_enabled", flags::NET_ENABLED),
        ("isolation_configured", flags::ISOLATION_CONFIGURED),
        ("isolated", flags::ISOLATED),
        ("riding_through", flags::RIDING_THROUGH),
        ("operator_confirmed", flags::OPERATOR_CONFIRMED),
        ("fence_intent", flags::FENCE_INTENT),
        ("fence_device", flags::FENCE_DEVICE),
    ];
    let rows = doc_table("**Record flags**");
    let mut documented = Vec::new();
    let mut reserved = None;
    for row in &rows {
        let (bits, mask, name) = (&row[0], parse_num(&row[1]), row[2].as_str());
        if name == "—" {
            let (lo, hi) = bits.split_once("..=").unwrap_or_else(|| panic!("reserved row {row:?}"));
            let (lo, hi) = (parse_num(lo), parse_num(hi));
            let range_mask = (lo..=hi).fold(0u64, |m, b| m | 1 << b);
            assert_eq!(mask, range_mask, "reserved row: mask vs bit range");
            assert!(row[3].starts_with("reserved"), "{row:?}");
            assert!(row[3].contains(&format!("minor ≤ {VERSION_MINOR} ")), "{row:?}");
            assert!(reserved.replace(mask).is_none(), "two reserved rows");
        } else {
            let bit = parse_num(bits);
            assert_eq!(mask, 1 << bit, "{name}: mask vs bit");
            let &(_, value) =
                code.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} not in flags::*"));
            assert_eq!(u64::from(value), mask, "{name}");
            let since = if row[3].starts_with("(1.8) ") {
                8
            } else if row[3].starts_with("(1.5) ") {
                5
            } else if row[3].starts_with("(1.4) ") {
                4
            } else {
                1
            };
            assert_eq!(
                decode_flag_with_minor(value, since - 1).1,
                Err(Corruption::ReservedNotZero),
                "{name}"
            );
            let (written, read) = decode_flag_with_minor(value, since);
            assert_eq!(read.map(|r| r.flags), Ok(written), "{name}");
            documented.push((name, value));
        }
    }
    assert_eq!(documented, code, "every flag documented once, in bit order");
    assert_eq!(code.iter().fold(0, |m, &(_, v)| m | v), flags::KNOWN);
    assert_eq!(reserved, Some(u64::from(!flags::KNOWN)), "reserved row covers every undefined bit");
    // The field row says what the field is.
    let flags_row = doc_table("## 5. Record").into_iter().find(|r| r[3] == "flags").unwrap();
    assert_eq!((flags_row[0].as_str(), flags_row[1].as_str(), flags_row[2].as_str()), ("38", "2", "u16"));
}

/// The §5 fencer slot paragraph (1.8): its offset and bound, and its example, encoded.
#[test]
fn doc_fencer_slot() {
    let start =
        DOC.find("**Fencer slot (1.8)** (`fencer_slot`, u32 LE at 508)").expect("§5 fencer slot paragraph");
    let para = &DOC[start..start + DOC[start..].find("\n\n").unwrap()];
    let flat = para.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(offset_of!(RecordRaw, fencer_slot), 508);
    assert!(flat.contains("below 2048 = `MAX_SLOTS`"), "{flat}");
    assert_eq!(MAX_SLOTS, 2048);
    assert!(
        flat.contains(
            "Example: the member in slot 2 fences the host of slot 5: its intent has byte 39 = `0x01` \
             (`fence_intent`) and bytes 508..512 = `02 00 00 00`; its proof has byte 36 = `0x05` (`fenced`), \
             byte 39 = `0x02` (`fence_device`), bit 2 of byte 38 set (`fence_stops_vms`), `sequence` + 1 and \
             the same bytes 508..512."
        ),
        "{flat}"
    );
    // The host's last record: live, a watchdog, network heartbeats.
    let cluster = uuid::Uuid::from_u128(CLUSTER);
    let mut last = Record::free(cluster, 5);
    last.state = State::Live;
    last.host_uuid = uuid::Uuid::from_u128(0xfeed);
    last.generation = 3;
    last.sequence = 41;
    last.set_host_name("hv-05").unwrap();
    last.flags = flags::WATCHDOG_ARMED | flags::FENCE_STOPS_VMS | flags::NET_ENABLED;
    // The intent: the same record, `fence_intent`, `fencer_slot` 2 (§5).
    let mut intent = last;
    intent.flags |= flags::FENCE_INTENT;
    intent.fencer_slot = 2;
    let mut b = [0u8; 512];
    intent.encode(&mut b);
    assert_eq!((b[39], &b[508..512]), (0x01, &[2u8, 0, 0, 0][..]));
    assert_eq!(u64_at(&b, 64), 41, "the intent keeps the sequence");
    assert_eq!(Record::decode(&b, &cluster, 5), Ok(intent));
    // The proof: `fenced`, sequence + 1, `fence_device` | `fence_stops_vms`, no `fence_intent`.
    let mut proof = last;
    proof.state = State::Fenced;
    proof.sequence += 1;
    proof.flags = (last.flags & !(flags::FENCE_INTENT | flags::FENCE_FAILED))
        | flags::FENCE_DEVICE
        | flags::FENCE_STOPS_VMS;
    proof.fencer_slot = 2;
    proof.encode(&mut b);
    assert_eq!((b[36], b[39], b[38] & 0x04), (0x05, 0x02, 0x04));
    assert_eq!((u64_at(&b, 64), &b[508..512]), (42, &[2u8, 0, 0, 0][..]));
    assert_eq!(Record::decode(&b, &cluster, 5), Ok(proof));
    // §10 states the checks `validation_order_and_reasons` makes.
    assert!(DOC.contains(
        "`fencer_slot` zero unless `fence_intent` or `fence_device` is set (bytes 508..512 are reserved in minors 0 to 7"
    ));
    assert!(DOC.contains(
        "with `fence_intent` or `fence_device` set: `fencer_slot` ≠ *i* and < 2048, `fence_device` only with state \
         `fenced`, `fence_stops_vms` set and `fence_intent` clear, `fence_intent` only with state `live` or \
         `self_fencing` → `BadField(\"fencer_slot\")`"
    ));
}

#[test]
fn doc_record_test_vector() {
    let start = DOC.find("Test vector").expect("FORMAT.md has a record test vector");
    let para = &DOC[start..start + DOC[start..].find("\n\n").unwrap()];
    let spans: Vec<&str> = para.split('`').skip(1).step_by(2).collect();
    let bytes: Vec<u8> = spans
        .iter()
        .find(|s| s.len() > 50)
        .expect("a span of hex bytes")
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let crc = spans.iter().find(|s| s.starts_with("0x")).map(|s| parse_num(s)).expect("a crc32c");
    let cluster = spans.iter().find_map(|s| uuid::Uuid::parse_str(s).ok()).expect("a cluster uuid");
    assert!(para.contains("Free record for slot 5 "), "the vector is slot 5's Free record");
    let mut b = [0u8; 512];
    Record::free(cluster, 5).encode(&mut b);
    assert_eq!(&b[..bytes.len()], &bytes[..]);
    assert!(b[bytes.len()..].iter().all(|&x| x == 0), "followed by zeros to 512");
    assert_eq!(u64::from(u32_at(&b, 0)), crc);
}

#[test]
fn doc_extent_header_table() {
    let want = [
        ("header", 0),
        ("slot", offset_of!(ExtentRaw, slot)),
        ("kind", offset_of!(ExtentRaw, kind)),
        ("flags", offset_of!(ExtentRaw, flags)),
        ("generation", offset_of!(ExtentRaw, generation)),
        ("sequence", offset_of!(ExtentRaw, sequence)),
        ("payload_len", offset_of!(ExtentRaw, payload_len)),
        ("payload_crc32c", offset_of!(ExtentRaw, payload_crc32c)),
        ("host_uuid", offset_of!(ExtentRaw, host_uuid)),
        ("reserved", offset_of!(ExtentRaw, reserved)),
    ];
    assert_eq!(doc_fields("Extent header, magic"), fields(&want));
    let rows = doc_table("Extent header, magic");
    let host = rows.iter().find(|r| r[3] == "host_uuid").expect("host_uuid row");
    assert!(host[4].starts_with("1.6: "), "{host:?}");
    assert_eq!(diskbeat::format::extent::HOST_UUID_SINCE_MINOR, 6);
}

/// The §7 "Payload kinds" table is exactly `kind::*` / `kind_defined`: names, codes, the minor
/// that introduced each, and the undefined range.
#[test]
fn doc_payload_kinds_table() {
    let rows = doc_table("**Payload kinds**");
    let mut named = Vec::new();
    for row in &rows {
        if row[1] == "—" {
            let (lo, hi) = row[0].split_once("..=").unwrap_or_else(|| panic!("{row:?}"));
            assert_eq!((parse_num(lo), parse_num(hi)), (3, 65535), "first undefined kind");
            assert!(!kind_defined(VERSION_MINOR, 3) && !kind_defined(VERSION_MINOR, u16::MAX));
            assert!(row[3].contains(&format!("minor ≤ {VERSION_MINOR}")), "{row:?}");
            continue;
        }
        let code = parse_num(&row[0]) as u16;
        assert_eq!(kind::name(code), Some(row[1].as_str()), "{row:?}");
        let (major, minor) = row[2].split_once('.').unwrap();
        assert_eq!(major, "1");
        let since: u16 = minor.parse().unwrap();
        assert!(since == 0 || !kind_defined(since - 1, code), "{row:?} defined before {since}");
        assert!(kind_defined(since, code) && kind_defined(VERSION_MINOR, code), "{row:?}");
        named.push(code);
    }
    assert_eq!(named, [kind::EMPTY, kind::HOST_INFO, kind::HOST_STATE]);
}

/// The §7 host_info entry table and example payload, byte for byte.
#[test]
fn doc_host_info_entries_and_example() {
    let rows = doc_table("| Type | Name | `len` | Value |");
    let typed: Vec<(u64, String, String)> = rows
        .iter()
        .map(|r| (parse_num(r[0].split("..").next().unwrap()), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(
        typed[1],
        (u64::from(host_info::TYPE_HB_ADDR_V4), "hb_addr_v4".into(), host_info::HB_ADDR_V4_LEN.to_string())
    );
    assert_eq!(
        typed[2],
        (u64::from(host_info::TYPE_HB_ADDR_V6), "hb_addr_v6".into(), host_info::HB_ADDR_V6_LEN.to_string())
    );
    assert_eq!((typed[0].0, typed[3].0, rows.len()), (0, 3, 4));
    assert!(rows[3][3].contains(&format!("minor ≤ {VERSION_MINOR},")), "{:?}", rows[3]);
    let entry = doc_table("| Entry offset |");
    assert_eq!(
        entry.iter().map(|r| (r[0].as_str(), r[3].as_str())).collect::<Vec<_>>(),
        [("0", "type"), ("2", "len"), ("4", "value")]
    );
    assert_eq!(host_info::ENTRY_HEADER_LEN, 4);
    assert!(DOC.contains("at most 2 (`MAX_HB_ADDRS`"));
    assert_eq!(host_info::MAX_HB_ADDRS, 2);

    let start = DOC.find("Example: primary").expect("§7 host_info example");
    let para = &DOC[start..start + DOC[start..].find("\n\n").unwrap()];
    let spans: Vec<&str> = para.split('`').skip(1).step_by(2).collect();
    let addrs: Vec<std::net::SocketAddr> = spans.iter().filter_map(|s| s.parse().ok()).collect();
    let bytes: Vec<u8> = spans
        .iter()
        .find(|s| s.len() > 50)
        .unwrap()
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let crc = spans.iter().find(|s| s.starts_with("0x")).map(|s| parse_num(s)).unwrap();
    assert!(para.contains(&format!("`payload_len` {}", bytes.len())));
    let h = HostInfo::new(&addrs).unwrap();
    assert_eq!(addrs.len(), 2);
    let mut buf = [0u8; host_info::MAX_ENCODED_LEN];
    let n = h.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
    assert_eq!(u64::from(checksum(&bytes)), crc);
    let header =
        Extent { kind: kind::HOST_INFO, payload_len: n as u64, ..Extent::empty(uuid::Uuid::nil(), 0) };
    assert_eq!(Payload::decode(&header, &bytes), Ok(Payload::HostInfo(h)));
}

/// The §17 keyring table is exactly `KeyringRaw`.
#[test]
fn doc_keyring_table() {
    let want = [
        ("header", 0),
        ("current_key_id", offset_of!(KeyringRaw, current_key_id)),
        ("previous_key_id", offset_of!(KeyringRaw, previous_key_id)),
        ("current_key", offset_of!(KeyringRaw, current_key)),
        ("previous_key", offset_of!(KeyringRaw, previous_key)),
        ("current_created_unix_s", offset_of!(KeyringRaw, current_created_unix_s)),
        ("previous_created_unix_s", offset_of!(KeyringRaw, previous_created_unix_s)),
        ("previous_valid_until_unix_s", offset_of!(KeyringRaw, previous_valid_until_unix_s)),
        ("reserved", offset_of!(KeyringRaw, reserved)),
    ];
    assert_eq!(doc_fields("## 17. Cluster keyring"), fields(&want));
    // §2: the keyring lives in bytes 512..1024 of the superblock region.
    let layout = doc_table("## 2. Device layout");
    assert!(layout[0][4].contains("cluster keyring in bytes 512..1024"), "{:?}", layout[0]);
    assert!(layout[0][4].contains("bytes 1024..4096 zero"), "{:?}", layout[0]);
}

/// The §17 example, byte for byte (the same keyring as `format::keyring`'s golden test).
#[test]
fn doc_keyring_example() {
    let start = DOC.find("Example: cluster `01234567").expect("§17 keyring example");
    let para = &DOC[start..start + DOC[start..].find("\n\n").unwrap()];
    let spans: Vec<&str> = para.split('`').skip(1).step_by(2).collect();
    let cluster = uuid::Uuid::parse_str(spans[0]).unwrap();
    let seq = |from: u8| KeyBytes::new(std::array::from_fn(|i| from + i as u8));
    assert!(para.contains("keys `80 81 .. 9f` (current) and `10 11 .. 2f` (previous)"));
    let k = Keyring::first(cluster, seq(0x10), 1_700_000_000).rotated(seq(0x80), 1_700_000_100, 400).unwrap();
    assert!(para.contains("current key id 2 created at\n1700000100, previous key id 1 created at 1700000000 and valid until 1700000500 (a 400 s window)"));
    let mut b = [0u8; 512];
    k.encode(&mut b);
    let hex =
        |s: &str| -> Vec<u8> { s.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect() };
    assert_eq!(b[12..16], hex(spans[3])[..], "bytes 12..16");
    assert_eq!(b[32..40], hex(spans[4])[..], "bytes 32..40");
    assert_eq!(b[104..128], hex(spans[5])[..], "bytes 104..128");
    assert!(b[128..].iter().all(|&x| x == 0));
    let crc = spans.iter().find(|s| s.starts_with("0x")).map(|s| parse_num(s)).unwrap();
    assert_eq!(u64::from(u32_at(&b, 0)), crc);
    assert_eq!(Keyring::decode(&b, &cluster), Ok(k));
}

/// The §17 key file example parses, with the ids and keys it names.
#[test]
fn doc_key_file_example() {
    let start = DOC.find("# /etc/diskbeat/cluster.key").expect("§17 key file example");
    let text = &DOC[start..start + DOC[start..].find("```").unwrap()];
    let ring = diskbeat::net::key::Keyring::parse_key_file(text).unwrap();
    assert_eq!((ring.current().id(), ring.previous().map(|k| k.id())), (2, Some(1)));
    assert!(text.contains(&(0x80u8..0xa0).map(|b| format!("{b:02x}")).collect::<String>()));
}

/// (field, offset, size) rows of the first table after `marker` (any table of the §7 style).
fn doc_value_fields(marker: &str) -> Vec<(String, u64, u64)> {
    doc_table(marker).iter().map(|r| (r[3].clone(), parse_num(&r[0]), parse_num(&r[1]))).collect()
}

/// (name, offset, size) from consecutive offsets ending at `end`.
fn fields_to(offsets: &[(&str, usize)], end: usize) -> Vec<(String, u64, u64)> {
    let ends = offsets.iter().skip(1).map(|&(_, o)| o).chain([end]);
    offsets.iter().zip(ends).map(|(&(n, o), e)| (n.to_string(), o as u64, (e - o) as u64)).collect()
}

/// The §7 kind 2 tables are the zerocopy structs of `format::host_state`: entry types, the entry
/// header, and every fixed part, field by field.
#[test]
fn doc_host_state_tables() {
    use host_state::{AssignmentRaw, CapacityRaw, PlanHeaderRaw, UnplacedRaw, VmFixedRaw};
    use std::mem::size_of;
    let rows = doc_table(
        "| Type | Name | `len` | Value |\n|---|---|---|---|\n| 0 | — | — | never assigned: refused |",
    );
    let mut named = Vec::new();
    for row in &rows[1..rows.len() - 1] {
        let t = parse_num(&row[0]) as u16;
        assert_eq!(entry::name(t), Some(row[1].as_str()), "{row:?}");
        named.push(t);
    }
    assert_eq!(named, (1..=7).collect::<Vec<u16>>());
    assert_eq!(entry::name(8), None);
    let last = rows.last().unwrap();
    assert!(last[0].starts_with("8..") && last[3].contains(&format!("minor ≤ {VERSION_MINOR},")), "{last:?}");
    let lens: Vec<&str> = rows[1..8].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(lens[..3], ["6", "18", &size_of::<CapacityRaw>().to_string()]);
    assert!(lens[3].starts_with(&format!("{} + ", size_of::<VmFixedRaw>())));
    assert_eq!(
        lens[4..],
        [size_of::<PlanHeaderRaw>(), size_of::<AssignmentRaw>(), size_of::<UnplacedRaw>()]
            .map(|n| n.to_string())
    );
    // Entry header.
    let head = doc_table("padding to the next multiple of 8");
    let head: Vec<(&str, &str)> = head.iter().map(|r| (r[0].as_str(), r[3].as_str())).collect();
    assert_eq!(head, [("0", "type"), ("2", "reserved"), ("4", "len"), ("8", "value"), ("8+len", "padding")]);
    assert_eq!((host_state::ENTRY_HEADER_LEN, host_state::ENTRY_ALIGN), (8, 8));
    // Fixed parts.
    assert_eq!(
        doc_value_fields("`capacity` value:"),
        fields_to(
            &[
                ("memory_mib", offset_of!(CapacityRaw, memory_mib)),
                ("vcpus", offset_of!(CapacityRaw, vcpus)),
                ("flags", offset_of!(CapacityRaw, flags)),
            ],
            size_of::<CapacityRaw>()
        )
    );
    assert_eq!(
        doc_value_fields("`vm` value:"),
        fields_to(
            &[
                ("uuid", offset_of!(VmFixedRaw, uuid)),
                ("memory_mib", offset_of!(VmFixedRaw, memory_mib)),
                ("vcpus", offset_of!(VmFixedRaw, vcpus)),
                ("state", offset_of!(VmFixedRaw, state)),
                ("protection", offset_of!(VmFixedRaw, protection)),
                ("attempt", offset_of!(VmFixedRaw, attempt)),
                ("flags", offset_of!(VmFixedRaw, flags)),
                ("order", offset_of!(VmFixedRaw, order)),
                ("claim", offset_of!(VmFixedRaw, claim)),
                ("name_len", offset_of!(VmFixedRaw, name_len)),
                ("group_len", offset_of!(VmFixedRaw, group_len)),
                ("failure_len", offset_of!(VmFixedRaw, failure_len)),
                ("pad", offset_of!(VmFixedRaw, pad)),
                ("definition_len", offset_of!(VmFixedRaw, definition_len)),
            ],
            size_of::<VmFixedRaw>()
        )
    );
    assert_eq!(
        doc_value_fields("`plan_header` value:"),
        fields_to(
            &[
                ("number", offset_of!(PlanHeaderRaw, number)),
                ("coordinator_slot", offset_of!(PlanHeaderRaw, coordinator_slot)),
                ("pad", offset_of!(PlanHeaderRaw, pad)),
                ("coordinator_generation", offset_of!(PlanHeaderRaw, coordinator_generation)),
                ("assignment_count", offset_of!(PlanHeaderRaw, assignment_count)),
                ("unplaced_count", offset_of!(PlanHeaderRaw, unplaced_count)),
            ],
            size_of::<PlanHeaderRaw>()
        )
    );
    assert_eq!(
        doc_value_fields("`assignment` value:"),
        fields_to(
            &[
                ("uuid", offset_of!(AssignmentRaw, uuid)),
                ("source_slot", offset_of!(AssignmentRaw, source_slot)),
                ("target_slot", offset_of!(AssignmentRaw, target_slot)),
                ("source_generation", offset_of!(AssignmentRaw, source_generation)),
                ("claim", offset_of!(AssignmentRaw, claim)),
                ("wave", offset_of!(AssignmentRaw, wave)),
                ("attempt", offset_of!(AssignmentRaw, attempt)),
                ("pad", offset_of!(AssignmentRaw, pad)),
            ],
            size_of::<AssignmentRaw>()
        )
    );
    assert_eq!(
        doc_value_fields("`unplaced` value:"),
        fields_to(
            &[
                ("uuid", offset_of!(UnplacedRaw, uuid)),
                ("source_slot", offset_of!(UnplacedRaw, source_slot)),
                ("reason", offset_of!(UnplacedRaw, reason)),
                ("pad", offset_of!(UnplacedRaw, pad)),
            ],
            size_of::<UnplacedRaw>()
        )
    );
}

/// The §7 two-copy table and drawing, and the sizing numbers, against `Geometry` and the encoder.
#[test]
fn doc_extent_copies_and_sizing() {
    let g = Geometry::new(DEFAULT_EXTENT_SIZE, VERSION_MINOR);
    use diskbeat::format::extent::ExtentCopy;
    assert_eq!((g.copy_offset(ExtentCopy::A), g.copy_offset(ExtentCopy::B)), (0, 1_048_576));
    assert!(DOC.contains("(`extent_size = 2097152`, `copy_size = 1048576`)"));
    assert!(DOC.contains("| hdr A  | payload A (1044480 bytes)   | hdr B  | payload B (1044480 bytes)   |"));
    // An odd multiple of 4096 leaves its last block unused; a 1.4 device has one copy.
    let odd = Geometry::new(12288, VERSION_MINOR);
    assert_eq!((odd.copies, odd.copy_size, odd.payload_capacity()), (2, 4096, 0));
    assert_eq!(Geometry::new(65536, 4), Geometry { copies: 1, copy_size: 65536 });
    assert!(DOC.contains("superblock minor ≤ 4) has one copy"));
    // Sizing: bytes per VM, per-host overhead, the 200-VM example, measured on the encoder.
    let vm = |i: u128| host_state::VmEntry {
        uuid: uuid::Uuid::from_u128(i + 1),
        name: format!("vm-{i:013}"),
        memory_mib: 4096,
        vcpus: 2,
        state: host_state::VmState::Running,
        protection: diskbeat::planner::Protection::Protect,
        order: None,
        anti_affinity: Some("group-01".into()),
        claim: 1,
        attempt: 0,
        failure: None,
        definition: vec![b'x'; 4608],
    };
    let one = HostState { vms: vec![vm(0)], ..HostState::default() };
    let mut out = Vec::new();
    one.encode(&mut out).unwrap();
    assert_eq!((one.vms[0].name.len(), out.len()), (16, 4696));
    assert_eq!(host_state::vm_entry_len(16, 8, 0, 4608), 4696);
    let host = HostState {
        hb_addrs: vec!["[2001:db8::1]:7400".parse().unwrap(), "[2001:db8::2]:7400".parse().unwrap()],
        capacity: Some(host_state::HostCapacity { memory_mib: 1, vcpus: 1, accepts_restarts: true }),
        vms: (0..200).map(vm).collect(),
        plan: None,
    };
    host.encode(&mut out).unwrap();
    assert_eq!(out.len(), 939_288);
    assert!(out.len() <= diskbeat::disk::EXTENT_PAYLOAD_IO_MAX);
    assert!(DOC.contains("`8 + align8(56 + 16 + 8 + 4608) = 4696` bytes, 939200 for all 200; with the host's 88 bytes,\n939288 of the 1044480"));
    let room = diskbeat::disk::EXTENT_PAYLOAD_IO_MAX - out.len();
    assert_eq!((room, (room - 40) / 56, room / 4696 + 200), (105_192, 1877, 222));
    // The 64-slot device with the default extent.
    let l = Layout::new(Params {
        sector_size: 512,
        slot_size: 512,
        slot_count: 64,
        extent_size: DEFAULT_EXTENT_SIZE,
    })
    .unwrap();
    assert_eq!(l.total_size(), 134_352_896);
    assert!(DOC.contains("need 134352896 bytes in all (512n)"));
    let l = Layout::new(Params {
        sector_size: 4096,
        slot_size: 4096,
        slot_count: 2048,
        extent_size: DEFAULT_EXTENT_SIZE,
    })
    .unwrap();
    assert!(DOC.contains(&format!("2048 slots {} (4Kn)", l.total_size())));
}
