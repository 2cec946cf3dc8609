//! The per-host daemon: a thin shell around the pure core.
//!
//! Threads: the heartbeat loop (this thread: write, sweep, hand to the core, act), a backup
//! deadline thread (fences if the loop itself hangs past the deadline), the control socket
//! (tokio), the VM thread (`vms.rs`: inventory, the data extents, failover), and with network
//! heartbeats the network thread and, with isolation addresses, the isolation prober (`net.rs`).
//! Everything is checked before the first write: a bad config writes nothing.

pub mod config;
mod control;
pub mod events;
pub mod fence;
pub mod fence_device;
pub mod journal;
pub mod metrics;
pub mod net;
pub mod report;
pub mod status;
mod vms;

use crate::core::{Action, FenceOutcome, IoFailure, Node, NodeConfig, SlotSource};
use crate::disk::{read_superblock_bytes, write_result, Disk, DiskError};
use crate::io::{Access, Device};
use crate::timing::Timing;
use config::Config;
use control::{bind_socket, spawn_control};
use fence::Fencer;
use status::Snapshot;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use crate::core::{EXIT_CONFIG, EXIT_FENCED, EXIT_FENCE_FAILED, EXIT_LEFT, EXIT_REFUSED};

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
    #[error("network heartbeat: {0}")]
    Network(String),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error(
        "slot {slot}'s previous daemon on this same boot (generation {generation}) died with the hardware \
         watchdog armed, without leaving or fencing: its promise is that this host resets (docs/SAFETY.md, \
         \"Daemon death\"), and peers restart its VMs on that proof. Not starting and not touching the \
         watchdog. If this host does not reset within seconds, its watchdog is broken: power it off."
    )]
    WatchdogPromise { slot: u32, generation: u64 },
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_)
            | DaemonError::Socket { .. }
            | DaemonError::Watchdog { .. }
            | DaemonError::Network(_)
            | DaemonError::Metrics(_) => EXIT_CONFIG,
            DaemonError::Disk(DiskError::NoSuchSlot { .. }) => EXIT_CONFIG,
            DaemonError::Disk(_) | DaemonError::WatchdogPromise { .. } => EXIT_REFUSED,
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

/// The status lock; a panicked holder cannot have left a snapshot half-written in a way that
/// matters (plain copies), so poisoning is ignored rather than killing the heartbeat.
pub(crate) fn lock(m: &Mutex<Snapshot>) -> MutexGuard<'_, Snapshot> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fence path the panic hook runs: set once the daemon may hold a slot.
static PANIC_FENCER: OnceLock<Arc<Fencer>> = OnceLock::new();

/// A panic in the daemon must never leave VMs running behind a silent slot: the hook runs the
/// fence action first, then aborts (release builds are `panic = "abort"`; this makes debug builds
/// behave the same).
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if let Some(f) = PANIC_FENCER.get() {
            tracing::error!("daemon panicked: running the fence action before aborting");
            // The message says which invariant broke (`Node`/`Failover` check theirs always).
            let _ = f.fence_waiting(&format!("the diskbeat daemon panicked: {info}"));
        }
        std::process::abort();
    }));
}

/// Runs the daemon until it leaves, is refused, or (after fencing) is told to stop.
pub fn run(cfg: Config) -> Result<u8, DaemonError> {
    // Disk-dependent checks, read-only.
    let dev = Device::open(&cfg.device, Access::ReadWrite).map_err(DiskError::from)?;
    let (sb, sb_bytes) = read_superblock_bytes(&dev)?;
    if cfg.slot >= sb.layout.slot_count {
        return Err(config_err(
            "slot",
            format!(
                "{} does not exist: {} has {}",
                cfg.slot,
                cfg.device.display(),
                crate::text::slot_range(sb.layout.slot_count)
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
    // Network heartbeats: the key and the sockets, before anything is written.
    let networks = cfg.hb_addrs.len() as u8;
    let keyring = if networks == 0 { None } else { Some(load_keyring(&cfg, &sb)?) };
    let net_sockets = net::bind(&cfg.hb_addrs).map_err(DaemonError::Network)?;
    let pinger_check = if cfg.isolation_addrs.is_empty() {
        Ok(())
    } else {
        crate::io::icmp::Pinger::new().map(|_| ()).map_err(|e| {
            DaemonError::Network(format!(
                "isolation addresses need a raw ICMP socket (root or CAP_NET_RAW): {e}"
            ))
        })
    };
    pinger_check?;
    let listener = bind_socket(&cfg.socket)?;
    let metrics_listener = cfg.metrics_addr.map(metrics::bind).transpose()?;
    // The bound address: a port 0 in the config becomes the one the kernel chose (status shows it).
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    // The metrics thread reads the kernel's drops of these sockets; the network thread owns them.
    let udp_inodes: Vec<u64> = net_sockets.iter().map(|s| metrics::socket_inode(s).unwrap_or(0)).collect();
    let mut disk = Disk::with_superblock(dev, sb.clone(), cfg.engine, Some(cfg.slot))?;
    // Before the watchdog is opened (opening it feeds it): did this slot's previous daemon die on
    // this same boot with the watchdog armed? Then its promise is a reset, not a restart.
    let boot_id = crate::io::sys::boot_id();
    let starts_may_land = check_watchdog_promise(&mut disk, cfg.slot, boot_id, timing)?;
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
            // Shared with the network thread, which feeds it on evidence that does not depend on
            // the disk (`Node::poll_net_feed`).
            Some(Arc::new(w))
        }
    };

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

    let fencer = Arc::new(Fencer::new(cfg.fence_action.clone(), timing.io_timeout()));
    let fence_suspicion_ms = match cfg.fence_suspicion_ms {
        None => timing.fence_suspicion_ms(),
        Some(ms) if timing.fence_suspicion_range_ms().contains(&ms) => ms,
        Some(ms) => {
            let r = timing.fence_suspicion_range_ms();
            return Err(config_err(
                "fence_suspicion",
                format!(
                    "{ms} ms is out of range for T = {} ms: use {} ms (T/8, the default) to below {} ms (T)",
                    timing.base_timeout_ms, r.start, r.end
                ),
            ));
        }
    };
    if !cfg.fence_devices.is_empty() && networks == 0 {
        tracing::warn!(
            "fence devices without network heartbeats: a peer is powered off only once silent on the disk for T"
        );
    }
    let node_cfg = NodeConfig {
        slot: cfg.slot,
        slot_count: sb.layout.slot_count,
        cluster_uuid: sb.cluster_uuid,
        host_uuid: uuid::Uuid::new_v4(),
        host_name: crate::format::encode_name(&cfg.name).map_err(|e| config_err("name", e.to_string()))?,
        timing,
        superblock: sb_bytes,
        watchdog: watchdog.is_some(),
        fence_stops_vms: fencer.stops_vms(),
        skip_acquire_wait: cfg.unsafe_skip_acquire,
        networks,
        weight: cfg.weight,
        isolation_configured: !cfg.isolation_addrs.is_empty(),
        boot_id: boot_id.unwrap_or_else(uuid::Uuid::nil),
        fence_suspicion_ms,
    };
    let mut node = Node::new(node_cfg, now_ms());
    let mut device_names = Vec::new();
    for host in cfg.fence_devices.keys() {
        if host != &cfg.name {
            device_names.push(
                crate::format::encode_name(host).map_err(|e| config_err("fence_devices", e.to_string()))?,
            );
        }
    }
    node.set_fence_devices(&device_names);
    let node = Arc::new(Mutex::new(node));
    let devices = fence_device::Devices::spawn(cfg.fence_devices.clone(), timing.fence_device_timeout_ms());
    if !cfg.fence_devices.is_empty() {
        tracing::info!(
            hosts = ?cfg.fence_devices.keys().collect::<Vec<_>>(), fence_suspicion_ms,
            timeout_ms = timing.fence_device_timeout_ms(),
            "fence devices configured: a peer silent on the network and unchanged on the disk for the \
             suspicion time is powered off by the coordinator, and its VMs restart once the device confirms"
        );
    }
    let engine = disk.engine().kind().as_str();
    tracing::info!(
        device = %cfg.device.display(), slot = cfg.slot, name = %cfg.name, engine,
        fence_action = ?cfg.fence_action,
        watchdog = %cfg.watchdog.as_ref().map_or("none (a dead daemon's VMs are not proven gone)".to_string(),
            |p| format!("{} armed, {} s", p.display(), timing.io_timeout_ms / 1000)),
        base_timeout_ms = timing.base_timeout_ms, interval_ms = timing.interval_ms,
        io_timeout_ms = timing.io_timeout_ms, self_fence_ms = timing.self_fence_ms,
        host_dead_ms = timing.host_dead_ms,
        hb_addrs = ?cfg.hb_addrs, weight = cfg.weight, isolation_addrs = ?cfg.isolation_addrs,
        key = if cfg.key_file.is_some() { "key file" } else if networks > 0 { "disk keyring" } else { "none" },
        "starting"
    );
    let snapshot = Arc::new(Mutex::new(Snapshot::new(
        &node_lock(&node),
        cfg.device.display().to_string(),
        engine,
        sb.cluster_name.clone(),
    )));
    lock(&snapshot).hb_addrs = cfg.hb_addrs.clone();
    lock(&snapshot).metrics.addr = metrics_addr;
    let vm_figures = Arc::new(metrics::VmFigures::default());
    if let Some(l) = metrics_listener {
        tracing::info!(addr = ?metrics_addr, "metrics endpoint listening (GET /metrics)");
        metrics::spawn(
            l,
            metrics::MetricsShared { snapshot: snapshot.clone(), vms: vm_figures.clone(), udp_inodes },
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).expect("register signal handler");
    }
    spawn_control(listener, snapshot.clone(), cfg.socket.clone());
    let _ = PANIC_FENCER.set(fencer.clone());
    install_panic_hook();
    let deadline = Arc::new(AtomicU64::new(0));
    spawn_backup_deadline(deadline.clone(), fencer.clone(), timing);
    let net_stop = Arc::new(AtomicBool::new(false));
    let addresses: Arc<Mutex<net::AddressBook>> =
        Arc::new(Mutex::new(vec![[None; crate::core::net::MAX_NETWORKS]; sb.layout.slot_count as usize]));
    let keyring = keyring.map(|k| Arc::new(std::sync::RwLock::new(k)));
    if let Some(ring) = &keyring {
        net::spawn(
            net_sockets,
            net::NetShared {
                node: node.clone(),
                keyring: ring.clone(),
                addresses: addresses.clone(),
                stop: net_stop.clone(),
                watchdog: watchdog.clone(),
                backup_deadline: deadline.clone(),
            },
            now_ms,
        );
        if !cfg.isolation_addrs.is_empty() {
            net::spawn_isolation_prober(
                cfg.isolation_addrs.clone(),
                node.clone(),
                timing.interval(),
                Duration::from_millis(timing.net_timeout_ms()),
                net_stop.clone(),
            )
            .map_err(DaemonError::Network)?;
        }
    }
    let mut extents = ExtentState::new(keyring.is_some() && cfg.key_file.is_none());
    // The VM thread: inventory, addresses and failover through the data extents, on its own
    // disk handle so its I/O never waits behind (or delays) a sweep.
    let vm_disk = Disk::with_superblock(
        Device::open(&cfg.device, Access::ReadWrite).map_err(DiskError::from)?,
        sb.clone(),
        cfg.engine,
        Some(cfg.slot),
    )?;
    vms::spawn(
        vm_disk,
        vms::VmSettings {
            slot: cfg.slot,
            slot_count: sb.layout.slot_count,
            timing,
            driver: cfg.vm_driver.clone(),
            capacity_limit: (cfg.vm_memory_mib, cfg.vm_vcpus, cfg.no_restarts_here),
            hb_addrs: cfg.hb_addrs.clone(),
            tolerance_target: cfg.tolerance_target,
            starts_may_land,
        },
        vms::VmShared {
            node: node.clone(),
            snapshot: snapshot.clone(),
            addresses: addresses.clone(),
            stop: net_stop.clone(),
            fencer: fencer.clone(),
            figures: vm_figures,
        },
    );

    // The executor: perform what the node asks, feed results back, sleep until it wants more.
    // The node is locked only between I/Os, never across one: the network thread feeds it
    // packets meanwhile.
    let mut stop_sent = false;
    let mut fence_waiting = false;
    let mut disarm = false;
    // The loop never waits for the status lock: what it must not lose is kept here and copied in
    // by `publish`, which skips a copy while the lock is busy.
    let mut figures = metrics::LoopFigures::default();
    let mut fenced_at_ms: Option<u64> = None;
    // This cycle's sweep start and the end of its last I/O (the sweep's, or the write's after it).
    let mut cycle: Option<(Instant, Instant)> = None;
    let code = loop {
        if let Some(outcome) = fencer.take_backup_result() {
            fenced_at_ms.get_or_insert(now_ms());
            node_lock(&node).handle_backup_fence(now_ms(), outcome);
        }
        for a in devices.answers() {
            node_lock(&node).handle_fence_device(now_ms(), a.slot, a.host_uuid, a.generation, a.outcome);
        }
        if stop.load(Ordering::Relaxed) && !stop_sent {
            stop_sent = true;
            tracing::info!("stop requested");
            node_lock(&node).handle_stop(now_ms());
        }
        let mut exit = None;
        loop {
            let Some(action) = node_lock(&node).poll_action(now_ms()) else { break };
            match action {
                Action::Write { record, timeout_ms } => {
                    let result = match disk.write_record(&record, Duration::from_millis(timeout_ms)) {
                        Ok(o) => write_result(&o),
                        Err(e) => {
                            tracing::warn!(error = %e, "record write failed");
                            Err(IoFailure::Failed(libc::EIO))
                        }
                    };
                    node_lock(&node).handle_write(now_ms(), result);
                    if let Some((_, end)) = &mut cycle {
                        *end = Instant::now();
                    }
                }
                Action::Sweep { timeout_ms } => {
                    let start = now_ms();
                    let began = Instant::now();
                    let sweep = disk.sweep(Duration::from_millis(timeout_ms));
                    let ended = Instant::now();
                    let end = now_ms();
                    cycle = Some((began, ended));
                    let latency_us = match &sweep {
                        Ok(s) => u64::from(s.latency_us),
                        Err(e) => {
                            tracing::warn!(error = %e, "sweep failed");
                            // Not the engine's figure: wall time around the failed call, in µs.
                            micros(ended - began)
                        }
                    };
                    let slots = sweep.is_ok().then_some(&disk as &dyn SlotSource);
                    let in_flight = disk.record_writes_in_flight();
                    node_lock(&node).handle_sweep(start, end, slots, latency_us, in_flight);
                    if sweep.is_ok() {
                        if let Some(ring) = &keyring {
                            extents.reload_keyring(&disk, ring);
                        }
                    }
                }
                Action::Fence { reason, attempt } => {
                    let outcome = fencer.fence(&fence::describe(&reason));
                    if outcome == FenceOutcome::Waiting {
                        // Logged once per attempt, not every poll.
                        if !fence_waiting {
                            tracing::warn!(attempt, "fence action waits for a VM start in flight");
                        }
                        fence_waiting = true;
                    } else {
                        fence_waiting = false;
                        tracing::error!(attempt, ?outcome, "fence action ran");
                        fenced_at_ms.get_or_insert(now_ms());
                    }
                    node_lock(&node).handle_fence(now_ms(), outcome);
                }
                Action::WritePeer { record, timeout_ms } => {
                    let result = match disk.write_record(&record, Duration::from_millis(timeout_ms)) {
                        Ok(o) => write_result(&o),
                        Err(e) => {
                            tracing::warn!(error = %e, slot = record.slot, "fence record write failed");
                            Err(IoFailure::Failed(libc::EIO))
                        }
                    };
                    node_lock(&node).handle_peer_write(now_ms(), result);
                }
                Action::FenceDevice { slot, host_name, host_uuid, generation, attempt } => {
                    devices.request(fence_device::Request {
                        slot,
                        host_name: crate::format::decode_name(&host_name).unwrap_or("?").to_string(),
                        host_uuid,
                        generation,
                        attempt,
                    });
                }
                Action::FeedWatchdog => {
                    if let Some(w) = &watchdog {
                        if let Err(e) = w.feed() {
                            tracing::error!(error = %e, "watchdog feed failed");
                        }
                    }
                }
                Action::ExpireWatchdog => {
                    if let Some(w) = &watchdog {
                        tracing::error!("fence action failed: letting the hardware watchdog fire");
                        if let Err(e) = w.expire() {
                            tracing::error!(error = %e, "cannot shorten the watchdog timeout");
                        }
                    }
                }
                Action::Ready => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    // Test hook (tests/daemon.rs): proves a panic runs the fence path first.
                    #[cfg(feature = "test-hooks")]
                    if std::env::var_os("DISKBEAT_TEST_PANIC_WHEN_LIVE").is_some() {
                        panic!("DISKBEAT_TEST_PANIC_WHEN_LIVE is set: panicking on purpose");
                    }
                }
                Action::SetBackupDeadline { deadline_ms } => {
                    deadline.store(deadline_ms.unwrap_or(0), Ordering::SeqCst)
                }
                Action::Exit { code, disarm_watchdog } => {
                    exit = Some(code);
                    disarm = disarm_watchdog;
                }
            }
            publish(&node, &snapshot, &mut figures, fenced_at_ms);
        }
        if let Some((began, ended)) = cycle.take() {
            figures.cycle_latency.record(micros(ended - began));
        }
        publish(&node, &snapshot, &mut figures, fenced_at_ms);
        if let Some(code) = exit {
            break code;
        }
        if networks > 0 {
            // Skipped while a status or a scrape is being rendered: copied next cycle.
            if let Some(mut snap) = try_lock(&snapshot) {
                snap.peer_addrs.clone_from(&addresses.lock().unwrap_or_else(|e| e.into_inner()));
            }
        }
        // Sleep until the node wants to act, in short steps so a stop or a backup fence is seen.
        let wake = node_lock(&node).poll_timeout().unwrap_or_else(|| now_ms() + 20);
        while (stop_sent || !stop.load(Ordering::Relaxed))
            && now_ms() < wake
            && !devices.ready.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(wake.saturating_sub(now_ms()).clamp(1, 20)));
        }
    };
    net_stop.store(true, Ordering::Relaxed);
    let node = node_lock(&node);
    let _ = std::fs::remove_file(&cfg.socket);
    if let crate::core::Phase::Refused(r) = node.phase() {
        eprintln!("diskbeat daemon: {}", status::refuse_text(&r));
    }
    // The node says whether the watchdog's promise is kept without it (docs/SAFETY.md). If not,
    // it stays armed and resets the host.
    if disarm {
        if let Some(mut w) = watchdog {
            // The network thread drops its handle when it sees `net_stop` (within its poll).
            let until = now_ms() + 2_000;
            let w = loop {
                match Arc::try_unwrap(w) {
                    Ok(w) => break Some(w),
                    Err(back) if now_ms() < until => {
                        w = back;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break None,
                }
            };
            match w {
                Some(w) => {
                    let _ = w.disarm();
                }
                None => tracing::error!("the network thread still holds the watchdog: it stays armed"),
            }
        }
    }
    tracing::info!(phase = node.phase().name(), code, "stopped");
    Ok(code)
}

/// Refuses to start when our slot's last record is from a daemon of this same boot that died
/// holding the slot with a watchdog armed (not left, not fenced): feeding the watchdog now would
/// break the promise peers rely on to restart its VMs (docs/SAFETY.md, "Daemon death").
///
/// Returns whether a VM start the previous daemon of this slot asked for may still land here
/// (`core::starts_may_land`).
fn check_watchdog_promise(
    disk: &mut Disk,
    slot: u32,
    boot_id: Option<uuid::Uuid>,
    timing: Timing,
) -> Result<bool, DaemonError> {
    use crate::format::record::Record;
    let Some(boot_id) = boot_id else { return Ok(true) };
    disk.sweep(timing.io_timeout())?;
    let Ok(bytes) = disk.slot_bytes(slot) else { return Ok(true) };
    let Ok(r) = Record::decode(bytes, &disk.superblock().cluster_uuid, slot) else { return Ok(true) };
    if crate::core::breaks_watchdog_promise(&r, boot_id) {
        return Err(DaemonError::WatchdogPromise { slot, generation: r.generation });
    }
    Ok(crate::core::starts_may_land(Some(&r), boot_id))
}

fn node_lock(m: &Mutex<Node>) -> MutexGuard<'_, Node> {
    net::lock_node(m)
}

/// The cluster keyring for network heartbeats: the key file if given, else the one on the disk.
fn load_keyring(
    cfg: &Config,
    sb: &crate::format::superblock::Superblock,
) -> Result<crate::net::Keyring, DaemonError> {
    if let Some(path) = &cfg.key_file {
        return crate::net::Keyring::from_key_file(path).map_err(|e| config_err("key_file", e.to_string()));
    }
    match crate::rekey::read_keyring(&cfg.device, sb)? {
        Ok(kr) => Ok(crate::net::Keyring::from_disk(&kr, crate::rekey::now_unix_s())),
        Err(reason) => Err(DaemonError::Network(format!(
            "{} has no usable cluster keyring ({reason}). A disk formatted before format 1.3 has none, \
             and `diskbeat rekey` can neither create nor repair one: re-format it with a current \
             `diskbeat mkfs` (after stopping every daemon), or give every daemon the same --key-file",
            cfg.device.display()
        ))),
    }
}

/// Follows the disk keyring (the extents are the VM thread's, `vms.rs`).
struct ExtentState {
    /// The keyring bytes last applied (disk keyring only).
    keyring_bytes: Option<[u8; 512]>,
    reload_keyring: bool,
    keyring_checked_ms: u64,
}

impl ExtentState {
    fn new(reload_keyring: bool) -> ExtentState {
        ExtentState { keyring_bytes: None, reload_keyring, keyring_checked_ms: 0 }
    }

    /// Follows `diskbeat rekey`: the keyring sector is read with every sweep (the superblock
    /// block); a change, or the end of a rotation window, rebuilds the verifying keyring.
    fn reload_keyring(&mut self, disk: &Disk, ring: &std::sync::RwLock<crate::net::Keyring>) {
        use crate::format::keyring::{Keyring, OFFSET};
        if !self.reload_keyring {
            return;
        }
        let Ok(block) = disk.superblock_bytes() else { return };
        let range = OFFSET as usize..OFFSET as usize + 512;
        let Some(bytes) = block.get(range) else { return };
        let now = now_ms();
        let changed = self.keyring_bytes.as_ref().is_none_or(|b| b[..] != bytes[..]);
        // Re-derive once a second anyway: the previous key stops verifying when its window ends.
        if !changed && now < self.keyring_checked_ms + 1000 {
            return;
        }
        self.keyring_checked_ms = now;
        match Keyring::decode(bytes, &disk.superblock().cluster_uuid) {
            Ok(kr) => {
                let new = crate::net::Keyring::from_disk(&kr, crate::rekey::now_unix_s());
                let mut r = ring.write().unwrap_or_else(|e| e.into_inner());
                if changed {
                    tracing::info!(
                        current = new.current().id(),
                        previous = ?new.previous().map(|k| k.id()),
                        "cluster keyring loaded from the disk"
                    );
                }
                *r = new;
                let mut copy = [0u8; 512];
                copy.copy_from_slice(bytes);
                self.keyring_bytes = Some(copy);
            }
            Err(reason) if changed => {
                tracing::error!(%reason, "the keyring on the disk is unreadable: keeping the keys in use");
                let mut copy = [0u8; 512];
                copy.copy_from_slice(bytes);
                self.keyring_bytes = Some(copy);
            }
            Err(_) => {}
        }
    }
}

/// Logs the node's events, keeps them in the history, and copies the node's state into the
/// snapshot the control thread serves. Never waits on it: while a status is being rendered under
/// the snapshot lock, this cycle's copy is skipped (the events stay queued in the node for the
/// next one).
fn publish(
    node: &Mutex<Node>,
    snapshot: &Mutex<Snapshot>,
    figures: &mut metrics::LoopFigures,
    fenced_at_ms: Option<u64>,
) {
    let now = now_ms();
    let mut node = node_lock(node);
    // Every step, copied or not: the smallest margin is the one just before a renewal.
    figures.observe_deadline(node.fence_deadline_ms(), now);
    let Some(mut snap) = try_lock(snapshot) else { return };
    while let Some(e) = node.poll_event() {
        let ev = events::node_event(&e, &node);
        snap.journal.record(now, ev);
    }
    snap.update(&node, now);
    snap.metrics.figures.clone_from(figures);
    if snap.fenced_at_ms.is_none() {
        snap.fenced_at_ms = fenced_at_ms;
    }
}

/// The status lock if free now (poisoning ignored, as in [`lock`]); `None` while it is held.
fn try_lock(m: &Mutex<Snapshot>) -> Option<MutexGuard<'_, Snapshot>> {
    match m.try_lock() {
        Ok(s) => Some(s),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Whole microseconds of `d` (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The backup deadline: fences if the heartbeat loop has not renewed the deadline in time
/// (a hung loop, or a blocking engine stuck in a syscall). The loop reconciles the outcome.
fn spawn_backup_deadline(deadline: Arc<AtomicU64>, fencer: Arc<Fencer>, timing: Timing) {
    let step = Duration::from_millis(u64::from(timing.interval_ms / 4).max(5));
    std::thread::Builder::new()
        .name("deadline".into())
        .spawn(move || loop {
            std::thread::sleep(step);
            let d = deadline.load(Ordering::SeqCst);
            if d != 0 && now_ms() >= d && !fencer.has_fenced() {
                fencer.backup_fence("heartbeat loop missed the self-fence deadline (hung I/O or loop)");
                // One attempt per deadline: the loop retries a failed action itself.
                let _ = deadline.compare_exchange(d, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
        })
        .expect("spawn deadline thread");
}
