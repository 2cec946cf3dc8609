//! Parses docs/PROTOCOL.md and checks its numbers against the code: the version it names, the
//! layout, flags, check-order and drop-reason tables, and the worked test vector. The receiver's
//! checks, one replay guard per network and one sequence per beat are checked against the
//! receiving core (`core::net::NetState`, `core::Node`) itself. If one fails, either the protocol
//! changed (bump the version, update the document) or the document is wrong.

use super::packet::{flags, PacketRaw, DISK_AGE_NEVER, MAC_LEN, MAC_OFFSET, MAGIC, PACKET_SIZE};
use super::{ClusterKey, DropReason, Keyring, Packet, VERSION_MAJOR, VERSION_MINOR};
use crate::core::net::{NetState, MAX_NETWORKS};
use crate::format::record::NetView;
use crate::format::{MAX_SLOTS, NET_VIEW_BYTES};
use std::mem::offset_of;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

#[path = "../../tests/common/markdown.rs"]
mod markdown;
use markdown::table_after;

/// The text of section `heading` (up to the next `## `).
fn section(heading: &str) -> &'static str {
    markdown::section(DOC, heading)
}

fn table(heading: &str) -> Vec<Vec<String>> {
    table_after(section(heading), "|")
}

fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("{s:?} is not a number: {e}"))
}

/// The first backtick span after `label` in `text` whose length is over 40 (a run of hex).
fn span_after<'a>(text: &'a str, label: &str) -> &'a str {
    let at = text.find(label).unwrap_or_else(|| panic!("no {label:?}"));
    text[at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|s| s.len() > 40)
        .unwrap_or_else(|| panic!("no hex after {label:?}"))
}

fn hex_bytes(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn doc_names_the_current_version() {
    let v = format!("{VERSION_MAJOR}.{VERSION_MINOR}");
    assert_eq!(DOC.lines().next().unwrap(), format!("# diskbeat network heartbeat protocol, version {v}"));
    let versioning = table("## 8. Versioning");
    assert!(versioning[0][1].contains(&format!("{v} today")), "§8 Version row: {:?}", versioning[0]);
    assert!(versioning[0][1].contains(&format!("minor {VERSION_MINOR}")));
    assert_eq!(table("## 11. Version history").last().unwrap()[0], v);
    assert!(section("## 1. Conventions").contains(&format!("Exactly **{PACKET_SIZE} bytes**")));
}

#[test]
fn doc_layout_table() {
    let rows = table("## 2. Packet layout");
    let doc: Vec<(String, u64, u64)> = rows.iter().map(|r| (r[3].clone(), num(&r[0]), num(&r[1]))).collect();
    let offsets = [
        ("magic", offset_of!(PacketRaw, magic)),
        ("version_major", offset_of!(PacketRaw, version_major)),
        ("version_minor", offset_of!(PacketRaw, version_minor)),
        ("key_id", offset_of!(PacketRaw, key_id)),
        ("cluster_uuid", offset_of!(PacketRaw, cluster_uuid)),
        ("sender_slot", offset_of!(PacketRaw, sender_slot)),
        ("flags", offset_of!(PacketRaw, flags)),
        ("generation", offset_of!(PacketRaw, generation)),
        ("sequence", offset_of!(PacketRaw, sequence)),
        ("send_monotonic_ms", offset_of!(PacketRaw, send_monotonic_ms)),
        ("disk_age_ms", offset_of!(PacketRaw, disk_age_ms)),
        ("net_view", offset_of!(PacketRaw, net_view)),
        ("dest_slot", offset_of!(PacketRaw, dest_slot)),
        ("reserved_pad", offset_of!(PacketRaw, reserved_pad)),
        ("echo_ms", offset_of!(PacketRaw, echo_ms)),
        ("reserved", offset_of!(PacketRaw, reserved)),
        ("mac", offset_of!(PacketRaw, mac)),
    ];
    let ends = offsets.iter().skip(1).map(|&(_, o)| o).chain([PACKET_SIZE]);
    let code: Vec<(String, u64, u64)> =
        offsets.iter().zip(ends).map(|(&(n, o), e)| (n.to_string(), o as u64, (e - o) as u64)).collect();
    assert_eq!(doc, code);
    assert_eq!((MAC_OFFSET, MAC_LEN, NET_VIEW_BYTES), (480, 32, 256));
    // Stated values: magic, versions, "never".
    assert_eq!(rows[0][4], String::from_utf8(MAGIC.to_vec()).unwrap());
    assert!(rows[1][4].ends_with(&format!(": {VERSION_MAJOR}")), "{:?}", rows[1]);
    assert!(rows[2][4].contains(&format!(": {VERSION_MINOR} (")), "{:?}", rows[2]);
    assert!(
        rows[10][4].contains(&format!("{DISK_AGE_NEVER:#X} = never").replace("0X", "0x")),
        "{:?}",
        rows[10]
    );
    let magic_hex = format!("({})", MAGIC.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" "));
    assert!(section("## 2. Packet layout").contains(&magic_hex.replace(['(', ')'], "`")), "{magic_hex}");
    assert!(section("## 2. Packet layout").contains(&format!("bytes **0..{MAC_OFFSET}**")));
}

#[test]
fn doc_flags_table() {
    let rows = table("## 3. Flags");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (num(&rows[0][0]), num(&rows[0][1]), rows[0][2].as_str()),
        (0, u64::from(flags::DISK_LOST), "disk_lost")
    );
    assert_eq!(num(&rows[1][1]), u64::from(!flags::KNOWN));
    assert!(rows[1][3].contains(&format!("minor ≤ {VERSION_MINOR} ")), "{:?}", rows[1]);
    assert_eq!(flags::KNOWN, flags::DISK_LOST);
}

#[test]
fn doc_check_order_and_drop_reasons() {
    let text = section("## 4. Verification order");
    let verify: Vec<String> = table_after(text, "|").iter().map(|r| r[2].clone()).collect();
    let receiver: Vec<String> =
        table_after(text, "Then, on the receiver").iter().map(|r| r[2].clone()).collect();
    let want = |ds: &[DropReason]| ds.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>();
    assert_eq!(verify, want(&DropReason::ALL[..8]));
    assert_eq!(receiver, want(&DRIVEN_ORDER));
    assert_eq!(receiver, want(&receiver_check_order()), "the table is NetState::accept's order");
    assert!(table_after(text, "|")[7][1].contains(&format!("< {MAX_SLOTS}")));
    assert!(table_after(text, "|")[6][1].contains(&format!("version_minor ≤ {VERSION_MINOR} (")));

    let reasons: Vec<(String, String)> =
        table("## 5. Drop reasons").iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let code: Vec<(String, String)> =
        DropReason::ALL.iter().map(|d| (format!("{d:?}"), d.name().to_string())).collect();
    assert_eq!(reasons, code);
}

/// The receiver's checks, in the order [`receiver_check_order`] finds them.
const DRIVEN_ORDER: [DropReason; 4] =
    [DropReason::WrongDestination, DropReason::BadSlot, DropReason::StaleGeneration, DropReason::Replay];

const OWN: u32 = 2;
const SLOTS: u32 = 8;

fn packet_from(sender_slot: u32, dest_slot: u32, generation: u64, sequence: u64) -> Packet {
    Packet {
        cluster_uuid: uuid::Uuid::nil(),
        sender_slot,
        generation,
        sequence,
        send_monotonic_ms: 1000 + sequence,
        disk_age_ms: 0,
        flags: 0,
        net_view: NetView::EMPTY,
        dest_slot,
        echo_ms: 0,
    }
}

/// Drives `NetState::accept` with a packet that fails every receiver check, and mends them one at
/// a time, each time recording which check refused it: the order the code applies them in.
fn receiver_check_order() -> Vec<DropReason> {
    let mut net = NetState::new(SLOTS);
    net.raise_min_generation(OWN, 5);
    net.raise_min_generation(4, 5);
    let mut order = Vec::new();
    let mut refused = |net: &mut NetState, p: &Packet| {
        let r = net.accept(OWN, 0, 0, p).expect_err("refused");
        order.push(r);
    };
    // Another destination, our own slot as sender, and a generation below the one the disk shows
    // for both sender slots used (ours, then 4).
    let mut p = packet_from(OWN, OWN + 1, 1, 10);
    refused(&mut net, &p);
    p.dest_slot = OWN;
    refused(&mut net, &p);
    p.sender_slot = 4;
    refused(&mut net, &p);
    p.generation = 5;
    net.accept(OWN, 0, 0, &p).unwrap();
    refused(&mut net, &p);
    order
}

/// §4 and §7: what each receiver check refuses, one replay guard per network, and the newest
/// content kept across networks.
#[test]
fn doc_receiver_checks_and_one_guard_per_network() {
    let text = section("## 7. Replay protection");
    assert!(text.contains("**one replay guard per heartbeat network** (at most two, `MAX_NETWORKS`)"));
    assert_eq!(MAX_NETWORKS, 2);
    let mut net = NetState::new(SLOTS);
    let accept = |net: &mut NetState, now, network, p: &Packet| net.accept(OWN, now, network, p);
    // Check 9: only packets addressed to us, whatever else they hold.
    for dest in [0, OWN + 1, MAX_SLOTS - 1, u32::MAX] {
        assert_eq!(accept(&mut net, 1, 0, &packet_from(3, dest, 1, 1)), Err(DropReason::WrongDestination));
    }
    // Check 10: a sender slot beyond the cluster's, or our own.
    assert_eq!(accept(&mut net, 1, 0, &packet_from(SLOTS, OWN, 1, 1)), Err(DropReason::BadSlot));
    assert_eq!(accept(&mut net, 1, 0, &packet_from(OWN, OWN, 1, 1)), Err(DropReason::BadSlot));
    // The same beat arrives once on each network: both copies are accepted, a second copy on
    // either network is a replay.
    let beat = packet_from(3, OWN, 1, 10);
    assert_eq!(accept(&mut net, 100, 0, &beat), Ok(()));
    assert_eq!(accept(&mut net, 101, 1, &beat), Ok(()));
    assert_eq!(accept(&mut net, 102, 0, &beat), Err(DropReason::Replay));
    assert_eq!(accept(&mut net, 102, 1, &beat), Err(DropReason::Replay));
    let peer = net.peers[3];
    assert_eq!((peer.heard_ms, peer.accepted), ([Some(100), Some(101)], [1, 1]));
    // A later beat on network 1, then an earlier one arriving late on network 0: both accepted
    // (each guard has seen neither), the content stays the newest.
    assert_eq!(accept(&mut net, 200, 1, &packet_from(3, OWN, 1, 12)), Ok(()));
    assert_eq!(accept(&mut net, 201, 0, &packet_from(3, OWN, 1, 11)), Ok(()));
    let peer = net.peers[3];
    assert_eq!(peer.heard_ms, [Some(201), Some(200)]);
    assert_eq!(peer.last.map(|l| (l.sequence, l.send_ms, l.network)), Some((12, 1012, 1)));
    // The disk's generation is raised in every guard.
    net.raise_min_generation(3, 2);
    for network in 0..MAX_NETWORKS {
        assert_eq!(
            accept(&mut net, 300, network, &packet_from(3, OWN, 1, 99)),
            Err(DropReason::StaleGeneration)
        );
    }
}

/// §2 and §7: one packet per destination per beat, all with the beat's sequence; `echo_ms` is the
/// send time of the newest packet accepted from the destination, 0 before any.
#[test]
fn doc_packets_of_a_beat() {
    use crate::core::{Node, NodeConfig};
    assert!(section("## 7. Replay protection").contains(
        "**Sequence numbers count beats, not packets.** A sender seals one packet per destination per\nbeat"
    ));
    let cfg = NodeConfig {
        slot: OWN,
        slot_count: SLOTS,
        cluster_uuid: uuid::Uuid::nil(),
        host_uuid: uuid::Uuid::from_u128(1),
        host_name: crate::format::encode_name("me").unwrap(),
        timing: crate::timing::Timing::from_base(4000).unwrap(),
        superblock: [0; 512],
        watchdog: false,
        fence_stops_vms: true,
        skip_acquire_wait: false,
        networks: 2,
        weight: 1,
        isolation_configured: false,
        boot_id: uuid::Uuid::nil(),
        fence_suspicion_ms: 0,
    };
    let mut node = Node::new(cfg, 0);
    let view = NetView::EMPTY;
    let to = |node: &Node, dest| node.beat_packet(dest, 50, &view);
    let (a, b) = (to(&node, 3), to(&node, 4));
    assert_eq!((a.dest_slot, b.dest_slot), (3, 4));
    assert_eq!(a.sequence, b.sequence, "one sequence per beat");
    assert_eq!((a.echo_ms, b.echo_ms), (0, 0), "nothing accepted yet");
    // A packet from slot 3 that left it at 1010 on its clock: echoed to 3, and to 3 only.
    assert_eq!(node.handle_packet(60, 0, super::VERSION_MINOR, &packet_from(3, OWN, 1, 10)), Ok(()));
    assert_eq!((to(&node, 3).echo_ms, to(&node, 4).echo_ms), (1010, 0));
    // A packet for another slot is dropped and counted.
    let stray = packet_from(4, 5, 1, 1);
    assert_eq!(node.handle_packet(61, 0, super::VERSION_MINOR, &stray), Err(DropReason::WrongDestination));
    assert_eq!(node.net().drops.get(DropReason::WrongDestination), 1);
    assert_eq!(DropReason::WrongDestination.name(), "wrong_destination");
}

#[test]
fn doc_test_vector() {
    let text = section("## 10. Test vector");
    let spans: Vec<&str> = text.split('`').skip(1).step_by(2).collect();
    let first = hex_bytes(spans.iter().find(|s| s.len() > 100).expect("the first bytes"));
    let mac = hex_bytes(spans.iter().find(|s| s.len() == 64).expect("the MAC"));
    let cluster = spans.iter().find_map(|s| uuid::Uuid::parse_str(s).ok()).expect("a cluster");
    // The fields, as the paragraph states them.
    let stated = |label: &str| -> u64 {
        let at = text.find(label).unwrap_or_else(|| panic!("vector states no {label:?}")) + label.len();
        num(text[at..].trim_start_matches(|c: char| c == '`' || c.is_whitespace()).split('`').next().unwrap())
    };
    let mut key = [0u8; 32];
    key.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    assert!(text.contains("key bytes `00 01 02 ... 1f` (byte *i* = *i*)"));
    let mut net_view = NetView::EMPTY;
    assert!(text.contains("net_view slots\n{0, 5, 2047}") || text.contains("net_view slots {0, 5, 2047}"));
    for s in [0, 5, 2047] {
        net_view.set(s, true);
    }
    assert!(text.contains("flags `disk_lost` (`0x1`)"));
    let p = Packet {
        cluster_uuid: cluster,
        sender_slot: stated("sender slot") as u32,
        generation: stated("generation"),
        sequence: stated("sequence"),
        send_monotonic_ms: stated("send_monotonic_ms"),
        disk_age_ms: stated("disk_age_ms"),
        flags: flags::DISK_LOST,
        net_view,
        dest_slot: stated("dest_slot") as u32,
        echo_ms: stated("echo_ms"),
    };
    assert_eq!((p.dest_slot, p.echo_ms), (7, 987_654_321));
    let ring = Keyring::new(ClusterKey::new(stated("Key id") as u32, key));
    let mut b = [0u8; PACKET_SIZE];
    p.seal(&ring, &mut b).unwrap();
    assert_eq!(first.len(), 73);
    assert_eq!(&b[..73], &first[..]);
    assert!(text.contains("byte 327 = `0x80`"));
    assert_eq!(b[327], 0x80);
    let dest_echo = hex_bytes(span_after(text, "bytes 328..344 are"));
    assert_eq!(&b[328..344], &dest_echo[..]);
    assert!(b[73..327].iter().chain(&b[344..MAC_OFFSET]).all(|&x| x == 0));
    assert_eq!(&b[MAC_OFFSET..], &mac[..]);
    assert_eq!(*Packet::verify(&b, &ring, &cluster).unwrap().packet(), p);
    // The same packet as 1.0 sealed it: minor 0, bytes 328..344 zero, the MAC stated.
    let old_mac = hex_bytes(span_after(text, "sealed by protocol 1.0"));
    let mut old = b;
    old[10..12].fill(0);
    old[328..344].fill(0);
    let tag = blake3::keyed_hash(&key, &old[..MAC_OFFSET]);
    assert_eq!(tag.as_bytes(), &old_mac[..]);
    old[MAC_OFFSET..].copy_from_slice(tag.as_bytes());
    let v = Packet::verify(&old, &ring, &cluster).unwrap();
    assert_eq!((v.version_minor(), v.packet().dest_slot, v.packet().echo_ms), (0, 0, 0));
}
