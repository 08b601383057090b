// SPDX-License-Identifier: GPL-2.0-only
/*
 * snapshot-handler: a handler process for snapshot-vm restore.
 *
 * Connects to the restoring VMM's UNIX socket and receives its guest_memfd
 * there: a process that is not the VMM, and has no KVM file, serves the
 * faults. It maps the snapshot file and populates from it: faults first,
 * with a libgmemuf handler on a thread of its own (the populates go out on
 * the handler's io_uring with its next fetch); and meanwhile every page
 * still missing, in order, with gmemuf_prefetch(), at up to --rate pages a
 * second. It exits once no page is missing.
 *
 * Kill it at any time and start another: what it fetched and did not
 * populate goes to the next handler, and pages already present are skipped.
 * With --hold-at, it stops populating once that many pages are present and
 * waits to be killed, still fetching faults but resolving none: a test's
 * way to kill it with records in hand, whatever the speed of the machine.
 *
 * If no page arrives for --watchdog seconds (60), and it is not holding, it
 * fails with a dump of its threads and those of the --watchdog-peer process
 * (the VMM, in snapshot-test): see watchdog.h.
 *
 *   snapshot-handler SOCKET FILE [--name NAME] [--rate PAGES/S]
 *                    [--hold-at PAGES] [--watchdog SECONDS]
 *                    [--watchdog-peer PID]
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
#include <sys/stat.h>
#include <sys/un.h>
#include <libgmemuf.h>

#include "guest_abi.h"
#include "snapshot.h"
#include "util.h"
#include "watchdog.h"

#define PREFETCH_BATCH	16

struct handler {
	const char *name;
	int gmem;
	uint64_t mem_size;
	const uint8_t *image;		/* the snapshot's memory image */
	struct gmemuf_handler *h;
	uint64_t faults;		/* fault records fetched */
	double rate, start, last_report;
	uint64_t asked;			/* pages prefetch asked for */
	uint64_t hold_at;		/* --hold-at, 0 for never */
	bool holding;			/* __atomic */
};

static int receive_gmem(const char *path, uint64_t *mem_size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct snapshot_hello hello;
	double deadline = now() + 60;
	int sock, gmem;

	if (strlen(path) >= sizeof(sa.sun_path))
		errx(2, "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	/* The VMM may not be listening yet. */
	for (;;) {
		sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (sock < 0)
			err(1, "socket(AF_UNIX)");
		if (!connect(sock, (struct sockaddr *)&sa, sizeof(sa)))
			break;
		if ((errno != ENOENT && errno != ECONNREFUSED) ||
		    now() > deadline)
			err(1, "connect %s", path);
		close(sock);
		sleep_until(now() + 0.1);
	}
	gmem = recv_fd(sock, &hello, sizeof(hello));
	if (gmem < 0 || hello.magic != SNAPSHOT_MAGIC)
		errx(1, "%s: no guest_memfd from the VMM", path);
	close(sock);
	*mem_size = hello.mem_size;
	return gmem;
}

static const uint8_t *map_image(const char *path, uint64_t mem_size)
{
	struct snapshot_header hdr;
	struct stat st;
	void *p;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		err(1, "%s", path);
	if (fstat(fd, &st))
		err(1, "fstat %s", path);
	if (!read_full(fd, &hdr, sizeof(hdr), path) ||
	    hdr.magic != SNAPSHOT_MAGIC || hdr.mem_size != mem_size ||
	    (uint64_t)st.st_size < SNAPSHOT_IMAGE + mem_size)
		errx(1, "%s: not the snapshot of this guest", path);
	p = mmap(NULL, SNAPSHOT_IMAGE + mem_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		err(1, "mmap %s", path);
	close(fd);
	return (const uint8_t *)p + SNAPSHOT_IMAGE;
}

/* Whether --hold-at is reached: say so once, then keep holding. */
static bool holding(struct handler *hd)
{
	int64_t missing;

	if (!hd->hold_at)
		return false;
	if (__atomic_load_n(&hd->holding, __ATOMIC_ACQUIRE))
		return true;
	missing = gmemuf_count_missing(hd->gmem, 0, hd->mem_size);
	if (missing < 0)
		errx(1, "gmemuf_count_missing: %s", gmemuf_strerror(missing));
	if (hd->mem_size / GUEST_PAGE_SIZE - missing < hd->hold_at)
		return false;
	if (!__atomic_exchange_n(&hd->holding, true, __ATOMIC_ACQ_REL)) {
		printf("handler %s: holding with %lld pages missing\n",
		       hd->name, (long long)missing);
		/* A stall on purpose, till the kill. */
		watchdog_stop();
	}
	return true;
}

/* gmemuf_handler_run() calls this with each batch of fault records. */
static int on_faults(struct gmemuf_handler *h, unsigned int queue,
		     const struct gmemuf_fault *faults, unsigned int nr,
		     void *arg)
{
	struct handler *hd = arg;
	unsigned int i;
	int r;

	__atomic_add_fetch(&hd->faults, nr, __ATOMIC_RELAXED);
	if (holding(hd)) {
		/* Kept, unresolved, until this process is killed. */
		printf("handler %s: withholding %u fault records\n", hd->name,
		       nr);
		return 0;
	}
	for (i = 0; i < nr; i++) {
		if (faults[i].offset >= hd->mem_size)
			return -EINVAL;
		/* Sent with the next fetch; the image stays mapped till then. */
		r = gmemuf_handler_populate(h, queue, faults[i].offset,
					    hd->image + faults[i].offset);
		if (r)
			return r;
	}
	return 0;
}

static void *fault_thread(void *arg)
{
	struct handler *hd = arg;
	int r = gmemuf_handler_run(hd->h, 0, on_faults, hd);

	if (r)
		errx(1, "%s: handler: %s", hd->name, gmemuf_strerror(r));
	return NULL;
}

static void report(struct handler *hd)
{
	int64_t missing = gmemuf_count_missing(hd->gmem, 0, hd->mem_size);
	uint64_t npages = hd->mem_size / GUEST_PAGE_SIZE;

	if (missing < 0)
		errx(1, "gmemuf_count_missing: %s", gmemuf_strerror(missing));
	printf("handler %s: [%5.1fs] present %llu/%llu, %llu fault records served\n",
	       hd->name, now() - hd->start,
	       (unsigned long long)(npages - missing),
	       (unsigned long long)npages,
	       (unsigned long long)__atomic_load_n(&hd->faults,
						   __ATOMIC_RELAXED));
}

/* gmemuf_prefetch() calls this for the pages still missing. */
static int copy_pages(void *arg, const uint64_t *offsets, unsigned int nr,
		      void *buf)
{
	struct handler *hd = arg;
	unsigned int i;

	/* Prefetch stops for good: only a kill ends a holding handler. */
	while (holding(hd))
		pause();
	for (i = 0; i < nr; i++)
		memcpy((uint8_t *)buf + i * GUEST_PAGE_SIZE,
		       hd->image + offsets[i], GUEST_PAGE_SIZE);
	hd->asked += nr;
	if (hd->rate)
		sleep_until(hd->start + hd->asked / hd->rate);
	if (now() - hd->last_report >= 0.5) {
		hd->last_report = now();
		report(hd);
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: snapshot-handler SOCKET FILE [--name NAME] [--rate PAGES/S] [--hold-at PAGES]\n"
		"                        [--watchdog SECONDS] [--watchdog-peer PID]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "rate", required_argument, NULL, 'r' },
		{ "hold-at", required_argument, NULL, 'o' },
		{ "watchdog", required_argument, NULL, 'w' },
		{ "watchdog-peer", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	struct handler hd = { .name = "" };
	uint64_t *order, i, npages, watchdog = WATCHDOG_DEFAULT;
	pthread_t faulter;
	int64_t prefetched, missing;
	int c, r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			hd.name = optarg;
			break;
		case 'r':
			hd.rate = parse_num("--rate", optarg);
			break;
		case 'o':
			hd.hold_at = parse_num("--hold-at", optarg);
			break;
		case 'w':
			watchdog = parse_num("--watchdog", optarg);
			break;
		case 'P':
			watchdog_add_peer(parse_num("--watchdog-peer", optarg));
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2)
		usage();

	hd.gmem = receive_gmem(argv[optind], &hd.mem_size);
	hd.image = map_image(argv[optind + 1], hd.mem_size);
	r = gmemuf_handler_create(hd.gmem, NULL, &hd.h);
	if (r)
		errx(1, "gmemuf_handler_create: %s", gmemuf_strerror(r));
	hd.start = hd.last_report = now();
	watchdog_start("snapshot-handler", watchdog, hd.gmem, -1);
	report(&hd);
	errno = pthread_create(&faulter, NULL, fault_thread, &hd);
	if (errno)
		err(1, "pthread_create");

	npages = hd.mem_size / GUEST_PAGE_SIZE;
	order = malloc(npages * sizeof(*order));
	if (!order)
		err(1, "malloc");
	for (i = 0; i < npages; i++)
		order[i] = i * GUEST_PAGE_SIZE;
	prefetched = gmemuf_prefetch(hd.gmem, order, npages, PREFETCH_BATCH,
				     copy_pages, &hd);
	if (prefetched < 0)
		errx(1, "gmemuf_prefetch: %s", gmemuf_strerror(prefetched));
	free(order);

	gmemuf_handler_stop(hd.h);
	pthread_join(faulter, NULL);
	/* Every page was present or populated when prefetch passed it. */
	missing = gmemuf_count_missing(hd.gmem, 0, hd.mem_size);
	printf("handler %s: done after %.1f s: %lld pages prefetched, %llu fault records served, %lld missing\n",
	       hd.name, now() - hd.start, (long long)prefetched,
	       (unsigned long long)hd.faults, (long long)missing);
	gmemuf_handler_destroy(hd.h);
	munmap((void *)(hd.image - SNAPSHOT_IMAGE), SNAPSHOT_IMAGE + hd.mem_size);
	close(hd.gmem);
	return missing ? 1 : 0;
}
