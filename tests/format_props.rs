//! Encode/decode property tests over every field; decoding arbitrary bytes never panics.

use diskbeat::format::extent::host_info::{HostInfo, PayloadError, MAX_ENCODED_LEN, MAX_HB_ADDRS};
use diskbeat::format::extent::{kind, Extent, Payload};
use diskbeat::format::host_state::{
    self, Assignment, Epoch, HostCapacity, HostState, Plan, Unplaced, UnplacedCode, VmEntry, VmState,
};
use diskbeat::format::keyring::{KeyBytes, Keyring};
use diskbeat::format::mailbox::{Command, Mailbox};
use diskbeat::format::record::{flags, Members, NetView, Record, State};
use diskbeat::format::superblock::Superblock;
use diskbeat::format::{Corruption, VERSION_MINOR};
use diskbeat::planner::Protection;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

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
                fl in any::<u16>(), eseq in any::<u64>(), weight in any::<u32>(),
                members in proptest::collection::vec(0u32..600, 0..20),
                fence in 0u8..3, fencer in 0u32..2048) -> Record {
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
        // Any combination of the bits formats 1.1 to 1.5 define (each bit independently).
        r.flags = fl & flags::KNOWN_1_5;
        // Format 1.8: a member's fence intent (on a live or self-fencing record) or its device
        // proof (on a `fenced` mark that stops VMs), naming another slot.
        let fencer = if fencer == slot { (slot + 1) % 2048 } else { fencer };
        match (fence, st) {
            (1, State::Live | State::SelfFencing) => {
                r.flags |= flags::FENCE_INTENT;
                r.fencer_slot = fencer;
            }
            (2, State::Fenced) => {
                r.flags |= flags::FENCE_DEVICE | flags::FENCE_STOPS_VMS;
                r.fencer_slot = fencer;
            }
            _ => {}
        }
        r.extent_sequence = eseq;
        r.weight = weight;
        r.boot_id = uuid::Uuid::from_u64_pair(eseq.rotate_left(7), u64::from(weight));
        // Format 1.7's ride-through membership; slots from 512 on cannot be named (ignored).
        let mut m = Members::EMPTY;
        for s in members { m.set(s); }
        r.members = m;
        r
    }
}

proptest! {
    #[test]
    fn record_round_trip(r in record()) {
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        prop_assert_eq!(Record::decode(&buf, &r.cluster_uuid, r.slot), Ok(r));
        let raw = Record::validate(&buf, &r.cluster_uuid, r.slot).unwrap();
        prop_assert_eq!(raw.members(), Some(r.members));
        prop_assert!(r.members.iter().all(|s| s < 512));
    }

    /// The same record claiming minor 6 is refused as soon as it names a member (bytes 444..508
    /// are reserved there), and accepted, stating no membership, when it names none.
    #[test]
    fn record_members_refused_in_minor_6(mut r in record(), strip in any::<bool>()) {
        // 1.8's fence fields are refused in minor 6 too: not what this is about.
        r.flags &= flags::KNOWN_1_5;
        r.fencer_slot = 0;
        if strip {
            r.members = Members::EMPTY;
        }
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        buf[14..16].copy_from_slice(&6u16.to_le_bytes());
        let crc = crc32c::crc32c(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        let decoded = Record::decode(&buf, &r.cluster_uuid, r.slot);
        if r.members != Members::EMPTY {
            prop_assert_eq!(decoded, Err(Corruption::ReservedNotZero));
        } else {
            prop_assert_eq!(decoded, Ok(r));
            prop_assert_eq!(Record::validate(&buf, &r.cluster_uuid, r.slot).unwrap().members(), None);
        }
    }

    /// A current record with any flag bit its minor does not define is refused, whatever else it
    /// holds.
    #[test]
    fn record_unknown_flags_refused(r in record(), undefined in 1u16..=0x3F) {
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        // Bits 10..=15: none is defined by 1.1 to 1.8 (bits 8 and 9 are 1.8's).
        let raw = r.flags | undefined << 10;
        buf[38..40].copy_from_slice(&raw.to_le_bytes());
        let crc = crc32c::crc32c(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        prop_assert_eq!(Record::decode(&buf, &r.cluster_uuid, r.slot), Err(Corruption::ReservedNotZero));
    }

    /// The same record claiming minor 3 is refused as soon as it carries anything 1.4 added (a
    /// flag bit 3..=6 or a non-zero weight), and accepted, unchanged, when it carries neither.
    /// (1.5's fields, bit 7 and `boot_id`, and 1.7's `members` are refused there too.)
    #[test]
    fn record_1_4_fields_refused_in_minor_3(mut r in record(), strip in any::<bool>()) {
        r.flags &= flags::KNOWN_1_5;
        r.fencer_slot = 0;
        if strip {
            r.flags &= flags::KNOWN_1_1;
            r.weight = 0;
            r.boot_id = uuid::Uuid::nil();
            r.members = Members::EMPTY;
        }
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        buf[14..16].copy_from_slice(&3u16.to_le_bytes());
        let crc = crc32c::crc32c(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        let decoded = Record::decode(&buf, &r.cluster_uuid, r.slot);
        if r.flags & !flags::KNOWN_1_1 != 0 || r.weight != 0 || !r.boot_id.is_nil() || r.members != Members::EMPTY {
            prop_assert_eq!(decoded, Err(Corruption::ReservedNotZero));
        } else {
            prop_assert_eq!(decoded, Ok(r));
        }
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
        let _ = Keyring::decode(&bytes, &uuid::Uuid::nil());
    }

    /// Keyrings round-trip through any number of rotations; a rotation keeps the old key as the
    /// previous one and drops the one before.
    #[test]
    fn keyring_round_trip(cluster in any::<u128>(), keys in proptest::collection::vec(any::<[u8; 32]>(), 1..5),
                          created in any::<u64>(), window in any::<u64>()) {
        let cluster = uuid::Uuid::from_u128(cluster);
        let key = |k: [u8; 32]| KeyBytes::new(if k == [0; 32] { [1; 32] } else { k });
        let mut ring = Keyring::first(cluster, key(keys[0]), created);
        for (i, k) in keys.iter().enumerate().skip(1) {
            let next = ring.rotated(key(*k), created.wrapping_add(i as u64), window).unwrap();
            prop_assert_eq!(next.current.id, ring.current.id + 1);
            prop_assert_eq!(next.previous.map(|p| (p.id, p.key)), Some((ring.current.id, ring.current.key)));
            ring = next;
        }
        let mut buf = [0u8; 512];
        ring.encode(&mut buf);
        prop_assert_eq!(Keyring::decode(&buf, &cluster), Ok(ring));
    }

    /// A keyring with the right magic and checksum but random fields: the decoder never panics,
    /// and whatever it accepts keeps the invariants the daemon relies on.
    #[test]
    fn keyring_sealed_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 512), minor in 0u16..6) {
        bytes[4..12].copy_from_slice(b"DBKEYRNG");
        bytes[12..14].copy_from_slice(&1u16.to_le_bytes());
        bytes[14..16].copy_from_slice(&minor.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        let cluster = uuid::Uuid::from_slice(&bytes[16..32]).unwrap();
        if let Ok(k) = Keyring::decode(&bytes, &cluster) {
            prop_assert!(k.version_minor >= 3 && k.current.id != 0);
            prop_assert!(k.previous.is_none_or(|p| p.id != 0 && p.id != k.current.id));
        }
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

    /// Host info payloads round-trip for any publishable addresses (IPv4 and IPv6 mixed).
    #[test]
    fn host_info_round_trip(addrs in proptest::collection::vec(hb_addr(), 0..=MAX_HB_ADDRS)) {
        let h = HostInfo::new(&addrs).unwrap();
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let n = h.encode(&mut buf).unwrap();
        prop_assert_eq!(n, h.encoded_len());
        prop_assert_eq!(HostInfo::decode(&buf[..n], diskbeat::format::VERSION_MINOR), Ok(h));
        prop_assert_eq!(h.addrs(), &addrs[..]);
        // Every strict prefix is refused (truncated), never decoded as something else.
        for cut in 1..n {
            let prefix = HostInfo::decode(&buf[..cut], diskbeat::format::VERSION_MINOR);
            prop_assert!(prefix.is_err() || is_entry_boundary(&buf[..n], cut), "cut {}: {:?}", cut, prefix);
        }
    }

    /// The payload decoders are total: arbitrary bytes, under any header minor and kind, never panic,
    /// and anything accepted re-encodes to a payload that decodes the same.
    #[test]
    fn payload_decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                minor in 0u16..9, k in 0u16..4) {
        let header = Extent { kind: k, version_minor: minor, payload_len: bytes.len() as u64,
                              ..Extent::empty(uuid::Uuid::nil(), 0) };
        let decoded = Payload::decode(&header, &bytes);
        if let Ok(Payload::HostInfo(h)) = decoded {
            prop_assert!(h.addrs().len() <= MAX_HB_ADDRS);
            let mut buf = [0u8; MAX_ENCODED_LEN];
            let n = h.encode(&mut buf).unwrap();
            prop_assert_eq!(HostInfo::decode(&buf[..n], minor), Ok(h));
        }
        if k == kind::HOST_INFO {
            let direct = HostInfo::decode(&bytes, minor);
            prop_assert_eq!(decoded.map(|p| matches!(p, Payload::HostInfo(_))), direct.map(|_| true).map_err(Into::into));
        }
    }

    /// Structured garbage: valid-looking entries with random types, lengths and values.
    #[test]
    fn payload_decoder_total_on_entries(entries in proptest::collection::vec(
            (0u16..5, 0u16..24, proptest::collection::vec(any::<u8>(), 0..24)), 0..5), minor in 0u16..5) {
        let mut bytes = Vec::new();
        for (t, len, value) in entries {
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&value);
        }
        match HostInfo::decode(&bytes, minor) {
            Ok(h) => prop_assert!(h.addrs().iter().all(|a| a.port() != 0)),
            Err(PayloadError::Unrepresentable(_) | PayloadError::BufferTooSmall { .. }) => {
                prop_assert!(false, "decoder returned a writer-only error");
            }
            Err(_) => {}
        }
    }

    /// Every header field round-trips, the writer's host uuid (1.6) included.
    #[test]
    fn extent_header_round_trip(cluster in any::<u128>(), slot in 0u32..2048, host in any::<u128>(),
                                generation in any::<u64>(), sequence in any::<u64>(), len in 0u64..=4096,
                                crc in any::<u32>(), k in 0u16..3) {
        let e = Extent { kind: k, generation, host_uuid: uuid::Uuid::from_u128(host), sequence,
                         payload_len: len, payload_crc32c: crc,
                         ..Extent::empty(uuid::Uuid::from_u128(cluster), slot) };
        let mut buf = [0u8; 512];
        e.encode(&mut buf);
        prop_assert_eq!(Extent::decode(&buf, &e.cluster_uuid, slot, 8192), Ok(e));
        prop_assert_eq!(e.writer_uuid(), Some(e.host_uuid));
    }

    #[test]
    fn extent_header_arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 512),
                                                 slot in 0u32..2048, ext in 8192u64..(1 << 26)) {
        let _ = Extent::decode(&bytes, &uuid::Uuid::nil(), slot, ext);
        bytes[4..12].copy_from_slice(b"DBEXTENT");
        bytes[12..14].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        let cluster = uuid::Uuid::from_slice(&bytes[16..32]).unwrap();
        if let Ok(e) = Extent::decode(&bytes, &cluster, slot, ext) {
            prop_assert_eq!(e.slot, slot);
            prop_assert!(e.payload_len <= ext - 4096);
        }
    }
}

fn vm_state() -> impl Strategy<Value = VmState> {
    prop_oneof![
        Just(VmState::Running),
        Just(VmState::Stopped),
        Just(VmState::Starting),
        Just(VmState::Failed)
    ]
}

fn protection() -> impl Strategy<Value = Protection> {
    prop_oneof![Just(Protection::Protect), Just(Protection::BestEffort), Just(Protection::None)]
}

fn short_text() -> impl Strategy<Value = String> {
    // 1..=255 bytes of UTF-8, multi-byte characters included.
    "[a-z0-9é\u{4e2d}-]{1,60}".prop_filter("at most 255 bytes", |s| s.len() <= 255)
}

prop_compose! {
    fn vm()(uuid in any::<u128>(), name in short_text(), memory_mib in any::<u64>(), vcpus in any::<u32>(),
            state in vm_state(), protection in protection(), order in proptest::option::of(any::<i64>()),
            anti_affinity in proptest::option::of(short_text()), claim in 0..=host_state::COUNTER_MAX,
            attempt in any::<u8>(),
            failure in proptest::option::of(short_text()),
            definition in proptest::collection::vec(any::<u8>(), 0..300)) -> VmEntry {
        VmEntry { uuid: uuid::Uuid::from_u128(uuid), name, memory_mib, vcpus, state, protection, order,
                  anti_affinity, claim, attempt, failure, definition }
    }
}

prop_compose! {
    fn plan()(number in 0..=host_state::COUNTER_MAX, coordinator_slot in any::<u32>(),
              coordinator_generation in any::<u64>(),
              assignments in proptest::collection::vec((any::<u128>(), any::<u32>(), any::<u64>(), any::<u32>(),
                  0..=host_state::COUNTER_MAX, any::<u8>(), any::<u32>()), 0..6),
              unplaced in proptest::collection::vec((any::<u128>(), any::<u32>(), 1u8..=3), 0..6)) -> Plan {
        Plan {
            epoch: Epoch { number, coordinator_slot, coordinator_generation },
            assignments: assignments.into_iter().map(|(u, ss, sg, ts, claim, attempt, wave)| Assignment {
                uuid: uuid::Uuid::from_u128(u), source_slot: ss, source_generation: sg, target_slot: ts, claim,
                attempt, wave }).collect(),
            unplaced: unplaced.into_iter().map(|(u, ss, r)| Unplaced {
                uuid: uuid::Uuid::from_u128(u), source_slot: ss,
                reason: match r { 1 => UnplacedCode::NotProtected, 2 => UnplacedCode::NoCapacity,
                                  _ => UnplacedCode::StartFailed } }).collect(),
        }
    }
}

prop_compose! {
    fn host_state()(hb_addrs in proptest::collection::vec(hb_addr(), 0..=MAX_HB_ADDRS),
                    capacity in proptest::option::of((any::<u64>(), any::<u32>(), any::<bool>())),
                    vms in proptest::collection::vec(vm(), 0..6), plan in proptest::option::of(plan())) -> HostState {
        let mut seen = std::collections::HashSet::new();
        HostState {
            hb_addrs,
            capacity: capacity.map(|(memory_mib, vcpus, accepts_restarts)| HostCapacity { memory_mib, vcpus, accepts_restarts }),
            // Distinct UUIDs (the format refuses a VM listed twice).
            vms: vms.into_iter().filter(|v| seen.insert(v.uuid)).collect(),
            plan,
        }
    }
}

proptest! {
    /// Host state payloads round-trip (also through `Payload::decode`, and read by a newer
    /// minor); entries are 8-byte aligned.
    #[test]
    fn host_state_round_trip(h in host_state()) {
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        prop_assert_eq!(out.len() % host_state::ENTRY_ALIGN, 0);
        prop_assert_eq!(HostState::decode(&out, VERSION_MINOR), Ok(h.clone()));
        let header = Extent { kind: kind::HOST_STATE, payload_len: out.len() as u64,
                              ..Extent::empty(uuid::Uuid::nil(), 0) };
        prop_assert_eq!(Payload::decode(&header, &out), Ok(Payload::HostState(h.clone())));
        prop_assert_eq!(HostState::decode(&out, VERSION_MINOR + 1), Ok(h));
    }

    /// Arbitrary bytes never panic, under any minor; whatever decodes re-encodes to the same.
    #[test]
    fn host_state_decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..400), minor in 0u16..9) {
        if let Ok(h) = HostState::decode(&bytes, minor) {
            let mut out = Vec::new();
            h.encode(&mut out).unwrap();
            prop_assert_eq!(HostState::decode(&out, minor), Ok(h));
        }
    }

    /// Random mutations of valid encodings (byte flips, overwrites, truncations, insertions) never
    /// panic; whatever still decodes re-encodes to a payload that decodes the same.
    #[test]
    fn host_state_mutations_never_panic(h in host_state(),
                                        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..6),
                                        minor in 4u16..9) {
        let mut b = Vec::new();
        h.encode(&mut b).unwrap();
        for (at, v, op) in edits {
            let at = if b.is_empty() { 0 } else { usize::from(at) % b.len() };
            match op {
                0 if !b.is_empty() => b[at] ^= v | 1,
                1 if !b.is_empty() => b[at] = v,
                2 => b.truncate(at),
                _ => b.insert(at, v),
            }
        }
        if let Ok(d) = HostState::decode(&b, minor) {
            let mut out = Vec::new();
            d.encode(&mut out).unwrap();
            prop_assert_eq!(HostState::decode(&out, minor), Ok(d));
        }
    }
}

fn hb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>().prop_filter("specified", |&ip| ip != 0), 1u16..)
            .prop_map(|(ip, port)| { SocketAddr::new(Ipv4Addr::from(ip).into(), port) }),
        (any::<u128>().prop_filter("specified", |&ip| ip != 0), 1u16..)
            .prop_map(|(ip, port)| { SocketAddr::new(Ipv6Addr::from(ip).into(), port) }),
    ]
}

/// (entry type, payload offset of its value) of every entry of a valid payload.
fn entries(payload: &[u8]) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < payload.len() {
        let t = u16::from_le_bytes([payload[pos], payload[pos + 1]]);
        let len = u32::from_le_bytes(payload[pos + 4..pos + 8].try_into().unwrap()) as usize;
        out.push((t, pos + 8));
        pos += 8 + len.next_multiple_of(8);
    }
    out
}

/// Every claim and plan number of a decoded payload, the counters readers add one to.
fn counters(h: &HostState) -> Vec<u64> {
    let mut out: Vec<u64> = h.vms.iter().map(|v| v.claim).collect();
    if let Some(p) = &h.plan {
        out.push(p.epoch.number);
        out.extend(p.assignments.iter().map(|a| a.claim));
    }
    out
}

proptest! {
    /// Issue "hostile input" item 4: any u64 written into a claim or a plan number (the
    /// checksum makes it "valid") either is refused or leaves room for the `+ 1` readers do
    /// (next claim, next plan number: docs/FAILOVER.md), so that arithmetic cannot overflow.
    #[test]
    fn decoded_counters_never_overflow_plus_one(h in host_state(), values in proptest::collection::vec(any::<u64>(), 1..8),
                                                 pick in any::<prop::sample::Index>()) {
        let mut b = Vec::new();
        h.encode(&mut b).unwrap();
        // Where the counters are: a VM's claim at 40, a plan's number at 0, an assignment's claim at 32.
        let spots: Vec<usize> = entries(&b)
            .into_iter()
            .filter_map(|(t, at)| match t {
                host_state::entry::VM => Some(at + 40),
                host_state::entry::PLAN_HEADER => Some(at),
                host_state::entry::ASSIGNMENT => Some(at + 32),
                _ => None,
            })
            .collect();
        prop_assume!(!spots.is_empty());
        let first = pick.index(spots.len());
        let mut planted = std::collections::BTreeMap::new();
        for (i, v) in values.iter().enumerate() {
            let at = spots[(first + i) % spots.len()];
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            planted.insert(at, *v);
        }
        let fits = planted.values().all(|&v| v <= host_state::COUNTER_MAX);
        match HostState::decode(&b, VERSION_MINOR) {
            Ok(d) => {
                prop_assert!(fits, "{:?} decoded", planted);
                for c in counters(&d) {
                    prop_assert!(c.checked_add(1).is_some(), "{}", c);
                }
            }
            Err(e) => {
                prop_assert!(!fits, "{:?}", e);
                prop_assert!(
                    matches!(e, host_state::HostStateError::BadValue { field: "claim" | "number", .. }),
                    "{:?}", e
                );
            }
        }
    }
}

/// Whether `cut` falls exactly after a whole entry of `payload` (such a prefix is a valid payload).
fn is_entry_boundary(payload: &[u8], cut: usize) -> bool {
    let mut pos = 0;
    while pos < cut {
        let len = u16::from_le_bytes([payload[pos + 2], payload[pos + 3]]) as usize;
        pos += 4 + len;
    }
    pos == cut
}
