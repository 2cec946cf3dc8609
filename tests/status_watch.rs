//! `diskbeat status --watch` against real daemons on a real loop device: in a real terminal
//! (tmux), redrawn in place, through the daemon going away, ended by q and by Ctrl-C; without a
//! terminal as plain frames; with --json as one document per line.

mod common;
#[path = "common/tmux.rs"]
mod tmux;
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tmux::{exit_status_in, have_tmux, Tmux};

/// A daemon process, killed if a test ends (or panics) with it still running.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free UDP port on loopback (free when asked: the daemon binds it right after).
fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two daemons (slots 0 and 1, `w0` and `w1`) heartbeating over loopback; returns them once slot 0
/// is live and hears slot 1.
fn pool(lo: &LoopDev, dir: &Path) -> (Daemon, Daemon) {
    let spawn = |slot: u32, port: u16| {
        let socket = dir.join(format!("w{slot}.sock"));
        let log = dir.join(format!("w{slot}.log"));
        let child = Command::new(bin())
            .args(["daemon", "--device", lo.s(), "--slot", &slot.to_string(), "--name", &format!("w{slot}")])
            .args(["--fence-action", "log-only", "--no-mlock", "--socket", socket.to_str().unwrap()])
            .args(["--hb-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, socket, log }
    };
    let d0 = spawn(0, udp_port());
    let d1 = spawn(1, udp_port());
    let start = Instant::now();
    loop {
        let out = run(&["status", "--socket", d0.socket.to_str().unwrap(), "--json"]);
        if out.status.success() {
            let s = stdout_json(&out);
            let hears = s["network"]["hears"].as_array().is_some_and(|a| a.iter().any(|x| x == 1));
            if s["self"]["state"] == "live" && hears {
                return (d0, d1);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no live pool\n{}\n{}", d0.log(), d1.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn watch_redraws_in_a_terminal_survives_the_daemon_and_quits_on_q_and_ctrl_c() {
    if skip_unless_root() || !have_tmux() {
        return;
    }
    let lo = formatted(512, 4, "watchtest");
    let dir = tempfile::tempdir().unwrap();
    let (mut d0, _d1) = pool(&lo, dir.path());
    let tmux = Tmux::new(dir.path());
    let exit_file = dir.path().join("watch.exit");
    let line = format!(
        "'{}' status --watch --interval 1s --socket '{}'; echo $? > '{}'",
        bin().display(),
        d0.socket.display(),
        exit_file.display()
    );
    tmux.start("watch", &line);

    let header = |s: &[String]| s.first().is_some_and(|l| l.starts_with("diskbeat status --watch"));
    let first = tmux.wait_for("watch", "the host live with its peer", |s| {
        header(s)
            && s[0].contains("host 'w0' (slot 0): live")
            && s.iter().any(|l| l.contains("Network: who hears whom"))
            && s.iter().any(|l| l.trim_start().starts_with("0  *  Y"))
            // The peer table: slot 1 seen live on the disk.
            && s.iter().any(|l| l.starts_with("1 ") && l.contains(" w1 ") && l.contains(" live "))
    });
    // Redrawn in place: the clock on line 1 moves, the header stays on line 1 and appears once.
    let second = tmux.wait_for("watch", "a redraw", |s| header(s) && s[0] != first[0]);
    for s in [&first, &second] {
        let headers = s.iter().filter(|l| l.starts_with("diskbeat status --watch")).count();
        assert_eq!(headers, 1, "the pane scrolled or the frame repeats:\n{}", s.join("\n"));
        assert!(s.len() <= 50, "{}", s.len());
    }

    // The daemon goes away: the watch says so and keeps asking.
    d0.stop();
    let down = tmux.wait_for("watch", "the daemon not answering", |s| {
        header(s) && s[0].contains("daemon not answering since")
    });
    assert!(down.iter().any(|l| l.contains("Last report, received")), "{}", down.join("\n"));
    assert!(!exit_file.exists(), "the watch exited when the daemon went away\n{}", d0.log());
    tmux.wait_for("watch", "another retry", |s| {
        header(s) && s[0] != down[0] && s[0].contains("not answering")
    });

    tmux.keys("watch", "q");
    assert_eq!(exit_status_in(&exit_file), "0", "exit status after q");

    // Ctrl-C ends it too, with 0; started with no daemon at all, it waits for one.
    let exit_file = dir.path().join("watch2.exit");
    let line = format!(
        "'{}' status --watch --socket '{}'; echo $? > '{}'",
        bin().display(),
        d0.socket.display(),
        exit_file.display()
    );
    tmux.start("watch2", &line);
    tmux.wait_for("watch2", "the daemon not answering", |s| header(s) && s[0].contains("not answering"));
    tmux.keys("watch2", "C-c");
    assert_eq!(exit_status_in(&exit_file), "0", "exit status after Ctrl-C");
}

/// Reads lines from `child`'s stdout until `enough` says so (a generous bound).
fn read_until(child: &mut Child, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    read_lines_until(child.stdout.take().unwrap(), enough)
}

/// Reads lines from `out` until `enough` says so (a generous bound).
fn read_lines_until(out: impl Read + Send + 'static, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    while !enough(&lines) {
        let left = Duration::from_secs(60).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("not enough output: {lines:#?}"),
        }
    }
    lines
}

/// Sends SIGINT and returns the exit code.
fn interrupt(child: &mut Child) -> Option<i32> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_without_a_terminal_prints_plain_frames_and_json_lines() {
    if skip_unless_root() {
        return;
    }
    let lo = formatted(512, 4, "watchplain");
    let dir = tempfile::tempdir().unwrap();
    let (mut d0, _d1) = pool(&lo, dir.path());
    let socket = d0.socket.clone();
    let socket = socket.to_str().unwrap();

    // Plain: frames after a blank line, no escape codes.
    let mut w = Killed(
        Command::new(bin())
            .args(["status", "--watch", "--interval", "200ms", "--socket", socket])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines =
        read_until(&mut w.0, |l| l.iter().filter(|l| l.starts_with("diskbeat status --watch")).count() >= 3);
    assert!(lines[0].starts_with("diskbeat status --watch") && lines[0].contains("host 'w0'"), "{lines:#?}");
    for (i, l) in lines.iter().enumerate().skip(1) {
        assert!(!l.contains('\u{1b}'), "escape code in {l:?}");
        if l.starts_with("diskbeat status --watch") {
            assert_eq!(lines[i - 1], "", "a frame not after a blank line: {lines:#?}");
        }
    }
    assert_eq!(interrupt(&mut w.0), Some(0));
    let mut err = String::new();
    w.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.is_empty(), "{err}");

    // JSON: one status document per line; once the daemon is gone, a JSON error line on stderr
    // per interval, and stdout stays documents only.
    let mut w = Killed(
        Command::new(bin())
            .args(["status", "--watch", "--json", "--interval", "200ms", "--socket", socket])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = read_until(&mut w.0, |l| l.len() >= 3);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["self"]["name"], "w0", "{l}");
    }
    d0.stop();
    let errors = read_lines_until(w.0.stderr.take().unwrap(), |l| l.len() >= 2);
    for l in &errors {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["kind"], "failed", "{l}");
        assert!(v["error"].as_str().unwrap().contains("cannot reach the daemon"), "{l}");
        assert!(v["not_answering_since"].is_string(), "{l}");
    }
    assert_eq!(interrupt(&mut w.0), Some(0), "still running after the daemon went away, then SIGINT");

    // --interval without --watch, or out of range, is a usage error.
    for args in [&["status", "--interval", "1s"][..], &["status", "--watch", "--interval", "10ms"][..]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
