#!/usr/bin/env bash
# Creates and removes loop devices over sparse files, with direct I/O on.
#
#   tools/loopdev.sh create FILE SIZE [SECTOR]   # prints the loop device (e.g. /dev/loop3);
#                                                # FILE must not exist (it is never overwritten)
#   tools/loopdev.sh remove DEVICE [FILE]        # detaches the device, deletes FILE if given
#   tools/loopdev.sh list                        # loop devices over files made by this script
#
# SIZE accepts truncate(1) suffixes (64M, 1G). SECTOR is the logical sector size: 512 (default)
# or 4096. Needs root (losetup). Exit status: 0 ok, 1 failure, 2 usage.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd=${1:-}
case "$cmd" in
create)
  [ $# -ge 3 ] || usage
  file=$2 size=$3 sector=${4:-512}
  case "$sector" in 512|4096) ;; *) echo "loopdev: sector size must be 512 or 4096" >&2; exit 2;; esac
  mkdir -p "$(dirname "$file")"
  # Create FILE exclusively (noclobber): an existing file, even one left by an earlier run, is
  # someone's data until they remove it.
  if [ -e "$file" ] || [ -L "$file" ] || ! (set -C; : >"$file") 2>/dev/null; then
    echo "loopdev: $file already exists: refusing to overwrite it (remove it, or pick another path)" >&2
    exit 1
  fi
  truncate -s "$size" "$file" || { rm -f "$file"; exit 1; }
  # Loop devices need the module on some kernels; ignore failure where it is built in.
  modprobe loop 2>/dev/null || true
  dev=$(losetup --find --show --direct-io=on --sector-size "$sector" "$file") || {
    echo "loopdev: losetup failed for $file (are you root? is /dev/loop-control present?)" >&2
    rm -f "$file"; exit 1; }
  # --direct-io=on silently falls back to buffered I/O when the backing file cannot do O_DIRECT.
  dio=$(cat "/sys/block/$(basename "$dev")/loop/dio" 2>/dev/null || echo "?")
  [ "$dio" = 1 ] || echo "loopdev: warning: $dev runs without direct I/O (dio=$dio)" >&2
  echo "$dev"
  ;;
remove)
  [ $# -ge 2 ] || usage
  dev=$2
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    losetup -d "$dev" 2>/dev/null && break
    losetup "$dev" >/dev/null 2>&1 || break   # already gone
    sleep 0.2
  done
  if losetup "$dev" >/dev/null 2>&1 && [ "$(losetup -n -O AUTOCLEAR "$dev" | tr -d ' ')" != 1 ]; then
    echo "loopdev: could not detach $dev (still open?)" >&2; exit 1
  fi
  [ -n "${3:-}" ] && rm -f "$3"
  exit 0
  ;;
list)
  losetup --list -O NAME,BACK-FILE,DIO,LOG-SEC,SIZELIMIT
  ;;
*) usage ;;
esac
