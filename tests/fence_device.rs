//! Fence devices as proof (docs/SAFETY.md, "Fence devices"), with real daemons on a real loop
//! device (T = 4 s), network heartbeats on loopback, the exec VM driver (VMs are processes) and
//! real agents run the way diskbeat runs them: fence-agents' `fence_dummy` (its power state kept
//! in a file), `fence_ipmilan` against a simulated BMC per host (OpenIPMI's `ipmi_sim`), and exec
//! devices that speak the same stdin protocol. A host "loses power" when its
//! daemon and VM processes are killed; the "power" device does that itself when asked `off`.
//! No timed assertions: the recovery times are printed (docs/BENCHMARKS.md has the figures).

mod common;
#[path = "common/procs_pool.rs"]
mod procs_pool;
use common::*;
use procs_pool::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn events(socket: &Path, kind: &str) -> Vec<Value> {
    let out = run(&["events", "--json", "--kind", kind, "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success(), "diskbeat events failed: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(path, mode).unwrap();
}

/// A config file with a `[fence_devices.hN]` table for every host: `agent` and the `args` lines
/// `table(i)` gives (TOML inline table body).
fn device_config(p: &Pool, agent: &str, table: impl Fn(usize) -> String, timeout: Option<&str>) -> PathBuf {
    let mut text = String::new();
    for i in 0..p.hosts.len() {
        text += &format!("[fence_devices.h{i}]\nagent = \"{agent}\"\nargs = {{ {} }}\n", table(i));
        if let Some(t) = timeout {
            text += &format!("timeout = \"{t}\"\n");
        }
    }
    let path = p.dir.path().join("devices.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An exec device that powers a host off for real: `off` kills the daemon of host `plug` and its
/// VM processes and records the state; `status` reports it. Every call is logged (its arguments
/// came on stdin: the log shows the secret never reached argv).
fn power_device(p: &Pool) -> PathBuf {
    let dir = p.dir.path();
    let agent = dir.join("power-device.sh");
    write_exec(
        &agent,
        &format!(
            r#"args=$(cat)
action=$(echo "$args" | sed -n 's/^action=//p')
plug=$(echo "$args" | sed -n 's/^plug=//p')
echo "$(date +%s%N) $action $plug argv=[$*] secret=$(echo "$args" | sed -n 's/^password=//p')" >> {dir}/device-calls.log
case "$action" in
off)
    kill -9 $(cat {dir}/$plug.pid) 2>/dev/null
    for f in {dir}/vms-${{plug#h}}/*.pid; do kill -9 $(cat $f) 2>/dev/null; done
    touch {dir}/off-$plug
    exit 0;;
status)
    [ -f {dir}/off-$plug ] && exit 2
    exit 0;;
esac
exit 1"#,
            dir = dir.display()
        ),
    );
    agent
}

fn device_calls(p: &Pool) -> Vec<String> {
    std::fs::read_to_string(p.dir.path().join("device-calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Three hosts on the network, `web` and `db` protected on h2, the given config; all live and
/// published.
fn pool(watchdog: bool, config: impl FnOnce(&Pool) -> PathBuf) -> Pool {
    pool_t(T_MS, watchdog, config)
}

fn pool_t(t_ms: u64, watchdog: bool, config: impl FnOnce(&Pool) -> PathBuf) -> Pool {
    let mut p = Pool::with_t(3, t_ms);
    p.with_network();
    p.config = Some(config(&p));
    p.vm(2, "web", 256, "protect", Some(1));
    p.vm(2, "db", 256, "protect", None);
    for i in 0..3 {
        p.spawn(i, if i == 2 { 4096 } else { 900 }, watchdog);
    }
    p.wait("all live and published", Duration::from_millis(30_000.max(4 * t_ms)), |p| {
        p.all_live() && published(p, 2, 2) && published(p, 0, 0) && published(p, 1, 0)
    });
    p
}

fn running_once(p: &Pool, names: &[&str]) -> bool {
    let w = p.where_runs();
    names.iter().all(|n| w.get(*n).is_some_and(|h| h.len() == 1 && h[0] != 2))
}

/// What the survivors say about slot 2: its proof (None: not proven).
fn proof_of_h2(p: &Pool, i: usize) -> Option<String> {
    let st = p.hosts[i].status()?;
    let peer = st["peers"].as_array()?.iter().find(|x| x["slot"] == 2)?.clone();
    peer["vms_gone"]["proof"].as_str().map(str::to_string)
}

/// A host that loses power, with no hardware watchdog: without a device its VMs would never be
/// proven gone. With `fence_dummy` configured (its state file says `on` until the coordinator's
/// `off`), the coordinator powers it off on suspicion, the proof goes on the disk, and its VMs
/// run elsewhere long before the host-dead timeout.
#[test]
fn a_host_that_lost_power_is_fenced_through_fence_dummy_and_its_vms_restart_before_t() {
    if skip_unless_root() {
        return;
    }
    let dummy = "/usr/sbin/fence_dummy";
    assert!(
        Path::new(dummy).exists(),
        "fence-agents' fence_dummy is needed (tools/test.sh installs fence-agents)"
    );
    let p = pool(false, |p| {
        for i in 0..3 {
            std::fs::write(p.dir.path().join(format!("power-h{i}")), "on").unwrap();
        }
        let dir = p.dir.path().display().to_string();
        device_config(p, dummy, |i| format!("type = \"file\", status_file = \"{dir}/power-h{i}\""), None)
    });
    let checker = p.start_checker();
    let mut p = p;
    let killed = Instant::now();
    p.hosts[2].kill();
    p.wait("web and db running elsewhere", Duration::from_secs(3 * T_MS / 1000), |p| {
        running_once(p, &["web", "db"])
    });
    let took = killed.elapsed();
    eprintln!("power loss of h2 to web and db running elsewhere: {} ms (T = {T_MS} ms)", took.as_millis());
    let coordinator = 0;
    let state = std::fs::read_to_string(p.dir.path().join("power-h2")).unwrap();
    assert_eq!(state.trim(), "off", "fence_dummy was asked to power h2 off");
    for i in [0, 1] {
        p.wait("the proof on every survivor", Duration::from_secs(5), |p| {
            proof_of_h2(p, i).as_deref() == Some("fence_device")
        });
    }
    let kinds: Vec<String> =
        ["fence_device_intent", "fence_device_calling", "fence_device_result", "fence_device_proven"]
            .iter()
            .filter(|k| !events(&p.hosts[coordinator].socket, k).is_empty())
            .map(|k| k.to_string())
            .collect();
    assert_eq!(kinds.len(), 4, "the coordinator's history: {kinds:?}\n{}", p.logs());
    let result = &events(&p.hosts[coordinator].socket, "fence_device_result")[0];
    assert_eq!(result["data"]["outcome"], "off", "{result:#}");
    assert_eq!(result["peer"], "h2");
    // Only the coordinator called the device.
    assert!(events(&p.hosts[1].socket, "fence_device_calling").is_empty());
    // Nobody else's power was touched.
    for i in [0, 1] {
        assert_eq!(std::fs::read_to_string(p.dir.path().join(format!("power-h{i}"))).unwrap().trim(), "on");
    }
    // h2 is powered on again: its new daemon takes the slot that holds the proof, joins, and its
    // old VMs stay where they were restarted (once each); nothing calls its device again.
    std::fs::write(p.dir.path().join("power-h2"), "on").unwrap();
    p.spawn(2, 4096, false);
    p.wait("h2 back and live everywhere", Duration::from_secs(30), |p| p.all_live());
    std::thread::sleep(Duration::from_millis(2 * T_MS));
    assert!(running_once(&p, &["web", "db"]), "{:?}", p.where_runs());
    assert_eq!(events(&p.hosts[coordinator].socket, "fence_device_calling").len(), 1);
    p.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
}

/// A daemon that is killed while its host stays up (frozen, crashed): the exec "power" device
/// really powers it off (kills its VMs) when asked, the proof follows, and the VMs restart once.
/// Its arguments reach the agent on stdin only.
#[test]
fn a_dead_daemon_is_powered_off_by_an_exec_device_and_its_vms_restart_once() {
    if skip_unless_root() {
        return;
    }
    let p = pool(false, |p| {
        let agent = power_device(p).display().to_string();
        device_config(p, &agent, |i| format!("plug = \"h{i}\", password = \"s3cr3t-{i}\""), None)
    });
    let checker = p.start_checker();
    let mut p = p;
    // Only the daemon dies: web and db keep running on h2 until the device powers it off.
    let killed = Instant::now();
    if let Some(mut c) = p.hosts[2].daemon.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    p.wait("web and db running elsewhere", Duration::from_secs(3 * T_MS / 1000), |p| {
        running_once(p, &["web", "db"])
    });
    eprintln!("daemon of h2 killed to web and db running elsewhere: {} ms", killed.elapsed().as_millis());
    assert!(running(&p.hosts[2].state).is_empty(), "the device powered h2's VMs off");
    let calls = device_calls(&p);
    let offs: Vec<&String> = calls.iter().filter(|c| c.contains(" off h2 ")).collect();
    assert_eq!(offs.len(), 1, "one off for h2: {calls:#?}");
    assert!(calls.iter().any(|c| c.contains(" status h2 ")), "{calls:#?}");
    assert!(calls.iter().all(|c| c.contains("argv=[]") && c.contains("secret=s3cr3t-2")), "{calls:#?}");
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("s3cr3t"), "a device secret in argv");
    p.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
}

/// A simulated BMC per host: OpenIPMI's `ipmi_sim` on 127.0.0.1 speaking IPMI 2.0 (RMCP+), whose
/// chassis control powers its host off for real (kills the daemon and the VM processes) and
/// reports the power state. Killed when dropped.
struct Bmc {
    port: u16,
    child: std::process::Child,
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BMC_PASSWORD: &str = "bmc-s3cret";

fn bmc(p: &Pool, i: usize) -> Bmc {
    let dir = p.dir.path().join(format!("bmc-h{i}"));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let chassis = dir.join("chassis.sh");
    let root = p.dir.path().display();
    write_exec(
        &chassis,
        &format!(
            r#"# ipmi_sim's chassis control: chassis.sh get power | set power 0|1 (...)
op=$1; shift
echo "$(date +%s%N) $op $*" >> {root}/bmc-h{i}/chassis.log
case $op in
get)
    for parm in "$@"; do
        case $parm in
        power) if [ -f {root}/off-h{i} ]; then echo power:0; else echo power:1; fi;;
        boot) echo boot:default;;
        *) exit 1;;
        esac
    done;;
set)
    while [ $# -ge 2 ]; do
        case $1 in
        power)
            if [ "$2" = 0 ]; then
                kill -9 $(cat {root}/h{i}.pid) 2>/dev/null
                for f in {root}/vms-{i}/*.pid; do kill -9 $(cat $f) 2>/dev/null; done
                touch {root}/off-h{i}
            else
                rm -f {root}/off-h{i}
            fi;;
        reset|boot|identify) ;;
        *) exit 1;;
        esac
        shift 2
    done;;
*) exit 1;;
esac"#
        ),
    );
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.join("lan.conf"),
        format!(
            "name \"h{i}-bmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n\
             \x20   allowed_auths_admin md5\n    guid a123456789abcdefa123456789abcde{i}\n  endlan\n\
             \x20 chassis_control \"{}\"\n  user 2 true \"admin\" \"{BMC_PASSWORD}\" admin 10 md5\n",
            chassis.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("bmc.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 0x09 0x08 0x9f 0x1291 0xf02 persist_sdr\n\
         sel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
    )
    .unwrap();
    let child = std::process::Command::new("ipmi_sim")
        .args(["-n", "-c"])
        .arg(dir.join("lan.conf"))
        .arg("-f")
        .arg(dir.join("bmc.emu"))
        .arg("-s")
        .arg(dir.join("state"))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("ipmi_sim.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("ipmi_sim.err")).unwrap())
        .spawn()
        .expect("ipmi_sim (package openipmi; tools/test.sh installs it)");
    let b = Bmc { port, child };
    // Up when the agent itself reads the power state.
    let start = Instant::now();
    loop {
        let out = ipmilan(&b, "status");
        if out.status.code() == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the BMC of h{i} does not answer: {}\n{}",
            stderr(&out),
            std::fs::read_to_string(dir.join("ipmi_sim.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b
}

/// `fence_ipmilan`'s stdin arguments for a BMC (cipher suite 3: RAKP-HMAC-SHA1, AES; ipmi_sim
/// has no suite 17).
fn ipmilan_args(b: &Bmc) -> Vec<(&'static str, String)> {
    vec![
        ("ip", "127.0.0.1".into()),
        ("ipport", b.port.to_string()),
        ("username", "admin".into()),
        ("password", BMC_PASSWORD.into()),
        ("lanplus", "1".into()),
        ("cipher", "3".into()),
    ]
}

fn ipmilan(b: &Bmc, action: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/sbin/fence_ipmilan")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = format!("action={action}\n");
    for (k, v) in ipmilan_args(b) {
        input += &format!("{k}={v}\n");
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The most realistic device here: every host has a simulated BMC (`ipmi_sim`) and
/// fence-agents' `fence_ipmilan` is its device, talking IPMI over the network. h2 hangs (its
/// daemon and VMs stopped, SIGSTOP: a frozen hypervisor whose VMs would run on if it thawed); the
/// coordinator has h2's BMC power it off, `status` confirms OFF, and web and db run elsewhere,
/// once, long before T. Then h2's BMC powers it on and it rejoins without restarting anything.
#[test]
fn a_hung_host_is_powered_off_by_its_simulated_bmc_through_fence_ipmilan() {
    if skip_unless_root() {
        return;
    }
    for tool in ["/usr/sbin/fence_ipmilan", "/usr/bin/ipmi_sim", "/usr/bin/ipmitool"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is needed (tools/test.sh installs fence-agents, openipmi, ipmitool)"
        );
    }
    let mut bmcs = Vec::new();
    let p = pool(false, |p| {
        bmcs = (0..3).map(|i| bmc(p, i)).collect();
        device_config(
            p,
            "/usr/sbin/fence_ipmilan",
            |i| {
                ipmilan_args(&bmcs[i])
                    .iter()
                    .map(|(k, v)| format!("{k} = \"{v}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            Some("30s"),
        )
    });
    let checker = p.start_checker();
    let mut p = p;
    let vms: Vec<i32> = running(&p.hosts[2].state).into_values().collect();
    assert_eq!(vms.len(), 2);
    let stop = |pid: i32| {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGSTOP);
    };
    let hung = Instant::now();
    stop(p.hosts[2].daemon_pid().unwrap() as i32);
    vms.iter().copied().for_each(stop);
    p.wait("web and db running elsewhere", Duration::from_secs(4 * T_MS / 1000), |p| {
        running_once(p, &["web", "db"])
    });
    eprintln!(
        "h2 hung to web and db running elsewhere (fence_ipmilan + ipmi_sim): {} ms",
        hung.elapsed().as_millis()
    );
    assert!(running(&p.hosts[2].state).is_empty(), "h2's BMC killed its VMs");
    assert!(p.dir.path().join("off-h2").exists(), "h2's BMC powered it off");
    let result = &events(&p.hosts[0].socket, "fence_device_result")[0];
    assert_eq!(result["data"]["outcome"], "off", "{result:#}");
    eprintln!("fence_ipmilan off + status: {} ms", result["data"]["took_ms"]);
    for i in [0, 1] {
        p.wait("the proof on every survivor", Duration::from_secs(5), |p| {
            proof_of_h2(p, i).as_deref() == Some("fence_device")
        });
        assert!(!p.dir.path().join(format!("off-h{i}")).exists(), "h{i} was powered off");
        let chassis = std::fs::read_to_string(p.dir.path().join(format!("bmc-h{i}/chassis.log"))).unwrap();
        assert!(!chassis.contains("set power"), "h{i}'s BMC was asked to change power: {chassis}");
    }
    let chassis = std::fs::read_to_string(p.dir.path().join("bmc-h2/chassis.log")).unwrap();
    assert_eq!(chassis.matches("set power 0").count(), 1, "{chassis}");
    // Powered on through its BMC, h2 boots (a new daemon), rejoins, restarts nothing.
    let on = ipmilan(&bmcs[2], "on");
    assert!(on.status.success(), "fence_ipmilan on: {}", stderr(&on));
    assert!(!p.dir.path().join("off-h2").exists());
    p.spawn(2, 4096, false);
    p.wait("h2 back and live everywhere", Duration::from_secs(30), |p| p.all_live());
    std::thread::sleep(Duration::from_millis(2 * T_MS));
    assert!(running_once(&p, &["web", "db"]), "{:?}", p.where_runs());
    assert_eq!(events(&p.hosts[0].socket, "fence_device_calling").len(), 1);
    p.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    checker.join().unwrap();
    p.assert_never_twice();
}

/// A device that fails, or hangs past its timeout, proves nothing. And its intent in h2's slot
/// (a copy of an older record, which may have replaced a clean leave) takes away the proof h2's
/// watchdog flag would give after T (found by tests/sim.rs): its VMs wait, status says why, the
/// device is asked again every T, and an operator's `--confirm-down` restarts them.
#[test]
fn a_failing_or_hanging_device_proves_nothing_and_the_vms_wait_for_the_device_or_an_operator() {
    if skip_unless_root() {
        return;
    }
    for (what, body, timeout) in
        [("fails", "cat >/dev/null; exit 1", None), ("hangs", "exec sleep 600", Some("2s"))]
    {
        let p = pool(true, |p| {
            let agent = p.dir.path().join("bad-device.sh");
            write_exec(&agent, body);
            device_config(p, agent.to_str().unwrap(), |i| format!("plug = \"h{i}\""), timeout)
        });
        let mut p = p;
        p.hosts[2].kill();
        let want = if what == "fails" { "failed" } else { "timed_out" };
        p.wait("the device's answer", Duration::from_secs(4 * T_MS / 1000), |p| {
            events(&p.hosts[0].socket, "fence_device_result").iter().any(|e| e["data"]["outcome"] == want)
        });
        // Longer than T: nothing is proven, nothing restarts, status says why.
        std::thread::sleep(Duration::from_millis(T_MS + 2000));
        assert!(running_once(&p, &[]) && p.where_runs().is_empty(), "{:?}", p.where_runs());
        assert!(events(&p.hosts[0].socket, "fence_device_proven").is_empty());
        let peer = p.hosts[0].status().unwrap()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["slot"] == 2)
            .cloned();
        assert_eq!(peer.as_ref().unwrap()["vms_gone"]["why_not"], "fence_intent", "{peer:#?}");
        // The operator's word.
        let killed = Instant::now();
        let out = run(&["fence", p.lo.s(), "--confirm-down", "2", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        p.wait("web and db running elsewhere", Duration::from_secs(4 * T_MS / 1000), |p| {
            running_once(p, &["web", "db"])
        });
        eprintln!(
            "device that {what}: --confirm-down to VMs running elsewhere {} ms",
            killed.elapsed().as_millis()
        );
        p.assert_never_twice();
    }
}

/// The figures of docs/BENCHMARKS.md ("Fence devices"): power loss of h2 to `web` and `db`
/// running elsewhere, with `fence_dummy` as every host's device and no watchdog, then with no
/// device and an armed watchdog (the proof before issue 18), at T = `DISKBEAT_BENCH_T_MS`
/// (default 40 s). Prints `FENCE_FIGURES` lines; not run by default (minutes at T = 40 s):
/// `DISKBEAT_BENCH_T_MS=40000 cargo test --test fence_device recovery_figures -- --ignored --nocapture`
/// (`DISKBEAT_BENCH_RUNS=N` runs each; `DISKBEAT_BENCH_DEVICE_ONLY=1` skips the runs without one).
#[test]
#[ignore]
fn recovery_figures() {
    if skip_unless_root() {
        return;
    }
    let t_ms: u64 = std::env::var("DISKBEAT_BENCH_T_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    let runs: u32 = std::env::var("DISKBEAT_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let device_only = std::env::var_os("DISKBEAT_BENCH_DEVICE_ONLY").is_some();
    for with_device in [true, false] {
        if device_only && !with_device {
            continue;
        }
        for run in 1..=runs {
            let p = pool_t(t_ms, !with_device, |p| {
                if !with_device {
                    let path = p.dir.path().join("none.toml");
                    std::fs::write(&path, "").unwrap();
                    return path;
                }
                for i in 0..3 {
                    std::fs::write(p.dir.path().join(format!("power-h{i}")), "on").unwrap();
                }
                let dir = p.dir.path().display().to_string();
                device_config(
                    p,
                    "/usr/sbin/fence_dummy",
                    |i| format!("type = \"file\", status_file = \"{dir}/power-h{i}\""),
                    None,
                )
            });
            let mut p = p;
            let killed = Instant::now();
            p.hosts[2].kill();
            p.wait("web and db running elsewhere", Duration::from_millis(3 * t_ms), |p| {
                running_once(p, &["web", "db"])
            });
            let total = killed.elapsed().as_millis();
            let device_ms = events(&p.hosts[0].socket, "fence_device_result")
                .first()
                .and_then(|e| e["data"]["took_ms"].as_u64());
            println!(
                "FENCE_FIGURES t_ms={t_ms} device={} run={run} power_loss_to_protected_running_ms={total} \
                 agent_ms={}",
                if with_device { "fence_dummy" } else { "none(watchdog)" },
                device_ms.map_or("-".to_string(), |d| d.to_string())
            );
            p.assert_never_twice();
        }
    }
}
