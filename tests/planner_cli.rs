//! `diskbeat plan` end to end: the built binary on pool files in a temporary directory.

use std::path::PathBuf;
use std::process::Command;

const POOL: &str = r#"
[[host]]
name = "h1"
memory_mib = 1000
[[host]]
name = "h2"
memory_mib = 1000
[[host]]
name = "h3"
memory_mib = 1000

[[vm]]
name = "web1"
memory_mib = 300
protection = "protect"
order = 1
host = "h1"
anti_affinity = "web"

[[vm]]
name = "web2"
memory_mib = 300
protection = "protect"
order = 1
host = "h2"
anti_affinity = "web"

[[vm]]
name = "batch"
memory_mib = 500
protection = "best-effort"
host = "h1"

[[vm]]
name = "tmp"
memory_mib = 100
protection = "none"
host = "h1"
"#;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diskbeat")).arg("plan").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn tolerance_json_fields() {
    let dir = tempfile::tempdir().unwrap();
    let pool = write(&dir, "pool.toml", POOL);
    let (code, out, err) = run(&[pool.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // h1 runs 900 MiB (600 protected... 300 protected): one failure fits, two do not.
    assert_eq!(v["tolerated_min"], 1);
    assert_eq!(v["tolerated_max"], 1);
    assert_eq!(v["exact"], true);
    assert_eq!(v["overcommitted"], false);
    assert_eq!(v["worst_case"].as_array().unwrap().len(), 2);
    assert!(v["elapsed_us"].is_u64());
    let (code, out, _) = run(&[pool.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("host failures tolerated: 1 (exact)"), "{out}");
}

#[test]
fn restart_plan_json() {
    let dir = tempfile::tempdir().unwrap();
    let pool = write(&dir, "pool.toml", POOL);
    let (code, out, err) = run(&[pool.to_str().unwrap(), "--fail", "h1", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let placements = v["placements"].as_array().unwrap();
    assert_eq!(placements[0]["vm"], "web1");
    assert_eq!(placements[0]["host"], "h3", "anti-affinity keeps web1 away from web2 on h2");
    assert_eq!(placements[0]["order"], 1);
    assert_eq!(placements[1]["vm"], "batch");
    let unplaced = v["unplaced"].as_array().unwrap();
    assert_eq!(unplaced.len(), 1);
    assert_eq!(unplaced[0]["vm"], "tmp");
    assert_eq!(unplaced[0]["reason"], "not-protected");
    let (code, out, _) = run(&[pool.to_str().unwrap(), "--fail", "h1,h2"]);
    assert_eq!(code, 0);
    assert!(out.contains("web1") && out.contains("web2"), "{out}");
}

#[test]
fn check_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = write(&dir, "pool.toml", POOL);
    let p = pool.to_str().unwrap();
    assert_eq!(run(&[p, "--check", "0"]).0, 0);
    assert_eq!(run(&[p, "--check", "1"]).0, 0);
    assert_eq!(run(&[p, "--check", "2"]).0, 1);
    assert_eq!(run(&[p, "--check", "9"]).0, 1);
    let bad = write(&dir, "bad.toml", "[[host]]\nname = \"h1\"\nmemory_mib = -1\n");
    let (code, _, err) = run(&[bad.to_str().unwrap(), "--check", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("memory_mib must be a positive integer"), "{err}");
    assert_eq!(run(&["/nonexistent/pool.toml", "--check", "1"]).0, 2);
    assert_eq!(run(&[p, "--check", "x"]).0, 2);
    assert_eq!(run(&[p, "--fail", "h9"]).0, 2);
    // A protected VM that cannot be restarted is a "no": exit 1, the plan still printed.
    let (code, out, _) = run(&[p, "--fail", "h1,h2,h3"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("WARNING: 2 protected VMs cannot be restarted"), "{out}");
    let (code, out, _) = run(&[p, "--fail", "h1,h2,h3", "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["protected_complete"], false);
    // Counts read as English: one failure, one host.
    let (code, out, _) = run(&[p, "--check", "1"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "tolerates 1 host failure: yes");
    assert!(run(&[p, "--fail", "h1"]).1.starts_with("restart plan if h1 fails:"));
}

#[test]
fn json_pool_and_no_protected_vms() {
    let dir = tempfile::tempdir().unwrap();
    let pool = write(
        &dir,
        "pool.json",
        r#"{"host":[{"name":"a","memory_mib":10},{"name":"b","memory_mib":10}],
            "vm":[{"name":"v","memory_mib":5,"protection":"best-effort","host":"a"}]}"#,
    );
    let (code, out, err) = run(&[pool.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tolerated_min"], 2);
    assert_eq!(v["exact"], true);
}

/// Issue "hostile input" item 4: names from a pool file reach the terminal escaped (a VM named
/// `ESC[2J` would clear it), in text output and in error messages; JSON carries them as data.
#[test]
fn names_are_escaped_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let pool = write(
        &dir,
        "evil.toml",
        "[[host]]\nname = \"h\\u001b]0;x\\u0007\"\nmemory_mib = 100\n[[host]]\nname = \"h2\"\nmemory_mib = 100\n\
         [[vm]]\nname = \"web\\u001b[2J\\u202e\"\nmemory_mib = 10\nprotection = \"protect\"\nhost = \"h2\"\n",
    );
    let p = pool.to_str().unwrap();
    for args in [vec![p, "--fail", "h2"], vec![p], vec![p, "--check", "2"], vec![p, "--fail", "h2", "--json"]]
    {
        let (code, out, err) = run(&args);
        assert!(code == 0 || code == 1, "{args:?}: {err}");
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{args:?}: {out:?}");
        // Text output escapes what would not print as itself too; JSON (serde) only controls.
        assert!(args.contains(&"--json") || !out.contains('\u{202e}'), "{args:?}: {out:?}");
    }
    let (_, out, _) = run(&[p, "--fail", "h2"]);
    assert!(out.contains("web\\u{1b}[2J\\u{202e}") && out.contains("h\\u{1b}]0;x\\u{7}"), "{out}");
    // JSON: the name itself, as data.
    let (_, out, _) = run(&[p, "--fail", "h2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["placements"][0]["vm"], "web\u{1b}[2J\u{202e}");
    // In an error message too (a VM on an undeclared host quotes both names).
    let bad =
        write(&dir, "bad.toml", "[[vm]]\nname = \"v\\u001b[2J\"\nmemory_mib = 1\nhost = \"x\\u001bc\"\n");
    let (code, _, err) = run(&[bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// A sparse image formatted with `slots` slots (no loop device, no root).
fn image(dir: &tempfile::TempDir, slots: u32) -> PathBuf {
    let img = dir.path().join("disk.img");
    let size = (2 * u64::from(slots) + 16) << 20;
    std::fs::File::create(&img).and_then(|f| f.set_len(size)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diskbeat"))
        .args([
            "mkfs",
            img.to_str().unwrap(),
            "--slots",
            &slots.to_string(),
            "--cluster",
            "c",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs: {}", String::from_utf8_lossy(&out.stderr));
    img
}

/// Publishes `payload` as `slot`'s host state under a live record, as a daemon would.
fn publish(disk: &mut diskbeat::disk::Disk, slot: u32, payload: &[u8]) {
    use diskbeat::format::record::{Record, State};
    let t = std::time::Duration::from_secs(5);
    let mut r = Record::free(disk.superblock().cluster_uuid, slot);
    r.state = State::Live;
    r.host_uuid = uuid::Uuid::from_u128(0xbeef_0000 + u128::from(slot));
    (r.generation, r.sequence, r.io_timeout_ms, r.interval_ms) = (1, 10, 500, 100);
    r.set_host_name(&format!("hv-{slot}")).unwrap();
    assert!(disk.write_record(&r, t).unwrap().is_done());
    disk.write_extent(slot, diskbeat::format::extent::kind::HOST_STATE, r.host_uuid, 1, payload, t).unwrap();
}

/// Issue "hostile input" item 4, `plan --device`: VM names published on the disk reach the
/// terminal escaped; a name with a control character makes the extent invalid (docs/FORMAT.md §7),
/// and the host is left out, said so on stderr.
#[test]
fn names_from_the_disk_are_escaped_or_refused() {
    use diskbeat::format::host_state::{HostCapacity, HostState, VmEntry, VmState};
    use diskbeat::planner::Protection;
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, 4);
    let mut disk = diskbeat::disk::Disk::open(
        &img,
        diskbeat::io::Access::ReadWrite,
        diskbeat::io::EngineKind::Auto,
        None,
    )
    .unwrap();
    let vm = |name: &str, uuid: u128| VmEntry {
        uuid: uuid::Uuid::from_u128(uuid),
        name: name.into(),
        memory_mib: 10,
        vcpus: 1,
        state: VmState::Running,
        protection: Protection::Protect,
        order: None,
        anti_affinity: None,
        claim: 1,
        attempt: 0,
        failure: None,
        definition: b"d".to_vec(),
    };
    let host = |vms| HostState {
        capacity: Some(HostCapacity { memory_mib: 100, vcpus: 8, accepts_restarts: true }),
        vms,
        ..HostState::default()
    };
    let encode = |h: &HostState| {
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        out
    };
    publish(&mut disk, 0, &encode(&host(vec![])));
    // Bidi override and zero-width space: valid on the disk, escaped on the terminal.
    publish(&mut disk, 1, &encode(&host(vec![vm("web\u{202e}\u{200b}", 1)])));
    // A name the encoder would refuse: written byte by byte, `ESC[2J` in place of `xxxx`.
    let mut raw = encode(&host(vec![vm("evilxxxx", 2)]));
    let at = raw.windows(4).position(|w| w == b"xxxx").unwrap();
    raw[at..at + 4].copy_from_slice(b"\x1b[2J");
    publish(&mut disk, 2, &raw);
    drop(disk);

    let dev = img.to_str().unwrap();
    let (code, out, err) = run(&["--device", dev, "--fail", "slot1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains('\u{202e}') && !out.contains('\u{200b}'), "{out:?}");
    assert!(out.contains("web\\u{202e}\\u{200b}"), "{out}");
    assert!(!out.contains('\u{1b}') && !err.contains('\u{1b}'), "{out:?} {err:?}");
    assert!(err.contains("live slot 2's data extent is invalid") && err.contains("name"), "{err}");
    let (code, out, _) = run(&["--device", dev, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["hosts"].as_u64(), v["vms"].as_u64()), (Some(2), Some(1)), "slot 2 left out: {v}");
}
