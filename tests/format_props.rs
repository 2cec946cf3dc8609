//! Encode/decode property tests over every field; decoding arbitrary bytes never panics.

use diskbeat::format::mailbox::{Command, Mailbox};
use diskbeat::format::record::{flags, NetView, Record, State};
use diskbeat::format::superblock::Superblock;
use diskbeat::format::Corruption;
use proptest::prelude::*;

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Free),
        Just(State::Joining),
        Just(State::Live),
        Just(State::Leaving),
        Just(State::SelfFencing),
        Just(State::Fenced)
    ]
}

prop_compose! {
    fn record()(cluster in any::<u128>(), slot in 0u32..2048, st in state(), host in any::<u128>(),
                generation in any::<u64>(), sequence in any::<u64>(), mono in any::<u64>(),
                io in any::<u32>(), interval in any::<u32>(), name in "[a-z0-9.-]{1,64}",
                bits in proptest::collection::vec(0u32..2048, 0..40), ack in any::<u64>(),
                fl in any::<u16>(), eseq in any::<u64>()) -> Record {
        let mut r = Record::free(uuid::Uuid::from_u128(cluster), slot);
        r.state = st;
        r.host_uuid = uuid::Uuid::from_u128(host);
        r.generation = generation;
        r.sequence = sequence;
        r.monotonic_ms = mono;
        r.io_timeout_ms = io;
        r.interval_ms = interval;
        r.set_host_name(&name).unwrap();
        let mut v = NetView::EMPTY;
        for b in bits { v.set(b, true); }
        r.net_view = v;
        r.mailbox_ack = ack;
        // Any combination of the bits format 1.1 (and 1.2) defines (each bit independently).
        r.flags = fl & flags::KNOWN;
        r.extent_sequence = eseq;
        r
    }
}

proptest! {
    #[test]
    fn record_round_trip(r in record()) {
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        prop_assert_eq!(Record::decode(&buf, &r.cluster_uuid, r.slot), Ok(r));
    }

    /// A 1.2 record with any flag bit the minor does not define is refused, whatever else it holds.
    #[test]
    fn record_unknown_flags_refused(r in record(), undefined in 1u16..=0x1FFF) {
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        // Bits 3..=15: none is defined by 1.1 or 1.2.
        let raw = r.flags | undefined << 3;
        buf[38..40].copy_from_slice(&raw.to_le_bytes());
        let crc = crc32c::crc32c(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        prop_assert_eq!(Record::decode(&buf, &r.cluster_uuid, r.slot), Err(Corruption::ReservedNotZero));
    }

    #[test]
    fn record_any_flip_detected(r in record(), bit in 0usize..4096) {
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Record::decode(&buf, &r.cluster_uuid, r.slot).is_err());
    }

    #[test]
    fn mailbox_round_trip(cluster in any::<u128>(), slot in 0u32..2048, sender in any::<u32>(),
                          id in any::<u64>(), fence in any::<bool>(), name in "[a-z0-9-]{1,64}") {
        let mut m = Mailbox::empty(uuid::Uuid::from_u128(cluster), slot);
        m.sender_slot = sender;
        m.request_id = id;
        m.command = if fence { Command::Fence } else { Command::Test };
        m.set_sender_name(&name).unwrap();
        let mut buf = [0u8; 512];
        m.encode(&mut buf);
        prop_assert_eq!(Mailbox::decode(&buf, &m.cluster_uuid, slot), Ok(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 512), slot in 0u32..2048) {
        let _ = Record::decode(&bytes, &uuid::Uuid::nil(), slot);
        let _ = Mailbox::decode(&bytes, &uuid::Uuid::nil(), slot);
        let _ = Superblock::decode(&bytes);
    }

    /// Bytes that carry the right magic and a valid checksum but random fields: still no panic,
    /// and a record accepted has the asked slot.
    #[test]
    fn sealed_garbage_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 512), slot in 0u32..2048) {
        bytes[4..12].copy_from_slice(b"DBRECORD");
        bytes[12..14].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        let cluster = uuid::Uuid::from_slice(&bytes[16..32]).unwrap();
        if let Ok(r) = Record::decode(&bytes, &cluster, slot) {
            prop_assert_eq!(r.slot, slot);
        }
        bytes[4..12].copy_from_slice(b"DISKBEAT");
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        let _ = Superblock::decode(&bytes);
    }
}
