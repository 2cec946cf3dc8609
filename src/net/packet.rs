//! The heartbeat packet: one fixed-size datagram, MACed with keyed BLAKE3 (docs/PROTOCOL.md §2-§5).

use super::key::{ClusterKey, Keyring};
use super::{DropReason, VERSION_MAJOR, VERSION_MINOR};
use crate::format::record::NetView;
use crate::format::{all_zero, MAX_SLOTS, NET_VIEW_BYTES};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Every packet is exactly this long; any other datagram is `WrongSize`.
pub const PACKET_SIZE: usize = 512;
/// Length of the MAC: a BLAKE3 output.
pub const MAC_LEN: usize = 32;
/// The MAC occupies the last 32 bytes and covers every byte before it.
pub const MAC_OFFSET: usize = PACKET_SIZE - MAC_LEN;
/// "diskbeat network heartbeat". Never changes, in any version: the version fields say which.
pub const MAGIC: [u8; 8] = *b"DBNETHBT";
/// `disk_age_ms` of a sender that has never completed a good disk cycle (since it started).
pub const DISK_AGE_NEVER: u64 = u64::MAX;

/// Packet `flags` bits (docs/PROTOCOL.md §3). Undefined bits are `ReservedNotZero` in a packet
/// whose minor this build knows; a newer minor's bits pass through undecoded (mask with
/// [`flags::KNOWN`] before use).
pub mod flags {
    /// The sender has lost the heartbeat disk: its last sweep or write failed (or timed out) and it
    /// has not completed a good cycle since, or no read has succeeded for the read gap (a sweep
    /// still hanging). `disk_age_ms` says how long ago its last successful read started.
    pub const DISK_LOST: u32 = 1 << 0;
    /// Every bit defined by protocol 1.0.
    pub const KNOWN: u32 = DISK_LOST;
}

/// Wire mirror of a packet (docs/PROTOCOL.md §2). `#[repr(C)]` of byte arrays: no padding.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PacketRaw {
    pub magic: [u8; 8],                 // 0
    pub version_major: U16,             // 8
    pub version_minor: U16,             // 10
    pub key_id: U32,                    // 12
    pub cluster_uuid: [u8; 16],         // 16
    pub sender_slot: U32,               // 32
    pub flags: U32,                     // 36
    pub generation: U64,                // 40
    pub sequence: U64,                  // 48
    pub send_monotonic_ms: U64,         // 56
    pub disk_age_ms: U64,               // 64
    pub net_view: [u8; NET_VIEW_BYTES], // 72..328
    pub dest_slot: U32,                 // 328 (protocol 1.1)
    pub reserved_pad: [u8; 4],          // 332 (protocol 1.1: zero)
    pub echo_ms: U64,                   // 336 (protocol 1.1)
    pub reserved: [u8; 136],            // 344..480
    pub mac: [u8; MAC_LEN],             // 480..512
}
const _: () = assert!(core::mem::size_of::<PacketRaw>() == PACKET_SIZE);
const _: () = assert!(core::mem::offset_of!(PacketRaw, mac) == MAC_OFFSET);
const _: () = assert!(NET_VIEW_BYTES == 256);

/// A packet's content: what the sender says. Fixed-size fields only: building, sealing and
/// verifying one never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub cluster_uuid: uuid::Uuid,
    /// The sender's slot on the heartbeat disk.
    pub sender_slot: u32,
    /// The sender's record generation on the disk (bumped each time it acquires its slot).
    pub generation: u64,
    /// Strictly increasing within a generation; may restart (at any value) in a new generation.
    pub sequence: u64,
    /// The sender's monotonic clock when it sealed the packet. Informational: never compared
    /// across hosts, never used for liveness.
    pub send_monotonic_ms: u64,
    /// Age of the sender's last good disk cycle; [`DISK_AGE_NEVER`] if it never had one.
    pub disk_age_ms: u64,
    /// [`flags`] bits.
    pub flags: u32,
    /// The slots the sender hears on the network (same layout as the record's `net_view`).
    pub net_view: NetView,
    /// The slot this packet is addressed to (protocol 1.1): a receiver drops packets for another
    /// slot (`WrongDestination`), so a packet captured on its way to one host means nothing to
    /// another. Packets of protocol 1.0 carry 0 here.
    pub dest_slot: u32,
    /// The `send_monotonic_ms` of the newest packet the sender accepted from `dest_slot`, 0 if
    /// none (protocol 1.1). Proves to the receiver that this packet was sent after the receiver's
    /// own packet left: freshness measured on the receiver's clock alone, whatever the network
    /// delay (docs/SAFETY.md, "Whole-LUN loss").
    pub echo_ms: u64,
}

/// A packet that passed [`Packet::verify`]: only `verify` makes one. Its replay check is still
/// to do ([`super::ReplayGuard::accept_packet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedPacket {
    packet: Packet,
    key_id: u32,
    version_minor: u16,
}

impl VerifiedPacket {
    pub fn packet(&self) -> &Packet {
        &self.packet
    }
    pub fn into_packet(self) -> Packet {
        self.packet
    }
    /// The id of the key whose MAC matched: tells when every peer has moved to a new key.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
    /// The sender's protocol minor version.
    pub fn version_minor(&self) -> u16 {
        self.version_minor
    }
}

/// A packet that cannot be sealed: the caller's bug, reported rather than panicking (a panic in
/// the daemon fences the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sender slot {0} out of range (max {MAX_SLOTS})")]
    BadSlot(u32),
    #[error("flags {0:#x} has bits protocol {VERSION_MAJOR}.{VERSION_MINOR} does not define")]
    UnknownFlags(u32),
}

/// Whether this build knows every field of protocol minor `minor`, so that the packet's undefined
/// flag bits and reserved bytes must be zero.
fn known_minor(minor: u16) -> bool {
    minor <= VERSION_MINOR
}

/// Whether a packet of protocol minor `minor` may carry a non-zero `dest_slot` or `echo_ms`
/// (protocol 1.1): in a 1.0 packet bytes 328..344 are reserved.
fn destination_known(minor: u16) -> bool {
    minor >= 1
}

/// Keyed BLAKE3 of `covered` (the packet's bytes 0..480).
fn mac(key: &ClusterKey, covered: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(key.bytes(), covered)
}

impl Packet {
    /// Whether the sender says it lost the disk.
    pub fn disk_lost(&self) -> bool {
        self.flags & flags::DISK_LOST != 0
    }

    /// `disk_age_ms`, `None` for [`DISK_AGE_NEVER`].
    pub fn disk_age(&self) -> Option<u64> {
        (self.disk_age_ms != DISK_AGE_NEVER).then_some(self.disk_age_ms)
    }

    /// Encodes the packet into `out` (every byte: reserved bytes zero) and signs it with the
    /// keyring's current key. No allocation.
    pub fn seal(&self, keyring: &Keyring, out: &mut [u8; PACKET_SIZE]) -> Result<(), SealError> {
        if self.sender_slot >= MAX_SLOTS {
            return Err(SealError::BadSlot(self.sender_slot));
        }
        if self.dest_slot >= MAX_SLOTS {
            return Err(SealError::BadSlot(self.dest_slot));
        }
        if self.flags & !flags::KNOWN != 0 {
            return Err(SealError::UnknownFlags(self.flags));
        }
        let key = keyring.current();
        let raw = PacketRaw {
            magic: MAGIC,
            version_major: U16::new(VERSION_MAJOR),
            version_minor: U16::new(VERSION_MINOR),
            key_id: U32::new(key.id()),
            cluster_uuid: self.cluster_uuid.into_bytes(),
            sender_slot: U32::new(self.sender_slot),
            flags: U32::new(self.flags),
            generation: U64::new(self.generation),
            sequence: U64::new(self.sequence),
            send_monotonic_ms: U64::new(self.send_monotonic_ms),
            disk_age_ms: U64::new(self.disk_age_ms),
            net_view: self.net_view.0,
            dest_slot: U32::new(self.dest_slot),
            reserved_pad: [0; 4],
            echo_ms: U64::new(self.echo_ms),
            reserved: [0; 136],
            mac: [0; MAC_LEN],
        };
        out.copy_from_slice(raw.as_bytes());
        let tag = mac(key, &out[..MAC_OFFSET]);
        out[MAC_OFFSET..].copy_from_slice(tag.as_bytes());
        Ok(())
    }

    /// Verifies and decodes a received datagram of any length. Never panics. Checks, in this
    /// order, the first failure wins (docs/PROTOCOL.md §4):
    ///
    /// 1. length is [`PACKET_SIZE`] → `WrongSize`
    /// 2. magic → `BadMagic`
    /// 3. major version is [`VERSION_MAJOR`] (any minor) → `UnsupportedVersion`
    /// 4. cluster UUID is `cluster_uuid` → `WrongCluster`
    /// 5. key id is in `keyring` → `UnknownKey`
    /// 6. MAC over bytes 0..480 under that key, compared in constant time → `BadMac`
    /// 7. if the packet's minor ≤ ours: undefined flag bits and reserved bytes zero (in a 1.0
    ///    packet `dest_slot` and `echo_ms` too: bytes 328..344 were reserved) → `ReservedNotZero`
    /// 8. sender slot < `MAX_SLOTS` → `BadSlot`
    ///
    /// Checks 1-5 read unauthenticated bytes: they only decide how to drop, and are there so
    /// that cheap rejections (and the counters) say what arrived. Nothing after 6 trusts a byte
    /// the MAC did not cover.
    pub fn verify(
        bytes: &[u8],
        keyring: &Keyring,
        cluster_uuid: &uuid::Uuid,
    ) -> Result<VerifiedPacket, DropReason> {
        if bytes.len() != PACKET_SIZE {
            return Err(DropReason::WrongSize);
        }
        let raw = PacketRaw::ref_from_bytes(bytes).map_err(|_| DropReason::WrongSize)?;
        if raw.magic != MAGIC {
            return Err(DropReason::BadMagic);
        }
        if raw.version_major.get() != VERSION_MAJOR {
            return Err(DropReason::UnsupportedVersion);
        }
        if raw.cluster_uuid != *cluster_uuid.as_bytes() {
            return Err(DropReason::WrongCluster);
        }
        let key_id = raw.key_id.get();
        let key = keyring.get(key_id).ok_or(DropReason::UnknownKey)?;
        // `blake3::Hash`'s `==` is constant-time.
        if mac(key, &bytes[..MAC_OFFSET]) != blake3::Hash::from_bytes(raw.mac) {
            return Err(DropReason::BadMac);
        }
        let version_minor = raw.version_minor.get();
        if known_minor(version_minor)
            && (raw.flags.get() & !flags::KNOWN != 0
                || !all_zero(&raw.reserved)
                || raw.reserved_pad != [0; 4]
                || (!destination_known(version_minor)
                    && (raw.dest_slot.get() != 0 || raw.echo_ms.get() != 0)))
        {
            return Err(DropReason::ReservedNotZero);
        }
        if raw.sender_slot.get() >= MAX_SLOTS {
            return Err(DropReason::BadSlot);
        }
        Ok(VerifiedPacket {
            packet: Packet {
                cluster_uuid: uuid::Uuid::from_bytes(raw.cluster_uuid),
                sender_slot: raw.sender_slot.get(),
                generation: raw.generation.get(),
                sequence: raw.sequence.get(),
                send_monotonic_ms: raw.send_monotonic_ms.get(),
                disk_age_ms: raw.disk_age_ms.get(),
                flags: raw.flags.get(),
                net_view: NetView(raw.net_view),
                dest_slot: raw.dest_slot.get(),
                echo_ms: raw.echo_ms.get(),
            },
            key_id,
            version_minor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);

    fn key(id: u32) -> ClusterKey {
        ClusterKey::new(id, [id as u8; 32])
    }

    fn sample() -> Packet {
        let mut net_view = NetView::EMPTY;
        for s in [0, 5, 2047] {
            net_view.set(s, true);
        }
        Packet {
            cluster_uuid: CLUSTER,
            sender_slot: 5,
            generation: 3,
            sequence: 42,
            send_monotonic_ms: 123_456_789,
            disk_age_ms: 1500,
            flags: 0,
            net_view,
            dest_slot: 7,
            echo_ms: 987_654,
        }
    }

    fn sealed(p: &Packet, ring: &Keyring) -> [u8; PACKET_SIZE] {
        let mut b = [0u8; PACKET_SIZE];
        p.seal(ring, &mut b).unwrap();
        b
    }

    /// Recomputes the MAC after a test edits the covered bytes: a packet a key holder wrote.
    fn remac(b: &mut [u8; PACKET_SIZE], key: &ClusterKey) {
        let tag = mac(key, &b[..MAC_OFFSET]);
        b[MAC_OFFSET..].copy_from_slice(tag.as_bytes());
    }

    #[test]
    fn round_trip() {
        let ring = Keyring::new(key(1));
        let mut p = sample();
        for (flags, age) in [(0, 1500), (flags::DISK_LOST, DISK_AGE_NEVER)] {
            p.flags = flags;
            p.disk_age_ms = age;
            let b = sealed(&p, &ring);
            let v = Packet::verify(&b, &ring, &CLUSTER).unwrap();
            assert_eq!(*v.packet(), p);
            assert_eq!((v.key_id(), v.version_minor()), (1, VERSION_MINOR));
            assert_eq!(v.packet().disk_lost(), flags != 0);
            assert_eq!(v.packet().disk_age(), (age != DISK_AGE_NEVER).then_some(age));
        }
    }

    #[test]
    fn seal_refuses_what_verify_would_drop() {
        let ring = Keyring::new(key(1));
        let mut b = [0u8; PACKET_SIZE];
        let p = Packet { sender_slot: MAX_SLOTS, ..sample() };
        assert_eq!(p.seal(&ring, &mut b), Err(SealError::BadSlot(MAX_SLOTS)));
        let p = Packet { dest_slot: MAX_SLOTS, ..sample() };
        assert_eq!(p.seal(&ring, &mut b), Err(SealError::BadSlot(MAX_SLOTS)));
        let p = Packet { flags: 2, ..sample() };
        assert_eq!(p.seal(&ring, &mut b), Err(SealError::UnknownFlags(2)));
        let p = Packet { sender_slot: MAX_SLOTS - 1, ..sample() };
        p.seal(&ring, &mut b).unwrap();
        assert_eq!(Packet::verify(&b, &ring, &CLUSTER).unwrap().packet().sender_slot, MAX_SLOTS - 1);
    }

    #[test]
    fn every_drop_reason() {
        let k = key(1);
        let ring = Keyring::new(k.clone());
        let good = sealed(&sample(), &ring);
        let verify = |b: &[u8]| Packet::verify(b, &ring, &CLUSTER).map(|_| ());
        assert_eq!(verify(&good), Ok(()));

        for len in [0, 1, MAC_OFFSET, PACKET_SIZE - 1, PACKET_SIZE + 1, 4096] {
            let mut v = good.to_vec();
            v.resize(len, 0);
            assert_eq!(verify(&v), Err(DropReason::WrongSize), "len {len}");
        }

        // Each edit is re-MACed with the right key: the check itself drops it, not the MAC.
        let edited = |off: usize, bytes: &[u8]| {
            let mut b = good;
            b[off..off + bytes.len()].copy_from_slice(bytes);
            remac(&mut b, &k);
            b
        };
        assert_eq!(verify(&edited(0, b"DBRECORD")), Err(DropReason::BadMagic));
        assert_eq!(verify(&edited(8, &2u16.to_le_bytes())), Err(DropReason::UnsupportedVersion));
        assert_eq!(verify(&edited(8, &0u16.to_le_bytes())), Err(DropReason::UnsupportedVersion));
        assert_eq!(verify(&edited(16, &[0; 16])), Err(DropReason::WrongCluster));
        assert_eq!(verify(&edited(12, &2u32.to_le_bytes())), Err(DropReason::UnknownKey));
        let mut forged = good;
        forged[40] ^= 1; // generation, MAC not recomputed
        assert_eq!(verify(&forged), Err(DropReason::BadMac));
        let mut tag_flip = good;
        tag_flip[PACKET_SIZE - 1] ^= 0x80;
        assert_eq!(verify(&tag_flip), Err(DropReason::BadMac));
        assert_eq!(verify(&edited(36, &2u32.to_le_bytes())), Err(DropReason::ReservedNotZero));
        assert_eq!(verify(&edited(36, &0x8000_0000u32.to_le_bytes())), Err(DropReason::ReservedNotZero));
        // 1.1's fields are not reserved (verify does not judge the destination: the receiving
        // core does), but the pad between them and the bytes after them are.
        assert_eq!(verify(&edited(328, &u32::MAX.to_le_bytes())), Ok(()));
        assert_eq!(verify(&edited(336, &u64::MAX.to_le_bytes())), Ok(()));
        assert_eq!(verify(&edited(332, &[1])), Err(DropReason::ReservedNotZero));
        assert_eq!(verify(&edited(335, &[0x80])), Err(DropReason::ReservedNotZero));
        assert_eq!(verify(&edited(344, &[1])), Err(DropReason::ReservedNotZero));
        assert_eq!(verify(&edited(479, &[0x80])), Err(DropReason::ReservedNotZero));
        assert_eq!(verify(&edited(32, &MAX_SLOTS.to_le_bytes())), Err(DropReason::BadSlot));
        assert_eq!(verify(&edited(32, &u32::MAX.to_le_bytes())), Err(DropReason::BadSlot));

        // A key that signs the right bytes but is not the receiver's: BadMac.
        let other = Keyring::new(ClusterKey::new(1, [0xEE; 32]));
        assert_eq!(verify(&sealed(&sample(), &other)), Err(DropReason::BadMac));
        assert_eq!(
            Packet::verify(&good, &ring, &uuid::Uuid::nil()).map(|_| ()),
            Err(DropReason::WrongCluster)
        );
    }

    #[test]
    fn first_failing_check_wins() {
        let k = key(1);
        let ring = Keyring::new(k.clone());
        let verify = |b: &[u8]| Packet::verify(b, &ring, &CLUSTER).map(|_| ());
        let mut b = sealed(&sample(), &ring);
        // Bad slot, reserved, MAC, key, cluster, version, magic: undo them from the front.
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        remac(&mut b, &k);
        assert_eq!(verify(&b), Err(DropReason::BadSlot));
        b[400] = 1;
        remac(&mut b, &k);
        assert_eq!(verify(&b), Err(DropReason::ReservedNotZero));
        b[500] ^= 1;
        assert_eq!(verify(&b), Err(DropReason::BadMac));
        b[12] = 9;
        assert_eq!(verify(&b), Err(DropReason::UnknownKey));
        b[20] ^= 1;
        assert_eq!(verify(&b), Err(DropReason::WrongCluster));
        b[9] = 1;
        assert_eq!(verify(&b), Err(DropReason::UnsupportedVersion));
        b[0] = b'X';
        assert_eq!(verify(&b), Err(DropReason::BadMagic));
        assert_eq!(verify(&b[..100]), Err(DropReason::WrongSize));
    }

    /// A 1.0 packet has no destination and no echo: bytes 328..344 are reserved in it.
    #[test]
    fn minor_0_packet_has_no_destination() {
        let k = key(1);
        let ring = Keyring::new(k.clone());
        let verify = |b: &[u8]| Packet::verify(b, &ring, &CLUSTER);
        let as_minor_0 = |p: &Packet| {
            let mut b = sealed(p, &ring);
            b[10..12].copy_from_slice(&0u16.to_le_bytes());
            remac(&mut b, &k);
            b
        };
        let v = verify(&as_minor_0(&Packet { dest_slot: 0, echo_ms: 0, ..sample() })).unwrap();
        assert_eq!((v.version_minor(), v.packet().dest_slot, v.packet().echo_ms), (0, 0, 0));
        for p in [
            Packet { dest_slot: 7, echo_ms: 0, ..sample() },
            Packet { dest_slot: 0, echo_ms: 1, ..sample() },
            Packet { dest_slot: 0, echo_ms: 1 << 63, ..sample() },
            sample(),
        ] {
            assert_eq!(verify(&as_minor_0(&p)).map(|_| ()), Err(DropReason::ReservedNotZero), "{p:?}");
        }
        // The same packets as 1.1 carry them.
        let v = verify(&sealed(&sample(), &ring)).unwrap();
        assert_eq!((v.version_minor(), v.packet().dest_slot, v.packet().echo_ms), (1, 7, 987_654));
    }

    #[test]
    fn newer_minor_may_use_reserved_bytes_and_flags() {
        let k = key(1);
        let ring = Keyring::new(k.clone());
        let mut b = sealed(&sample(), &ring);
        b[10..12].copy_from_slice(&(VERSION_MINOR + 1).to_le_bytes());
        b[36..40].copy_from_slice(&(flags::DISK_LOST | 0x10).to_le_bytes());
        b[332..336].copy_from_slice(b"pad!");
        b[344..348].copy_from_slice(b"new!");
        b[479] = 0xFF;
        remac(&mut b, &k);
        let v = Packet::verify(&b, &ring, &CLUSTER).unwrap();
        assert_eq!(v.version_minor(), VERSION_MINOR + 1);
        assert_eq!(v.packet().flags, flags::DISK_LOST | 0x10, "passed through undecoded");
        assert!(v.packet().disk_lost());
        assert_eq!((v.packet().dest_slot, v.packet().echo_ms), (7, 987_654), "1.1 fields still read");
        // Slot range is checked whatever the minor.
        b[32..36].copy_from_slice(&MAX_SLOTS.to_le_bytes());
        remac(&mut b, &k);
        assert_eq!(Packet::verify(&b, &ring, &CLUSTER).map(|_| ()), Err(DropReason::BadSlot));
    }

    #[test]
    fn key_rotation() {
        let mut ring = Keyring::new(key(1));
        let old = sealed(&sample(), &ring);
        ring.rotate(key(2)).unwrap();
        // Signed by the previous key: verifies while it is in the ring.
        let v = Packet::verify(&old, &ring, &CLUSTER).unwrap();
        assert_eq!(v.key_id(), 1);
        // New packets are signed with the current key, which a ring still on key 1 does not know.
        let new = sealed(&sample(), &ring);
        assert_eq!(u32::from_le_bytes(new[12..16].try_into().unwrap()), 2);
        assert_eq!(Packet::verify(&new, &ring, &CLUSTER).unwrap().key_id(), 2);
        let lagging = Keyring::new(key(1));
        assert_eq!(Packet::verify(&new, &lagging, &CLUSTER).map(|_| ()), Err(DropReason::UnknownKey));
        // A ring mid-rotation on the other side (1 current, 2 previous) verifies both, too.
        let other_side = Keyring::with_previous(key(1), key(2)).unwrap();
        assert!(Packet::verify(&new, &other_side, &CLUSTER).is_ok());
        assert!(Packet::verify(&old, &other_side, &CLUSTER).is_ok());
        // Once the previous key is retired, its packets are dropped.
        ring.retire_previous();
        assert_eq!(Packet::verify(&old, &ring, &CLUSTER).map(|_| ()), Err(DropReason::UnknownKey));
        assert!(Packet::verify(&new, &ring, &CLUSTER).is_ok());
        // Same id, other bytes (a botched rotation): the MAC catches it.
        let impostor = Keyring::new(ClusterKey::new(2, [0x55; 32]));
        assert_eq!(Packet::verify(&new, &impostor, &CLUSTER).map(|_| ()), Err(DropReason::BadMac));
    }

    #[test]
    fn sealed_bytes_sit_at_the_documented_offsets() {
        let ring = Keyring::new(key(7));
        let p = Packet { flags: flags::DISK_LOST, ..sample() };
        let b = sealed(&p, &ring);
        assert_eq!(&b[0..8], b"DBNETHBT");
        assert_eq!(&b[8..12], &[1, 0, 1, 0], "protocol 1.1");
        assert_eq!(&b[12..16], &[7, 0, 0, 0]);
        assert_eq!(&b[16..32], CLUSTER.as_bytes());
        assert_eq!(&b[32..36], &5u32.to_le_bytes());
        assert_eq!(&b[36..40], &1u32.to_le_bytes());
        assert_eq!(&b[40..48], &3u64.to_le_bytes());
        assert_eq!(&b[48..56], &42u64.to_le_bytes());
        assert_eq!(&b[56..64], &123_456_789u64.to_le_bytes());
        assert_eq!(&b[64..72], &1500u64.to_le_bytes());
        assert_eq!((b[72], b[72 + 255]), (0x21, 0x80));
        assert!(b[73..72 + 255].iter().all(|&x| x == 0));
        assert_eq!(&b[328..332], &7u32.to_le_bytes(), "dest_slot");
        assert!(all_zero(&b[332..336]), "reserved_pad");
        assert_eq!(&b[336..344], &987_654u64.to_le_bytes(), "echo_ms");
        assert!(all_zero(&b[344..480]));
        assert_eq!(&b[480..], blake3::keyed_hash(&[7; 32], &b[..480]).as_bytes());
    }
}
