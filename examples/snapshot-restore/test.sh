#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# snapshot-test: lazy restore from a snapshot with a handler that is killed
# midway. Saves a guest, restores it with every page missing, serves the
# faults from a separate handler process, kills that handler (SIGKILL) once
# part of the memory is in, starts a second one, and checks that the
# restore finishes with the right contents: the guest's own checksum and
# the VMM's read-back (snapshot-vm restore's exit status), and the second
# handler's count of missing pages. TAP output.
#
#   snapshot-test [MiB]

bin=$(dirname "$0")
mem=${1:-32}
n=0 failed=0

ok() {
	n=$((n + 1))
	echo "ok $n - $*"
}

not_ok() {
	n=$((n + 1))
	failed=1
	echo "not ok $n - $*"
}

# present/total from a handler's last progress line.
present() {
	sed -n 's/.* present \([0-9]*\)\/\([0-9]*\).*/\1 \2/p' "$1" | tail -n 1
}

echo "1..5"
if "$bin/snapshot-vm" save snap --mem "$mem"; then
	ok "snapshot saved"
else
	not_ok "snapshot saved"
	exit 1
fi

"$bin/snapshot-vm" restore snap sock >vm.log 2>&1 &
vm=$!
# Slow prefetch, so that the kill comes while pages are still missing.
"$bin/snapshot-handler" sock snap --name first --rate 400 >first.log 2>&1 &
first=$!

# Kill the first handler once a quarter of the memory is present.
tries=0
while :; do
	set -- $(present first.log)
	[ $# -eq 2 ] && [ $(($1 * 4)) -ge "$2" ] && break
	tries=$((tries + 1))
	if [ $tries -gt 600 ] || ! kill -0 $first 2>/dev/null; then
		break
	fi
	sleep 0.2
done
kill -KILL $first 2>/dev/null
wait $first
status=$?
set -- $(present first.log)
cat first.log
if [ $status -eq 137 ] && [ $# -eq 2 ] && [ "$1" -lt "$2" ]; then
	ok "first handler killed midway, $1 of $2 pages present"
else
	not_ok "first handler killed midway (status $status, present: $*)"
fi

if kill -0 $vm 2>/dev/null; then
	ok "the guest is still waiting for its memory"
else
	not_ok "the guest is still waiting for its memory"
fi

"$bin/snapshot-handler" sock snap --name second >second.log 2>&1
status=$?
cat second.log
if [ $status -eq 0 ]; then
	ok "second handler finished the restore"
else
	not_ok "second handler finished the restore (status $status)"
fi

wait $vm
status=$?
cat vm.log
if [ $status -eq 0 ]; then
	ok "restored guest checksum and read-back match the snapshot"
else
	not_ok "restored guest checksum and read-back match the snapshot (status $status)"
fi
exit $failed
