//! diskbeat: a high-availability layer for virtualization pools built around a shared heartbeat disk.
//!
//! Pure code (no syscalls, no clock): [`format`], [`timing`], [`planner`].
//! I/O: [`io`]. User interfaces: [`cli`].

pub mod cli;
pub mod core;
pub mod daemon;
pub mod disk;
pub mod fence;
pub mod format;
pub mod inspect;
pub mod io;
pub mod mkfs;
pub mod net;
pub mod planner;
pub mod probe;
pub mod rekey;
pub mod stats;
pub mod timing;
pub mod vm;
