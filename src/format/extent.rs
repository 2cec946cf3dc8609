//! Per-host data extents: owner-written, checksummed, sequence-numbered. mkfs writes an empty header
//! in each copy; format 1.2 defines payload kind 1, [`host_info`] (the owner's heartbeat addresses),
//! format 1.5 kind 2, [`crate::format::host_state`]. Since format 1.6 a header names its writer's
//! host uuid next to its generation: the incarnation whose record must name the same pair for a
//! reader to take the payload as that record's (docs/FORMAT.md §7, "Writer identity").
//!
//! A copy is a 4096-byte header block (the header is its first 512 bytes) followed by the payload.
//! On a device formatted by 1.5 or later an extent holds two copies ([`Geometry`]): writers write
//! the copy that does not hold the newest complete contents, payload first and header last;
//! readers take the newest copy whose payload matches its header's length and crc32c, the other
//! one when the newest is torn (`Disk::write_extent` / `Disk::read_extent`).

use super::{validate, Corruption, Header, OnDisk, ALIGN};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: [u8; 8] = *b"DBEXTENT";
/// Offset of the payload inside an extent.
pub const PAYLOAD_OFFSET: u64 = ALIGN;

/// Payload kinds (extent header `kind`; docs/FORMAT.md §7, "Payload kinds"). Additive: a kind, once
/// defined, keeps its meaning; new kinds come with new minor versions.
pub mod kind {
    /// No payload (mkfs's header; `payload_len` 0).
    pub const EMPTY: u16 = 0;
    /// Host info v1 (format 1.2): see [`super::host_info`].
    pub const HOST_INFO: u16 = 1;
    /// Host state (format 1.5): see [`crate::format::host_state`].
    pub const HOST_STATE: u16 = 2;
    /// The JSON / text name of a kind, `None` for kinds this version does not define.
    pub fn name(kind: u16) -> Option<&'static str> {
        match kind {
            EMPTY => Some("empty"),
            HOST_INFO => Some("host_info"),
            HOST_STATE => Some("host_state"),
            _ => None,
        }
    }
}

/// Superblock minor from which a device's extents hold two copies (mkfs 1.5 and later).
pub const DOUBLE_BUFFERED_SINCE_MINOR: u16 = 5;

/// Header minor from which the extent header carries `host_uuid` (bytes 68..84, format 1.6).
pub const HOST_UUID_SINCE_MINOR: u16 = 6;

/// One of the two copies of a double-buffered extent (docs/FORMAT.md §7, "Two copies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ExtentCopy {
    /// At extent offset 0 (the only copy of a device formatted before 1.5).
    A,
    /// At extent offset `copy_size` (= extent_size / 2 when extent_size is a multiple of 8192).
    B,
}

impl ExtentCopy {
    pub fn other(self) -> ExtentCopy {
        match self {
            ExtentCopy::A => ExtentCopy::B,
            ExtentCopy::B => ExtentCopy::A,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ExtentCopy::A => "a",
            ExtentCopy::B => "b",
        }
    }
}

/// Where the copies of every extent of a device lie: a property of the device, fixed by the mkfs
/// that formatted it (its superblock's minor), never of the header read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// 1 on a device formatted before 1.5, 2 since.
    pub copies: u8,
    /// Bytes of one copy: a 4096-byte header block and its payload area. `extent_size` for a single
    /// copy; `align_down(extent_size / 2, 4096)` for two.
    pub copy_size: u64,
}

impl Geometry {
    pub fn new(extent_size: u64, superblock_minor: u16) -> Geometry {
        if superblock_minor >= DOUBLE_BUFFERED_SINCE_MINOR {
            Geometry { copies: 2, copy_size: extent_size / 2 / ALIGN * ALIGN }
        } else {
            Geometry { copies: 1, copy_size: extent_size }
        }
    }

    /// The copies this device has, A first.
    pub fn all(&self) -> &'static [ExtentCopy] {
        if self.copies == 2 {
            &[ExtentCopy::A, ExtentCopy::B]
        } else {
            &[ExtentCopy::A]
        }
    }

    /// Offset of `copy`'s header block inside the extent.
    pub fn copy_offset(&self, copy: ExtentCopy) -> u64 {
        match copy {
            ExtentCopy::A => 0,
            ExtentCopy::B => {
                assert_eq!(self.copies, 2, "a single-copy extent has no copy B");
                self.copy_size
            }
        }
    }

    /// Largest `payload_len` a header may announce: the copy minus its header block.
    pub fn payload_capacity(&self) -> u64 {
        self.copy_size.saturating_sub(PAYLOAD_OFFSET)
    }
}

/// Whether `kind` is defined by format minor `minor` (0 only up to 1.1; 0 and 1 from 1.2 to 1.4;
/// 0, 1 and 2 since 1.5; 1.6 and 1.7 add none).
pub fn kind_defined(minor: u16, kind: u16) -> bool {
    match minor {
        0 | 1 => kind == kind::EMPTY,
        2..=4 => kind <= kind::HOST_INFO,
        _ => kind <= kind::HOST_STATE,
    }
}

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
    pub host_uuid: [u8; 16], // 68..84 (format 1.6)
    pub reserved: [u8; 428], // 84..512
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
    /// The header's format minor as read (`encode` always writes `VERSION_MINOR`). Payload
    /// decoders key their reserved-value checks on it, like every structure (§11).
    pub version_minor: u16,
    pub slot: u32,
    /// Payload kind ([`kind`]): 0 = empty, 1 = host info (1.2).
    pub kind: u16,
    /// The writer's record `generation` when it wrote this header.
    pub generation: u64,
    /// The writer's record `host_uuid` (format 1.6); nil in a header of minor < 6, which does not
    /// carry it (see [`Extent::writer_uuid`]), and in mkfs's empty headers.
    pub host_uuid: uuid::Uuid,
    pub sequence: u64,
    pub payload_len: u64,
    pub payload_crc32c: u32,
}

impl Extent {
    pub fn empty(cluster_uuid: uuid::Uuid, slot: u32) -> Extent {
        Extent {
            cluster_uuid,
            version_minor: super::VERSION_MINOR,
            slot,
            kind: kind::EMPTY,
            generation: 0,
            host_uuid: uuid::Uuid::nil(),
            sequence: 0,
            payload_len: 0,
            payload_crc32c: 0,
        }
    }

    /// Encodes into the first 512 bytes of `out`, as format `VERSION_MINOR`.
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
            host_uuid: self.host_uuid.into_bytes(),
            reserved: [0; 428],
        };
        super::seal(&raw, out);
    }

    /// The writer's host uuid as the header states it: `None` for a header of minor < 6, which
    /// names no host (its reader can only go by the generation).
    pub fn writer_uuid(&self) -> Option<uuid::Uuid> {
        (self.version_minor >= HOST_UUID_SINCE_MINOR).then_some(self.host_uuid)
    }

    /// Validates and decodes the header of one copy of `slot`'s extent, whose size is `copy_size`
    /// (`Geometry::copy_size`: the extent size on a single-copy device). Checks after the common
    /// ones: slot, `payload_len <= copy_size - 4096`, reserved (`flags`, `host_uuid` below minor
    /// 6, `reserved`), `kind` (the last two only for a minor this build knows).
    pub fn decode(
        bytes: &[u8],
        cluster: &uuid::Uuid,
        slot: u32,
        copy_size: u64,
    ) -> Result<Extent, Corruption> {
        let raw: &ExtentRaw = validate(bytes, Some(cluster))?;
        if raw.slot.get() != slot {
            return Err(Corruption::WrongSlot { expected: slot, found: raw.slot.get() });
        }
        if raw.payload_len.get() > copy_size.saturating_sub(PAYLOAD_OFFSET) {
            return Err(Corruption::BadField("payload_len"));
        }
        let minor = raw.header.version_minor.get();
        let uuid_reserved = minor < HOST_UUID_SINCE_MINOR && !super::all_zero(&raw.host_uuid);
        if super::known_minor(minor)
            && (raw.flags.get() != 0 || uuid_reserved || !super::all_zero(&raw.reserved))
        {
            return Err(Corruption::ReservedNotZero);
        }
        if super::known_minor(minor) && !kind_defined(minor, raw.kind.get()) {
            return Err(Corruption::BadField("kind"));
        }
        Ok(Extent {
            cluster_uuid: *cluster,
            version_minor: minor,
            slot,
            kind: raw.kind.get(),
            generation: raw.generation.get(),
            // Nil below minor 6: those bytes were reserved, checked zero above.
            host_uuid: uuid::Uuid::from_bytes(raw.host_uuid),
            sequence: raw.sequence.get(),
            payload_len: raw.payload_len.get(),
            payload_crc32c: raw.payload_crc32c.get(),
        })
    }
}

/// A payload read from an extent whose checksum matched, decoded by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Kind 0: nothing published (any payload bytes are ignored).
    Empty,
    /// Kind 1: the owner's heartbeat addresses.
    HostInfo(host_info::HostInfo),
    /// Kind 2 (1.5): the owner's heartbeat addresses, capacity, VMs and restart plan.
    HostState(super::host_state::HostState),
    /// A kind this version does not define (only accepted in a header of a newer minor): the
    /// reader MUST NOT interpret it.
    Unknown(u16),
}

impl Payload {
    /// Decodes `payload` (the `header.payload_len` bytes whose crc32c matched) by `header.kind`.
    /// Total: never panics, whatever the bytes.
    pub fn decode(header: &Extent, payload: &[u8]) -> Result<Payload, PayloadError> {
        match header.kind {
            kind::EMPTY => Ok(Payload::Empty),
            kind::HOST_INFO => {
                Ok(Payload::HostInfo(host_info::HostInfo::decode(payload, header.version_minor)?))
            }
            kind::HOST_STATE => {
                Ok(Payload::HostState(super::host_state::HostState::decode(payload, header.version_minor)?))
            }
            k => Ok(Payload::Unknown(k)),
        }
    }

    /// The heartbeat addresses a host info or host state payload carries, primary first.
    pub fn hb_addrs(&self) -> Option<&[std::net::SocketAddr]> {
        match self {
            Payload::HostInfo(h) => Some(h.addrs()),
            Payload::HostState(h) => Some(&h.hb_addrs),
            Payload::Empty | Payload::Unknown(_) => None,
        }
    }
}

/// Why a payload whose checksum matched does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("host info: {0}")]
    HostInfo(#[from] host_info::PayloadError),
    #[error("host state: {0}")]
    HostState(#[from] super::host_state::HostStateError),
}

/// Payload kind 1, "host info v1" (docs/FORMAT.md §7, "Payload kind 1: host_info"): a sequence of
/// TLV entries, `type: u16 LE`, `len: u16 LE`, then `len` value bytes, back to back, no padding,
/// ending exactly at `payload_len`. Encoding and decoding work on the caller's buffer: no
/// allocation.
pub mod host_info {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    /// Bytes of an entry's `type` and `len`.
    pub const ENTRY_HEADER_LEN: usize = 4;
    /// Entry type: a heartbeat address, IPv4 (value: 4 address bytes in network order, then the
    /// UDP port as u16 LE).
    pub const TYPE_HB_ADDR_V4: u16 = 1;
    /// Entry type: a heartbeat address, IPv6 (value: 16 address bytes in network order, then the
    /// UDP port as u16 LE).
    pub const TYPE_HB_ADDR_V6: u16 = 2;
    /// Value length of a `TYPE_HB_ADDR_V4` entry.
    pub const HB_ADDR_V4_LEN: usize = 6;
    /// Value length of a `TYPE_HB_ADDR_V6` entry.
    pub const HB_ADDR_V6_LEN: usize = 18;
    /// Heartbeat addresses a host publishes, at most.
    pub const MAX_HB_ADDRS: usize = 2;
    /// Encoded size of the largest host info v1 payload this version writes.
    pub const MAX_ENCODED_LEN: usize = MAX_HB_ADDRS * (ENTRY_HEADER_LEN + HB_ADDR_V6_LEN);

    /// Why a host info payload was not decoded (or not encoded). Offsets are payload offsets.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum PayloadError {
        #[error("entry at payload offset {offset} runs past the end of the payload")]
        Truncated { offset: usize },
        #[error("unknown entry type {entry_type} at payload offset {offset}")]
        UnknownEntry { offset: usize, entry_type: u16 },
        #[error("entry type {entry_type} at payload offset {offset} has length {len}")]
        BadLength { offset: usize, entry_type: u16, len: u16 },
        #[error("more than {MAX_HB_ADDRS} heartbeat addresses (entry at payload offset {offset})")]
        TooManyAddrs { offset: usize },
        #[error("heartbeat address at payload offset {offset} has port 0 or an unspecified address")]
        BadAddr { offset: usize },
        #[error(
            "heartbeat address {0} cannot be published: port 0, an unspecified address, or an IPv6 \
             scope id / flow label (not carried)"
        )]
        Unrepresentable(SocketAddr),
        #[error("payload buffer too small: {needed} bytes needed")]
        BufferTooSmall { needed: usize },
    }

    /// Host info v1: the owner's heartbeat addresses, in order of preference (first = primary).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct HostInfo {
        addrs: [SocketAddr; MAX_HB_ADDRS],
        count: u8,
    }

    const NONE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

    /// Whether `a` can be published: a real port and address; IPv6 without scope id or flow label.
    fn representable(a: &SocketAddr) -> bool {
        let ok = a.port() != 0 && !a.ip().is_unspecified();
        match a {
            SocketAddr::V4(_) => ok,
            SocketAddr::V6(v6) => ok && v6.scope_id() == 0 && v6.flowinfo() == 0,
        }
    }

    impl HostInfo {
        /// Host info with `addrs` (at most [`MAX_HB_ADDRS`], each with a non-zero port, a specified
        /// address, and for IPv6 no scope id nor flow label, which the format does not carry).
        pub fn new(addrs: &[SocketAddr]) -> Result<HostInfo, PayloadError> {
            if addrs.len() > MAX_HB_ADDRS {
                return Err(PayloadError::TooManyAddrs { offset: 0 });
            }
            let mut h = HostInfo { addrs: [NONE; MAX_HB_ADDRS], count: 0 };
            for a in addrs {
                if !representable(a) {
                    return Err(PayloadError::Unrepresentable(*a));
                }
                h.addrs[h.count as usize] = *a;
                h.count += 1;
            }
            Ok(h)
        }

        /// The heartbeat addresses, primary first.
        pub fn addrs(&self) -> &[SocketAddr] {
            &self.addrs[..self.count as usize]
        }

        /// Bytes `encode` writes.
        pub fn encoded_len(&self) -> usize {
            self.addrs()
                .iter()
                .map(|a| ENTRY_HEADER_LEN + if a.is_ipv4() { HB_ADDR_V4_LEN } else { HB_ADDR_V6_LEN })
                .sum()
        }

        /// Writes the payload into `out` and returns its length.
        pub fn encode(&self, out: &mut [u8]) -> Result<usize, PayloadError> {
            let needed = self.encoded_len();
            let Some(out) = out.get_mut(..needed) else {
                return Err(PayloadError::BufferTooSmall { needed });
            };
            let mut pos = 0;
            for a in self.addrs() {
                let (ty, len) = match a {
                    SocketAddr::V4(_) => (TYPE_HB_ADDR_V4, HB_ADDR_V4_LEN),
                    SocketAddr::V6(_) => (TYPE_HB_ADDR_V6, HB_ADDR_V6_LEN),
                };
                out[pos..pos + 2].copy_from_slice(&ty.to_le_bytes());
                out[pos + 2..pos + 4].copy_from_slice(&(len as u16).to_le_bytes());
                let value = &mut out[pos + ENTRY_HEADER_LEN..pos + ENTRY_HEADER_LEN + len];
                match a.ip() {
                    IpAddr::V4(ip) => value[..4].copy_from_slice(&ip.octets()),
                    IpAddr::V6(ip) => value[..16].copy_from_slice(&ip.octets()),
                }
                value[len - 2..].copy_from_slice(&a.port().to_le_bytes());
                pos += ENTRY_HEADER_LEN + len;
            }
            Ok(pos)
        }

        /// Decodes a host info v1 payload from an extent header of format minor `header_minor`.
        /// Entry types the header's minor does not define are refused (`UnknownEntry`) when this
        /// build knows that minor, and skipped for a newer minor (§11). Total: never panics.
        pub fn decode(payload: &[u8], header_minor: u16) -> Result<HostInfo, PayloadError> {
            let mut h = HostInfo { addrs: [NONE; MAX_HB_ADDRS], count: 0 };
            let mut pos = 0;
            while pos < payload.len() {
                let offset = pos;
                let Some(head) = payload.get(pos..pos + ENTRY_HEADER_LEN) else {
                    return Err(PayloadError::Truncated { offset });
                };
                let entry_type = u16::from_le_bytes([head[0], head[1]]);
                let len = u16::from_le_bytes([head[2], head[3]]);
                let start = pos + ENTRY_HEADER_LEN;
                let Some(value) = payload.get(start..start + usize::from(len)) else {
                    return Err(PayloadError::Truncated { offset });
                };
                pos = start + usize::from(len);
                let want = match entry_type {
                    TYPE_HB_ADDR_V4 => HB_ADDR_V4_LEN,
                    TYPE_HB_ADDR_V6 => HB_ADDR_V6_LEN,
                    _ if super::super::known_minor(header_minor) => {
                        return Err(PayloadError::UnknownEntry { offset, entry_type });
                    }
                    _ => continue,
                };
                if usize::from(len) != want {
                    return Err(PayloadError::BadLength { offset, entry_type, len });
                }
                let port = u16::from_le_bytes([value[want - 2], value[want - 1]]);
                let addr = if entry_type == TYPE_HB_ADDR_V4 {
                    let ip: [u8; 4] = value[..4].try_into().expect("length checked");
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
                } else {
                    let ip: [u8; 16] = value[..16].try_into().expect("length checked");
                    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
                };
                if !representable(&addr) {
                    return Err(PayloadError::BadAddr { offset });
                }
                if usize::from(h.count) == MAX_HB_ADDRS {
                    return Err(PayloadError::TooManyAddrs { offset });
                }
                h.addrs[usize::from(h.count)] = addr;
                h.count += 1;
            }
            Ok(h)
        }
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

    /// `e` encoded with `version_minor`, `kind`, `flags` and reserved byte 300 patched in, resealed.
    fn patched(e: &Extent, minor: u16, kind: u16, flags: u16, reserved: u8) -> [u8; 512] {
        let mut buf = [0u8; 512];
        e.encode(&mut buf);
        buf[14..16].copy_from_slice(&minor.to_le_bytes());
        buf[36..38].copy_from_slice(&kind.to_le_bytes());
        buf[38..40].copy_from_slice(&flags.to_le_bytes());
        buf[300] = reserved;
        let crc = crate::format::checksum(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    #[test]
    fn kind_validation_keys_on_the_header_minor() {
        let c = uuid::Uuid::from_u128(9);
        let e = Extent::empty(c, 3);
        let decode =
            |minor, kind, flags, res| Extent::decode(&patched(&e, minor, kind, flags, res), &c, 3, 65536);
        // 1.0 and 1.1 define kind 0 only.
        for minor in [0, 1] {
            assert_eq!(decode(minor, 0, 0, 0).map(|x| (x.kind, x.version_minor)), Ok((0, minor)));
            assert_eq!(decode(minor, kind::HOST_INFO, 0, 0), Err(Corruption::BadField("kind")));
        }
        // 1.2 adds kind 1; 2.. are undefined.
        assert_eq!(decode(2, kind::HOST_INFO, 0, 0).map(|x| x.kind), Ok(1));
        assert_eq!(decode(2, 2, 0, 0), Err(Corruption::BadField("kind")));
        assert_eq!(decode(2, u16::MAX, 0, 0), Err(Corruption::BadField("kind")));
        // Reserved checks come first, and still apply in 1.2.
        assert_eq!(decode(2, 0, 1, 0), Err(Corruption::ReservedNotZero));
        assert_eq!(decode(2, 7, 0, 1), Err(Corruption::ReservedNotZero));
        // 1.3 and 1.4 define the same kinds as 1.2.
        for minor in [3, 4] {
            assert_eq!(decode(minor, kind::HOST_INFO, 0, 0).map(|x| x.kind), Ok(1));
            assert_eq!(decode(minor, 2, 0, 0), Err(Corruption::BadField("kind")));
            assert_eq!(decode(minor, 7, 0, 1), Err(Corruption::ReservedNotZero));
        }
        // 1.5 adds kind 2 (host state); 3.. are undefined.
        assert_eq!(decode(5, kind::HOST_STATE, 0, 0).map(|x| x.kind), Ok(2));
        assert_eq!(decode(5, kind::HOST_INFO, 0, 0).map(|x| x.kind), Ok(1));
        assert_eq!(decode(5, 3, 0, 0), Err(Corruption::BadField("kind")));
        assert_eq!(decode(5, 2, 0, 1), Err(Corruption::ReservedNotZero));
        // 1.6 and 1.7 define the same kinds as 1.5.
        for minor in [6, 7, 8] {
            assert_eq!(decode(minor, kind::HOST_STATE, 0, 0).map(|x| x.kind), Ok(2));
            assert_eq!(decode(minor, 3, 0, 0), Err(Corruption::BadField("kind")), "1.{minor}");
            assert_eq!(decode(minor, 2, 0, 1), Err(Corruption::ReservedNotZero), "1.{minor}");
            assert_eq!(decode(minor, 2, 1, 0), Err(Corruption::ReservedNotZero), "1.{minor}");
        }
        // A newer minor: any kind, flags and reserved bytes pass through.
        assert_eq!(decode(9, 7, 1, 1).map(|x| x.kind), Ok(7));
        let newer = Extent { version_minor: 9, kind: 7, ..e };
        assert_eq!(Payload::decode(&newer, &[1, 2, 3]), Ok(Payload::Unknown(7)));
    }

    /// Bytes 68..84 are `host_uuid` in a header of minor 6 or later, reserved before.
    #[test]
    fn host_uuid_keys_on_the_header_minor() {
        let c = uuid::Uuid::from_u128(9);
        let host = uuid::Uuid::from_u128(0x00aa_bbcc);
        let e = Extent { kind: kind::HOST_INFO, generation: 4, host_uuid: host, ..Extent::empty(c, 3) };
        let mut buf = [0u8; 512];
        e.encode(&mut buf);
        assert_eq!(&buf[68..84], host.as_bytes());
        let got = Extent::decode(&buf, &c, 3, 65536).unwrap();
        assert_eq!((got.host_uuid, got.writer_uuid()), (host, Some(host)));
        let with_minor = |minor: u16, b: &[u8; 512]| {
            let mut b = *b;
            b[14..16].copy_from_slice(&minor.to_le_bytes());
            let crc = crate::format::checksum(&b[4..]);
            b[..4].copy_from_slice(&crc.to_le_bytes());
            Extent::decode(&b, &c, 3, 65536)
        };
        // The same bytes as minor 5: reserved, not zero.
        assert_eq!(with_minor(5, &buf), Err(Corruption::ReservedNotZero));
        // A minor-5 header names no writer: the reader has the generation only.
        let mut old = [0u8; 512];
        Extent { host_uuid: uuid::Uuid::nil(), ..e }.encode(&mut old);
        let got = with_minor(5, &old).unwrap();
        assert_eq!((got.generation, got.writer_uuid()), (4, None));
        // A nil uuid in a 1.6 header (mkfs's empty header) is stated, not unknown.
        assert_eq!(with_minor(6, &old).unwrap().writer_uuid(), Some(uuid::Uuid::nil()));
        // 1.7 keeps the field, and so does a newer minor.
        assert_eq!(with_minor(7, &buf).unwrap().writer_uuid(), Some(host));
        assert_eq!(with_minor(8, &buf).unwrap().writer_uuid(), Some(host));
    }

    /// Pins a whole extent header (format 1.7): magic, minor 7, kind 1 and every field.
    #[test]
    fn golden_header_bytes() {
        let c = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let host = uuid::Uuid::from_u128(0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111);
        let e = Extent {
            kind: kind::HOST_INFO,
            generation: 3,
            host_uuid: host,
            sequence: 4,
            payload_len: 22,
            payload_crc32c: 0x1122_3344,
            ..Extent::empty(c, 5)
        };
        let mut buf = [0u8; 512];
        e.encode(&mut buf);
        assert_eq!(&buf[4..16], b"DBEXTENT\x01\x00\x08\x00");
        assert_eq!(&buf[32..40], &[5, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            &buf[40..68],
            &[
                3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0x44, 0x33, 0x22,
                0x11
            ]
        );
        assert_eq!(
            &buf[68..84],
            &[0xaa, 0xaa, 0xbb, 0xbb, 0xcc, 0xcc, 0xdd, 0xdd, 0xee, 0xee, 0xff, 0xff, 0, 0, 0x11, 0x11]
        );
        assert!(buf[84..].iter().all(|&b| b == 0));
        let crc = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert_eq!(crc, GOLDEN_EXTENT_CRC, "extent header checksum changed: {crc:#010x}");
        assert_eq!(Extent::decode(&buf, &c, 5, 65536), Ok(e));
    }
    /// New in format 1.2 (0x2ea3_4632); format 1.3 changed it (0x6640_8f0b), 1.4 (0x9907_8655),
    /// 1.5 (`version_minor` 5: 0xd1e4_4f6c), 1.6 (`version_minor` 6 and the host uuid: 0x8c56_9388)
    /// 1.7 (0xc4b5_5ab1; recomputed independently of this crate's crc32c) and 1.8 (`version_minor` 8).
    const GOLDEN_EXTENT_CRC: u32 = 0x7734_f7c5;

    mod host_info_tests {
        use super::super::host_info::*;
        use crate::format::VERSION_MINOR;
        use std::net::SocketAddr;

        fn sa(s: &str) -> SocketAddr {
            s.parse().unwrap()
        }

        /// The FORMAT.md §7 example, byte for byte.
        #[test]
        fn golden_payload() {
            let h = HostInfo::new(&[sa("192.0.2.10:7400"), sa("[2001:db8::1]:7400")]).unwrap();
            let mut buf = [0xEEu8; 64];
            assert_eq!(h.encode(&mut buf), Ok(32));
            assert_eq!(h.encoded_len(), 32);
            let want: [u8; 32] = [
                0x01, 0x00, 0x06, 0x00, 192, 0, 2, 10, 0xE8, 0x1C, // v4 entry
                0x02, 0x00, 0x12, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xE8,
                0x1C,
            ];
            assert_eq!(&buf[..32], &want);
            assert_eq!(buf[32], 0xEE, "nothing written past the payload");
            assert_eq!(crate::format::checksum(&want), GOLDEN_PAYLOAD_CRC);
            assert_eq!(HostInfo::decode(&want, VERSION_MINOR), Ok(h));
            assert_eq!(HostInfo::decode(&want, VERSION_MINOR).unwrap().addrs(), h.addrs());
            // Empty host info: an empty payload.
            let none = HostInfo::new(&[]).unwrap();
            assert_eq!(none.encode(&mut buf), Ok(0));
            assert_eq!(HostInfo::decode(&[], VERSION_MINOR), Ok(none));
        }
        /// crc32c of the §7 example payload (recomputed independently).
        const GOLDEN_PAYLOAD_CRC: u32 = 0x534a_d21e;

        #[test]
        fn writer_refusals() {
            let three = [sa("10.0.0.1:1"), sa("10.0.0.2:1"), sa("10.0.0.3:1")];
            assert_eq!(HostInfo::new(&three), Err(PayloadError::TooManyAddrs { offset: 0 }));
            for bad in ["10.0.0.1:0", "0.0.0.0:7400", "[::]:7400", "[fe80::1%2]:7400"] {
                assert!(matches!(HostInfo::new(&[sa(bad)]), Err(PayloadError::Unrepresentable(_))), "{bad}");
            }
            let h = HostInfo::new(&[sa("10.0.0.1:1")]).unwrap();
            assert_eq!(h.encode(&mut [0u8; 9]), Err(PayloadError::BufferTooSmall { needed: 10 }));
        }

        #[test]
        fn decoder_refusals() {
            let v4 = [1, 0, 6, 0, 10, 0, 0, 1, 1, 0];
            let m = VERSION_MINOR;
            assert_eq!(HostInfo::decode(&v4[..3], m), Err(PayloadError::Truncated { offset: 0 }));
            assert_eq!(HostInfo::decode(&v4[..9], m), Err(PayloadError::Truncated { offset: 0 }));
            let mut b = v4;
            b[2] = 7;
            assert_eq!(HostInfo::decode(&b, m), Err(PayloadError::Truncated { offset: 0 }));
            b[2] = 5;
            assert_eq!(
                HostInfo::decode(&b[..9], m),
                Err(PayloadError::BadLength { offset: 0, entry_type: 1, len: 5 })
            );
            let mut b = v4;
            b[8] = 0;
            assert_eq!(HostInfo::decode(&b, m), Err(PayloadError::BadAddr { offset: 0 }));
            let three: Vec<u8> = v4.iter().chain(&v4).chain(&v4).copied().collect();
            assert_eq!(HostInfo::decode(&three[..20], m).map(|h| h.addrs().len()), Ok(2));
            assert_eq!(HostInfo::decode(&three, m), Err(PayloadError::TooManyAddrs { offset: 20 }));
            // Unknown entry types: refused in a known minor (0 included), skipped in a newer one.
            let unknown: Vec<u8> = [3u8, 0, 2, 0, 0xAA, 0xBB].iter().chain(&v4).copied().collect();
            assert_eq!(
                HostInfo::decode(&unknown, m),
                Err(PayloadError::UnknownEntry { offset: 0, entry_type: 3 })
            );
            assert_eq!(
                HostInfo::decode(&[0, 0, 0, 0], m),
                Err(PayloadError::UnknownEntry { offset: 0, entry_type: 0 })
            );
            assert_eq!(
                HostInfo::decode(&unknown, m + 1).map(|h| h.addrs().to_vec()),
                Ok(vec![sa("10.0.0.1:1")])
            );
            // Even a skipped entry must fit.
            assert_eq!(HostInfo::decode(&unknown[..5], m + 1), Err(PayloadError::Truncated { offset: 0 }));
        }
    }
}
