/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A stall watchdog for the examples: when a program stops making progress,
 * it dumps what the program's threads, and its peers', are doing in the
 * kernel, and fails, so that a hang can be diagnosed from the log alone.
 *
 * Progress is a counter that watchdog_progress() bumps (vmm.c does, on each
 * report of the guest), and, if the watchdog was given a userfault
 * guest_memfd, any fall in its count of missing pages. When neither moves
 * for the timeout, the watchdog prints to stdout:
 *  - a header naming the program and the stall, the progress counter, and
 *    the guest_memfd's missing pages (count, and the first of them);
 *  - for this process and each peer, every thread's state, wchan, system
 *    call and kernel stack (/proc/PID/task/TID/...), sampled five times
 *    200 ms apart, with the CPU time each thread used meanwhile: a spinning
 *    thread shows up as one that used all of it;
 *  - if it was given the vCPU, the vCPU's KVM stats that moved over those
 *    samples (exits, faults taken and fixed...) and their totals: they
 *    tell a vCPU that retries a fault from one that runs the guest or
 *    leaves KVM_RUN again and again;
 *  - the kernel's sysrq-w (blocked tasks) and sysrq-l (a backtrace of every
 *    CPU), read back from /dev/kmsg, between "gmemuf: watchdog dump" lines
 *    that it writes there;
 * and exits with WATCHDOG_STALLED.
 *
 * The timeout is multiplied by GMEMUF_TIMEOUT_SCALE from the environment,
 * which the test VM's /init sets from TIMEOUT_SCALE.
 */
#ifndef EXAMPLES_WATCHDOG_H
#define EXAMPLES_WATCHDOG_H

#include <sys/types.h>

/* The exit status of a program that the watchdog ended. */
#define WATCHDOG_STALLED	3

/* Seconds without progress before a dump: generous, for a loaded TCG VM. */
#define WATCHDOG_DEFAULT	60

/*
 * Start watching, as @name: @seconds without progress (0: never), with the
 * missing pages of the userfault guest_memfd @gmem as progress too (or -1),
 * and the stats of vCPU @vcpu in the dump (or -1). Called before the vCPU
 * runs: KVM_RUN holds the vCPU's mutex, which its stats fd is got under.
 */
void watchdog_start(const char *name, unsigned int seconds, int gmem,
		    int vcpu);

/* Dump the threads of process @pid too, after this process's own. */
void watchdog_add_peer(pid_t pid);

/* Something moved on. */
void watchdog_progress(void);

/* A deliberate pause (a test's handler holding faults): stop watching. */
void watchdog_stop(void);

#endif /* EXAMPLES_WATCHDOG_H */
