//! Network heartbeat cost: `packet_seal` (encode and keyed BLAKE3 MAC) and `packet_verify`
//! (checks, MAC and decode), target under 2 µs each; `packet_receive_incl_seal` (verify, then
//! `Node::handle_packet`: destination, replay guard, per-peer state) and `beat_64` (one beat to 63
//! peers: the view, then per peer `Node::beat_packet` and seal), as the daemon's network thread
//! runs them. No allocation.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use diskbeat::core::{Node, NodeConfig};
use diskbeat::format::record::NetView;
use diskbeat::net::{ClusterKey, Keyring, Packet, PACKET_SIZE};
use diskbeat::timing::Timing;
use std::sync::atomic::Ordering;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{Counting, ALLOCS};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn bench(c: &mut Criterion) {
    let cluster = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let ring =
        Keyring::with_previous(ClusterKey::new(2, [0x42; 32]), ClusterKey::new(1, [0x17; 32])).unwrap();
    let mut net_view = NetView::EMPTY;
    for s in (0..2048).step_by(3) {
        net_view.set(s, true);
    }
    let mut packet = Packet {
        cluster_uuid: cluster,
        sender_slot: 17,
        generation: 4,
        sequence: 1,
        send_monotonic_ms: 1_000_000,
        disk_age_ms: 800,
        flags: 0,
        net_view,
        dest_slot: 3,
        echo_ms: 999_000,
    };
    let mut buf = [0u8; PACKET_SIZE];

    // Allocations per seal + verify (measured outside criterion, which allocates itself).
    const N: u64 = 10_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..N {
        packet.sequence = i;
        packet.seal(&ring, &mut buf).unwrap();
        let v = Packet::verify(&buf, &ring, &cluster).unwrap();
        assert_eq!(v.packet().sequence, i);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!("allocations per seal + verify: {} ({allocs} in {N})", allocs as f64 / N as f64);
    assert_eq!(allocs, 0, "sealing and verifying a packet must not allocate");

    c.bench_function("packet_seal", |b| {
        b.iter(|| {
            packet.sequence = packet.sequence.wrapping_add(1);
            black_box(&packet).seal(black_box(&ring), &mut buf).unwrap();
            buf[PACKET_SIZE - 1]
        })
    });
    packet.seal(&ring, &mut buf).unwrap();
    c.bench_function("packet_verify", |b| {
        b.iter(|| Packet::verify(black_box(&buf), black_box(&ring), black_box(&cluster)).unwrap())
    });

    // The receiving and sending paths through the node (64 slots, default T).
    let mut node = Node::new(
        NodeConfig {
            slot: 3,
            slot_count: 64,
            cluster_uuid: cluster,
            host_uuid: uuid::Uuid::from_u128(0xabc),
            host_name: diskbeat::format::encode_name("bench").unwrap(),
            timing: Timing::from_base(40_000).unwrap(),
            superblock: [0x5b; 512],
            watchdog: false,
            fence_stops_vms: true,
            skip_acquire_wait: false,
            networks: 1,
            weight: 1,
            isolation_configured: false,
            boot_id: uuid::Uuid::nil(),
            fence_suspicion_ms: 0,
        },
        1,
    );
    let mut incoming = packet;
    incoming.dest_slot = 3;
    let mut seq = 0u64;
    let mut receive = |node: &mut Node, buf: &mut [u8; PACKET_SIZE]| {
        seq += 1;
        incoming.sequence = seq;
        incoming.seal(&ring, buf).unwrap();
        let v = Packet::verify(buf, &ring, &cluster).unwrap();
        node.handle_packet(seq, 0, v.version_minor(), v.packet()).unwrap();
    };
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        receive(&mut node, &mut buf);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "receiving a packet must not allocate");
    // Sealing is part of this loop only to make fresh sequences; the figure reported subtracts
    // nothing: it is an upper bound of verify + handle_packet.
    c.bench_function("packet_receive_incl_seal", |b| b.iter(|| receive(&mut node, &mut buf)));

    let beat = |node: &Node, buf: &mut [u8; PACKET_SIZE]| {
        let now = 5_000;
        let view = node.view_at(now);
        for dest in (0..64).filter(|&d| d != 3) {
            let p = node.beat_packet(dest, now, &view);
            p.seal(&ring, buf).unwrap();
        }
        buf[0]
    };
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        beat(&node, &mut buf);
    }
    assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0, "a beat must not allocate");
    c.bench_function("beat_64", |b| b.iter(|| beat(black_box(&node), &mut buf)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
