//! The Prometheus endpoint of real daemons on a real loop device (issue 17, docs/METRICS.md):
//! scraped with a plain HTTP/1.0 GET, the exposition text parsed here.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn status(&self) -> Option<Value> {
        let out = run(&["status", "--socket", self.socket.to_str().unwrap(), "--json"]);
        out.status.success().then(|| stdout_json(&out))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
    /// Waits for the daemon to exit (a bound, not a measurement).
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        let c = self.child.as_mut()?;
        while start.elapsed() < limit {
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster {
    lo: LoopDev,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let lo = LoopDev::new("32M", 512);
        let out = run(&["mkfs", lo.s(), "--slots", "4", "--timeout", "4s", "--cluster", "mtest"]);
        assert!(out.status.success(), "{}", stderr(&out));
        Cluster { lo, dir: tempfile::tempdir().unwrap() }
    }

    fn spawn(&self, slot: u32, name: &str, extra: &[&str]) -> Daemon {
        let socket = self.dir.path().join(format!("{name}.sock"));
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(bin())
            .args(["daemon", "--device", self.lo.s(), "--slot", &slot.to_string(), "--name", name])
            .args(["--fence-action", "log-only", "--no-mlock", "--socket", socket.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child: Some(child), socket, log }
    }
}

/// A UDP port free on loopback now (bound and released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `cond` on `d`'s status until it holds, or panics with the status and log.
fn wait_for(d: &Daemon, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(s) = d.status() {
            if cond(&s) {
                return s;
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}\nlast status: {last:#?}\nlog:\n{}", d.log());
}

fn hears(s: &Value, slot: u64) -> bool {
    s["peers"].as_array().unwrap().iter().any(|p| p["slot"] == slot && p["network"]["heard"] == true)
}

/// One HTTP/1.0 request: (status line, headers lower-cased, body).
fn get(addr: &str, path: &str) -> (String, BTreeMap<String, String>, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {reply:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The exposition text: every family's TYPE (and HELP), and the samples. Panics on anything
/// malformed (a sample before its family's TYPE, a family without HELP, a bad value, no EOF).
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
        let (mut help, mut types, mut samples) = (BTreeSet::new(), BTreeMap::new(), Vec::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').expect("HELP name text");
                assert!(!text.is_empty(), "empty HELP for {name}");
                help.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(help.contains(name), "TYPE before HELP for {name}");
                types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with('#') {
                assert!(line == "# EOF" || line.starts_with("# UNIT "), "unexpected comment {line:?}");
            } else {
                let s = sample(line);
                let fam =
                    family(&s.0, &types).unwrap_or_else(|| panic!("{line:?}: no family declared before"));
                assert!(help.contains(fam));
                samples.push(s);
            }
        }
        Exposition { types, samples }
    }

    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    }

    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.get(name, want).unwrap_or_else(|| panic!("no sample {name} {want:?}"))
    }

    /// A histogram's (le, cumulative count) buckets, checked: bounds rising, counts never falling,
    /// the last `+Inf` and equal to `_count`.
    fn histogram(&self, name: &str) -> (Vec<(f64, f64)>, f64) {
        assert_eq!(self.types.get(name).map(String::as_str), Some("histogram"), "{name}");
        let bucket = format!("{name}_bucket");
        let buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(n, _, _)| *n == bucket)
            .map(|(_, l, v)| (number(&l["le"]), *v))
            .collect();
        assert!(buckets.len() > 2, "{name}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name} not cumulative: {buckets:?}"
        );
        let count = self.value(&format!("{name}_count"), &[]);
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, count), "{name}: +Inf bucket vs _count");
        assert!(self.value(&format!("{name}_sum"), &[]) >= 0.0);
        (buckets, count)
    }
}

fn number(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")),
    }
}

/// `name{k="v",...} value` (label values with `\"`, `\\` and `\n` escapes).
fn sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect("name");
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next().expect("labels close");
            match c {
                '}' => break,
                ',' => continue,
                '=' => {
                    assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("value closes").1 {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
        let consumed = chars.next().map_or(r.len(), |(i, _)| i);
        rest = &r[consumed..];
    }
    let value = rest.trim();
    assert!(!value.contains(' '), "a timestamp or exemplar where none is expected: {line}");
    (name, labels, number(value))
}

/// The family a sample name belongs to.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_total", "_info", "_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|f| types.contains_key(*f))
}

fn scrape(addr: &str) -> Exposition {
    let (status, headers, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert_eq!(headers["content-length"], body.len().to_string());
    Exposition::parse(&body)
}

/// TCP ports process `pid` listens on (its sockets' inodes in /proc/net/tcp and tcp6, state 0A).
fn listening_tcp_ports(pid: u32) -> Vec<u16> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Two daemons with network heartbeats and the endpoint on an ephemeral port: every family is
/// there with HELP and TYPE, the histograms are cumulative and count what the counters count, the
/// peer metrics name the other daemon, the counters move between scrapes, other paths are 404.
#[test]
fn two_daemons_export_their_metrics() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new();
    let (p0, p1) = (free_udp_port(), free_udp_port());
    let hb = |p: u16| format!("127.0.0.1:{p}");
    let d0 = c.spawn(0, "m0", &["--hb-addr", &hb(p0), "--metrics-addr", "127.0.0.1:0"]);
    let d1 = c.spawn(1, "m1", &["--hb-addr", &hb(p1), "--metrics-addr", "127.0.0.1:0"]);
    let s0 = wait_for(&d0, "live, hearing slot 1", |s| s["self"]["state"] == "live" && hears(s, 1));
    wait_for(&d1, "live, hearing slot 0", |s| s["self"]["state"] == "live" && hears(s, 0));
    let addr = s0["self"]["metrics_addr"].as_str().expect("status shows the metrics address").to_string();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listening_tcp_ports(d0.pid()), vec![port], "the endpoint is the daemon's only TCP listener");
    assert!(s0["self"]["latency"]["source"].as_str().unwrap().contains("io engine"), "{s0:#}");

    let m = scrape(&addr);
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
        "diskbeat_partition_participants",
        "diskbeat_partition_survivors",
        "diskbeat_partition_survives",
        "diskbeat_ride_through",
        "diskbeat_ride_through_duration_seconds",
        "diskbeat_failover_coordinator",
        "diskbeat_vms_held",
        "diskbeat_vm_starts",
        "diskbeat_vm_start_latency_seconds",
    ] {
        assert!(m.types.contains_key(f), "{f} missing; families: {:?}", m.types.keys());
    }
    assert_eq!(m.types["diskbeat_cycles"], "counter");
    assert_eq!(m.types["diskbeat_phase"], "gauge");
    assert_eq!(m.value("diskbeat_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(m.value("diskbeat_phase", &[("phase", "live")]), 1.0);
    assert_eq!(m.value("diskbeat_phase", &[("phase", "fenced")]), 0.0);
    // The second daemon, by slot and name, on both the disk and the network.
    assert_eq!(m.value("diskbeat_peer_state", &[("slot", "1"), ("name", "m1"), ("state", "live")]), 1.0);
    assert_eq!(m.value("diskbeat_peer_net_heard", &[("slot", "1"), ("name", "m1"), ("network", "0")]), 1.0);
    assert!(m.value("diskbeat_peer_net_packets_total", &[("slot", "1"), ("network", "0")]) > 0.0);
    assert!(m.value("diskbeat_peer_age_seconds", &[("slot", "1")]) >= 0.0);
    assert!(m.get("diskbeat_peer_state", &[("slot", "0")]).is_none(), "this host is no peer of itself");
    assert_eq!(m.value("diskbeat_partition_survives", &[]), 1.0);
    assert_eq!(m.value("diskbeat_ride_through", &[]), 0.0);
    assert!(m.value("diskbeat_net_kernel_rx_drops_total", &[("network", "0")]) >= 0.0);
    assert_eq!(m.value("diskbeat_net_drops_total", &[("reason", "bad_mac")]), 0.0);
    assert!(m.value("diskbeat_beats_sent_total", &[]) > 0.0);
    assert_eq!(m.value("diskbeat_vm_starts_total", &[("outcome", "ok")]), 0.0);
    let margin = m.value("diskbeat_self_fence_deadline_margin_seconds", &[]);
    let min = m.value("diskbeat_self_fence_deadline_margin_min_seconds", &[]);
    assert!(margin > 0.0 && margin <= 4.0 && min <= margin, "margin {margin}, min {min} (T = 4 s)");

    // Every cycle sweeps; the cycle histogram counts each (the last one may still be running);
    // writes and sweeps counted by the engine are cycles that succeeded.
    let cycles = m.value("diskbeat_cycles_total", &[]);
    let (_, cycle_count) = m.histogram("diskbeat_cycle_latency_seconds");
    let (_, write_count) = m.histogram("diskbeat_write_latency_seconds");
    let (_, sweep_count) = m.histogram("diskbeat_sweep_latency_seconds");
    m.histogram("diskbeat_vm_start_latency_seconds");
    assert!(cycles > 5.0, "{cycles}");
    assert!(
        cycle_count <= cycles && cycle_count >= cycles - 1.0,
        "cycle count {cycle_count} vs {cycles} cycles"
    );
    assert!(
        sweep_count <= cycles && sweep_count >= cycles - 1.0,
        "sweep count {sweep_count} vs {cycles} cycles"
    );
    assert!(write_count > 0.0 && write_count <= cycles, "write count {write_count} vs {cycles} cycles");

    // A later scrape: the counters moved on (the cycle histogram records a cycle after its
    // write, so it may lag the counter by the cycle in progress: wait for both).
    let start = Instant::now();
    loop {
        let later = scrape(&addr);
        let later_cycles = later.value("diskbeat_cycles_total", &[]);
        let later_count = later.histogram("diskbeat_cycle_latency_seconds").1;
        assert!(later_count >= cycle_count, "the cycle histogram went back: {later_count} < {cycle_count}");
        if later_cycles > cycles && later_count > cycle_count {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the cycle counter never moved\n{}", d0.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, _, _) = get(&addr, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = get(&addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // An over-long request is refused and the endpoint keeps answering.
    let mut long = std::net::TcpStream::connect(&addr).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ =
        long.write_all(format!("GET /metrics HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(64 * 1024)).as_bytes());
    let mut reply = Vec::new();
    let _ = long.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    scrape(&addr);
    // The second daemon's endpoint names the first.
    let s1 = d1.status().unwrap();
    let m1 = scrape(s1["self"]["metrics_addr"].as_str().unwrap());
    assert_eq!(m1.value("diskbeat_peer_state", &[("slot", "0"), ("name", "m0"), ("state", "live")]), 1.0);
}

/// Off by default: a daemon without `metrics_addr` listens on no TCP port and says so in status;
/// an address it cannot bind is a config error (exit 2) before anything is written.
#[test]
fn off_by_default_and_a_bad_address_is_refused() {
    if skip_unless_root() {
        return;
    }
    let c = Cluster::new();
    let d = c.spawn(0, "plain", &[]);
    let s = wait_for(&d, "live", |s| s["self"]["state"] == "live");
    assert!(s["self"]["metrics_addr"].is_null(), "{s:#}");
    assert_eq!(listening_tcp_ports(d.pid()), Vec::<u16>::new(), "a TCP listener without metrics_addr");
    drop(d);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let before = c.lo.hash();
    let mut d = c.spawn(1, "taken", &["--metrics-addr", &addr]);
    assert_eq!(d.exit_code(Duration::from_secs(20)), Some(2), "{}", d.log());
    assert!(d.log().contains("metrics address"), "{}", d.log());
    assert_eq!(c.lo.hash(), before, "a refused daemon wrote to the disk");
    let mut d = c.spawn(1, "bad", &["--metrics-addr", "localhost"]);
    assert_eq!(d.exit_code(Duration::from_secs(20)), Some(2), "{}", d.log());
    assert!(d.log().contains("metrics_addr"), "{}", d.log());
}
