#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# libgmemuf's man pages: one in section 3 for each function and callback
# type that libgmemuf.h documents, written by the kernel tree's kernel-doc
# from the header's comments. kernel-doc writes kernel (section 9) pages,
# all in one stream: this splits the stream, one file per page, and makes
# them the library's: section 3, the header to include in the synopsis,
# the header and the other pages in SEE ALSO. A kernel-doc warning is an
# error: the comments are the pages.
#
#   man.sh <kernel-doc> <libgmemuf.h> <version> <output dir>
set -euo pipefail

kdoc=$1 header=$2 version=$3 out=$4
[ -x "$kdoc" ] || { echo "man.sh: $kdoc: no kernel-doc there" >&2; exit 1; }

# The date of the pages is the header's, not today's: the same header
# gives the same pages.
export KBUILD_BUILD_TIMESTAMP
KBUILD_BUILD_TIMESTAMP=$(date -u -r "$header" +%Y-%m-%d)

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
"$kdoc" -man -Wall -Werror -M "libgmemuf $version" "$header" >"$out.tmp/all"
# A function's page goes in man3/, a struct's in man3type/ (as the Linux
# man-pages do): gmemuf_handler_stats is both.
mkdir -p "$out.tmp/man3" "$out.tmp/man3type"
awk -v dir="$out.tmp" '
/^\.TH / {
	if (file)
		close(file)
	match($0, /"[^"]*"/)
	name = substr($0, RSTART + 1, RLENGTH - 2)
	if (sub(/^struct /, "", name)) {
		file = dir "/man3type/" name ".3type"
		section = "3type"
	} else {
		file = dir "/man3/" name ".3"
		section = "3"
	}
	# .TH "<name>" 9 "<date>" "<module>" "Kernel API Manual"
	rest = substr($0, index($0, "\" 9 \"") + 4)
	sub(/"Kernel API Manual"$/, "\"libgmemuf Manual\"", rest)
	print ".TH \"" name "\" " section " " rest >file
	next
}
/^\.SH SYNOPSIS$/ {
	print >file
	print ".nf\n.B #include <libgmemuf.h>\n.fi\n.sp" >file
	next
}
/^Kernel file / {
	print "\\fBlibgmemuf.h\\fR," >file
	next
}
{
	# SEE ALSO: the page of a struct is in 3type, of a function in 3.
	line = ""
	while (match($0, /\\fBstruct [a-z_0-9]+\\fR\(9\)/)) {
		line = line substr($0, 1, RSTART - 1) "\\fB" \
			substr($0, RSTART + 10, RLENGTH - 16) "\\fR(3type)"
		$0 = substr($0, RSTART + RLENGTH)
	}
	$0 = line $0
	gsub(/\\fR\(9\)/, "\\fR(3)")
	print >file
}
' "$out.tmp/all"
rm "$out.tmp/all"
ls "$out.tmp"/man3/*.3 >/dev/null
rm -rf "$out"
mv "$out.tmp" "$out"
