//! The control socket of a real daemon on a real loop device: what it refuses to replace, and
//! how it treats a client that sends an over-long request.

mod common;
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn formatted() -> LoopDev {
    let lo = LoopDev::new("32M", 512);
    let out = run(&["mkfs", lo.s(), "--slots", "4", "--timeout", "4s", "--cluster", "ctltest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lo
}

/// A daemon process, killed if a test ends (or panics) with it still running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(lo: &LoopDev, socket: &Path, log: &Path) -> Daemon {
    let child = Command::new(bin())
        .args(["daemon", "--device", lo.s(), "--slot", "0", "--name", "ctl"])
        .args(["--fence-action", "log-only", "--no-mlock", "--socket", socket.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Daemon(child)
}

/// Waits for `child` to exit (a bound, not a measurement: a daemon still running then is killed
/// and reported as `None`).
fn exit_code(d: &mut Daemon, limit: Duration) -> Option<i32> {
    let child = &mut d.0;
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn status(socket: &Path) -> Option<serde_json::Value> {
    let out = run(&["status", "--socket", socket.to_str().unwrap(), "--json"]);
    out.status.success().then(|| stdout_json(&out))
}

#[test]
fn refuses_to_replace_anything_but_a_stale_socket() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let content = b"not a socket: keep me\n";

    let file = dir.path().join("file.sock");
    std::fs::write(&file, content).unwrap();
    let subdir = dir.path().join("dir.sock");
    std::fs::create_dir(&subdir).unwrap();
    std::fs::write(subdir.join("inside"), content).unwrap();
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();

    for (path, what) in [(&file, "regular file"), (&subdir, "directory"), (&link, "symbolic link")] {
        let mut d = spawn(&lo, path, &log);
        let code = exit_code(&mut d, Duration::from_secs(20));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(code, Some(2), "{what}: {text}");
        assert!(text.contains("not a socket") && text.contains(what), "{what}: {text}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), content, "the regular file changed");
    assert_eq!(std::fs::read(subdir.join("inside")).unwrap(), content, "the directory changed");
    assert_eq!(std::fs::read_link(&link).unwrap(), file, "the symlink changed");

    // A stale socket (nobody listening) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut d = spawn(&lo, &stale, &log);
    let start = Instant::now();
    while status(&stale).is_none() && start.elapsed() < Duration::from_secs(20) {
        assert!(d.0.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(status(&stale).is_some(), "{}", std::fs::read_to_string(&log).unwrap());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert_eq!(exit_code(&mut d, Duration::from_secs(20)), Some(0));
}

#[test]
fn an_over_long_request_is_refused_and_the_daemon_keeps_answering() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let log = dir.path().join("daemon.log");
    let mut d = spawn(&lo, &socket, &log);
    let start = Instant::now();
    while status(&socket).is_none() && start.elapsed() < Duration::from_secs(20) {
        assert!(d.0.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(25));
    }

    let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The daemon may close before it has read everything: a failed write is expected then.
    let _ = c.write_all(&[b'x'; 64 * 1024]);
    // Everything up to the close (a reset once the reply is read: the request was left unread).
    let mut reply = Vec::new();
    let mut chunk = [0; 512];
    loop {
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the reply: {e}"),
        }
    }
    let reply = String::from_utf8(reply).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(reply.trim()).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"));
    assert!(v["error"].as_str().unwrap_or_default().contains("longer than"), "{v}");

    let s = status(&socket).expect("status after the over-long request");
    assert_eq!(s["self"]["name"], "ctl");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert_eq!(
        exit_code(&mut d, Duration::from_secs(20)),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
