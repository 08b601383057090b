// SPDX-License-Identifier: GPL-2.0-only
/*
 * postcopy-src: the source side of a post-copy migration.
 *
 * Runs the guest's first phase (it fills its memory with a pattern), stops
 * the vCPU, and serves the guest's memory image and vCPU state over TCP to
 * postcopy-dst (see wire.h): pages a fault is waiting for on one
 * connection, background prefetch on the other.
 *
 * Its VM is an ordinary one whose guest_memfd is shared and mapped
 * (GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED), so that the VMM
 * loads the guest and reads the image through the mapping.
 *
 *   postcopy-src [--listen ADDR] [--port N] [--mem MiB] [--bandwidth MB/s]
 *		  [--corrupt]
 *
 * --corrupt flips a bit of the last page as it is sent, to show that the
 * destination's check catches it.
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

#include "guest_abi.h"
#include "util.h"
#include "vmm.h"
#include "wire.h"

struct source {
	struct vmm vm;
	int demand, prefetch;		/* the two connections */
	double bandwidth;		/* bytes/s for prefetch, 0: no limit */
	uint64_t corrupt_off;		/* --corrupt: this page, or -1 */
	uint64_t demand_pages, prefetch_pages;
};

static int listen_on(const char *addr, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd, one = 1;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		errx(2, "--listen: not an IPv4 address: %s", addr);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		err(1, "socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		err(1, "SO_REUSEADDR");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		err(1, "bind %s:%d", addr, port);
	if (listen(fd, 2))
		err(1, "listen");
	return fd;
}

/* Accept the destination's two connections, in whichever order they come. */
static void accept_both(struct source *src, int lfd)
{
	struct wire_hello hello;
	int i, fd, one = 1;

	src->demand = src->prefetch = -1;
	for (i = 0; i < 2; i++) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			err(1, "accept");
		if (!read_full(fd, &hello, sizeof(hello), "hello") ||
		    hello.magic != WIRE_MAGIC)
			errx(1, "a connection that does not speak post-copy");
		if (hello.conn == WIRE_DEMAND && src->demand < 0) {
			/* Demand pages are latency: send each one at once. */
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			src->demand = fd;
		} else if (hello.conn == WIRE_PREFETCH && src->prefetch < 0) {
			src->prefetch = fd;
		} else {
			errx(1, "unexpected connection kind %llu",
			     (unsigned long long)hello.conn);
		}
	}
}

static void check_offset(struct source *src, uint64_t off)
{
	if (off % GUEST_PAGE_SIZE || off >= src->vm.mem_size)
		errx(1, "destination asked for a bad offset 0x%llx",
		     (unsigned long long)off);
}

/* What to send for the page at @off: the guest's, unless --corrupt. */
static const uint8_t *page_to_send(struct source *src, uint64_t off,
				   uint8_t *copy)
{
	if (off != src->corrupt_off)
		return src->vm.mem + off;
	memcpy(copy, src->vm.mem + off, GUEST_PAGE_SIZE);
	copy[GUEST_PAGE_SIZE / 2] ^= 1;
	return copy;
}

/* Serve prefetch batches at up to --bandwidth, until the destination is done. */
static void *serve_prefetch(void *arg)
{
	struct source *src = arg;
	uint8_t copy[GUEST_PAGE_SIZE];
	struct wire_batch b;
	double start = now();
	uint64_t i, sent = 0;

	while (read_full(src->prefetch, &b.nr, sizeof(b.nr), "prefetch batch")) {
		if (!b.nr || b.nr > WIRE_BATCH_MAX)
			errx(1, "bad prefetch batch of %llu pages",
			     (unsigned long long)b.nr);
		if (!read_full(src->prefetch, b.offsets,
			       b.nr * sizeof(b.offsets[0]), "prefetch batch"))
			errx(1, "read prefetch batch: end of file after its size");
		for (i = 0; i < b.nr; i++) {
			check_offset(src, b.offsets[i]);
			write_full(src->prefetch,
				   page_to_send(src, b.offsets[i], copy),
				   GUEST_PAGE_SIZE, "prefetch page");
		}
		src->prefetch_pages += b.nr;
		sent += b.nr * GUEST_PAGE_SIZE;
		/* Like a migration's bandwidth cap: demand pages are exempt. */
		if (src->bandwidth)
			sleep_until(start + sent / src->bandwidth);
	}
	return NULL;
}

static void serve_demand(struct source *src)
{
	uint8_t copy[GUEST_PAGE_SIZE];
	struct wire_page page;

	while (read_full(src->demand, &page.offset, sizeof(page.offset),
			 "demand request")) {
		check_offset(src, page.offset);
		memcpy(page.data, page_to_send(src, page.offset, copy),
		       GUEST_PAGE_SIZE);
		write_full(src->demand, &page, sizeof(page), "demand page");
		src->demand_pages++;
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: postcopy-src [--listen ADDR] [--port N] [--mem MiB] [--bandwidth MB/s] [--corrupt]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port", required_argument, NULL, 'p' },
		{ "mem", required_argument, NULL, 'm' },
		{ "bandwidth", required_argument, NULL, 'b' },
		{ "corrupt", no_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	struct source src = { .corrupt_off = -1 };
	bool corrupt = false;
	struct wire_header hdr = { .magic = WIRE_MAGIC };
	const char *addr = "0.0.0.0";
	uint64_t mem = 64, port = WIRE_PORT;
	pthread_t prefetcher;
	int c, lfd;
	double t;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			addr = optarg;
			break;
		case 'p':
			port = parse_num("--port", optarg);
			break;
		case 'm':
			mem = parse_num("--mem", optarg);
			break;
		case 'b':
			src.bandwidth = parse_num("--bandwidth", optarg) * 1e6;
			break;
		case 'c':
			corrupt = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || port > 65535)
		usage();

	vmm_create(&src.vm, VMM_SHARED, mem * MiB, 0);
	t = now();
	hdr.mem_size = src.vm.mem_size;
	hdr.checksum = vmm_run_fill(&src.vm);
	vmm_get_state(&src.vm, &hdr.state);
	if (corrupt)
		src.corrupt_off = src.vm.mem_size - GUEST_PAGE_SIZE;
	printf("src: guest filled %llu MiB in %.1f s, checksum 0x%016llx; vCPU stopped\n",
	       (unsigned long long)mem, now() - t,
	       (unsigned long long)hdr.checksum);

	lfd = listen_on(addr, port);
	printf("src: serving the guest on %s:%llu\n", addr,
	       (unsigned long long)port);
	accept_both(&src, lfd);
	close(lfd);
	write_full(src.demand, &hdr, sizeof(hdr), "header");

	errno = pthread_create(&prefetcher, NULL, serve_prefetch, &src);
	if (errno)
		err(1, "pthread_create");
	serve_demand(&src);
	pthread_join(prefetcher, NULL);

	printf("src: done: %llu pages sent on demand, %llu prefetched\n",
	       (unsigned long long)src.demand_pages,
	       (unsigned long long)src.prefetch_pages);
	close(src.demand);
	close(src.prefetch);
	vmm_destroy(&src.vm);
	return 0;
}
