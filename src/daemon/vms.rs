//! The VM thread: performs what [`Failover`] asks (driver calls, extent reads and writes) and
//! feeds the results back. Its own disk handle and io_uring: a slow driver or a 1 MiB extent
//! write never delays the heartbeat loop, which it only locks to copy the slot views.

use super::{net, node_lock, now_ms, Snapshot};
use crate::core::failover::{ExtentWriter, Failover, FailoverAction, FailoverConfig, SlotView};
use crate::core::{Node, PeerState, Phase};
use crate::disk::{Disk, ExtentRead};
use crate::format::extent::{kind, Payload};
use crate::format::host_state::{HostCapacity, HostState};
use crate::timing::Timing;
use crate::vm::{DriverSpec, VmDriver};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct VmShared {
    pub node: Arc<Mutex<Node>>,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub addresses: Arc<Mutex<net::AddressBook>>,
    pub stop: Arc<AtomicBool>,
    pub fencer: Arc<super::fence::Fencer>,
    /// Starts, their durations and the VMs published, for the metrics endpoint.
    pub figures: Arc<super::metrics::VmFigures>,
}

pub struct VmSettings {
    pub slot: u32,
    pub slot_count: u32,
    pub timing: Timing,
    pub driver: Option<DriverSpec>,
    pub capacity_limit: (Option<u64>, Option<u32>, bool),
    pub hb_addrs: Vec<std::net::SocketAddr>,
    pub tolerance_target: Option<u32>,
    /// A start the previous daemon of this slot asked for may still land here (same boot).
    pub starts_may_land: bool,
}

/// Starts the VM thread over its own `disk` handle.
pub fn spawn(mut disk: Disk, settings: VmSettings, shared: VmShared) {
    std::thread::Builder::new()
        .name("vms".into())
        .spawn(move || run(&mut disk, settings, shared))
        .expect("spawn VM thread");
}

fn run(disk: &mut Disk, s: VmSettings, shared: VmShared) {
    let limit = match s.capacity_limit {
        (None, None, false) => None,
        (mem, cpu, no_restarts) => Some(HostCapacity {
            memory_mib: mem.unwrap_or(u64::MAX),
            vcpus: cpu.unwrap_or(u32::MAX),
            accepts_restarts: !no_restarts,
        }),
    };
    let mut fo = Failover::new(
        FailoverConfig {
            slot: s.slot,
            slot_count: s.slot_count,
            inventory_interval_ms: crate::core::failover::inventory_interval_ms(&s.timing),
            driver: s.driver.is_some(),
            capacity_limit: limit,
            hb_addrs: s.hb_addrs.clone(),
            tolerance_target: s.tolerance_target,
            start_landing_ms: crate::core::failover::start_landing_hold_ms(&s.timing, s.starts_may_land),
        },
        now_ms(),
    );
    let mut driver: Option<Box<dyn VmDriver>> = None;
    let io_timeout = s.timing.io_timeout();
    let cap = disk.extent_payload_cap();
    let mut buf = vec![0u8; cap];
    let mut views = vec![SlotView::FREE; s.slot_count as usize];
    let mut tolerance_inputs: Option<crate::planner::Pool> = None;
    let mut tolerated = 0u32;
    let step_ms = u64::from(s.timing.interval_ms / 2).clamp(20, 500);
    while !shared.stop.load(Ordering::Relaxed) {
        let (host_uuid, generation, live) = {
            let n = node_lock(&shared.node);
            for (i, p) in n.peers().iter().enumerate() {
                views[i] = SlotView {
                    state: p.state,
                    host_uuid: p.host_uuid,
                    generation: p.generation,
                    extent_sequence: p.extent_sequence,
                    gone: p.vms_gone(),
                    lists: p.silence_readers(s.slot_count),
                };
            }
            let live = n.phase() == Phase::Live;
            let own = &mut views[s.slot as usize];
            own.state = if live { PeerState::Live } else { PeerState::Unknown };
            own.host_uuid = n.record().host_uuid;
            own.generation = n.record().generation;
            own.gone = Err(crate::core::NotProven::Alive);
            (n.record().host_uuid, n.record().generation, live)
        };
        if n_exited(&shared) {
            break;
        }
        fo.handle_slots(&views, generation, live);
        if live && fo.needs_previous(now_ms()) {
            // Our previous incarnation's extent: the VMs it ran that no longer run here are lost.
            let prev = read_state(disk, s.slot, &mut buf, io_timeout).1;
            if let Err(e) = &prev {
                tracing::warn!(error = %e, "cannot read our own extent yet: publishing nothing until it is read");
            }
            fo.handle_previous(now_ms(), prev);
        }
        if driver.is_none() {
            if let Some(spec) = &s.driver {
                match spec.open_with_timeout(s.timing.vm_call_timeout_ms()) {
                    Ok(d) => driver = Some(d),
                    Err(e) => tracing::warn!(error = %e, "VM driver not available yet"),
                }
            }
        }
        // An action polled while gathering a start batch runs next.
        let mut pending: Option<FailoverAction> = None;
        while let Some(action) = pending.take().or_else(|| fo.poll_action(now_ms())) {
            match action {
                FailoverAction::PollInventory => {
                    let r = match driver.as_mut() {
                        Some(d) => d.inventory().map_err(|e| e.to_string()),
                        None => Err("the VM driver could not be opened".to_string()),
                    };
                    if let Err(e) = &r {
                        tracing::warn!(error = %e, "VM inventory failed");
                        driver = None; // Reopen next time (a restarted libvirtd).
                    }
                    fo.handle_inventory(now_ms(), r);
                }
                FailoverAction::ReadExtent { slot, .. } => {
                    let asked = views[slot as usize].extent_sequence;
                    let (writer, r) = read_state(disk, slot, &mut buf, io_timeout);
                    fo.handle_extent(slot, asked, writer, r);
                    if let Some(addrs) = fo.peer_addrs(slot) {
                        let mut entry = [None; 2];
                        for (i, a) in addrs.iter().take(2).enumerate() {
                            entry[i] = Some(*a);
                        }
                        let mut book = shared.addresses.lock().unwrap_or_else(|e| e.into_inner());
                        if book[slot as usize] != entry {
                            tracing::info!(slot, addrs = ?addrs, "peer heartbeat addresses");
                            book[slot as usize] = entry;
                        }
                    }
                }
                FailoverAction::Publish(state) => {
                    // Fencing: the last state on the disk stays the evidence of what ran here.
                    let r = if !shared.fencer.interlock().may_publish() {
                        Err("this host is fencing: nothing more is published".to_string())
                    } else {
                        publish(disk, s.slot, (host_uuid, generation), &state, io_timeout)
                    };
                    match &r {
                        Ok(seq) => {
                            node_lock(&shared.node).set_extent_sequence(*seq);
                            shared.figures.record_published(&state.vms);
                            tracing::info!(extent_sequence = seq, vms = state.vms.len(), plan = ?state.plan.as_ref().map(|p| p.epoch.number), "host state published");
                        }
                        Err(e) => tracing::warn!(error = %e, "publishing our host state failed"),
                    }
                    fo.handle_published(now_ms(), r);
                }
                FailoverAction::Start { uuid, name, definition, protection } => {
                    // One wave's starts at once: gather every start handed out now.
                    let mut batch = vec![StartJob { uuid, name, definition, protection }];
                    let mut next = None;
                    while let Some(a) = fo.poll_action(now_ms()) {
                        match a {
                            FailoverAction::Start { uuid, name, definition, protection } => {
                                batch.push(StartJob { uuid, name, definition, protection })
                            }
                            other => {
                                next = Some(other);
                                break;
                            }
                        }
                    }
                    // The `vm_starting` events before the driver is called.
                    record_events(&mut fo, &shared, s.slot);
                    for (uuid, r) in start_batch(&s, &shared, &mut driver, batch) {
                        fo.handle_start(now_ms(), uuid, r);
                    }
                    pending = next;
                }
                FailoverAction::Destroy { uuid, name, why } => {
                    // Logged as events (`vm_destroying`, `vm_destroyed`, `vm_destroy_failed`).
                    let _ = why;
                    record_events(&mut fo, &shared, s.slot);
                    let r = match driver.as_mut() {
                        Some(d) => d.destroy(&name).map_err(|e| e.to_string()),
                        None => Err("the VM driver could not be opened".to_string()),
                    };
                    fo.handle_destroy(now_ms(), uuid, r);
                }
                FailoverAction::Lookup { uuid, name } => {
                    // The inventory omitted one of our VMs: it stays ours until the driver says.
                    let r = match driver.as_mut() {
                        Some(d) => d.lookup(uuid).map_err(|e| e.to_string()),
                        None => Err("the VM driver could not be opened".to_string()),
                    };
                    match &r {
                        Ok(state) => {
                            tracing::info!(vm = %name, %uuid, ?state, "VM omitted from the inventory; looked up by UUID")
                        }
                        Err(e) => {
                            tracing::warn!(vm = %name, %uuid, error = %e, "VM omitted from the inventory; its lookup by UUID failed")
                        }
                    }
                    fo.handle_lookup(now_ms(), uuid, r);
                }
            }
            record_events(&mut fo, &shared, s.slot);
            // After every action: a plan carried out in one go is visible while it runs.
            let mut st = fo.status();
            st.tolerance = (s.driver.is_some() || st.plan.is_some()).then_some(tolerated);
            super::lock(&shared.snapshot).failover = Some(st);
        }
        record_events(&mut fo, &shared, s.slot);
        let mut status = fo.status();
        let pool = fo.pool();
        if tolerance_inputs.as_ref() != Some(&pool) {
            // Small budget: a status figure, recomputed only when the pool changes.
            let budget = crate::planner::Budget { max_nodes: 200_000, max_nodes_per_set: 20_000 };
            let t = crate::planner::tolerance(&pool, budget);
            // The proven figure: the pool survives at least this many failures.
            tolerated = t.tolerated_min as u32;
            tolerance_inputs = Some(pool);
        }
        if s.driver.is_some() || status.plan.is_some() {
            status.tolerance = Some(tolerated);
        }
        super::lock(&shared.snapshot).failover = Some(status);
        let wake = fo.poll_timeout().map_or(step_ms, |t| t.saturating_sub(now_ms()).min(step_ms));
        std::thread::sleep(Duration::from_millis(wake.max(5)));
    }
}

/// Logs the failover core's events and keeps them in the history, with host names as the node
/// sees them now.
fn record_events(fo: &mut Failover, shared: &VmShared, own_slot: u32) {
    let mut events = Vec::new();
    while let Some(e) = fo.poll_event() {
        events.push(e);
    }
    if events.is_empty() {
        return;
    }
    let names: Vec<String> = {
        let n = node_lock(&shared.node);
        let own = crate::format::decode_name(&n.config().host_name).unwrap_or("?").to_string();
        n.peers()
            .iter()
            .enumerate()
            .map(|(i, p)| if i as u32 == own_slot { own.clone() } else { p.host_name().to_string() })
            .collect()
    };
    let name = |s: u32| names.get(s as usize).cloned().unwrap_or_default();
    let mut snap = super::lock(&shared.snapshot);
    for e in &events {
        snap.journal.record(now_ms(), super::events::failover_event(e, &name));
    }
}

fn n_exited(shared: &VmShared) -> bool {
    node_lock(&shared.node).has_exited()
}

/// `slot`'s published host state (`Ok(None)` for an extent never published), and the writer its
/// header names (no one when there is no valid header).
fn read_state(
    disk: &mut Disk,
    slot: u32,
    buf: &mut [u8],
    timeout: Duration,
) -> (ExtentWriter, Result<Option<HostState>, String>) {
    let writer = |h: &crate::format::extent::Extent| ExtentWriter {
        host_uuid: h.writer_uuid(),
        generation: h.generation,
    };
    let nobody = ExtentWriter { host_uuid: None, generation: 0 };
    match disk.read_extent(slot, buf, timeout) {
        Ok(ExtentRead::Payload(h)) => (writer(&h), decode_state(&h, buf)),
        Ok(ExtentRead::Torn(h)) => (writer(&h), Err("torn (being written)".into())),
        Ok(ExtentRead::TooLarge(h)) => {
            (writer(&h), Err(format!("payload of {} bytes is larger than this build reads", h.payload_len)))
        }
        Ok(ExtentRead::Corrupt(c)) => (nobody, Err(format!("corrupt header: {c}"))),
        Err(e) => (nobody, Err(e.to_string())),
    }
}

fn decode_state(h: &crate::format::extent::Extent, buf: &[u8]) -> Result<Option<HostState>, String> {
    {
        match Payload::decode(h, &buf[..h.payload_len as usize]) {
            Ok(Payload::Empty) => Ok(None),
            Ok(Payload::HostState(st)) => Ok(Some(st)),
            Ok(Payload::HostInfo(info)) => {
                Ok(Some(HostState { hb_addrs: info.addrs().to_vec(), ..HostState::default() }))
            }
            Ok(Payload::Unknown(k)) => Err(format!("payload kind {k} is unknown to this build")),
            Err(e) => Err(format!("payload: {e}")),
        }
    }
}

/// Writes `state` into our extent as the incarnation `(host_uuid, generation)` of our record.
fn publish(
    disk: &mut Disk,
    slot: u32,
    (host_uuid, generation): (uuid::Uuid, u64),
    state: &HostState,
    timeout: Duration,
) -> Result<u64, String> {
    let mut payload = Vec::new();
    state.encode(&mut payload).map_err(|e| e.to_string())?;
    disk.write_extent(slot, kind::HOST_STATE, host_uuid, generation, &payload, timeout)
        .map_err(|e| e.to_string())
}

/// One VM start handed out by the failover core.
struct StartJob {
    uuid: uuid::Uuid,
    name: String,
    definition: Vec<u8>,
    protection: crate::vm::ProtectionSettings,
}

/// Starts one wave's VMs at once: the first on the thread's driver, the others each on a driver
/// of their own (a libvirt connection per thread). The fence waits for the whole batch
/// (the interlock), and nothing starts once it fences or the node is not live.
fn start_batch(
    s: &VmSettings,
    shared: &VmShared,
    driver: &mut Option<Box<dyn VmDriver>>,
    batch: Vec<StartJob>,
) -> Vec<(uuid::Uuid, Result<(), String>)> {
    let live = node_lock(&shared.node).phase() == Phase::Live;
    let allowed = {
        let mut lock = shared.fencer.interlock();
        let ok = lock.begin_start(live);
        for _ in 1..batch.len() {
            if ok {
                assert!(lock.begin_start(live), "the interlock admits a whole batch or none");
            }
        }
        ok
    };
    if !allowed {
        return batch
            .into_iter()
            .map(|j| (j.uuid, Err("this host is not live (fencing): no starts".to_string())))
            .collect();
    }
    // Every start of the batch ends here, whatever happens to it (an unwinding panic included).
    struct Ended<'a>(&'a super::fence::Fencer, usize);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            let mut lock = self.0.interlock();
            for _ in 0..self.1 {
                lock.end_start();
            }
        }
    }
    let _ended = Ended(&shared.fencer, batch.len());
    let figures = &*shared.figures;
    let start_one = |d: &mut dyn VmDriver, j: &StartJob| -> Result<(), String> {
        // Logged as events (`vm_starting`, `vm_started`, `vm_start_failed`).
        let began = std::time::Instant::now();
        let r = d
            .start(&crate::vm::StartRequest { name: &j.name, uuid: j.uuid, definition: &j.definition })
            .map_err(|e| e.to_string());
        figures.record_start(r.is_ok(), u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
        if r.is_ok() {
            // Protection travels with the VM: store it here too (the exec hook keeps it
            // outside the definition; for libvirt it is already in the definition).
            if let Err(e) = d.set_protection(&j.name, &j.protection) {
                tracing::error!(vm = %j.name, error = %e, "cannot store the protection settings of a restarted VM");
            }
        }
        r
    };
    let spec = s.driver.as_ref();
    let timeout_ms = s.timing.vm_call_timeout_ms();
    let (first, rest) = batch.split_first().expect("a batch has a start");
    let mut results = Vec::with_capacity(batch.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .map(|j| {
                scope.spawn(move || match spec.map(|sp| sp.open_with_timeout(timeout_ms)) {
                    Some(Ok(mut d)) => start_one(d.as_mut(), j),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("no VM driver configured".to_string()),
                })
            })
            .collect();
        let r = match driver.as_mut() {
            Some(d) => start_one(d.as_mut(), first),
            None => Err("the VM driver could not be opened".to_string()),
        };
        results.push((first.uuid, r));
        for (j, h) in rest.iter().zip(handles) {
            let r = h.join().unwrap_or_else(|_| Err("the start thread panicked".to_string()));
            results.push((j.uuid, r));
        }
    });
    results
}
