//! Network heartbeat packets. `docs/PROTOCOL.md` is the normative spec; this module mirrors it.
//!
//! Pure code (no sockets, no threads, no clock) but for [`key::Keyring::from_key_file`], which
//! reads a key file. The pieces a receiver chains, per datagram:
//!
//! 1. [`Packet::verify`]: size, magic, version, cluster, key id, MAC (keyed BLAKE3 under a
//!    [`Keyring`] key), reserved bytes and flags, slot range. Total: any byte string, of any
//!    length, gives a [`VerifiedPacket`] or a [`DropReason`], never a panic.
//! 2. [`ReplayGuard::accept`]: the packet's (generation, sequence) must be strictly above the
//!    highest one accepted from that slot, and its generation not below the one on the disk.
//! 3. [`DropCounters::record`] for every packet refused, by reason, for status output.
//!
//! A sender fills a [`Packet`] and [`Packet::seal`]s it into a `[u8; PACKET_SIZE]` under the
//! keyring's current key. Nothing on the per-packet path allocates.

pub mod key;
pub mod packet;
pub mod replay;

#[cfg(test)]
mod doc_tests;

pub use key::{ClusterKey, KeyError, Keyring};
pub use packet::{Packet, PacketRaw, SealError, VerifiedPacket, MAC_LEN, MAC_OFFSET, PACKET_SIZE};
pub use replay::ReplayGuard;

/// Protocol major version: receivers drop every other major (`UnsupportedVersion`).
/// Independent of the disk format's version (`format::VERSION_MAJOR`).
pub const VERSION_MAJOR: u16 = 1;
/// Protocol minor version: additive changes only (fields carved out of reserved bytes or flags).
pub const VERSION_MINOR: u16 = 1;

/// Why a received datagram was not used. [`DropReason::name`] is stable: it names the counter in status
/// output, so renaming one is a breaking change of that output.
///
/// The first eight come from [`Packet::verify`], in its check order; then two from
/// [`ReplayGuard::accept`]; the last from the receiving `core::Node` (destination check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("datagram is not {PACKET_SIZE} bytes long")]
    WrongSize,
    #[error("bad magic (not a diskbeat heartbeat packet)")]
    BadMagic,
    #[error("unsupported protocol major version (this build speaks {VERSION_MAJOR}.x)")]
    UnsupportedVersion,
    #[error("packet belongs to another cluster")]
    WrongCluster,
    #[error("signed with a key id that is not in the keyring")]
    UnknownKey,
    #[error("MAC mismatch (forged, corrupted, or signed with another key)")]
    BadMac,
    #[error("reserved bytes or undefined flag bits are not zero")]
    ReservedNotZero,
    #[error("sender slot out of range")]
    BadSlot,
    #[error("(generation, sequence) not above the highest accepted from this slot (replayed or reordered)")]
    Replay,
    #[error("generation older than one already seen for this slot (on the network or on the disk)")]
    StaleGeneration,
    #[error("addressed to another slot (a packet captured on its way to another host)")]
    WrongDestination,
}

impl DropReason {
    /// Number of reasons: the length of [`DropCounters`]' array.
    pub const COUNT: usize = 11;
    /// Every reason, in declaration order (verify's check order, then the replay guard's).
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::WrongSize,
        DropReason::BadMagic,
        DropReason::UnsupportedVersion,
        DropReason::WrongCluster,
        DropReason::UnknownKey,
        DropReason::BadMac,
        DropReason::ReservedNotZero,
        DropReason::BadSlot,
        DropReason::Replay,
        DropReason::StaleGeneration,
        DropReason::WrongDestination,
    ];

    /// Stable snake_case name (counter names in status output, docs/PROTOCOL.md §5).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::WrongSize => "wrong_size",
            DropReason::BadMagic => "bad_magic",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::UnknownKey => "unknown_key",
            DropReason::BadMac => "bad_mac",
            DropReason::ReservedNotZero => "reserved_not_zero",
            DropReason::BadSlot => "bad_slot",
            DropReason::Replay => "replay",
            DropReason::StaleGeneration => "stale_generation",
            DropReason::WrongDestination => "wrong_destination",
        }
    }

    /// Index into [`DropReason::ALL`] and [`DropCounters`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Packets dropped, per reason. A fixed array: recording never allocates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl DropCounters {
    pub const fn new() -> DropCounters {
        DropCounters { counts: [0; DropReason::COUNT] }
    }

    /// Counts one packet dropped for `reason` (saturating: a counter never wraps to zero).
    pub fn record(&mut self, reason: DropReason) {
        let c = &mut self.counts[reason.index()];
        *c = c.saturating_add(1);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()]
    }

    /// Every packet dropped, all reasons together (saturating).
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |acc, &c| acc.saturating_add(c))
    }

    /// (stable name, count) of every reason, zeros included, in [`DropReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL.iter().map(move |&d| (d.name(), self.get(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_names_are_stable_snake_case_and_indexed_in_order() {
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            let n = d.name();
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
            // The name is the variant's name in snake_case.
            let snake: String = format!("{d:?}")
                .chars()
                .enumerate()
                .flat_map(|(j, c)| {
                    let sep = (j > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter().chain(std::iter::once(c.to_ascii_lowercase()))
                })
                .collect();
            assert_eq!(n, snake);
        }
    }

    #[test]
    fn counters_count_per_reason() {
        let mut c = DropCounters::new();
        assert_eq!(c.total(), 0);
        c.record(DropReason::BadMac);
        c.record(DropReason::BadMac);
        c.record(DropReason::Replay);
        assert_eq!(c.get(DropReason::BadMac), 2);
        assert_eq!(c.get(DropReason::Replay), 1);
        assert_eq!(c.get(DropReason::WrongSize), 0);
        assert_eq!(c.total(), 3);
        let all: Vec<(&str, u64)> = c.iter().collect();
        assert_eq!(all.len(), DropReason::COUNT);
        assert_eq!(all[0], ("wrong_size", 0));
        assert_eq!(all[DropReason::BadMac.index()], ("bad_mac", 2));
        assert_eq!(all[DropReason::Replay.index()], ("replay", 1));
        c.counts[0] = u64::MAX;
        c.record(DropReason::WrongSize);
        assert_eq!(c.get(DropReason::WrongSize), u64::MAX);
        assert_eq!(c.total(), u64::MAX);
    }
}
