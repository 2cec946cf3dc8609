//! The superblock: first 512 bytes of the device. Written last by mkfs (the commit record).

use super::layout::{Layout, LayoutError, Params, Region};
use super::{decode_name, encode_name, validate, Corruption, Header, NameError, OnDisk, NAME_LEN};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: [u8; 8] = *b"DISKBEAT";

/// On-disk mirror of the superblock (docs/FORMAT.md, "Superblock").
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SuperblockRaw {
    pub header: Header,               // 0..32
    pub cluster_name: [u8; NAME_LEN], // 32..96
    pub sector_size: U32,             // 96
    pub slot_size: U32,               // 100
    pub slot_count: U32,              // 104
    pub base_timeout_ms: U32,         // 108
    pub extent_size: U64,             // 112
    pub probe_offset: U64,            // 120
    pub probe_size: U64,              // 128
    pub records_offset: U64,          // 136
    pub records_size: U64,            // 144
    pub mailboxes_offset: U64,        // 152
    pub mailboxes_size: U64,          // 160
    pub extents_offset: U64,          // 168
    pub extents_size: U64,            // 176
    pub device_size: U64,             // 184
    pub format_time_unix_s: U64,      // 192
    pub reserved: [u8; 312],          // 200..512
}
const _: () = assert!(core::mem::size_of::<SuperblockRaw>() == super::STRUCT_SIZE);

impl OnDisk for SuperblockRaw {
    const MAGIC: [u8; 8] = MAGIC;
    fn header(&self) -> &Header {
        &self.header
    }
}

/// A validated superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub cluster_uuid: uuid::Uuid,
    pub cluster_name: String,
    pub version_minor: u16,
    pub layout: Layout,
    /// The base timeout T the cluster was formatted with; every other timeout derives from it.
    pub base_timeout_ms: u32,
    /// Device size in bytes when formatted (informational: a grown LUN is fine).
    pub device_size: u64,
    /// Wall-clock time of formatting (informational only; never used for liveness).
    pub format_time_unix_s: u64,
}

/// Why a superblock cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("{0}")]
    Corrupt(#[from] Corruption),
    #[error("superblock describes an impossible layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("superblock region table does not match its parameters ({0})")]
    RegionTable(&'static str),
    #[error("superblock cluster name is not valid UTF-8")]
    ClusterName,
    #[error("invalid cluster name: {0}")]
    Name(#[from] NameError),
}

impl Superblock {
    /// Encodes into the first 512 bytes of `out` (the rest of the block is left to the caller).
    pub fn encode(&self, out: &mut [u8]) -> Result<(), SuperblockError> {
        let l = &self.layout;
        let raw = SuperblockRaw {
            header: Header::new(MAGIC, self.cluster_uuid),
            cluster_name: encode_name(&self.cluster_name)?,
            sector_size: U32::new(l.sector_size),
            slot_size: U32::new(l.slot_size),
            slot_count: U32::new(l.slot_count),
            base_timeout_ms: U32::new(self.base_timeout_ms),
            extent_size: U64::new(l.extent_size),
            probe_offset: U64::new(l.probe.offset),
            probe_size: U64::new(l.probe.size),
            records_offset: U64::new(l.records.offset),
            records_size: U64::new(l.records.size),
            mailboxes_offset: U64::new(l.mailboxes.offset),
            mailboxes_size: U64::new(l.mailboxes.size),
            extents_offset: U64::new(l.extents.offset),
            extents_size: U64::new(l.extents.size),
            device_size: U64::new(self.device_size),
            format_time_unix_s: U64::new(self.format_time_unix_s),
            reserved: [0; 312],
        };
        super::seal(&raw, out);
        debug_assert_eq!(Superblock::decode(out).as_ref(), Ok(self));
        Ok(())
    }

    /// Validates and decodes the first 512 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let raw: &SuperblockRaw = validate(bytes, None)?;
        let minor = raw.header.version_minor.get();
        if super::known_minor(minor) && !super::all_zero(&raw.reserved) {
            return Err(Corruption::ReservedNotZero.into());
        }
        let layout = Layout::new(Params {
            sector_size: raw.sector_size.get(),
            slot_size: raw.slot_size.get(),
            slot_count: raw.slot_count.get(),
            extent_size: raw.extent_size.get(),
        })?;
        let table = [
            ("probe", layout.probe, raw.probe_offset, raw.probe_size),
            ("records", layout.records, raw.records_offset, raw.records_size),
            ("mailboxes", layout.mailboxes, raw.mailboxes_offset, raw.mailboxes_size),
            ("extents", layout.extents, raw.extents_offset, raw.extents_size),
        ];
        for (name, want, off, size) in table {
            if want != (Region { offset: off.get(), size: size.get() }) {
                return Err(SuperblockError::RegionTable(name));
            }
        }
        if crate::timing::Timing::from_base(raw.base_timeout_ms.get()).is_err() {
            return Err(Corruption::BadField("base_timeout_ms").into());
        }
        let cluster_name = decode_name(&raw.cluster_name).ok_or(SuperblockError::ClusterName)?.to_owned();
        if cluster_name.is_empty() {
            return Err(SuperblockError::ClusterName);
        }
        Ok(Superblock {
            cluster_uuid: uuid::Uuid::from_bytes(raw.header.cluster_uuid),
            cluster_name,
            version_minor: minor,
            layout,
            base_timeout_ms: raw.base_timeout_ms.get(),
            device_size: raw.device_size.get(),
            format_time_unix_s: raw.format_time_unix_s.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::DEFAULT_EXTENT_SIZE;

    pub(crate) fn sample() -> Superblock {
        Superblock {
            cluster_uuid: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            cluster_name: "pool-a".into(),
            // `encode` always writes `VERSION_MINOR` (1 since format 1.1); the value here must match
            // for the round trip (and encode's debug assertion) to hold.
            version_minor: crate::format::VERSION_MINOR,
            layout: Layout::new(Params {
                sector_size: 512,
                slot_size: 512,
                slot_count: 64,
                extent_size: DEFAULT_EXTENT_SIZE,
            })
            .unwrap(),
            base_timeout_ms: 40_000,
            device_size: 64 << 20,
            format_time_unix_s: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let sb = sample();
        let mut buf = [0u8; 512];
        sb.encode(&mut buf).unwrap();
        assert_eq!(&buf[4..12], b"DISKBEAT");
        assert_eq!(Superblock::decode(&buf).unwrap(), sb);
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = [0u8; 512];
        sample().encode(&mut buf).unwrap();
        for bit in 0..512 * 8 {
            let mut b = buf;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Superblock::decode(&b).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn zeroed_and_foreign() {
        assert_eq!(Superblock::decode(&[0u8; 512]), Err(Corruption::Zeroed.into()));
        let mut b = [0u8; 512];
        b[0] = 0xEB; // looks like a boot sector
        assert_eq!(Superblock::decode(&b), Err(Corruption::BadMagic.into()));
    }
}
