#!/bin/sh
# Builds the tiny guest for faultline's QEMU resume runs: a Debian kernel plus a busybox
# initramfs whose init runs native/vm-guest/workload.c on the serial console.
#
# usage: scripts/vm/build-image.sh [OUTDIR]     (default: <repo>/.cache/vm)
# output: OUTDIR/vmlinuz, OUTDIR/initrd.cpio, OUTDIR/workload, OUTDIR/image.json
# needs (Debian): linux-image-amd64 busybox-static cpio gcc libc6-dev
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/.cache/vm}
src=$repo/native/vm-guest/workload.c

fail() { echo "build-image: $*" >&2; exit 1; }
step() { echo "build-image: $*"; }

# Inputs: name the package that provides whatever is missing.
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] && [ -r "$kernel" ] || fail "no readable /boot/vmlinuz-*: apt-get install linux-image-amd64"
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list 2>/dev/null | grep -qx sh \
  || fail "no $busybox: apt-get install busybox-static"
# The guest has no libc: a dynamically linked busybox (package busybox) would not start.
if command -v file >/dev/null 2>&1 && file -L "$busybox" | grep -q dynamically; then
  fail "$busybox is dynamically linked: apt-get install busybox-static"
fi
command -v cpio >/dev/null 2>&1 || fail "no cpio: apt-get install cpio"
command -v gcc >/dev/null 2>&1 || fail "no gcc: apt-get install gcc"
[ -r "$src" ] || fail "missing $src"
[ -r /usr/lib/x86_64-linux-gnu/libc.a ] || fail "no static libc (libc.a): apt-get install libc6-dev"

mkdir -p "$out"

# Workload: rebuilt only when its source is newer.
if [ ! -x "$out/workload" ] || [ "$src" -nt "$out/workload" ]; then
  step "compiling $src"
  gcc -O2 -static -Wall -Wextra -o "$out/workload.tmp" "$src" || fail "gcc failed on $src"
  mv "$out/workload.tmp" "$out/workload"
else
  step "workload up to date"
fi

# Kernel: a copy, so the image directory is self-contained.
if ! cmp -s "$kernel" "$out/vmlinuz"; then
  step "copying kernel $kernel"
  cp "$kernel" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
else
  step "kernel up to date ($kernel)"
fi

# Initramfs: rebuilt from scratch every time (a few MB, well under a second).
step "building initramfs"
root=$(mktemp -d "${TMPDIR:-/tmp}/fl-vm-root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
cp "$out/workload" "$root/bin/workload"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# Guest init: mount the basics, run the workload on the serial console, power off after it.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "FAULTLINE-BOOTED $(cut -d' ' -f1 /proc/uptime)"
/bin/workload </dev/ttyS0 >/dev/ttyS0 2>&1
echo "FAULTLINE-EXIT $?"
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$out/initrd.cpio.tmp" || fail "cpio failed"
mv "$out/initrd.cpio.tmp" "$out/initrd.cpio"

cat >"$out/image.json" <<EOF
{"kernel": "$out/vmlinuz", "initrd": "$out/initrd.cpio", "kernelSource": "$kernel", "cmdline": "console=ttyS0 quiet loglevel=0 panic=-1"}
EOF
step "done: $out (kernel $(du -k "$out/vmlinuz" | cut -f1) KiB, initramfs $(du -k "$out/initrd.cpio" | cut -f1) KiB)"
