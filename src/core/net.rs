//! The network side of one host's heartbeat state: which peers it hears on which network, and
//! what their packets say. Pure and preallocated: accepting a packet never allocates.
//!
//! Packets arrive MAC-verified (the I/O side holds the key, `net::Packet::verify`). Here they are
//! checked for destination, replay and stale generation (`net::ReplayGuard`, one per network: the
//! same packet legitimately arrives once on each), then remembered per sender.

use crate::format::record::NetView;
use crate::net::{DropCounters, DropReason, Packet, ReplayGuard};

/// Heartbeat networks a host may use (two addresses, docs/PROTOCOL.md §1).
pub const MAX_NETWORKS: usize = 2;

/// The newest packet accepted from one peer (any network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPacket {
    pub generation: u64,
    pub sequence: u64,
    /// On our clock.
    pub received_ms: u64,
    pub network: u8,
    pub disk_lost: bool,
    /// The sender's `disk_age_ms` ([`crate::net::packet::DISK_AGE_NEVER`]: never).
    pub disk_age_ms: u64,
    /// Our own send time echoed back (0: the sender has not accepted a packet of ours yet).
    pub echo_ms: u64,
    /// The sender's `send_monotonic_ms` (its clock): echoed back in our packets to it.
    pub send_ms: u64,
    pub net_view: NetView,
}

/// What we know of one peer on the network.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetPeer {
    /// Reception time (our clock) of the newest packet accepted on each network.
    pub heard_ms: [Option<u64>; MAX_NETWORKS],
    /// Packets accepted on each network.
    pub accepted: [u64; MAX_NETWORKS],
    pub last: Option<PeerPacket>,
    /// The echo carried by the newest packet in which this peer vouched that it lost the disk
    /// (`disk_lost`, reads failing for at least the read gap): evidence for a whole-LUN
    /// ride-through, still valid after the peer's disk came back (it then restarts its silence
    /// clocks; docs/SAFETY.md, "Whole-LUN loss").
    pub vouch_echo_ms: Option<u64>,
}

impl NetPeer {
    /// Heard on `network` within `timeout_ms` before `now_ms`.
    pub fn heard_on(&self, network: usize, now_ms: u64, timeout_ms: u64) -> bool {
        matches!(self.heard_ms.get(network), Some(Some(t)) if now_ms < t + timeout_ms)
    }

    /// Heard on any network within `timeout_ms`.
    pub fn heard(&self, now_ms: u64, timeout_ms: u64) -> bool {
        (0..MAX_NETWORKS).any(|n| self.heard_on(n, now_ms, timeout_ms))
    }
}

/// Per-host network state kept by [`super::Node`].
#[derive(Debug, Clone)]
pub struct NetState {
    pub peers: Vec<NetPeer>,
    guards: [ReplayGuard; MAX_NETWORKS],
    pub drops: DropCounters,
    /// Sequence of our last beat (all packets of one beat share it).
    pub beat_sequence: u64,
    pub next_beat_ms: u64,
    pub beats_sent: u64,
    /// Send time of our first beat (this incarnation): an echo older than it, or later than now,
    /// is from another boot or incarnation of ours, never evidence (review finding: after a
    /// reboot the monotonic clock restarts, and a peer may still echo a time of the old boot).
    pub first_beat_ms: Option<u64>,
}

impl NetState {
    pub fn new(slot_count: u32) -> NetState {
        NetState {
            peers: vec![NetPeer::default(); slot_count as usize],
            guards: [ReplayGuard::new(slot_count), ReplayGuard::new(slot_count)],
            drops: DropCounters::new(),
            beat_sequence: 0,
            next_beat_ms: 0,
            beats_sent: 0,
            first_beat_ms: None,
        }
    }

    /// The disk shows `slot` at `generation`: packets of older incarnations are stale.
    pub fn raise_min_generation(&mut self, slot: u32, generation: u64) {
        for g in &mut self.guards {
            g.raise_min_generation(slot, generation);
        }
    }

    /// Checks and remembers a verified packet received on `network` at `now_ms`.
    pub fn accept(
        &mut self,
        own_slot: u32,
        now_ms: u64,
        network: usize,
        p: &Packet,
    ) -> Result<(), DropReason> {
        if p.dest_slot != own_slot {
            return Err(DropReason::WrongDestination);
        }
        if p.sender_slot == own_slot || p.sender_slot as usize >= self.peers.len() || network >= MAX_NETWORKS
        {
            return Err(DropReason::BadSlot);
        }
        self.guards[network].accept(p.sender_slot, p.generation, p.sequence)?;
        let peer = &mut self.peers[p.sender_slot as usize];
        peer.heard_ms[network] = Some(now_ms);
        peer.accepted[network] += 1;
        // Keep the newest content: the other network may have delivered a later beat already.
        let newer = peer.last.is_none_or(|l| (p.generation, p.sequence) > (l.generation, l.sequence));
        if newer {
            peer.last = Some(PeerPacket {
                generation: p.generation,
                sequence: p.sequence,
                received_ms: now_ms,
                network: network as u8,
                disk_lost: p.disk_lost(),
                disk_age_ms: p.disk_age_ms,
                echo_ms: p.echo_ms,
                send_ms: p.send_monotonic_ms,
                net_view: p.net_view,
            });
        }
        Ok(())
    }
}
