#!/usr/bin/env bash
# Runs the disk benchmarks (criterion, benches/disk.rs) and matching fio jobs on the SAME two loop
# devices (4Kn and 512-byte sectors, direct I/O on), then prints a comparison table.
#
#   tools/bench-vs-fio.sh [OUTDIR]     # default OUTDIR: target/bench-vs-fio
#
# Environment: FIO_SECS (seconds per fio job, default 5), DISKBEAT_BENCH_LAT_SECS (seconds of
# per-call timing per case in the bench, default 2), CRITERION_ARGS (extra criterion arguments).
# Writes OUTDIR/ours.json (per-call latencies of our code), OUTDIR/fio-*.json, OUTDIR/criterion.log
# and OUTDIR/comparison.txt. Needs root, fio and python3. Exit status: 0 ok, 1 failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/bench-vs-fio}
secs=${FIO_SECS:-5}
mkdir -p "$out"
[ "$(id -u)" = 0 ] || { echo "bench-vs-fio: needs root (loop devices)" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-vs-fio: fio not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-vs-fio: python3 not found" >&2; exit 1; }

dir=$root/target/bench-loop
dev4k="" dev512=""
cleanup() {
  [ -n "$dev4k" ] && "$root/tools/loopdev.sh" remove "$dev4k" "$dir/fio-4096.img" || true
  [ -n "$dev512" ] && "$root/tools/loopdev.sh" remove "$dev512" "$dir/fio-512.img" || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
dev4k=$("$root/tools/loopdev.sh" create "$dir/fio-4096.img" 64M 4096)
dev512=$("$root/tools/loopdev.sh" create "$dir/fio-512.img" 64M 512)
echo "bench-vs-fio: 4Kn device $dev4k, 512 device $dev512" >&2

# 1. Our side. The bench preconditions both devices (writes every block once), formats them, runs
#    criterion and then times each case call by call into ours.json.
(cd "$root" && DISKBEAT_BENCH_DEV_4K=$dev4k DISKBEAT_BENCH_DEV_512=$dev512 \
  DISKBEAT_BENCH_OUT=$out/ours.json cargo bench --bench disk -- --noplot ${CRITERION_ARGS:-}) \
  2>&1 | tee "$out/criterion.log" | grep -E '^[a-z_0-9]+/.*time:|^ +time:|^[a-z_0-9/]+$|bench:' || true
[ -s "$out/ours.json" ] || { echo "bench-vs-fio: the bench did not write ours.json" >&2; exit 1; }

# 2. fio on the same devices, over the same byte ranges: the record table starts at 68 KiB.
rec_off=69632
fio_job() { # NAME DEVICE fio-args...
  local name=$1 dev=$2; shift 2
  fio --name="$name" --filename="$dev" --direct=1 --iodepth=1 --ioengine=io_uring \
    --fixedbufs=1 --registerfiles=1 \
    --time_based --runtime="$secs" --ramp_time=1 --lat_percentiles=1 --clat_percentiles=1 \
    --percentile_list=50:99:99.9 --output-format=json --output="$out/fio-$name.json" "$@" >/dev/null
  echo "fio: $name done" >&2
}
# Writes: 4 KiB / 512 B random writes over the 2048-slot record table (allocated blocks).
fio_job w4096        "$dev4k"  --rw=randwrite --bs=4k  --offset=$rec_off --size=8M
fio_job w4096_dsync  "$dev4k"  --rw=randwrite --bs=4k  --offset=$rec_off --size=8M --sync=dsync
fio_job w4096_fdsync "$dev4k"  --rw=randwrite --bs=4k  --offset=$rec_off --size=8M --fdatasync=1
fio_job w512         "$dev512" --rw=randwrite --bs=512 --offset=$rec_off --size=1M
fio_job w512_dsync   "$dev512" --rw=randwrite --bs=512 --offset=$rec_off --size=1M --sync=dsync
# Reads: the table as ONE request (the block layer splits it at max_sectors_kb, as our engine
# does itself), and for the 8 MiB table also in chunks of our engine's size, one at a time.
chunk_kb=$(cat "/sys/block/$(basename "$dev4k")/queue/max_sectors_kb")
for t in 256k 1M 8M; do
  fio_job "r4096_$t" "$dev4k" --rw=read --bs=$t --offset=$rec_off --size=$t
done
fio_job r4096_8M_chunked "$dev4k" --rw=read --bs=${chunk_kb}k --offset=$rec_off --size=8M
# As our engine issues them: all chunks of the table at once (not QD1; for the analysis only).
nchunks=$(( (8192 + chunk_kb - 1) / chunk_kb ))
fio_job r4096_8M_chunked_qd "$dev4k" --rw=read --bs=${chunk_kb}k --offset=$rec_off --size=8M \
  --iodepth=$nchunks --iodepth_batch_submit=$nchunks --iodepth_batch_complete_min=$nchunks
for t in 32k 128k 1M; do
  fio_job "r512_$t" "$dev512" --rw=read --bs=$t --offset=$rec_off --size=$t
done

# 3. The table.
python3 - "$out" "$chunk_kb" <<'EOF' | tee "$out/comparison.txt"
import json, sys, platform, os
out, chunk_kb = sys.argv[1], int(sys.argv[2])
ours = {c["name"]: c for c in json.load(open(f"{out}/ours.json"))["cases"]}
def fio(name):
    j = json.load(open(f"{out}/fio-{name}.json"))["jobs"][0]
    d = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
    pct = lambda k, p: d[k]["percentile"][p] / 1000.0
    return {"lat50": pct("lat_ns", "50.000000"), "lat99": pct("lat_ns", "99.000000"),
            "clat50": pct("clat_ns", "50.000000"), "clat99": pct("clat_ns", "99.000000"),
            "bw": d["bw_bytes"], "ios": d["total_ios"]}
us = lambda c, k: c[k] / 1000.0
rows = []
def row(label, case, fname, target=None):
    c, f = ours[case], fio(fname)
    r50, r99 = us(c, "p50_ns") / f["lat50"], us(c, "p99_ns") / f["lat99"]
    verdict = "" if target is None else ("MET" if r50 <= target else "MISSED") + f" (<= {target}x)"
    rows.append((label, f"{us(c,'p50_ns'):.0f}", f"{us(c,'p99_ns'):.0f}", fname,
                 f"{f['lat50']:.0f}", f"{f['lat99']:.0f}", f"{f['clat50']:.0f}",
                 f"{r50:.2f}", f"{r99:.2f}", f"{us(c,'p50_ns')/f['clat50']:.2f}", verdict))
row("record_write/uring/4096", "record_write/uring/4096", "w4096_dsync", 1.15)
row("record_write/uring/4096", "record_write/uring/4096", "w4096_fdsync")
row("record_write/uring/4096", "record_write/uring/4096", "w4096")
row("record_write/sync/4096",  "record_write/sync/4096",  "w4096_dsync")
row("record_write/uring/512",  "record_write/uring/512",  "w512_dsync")
row("record_write/uring/512",  "record_write/uring/512",  "w512")
row("record_write/sync/512",   "record_write/sync/512",   "w512_dsync")
for slots, t in ((64, "256k"), (256, "1M"), (2048, "8M")):
    for e in ("uring", "sync"):
        row(f"table_read/{e}/{slots}", f"table_read/{e}/{slots}", f"r4096_{t}",
            1.2 if (slots, e) == (2048, "uring") else None)
for slots, t in ((64, "32k"), (256, "128k"), (2048, "1M")):
    for e in ("uring", "sync"):
        row(f"table_read_512/{e}/{slots}", f"table_read_512/{e}/{slots}", f"r512_{t}")
hdr = ("ours", "p50us", "p99us", "fio job", "fio p50", "fio p99", "fio clat50",
       "p50 ratio", "p99 ratio", "p50/clat50", "target")
w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
print(f"kernel {platform.release()}, {os.cpu_count()} CPUs; ours: per-call wall time (Instant) p50/p99;"
      " fio: total latency (lat = slat + clat) p50/p99, io_uring (fixedbufs, registerfiles), direct=1, iodepth=1; ratio = ours / fio")
for r in [hdr] + rows:
    print("  ".join(str(v).ljust(w[i]) for i, v in enumerate(r)))
ch = fio("r4096_8M_chunked")
print(f"\nfio 8 MiB in {chunk_kb} KiB requests one at a time: per request p50 {ch['lat50']:.0f} us; "
      f"mean per 8 MiB = 8 MiB / bandwidth = {8*2**20/ch['bw']*1e6:.0f} us "
      f"(ours uring p50 {us(ours['table_read/uring/2048'],'p50_ns'):.0f} us)")
qd = fio("r4096_8M_chunked_qd")
print(f"fio 8 MiB in {chunk_kb} KiB requests, {-(-8192 // chunk_kb)} at a time (as our engine; not QD1): "
      f"mean per 8 MiB = {8*2**20/qd['bw']*1e6:.0f} us")
for k in ("sweep_decode/2048", "sweep_decode/2048x4096"):
    if k in ours:
        c = ours[k]
        print(f"{k}: p50 {us(c,'p50_ns'):.1f} us, p99 {us(c,'p99_ns'):.1f} us "
              f"(target < 200 us: {'MET' if us(c,'p50_ns') < 200 else 'MISSED'} at p50)")
EOF
echo "bench-vs-fio: results in $out (comparison.txt)" >&2
