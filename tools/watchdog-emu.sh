#!/usr/bin/env bash
# A watchdog emulator for machines without /dev/watchdog (tests): creates FIFO, lets a diskbeat
# daemon arm it (`--watchdog FIFO`), and runs COMMAND (e.g. `kill -9 <host pid>`, standing in for
# a hardware reset) when it is not fed within the armed timeout. A clean disarm ("V") ends it.
#   tools/watchdog-emu.sh FIFO COMMAND [ARGS...]
# Lines the daemon writes: `timeout S` (arm / change), `keepalive`, `V` (disarm).
set -u
fifo=$1
shift
[ -p "$fifo" ] || mkfifo "$fifo"
# Read-write open: the FIFO never reports EOF when the daemon closes or dies; silence is silence.
exec 3<>"$fifo"
timeout_s=0
while true; do
  if [ "$timeout_s" -eq 0 ]; then
    read -r -u 3 line || exit 1 # not armed yet: wait for the daemon
  elif ! read -r -t "$timeout_s" -u 3 line; then
    echo "watchdog-emu: not fed for ${timeout_s} s: firing: $*" >&2
    "$@"
    exit 0
  fi
  case "$line" in
    timeout\ *) timeout_s=${line#timeout } ;;
    keepalive) ;;
    V)
      echo "watchdog-emu: disarmed cleanly" >&2
      exit 0
      ;;
  esac
done
