//! Where every region lives on the device. Computed from the format parameters alone, so the
//! superblock's region table can be cross-checked against it.

use super::{ALIGN, MAX_SLOTS, STRUCT_SIZE};

/// Size of the superblock region (one aligned block; the superblock itself is the first 512 bytes).
pub const SUPERBLOCK_REGION_SIZE: u64 = ALIGN;
/// Size of the probe area: blocks `diskbeat probe` may write on a formatted device; nothing else does.
pub const PROBE_REGION_SIZE: u64 = 16 * ALIGN;
/// Default size of each host's data extent: 2 MiB, two copies of 1 MiB (format 1.5; 64 KiB before).
/// docs/FORMAT.md §7, "Sizing the data extent": room for about 200 VMs with 4.5 KiB definitions.
pub const DEFAULT_EXTENT_SIZE: u64 = 2 * 1024 * 1024;
/// Largest per-host data extent.
pub const MAX_EXTENT_SIZE: u64 = 64 * 1024 * 1024;

/// A byte range of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Region {
    pub offset: u64,
    pub size: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// The parameters a layout is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Logical sector size the device was formatted for: 512 or 4096.
    pub sector_size: u32,
    /// Stride of the record and mailbox tables: a power of two, >= sector size, <= 4096... 65536.
    pub slot_size: u32,
    pub slot_count: u32,
    /// Size of each host's data extent: a multiple of 4096.
    pub extent_size: u64,
}

/// The computed layout. Invariants (checked by `new`): every region is aligned to `ALIGN`,
/// regions do not overlap and appear in the order superblock, probe, records, mailboxes, extents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    pub sector_size: u32,
    pub slot_size: u32,
    pub slot_count: u32,
    pub extent_size: u64,
    pub superblock: Region,
    pub probe: Region,
    pub records: Region,
    pub mailboxes: Region,
    pub extents: Region,
}

/// Parameters that cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("sector size {0} is not supported: use a device with 512- or 4096-byte logical sectors")]
    SectorSize(u32),
    #[error(
        "slot size {slot_size} is invalid: it must be a power of two, at least the sector size \
         ({sector_size}) and at most 65536"
    )]
    SlotSize { slot_size: u32, sector_size: u32 },
    #[error("slot count {0} is out of range: use 1 to {MAX_SLOTS}")]
    SlotCount(u32),
    #[error("data extent size {0} is invalid: it must be a multiple of 4096 between 8192 and 64 MiB")]
    ExtentSize(u64),
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    pub fn new(p: Params) -> Result<Layout, LayoutError> {
        if p.sector_size != 512 && p.sector_size != 4096 {
            return Err(LayoutError::SectorSize(p.sector_size));
        }
        if !p.slot_size.is_power_of_two() || p.slot_size < p.sector_size || p.slot_size > 65536 {
            return Err(LayoutError::SlotSize { slot_size: p.slot_size, sector_size: p.sector_size });
        }
        if p.slot_count == 0 || p.slot_count > MAX_SLOTS {
            return Err(LayoutError::SlotCount(p.slot_count));
        }
        if p.extent_size < 2 * ALIGN || p.extent_size % ALIGN != 0 || p.extent_size > MAX_EXTENT_SIZE {
            return Err(LayoutError::ExtentSize(p.extent_size));
        }
        let superblock = Region { offset: 0, size: SUPERBLOCK_REGION_SIZE };
        let probe = Region { offset: superblock.end(), size: PROBE_REGION_SIZE };
        let table_size = align_up(u64::from(p.slot_count) * u64::from(p.slot_size));
        let records = Region { offset: probe.end(), size: table_size };
        let mailboxes = Region { offset: records.end(), size: table_size };
        let extents = Region { offset: mailboxes.end(), size: u64::from(p.slot_count) * p.extent_size };
        let layout = Layout {
            sector_size: p.sector_size,
            slot_size: p.slot_size,
            slot_count: p.slot_count,
            extent_size: p.extent_size,
            superblock,
            probe,
            records,
            mailboxes,
            extents,
        };
        layout.assert_invariants();
        Ok(layout)
    }

    pub fn params(&self) -> Params {
        Params {
            sector_size: self.sector_size,
            slot_size: self.slot_size,
            slot_count: self.slot_count,
            extent_size: self.extent_size,
        }
    }

    fn assert_invariants(&self) {
        let regions = [self.superblock, self.probe, self.records, self.mailboxes, self.extents];
        for pair in regions.windows(2) {
            assert!(pair[0].end() <= pair[1].offset, "regions overlap: {pair:?}");
        }
        for r in regions {
            assert_eq!(r.offset % ALIGN, 0, "unaligned region {r:?}");
            assert_eq!(r.size % ALIGN, 0, "unaligned region size {r:?}");
        }
        assert!(self.slot_size as usize >= STRUCT_SIZE);
    }

    /// Bytes the layout needs: the device must be at least this large.
    pub fn total_size(&self) -> u64 {
        self.extents.end()
    }

    /// Device offset of slot `slot`'s record.
    pub fn record_offset(&self, slot: u32) -> u64 {
        assert!(slot < self.slot_count, "slot {slot} out of range");
        self.records.offset + u64::from(slot) * u64::from(self.slot_size)
    }

    /// Device offset of slot `slot`'s mailbox sector.
    pub fn mailbox_offset(&self, slot: u32) -> u64 {
        assert!(slot < self.slot_count, "slot {slot} out of range");
        self.mailboxes.offset + u64::from(slot) * u64::from(self.slot_size)
    }

    /// Device offset of slot `slot`'s data extent.
    pub fn extent_offset(&self, slot: u32) -> u64 {
        assert!(slot < self.slot_count, "slot {slot} out of range");
        self.extents.offset + u64::from(slot) * self.extent_size
    }

    /// Bytes of the record table that hold records (the region may be padded beyond it).
    pub fn record_table_len(&self) -> usize {
        self.slot_count as usize * self.slot_size as usize
    }

    /// The most slots a device of `device_size` bytes holds with these other parameters.
    pub fn max_slots_for(device_size: u64, p: Params) -> u32 {
        // Monotone in slot count, so a binary search over 1..=MAX_SLOTS is exact.
        let fits = |n: u32| {
            Layout::new(Params { slot_count: n, ..p }).map(|l| l.total_size() <= device_size).unwrap_or(false)
        };
        let (mut lo, mut hi) = (0u32, MAX_SLOTS);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sector: u32, slot: u32, n: u32) -> Params {
        Params { sector_size: sector, slot_size: slot, slot_count: n, extent_size: DEFAULT_EXTENT_SIZE }
    }

    #[test]
    fn layout_2048_slots_4k() {
        let l = Layout::new(p(4096, 4096, 2048)).unwrap();
        assert_eq!(l.probe.offset, 4096);
        assert_eq!(l.records.offset, 4096 + 65536);
        assert_eq!(l.records.size, 8 << 20);
        assert_eq!(l.mailboxes.offset, l.records.end());
        assert_eq!(l.record_offset(2047), l.records.offset + 2047 * 4096);
        assert_eq!(l.total_size(), 4096 + 65536 + 2 * (8 << 20) + 2048 * (2 << 20));
    }

    #[test]
    fn table_padding_keeps_alignment() {
        let l = Layout::new(p(512, 512, 3)).unwrap();
        assert_eq!(l.records.size, 4096);
        assert_eq!(l.record_table_len(), 1536);
    }

    #[test]
    fn rejects_bad_params() {
        assert_eq!(Layout::new(p(1024, 1024, 1)), Err(LayoutError::SectorSize(1024)));
        assert!(matches!(Layout::new(p(4096, 512, 1)), Err(LayoutError::SlotSize { .. })));
        assert!(matches!(Layout::new(p(512, 768, 1)), Err(LayoutError::SlotSize { .. })));
        assert_eq!(Layout::new(p(512, 512, 0)), Err(LayoutError::SlotCount(0)));
        assert_eq!(Layout::new(p(512, 512, 2049)), Err(LayoutError::SlotCount(2049)));
        let mut q = p(512, 512, 1);
        q.extent_size = 1000;
        assert_eq!(Layout::new(q), Err(LayoutError::ExtentSize(1000)));
    }

    #[test]
    fn max_slots_is_exact() {
        let base = p(512, 512, 1);
        for n in [1u32, 2, 7, 64, 2048] {
            let size = Layout::new(Params { slot_count: n, ..base }).unwrap().total_size();
            assert_eq!(Layout::max_slots_for(size, base), n);
            if n > 1 {
                assert_eq!(Layout::max_slots_for(size - 1, base), n - 1);
            }
        }
        assert_eq!(Layout::max_slots_for(4096, base), 0);
    }
}
