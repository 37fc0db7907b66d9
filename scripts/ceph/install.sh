#!/usr/bin/env bash
# Installs the Ceph daemons faultline's S3 store tests run against (mon, osd, radosgw, CLI).
#
# Usage: scripts/ceph/install.sh
#   Idempotent; needs root and Debian apt. Silent on success; on failure prints apt's output
#   to stderr and exits non-zero. Runs `apt-get update` only if the packages are unknown to apt.
set -euo pipefail

PKGS=(ceph-mon ceph-osd radosgw ceph-common)
BINS=(ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool)

have_all() {
  local b
  for b in "${BINS[@]}"; do command -v "$b" >/dev/null 2>&1 || return 1; done
}
have_all && exit 0

log=$(mktemp /tmp/faultline-ceph-install.XXXXXX)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive

fail() { echo "install.sh: $1 failed:" >&2; cat "$log" >&2; exit 1; }

known=1
for p in "${PKGS[@]}"; do
  apt-cache show "$p" >/dev/null 2>&1 || { known=0; break; }
done
if [ "$known" = 0 ]; then
  apt-get update >"$log" 2>&1 || fail "apt-get update"
fi
apt-get install -y --no-install-recommends "${PKGS[@]}" >"$log" 2>&1 || fail "apt-get install ${PKGS[*]}"
have_all || { echo "install.sh: packages installed but one of ${BINS[*]} is missing from PATH" >&2; exit 1; }
