//! `fence_diskbeat` as Pacemaker's fencer runs it: through a `fence_diskbeat` symlink to the
//! built binary, with the arguments as `key=value` lines on stdin, against real daemons on a
//! loop device (T = 4 s). Exit statuses are fence-agents': 0 success, 1 failure, 2 status OFF.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `fence_diskbeat` symlink to the test binary, in a temporary directory.
struct Agent {
    link: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn new() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("fence_diskbeat");
        std::os::unix::fs::symlink(bin(), &link).unwrap();
        Agent { link, _dir: dir }
    }

    /// Runs the agent as the fencer does: no options, the arguments on stdin.
    fn stdin(&self, lines: &str) -> Output {
        let mut child = Command::new(&self.link)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs the agent with command-line options (stdin is not read).
    fn args(&self, args: &[&str]) -> Output {
        Command::new(&self.link).args(args).stdin(Stdio::null()).output().unwrap()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Shows an agent run when an assertion fails.
fn show(out: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), stdout(out), stderr(out))
}

/// Tags open and close in order, attributes are quoted, nothing but a declaration and one root.
fn well_formed(xml: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml.trim();
    rest = rest
        .strip_prefix("<?xml")
        .and_then(|r| r.split_once("?>"))
        .map(|(_, r)| r)
        .ok_or("no declaration")?;
    let mut roots = 0;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        if text.contains('>') || text.contains('&') {
            return Err(format!("unescaped markup in text: {text:?}"));
        }
        let end = rest[i..].find('>').ok_or("unclosed tag")? + i;
        let tag = &rest[i + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body.split_whitespace().next().ok_or("empty tag")?;
        if body.matches('"').count() % 2 != 0 || body.contains('<') {
            return Err(format!("bad attributes in <{body}>"));
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name.to_string());
        }
    }
    if !stack.is_empty() || roots != 1 || !rest.trim().is_empty() {
        return Err(format!("unbalanced: open {stack:?}, {roots} roots, trailing {rest:?}"));
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn metadata_is_fence_agents_xml_with_every_action() {
    let agent = Agent::new();
    let out = agent.stdin("# the fencer asks for metadata\naction=metadata\n");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let xml = stdout(&out);
    well_formed(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert!(xml.contains("<resource-agent name=\"fence_diskbeat\" shortdesc="), "{xml}");
    for el in ["<longdesc>", "<vendor-url>", "<parameters>", "<actions>"] {
        assert!(xml.contains(el), "{el}: {xml}");
    }
    for a in ["on", "off", "reboot", "status", "list", "list-status", "monitor", "metadata", "validate-all"] {
        assert!(xml.contains(&format!("<action name=\"{a}\"")), "action {a}: {xml}");
    }
    for p in ["action", "plug", "port", "nodename", "devices"] {
        assert!(xml.contains(&format!("<parameter name=\"{p}\"")), "parameter {p}: {xml}");
    }
    // The same from the command line and from `diskbeat fence-agent`.
    assert_eq!(stdout(&agent.args(&["-o", "metadata"])), xml);
    assert_eq!(stdout(&run(&["fence-agent", "--action", "metadata"])), xml);
    // xmllint, when installed, against fence-agents' own schema when that is installed too.
    if have("xmllint") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meta.xml");
        std::fs::write(&file, &xml).unwrap();
        let mut lint = Command::new("xmllint");
        lint.arg("--noout");
        let rng = Path::new("/usr/share/cluster/relaxng/metadata.rng");
        if rng.exists() {
            lint.arg("--relaxng").arg(rng);
        } else {
            eprintln!("NOTE: {} is missing: well-formedness only", rng.display());
        }
        let out = lint.arg(&file).output().unwrap();
        assert!(out.status.success(), "xmllint: {}", show(&out));
    } else {
        eprintln!("NOTE: no xmllint: checked by this test's own well-formedness check only");
    }
}

#[test]
fn options_and_refusals_without_a_device() {
    let agent = Agent::new();
    // Unknown keys are ignored with a note, as fence-agents do; a missing device fails validate-all.
    let out = agent.stdin("action=validate-all\ncolour=blue\ndevices=/nonexistent/hb-lun\n");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("Ignoring unknown option 'colour=blue'"), "{}", show(&out));
    assert!(stderr(&out).contains("/nonexistent/hb-lun does not exist"), "{}", show(&out));
    let out = agent.stdin("action=validate-all\n");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("no heartbeat device"), "{}", show(&out));
    // on is unsupported, whatever the device.
    let out = agent.stdin("action=on\nplug=n1\ndevices=/dev/null\n");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("action on is not supported"), "{}", show(&out));
    // Bad options are failures (1), never 2 (which says OFF to a fencer).
    for bad in [&["-o", "explode"][..], &["--no-such-option"], &["-o", "status", "--devices"]] {
        let out = agent.args(bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", show(&out));
    }
    let out = agent.stdin("action=explode\n");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // status and off need the host.
    let out = agent.args(&["-o", "status", "--devices", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("needs the host"), "{}", show(&out));
    for ok in [&["--version"][..], &["-V"], &["-h"], &["--help"]] {
        let out = agent.args(ok);
        assert_eq!(out.status.code(), Some(0), "{ok:?}: {}", show(&out));
        assert!(!out.stdout.is_empty(), "{ok:?}");
    }
    assert!(stdout(&agent.args(&["-h"])).contains("pcs stonith create"));
}

/// A daemon; killed on drop.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn spawn(dir: &Path, dev: &str, slot: u32, name: &str, fence_action: &str, extra: &[&str]) -> Daemon {
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin())
            .args(["daemon", "--device", dev, "--slot", &slot.to_string(), "--name", name])
            .args(["--fence-action", fence_action, "--no-mlock", "--socket", socket.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child: Some(child), socket, log }
    }

    fn status(&self) -> Option<Value> {
        let out = run(&["status", "--socket", self.socket.to_str().unwrap(), "--json"]);
        out.status.success().then(|| stdout_json(&out))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `d` is live and sees every slot of `peers` live.
fn all_live(d: &Daemon, peers: &[u64]) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(s) = d.status() {
            let live = |slot: u64| {
                s["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["slot"] == slot && p["state"] == "live"))
            };
            if s["self"]["state"] == "live" && peers.iter().all(|&p| live(p)) {
                return;
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not all live: {last:#?}\n{}", d.log());
}

#[test]
fn the_fencer_drives_every_action_on_real_daemons() {
    if skip_unless_root() {
        return;
    }
    let lo = LoopDev::new("32M", 512);
    let out = run(&["mkfs", lo.s(), "--slots", "4", "--timeout", "4s", "--cluster", "fagent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let dev = lo.s();
    // n1's fence action succeeds (and stops nothing here): its record becomes `fenced` with the
    // fence_stops_vms flag, the proof `off` needs. n0 and n2 only log.
    let mut n0 = Daemon::spawn(dir.path(), dev, 0, "n0", "log-only", &[]);
    let mut n1 = Daemon::spawn(dir.path(), dev, 1, "n1", "exec:/bin/true", &[]);
    let mut n2 = Daemon::spawn(dir.path(), dev, 2, "n2", "log-only", &[]);
    all_live(&n0, &[1, 2]);
    all_live(&n1, &[0, 2]);
    all_live(&n2, &[0, 1]);
    let agent = Agent::new();
    let ask = |lines: &str| agent.stdin(&format!("{lines}\ndevices={dev}\n"));

    let out = ask("action=list");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stdout(&out), "n0,\nn1,\nn2,\n");
    let out = ask("action=list-status");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stdout(&out), "n0,,ON\nn1,,ON\nn2,,ON\n");
    let out = ask("action=monitor");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Pacemaker logs an agent's stderr as warnings: quiet on success unless verbose.
    assert_eq!(stderr(&out), "", "{}", show(&out));
    let out = ask("action=monitor\nverbose=1");
    assert!(stderr(&out).contains("host(s) in"), "{}", show(&out));
    let out = ask("action=validate-all\nport=n1");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Pacemaker names the target with port= (or plug=) and nodename=.
    let out = ask("action=status\nport=n1\nnodename=n1");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "Status: ON\n"), "{}", show(&out));
    // The command-line form.
    let out = agent.args(&["-o", "status", "-n", "n0", "--devices", dev]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "Status: ON\n"), "{}", show(&out));
    let out = run(&["fence-agent", "-o", "status", "--plug", "slot2", "--devices", dev]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "Status: ON\n"), "{}", show(&out));
    // A free slot is off; a name on no record is an error.
    let out = ask("action=status\nplug=slot3");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(2), "Status: OFF\n"), "{}", show(&out));
    let out = ask("action=status\nplug=nobody");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("'nobody' is not on the heartbeat disk") && err.contains("(hosts: n0, n1, n2)"),
        "{err}"
    );

    // off n1: confirmed by its fenced mark, then status OFF.
    let out = ask("action=off\nplug=n1\nnodename=n1\nverbose=1");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), n1.log());
    assert_eq!(stdout(&out), "Success: Powered OFF\n");
    assert!(stderr(&out).contains("marked itself fenced, acknowledging the request"), "{}", show(&out));
    let s = n1.status().expect("n1 answers");
    assert_eq!(s["self"]["state"], "fenced", "{s:#}");
    assert_eq!(s["self"]["fence_reason"]["kind"]["reason"], "fence_request", "{s:#}");
    let out = ask("action=status\nplug=n1");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(2), "Status: OFF\n"), "{}", show(&out));
    // Again (reboot is off): already off, nothing sent.
    let out = ask("action=reboot\nplug=n1");
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "Success: Already OFF\n"),
        "{}",
        show(&out)
    );
    let out = ask("action=list-status");
    assert_eq!(stdout(&out), "n0,,ON\nn1,,OFF\nn2,,ON\n", "{}", show(&out));

    // n2 dies without a watchdog: status OFF once silent for the host-dead timeout, but off is
    // not proven (its daemon may have died with the host still running its resources).
    n2.kill();
    let out = ask("action=status\nplug=n2");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(2), "Status: OFF\n"), "{}", show(&out));
    let out = ask("action=off\nplug=n2");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("is NOT proven off: dead_without_watchdog"), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));

    // n0's fence action only logs: it marks itself fenced, which stops nothing: not proven.
    let out = ask("action=reboot\nplug=n0");
    assert_eq!(out.status.code(), Some(1), "{}\n{}", show(&out), n0.log());
    assert!(stderr(&out).contains("is NOT proven off: fenced_log_only"), "{}", show(&out));

    // With nothing writing the disk any more: off for a host that is not on it fails and writes
    // nothing.
    n0.kill();
    n1.kill();
    let before = lo.hash();
    let out = ask("action=off\nplug=n7");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("'n7' is not on the heartbeat disk"), "{}", show(&out));
    let out = ask("action=on\nplug=n1");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // A slot chosen by name is fenced only if its record still names that host when the request
    // would be written (the agent resolves the plug, then `fence` reads the slot again).
    let r =
        diskbeat::fence::fence_host(lo.path(), 0, Some("n1"), diskbeat::io::EngineKind::Auto, &mut |_| {});
    assert!(
        matches!(&r, Err(diskbeat::fence::FenceError::NotTheHost { slot: 0, found, .. }) if found == "n0"),
        "{r:?}"
    );
    assert_eq!(lo.hash(), before, "the device changed");
    // A corrupt slot: status cannot tell (exit 1, once it stayed so for the host-dead timeout);
    // list leaves it out, with a note.
    let sb = diskbeat::disk::read_superblock(
        &diskbeat::io::Device::open(lo.path(), diskbeat::io::Access::ReadOnly).unwrap(),
    )
    .unwrap();
    write_direct(lo.path(), sb.layout.record_offset(3), &[0xa5; 512]);
    let out = ask("action=status\nplug=slot3");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(
        stderr(&out).contains("cannot tell whether slot 3 ('slot3') is on or off: corrupt"),
        "{}",
        show(&out)
    );
    let out = ask("action=list");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "n0,\nn1,\nn2,\n"), "{}", show(&out));
    assert!(stderr(&out).contains("slot 3 left out"), "{}", show(&out));
    // validate-all with the device gone.
    let out = agent.stdin("action=validate-all\nplug=n1\ndevices=/dev/diskbeat-no-such-lun\n");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

/// A process killed on drop (the watchdog emulator).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A host whose daemon dies with a hardware watchdog armed is proven off by its silence for the
/// host-dead timeout: the watchdog reset it (what a `reboot` fence action's host leaves behind,
/// since it never returns to write `fenced`). The emulated watchdog stands in for the hardware.
#[test]
fn off_is_proven_by_silence_with_an_armed_watchdog() {
    if skip_unless_root() {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let lo = LoopDev::new("32M", 512);
    let out = run(&["mkfs", lo.s(), "--slots", "2", "--timeout", "4s", "--cluster", "fagentwd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("wd");
    // The emulator fires `true`: the "reset" is the daemon's SIGKILL below.
    let _emu = Reaped(
        Command::new(repo().join("tools/watchdog-emu.sh"))
            .arg(&fifo)
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The daemon's non-blocking open fails until the emulator holds the FIFO.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).is_err() {
        assert!(Instant::now() < deadline, "the watchdog emulator did not open {}", fifo.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut n0 =
        Daemon::spawn(dir.path(), lo.s(), 0, "n0", "exec:/bin/true", &["--watchdog", fifo.to_str().unwrap()]);
    all_live(&n0, &[]);
    let v = stdout_json(&run(&["inspect", lo.s(), "--slot", "0", "--json"]));
    assert!(v.to_string().contains("\"watchdog_armed\""), "{v:#}");
    n0.kill();
    let agent = Agent::new();
    let out = agent.stdin(&format!("action=reboot\nport=n0\nnodename=n0\ndevices={}\nverbose\n", lo.s()));
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "Success: Rebooted\n"),
        "{}",
        show(&out)
    );
    assert!(stderr(&out).contains("stopped heartbeating with a watchdog armed"), "{}", show(&out));
}
