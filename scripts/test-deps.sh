#!/usr/bin/env bash
# The Debian packages faultline's tests need beyond Node, gcc and make, in one list: the
# native page codec's libraries, QEMU and a guest kernel for the VM tests, the programs the
# real-program recording test copies into its guest, Ceph for the object-store tests. `npm
# test` and .ci/run run it first.
#
# Usage: scripts/test-deps.sh                 install what is missing (root, apt), or say what
#                                             is missing and how to get it (one line a group)
#        scripts/test-deps.sh --install GROUP  the same for some groups only (codec qemu programs ceph strace)
#        scripts/test-deps.sh --check GROUP    exit 1 with that line when GROUP is not installed
# Installing is silent on success; a failed apt run prints apt's output and exits non-zero.
# (npm install does not install anything: see native/Makefile.)
set -euo pipefail

declare -A PACKAGES=(
  [codec]="liblz4-dev libisal-dev"
  [qemu]="qemu-system-x86 busybox-static cpio linux-image-amd64"
  [programs]="python3.11 libpython3.11-stdlib sqlite3 xz-utils"
  [ceph]="ceph-mon ceph-osd radosgw ceph-common"
  [strace]="strace"
)
declare -A NEEDED_BY=(
  [codec]="the native page codec (the slower npm one stands in)"
  [qemu]="the QEMU tests"
  [programs]="the real-program recording test (build-image.sh --programs; gcc-12 comes with build-essential)"
  [ceph]="the object-store tests"
  [strace]="the socket test (listenUnix's system calls, in order)"
)
GROUPS_ALL=(codec qemu programs ceph strace)

installed() { [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]; }

missing_of() {
  local p out=()
  for p in ${PACKAGES[$1]}; do installed "$p" || out+=("$p"); done
  echo "${out[*]:-}"
}

line_for() { # group, missing packages
  echo "test-deps: missing $2, for ${NEEDED_BY[$1]}: apt-get install --no-install-recommends $2 (npm test as root installs them)"
}

mode=install
case "${1:-}" in
  --check) mode=check; shift ;;
  --install) shift ;;
esac
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=("${GROUPS_ALL[@]}")
for g in "${groups[@]}"; do
  [ -n "${PACKAGES[$g]:-}" ] || { echo "test-deps: unknown group '$g' (${GROUPS_ALL[*]})" >&2; exit 2; }
done
command -v dpkg-query >/dev/null || { echo "test-deps: not a Debian system: install the equivalents of ${PACKAGES[*]} yourself" >&2; exit $([ $mode = check ] && echo 1 || echo 0); }

todo=()
for g in "${groups[@]}"; do
  m=$(missing_of "$g")
  [ -z "$m" ] && continue
  if [ $mode = check ]; then line_for "$g" "$m"; exit 1; fi
  todo+=("$g")
done
[ ${#todo[@]} -gt 0 ] || exit 0
[ $mode = check ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  for g in "${todo[@]}"; do line_for "$g" "$(missing_of "$g")" >&2; done
  exit 0
fi

pkgs=()
for g in "${todo[@]}"; do read -ra m <<<"$(missing_of "$g")"; pkgs+=("${m[@]}"); done
echo "test-deps: installing ${pkgs[*]} (for ${todo[*]})" >&2
log=$(mktemp /tmp/faultline-test-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
fail() { echo "test-deps: $1 failed:" >&2; cat "$log" >&2; exit 1; }
known=1
for p in "${pkgs[@]}"; do apt-cache show "$p" >/dev/null 2>&1 || { known=0; break; }; done
[ $known = 1 ] || apt-get update >"$log" 2>&1 || fail "apt-get update"
apt-get install -y --no-install-recommends "${pkgs[@]}" >"$log" 2>&1 || fail "apt-get install ${pkgs[*]}"
