//! Errors of the faultfs binary. Messages say what went wrong and what to do about it.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}\n\nrun `faultfs help` for usage")]
    Usage(String),

    #[error("backing directory {path}: {source} (create it and put the image there, e.g. `truncate -s 64M {path}/disk.img`)")]
    Backing { path: PathBuf, source: io::Error },

    #[error("cannot mount FUSE at {path}: {source} (are you root, does /dev/fuse exist and is fuse3 installed? is the mountpoint an existing empty directory that is not already mounted?)")]
    Mount { path: PathBuf, source: io::Error },

    #[error("control socket {path}: {source} (is `faultfs mount` running with this --control path?)")]
    Control { path: PathBuf, source: io::Error },

    #[error("faultfs daemon refused the request: {0}")]
    Refused(String),

    #[error("cannot unmount {path}: {source} (detach loop devices using it first: `losetup -j <file>` / `losetup -d`, or retry with --lazy)")]
    Umount { path: PathBuf, source: io::Error },

    #[error("faultfs daemon did not become ready: {0} (run with --foreground to see its output)")]
    NotReady(String),

    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;
