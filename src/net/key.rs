//! Cluster keys and the keyring (docs/PROTOCOL.md §6, "Keys and rotation").
//!
//! **Key bytes are never printed**: `Debug` and `Display` of a [`ClusterKey`] (and so of a
//! [`Keyring`]) show the key id only, with the bytes written `<redacted>`. Nothing in this module
//! exposes the bytes except to the MAC computation in [`super::packet`]. Keep it that way: a key
//! that reaches a log or a status output lets anyone who reads it forge heartbeats.

use std::fmt;

/// Length of a cluster key: a BLAKE3 key.
pub const KEY_LEN: usize = 32;

/// A 32-byte secret shared by every host of the cluster, with the id that names it in packets.
///
/// The bytes are private and never printed (see the module docs). No `PartialEq`: comparing
/// secrets is the MAC's job, in constant time.
#[derive(Clone)]
pub struct ClusterKey {
    id: u32,
    bytes: [u8; KEY_LEN],
}

impl ClusterKey {
    pub const fn new(id: u32, bytes: [u8; KEY_LEN]) -> ClusterKey {
        ClusterKey { id, bytes }
    }

    /// The id carried in the `key_id` field of every packet this key signs.
    pub const fn id(&self) -> u32 {
        self.id
    }

    /// The secret, for the MAC only.
    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

/// Redacted: prints the id, never the bytes.
impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("id", &self.id)
            .field("bytes", &format_args!("<redacted>"))
            .finish()
    }
}

/// Redacted: prints the id, never the bytes.
impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster key {} (<redacted>)", self.id)
    }
}

/// A keyring change that would make a key id ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key id {0} is already in the keyring: each key needs its own id")]
    DuplicateId(u32),
}

/// At most two keys: the current one, which signs, and the previous one, which still verifies
/// while a rotation rolls through the cluster. Look-up by id is two comparisons: no allocation.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: ClusterKey,
    previous: Option<ClusterKey>,
}

impl Keyring {
    /// A keyring with a single key, which signs and verifies.
    pub fn new(current: ClusterKey) -> Keyring {
        Keyring { current, previous: None }
    }

    /// A keyring mid-rotation: `current` signs, both verify. The ids must differ.
    pub fn with_previous(current: ClusterKey, previous: ClusterKey) -> Result<Keyring, KeyError> {
        if current.id == previous.id {
            return Err(KeyError::DuplicateId(current.id));
        }
        Ok(Keyring { current, previous: Some(previous) })
    }

    /// Rotation step 2 (docs/PROTOCOL.md §6): `new` becomes the signing key, the current one
    /// becomes the previous one (still verifies), the old previous one is forgotten. `new`'s id
    /// must differ from the current key's (the previous key's id may be reused: it is dropped).
    pub fn rotate(&mut self, new: ClusterKey) -> Result<(), KeyError> {
        if new.id == self.current.id {
            return Err(KeyError::DuplicateId(new.id));
        }
        self.previous = Some(std::mem::replace(&mut self.current, new));
        Ok(())
    }

    /// Rotation step 3: forget the previous key; packets it signed are dropped (`UnknownKey`).
    pub fn retire_previous(&mut self) {
        self.previous = None;
    }

    /// The signing key.
    pub fn current(&self) -> &ClusterKey {
        &self.current
    }

    pub fn previous(&self) -> Option<&ClusterKey> {
        self.previous.as_ref()
    }

    /// The key named `id`, if the ring holds it.
    pub fn get(&self, id: u32) -> Option<&ClusterKey> {
        if self.current.id == id {
            return Some(&self.current);
        }
        self.previous.as_ref().filter(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_print_key_bytes() {
        // Bytes whose every rendering (decimal list, hex, ASCII) is recognisable.
        let bytes = *b"SECRET-SECRET-SECRET-SECRET-0xAB";
        let key = ClusterKey::new(7, bytes);
        let ring = Keyring::with_previous(key.clone(), ClusterKey::new(6, [0xAB; 32])).unwrap();
        let renderings = [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{key}"),
            format!("{ring:?}"),
            format!("{ring:#?}"),
        ];
        for r in &renderings {
            assert!(r.contains("redacted"), "{r}");
            assert!(!r.contains("SECRET"), "{r}");
            assert!(!r.contains("83, 69, 67"), "{r}"); // "SEC" as a decimal byte list
            assert!(!r.contains("171"), "{r}"); // 0xAB as decimal
            assert!(!r.to_ascii_lowercase().contains("abab"), "{r}");
        }
        assert_eq!(renderings[0], "ClusterKey { id: 7, bytes: <redacted> }");
        assert_eq!(renderings[2], "cluster key 7 (<redacted>)");
    }

    #[test]
    fn lookup_and_rotation() {
        let mut ring = Keyring::new(ClusterKey::new(1, [1; 32]));
        assert_eq!(ring.get(1).map(ClusterKey::id), Some(1));
        assert!(ring.get(2).is_none());
        assert_eq!(ring.rotate(ClusterKey::new(1, [9; 32])), Err(KeyError::DuplicateId(1)));
        ring.rotate(ClusterKey::new(2, [2; 32])).unwrap();
        assert_eq!(ring.current().id(), 2);
        assert_eq!(ring.previous().map(ClusterKey::id), Some(1));
        assert!(ring.get(1).is_some() && ring.get(2).is_some());
        // Rotating again forgets key 1; its id may come back later.
        ring.rotate(ClusterKey::new(3, [3; 32])).unwrap();
        assert!(ring.get(1).is_none());
        ring.retire_previous();
        assert!(ring.get(2).is_none());
        assert_eq!(ring.current().id(), 3);
        assert!(Keyring::with_previous(ClusterKey::new(4, [0; 32]), ClusterKey::new(4, [1; 32])).is_err());
    }
}
