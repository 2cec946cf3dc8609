//! On-disk format v1. `docs/FORMAT.md` is the normative spec; this module mirrors it.
//!
//! Every structure is a `zerocopy` struct of little-endian fields with a compile-time size assert.
//! Every structure starts with its crc32c, which covers the rest of the structure, and carries the
//! cluster UUID so a record read from (or written to) the wrong LUN is caught.
//!
//! Decoding never trusts the bytes: `decode` validates checksum, magic, version, cluster and slot
//! index, and returns a typed reason on failure. Pure code: no I/O, no clock.

pub mod extent;
pub mod host_state;
pub mod keyring;
pub mod layout;
pub mod mailbox;
pub mod record;
pub mod superblock;

pub use layout::Layout;

/// Format major version: readers refuse other majors.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version: additive changes only (fields carved out of reserved bytes).
pub const VERSION_MINOR: u16 = 8;

/// Highest number of slots a cluster may be formatted with (sanlock's 2000 is the highest prior art).
pub const MAX_SLOTS: u32 = 2048;
/// Every on-disk structure is 512 bytes: it fits one logical sector on 512n, 512e and 4Kn devices.
pub const STRUCT_SIZE: usize = 512;
/// Region alignment: the largest logical sector size we support. Every region starts on a multiple.
pub const ALIGN: u64 = 4096;
/// Host and cluster names: NUL-padded UTF-8, at most this many bytes.
pub const NAME_LEN: usize = 64;
/// Bytes of the network-view bitmap: one bit per possible slot.
pub const NET_VIEW_BYTES: usize = (MAX_SLOTS / 8) as usize;

/// Why a structure read from disk is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    #[error("all bytes are zero (never formatted, or wiped)")]
    Zeroed,
    #[error("bad magic (not a diskbeat structure of this kind)")]
    BadMagic,
    #[error("checksum mismatch (torn, corrupted or misdirected write)")]
    BadChecksum,
    #[error("unsupported format version {major}.{minor} (this build reads {VERSION_MAJOR}.x)")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("belongs to another cluster (wrong LUN or stale data)")]
    WrongCluster,
    #[error("slot index {found} found in slot {expected} (misdirected write)")]
    WrongSlot { expected: u32, found: u32 },
    #[error("invalid state code {0}")]
    BadState(u16),
    #[error("invalid field: {0}")]
    BadField(&'static str),
    #[error("reserved bytes are not zero (written by a newer or broken writer)")]
    ReservedNotZero,
}

/// crc32c of `bytes`. Every checksum in the format is crc32c (Castagnoli) with the standard
/// initial value, over the bytes that follow the checksum field.
#[inline]
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Encodes a name into a fixed NUL-padded field. Names must be non-empty, at most `NAME_LEN` bytes
/// of UTF-8, without NUL or control characters.
pub fn encode_name(name: &str) -> Result<[u8; NAME_LEN], NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::ControlChar);
    }
    let mut out = [0u8; NAME_LEN];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// Decodes a NUL-padded name field; `None` when it is not valid UTF-8 or has bytes after the padding.
pub fn decode_name(field: &[u8; NAME_LEN]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    if !all_zero(&field[len..]) {
        return None;
    }
    std::str::from_utf8(&field[..len]).ok()
}

/// Whether `c` shows as itself on a terminal: `char::escape_debug` leaves it alone (quotes and the
/// backslash aside, which it escapes only for Rust syntax). Control characters (`\x1b`, `\n`),
/// invisible format characters (zero-width space, bidi overrides), line separators, unassigned and
/// private-use code points and combining marks are not.
fn shows_as_itself(c: char) -> bool {
    matches!(c, '\'' | '"' | '\\') || c.escape_debug().len() == 1
}

/// Refuses names that would not print as themselves (stricter than `encode_name`, which only
/// refuses control characters): mkfs applies it to new cluster names, so a name that cannot be
/// read back unambiguously is never written.
pub fn check_printable(name: &str) -> Result<(), NameError> {
    match name.char_indices().find(|&(_, c)| !shows_as_itself(c)) {
        None => Ok(()),
        Some((offset, c)) => Err(NameError::Unprintable { ch: c.escape_debug().to_string(), offset }),
    }
}

/// A name read from disk, made safe to print for people: characters that would not show as
/// themselves (terminal escapes, newlines, bidi overrides...) are written `\u{1b}`-style, and a
/// backslash as `\\`. Borrowed when nothing needs escaping (every name mkfs and the daemon write).
/// JSON output does not need this: serde escapes control characters itself.
pub fn escape_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().all(|c| c != '\\' && shows_as_itself(c)) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if matches!(c, '\'' | '"') {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A bad host or cluster name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} bytes; at most {NAME_LEN} bytes of UTF-8 are allowed")]
    TooLong { len: usize },
    #[error("name contains control characters")]
    ControlChar,
    #[error(
        "name contains the unprintable character '{ch}' at byte {offset} (a control, invisible or \
         bidi character that would not show as itself); use printable characters only"
    )]
    Unprintable { ch: String, offset: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let f = encode_name("host-01.example").unwrap();
        assert_eq!(decode_name(&f), Some("host-01.example"));
        assert_eq!(encode_name(""), Err(NameError::Empty));
        assert!(matches!(encode_name(&"x".repeat(65)), Err(NameError::TooLong { len: 65 })));
        assert_eq!(encode_name("a\nb"), Err(NameError::ControlChar));
        assert_eq!(check_printable("pool-a \u{e9}t\u{e9} 'x' \"y\" \\"), Ok(()));
        assert_eq!(
            check_printable("ab\x1b[2J"),
            Err(NameError::Unprintable { ch: "\\u{1b}".into(), offset: 2 })
        );
        for bad in ["a\nb", "\u{202e}evil", "zero\u{200b}width", "x\u{2028}", "\u{7f}"] {
            assert!(matches!(check_printable(bad), Err(NameError::Unprintable { .. })), "{bad:?}");
        }
        assert_eq!(escape_name("hv-01 'a'"), "hv-01 'a'");
        assert_eq!(escape_name("\x1b[2J\nx\\"), "\\u{1b}[2J\\nx\\\\");
        assert!(!escape_name("\u{202e}").contains('\u{202e}'));
        let mut bad = encode_name("ab").unwrap();
        bad[5] = b'x';
        assert_eq!(decode_name(&bad), None);
    }
}

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The 32 bytes every on-disk structure starts with.
///
/// | off | size | field         |
/// |-----|------|---------------|
/// | 0   | 4    | crc32c of bytes 4..512 of the structure |
/// | 4   | 8    | magic (kind of structure) |
/// | 12  | 2    | version_major |
/// | 14  | 2    | version_minor |
/// | 16  | 16   | cluster_uuid  |
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    pub crc32c: U32,
    pub magic: [u8; 8],
    pub version_major: U16,
    pub version_minor: U16,
    pub cluster_uuid: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Header>() == 32);

impl Header {
    /// A header for a structure of kind `magic` in `cluster`; the checksum is filled in by `seal`.
    pub fn new(magic: [u8; 8], cluster_uuid: uuid::Uuid) -> Header {
        Header {
            crc32c: U32::new(0),
            magic,
            version_major: U16::new(VERSION_MAJOR),
            version_minor: U16::new(VERSION_MINOR),
            cluster_uuid: cluster_uuid.into_bytes(),
        }
    }
}

/// A 512-byte on-disk structure that starts with a [`Header`].
pub trait OnDisk: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Sized {
    const MAGIC: [u8; 8];
    fn header(&self) -> &Header;
}

/// Writes `value` into the first 512 bytes of `out` and seals it with its checksum.
pub fn seal<T: OnDisk>(value: &T, out: &mut [u8]) {
    assert!(out.len() >= STRUCT_SIZE, "output buffer shorter than a structure");
    let out = &mut out[..STRUCT_SIZE];
    out.copy_from_slice(value.as_bytes());
    let crc = checksum(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Validates the first 512 bytes of `bytes` as a `T` of `cluster` (any cluster when `None`) and
/// returns a view of it. Checks, in order: zeroed, magic, checksum, major version, cluster.
pub fn validate<'a, T: OnDisk>(bytes: &'a [u8], cluster: Option<&uuid::Uuid>) -> Result<&'a T, Corruption> {
    assert!(bytes.len() >= STRUCT_SIZE, "input shorter than a structure");
    let bytes = &bytes[..STRUCT_SIZE];
    let value = T::ref_from_bytes(bytes).expect("size asserted at compile time");
    let h = value.header();
    if h.magic != T::MAGIC {
        return Err(if bytes.iter().all(|&b| b == 0) { Corruption::Zeroed } else { Corruption::BadMagic });
    }
    if h.crc32c.get() != checksum(&bytes[4..]) {
        return Err(Corruption::BadChecksum);
    }
    if h.version_major.get() != VERSION_MAJOR {
        return Err(Corruption::UnsupportedVersion {
            major: h.version_major.get(),
            minor: h.version_minor.get(),
        });
    }
    if let Some(c) = cluster {
        if h.cluster_uuid != *c.as_bytes() {
            return Err(Corruption::WrongCluster);
        }
    }
    Ok(value)
}

/// Whether this build knows every field of minor version `minor` (so reserved bytes must be zero).
pub fn known_minor(minor: u16) -> bool {
    minor <= VERSION_MINOR
}

/// True when every byte is zero. Reserved fields must be; a newer minor version may use them, so
/// callers only enforce this for minor versions they know.
pub fn all_zero(bytes: &[u8]) -> bool {
    // A fold without early exit vectorizes: ~3x faster than `all` on the sweep's reserved bytes.
    bytes.iter().fold(0u8, |acc, &b| acc | b) == 0
}
