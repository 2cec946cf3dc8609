//! diskbeat: a high-availability layer for virtualization pools built around a shared heartbeat disk.
//!
//! Pure code (no I/O, no clock, no threads: it computes on what it is given): [`core`], [`format`], [`planner`], [`stats`], [`text`], [`timing`].
//! [`net`] is pure too but for `net::Keyring::from_key_file`, which reads the key file.
//! `tests/doc_drift.rs` checks this list against the sources.
//!
//! I/O: [`io`] (the I/O engines) and [`disk`] (the heartbeat disk on them). Programs on top:
//! [`daemon`] (the per-host daemon: the heartbeat loop around [`core::Node`], the network and VM
//! threads), the operator tools [`mkfs`], [`inspect`], [`probe`], [`fence`] and [`rekey`], the
//! Pacemaker fence agent [`fence_agent`] (on [`fence`]), and [`vm`] (the VM drivers). User
//! interfaces: [`cli`].

pub mod cli;
pub mod core;
pub mod daemon;
pub mod disk;
pub mod fence;
pub mod fence_agent;
pub mod format;
pub mod inspect;
pub mod io;
pub mod mkfs;
pub mod net;
pub mod planner;
pub mod probe;
pub mod rekey;
pub mod stats;
pub mod text;
pub mod timing;
pub mod vm;
