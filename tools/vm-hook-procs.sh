#!/usr/bin/env bash
# A diskbeat exec VM hook (docs/VMS.md, "Exec hook protocol") whose "VMs" are plain processes:
# for tests and demos, no hypervisor needed.
#
#   DISKBEAT_HOOK_STATE=DIR vm-hook-procs.sh inventory | start -- NAME | destroy -- NAME | protect -- NAME
#                                            | lookup -- UUID
#
# diskbeat always puts `--` before a name, so a VM named `--help` is a name; without the `--` (by
# hand) a name must not start with `-`.
# State in DIR, per VM: NAME.json (the start request, verbatim), NAME.pid (its process),
# NAME.protect (the protection settings JSON, verbatim). A running VM is a `sleep infinity` renamed
# `diskbeat-procvm-NAME` in its own session (setsid), so it outlives the hook.
# Test-only markers in DIR (empty files; a hostile or broken hypervisor on purpose):
#   NAME.hidden        `inventory` omits the VM, as libvirt can around a libvirtd restart;
#                      `lookup` still finds it (unless NAME.absent).
#   NAME.absent        `lookup` answers absent for it, even when it runs (a driver that lost it).
#   NAME.fail-start    `start -- NAME` fails at once (exit 1): nothing defined, nothing started.
#   NAME.fail-destroy  `destroy -- NAME` fails (exit 1), whatever the VM's state; it keeps running.
# Env DISKBEAT_HOOK_LOG=FILE (tests): every call appends one line to FILE, before anything else:
# the time (Unix seconds with nanoseconds), then each argument shell-quoted (printf %q), space
# separated (one write, so concurrent calls do not interleave within a line).
# The definition is opaque; `memory_mib=N` and `vcpus=N` inside it set the reported sizes
# (default 64 MiB, 1 vCPU). Capacity: env DISKBEAT_HOOK_MEMORY_MIB (4096), DISKBEAT_HOOK_VCPUS (4).
# Parsing is sed only (no jq, no python): it relies on the driver's compact JSON.
set -euo pipefail

die() {
  echo "vm-hook-procs: $*" >&2
  exit 1
}

if [ -n "${DISKBEAT_HOOK_LOG:-}" ]; then
  printf '%s%s\n' "$(date +%s.%N)" "$(printf ' %q' "$@")" >>"$DISKBEAT_HOOK_LOG"
fi

state=${DISKBEAT_HOOK_STATE:-}
[ -n "$state" ] || die "DISKBEAT_HOOK_STATE is not set (the state directory)"
mkdir -p "$state"

usage="usage: $0 inventory | start -- NAME | destroy -- NAME | protect -- NAME | lookup -- UUID"
op=${1:-}
if [ "${2:-}" = -- ]; then
  name=${3:-}
  [ $# -le 3 ] || die "$usage"
else
  name=${2:-}
  [[ "$name" != -* ]] || die "$usage (a name that starts with '-' needs the '--')"
  [ $# -le 2 ] || die "$usage"
fi
if [ "$op" != inventory ]; then
  [ -n "$name" ] || die "$usage"
  # Names become file names.
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] && [[ "$name" != .* ]] || die "bad VM name '$name'"
fi

# The string value of a top-level field, still JSON-escaped (a `"` inside a JSON string is always
# escaped, so `"key":` cannot match inside a value).
json_field() {
  sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"(([^\"\\\\]|\\\\.)*)\".*/\\1/p" | head -n 1
}

# Pid of a running VM, or nothing.
running_pid() {
  local pidfile="$state/$1.pid" pid cmd
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  # The process name guards against a recycled pid; a zombie has an empty cmdline.
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  [ "${cmd%% *}" = "diskbeat-procvm-$1" ] && echo "$pid"
  return 0
}

case "$op" in
inventory)
  printf '{"capacity":{"memory_mib":%s,"vcpus":%s},"vms":[' \
    "${DISKBEAT_HOOK_MEMORY_MIB:-4096}" "${DISKBEAT_HOOK_VCPUS:-4}"
  sep=
  for f in "$state"/*.json; do
    [ -e "$f" ] || continue
    vm=$(basename "$f" .json)
    [ -e "$state/$vm.hidden" ] && continue
    req=$(cat "$f")
    uuid=$(json_field uuid <<<"$req")
    def=$(json_field definition <<<"$req")
    mem=$(sed -nE 's/.*memory_mib=([0-9]+).*/\1/p' <<<"$def" | head -n 1)
    cpus=$(sed -nE 's/.*vcpus=([0-9]+).*/\1/p' <<<"$def" | head -n 1)
    st=stopped
    [ -n "$(running_pid "$vm")" ] && st=running
    prot='{"level":"none"}'
    [ -f "$state/$vm.protect" ] && prot=$(cat "$state/$vm.protect")
    printf '%s{"name":"%s","uuid":"%s","memory_mib":%s,"vcpus":%s,"state":"%s","protection":%s,"definition":"%s"}' \
      "$sep" "$vm" "$uuid" "${mem:-64}" "${cpus:-1}" "$st" "$prot" "$def"
    sep=,
  done
  printf ']}\n'
  ;;
start)
  req=$(cat)
  [ ! -e "$state/$name.fail-start" ] || die "start $name: failing on purpose ($name.fail-start)"
  [ "$(json_field name <<<"$req")" = "$name" ] || die "start $name: the request names another VM"
  uuid=$(json_field uuid <<<"$req")
  [ -n "$uuid" ] || die "start $name: the request has no uuid"
  if [ -f "$state/$name.json" ]; then
    old=$(json_field uuid <"$state/$name.json")
    [ "$old" = "$uuid" ] || die "VM '$name' is already defined here with UUID $old"
  fi
  printf '%s\n' "$req" >"$state/$name.json.tmp"
  mv "$state/$name.json.tmp" "$state/$name.json"
  [ -n "$(running_pid "$name")" ] && exit 0
  # No fds of ours: the driver waits for the hook's stdout and stderr to close.
  setsid bash -c 'exec -a "diskbeat-procvm-$0" sleep infinity' "$name" </dev/null >/dev/null 2>&1 &
  echo $! >"$state/$name.pid"
  for _ in $(seq 100); do
    [ -n "$(running_pid "$name")" ] && exit 0
    sleep 0.01
  done
  die "start $name: the process did not come up"
  ;;
destroy)
  [ ! -e "$state/$name.fail-destroy" ] || die "destroy $name: failing on purpose ($name.fail-destroy)"
  pid=$(running_pid "$name")
  [ -n "$pid" ] || exit 0
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    [ -z "$(running_pid "$name")" ] && exit 0
    sleep 0.01
  done
  die "destroy $name: process $pid is still there"
  ;;
lookup)
  # By UUID (the argument): running, stopped, or absent when no VM here has it.
  for f in "$state"/*.json; do
    [ -e "$f" ] || continue
    [ "$(json_field uuid <"$f")" = "$name" ] || continue
    vm=$(basename "$f" .json)
    [ -e "$state/$vm.absent" ] && break
    st=stopped
    [ -n "$(running_pid "$vm")" ] && st=running
    printf '{"state":"%s"}\n' "$st"
    exit 0
  done
  printf '{"state":"absent"}\n'
  ;;
protect)
  [ -f "$state/$name.json" ] || die "no VM named '$name' here"
  settings=$(cat)
  case "$settings" in
  '{'*'}') ;;
  *) die "protect $name: the settings are not a JSON object" ;;
  esac
  printf '%s\n' "$settings" >"$state/$name.protect.tmp"
  mv "$state/$name.protect.tmp" "$state/$name.protect"
  ;;
*)
  die "unknown operation '$op': use inventory, start, destroy, protect or lookup"
  ;;
esac
