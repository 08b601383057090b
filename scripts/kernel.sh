#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# The kernel side of the build: find a Linux 7.3 source, keep a patched copy
# of it in the cache with gmemuf's overlay applied, configure it from the
# fragments in kernel/config/ and build it. Everything expensive lives under
# $GMEMUF_CACHE, keyed by what produced it, so that a rebuild with nothing
# changed compiles nothing.
#
#   kernel.sh tree                  print the patched tree, refreshing it
#   kernel.sh build  debug|release  build bzImage, print its path
#   kernel.sh config debug|release  (re)generate .config only, print obj dir
#   kernel.sh headers               install UAPI headers, print their dir
#   kernel.sh obj    debug|release  print the object directory
#   kernel.sh pristine              print the key and the unpatched tree
#   kernel.sh overlay-map           print where each of our files goes
#   kernel.sh kvm-selftests <dest> <test>...
#                                   build KVM selftests (static) into <dest>
#
# Source, in order of preference:
#   KERNEL_SRC=<tree>        an unpacked kernel tree (never written to)
#   KERNEL_TARBALL=<file>    a tarball of one, e.g. linux-source-7.3.tar.xz
#   (neither)                Debian's linux-source-7.3 from trixie-backports,
#                            fetched with a private apt list and cache
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${GMEMUF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmemuf}
jobs=${JOBS:-$(nproc)}

die() { echo "kernel.sh: $*" >&2; exit 1; }
log() { echo "  $*" >&2; }

mkdir -p "$cache"

# --- the pristine source ---------------------------------------------------

# Debian's package, fetched with apt options that touch nothing of the
# machine's own apt configuration, state or cache.
fetch_debian_tarball() {
	local apt="$cache/apt" deb
	mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$cache/dl"
	cat >"$apt/sources.list" <<-EOF
	deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
	EOF
	local opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
		    -o "Dir::Etc::SourceParts=-"
		    -o "Dir::State::Lists=$apt/lists"
		    -o "Dir::Cache=$apt"
		    -o "Dir::Cache::archives=$apt/archives"
		    -o "Debug::NoLocking=1"
		    -o "APT::Get::List-Cleanup=0"
		    -o "APT::Sandbox::User=root")
	deb=$(ls "$cache"/dl/linux-source-7.3_*.deb 2>/dev/null | tail -n1 || true)
	if [ -z "$deb" ]; then
		log "FETCH   linux-source-7.3 (trixie-backports)"
		apt-get "${opts[@]}" -qq update >&2
		(cd "$cache/dl" && apt-get "${opts[@]}" -qq download \
			-t trixie-backports linux-source-7.3 >&2)
		deb=$(ls "$cache"/dl/linux-source-7.3_*.deb | tail -n1)
	fi
	local out="$cache/dl/${deb##*/}.d"
	if [ ! -d "$out" ]; then
		rm -rf "$out.tmp"
		dpkg-deb -x "$deb" "$out.tmp"
		mv "$out.tmp" "$out"
	fi
	ls "$out"/usr/src/linux-source-7.3.tar.* | head -n1
}

# Print "<key> <pristine dir>". A tarball is keyed by its sha256 and unpacked
# once; a tree given by KERNEL_SRC is keyed by its path and used in place.
pristine() {
	if [ -n "${KERNEL_SRC:-}" ]; then
		[ -f "$KERNEL_SRC/Makefile" ] || die "KERNEL_SRC=$KERNEL_SRC is not a kernel tree"
		local src
		src=$(cd "$KERNEL_SRC" && pwd)
		echo "src-$(printf %s "$src" | sha256sum | cut -c1-16) $src"
		return
	fi
	local tarball=${KERNEL_TARBALL:-}
	[ -n "$tarball" ] || tarball=$(fetch_debian_tarball)
	[ -f "$tarball" ] || die "KERNEL_TARBALL=$tarball: no such file"
	local key dir
	key=tar-$(sha256sum "$tarball" | cut -c1-16)
	dir="$cache/src/$key"
	if [ ! -f "$dir/.unpacked" ]; then
		log "UNPACK  ${tarball##*/}"
		rm -rf "$dir"
		mkdir -p "$dir"
		tar -xf "$tarball" -C "$dir"
		# Tarballs hold one top directory; make it the tree itself.
		local sub
		sub=$(find "$dir" -mindepth 1 -maxdepth 1)
		if [ "$(echo "$sub" | wc -l)" = 1 ] && [ -d "$sub" ]; then
			mv "$sub" "$dir/linux"
		else
			die "$tarball: expected one top-level directory"
		fi
		[ -f "$dir/linux/Makefile" ] || die "$tarball: not a kernel tree"
		touch "$dir/.unpacked"
	fi
	echo "$key $dir/linux"
}

# --- the overlay -------------------------------------------------------------

# The overlay is gmemuf's files, copied to their place in the tree, plus the
# patches listed in kernel/patches/series, applied in order.
#
#   kernel/*.c kernel/*.h Kbuild  -> virt/kvm/gmemuf/
#   uapi/linux/*.h                -> include/uapi/linux/
#   selftests/kvm/*.c             -> tools/testing/selftests/kvm/gmemuf/
#   Documentation/gmemuf/uapi.rst -> Documentation/virt/kvm/gmemuf.rst
#
# It is computed in a staging directory from the pristine files every time
# and only the files whose contents differ are written into the tree, so an
# unchanged overlay leaves every timestamp alone and make rebuilds nothing,
# while a changed patch or file is always noticed.
overlay_files() {
	local f
	for f in "$top"/kernel/*.[ch] "$top"/Kbuild; do
		[ -f "$f" ] && echo "$f virt/kvm/gmemuf/${f##*/}"
	done
	for f in "$top"/uapi/linux/*.h; do
		[ -f "$f" ] && echo "$f include/uapi/linux/${f##*/}"
	done
	for f in "$top"/selftests/kvm/*.[ch]; do
		[ -f "$f" ] && echo "$f tools/testing/selftests/kvm/gmemuf/${f##*/}"
	done
	# The UAPI's documentation, which the series adds next to api.rst.
	echo "$top/Documentation/gmemuf/uapi.rst Documentation/virt/kvm/gmemuf.rst"
	return 0
}

series() {
	local s="$top/kernel/patches/series"
	[ -f "$s" ] || return 0
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$s" | awk '{ print $1 }'
}

# Paths a patch touches, file by file.
patch_paths() {
	python3 "$top/scripts/series.py" paths "$1" | sort -u
}

# A patch of the series may also change our own files (a first version of
# gmemuf.c in one commit, more of it in the next): the overlay takes those
# as the repository has them, the final state, and applies only the hunks
# of upstream files.
apply_overlay() {
	local src=$1 tree=$2 stage manifest new p f own
	stage=$(mktemp -d "$cache/stage.XXXXXX")
	own="$stage.own"
	overlay_files | awk '{ print $2 }' >"$own"

	# Pristine copies of every upstream file the patches touch...
	for p in $(series); do
		[ -f "$top/kernel/patches/$p" ] || die "series names $p, which does not exist"
		for f in $(patch_paths "$top/kernel/patches/$p"); do
			[ -e "$stage/$f" ] && continue
			grep -qxF "$f" "$own" && continue
			if [ -f "$src/$f" ]; then
				mkdir -p "$stage/$(dirname "$f")"
				cp -p "$src/$f" "$stage/$f"
			fi
		done
	done
	# ...then our own files, then the patches over both.
	while read -r from to; do
		mkdir -p "$stage/$(dirname "$to")"
		cp "$from" "$stage/$to"
	done < <(overlay_files)
	for p in $(series); do
		python3 "$top/scripts/series.py" filter "$top/kernel/patches/$p" \
			"$own" >"$stage.patch"
		[ -s "$stage.patch" ] || continue
		patch -d "$stage" -p1 -s -f -N --no-backup-if-mismatch \
			-i "$stage.patch" >"$stage.log" 2>&1 ||
			{ cat "$stage.log" >&2; rm -f "$stage.log" "$stage.patch" "$own"; die "kernel/patches/$p does not apply"; }
		rm -f "$stage.log" "$stage.patch"
	done
	rm -f "$own" "$stage.patch"

	manifest="$tree/.gmemuf-overlay"
	new=$(cd "$stage" && find . -type f | sed 's|^\./||' | sort)

	# Files the previous overlay changed and this one does not: restore.
	if [ -f "$manifest" ]; then
		while read -r f; do
			[ -n "$f" ] || continue
			grep -qxF "$f" <<<"$new" && continue
			if [ -f "$src/$f" ]; then
				log "RESTORE $f"
				cp -p "$src/$f" "$tree/$f.gmemuf-tmp"
				mv "$tree/$f.gmemuf-tmp" "$tree/$f"
			else
				log "REMOVE  $f"
				rm -f "$tree/$f"
			fi
		done <"$manifest"
	fi
	# Files whose contents change: replace atomically, nothing else is touched.
	while read -r f; do
		[ -n "$f" ] || continue
		cmp -s "$stage/$f" "$tree/$f" && continue
		log "OVERLAY $f"
		mkdir -p "$tree/$(dirname "$f")"
		cp "$stage/$f" "$tree/$f.gmemuf-tmp"
		mv "$tree/$f.gmemuf-tmp" "$tree/$f"
	done <<<"$new"
	printf '%s\n' "$new" >"$manifest.tmp"
	mv "$manifest.tmp" "$manifest"
	rm -rf "$stage"
}

# rsync filter rules that keep the overlay's files, from its manifest.
overlay_filter() {
	local tree=$1 rules="$cache/rsync-filter.$$"

	: >"$rules"
	if [ -f "$tree/.gmemuf-overlay" ]; then
		sed -e '/^$/d' -e 's|^|- /|' "$tree/.gmemuf-overlay" >>"$rules"
		sed -e '/^$/d' -e 's|/[^/]*$|/|' -e 's|^|P /|' \
			"$tree/.gmemuf-overlay" | sort -u >>"$rules"
	fi
	echo "$rules"
}

# The patched tree: a private copy of the pristine one. rsync only rewrites
# what differs from the source (so a KERNEL_SRC that moved on is followed)
# and skips the files the overlay owns.
prepare_tree() {
	local key src tree res
	res=$(pristine)
	key=${res%% *} src=${res#* }
	tree="$cache/tree/$key"
	mkdir -p "$tree"
	if [ ! -f "$tree/.gmemuf-copied" ] || [ -n "${KERNEL_SRC:-}" ]; then
		[ -f "$tree/.gmemuf-copied" ] || log "COPY    $src"
		# Our files are neither overwritten nor deleted, nor are the
		# directories that hold them.
		rsync -a --delete --exclude=/.git --exclude=/.gmemuf-\* \
			--filter="merge $(overlay_filter "$tree")" \
			"$src/" "$tree/" >&2
		rm -f "$cache/rsync-filter.$$"
		touch "$tree/.gmemuf-copied"
	fi
	apply_overlay "$src" "$tree"
	echo "$key $tree"
}

# --- configuration and build -------------------------------------------------

fragments() {
	local flavor=$1
	case $flavor in
	debug|release) ;;
	*) die "unknown flavour '$flavor' (debug or release)" ;;
	esac
	echo "$top/kernel/config/base.config $top/kernel/config/$flavor.config"
}

kmake() {
	local tree=$1 obj=$2
	shift 2
	CCACHE_DIR="$cache/ccache" CCACHE_BASEDIR="$tree" \
	KBUILD_BUILD_TIMESTAMP="gmemuf" KBUILD_BUILD_USER=gmemuf \
	KBUILD_BUILD_HOST=gmemuf \
		make -C "$tree" O="$obj" -j"$jobs" CC="ccache gcc" HOSTCC="ccache gcc" "$@"
}

# Every line of the fragments must hold in the final .config.
check_config() {
	local obj=$1 frag line sym val bad=0
	for frag in $2; do
		while IFS= read -r line; do
			case $line in
			CONFIG_*=*)
				sym=${line%%=*}
				grep -qxF "$line" "$obj/.config" && continue ;;
			"# CONFIG_"*" is not set")
				sym=${line#\# }; sym=${sym%% *}
				grep -q "^$sym=" "$obj/.config" || continue ;;
			*) continue ;;
			esac
			val=$(grep -E "^(# )?$sym[= ]" "$obj/.config" || echo "$sym undefined")
			echo "kernel.sh: ${frag##*/}: wanted '$line', got '$val'" >&2
			bad=1
		done <"$frag"
	done
	return $bad
}

configure() {
	local flavor=$1 tree=$2 obj=$3 frags hash
	frags=$(fragments "$flavor")
	# shellcheck disable=SC2086
	hash=$(cat $frags | sha256sum | cut -c1-16)
	if [ -f "$obj/.config" ] && [ "$(cat "$obj/.gmemuf-config" 2>/dev/null)" = "$hash" ]; then
		return
	fi
	log "CONFIG  $flavor"
	mkdir -p "$obj"
	kmake "$tree" "$obj" -s tinyconfig >&2
	# shellcheck disable=SC2086
	KCONFIG_CONFIG="$obj/.config" "$tree/scripts/kconfig/merge_config.sh" \
		-m -O "$obj" "$obj/.config" $frags >/dev/null
	kmake "$tree" "$obj" -s olddefconfig >&2
	check_config "$obj" "$frags" || die "the $flavor config does not hold what kernel/config asks for"
	echo "$hash" >"$obj/.gmemuf-config"
}

# The tree's UAPI headers, installed for userspace; prints their directory.
install_headers() {
	local key=$1 tree=$2 obj="$cache/obj/$1-headers"

	mkdir -p "$obj"
	kmake "$tree" "$obj" -s headers_install INSTALL_HDR_PATH="$obj/usr" >&2
	echo "$obj/usr/include"
}

with_lock() {
	exec 9>"$cache/lock"
	flock 9
}

cmd=${1:-}
case $cmd in
tree)
	with_lock
	res=$(prepare_tree)
	echo "${res#* }"
	;;
obj)
	fragments "${2:-debug}" >/dev/null
	res=$(pristine)
	echo "$cache/obj/${res%% *}-${2:-debug}"
	;;
config|build)
	flavor=${2:-debug}
	fragments "$flavor" >/dev/null
	with_lock
	res=$(prepare_tree)
	key=${res%% *} tree=${res#* }
	obj="$cache/obj/$key-$flavor"
	configure "$flavor" "$tree" "$obj"
	if [ "$cmd" = build ]; then
		log "BUILD   $flavor kernel in $obj (log: $obj/build.log)"
		if ! kmake "$tree" "$obj" bzImage >"$obj/build.log" 2>&1; then
			grep -E 'error|Error|warning:' "$obj/build.log" | head -40 >&2
			tail -20 "$obj/build.log" >&2
			die "the $flavor kernel did not build"
		fi
		# A warning in our code is an error, as with KVM_WERROR.
		if grep -E '(virt/kvm|arch/x86/kvm).*warning:' "$obj/build.log" >&2; then
			die "the $flavor kernel built with warnings in KVM"
		fi
		echo "$obj/arch/x86/boot/bzImage"
	else
		echo "$obj"
	fi
	;;
headers)
	with_lock
	res=$(prepare_tree)
	install_headers "${res%% *}" "${res#* }"
	;;
pristine)
	# "<key> <dir>": the unpatched tree, and the key its products are
	# cached under.
	pristine
	;;
overlay-map)
	# "<file in this repository> <path in the tree>", one a line.
	overlay_files | sed "s|^$top/||"
	;;
kvm-selftests)
	# Build KVM selftests with the tree's own Makefile and library, static,
	# into the cache, and copy the binaries to <dest>. Tests are named as
	# in the tree's tools/testing/selftests/kvm: guest_memfd_test,
	# gmemuf/gmem_canary_test (ours, put there by the overlay).
	dest=${2:?kvm-selftests <dest> <test>...}
	shift 2
	[ $# -gt 0 ] || exit 0
	with_lock
	res=$(prepare_tree)
	key=${res%% *} tree=${res#* }
	hdr=$(install_headers "$key" "$tree")
	out="$cache/obj/$key-kvm-selftests"
	mkdir -p "$out" "$dest"
	# LDLIBS: the Makefiles' own (-ldl -luuid), and liburing for our handlers.
	if ! make -C "$tree/tools/testing/selftests/kvm" -j"$jobs" \
		OUTPUT="$out" KHDR_INCLUDES="-isystem $hdr" \
		EXTRA_CFLAGS=-static CC="ccache gcc" CCACHE_DIR="$cache/ccache" \
		LDLIBS="-ldl -luuid -luring" \
		TEST_GEN_PROGS_x86="$*" TEST_GEN_PROGS_EXTENDED_x86= \
		"${@/#/$out/}" >"$out/build.log" 2>&1; then
		grep -E 'error|warning' "$out/build.log" | head -40 >&2
		die "the KVM selftests did not build (log: $out/build.log)"
	fi
	if grep -E 'warning:' "$out/build.log" >&2; then
		die "the KVM selftests built with warnings (log: $out/build.log)"
	fi
	for t in "$@"; do
		cmp -s "$out/$t" "$dest/${t##*/}" || cp "$out/$t" "$dest/${t##*/}"
		echo "  KVMTEST $dest/${t##*/}" >&2
	done
	;;
*)
	sed -n '3,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
