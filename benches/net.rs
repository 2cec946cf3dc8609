//! Network heartbeat packet cost: `packet_seal` (encode + keyed BLAKE3 MAC) and `packet_verify`
//! (checks + MAC + decode). Target: under 2 µs each, no allocation.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use diskbeat::format::record::NetView;
use diskbeat::net::{ClusterKey, Keyring, Packet, PACKET_SIZE};
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
