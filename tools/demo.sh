#!/usr/bin/env bash
# The main job on the embedded default: builds diskbeat, makes a loop device over a sparse file,
# formats it, brings up a local pool of 3 daemons on it, shows `diskbeat status` and
# `diskbeat inspect`, cuts one daemon off the network and shows it fence itself (log-only) and the
# others see it, stops the daemons cleanly and removes the loop device. Needs root and Linux loop
# devices; nothing but Rust otherwise (nftables is installed with apt when missing, for the
# partition part; without it that part is skipped). Everything lives in a fresh temporary
# directory (under $TMPDIR, default /var/tmp: the loop device's backing file needs O_DIRECT, which
# tmpfs lacks), removed on exit, failure included. Exits non-zero if any step fails.
#   tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: needs root (loop devices)" >&2; exit 1; }
# The libvirt VM driver links libvirt; the demo does not use it, so without libvirt's headers the
# demo builds diskbeat without it instead of failing.
features=()
if pkg-config --exists libvirt 2>/dev/null; then
  echo "== building diskbeat (release; the first build takes about 4 minutes)"
else
  echo "== building diskbeat without the libvirt VM driver (libvirt-dev is not installed and the demo"
  echo "   does not need it; tools/install-libvirt.sh installs it) (release; about 4 minutes the first time)"
  features=(--no-default-features)
fi
cargo build --release "${features[@]}"
DB=target/release/diskbeat
if ! command -v nft >/dev/null && command -v apt-get >/dev/null; then
  echo "== installing nftables (apt) for the partition part of the demo"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null 2>&1; } ||
    echo "   (could not install nftables: the partition part will be skipped)"
fi
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
  if [ -n "$DEV" ] && ! tools/loopdev.sh remove "$DEV" "$IMG"; then
    echo "demo: could not detach $DEV: something still holds it open (see: fuser -v $DEV)" >&2
    [ "$status" -ne 0 ] || status=1
  fi
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
# `diskbeat status --json` of host $1, on one line (for grep).
status_json() { $DB status --socket "$WORK/hv-0$1.sock" --json 2>/dev/null | tr -d ' \n'; }
# Host $1 hears all three hosts on the network (its own view: `.network.hears`).
hears_all() { status_json "$1" | grep -q '"network":{[^{]*"hears":\[0,1,2\]'; }
# Host $1's status contains the (space-free) JSON text $2.
status_json_has() { status_json "$1" | grep -qF "$2"; }
# Host $1's own state is $2.
is_state() { status_json "$1" | grep -q "\"self\":{[^{]*\"state\":\"$2\""; }
# Host $1 sees slot $2 in peer state $3.
sees() { status_json "$1" | grep -q "{\"slot\":$2,\"name\":\"[^\"]*\",\"state\":\"$3\""; }
# Waits up to $1 tenths of a second for the command after it; fails the demo if it never holds.
wait_for() {
  local tenths=$1; shift
  for _ in $(seq 1 "$tenths"); do "$@" && return 0; sleep 0.1; done
  echo "demo: gave up waiting for: $*" >&2
  return 1
}
# Joining takes 2 x io timeout (2 s at T = 4 s); then the addresses are read from the extents.
wait_for 200 hears_all 0
wait_for 50 hears_all 1
wait_for 50 hears_all 2
# ... and hv-00 has read the others' views on the disk: its partition rule says "no partition".
wait_for 50 status_json_has 0 '"reason":{"reason":"whole","hosts":3}'
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
  wait_for 150 is_state 2 fenced
  echo "== diskbeat status (hv-02's view: it lost the partition and fenced itself)"
  $DB status --socket "$WORK/hv-02.sock"
  echo
  # hv-00 reads hv-02's record on its next sweep (every T/20).
  wait_for 50 sees 0 2 fenced
  echo "== diskbeat status (hv-00's view: hv-02's record carries its 'fenced' mark)"
  $DB status --socket "$WORK/hv-00.sock"
  nft delete table inet "$NFT_TABLE"
  NFT_TABLE=
else
  echo "(nftables not installed: skipping the partition part of the demo)"
fi
echo
echo "== stopping the daemons cleanly (SIGTERM: a live daemon writes 'leaving' and exits 0; hv-02"
echo "   already fenced itself and exits 3)"
for i in 0 1 2; do kill -TERM "${PIDS[$i]}"; done
for i in 0 1 2; do
  code=0
  wait "${PIDS[$i]}" || code=$?
  echo "   hv-0$i exited $code"
done
PIDS=()
echo
echo "== diskbeat inspect after the stop (hv-00 and hv-01 left; hv-02's record keeps its fenced mark)"
$DB inspect "$DEV" --sample 0
echo
echo "== daemon log of hv-00"
cat "$WORK/hv-00.log"
