//! The optional Prometheus endpoint (`metrics_addr`, off by default): one thread answers
//! `GET /metrics` with the OpenMetrics text of this host's status (docs/METRICS.md).
//!
//! A `Registry` is built per scrape from the status snapshot rather than kept as live collectors:
//! the heartbeat loop already copies everything into the snapshot (allocation-free, with
//! `try_lock`), so a second set of counters it would have to update does not exist; and labels
//! that come and go (peers, their names and states, VM states) are rebuilt every time, so nothing
//! stale lingers. The snapshot lock is held only while the registry is filled (the encoding runs
//! after it is released); the heartbeat loop never waits for it (it skips a copy instead).
//!
//! What the heartbeat loop itself measures for this endpoint ([`LoopFigures`]: the cycle latency,
//! the smallest self-fence deadline margin) lives in fixed-size fields it copies into the
//! snapshot; what the VM thread measures ([`VmFigures`]: starts, their durations, the VMs it
//! published) is behind its own mutex, which the heartbeat loop never touches.

use super::status::{peer_state_name, Snapshot};
use crate::core::PeerState;
use crate::format::host_state::VmState;
use crate::planner::Protection;
use crate::stats::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest request (line and headers) read; a longer one is answered 431 and closed.
const MAX_REQUEST_BYTES: usize = 8192;
/// Scrapes served at once; one more is answered 503 and closed at once.
const MAX_CLIENTS: usize = 4;
/// How long a client may take to send its request, or to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// Latency histogram boundaries, µs: each exported `le` is the edge of the io-engine histogram's
/// bucket at or just above (within 12.5%), so the cumulative counts are exact, not interpolated.
const LE_TARGETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Every phase `diskbeat_phase` names (one of them 1, the others 0).
const PHASES: [&str; 8] =
    ["acquiring", "joining", "live", "self_fencing", "fenced", "leaving", "stopped", "refused"];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What the heartbeat loop measures for this endpoint. Fixed size: the loop keeps one and copies
/// it into the snapshot with every publish (a memcpy, no allocation).
#[derive(Clone, Default)]
pub struct LoopFigures {
    /// One cycle: a sweep and the write that follows it (when one does), wall time in µs
    /// (`std::time::Instant`), as the executor sees it.
    pub cycle_latency: Histogram,
    /// The smallest time left until the self-fence deadline seen at any step of the loop.
    pub fence_margin_min_ms: Option<u64>,
}

impl LoopFigures {
    /// Notes the margin left at `now_ms` (nothing while there is no deadline).
    pub fn observe_deadline(&mut self, deadline_ms: Option<u64>, now_ms: u64) {
        if let Some(d) = deadline_ms {
            let m = d.saturating_sub(now_ms);
            self.fence_margin_min_ms = Some(self.fence_margin_min_ms.map_or(m, |old| old.min(m)));
        }
    }
}

/// The snapshot's part for this endpoint.
#[derive(Clone, Default)]
pub struct SnapshotMetrics {
    pub figures: LoopFigures,
    /// Where the endpoint listens (the bound address: a port 0 in the config is resolved).
    pub addr: Option<SocketAddr>,
}

/// VM protection levels in label order.
const PROTECTIONS: [Protection; 3] = [Protection::Protect, Protection::BestEffort, Protection::None];
const VM_STATES: [VmState; 5] =
    [VmState::Running, VmState::Stopped, VmState::Starting, VmState::Failed, VmState::Lost];

fn vm_state_name(s: VmState) -> &'static str {
    match s {
        VmState::Running => "running",
        VmState::Stopped => "stopped",
        VmState::Starting => "starting",
        VmState::Failed => "failed",
        VmState::Lost => "lost",
    }
}

/// This host's VMs as last published, by protection level and state.
pub type VmCounts = [[u32; VM_STATES.len()]; PROTECTIONS.len()];

/// What the VM thread measures: its own atomics and mutex, never touched by the heartbeat loop.
#[derive(Default)]
pub struct VmFigures {
    starts_ok: AtomicU64,
    starts_failed: AtomicU64,
    /// Start call durations, µs.
    start_latency: Mutex<Histogram>,
    published: Mutex<Option<VmCounts>>,
}

impl VmFigures {
    /// One driver start call ended after `us` µs.
    pub fn record_start(&self, ok: bool, us: u64) {
        let c = if ok { &self.starts_ok } else { &self.starts_failed };
        c.fetch_add(1, Ordering::Relaxed);
        self.start_latency.lock().unwrap_or_else(|e| e.into_inner()).record(us);
    }

    /// The VMs of a host state just published on the disk.
    pub fn record_published(&self, vms: &[crate::format::host_state::VmEntry]) {
        let mut counts: VmCounts = Default::default();
        for v in vms {
            let p = PROTECTIONS.iter().position(|&p| p == v.protection).unwrap_or(0);
            let s = VM_STATES.iter().position(|&s| s == v.state).unwrap_or(0);
            counts[p][s] += 1;
        }
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Some(counts);
    }
}

/// What the metrics thread reads at scrape time.
pub struct MetricsShared {
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub vms: Arc<VmFigures>,
    /// The heartbeat UDP sockets' inodes, network i at index i (their kernel receive drops).
    pub udp_inodes: Vec<u64>,
}

/// The inode of a socket (how /proc/net/udp names it).
pub fn socket_inode(s: &impl std::os::fd::AsRawFd) -> Option<u64> {
    nix::sys::stat::fstat(s.as_raw_fd()).ok().map(|st| st.st_ino)
}

/// The `drops` column of the line for `inode` in a /proc/net/udp (or udp6) table. Data lines:
/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops` (the header
/// splits some of these columns differently, so positions come from the data lines).
pub fn udp_drops(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 13 || cols[9].parse::<u64>().ok()? != inode {
            return None;
        }
        cols[12].parse().ok()
    })
}

/// The kernel's receive-buffer drops of each heartbeat socket (`None`: not found).
fn kernel_rx_drops(inodes: &[u64]) -> Vec<Option<u64>> {
    let tables: Vec<String> = ["/proc/self/net/udp", "/proc/self/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    inodes.iter().map(|&i| tables.iter().find_map(|t| udp_drops(t, i))).collect()
}

/// A Prometheus histogram from an io-engine [`Histogram`] (µs), in seconds.
#[derive(Debug)]
struct Buckets {
    sum_s: f64,
    count: u64,
    /// (upper bound in seconds, count in that bucket alone): the encoder accumulates them.
    buckets: Vec<(f64, u64)>,
}

impl Buckets {
    fn from(h: &Histogram) -> Buckets {
        let mut buckets = Vec::with_capacity(LE_TARGETS_US.len() + 1);
        let mut below = 0;
        for t in LE_TARGETS_US {
            let edge = Histogram::edge_us(t);
            let le = h.count_le(edge);
            buckets.push((edge as f64 / 1e6, le - below));
            below = le;
        }
        buckets.push((f64::INFINITY, h.count() - below));
        Buckets { sum_s: h.sum_us() as f64 / 1e6, count: h.count(), buckets }
    }
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum_s, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// A registry under the `diskbeat_` prefix with one-line helpers: every value is set once.
struct Metrics(Registry);

impl Metrics {
    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        let g: Gauge = Gauge::default();
        g.set(v);
        self.0.register(name, help, g);
    }

    fn seconds(&mut self, name: &str, help: &str, ms: u64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(ms as f64 / 1000.0);
        self.0.register_with_unit(name, help, Unit::Seconds, g);
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c: Counter = Counter::default();
        c.inc_by(v);
        self.0.register(name, help, c);
    }

    fn gauges(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, i64)>) {
        let f: Family<Labels, Gauge> = Family::default();
        for (l, v) in samples {
            f.get_or_create(&l).set(v);
        }
        self.0.register(name, help, f);
    }

    fn seconds_family(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
        let f: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        for (l, ms) in samples {
            f.get_or_create(&l).set(ms as f64 / 1000.0);
        }
        self.0.register_with_unit(name, help, Unit::Seconds, f);
    }

    fn counters(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
        let f: Family<Labels, Counter> = Family::default();
        for (l, v) in samples {
            f.get_or_create(&l).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.0.register_with_unit(name, help, Unit::Seconds, Buckets::from(h));
    }
}

/// Everything a scrape reads besides the snapshot, taken before its lock.
pub struct Extra<'a> {
    /// The monotonic clock at the scrape (ages and the deadline margin are computed from it).
    pub now_ms: u64,
    pub kernel_rx_drops: &'a [Option<u64>],
    pub vms: &'a VmFigures,
}

/// Fills a registry from the snapshot (the caller holds its lock).
pub fn registry(s: &Snapshot, x: &Extra) -> Registry {
    let mut m = Metrics(Registry::with_prefix("diskbeat"));
    let b = |v: bool| i64::from(v);
    m.0.register(
        "build",
        "The diskbeat build: its version in a label, value 1",
        Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
    );
    let phase = s.phase.name();
    m.gauges(
        "phase",
        "This host's phase: 1 for the current one, 0 for the others",
        PHASES.iter().map(|p| (labels(&[("phase", p.to_string())]), b(*p == phase))),
    );
    m.counter("cycles", "Heartbeat cycles (a sweep of the table, then a write of our record)", s.cycles);
    m.counter("cycles_failed", "Cycles that did not verify our record on the disk", s.failed_cycles);
    m.histogram(
        "cycle_latency",
        "One heartbeat cycle (sweep, then the write that follows it), wall time measured by the executor",
        &s.metrics.figures.cycle_latency,
    );
    m.histogram(
        "write_latency",
        "Record writes, submission to completion as the io engine measured them (successful writes)",
        &s.write_latency,
    );
    m.histogram(
        "sweep_latency",
        "Table sweeps, submission to completion as the io engine measured them (successful sweeps)",
        &s.sweep_latency,
    );
    if let Some(d) = s.fence_deadline_ms {
        m.seconds(
            "self_fence_deadline_margin",
            "Time left until this host's self-fence deadline (renewed by every verified cycle)",
            d.saturating_sub(x.now_ms),
        );
    }
    let now_margin = s.fence_deadline_ms.map(|d| d.saturating_sub(x.now_ms));
    let min = match (s.metrics.figures.fence_margin_min_ms, now_margin) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(min) = min {
        m.seconds(
            "self_fence_deadline_margin_min",
            "The smallest self-fence deadline margin seen since the daemon started",
            min,
        );
    }
    m.counter("fence_failures", "Fence action attempts that failed", u64::from(s.fence_failures));
    m.gauge(
        "watchdog_armed",
        "A hardware watchdog is armed and fed by the heartbeat loop (1)",
        b(s.watchdog),
    );

    // Peers, as `diskbeat status` lists them (free and never-read slots left out).
    let peers: Vec<(usize, &crate::core::Peer)> = s
        .peers
        .iter()
        .enumerate()
        .filter(|(i, p)| *i as u32 != s.slot && !matches!(p.state, PeerState::Free | PeerState::Unread))
        .collect();
    let peer_labels = |i: usize, p: &crate::core::Peer| {
        labels(&[("slot", i.to_string()), ("name", p.host_name().to_string())])
    };
    m.gauges(
        "peer_state",
        "Each peer slot's state as this host sees it, value 1",
        peers.iter().map(|&(i, p)| {
            let mut l = peer_labels(i, p);
            l.push(("state".into(), peer_state_name(p.state).into()));
            (l, 1)
        }),
    );
    m.seconds_family(
        "peer_age",
        "Since the peer's record last changed, as of this host's last read of it",
        peers.iter().map(|&(i, p)| (peer_labels(i, p), p.age_ms())),
    );

    if !s.hb_addrs.is_empty() {
        let timeout = s.timing.net_timeout_ms();
        let networks = s.hb_addrs.len();
        let per_net = |f: &dyn Fn(&crate::core::net::NetPeer, usize) -> Option<u64>| -> Vec<(Labels, u64)> {
            let mut out = Vec::new();
            for &(i, p) in &peers {
                let Some(np) = s.net_peers.get(i) else { continue };
                for n in 0..networks {
                    if let Some(v) = f(np, n) {
                        let mut l = peer_labels(i, p);
                        l.push(("network".into(), n.to_string()));
                        out.push((l, v));
                    }
                }
            }
            out
        };
        m.gauges(
            "peer_net_heard",
            "The peer was heard on this network within the network timeout (1) or not (0)",
            per_net(&|np, n| Some(u64::from(np.heard_on(n, x.now_ms, timeout))))
                .into_iter()
                .map(|(l, v)| (l, v as i64)),
        );
        m.seconds_family(
            "peer_net_last_heard",
            "Since the peer's newest packet accepted on this network (absent: never heard)",
            per_net(&|np, n| np.heard_ms[n].map(|t| x.now_ms.saturating_sub(t))),
        );
        m.counters(
            "peer_net_packets",
            "Packets accepted from the peer on this network",
            per_net(&|np, n| Some(np.accepted[n])),
        );
        m.counter(
            "beats_sent",
            "Heartbeat packets sent (one per peer per beat, on every network)",
            s.beats_sent,
        );
        m.counters(
            "net_drops",
            "Heartbeat datagrams received and dropped by diskbeat, by reason (docs/PROTOCOL.md)",
            s.drops.iter().map(|(reason, v)| (labels(&[("reason", reason.to_string())]), v)),
        );
        m.counters(
            "net_kernel_rx_drops",
            "Datagrams the kernel dropped on a heartbeat socket because its receive buffer was full \
             (the drops column of /proc/net/udp)",
            x.kernel_rx_drops
                .iter()
                .enumerate()
                .filter_map(|(n, d)| d.map(|d| (labels(&[("network", n.to_string())]), d))),
        );
        m.gauge(
            "net_members",
            "Peers holding their slot at this host's last successful sweep (the last membership)",
            i64::from(s.members),
        );
        if s.isolation_configured {
            m.gauge("isolated", "This host reaches none of its isolation addresses (1)", b(s.isolated));
        }
        if let Some(p) = &s.partition {
            m.gauge(
                "partition_participants",
                "Hosts the partition rule decides among",
                i64::from(p.participants),
            );
            if let Ok(d) = &p.decision {
                m.gauge(
                    "partition_survivors",
                    "Hosts in the part the partition rule keeps",
                    i64::from(d.survivors.len()),
                );
                m.gauge(
                    "partition_survives",
                    "This host is in the part the partition rule keeps (1) or must fence (0)",
                    b(!d.must_fence(s.slot)),
                );
            }
        }
        m.gauge(
            "ride_through",
            "Riding through a whole-LUN loss: nobody fences while every member vouches (1)",
            b(s.riding_through),
        );
        m.seconds(
            "ride_through_duration",
            "How long the current whole-LUN ride-through has lasted (0 when not riding through)",
            s.ride.map_or(0, |r| x.now_ms.saturating_sub(r.since_ms)),
        );
    }

    if let Some(f) = &s.failover {
        if let Some(t) = f.tolerance {
            m.gauge(
                "host_failures_tolerated",
                "Host failures the pool tolerates (proven by the planner)",
                i64::from(t),
            );
        }
        if let Some(t) = f.tolerance_target {
            m.gauge(
                "tolerance_target",
                "The host failures the pool should tolerate (tolerance_target)",
                i64::from(t),
            );
        }
        m.gauge("failover_coordinator", "This host coordinates failover (1)", b(f.is_coordinator));
        m.gauge(
            "vms_held",
            "VMs of silent hosts not proven gone: not restarted until proof or --confirm-down",
            f.held.iter().map(|h| h.vms.len() as i64).sum(),
        );
        m.gauge("vms_waiting", "VMs, or slots' VMs, not where the plan wants them", f.waiting.len() as i64);
        m.gauge(
            "vms_running_twice",
            "VMs reported running on two hosts (operator error)",
            f.running_twice.len() as i64,
        );
        m.gauge("vms_missing", "Our VMs the driver's inventory omits", f.missing.len() as i64);
    }
    if let Some(counts) = *x.vms.published.lock().unwrap_or_else(|e| e.into_inner()) {
        m.gauges(
            "vms",
            "This host's VMs as last published on the heartbeat disk, by protection level and state",
            PROTECTIONS.iter().enumerate().flat_map(|(pi, p)| {
                VM_STATES.iter().enumerate().map(move |(si, st)| {
                    (
                        labels(&[
                            ("protection", p.as_str().to_string()),
                            ("state", vm_state_name(*st).to_string()),
                        ]),
                        i64::from(counts[pi][si]),
                    )
                })
            }),
        );
    }
    if s.failover.is_some() {
        m.counters(
            "vm_starts",
            "VM restarts this host ran (driver start calls), by outcome",
            [
                (labels(&[("outcome", "ok".into())]), x.vms.starts_ok.load(Ordering::Relaxed)),
                (labels(&[("outcome", "failed".into())]), x.vms.starts_failed.load(Ordering::Relaxed)),
            ],
        );
        let h = x.vms.start_latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
        m.histogram("vm_start_latency", "Driver start call durations of VM restarts", &h);
    }
    m.0
}

/// The OpenMetrics text of one scrape.
pub fn render(shared: &MetricsShared) -> String {
    let drops = kernel_rx_drops(&shared.udp_inodes);
    let x = Extra { now_ms: super::now_ms(), kernel_rx_drops: &drops, vms: &shared.vms };
    let reg = registry(&super::lock(&shared.snapshot), &x);
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// Binds the endpoint (before anything is written: a bad address is a config error).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves scrapes on `listener` from a thread of its own.
pub fn spawn(listener: TcpListener, shared: MetricsShared) {
    let shared = Arc::new(shared);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(listener, shared))
        .expect("spawn metrics thread");
}

fn serve(listener: TcpListener, shared: Arc<MetricsShared>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            let _ =
                respond(&mut stream, "503 Service Unavailable", "text/plain", b"too many scrapes at once\n");
            continue;
        }
        let (client_shared, client_busy) = (shared.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("metrics-client".into()).spawn(move || {
            handle(stream, &client_shared);
            client_busy.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

/// Parses the request line of `head` (the bytes up to the blank line).
pub fn parse_request(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else { return Request::Bad };
    let mut words = text.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next()) else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Request::Metrics,
        ("GET", _) => Request::NotFound,
        _ => Request::BadMethod,
    }
}

/// Reads the request head (bounded in size and time) and answers it.
fn handle(mut stream: TcpStream, shared: &MetricsShared) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let end = loop {
        if let Some(i) = find_head_end(&buf[..len]) {
            break Some(i);
        }
        if len == buf.len() {
            break None;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    };
    let Some(end) = end else {
        let _ =
            respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"request too long\n");
        return;
    };
    let _ = match parse_request(&buf[..end]) {
        Request::Metrics => respond(&mut stream, "200 OK", CONTENT_TYPE, render(shared).as_bytes()),
        Request::NotFound => {
            respond(&mut stream, "404 Not Found", "text/plain", b"only /metrics is served\n")
        }
        Request::BadMethod => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET only\n"),
        Request::Bad => respond(&mut stream, "400 Bad Request", "text/plain", b"not an HTTP/1 request\n"),
    };
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::failover::{FailoverStatus, Held};
    use crate::core::node::PartitionStatus;
    use crate::core::partition::{Decision, Reason, SlotSet};
    use crate::core::{Node, NodeConfig, NotProven, Phase, RideStatus};
    use crate::format::encode_name;
    use crate::format::host_state::VmEntry;
    use std::collections::{BTreeMap, BTreeSet};

    /// One sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// A small OpenMetrics text parser: (HELP names, TYPE name -> type, samples). Label values
    /// here never hold `",` (the test's names do not).
    fn parse(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>, Vec<Sample>) {
        let (mut help, mut types, mut samples) = (BTreeSet::new(), BTreeMap::new(), Vec::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help.insert(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split(' ');
                types.insert(w.next().unwrap().to_string(), w.next().unwrap().to_string());
            } else if line.starts_with('#') {
                continue;
            } else {
                let (series, value) = line.rsplit_once(' ').expect("name value");
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_string(), BTreeMap::new()),
                    Some((n, l)) => {
                        let l = l.strip_suffix('}').expect("labels close");
                        let labels = l
                            .split("\",")
                            .filter(|kv| !kv.is_empty())
                            .map(|kv| {
                                let (k, v) = kv.split_once("=\"").expect("key=\"value\"");
                                (k.to_string(), v.strip_suffix('"').unwrap_or(v).to_string())
                            })
                            .collect();
                        (n.to_string(), labels)
                    }
                };
                let value = if value == "+Inf" { f64::INFINITY } else { value.parse().expect("a number") };
                samples.push((name, labels, value));
            }
        }
        (help, types, samples)
    }

    /// The family a sample belongs to, given the declared families.
    fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
        if types.contains_key(name) {
            return Some(name);
        }
        ["_total", "_info", "_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|f| types.contains_key(*f))
    }

    fn snapshot() -> (Snapshot, VmFigures) {
        let timing = crate::timing::Timing::from_base(2000).unwrap();
        let node = Node::new(
            NodeConfig {
                slot: 0,
                slot_count: 4,
                cluster_uuid: uuid::Uuid::from_u128(1),
                host_uuid: uuid::Uuid::from_u128(2),
                host_name: encode_name("hv0").unwrap(),
                timing,
                superblock: [0; 512],
                watchdog: true,
                fence_stops_vms: true,
                skip_acquire_wait: false,
                networks: 2,
                weight: 1,
                isolation_configured: true,
                boot_id: uuid::Uuid::nil(),
                fence_suspicion_ms: 0,
            },
            1_000,
        );
        let mut s = Snapshot::new(&node, "/dev/loop9".into(), "uring", "cl".into());
        let now = 100_000;
        s.now_ms = now;
        s.phase = Phase::Live;
        s.cycles = 42;
        s.failed_cycles = 1;
        s.fence_deadline_ms = Some(now + 700);
        s.metrics.figures.fence_margin_min_ms = Some(450);
        for us in [90, 150, 900, 1_000, 4_000, 20_000_000] {
            s.write_latency.record(us);
            s.sweep_latency.record(us * 2);
            s.metrics.figures.cycle_latency.record(us * 3);
        }
        s.peers[1].state = PeerState::Live;
        s.peers[1].host_name = encode_name("hv1").unwrap();
        s.peers[1].last_change_ms = now - 300;
        s.peers[1].last_read_ms = now - 50;
        s.peers[2].state = PeerState::Dead;
        s.peers[2].host_name = encode_name("hv \"2\"").unwrap();
        s.hb_addrs = vec!["127.0.0.1:7001".parse().unwrap(), "127.0.0.2:7001".parse().unwrap()];
        s.net_peers[1].heard_ms[0] = Some(now - 120);
        s.net_peers[1].accepted = [17, 0];
        s.drops.record(crate::net::DropReason::BadMac);
        s.beats_sent = 99;
        s.members = 2;
        s.partition = Some(PartitionStatus {
            decision: Ok(Decision {
                survivors: SlotSet::from_slots([0, 1]),
                reason: Reason::Largest { size: 2, rival_size: 1 },
                size: 2,
                isolated: 0,
                weight: 2,
            }),
            stable_since_ms: now - 5_000,
            fingerprint: 0,
            participants: 3,
            participant_set: SlotSet::from_slots([0, 1, 2]),
        });
        s.riding_through = true;
        s.ride = Some(RideStatus {
            last_ok_ms: now - 3_000,
            since_ms: now - 2_000,
            until_ms: now + 1_000,
            cap_ms: None,
            limited_by: Some(1),
            members: SlotSet::from_slots([0, 1]),
        });
        s.failover = Some(FailoverStatus {
            coordinator_slot: Some(0),
            is_coordinator: true,
            plan: None,
            held: vec![Held {
                slot: 2,
                vms: vec!["a".into(), "b".into()],
                reason: NotProven::DeadWithoutWatchdog,
            }],
            own: vec![("web1".into(), VmState::Running)],
            missing: Vec::new(),
            driver_error: None,
            blocked: None,
            published_vms: Some(1),
            running_twice: Vec::new(),
            waiting: Vec::new(),
            plan_names: Default::default(),
            tolerance: Some(1),
            tolerance_target: Some(2),
        });
        let vms = VmFigures::default();
        vms.record_start(true, 1_500_000);
        vms.record_start(false, 30_000);
        let entry = |state, protection| VmEntry {
            uuid: uuid::Uuid::from_u128(7),
            name: "web1".into(),
            memory_mib: 512,
            vcpus: 1,
            state,
            protection,
            order: None,
            anti_affinity: None,
            claim: 0,
            attempt: 0,
            failure: None,
            definition: Vec::new(),
        };
        vms.record_published(&[
            entry(VmState::Running, Protection::Protect),
            entry(VmState::Running, Protection::Protect),
            entry(VmState::Stopped, Protection::BestEffort),
        ]);
        (s, vms)
    }

    fn scrape(s: &Snapshot, vms: &VmFigures) -> String {
        let drops = [Some(5), None];
        let reg = registry(s, &Extra { now_ms: s.now_ms, kernel_rx_drops: &drops, vms });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    /// Every sample name the renderer produces on a snapshot where every part is set.
    fn exported_names() -> BTreeSet<String> {
        let (s, vms) = snapshot();
        parse(&scrape(&s, &vms)).2.into_iter().map(|(n, _, _)| n).collect()
    }

    fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let (s, vms) = snapshot();
        let text = scrape(&s, &vms);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let (help, types, samples) = parse(&text);
        assert_eq!(help, types.keys().cloned().collect(), "HELP and TYPE for the same families");
        for (name, _, _) in &samples {
            assert!(name.starts_with("diskbeat_"), "{name}");
            assert!(family(name, &types).is_some(), "{name} has no HELP/TYPE family:\n{text}");
        }
        for f in [
            "diskbeat_build",
            "diskbeat_phase",
            "diskbeat_cycles",
            "diskbeat_cycles_failed",
            "diskbeat_cycle_latency_seconds",
            "diskbeat_write_latency_seconds",
            "diskbeat_sweep_latency_seconds",
            "diskbeat_self_fence_deadline_margin_seconds",
            "diskbeat_self_fence_deadline_margin_min_seconds",
            "diskbeat_fence_failures",
            "diskbeat_watchdog_armed",
            "diskbeat_peer_state",
            "diskbeat_peer_age_seconds",
            "diskbeat_peer_net_heard",
            "diskbeat_peer_net_last_heard_seconds",
            "diskbeat_peer_net_packets",
            "diskbeat_beats_sent",
            "diskbeat_net_drops",
            "diskbeat_net_kernel_rx_drops",
            "diskbeat_net_members",
            "diskbeat_isolated",
            "diskbeat_partition_participants",
            "diskbeat_partition_survivors",
            "diskbeat_partition_survives",
            "diskbeat_ride_through",
            "diskbeat_ride_through_duration_seconds",
            "diskbeat_host_failures_tolerated",
            "diskbeat_tolerance_target",
            "diskbeat_failover_coordinator",
            "diskbeat_vms_held",
            "diskbeat_vms_waiting",
            "diskbeat_vms_running_twice",
            "diskbeat_vms_missing",
            "diskbeat_vms",
            "diskbeat_vm_starts",
            "diskbeat_vm_start_latency_seconds",
        ] {
            assert!(types.contains_key(f), "{f} missing:\n{text}");
        }
        assert_eq!(types["diskbeat_cycles"], "counter");
        assert_eq!(types["diskbeat_build"], "info");
        assert_eq!(types["diskbeat_cycle_latency_seconds"], "histogram");

        let v = |name: &str, l: &[(&str, &str)]| {
            value(&samples, name, l).unwrap_or_else(|| panic!("{name} {l:?}:\n{text}"))
        };
        assert_eq!(v("diskbeat_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
        assert_eq!(v("diskbeat_cycles_total", &[]), 42.0);
        assert_eq!(v("diskbeat_cycles_failed_total", &[]), 1.0);
        assert_eq!(v("diskbeat_phase", &[("phase", "live")]), 1.0);
        assert_eq!(v("diskbeat_phase", &[("phase", "fenced")]), 0.0);
        assert_eq!(v("diskbeat_self_fence_deadline_margin_seconds", &[]), 0.7);
        assert_eq!(v("diskbeat_self_fence_deadline_margin_min_seconds", &[]), 0.45);
        assert_eq!(v("diskbeat_peer_state", &[("slot", "1"), ("name", "hv1"), ("state", "live")]), 1.0);
        assert_eq!(v("diskbeat_peer_state", &[("slot", "2"), ("state", "dead")]), 1.0);
        assert!(
            value(&samples, "diskbeat_peer_state", &[("slot", "3")]).is_none(),
            "a free slot is left out"
        );
        assert!(
            value(&samples, "diskbeat_peer_state", &[("slot", "0")]).is_none(),
            "this host is not a peer"
        );
        assert!(text.contains(r#"name="hv \"2\"""#), "label values are escaped:\n{text}");
        assert_eq!(v("diskbeat_peer_age_seconds", &[("slot", "1")]), 0.25);
        assert_eq!(v("diskbeat_peer_net_heard", &[("slot", "1"), ("network", "0")]), 1.0);
        assert_eq!(v("diskbeat_peer_net_heard", &[("slot", "1"), ("network", "1")]), 0.0);
        assert_eq!(v("diskbeat_peer_net_last_heard_seconds", &[("slot", "1"), ("network", "0")]), 0.12);
        assert!(value(&samples, "diskbeat_peer_net_last_heard_seconds", &[("network", "1")]).is_none());
        assert_eq!(v("diskbeat_peer_net_packets_total", &[("slot", "1"), ("network", "0")]), 17.0);
        assert_eq!(v("diskbeat_net_drops_total", &[("reason", "bad_mac")]), 1.0);
        assert_eq!(v("diskbeat_net_drops_total", &[("reason", "replay")]), 0.0);
        assert_eq!(v("diskbeat_net_kernel_rx_drops_total", &[("network", "0")]), 5.0);
        assert!(value(&samples, "diskbeat_net_kernel_rx_drops_total", &[("network", "1")]).is_none());
        assert_eq!(v("diskbeat_beats_sent_total", &[]), 99.0);
        assert_eq!(v("diskbeat_partition_participants", &[]), 3.0);
        assert_eq!(v("diskbeat_partition_survivors", &[]), 2.0);
        assert_eq!(v("diskbeat_partition_survives", &[]), 1.0);
        assert_eq!(v("diskbeat_ride_through", &[]), 1.0);
        assert_eq!(v("diskbeat_ride_through_duration_seconds", &[]), 2.0);
        assert_eq!(v("diskbeat_host_failures_tolerated", &[]), 1.0);
        assert_eq!(v("diskbeat_tolerance_target", &[]), 2.0);
        assert_eq!(v("diskbeat_vms_held", &[]), 2.0);
        assert_eq!(v("diskbeat_vms", &[("protection", "protect"), ("state", "running")]), 2.0);
        assert_eq!(v("diskbeat_vms", &[("protection", "best-effort"), ("state", "stopped")]), 1.0);
        assert_eq!(v("diskbeat_vms", &[("protection", "none"), ("state", "lost")]), 0.0);
        assert_eq!(v("diskbeat_vm_starts_total", &[("outcome", "ok")]), 1.0);
        assert_eq!(v("diskbeat_vm_starts_total", &[("outcome", "failed")]), 1.0);
        assert_eq!(v("diskbeat_vm_start_latency_seconds_count", &[]), 2.0);
    }

    #[test]
    fn histograms_are_cumulative_and_exact_at_their_edges() {
        let (s, vms) = snapshot();
        let (_, _, samples) = parse(&scrape(&s, &vms));
        for (name, h) in [
            ("diskbeat_write_latency_seconds", &s.write_latency),
            ("diskbeat_sweep_latency_seconds", &s.sweep_latency),
            ("diskbeat_cycle_latency_seconds", &s.metrics.figures.cycle_latency),
        ] {
            let bucket = format!("{name}_bucket");
            let buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter(|(n, _, _)| *n == bucket)
                .map(|(_, l, v)| {
                    let le = &l["le"];
                    (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v)
                })
                .collect();
            assert_eq!(buckets.len(), LE_TARGETS_US.len() + 1, "{name}");
            assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{name}: {buckets:?}");
            let count = value(&samples, &format!("{name}_count"), &[]).unwrap();
            assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count), "{name}");
            assert_eq!(count, 6.0);
            let sum = value(&samples, &format!("{name}_sum"), &[]).unwrap();
            assert!((sum - h.sum_us() as f64 / 1e6).abs() < 1e-9, "{name}: {sum}");
            // Each bucket counts exactly the values at most its bound (integer µs).
            for (le, c) in &buckets[..buckets.len() - 1] {
                let bound_us = (le * 1e6).round() as u64;
                assert_eq!(*c as u64, h.count_le(bound_us), "{name} le={le}");
            }
        }
        // 90 and 150 µs writes: 90 is at most the first bound (103 µs), 150 is not.
        assert_eq!(
            value(&samples, "diskbeat_write_latency_seconds_bucket", &[("le", "0.000103")]),
            Some(1.0)
        );
    }

    #[test]
    fn parts_that_are_off_are_left_out() {
        let (mut s, _) = snapshot();
        s.hb_addrs.clear();
        s.failover = None;
        s.fence_deadline_ms = None;
        s.metrics.figures.fence_margin_min_ms = None;
        let text = scrape(&s, &VmFigures::default());
        let (_, types, _) = parse(&text);
        for absent in [
            "diskbeat_net_drops",
            "diskbeat_partition_survives",
            "diskbeat_ride_through",
            "diskbeat_vm_starts",
            "diskbeat_vms",
            "diskbeat_host_failures_tolerated",
            "diskbeat_self_fence_deadline_margin_seconds",
        ] {
            assert!(!types.contains_key(absent), "{absent} without its part:\n{text}");
        }
        assert!(types.contains_key("diskbeat_peer_state"));
    }

    #[test]
    fn udp_drops_come_from_the_socket_s_line() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:1B59 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48213 2 0000000000000000 0
  456: 0200007F:1B59 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 48214 2 0000000000000000 1377
";
        assert_eq!(udp_drops(table, 48213), Some(0));
        assert_eq!(udp_drops(table, 48214), Some(1377));
        assert_eq!(udp_drops(table, 1), None);
        assert_eq!(udp_drops("", 48213), None);
    }

    #[test]
    fn the_kernel_counts_of_a_real_socket_are_found() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&s).unwrap();
        assert_eq!(kernel_rx_drops(&[inode, 0]), vec![Some(0), None]);
    }

    #[test]
    fn requests() {
        assert_eq!(parse_request(b"GET /metrics HTTP/1.0\r\n\r\n"), Request::Metrics);
        assert_eq!(parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"), Request::Metrics);
        assert_eq!(parse_request(b"GET /other HTTP/1.0\r\n\r\n"), Request::NotFound);
        assert_eq!(parse_request(b"GET /metrics/x HTTP/1.0\r\n\r\n"), Request::NotFound);
        assert_eq!(parse_request(b"POST /metrics HTTP/1.0\r\n\r\n"), Request::BadMethod);
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse_request(b"\xff\xfe"), Request::Bad);
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n"), None);
    }

    #[test]
    fn the_deadline_margin_minimum_keeps_the_smallest() {
        let mut f = LoopFigures::default();
        f.observe_deadline(None, 10);
        assert_eq!(f.fence_margin_min_ms, None);
        f.observe_deadline(Some(1_000), 100);
        f.observe_deadline(Some(1_000), 700);
        f.observe_deadline(Some(2_000), 800);
        assert_eq!(f.fence_margin_min_ms, Some(300));
        f.observe_deadline(Some(2_000), 2_500);
        assert_eq!(f.fence_margin_min_ms, Some(0));
    }

    /// tools/grafana-diskbeat.json is importable JSON and queries only metrics the daemon exports.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let text = include_str!("../../tools/grafana-diskbeat.json");
        let dash: serde_json::Value = serde_json::from_str(text).expect("the dashboard is JSON");
        let inputs = dash["__inputs"].as_array().expect("__inputs");
        assert!(inputs.iter().any(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus"));
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut exprs = Vec::new();
        walk(&dash, &mut exprs);
        assert!(exprs.len() >= 10, "{exprs:?}");
        let strip = |n: &str| {
            ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n).to_string()
        };
        let exported: BTreeSet<String> = exported_names().iter().map(|n| strip(n)).collect();
        let mut queried = BTreeSet::new();
        for e in &exprs {
            let mut rest = e.as_str();
            while let Some(i) = rest.find("diskbeat_") {
                let name: String =
                    rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                rest = &rest[i + name.len()..];
                queried.insert(strip(&name));
            }
        }
        let unknown: Vec<_> = queried.difference(&exported).collect();
        assert!(unknown.is_empty(), "the dashboard queries metrics the daemon does not export: {unknown:?}");
        for must in
            ["diskbeat_cycle_latency_seconds", "diskbeat_net_kernel_rx_drops_total", "diskbeat_peer_state"]
        {
            assert!(queried.contains(must), "the dashboard has no panel on {must}");
        }
    }
}
