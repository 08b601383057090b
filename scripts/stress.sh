#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# make stress: run the examples of a stress list again and again in one test
# VM, while busy loops on the host compete with QEMU for its CPUs: the
# conditions under which a race that an idle machine never loses shows up.
#
#   stress.sh <bzImage> <initrd> <list> <logs> <runs> <spinners>
#
# <spinners> busy loops (default: one per host CPU) run beside QEMU for the
# whole VM run; they are killed when this script ends, however it ends.
# vmtest.py --repeat says how many runs of each test passed and keeps the
# logs of the failed ones in <logs>/failures/.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kernel=$1 initrd=$2 list=$3 logs=$4 runs=$5 spinners=$6

spinning=()
stop_spinning() {
	local pid

	for pid in "${spinning[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "${spinning[@]}"; do
		wait "$pid" 2>/dev/null
	done
	spinning=()
}
trap stop_spinning EXIT
# Background jobs of a script ignore SIGINT: an interrupt ends this script,
# whose EXIT trap ends them.
trap 'exit 130' INT TERM HUP

for ((i = 0; i < spinners; i++)); do
	(while :; do :; done) &
	spinning+=($!)
done

# Time enough for every run of every test, at its own timeout, and a boot.
per_run=$(awk '!/^#/ && NF { t += $2 } END { print t }' "$list")
timeout=$((per_run * runs + 600))

echo "  STRESS  $runs runs of $(awk '!/^#/ && NF { printf "%s ", $1 }' "$list")beside $spinners host busy loops (logs: $logs)"
start=$(date +%s)
python3 "$top/scripts/vmtest.py" run --kernel "$kernel" --initrd "$initrd" \
	--list "$list" --logs "$logs" --timeout "$timeout" --repeat "$runs"
status=$?
echo "  STRESS  done in $(($(date +%s) - start)) s"
exit $status
