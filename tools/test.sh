#!/usr/bin/env bash
# Runs the whole test suite on real loop devices, FUSE, network namespaces and libvirt (needs
# root). Installs what is missing (one `apt-get update`, only when something is):
#   util-linux (losetup), fuse3, iproute2 (ip netns), nftables (cuts and drops in the network
#   tests), tmux (a real terminal for `status --watch`, tests/status_watch.rs), pkg-config +
#   libvirt-dev (the `libvirt` cargo feature links libvirt), libvirt-daemon, QEMU and tini
#   (tests/vm_libvirt.rs, tests/failover_libvirt.rs), libxml2-utils (xmllint: tests/fence_agent.rs
#   checks fence_diskbeat's metadata), fence-agents (fence_dummy, fence_ipmilan), openipmi (ipmi_sim,
#   a simulated BMC per host) and ipmitool (tests/fence_device.rs), pacemaker, corosync and
#   pacemaker-cli-utils (tests/pacemaker.rs: tools/pacemaker-fence.sh); iputils-ping if it can.
# Then two builds:
#   1. the default features (libvirt driver built in): every test;
#   2. --no-default-features (no libvirt at all): the binary must not link libvirt, and the exec
#      driver's failover tests run on it.
# A flaky test fails the run (.config/nextest.toml). Seeds and figures (the simulator's base
# seeds, FAILOVER_FIGURES lines) are printed at the end of the run, passing tests included.
#   tools/test.sh [extra nextest args for the first run]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v losetup >/dev/null || need+=(util-linux mount)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v tmux >/dev/null || need+=(tmux)
command -v xmllint >/dev/null || need+=(libxml2-utils)
cluster=()
[ -x /usr/sbin/fence_dummy ] || cluster+=(fence-agents)
command -v stonith_admin >/dev/null || cluster+=(pacemaker corosync pacemaker-cli-utils)
command -v ipmi_sim >/dev/null || cluster+=(openipmi)
command -v ipmitool >/dev/null || cluster+=(ipmitool)
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ] || ! tools/install-libvirt.sh --check; then
  echo "test.sh: installing ${need[*]:-}${need[*]:+ and }libvirt, QEMU, tini (apt)" >&2
  apt-get update -qq
  [ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
  tools/install-libvirt.sh --no-update
fi
if [ ${#cluster[@]} -gt 0 ]; then
  echo "test.sh: installing ${cluster[*]} (apt; no service is started)" >&2
  apt-get update -qq
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${cluster[@]}" >/dev/null
  [ "$made_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
# Handy when debugging a network test by hand (the daemon pings with its own socket): never fatal.
if ! command -v ping >/dev/null; then
  apt-get install -y -qq iputils-ping >/dev/null 2>&1 || echo "test.sh: no ping (optional; no test needs it)" >&2
fi
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || { echo "test.sh: no /dev/loop-control: loop devices are needed" >&2; exit 1; }
ip netns list >/dev/null || { echo "test.sh: network namespaces are needed (ip netns)" >&2; exit 1; }

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
  else
    cargo test --workspace --no-fail-fast "$@"
  fi
}

echo "test.sh: [1/2] building with the default features (the first build takes about 4 minutes)..." >&2
cargo build --workspace --all-targets
run_tests "$@"

echo "test.sh: [2/2] building without libvirt (--no-default-features) and running its tests..." >&2
cargo build --workspace --no-default-features --tests
run_tests --no-default-features --test build_features --test vm_exec --test failover --test failover_hostile
echo "test.sh: all tests passed (both builds)" >&2
