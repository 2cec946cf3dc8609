//! The cluster keyring on the heartbeat disk (docs/FORMAT.md §17): reading it, making keys, and
//! `diskbeat rekey`, which rotates it.
//!
//! Trust boundary: any host that can write the heartbeat LUN can already fence every host (it can
//! write their mailboxes, or zero the superblock), so the LUN is the trust boundary and the key
//! lives there. A site that wants the key elsewhere gives the daemon a key file instead
//! (`net::key::Keyring::from_key_file`).
//!
//! `rekey` reads and validates the superblock and the keyring, refuses (writing nothing) if either
//! is missing or corrupt, then writes the new keyring in **one** logical-sector write with
//! O_DIRECT | O_DSYNC (the sector that holds device bytes 512..1024: those bytes alone on a
//! 512-byte-sector device, the whole superblock block, rewritten as read, on a 4Kn device), and
//! reads it back. Key bytes never leave this module except to the disk: reports carry key ids.

use crate::disk::DiskError;
use crate::format::keyring::{self, KeyBytes, Keyring, RotateError};
use crate::format::superblock::{Superblock, SuperblockError};
use crate::format::{escape_name, Corruption, ALIGN, STRUCT_SIZE};
use crate::io::{Access, AlignedBuf, Device, IoError};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Wall-clock time, Unix seconds (0 if the clock is before 1970). Informational only: key
/// creation times and the end of a rotation window.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh random cluster key from the OS CSPRNG (`getrandom`).
pub fn generate_key() -> Result<KeyBytes, String> {
    let mut k = [0u8; keyring::KEY_LEN];
    // An all-zero key is refused by the decoder; from a working CSPRNG it never happens (2^-256).
    for _ in 0..2 {
        getrandom::fill(&mut k).map_err(|e| format!("cannot get random bytes from the OS: {e}"))?;
        if k.iter().any(|&b| b != 0) {
            return Ok(KeyBytes::new(k));
        }
    }
    Err("the OS random source returned only zeros".into())
}

/// The superblock block (device bytes 0..4096), read with O_DIRECT.
fn read_block0(dev: &Device) -> Result<AlignedBuf, DiskError> {
    let path = dev.path.display().to_string();
    let mut buf = AlignedBuf::new(ALIGN as usize).map_err(IoError::Alloc)?;
    let n = nix::sys::uio::pread(dev.fd.as_fd(), buf.as_mut_slice(), 0)
        .map_err(|e| DiskError::SuperblockRead { path: path.clone(), reason: e.desc().into() })?;
    if n < 2 * STRUCT_SIZE {
        return Err(DiskError::SuperblockRead { path, reason: format!("short read ({n} bytes)") });
    }
    Ok(buf)
}

fn superblock_of(path: &str, block: &[u8]) -> Result<Superblock, DiskError> {
    match Superblock::decode(block) {
        Ok(sb) => Ok(sb),
        Err(SuperblockError::Corrupt(c @ (Corruption::Zeroed | Corruption::BadMagic))) => {
            Err(DiskError::NotFormatted { path: path.into(), reason: c })
        }
        Err(e) => Err(DiskError::Corrupt { path: path.into(), source: e }),
    }
}

/// The keyring bytes (device bytes 512..1024) of a superblock block.
fn keyring_bytes(block: &[u8]) -> &[u8] {
    &block[keyring::OFFSET as usize..keyring::OFFSET as usize + STRUCT_SIZE]
}

/// Reads and validates the keyring of the cluster `sb` describes. `Ok(Err(Zeroed))`: no keyring
/// (a disk formatted before 1.3); `Ok(Err(_))`: corrupt.
pub fn read_keyring(path: &Path, sb: &Superblock) -> Result<Result<Keyring, Corruption>, DiskError> {
    let dev = Device::open(path, Access::ReadOnly)?;
    let block = read_block0(&dev)?;
    Ok(Keyring::decode(keyring_bytes(block.as_slice()), &sb.cluster_uuid))
}

/// What to rotate.
#[derive(Debug, Clone, Default)]
pub struct RekeyOptions {
    /// How long the old key keeps verifying after the rotation (`--window`); `None` = 10 × the
    /// cluster's base timeout. Rounded up to whole seconds.
    pub window_ms: Option<u32>,
}

/// What `rekey` did. Key ids and times only: never key bytes.
#[derive(Debug, Clone)]
pub struct RekeyReport {
    pub superblock: Superblock,
    /// The keyring as read before the rotation.
    pub old: Keyring,
    /// The keyring written and read back.
    pub new: Keyring,
    /// The rotation window, in seconds.
    pub window_s: u64,
    /// The sector written: device offset and length.
    pub written: (u64, u32),
}

impl RekeyReport {
    /// The key the rotation dropped (the old previous key), if there was one.
    pub fn dropped_key_id(&self) -> Option<u32> {
        self.old.previous.map(|p| p.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(
        "{path}: cannot lock the device ({reason}): another `diskbeat rekey` is probably running on \
         this host. Wait for it to finish and check with `diskbeat inspect {path}`"
    )]
    Locked { path: String, reason: String },
    #[error(
        "{path}: formatted for {formatted}-byte sectors but the device now has {device}-byte logical \
         sectors; refusing to write"
    )]
    SectorMismatch { path: String, formatted: u32, device: u32 },
    #[error(
        "{path}: cluster '{}' has no keyring (device bytes 512..1024 are zero: formatted before format \
         1.3); nothing was written. Re-format with a current `diskbeat mkfs` (after stopping every \
         daemon), or give the daemons a key file", escape_name(.cluster)
    )]
    NoKeyring { path: String, cluster: String },
    #[error(
        "{path}: the cluster keyring is corrupt ({reason}); refusing to rotate it, nothing was written. \
         Check the device; a keyring cannot be rebuilt without re-formatting"
    )]
    CorruptKeyring { path: String, reason: Corruption },
    #[error("{path}: {source}; nothing was written")]
    Rotate { path: String, source: RotateError },
    #[error("{path}: cannot make a new key: {reason}; nothing was written")]
    Random { path: String, reason: String },
    #[error(
        "{path}: writing the keyring sector ({len} bytes at offset {offset}) failed ({reason}): the \
         device may hold the old or the new keyring; check with `diskbeat inspect {path}` and re-run \
         rekey"
    )]
    Write { path: String, offset: u64, len: u32, reason: String },
    #[error(
        "{path}: read-back of the keyring sector failed ({what}): the device does not keep what is \
         written to it, or something else wrote to it meanwhile; check with `diskbeat inspect {path}`"
    )]
    Verify { path: String, what: String },
}

/// Takes an exclusive `flock` on the device's open file: two `rekey` on one host do not race.
/// (Two on different hosts can: run rekey from one host; see docs/FORMAT.md §17.)
fn lock(dev: &Device) -> Result<nix::fcntl::Flock<OwnedFd>, RekeyError> {
    let path = dev.path.display().to_string();
    let fd =
        dev.fd.try_clone().map_err(|e| RekeyError::Locked { path: path.clone(), reason: e.to_string() })?;
    nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        RekeyError::Locked {
            path,
            reason: if e == nix::errno::Errno::EWOULDBLOCK { "it is locked".into() } else { e.desc().into() },
        }
    })
}

/// The rotation window in seconds: `--window` rounded up, or 10 × the base timeout.
pub fn window_s(opts: &RekeyOptions, sb: &Superblock) -> u64 {
    let ms = opts.window_ms.map_or(10 * u64::from(sb.base_timeout_ms), u64::from);
    ms.div_ceil(1000)
}

/// Rotates the keyring of `path`: a new random key with the next id signs, the current key keeps
/// verifying for the window. Every refusal happens before the one write.
pub fn rekey(path: &Path, opts: &RekeyOptions) -> Result<RekeyReport, RekeyError> {
    let path_s = path.display().to_string();
    let dev = Device::open(path, Access::ReadWrite)?;
    let _lock = lock(&dev)?;
    let mut block = read_block0(&dev)?;
    let sb = superblock_of(&path_s, block.as_slice())?;
    let sector = dev.logical_sector_size;
    if sector > sb.layout.sector_size {
        return Err(RekeyError::SectorMismatch {
            path: path_s,
            formatted: sb.layout.sector_size,
            device: sector,
        });
    }
    let old = match Keyring::decode(keyring_bytes(block.as_slice()), &sb.cluster_uuid) {
        Ok(k) => k,
        Err(Corruption::Zeroed) => {
            return Err(RekeyError::NoKeyring { path: path_s, cluster: sb.cluster_name.clone() })
        }
        Err(reason) => return Err(RekeyError::CorruptKeyring { path: path_s, reason }),
    };
    let window_s = window_s(opts, &sb);
    let key = generate_key().map_err(|reason| RekeyError::Random { path: path_s.clone(), reason })?;
    let new = old
        .rotated(key, now_unix_s(), window_s)
        .map_err(|source| RekeyError::Rotate { path: path_s.clone(), source })?;

    // The logical sector holding bytes 512..1024: [512, 1024) on 512-byte sectors, [0, 4096) on
    // 4Kn (the superblock in it is rewritten exactly as read).
    let offset = keyring::OFFSET / u64::from(sector) * u64::from(sector);
    let (start, len) = (offset as usize, sector as usize);
    let mut image = [0u8; STRUCT_SIZE];
    new.encode(&mut image);
    block.as_mut_slice()[keyring::OFFSET as usize..][..STRUCT_SIZE].copy_from_slice(&image);
    let expected = block.as_slice()[start..start + len].to_vec();
    let write_err = |reason: String| RekeyError::Write { path: path_s.clone(), offset, len: sector, reason };
    match nix::sys::uio::pwrite(dev.fd.as_fd(), &block.as_slice()[start..start + len], offset as i64) {
        Ok(n) if n == len => {}
        Ok(n) => return Err(write_err(format!("short write ({n} bytes)"))),
        Err(e) => return Err(write_err(e.desc().into())),
    }

    // Read back: the sector as written, the superblock unchanged, the keyring the one we built.
    let verify = |what: String| RekeyError::Verify { path: path_s.clone(), what };
    let back = read_block0(&dev).map_err(|e| verify(e.to_string()))?;
    if back.as_slice()[start..start + len] != expected[..] {
        return Err(verify("the sector differs from what was written".into()));
    }
    match superblock_of(&path_s, back.as_slice()) {
        Ok(s) if s == sb => {}
        Ok(_) => return Err(verify("the superblock changed".into())),
        Err(e) => return Err(verify(format!("the superblock no longer reads: {e}"))),
    }
    match Keyring::decode(keyring_bytes(back.as_slice()), &sb.cluster_uuid) {
        Ok(k) if k == new => {}
        Ok(_) => return Err(verify("the keyring differs".into())),
        Err(c) => return Err(verify(format!("the keyring does not validate: {c}"))),
    }
    Ok(RekeyReport { superblock: sb, old, new, window_s, written: (offset, sector) })
}
