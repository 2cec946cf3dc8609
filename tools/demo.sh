#!/usr/bin/env bash
# The main job on the embedded default: builds diskbeat, makes a loop device over a sparse file,
# formats it, brings up a local pool of 3 daemons on it, shows `diskbeat status` and
# `diskbeat inspect`, stops the daemons cleanly and removes the loop device. Needs root.
#   tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
DB=target/release/diskbeat
WORK=${DISKBEAT_DEMO_DIR:-/var/tmp/diskbeat-demo}
mkdir -p "$WORK"
IMG=$WORK/disk.img
DEV=$(tools/loopdev.sh create "$IMG" 256M 512)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  tools/loopdev.sh remove "$DEV" "$IMG" || true
}
trap cleanup EXIT

echo "== loop device $DEV over sparse file $IMG"
echo "== diskbeat mkfs"
$DB mkfs "$DEV" --cluster demo-pool --slots 64 --timeout 4s
echo
echo "== diskbeat probe (1 s)"
$DB probe "$DEV" --seconds 1
echo
echo "== starting 3 daemons (slots 0-2; fence action log-only: this is a demo, never reboot)"
for i in 0 1 2; do
  $DB daemon --device "$DEV" --slot "$i" --name "hv-0$i" --fence-action log-only \
    --socket "$WORK/hv-0$i.sock" 2>"$WORK/hv-0$i.log" &
  PIDS+=($!)
done
# Joining takes 2 x io timeout (2 s at T = 4 s).
for _ in $(seq 1 100); do
  n=$($DB status --socket "$WORK/hv-00.sock" --json 2>/dev/null | grep -c '"state": "live"' || true)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.1
done
echo
echo "== diskbeat status (hv-00's view)"
$DB status --socket "$WORK/hv-00.sock"
echo
echo "== diskbeat inspect"
$DB inspect "$DEV" --sample 500ms
echo
echo "== stopping the daemons cleanly (SIGTERM: each writes 'leaving')"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do wait "$p"; done
PIDS=()
$DB inspect "$DEV" --sample 0
echo
echo "Daemon logs are in $WORK/hv-0*.log"
