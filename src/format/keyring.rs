//! The cluster keyring (format 1.3): the network heartbeat MAC keys, stored in device bytes
//! 512..1024, inside the superblock block (docs/FORMAT.md §17, "Cluster keyring").
//!
//! Written by mkfs (key id 1) and by `diskbeat rekey` (id + 1, the old key kept as the previous
//! one until the end of a rotation window). **Key bytes are never printed**: [`KeyBytes`] has a
//! redacted `Debug`, no `Display` and no `Serialize`; [`KeyringRaw`] has no `Debug` at all.
//! Pure code: no I/O, no clock, no randomness (callers pass the key and the time).

use super::{all_zero, known_minor, validate, Corruption, Header, OnDisk};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: [u8; 8] = *b"DBKEYRNG";
/// Device offset of the keyring: the second 512 bytes of the superblock block.
pub const OFFSET: u64 = 512;
/// Length of a cluster key (a BLAKE3 key; the same as `net::key::KEY_LEN`).
pub const KEY_LEN: usize = 32;
/// The first format minor that has a keyring: a keyring structure claiming an older minor is
/// refused (`BadField("version_minor")`).
pub const SINCE_MINOR: u16 = 3;

/// On-disk mirror of the keyring (docs/FORMAT.md §17). No `Debug`: it holds key bytes.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct KeyringRaw {
    pub header: Header,                   // 0..32
    pub current_key_id: U32,              // 32
    pub previous_key_id: U32,             // 36
    pub current_key: [u8; KEY_LEN],       // 40..72
    pub previous_key: [u8; KEY_LEN],      // 72..104
    pub current_created_unix_s: U64,      // 104
    pub previous_created_unix_s: U64,     // 112
    pub previous_valid_until_unix_s: U64, // 120
    pub reserved: [u8; 384],              // 128..512
}
const _: () = assert!(core::mem::size_of::<KeyringRaw>() == super::STRUCT_SIZE);

impl OnDisk for KeyringRaw {
    const MAGIC: [u8; 8] = MAGIC;
    fn header(&self) -> &Header {
        &self.header
    }
}

/// 32 secret bytes. `Debug` prints `<redacted>`; there is no `Display` and no `Serialize`.
/// `PartialEq` is for read-back checks and tests, never for authentication (that is the MAC's
/// job, in constant time).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyBytes([u8; KEY_LEN]);

impl KeyBytes {
    pub const fn new(bytes: [u8; KEY_LEN]) -> KeyBytes {
        KeyBytes(bytes)
    }

    /// The secret: to build a `net::key::ClusterKey` or to write it to disk, nothing else.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentKey {
    /// Never 0.
    pub id: u32,
    pub key: KeyBytes,
    /// Wall-clock time the key was made (informational).
    pub created_unix_s: u64,
}

/// The key the current one replaced: it still verifies until `valid_until_unix_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousKey {
    /// Never 0 and never the current key's id.
    pub id: u32,
    pub key: KeyBytes,
    pub created_unix_s: u64,
    /// End of the rotation window (wall clock, Unix seconds): both keys verify until then.
    pub valid_until_unix_s: u64,
}

/// A validated keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyring {
    pub cluster_uuid: uuid::Uuid,
    /// The structure's own minor as read (`encode` always writes `VERSION_MINOR`).
    pub version_minor: u16,
    pub current: CurrentKey,
    pub previous: Option<PreviousKey>,
}

/// Why a keyring cannot be rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    #[error("the current key id is {0}, the highest possible: re-format to start again at 1")]
    IdExhausted(u32),
}

impl Keyring {
    /// The keyring mkfs writes: one key, id 1.
    pub fn first(cluster_uuid: uuid::Uuid, key: KeyBytes, now_unix_s: u64) -> Keyring {
        Keyring {
            cluster_uuid,
            version_minor: super::VERSION_MINOR,
            current: CurrentKey { id: 1, key, created_unix_s: now_unix_s },
            previous: None,
        }
    }

    /// What `diskbeat rekey` writes: `key` becomes current with id + 1, the current key becomes
    /// the previous one, valid until `now + window_s`; the old previous key is dropped.
    pub fn rotated(&self, key: KeyBytes, now_unix_s: u64, window_s: u64) -> Result<Keyring, RotateError> {
        let id = self.current.id.checked_add(1).ok_or(RotateError::IdExhausted(self.current.id))?;
        Ok(Keyring {
            cluster_uuid: self.cluster_uuid,
            version_minor: super::VERSION_MINOR,
            current: CurrentKey { id, key, created_unix_s: now_unix_s },
            previous: Some(PreviousKey {
                id: self.current.id,
                key: self.current.key,
                created_unix_s: self.current.created_unix_s,
                valid_until_unix_s: now_unix_s.saturating_add(window_s),
            }),
        })
    }

    /// Whether the previous key (if any) still verifies at `now_unix_s` (wall clock).
    pub fn previous_in_window(&self, now_unix_s: u64) -> bool {
        self.previous.is_some_and(|p| now_unix_s < p.valid_until_unix_s)
    }

    /// Encodes into the first 512 bytes of `out`, as format `VERSION_MINOR`.
    pub fn encode(&self, out: &mut [u8]) {
        let (prev_id, prev_key, prev_created, prev_until) = match &self.previous {
            Some(p) => (p.id, *p.key.expose(), p.created_unix_s, p.valid_until_unix_s),
            None => (0, [0; KEY_LEN], 0, 0),
        };
        let raw = KeyringRaw {
            header: Header::new(MAGIC, self.cluster_uuid),
            current_key_id: U32::new(self.current.id),
            previous_key_id: U32::new(prev_id),
            current_key: *self.current.key.expose(),
            previous_key: prev_key,
            current_created_unix_s: U64::new(self.current.created_unix_s),
            previous_created_unix_s: U64::new(prev_created),
            previous_valid_until_unix_s: U64::new(prev_until),
            reserved: [0; 384],
        };
        super::seal(&raw, out);
    }

    /// Validates and decodes the first 512 bytes of `bytes` (device bytes 512..1024) as the
    /// keyring of `cluster`. Checks, in order (docs/FORMAT.md §17): the common checks (zeroed,
    /// magic, checksum, major, cluster), `version_minor >= 3`, `current_key_id != 0`,
    /// `current_key` not all zero, `previous_key_id != current_key_id`, the previous fields all
    /// zero when `previous_key_id == 0` and `previous_key` not all zero otherwise, and `reserved`
    /// zero when the minor is known.
    pub fn decode(bytes: &[u8], cluster: &uuid::Uuid) -> Result<Keyring, Corruption> {
        let raw: &KeyringRaw = validate(bytes, Some(cluster))?;
        let minor = raw.header.version_minor.get();
        if minor < SINCE_MINOR {
            return Err(Corruption::BadField("version_minor"));
        }
        let current_id = raw.current_key_id.get();
        if current_id == 0 {
            return Err(Corruption::BadField("current_key_id"));
        }
        if all_zero(&raw.current_key) {
            return Err(Corruption::BadField("current_key"));
        }
        let previous_id = raw.previous_key_id.get();
        if previous_id == current_id {
            return Err(Corruption::BadField("previous_key_id"));
        }
        let previous = if previous_id == 0 {
            if !all_zero(&raw.previous_key)
                || raw.previous_created_unix_s.get() != 0
                || raw.previous_valid_until_unix_s.get() != 0
            {
                return Err(Corruption::BadField("previous_key"));
            }
            None
        } else {
            if all_zero(&raw.previous_key) {
                return Err(Corruption::BadField("previous_key"));
            }
            Some(PreviousKey {
                id: previous_id,
                key: KeyBytes(raw.previous_key),
                created_unix_s: raw.previous_created_unix_s.get(),
                valid_until_unix_s: raw.previous_valid_until_unix_s.get(),
            })
        };
        if known_minor(minor) && !all_zero(&raw.reserved) {
            return Err(Corruption::ReservedNotZero);
        }
        Ok(Keyring {
            cluster_uuid: uuid::Uuid::from_bytes(raw.header.cluster_uuid),
            version_minor: minor,
            current: CurrentKey {
                id: current_id,
                key: KeyBytes(raw.current_key),
                created_unix_s: raw.current_created_unix_s.get(),
            },
            previous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u128 = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef;

    fn cluster() -> uuid::Uuid {
        uuid::Uuid::from_u128(CLUSTER)
    }

    fn key(b: u8) -> KeyBytes {
        let mut k = [0u8; KEY_LEN];
        for (i, x) in k.iter_mut().enumerate() {
            *x = b.wrapping_add(i as u8);
        }
        KeyBytes::new(k)
    }

    fn rotated_sample() -> Keyring {
        Keyring::first(cluster(), key(0x10), 1_700_000_000).rotated(key(0x80), 1_700_000_100, 400).unwrap()
    }

    fn encoded(k: &Keyring) -> [u8; 512] {
        let mut b = [0u8; 512];
        k.encode(&mut b);
        b
    }

    /// `bytes` with `patch` applied, resealed.
    fn patched(mut b: [u8; 512], patch: impl FnOnce(&mut [u8; 512])) -> [u8; 512] {
        patch(&mut b);
        let crc = crate::format::checksum(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn round_trips() {
        let first = Keyring::first(cluster(), key(1), 42);
        assert_eq!(Keyring::decode(&encoded(&first), &cluster()), Ok(first));
        let r = rotated_sample();
        assert_eq!(Keyring::decode(&encoded(&r), &cluster()), Ok(r));
        assert_eq!((r.current.id, r.previous.unwrap().id), (2, 1));
        assert_eq!(r.previous.unwrap().key, key(0x10));
        assert_eq!(r.previous.unwrap().created_unix_s, 1_700_000_000);
        assert_eq!(r.previous.unwrap().valid_until_unix_s, 1_700_000_500);
        assert!(r.previous_in_window(1_700_000_499) && !r.previous_in_window(1_700_000_500));
        // A second rotation drops key 1.
        let r3 = r.rotated(key(0x33), 1_700_000_200, 10).unwrap();
        assert_eq!((r3.current.id, r3.previous.unwrap().id), (3, 2));
        assert_eq!(r3.previous.unwrap().key, key(0x80));
        let mut max = first;
        max.current.id = u32::MAX;
        assert_eq!(max.rotated(key(2), 0, 0), Err(RotateError::IdExhausted(u32::MAX)));
    }

    /// Pins the byte layout: if this fails, the format changed and the version must be bumped.
    #[test]
    fn golden_bytes() {
        let b = encoded(&rotated_sample());
        assert_eq!(&b[4..12], b"DBKEYRNG");
        assert_eq!(&b[12..16], &[1, 0, 8, 0], "version 1.8");
        assert_eq!(&b[16..32], cluster().as_bytes());
        assert_eq!(&b[32..36], &[2, 0, 0, 0], "current_key_id");
        assert_eq!(&b[36..40], &[1, 0, 0, 0], "previous_key_id");
        assert_eq!(&b[40..72], key(0x80).expose());
        assert_eq!(&b[72..104], key(0x10).expose());
        assert_eq!(&b[104..112], &1_700_000_100u64.to_le_bytes());
        assert_eq!(&b[112..120], &1_700_000_000u64.to_le_bytes());
        assert_eq!(&b[120..128], &1_700_000_500u64.to_le_bytes());
        assert!(b[128..].iter().all(|&x| x == 0), "reserved");
        let crc = u32::from_le_bytes(b[..4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&b[4..]));
        assert_eq!(crc, GOLDEN_CRC, "keyring checksum changed: {crc:#010x}");
    }
    /// Format 1.8 changed it (`version_minor` 8; it was 0x14b8_c43c in 1.7, recomputed
    /// independently of this crate's crc32c, 0x5c5b_0d05 in 1.6, 0x857f_564e in 1.5, 0xcd9c_9f77 in
    /// 1.4, 0x32db_9629 in 1.3).
    const GOLDEN_CRC: u32 = 0xa739_6948;

    #[test]
    fn every_validation_failure() {
        let c = cluster();
        let good = encoded(&rotated_sample());
        let single = encoded(&Keyring::first(c, key(1), 5));
        let dec = |b: &[u8; 512]| Keyring::decode(b, &c);
        assert_eq!(dec(&[0u8; 512]), Err(Corruption::Zeroed));
        assert_eq!(dec(&patched(good, |b| b[4] = b'X')), Err(Corruption::BadMagic));
        let mut torn = good;
        torn[50] ^= 1;
        assert_eq!(dec(&torn), Err(Corruption::BadChecksum));
        assert_eq!(
            dec(&patched(good, |b| b[12] = 2)),
            Err(Corruption::UnsupportedVersion { major: 2, minor: 8 })
        );
        assert_eq!(Keyring::decode(&good, &uuid::Uuid::nil()), Err(Corruption::WrongCluster));
        for minor in [0u8, 1, 2] {
            assert_eq!(dec(&patched(good, |b| b[14] = minor)), Err(Corruption::BadField("version_minor")));
        }
        assert_eq!(dec(&patched(good, |b| b[32..36].fill(0))), Err(Corruption::BadField("current_key_id")));
        assert_eq!(dec(&patched(good, |b| b[40..72].fill(0))), Err(Corruption::BadField("current_key")));
        assert_eq!(dec(&patched(good, |b| b[36] = 2)), Err(Corruption::BadField("previous_key_id")));
        assert_eq!(dec(&patched(good, |b| b[72..104].fill(0))), Err(Corruption::BadField("previous_key")));
        // No previous key: its fields must all be zero.
        assert!(dec(&single).is_ok());
        for at in [72, 103, 112, 120, 127] {
            assert_eq!(
                dec(&patched(single, |b| b[at] = 1)),
                Err(Corruption::BadField("previous_key")),
                "{at}"
            );
        }
        assert_eq!(dec(&patched(good, |b| b[300] = 1)), Err(Corruption::ReservedNotZero));
        // A keyring of minor 3 (formatted by 1.3) is still valid; so is its reserved check.
        assert_eq!(dec(&patched(good, |b| b[14] = 3)).map(|k| k.version_minor), Ok(3));
        assert_eq!(dec(&patched(good, |b| (b[14], b[300]) = (3, 1))), Err(Corruption::ReservedNotZero));
        // A newer minor may use the reserved bytes: accepted, ignored.
        let newer = patched(good, |b| {
            b[14] = 9;
            b[300] = 1;
        });
        assert_eq!(dec(&newer).map(|k| (k.version_minor, k.current.id)), Ok((9, 2)));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = Keyring::first(cluster(), KeyBytes::new(*b"SECRET-SECRET-SECRET-SECRET-0xAB"), 1);
        let k = k.rotated(KeyBytes::new([0xAB; 32]), 2, 3).unwrap();
        for r in [format!("{k:?}"), format!("{k:#?}")] {
            assert!(r.contains("<redacted>"), "{r}");
            assert!(!r.contains("SECRET") && !r.contains("83, 69") && !r.contains("171"), "{r}");
            assert!(!r.to_ascii_lowercase().contains("abab"), "{r}");
        }
    }
}
