//! Per-host data extents: owner-written, checksummed, generation-numbered. Reserved in v1 for the
//! VMs each host runs and the coordinator's restart plan; mkfs writes an empty header in each.
//!
//! An extent is a 4096-byte header block (the header is its first 512 bytes) followed by the
//! payload. Writers write the payload first and the header last; readers trust a payload only when
//! its length and crc32c match the header.

use super::{validate, Corruption, Header, OnDisk, ALIGN};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: [u8; 8] = *b"DBEXTENT";
/// Offset of the payload inside an extent.
pub const PAYLOAD_OFFSET: u64 = ALIGN;

/// On-disk mirror of an extent header (docs/FORMAT.md, "Data extent").
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExtentRaw {
    pub header: Header,      // 0..32
    pub slot: U32,           // 32
    pub kind: U16,           // 36
    pub flags: U16,          // 38
    pub generation: U64,     // 40
    pub sequence: U64,       // 48
    pub payload_len: U64,    // 56
    pub payload_crc32c: U32, // 64
    pub reserved: [u8; 444], // 68..512
}
const _: () = assert!(core::mem::size_of::<ExtentRaw>() == super::STRUCT_SIZE);

impl OnDisk for ExtentRaw {
    const MAGIC: [u8; 8] = MAGIC;
    fn header(&self) -> &Header {
        &self.header
    }
}

/// A typed extent header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub cluster_uuid: uuid::Uuid,
    pub slot: u32,
    /// Payload kind: 0 = empty; other values are defined by later minor versions.
    pub kind: u16,
    pub generation: u64,
    pub sequence: u64,
    pub payload_len: u64,
    pub payload_crc32c: u32,
}

impl Extent {
    pub fn empty(cluster_uuid: uuid::Uuid, slot: u32) -> Extent {
        Extent { cluster_uuid, slot, kind: 0, generation: 0, sequence: 0, payload_len: 0, payload_crc32c: 0 }
    }

    pub fn encode(&self, out: &mut [u8]) {
        let raw = ExtentRaw {
            header: Header::new(MAGIC, self.cluster_uuid),
            slot: U32::new(self.slot),
            kind: U16::new(self.kind),
            flags: U16::new(0),
            generation: U64::new(self.generation),
            sequence: U64::new(self.sequence),
            payload_len: U64::new(self.payload_len),
            payload_crc32c: U32::new(self.payload_crc32c),
            reserved: [0; 444],
        };
        super::seal(&raw, out);
    }

    /// Validates and decodes the header of `slot`'s extent, whose size is `extent_size`.
    pub fn decode(
        bytes: &[u8],
        cluster: &uuid::Uuid,
        slot: u32,
        extent_size: u64,
    ) -> Result<Extent, Corruption> {
        let raw: &ExtentRaw = validate(bytes, Some(cluster))?;
        if raw.slot.get() != slot {
            return Err(Corruption::WrongSlot { expected: slot, found: raw.slot.get() });
        }
        if raw.payload_len.get() > extent_size.saturating_sub(PAYLOAD_OFFSET) {
            return Err(Corruption::BadField("payload_len"));
        }
        if super::known_minor(raw.header.version_minor.get())
            && (raw.flags.get() != 0 || !super::all_zero(&raw.reserved))
        {
            return Err(Corruption::ReservedNotZero);
        }
        Ok(Extent {
            cluster_uuid: *cluster,
            slot,
            kind: raw.kind.get(),
            generation: raw.generation.get(),
            sequence: raw.sequence.get(),
            payload_len: raw.payload_len.get(),
            payload_crc32c: raw.payload_crc32c.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = uuid::Uuid::from_u128(9);
        let mut e = Extent::empty(c, 3);
        e.payload_len = 100;
        e.payload_crc32c = 0x1234;
        let mut buf = [0u8; 512];
        e.encode(&mut buf);
        assert_eq!(Extent::decode(&buf, &c, 3, 65536), Ok(e));
        assert_eq!(Extent::decode(&buf, &c, 3, 4096), Err(Corruption::BadField("payload_len")));
    }
}
