#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Install the Debian packages gmemuf needs to build the kernel, the library,
# the tests and the examples, and to run them in QEMU. Idempotent: with
# everything present it only checks, and it needs root only to install.
set -euo pipefail

pkgs=(
	# the kernel
	build-essential bc bison flex libelf-dev libssl-dev cpio kmod rsync
	xz-utils zstd python3 perl ccache
	# make bench: its plot; make bench-profile: perf, packed into the VM
	python3-matplotlib linux-perf
	# the test VM
	qemu-system-x86 busybox-static file
	# the library, the tests, the examples
	liburing-dev libcap-dev uuid-dev pkg-config iproute2
	# abi.sh renders the man pages of the library
	man-db groff-base
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
	"${missing[@]}" >/dev/null
