#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# postcopy-stall-test: the watchdog fires, and its dump says where things
# are. Runs the post-copy demo with a destination that serves no fault
# (--stall): its guest waits for ever for its first page. The destination's
# watchdog must end it (exit status 3, which the demo expects with --stall)
# after a dump that holds the missing pages of its guest_memfd, the kernel
# stack of its vCPU waiting for a page, the vCPU's stats, the source's
# threads (the peer), and sysrq-w and -l from the kernel log. TAP output.
#
#   postcopy-stall-test

bin=$(dirname "$0")
n=0 failed=0

check() {
	desc=$1
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $desc"
	else
		failed=1
		echo "not ok $n - $desc"
	fi
}

has() {
	grep -q -- "$1" demo.log
}

echo "1..8"
# 8 MiB: 2048 pages, none of which is ever populated. 10 s: time enough,
# even on a loaded machine, for the vCPU to take its first fault.
"$bin/postcopy-demo" --mem 8 --stall --watchdog 10 >demo.log 2>&1
status=$?
cat demo.log

check "the demo saw the destination's watchdog end it (status $status)" \
	test $status -eq 0
check "the dump names the stalled program" \
	has "^watchdog: ==== postcopy-dst (pid [0-9]*): no progress for [0-9]* s"
check "the dump counts the missing pages" \
	has "^watchdog: guest_memfd: 2048 of 2048 pages missing"
check "the vCPU's kernel stack waits for its page" \
	has "^    .*gmemuf_fault_vcpu"
check "the vCPU thread is seen sleeping, not spinning" \
	has "^watchdog: thread [0-9]* (postcopy-dst): state S, .*sleeping or waiting"
check "the dump has the vCPU's stats: it took a fault" \
	has "^watchdog: vCPU stats, totals:.* pf_taken [1-9]"
check "the dump holds the source's threads" \
	has "^watchdog: ---- process [0-9]* (postcopy-src): [0-9]* threads"
check "the dump holds sysrq-w and sysrq-l from the kernel log" \
	sh -c 'grep -q "^kmsg: sysrq: Show Blocked State" demo.log &&
	       grep -q "^kmsg: sysrq: Show backtrace of all active CPUs" demo.log'
exit $failed
