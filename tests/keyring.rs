//! The cluster keyring on real loop devices: mkfs writes it, `rekey` rotates it, refusals leave
//! the device byte-identical, and key bytes never appear in any output (docs/FORMAT.md §17).

mod common;
use common::*;
use diskbeat::format::keyring::Keyring;

/// The keyring as it is on the device, decoded with the superblock's cluster uuid.
fn disk_keyring(lo: &LoopDev) -> Keyring {
    let block = read_direct(lo.path(), 0, Some(4096));
    let sb = diskbeat::format::superblock::Superblock::decode(&block).expect("superblock");
    assert!(block[1024..].iter().all(|&b| b == 0), "bytes 1024..4096 of block 0 stay zero");
    Keyring::decode(&block[512..1024], &sb.cluster_uuid).expect("keyring")
}

fn mkfs(lo: &LoopDev) {
    let out = run(&["mkfs", lo.s(), "--slots", "4", "--timeout", "2s", "--force", "--observe", "100ms"]);
    assert!(out.status.success(), "mkfs: {}", stderr(&out));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Neither the key's hex (either case) nor its raw bytes nor a decimal rendering appear in `out`.
fn assert_key_absent(what: &str, out: &std::process::Output, key: &[u8; 32]) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream).to_ascii_lowercase();
        let h = hex(key);
        // Any 8-byte window of the key, in hex: catches partial dumps too.
        for w in 0..=(64 - 16) {
            assert!(!text.contains(&h[w..w + 16]), "{what}: key hex found in output:\n{text}");
        }
        assert!(
            !stream.windows(8).any(|w| key.windows(8).any(|k| k == w)),
            "{what}: raw key bytes in output"
        );
        let decimal = key[..6].iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
        assert!(!text.contains(&decimal), "{what}: key as a decimal list in output");
    }
}

/// The detector itself: it does find a key that is printed.
#[test]
fn the_leak_detector_detects() {
    let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
    let out = |stdout: Vec<u8>| std::process::Output {
        status: std::process::ExitStatus::default(),
        stdout,
        stderr: Vec::new(),
    };
    assert_key_absent("clean", &out(b"key id 1".to_vec()), &key);
    for leak in [
        format!("x {} y", hex(&key[4..12])).into_bytes(),
        hex(&key[20..28]).to_uppercase().into_bytes(),
        key[10..18].to_vec(),
        format!("{:?}", &key[..]).into_bytes(),
    ] {
        let caught = std::panic::catch_unwind(|| assert_key_absent("leak", &out(leak.clone()), &key));
        assert!(caught.is_err(), "not caught: {:?}", String::from_utf8_lossy(&leak));
    }
}

#[test]
fn mkfs_writes_a_random_key_1() {
    if skip_unless_root() {
        return;
    }
    for sector in [512, 4096] {
        let lo = LoopDev::new("64M", sector);
        mkfs(&lo);
        let first = disk_keyring(&lo);
        assert_eq!(first.current.id, 1);
        assert!(first.previous.is_none());
        assert_eq!(first.version_minor, diskbeat::format::VERSION_MINOR);
        let k = first.current.key.expose();
        let distinct: std::collections::HashSet<u8> = k.iter().copied().collect();
        assert!(distinct.len() > 8, "32 random bytes have more than 8 distinct values: {}", distinct.len());
        // A second format makes another key.
        mkfs(&lo);
        let second = disk_keyring(&lo);
        assert_eq!(second.current.id, 1);
        assert_ne!(first.current.key, second.current.key, "two mkfs runs gave the same key");
        let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "0", "--json"]));
        assert_eq!(
            v["superblock"]["format_version"],
            format!("{}.{}", diskbeat::format::VERSION_MAJOR, diskbeat::format::VERSION_MINOR)
        );
        assert_eq!(v["keyring"]["status"], "ok");
        assert_eq!(v["keyring"]["current_key_id"], 1);
        assert_eq!(v["keyring"]["previous_key_id"], serde_json::Value::Null);
    }
}

#[test]
fn rekey_rotates_and_keeps_the_old_key_for_the_window() {
    if skip_unless_root() {
        return;
    }
    for sector in [512, 4096] {
        let lo = LoopDev::new("64M", sector);
        mkfs(&lo);
        let before = read_direct(lo.path(), 0, Some(4096));
        let k1 = disk_keyring(&lo);
        let out = run(&["rekey", lo.s(), "--json"]);
        assert_eq!(out.status.code(), Some(0), "rekey: {}", stderr(&out));
        let v = stdout_json(&out);
        let k2 = disk_keyring(&lo);
        assert_eq!((v["old_key_id"].as_u64(), v["new_key_id"].as_u64()), (Some(1), Some(2)));
        assert_eq!(v["window_s"], 20, "default window: 10 x the 2 s base timeout");
        assert_eq!(v["dropped_key_id"], serde_json::Value::Null);
        assert_eq!(v["written"]["len"], sector);
        assert_eq!(v["written"]["offset"], if sector == 512 { 512 } else { 0 });
        assert_eq!(k2.current.id, 2);
        assert_ne!(k2.current.key, k1.current.key);
        let prev = k2.previous.expect("previous key");
        assert_eq!((prev.id, prev.key, prev.created_unix_s), (1, k1.current.key, k1.current.created_unix_s));
        assert_eq!(prev.valid_until_unix_s, k2.current.created_unix_s + 20);
        assert_eq!(v["previous_valid_until_unix_s"], prev.valid_until_unix_s);
        // The superblock is untouched (on 4Kn it was rewritten as read).
        let after = read_direct(lo.path(), 0, Some(4096));
        assert_eq!(before[..512], after[..512]);

        // Again, with --window: key 1 is dropped, key 2 becomes the previous one.
        let out = run(&["rekey", lo.s(), "--window", "5m"]);
        assert_eq!(out.status.code(), Some(0), "rekey: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for want in ["id 3 (new)", "dropped key", "id 1", "300 s"] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        let k3 = disk_keyring(&lo);
        let prev = k3.previous.unwrap();
        assert_eq!((k3.current.id, prev.id, prev.key), (3, 2, k2.current.key));
        assert_eq!(prev.valid_until_unix_s, k3.current.created_unix_s + 300);

        let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "0", "--json"]));
        let k = &v["keyring"];
        assert_eq!((k["current_key_id"].as_u64(), k["previous_key_id"].as_u64()), (Some(3), Some(2)));
        assert_eq!(k["previous_valid_until_unix_s"], prev.valid_until_unix_s);
        assert_eq!(k["previous_in_window"], true);
        // Times for people: RFC 3339 UTC beside the Unix seconds, and in the human output.
        let until = diskbeat::inspect::rfc3339(prev.valid_until_unix_s);
        assert_eq!(k["previous_valid_until_rfc3339"], until.as_str());
        assert_eq!(
            k["current_created_rfc3339"],
            diskbeat::inspect::rfc3339(k3.current.created_unix_s).as_str()
        );
        let human = String::from_utf8(run(&["inspect", lo.s(), "--sample", "0"]).stdout).unwrap();
        assert!(human.contains(&format!("previous id 2 verifies until {until} (")), "{human}");
        // The daemon-side view: both keys verify during the window, only the new one after it.
        let ring = diskbeat::net::key::Keyring::from_disk(&k3, k3.current.created_unix_s);
        assert_eq!((ring.current().id(), ring.previous().map(|p| p.id())), (3, Some(2)));
        let ring = diskbeat::net::key::Keyring::from_disk(&k3, prev.valid_until_unix_s);
        assert!(ring.previous().is_none());
    }
}

#[test]
fn rekey_refuses_a_corrupt_or_missing_keyring_writing_nothing() {
    if skip_unless_root() {
        return;
    }
    let refused = |lo: &LoopDev, needle: &str| {
        let before = lo.hash();
        let out = run(&["rekey", lo.s(), "--json"]);
        assert_eq!(out.status.code(), Some(1), "rekey: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "expected '{needle}' in: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "no report on a refusal");
        assert_eq!(lo.hash(), before, "a refused rekey changed the device");
    };
    let lo = LoopDev::new("64M", 512);
    // Unformatted.
    refused(&lo, "no diskbeat superblock");
    mkfs(&lo);
    let good = read_direct(lo.path(), 0, Some(4096));
    // A flipped key byte: checksum mismatch.
    let mut block = good.clone();
    block[512 + 50] ^= 1;
    write_direct(lo.path(), 0, &block);
    refused(&lo, "cluster keyring is corrupt (checksum mismatch");
    // The keyring of another cluster (a copied block).
    let mut block = good.clone();
    block[512 + 16] ^= 0xFF;
    let crc = crc32c::crc32c(&block[516..1024]);
    block[512..516].copy_from_slice(&crc.to_le_bytes());
    write_direct(lo.path(), 0, &block);
    refused(&lo, "belongs to another cluster");
    // No keyring at all (a disk formatted before 1.3).
    let mut block = good.clone();
    block[512..1024].fill(0);
    write_direct(lo.path(), 0, &block);
    refused(&lo, "has no keyring");
    let v = stdout_json(&run(&["inspect", lo.s(), "--sample", "0", "--json"]));
    assert_eq!(v["keyring"]["status"], "missing");
    // A corrupt superblock over a good keyring.
    let mut block = good.clone();
    block[100] ^= 1;
    write_direct(lo.path(), 0, &block);
    refused(&lo, "superblock is corrupt");
    // Back to good: rekey works again.
    write_direct(lo.path(), 0, &good);
    assert_eq!(run(&["rekey", lo.s()]).status.code(), Some(0));
    // Bad options are usage errors, and write nothing either.
    let before = lo.hash();
    for args in [&["rekey", lo.s(), "--window", "0"][..], &["rekey", lo.s(), "--window", "soon"]] {
        assert_eq!(run(args).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(lo.hash(), before);
}

#[test]
fn key_bytes_never_appear_in_any_output() {
    if skip_unless_root() {
        return;
    }
    for sector in [512, 4096] {
        let lo = LoopDev::new("64M", sector);
        mkfs(&lo);
        let k1 = *disk_keyring(&lo).current.key.expose();
        for args in
            [&["inspect", lo.s(), "--sample", "0", "--json"][..], &["inspect", lo.s(), "--sample", "0"]]
        {
            assert_key_absent(&format!("{args:?}"), &run(args), &k1);
        }
        let out = run(&["rekey", lo.s(), "--json"]);
        assert!(out.status.success());
        let k2 = *disk_keyring(&lo).current.key.expose();
        for key in [&k1, &k2] {
            assert_key_absent("rekey --json", &out, key);
            for args in [
                &["inspect", lo.s(), "--sample", "0", "--json", "--all"][..],
                &["inspect", lo.s(), "--sample", "0"],
            ] {
                assert_key_absent(&format!("{args:?}"), &run(args), key);
            }
        }
        let out = run(&["rekey", lo.s()]);
        assert!(out.status.success());
        for key in [&k1, &k2, disk_keyring(&lo).current.key.expose()] {
            assert_key_absent("rekey", &out, key);
        }
    }
}

#[test]
fn interrupted_mkfs_keyring_is_not_other_data() {
    if skip_unless_root() {
        return;
    }
    // What an mkfs that crashed after writing its keyring but before its commit leaves in block 0:
    // a zero superblock and a keyring. mkfs must not call that "other data"; with the records that
    // mkfs had written it is `Remnants`, and alone it is blank.
    let lo = LoopDev::new("64M", 512);
    mkfs(&lo);
    let mut block = read_direct(lo.path(), 0, Some(4096));
    block[..512].fill(0);
    write_direct(lo.path(), 0, &block);
    let before = lo.hash();
    let out = run(&["mkfs", lo.s(), "--slots", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("heartbeat record or mailbox sectors"), "{}", stderr(&out));
    assert_eq!(lo.hash(), before);
    // Only the keyring left: blank enough to format at once.
    let lo = LoopDev::new("64M", 512);
    write_direct(lo.path(), 0, &block);
    let out = run(&["mkfs", lo.s(), "--slots", "4", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["observed_ms"], 0);
}
