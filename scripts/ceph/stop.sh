#!/usr/bin/env bash
# Stops a cluster started by scripts/ceph/start.sh and removes its directory.
#
# Usage: scripts/ceph/stop.sh [DIR]     (default: $FAULTLINE_CEPH_DIR)
#   Kills with SIGKILL (the data is thrown away anyway) every process of that cluster: the pids
#   recorded in DIR/pids plus any process whose command line names DIR/ceph.conf (daemons,
#   a radosgw-admin left by an interrupted start). Waits until each is really gone: no
#   /proc entry, or a zombie (state Z). This VM's init reaps orphans late, so `ps` may list
#   them as <defunct> for a few seconds; they hold no memory or ports. Then removes DIR.
#   Idempotent: a missing DIR is success (stray processes naming it are still killed).
#   Refuses to remove a directory start.sh did not create (no DIR/.faultline-ceph).
# Exit: 0 when nothing of DIR is left; 1 if a process survives FAULTLINE_CEPH_STOP_TIMEOUT_S
#   (default 20) seconds; 2 on bad usage.
# Environment: FAULTLINE_CEPH_KEEP_DIR=1 kills the processes but keeps DIR (for its logs).
set -euo pipefail

DIR=${1:-${FAULTLINE_CEPH_DIR:-}}
[ -n "$DIR" ] || { echo "stop.sh: no DIR given and FAULTLINE_CEPH_DIR is not set" >&2; exit 2; }
[ ! -e "$DIR" ] || DIR=$(cd "$DIR" && pwd)
[[ $DIR == /* ]] || DIR=$PWD/$DIR
if [ -e "$DIR" ] && [ ! -e "$DIR/.faultline-ceph" ]; then
  echo "stop.sh: $DIR was not made by start.sh (no .faultline-ceph); not touching it" >&2
  exit 2
fi
TIMEOUT_S=${FAULTLINE_CEPH_STOP_TIMEOUT_S:-20}
CONF_ARG=$DIR/ceph.conf

# True while $1 is a live (not zombie) process whose command line names this cluster's config
# (guards against pid reuse).
ours() {
  local s
  s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$s" != Z ] && [ "$s" != X ] || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$CONF_ARG"
}

pids=()
if [ -f "$DIR/pids" ]; then
  while read -r _ pid; do
    [[ $pid =~ ^[0-9]+$ ]] && ours "$pid" && pids+=("$pid")
  done <"$DIR/pids"
fi
for f in /proc/[0-9]*/cmdline; do
  pid=${f#/proc/}; pid=${pid%/cmdline}
  [ "$pid" != $$ ] && ours "$pid" && [[ " ${pids[*]} " != *" $pid "* ]] && pids+=("$pid")
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done

end=$((SECONDS + TIMEOUT_S))
for pid in "${pids[@]}"; do
  while ours "$pid"; do
    if [ $SECONDS -ge $end ]; then
      echo "stop.sh: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80)) still alive after ${TIMEOUT_S}s" >&2
      exit 1
    fi
    sleep 0.02
  done
done

[ "${FAULTLINE_CEPH_KEEP_DIR:-0}" = 1 ] || rm -rf "$DIR"
