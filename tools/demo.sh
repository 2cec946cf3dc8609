#!/usr/bin/env bash
# The main job on the embedded default: builds diskbeat, makes a loop device over a sparse file,
# formats it, inspects it and probes its latency, then removes the loop device. Needs root.
#   tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
DB=target/release/diskbeat
IMG=${DISKBEAT_DEMO_IMG:-/var/tmp/diskbeat-demo/disk.img}
DEV=$(tools/loopdev.sh create "$IMG" 256M 512)
cleanup() { tools/loopdev.sh remove "$DEV" "$IMG" || true; }
trap cleanup EXIT

echo "== loop device $DEV over sparse file $IMG"
echo "== diskbeat mkfs"
$DB mkfs "$DEV" --cluster demo-pool --slots 64 --timeout 4s
echo
echo "== diskbeat inspect --all (first slots)"
$DB inspect "$DEV" --all --sample 0 | head -16
echo
echo "== diskbeat probe (2 s)"
$DB probe "$DEV" --seconds 2
