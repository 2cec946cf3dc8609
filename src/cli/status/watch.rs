//! `diskbeat status --watch`: the status redrawn every interval, until q, Ctrl-C or SIGTERM.
//!
//! Three outputs: a terminal on stdout gets an alternate screen redrawn in place (never scrolled:
//! the frame is cut to the window); anything else gets each frame after a blank line, without
//! escape codes; `--json` gets one status document per line. A daemon that stops answering is
//! shown as such (since when, the last report) and asked again every interval.

use super::{query_within, render, text, Args};
use crate::cli::output::ms;
use crate::cli::{CliError, CliResult, EXIT_OK};
use crate::daemon::report::StatusReport;
use crate::format::host_state::Plan;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Above this many network-enabled hosts the matrix gives way to one line per host.
const GRID_MAX_HOSTS: usize = 16;
/// Restart assignments listed; the rest are counted.
const ASSIGNMENTS_SHOWN: usize = 20;
/// Longest wait for the daemon's answer: a hung daemon must not freeze the screen for long.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the wait between frames looks at the stop flag (signals) when no key can arrive.
const POLL_SLICE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A terminal: alternate screen, redrawn in place.
    Screen,
    /// Not a terminal: frames after a blank line, no escape codes.
    Plain,
    /// One JSON document per line.
    Json,
}

pub fn run(args: &Args) -> CliResult {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| CliError::fail(format!("cannot handle signal {sig}: {e}")))?;
    }
    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Screen
    } else {
        Mode::Plain
    };
    // Keys (q) only on a screen whose keyboard is ours; the guards put the terminal back on return.
    let mut keys = if mode == Mode::Screen && std::io::stdin().is_terminal() { Keys::new() } else { None };
    let _screen = (mode == Mode::Screen).then(AltScreen::enter);
    let interval = Duration::from_millis(u64::from(args.interval));
    let mut last: Option<(SystemTime, StatusReport)> = None;
    let mut down_since: Option<SystemTime> = None;
    let mut first = true;
    loop {
        let now = SystemTime::now();
        let answer = query_within(&args.socket, args.all, QUERY_TIMEOUT);
        if answer.is_ok() {
            down_since = None;
        } else if down_since.is_none() {
            down_since = Some(now);
        }
        let written = match (&answer, mode) {
            (Ok(v), Mode::Json) => {
                let line = serde_json::to_string(v).expect("a status report serializes");
                write_out(&format!("{line}\n"))
            }
            (Err(e), Mode::Json) => {
                let line = serde_json::json!({
                    "error": e,
                    "kind": "failed",
                    "time": rfc3339(now),
                    "not_answering_since": down_since.map(rfc3339),
                });
                // Stdout stays a stream of status documents; the failure goes to stderr.
                eprintln!("{line}");
                Ok(())
            }
            (answer, _) => {
                let frame = match answer {
                    Ok(v) => frame(now, v, args.interval),
                    Err(e) => down_frame(now, down_since.unwrap_or(now), e, last.as_ref(), args.interval),
                };
                if mode == Mode::Screen {
                    write_out(&screen(&frame))
                } else {
                    write_out(&format!("{}{frame}", if first { "" } else { "\n" }))
                }
            }
        };
        // Nobody reads any more (`| head`): done, not an error.
        if written.is_err() {
            return Ok(EXIT_OK);
        }
        if let Ok(v) = answer {
            last = Some((now, v));
        }
        first = false;
        let next = Instant::now() + interval;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(EXIT_OK);
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let slice = left.min(POLL_SLICE);
            match keys.as_mut() {
                Some(k) => match k.wait(slice) {
                    Key::Quit => return Ok(EXIT_OK),
                    Key::Closed => keys = None,
                    Key::Other => {}
                },
                None => std::thread::sleep(slice),
            }
        }
    }
}

/// Writes and flushes stdout.
fn write_out(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn every(interval_ms: u32) -> String {
    format!("every {}; q or Ctrl-C quits", ms(u64::from(interval_ms)))
}

/// A frame for a daemon that answered: header, the report `status` prints, the network matrix,
/// the restarts in progress.
fn frame(now: SystemTime, v: &StatusReport, interval_ms: u32) -> String {
    let mut out = format!(
        "diskbeat status --watch  {}  host '{}' (slot {}): {}  {}\n\n",
        rfc3339(now),
        text(&v.me.name),
        v.me.slot,
        text(&v.me.state),
        every(interval_ms)
    );
    out.push_str(&render(v));
    for section in [matrix(v), restarts(v)] {
        if !section.is_empty() {
            out.push('\n');
            out.push_str(&section.join("\n"));
            out.push('\n');
        }
    }
    out
}

/// A frame for a daemon that does not answer: since when, why, and the last report it gave.
fn down_frame(
    now: SystemTime,
    since: SystemTime,
    error: &str,
    last: Option<&(SystemTime, StatusReport)>,
    interval_ms: u32,
) -> String {
    let for_ms = now.duration_since(since).unwrap_or_default().as_millis() as u64;
    let mut out = format!(
        "diskbeat status --watch  {}  daemon not answering since {} ({} ago)  {}\n\n",
        rfc3339(now),
        rfc3339(since),
        ms(for_ms / 1000 * 1000),
        every(interval_ms)
    );
    out.push_str(&format!("  {}\n  asking again every {}\n", text(error), ms(u64::from(interval_ms))));
    if let Some((at, v)) = last {
        out.push_str(&format!("\nLast report, received {} (out of date):\n\n", rfc3339(*at)));
        out.push_str(&render(v));
    }
    out
}

/// Who hears whom: this host's row is what it hears now, each peer's what its last packet said.
fn matrix(v: &StatusReport) -> Vec<String> {
    let Some(net) = v.network.heartbeat.as_ref() else { return Vec::new() };
    // (slot, name, what it hears; None: no packet from it yet)
    let mut hosts: Vec<(u32, &str, Option<&[u32]>)> = vec![(v.me.slot, &v.me.name, Some(&net.hears[..]))];
    for p in &v.peers {
        if let Some(n) = &p.network {
            hosts.push((p.slot, &p.name, n.last_packet.as_ref().map(|l| &l.hears[..])));
        }
    }
    matrix_lines(hosts)
}

/// The matrix of `hosts` (slot, name, the slots it hears or None when unknown): a grid up to
/// GRID_MAX_HOSTS, a line per host above.
fn matrix_lines(mut hosts: Vec<(u32, &str, Option<&[u32]>)>) -> Vec<String> {
    hosts.sort_by_key(|h| h.0);
    let mut out =
        vec!["Network: who hears whom (this host now; each peer as its last packet said)".to_string()];
    if hosts.len() == 1 {
        out.push("  no peer on the network yet".into());
        return out;
    }
    if hosts.len() > GRID_MAX_HOSTS {
        for (slot, name, hears) in &hosts {
            out.push(match hears {
                Some(h) => format!(
                    "  {slot} '{}' hears {} of {}",
                    text(name),
                    h.iter().filter(|s| *s != slot).count(),
                    hosts.len() - 1
                ),
                None => format!("  {slot} '{}': no packet from it yet", text(name)),
            });
        }
        return out;
    }
    let w = hosts.iter().map(|h| h.0.to_string().len()).max().unwrap_or(1).max(2);
    let lw = "hears".len();
    out.push("  Row hears column: * self, Y hears, . does not hear, ? no packet from it yet.".into());
    let mut head = format!("  {:>lw$}", "hears");
    for h in &hosts {
        head.push_str(&format!(" {:>w$}", h.0));
    }
    out.push(head);
    for (slot, name, hears) in &hosts {
        let mut line = format!("  {slot:>lw$}");
        for (col, _, _) in &hosts {
            let c = match hears {
                _ if col == slot => "*",
                None => "?",
                Some(h) if h.contains(col) => "Y",
                Some(_) => ".",
            };
            line.push_str(&format!(" {c:>w$}"));
        }
        line.push_str(&format!("  {}", text(name)));
        out.push(line);
    }
    out
}

/// The restart plan's assignments: which VM goes from which slot to which.
fn restarts(v: &StatusReport) -> Vec<String> {
    match v.vms.failover.as_ref().and_then(|f| f.plan.as_ref().map(|p| (p, &f.plan_names))) {
        Some((plan, names)) => restart_lines(plan, names),
        None => Vec::new(),
    }
}

fn restart_lines(plan: &Plan, names: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    if plan.assignments.is_empty() {
        return Vec::new();
    }
    let mut out = vec![format!("Restarts in progress (plan {}):", plan.epoch.number)];
    for a in plan.assignments.iter().take(ASSIGNMENTS_SHOWN) {
        let vm = match names.get(&a.uuid.to_string()) {
            Some(n) => format!("'{}'", crate::format::escape_name(n)),
            None => a.uuid.to_string(),
        };
        out.push(format!(
            "  VM {vm} from slot {} to slot {} (attempt {}, wave {})",
            a.source_slot, a.target_slot, a.attempt, a.wave
        ));
    }
    if plan.assignments.len() > ASSIGNMENTS_SHOWN {
        out.push(format!("  ... and {} more (--json lists all)", plan.assignments.len() - ASSIGNMENTS_SHOWN));
    }
    out
}

/// The frame as a redraw in place: cursor home, each line cleared and cut to the window's width,
/// at most the window's height (so the terminal never scrolls and the header stays on top), the
/// rest of the screen cleared.
fn screen(frame: &str) -> String {
    let (cols, rows) = match terminal_size::terminal_size() {
        Some((terminal_size::Width(w), terminal_size::Height(h))) => (usize::from(w), usize::from(h)),
        None => (80, 24),
    };
    fit(frame, cols, rows)
}

fn fit(frame: &str, cols: usize, rows: usize) -> String {
    let rows = rows.max(1);
    // One column short of the width: a full line leaves the cursor pending a wrap, where a clear
    // would erase the line's last character.
    let width = cols.saturating_sub(1).max(1);
    let mut lines: Vec<String> = frame.lines().map(|l| l.chars().take(width).collect()).collect();
    if lines.len() > rows {
        let more = lines.len() - (rows - 1);
        lines.truncate(rows - 1);
        lines.push(format!("... {more} more lines: enlarge the window").chars().take(width).collect());
    }
    let mut out = String::from("\x1b[H");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str("\x1b[2K");
        out.push_str(l);
    }
    out.push_str("\x1b[J");
    out
}

/// The alternate screen with the cursor hidden, for as long as it lives.
struct AltScreen;

impl AltScreen {
    fn enter() -> AltScreen {
        let _ = write_out("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
        AltScreen
    }
}

impl Drop for AltScreen {
    fn drop(&mut self) {
        let _ = write_out("\x1b[?25h\x1b[?1049l");
    }
}

enum Key {
    Quit,
    Other,
    /// The keyboard is gone (end of file, error): stop reading it.
    Closed,
}

/// The keyboard without line buffering or echo (Ctrl-C still sends SIGINT); the terminal's
/// settings come back on drop.
struct Keys {
    saved: nix::sys::termios::Termios,
}

impl Keys {
    fn new() -> Option<Keys> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg, SpecialCharacterIndices};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Keys { saved })
    }

    /// Waits up to `limit` for a key.
    fn wait(&mut self, limit: Duration) -> Key {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let stdin = std::io::stdin();
        // At most 10 s, so the u16 holds it.
        let timeout = PollTimeout::from(limit.as_millis().min(10_000) as u16);
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Key::Other,
            Ok(_) => {}
            Err(_) => return Key::Closed,
        }
        let mut buf = [0u8; 64];
        match stdin.lock().read(&mut buf) {
            Ok(0) | Err(_) => Key::Closed,
            Ok(n) if buf[..n].iter().any(|b| matches!(b, b'q' | b'Q')) => Key::Quit,
            Ok(_) => Key::Other,
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_never_outgrows_the_window() {
        let frame: String = (0..100).map(|i| format!("line {i} {}\n", "x".repeat(200))).collect();
        let out = fit(&frame, 80, 24);
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines.len(), 24);
        assert!(lines[0].starts_with("\x1b[H\x1b[2Kline 0 "));
        assert!(lines[23].contains("77 more lines"), "{}", lines[23]);
        for l in &lines {
            let visible = l.replace("\x1b[H", "").replace("\x1b[2K", "").replace("\x1b[J", "");
            assert!(visible.chars().count() < 80, "{visible}");
        }
        assert!(out.ends_with("\x1b[J"));
    }

    #[test]
    fn the_matrix_marks_self_heard_unheard_and_unknown() {
        let lines = matrix_lines(vec![
            (3, "c", None),
            (0, "a", Some(&[1][..])),
            (1, "evil\u{1b}[2J", Some(&[0, 3][..])),
        ]);
        assert_eq!(lines[2], "  hears  0  1  3");
        assert_eq!(lines[3], "      0  *  Y  .  a");
        assert_eq!(lines[4], "      1  Y  *  Y  evil\\u{1b}[2J");
        assert_eq!(lines[5], "      3  ?  ?  *  c");
        assert_eq!(matrix_lines(vec![(0, "a", Some(&[][..]))])[1], "  no peer on the network yet");
        let all: Vec<u32> = (0..20).collect();
        let many: Vec<(u32, &str, Option<&[u32]>)> =
            (0..20).map(|s| (s, "h", if s == 7 { None } else { Some(&all[..]) })).collect();
        let lines = matrix_lines(many);
        assert_eq!(lines.len(), 21);
        assert_eq!(lines[1], "  0 'h' hears 19 of 19");
        assert_eq!(lines[8], "  7 'h': no packet from it yet");
    }

    #[test]
    fn restarts_list_the_assignments_up_to_a_bound() {
        use crate::format::host_state::{Assignment, Epoch};
        let a = |i: u128| Assignment {
            uuid: uuid::Uuid::from_u128(i),
            source_slot: 2,
            source_generation: 1,
            target_slot: 0,
            claim: 1,
            attempt: 1,
            wave: 0,
        };
        let mut plan = Plan {
            epoch: Epoch { number: 7, coordinator_slot: 0, coordinator_generation: 1 },
            assignments: vec![],
            unplaced: vec![],
        };
        let mut names = std::collections::BTreeMap::new();
        assert!(restart_lines(&plan, &names).is_empty());
        plan.assignments = (0..25).map(a).collect();
        names.insert(uuid::Uuid::from_u128(1).to_string(), "web\x1b[2J".to_string());
        let lines = restart_lines(&plan, &names);
        assert_eq!(lines[0], "Restarts in progress (plan 7):");
        assert_eq!(
            lines[1],
            "  VM 00000000-0000-0000-0000-000000000000 from slot 2 to slot 0 (attempt 1, wave 0)"
        );
        assert!(lines[2].starts_with("  VM 'web") && !lines[2].contains('\x1b'), "{}", lines[2]);
        assert_eq!(lines.len(), 1 + ASSIGNMENTS_SHOWN + 1);
        assert_eq!(lines[ASSIGNMENTS_SHOWN + 1], "  ... and 5 more (--json lists all)");
    }

    #[test]
    fn a_short_frame_is_drawn_whole() {
        let out = fit("a\nb\n", 80, 24);
        assert_eq!(out, "\x1b[H\x1b[2Ka\r\n\x1b[2Kb\x1b[J");
    }
}
