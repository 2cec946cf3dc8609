//! `probe` leaves an unformatted device as it found it, and fails when it cannot write.

mod common;
use common::*;
use std::io::BufRead;

/// A read-only loop device (`losetup -r`: the flag goes away with the device, unlike
/// `blockdev --setro`, which outlives it on a loop device another test reuses).
struct ReadOnlyLoop {
    dev: String,
    _dir: tempfile::TempDir,
}

impl ReadOnlyLoop {
    fn over(image: &std::path::Path, dir: tempfile::TempDir) -> ReadOnlyLoop {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--direct-io=on"])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup -r: {}", String::from_utf8_lossy(&out.stderr));
        ReadOnlyLoop { dev: String::from_utf8(out.stdout).unwrap().trim().into(), _dir: dir }
    }
}

impl Drop for ReadOnlyLoop {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new(repo().join("tools/loopdev.sh")).args(["remove", &self.dev]).status();
    }
}

#[test]
fn probe_leaves_a_blank_device_blank() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("64M", 512);
    let before = lo.hash();
    let out = run(&["probe", lo.s(), "--seconds", "0.5", "--slots", "64"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lo.hash(), before, "probe changed a blank device");
    // ... so a plain mkfs (no --force) still sees a blank device.
    let out = run(&["mkfs", lo.s(), "--slots", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn probe_puts_other_data_back_with_force() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("16M", 512);
    let junk: Vec<u8> = (0..4096 + 65536).map(|i| (i % 251) as u8).collect();
    write_direct(lo.path(), 0, &junk);
    let before = lo.hash();
    let out = run(&["probe", lo.s(), "--seconds", "0.3", "--slots", "8", "--force", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["restored"], true);
    assert_eq!(lo.hash(), before);
}

#[test]
fn interrupted_probe_restores_the_device() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("16M", 512);
    let before = lo.hash();
    let mut child = std::process::Command::new(bin())
        .args(["probe", lo.s(), "--seconds", "600", "--slots", "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it measures (it says so on stderr), then Ctrl-C it.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "probe ended early: {seen}");
        seen.push_str(&line);
        if line.contains("record writes") {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}{rest}");
    assert!(rest.contains("interrupted") && rest.contains("put back"), "{rest}");
    assert_eq!(lo.hash(), before, "an interrupted probe left its writes behind");
}

#[test]
fn probe_on_a_read_only_device_fails() {
    if skip_unless_root() {
        return;
    }
    // Formatted as an image file, then attached read-only.
    let dir = tempfile::Builder::new().prefix("diskbeat-test").tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let out = run(&["mkfs", img.to_str().unwrap(), "--slots", "8", "--timeout", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lo = ReadOnlyLoop::over(&img, dir);
    let out = run(&["probe", &lo.dev, "--seconds", "0.3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("writes failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be written"), "{}", stderr(&out));
    let out = run(&["probe", &lo.dev, "--seconds", "0.3", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert!(v["writes"].as_u64().unwrap() > 0);
    assert_eq!(v["write_errors"], v["writes"]);
    assert!(v["recommended_base_timeout_ms"].is_null(), "{v}");
}

#[test]
fn probe_on_a_read_only_blank_device_fails_and_leaves_it_blank() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("diskbeat-test").tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    let lo = ReadOnlyLoop::over(&img, dir);
    let out = run(&["probe", &lo.dev, "--seconds", "0.3", "--slots", "8"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be written"), "{}", stderr(&out));
    assert!(read_direct(std::path::Path::new(&lo.dev), 0, None).iter().all(|&b| b == 0));
}
