//! Disk benchmarks against loop devices (root only; see docs/BENCHMARKS.md).
//!
//! Criterion groups:
//! - `record_write/{uring,sync}/{512,4096}`: `Disk::write_record` of slot 0 (one O_DSYNC write of
//!   one slot, slot size = logical sector size) on a 512-byte and a 4Kn loop device.
//! - `table_read/{uring,sync}/{64,256,2048}`: `Disk::sweep` (the whole record table, no mailbox)
//!   with 4096-byte slots on the 4Kn device: 256 KiB, 1 MiB, 8 MiB.
//! - `table_read_512/{uring,sync}/{64,256,2048}`: the same with 512-byte slots on the 512 device.
//! - `sweep_decode/2048` (in memory, no root needed): `Record::validate` of every slot of a
//!   2048-slot table of 512-byte slots; `sweep_decode/2048x4096` with 4096-byte slots.
//!
//! After each I/O group, unless `DISKBEAT_BENCH_LATENCY=0` or criterion runs in test mode, every
//! case is also timed one call at a time (`Instant` around each call) for
//! `DISKBEAT_BENCH_LAT_SECS` seconds (default 2) to get per-call p50/p99, which criterion does not
//! report. Those go to `$DISKBEAT_BENCH_OUT` (default `target/bench-disk-latency.json`).
//!
//! Devices: `DISKBEAT_BENCH_DEV_512` and `DISKBEAT_BENCH_DEV_4K` name loop devices to use (and
//! destroy the contents of); `tools/bench-vs-fio.sh` sets them so that fio then runs on the same
//! devices. Otherwise the bench creates its own with `tools/loopdev.sh` under
//! `DISKBEAT_BENCH_DIR` (default `target/bench-loop`) and removes them when it ends, also on panic
//! (not on SIGKILL/SIGINT: `tools/loopdev.sh list` shows leftovers).

use criterion::{black_box, BenchmarkId, Criterion};
use diskbeat::disk::Disk;
use diskbeat::format::record::{Record, State};
use diskbeat::io::{Access, Device, EngineKind};
use diskbeat::mkfs::{mkfs, MkfsOptions};
use diskbeat::probe::Percentiles;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LOOPDEV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/loopdev.sh");
const DEVICE_SIZE: &str = "64M";
const EXTENT_SIZE: u64 = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const SLOT_COUNTS: [u32; 3] = [64, 256, 2048];
const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0x6469_736b_6265_6174_0000_0000_0000_0001);

/// A loop device; detached (and its backing file deleted) on drop when this bench created it.
struct LoopDev {
    dev: PathBuf,
    sector: u32,
    backing: Option<PathBuf>,
}

impl LoopDev {
    fn create(dir: &Path, sector: u32) -> LoopDev {
        let file = dir.join(format!("disk-bench-{sector}.img"));
        let out = Command::new(LOOPDEV)
            .args(["create", &file.display().to_string(), DEVICE_SIZE, &sector.to_string()])
            .output()
            .expect("run tools/loopdev.sh");
        assert!(out.status.success(), "loopdev.sh create: {}", String::from_utf8_lossy(&out.stderr));
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let guard = LoopDev { dev, sector, backing: Some(file) };
        guard.precondition();
        guard
    }

    fn given(dev: PathBuf, sector: u32) -> LoopDev {
        let guard = LoopDev { dev, sector, backing: None };
        guard.precondition();
        guard
    }

    /// Writes every block once, so that later writes (ours and fio's) land on allocated blocks of
    /// the backing file rather than on holes that the host file system must allocate.
    fn precondition(&self) {
        let st = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", self.dev.display()),
                "bs=1M",
                "oflag=direct",
                "status=none",
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run dd");
        // dd reports ENOSPC at the end of the device, after writing all of it.
        let _ = st;
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if let Some(file) = &self.backing {
            let st = Command::new(LOOPDEV)
                .args(["remove", &self.dev.display().to_string(), &file.display().to_string()])
                .status();
            if !matches!(st, Ok(s) if s.success()) {
                eprintln!("disk bench: could not remove {} ({})", self.dev.display(), file.display());
            }
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn env_dev(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

impl Run {
    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
    /// Whether to time `name` call by call.
    fn per_call(&self, name: &str) -> bool {
        self.latency && self.wants(name)
    }
}

fn engine_name(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Uring => "uring",
        EngineKind::Sync => "sync",
        EngineKind::Auto => "auto",
    }
}

fn format(dev: &Path, slots: u32, slot_size: u32) {
    let opts = MkfsOptions {
        slots,
        slot_size: Some(slot_size),
        extent_size: EXTENT_SIZE,
        base_timeout_ms: 10_000,
        force: true,
        observe_ms: Some(0),
        engine: EngineKind::Uring,
        cluster_uuid: Some(CLUSTER),
        ..Default::default()
    };
    mkfs(dev, &opts, &mut |_: &str| {}).unwrap_or_else(|e| panic!("mkfs {}: {e}", dev.display()));
}

fn live_record(slot: u32) -> Record {
    let mut r = Record::free(CLUSTER, slot);
    r.state = State::Live;
    r.host_uuid = uuid::Uuid::from_u128(0x1000 + u128::from(slot));
    r.generation = 1;
    r.io_timeout_ms = 2500;
    r.interval_ms = 1000;
    r.set_host_name(&format!("host-{slot:04}")).expect("short name");
    r
}

/// Per-call latencies (nanoseconds) of `f`, for `secs` seconds (at least 50 calls).
fn per_call(secs: f64, mut f: impl FnMut()) -> Percentiles {
    let mut samples = Vec::with_capacity(200_000);
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while (start.elapsed() < budget || samples.len() < 50) && samples.len() < 200_000 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_nanos() as u64);
    }
    // The fields are named `_us` but hold nanoseconds here; `lat_json` renames them.
    Percentiles::from_samples(&mut samples)
}

fn lat_json(name: &str, bytes: usize, p: &Percentiles, extra: Value) -> Value {
    json!({
        "name": name,
        "bytes": bytes,
        "samples": p.samples,
        "mean_ns": p.mean_us,
        "p50_ns": p.p50_us,
        "p99_ns": p.p99_us,
        "p999_ns": p.p999_us,
        "max_ns": p.max_us,
        "extra": extra,
    })
}

struct Run {
    /// Criterion's filter (first positional argument), matched here as a substring.
    filter: Option<String>,
    latency: bool,
    lat_secs: f64,
    results: Vec<Value>,
    devices: Vec<Value>,
}

/// `record_write/{engine}/{sector}` and `table_read{suffix}/{engine}/{slots}` on one device.
fn bench_device(c: &mut Criterion, run: &mut Run, dev: &LoopDev) {
    let sector = dev.sector;
    let table_group = if sector == 4096 { "table_read".to_string() } else { format!("table_read_{sector}") };
    {
        let d = Device::open(&dev.dev, Access::ReadOnly).expect("open device");
        assert_eq!(d.logical_sector_size, sector, "{}: unexpected sector size", dev.dev.display());
        run.devices.push(json!({
            "device": dev.dev,
            "logical_sector_size": d.logical_sector_size,
            "physical_sector_size": d.physical_sector_size,
            "size_bytes": d.size_bytes,
            "max_io_bytes": d.max_io_bytes,
        }));
    }
    for slots in SLOT_COUNTS {
        format(&dev.dev, slots, sector);
        for kind in [EngineKind::Uring, EngineKind::Sync] {
            let mut disk = Disk::open(&dev.dev, Access::ReadWrite, kind, None).expect("open disk");
            let layout = disk.superblock().layout;
            let table = layout.record_table_len();
            let stats = disk.sweep(IO_TIMEOUT).expect("sweep");
            assert!(stats.complete(), "sweep failed: {stats:?}");
            let chunk = (disk.engine().device().max_io_bytes as usize / layout.slot_size as usize).max(1)
                * layout.slot_size as usize;
            let id = BenchmarkId::new(engine_name(kind), slots);
            let mut g = c.benchmark_group(&table_group);
            g.throughput(criterion::Throughput::Bytes(table as u64));
            g.bench_with_input(id, &slots, |b, _| {
                b.iter(|| {
                    let s = disk.sweep(IO_TIMEOUT).expect("sweep");
                    debug_assert!(s.complete());
                    black_box(s)
                })
            });
            g.finish();
            let name = format!("{table_group}/{}/{slots}", engine_name(kind));
            if run.per_call(&name) {
                let mut failed = 0u32;
                let p = per_call(run.lat_secs, || {
                    let s = disk.sweep(IO_TIMEOUT).expect("sweep");
                    failed += s.chunks_failed;
                });
                assert_eq!(failed, 0, "{name}: chunks failed while measuring");
                run.results.push(lat_json(
                    &name,
                    table,
                    &p,
                    json!({
                        "device": dev.dev,
                        "records_offset": layout.records.offset,
                        "chunk_bytes": chunk,
                        "chunks": table.div_ceil(chunk),
                    }),
                ));
            }

            if slots == 2048 {
                let mut rec = live_record(0);
                let group = c.benchmark_group("record_write");
                let mut g = group;
                g.bench_with_input(BenchmarkId::new(engine_name(kind), sector), &sector, |b, _| {
                    b.iter(|| {
                        rec.sequence += 1;
                        let o = disk.write_record(&rec, IO_TIMEOUT).expect("write");
                        debug_assert!(o.is_done());
                        black_box(o)
                    })
                });
                g.finish();
                let name = format!("record_write/{}/{sector}", engine_name(kind));
                if run.per_call(&name) {
                    let mut bad = 0u32;
                    let p = per_call(run.lat_secs, || {
                        rec.sequence += 1;
                        let o = disk.write_record(&rec, IO_TIMEOUT).expect("write");
                        bad += u32::from(!o.is_done());
                    });
                    assert_eq!(bad, 0, "{name}: writes failed while measuring");
                    run.results.push(lat_json(
                        &name,
                        sector as usize,
                        &p,
                        json!({ "device": dev.dev, "offset": layout.record_offset(0) }),
                    ));
                }
            }
        }
    }
}

/// A table of `slots` slots of `slot_size` bytes holding valid records (every 8th slot free).
fn table_buffer(slots: u32, slot_size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; slots as usize * slot_size];
    for s in 0..slots {
        let rec = if s % 8 == 7 { Record::free(CLUSTER, s) } else { live_record(s) };
        rec.encode(&mut buf[s as usize * slot_size..(s as usize + 1) * slot_size]);
    }
    buf
}

fn bench_decode(c: &mut Criterion, run: &mut Run) {
    for (name, slot_size) in [("2048", 512usize), ("2048x4096", 4096)] {
        let buf = table_buffer(2048, slot_size);
        let decode = |buf: &[u8]| {
            let mut live = 0u32;
            for (s, bytes) in buf.chunks_exact(slot_size).enumerate() {
                let raw = Record::validate(bytes, &CLUSTER, s as u32).expect("valid record");
                live += u32::from(raw.state() == State::Live);
            }
            live
        };
        assert_eq!(decode(&buf), 2048 - 256);
        let mut g = c.benchmark_group("sweep_decode");
        g.bench_function(name, |b| b.iter(|| decode(black_box(&buf))));
        g.finish();
        if run.per_call(&format!("sweep_decode/{name}")) {
            let p = per_call(run.lat_secs.min(1.0), || {
                black_box(decode(black_box(&buf)));
            });
            run.results.push(lat_json(&format!("sweep_decode/{name}"), buf.len(), &p, json!({})));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` does not (criterion runs each once).
    let bench_mode = args.iter().any(|a| a == "--bench");
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    // Criterion's options that take a value; any other argument not starting with '-' is the filter.
    let with_value = [
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--output-format",
        "--plotting-backend",
        "--color",
        "-c",
        "--format",
    ];
    let mut filter = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if with_value.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') && filter.is_none() {
            filter = Some(a.clone());
        }
    }
    let mut run = Run {
        filter,
        latency: bench_mode && std::env::var("DISKBEAT_BENCH_LATENCY").map_or(true, |v| v != "0"),
        lat_secs: std::env::var("DISKBEAT_BENCH_LAT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0),
        results: Vec::new(),
        devices: Vec::new(),
    };
    bench_decode(&mut c, &mut run);
    let io_cases = ["record_write/", "table_read"];
    if !io_cases.iter().any(|p| run.filter.as_deref().is_none_or(|f| p.contains(f) || f.contains(p))) {
        // The filter selects no I/O case: no devices needed.
    } else if !is_root() {
        eprintln!("disk bench: not root: skipping the loop-device benchmarks (record_write, table_read)");
    } else {
        let dir = std::env::var_os("DISKBEAT_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-loop")));
        // Guards live until the end of main (dropped on unwind too).
        let dev4k = match env_dev("DISKBEAT_BENCH_DEV_4K") {
            Some(d) => LoopDev::given(d, 4096),
            None => LoopDev::create(&dir, 4096),
        };
        let dev512 = match env_dev("DISKBEAT_BENCH_DEV_512") {
            Some(d) => LoopDev::given(d, 512),
            None => LoopDev::create(&dir, 512),
        };
        bench_device(&mut c, &mut run, &dev4k);
        bench_device(&mut c, &mut run, &dev512);
    }
    c.final_summary();
    if run.latency {
        let out = std::env::var_os("DISKBEAT_BENCH_OUT").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-disk-latency.json"))
        });
        let doc = json!({
            "unit": "ns per call, measured with Instant around each call (nearest-rank percentiles)",
            "devices": run.devices,
            "cases": run.results,
        });
        std::fs::write(&out, serde_json::to_string_pretty(&doc).expect("json") + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
        eprintln!("disk bench: per-call latencies written to {}", out.display());
    }
}
