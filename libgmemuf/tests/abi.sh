#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# libgmemuf's ABI and installation, on the host:
# - libgmemuf.so.0 is its SONAME, and it exports exactly the symbols of
#   libgmemuf.map, each under a version of it;
# - make install with DESTDIR and PREFIX puts the libraries, the headers
#   (the UAPI one too), the pkg-config file and the docs in their places;
# - a program built with only the installed headers and the system's, its
#   flags from pkg-config, links and runs, shared and static;
# - the constants the library defines where the system headers lack them
#   have the values of the patched kernel's headers (HDR).
#
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
sed -n 's/^[[:space:]]*\(gmemuf_[a-z_]*\);/\1/p' "$top/libgmemuf/libgmemuf.map" |
	sort >"$tmp/mapped"
diff -u "$tmp/mapped" "$tmp/names" >&2 || fail "exports differ from libgmemuf.map"
# Every function the header declares is exported, and nothing else.
sed -n '/^static/d; s/^[a-z].*[ *]\(gmemuf_[a-z_]*\)(.*/\1/p' \
	"$top/libgmemuf/include/libgmemuf.h" | sort >"$tmp/declared"
diff -u "$tmp/declared" "$tmp/names" >&2 || fail "exports differ from the header"

dest=$tmp/dest prefix=/opt/gmemuf
make --no-print-directory -C "$top" -f libgmemuf/Makefile O="${b%/libgmemuf}" \
	install DESTDIR="$dest" PREFIX="$prefix" >"$tmp/install.log" ||
	{ cat "$tmp/install.log" >&2; fail "make install failed"; }
for f in lib/libgmemuf.so.0.1.0 lib/libgmemuf.so.0 lib/libgmemuf.so \
	lib/libgmemuf.a lib/pkgconfig/libgmemuf.pc include/libgmemuf.h \
	include/libgmemuf/gmemuf.h share/doc/libgmemuf/libgmemuf.rst \
	share/doc/libgmemuf/uapi.rst; do
	[ -e "$dest$prefix/$f" ] || fail "make install left out $prefix/$f"
done

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
c++ -Wall -Wextra -Werror -fsyntax-only $cflags -x c++ - <<<'#include <libgmemuf.h>'
# Outputs are captured before grep -q reads them: with pipefail, a writer
# that grep -q leaves early dies of SIGPIPE and fails the pipeline, at
# random.
out=$(LD_LIBRARY_PATH=$dest$prefix/lib "$tmp/user-shared")
grep -q userfault <<<"$out" || fail "the shared-linked program failed"
out=$(ldd "$tmp/user-shared")
grep -q "libgmemuf.so.0 => $dest$prefix/lib" <<<"$out" ||
	out=$(LD_LIBRARY_PATH=$dest$prefix/lib ldd "$tmp/user-shared")
grep -q "libgmemuf.so.0 => $dest$prefix/lib" <<<"$out" ||
	fail "not linked to libgmemuf.so.0"
out=$("$tmp/user-static")
grep -q userfault <<<"$out" || fail "the static program failed"
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

echo "libgmemuf abi: SONAME, $(wc -l <"$tmp/names") versioned symbols, install, pkg-config: ok"
