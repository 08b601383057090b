#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# libgmemuf's ABI and installation, on the host:
# - libgmemuf.so.0 is its SONAME, and it exports exactly the symbols of
#   libgmemuf.map, each under the version node that names it, and its
#   file name has the version of libgmemuf.h;
# - make install with DESTDIR and PREFIX puts the libraries, the headers
#   (the UAPI one too), the pkg-config file, the docs and the man pages in
#   their places: a page for every function and callback type of the
#   header (man3) and struct with kernel-doc (man3type), no other, each
#   rendered by man without a warning;
# - a program built with only the installed headers and the system's, its
#   flags from pkg-config, links and runs, shared and static; so does one
#   that brings its own ring (pkg-config --libs gives it liburing);
# - gmemuf_prep_fetch() gives the same SQE with liburing's
#   io_uring_prep_uring_cmd() (2.13 on, here a stand-in) as without;
# - the header builds for a strict consumer: -std=c99, c11, c++11, c++17
#   with -Wall -Wextra -Werror -pedantic;
# - the constants the library defines where the system headers lack them
#   have the values of the patched kernel's headers (HDR).
#
#   KERNELDOC=<the kernel tree's scripts/kernel-doc> \
#   abi.sh <build dir of the library> <HDR>
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
b=$(cd "$1" && pwd)
hdr=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "libgmemuf abi: $*" >&2; exit 1; }

so=$b/libgmemuf.so
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libgmemuf.so.0 ] || fail "SONAME is '$soname'"

# Every defined dynamic symbol, but the version nodes themselves.
nm -D --defined-only "$so" | awk '$2 != "A" { print $3 }' | sort >"$tmp/exported"
grep -q . "$tmp/exported" || fail "no symbols exported"
if grep -v '@@LIBGMEMUF_' "$tmp/exported"; then
	fail "symbols above are exported without a version"
fi
sed 's/@@.*//' "$tmp/exported" >"$tmp/names"
# Each symbol of the map under its node: name@@LIBGMEMUF_x.y.
awk '/^LIBGMEMUF_[0-9.]+ *\{/ { node = $1 }
     /^[[:space:]]*gmemuf_[a-z_]*;/ { sub(/;/, ""); print $1 "@@" node }' \
	"$top/libgmemuf/libgmemuf.map" | sort >"$tmp/mapped"
diff -u "$tmp/mapped" "$tmp/exported" >&2 ||
	fail "exports or their versions differ from libgmemuf.map"
# A released node never changes: its symbols are written down here.
v01="gmemuf_arm gmemuf_count_missing gmemuf_create gmemuf_disarm
gmemuf_handler_create gmemuf_handler_destroy gmemuf_handler_open
gmemuf_handler_populate gmemuf_handler_run gmemuf_handler_stop
gmemuf_handler_wait gmemuf_populate gmemuf_populate_batch
gmemuf_populate_range gmemuf_prefetch gmemuf_probe gmemuf_read_bitmap
gmemuf_strerror gmemuf_wake gmemuf_zero"
v02="gmemuf_handler_stats"
v03="gmemuf_handler_fd"
for n in $v01; do echo "$n@@LIBGMEMUF_0.1"; done >"$tmp/released"
for n in $v02; do echo "$n@@LIBGMEMUF_0.2"; done >>"$tmp/released"
for n in $v03; do echo "$n@@LIBGMEMUF_0.3"; done >>"$tmp/released"
sort -o "$tmp/released" "$tmp/released"
[ "$(wc -l <"$tmp/released")" = 22 ] || fail "abi.sh: the released list is not 20 + 1 + 1"
comm -23 "$tmp/released" "$tmp/exported" >"$tmp/lost"
[ ! -s "$tmp/lost" ] || fail "released symbols gone or moved: $(cat "$tmp/lost")"
major=$(sed -n 's/^#define LIBGMEMUF_VERSION_MAJOR[[:space:]]*//p' \
	"$top/libgmemuf/include/libgmemuf.h")
minor=$(sed -n 's/^#define LIBGMEMUF_VERSION_MINOR[[:space:]]*//p' \
	"$top/libgmemuf/include/libgmemuf.h")
# The newest node of the map is the header's version.
grep -q "^LIBGMEMUF_$major.$minor {" "$top/libgmemuf/libgmemuf.map" ||
	fail "libgmemuf.map has no node LIBGMEMUF_$major.$minor"
[ -e "$b/libgmemuf.so.$major.$minor.0" ] ||
	fail "no libgmemuf.so.$major.$minor.0: the version differs from the header's"
# Every function the header declares is exported, and nothing else.
sed -n '/^static/d; s/^[a-z].*[ *]\(gmemuf_[a-z_]*\)(.*/\1/p' \
	"$top/libgmemuf/include/libgmemuf.h" | sort >"$tmp/declared"
diff -u "$tmp/declared" "$tmp/names" >&2 || fail "exports differ from the header"

dest=$tmp/dest prefix=/opt/gmemuf
make --no-print-directory -C "$top" -f libgmemuf/Makefile O="${b%/libgmemuf}" \
	install DESTDIR="$dest" PREFIX="$prefix" KERNELDOC="${KERNELDOC:?}" \
	>"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log" >&2; fail "make install failed"; }
for f in lib/libgmemuf.so.$major.$minor.0 lib/libgmemuf.so.0 lib/libgmemuf.so \
	lib/libgmemuf.a lib/pkgconfig/libgmemuf.pc include/libgmemuf.h \
	include/libgmemuf/gmemuf.h share/doc/libgmemuf/libgmemuf.rst \
	share/doc/libgmemuf/uapi.rst; do
	[ -e "$dest$prefix/$f" ] || fail "make install left out $prefix/$f"
done

# The man pages: one per function the header has, inline or exported, and
# per callback type (typedef gmemuf_*_fn) in man3; per struct documented
# in man3type; nothing else.
man=$dest$prefix/share/man
h=$top/libgmemuf/include/libgmemuf.h
{
	sed -n 's/^[a-z].*[ *]\(gmemuf_[a-z_]*\)(.*/\1/p' "$h"
	sed -n 's/^typedef .*(\*\(gmemuf_[a-z_]*\))(.*/\1/p' "$h"
} | sort >"$tmp/functions"
grep -q gmemuf_prep_fetch "$tmp/functions" && grep -q gmemuf_fault_fn "$tmp/functions" ||
	fail "the header's functions were not found"
comm -23 "$tmp/names" "$tmp/functions" >"$tmp/unlisted"
[ ! -s "$tmp/unlisted" ] || fail "exported, not in the header: $(cat "$tmp/unlisted")"
(cd "$man/man3" && ls) | sed 's/\.3$//' >"$tmp/pages"
diff -u "$tmp/functions" "$tmp/pages" >&2 ||
	fail "the man3 pages differ from the header's functions"
sed -n 's/^ \* struct \(gmemuf_[a-z_]*\) - .*/\1/p' "$h" | sort >"$tmp/structs"
(cd "$man/man3type" && ls) | sed 's/\.3type$//' >"$tmp/type-pages"
diff -u "$tmp/structs" "$tmp/type-pages" >&2 ||
	fail "the man3type pages differ from the header's documented structs"
for f in "$man"/man3/*.3 "$man"/man3type/*.3type; do
	MANWIDTH=80 man --warnings -l "$f" >"$tmp/page" 2>"$tmp/page-warnings" ||
		fail "man -l ${f##*/} failed"
	[ ! -s "$tmp/page-warnings" ] ||
		{ cat "$tmp/page-warnings" >&2; fail "${f##*/} renders with warnings"; }
done
# man finds a page by name in the installed tree, as after make install.
MANWIDTH=80 man -M "$man" -P cat gmemuf_populate >"$tmp/page" 2>&1 ||
	fail "man gmemuf_populate failed"
grep -q '^ *gmemuf_populate - populate one page$' "$tmp/page" ||
	fail "man gmemuf_populate: not its page"
grep -q '#include <libgmemuf.h>' "$tmp/page" ||
	fail "man gmemuf_populate: no #include in its synopsis"
MANWIDTH=80 man -M "$man" -P cat 3type gmemuf_handler_stats >"$tmp/page" 2>&1 ||
	fail "man 3type gmemuf_handler_stats failed"
grep -q 'fetches_cancelled' "$tmp/page" ||
	fail "man 3type gmemuf_handler_stats: not its page"

# A user's program: the installed headers and the system's, nothing else.
cat >"$tmp/user.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <libgmemuf.h>

int main(void)
{
	struct gmemuf_fault faults[4];
	struct io_uring_sqe sqe;
	struct gmemuf_fetch fetch;

	gmemuf_prep_fetch(&sqe, 3, faults, 4);
	memcpy(&fetch, sqe.cmd, sizeof(fetch));
	if (sqe.opcode != IORING_OP_URING_CMD || sqe.cmd_op != GMEMUF_CMD_FETCH ||
	    fetch.addr != (uintptr_t)faults || fetch.nr != 4 || fetch.flags)
		return 1;
	if (gmemuf_probe(-1, NULL) != -EBADF)
		return 2;
	if (!(GUEST_MEMFD_FLAG_USERFAULT & ~GUEST_MEMFD_FLAG_MMAP))
		return 3;
	puts(gmemuf_strerror(-EOPNOTSUPP));
	return 0;
}
EOF
export PKG_CONFIG_PATH=$dest$prefix/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
cflags=$(pkg-config --cflags libgmemuf)
cc -Wall -Wextra -Werror -std=gnu11 $cflags "$tmp/user.c" \
	$(pkg-config --libs libgmemuf) -o "$tmp/user-shared"
cc -Wall -Wextra -Werror -std=gnu11 -static $cflags "$tmp/user.c" \
	$(pkg-config --libs --static libgmemuf) -o "$tmp/user-static"
# A strict consumer: ISO C99 and C11 (without _GNU_SOURCE, which liburing's
# header defines itself, before the first libc header) and C++, pedantic,
# with every inline helper used.
cat >"$tmp/strict.c" <<'EOF'
#include <libgmemuf.h>
#include <stdio.h>

int main(void)
{
	struct gmemuf_fault faults[4];
	struct io_uring_sqe sqe;
	struct io_uring_cqe cqe;
	static char page[GMEMUF_PAGE_SIZE];

	memset(&cqe, 0, sizeof(cqe));
	gmemuf_prep_fetch(&sqe, 3, faults, 4);
	gmemuf_prep_populate(&sqe, 4, 0, page, 1);
	cqe.res = (int)GMEMUF_PAGE_SIZE;
	printf("%d %d %s\n", gmemuf_fetch_result(&cqe, 4),
	       gmemuf_populate_result(&cqe), gmemuf_strerror(-EINVAL));
	return 0;
}
EOF
for std in c99 c11 gnu99 gnu11; do
	cc -std=$std -Wall -Wextra -Werror -pedantic $cflags -c "$tmp/strict.c" \
		-o "$tmp/strict.o" || fail "libgmemuf.h does not build with -std=$std"
done
for std in c++11 c++17; do
	c++ -std=$std -Wall -Wextra -Werror -pedantic $cflags -x c++ \
		-c "$tmp/strict.c" -o "$tmp/strict.o" ||
		fail "libgmemuf.h does not build with -std=$std"
done
# Bring your own ring, linked shared with nothing but pkg-config's flags:
# the ring is liburing's, and libgmemuf's pkg-config file requires it.
pkg-config --libs libgmemuf >"$tmp/libs"
grep -qw -- -luring "$tmp/libs" || fail "pkg-config --libs libgmemuf lacks -luring"
cat >"$tmp/byo.c" <<'EOF'
#include <libgmemuf.h>

int main(void)
{
	struct gmemuf_fault faults[4];
	struct io_uring_sqe *sqe;
	struct io_uring ring;
	int ok;

	if (io_uring_queue_init(4, &ring, 0))
		return 1;
	sqe = io_uring_get_sqe(&ring);
	gmemuf_prep_fetch(sqe, 3, faults, 4);
	ok = sqe && sqe->opcode == IORING_OP_URING_CMD;
	io_uring_queue_exit(&ring);
	return ok ? 0 : 2;
}
EOF
cc -Wall -Wextra -Werror -std=gnu11 $cflags "$tmp/byo.c" \
	$(pkg-config --libs libgmemuf) -o "$tmp/byo" ||
	fail "a bring-your-own-ring program does not link with pkg-config --libs"
LD_LIBRARY_PATH=$dest$prefix/lib "$tmp/byo" ||
	fail "the bring-your-own-ring program failed"

# gmemuf_prep_fetch() with liburing's io_uring_prep_uring_cmd() (2.13 on):
# a stand-in <liburing.h> adds it and the version check as 2.13 has them
# (the helper's body is liburing's); the SQE must be the same bytes.
mkdir -p "$tmp/liburing-2.13"
cat >"$tmp/liburing-2.13/liburing.h" <<'EOF'
#include_next <liburing.h>
#define IO_URING_CHECK_VERSION(major, minor) \
	(major > 2 || (major == 2 && minor > 13))
static inline void io_uring_prep_uring_cmd(struct io_uring_sqe *sqe,
					   int cmd_op, int fd)
{
	sqe->opcode = (__u8)IORING_OP_URING_CMD;
	sqe->fd = fd;
	sqe->cmd_op = cmd_op;
	sqe->__pad1 = 0;
	sqe->addr = 0ul;
	sqe->len = 0;
}
EOF
cat >"$tmp/sqe.c" <<'EOF'
#include <libgmemuf.h>
#include <stdio.h>

int main(void)
{
	/* Not dereferenced; the same in both programs. */
	struct gmemuf_fault *faults = (struct gmemuf_fault *)0x1000;
	struct io_uring_sqe sqe;
	unsigned int i;

	memset(&sqe, 0xa5, sizeof(sqe));
	gmemuf_prep_fetch(&sqe, 7, faults, 4);
	for (i = 0; i < sizeof(sqe); i++)
		printf("%02x", ((unsigned char *)&sqe)[i]);
#ifdef LIBGMEMUF_HAVE_PREP_URING_CMD
	puts(" helper");
#else
	puts(" by-hand");
#endif
	return 0;
}
EOF
cc -Wall -Werror $cflags "$tmp/sqe.c" -o "$tmp/sqe-by-hand"
cc -Wall -Werror -I"$tmp/liburing-2.13" $cflags "$tmp/sqe.c" -o "$tmp/sqe-helper"
"$tmp/sqe-by-hand" >"$tmp/sqe-by-hand.out"
"$tmp/sqe-helper" >"$tmp/sqe-helper.out"
grep -q ' by-hand$' "$tmp/sqe-by-hand.out" ||
	fail "libgmemuf.h takes this liburing for 2.13"
grep -q ' helper$' "$tmp/sqe-helper.out" ||
	fail "libgmemuf.h does not use io_uring_prep_uring_cmd() of liburing 2.13"
[ "$(cut -d' ' -f1 "$tmp/sqe-by-hand.out")" = \
  "$(cut -d' ' -f1 "$tmp/sqe-helper.out")" ] ||
	fail "gmemuf_prep_fetch() differs with io_uring_prep_uring_cmd()"

# Whole outputs to files, then grep: with pipefail, a grep -q that exits
# at its first match can kill the writer with SIGPIPE and fail the pipeline.
LD_LIBRARY_PATH=$dest$prefix/lib "$tmp/user-shared" >"$tmp/out-shared" ||
	fail "the shared-linked program failed"
grep -q userfault "$tmp/out-shared" || fail "the shared-linked program failed"
LD_LIBRARY_PATH=$dest$prefix/lib ldd "$tmp/user-shared" >"$tmp/ldd" ||
	fail "ldd failed"
grep -q "libgmemuf.so.0 => $dest$prefix/lib" "$tmp/ldd" ||
	fail "not linked to libgmemuf.so.0"
"$tmp/user-static" >"$tmp/out-static" || fail "the static program failed"
grep -q userfault "$tmp/out-static" || fail "the static program failed"
# The fallbacks, against the system's headers, and the kernel's values.
cat >"$tmp/values.c" <<'EOF'
#include <stdio.h>
#include "private.h"

int main(void)
{
	printf("%llx %llx %llx %llx %llx\n", GUEST_MEMFD_FLAG_MMAP,
	       GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_USERFAULT,
	       GUEST_MEMFD_FLAG_USERFAULT_EXIT, KVM_MEMORY_EXIT_FLAG_USERFAULT);
	printf("%llx %llx\n", GMEMUF_FEATURE_VCPU_WAIT, GMEMUF_FEATURE_VCPU_EXIT);
	printf("%d %llx\n", KVM_EXIT_MEMORY_FAULT, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	printf("%d %d %lx\n", KVM_CAP_GUEST_MEMFD_FLAGS,
	       KVM_CAP_GUEST_MEMFD_USERFAULT, (unsigned long)KVM_CREATE_GUEST_MEMFD);
	return 0;
}
EOF
inc=(-I"$top/libgmemuf/include" -I"$top/libgmemuf/src" -I"$b/include")
cc -Wall -Werror "${inc[@]}" "$tmp/values.c" -o "$tmp/values-fallback"
cc -Wall -Werror -isystem "$hdr" "${inc[@]}" "$tmp/values.c" -o "$tmp/values-kernel"
diff <("$tmp/values-fallback") <("$tmp/values-kernel") >&2 ||
	fail "a fallback constant differs from the kernel's headers"

echo "libgmemuf abi: SONAME, $(wc -l <"$tmp/names") versioned symbols," \
	"$(wc -l <"$tmp/pages") man3 and $(wc -l <"$tmp/type-pages") man3type" \
	"pages, install, pkg-config: ok"
