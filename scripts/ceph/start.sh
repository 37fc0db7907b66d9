#!/usr/bin/env bash
# Starts a throwaway single-node Ceph cluster (1 mon, 1 memstore osd, radosgw/beast) that
# serves S3 on 127.0.0.1, for faultline's object-store tests and benchmarks. No systemd.
#
# Usage: scripts/ceph/start.sh [DIR]
#   DIR  where config, mon store, osd dir, logs and pids live; must be absent or empty.
#        Default: a fresh `mktemp -d /tmp/faultline-ceph.XXXXXX`.
# Stdout (only this, one line, shell-sourceable; also written to DIR/env):
#   export AWS_ENDPOINT_URL_S3=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. AWS_REGION=us-east-1 FAULTLINE_CEPH_DIR=DIR
# Stderr: progress, and on failure one line `start.sh: <daemon> ...; see <log file>`.
# Exit: 0 once S3 answers a signed ListBuckets; non-zero on failure (daemons already started
#   are killed, DIR is kept for its logs: remove it with stop.sh DIR).
# Environment (all optional):
#   FAULTLINE_CEPH_MEM_MB=2048     memstore capacity of the osd, in MiB. Data lives in the osd's
#                                  RAM (RSS up to ~2x the data stored). Once the osd reports 95%
#                                  used (every few seconds, so a burst can overshoot) the cluster
#                                  is flagged full: reads still work, a PUT fails with HTTP 408
#                                  after ~2x FAULTLINE_CEPH_OP_TIMEOUT_S instead of hanging.
#                                  Overwritten/deleted data is freed by rgw gc within ~5 s.
#   FAULTLINE_CEPH_OP_TIMEOUT_S=10 rados op timeout inside radosgw (0 = wait forever).
#   FAULTLINE_CEPH_TIMEOUT_S=60    how long to wait for each daemon and for S3.
#   FAULTLINE_CEPH_ACCESS_KEY / FAULTLINE_CEPH_SECRET_KEY  fixed S3 keys (default: random, so
#                                  a stray gateway of another cluster rejects them).
#   FAULTLINE_CEPH_MON_PORT / FAULTLINE_CEPH_RGW_PORT  fixed ports (default: random free ones).
# Ports: mon and rgw ports are picked at random in 20000-32767 (below the ephemeral range),
#   checked free before use and checked owned by this cluster's daemons after start (so two
#   clusters never share a gateway); the osd binds its own free ports in 6800-7300.
# Stop with scripts/ceph/stop.sh DIR (kills the daemons, removes DIR).
set -euo pipefail
START_MS=$(date +%s%3N)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MEM_MB=${FAULTLINE_CEPH_MEM_MB:-2048}
OP_TIMEOUT_S=${FAULTLINE_CEPH_OP_TIMEOUT_S:-10}
TIMEOUT_S=${FAULTLINE_CEPH_TIMEOUT_S:-60}
log() { echo "start.sh: $*" >&2; }

for v in MEM_MB OP_TIMEOUT_S TIMEOUT_S; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { log "FAULTLINE_CEPH_$v must be a whole number, got '${!v}'"; exit 2; }
done
for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool osdmaptool node setsid hostname; do
  command -v "$b" >/dev/null || { log "$b not found (run scripts/ceph/install.sh)"; exit 2; }
done

if [ -n "${1:-}" ]; then
  DIR=$1
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    log "$DIR exists and is not empty (a cluster may live there: stop.sh $DIR)"; exit 2
  fi
  mkdir -p "$DIR"
else
  DIR=$(mktemp -d /tmp/faultline-ceph.XXXXXX)
fi
DIR=$(cd "$DIR" && pwd)
[[ $DIR != *[[:space:]]* ]] || { log "DIR must not contain whitespace: '$DIR'"; exit 2; }
mkdir -p "$DIR"/{mon,osd,run,log,rgw}
touch "$DIR/.faultline-ceph"     # marker: stop.sh only removes directories that carry it
: >"$DIR/pids"

ok=0
CHECK_PID=
on_exit() {
  [ "$ok" = 1 ] && return
  [ -z "$CHECK_PID" ] || kill "$CHECK_PID" 2>/dev/null || true
  FAULTLINE_CEPH_KEEP_DIR=1 "$HERE/stop.sh" "$DIR" >/dev/null 2>&1 || true
  log "daemons stopped; logs kept in $DIR (remove with: $HERE/stop.sh $DIR)"
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP

die() { log "$*"; exit 1; }

# --- ports ---------------------------------------------------------------------------
# True if anything on this machine has a TCP socket bound to local port $1 (any address).
port_in_use() {
  local hex; hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
pick_port() {
  local p _
  for _ in $(seq 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
    port_in_use "$p" || [[ " ${PICKED:-} " == *" $p "* ]] || { PICKED="${PICKED:-} $p"; echo "$p"; return; }
  done
  die "no free TCP port found in 20000-32767"
}
# True if process $1 holds the socket listening on 127.0.0.1:$2.
owns_port() {
  local pid=$1 hex inode
  hex=$(printf '0100007F:%04X' "$2")
  inode=$(awk -v a="$hex" 'NR > 1 && $2 == a && $4 == "0A" { print $10; exit }' /proc/net/tcp)
  [ -n "$inode" ] && [ -n "$(find "/proc/$pid/fd" -lname "socket:\[$inode\]" 2>/dev/null | head -n1)" ]
}
use_port() {   # use_port WHAT PORT: a port asked for in the environment must be free
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then die "$1 port '$2' is not a port number"; fi
  ! port_in_use "$2" || die "$1 port $2 is already in use"
  PICKED="${PICKED:-} $2"; echo "$2"
}
if [ -n "${FAULTLINE_CEPH_MON_PORT:-}" ]; then MON_PORT=$(use_port mon "$FAULTLINE_CEPH_MON_PORT"); else MON_PORT=$(pick_port); fi
if [ -n "${FAULTLINE_CEPH_RGW_PORT:-}" ]; then RGW_PORT=$(use_port rgw "$FAULTLINE_CEPH_RGW_PORT"); else RGW_PORT=$(pick_port); fi

# --- config --------------------------------------------------------------------------
FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
ACCESS_KEY=${FAULTLINE_CEPH_ACCESS_KEY:-FL$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)}
SECRET_KEY=${FAULTLINE_CEPH_SECRET_KEY:-$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')}
CONF=$DIR/ceph.conf
cat >"$CONF" <<CONF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$name
osd data = $DIR/osd/\$name
keyring = $DIR/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 1
mon data avail warn = 2
mon warn on insecure global id reclaim allowed = false
paxos propose interval = 0.01
paxos min wait = 0.001

[osd]
osd objectstore = memstore
memstore device bytes = $((MEM_MB * 1024 * 1024))

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw
rados osd op timeout = $OP_TIMEOUT_S
# Overwritten/deleted objects' data is freed by rgw's garbage collector, by default after 2 h:
# in a RAM-capped memstore that makes repeated PUTs fill the store.
rgw gc obj min wait = 2
rgw gc processor period = 2

[client]
objecter tick interval = 1
CONF

# --- daemons -------------------------------------------------------------------------
# launch NAME CMD...: runs CMD in the foreground of its own session, logs to DIR/log/NAME.out,
# records "NAME PID" in DIR/pids and sets LAUNCHED (setsid does not fork here: the script's
# jobs are not process-group leaders, so $! is the daemon's pid).
launch() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  LAUNCHED=$!
  disown "$LAUNCHED"     # keeps bash from reporting "Killed" when a failed start kills it
  echo "$name $LAUNCHED" >>"$DIR/pids"
}
alive() { local s; s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ] && [ "$s" != X ]; }
# wait_for WHAT LOG PID CMD...: polls CMD until it succeeds; fails if PID dies or on timeout.
wait_for() {
  local what=$1 logf=$2 pid=$3; shift 3
  local end=$((SECONDS + TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    alive "$pid" || die "$what exited; see $logf"
    [ $SECONDS -lt $end ] || die "$what not ready after ${TIMEOUT_S}s; see $logf"
    sleep 0.05
  done
}

log "cluster in $DIR (mon :$MON_PORT, rgw :$RGW_PORT, memstore ${MEM_MB} MiB)"
# The initial osdmap already holds osd.0 (saves a ~0.5-0.8 s `ceph osd new` python call); the
# mon fills in fsid and full ratios, the osd's uuid is recorded when it first boots.
printf '[global]\nfsid = %s\n[osd.0]\nhost = %s\n' "$FSID" "$(hostname -s)" >"$DIR/osdmap.conf"
osdmaptool -c "$DIR/osdmap.conf" --create-from-conf "$DIR/osdmap" >"$DIR/log/mkfs.out" 2>&1 \
  || die "osdmaptool failed; see $DIR/log/mkfs.out"
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >>"$DIR/log/mkfs.out" 2>&1 \
  || die "monmaptool failed; see $DIR/log/mkfs.out"
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --osdmap "$DIR/osdmap" >>"$DIR/log/mkfs.out" 2>&1 \
  || die "ceph-mon --mkfs failed; see $DIR/log/mkfs.out"
launch mon.a ceph-mon -c "$CONF" -f -i a
PID_MON=$LAUNCHED
wait_for "ceph-mon (port $MON_PORT)" "$DIR/log/mon.a.log" "$PID_MON" owns_port "$PID_MON" "$MON_PORT"

mkdir -p "$DIR/osd/osd.0"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$DIR/log/osd-mkfs.out" 2>&1 \
  || die "ceph-osd --mkfs failed; see $DIR/log/osd-mkfs.out"
launch osd.0 ceph-osd -c "$CONF" -f -i 0
PID_OSD=$LAUNCHED
# Start rgw only once the osd is up: a librados client whose first pool maps to no osd can
# sit until its next objecter tick before it notices the osd (seen: 4-5 s stalls).
osd_active() { grep -q 'state: booting -> active' "$DIR/log/osd.0.log"; }
wait_for "ceph-osd" "$DIR/log/osd.0.log" "$PID_OSD" osd_active

launch rgw radosgw -c "$CONF" -f -n client.rgw
PID_RGW=$LAUNCHED
ENDPOINT=http://127.0.0.1:$RGW_PORT
# Poll S3 from now on (node start-up overlaps the user creation; 403 until the user exists).
node "$HERE/s3check.mjs" "$ENDPOINT" "$ACCESS_KEY" "$SECRET_KEY" "$((TIMEOUT_S * 1000))" "$PID_RGW" \
  2>"$DIR/log/s3check.out" &
CHECK_PID=$!
timeout "$TIMEOUT_S" radosgw-admin -c "$CONF" user create --uid=faultline --display-name=faultline \
  --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >"$DIR/log/user-create.out" 2>&1 \
  || { alive "$PID_OSD" || die "ceph-osd exited; see $DIR/log/osd.0.log"; \
       die "radosgw-admin user create failed; see $DIR/log/user-create.out"; }
check_rc=0
wait "$CHECK_PID" || check_rc=$?
CHECK_PID=
if [ "$check_rc" != 0 ]; then
  alive "$PID_MON" || die "ceph-mon exited; see $DIR/log/mon.a.log"
  alive "$PID_OSD" || die "ceph-osd exited; see $DIR/log/osd.0.log"
  alive "$PID_RGW" || die "radosgw exited; see $DIR/log/client.rgw.log"
  die "radosgw: S3 not answering ($(tail -n1 "$DIR/log/s3check.out")); see $DIR/log/client.rgw.log"
fi
owns_port "$PID_RGW" "$RGW_PORT" \
  || die "radosgw: another process answers on 127.0.0.1:$RGW_PORT; see $DIR/log/client.rgw.log"

ENV_LINE="export AWS_ENDPOINT_URL_S3=$ENDPOINT AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 FAULTLINE_CEPH_DIR=$DIR"
echo "$ENV_LINE" >"$DIR/env"
ok=1
log "S3 ready at $ENDPOINT after $(( $(date +%s%3N) - START_MS )) ms"
echo "$ENV_LINE"
