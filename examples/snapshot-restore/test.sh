#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# snapshot-test: lazy restore from a snapshot with a handler that is killed
# midway. Saves a guest, restores it with every page missing, serves the
# faults from a separate handler process, kills that handler (SIGKILL) once
# a quarter of the memory is in and it holds fault records it will not
# resolve (--hold-at), starts a second one, and checks that the
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

echo "1..5"
if "$bin/snapshot-vm" save snap --mem "$mem"; then
	ok "snapshot saved"
else
	not_ok "snapshot saved"
	exit 1
fi

"$bin/snapshot-vm" restore snap sock >vm.log 2>&1 &
vm=$!
# A quarter of the pages in (4 KiB pages: 256 a MiB), it stops populating.
# Should the restore stall, a handler's watchdog dumps the VMM's threads too.
"$bin/snapshot-handler" sock snap --name first --hold-at $((mem * 64)) \
	--watchdog-peer $vm >first.log 2>&1 &
first=$!

# Kill it once it holds fault records it will not resolve: the guest,
# which reads every page, soon faults on one of those still missing.
tries=0
until grep -q withholding first.log; do
	tries=$((tries + 1))
	if [ $tries -gt 600 ] || ! kill -0 $first 2>/dev/null; then
		break
	fi
	sleep 0.2
done
kill -KILL $first 2>/dev/null
wait $first
status=$?
missing=$(sed -n 's/.*holding with \([0-9]*\) pages missing.*/\1/p' first.log)
cat first.log
if [ $status -eq 137 ] && grep -q withholding first.log; then
	ok "first handler killed holding fault records, $missing pages missing"
else
	not_ok "first handler killed holding fault records (status $status)"
fi

if kill -0 $vm 2>/dev/null; then
	ok "the guest is still waiting for its memory"
else
	not_ok "the guest is still waiting for its memory"
fi

"$bin/snapshot-handler" sock snap --name second --watchdog-peer $vm \
	>second.log 2>&1
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
