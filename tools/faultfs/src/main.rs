//! faultfs: a FUSE fault injector standing in for dm-flakey/dm-delay in diskbeat tests.
//!
//! Every regular file of a backing directory appears under several "views"
//! (`MNT/<view>/<file>`); all views are the same bytes, but faults (EIO, delay, hang) are set
//! per view at runtime through a Unix control socket. See README.md.

mod control;
mod error;
mod faults;
mod fs;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};

use error::{Error, Result};
use faults::Faults;

const USAGE: &str = "\
faultfs: FUSE fault injector (per-view EIO / delay / hang over one shared backing file)

USAGE:
  faultfs mount --backing DIR --mountpoint MNT --views a,b[,..] [--control PATH]
                [--foreground] [--auto-unmount] [--threads N] [--log FILE]
  faultfs ctl --control PATH set VIEW [--eio-read] [--eio-write] [--delay-ms N] [--hang]
  faultfs ctl --control PATH clear VIEW|--all
  faultfs ctl --control PATH show          (JSON: faults and op counters per view)
  faultfs ctl --control PATH shutdown      (release hung requests with EIO, unmount, exit)
  faultfs umount MNT [--lazy]

--control defaults to DIR/faultfs.sock. Without --foreground, `mount` starts the daemon in the
background and returns once the filesystem is mounted and the control socket answers.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("faultfs: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("mount") => cmd_mount(&args[1..]),
        Some("ctl") => cmd_ctl(&args[1..]),
        Some("umount") | Some("unmount") => cmd_umount(&args[1..]),
        Some("help") | Some("--help") | Some("-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Error::Usage(format!("unknown command {other:?}"))),
        None => Err(Error::Usage("missing command".into())),
    }
}

/// Minimal `--flag value` parser: std only keeps the build small.
struct Args<'a> {
    rest: &'a [String],
}

impl<'a> Args<'a> {
    fn value(&mut self, flag: &str) -> Result<&'a str> {
        let (v, rest) =
            self.rest.split_first().ok_or_else(|| Error::Usage(format!("{flag} needs a value")))?;
        self.rest = rest;
        Ok(v)
    }
    fn next(&mut self) -> Option<&'a str> {
        let (v, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(v)
    }
}

fn valid_view(v: &str) -> bool {
    !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && v != "."
        && v != ".."
}

fn cmd_mount(args: &[String]) -> Result<()> {
    let mut a = Args { rest: args };
    let (mut backing, mut mnt, mut views, mut control, mut log) = (None, None, None, None, None);
    let (mut foreground, mut auto_unmount, mut threads) = (false, false, 4usize);
    while let Some(flag) = a.next() {
        match flag {
            "--backing" => backing = Some(PathBuf::from(a.value(flag)?)),
            "--mountpoint" => mnt = Some(PathBuf::from(a.value(flag)?)),
            "--views" => views = Some(a.value(flag)?.to_string()),
            "--control" => control = Some(PathBuf::from(a.value(flag)?)),
            "--log" => log = Some(PathBuf::from(a.value(flag)?)),
            "--foreground" | "-f" => foreground = true,
            "--auto-unmount" => auto_unmount = true,
            "--threads" => {
                threads =
                    a.value(flag)?.parse().map_err(|_| Error::Usage("--threads needs a number".into()))?
            }
            other => return Err(Error::Usage(format!("unknown mount option {other:?}"))),
        }
    }
    let backing = backing.ok_or_else(|| Error::Usage("--backing DIR is required".into()))?;
    let mnt = mnt.ok_or_else(|| Error::Usage("--mountpoint MNT is required".into()))?;
    let views: Vec<String> = views
        .ok_or_else(|| Error::Usage("--views a,b,... is required".into()))?
        .split(',')
        .map(str::to_string)
        .collect();
    if let Some(bad) = views.iter().find(|v| !valid_view(v)) {
        return Err(Error::Usage(format!("bad view name {bad:?}: use letters, digits, '_', '-', '.'")));
    }
    if views.len() as u64 > fs::MAX_VIEWS {
        return Err(Error::Usage(format!("at most {} views", fs::MAX_VIEWS)));
    }
    let backing =
        backing.canonicalize().map_err(|source| Error::Backing { path: backing.clone(), source })?;
    let control = control.unwrap_or_else(|| backing.join("faultfs.sock"));

    if !foreground {
        return spawn_background(args, &control, log.as_deref());
    }
    mount_foreground(backing, mnt, views, control, auto_unmount, threads.max(1))
}

/// Re-exec ourselves with --foreground in a new process group, wait until it answers `ping`.
fn spawn_background(args: &[String], control: &Path, log: Option<&Path>) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Io { context: "locating own binary".into(), source: e })?;
    let (out, err) = match log {
        Some(p) => {
            let open_err = |e| Error::Io { context: format!("opening log {}", p.display()), source: e };
            let f = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(open_err)?;
            let f2 = f.try_clone().map_err(open_err)?;
            (Stdio::from(f), Stdio::from(f2))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let _ = std::fs::remove_file(control);
    let mut child = Command::new(exe)
        .arg("mount")
        .args(args)
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a Ctrl-C in the caller's terminal must not kill the daemon.
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Io { context: "starting daemon".into(), source: e })?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::NotReady(format!("daemon exited with {st}")));
        }
        if control::request(control, "ping").is_ok() {
            println!("{}", child.id());
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(Error::NotReady("no answer on the control socket after 15 s".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mount_foreground(
    backing: PathBuf,
    mnt: PathBuf,
    views: Vec<String>,
    control: PathBuf,
    auto_unmount: bool,
    threads: usize,
) -> Result<()> {
    // Block the termination signals before any thread exists so that every thread inherits
    // the mask and only our sigwait thread ever sees them.
    let sigs = signal_set();
    // SAFETY: `sigs` is an initialised sigset_t; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut()) };

    let faults = Arc::new(Faults::new(&views));
    let mut options = vec![
        MountOption::FSName(format!("faultfs:{}", backing.display())),
        MountOption::Subtype("faultfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if auto_unmount {
        options.push(MountOption::AutoUnmount);
    }
    let mut config = Config::default();
    config.mount_options = options;
    // allow_other: losetup and the daemon under test may run as other users than us.
    config.acl = SessionACL::All;
    // Several session threads, each with its own cloned /dev/fuse fd, so that metadata and
    // healthy-view requests are not serialised behind each other; faulted requests are
    // additionally moved off these threads (see faults.rs).
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;

    let filesystem = fs::FaultFs::new(backing, faults.clone());
    let mut session = Session::new(filesystem, &mnt, &config)
        .map_err(|source| Error::Mount { path: mnt.clone(), source })?;
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));

    // Shutdown path shared by signals and the `shutdown` control command.
    let shutdown = {
        let faults = faults.clone();
        let mnt = mnt.clone();
        let control = control.clone();
        Arc::new(move || {
            // Release hung requests with EIO first: nothing may stay in D state.
            faults.shutdown();
            let res = unmounter.lock().unwrap_or_else(|e| e.into_inner()).unmount();
            if let Err(e) = res {
                // Busy (a loop device still holds a file): detach lazily and exit; the kernel
                // aborts the connection when our /dev/fuse fds close, so users get errors
                // instead of hanging.
                eprintln!("faultfs: unmount {} failed ({e}); detaching lazily and exiting", mnt.display());
                let _ = umount2(&mnt, libc::MNT_DETACH);
                let _ = std::fs::remove_file(&control);
                std::process::exit(0);
            }
        })
    };
    let on_shutdown: Arc<dyn Fn() + Send + Sync> = {
        let s = shutdown.clone();
        Arc::new(move || {
            // Run asynchronously: the control client gets its "ok" before we go away.
            let s = s.clone();
            std::thread::spawn(move || s());
        })
    };
    control::serve(&control, faults.clone(), on_shutdown)?;
    std::thread::Builder::new()
        .name("faultfs-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `sigs` is initialised and `sig` is a valid out-pointer.
            while unsafe { libc::sigwait(&sigs, &mut sig) } != 0 {}
            eprintln!("faultfs: signal {sig}, shutting down");
            shutdown();
        })
        .map_err(|e| Error::Io { context: "spawning signal thread".into(), source: e })?;

    eprintln!("faultfs: mounted {} views {:?}, control {}", mnt.display(), views, control.display());
    let res = session.run();
    let _ = std::fs::remove_file(&control);
    res.map_err(|e| Error::Io { context: "FUSE session".into(), source: e })
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and update the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn umount2(path: &Path, flags: i32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cmd_umount(args: &[String]) -> Result<()> {
    let mut a = Args { rest: args };
    let (mut mnt, mut lazy) = (None, false);
    while let Some(w) = a.next() {
        match w {
            "--lazy" | "-z" => lazy = true,
            w if mnt.is_none() => mnt = Some(PathBuf::from(w)),
            w => return Err(Error::Usage(format!("unexpected argument {w:?}"))),
        }
    }
    let mnt = mnt.ok_or_else(|| Error::Usage("umount needs MNT".into()))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    match umount2(&mnt, flags) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // Not root: go through the setuid helper.
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u");
            if lazy {
                cmd.arg("-z");
            }
            let st = cmd.arg(&mnt).status().map_err(|source| Error::Umount { path: mnt.clone(), source })?;
            if st.success() {
                Ok(())
            } else {
                Err(Error::Umount {
                    path: mnt,
                    source: std::io::Error::other(format!("fusermount3 -u: {st}")),
                })
            }
        }
        Err(source) => Err(Error::Umount { path: mnt, source }),
    }
}

fn cmd_ctl(args: &[String]) -> Result<()> {
    let mut a = Args { rest: args };
    let mut control = None;
    let mut words: Vec<&str> = Vec::new();
    while let Some(w) = a.next() {
        match w {
            "--control" => control = Some(PathBuf::from(a.value(w)?)),
            w => words.push(w),
        }
    }
    let control = control.ok_or_else(|| Error::Usage("ctl needs --control PATH".into()))?;
    let line = match words.as_slice() {
        ["show"] => "show".to_string(),
        ["ping"] => "ping".to_string(),
        ["shutdown"] => "shutdown".to_string(),
        ["clear", "--all"] => "clear *".to_string(),
        ["clear", view] => format!("clear {view}"),
        ["set", view, flags @ ..] => {
            let mut line = format!("set {view}");
            let mut it = flags.iter();
            while let Some(f) = it.next() {
                match *f {
                    "--eio-read" => line.push_str(" eio_read"),
                    "--eio-write" => line.push_str(" eio_write"),
                    "--hang" => line.push_str(" hang"),
                    "--delay-ms" => {
                        let n: u64 = it
                            .next()
                            .and_then(|n| n.parse().ok())
                            .ok_or_else(|| Error::Usage("--delay-ms needs a number".into()))?;
                        line.push_str(&format!(" delay_ms={n}"));
                    }
                    other => return Err(Error::Usage(format!("unknown fault flag {other:?}"))),
                }
            }
            line
        }
        _ => return Err(Error::Usage(format!("bad ctl request {words:?}"))),
    };
    let out = control::request(&control, &line)?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}
