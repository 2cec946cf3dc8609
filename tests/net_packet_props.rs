//! Properties of the network heartbeat packet (docs/PROTOCOL.md): verification is total and
//! never accepts what a key holder did not seal; sealing and verifying round-trip.

use diskbeat::format::record::NetView;
use diskbeat::format::MAX_SLOTS;
use diskbeat::net::packet::{flags, MAGIC};
use diskbeat::net::{ClusterKey, DropReason, Keyring, Packet, ReplayGuard, MAC_OFFSET, PACKET_SIZE};
use proptest::prelude::*;

const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);

fn arb_packet() -> impl Strategy<Value = Packet> {
    (
        any::<u128>(),
        0..MAX_SLOTS,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64)],
        prop_oneof![Just(0u32), Just(flags::DISK_LOST)],
        proptest::array::uniform32(any::<[u8; 8]>()),
        (0..MAX_SLOTS, any::<u64>()),
    )
        .prop_map(
            |(cluster, slot, generation, sequence, send_ms, age_ms, flags, view, (dest_slot, echo_ms))| {
                let mut net_view = NetView::EMPTY;
                for (i, chunk) in view.iter().enumerate() {
                    net_view.0[i * 8..i * 8 + 8].copy_from_slice(chunk);
                }
                Packet {
                    cluster_uuid: uuid::Uuid::from_u128(cluster),
                    sender_slot: slot,
                    generation,
                    sequence,
                    send_monotonic_ms: send_ms,
                    disk_age_ms: age_ms,
                    flags,
                    net_view,
                    dest_slot,
                    echo_ms,
                }
            },
        )
}

fn sealed(p: &Packet, ring: &Keyring) -> [u8; PACKET_SIZE] {
    let mut b = [0u8; PACKET_SIZE];
    p.seal(ring, &mut b).unwrap();
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any byte string, of any length: no panic, and never accepted.
    #[test]
    fn arbitrary_bytes_never_panic_nor_verify(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1100),
            proptest::collection::vec(any::<u8>(), PACKET_SIZE..=PACKET_SIZE),
        ],
        key in any::<[u8; 32]>(),
        key_id in any::<u32>(),
    ) {
        let ring = Keyring::new(ClusterKey::new(key_id, key));
        prop_assert!(Packet::verify(&bytes, &ring, &CLUSTER).is_err());
    }

    /// Random bytes behind a header that passes every check before the MAC (right size, magic,
    /// version, cluster, key id): the MAC drops them.
    #[test]
    fn a_plausible_header_on_random_bytes_is_a_bad_mac(
        body in proptest::collection::vec(any::<u8>(), PACKET_SIZE - 32..=PACKET_SIZE - 32),
        key in any::<[u8; 32]>(),
        key_id in any::<u32>(),
    ) {
        let mut b = [0u8; PACKET_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[12..16].copy_from_slice(&key_id.to_le_bytes());
        b[16..32].copy_from_slice(CLUSTER.as_bytes());
        b[32..].copy_from_slice(&body);
        let ring = Keyring::new(ClusterKey::new(key_id, key));
        prop_assert_eq!(Packet::verify(&b, &ring, &CLUSTER).map(|_| ()), Err(DropReason::BadMac));
    }

    /// A packet sealed with one key never verifies under another 32-byte key, even one that
    /// claims the same id.
    #[test]
    fn another_key_never_verifies(p in arb_packet(), signer in any::<[u8; 32]>(), other in any::<[u8; 32]>(), id in any::<u32>()) {
        prop_assume!(signer != other);
        let b = sealed(&p, &Keyring::new(ClusterKey::new(id, signer)));
        let ring = Keyring::new(ClusterKey::new(id, other));
        prop_assert_eq!(Packet::verify(&b, &ring, &p.cluster_uuid).map(|_| ()), Err(DropReason::BadMac));
    }

    /// Any single bit flipped anywhere in a sealed packet (MAC included) is rejected.
    #[test]
    fn any_single_bit_flip_is_rejected(p in arb_packet(), key in any::<[u8; 32]>(), bit in 0..PACKET_SIZE * 8) {
        let ring = Keyring::new(ClusterKey::new(1, key));
        let mut b = sealed(&p, &ring);
        b[bit / 8] ^= 1 << (bit % 8);
        let r = Packet::verify(&b, &ring, &p.cluster_uuid).map(|_| ());
        prop_assert!(r.is_err(), "bit {} accepted", bit);
        if bit / 8 >= MAC_OFFSET || (32..MAC_OFFSET).contains(&(bit / 8)) {
            prop_assert_eq!(r, Err(DropReason::BadMac), "bit {}", bit);
        }
    }

    /// Whatever the fields, verify gives back exactly what seal wrote.
    #[test]
    fn round_trip(p in arb_packet(), key in any::<[u8; 32]>(), id in any::<u32>()) {
        let ring = Keyring::new(ClusterKey::new(id, key));
        let v = Packet::verify(&sealed(&p, &ring), &ring, &p.cluster_uuid).unwrap();
        prop_assert_eq!(v.key_id(), id);
        prop_assert_eq!(v.into_packet(), p);
    }

    /// The guard accepts exactly the packets whose (generation, sequence) is strictly above every
    /// one accepted before and whose generation is not below the disk's.
    #[test]
    fn replay_guard_matches_its_model(
        events in proptest::collection::vec((0u32..3, 0u64..4, 0u64..6, any::<bool>()), 0..200),
    ) {
        let mut g = ReplayGuard::new(3);
        let mut highest: [Option<(u64, u64)>; 3] = [None; 3];
        let mut min = [0u64; 3];
        for (slot, generation, sequence, from_disk) in events {
            let s = slot as usize;
            if from_disk {
                g.raise_min_generation(slot, generation);
                min[s] = min[s].max(generation);
                continue;
            }
            let want = if generation < min[s] || highest[s].is_some_and(|(hg, _)| generation < hg) {
                Err(DropReason::StaleGeneration)
            } else if highest[s].is_some_and(|h| (generation, sequence) <= h) {
                Err(DropReason::Replay)
            } else {
                highest[s] = Some((generation, sequence));
                Ok(())
            };
            prop_assert_eq!(g.accept(slot, generation, sequence), want);
            prop_assert_eq!(g.highest(slot), highest[s]);
        }
    }
}
