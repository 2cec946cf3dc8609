#!/usr/bin/env bash
# Test fence action (`--fence-action exec:tools/fence-kill-guests.sh`) for an emulated host that
# runs in its own PID namespace (tests/common/vmhost.rs): kills every QEMU guest the host runs,
# standing in for a reboot. Exit 0 only when none is left, so `fenced` is written only when true.
pkill -9 -f qemu-system 2>/dev/null
for _ in $(seq 50); do
  pgrep -f qemu-system >/dev/null || exit 0
  sleep 0.1
done
echo "fence-kill-guests: guests still running" >&2
exit 1
