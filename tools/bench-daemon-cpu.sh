#!/usr/bin/env bash
# Daemon CPU cost: N daemons (default 64) on one 64-slot heartbeat loop device at the default
# base timeout (40 s), every one sending network heartbeats to every other over loopback.
# Measures each daemon's CPU time (utime + stime from /proc/PID/stat) over a window once all are
# live, and prints the mean and the maximum as a share of one core.
#
# Usage: sudo tools/bench-daemon-cpu.sh [HOSTS] [WINDOW_S] [TIMEOUT]
#   e.g. sudo tools/bench-daemon-cpu.sh 64 60 40s
set -euo pipefail
HOSTS=${1:-64}
WINDOW_S=${2:-60}
TIMEOUT=${3:-40s}
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=$PWD/target/release/diskbeat
WORK=$(mktemp -d /var/tmp/diskbeat-cpu.XXXXXX)
LOOP=""
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # A clean leave takes up to two intervals (4 s at T = 40 s).
    for _ in $(seq 1 100); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
truncate -s 256M "$WORK/disk.img"
LOOP=$(losetup --direct-io=on --sector-size 4096 -f --show "$WORK/disk.img")
"$BIN" mkfs --slots 64 --timeout "$TIMEOUT" "$LOOP" >/dev/null
for ((i = 0; i < HOSTS; i++)); do
    "$BIN" daemon --device "$LOOP" --slot "$i" --name "h$i" --fence-action log-only \
        --socket "$WORK/h$i.sock" --hb-addr "127.0.0.1:$((17000 + i))" --no-mlock \
        >"$WORK/h$i.log" 2>&1 &
    PIDS+=($!)
done
echo "started $HOSTS daemons on $LOOP (T = $TIMEOUT); waiting until every one is live and hears all"
for _ in $(seq 1 600); do
    live=0
    for ((i = 0; i < HOSTS; i++)); do
        if "$BIN" status --socket "$WORK/h$i.sock" --json 2>/dev/null |
            python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if v['self']['state']=='live' and len(v['network']['hears'])==$HOSTS else 1)"; then
            live=$((live + 1))
        fi
    done
    [ "$live" -eq "$HOSTS" ] && break
    sleep 1
done
echo "$live/$HOSTS live and hearing everyone; measuring ${WINDOW_S} s"
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A START
for p in "${PIDS[@]}"; do START[$p]=$(cpu "$p"); done
sleep "$WINDOW_S"
python3 - "$TICK" "$WINDOW_S" "${PIDS[@]}" <<EOF
import sys
tick, window, pids = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
start = {$(for p in "${PIDS[@]}"; do printf '"%s": %s, ' "$p" "${START[$p]}"; done)}
shares = []
for p in pids:
    f = open(f"/proc/{p}/stat").read().split()
    used = (int(f[13]) + int(f[14]) - start[p]) / tick
    shares.append(100.0 * used / window)
shares.sort()
print(f"daemons: {len(shares)}; CPU per daemon, % of one core: mean {sum(shares)/len(shares):.3f}, "
      f"median {shares[len(shares)//2]:.3f}, max {shares[-1]:.3f}")
EOF
