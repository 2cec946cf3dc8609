//! The daemon's network side: UDP heartbeat sockets (one per heartbeat network), the thread that
//! receives, verifies and sends packets, and the isolation-address prober.
//!
//! It executes the core's network rules and holds none of its own: a received datagram is
//! verified (MAC, under the keyring) and handed to `Node::handle_packet` with the time it was
//! received; a beat is sent when `Node::poll_beat` says so, each packet built by
//! `Node::beat_packet`. The thread never waits on the disk: the node is shared behind a mutex the
//! heartbeat loop holds only between its I/Os, never across one.

use crate::core::Node;
use crate::net::{Keyring, Packet, PACKET_SIZE};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Heartbeat addresses of every slot, per network, as published in their data extents.
pub type AddressBook = Vec<[Option<SocketAddr>; crate::core::net::MAX_NETWORKS]>;

/// Longest the receive loop blocks before checking for a due beat (the node may start beating,
/// or stop, between two polls).
const POLL_MAX_MS: u64 = 100;

pub struct NetShared {
    pub node: Arc<Mutex<Node>>,
    pub keyring: Arc<RwLock<Keyring>>,
    pub addresses: Arc<Mutex<AddressBook>>,
    pub stop: Arc<AtomicBool>,
    /// Fed here when the node says so (`Node::poll_net_feed`): this thread never waits on the disk.
    pub watchdog: Option<Arc<crate::io::sys::Watchdog>>,
    /// The backup deadline thread's deadline (0: disarmed). The heartbeat loop sets it; this
    /// thread only extends an armed one to the node's own deadline, which packets move while
    /// riding through a whole-LUN outage: the loop may be blocked in a hanging I/O right then.
    pub backup_deadline: Arc<AtomicU64>,
}

/// Moves an armed backup deadline out to the node's deadline (never in, never arms it: the
/// heartbeat loop does both). The value is the node's own (`Node::fence_deadline_ms`: the storage
/// deadline, or the ride-through's end while every member vouches), so the backup thread fires no
/// later than the loop would have made it fire had it polled now.
fn extend_backup_deadline(shared: &NetShared) {
    let Some(d) = lock_node(&shared.node).fence_deadline_ms() else { return };
    let _ = shared
        .backup_deadline
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| (cur != 0 && d > cur).then_some(d));
}

pub fn lock_node(m: &Mutex<Node>) -> std::sync::MutexGuard<'_, Node> {
    // A panic elsewhere already fences and aborts (the panic hook): never stop on poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds one UDP socket per own heartbeat address (network i = address i).
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<UdpSocket>, String> {
    addrs
        .iter()
        .map(|a| {
            let s = UdpSocket::bind(a).map_err(|e| format!("cannot bind heartbeat address {a}: {e}"))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(s)
        })
        .collect()
}

/// Starts the network thread: receive on every socket, hand verified packets to the node, send
/// beats when due.
pub fn spawn(sockets: Vec<UdpSocket>, shared: NetShared, now_ms: fn() -> u64) {
    std::thread::Builder::new()
        .name("net".into())
        .spawn(move || run(sockets, shared, now_ms))
        .expect("spawn net thread");
}

fn run(sockets: Vec<UdpSocket>, shared: NetShared, now_ms: fn() -> u64) {
    let cluster = lock_node(&shared.node).config().cluster_uuid;
    let own_slot = lock_node(&shared.node).config().slot;
    // One byte more than a packet: a longer datagram is seen as such, not truncated to fit.
    let mut rx = [0u8; PACKET_SIZE + 1];
    let mut tx = [0u8; PACKET_SIZE];
    let mut send_errors: u64 = 0;
    // One beat per peer, built under the node lock and sent after: sized once, for every slot.
    let slots = lock_node(&shared.node).peers().len();
    let mut beats: Vec<(crate::net::Packet, [Option<std::net::SocketAddr>; 2])> = Vec::with_capacity(slots);
    while !shared.stop.load(Ordering::Relaxed) {
        // Wait for a datagram on any network, at most until the next beat may be due.
        {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let fd = |i: usize| PollFd::new(sockets[i].as_fd(), PollFlags::POLLIN);
            let now = now_ms();
            let next = lock_node(&shared.node).next_beat_ms().unwrap_or(now + POLL_MAX_MS);
            let timeout = PollTimeout::from(next.saturating_sub(now).clamp(1, POLL_MAX_MS) as u16);
            // Fixed arrays: nothing allocated per wake.
            let _ = if sockets.len() > 1 {
                poll(&mut [fd(0), fd(1)], timeout)
            } else {
                poll(&mut [fd(0)], timeout)
            };
        }
        for (network, socket) in sockets.iter().enumerate() {
            // Drain what is queued on this socket (non-blocking).
            loop {
                let n = match socket.recv_from(&mut rx) {
                    Ok((n, _from)) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(network, error = %e, "heartbeat socket receive failed");
                        break;
                    }
                };
                let at = now_ms();
                let verified = {
                    let ring = shared.keyring.read().unwrap_or_else(|e| e.into_inner());
                    Packet::verify(&rx[..n], &ring, &cluster)
                };
                let mut node = lock_node(&shared.node);
                match verified {
                    Ok(p) => {
                        let _ = node.handle_packet(at, network, p.version_minor(), p.packet());
                    }
                    Err(reason) => node.handle_drop(reason),
                }
            }
        }
        let now = now_ms();
        extend_backup_deadline(&shared);
        if let Some(w) = &shared.watchdog {
            if lock_node(&shared.node).poll_net_feed(now) {
                if let Err(e) = w.feed() {
                    tracing::error!(error = %e, "watchdog feed failed (network thread)");
                }
            }
        }
        // Under the node lock only what the node must do: decide and build the beats. Sealing
        // (a MAC per peer) and sending happen after it is released, so the heartbeat loop never
        // waits on this thread's crypto or socket buffers.
        beats.clear();
        {
            let mut node = lock_node(&shared.node);
            if !node.poll_beat(now) {
                continue;
            }
            let view = node.view_at(now);
            let book = shared.addresses.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, addrs) in book.iter().enumerate() {
                let slot = slot as u32;
                if slot == own_slot || addrs.iter().all(Option::is_none) {
                    continue;
                }
                debug_assert!(beats.len() < beats.capacity(), "sized for every slot: no allocation");
                beats.push((node.beat_packet(slot, now, &view), *addrs));
            }
        }
        let ring = shared.keyring.read().unwrap_or_else(|e| e.into_inner());
        for (packet, addrs) in &beats {
            if packet.seal(&ring, &mut tx).is_err() {
                continue;
            }
            for (network, socket) in sockets.iter().enumerate() {
                let Some(to) = addrs[network] else { continue };
                if let Err(e) = socket.send_to(&tx, to) {
                    // Unreachable networks fail every beat: log the first and every 1000th.
                    if send_errors % 1000 == 0 {
                        tracing::warn!(network, %to, error = %e, "heartbeat send failed");
                    }
                    send_errors += 1;
                }
            }
        }
    }
}

/// Probes the isolation addresses with ICMP echo every `interval`; an address counts as
/// reachable while its last reply is younger than `window` (the network timeout), so a single
/// lost ping does not flip the published flag.
pub fn spawn_isolation_prober(
    addrs: Vec<std::net::Ipv4Addr>,
    node: Arc<Mutex<Node>>,
    interval: Duration,
    window: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut pinger = crate::io::icmp::Pinger::new().map_err(|e| {
        format!("isolation addresses need an ICMP socket (run as root or with CAP_NET_RAW): {e}")
    })?;
    std::thread::Builder::new()
        .name("isolation".into())
        .spawn(move || {
            let mut last_reply: Option<std::time::Instant> = None;
            let mut seq: u16 = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                seq = seq.wrapping_add(1);
                for a in &addrs {
                    let _ = pinger.send(*a, seq);
                }
                // Collect replies until the next round.
                while started.elapsed() < interval {
                    if let Ok(Some(_)) = pinger.recv_reply(seq, interval.saturating_sub(started.elapsed())) {
                        last_reply = Some(std::time::Instant::now());
                    }
                }
                let reachable = last_reply.is_some_and(|t| t.elapsed() < window);
                lock_node(&node).handle_isolation(reachable);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
