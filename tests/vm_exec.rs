//! The exec VM driver against real hooks: tools/vm-hook-procs.sh (processes as VMs) and small
//! misbehaving scripts (hang, exit 7, garbage output, missing). No root needed.

mod common;

use diskbeat::planner::Protection;
use diskbeat::vm::exec::ExecDriver;
use diskbeat::vm::{DriverError, ProtectionSettings, StartRequest, VmDriver, VmRunState};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A state dir for the procs hook; kills every VM process it started when dropped.
struct Procs {
    dir: tempfile::TempDir,
}

impl Procs {
    fn new() -> Procs {
        Procs { dir: tempfile::tempdir().unwrap() }
    }

    /// A driver for tools/vm-hook-procs.sh on this state dir (through a wrapper: the driver passes
    /// no environment of its own).
    fn driver(&self) -> ExecDriver {
        let hook = script(
            self.dir.path(),
            "hook",
            &format!(
                "#!/bin/sh\nDISKBEAT_HOOK_STATE={}/state exec {} \"$@\"\n",
                self.dir.path().display(),
                common::repo().join("tools/vm-hook-procs.sh").display()
            ),
        );
        ExecDriver::with_timeout_ms(&hook, 10_000).unwrap()
    }

    fn pid(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.dir.path().join(format!("state/{name}.pid"))).unwrap();
        text.trim().parse().unwrap()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("state")) else { return };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Ok(pid) = std::fs::read_to_string(e.path()).unwrap_or_default().trim().parse::<i32>() {
                    if alive(pid) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::SIGKILL,
                        );
                    }
                }
            }
        }
    }
}

/// Running and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn exec_procs_hook_start_inventory_protect_destroy() {
    let procs = Procs::new();
    let mut d = procs.driver();
    assert_eq!(d.kind(), "exec");
    let inv = d.inventory().unwrap();
    assert_eq!((inv.capacity.memory_mib, inv.capacity.vcpus), (4096, 4));
    assert!(inv.vms.is_empty());

    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    // A definition with characters JSON must escape travels through the hook unchanged.
    let def1 = "memory_mib=512 vcpus=2 \"quoted\" back\\slash\ttab é";
    d.start(&StartRequest { name: "vm1", uuid: u1, definition: def1.as_bytes() }).unwrap();
    d.start(&StartRequest { name: "vm2", uuid: u2, definition: b"plain" }).unwrap();
    let p1 = procs.pid("vm1");
    assert!(alive(p1));

    let inv = d.inventory().unwrap();
    assert_eq!(inv.vms.len(), 2);
    let v1 = &inv.vms[0];
    assert_eq!((v1.name.as_str(), v1.uuid, v1.memory_mib, v1.vcpus), ("vm1", u1, 512, 2));
    assert_eq!(v1.state, VmRunState::Running);
    assert_eq!(v1.definition, def1.as_bytes());
    assert_eq!(v1.protection, ProtectionSettings::default());
    assert_eq!((inv.vms[1].memory_mib, inv.vms[1].vcpus), (64, 1));

    // Lookup by UUID: running, and an explicit "absent" for a UUID no VM here has.
    assert_eq!(d.lookup(u1).unwrap(), Some(VmRunState::Running));
    assert_eq!(d.lookup(Uuid::new_v4()).unwrap(), None);

    let s =
        ProtectionSettings { level: Protection::Protect, order: Some(3), anti_affinity: Some("g".into()) };
    d.set_protection("vm1", &s).unwrap();
    assert_eq!(d.inventory().unwrap().vms[0].protection, s);
    assert!(matches!(d.set_protection("ghost", &s), Err(DriverError::Failed { op: "protect", .. })));

    // The same name with another UUID is refused by the hook, and its message is carried.
    let e = d.start(&StartRequest { name: "vm1", uuid: Uuid::new_v4(), definition: b"x" }).unwrap_err();
    assert!(e.to_string().contains("already defined here"), "{e}");

    d.destroy("vm1").unwrap();
    assert!(!alive(p1), "the VM process survived destroy");
    let inv = d.inventory().unwrap();
    assert_eq!((inv.vms[0].state, &inv.vms[0].protection), (VmRunState::Stopped, &s));
    assert_eq!(inv.vms[1].state, VmRunState::Running);
    assert_eq!(d.lookup(u1).unwrap(), Some(VmRunState::Stopped), "defined here, stopped");
    d.destroy("vm1").unwrap();

    // Started again from the inventory's definition: a new process, same settings.
    let def = inv.vms[0].definition.clone();
    d.start(&StartRequest { name: "vm1", uuid: u1, definition: &def }).unwrap();
    assert!(alive(procs.pid("vm1")) && procs.pid("vm1") != p1);
    assert_eq!(d.inventory().unwrap().vms[0].state, VmRunState::Running);
    d.destroy("vm1").unwrap();
    d.destroy("vm2").unwrap();
}

#[test]
fn exec_hung_hook_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    // The hook and a child it waits for both hang; the whole group must die.
    let hook = script(
        dir.path(),
        "hang",
        &format!("#!/bin/sh\nsleep 1000 &\necho $! > {}\nwait\n", pidfile.display()),
    );
    let mut d = ExecDriver::with_timeout_ms(&hook, 300).unwrap();
    let t = Instant::now();
    let e = d.inventory().unwrap_err();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    assert!(
        matches!(&e, DriverError::Failed { op: "inventory", message, .. } if message.contains("300 ms")),
        "{e}"
    );
    let child: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(child) {
        assert!(Instant::now() < deadline, "the hook's child {child} survived the timeout");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A hook that exits but leaves a process holding its stdout: bounded by the timeout too.
    let leaky = script(dir.path(), "leaky", "#!/bin/sh\nsleep 1000 &\nexit 0\n");
    let t = Instant::now();
    let e = ExecDriver::with_timeout_ms(&leaky, 300).unwrap().destroy("x").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3) && e.to_string().contains("still holds"), "{e}");
    // The daemon's way in: a driver spec opened with the timeout its T gives.
    let spec: diskbeat::vm::DriverSpec = format!("exec:{}", hook.display()).parse().unwrap();
    let t = Instant::now();
    let e = spec.open_with_timeout(400).unwrap().inventory().unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3) && e.to_string().contains("400 ms"), "{e}");
    // Also with stdin the hook never reads.
    let e = d.start(&StartRequest { name: "x", uuid: Uuid::new_v4(), definition: &vec![b'a'; 1 << 20] });
    assert!(matches!(e, Err(DriverError::Failed { op: "start", .. })), "{e:?}");
}

#[test]
fn exec_failing_hook_message_is_carried() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(2000);
    let hook =
        script(dir.path(), "fail", &format!("#!/bin/sh\necho \"no such domain $1 $3 {long}\" >&2\nexit 7\n"));
    let mut d = ExecDriver::new(&hook).unwrap();
    assert_eq!(d.timeout_ms(), 30_000);
    let e = d.destroy("vm9").unwrap_err();
    match &e {
        DriverError::Failed { op: "destroy", vm, message } => {
            assert_eq!(vm, "vm9");
            assert!(
                message.contains("exit status 7") && message.contains("no such domain destroy vm9"),
                "{message}"
            );
            assert!(message.len() < 700, "stderr not cut at 500 bytes: {} bytes", message.len());
        }
        other => panic!("{other:?}"),
    }
    assert!(d.inventory().is_err());
    assert!(d.set_protection("vm9", &ProtectionSettings::default()).is_err());
    // What the hook prints and the name reach terminals escaped.
    let hook = script(dir.path(), "esc", "#!/bin/sh\nprintf 'line 1\\n\\033[2J line 2\\n' >&2\nexit 1\n");
    let e = ExecDriver::new(&hook).unwrap().destroy("a\u{202e}b").unwrap_err().to_string();
    assert!(!e.contains('\u{1b}') && !e.contains('\n') && !e.contains('\u{202e}'), "{e:?}");
    assert!(e.contains("destroy 'a\\u{202e}b' failed") && e.contains("line 1\\n\\u{1b}[2J line 2"), "{e}");
}

#[test]
fn exec_garbage_output_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("not json", "this is not JSON"),
        (
            "missing uuid",
            r#"{"capacity":{"memory_mib":1,"vcpus":1},"vms":[{"name":"a","memory_mib":1,"vcpus":1,"state":"running","definition":""}]}"#,
        ),
        (
            "bad state",
            r#"{"capacity":{"memory_mib":1,"vcpus":1},"vms":[{"name":"a","uuid":"00000000-0000-0000-0000-000000000001","memory_mib":1,"vcpus":1,"state":"on","definition":""}]}"#,
        ),
        ("missing capacity", r#"{"vms":[]}"#),
        (
            "control character in a name",
            r#"{"capacity":{"memory_mib":1,"vcpus":1},"vms":[{"name":"a\u001b[2J","uuid":"00000000-0000-0000-0000-000000000001","memory_mib":1,"vcpus":1,"state":"running","definition":""}]}"#,
        ),
        (
            "bad level",
            r#"{"capacity":{"memory_mib":1,"vcpus":1},"vms":[{"name":"a","uuid":"00000000-0000-0000-0000-000000000001","memory_mib":1,"vcpus":1,"state":"running","protection":{"level":"max"},"definition":""}]}"#,
        ),
    ];
    for (i, (what, out)) in cases.iter().enumerate() {
        let hook = script(dir.path(), &format!("g{i}"), &format!("#!/bin/sh\ncat <<'EOF'\n{out}\nEOF\n"));
        match ExecDriver::new(&hook).unwrap().inventory() {
            Err(DriverError::Protocol(m)) => {
                if *what == "missing uuid" {
                    assert!(m.contains("uuid"), "{m}");
                }
                if *what == "missing capacity" {
                    assert!(m.contains("capacity"), "{m}");
                }
                if what.starts_with("control") {
                    assert!(m.contains("a\\u{1b}[2J") && !m.contains('\u{1b}'), "{m}");
                }
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Unknown fields are ignored; protection defaults to none.
    let ok = r#"{"version":9,"capacity":{"memory_mib":8,"vcpus":2,"x":1},"vms":[{"name":"a","uuid":"00000000-0000-0000-0000-000000000001","memory_mib":1,"vcpus":1,"state":"stopped","definition":"d","extra":[1]}]}"#;
    let hook = script(dir.path(), "ok", &format!("#!/bin/sh\ncat <<'EOF'\n{ok}\nEOF\n"));
    let inv = ExecDriver::new(&hook).unwrap().inventory().unwrap();
    assert_eq!((inv.vms[0].state, inv.vms[0].protection.level), (VmRunState::Stopped, Protection::None));
}

/// `lookup` answers "absent" only when the hook says so: a hook that fails (one written before
/// `lookup` existed exits non-zero) or prints anything else is an error, never "not here".
#[test]
fn exec_lookup_is_absent_only_when_the_hook_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let u = Uuid::new_v4();
    let answer = |name: &str, body: &str| {
        let hook = script(
            dir.path(),
            name,
            &format!(
                "#!/bin/sh
{body}
"
            ),
        );
        ExecDriver::new(&hook).unwrap().lookup(u)
    };
    assert_eq!(answer("absent", r#"echo '{"state":"absent"}'"#).unwrap(), None);
    assert_eq!(answer("running", r#"echo '{"state":"running"}'"#).unwrap(), Some(VmRunState::Running));
    assert_eq!(
        answer("stopped", r#"echo '{"state":"stopped","extra":1}'"#).unwrap(),
        Some(VmRunState::Stopped)
    );
    let old = answer("old", r#"echo "unknown operation '$1'" >&2; exit 1"#).unwrap_err();
    assert!(matches!(old, DriverError::Failed { op: "lookup", .. }), "{old:?}");
    for (i, out) in ["", "{}", r#"{"state":"gone"}"#, "absent"].iter().enumerate() {
        let e = answer(&format!("g{i}"), &format!("echo '{out}'")).unwrap_err();
        assert!(matches!(e, DriverError::Protocol(_)), "{out:?}: {e:?}");
    }
    // The UUID is the argument.
    let seen = dir.path().join("args");
    let hook = script(
        dir.path(),
        "args",
        &format!(
            "#!/bin/sh
echo \"$@\" > {}
echo '{{\"state\":\"absent\"}}'
",
            seen.display()
        ),
    );
    ExecDriver::new(&hook).unwrap().lookup(u).unwrap();
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), format!("lookup -- {u}"));
}

#[test]
fn exec_missing_or_unusable_hook() {
    let dir = tempfile::tempdir().unwrap();
    let e = ExecDriver::new(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(&e, DriverError::Unreachable(m) if m.contains("nope")), "{e}");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = ExecDriver::new(&plain).unwrap_err();
    assert!(e.to_string().contains("chmod +x"), "{e}");
    assert!(matches!(ExecDriver::new(dir.path()), Err(DriverError::Unreachable(_))));
    // Removed after the driver was made: an error on the call, not a panic.
    let gone = script(dir.path(), "gone", "#!/bin/sh\n");
    let mut d = ExecDriver::new(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    assert!(matches!(d.inventory(), Err(DriverError::Unreachable(_))));
}

#[test]
fn cli_vm_commands_with_the_procs_hook() {
    let procs = Procs::new();
    let mut d = procs.driver();
    let u = Uuid::new_v4();
    d.start(&StartRequest { name: "db1", uuid: u, definition: b"memory_mib=256" }).unwrap();
    let spec = format!("exec:{}", d.hook().display());
    let out =
        common::run(&["vm", "protect", "db1", "--level", "best-effort", "--order", "-1", "--driver", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let out = common::run(&["vm", "list", "--json", "--driver", &spec]);
    let j = common::stdout_json(&out);
    assert_eq!(
        j["vms"][0]["protection"],
        serde_json::json!({"level": "best-effort", "order": -1, "anti_affinity": null})
    );
    assert_eq!(j["vms"][0]["memory_mib"], 256);
    let out = common::run(&["vm", "list", "--driver", "exec:"]);
    assert_eq!(out.status.code(), Some(2));
    let out = common::run(&["vm", "protect", "db1", "--level", "always", "--driver", &spec]);
    assert_eq!(out.status.code(), Some(2));
    let out = common::run(&["vm", "list", "--driver", "exec:/no/such/hook"]);
    assert_eq!(out.status.code(), Some(1));
    d.destroy("db1").unwrap();
}

/// A hook that appends its argv (NUL-separated, one run per line) to `log` and answers like a
/// well-behaved hook: an empty inventory, 0 for everything else.
fn argv_recorder(dir: &Path, log: &Path) -> PathBuf {
    script(
        dir,
        "argv",
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> {log}\necho >> {log}\n\
             [ \"$1\" = inventory ] && echo '{{\"capacity\":{{\"memory_mib\":1,\"vcpus\":1}},\"vms\":[]}}'\n\
             cat >/dev/null\nexit 0\n",
            log = log.display()
        ),
    )
}

/// Issue "hostile input" item 4: a VM named `--help` (published on the disk by any host) is
/// passed after a `--` separator, so no hook's option parser takes it for an option.
#[test]
fn exec_names_come_after_a_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv.log");
    let mut d = ExecDriver::with_timeout_ms(&argv_recorder(dir.path(), &log), 10_000).unwrap();
    d.inventory().unwrap();
    d.start(&StartRequest { name: "--help", uuid: Uuid::new_v4(), definition: b"x" }).unwrap();
    d.destroy("-rf").unwrap();
    d.set_protection("--level=none", &ProtectionSettings::default()).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let runs: Vec<Vec<&str>> =
        text.lines().map(|l| l.split('\0').filter(|a| !a.is_empty()).collect()).collect();
    assert_eq!(
        runs,
        vec![
            vec!["inventory"],
            vec!["start", "--", "--help"],
            vec!["destroy", "--", "-rf"],
            vec!["protect", "--", "--level=none"]
        ]
    );
    // Every argument before `--` is the operation: nothing from the disk or a driver.
    for run in &runs {
        let cut = run.iter().position(|a| *a == "--").unwrap_or(run.len());
        assert!(run[..cut].iter().skip(1).all(|a| !a.starts_with('-')), "{run:?}");
    }
}

/// The procs hook takes the `--` too, and a name that looks like an option is just a name.
#[test]
fn exec_procs_hook_with_an_option_like_name() {
    let procs = Procs::new();
    let mut d = procs.driver();
    let u = Uuid::new_v4();
    d.start(&StartRequest { name: "--help", uuid: u, definition: b"memory_mib=96" }).unwrap();
    let inv = d.inventory().unwrap();
    assert_eq!(inv.vms.len(), 1);
    assert_eq!((inv.vms[0].name.as_str(), inv.vms[0].uuid, inv.vms[0].memory_mib), ("--help", u, 96));
    assert_eq!(inv.vms[0].state, VmRunState::Running);
    d.destroy("--help").unwrap();
    assert_eq!(d.inventory().unwrap().vms[0].state, VmRunState::Stopped);
}

/// VmHWM (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets VmHWM to the current RSS (Linux >= 4.0); false when the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Issue "hostile input" item 4: a hook printing 300 MB on stdout is cut off at the cap (16 MiB),
/// killed, and the call fails as a protocol error; the daemon's memory does not grow by what
/// the hook printed.
#[test]
fn exec_hook_output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let hook = script(dir.path(), "flood", "#!/bin/sh\nhead -c 300000000 /dev/zero\n");
    let mut d = ExecDriver::with_timeout_ms(&hook, 60_000).unwrap();
    let reset = reset_peak_rss();
    let before = peak_rss_kib();
    let e = d.inventory().unwrap_err();
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    // The cap (16 MiB) plus room for the other tests of this binary running meanwhile; the
    // uncapped reader grew by the whole 300 MB (and more, as its buffer doubled).
    assert!(grew_mib < 100, "peak RSS grew by {grew_mib} MiB (reset: {reset}) reading a 300 MB output");
    assert!(matches!(&e, DriverError::Protocol(m) if m.contains("16 MiB")), "{e}");
}

/// A hook that never stops printing is killed as soon as it passes the cap, long before its
/// timeout; one that floods stderr is not a protocol error, and its message stays short.
#[test]
fn exec_endless_output_is_killed_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("yes.pid");
    let hook = script(dir.path(), "yes", &format!("#!/bin/sh\necho $$ > {}\nexec yes\n", pidfile.display()));
    let mut d = ExecDriver::with_timeout_ms(&hook, 60_000).unwrap();
    let t = Instant::now();
    let e = d.inventory().unwrap_err();
    assert!(matches!(&e, DriverError::Protocol(m) if m.contains("16 MiB")), "{e}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "the flooding hook {pid} was not killed");

    let hook = script(dir.path(), "err", "#!/bin/sh\nhead -c 50000000 /dev/zero | tr '\\0' e >&2\nexit 3\n");
    let e = ExecDriver::with_timeout_ms(&hook, 60_000).unwrap().destroy("x").unwrap_err();
    assert!(
        matches!(&e, DriverError::Failed { message, .. } if message.contains("exit status 3") && message.len() < 800),
        "{e}"
    );
}
/// Issue "hostile input" item 4: an inventory listing one UUID (or one name) twice is a driver
/// error, never trusted.
#[test]
fn exec_duplicate_uuids_or_names_are_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let vm = |name: &str, uuid: &str| {
        format!(
            r#"{{"name":"{name}","uuid":"{uuid}","memory_mib":1,"vcpus":1,"state":"running","definition":""}}"#
        )
    };
    let (u1, u2) = ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002");
    for (i, (what, vms)) in
        [("uuid", [vm("a", u1), vm("b", u1)]), ("name", [vm("a", u1), vm("a", u2)])].iter().enumerate()
    {
        let out = format!(r#"{{"capacity":{{"memory_mib":8,"vcpus":2}},"vms":[{}]}}"#, vms.join(","));
        let hook = script(dir.path(), &format!("dup{i}"), &format!("#!/bin/sh\ncat <<'EOF'\n{out}\nEOF\n"));
        match ExecDriver::new(&hook).unwrap().inventory() {
            Err(DriverError::Protocol(m)) => assert!(m.contains("twice") && m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}
