#!/bin/busybox sh
# Init of the programs guest (scripts/vm/build-image.sh --programs): real Debian programs,
# run one at a time on request from the serial console, so a host can snapshot the guest idle
# and record the page faults of one program run after resume (scripts/vm/record-traces.mjs).
#   fl.task=boot    boot to a shell, run one command in it, print FAULTLINE-RAN boot, wait
#   (otherwise)     start the idle service, print FAULTLINE-READY, then per console line:
#                   "run NAME" runs /progs/NAME.sh and prints FAULTLINE-RAN NAME STATUS MS
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmp /tmp
# busybox sh prefers its own applets (its xz only decompresses): the programs' scripts name
# the Debian binaries by full path.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo 2>/dev/null
now_ms() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}0"; }
echo "FAULTLINE-BOOTED $(cut -d' ' -f1 /proc/uptime)"
case " $(cat /proc/cmdline) " in
  *" fl.task=boot "*)
    # Boot to the shell: one command through it, then stay up until the host stops us.
    t0=$(now_ms)
    sh -c 'echo "shell up: $(uname -r), $(ls / | wc -l) entries in /, $(wc -l </proc/modules 2>/dev/null || echo 0) modules"'
    echo "FAULTLINE-RAN boot 0 $(( $(now_ms) - t0 ))"
    while :; do sleep 3600; done
    ;;
esac
# The idle-then-burst service: loads its data now, then waits for a burst of requests.
mkfifo /tmp/svc.in /tmp/svc.out
/usr/bin/python3 /progs/service.py /tmp/svc.in /tmp/svc.out >/tmp/service.log 2>&1 &
while [ ! -e /tmp/service.ready ]; do
  if ! kill -0 $! 2>/dev/null; then echo "FAULTLINE-ERROR service died: $(tail -n 1 /tmp/service.log)"; break; fi
  sleep 1
done
sync
echo "FAULTLINE-READY"
while read -r cmd name; do
  case "$cmd" in
    run)
      if [ -r "/progs/$name.sh" ]; then
        t0=$(now_ms)
        sh "/progs/$name.sh" >/tmp/run.log 2>&1
        rc=$?
        echo "FAULTLINE-RAN $name $rc $(( $(now_ms) - t0 ))"
        tail -n 2 /tmp/run.log
      else
        echo "FAULTLINE-ERROR no program $name"
      fi
      ;;
    "") ;;
    *) echo "FAULTLINE-ERROR unknown request: $cmd" ;;
  esac
  echo "FAULTLINE-READY"
done
