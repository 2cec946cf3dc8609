#!/usr/bin/env bash
# Fences a node through Pacemaker's fencer with fence_diskbeat, on this machine, from scratch.
#
# What it builds (everything under a fresh temporary directory, removed on exit, failure included):
#   - a heartbeat disk: a loop device (--direct-io=on) over a sparse file, `diskbeat mkfs` (T = 4 s);
#   - two diskbeat daemons, h1 (slot 0) and h2 (slot 1), in the root network namespace;
#     h2's fence action is an exec: script that SIGKILLs every process of cluster node h2
#     (its corosync and pacemaker daemons): the "power-off" of h2;
#   - a two-node corosync 3 (knet, crypto on, two_node) + Pacemaker 2.1 cluster: nodes h1 and h2,
#     each in its own network namespace (veth pair 192.168.234.1 <-> .2) and its own mount
#     namespace, where a private /run and per-node /etc/corosync (own corosync.conf + authkey),
#     /var/lib/corosync, /var/lib/pacemaker, /var/log/{pacemaker,corosync} are mounted;
#   - a stonith primitive class=stonith type=fence_diskbeat devices=LOOP pcmk_host_list="h1 h2"
#     in the CIB, and /usr/sbin/fence_diskbeat -> the diskbeat binary (the previous one restored).
# Then, from node h1: stonith_admin --metadata/--validate/--list-registered/--list/--list-targets/
# --query, `stonith_admin --fence h2`, and checks --history h2, h2's diskbeat record (fenced,
# fence_request), that h2's cluster processes are gone and that h1 sees h2 offline.
# Prints PASS or FAIL with the evidence; exit 0 on PASS.
#
#   DISKBEAT=/path/to/diskbeat tools/pacemaker-fence.sh      (default target/debug/diskbeat)
# Needs root, ip netns, loop devices; installs pacemaker, corosync, pacemaker-cli-utils,
# libxml2-utils with apt when missing (with a policy-rc.d that keeps apt from starting them).
set -uo pipefail

DISKBEAT=${DISKBEAT:-$(dirname "$0")/../target/debug/diskbeat}
KEEP=${KEEP:-0}                    # KEEP=1: leave the temp dir (logs) behind
# SCENARIO=fence (default): stonith_admin --fence h2; reboot: stonith_admin --reboot h2;
# crash: h2's corosync is SIGKILLed and the cluster (the DC on h1) fences h2 by itself;
# refused: stonith_admin --fence h1, whose diskbeat fence action is log-only (stops nothing): the
# agent must fail (exit 1: not proven off) and Pacemaker must report the fencing as failed.
SCENARIO=${SCENARIO:-fence}
# HOSTCHECK=static (default): pcmk_host_list="h1 h2"; dynamic: no host list, the fencer asks the
# agent (action=list) which hosts it can fence.
HOSTCHECK=${HOSTCHECK:-static}
# TRACE=1 (default): /usr/sbin/fence_diskbeat is a small bash wrapper that logs every call the
# fencer makes (its stdin, exit status, time) and runs the binary as `fence_diskbeat` (exec -a);
# TRACE=0: /usr/sbin/fence_diskbeat is the plain symlink to the binary, as tools/install.sh makes.
TRACE=${TRACE:-1}
# SCENARIO=all: each of the four in turn, each from scratch (reboot with HOSTCHECK=dynamic).
if [ "$SCENARIO" = all ]; then
  results=()
  all_rc=0
  for sc in fence reboot crash refused; do
    hc=$HOSTCHECK
    [ "$sc" = reboot ] && hc=dynamic
    echo "################ SCENARIO=$sc HOSTCHECK=$hc ################"
    SCENARIO=$sc HOSTCHECK=$hc bash "$0"
    rc=$?
    [ "$rc" = 0 ] && results+=("PASS $sc ($hc)") || { results+=("FAIL $sc ($hc): exit $rc"); all_rc=1; }
  done
  echo "################ summary ################"
  printf '%s\n' "${results[@]}"
  [ "$all_rc" = 0 ] && echo "PASS: all scenarios" || echo "FAIL: some scenario failed"
  exit $all_rc
fi
case "$SCENARIO" in fence | reboot | crash | refused) ;; *) echo "SCENARIO: fence, reboot, crash, refused or all" >&2; exit 2 ;; esac
case "$HOSTCHECK" in static | dynamic) ;; *) echo "HOSTCHECK: static or dynamic" >&2; exit 2 ;; esac
T0=$(date +%s.%N)
ID=$$
NS1=dbpk$ID-h1
NS2=dbpk$ID-h2
IP1=192.168.234.1
IP2=192.168.234.2
W=""
LOOP=""
AGENT_LINK=/usr/sbin/fence_diskbeat
AGENT_SAVED=""
AGENT_CREATED=0
DAEMON_PIDS=()
FAILS=()
EVIDENCE=()

say() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
fail() { FAILS+=("$*"); say "FAIL: $*"; }
ok() { EVIDENCE+=("$*"); say "ok: $*"; }
die() { fail "$*"; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  say "cleanup"
  for ns in "$NS1" "$NS2"; do
    if ip netns list | grep -qw "$ns"; then
      local pids
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [ -n "$pids" ] && kill -9 $pids 2>/dev/null
      ip netns del "$ns" 2>/dev/null
    fi
  done
  for p in "${DAEMON_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${DAEMON_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  # Anything left that was started from our temp dir (watchdog emulators, helpers).
  if [ -n "$W" ]; then
    for p in $(pgrep -f "$W/" 2>/dev/null); do [ "$p" != "$$" ] && kill -9 "$p" 2>/dev/null; done
  fi
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  if [ "$AGENT_CREATED" = 1 ]; then
    rm -f "$AGENT_LINK"
    [ -n "$AGENT_SAVED" ] && mv "$AGENT_SAVED" "$AGENT_LINK"
  fi
  if [ -n "$W" ]; then
    if [ "$KEEP" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
  fi
  say "done (exit $rc)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites ------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root"
command -v bc >/dev/null || { echo "needs bc" >&2; exit 1; }
[ -x "$DISKBEAT" ] || die "no diskbeat binary at $DISKBEAT (set DISKBEAT=)"
"$DISKBEAT" fence-agent --help >/dev/null 2>&1 ||
  die "$DISKBEAT has no fence-agent subcommand (built before fence_diskbeat existed?): set DISKBEAT= to a newer build (e.g. target/release/diskbeat after a rebuild)"
DISKBEAT=$(readlink -f "$DISKBEAT")

if ! command -v pacemakerd >/dev/null || ! command -v corosync >/dev/null ||
  ! command -v stonith_admin >/dev/null || ! command -v xmllint >/dev/null || ! command -v jq >/dev/null; then
  say "installing pacemaker, corosync, pacemaker-cli-utils, libxml2-utils (apt)"
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    pacemaker corosync pacemaker-cli-utils libxml2-utils jq >/dev/null
  inst=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$inst" = 0 ] || die "apt-get install failed"
fi
for c in pacemakerd corosync corosync-keygen stonith_admin cibadmin crm_mon crm_attribute ip losetup nsenter xmllint jq; do
  command -v "$c" >/dev/null || die "missing $c"
done
ok "$(pacemakerd --version | head -1); $(corosync -v | head -1); scenario $SCENARIO, host check $HOSTCHECK"
for ns in "$NS1" "$NS2"; do ip netns list | grep -qw "$ns" && die "netns $ns exists"; done
# No other corosync/pacemaker outside our namespaces would see ours (IPC is per network
# namespace), but say so if there is one.
pgrep -x corosync >/dev/null && say "note: a corosync is already running on this machine"

W=$(mktemp -d /tmp/dbpcmk.XXXXXX)
chmod 755 "$W"

# ---- fence agent ---------------------------------------------------------------------------------
if [ -e "$AGENT_LINK" ] || [ -L "$AGENT_LINK" ]; then
  AGENT_SAVED="$W/fence_diskbeat.saved"
  mv "$AGENT_LINK" "$AGENT_SAVED"
fi
if [ "$TRACE" = 1 ]; then
  cat >"$W/fence_diskbeat.trace" <<EOF
#!/bin/bash
# fence_diskbeat call tracer (pacemaker-fence.sh): logs the call, runs the real agent.
log="$W/agent-trace.log"
t0=\$(date +%s.%N)
if [ \$# -eq 0 ]; then
  in=\$(cat)
  printf '%s\n' "\$in" | (exec -a fence_diskbeat "$DISKBEAT")
  rc=\$?
else
  in="argv: \$*"
  (exec -a fence_diskbeat "$DISKBEAT" "\$@")
  rc=\$?
fi
t1=\$(date +%s.%N)
{ printf '%s pid %s ppid %s (%s) exit %s in %.3f s: ' "\$(date +%T.%3N)" "\$\$" "\$PPID" "\$(cat /proc/\$PPID/comm 2>/dev/null)" "\$rc" "\$(echo "\$t1 - \$t0" | bc)"
  printf '%s' "\$in" | tr '\n' ' '; echo; } >>"\$log"
exit \$rc
EOF
  install -m 755 "$W/fence_diskbeat.trace" "$AGENT_LINK" && AGENT_CREATED=1
  install -m 666 /dev/null "$W/agent-trace.log" # pacemaker-controld runs agents as hacluster
else
  ln -s "$DISKBEAT" "$AGENT_LINK" && AGENT_CREATED=1
fi
echo action=metadata | "$AGENT_LINK" >"$W/meta.xml" 2>"$W/meta.err" || die "fence_diskbeat metadata failed: $(cat "$W/meta.err")"
if [ -f /usr/share/cluster/relaxng/metadata.rng ]; then
  xmllint --noout --relaxng /usr/share/cluster/relaxng/metadata.rng "$W/meta.xml" 2>"$W/xmllint.err" &&
    ok "metadata validates against fence-agents' metadata.rng" ||
    fail "metadata rejected by metadata.rng: $(cat "$W/xmllint.err")"
fi

# ---- heartbeat disk and diskbeat daemons ----------------------------------------------------------
truncate -s 32M "$W/hb.img"
LOOP=$(losetup --find --show --direct-io=on --sector-size 512 "$W/hb.img") || die "losetup failed"
say "heartbeat disk $LOOP"
"$DISKBEAT" mkfs "$LOOP" --slots 4 --timeout 4s --cluster dbpcmk >"$W/mkfs.log" 2>&1 ||
  die "mkfs failed: $(tail -5 "$W/mkfs.log")"
say "mkfs done"

# h2's fence action: power off cluster node h2 (SIGKILL every process in its network namespace,
# which holds its corosync, pacemakerd and the pacemaker daemons), and log it.
cat >"$W/poweroff-h2.sh" <<EOF
#!/bin/sh
echo "\$(date +%T.%N) poweroff-h2: reason: \$DISKBEAT_FENCE_REASON" >>"$W/poweroff-h2.log"
pids=\$(ip netns pids $NS2)
echo "\$(date +%T.%N) poweroff-h2: kill -9 \$pids" >>"$W/poweroff-h2.log"
[ -n "\$pids" ] && kill -9 \$pids
exit 0
EOF
chmod 755 "$W/poweroff-h2.sh"

start_daemon() { # name slot fence-action
  "$DISKBEAT" daemon --device "$LOOP" --slot "$2" --name "$1" --fence-action "$3" --no-mlock \
    --socket "$W/$1.sock" >"$W/$1.diskbeat.log" 2>&1 &
  DAEMON_PIDS+=($!)
}
start_daemon h1 0 log-only
start_daemon h2 1 "exec:$W/poweroff-h2.sh"
agent() { printf '%s\n' "$@" "devices=$LOOP" | "$AGENT_LINK"; }
for _ in $(seq 150); do
  [ "$(agent action=list-status 2>/dev/null)" = "$(printf 'h1,,ON\nh2,,ON')" ] && break
  sleep 0.2
done
[ "$(agent action=list-status 2>/dev/null)" = "$(printf 'h1,,ON\nh2,,ON')" ] ||
  die "diskbeat daemons not both ON: $(agent action=list-status 2>&1)"
ok "diskbeat daemons h1, h2 live (fence_diskbeat list-status: $(agent action=list-status | tr '\n' ' '))"

# ---- two cluster nodes ----------------------------------------------------------------------------
ip netns add "$NS1" && ip netns add "$NS2" || die "ip netns add failed"
ip link add dbpk$ID-a type veth peer name dbpk$ID-b || die "veth failed"
ip link set dbpk$ID-a netns "$NS1"
ip link set dbpk$ID-b netns "$NS2"
ip -n "$NS1" addr add $IP1/24 dev dbpk$ID-a
ip -n "$NS2" addr add $IP2/24 dev dbpk$ID-b
for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; done
ip -n "$NS1" link set dbpk$ID-a up
ip -n "$NS2" link set dbpk$ID-b up

corosync-keygen -l -k "$W/authkey" >/dev/null 2>&1 || die "corosync-keygen failed"
cat >"$W/corosync.conf" <<EOF
totem {
    version: 2
    cluster_name: dbpcmk
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    token: 3000
}
logging {
    to_stderr: no
    to_syslog: no
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    timestamp: on
}
quorum {
    provider: corosync_votequorum
    two_node: 1
}
nodelist {
    node {
        name: h1
        nodeid: 1
        ring0_addr: $IP1
    }
    node {
        name: h2
        nodeid: 2
        ring0_addr: $IP2
    }
}
EOF

# The CIB both nodes start with: fencing on, and a 2 s dc-deadtime instead of the default 20 s
# (the controller waits that long for a DC before its first election). Written offline
# (CIB_file), no .sig: pacemaker-based accepts it with a warning.
cibadmin --empty >"$W/cib.xml"
CIB_file="$W/cib.xml" crm_attribute -t crm_config -n dc-deadtime -v 2s || die "offline crm_attribute failed"
CIB_file="$W/cib.xml" crm_attribute -t crm_config -n stonith-enabled -v true || die "offline crm_attribute failed"

for n in h1 h2; do
  R="$W/$n"
  mkdir -p "$R/etc-corosync" "$R/lib-corosync" "$R/log-corosync" "$R/log-pacemaker" "$R/lib-pacemaker"
  cp "$W/corosync.conf" "$R/etc-corosync/corosync.conf"
  install -m 400 "$W/authkey" "$R/etc-corosync/authkey"
  for d in cib pengine blackbox cores; do install -d -o hacluster -g haclient -m 750 "$R/lib-pacemaker/$d"; done
  install -o hacluster -g haclient -m 600 "$W/cib.xml" "$R/lib-pacemaker/cib/cib.xml"
  chown hacluster:haclient "$R/log-pacemaker"
  # The node: its own mount namespace (ip netns exec makes one) with private dirs, then
  # corosync, then pacemakerd in the foreground (exec: its pid is the node's, for nsenter).
  cat >"$R/boot.sh" <<EOF
#!/bin/bash
set -e
echo \$\$ >"$R/pid"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock /run/resource-agents /run/fence-agents
mount --bind "$R/etc-corosync" /etc/corosync
mount --bind "$R/lib-corosync" /var/lib/corosync
mount --bind "$R/log-corosync" /var/log/corosync
mount --bind "$R/log-pacemaker" /var/log/pacemaker
mount --bind "$R/lib-pacemaker" /var/lib/pacemaker
corosync
for i in \$(seq 100); do corosync-cfgtool -s >/dev/null 2>&1 && break; sleep 0.1; done
export PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none PCMK_logpriority=crit
exec pacemakerd
EOF
  chmod 755 "$R/boot.sh"
done
start_node() { # n ns
  setsid ip netns exec "$2" "$W/$1/boot.sh" </dev/null >"$W/$1/boot.log" 2>&1 &
  disown
}
on() { # node command...: run in the node's network and mount namespaces
  local n=$1
  shift
  nsenter -t "$(cat "$W/$n/pid")" -n -m -- "$@"
}
start_node h1 "$NS1"
start_node h2 "$NS2"
for _ in $(seq 50); do [ -s "$W/h1/pid" ] && [ -s "$W/h2/pid" ] && break; sleep 0.1; done
[ -s "$W/h1/pid" ] && [ -s "$W/h2/pid" ] || die "nodes did not boot: $(cat "$W"/h?/boot.log)"
say "nodes booting: h1 pid $(cat "$W/h1/pid"), h2 pid $(cat "$W/h2/pid")"

# Both online with a DC.
up=0
for _ in $(seq 120); do
  if on h1 crm_mon -1 2>/dev/null | grep -q 'Online: \[ h1 h2 \]' &&
    on h1 crm_mon -1 2>/dev/null | grep -q 'Current DC: h[12]'; then
    up=1
    break
  fi
  sleep 0.5
done
[ "$up" = 1 ] || die "cluster not up: $(on h1 crm_mon -1 2>&1 | head -20; tail -20 "$W"/h1/log-pacemaker/pacemaker.log)"
ok "cluster up: $(on h1 crm_mon -1 | grep -E 'Current DC|Online')"
ok "quorum: $(on h1 corosync-quorumtool -s | grep -E 'Quorate|Flags' | tr -s ' ' | tr '\n' ' ')"

# ---- the stonith device ---------------------------------------------------------------------------
[ "$(on h1 crm_attribute -t crm_config -n stonith-enabled -G -q 2>/dev/null)" = true ] ||
  fail "stonith-enabled is not true in the live CIB"
HOSTLIST_NV="<nvpair id=\"diskbeat-fence-hosts\" name=\"pcmk_host_list\" value=\"h1 h2\"/>"
[ "$HOSTCHECK" = dynamic ] && HOSTLIST_NV=""
on h1 cibadmin -C -o resources -X "
<primitive id=\"diskbeat-fence\" class=\"stonith\" type=\"fence_diskbeat\">
  <instance_attributes id=\"diskbeat-fence-ia\">
    <nvpair id=\"diskbeat-fence-devices\" name=\"devices\" value=\"$LOOP\"/>
    $HOSTLIST_NV
    <nvpair id=\"diskbeat-fence-off-timeout\" name=\"pcmk_off_timeout\" value=\"30s\"/>
    <nvpair id=\"diskbeat-fence-reboot-timeout\" name=\"pcmk_reboot_timeout\" value=\"30s\"/>
  </instance_attributes>
  <operations>
    <op id=\"diskbeat-fence-monitor\" name=\"monitor\" interval=\"10s\"/>
  </operations>
</primitive>" || die "cibadmin -C failed"
ok "stonith primitive diskbeat-fence in the CIB"
# The README's pcs commands, when pcs is installed: offline, on a copy of the live CIB.
if command -v pcs >/dev/null; then
  on h1 cibadmin -Q >"$W/pcs-cib.xml"
  on h1 cibadmin -Q >/dev/null && pcs -f "$W/pcs-cib.xml" stonith create pcs-diskbeat-fence fence_diskbeat devices="$LOOP" pcmk_host_list="h1 h2" >"$W/pcs.log" 2>&1 &&
    pcs -f "$W/pcs-cib.xml" stonith update pcs-diskbeat-fence pcmk_off_timeout=120s pcmk_reboot_timeout=120s >>"$W/pcs.log" 2>&1 &&
    ok "pcs -f: stonith create/update fence_diskbeat as in the README: accepted" ||
    fail "pcs -f stonith create/update: $(cat "$W/pcs.log")"
fi
on h1 crm_verify -L -V >"$W/crm_verify.log" 2>&1 && ok "crm_verify -L: no errors" ||
  fail "crm_verify -L: $(cat "$W/crm_verify.log")"

started=0
for _ in $(seq 60); do
  if on h1 crm_mon -1 2>/dev/null | grep -Eq 'diskbeat-fence.*Started h[12]'; then started=1; break; fi
  sleep 0.5
done
[ "$started" = 1 ] || fail "diskbeat-fence not started: $(on h1 crm_mon -1 2>&1)"
[ "$started" = 1 ] && ok "$(on h1 crm_mon -1 | grep diskbeat-fence | sed 's/^ *//')"
sleep 1

# ---- the fencer's view --------------------------------------------------------------------------
step() { # label command...: run on h1, record output and exit status
  local label=$1
  shift
  local out rc
  out=$(on h1 "$@" 2>&1)
  rc=$?
  printf '\n$ %s   [on h1, exit %s]\n%s\n' "$*" "$rc" "$out" >>"$W/transcript.txt"
  printf '%s' "$out" >"$W/out.$label"
  return $rc
}
step meta stonith_admin --metadata -a fence_diskbeat && grep -q 'resource-agent name="fence_diskbeat"' "$W/out.meta" &&
  ok "stonith_admin --metadata -a fence_diskbeat" || fail "stonith_admin --metadata: $(cat "$W/out.meta")"
step validate stonith_admin --validate -a fence_diskbeat -o devices="$LOOP" -o pcmk_host_list="h1 h2" &&
  ok "stonith_admin --validate: $(tr '\n' ' ' <"$W/out.validate")" || fail "stonith_admin --validate: $(cat "$W/out.validate")"
step registered stonith_admin --list-registered && grep -q diskbeat-fence "$W/out.registered" &&
  ok "--list-registered: $(tr '\n' ' ' <"$W/out.registered")" || fail "--list-registered: $(cat "$W/out.registered")"
step list stonith_admin --list h2 && grep -q diskbeat-fence "$W/out.list" &&
  ok "--list h2: $(tr '\n' ' ' <"$W/out.list")" || fail "--list h2: $(cat "$W/out.list")"
step targets stonith_admin --list-targets diskbeat-fence &&
  ok "--list-targets diskbeat-fence: $(tr '\n' ' ' <"$W/out.targets")" || fail "--list-targets: $(cat "$W/out.targets")"
step query stonith_admin --query diskbeat-fence &&
  ok "--query diskbeat-fence: $(tr '\n' ' ' <"$W/out.query")" || fail "--query: $(cat "$W/out.query")"

# ---- fence h2 -------------------------------------------------------------------------------------
F0=$(date +%s.%N)
case "$SCENARIO" in
  fence | reboot)
    say "stonith_admin --$SCENARIO h2 (from h1)"
    step fence stonith_admin --"$SCENARIO" h2 --timeout 60
    frc=$?
    F1=$(date +%s.%N)
    FENCE_S=$(echo "$F1 - $F0" | bc)
    if [ "$frc" = 0 ]; then
      ok "stonith_admin --$SCENARIO h2: exit 0 after ${FENCE_S} s"
    else
      fail "stonith_admin --$SCENARIO h2: exit $frc after ${FENCE_S} s: $(cat "$W/out.fence")"
    fi
    WANT_OP="turning off"
    [ "$SCENARIO" = reboot ] && WANT_OP="reboot"
    ;;
  crash)
    # h2 "crashes" as a cluster member: its corosync dies (SIGKILL); its diskbeat daemon still
    # runs. h1 loses h2, the scheduler wants h2 fenced (stonith-action=reboot by default), and the
    # fencer runs fence_diskbeat reboot on h1.
    cpid=$(on h2 cat /run/corosync.pid 2>/dev/null || pgrep -x corosync | while read -r p; do
      [ "$(ip netns identify "$p")" = "$NS2" ] && echo "$p"; done)
    say "crash: kill -9 h2's corosync (pid $cpid)"
    kill -9 $cpid
    done_=0
    for _ in $(seq 120); do
      if on h1 stonith_admin --history h2 2>/dev/null | grep -q 'successful'; then done_=1; break; fi
      sleep 0.5
    done
    F1=$(date +%s.%N)
    FENCE_S=$(echo "$F1 - $F0" | bc)
    [ "$done_" = 1 ] && ok "the cluster fenced h2 by itself ${FENCE_S} s after its corosync died" ||
      fail "no successful fencing of h2 within ${FENCE_S} s of its corosync dying"
    WANT_OP="reboot"
    ;;
  refused)
    say "stonith_admin --fence h1 (h1's fence action is log-only: must fail)"
    step fence stonith_admin --fence h1 --timeout 40
    frc=$?
    F1=$(date +%s.%N)
    FENCE_S=$(echo "$F1 - $F0" | bc)
    if [ "$frc" != 0 ]; then
      ok "stonith_admin --fence h1 failed as it must: exit $frc after ${FENCE_S} s: $(tr '\n' ' ' <"$W/out.fence")"
    else
      fail "stonith_admin --fence h1 succeeded, but h1's fence action stops nothing"
    fi
    step history stonith_admin --history h1 --verbose
    grep -q 'turning off of h1 failed' "$W/out.history" && ok "--history h1: $(tr '\n' ' ' <"$W/out.history")" ||
      fail "--history h1 does not show a failed off: $(cat "$W/out.history")"
    n_off=$(grep -c 'action=off .*exit 1\|exit 1 .*action=off' "$W/agent-trace.log" 2>/dev/null)
    [ "$TRACE" = 1 ] && say "agent off calls that exited 1: $n_off"
    grep -h 'NOT proven off' "$W"/h?/log-pacemaker/pacemaker.log | grep -q 'fenced_log_only' &&
      ok "fencer log: $(grep -h 'NOT proven off' "$W"/h?/log-pacemaker/pacemaker.log | grep -m1 log_op_output | sed 's/.*error output \[ //; s/ \]$//')" ||
      fail "no 'NOT proven off: fenced_log_only' in the fencer's log"
    grep -h "Operation 'off'.*targeting h1" "$W"/h?/log-pacemaker/pacemaker.log | sed 's/.*(log_async_result)[[:space:]]*//' >"$W/fence-ops.txt"
    say "fencer results: $(tr '\n' ' ' <"$W/fence-ops.txt")"
    step crm_mon crm_mon -1 -m 3
    ;;
esac
if [ "$SCENARIO" != refused ]; then
step history stonith_admin --history h2 --verbose
grep -q "$WANT_OP of h2 successful" "$W/out.history" && ok "--history h2: $(tr '\n' ' ' <"$W/out.history")" ||
  fail "--history h2 shows no successful '$WANT_OP': $(cat "$W/out.history")"

# h2's diskbeat record: fenced, acknowledging the fence request that the agent wrote; h2's fence
# action ran (the poweroff of node h2).
st=$(agent action=status plug=h2 2>/dev/null)
src=$?
[ "$src" = 2 ] && [ "$st" = "Status: OFF" ] && ok "fence_diskbeat status h2: '$st' (exit 2)" ||
  fail "fence_diskbeat status h2: '$st' exit $src"
"$DISKBEAT" inspect "$LOOP" --slot 1 --json >"$W/inspect-h2.json" 2>/dev/null
# (Request ids are 64-bit: compared as text, jq would round them to doubles.)
state=$(jq -r '.slots[0].state' "$W/inspect-h2.json")
ack=$(grep -oE '"mailbox_ack": *[0-9]+' "$W/inspect-h2.json" | grep -oE '[0-9]+$')
req=$(grep -oE '"request_id": *[0-9]+' "$W/inspect-h2.json" | grep -oE '[0-9]+$')
cmd=$(jq -r '.mailbox.command' "$W/inspect-h2.json")
sender=$(jq -r '.mailbox.sender_name' "$W/inspect-h2.json")
rec="state $state, mailbox $cmd request $req from '$sender', acknowledged $ack, flags $(jq -c '.slots[0].flags' "$W/inspect-h2.json")"
[ "$state" = fenced ] && [ "$cmd" = fence ] && [ -n "$req" ] && [ "$ack" = "$req" ] &&
  ok "h2's record: fenced, acknowledging the fence request: $rec" ||
  fail "h2's record does not acknowledge a fence request as fenced: $rec"
grep -q 'fence command succeeded' "$W/h2.diskbeat.log" && ok "h2 daemon: $(grep -m1 'SELF-FENCING' "$W/h2.diskbeat.log" | sed 's/.*SELF-FENCING/SELF-FENCING/')" ||
  fail "h2 daemon log has no 'fence command succeeded'"
[ -s "$W/poweroff-h2.log" ] && ok "poweroff-h2 ran: $(tr '\n' ' ' <"$W/poweroff-h2.log")" || fail "poweroff-h2 did not run"
left=$(ip netns pids "$NS2" | wc -l)
[ "$left" = 0 ] && ok "no process left in h2's namespace (its corosync and pacemaker are gone)" ||
  fail "$left processes left in h2's namespace"

# h1 sees h2 cleanly OFFLINE (not UNCLEAN), with no fencing pending or failed.
for _ in $(seq 40); do
  on h1 crm_mon -1 2>/dev/null | grep -Eq 'OFFLINE: \[ h2 \]' && break
  sleep 0.5
done
sleep 1
step crm_mon crm_mon -1 -m 3
grep -Eq 'OFFLINE: \[ h2 \]' "$W/out.crm_mon" && ok "h1 sees h2 OFFLINE" ||
  fail "h1 does not see h2 cleanly OFFLINE: $(cat "$W/out.crm_mon")"
grep -q 'UNCLEAN' "$W/out.crm_mon" && fail "crm_mon shows an UNCLEAN node"
step history_all stonith_admin --history '*' --verbose
grep -Eq 'failed|pending' "$W/out.history_all" && fail "failed or pending fencing in the history: $(cat "$W/out.history_all")"
n_ok=$(grep -c 'successful' "$W/out.history_all")
say "fencing history: $n_ok successful operation(s): $(tr '\n' ' ' <"$W/out.history_all")"
fi # not refused

# What the fencer ran: every fence_diskbeat action, with the node, the exit status and stderr.
grep -hoE 'pacemaker-fenced +\[[0-9]+\] .*fence_diskbeat_[a-z-]+_[0-9]+of[0-9]+\[[0-9]+\] .*' "$W"/h?/log-pacemaker/pacemaker.log |
  sed 's/^pacemaker-fenced *//' >"$W/agent-runs.txt"
CALLED=$(grep -hoE 'fence_diskbeat_[a-z-]+_[0-9]+of[0-9]+\[[0-9]+\]' "$W"/h?/log-pacemaker/pacemaker.log | sort -u |
  sed -E 's/fence_diskbeat_([a-z-]+)_.*/\1/' | sort | uniq -c | awk '{printf "%s x%s, ", $2, $1}')
say "actions the fencers ran (both nodes): ${CALLED%, }"
grep -hE "Operation '[a-z]+' .*targeting h[12] using diskbeat-fence returned" "$W"/h?/log-pacemaker/pacemaker.log >"$W/fence-ops.txt"
[ -s "$W/fence-ops.txt" ] && say "fencer: $(sed 's/.*(log_async_result)[[:space:]]*//' "$W/fence-ops.txt" | tr '\n' ' ')"
grep -hE '(error|warning):' "$W"/h?/log-pacemaker/pacemaker.log | grep -iE 'fence_diskbeat|diskbeat-fence|stonith|fenc' |
  sed 's/^[A-Z][a-z][a-z] [0-9][0-9] //' >"$W/fence-warnings.txt"

# ---- result ---------------------------------------------------------------------------------------
echo
echo "===== transcript (commands on h1; --metadata cut) ====="
awk '/^\$ stonith_admin --metadata/{m=1; print; next} m && /^\$ /{m=0} m && NR>0 {if (++k<=3) print; else if (k==4) print "  ..."; next} {print}' "$W/transcript.txt"
echo
echo "===== fence_diskbeat runs logged by the fencers (stderr is logged as 'error output' / warning) ====="
sed -n 1,30p "$W/agent-runs.txt"
echo
if [ "$TRACE" = 1 ]; then
  echo "===== every fence_diskbeat call (tracer; caller = parent's comm: pacemaker-fence(d), pacemaker-contr(old), stonith_admin, pacemaker-fence.sh) ====="
  cat "$W/agent-trace.log"
  echo
  CALLS=$(grep 'pacemaker-fence' "$W/agent-trace.log" | grep -oE 'action=[a-z-]+' | sort | uniq -c | awk '{printf "%s x%s, ", $2, $1}')
  say "the fencers called: ${CALLS%, }"
  echo
fi
echo "===== warnings and errors about fencing in the pacemaker logs ====="
sort -u "$W/fence-warnings.txt" | sed -n 1,25p
echo
echo "===== h2 diskbeat daemon log (tail) ====="
tail -6 "$W/h2.diskbeat.log"
echo
say "total $(echo "$(date +%s.%N) - $T0" | bc) s (fence $FENCE_S s)"
if [ "${#FAILS[@]}" = 0 ]; then
  if [ "$SCENARIO" = refused ]; then
    echo "PASS: fence_diskbeat refused to confirm h1 (log-only fence action) and Pacemaker reported the fencing as failed (host check $HOSTCHECK; ${#EVIDENCE[@]} checks)"
  else
    echo "PASS: Pacemaker's fencer fenced h2 with fence_diskbeat (scenario $SCENARIO, host check $HOSTCHECK; ${#EVIDENCE[@]} checks)"
  fi
  exit 0
else
  echo "FAIL: ${#FAILS[@]} check(s) failed (scenario $SCENARIO, host check $HOSTCHECK):"
  printf '  - %s\n' "${FAILS[@]}"
  exit 1
fi
