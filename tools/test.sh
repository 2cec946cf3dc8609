#!/usr/bin/env bash
# Runs the whole test suite on real loop devices and FUSE (needs root). Installs what is missing.
#   tools/test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v losetup >/dev/null || need+=(util-linux mount)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v ip >/dev/null || need+=(iproute2)
# tests/netns.rs cuts links and drops packets with nftables.
command -v nft >/dev/null || need+=(nftables)
# Handy when debugging a network test by hand (the daemon pings with its own socket): never fatal.
optional=()
command -v ping >/dev/null || optional+=(iputils-ping)
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  echo "test.sh: installing ${optional[*]} (optional)" >&2
  { apt-get update -qq && apt-get install -y -qq "${optional[@]}" >/dev/null; } ||
    echo "test.sh: could not install ${optional[*]}; no test needs them" >&2
fi
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || { echo "test.sh: no /dev/loop-control: loop devices are needed" >&2; exit 1; }
ip netns list >/dev/null || { echo "test.sh: network namespaces are needed (ip netns)" >&2; exit 1; }

# libvirt, QEMU and tini for the VM driver tests; also libvirt-dev, which the `virt` crate links
# against, so this comes before the build.
tools/install-libvirt.sh

# Builds every binary the tests run (diskbeat and tools/faultfs) before the tests start, with
# cargo's progress shown.
echo "test.sh: building (the first build takes about 3 minutes)..." >&2
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
