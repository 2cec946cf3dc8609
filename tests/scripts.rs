//! The helper scripts' refusals (no root needed: they refuse before touching a device).

mod common;
use common::*;
use std::process::Command;

#[test]
fn loopdev_create_refuses_to_overwrite_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious.img");
    let content = b"someone's data\n";
    std::fs::write(&file, content).unwrap();
    let out = Command::new(repo().join("tools/loopdev.sh"))
        .args(["create", file.to_str().unwrap(), "8M", "512"])
        .output()
        .expect("run tools/loopdev.sh");
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && dev.starts_with("/dev/loop") {
        // The old behaviour: do not leave the device behind.
        let _ = Command::new(repo().join("tools/loopdev.sh")).args(["remove", &dev]).status();
    }
    assert!(!out.status.success(), "created a loop device over an existing file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), content, "the existing file changed");
}
