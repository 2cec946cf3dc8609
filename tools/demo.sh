#!/usr/bin/env bash
# The main job on the embedded default: builds diskbeat, makes a loop device over a sparse file,
# formats it, brings up a local pool of 3 daemons on it, shows `diskbeat status` and
# `diskbeat inspect`, stops the daemons cleanly and removes the loop device. Needs root.
# Everything lives in a fresh temporary directory (under $TMPDIR, default /var/tmp: the loop
# device's backing file needs O_DIRECT, which tmpfs lacks), removed on exit, failure included.
#   tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building diskbeat (release; the first build takes about 3 minutes)"
cargo build --release
DB=target/release/diskbeat
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/diskbeat-demo.XXXXXX")
IMG=$WORK/disk.img
DEV=
PIDS=()
cleanup() {
  local status=$?
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    echo "demo failed (exit $status); daemon logs:" >&2
    for log in "$WORK"/hv-0*.log; do
      [ -e "$log" ] && { echo "-- $log" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  [ -n "$DEV" ] && tools/loopdev.sh remove "$DEV" "$IMG" || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DEV=$(tools/loopdev.sh create "$IMG" 256M 512)

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
echo "== daemon log of hv-00"
cat "$WORK/hv-00.log"
