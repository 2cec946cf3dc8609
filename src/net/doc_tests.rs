//! Parses docs/PROTOCOL.md and checks its numbers against the code: the version it names, the
//! layout, flags, check-order and drop-reason tables, and the worked test vector. If one fails,
//! either the protocol changed (bump the version, update the document) or the document is wrong.

use super::packet::{flags, PacketRaw, DISK_AGE_NEVER, MAC_LEN, MAC_OFFSET, MAGIC, PACKET_SIZE};
use super::{ClusterKey, DropReason, Keyring, Packet, VERSION_MAJOR, VERSION_MINOR};
use crate::format::record::NetView;
use crate::format::{MAX_SLOTS, NET_VIEW_BYTES};
use std::mem::offset_of;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// The text of section `heading` (up to the next `## `).
fn section(heading: &str) -> &'static str {
    let start = DOC.find(heading).unwrap_or_else(|| panic!("PROTOCOL.md has no {heading:?}"));
    let body = &DOC[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// Body rows of the first Markdown table after `marker`, as trimmed cells, backticks removed.
fn table_after(text: &str, marker: &str) -> Vec<Vec<String>> {
    let start = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
    let mut lines = text[start..].lines().skip_while(|l| !l.starts_with('|'));
    let _header = lines.next().unwrap_or_else(|| panic!("no table after {marker:?}"));
    assert!(lines.next().unwrap().starts_with("|---"), "table after {marker:?} has no separator");
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().replace('`', "")).collect())
        .collect()
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
    assert_eq!(receiver, want(&[DropReason::BadSlot, DropReason::StaleGeneration, DropReason::Replay]));
    assert!(table_after(text, "|")[7][1].contains(&format!("< {MAX_SLOTS}")));

    let reasons: Vec<(String, String)> =
        table("## 5. Drop reasons").iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let code: Vec<(String, String)> =
        DropReason::ALL.iter().map(|d| (format!("{d:?}"), d.name().to_string())).collect();
    assert_eq!(reasons, code);
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
        dest_slot: 0,
        echo_ms: 0,
    };
    let ring = Keyring::new(ClusterKey::new(stated("Key id") as u32, key));
    let mut b = [0u8; PACKET_SIZE];
    p.seal(&ring, &mut b).unwrap();
    assert_eq!(first.len(), 73);
    assert_eq!(&b[..73], &first[..]);
    assert!(text.contains("byte 327 = `0x80`"));
    assert_eq!(b[327], 0x80);
    assert!(b[73..327].iter().chain(&b[328..MAC_OFFSET]).all(|&x| x == 0));
    assert_eq!(&b[MAC_OFFSET..], &mac[..]);
    assert_eq!(*Packet::verify(&b, &ring, &cluster).unwrap().packet(), p);
}
