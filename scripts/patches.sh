#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Turn the kernel side of gmemuf into a series of patches against the pinned
# tree, the form in which kernel work is reviewed:
#
#   patches.sh <outdir>           write <outdir>/NNNN-*.patch (git am-able),
#                                 0000 a cover letter (kernel/cover-letter.txt)
#   patches.sh --check <outdir>   run the tree's checkpatch.pl --strict on it
#   patches.sh --build            make the commits only (refs/heads/gmemuf
#                                 of the cache's bare repository), and print
#                                 "<git dir>", then "<commit> <patch>" a line
#
# kernel/patches/series lists the commits in order, one a line:
#
#   <patch file> [<tree path> ...]
#
# The patch file, in kernel/patches/, is in `git format-patch` form: its
# From:, Subject: and message become the commit's, its diff changes upstream
# files, and may change our own files too, at their tree paths (placed as
# scripts/kernel.sh overlay-map says): a new-file diff adds a first version
# of one, and later patches change it. The tree paths that follow the patch
# name our own files that the same commit adds whole, as the repository has
# them; no patch may change those. Each of our kernel and UAPI files must be
# in the series one way or the other.
#
# The repository's files are the truth of the final state (what the test
# kernel builds): after the last commit, each of our files in the series
# must equal the repository's, or this fails, naming the file. After a
# change to one of them, `scripts/series.sh absorb` folds the difference
# into the series (see there).
#
# The commits are made with git plumbing in a bare repository of the pinned
# tree kept in the cache, so no work tree is checked out.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${GMEMUF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmemuf}
die() { echo "patches.sh: $*" >&2; exit 1; }

check=0 build_only=0
case ${1:-} in
--check) check=1; shift ;;
--build) build_only=1; shift ;;
esac
[ $build_only = 1 ] || out=${1:?usage: patches.sh [--check|--build] <outdir>}

res=$("$top/scripts/kernel.sh" pristine)
key=${res%% *} src=${res#* }

if [ $check = 1 ]; then
	shopt -s nullglob
	# The patches, not the cover letter (0000), which has no diff to check.
	set --
	for f in "$out"/[0-9][0-9][0-9][0-9]-*.patch; do
		case ${f##*/} in 0000-*) ;; *) set -- "$@" "$f" ;; esac
	done
	[ $# -gt 0 ] || { echo "  CHECK   no patches in $out"; exit 0; }
	# checkpatch warns of every added file in a patch that does not touch
	# MAINTAINERS (FILE_PATH_CHANGES). What it asks is checked here
	# instead: every file the series adds is covered by an F: pattern of
	# MAINTAINERS as the series leaves it (get_maintainer.pl's matching).
	GIT_DIR="$cache/git/$key.git" python3 - <<-'EOF' || die "a file the series adds has no MAINTAINERS entry"
	import re, subprocess, sys
	def git(*a):
	    return subprocess.run(["git", *a], check=True, stdout=subprocess.PIPE,
	                          text=True).stdout
	added = git("diff", "--name-only", "--diff-filter=A", "refs/heads/base",
	            "refs/heads/gmemuf").split()
	# Not THE REST's "F: */", which matches everything.
	pats = [l[2:].strip() for l in git("show", "refs/heads/gmemuf:MAINTAINERS")
	        .splitlines() if l.startswith("F:") and not l[2:].strip()
	        .startswith("*")]
	def match(f, p):
	    rx = "^" + re.escape(p).replace(r"\*", ".*").replace(r"\?", ".")
	    if not re.match(rx, f):
	        return False
	    return p.endswith("/") or f.count("/") == p.count("/")
	bad = [f for f in added if not any(match(f, p) for p in pats)]
	for f in bad:
	    print(f"patches.sh: {f}: added by the series, in no F: of MAINTAINERS",
	          file=sys.stderr)
	sys.exit(1 if bad else 0)
	EOF
	# checkpatch exits non-zero on any error, warning or (with --strict)
	# check: the series must be clean of all three.
	# --no-tree: the series is checked on its own, against $src's rules.
	"$src/scripts/checkpatch.pl" --strict --no-tree --terse --show-types \
		--ignore FILE_PATH_CHANGES \
		"$@" | tee "$out/checkpatch.log" && status=0 || status=$?
	[ $status = 0 ] || die "checkpatch is not clean ($out/checkpatch.log)"
	echo "  CHECK   $# patches clean"
	exit 0
fi

series="$top/kernel/patches/series"
if [ $build_only = 0 ]; then
	rm -rf "$out"
	mkdir -p "$out"
fi
entries=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$series" 2>/dev/null || true)
if [ -z "$entries" ]; then
	echo "  PATCHES none yet (kernel/patches/series is empty)"
	exit 0
fi

declare -A from owndir
while read -r f t; do
	from[$t]=$f
	# Directories of ours alone (include/uapi/linux/ is upstream's too).
	case $t in */gmemuf/*) owndir[${t%/*}/]=1 ;; esac
done < <("$top/scripts/kernel.sh" overlay-map)

# Our files: each added whole by one commit (its series line), or else
# changed by the diffs of patches, and never both.
declare -A owner diffed
while read -r p paths; do
	[ -f "$top/kernel/patches/$p" ] || die "series names $p, which does not exist"
	for t in $paths; do
		[ -n "${from[$t]:-}" ] || die "series: $p adds $t, which is none of our files"
		[ -z "${owner[$t]:-}" ] || die "series: $t is added by both ${owner[$t]} and $p"
		owner[$t]=$p
	done
	for t in $(python3 "$top/scripts/series.py" paths "$top/kernel/patches/$p"); do
		if [ -z "${from[$t]:-}" ]; then
			[ -z "${owndir[${t%/*}/]:-}" ] ||
				die "$p changes $t, in a directory of ours, but no file of the repository goes there (scripts/kernel.sh overlay-map)"
			continue
		fi
		diffed[$t]=$p
	done
done <<<"$entries"
for t in "${!diffed[@]}"; do
	[ -z "${owner[$t]:-}" ] ||
		die "${diffed[$t]} changes $t, which ${owner[$t]} adds whole (its series line): take it off that line and add it with a new-file diff in the patch instead"
done
for t in "${!from[@]}"; do
	case ${from[$t]} in
	kernel/*|uapi/*|Kbuild)
		[ -n "${owner[$t]:-}${diffed[$t]:-}" ] ||
			die "${from[$t]} is in no commit of kernel/patches/series" ;;
	esac
done

git_dir="$cache/git/$key.git"
export GIT_DIR="$git_dir"
if ! git rev-parse -q --verify refs/heads/base >/dev/null 2>&1; then
	echo "  GIT     base commit of $src (once)" >&2
	rm -rf "$git_dir"
	git init -q --bare "$git_dir"
	export GIT_INDEX_FILE="$git_dir/index.base"
	GIT_WORK_TREE="$src" git add -A -f .
	tree=$(git write-tree)
	base=$(GIT_AUTHOR_NAME=gmemuf GIT_AUTHOR_EMAIL=gmemuf@invalid \
	       GIT_COMMITTER_NAME=gmemuf GIT_COMMITTER_EMAIL=gmemuf@invalid \
	       GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z' \
	       git commit-tree -m "Linux $(make -s -C "$src" kernelversion)" "$tree")
	git update-ref refs/heads/base "$base"
	rm -f "$GIT_INDEX_FILE"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
commits=()
export GIT_INDEX_FILE="$tmp/index"
git read-tree refs/heads/base
head=$(git rev-parse refs/heads/base)
while read -r p paths; do
	pf="$top/kernel/patches/$p"
	[ -f "$pf" ] || die "series names $p, which does not exist"
	git mailinfo -b "$tmp/msg" "$tmp/diff" <"$pf" >"$tmp/info"
	subject=$(sed -n 's/^Subject: //p' "$tmp/info")
	name=$(sed -n 's/^Author: //p' "$tmp/info")
	email=$(sed -n 's/^Email: //p' "$tmp/info")
	[ -n "$subject" ] && [ -n "$name" ] && [ -n "$email" ] ||
		die "$p: needs From: and Subject: headers"
	if [ -s "$tmp/diff" ]; then
		git apply --cached "$tmp/diff" || die "$p does not apply to the series before it"
	fi
	for t in $paths; do
		blob=$(git hash-object -w "$top/${from[$t]}")
		git update-index --add --cacheinfo 100644,"$blob","$t"
	done
	tree=$(git write-tree)
	head=$({ echo "$subject"; echo; cat "$tmp/msg"; } |
		GIT_AUTHOR_NAME=$name GIT_AUTHOR_EMAIL=$email \
		GIT_COMMITTER_NAME=$name GIT_COMMITTER_EMAIL=$email \
		GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z' \
		git commit-tree -p "$head" "$tree")
	commits+=("$head $p")
done <<<"$entries"
git update-ref refs/heads/gmemuf "$head"
if [ $build_only = 1 ]; then
	echo "$git_dir"
	printf '%s\n' "${commits[@]}"
	exit 0
fi

# The series must end where the repository is: each of our files in the
# last commit equals the repository's, which builds and tests use.
bad=()
for t in "${!owner[@]}" "${!diffed[@]}"; do
	want=$(git hash-object "$top/${from[$t]}")
	have=$(git rev-parse -q --verify "refs/heads/gmemuf:$t" || echo none)
	[ "$want" = "$have" ] || bad+=("${from[$t]}")
done
if [ ${#bad[@]} -gt 0 ]; then
	for f in $(printf '%s\n' "${bad[@]}" | sort -u); do
		echo "patches.sh: $f differs from its version at the end of the series" >&2
	done
	die "run 'scripts/series.sh absorb' (make patches-absorb) to fold the difference into the last patch that changes each file, or 'scripts/series.sh diff' to see it"
fi
# The cover letter's From: is the committer's.
GIT_COMMITTER_NAME="gmemuf developers" GIT_COMMITTER_EMAIL=gmemuf@lists.invalid \
	git format-patch -q --no-signature --cover-letter -o "$out" \
	refs/heads/base..refs/heads/gmemuf
# 0000: kernel/cover-letter.txt, with README.md's benchmark table, above
# format-patch's shortlog and diffstat.
python3 "$top/scripts/cover-letter.py" "$out/0000-cover-letter.patch" \
	"$top/kernel/cover-letter.txt" "$top/README.md"
echo "  PATCHES $(ls "$out"/*.patch | wc -l) in $out (0000 the cover letter)"
