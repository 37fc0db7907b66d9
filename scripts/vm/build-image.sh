#!/bin/sh
# Builds the tiny guest for faultline's QEMU resume runs: a Debian kernel plus a busybox
# initramfs whose init runs native/vm-guest/workload.c on the serial console.
#
# With --programs, the initramfs also holds real programs from Debian packages (python3,
# sqlite3, xz, gcc) with their libraries and native/vm-guest/programs/ (init, inputs, the
# idle service): the guest the real-program traces are recorded in (scripts/vm/record-traces.mjs).
#
# usage: scripts/vm/build-image.sh [--programs] [OUTDIR]
#        (default OUTDIR: <repo>/.cache/vm, with --programs <repo>/.cache/vm-programs)
# output: OUTDIR/vmlinuz, OUTDIR/initrd.cpio, OUTDIR/workload, OUTDIR/image.json
# needs (Debian): linux-image-amd64 busybox-static cpio gcc libc6-dev;
#   --programs also python3.11 libpython3.11-stdlib sqlite3 xz-utils binutils
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
programs=0
if [ "${1:-}" = "--programs" ]; then programs=1; shift; fi
if [ $programs = 1 ]; then out=${1:-$repo/.cache/vm-programs}; else out=${1:-$repo/.cache/vm}; fi
src=$repo/native/vm-guest/workload.c
progs=$repo/native/vm-guest/programs

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
if [ $programs = 1 ]; then
  # Each file the programs guest needs, and the Debian package that provides it.
  for need in /usr/bin/python3.11:python3.11 /usr/lib/python3.11/json/__init__.py:libpython3.11-stdlib \
      /usr/bin/sqlite3:sqlite3 /usr/bin/xz:xz-utils /usr/bin/gcc-12:gcc-12 \
      /usr/lib/gcc/x86_64-linux-gnu/12/cc1:cpp-12 /usr/bin/x86_64-linux-gnu-as:binutils-x86-64-linux-gnu \
      /usr/include/stdio.h:libc6-dev /usr/bin/ldd:libc-bin; do
    [ -e "${need%%:*}" ] || fail "no ${need%%:*}: apt-get install ${need#*:}"
  done
  [ -r "$progs/init.sh" ] || fail "missing $progs/init.sh"
fi

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
if [ $programs = 1 ]; then
  # Merged /usr as on the host, so every library path ldd prints exists in the guest.
  mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64" "$root/root"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  # Files and, for executables, every library they load (as ldd resolves them on the host).
  copy_with_libs() {
    for f in "$@"; do
      cp -L --parents "$f" "$root" || fail "cannot copy $f"
      for lib in $(ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]*ld-linux/ { print $1 }'); do
        [ -e "$root$lib" ] || cp -L --parents "$lib" "$root" || fail "cannot copy $lib (needed by $f)"
      done
    done
  }
  step "adding programs: python3.11, sqlite3, xz, gcc-12 (cc1, as) and their libraries"
  copy_with_libs /usr/bin/python3.11 /usr/bin/sqlite3 /usr/bin/xz /usr/bin/gcc-12 \
    /usr/lib/gcc/x86_64-linux-gnu/12/cc1 /usr/bin/x86_64-linux-gnu-as /usr/lib/python3.11/lib-dynload/*.so
  ln -s python3.11 "$root/usr/bin/python3"
  ln -s gcc-12 "$root/usr/bin/gcc"
  ln -s x86_64-linux-gnu-as "$root/usr/bin/as"
  # The standard library (its compiled __pycache__ included), without tests, GUI and packaging.
  (cd / && find usr/lib/python3.11 \( -name test -o -name tests -o -name idlelib -o -name tkinter \
      -o -name turtledemo -o -name ensurepip -o -name lib2to3 -o -name pydoc_data -o -name 'config-3.11-*' \
      -o -name lib-dynload \) -prune -o -type f ! -name '*.opt-[12].pyc' -print | cpio -pdm --quiet "$root") || fail "cannot copy the Python standard library"
  # gcc's own headers, and the system headers the compiler runs' inputs include.
  (cd / && find usr/lib/gcc/x86_64-linux-gnu/12/include -type f | cpio -pdm --quiet "$root")
  mkdir -p "$root/progs/src"
  cp "$progs"/*.sh "$progs"/*.sql "$progs"/service.py "$root/progs/"
  cp "$src" "$progs"/src/*.c "$root/progs/src/"
  for c in "$root"/progs/src/*.c; do
    # -O2 includes more of glibc's headers (its extern inlines) than -O0.
    for h in $( (gcc -M -O0 "$c"; gcc -M -O2 "$c") | tr ' \\' '\n\n' | grep '^/usr/include/' | sort -u); do cp -L --parents "$h" "$root"; done
  done
  cp "$progs/init.sh" "$root/init"
else
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
fi
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$out/initrd.cpio.tmp" || fail "cpio failed"
mv "$out/initrd.cpio.tmp" "$out/initrd.cpio"

cat >"$out/image.json" <<EOF
{"kernel": "$out/vmlinuz", "initrd": "$out/initrd.cpio", "kernelSource": "$kernel", "cmdline": "console=ttyS0 quiet loglevel=0 panic=-1", "programs": $([ $programs = 1 ] && echo true || echo false)}
EOF
step "done: $out (kernel $(du -k "$out/vmlinuz" | cut -f1) KiB, initramfs $(du -k "$out/initrd.cpio" | cut -f1) KiB)"
