// SPDX-License-Identifier: GPL-2.0-only
/*
 * snapshot-vm: save a guest to a snapshot file, and restore it lazily.
 *
 *   snapshot-vm save FILE [--mem MiB]
 *	Runs the guest's first phase (it fills its memory), stops it and
 *	writes the vCPU state and the memory image to FILE.
 *   snapshot-vm restore FILE SOCKET [--watchdog SECONDS]
 *	Starts the guest from FILE's vCPU state with every page of its
 *	guest_memfd missing, and lets handlers bring the memory in: each
 *	process that connects to the UNIX socket SOCKET receives the
 *	guest_memfd (SCM_RIGHTS) and serves its faults (snapshot-handler).
 *	The VMM itself never reads FILE's image. Handlers may come and go: a
 *	fault a dead handler did not resolve goes to the next one.
 *	Succeeds if the guest's second phase reports the checksum of the
 *	snapshot and the memory read back equals the snapshot's image.
 *	Fails with a dump of its threads (watchdog.h) if no page arrives and
 *	the guest reports nothing for --watchdog seconds (60).
 *
 * The guest_memfd is shared and mapped into the VMM, for two reasons: the
 * read-back check, and the vCPU's fallback when KVM_RUN stops on a missing
 * page instead of waiting (see touch_pages()).
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "guest_abi.h"
#include "snapshot.h"
#include "util.h"
#include "vmm.h"
#include "watchdog.h"

static int save(const char *path, uint64_t mem)
{
	struct snapshot_header hdr = { .magic = SNAPSHOT_MAGIC };
	struct vmm vm;
	int fd;

	vmm_create(&vm, VMM_SHARED, mem * MiB, 0);
	hdr.checksum = vmm_run_fill(&vm);
	vmm_get_state(&vm, &hdr.state);
	hdr.mem_size = vm.mem_size;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		err(1, "%s", path);
	write_full(fd, &hdr, sizeof(hdr), path);
	if (lseek(fd, SNAPSHOT_IMAGE, SEEK_SET) < 0)
		err(1, "lseek %s", path);
	write_full(fd, vm.mem, vm.mem_size, path);
	if (fsync(fd) || close(fd))
		err(1, "%s", path);
	printf("vm: saved %llu MiB to %s, checksum 0x%016llx\n",
	       (unsigned long long)mem, path,
	       (unsigned long long)hdr.checksum);
	vmm_destroy(&vm);
	return 0;
}

struct restore {
	struct vmm vm;
	int listener;
	unsigned int handlers;		/* how many connected */
	uint64_t touched;		/* pages the vCPU fallback waited for */
};

/* Give the guest_memfd to every handler that connects. */
static void *accept_handlers(void *arg)
{
	struct restore *r = arg;
	struct snapshot_hello hello = {
		.magic = SNAPSHOT_MAGIC,
		.mem_size = r->vm.mem_size,
	};
	int conn, ret;

	for (;;) {
		conn = accept4(r->listener, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			/* restore() shut the listener down: we are done. */
			if (errno == EINVAL)
				return NULL;
			/* A client that gave up is no reason to stop. */
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			err(1, "accept");
		}
		ret = send_fd(conn, r->vm.gmem, &hello, sizeof(hello));
		close(conn);
		if (ret) {
			warnx("vm: a handler left before it got the guest_memfd: %s",
			      strerror(-ret));
			continue;
		}
		printf("vm: handler %u connected, sent it the guest_memfd\n",
		       __atomic_add_fetch(&r->handlers, 1, __ATOMIC_RELAXED));
	}
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		errx(2, "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		err(1, "socket(AF_UNIX)");
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		err(1, "bind %s", path);
	if (listen(fd, 4))
		err(1, "listen %s", path);
	return fd;
}

/*
 * KVM_RUN stopped on missing pages (exit mode, or a kernel whose vCPUs
 * cannot wait): touch them through the mapping. That user-mode fault is
 * posted to the handlers like any other, and waits until one populates
 * the page, however many handlers come and go meanwhile.
 */
static void touch_pages(void *arg, uint64_t gpa, uint64_t size)
{
	struct restore *r = arg;
	uint64_t off;

	for (off = gpa & ~(GUEST_PAGE_SIZE - 1); off < gpa + size;
	     off += GUEST_PAGE_SIZE) {
		(void)*(volatile uint8_t *)(r->vm.mem + off);
		r->touched++;
	}
}

/* Compare the data pages with the snapshot's image, through the mapping. */
static uint64_t read_back(struct restore *r, int fd)
{
	static uint8_t page[GUEST_PAGE_SIZE];
	uint64_t gpa, differ = 0;

	for (gpa = GUEST_DATA_GPA; gpa < r->vm.mem_size; gpa += GUEST_PAGE_SIZE) {
		if (pread(fd, page, sizeof(page), SNAPSHOT_IMAGE + gpa) !=
		    sizeof(page))
			err(1, "pread snapshot");
		if (memcmp(page, r->vm.mem + gpa, sizeof(page)))
			differ++;
		/* Minutes for 400 MiB under a debug kernel on a loaded TCG. */
		watchdog_progress();
	}
	return differ;
}

static int restore(const char *path, const char *sock, unsigned int watchdog)
{
	struct snapshot_header hdr;
	struct restore r = { 0 };
	uint64_t sum, differ;
	pthread_t acceptor;
	double t;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		err(1, "%s", path);
	if (!read_full(fd, &hdr, sizeof(hdr), path) ||
	    hdr.magic != SNAPSHOT_MAGIC)
		errx(1, "%s: not a snapshot", path);

	vmm_create(&r.vm, VMM_SHARED, hdr.mem_size, VMM_USERFAULT);
	vmm_set_state(&r.vm, &hdr.state);
	r.listener = listen_unix(sock);
	errno = pthread_create(&acceptor, NULL, accept_handlers, &r);
	if (errno)
		err(1, "pthread_create");
	printf("vm: restoring %llu MiB from %s, all missing; handlers connect to %s\n",
	       (unsigned long long)(hdr.mem_size / MiB), path, sock);

	t = now();
	watchdog_start("snapshot-vm", watchdog, r.vm.gmem, r.vm.vcpu);
	sum = vmm_run_check(&r.vm, touch_pages, &r);
	printf("vm: guest done after %.1f s: checksum 0x%016llx, snapshot 0x%016llx: %s\n",
	       now() - t, (unsigned long long)sum,
	       (unsigned long long)hdr.checksum,
	       sum == hdr.checksum ? "match" : "MISMATCH");

	differ = read_back(&r, fd);
	printf("vm: read back: %llu data pages differ from the snapshot; %u handlers, %llu pages waited for after a vCPU exit\n",
	       (unsigned long long)differ, r.handlers,
	       (unsigned long long)r.touched);

	shutdown(r.listener, SHUT_RDWR);
	pthread_join(acceptor, NULL);
	close(r.listener);
	unlink(sock);
	close(fd);
	vmm_destroy(&r.vm);
	return sum == hdr.checksum && !differ ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: snapshot-vm save FILE [--mem MiB]\n"
		"       snapshot-vm restore FILE SOCKET [--watchdog SECONDS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mem", required_argument, NULL, 'm' },
		{ "watchdog", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t mem = 32, watchdog = WATCHDOG_DEFAULT;
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mem = parse_num("--mem", optarg);
			break;
		case 'w':
			watchdog = parse_num("--watchdog", optarg);
			break;
		default:
			usage();
		}
	}
	argv += optind;
	argc -= optind;
	if (argc == 2 && !strcmp(argv[0], "save"))
		return save(argv[1], mem);
	if (argc == 3 && !strcmp(argv[0], "restore"))
		return restore(argv[1], argv[2], watchdog);
	usage();
}
