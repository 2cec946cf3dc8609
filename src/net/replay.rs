//! Replay protection (docs/PROTOCOL.md §7). Pure: the caller feeds it verified packets and the
//! generations it reads on the disk.

use super::packet::VerifiedPacket;
use super::DropReason;
use crate::format::MAX_SLOTS;

/// What the guard remembers of one sender slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SlotState {
    /// Highest (generation, sequence) accepted; `None` until the first packet.
    highest: Option<(u64, u64)>,
    /// Packets of a lower generation are stale: the disk shows the slot at this generation.
    min_generation: u64,
}

/// Per sender slot: the highest (generation, sequence) accepted, and the lowest generation
/// allowed. Accepts a packet only if its (generation, sequence) is strictly above the highest one,
/// lexicographically (a higher generation accepts any sequence), and its generation is not below
/// the minimum. Preallocated for `slot_count` slots: `accept` never allocates.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    slots: Box<[SlotState]>,
}

impl ReplayGuard {
    /// A guard for slots `0..slot_count` (the superblock's `slot_count`; at most `MAX_SLOTS`,
    /// larger values are clamped). Nothing accepted yet; minimum generation 0 everywhere.
    pub fn new(slot_count: u32) -> ReplayGuard {
        let n = slot_count.min(MAX_SLOTS) as usize;
        ReplayGuard { slots: vec![SlotState::default(); n].into_boxed_slice() }
    }

    /// Number of slots guarded.
    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Accepts (and remembers) a packet of `slot` at (`generation`, `sequence`), or says why not:
    ///
    /// * `BadSlot`: `slot` is not below this guard's slot count (the cluster has fewer slots than
    ///   the packet format allows);
    /// * `StaleGeneration`: `generation` is below the slot's minimum (the disk shows a newer
    ///   incarnation), or below the generation of a packet already accepted;
    /// * `Replay`: same generation as the highest accepted, sequence not above it (a duplicate,
    ///   a replay, or a packet reordered by the network).
    ///
    /// A refused packet changes nothing.
    pub fn accept(&mut self, slot: u32, generation: u64, sequence: u64) -> Result<(), DropReason> {
        let s = self.slots.get_mut(slot as usize).ok_or(DropReason::BadSlot)?;
        if generation < s.min_generation {
            return Err(DropReason::StaleGeneration);
        }
        if let Some((g, q)) = s.highest {
            if generation < g {
                return Err(DropReason::StaleGeneration);
            }
            if generation == g && sequence <= q {
                return Err(DropReason::Replay);
            }
        }
        s.highest = Some((generation, sequence));
        Ok(())
    }

    /// [`ReplayGuard::accept`] on a verified packet's sender slot, generation and sequence.
    pub fn accept_packet(&mut self, packet: &VerifiedPacket) -> Result<(), DropReason> {
        let p = packet.packet();
        self.accept(p.sender_slot, p.generation, p.sequence)
    }

    /// Fed from the disk: `slot`'s record shows `generation`, so packets of an older generation
    /// are from an incarnation that is gone and are refused (`StaleGeneration`). Only raises the
    /// minimum (generations on the disk only grow; an older read arriving late changes nothing).
    /// Out-of-range slots are ignored.
    pub fn raise_min_generation(&mut self, slot: u32, generation: u64) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.min_generation = s.min_generation.max(generation);
        }
    }

    /// The slot's minimum generation (0 for an out-of-range slot).
    pub fn min_generation(&self, slot: u32) -> u64 {
        self.slots.get(slot as usize).map_or(0, |s| s.min_generation)
    }

    /// The highest (generation, sequence) accepted from `slot`, if any.
    pub fn highest(&self, slot: u32) -> Option<(u64, u64)> {
        self.slots.get(slot as usize).and_then(|s| s.highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_packet_replayed_is_dropped() {
        let mut g = ReplayGuard::new(8);
        assert_eq!(g.accept(3, 1, 10), Ok(()));
        assert_eq!(g.accept(3, 1, 10), Err(DropReason::Replay));
        assert_eq!(g.accept(3, 1, 9), Err(DropReason::Replay), "reordered: older sequence");
        assert_eq!(g.accept(3, 1, 11), Ok(()));
        assert_eq!(g.accept(3, 1, 10), Err(DropReason::Replay));
        assert_eq!(g.highest(3), Some((1, 11)));
        // Other slots are independent.
        assert_eq!(g.accept(4, 1, 10), Ok(()));
        assert_eq!(g.highest(5), None);
    }

    #[test]
    fn a_higher_generation_resets_the_sequence_an_older_one_is_stale() {
        let mut g = ReplayGuard::new(8);
        g.accept(1, 5, 1000).unwrap();
        assert_eq!(g.accept(1, 6, 0), Ok(()), "restart: sequence starts over");
        assert_eq!(g.accept(1, 5, 1001), Err(DropReason::StaleGeneration));
        assert_eq!(g.accept(1, 5, u64::MAX), Err(DropReason::StaleGeneration));
        assert_eq!(g.accept(1, 6, 0), Err(DropReason::Replay));
        assert_eq!(g.accept(1, 6, 1), Ok(()));
        assert_eq!(g.highest(1), Some((6, 1)));
    }

    #[test]
    fn a_generation_below_the_disks_is_dropped() {
        let mut g = ReplayGuard::new(8);
        g.raise_min_generation(2, 7);
        assert_eq!(g.accept(2, 6, 1), Err(DropReason::StaleGeneration));
        assert_eq!(g.highest(2), None, "a refused packet changes nothing");
        assert_eq!(g.accept(2, 7, 1), Ok(()));
        // Accepted at generation 7; the disk then shows 8 (the sender restarted): 7 is now stale,
        // even with a higher sequence.
        g.raise_min_generation(2, 8);
        assert_eq!(g.accept(2, 7, 2), Err(DropReason::StaleGeneration));
        assert_eq!(g.accept(2, 8, 0), Ok(()));
        // The minimum never goes down (a late read of an older record).
        g.raise_min_generation(2, 3);
        assert_eq!(g.min_generation(2), 8);
    }

    #[test]
    fn slots_beyond_the_cluster_are_bad() {
        let mut g = ReplayGuard::new(4);
        assert_eq!(g.slot_count(), 4);
        assert_eq!(g.accept(4, 1, 1), Err(DropReason::BadSlot));
        assert_eq!(g.accept(u32::MAX, 1, 1), Err(DropReason::BadSlot));
        g.raise_min_generation(99, 5); // ignored
        assert_eq!(g.min_generation(99), 0);
        assert_eq!(ReplayGuard::new(u32::MAX).slot_count(), MAX_SLOTS);
    }
}
