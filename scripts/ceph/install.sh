#!/usr/bin/env bash
# Installs the Ceph daemons faultline's S3 store tests run against (mon, osd, radosgw, CLI):
# the `ceph` group of scripts/test-deps.sh, which holds the package list.
#
# Usage: scripts/ceph/install.sh
#   Idempotent; needs root and Debian apt. Silent on success; on failure prints apt's output
#   to stderr and exits non-zero. Runs `apt-get update` only if the packages are unknown to apt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/../test-deps.sh" --install ceph
"$here/../test-deps.sh" --check ceph >&2
