#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Pack the test VM's initramfs: static busybox, scripts/vm-init as /init, and
# the given files under /tests, with the run list as /tests/list.
#
#   initramfs.sh <out.cpio.gz> <run list> <file>...
#
# Every file must be a static binary or a script busybox can run: the VM has
# no libraries. The one exception is PERF=<path to perf> (make
# bench-profile): that binary goes in as /usr/bin/perf with the libraries
# ldd finds for it, at their own paths, dynamic loader included.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$1 list=$2
shift 2

busybox=${BUSYBOX:-/bin/busybox}
file -L "$busybox" | grep -q 'statically linked' ||
	{ echo "initramfs.sh: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,tests}
cp "$busybox" "$root/bin/busybox"
cp "$top/scripts/vm-init" "$root/init"
chmod 755 "$root/init"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>"$root/etc/passwd"
echo 'nogroup:x:65534:' >>"$root/etc/group"
cp "$list" "$root/tests/list"
for f in "$@"; do
	if file -L "$f" | grep -q 'dynamically linked'; then
		echo "initramfs.sh: $f is dynamically linked" >&2
		exit 1
	fi
	cp "$f" "$root/tests/"
done

if [ -n "${PERF:-}" ]; then
	mkdir -p "$root/usr/bin"
	cp "$PERF" "$root/usr/bin/perf"
	# "libc.so.6 => /lib/.../libc.so.6 (0x...)", and the loader's own line.
	for lib in $(ldd "$PERF" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }
					$1 ~ /^\// { print $1 }'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
fi

(cd "$root" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --quiet --owner=0:0) >"$out.tmp"
gzip -1 -n -f "$out.tmp"
mv "$out.tmp.gz" "$out"
