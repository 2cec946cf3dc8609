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

/// Why a key file cannot be used. Messages name the file and the line, never its contents (a
/// line may hold a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read the key file: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: not a regular file; a key file must be a regular file")]
    NotAFile { path: String },
    #[error(
        "{path}: the key file has mode {mode:04o}: group or others may access it; a key file must be \
         readable by its owner only (chmod 600 {path})"
    )]
    Permissions { path: String, mode: u32 },
    #[error("{path}, line {line}: {what} (expected `current ID HEX` or `previous ID HEX`: a key id 1..=4294967295 and 64 hex digits)")]
    Syntax { path: String, line: usize, what: &'static str },
    #[error("{path}: {what}")]
    Keys { path: String, what: &'static str },
}

impl Keyring {
    /// The keyring the heartbeat disk holds (docs/FORMAT.md §17): the current key signs; the
    /// previous one also verifies while `now_unix_s` is before the end of its rotation window.
    pub fn from_disk(disk: &crate::format::keyring::Keyring, now_unix_s: u64) -> Keyring {
        let current = ClusterKey::new(disk.current.id, *disk.current.key.expose());
        let previous = disk
            .previous
            .filter(|_| disk.previous_in_window(now_unix_s))
            .map(|p| ClusterKey::new(p.id, *p.key.expose()));
        // The decoder guarantees distinct ids.
        Keyring { current, previous }
    }

    /// Reads a key file (the `--key-file` override; format in docs/FORMAT.md §17, "Key file").
    /// Refuses a file that group or others may access, or that is not a regular file.
    pub fn from_key_file(path: &std::path::Path) -> Result<Keyring, KeyFileError> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let p = path.display().to_string();
        let read_err = |e: std::io::Error| KeyFileError::Read { path: p.clone(), reason: e.to_string() };
        // O_NOFOLLOW | O_NONBLOCK: no symlink games, no hanging on a FIFO; checked on the open file.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(read_err)?;
        let meta = f.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyFileError::NotAFile { path: p });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions { path: p, mode });
        }
        let mut text = String::new();
        f.by_ref().take(64 * 1024).read_to_string(&mut text).map_err(read_err)?;
        Keyring::parse_key_file(&text).map_err(|e| match e {
            KeyFileError::Syntax { line, what, .. } => KeyFileError::Syntax { path: p.clone(), line, what },
            KeyFileError::Keys { what, .. } => KeyFileError::Keys { path: p.clone(), what },
            e => e,
        })
    }

    /// Parses key-file text: `current ID HEX` (exactly once) and `previous ID HEX` (at most once),
    /// blank lines and `#` comments ignored. Errors carry an empty `path`.
    pub fn parse_key_file(text: &str) -> Result<Keyring, KeyFileError> {
        let syntax = |line, what| KeyFileError::Syntax { path: String::new(), line, what };
        let (mut current, mut previous) = (None, None);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(id), Some(hex), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(syntax(i + 1, "not three words"));
            };
            let id: u32 = id.parse().ok().filter(|&id| id != 0).ok_or(syntax(i + 1, "bad key id"))?;
            let hex = hex.as_bytes();
            if hex.len() != 2 * KEY_LEN {
                return Err(syntax(i + 1, "the key is not 64 hex digits"));
            }
            let mut bytes = [0u8; KEY_LEN];
            for (b, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
                let digit = |c: u8| (c as char).to_digit(16);
                match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => *b = (h * 16 + l) as u8,
                    _ => return Err(syntax(i + 1, "the key is not 64 hex digits")),
                }
            }
            if bytes.iter().all(|&b| b == 0) {
                return Err(syntax(i + 1, "an all-zero key"));
            }
            let slot = match role {
                "current" => &mut current,
                "previous" => &mut previous,
                _ => return Err(syntax(i + 1, "the first word is neither `current` nor `previous`")),
            };
            if slot.replace(ClusterKey::new(id, bytes)).is_some() {
                return Err(syntax(i + 1, "a second key of the same role"));
            }
        }
        let keys = |what| KeyFileError::Keys { path: String::new(), what };
        let current = current.ok_or(keys("no `current` key"))?;
        match previous {
            None => Ok(Keyring::new(current)),
            Some(p) => Keyring::with_previous(current, p)
                .map_err(|_| keys("the `previous` key has the `current` key's id")),
        }
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

    const HEX_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const HEX_B: &str = "F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFFE0E1E2E3E4E5E6E7E8E9EAEBECEDEEEF";

    #[test]
    fn key_file_parsing() {
        let ring = Keyring::parse_key_file(&format!("# site key\n\ncurrent 7 {HEX_A}\n")).unwrap();
        assert_eq!((ring.current().id(), ring.previous().map(ClusterKey::id)), (7, None));
        assert_eq!(ring.current().bytes()[31], 0x1f);
        let ring = Keyring::parse_key_file(&format!("previous 6 {HEX_B}\n  current 7 {HEX_A}  ")).unwrap();
        assert_eq!((ring.current().id(), ring.previous().map(ClusterKey::id)), (7, Some(6)));
        assert_eq!(ring.previous().unwrap().bytes()[0], 0xf0);
        let bad = [
            (format!("current 0 {HEX_A}"), "bad key id"),
            (format!("current x {HEX_A}"), "bad key id"),
            (format!("current 1 {}", &HEX_A[2..]), "the key is not 64 hex digits"),
            (format!("current 1 {}zz", &HEX_A[2..]), "the key is not 64 hex digits"),
            (format!("current 1 {}", "0".repeat(64)), "an all-zero key"),
            (format!("next 1 {HEX_A}"), "the first word is neither `current` nor `previous`"),
            (format!("current 1 {HEX_A} extra"), "not three words"),
            (format!("current 1 {HEX_A}\ncurrent 2 {HEX_B}"), "a second key of the same role"),
        ];
        for (text, what) in bad {
            match Keyring::parse_key_file(&text) {
                Err(KeyFileError::Syntax { what: w, .. }) => assert_eq!(w, what, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(Keyring::parse_key_file("# nothing"), Err(KeyFileError::Keys { .. })));
        let same = format!("current 3 {HEX_A}\nprevious 3 {HEX_B}");
        assert!(matches!(Keyring::parse_key_file(&same), Err(KeyFileError::Keys { .. })));
        // Errors never echo the file's contents.
        let e = Keyring::parse_key_file(&format!("current 1 {HEX_A} extra")).unwrap_err().to_string();
        assert!(!e.contains(&HEX_A[..16]), "{e}");
    }

    #[test]
    fn key_file_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, format!("current 4 {HEX_A}\n")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match Keyring::from_key_file(&path) {
                Err(e @ KeyFileError::Permissions { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("chmod 600") && text.contains(&format!("{mode:04o}")), "{text}");
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(Keyring::from_key_file(&path).unwrap().current().id(), 4);
        }
        assert!(matches!(Keyring::from_key_file(dir.path()), Err(KeyFileError::NotAFile { .. })));
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(Keyring::from_key_file(&link), Err(KeyFileError::Read { .. })), "symlinks refused");
    }

    #[test]
    fn from_disk_keeps_the_previous_key_for_the_window_only() {
        use crate::format::keyring::{KeyBytes, Keyring as DiskKeyring};
        let disk = DiskKeyring::first(uuid::Uuid::from_u128(1), KeyBytes::new([1; 32]), 100);
        let ring = Keyring::from_disk(&disk, 100);
        assert_eq!((ring.current().id(), ring.previous().is_none()), (1, true));
        let disk = disk.rotated(KeyBytes::new([2; 32]), 200, 50).unwrap();
        let ring = Keyring::from_disk(&disk, 249);
        assert_eq!((ring.current().id(), ring.previous().map(ClusterKey::id)), (2, Some(1)));
        assert_eq!((ring.current().bytes()[0], ring.previous().unwrap().bytes()[0]), (2, 1));
        assert!(Keyring::from_disk(&disk, 250).previous().is_none(), "window over");
    }
}
