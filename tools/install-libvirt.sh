#!/usr/bin/env bash
# Installs libvirt (system daemon, QEMU driver, headers for the `virt` crate) and tini, as the VM
# failover tests and the libvirt driver need them (Debian 12). Idempotent; needs root.
# Notes: ../docs/VMS.md and tests/common/libvirt.rs (one libvirtd per emulated host).
#   tools/install-libvirt.sh             # installs what is missing
#   tools/install-libvirt.sh --check     # exit 0 if everything is installed, 1 otherwise
#   tools/install-libvirt.sh --no-update # installs without `apt-get update` (the caller ran it)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if command -v libvirtd >/dev/null && command -v qemu-system-x86_64 >/dev/null &&
  command -v tini >/dev/null && pkg-config --exists libvirt 2>/dev/null; then
  exit 0
fi
[ "${1:-}" = --check ] && exit 1
echo "install-libvirt.sh: installing libvirt, QEMU and tini (about 10 s)..." >&2
[ "${1:-}" = --no-update ] || apt-get update -qq
pkgs=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 libvirt-dev pkg-config tini)
# Some images carry a backported qemu-utils that conflicts with this release's qemu-system-common:
# pin the release's own version when one is installed from elsewhere.
release_utils=$(apt-cache policy qemu-utils | awk '/^ +[0-9]/ && $2 == 500 {print $1; exit} /^ +\*\*\* / {next}' || true)
installed_utils=$(dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null || true)
if [ -n "$installed_utils" ] && [ -n "$release_utils" ] && [ "$installed_utils" != "$release_utils" ]; then
  pkgs+=("qemu-utils=$release_utils")
fi
apt-get install --no-install-recommends -y -qq --allow-downgrades "${pkgs[@]}" >/dev/null
# libvirtd refuses to start without its user and group, even when qemu.conf says root.
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
echo "install-libvirt.sh: done" >&2
