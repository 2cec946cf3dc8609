#!/usr/bin/env bash
# Runs the whole test suite on real loop devices and FUSE (needs root). Installs what is missing.
#   tools/test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v losetup >/dev/null || need+=(util-linux mount)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v ip >/dev/null || need+=(iproute2)
# Network tests (planned) need these.
command -v nft >/dev/null || need+=(nftables)
command -v ping >/dev/null || need+=(iputils-ping)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || { echo "test.sh: no /dev/loop-control: loop devices are needed" >&2; exit 1; }

# Builds every binary the tests run (diskbeat and tools/faultfs) before the tests start, with
# cargo's progress shown.
echo "test.sh: building (the first build takes about 3 minutes)..." >&2
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
