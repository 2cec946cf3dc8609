#!/usr/bin/env bash
# Test fence action (`--fence-action exec:tools/fence-kill-guests.sh`) for an emulated host that
# runs in its own PID namespace (tests/common/libvirt.rs): kills every QEMU guest the host runs,
# standing in for a reboot. Exit 0 only when no guest process is left AND the host's libvirtd no
# longer lists any as running (it learns of a killed guest asynchronously): `fenced` is written
# only when it is true from every point of view, the test's checker's included.
pkill -9 -f qemu-system 2>/dev/null
have_virsh=$(command -v virsh || true)
for _ in $(seq 90); do
  if ! pgrep -f qemu-system >/dev/null; then
    [ -z "$have_virsh" ] && exit 0
    running=$(virsh -q -c qemu:///system list --name 2>/dev/null | grep -c . || true)
    [ "$running" = 0 ] && exit 0
  fi
  sleep 0.01
done
echo "fence-kill-guests: guests still running (or still listed running by libvirtd)" >&2
exit 1
