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
