#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Prove the harness can fail: boot the test kernel with tests that pass, fail,
# make the kernel WARN, and hang past their timeout, and check that vmtest.py
# judges each exactly so and exits non-zero.
#
#   check-harness.sh <bzImage> <workdir>
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kernel=$1 work=$2
data="$top/scripts/testdata"
mkdir -p "$work"

"$top/scripts/initramfs.sh" "$work/selfcheck.cpio.gz" "$data/selfcheck.list" \
	"$data"/harness_*.sh
status=0
python3 "$top/scripts/vmtest.py" run --kernel "$kernel" \
	--initrd "$work/selfcheck.cpio.gz" --list "$data/selfcheck.list" \
	--logs "$work/logs" --timeout 300 >"$work/out" 2>&1 || status=$?

fail() {
	echo "check-harness: $*; vmtest.py said:" >&2
	sed 's/^/    /' "$work/out" >&2
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
}
[ $status = 1 ] || fail "exit status $status, not 1"
for want in \
	'^FAIL harness_fails: fails$' \
	'^FAIL harness_hangs: killed: past its 3 s timeout$' \
	'^FAIL kernel warning during harness_warns: WARNING: .*lkdtm' \
	'^failed: harness_fails, harness_hangs, kernel warning during harness_warns$' \
	'^3 passed, 3 failed, 0 skipped$'; do
	grep -qE "$want" "$work/out" || fail "no line matches '$want'"
done
echo "  HARNESS the harness fails what it must (a failed case, a timeout, a WARN)"
