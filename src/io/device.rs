//! Opening the heartbeat device with O_DIRECT and reading its geometry.

use super::IoError;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

nix::ioctl_read_bad!(blksszget, libc::BLKSSZGET, libc::c_int);
nix::ioctl_read_bad!(blkpbszget, libc::BLKPBSZGET, libc::c_uint);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// How the device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// O_RDONLY | O_DIRECT (inspect).
    ReadOnly,
    /// O_RDWR | O_DIRECT | O_DSYNC (daemon, probe).
    ReadWrite,
    /// O_RDWR | O_DIRECT | O_EXCL (on block devices: fails if mounted or claimed), without O_DSYNC:
    /// mkfs writes in bulk and orders its commit with explicit flushes (`Engine::flush`).
    Exclusive,
}

/// An open device and its geometry.
#[derive(Debug)]
pub struct Device {
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub access: Access,
    pub is_block: bool,
    /// Logical sector size: the O_DIRECT alignment unit and the atomic write unit we rely on.
    pub logical_sector_size: u32,
    /// Physical sector size (512e devices report 4096 here).
    pub physical_sector_size: u32,
    pub size_bytes: u64,
    /// Largest single request the device accepts (max_sectors_kb), a multiple of the logical sector.
    pub max_io_bytes: u32,
}

impl Device {
    pub fn open(path: &Path, access: Access) -> Result<Device, IoError> {
        let meta = std::fs::metadata(path).map_err(|e| IoError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
            hint: "check the path exists".into(),
        })?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            return Err(IoError::Open {
                path: path.to_owned(),
                reason: "not a block device or regular file".into(),
                hint: "pass the heartbeat LUN (e.g. /dev/sdX, /dev/loopN)".into(),
            });
        }
        let mut opts = std::fs::OpenOptions::new();
        let mut flags = libc::O_DIRECT | libc::O_CLOEXEC;
        match access {
            Access::ReadOnly => {
                opts.read(true);
            }
            Access::ReadWrite => {
                opts.read(true).write(true);
                flags |= libc::O_DSYNC;
            }
            Access::Exclusive => {
                opts.read(true).write(true);
                if is_block {
                    flags |= libc::O_EXCL;
                }
            }
        }
        opts.custom_flags(flags);
        // A diskbeat engine hands its fd back when dropped (uring.rs, `Drop for Uring`), but a
        // process killed with a ring open leaves the release to a kernel worker: an exclusive open
        // right after such a death can see EBUSY for a moment.
        let mut attempts = 0;
        let file = loop {
            match opts.open(path) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && access == Access::Exclusive
                        && attempts < 20 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => break r.map_err(|e| open_error(path, access, e))?,
            }
        };
        let fd: OwnedFd = file.into();
        let (logical, physical, size) = if is_block {
            let (mut l, mut p, mut s): (libc::c_int, libc::c_uint, u64) = (0, 0, 0);
            // SAFETY: each ioctl writes one integer of the declared type into a local we own;
            // the fd is a valid open block device.
            unsafe {
                blksszget(fd.as_raw_fd(), &mut l).map_err(|e| ioctl_error(path, "BLKSSZGET", e))?;
                blkpbszget(fd.as_raw_fd(), &mut p).map_err(|e| ioctl_error(path, "BLKPBSZGET", e))?;
                blkgetsize64(fd.as_raw_fd(), &mut s).map_err(|e| ioctl_error(path, "BLKGETSIZE64", e))?;
            }
            (l as u32, p, s)
        } else {
            // Regular files: 512-byte units, 4 KiB physical (what ext4/xfs accept for O_DIRECT on
            // common devices); the format and engine work in multiples of these.
            (512, 4096, meta.len())
        };
        if !logical.is_power_of_two() || !(512..=4096).contains(&logical) {
            return Err(IoError::Open {
                path: path.to_owned(),
                reason: format!("unsupported logical sector size {logical}"),
                hint: "diskbeat supports 512- and 4096-byte logical sectors".into(),
            });
        }
        let max_io_bytes = if is_block { max_io_bytes(path, &meta).unwrap_or(1 << 20) } else { 1 << 20 };
        let max_io_bytes = (max_io_bytes.clamp(logical.max(4096), 4 << 20) / logical) * logical;
        Ok(Device {
            path: path.to_owned(),
            fd,
            access,
            is_block,
            logical_sector_size: logical,
            physical_sector_size: physical.max(logical),
            size_bytes: size,
            max_io_bytes,
        })
    }
}

/// Reads /sys/dev/block/MAJ:MIN/queue/max_sectors_kb.
fn max_io_bytes(_path: &Path, meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let text = std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/queue/max_sectors_kb")).ok()?;
    text.trim().parse::<u32>().ok().map(|kb| kb.saturating_mul(1024))
}

fn open_error(path: &Path, access: Access, e: std::io::Error) -> IoError {
    let hint = match e.raw_os_error() {
        Some(libc::EINVAL) => {
            "the file system does not support O_DIRECT (tmpfs, some FUSE mounts): \
                               use a block device, or a file on ext4/xfs"
        }
        Some(libc::EBUSY) if access == Access::Exclusive => {
            "the device is in use (mounted, or claimed by another program): unmount it or pick another device"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied: run as root",
        Some(libc::EROFS) => "the device is read-only",
        Some(libc::ENOENT) => "no such device",
        _ => "check the path names the heartbeat LUN",
    };
    IoError::Open {
        path: path.to_owned(),
        reason: format!("cannot open with O_DIRECT: {e}"),
        hint: hint.into(),
    }
}

fn ioctl_error(path: &Path, name: &str, e: nix::errno::Errno) -> IoError {
    IoError::Open {
        path: path.to_owned(),
        reason: format!("{name} failed: {e}"),
        hint: "is this a block device?".into(),
    }
}
