#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# The UAPI header test of <linux/gmemuf.h>, for every architecture of the
# tree. The kernel's own (usr/include/Makefile, CONFIG_UAPI_HEADER_TEST)
# compiles each installed header alone, twice included, as C90 and C++98
# with -Werror, and runs headers_check.pl on it, for the one architecture
# it builds. This does the same against the UAPI headers of each
# architecture (the asm/ headers an architecture takes from asm-generic/
# made as headers_install makes them), and checks that the layout of every
# struct and the number, type, direction and size of every ioctl are the
# same everywhere, and for i386, the compat ABI of x86-64. The x86
# headers_install of the build (make headers) runs headers_install.sh on
# it, which checks the rest (the SPDX note, no CONFIG_ leak). The host
# compiler stands in for each architecture's: what is checked is what the
# headers say.
#
#   uapi-check.sh <patched kernel tree>
set -euo pipefail

tree=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A struct's size and a member's offset, or an ioctl's parts, as expected:
# an array of negative size fails the build otherwise.
cat >"$tmp/check.c" <<'C'
#include <linux/gmemuf.h>
#include <linux/gmemuf.h>

#define CHECK(name, cond) typedef char name[(cond) ? 1 : -1]
#define OFF(s, m) __builtin_offsetof(struct s, m)

CHECK(range_size, sizeof(struct gmemuf_range) == 32);
CHECK(range_len, OFF(gmemuf_range, len) == 8);
CHECK(range_flags, OFF(gmemuf_range, flags) == 16);
CHECK(range_done, OFF(gmemuf_range, done) == 24);
CHECK(bitmap_size, sizeof(struct gmemuf_bitmap) == 32);
CHECK(bitmap_bitmap, OFF(gmemuf_bitmap, bitmap) == 16);
CHECK(bitmap_missing, OFF(gmemuf_bitmap, missing) == 24);
CHECK(fault_size, sizeof(struct gmemuf_fault) == 16);
CHECK(fault_flags, OFF(gmemuf_fault, flags) == 8);
CHECK(fault_reserved, OFF(gmemuf_fault, reserved) == 12);
CHECK(fetch_size, sizeof(struct gmemuf_fetch) == 16);
CHECK(fetch_nr, OFF(gmemuf_fetch, nr) == 8);
CHECK(fetch_flags, OFF(gmemuf_fetch, flags) == 12);

#define IOC(name, ioc, dir, nr, size) \
	CHECK(ioc_##name##_type, _IOC_TYPE(ioc) == 0xAE); \
	CHECK(ioc_##name##_nr, _IOC_NR(ioc) == (nr)); \
	CHECK(ioc_##name##_dir, _IOC_DIR(ioc) == (dir)); \
	CHECK(ioc_##name##_size, _IOC_SIZE(ioc) == (size))

IOC(arm, GMEMUF_IOC_ARM, _IOC_READ | _IOC_WRITE, 0xf0, 32);
IOC(disarm, GMEMUF_IOC_DISARM, _IOC_READ | _IOC_WRITE, 0xf1, 32);
IOC(zero, GMEMUF_IOC_ZERO, _IOC_READ | _IOC_WRITE, 0xf2, 32);
IOC(wake, GMEMUF_IOC_WAKE, _IOC_READ | _IOC_WRITE, 0xf3, 32);
IOC(get_bitmap, GMEMUF_IOC_GET_BITMAP, _IOC_READ | _IOC_WRITE, 0xf4, 32);
IOC(handler, GMEMUF_IOC_HANDLER, _IOC_NONE, 0xf5, 0);
IOC(fetch, GMEMUF_CMD_FETCH, _IOC_READ | _IOC_WRITE, 0xf8, 16);
CHECK(size_max, GMEMUF_SIZE_MAX == 1ULL << 45);
CHECK(fetch_max, GMEMUF_FETCH_MAX == 1024);
CHECK(features, GMEMUF_FEATURE_READ == 1ULL << 5);
C

# As the kernel's test: its warnings, and the define headers_install
# leaves in (without it <linux/types.h> warns of uninstalled headers).
cflags="-fsyntax-only -Wall -Werror -D__EXPORTED_HEADERS__ -nostdinc"
perl "$tree/usr/include/headers_check.pl" "$tree/include/uapi" \
	"$tree/include/uapi/linux/gmemuf.h"
generic=$(sed -n 's/^mandatory-y += //p' "$tree/include/uapi/asm-generic/Kbuild")
n=0
for dir in "$tree"/arch/*/include/uapi; do
	arch=${dir#"$tree"/arch/}
	arch=${arch%%/*}
	# UML has no UAPI of its own (see asm-generic/Kbuild).
	[ "$arch" = um ] && continue
	inc=$tmp/$arch/asm
	mkdir -p "$inc"
	for h in $generic; do
		[ -e "$dir/asm/$h" ] || echo "#include <asm-generic/$h>" >"$inc/$h"
	done
	# shellcheck disable=SC2086
	if ! gcc $cflags -std=c90 -I"$tmp/$arch" -I"$dir" \
		-I"$tree/include/uapi" "$tmp/check.c" 2>"$tmp/err" ||
	   ! g++ $cflags -std=c++98 -I"$tmp/$arch" -I"$dir" \
		-I"$tree/include/uapi" -x c++ "$tmp/check.c" 2>"$tmp/err"; then
		cat "$tmp/err" >&2
		echo "uapi-check: <linux/gmemuf.h> fails for $arch" >&2
		exit 1
	fi
	n=$((n + 1))
done
[ "$n" -ge 20 ] || { echo "uapi-check: only $n architectures" >&2; exit 1; }
# 32-bit x86 as well, the compat ABI of x86-64: -m32 needs no libc here.
# shellcheck disable=SC2086
gcc -m32 $cflags -std=c90 -I"$tmp/x86" -I"$tree/arch/x86/include/uapi" \
	-I"$tree/include/uapi" "$tmp/check.c" ||
	{ echo "uapi-check: <linux/gmemuf.h> fails for i386" >&2; exit 1; }
echo "uapi-check: <linux/gmemuf.h> alone, c90, same layout and ioctls on $n architectures and i386"
