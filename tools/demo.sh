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
NFT_TABLE=
cleanup() {
  local status=$?
  [ -n "$NFT_TABLE" ] && nft delete table inet "$NFT_TABLE" 2>/dev/null || true
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
echo "== starting 3 daemons (slots 0-2; network heartbeats on 127.0.0.1:17700-17702; fence action"
echo "   log-only: this is a demo, never reboot)"
for i in 0 1 2; do
  $DB daemon --device "$DEV" --slot "$i" --name "hv-0$i" --fence-action log-only \
    --socket "$WORK/hv-0$i.sock" --hb-addr "127.0.0.1:1770$i" 2>"$WORK/hv-0$i.log" &
  PIDS+=($!)
done
# Joining takes 2 x io timeout (2 s at T = 4 s); then the addresses are read from the extents.
hears_all() {
  $DB status --socket "$WORK/hv-0$1.sock" --json 2>/dev/null |
    python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if len(v["network"]["hears"]) == 3 else 1)' 2>/dev/null
}
for _ in $(seq 1 200); do
  hears_all 0 && hears_all 1 && hears_all 2 && break
  sleep 0.1
done
echo
echo "== diskbeat status (hv-00's view)"
$DB status --socket "$WORK/hv-00.sock"
echo
echo "== diskbeat inspect"
$DB inspect "$DEV" --sample 500ms
echo
if command -v nft >/dev/null; then
  echo
  echo "== cutting hv-02 off the network (nftables drops UDP to and from port 17702)"
  NFT_TABLE=diskbeat_demo_$$
  nft add table inet "$NFT_TABLE"
  nft add chain inet "$NFT_TABLE" out '{ type filter hook output priority 0; }'
  nft add rule inet "$NFT_TABLE" out udp dport 17702 drop
  nft add rule inet "$NFT_TABLE" out udp sport 17702 drop
  # Unheard after the net timeout (2 s), published within 0.3 T, decided after 0.6 T of stable views.
  for _ in $(seq 1 150); do
    $DB status --socket "$WORK/hv-02.sock" --json 2>/dev/null | grep -q '"state": "fenced"' && break
    sleep 0.1
  done
  echo "== diskbeat status (hv-02's view: it lost the partition and fenced itself)"
  $DB status --socket "$WORK/hv-02.sock"
  echo
  echo "== diskbeat status (hv-00's view: disk beats from hv-02 stopped with a 'fenced' mark)"
  $DB status --socket "$WORK/hv-00.sock"
  nft delete table inet "$NFT_TABLE"
  NFT_TABLE=
else
  echo "(nftables not installed: skipping the partition part of the demo)"
fi
echo
echo "== stopping the daemons cleanly (SIGTERM: each writes 'leaving'; hv-02 exits 3, fenced)"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do wait "$p" || true; done
PIDS=()
$DB inspect "$DEV" --sample 0
echo
echo "== daemon log of hv-00"
cat "$WORK/hv-00.log"
