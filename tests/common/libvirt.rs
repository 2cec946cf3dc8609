//! Emulated hypervisor hosts: one real libvirtd per host, each in its own mount+PID namespace
//! (recipe and figures: docs/VMS.md, "Tests with real libvirt").
//!
//! Per host a root dir `R` (run/ lib/ cache/ log/ etc/) is bind-mounted over libvirt's fixed
//! directories inside the namespace; `tini` is the namespace's PID 1 (prompt reaping), and
//! `kill -9` of the holder (`unshare --kill-child`) kills the daemon and every guest at once.
//! Include with `#[path = "common/libvirt.rs"] mod libvirt_host;` (after `mod common;`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

/// Whether libvirt tests must be skipped here (not root, libvirtd/QEMU/tini missing). Under CI a
/// missing requirement panics: a CI run that cannot run them must fail, not pass by skipping.
pub fn skip() -> bool {
    let missing: Vec<&str> = ["libvirtd", "qemu-system-x86_64", "tini", "unshare", "nsenter", "virsh"]
        .into_iter()
        .filter(|b| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    let why = if !nix::unistd::geteuid().is_root() {
        format!("needs root for libvirtd in namespaces (euid {})", nix::unistd::geteuid())
    } else if !missing.is_empty() {
        format!("missing {} (run tools/install-libvirt.sh)", missing.join(", "))
    } else if Command::new("getent")
        .args(["passwd", "libvirt-qemu"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        "no libvirt-qemu user (run tools/install-libvirt.sh)".to_string()
    } else {
        return false;
    };
    if ci() {
        panic!("{why}; CI is set, so this test must not be skipped (tools/test.sh installs libvirt)");
    }
    eprintln!("SKIPPED: {why}");
    true
}

const QEMU_CONF: &str = r#"# diskbeat test host: root, no labels, no cgroups (same-named guests on two hosts must not share one)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"#;

/// One emulated host: a namespace holder and its libvirtd. Dropping it kills both and every guest.
pub struct LibvirtHost {
    dir: tempfile::TempDir,
    holder: Option<Child>,
    daemon: Option<Child>,
    /// The network namespace (`ip netns` name) the holder, and so the whole host, lives in.
    netns: Option<String>,
}

impl LibvirtHost {
    /// Starts a host and waits until its libvirtd answers (panics after 30 s).
    pub fn start() -> LibvirtHost {
        LibvirtHost::start_in(None)
    }

    /// [`LibvirtHost::start`] with the holder, and so every process of the host, inside network
    /// namespace `netns` (`ip netns exec NS setsid unshare ...`): an emulated hypervisor whose
    /// network can be cut (tests/common/netns.rs).
    pub fn start_in(netns: Option<&str>) -> LibvirtHost {
        let dir = tempfile::Builder::new().prefix("diskbeat-lv").tempdir_in("/var/tmp").expect("tempdir");
        let r = dir.path();
        for d in ["run", "lib", "cache", "log", "etc/qemu"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/qemu.conf"), QEMU_CONF).unwrap();
        std::fs::write(r.join("etc/libvirtd.conf"), "").unwrap();
        for d in
            ["/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/etc/libvirt"]
        {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut host = LibvirtHost { dir, holder: None, daemon: None, netns: netns.map(str::to_string) };
        host.boot();
        host
    }

    /// Kills the host and starts it again on the same state: its domains come back shut off.
    pub fn reboot(&mut self) {
        self.kill();
        self.boot();
    }

    fn boot(&mut self) {
        let r = self.dir.path().to_path_buf();
        let _ = std::fs::remove_file(r.join("ns-ready"));
        let rs = r.to_str().unwrap();
        let script = format!(
            "mount --bind {rs}/run /run/libvirt && mount --bind {rs}/lib /var/lib/libvirt && \
             mount --bind {rs}/cache /var/cache/libvirt && mount --bind {rs}/log /var/log/libvirt && \
             mount --bind {rs}/etc /etc/libvirt && touch {rs}/ns-ready && exec sleep infinity"
        );
        // `ip netns exec` and `setsid` both exec (no fork): the child is `unshare` either way.
        let mut holder = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setsid"]);
                c
            }
            None => Command::new("setsid"),
        };
        let holder = holder
            .args(["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"])
            .args(["--mount-proc", "tini", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(r.join("holder.log")).unwrap())
            .spawn()
            .expect("spawn the namespace holder");
        let host = self;
        host.holder = Some(holder);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !host.root().join("ns-ready").exists() {
            assert!(Instant::now() < deadline, "namespace not ready: {}", host.log("holder.log"));
            std::thread::sleep(Duration::from_millis(10));
        }
        let init = host.init_pid();
        let mut enter = vec!["nsenter", "--target"];
        let init = init.to_string();
        enter.extend([init.as_str(), "--mount", "--pid"]);
        if host.netns.is_some() {
            enter.push("--net");
        }
        enter.push("--");
        let daemon = Command::new("setsid")
            .args(&enter)
            .args(["libvirtd", "-f", "/etc/libvirt/libvirtd.conf", "-p", "/run/libvirt/libvirtd.pid"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(host.root().join("libvirtd.log")).unwrap())
            .spawn()
            .expect("spawn libvirtd");
        host.daemon = Some(daemon);
        loop {
            let ok = Command::new("virsh")
                .args(["-c", &host.uri(), "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "libvirtd not ready in 30 s: {}", host.log("libvirtd.log"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `qemu:///system` through this host's own socket.
    pub fn uri(&self) -> String {
        format!("qemu:///system?socket={}/run/libvirt-sock", self.root().display())
    }

    /// PID (outside) of the holder: `unshare`, whose death kills the namespace.
    pub fn pid(&self) -> Option<i32> {
        self.holder.as_ref().map(|c| c.id() as i32)
    }

    /// PID (outside) of the namespace's init (tini), the target for nsenter.
    pub fn init_pid(&self) -> i32 {
        let pid = self.pid().expect("running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("pgrep").args(["-P", &pid.to_string()]).output().expect("run pgrep");
            if let Some(c) = String::from_utf8_lossy(&out.stdout).split_whitespace().next() {
                return c.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare has no child");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Command prefix that runs a program inside this host (its mount, PID and, with a network
    /// namespace, network namespaces): `kill` then kills that program too.
    pub fn enter_prefix(&self) -> Vec<String> {
        let mut v: Vec<String> = ["nsenter", "--target", &self.init_pid().to_string(), "--mount", "--pid"]
            .map(String::from)
            .into();
        if self.netns.is_some() {
            v.push("--net".into());
        }
        v.push("--".into());
        v
    }

    /// Whether the host runs (its holder has not exited, e.g. killed by a watchdog emulator).
    pub fn alive(&mut self) -> bool {
        self.holder.as_mut().is_some_and(|h| matches!(h.try_wait(), Ok(None)))
    }

    /// Outside PIDs of this host's QEMU processes.
    pub fn qemu_pids(&self) -> Vec<i32> {
        let Some(pid) = self.pid() else { return vec![] };
        // One look for the init (no wait): a host killed from outside has none.
        let init = Command::new("pgrep").args(["-P", &pid.to_string()]).output().ok();
        let Some(init) = init
            .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next().map(str::to_string))
        else {
            return vec![];
        };
        let out = Command::new("pgrep").args(["-P", &init, "qemu-system"]).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
        })
        .unwrap_or_default()
    }

    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.root().join(file)).unwrap_or_default()
    }

    /// The host dies at once: daemon and guests (kill -9 of the namespace holder).
    pub fn kill(&mut self) {
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        if let Some(mut d) = self.daemon.take() {
            // nsenter's child is libvirtd inside the namespace, already gone with it.
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for LibvirtHost {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("libvirt host {} log:\n{}", self.root().display(), self.log("libvirtd.log"));
        }
        // The bind mounts lived in the namespace: nothing to unmount out here.
        let _ = std::fs::remove_dir_all(self.root());
    }
}

/// A guest that needs no disk and no OS: QEMU (TCG), 1 vCPU, stopped only by destroy.
pub fn tiny_guest_xml(name: &str, uuid: uuid::Uuid, memory_mib: u64) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <bios rebootTimeout='-1'/>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"
    )
}

/// Runs `virsh -c URI args...` and returns stdout (panics on failure).
pub fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh").arg("-c").arg(uri).args(args).output().expect("run virsh");
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
