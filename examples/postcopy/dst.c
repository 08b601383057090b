// SPDX-License-Identifier: GPL-2.0-only
/*
 * postcopy-dst: the destination side of a post-copy migration.
 *
 * Receives the vCPU state from postcopy-src and starts the guest at once,
 * with every page of its guest_memfd missing: its code and page tables are
 * fetched on demand like its data. Its memory is private memory of a
 * KVM_X86_SW_PROTECTED_VM, never mapped into this process: the case that
 * userfaultfd cannot serve.
 *
 * Threads:
 *  - the vCPU (main): runs the guest until it reports its checksum;
 *  - the handler: fetches fault records with libgmemuf (io_uring) and asks
 *    the source for their pages;
 *  - the demand receiver: populates the pages the source sends back;
 *  - the prefetcher: populates every page still missing, in order, with
 *    gmemuf_prefetch(), asking the source for them in batches;
 *  - progress: a line every --interval ms (2 s);
 *  - the watchdog (watchdog.h): if no page arrives and the guest reports
 *    nothing for --watchdog seconds (60), dumps every thread's kernel stack,
 *    and those of the --watchdog-peer process (the source, in the demo),
 *    and fails.
 *
 * With a kernel whose vCPUs wait for missing pages (GMEMUF_FEATURE_VCPU_WAIT,
 * the default mode), KVM_RUN just continues once the handler's page has
 * arrived. In the exit mode (--exit), or with a kernel whose vCPUs cannot
 * wait yet, KVM_RUN returns a KVM_EXIT_MEMORY_FAULT instead: the vCPU thread
 * then asks for the page itself, waits for it, and enters KVM_RUN again.
 *
 *   postcopy-dst [--source ADDR] [--port N] [--exit] [--interval MS]
 *                [--watchdog SECONDS] [--watchdog-peer PID]
 *
 * --stall, for the test of the watchdog, serves no fault and prefetches
 * nothing: the guest waits for ever.
 */
#include <arpa/inet.h>
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <libgmemuf.h>

#include "guest_abi.h"
#include "util.h"
#include "vmm.h"
#include "watchdog.h"
#include "wire.h"

/* Pages per prefetch batch: 256 KiB, one round trip each. */
#define PREFETCH_BATCH	64

struct dest {
	struct vmm vm;
	int demand, prefetch;		/* the two connections */
	uint64_t npages;
	struct gmemuf_handler *handler;

	/* Demand requests come from the handler and from the vCPU thread. */
	pthread_mutex_t send_lock;
	uint8_t *requested;		/* per page: asked for on demand */
	double *asked_at;		/* per page: when */

	/* Signalled whenever a demand page arrives. */
	pthread_mutex_t lock;
	pthread_cond_t arrived;
	uint64_t demand_pages;		/* populated from the demand connection */
	double wait_sum, wait_max;	/* from request to populate */

	/* Updated with atomics: read by the progress thread. */
	uint64_t demanded;		/* pages asked for on demand */
	uint64_t records;		/* fault records the handler fetched */
	uint64_t vcpu_exits;		/* pages a vCPU exit waited for */
	uint64_t bytes;			/* page bytes received */
	uint64_t prefetched;		/* gmemuf_prefetch()'s result */
	bool done;
	bool stall;			/* --stall */

	double start;
	unsigned int interval_ms;
	uint64_t last_exit_gpa;		/* vCPU thread only */
};

#define ADD(field, n)	__atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)
#define GET(field)	__atomic_load_n(&(field), __ATOMIC_RELAXED)

static uint64_t missing_pages(struct dest *d, uint64_t off, uint64_t len)
{
	int64_t r = gmemuf_count_missing(d->vm.gmem, off, len);

	if (r < 0)
		errx(1, "gmemuf_count_missing: %s", gmemuf_strerror(r));
	return r;
}

/* Ask the source for a page, once whoever asks. */
static void demand(struct dest *d, uint64_t off)
{
	uint64_t page = off / GUEST_PAGE_SIZE;

	if (__atomic_exchange_n(&d->requested[page], 1, __ATOMIC_RELAXED))
		return;
	ADD(d->demanded, 1);
	d->asked_at[page] = now();
	pthread_mutex_lock(&d->send_lock);
	write_full(d->demand, &off, sizeof(off), "demand request");
	pthread_mutex_unlock(&d->send_lock);
}

/* gmemuf_handler_run() calls this with each batch of fault records. */
static int on_faults(struct gmemuf_handler *h, unsigned int queue,
		     const struct gmemuf_fault *faults, unsigned int nr,
		     void *arg)
{
	struct dest *d = arg;
	unsigned int i;

	(void)h;
	(void)queue;
	ADD(d->records, nr);
	if (d->stall)
		return 0;
	/*
	 * Only ask: the page is populated when it arrives, by the demand
	 * receiver, so this thread is free to fetch the next faults.
	 */
	for (i = 0; i < nr; i++)
		demand(d, faults[i].offset);
	return 0;
}

static void *handler_thread(void *arg)
{
	struct dest *d = arg;
	int r = gmemuf_handler_run(d->handler, 0, on_faults, d);

	if (r)
		errx(1, "handler: %s", gmemuf_strerror(r));
	return NULL;
}

static void *demand_receiver(void *arg)
{
	struct dest *d = arg;
	struct wire_page page;
	double waited;
	int r;

	while (read_full(d->demand, &page, sizeof(page), "demand page")) {
		if (page.offset % GUEST_PAGE_SIZE ||
		    page.offset >= d->vm.mem_size)
			errx(1, "source sent a bad offset 0x%llx",
			     (unsigned long long)page.offset);
		/* 0 if the prefetcher got there first: nothing to do then. */
		r = gmemuf_populate(d->vm.gmem, page.offset, page.data);
		if (r < 0)
			errx(1, "gmemuf_populate(0x%llx): %s",
			     (unsigned long long)page.offset, gmemuf_strerror(r));
		ADD(d->bytes, GUEST_PAGE_SIZE);
		waited = now() - d->asked_at[page.offset / GUEST_PAGE_SIZE];

		pthread_mutex_lock(&d->lock);
		if (r == 1) {
			d->demand_pages++;
			d->wait_sum += waited;
			if (waited > d->wait_max)
				d->wait_max = waited;
		}
		pthread_cond_broadcast(&d->arrived);
		pthread_mutex_unlock(&d->lock);
	}
	/* A vCPU may wait for a page asked for: the source must not go first. */
	if (!__atomic_load_n(&d->done, __ATOMIC_ACQUIRE))
		errx(1, "the source closed the demand connection before the end");
	return NULL;
}

/* gmemuf_prefetch() calls this for the contents of pages still missing. */
static int fetch_batch(void *arg, const uint64_t *offsets, unsigned int nr,
		       void *buf)
{
	struct dest *d = arg;
	uint64_t n = nr;

	write_full(d->prefetch, &n, sizeof(n), "prefetch batch");
	write_full(d->prefetch, offsets, nr * sizeof(*offsets),
		   "prefetch batch");
	if (!read_full(d->prefetch, buf, nr * GUEST_PAGE_SIZE, "prefetch pages"))
		errx(1, "source closed the prefetch connection");
	ADD(d->bytes, nr * GUEST_PAGE_SIZE);
	return 0;
}

static void *prefetcher(void *arg)
{
	struct dest *d = arg;
	uint64_t *order, i;
	int64_t r;

	if (d->stall)
		return NULL;
	/* In address order; a VMM could send the hottest pages first. */
	order = malloc(d->npages * sizeof(*order));
	if (!order)
		err(1, "malloc");
	for (i = 0; i < d->npages; i++)
		order[i] = i * GUEST_PAGE_SIZE;
	r = gmemuf_prefetch(d->vm.gmem, order, d->npages, PREFETCH_BATCH,
			    fetch_batch, d);
	if (r < 0)
		errx(1, "gmemuf_prefetch: %s", gmemuf_strerror((int)r));
	__atomic_store_n(&d->prefetched, r, __ATOMIC_RELAXED);
	free(order);
	return NULL;
}

static void *progress(void *arg)
{
	struct dest *d = arg;
	uint64_t bytes, last_bytes = 0, missing, present, demand_pages;
	double t, last = d->start;

	for (;;) {
		sleep_until(last + d->interval_ms / 1000.0);
		/* The summary says the rest. */
		if (__atomic_load_n(&d->done, __ATOMIC_ACQUIRE))
			break;
		t = now();
		bytes = GET(d->bytes);
		missing = missing_pages(d, 0, d->vm.mem_size);
		present = d->npages - missing;
		pthread_mutex_lock(&d->lock);
		demand_pages = d->demand_pages;
		pthread_mutex_unlock(&d->lock);
		printf("dst: [%5.1fs] present %6llu/%llu (%3llu%%)  missing %6llu  demand faults %5llu  prefetched %6llu  %6.1f MB/s\n",
		       t - d->start, (unsigned long long)present,
		       (unsigned long long)d->npages,
		       (unsigned long long)(present * 100 / d->npages),
		       (unsigned long long)missing,
		       (unsigned long long)GET(d->demanded),
		       (unsigned long long)(present - demand_pages),
		       (bytes - last_bytes) / (t - last) / 1e6);
		last_bytes = bytes;
		last = t;
	}
	return NULL;
}

/*
 * KVM_RUN stopped on missing memory (exit mode, or a kernel whose vCPUs
 * cannot wait): ask for the pages like the handler does, wait for them.
 */
static void fetch_for_vcpu(void *arg, uint64_t gpa, uint64_t size)
{
	struct dest *d = arg;
	uint64_t off, first = gpa & ~(GUEST_PAGE_SIZE - 1);

	/*
	 * A page present by now was populated since the exit: enter again.
	 * A second exit on it is not a missing page, and not ours to handle.
	 */
	if (!missing_pages(d, first, GUEST_PAGE_SIZE)) {
		if (gpa == d->last_exit_gpa)
			errx(1, "KVM_RUN: memory fault at gpa 0x%llx, which is not missing",
			     (unsigned long long)gpa);
		d->last_exit_gpa = gpa;
		return;
	}
	d->last_exit_gpa = -1;

	for (off = first; off < gpa + size; off += GUEST_PAGE_SIZE) {
		if (!missing_pages(d, off, GUEST_PAGE_SIZE))
			continue;
		ADD(d->vcpu_exits, 1);
		demand(d, off);
		pthread_mutex_lock(&d->lock);
		while (missing_pages(d, off, GUEST_PAGE_SIZE))
			pthread_cond_wait(&d->arrived, &d->lock);
		pthread_mutex_unlock(&d->lock);
	}
}

static int connect_to(const char *addr, int port, enum wire_conn conn)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct wire_hello hello = { .magic = WIRE_MAGIC, .conn = conn };
	double deadline = now() + 120;
	int fd, one = 1;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		errx(2, "--source: not an IPv4 address: %s", addr);
	/* The source listens only once its guest has run phase 1: retry. */
	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			err(1, "socket");
		if (!connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
			break;
		if ((errno != ECONNREFUSED && errno != ENETUNREACH) ||
		    now() > deadline)
			err(1, "connect %s:%d", addr, port);
		close(fd);
		sleep_until(now() + 0.2);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	write_full(fd, &hello, sizeof(hello), "hello");
	return fd;
}

/* Named, so that the watchdog's dump tells the threads apart. */
static void start(pthread_t *t, void *(*fn)(void *), struct dest *d,
		  const char *name)
{
	errno = pthread_create(t, NULL, fn, d);
	if (errno)
		err(1, "pthread_create");
	pthread_setname_np(*t, name);
}

static const char *vcpu_mode(uint64_t features, bool exit_mode)
{
	if (exit_mode)
		return "exit KVM_RUN (exit mode), then the VMM asks for the page";
	if (features & GMEMUF_FEATURE_VCPU_WAIT)
		return "wait in the kernel for the handler";
	return "fail KVM_RUN with EFAULT (this kernel), then the VMM asks for the page";
}

static void usage(void)
{
	fprintf(stderr,
		"usage: postcopy-dst [--source ADDR] [--port N] [--exit] [--interval MS]\n"
		"                    [--watchdog SECONDS] [--watchdog-peer PID]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "source", required_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'p' },
		{ "exit", no_argument, NULL, 'e' },
		{ "interval", required_argument, NULL, 'i' },
		{ "watchdog", required_argument, NULL, 'w' },
		{ "watchdog-peer", required_argument, NULL, 'P' },
		{ "stall", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	struct dest d = {
		.last_exit_gpa = -1,
		.send_lock = PTHREAD_MUTEX_INITIALIZER,
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.arrived = PTHREAD_COND_INITIALIZER,
		.interval_ms = 2000,
	};
	pthread_t handler, receiver, prefetch, reporter;
	const char *addr = "127.0.0.1";
	uint64_t port = WIRE_PORT, sum, missing, watchdog = WATCHDOG_DEFAULT;
	struct wire_header hdr;
	double guest_time, total;
	bool exit_mode = false, ok;
	int c, r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			addr = optarg;
			break;
		case 'p':
			port = parse_num("--port", optarg);
			break;
		case 'e':
			exit_mode = true;
			break;
		case 'i':
			d.interval_ms = parse_num("--interval", optarg);
			break;
		case 'w':
			watchdog = parse_num("--watchdog", optarg);
			break;
		case 'P':
			watchdog_add_peer(parse_num("--watchdog-peer", optarg));
			break;
		case 'S':
			d.stall = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || port > 65535 || !d.interval_ms)
		usage();

	/* The source sends its header once it has both connections. */
	d.demand = connect_to(addr, port, WIRE_DEMAND);
	d.prefetch = connect_to(addr, port, WIRE_PREFETCH);
	if (!read_full(d.demand, &hdr, sizeof(hdr), "header") ||
	    hdr.magic != WIRE_MAGIC)
		errx(1, "the source sent no post-copy header");

	vmm_create(&d.vm, VMM_PRIVATE, hdr.mem_size,
		   VMM_USERFAULT | (exit_mode ? VMM_USERFAULT_EXIT : 0));
	vmm_set_state(&d.vm, &hdr.state);
	d.npages = hdr.mem_size / GUEST_PAGE_SIZE;
	d.requested = calloc(d.npages, sizeof(*d.requested));
	d.asked_at = calloc(d.npages, sizeof(*d.asked_at));
	if (!d.requested || !d.asked_at)
		err(1, "calloc");
	r = gmemuf_handler_create(d.vm.gmem, NULL, &d.handler);
	if (r)
		errx(1, "gmemuf_handler_create: %s", gmemuf_strerror(r));

	printf("dst: %llu MiB of private guest memory (KVM_X86_SW_PROTECTED_VM), %llu pages, all missing\n",
	       (unsigned long long)(hdr.mem_size / MiB),
	       (unsigned long long)d.npages);
	printf("dst: vCPU faults on missing pages %s\n",
	       vcpu_mode(vmm_gmemuf_features(&d.vm), exit_mode));

	d.start = now();
	watchdog_start("postcopy-dst", watchdog, d.vm.gmem, d.vm.vcpu);
	start(&handler, handler_thread, &d, "handler");
	start(&receiver, demand_receiver, &d, "demand-receiver");
	start(&prefetch, prefetcher, &d, "prefetcher");
	start(&reporter, progress, &d, "progress");

	sum = vmm_run_check(&d.vm, fetch_for_vcpu, &d);
	guest_time = now() - d.start;
	printf("dst: [%5.1fs] guest reports checksum 0x%016llx\n",
	       guest_time, (unsigned long long)sum);
	pthread_join(prefetch, NULL);
	total = now() - d.start;
	missing = missing_pages(&d, 0, d.vm.mem_size);

	__atomic_store_n(&d.done, true, __ATOMIC_RELEASE);
	gmemuf_handler_stop(d.handler);
	pthread_join(handler, NULL);
	pthread_join(reporter, NULL);
	/* The source ends when both connections do; then so does the receiver. */
	shutdown(d.demand, SHUT_WR);
	shutdown(d.prefetch, SHUT_WR);
	pthread_join(receiver, NULL);

	ok = sum == hdr.checksum && !missing;
	printf("dst: ---- post-copy summary ----\n");
	printf("dst: pages        %llu (%llu MiB), all missing at the start, %llu at the end\n",
	       (unsigned long long)d.npages,
	       (unsigned long long)(hdr.mem_size / MiB),
	       (unsigned long long)missing);
	printf("dst: demand       %llu faults: %llu handler records, %llu vCPU exits; wait avg %.1f ms, max %.1f ms\n",
	       (unsigned long long)d.demanded,
	       (unsigned long long)d.records,
	       (unsigned long long)d.vcpu_exits,
	       d.demand_pages ? d.wait_sum / d.demand_pages * 1e3 : 0.0,
	       d.wait_max * 1e3);
	printf("dst: prefetched   %llu pages in the background, %llu came on demand\n",
	       (unsigned long long)d.prefetched,
	       (unsigned long long)d.demand_pages);
	printf("dst: time         guest done after %.1f s, all memory after %.1f s\n",
	       guest_time, total);
	printf("dst: throughput   %.1f MB/s\n", d.bytes / total / 1e6);
	printf("dst: checksum     guest 0x%016llx, source 0x%016llx: %s\n",
	       (unsigned long long)sum, (unsigned long long)hdr.checksum,
	       sum == hdr.checksum ? "match" : "MISMATCH");

	gmemuf_handler_destroy(d.handler);
	close(d.demand);
	close(d.prefetch);
	free(d.requested);
	free(d.asked_at);
	vmm_destroy(&d.vm);
	return ok ? 0 : 1;
}
