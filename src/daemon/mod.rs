//! The per-host daemon: a thin shell around the pure core.
//!
//! Threads: the heartbeat loop (this thread: write, sweep, hand to the core, act), a backup
//! deadline thread (fences if the loop itself hangs past the deadline) and the control socket
//! (tokio). Everything is checked before the first write: a bad config writes nothing.

pub mod config;
mod control;
pub mod fence;
pub mod status;

use crate::core::{Core, CoreConfig, CycleInput, Event, Phase};
use crate::disk::{read_superblock, Disk, DiskError};
use crate::io::{Access, Device, Status};
use crate::timing::Timing;
use config::Config;
use control::{bind_socket, spawn_control};
use fence::Fencer;
use status::Snapshot;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Exit statuses of `diskbeat daemon`.
pub const EXIT_LEFT: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_FENCED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("control socket {path}: {reason}")]
    Socket { path: String, reason: String },
    #[error("watchdog {path}: {reason}")]
    Watchdog { path: String, reason: String },
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Socket { .. } | DaemonError::Watchdog { .. } => EXIT_CONFIG,
            DaemonError::Disk(DiskError::NoSuchSlot { .. }) => EXIT_CONFIG,
            DaemonError::Disk(_) => EXIT_REFUSED,
        }
    }
}

/// Our monotonic clock in milliseconds (CLOCK_MONOTONIC: comparable between processes on one host).
pub fn now_ms() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000
}

fn config_err(field: &'static str, reason: impl Into<String>) -> DaemonError {
    DaemonError::Config(config::ConfigError::Field { field, reason: reason.into() })
}

/// Runs the daemon until it leaves, is refused, or (after fencing) is told to stop.
pub fn run(cfg: Config) -> Result<u8, DaemonError> {
    // Disk-dependent checks, read-only.
    let dev = Device::open(&cfg.device, Access::ReadWrite).map_err(DiskError::from)?;
    let sb = read_superblock(&dev)?;
    if cfg.slot >= sb.layout.slot_count {
        return Err(config_err(
            "slot",
            format!(
                "{} does not exist: {} has {} slots (0..{})",
                cfg.slot,
                cfg.device.display(),
                sb.layout.slot_count,
                sb.layout.slot_count
            ),
        ));
    }
    let timing = Timing::from_base(sb.base_timeout_ms).map_err(|e| config_err("timeout", e.to_string()))?;
    if let Some(t) = cfg.timeout_ms {
        if t != sb.base_timeout_ms {
            return Err(config_err(
                "timeout",
                format!(
                    "{t} ms differs from the {} ms the disk was formatted with; every host must use the same \
                     base timeout (omit --timeout to use the disk's)",
                    sb.base_timeout_ms
                ),
            ));
        }
    }
    timing.check().map_err(|e| config_err("timeout", e.to_string()))?;
    let watchdog = match &cfg.watchdog {
        None => None,
        Some(path) => {
            // The hardware backstop fires at most one io timeout after the last feed (SAFETY.md).
            if timing.io_timeout_ms < 1000 {
                return Err(config_err(
                    "watchdog",
                    "needs a base timeout of at least 4 s (watchdog timeouts are whole seconds)",
                ));
            }
            let w = crate::io::sys::Watchdog::open(path, timing.io_timeout_ms / 1000).map_err(|e| {
                DaemonError::Watchdog { path: path.display().to_string(), reason: e.to_string() }
            })?;
            Some(w)
        }
    };
    let listener = bind_socket(&cfg.socket)?;
    let mut disk = Disk::with_superblock(dev, sb.clone(), cfg.engine, Some(cfg.slot))?;

    if cfg.mlock {
        if let Err(e) = nix::sys::mman::mlockall(
            nix::sys::mman::MlockAllFlags::MCL_CURRENT | nix::sys::mman::MlockAllFlags::MCL_FUTURE,
        ) {
            tracing::warn!(error = %e, "mlockall failed: the heartbeat may be delayed by paging");
        }
    }
    if cfg.sched_rr {
        if let Err(e) = crate::io::sys::set_sched_rr(10) {
            tracing::warn!(error = %e, "SCHED_RR not available");
        }
    }

    let core_cfg = CoreConfig {
        slot: cfg.slot,
        slot_count: sb.layout.slot_count,
        cluster_uuid: sb.cluster_uuid,
        host_uuid: uuid::Uuid::new_v4(),
        host_name: crate::format::encode_name(&cfg.name).map_err(|e| config_err("name", e.to_string()))?,
        timing,
    };
    let mut core = Core::new(core_cfg, now_ms());
    if cfg.unsafe_skip_acquire {
        core.skip_acquire_wait();
    }
    let engine = disk.engine().kind().as_str();
    tracing::info!(
        device = %cfg.device.display(), slot = cfg.slot, name = %cfg.name, engine,
        base_timeout_ms = timing.base_timeout_ms, interval_ms = timing.interval_ms,
        io_timeout_ms = timing.io_timeout_ms, self_fence_ms = timing.self_fence_ms,
        host_dead_ms = timing.host_dead_ms, "starting"
    );
    let snapshot = Arc::new(Mutex::new(Snapshot::new(
        &core,
        cfg.device.display().to_string(),
        engine,
        sb.cluster_name.clone(),
    )));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).expect("register signal handler");
    }
    spawn_control(listener, snapshot.clone(), cfg.socket.clone());
    let fencer = Arc::new(Fencer::new(cfg.fence_action.clone(), timing.io_timeout()));
    let deadline = Arc::new(AtomicU64::new(0));
    spawn_backup_deadline(deadline.clone(), fencer.clone(), snapshot.clone(), timing);

    let mut notified = false;
    let mut last_fed_ok = 0;
    loop {
        // Deadline first: a host that fenced (here or in the backup thread) never writes `leaving`.
        let cycle_start = now_ms();
        core.check_deadline(cycle_start);
        carry_out_fence(&mut core, &fencer, &snapshot);
        if fencer.has_fenced() && matches!(core.phase(), Phase::Live) {
            // The backup thread fenced while we were stuck: stop heartbeating at once.
            core.check_deadline(u64::MAX);
            core.fence_due();
            core.fence_done();
        }
        if stop.load(Ordering::Relaxed) && core.is_running() && !matches!(core.phase(), Phase::Leaving) {
            tracing::info!("stop requested: leaving cleanly");
            core.leave();
        }
        // I/O never runs past the self-fence deadline, so the deadline is checked on time. The
        // engine may wait up to a quarter more than the timeout for cancellations: keep 4/5.
        let io_budget = |core: &Core| match core.fence_deadline_ms() {
            Some(d) => Duration::from_millis(
                (d.saturating_sub(now_ms()) * 4 / 5).clamp(1, timing.io_timeout_ms.into()),
            ),
            None => timing.io_timeout(),
        };
        let write_timeout = io_budget(&core);
        let write =
            core.record_to_write(cycle_start).map(|rec| match disk.write_record(&rec, write_timeout) {
                Ok(o) => (o.status, u64::from(o.latency_us)),
                Err(e) => {
                    tracing::warn!(error = %e, "record write failed");
                    (Status::Failed(libc::EIO), 0)
                }
            });
        let sweep_start = now_ms();
        let sweep = disk.sweep(io_budget(&core));
        let sweep_end = now_ms();
        if let Err(e) = &sweep {
            tracing::warn!(error = %e, "sweep failed");
        }
        core.handle_cycle(&CycleInput {
            cycle_start_ms: cycle_start,
            write,
            sweep_start_ms: sweep_start,
            sweep_end_ms: sweep_end,
            sweep_ran: sweep.is_ok(),
            sweep_latency_us: (sweep_end - sweep_start) * 1000,
            slots: &disk,
        });
        carry_out_fence(&mut core, &fencer, &snapshot);
        // The backup thread fences if the loop stops reaching this point before the deadline.
        deadline.store(core.fence_deadline_ms().unwrap_or(0), Ordering::SeqCst);
        {
            let mut snap = snapshot.lock().expect("status lock");
            while let Some(e) = core.poll_event() {
                log_event(&e);
                snap.push_event(sweep_end, e);
            }
            snap.update(&core, now_ms());
        }
        if matches!(core.phase(), Phase::Live) && core.last_ok_ms() != last_fed_ok {
            last_fed_ok = core.last_ok_ms();
            if let Some(w) = &watchdog {
                if let Err(e) = w.feed() {
                    tracing::error!(error = %e, "watchdog feed failed");
                }
            }
            if !notified {
                notified = true;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
        if !core.is_running() {
            break;
        }
        if matches!(core.phase(), Phase::Fenced(_)) && stop.load(Ordering::Relaxed) {
            break;
        }
        // Sleep to the next cycle in short steps so a stop request is handled promptly.
        let next = core.next_cycle_ms(cycle_start);
        while now_ms() < next
            && !(stop.load(Ordering::Relaxed)
                && core.is_running()
                && !matches!(core.phase(), Phase::Leaving | Phase::Fenced(_)))
        {
            std::thread::sleep(Duration::from_millis((next - now_ms()).clamp(1, 20)));
        }
    }
    let _ = std::fs::remove_file(&cfg.socket);
    let code = match core.phase() {
        Phase::Refused(r) => {
            eprintln!("diskbeat daemon: {}", status::refuse_text(&r));
            EXIT_REFUSED
        }
        Phase::Fenced(_) | Phase::SelfFencing(_) => EXIT_FENCED,
        _ if fencer.has_fenced() => EXIT_FENCED,
        _ => {
            if let Some(w) = watchdog {
                let _ = w.disarm();
            }
            EXIT_LEFT
        }
    };
    tracing::info!(phase = core.phase().name(), code, "stopped");
    Ok(code)
}

/// Runs the fence action the core asks for, if any (once: the fencer ignores repeats).
fn carry_out_fence(core: &mut Core, fencer: &Fencer, snapshot: &Mutex<Snapshot>) {
    if let Some(reason) = core.fence_due() {
        fencer.fence(&fence::describe(&reason));
        core.fence_done();
        // Keep the backup thread's time if it fenced first.
        snapshot.lock().expect("status lock").fenced_at_ms.get_or_insert(now_ms());
    }
}

fn log_event(e: &Event) {
    let text = status::describe_event(e);
    match e {
        Event::SelfFence(_) | Event::Refused(_) => tracing::error!("{text}"),
        Event::CycleFailed { .. }
        | Event::SlowWrite { .. }
        | Event::SlowSweep { .. }
        | Event::PeerCorrupt { .. }
        | Event::MailboxCorrupt { .. } => {
            tracing::warn!("{text}")
        }
        _ => tracing::info!("{text}"),
    }
}

/// The backup deadline: fences if the heartbeat loop has not renewed the deadline in time
/// (a hung loop, or a blocking engine stuck in a syscall).
fn spawn_backup_deadline(
    deadline: Arc<AtomicU64>,
    fencer: Arc<Fencer>,
    snapshot: Arc<Mutex<Snapshot>>,
    timing: Timing,
) {
    let step = Duration::from_millis(u64::from(timing.interval_ms / 4).max(5));
    std::thread::Builder::new()
        .name("deadline".into())
        .spawn(move || loop {
            std::thread::sleep(step);
            let d = deadline.load(Ordering::SeqCst);
            if d != 0 && now_ms() >= d && !fencer.has_fenced() {
                fencer.fence("heartbeat loop missed the self-fence deadline (hung I/O or loop)");
                if let Ok(mut s) = snapshot.lock() {
                    s.fenced_at_ms = Some(now_ms());
                }
            }
        })
        .expect("spawn deadline thread");
}
