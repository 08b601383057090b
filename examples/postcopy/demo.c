// SPDX-License-Identifier: GPL-2.0-only
/*
 * postcopy-demo: a post-copy migration between two network namespaces.
 *
 * Makes two network namespaces joined by a veth pair, starts postcopy-src
 * in one and postcopy-dst in the other (they are found next to this
 * program), and succeeds if both do: the destination's guest must report
 * the source's checksum, with every page present at the end.
 *
 *   postcopy-demo [--mem MiB] [--bandwidth MB/s] [--exit] [--corrupt]
 *                 [--watchdog SECONDS]
 *
 * --corrupt has the source flip a bit of a page as it sends it, and turns
 * the verdict around: the demo succeeds if the destination fails.
 *
 * --watchdog goes to the destination, whose watchdog dumps the source's
 * threads too if it fires. --stall, for the test of the watchdog, has the
 * destination serve no fault, and succeeds if its watchdog ends it.
 */
#include <err.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "netns.h"
#include "util.h"
#include "vmm.h"
#include "watchdog.h"

#define SRC_ADDR	"10.77.0.1"
#define DST_ADDR	"10.77.0.2"

static char bindir[PATH_MAX];

/* Run @prog from this program's directory in the namespace @ns. */
static pid_t spawn(int ns, const char *prog, char *const args[])
{
	char path[PATH_MAX + 32];
	char *argv[16] = { path };
	pid_t pid;
	int i;

	snprintf(path, sizeof(path), "%s/%s", bindir, prog);
	for (i = 0; i < 14 && args[i]; i++)
		argv[i + 1] = args[i];
	pid = fork();
	if (pid < 0)
		err(1, "fork");
	if (!pid) {
		netns_enter(ns);
		execv(path, argv);
		err(127, "exec %s", path);
	}
	return pid;
}

#define SRC_FAILED	1
#define DST_FAILED	2
#define DST_UNSUPPORTED	4
#define DST_STALLED	8

/*
 * Wait for both; returns which failed. The first to fail takes the other
 * down: a source that fails may leave the destination trying to connect,
 * and a destination that fails before the source accepted both of its
 * connections leaves the source in accept() for ever.
 */
static int wait_both(pid_t src, pid_t dst)
{
	int status, left, failed = 0;
	pid_t pid, killed = 0;
	const char *name;

	for (left = 2; left; left--) {
		pid = wait(&status);
		if (pid < 0)
			err(1, "wait");
		name = pid == src ? "postcopy-src" : "postcopy-dst";
		if ((WIFEXITED(status) && !WEXITSTATUS(status)) ||
		    pid == killed)
			continue;
		if (pid == dst && WIFEXITED(status) &&
		    WEXITSTATUS(status) == VMM_UNSUPPORTED) {
			failed |= DST_UNSUPPORTED;
		} else if (pid == dst && WIFEXITED(status) &&
			   WEXITSTATUS(status) == WATCHDOG_STALLED) {
			printf("demo: postcopy-dst stalled: its watchdog's dump is above\n");
			failed |= DST_STALLED;
		} else {
			if (WIFSIGNALED(status))
				printf("demo: %s killed by signal %d\n", name,
				       WTERMSIG(status));
			else
				printf("demo: %s failed, exit status %d\n",
				       name, WEXITSTATUS(status));
			failed |= pid == src ? SRC_FAILED : DST_FAILED;
		}
		if (left == 2) {
			killed = pid == src ? dst : src;
			kill(killed, SIGKILL);
		}
	}
	return failed;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mem", required_argument, NULL, 'm' },
		{ "bandwidth", required_argument, NULL, 'b' },
		{ "exit", no_argument, NULL, 'e' },
		{ "corrupt", no_argument, NULL, 'c' },
		{ "watchdog", required_argument, NULL, 'w' },
		{ "stall", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	char *src_args[] = { "--listen", SRC_ADDR, "--mem", "64",
			     "--bandwidth", "0", NULL, NULL };
	char *dst_args[10] = { "--source", SRC_ADDR };
	char **dst_opt = &dst_args[2];
	char *watchdog = NULL, src_pid[16];
	bool exit_mode = false, stall = false;
	int c, ns_src, ns_dst, failed, want = 0;
	pid_t src, dst;
	ssize_t n;
	double t;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			parse_num("--mem", optarg);
			src_args[3] = optarg;
			break;
		case 'b':
			parse_num("--bandwidth", optarg);
			src_args[5] = optarg;
			break;
		case 'e':
			exit_mode = true;
			break;
		case 'c':
			src_args[6] = "--corrupt";
			want = DST_FAILED;
			break;
		case 'w':
			parse_num("--watchdog", optarg);
			watchdog = optarg;
			break;
		case 'S':
			stall = true;
			want = DST_STALLED;
			break;
		default:
			fprintf(stderr,
				"usage: postcopy-demo [--mem MiB] [--bandwidth MB/s] [--exit] [--corrupt]\n"
				"                     [--watchdog SECONDS]\n");
			return 2;
		}
	}

	n = readlink("/proc/self/exe", bindir, sizeof(bindir) - 1);
	if (n < 0)
		err(1, "readlink /proc/self/exe");
	bindir[n] = 0;
	dirname(bindir);

	ns_src = netns_create();
	ns_dst = netns_create();
	netns_veth("veth-src", ns_src, SRC_ADDR "/24",
		   "veth-dst", ns_dst, DST_ADDR "/24");
	printf("demo: post-copy of a %s MiB guest from %s (source namespace) to %s (destination namespace)\n",
	       src_args[3], SRC_ADDR, DST_ADDR);

	t = now();
	src = spawn(ns_src, "postcopy-src", src_args);
	/* If the destination's watchdog fires, it dumps the source too. */
	snprintf(src_pid, sizeof(src_pid), "%d", src);
	*dst_opt++ = "--watchdog-peer";
	*dst_opt++ = src_pid;
	if (watchdog) {
		*dst_opt++ = "--watchdog";
		*dst_opt++ = watchdog;
	}
	if (exit_mode)
		*dst_opt++ = "--exit";
	if (stall)
		*dst_opt++ = "--stall";
	dst = spawn(ns_dst, "postcopy-dst", dst_args);
	failed = wait_both(src, dst);
	close(ns_src);
	close(ns_dst);
	if (failed == DST_UNSUPPORTED) {
		printf("demo: skipped: the kernel lacks what the destination needs\n");
		return VMM_UNSUPPORTED;
	}
	if (want == DST_FAILED)
		printf("demo: a corrupted page was sent; the destination %s\n",
		       failed == want ? "caught it, as it must" : "did NOT fail");
	if (want == DST_STALLED)
		printf("demo: the destination served no fault; its watchdog %s\n",
		       failed == want ? "ended it, as it must" : "did NOT");
	printf("demo: %s in %.1f s\n", failed == want ? "ok" : "FAILED",
	       now() - t);
	return failed == want ? 0 : 1;
}
