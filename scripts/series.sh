#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Keep the kernel series (kernel/patches/) and our kernel files consistent,
# and check that each of its commits builds.
#
#   series.sh diff [<file>...]
#       how our files (kernel/gmemuf.c, ...) differ from their version at
#       the end of the series: what `make patches` refuses
#   series.sh absorb [--dry-run] [--blame | --into <patch>] [<file>...]
#       fold those differences into the series, and rewrite the patches of
#       kernel/patches/ that change (their names, messages and every other
#       file's hunks are kept). By default each file's difference goes into
#       the last patch that changes that file, which cannot conflict: the
#       patches after it do not touch it. --into <patch> (a name or its
#       number, 0005) puts it into that patch instead and carries it through
#       the later patches that change the file, by three-way merges; on a
#       conflict it writes nothing, and says what to do. --blame picks, for
#       each file, the latest patch that the lines the change touches come
#       from (git blame of the series' result): a fix of code that 0005 adds
#       goes into 0005, not into 0014 which changes the file elsewhere.
#       --dry-run says where each file would go, and where its lines come
#       from.
#   series.sh bisect
#       after each commit of the series, compile virt/kvm and arch/x86/kvm
#       (and any other .c file the commit changes) from the series' tree at
#       that commit, in a work tree and object directory kept in the cache
#       ($GMEMUF_CACHE/bisect/, incremental, with ccache); fail naming the
#       first commit that does not build, or builds with a warning there.
#       A commit that adds or changes a KVM selftest (*_test.c) also has it
#       built, with the tree's Makefile and its headers at that commit.
#       The config: tinyconfig, kernel/config/base.config and the tracing
#       of kernel/config/bisect.config, KVM built in.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${GMEMUF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmemuf}
jobs=${JOBS:-$(nproc)}
die() { echo "series.sh: $*" >&2; exit 1; }
log() { echo "  $*" >&2; }

bisect() {
	local res key out gitdir wt obj idx c p i=0 n frags hash files f objs tests
	res=$("$top/scripts/kernel.sh" pristine)
	key=${res%% *}
	out=$("$top/scripts/patches.sh" --build)
	gitdir=$(head -n1 <<<"$out")
	n=$(($(wc -l <<<"$out") - 1))
	export GIT_DIR="$gitdir"
	wt="$cache/bisect/$key/tree" idx="$cache/bisect/$key/index"
	obj="$cache/bisect/$key/obj"
	mkdir -p "$wt" "$obj"
	exec 9>"$cache/bisect/$key/lock"
	flock 9
	frags="$top/kernel/config/base.config $top/kernel/config/bisect.config"
	# shellcheck disable=SC2086
	hash=$(cat $frags | sha256sum | cut -c1-16)
	while read -r c p; do
		i=$((i + 1))
		# Only the files that differ from the last checkout are written:
		# make recompiles what depends on them, ccache the rest.
		if [ ! -f "$idx" ]; then
			log "CHECKOUT the series' tree in $wt (once)"
		fi
		GIT_INDEX_FILE="$idx" GIT_WORK_TREE="$wt" \
			git read-tree -u --reset "$c" ||
			die "cannot check out $p in $wt"
		if [ "$(cat "$obj/.gmemuf-config" 2>/dev/null)" != "$hash" ]; then
			log "CONFIG  bisect (tinyconfig + base + bisect)"
			bmake "$wt" "$obj" -s tinyconfig
			# shellcheck disable=SC2086
			KCONFIG_CONFIG="$obj/.config" "$wt/scripts/kconfig/merge_config.sh" \
				-m -O "$obj" "$obj/.config" $frags >/dev/null
			bmake "$wt" "$obj" -s olddefconfig
			echo "$hash" >"$obj/.gmemuf-config"
		fi
		# Symbols the commit adds take their defaults, as with oldconfig.
		bmake "$wt" "$obj" -s olddefconfig
		grep -qx CONFIG_KVM=y "$obj/.config" || die "the bisect config has no KVM"
		# Upstream .c files the commit changes outside KVM: their objects.
		objs=()
		files=$(git diff-tree --no-commit-id --name-only -r "$c^" "$c")
		for f in $files; do
			case $f in
			virt/kvm/*|arch/x86/kvm/*|tools/*) ;;
			*.c) objs+=("${f%.c}.o") ;;
			esac
		done
		log "BISECT  $i/$n $p$( grep -q '^CONFIG_KVM_GMEMUF=y' "$obj/.config" && echo ' (gmemuf built)')"
		# A commit that changes gmemuf's code must build it: x86
		# selects HAVE_KVM_ARCH_GMEMUF in the patch that adds gmemuf,
		# so that no version of it goes uncompiled.
		if ! grep -q '^CONFIG_KVM_GMEMUF=y' "$obj/.config" &&
		   grep -q '^virt/kvm/gmemuf/.*\.c$' <<<"$files"; then
			die "$p changes virt/kvm/gmemuf/*.c, which this config does not build (no CONFIG_KVM_GMEMUF: does x86 select HAVE_KVM_ARCH_GMEMUF yet?)"
		fi
		if ! bmake "$wt" "$obj" arch/x86/kvm/ "${objs[@]}" \
			>"$obj/build-$i.log" 2>&1; then
			grep -E 'error|Error' "$obj/build-$i.log" | head -30 >&2
			die "$p does not build (commit $i of $n; log: $obj/build-$i.log)"
		fi
		# KVM selftests the commit adds or changes: built with the
		# tree's own Makefile, against its headers at that commit.
		tests=()
		for f in $(git diff-tree --no-commit-id --name-only -r \
			   --diff-filter=AM "$c^" "$c" -- tools/testing/selftests/kvm/); do
			case $f in
			*_test.c)
				f=${f#tools/testing/selftests/kvm/}
				tests+=("$obj/kselftest/${f%.c}") ;;
			esac
		done
		if [ ${#tests[@]} -gt 0 ]; then
			log "BISECT  $i/$n its selftests: ${tests[*]##*/}"
			if ! { bmake "$wt" "$obj" -s headers_install \
				INSTALL_HDR_PATH="$obj/usr" &&
			       make -C "$wt/tools/testing/selftests/kvm" -j"$jobs" \
				OUTPUT="$obj/kselftest" \
				KHDR_INCLUDES="-isystem $obj/usr/include" \
				CC="ccache gcc" CCACHE_DIR="$cache/ccache" \
				"${tests[@]}"; } >>"$obj/build-$i.log" 2>&1; then
				grep -E 'error|Error' "$obj/build-$i.log" | head -30 >&2
				die "$p: its selftests do not build (commit $i of $n; log: $obj/build-$i.log)"
			fi
		fi
		if grep -E 'warning:' "$obj/build-$i.log" >&2; then
			die "$p builds with warnings (commit $i of $n; log: $obj/build-$i.log)"
		fi
	done < <(tail -n +2 <<<"$out")
	log "BISECT  all $n commits build (virt/kvm, arch/x86/kvm and what else they change)"
}

bmake() {
	local tree=$1 obj=$2
	shift 2
	CCACHE_DIR="$cache/ccache" CCACHE_BASEDIR="$tree" \
	KBUILD_BUILD_TIMESTAMP="gmemuf" KBUILD_BUILD_USER=gmemuf \
	KBUILD_BUILD_HOST=gmemuf \
		make -C "$tree" O="$obj" -j"$jobs" CC="ccache gcc" HOSTCC="ccache gcc" "$@" >&2
}

case ${1:-} in
diff|absorb)
	exec python3 "$top/scripts/series.py" "$@" ;;
bisect)
	bisect ;;
*)
	sed -n '3,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//' >&2
	exit 2 ;;
esac
