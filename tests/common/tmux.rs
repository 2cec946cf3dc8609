//! A real terminal for the tests: a tmux server of the test's own (its own socket), killed with
//! everything in it when the guard drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tmux server of our own (its own socket), killed with everything in it on drop.
pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    pub fn new(dir: &Path) -> Tmux {
        Tmux { socket: dir.join("tmux.sock") }
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("run tmux")
    }

    /// Runs `command` (a shell line) in a detached 160x50 session `name`.
    pub fn start(&self, name: &str, command: &str) {
        // The terminal is the harness, not what is tested: a tmux server that dies while starting
        // (seen once under full load: "server exited unexpectedly") is started again.
        let mut out = self.cmd(&["new-session", "-d", "-s", name, "-x", "160", "-y", "50", command]);
        for _ in 0..2 {
            if out.status.success() || !stderr(&out).contains("server exited unexpectedly") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            out = self.cmd(&["new-session", "-d", "-s", name, "-x", "160", "-y", "50", command]);
        }
        assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
    }

    /// The visible screen of session `name`, one string per line.
    pub fn screen(&self, name: &str) -> Vec<String> {
        let out = self.cmd(&["capture-pane", "-p", "-t", name]);
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    /// Polls the screen until `cond` holds (a generous bound, not a measurement).
    pub fn wait_for(&self, name: &str, what: &str, cond: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let s = self.screen(name);
            if cond(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "waiting for {what}; screen:\n{}",
                s.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn keys(&self, name: &str, keys: &str) {
        let out = self.cmd(&["send-keys", "-t", name, keys]);
        assert!(out.status.success(), "tmux send-keys: {}", stderr(&out));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The exit status the shell line wrote to `file`, waited for.
pub fn exit_status_in(file: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the watch did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn have_tmux() -> bool {
    let ok = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
        panic!("tmux is missing; CI is set, so this test must not be skipped (tools/test.sh installs it)");
    }
    if !ok {
        eprintln!("SKIPPED: tmux is missing");
    }
    ok
}
