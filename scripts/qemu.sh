#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# QEMU, built from Debian's source package with our patch series
# (qemu/patches/series) applied: the VMM that the QEMU demo runs inside the
# test VM. Static, x86_64-softmmu, KVM only, so that it runs in the test
# VM's initramfs with no libraries; linked with this tree's libgmemuf
# (installed into the cache first), for post-copy into guest_memfd.
# Everything expensive lives under $GMEMUF_QEMU_CACHE (default
# ~/.cache/gmemuf-qemu), keyed by what produced it, so that a rebuild with
# nothing changed compiles nothing and a changed patch recompiles only the
# files it touches.
#
#   qemu.sh deps                 install the Debian packages the build needs
#   qemu.sh build                build qemu-system-x86_64, print its path
#   qemu.sh tree                 print the patched tree, refreshing it
#   qemu.sh pristine             print the key and the unpatched tree
#   qemu.sh firmware <dir>       copy the firmware a bzImage boot needs
#   qemu.sh firmware-list        print the firmware files, one a line
#   qemu.sh guest <dir>          build the demo's guest: <dir>/guest-bzImage
#                                (from kernel.sh's pristine tree and
#                                qemu/guest.config) and
#                                <dir>/guest-initramfs.cpio.gz
#
# Source, in order of preference:
#   QEMU_DSC=<file.dsc>     a Debian source package, its tarballs beside it
#   (neither)               qemu $version from Debian unstable, fetched
#                           with a private apt list and cache, and checked
#                           against the sha256 pinned below
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${GMEMUF_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmemuf-qemu}
jobs=${JOBS:-$(nproc)}

# The source package, pinned: unstable moves on, and a newer upload must be
# a decision, not an accident. The .dsc holds the sha256 of both tarballs,
# which dpkg-source checks.
version=1:10.2.2+ds-1
dsc_sha256=f1684b3aa5ec500c3389d346c6501dee45041ea91656c6556d4da9023b7987dd

# bookworm's meson is 1.0; QEMU 10.2 wants >= 1.5 (Debian's source drops
# the copy QEMU bundles).
meson_min=1.5

configure_opts=(
	--target-list=x86_64-softmmu
	--without-default-features
	--enable-kvm --disable-tcg
	--static
	--disable-docs
	--disable-install-blobs		# Debian's source has no firmware
	--disable-download		# nothing but what apt installed
	--python=/usr/bin/python3
	--enable-gmemuf			# post-copy with libgmemuf, below
)

die() { echo "qemu.sh: $*" >&2; exit 1; }
log() { echo "  $*" >&2; }

mkdir -p "$cache"

apt_private() {
	local apt="$cache/apt"
	mkdir -p "$apt/lists/partial" "$apt/archives/partial"
	cat >"$apt/sources.list" <<-EOF
	deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main
	deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
	EOF
	apt_opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
		  -o "Dir::Etc::SourceParts=-"
		  -o "Dir::State::Lists=$apt/lists"
		  -o "Dir::Cache=$apt"
		  -o "Dir::Cache::archives=$apt/archives"
		  -o "Debug::NoLocking=1"
		  -o "APT::Get::List-Cleanup=0"
		  -o "APT::Sandbox::User=root")
	if [ ! -f "$apt/.updated" ]; then
		apt-get "${apt_opts[@]}" -qq update >&2
		touch "$apt/.updated"
	fi
}

# --- build dependencies ------------------------------------------------------

pkgs=(
	build-essential ninja-build pkg-config python3 python3-venv
	python3-distlib flex bison dpkg-dev
	# static glib and pixman (libglib2.0-dev brings pcre2, ffi, zlib)
	libglib2.0-dev libpixman-1-dev zlib1g-dev
	# firmware for a bzImage boot: SeaBIOS, and QEMU's option ROMs
	seabios qemu-system-data
	# libgmemuf, linked in statically
	liburing-dev rsync
)

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

meson_ok() {
	command -v meson >/dev/null &&
		dpkg --compare-versions "$(meson --version)" ge "$meson_min"
}

deps() {
	local missing=() p sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	for p in "${pkgs[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "APT     ${missing[*]}"
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null
	fi
	meson_ok && return 0
	# meson from bookworm-backports, downloaded with the private list and
	# installed as a file, so that the machine's apt sources stay as
	# they are.
	apt_private
	mkdir -p "$cache/dl"
	(cd "$cache/dl" && apt-get "${apt_opts[@]}" -qq download \
		meson/bookworm-backports >&2)
	local deb
	deb=$(ls "$cache"/dl/meson_*bpo12*_all.deb | tail -n1)
	log "APT     $deb"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
		--no-install-recommends "$deb" >/dev/null
	meson_ok || die "meson $(meson --version 2>/dev/null) is older than $meson_min"
}

# --- the pristine source -----------------------------------------------------

fetch_dsc() {
	local dsc="$cache/dl/qemu_${version#*:}.dsc"
	if [ ! -f "$dsc" ]; then
		log "FETCH   qemu $version (source, unstable)"
		apt_private
		mkdir -p "$cache/dl"
		(cd "$cache/dl" && apt-get "${apt_opts[@]}" -qq source \
			--download-only "qemu=$version" >&2) ||
			die "could not download qemu $version; give QEMU_DSC=<file.dsc>"
	fi
	echo "$dsc"
}

# Print "<key> <pristine dir>": Debian's source package unpacked with its
# own patches (dpkg-source -x), once per .dsc, keyed by the .dsc's sha256,
# which pins both tarballs.
pristine() {
	local dsc=${QEMU_DSC:-} sum key dir
	if [ -z "$dsc" ]; then
		dsc=$(fetch_dsc)
		sum=$(sha256sum "$dsc" | cut -d' ' -f1)
		[ "$sum" = "$dsc_sha256" ] ||
			die "$dsc: sha256 $sum, expected $dsc_sha256"
	fi
	[ -f "$dsc" ] || die "QEMU_DSC=$dsc: no such file"
	key=dsc-$(sha256sum "$dsc" | cut -c1-16)
	dir="$cache/src/$key"
	if [ ! -f "$dir/.unpacked" ]; then
		log "UNPACK  ${dsc##*/}"
		rm -rf "$dir"
		mkdir -p "$dir"
		# Checks the tarballs against the .dsc; there is no keyring
		# for the uploader's signature, and apt checked the archive's.
		dpkg-source -q -x "$dsc" "$dir/qemu" >"$dir/unpack.log" 2>&1 ||
			{ cat "$dir/unpack.log" >&2; die "dpkg-source -x $dsc failed"; }
		[ -f "$dir/qemu/VERSION" ] || die "$dsc: not QEMU"
		touch "$dir/.unpacked"
	fi
	echo "$key $dir/qemu"
}

# --- the patched tree --------------------------------------------------------

series() {
	local s="$top/qemu/patches/series"
	[ -f "$s" ] || return 0
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$s" | awk '{ print $1 }'
}

patch_paths() {
	awk '/^(\+\+\+|---) [ab]\// { sub(/^(\+\+\+|---) [ab]\//, ""); sub(/\t.*/, ""); print }' "$1" | sort -u
}

# As in kernel.sh: the patches are applied in a staging directory to
# pristine copies of the files they touch, and only files whose contents
# changed are written into the tree, so that ninja recompiles only what a
# changed patch touches; a file no patch touches any more is restored.
apply_series() {
	local src=$1 tree=$2 stage manifest new p f
	stage=$(mktemp -d "$cache/stage.XXXXXX")
	for p in $(series); do
		[ -f "$top/qemu/patches/$p" ] || die "series names $p, which does not exist"
		for f in $(patch_paths "$top/qemu/patches/$p"); do
			[ -e "$stage/$f" ] && continue
			if [ -f "$src/$f" ]; then
				mkdir -p "$stage/$(dirname "$f")"
				cp -p "$src/$f" "$stage/$f"
			fi
		done
	done
	for p in $(series); do
		patch -d "$stage" -p1 -s -f -N --no-backup-if-mismatch \
			-i "$top/qemu/patches/$p" >"$stage.log" 2>&1 ||
			{ cat "$stage.log" >&2; rm -rf "$stage" "$stage.log"; die "qemu/patches/$p does not apply"; }
		rm -f "$stage.log"
	done

	manifest="$tree/.gmemuf-overlay"
	new=$(cd "$stage" && find . -type f | sed 's|^\./||' | sort)
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
	while read -r f; do
		[ -n "$f" ] || continue
		cmp -s "$stage/$f" "$tree/$f" && continue
		log "PATCH   $f"
		mkdir -p "$tree/$(dirname "$f")"
		cp "$stage/$f" "$tree/$f.gmemuf-tmp"
		mv "$tree/$f.gmemuf-tmp" "$tree/$f"
	done <<<"$new"
	printf '%s\n' "$new" >"$manifest.tmp"
	mv "$manifest.tmp" "$manifest"
	rm -rf "$stage"
}

prepare_tree() {
	local res key src tree
	res=$(pristine)
	key=${res%% *} src=${res#* }
	tree="$cache/tree/$key"
	if [ ! -f "$tree/.gmemuf-copied" ]; then
		log "COPY    $src"
		rm -rf "$tree"
		mkdir -p "$tree"
		cp -a "$src/." "$tree/"
		touch "$tree/.gmemuf-copied"
	fi
	apply_series "$src" "$tree"
	echo "$key $tree"
}

# --- configure and build -------------------------------------------------------

# libgmemuf, built from this tree and installed (static and shared, with
# its pkg-config file) in the cache, where configure finds it. Files whose
# contents did not change keep their timestamps, so that QEMU is not
# relinked for nothing.
install_libgmemuf() {
	local stage="$cache/libgmemuf-stage" kerneldoc=${KERNELDOC:-}
	rm -rf "$stage"
	mkdir -p "$cache/libgmemuf-build"
	# install writes the man pages too, with the kernel's kernel-doc
	if [ -z "$kerneldoc" ]; then
		kerneldoc=$("$top/scripts/kernel.sh" pristine | cut -d' ' -f2)/scripts/kernel-doc
	fi
	make --no-print-directory -C "$top" -f libgmemuf/Makefile \
		O="$cache/libgmemuf-build" PREFIX="$cache/libgmemuf" \
		KERNELDOC="$kerneldoc" DESTDIR="$stage" install >"$cache/libgmemuf-build/install.log" 2>&1 ||
		{ tail -20 "$cache/libgmemuf-build/install.log" >&2; die "libgmemuf did not build"; }
	mkdir -p "$cache/libgmemuf"
	rsync -rlc --delete "$stage$cache/libgmemuf/" "$cache/libgmemuf/"
	rm -rf "$stage"
	export PKG_CONFIG_PATH="$cache/libgmemuf/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
}

build() {
	local res key tree obj hash
	res=$(prepare_tree)
	key=${res%% *} tree=${res#* }
	obj="$cache/obj/$key"
	install_libgmemuf
	hash=$(printf '%s\n' "${configure_opts[@]}" | sha256sum | cut -c1-16)
	if [ ! -f "$obj/build.ninja" ] ||
	   [ "$(cat "$obj/.gmemuf-config" 2>/dev/null)" != "$hash" ]; then
		log "CONFIG  qemu in $obj"
		rm -rf "$obj"
		mkdir -p "$obj"
		(cd "$obj" && "$tree/configure" "${configure_opts[@]}") \
			>"$obj/configure.log" 2>&1 ||
			{ tail -30 "$obj/configure.log" >&2; die "configure failed (log: $obj/configure.log)"; }
		echo "$hash" >"$obj/.gmemuf-config"
	fi
	log "BUILD   qemu-system-x86_64 in $obj (log: $obj/build.log)"
	if ! ninja -C "$obj" -j"$jobs" qemu-system-x86_64 >"$obj/build.log" 2>&1; then
		grep -E 'error|FAILED' "$obj/build.log" | head -40 >&2
		die "qemu did not build (log: $obj/build.log)"
	fi
	if grep -E '^[^ ]*\.[ch]:[0-9]+:[0-9]+: warning:' "$obj/build.log" >&2; then
		die "qemu built with warnings (log: $obj/build.log)"
	fi
	file -L "$obj/qemu-system-x86_64" | grep -qE 'static(ally|-pie) linked' ||
		die "$obj/qemu-system-x86_64 is not static"
	echo "$obj/qemu-system-x86_64"
}

# SeaBIOS and the option ROMs that -kernel and the q35/pc machines load.
# None is patched by us: bookworm's are used as they are.
firmware_files=(
	/usr/share/seabios/bios-256k.bin
	/usr/share/qemu/linuxboot_dma.bin
	/usr/share/qemu/kvmvapic.bin
)

firmware() {
	local dest=${1:?firmware <dir>} f
	mkdir -p "$dest"
	for f in "${firmware_files[@]}"; do
		[ -f "$f" ] || die "$f is missing (qemu.sh deps installs it)"
		cmp -s "$f" "$dest/${f##*/}" || cp "$f" "$dest/${f##*/}"
	done
}

# The guest kernel, built from the same pristine Linux tree as the test
# kernel (scripts/kernel.sh pristine), with no gmemuf patch: the guest does
# not need one. Its objects live in this cache, keyed by that tree.
guest_kernel() {
	local res key src obj frag="$top/qemu/guest.config" hash line sym bad=0
	res=$("$top/scripts/kernel.sh" pristine)
	key=${res%% *} src=${res#* }
	obj="$cache/guest-kernel/$key"
	hash=$(sha256sum "$frag" | cut -c1-16)
	local kmake=(make -C "$src" O="$obj" -j"$jobs" CC="ccache gcc"
		     HOSTCC="ccache gcc" KBUILD_BUILD_TIMESTAMP=gmemuf
		     KBUILD_BUILD_USER=gmemuf KBUILD_BUILD_HOST=gmemuf)
	export CCACHE_DIR="$cache/ccache" CCACHE_BASEDIR="$src"
	mkdir -p "$obj"
	if [ "$(cat "$obj/.gmemuf-config" 2>/dev/null)" != "$hash" ]; then
		log "CONFIG  guest kernel in $obj"
		"${kmake[@]}" -s tinyconfig >&2
		KCONFIG_CONFIG="$obj/.config" "$src/scripts/kconfig/merge_config.sh" \
			-m -O "$obj" "$obj/.config" "$frag" >/dev/null
		"${kmake[@]}" -s olddefconfig >&2
		while IFS= read -r line; do
			case $line in CONFIG_*=*) ;; *) continue ;; esac
			grep -qxF "$line" "$obj/.config" && continue
			sym=${line%%=*}
			echo "qemu.sh: guest.config: wanted '$line', got '$(grep -E "^(# )?$sym[= ]" "$obj/.config")'" >&2
			bad=1
		done <"$frag"
		[ $bad = 0 ] || die "the guest kernel's config does not hold what qemu/guest.config asks for"
		echo "$hash" >"$obj/.gmemuf-config"
	fi
	log "BUILD   guest kernel (log: $obj/build.log)"
	"${kmake[@]}" bzImage >"$obj/build.log" 2>&1 ||
		{ tail -20 "$obj/build.log" >&2; die "the guest kernel did not build"; }
	echo "$obj/arch/x86/boot/bzImage"
}

# The guest's initramfs: qemu/memcheck.c, static, as /init.
guest_initramfs() {
	local out=$1 root
	root=$(mktemp -d)
	mkdir -p "$root/dev"
	gcc -O2 -Wall -Wextra -Werror -static -o "$root/init" "$top/qemu/memcheck.c"
	(cd "$root" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --quiet --owner=0:0) | gzip -1 -n >"$out.tmp"
	rm -rf "$root"
	mv "$out.tmp" "$out"
}

guest() {
	local dest=${1:?guest <dir>} bz
	mkdir -p "$dest"
	bz=$(guest_kernel)
	cmp -s "$bz" "$dest/guest-bzImage" || cp "$bz" "$dest/guest-bzImage"
	guest_initramfs "$dest/guest-initramfs.cpio.gz"
}

with_lock() {
	exec 9>"$cache/lock"
	flock 9
}

cmd=${1:-}
case $cmd in
deps)
	deps
	;;
build)
	with_lock
	build
	;;
tree)
	with_lock
	res=$(prepare_tree)
	echo "${res#* }"
	;;
pristine)
	with_lock
	pristine
	;;
firmware)
	firmware "${2:-}"
	;;
firmware-list)
	printf '%s\n' "${firmware_files[@]}"
	;;
guest)
	with_lock
	guest "${2:-}"
	;;
*)
	sed -n '3,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
