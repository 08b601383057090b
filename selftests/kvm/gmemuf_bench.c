// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf_bench: demand paging rate of gmemuf against userfaultfd, and what
 * each fault costs, counted. A measurement, not a test: it fails only if a
 * mode does not work (a guest reading the wrong contents, a syscall failing),
 * never on a rate.
 *
 * Every vCPU mode runs the same guest: each vCPU writes the first word of
 * each page of its own region once (as demand_paging_test's guest does),
 * timing the write with RDTSC, then checks the second word holds what the
 * mode's handler put there. The clock runs from the moment every vCPU has
 * warmed up (its code, stack and latency array faulted in) to the moment the
 * last vCPU is done.
 *
 *   ceiling_anon        anonymous memory, no userfaults (demand_paging_test
 *                       without -u)
 *   ceiling_gmem        a plain shared guest_memfd
 *   uffd_missing        anonymous memory, userfaultfd MISSING, UFFDIO_COPY
 *   uffd_minor          shmem filled through an alias, userfaultfd MINOR,
 *                       UFFDIO_CONTINUE
 *   wait_{shared,private}_{pwrite,uring}
 *                       gmemuf wait mode: a handler thread fetches records
 *                       with io_uring (a SINGLE_ISSUER | DEFER_TASKRUN ring)
 *                       and populates with pwrite(), or with io_uring WRITEs
 *                       submitted with the next fetch, in the
 *                       io_uring_enter() that waits for it
 *   exit_self           gmemuf exit mode, the vCPU thread populating the page
 *                       itself before it enters again
 *   exit_handler        gmemuf exit mode, the vCPU thread handing the page to
 *                       a handler thread and waiting for it (a pipe there,
 *                       an eventfd back), as VMMs do
 *   present_plain       a plain guest_memfd whose pages are all present
 *   present_armed       a userfault guest_memfd whose pages are all present
 *
 * Host thread modes: N threads read one word of each page of their part of a
 * mapping, a handler thread serving the faults:
 *
 *   host_uffd_missing   anonymous memory, userfaultfd MISSING
 *   host_gmemuf         a userfault guest_memfd's mapping, pwrite()
 *
 * One CSV line per run on stdout, starting "bench,"; the header starts
 * "bench-header,". Counted per fault (per page of the region):
 *
 *   pf, exits       KVM's pf_taken and exits, summed over the vCPUs
 *                   (KVM_GET_STATS_FD), in the timed window
 *   uf_exits        userfault exits seen by the vCPU threads
 *   syscalls        syscalls the handler thread made, each counted as made
 *                   (exit_self: the vCPU thread's pwrite()s)
 *   vcpu_sys        syscalls the vCPU threads made: KVM_RUN, and in exit
 *                   mode what they do to have the page populated
 *   csw             context switches of the whole process (getrusage)
 *   p50_us, p99_us  fault latency: the guest's RDTSC around its write
 *                   (host modes: CLOCK_MONOTONIC around the read)
 *   hcpu_us         CPU time of the handler thread (CLOCK_THREAD_CPUTIME_ID),
 *                   empty where there is none
 *   slab_b          growth of /proc/meminfo's Slab in the timed window
 *
 *   gmemuf_bench [-m MiB per vCPU] [-n vCPUs,...] [-r rounds]
 *                [-t threads,...] [-M MiB for host modes] [-o mode] [-1]
 *
 * -1 runs every thread on the first CPU: a handoff between two threads is
 * then a switch on one CPU, without a cross-CPU wake-up or an idle CPU
 * (an experiment, to measure what those cost; make bench does not).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <liburing.h>
#include <linux/gmemuf.h>
#include <linux/sizes.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

/* Far above slot 0 (code, page tables, stacks) and the PCI hole. */
#define BENCH_GPA		((u64)SZ_4G)
#define BENCH_SLOT		10
#define MAX_VCPUS		8
#define MAX_THREADS		64
#define FILL_BYTE		0xab
#define FILL_WORD		0xababababababababull
#define TOUCH_WORD		0x0123456789abcdefull
#define FETCH_NR		64
#define RING_ENTRIES		256
#define BENCH_FEATURES		(GMEMUF_FEATURE_MMAP_FAULT | GMEMUF_FEATURE_POPULATE | \
				 GMEMUF_FEATURE_URING_FETCH | \
				 GMEMUF_FEATURE_VCPU_WAIT | GMEMUF_FEATURE_VCPU_EXIT)

enum backing { B_ANON, B_SHMEM, B_GMEM_SHARED, B_GMEM_PRIVATE };
enum handler_kind {
	H_NONE, H_UFFD_COPY, H_UFFD_CONTINUE, H_GMEM_PWRITE, H_GMEM_URING,
	H_EXIT_SELF, H_EXIT_THREAD,
};
enum prefill { P_NONE, P_ALIAS, P_MMAP, P_PWRITE };

struct mode {
	const char *name;
	enum backing backing;
	u64 gmem_flags;		/* beyond MMAP | INIT_SHARED for shared */
	enum handler_kind handler;
	enum prefill prefill;
	bool host;		/* host threads, not vCPUs */
};

#define UF	GUEST_MEMFD_FLAG_USERFAULT
#define UFX	(GUEST_MEMFD_FLAG_USERFAULT | GUEST_MEMFD_FLAG_USERFAULT_EXIT)

static const struct mode modes[] = {
	{ "ceiling_anon", B_ANON, 0, H_NONE, P_NONE },
	{ "ceiling_gmem", B_GMEM_SHARED, 0, H_NONE, P_NONE },
	{ "uffd_missing", B_ANON, 0, H_UFFD_COPY, P_NONE },
	{ "uffd_minor", B_SHMEM, 0, H_UFFD_CONTINUE, P_ALIAS },
	{ "wait_shared_pwrite", B_GMEM_SHARED, UF, H_GMEM_PWRITE, P_NONE },
	{ "wait_shared_uring", B_GMEM_SHARED, UF, H_GMEM_URING, P_NONE },
	{ "wait_private_pwrite", B_GMEM_PRIVATE, UF, H_GMEM_PWRITE, P_NONE },
	{ "wait_private_uring", B_GMEM_PRIVATE, UF, H_GMEM_URING, P_NONE },
	{ "exit_self", B_GMEM_SHARED, UFX, H_EXIT_SELF, P_NONE },
	{ "exit_handler", B_GMEM_SHARED, UFX, H_EXIT_THREAD, P_NONE },
	{ "present_plain", B_GMEM_SHARED, 0, H_NONE, P_MMAP },
	{ "present_armed", B_GMEM_SHARED, UF, H_NONE, P_PWRITE },
	{ "host_uffd_missing", B_ANON, 0, H_UFFD_COPY, P_NONE, true },
	{ "host_gmemuf", B_GMEM_SHARED, UF, H_GMEM_PWRITE, P_NONE, true },
};

static u8 fill_page[PAGE_SIZE] __aligned(PAGE_SIZE);

/* What one run measured. */
struct sample {
	u64 pages;
	double secs;
	u64 pf, exits, uf_exits, syscalls, vcpu_sys, csw;
	bool has_handler;
	double hcpu_us;
	long slab_b;
	double p50_us, p99_us;
};

/*
 * The guest: warm up (the latency array and the stack), sync, then write the
 * first word of each of @npages pages at @gva, timing each write, and check
 * the second word holds @expect.
 */
static void guest_touch(u64 gva, u64 npages, u64 lat_gva, u64 expect)
{
	u32 *lat = (u32 *)lat_gva;
	u64 p, t0, t1, *page;

	for (p = 0; p < npages; p += PAGE_SIZE / sizeof(u32))
		WRITE_ONCE(lat[p], 0);
	GUEST_SYNC(0);
	for (p = 0; p < npages; p++) {
		page = (u64 *)(gva + p * PAGE_SIZE);
		t0 = rdtsc();
		WRITE_ONCE(page[0], TOUCH_WORD);
		t1 = rdtsc();
		lat[p] = t1 - t0 > UINT32_MAX ? UINT32_MAX : t1 - t0;
		__GUEST_ASSERT(READ_ONCE(page[1]) == expect,
			       "page %lu holds 0x%lx, wanted 0x%lx", p,
			       READ_ONCE(page[1]), expect);
	}
	GUEST_DONE();
}

struct bench;

struct vcpu_ctx {
	struct bench *b;
	struct kvm_vcpu *vcpu;
	int idx;
	pthread_t thread;
	int efd;		/* exit_handler: the handler's answer */
	u64 uf_exits;
	u64 syscalls;		/* made in the timed window */
};

struct bench {
	const struct mode *m;
	int n;			/* vCPUs or threads */
	u64 pages;		/* of the whole region */
	u64 size;
	struct kvm_vm *vm;
	int fd;			/* guest_memfd, or -1 */
	int uffd;
	u8 *mem;		/* the region's mapping, where there is one */
	struct vcpu_ctx vc[MAX_VCPUS];
	pthread_barrier_t ready, go;
	u64 lat_gva[MAX_VCPUS];
	u32 *host_lat;		/* host modes */

	/* The handler thread. */
	pthread_t handler;
	bool has_handler;
	int req_pipe[2];	/* exit_handler */
	u64 syscalls;
	double hcpu_us;
	u8 *served;		/* one byte a page: populated by the handler */
	u64 nr_served;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double thread_cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static long slab_bytes(void)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	TEST_ASSERT(f, "/proc/meminfo: errno %d", errno);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Slab: %ld kB", &kb) == 1)
			break;
	fclose(f);
	TEST_ASSERT(kb >= 0, "No Slab in /proc/meminfo");
	return kb * 1024;
}

static u64 csw(void)
{
	struct rusage ru;

	TEST_ASSERT(!getrusage(RUSAGE_SELF, &ru), "getrusage: errno %d", errno);
	return ru.ru_nvcsw + ru.ru_nivcsw;
}

/* A page served: the handler stops when every page is. */
static void mark_served(struct bench *b, u64 off)
{
	u64 page = off / PAGE_SIZE;

	TEST_ASSERT(page < b->pages, "Fault at 0x%lx, past the region", off);
	if (!b->served[page]) {
		b->served[page] = 1;
		b->nr_served++;
	}
}

static void populate(struct bench *b, u64 off)
{
	ssize_t r = pwrite(b->fd, fill_page, PAGE_SIZE, off);

	b->syscalls++;
	/* Present already: another path got there first. */
	TEST_ASSERT(r == PAGE_SIZE || (r < 0 && errno == EEXIST),
		    "pwrite at 0x%lx gave %zd, errno %d", off, r, errno);
}

/* userfaultfd: a blocking read of every pending message, then a copy each. */
static void uffd_serve(struct bench *b)
{
	struct uffd_msg msgs[FETCH_NR];
	u64 base = (u64)b->mem, addr;
	ssize_t n;
	int i, r;

	while (b->nr_served < b->pages) {
		n = read(b->uffd, msgs, sizeof(msgs));
		b->syscalls++;
		if (n < 0 && errno == EINTR)
			continue;
		TEST_ASSERT(n > 0 && n % sizeof(msgs[0]) == 0,
			    "read(userfaultfd) gave %zd, errno %d", n, errno);
		for (i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			TEST_ASSERT(msgs[i].event == UFFD_EVENT_PAGEFAULT,
				    "userfaultfd event %u", msgs[i].event);
			addr = msgs[i].arg.pagefault.address & ~(u64)(PAGE_SIZE - 1);
			if (b->m->handler == H_UFFD_COPY) {
				struct uffdio_copy copy = {
					.dst = addr,
					.src = (u64)fill_page,
					.len = PAGE_SIZE,
				};

				r = ioctl(b->uffd, UFFDIO_COPY, &copy);
			} else {
				struct uffdio_continue cont = {
					.range = { .start = addr,
						   .len = PAGE_SIZE },
				};

				r = ioctl(b->uffd, UFFDIO_CONTINUE, &cont);
			}
			b->syscalls++;
			TEST_ASSERT(!r || errno == EEXIST,
				    "userfaultfd resolve at 0x%lx: errno %d",
				    addr, errno);
			mark_served(b, addr - base);
		}
	}
}

#define UD_FETCH	1
#define UD_WRITE	2

static void gmem_prep_fetch(struct io_uring *ring, int hfd,
			    struct gmemuf_fault *faults)
{
	struct gmemuf_fetch fetch = {
		.addr = (u64)(uintptr_t)faults,
		.nr = FETCH_NR,
	};
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	TEST_ASSERT(sqe, "No SQE free");
	/* Debian's liburing 2.3 has no io_uring_prep_uring_cmd(). */
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, hfd, NULL, 0, 0);
	sqe->cmd_op = GMEMUF_CMD_FETCH;
	memcpy(sqe->cmd, &fetch, sizeof(fetch));
	io_uring_sqe_set_data64(sqe, UD_FETCH);
}

/*
 * gmemuf: one fetch parked at all times; each io_uring_enter submits what is
 * queued and waits for a completion, unless one is there already. Records
 * are populated with pwrite() or with io_uring WRITEs queued with the next
 * fetch.
 */
static void gmem_serve(struct bench *b)
{
	struct gmemuf_fault faults[FETCH_NR];
	bool uring = b->m->handler == H_GMEM_URING;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	struct io_uring ring;
	bool fetching = true;
	u64 inflight = 0;
	int hfd, r, i;

	hfd = ioctl(b->fd, GMEMUF_IOC_HANDLER, 0);
	TEST_ASSERT(hfd >= 0, "GMEMUF_IOC_HANDLER: errno %d", errno);
	/*
	 * As a handler thread that alone uses its ring would: completions of
	 * parked fetches are task work, which DEFER_TASKRUN runs when the
	 * thread waits for them, without signalling it.
	 */
	r = io_uring_queue_init(RING_ENTRIES, &ring,
				IORING_SETUP_SINGLE_ISSUER |
				IORING_SETUP_DEFER_TASKRUN);
	TEST_ASSERT(!r, "io_uring_queue_init: %d", r);
	gmem_prep_fetch(&ring, hfd, faults);

	while (b->nr_served < b->pages || inflight) {
		if (io_uring_peek_cqe(&ring, &cqe)) {
			/*
			 * Wait for everything out: the WRITEs, which complete
			 * as they are submitted unless they must block, and
			 * the fetch, so that populating a batch, fetching the
			 * next and waiting for it take one io_uring_enter().
			 */
			r = io_uring_submit_and_wait(&ring, inflight + fetching);
			b->syscalls++;
			TEST_ASSERT(r >= 0 || r == -EINTR,
				    "io_uring_submit_and_wait: %d", r);
			continue;
		}
		if (cqe->user_data == UD_WRITE) {
			TEST_ASSERT(cqe->res == PAGE_SIZE || cqe->res == -EEXIST,
				    "io_uring WRITE gave %d", cqe->res);
			inflight--;
			io_uring_cqe_seen(&ring, cqe);
			continue;
		}
		r = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		fetching = false;
		TEST_ASSERT(r > 0 && r <= FETCH_NR, "GMEMUF_CMD_FETCH gave %d",
			    r);
		for (i = 0; i < r; i++) {
			mark_served(b, faults[i].offset);
			if (!uring) {
				populate(b, faults[i].offset);
				continue;
			}
			sqe = io_uring_get_sqe(&ring);
			TEST_ASSERT(sqe, "No SQE free");
			io_uring_prep_write(sqe, b->fd, fill_page, PAGE_SIZE,
					    faults[i].offset);
			io_uring_sqe_set_data64(sqe, UD_WRITE);
			inflight++;
		}
		/* The records' buffer is free again once WRITEs are queued. */
		if (b->nr_served < b->pages) {
			gmem_prep_fetch(&ring, hfd, faults);
			fetching = true;
		}
	}
	/* Closing the ring cancels the fetch still parked. */
	io_uring_queue_exit(&ring);
	close(hfd);
}

/* exit_handler: a request (page offset, vCPU) down a pipe, an eventfd back. */
static void exit_serve(struct bench *b)
{
	u64 req[2], one = 1;
	ssize_t n;

	for (;;) {
		n = read(b->req_pipe[0], req, sizeof(req));
		b->syscalls++;
		TEST_ASSERT(n == sizeof(req), "read(pipe) gave %zd", n);
		if (req[0] == ~0ull)
			break;
		populate(b, req[0]);
		mark_served(b, req[0]);
		n = write(b->vc[req[1]].efd, &one, sizeof(one));
		b->syscalls++;
		TEST_ASSERT(n == sizeof(one), "write(eventfd): errno %d", errno);
	}
}

static void *handler_thread(void *arg)
{
	struct bench *b = arg;
	double t0;

	/* Named for make bench-profile's perf report, which sorts by thread. */
	pthread_setname_np(pthread_self(), "handler");
	t0 = thread_cpu_us();

	switch (b->m->handler) {
	case H_UFFD_COPY:
	case H_UFFD_CONTINUE:
		uffd_serve(b);
		break;
	case H_GMEM_PWRITE:
	case H_GMEM_URING:
		gmem_serve(b);
		break;
	case H_EXIT_THREAD:
		exit_serve(b);
		break;
	default:
		break;
	}
	b->hcpu_us = thread_cpu_us() - t0;
	return NULL;
}

/* Exit mode: populate the page, or have the handler do it and wait. */
static void vcpu_userfault_exit(struct vcpu_ctx *c)
{
	struct kvm_run *run = c->vcpu->run;
	struct bench *b = c->b;
	u64 off = run->memory_fault.gpa - BENCH_GPA, req[2] = { off, c->idx };
	u64 val;

	TEST_ASSERT(run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_USERFAULT,
		    "memory fault exit at 0x%llx, flags 0x%llx",
		    run->memory_fault.gpa, run->memory_fault.flags);
	c->uf_exits++;
	if (b->m->handler == H_EXIT_SELF) {
		/* The vCPU thread is the handler: its pwrite()s are counted. */
		__atomic_add_fetch(&b->syscalls, 1, __ATOMIC_RELAXED);
		TEST_ASSERT(pwrite(b->fd, fill_page, PAGE_SIZE, off) ==
			    PAGE_SIZE || errno == EEXIST,
			    "pwrite at 0x%lx: errno %d", off, errno);
		return;
	}
	c->syscalls += 2;
	TEST_ASSERT(write(b->req_pipe[1], req, sizeof(req)) == sizeof(req),
		    "write(pipe): errno %d", errno);
	TEST_ASSERT(read(c->efd, &val, sizeof(val)) == sizeof(val),
		    "read(eventfd): errno %d", errno);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_ctx *c = arg;
	struct kvm_run *run = c->vcpu->run;
	struct ucall uc;
	bool timed = false;
	char name[16];
	int r;

	snprintf(name, sizeof(name), "vcpu%d", c->idx);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		c->syscalls += timed;
		r = __vcpu_run(c->vcpu);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1 && errno == EFAULT &&
		    run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			vcpu_userfault_exit(c);
			continue;
		}
		TEST_ASSERT(!r, "KVM_RUN: errno %d, exit reason %u", errno,
			    run->exit_reason);
		switch (get_ucall(c->vcpu, &uc)) {
		case UCALL_SYNC:
			pthread_barrier_wait(&c->b->ready);
			pthread_barrier_wait(&c->b->go);
			timed = true;
			continue;
		case UCALL_DONE:
			return NULL;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
		default:
			TEST_FAIL("exit reason %u (%s), ucall %lu",
				  run->exit_reason,
				  exit_reason_str(run->exit_reason), uc.cmd);
		}
	}
}

static void uffd_register(struct bench *b)
{
	bool minor = b->m->handler == H_UFFD_CONTINUE;
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = minor ? UFFD_FEATURE_MINOR_SHMEM : 0,
	};
	struct uffdio_register reg = {
		.range = { .start = (u64)b->mem, .len = b->size },
		.mode = minor ? UFFDIO_REGISTER_MODE_MINOR :
				UFFDIO_REGISTER_MODE_MISSING,
	};

	b->uffd = syscall(__NR_userfaultfd, O_CLOEXEC);
	TEST_ASSERT(b->uffd >= 0, "userfaultfd: errno %d", errno);
	TEST_ASSERT(!ioctl(b->uffd, UFFDIO_API, &api), "UFFDIO_API: errno %d",
		    errno);
	TEST_ASSERT(!ioctl(b->uffd, UFFDIO_REGISTER, &reg),
		    "UFFDIO_REGISTER: errno %d", errno);
}

static void prefill(struct bench *b)
{
	u64 off;

	switch (b->m->prefill) {
	case P_ALIAS:
		memset(addr_gpa2alias(b->vm, BENCH_GPA), FILL_BYTE, b->size);
		break;
	case P_MMAP:
		memset(b->mem, FILL_BYTE, b->size);
		break;
	case P_PWRITE:
		for (off = 0; off < b->size; off += PAGE_SIZE)
			TEST_ASSERT(pwrite(b->fd, fill_page, PAGE_SIZE, off) ==
				    PAGE_SIZE, "pwrite: errno %d", errno);
		break;
	default:
		break;
	}
}

static void handler_start(struct bench *b)
{
	int i;

	b->served = calloc(b->pages, 1);
	TEST_ASSERT(b->served, "calloc");
	if (b->m->handler == H_NONE || b->m->handler == H_EXIT_SELF)
		return;
	if (b->m->handler == H_EXIT_THREAD) {
		TEST_ASSERT(!pipe(b->req_pipe), "pipe: errno %d", errno);
		for (i = 0; i < b->n; i++) {
			b->vc[i].efd = eventfd(0, EFD_CLOEXEC);
			TEST_ASSERT(b->vc[i].efd >= 0, "eventfd: errno %d",
				    errno);
		}
	}
	TEST_ASSERT(!pthread_create(&b->handler, NULL, handler_thread, b),
		    "pthread_create");
	b->has_handler = true;
}

static void handler_stop(struct bench *b)
{
	u64 req[2] = { ~0ull, 0 };
	int i;

	if (b->has_handler) {
		if (b->m->handler == H_EXIT_THREAD)
			TEST_ASSERT(write(b->req_pipe[1], req, sizeof(req)) ==
				    sizeof(req), "write(pipe): errno %d",
				    errno);
		pthread_join(b->handler, NULL);
	}
	if (b->m->handler == H_EXIT_THREAD) {
		close(b->req_pipe[0]);
		close(b->req_pipe[1]);
		for (i = 0; i < b->n; i++)
			close(b->vc[i].efd);
	}
	free(b->served);
}

static int cmp_u32(const void *a, const void *b)
{
	u32 x = *(const u32 *)a, y = *(const u32 *)b;

	return x < y ? -1 : x > y;
}

/* p50 and p99 of @n values, in µs at @per_us units a µs. */
static void percentiles(u32 *v, u64 n, double per_us, struct sample *s)
{
	qsort(v, n, sizeof(*v), cmp_u32);
	s->p50_us = v[n / 2] / per_us;
	s->p99_us = v[n * 99 / 100] / per_us;
}

static void run_vcpus(const struct mode *m, int nr_vcpus, u64 pages_per_vcpu,
		      struct sample *s)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = m->backing == B_GMEM_PRIVATE ? KVM_X86_SW_PROTECTED_VM :
						       KVM_X86_DEFAULT_VM,
	};
	struct kvm_vcpu *vcpus[MAX_VCPUS];
	struct bench b = { .m = m, .n = nr_vcpus, .fd = -1, .uffd = -1 };
	u64 region = pages_per_vcpu * PAGE_SIZE, pf0 = 0, ex0 = 0, csw0;
	u64 gmem_flags = m->gmem_flags, expect, i, j;
	long slab0;
	double t0, tsc_khz;
	u32 *lat;

	b.pages = pages_per_vcpu * nr_vcpus;
	b.size = b.pages * PAGE_SIZE;
	/* Page tables for the region, and the latency arrays. */
	b.vm = __vm_create_with_vcpus(shape, nr_vcpus,
				      b.pages / 512 + b.pages / 1024 + 64,
				      guest_touch, vcpus);
	switch (m->backing) {
	case B_ANON:
	case B_SHMEM:
		vm_userspace_mem_region_add(b.vm, m->backing == B_ANON ?
					    VM_MEM_SRC_ANONYMOUS :
					    VM_MEM_SRC_SHMEM, BENCH_GPA,
					    BENCH_SLOT, b.pages, 0);
		b.mem = addr_gpa2hva(b.vm, BENCH_GPA);
		break;
	case B_GMEM_SHARED:
		gmem_flags |= GUEST_MEMFD_FLAG_MMAP |
			      GUEST_MEMFD_FLAG_INIT_SHARED;
		b.fd = vm_create_guest_memfd(b.vm, b.size, gmem_flags);
		b.mem = kvm_mmap(b.size, PROT_READ | PROT_WRITE, MAP_SHARED,
				 b.fd);
		vm_set_user_memory_region2(b.vm, BENCH_SLOT,
					   KVM_MEM_GUEST_MEMFD, BENCH_GPA,
					   b.size, b.mem, b.fd, 0);
		break;
	case B_GMEM_PRIVATE:
		b.fd = vm_create_guest_memfd(b.vm, b.size, gmem_flags);
		vm_mem_add(b.vm, VM_MEM_SRC_ANONYMOUS, BENCH_GPA, BENCH_SLOT,
			   b.pages, KVM_MEM_GUEST_MEMFD, b.fd, 0);
		vm_mem_set_private(b.vm, BENCH_GPA, b.size);
		break;
	}
	virt_map(b.vm, BENCH_GPA, BENCH_GPA, b.pages);
	prefill(&b);
	if (m->handler == H_UFFD_COPY || m->handler == H_UFFD_CONTINUE)
		uffd_register(&b);
	expect = m->handler == H_NONE && m->prefill == P_NONE ? 0 : FILL_WORD;

	for (i = 0; i < (u64)nr_vcpus; i++) {
		b.lat_gva[i] = vm_alloc(b.vm, pages_per_vcpu * sizeof(u32),
					KVM_UTIL_MIN_VADDR);
		vcpu_args_set(vcpus[i], 4, BENCH_GPA + i * region,
			      pages_per_vcpu, b.lat_gva[i], expect);
	}
	tsc_khz = __vcpu_ioctl(vcpus[0], KVM_GET_TSC_KHZ, NULL);
	TEST_ASSERT(tsc_khz > 0, "KVM_GET_TSC_KHZ: errno %d", errno);

	pthread_barrier_init(&b.ready, NULL, nr_vcpus + 1);
	pthread_barrier_init(&b.go, NULL, nr_vcpus + 1);
	handler_start(&b);
	for (i = 0; i < (u64)nr_vcpus; i++) {
		b.vc[i] = (struct vcpu_ctx){ .b = &b, .vcpu = vcpus[i],
					     .idx = i, .efd = b.vc[i].efd };
		TEST_ASSERT(!pthread_create(&b.vc[i].thread, NULL, vcpu_thread,
					    &b.vc[i]), "pthread_create");
	}
	pthread_barrier_wait(&b.ready);
	for (i = 0; i < (u64)nr_vcpus; i++) {
		pf0 += vcpu_get_stat(vcpus[i], pf_taken);
		ex0 += vcpu_get_stat(vcpus[i], exits);
	}
	slab0 = slab_bytes();
	csw0 = csw();
	t0 = now_s();
	pthread_barrier_wait(&b.go);
	for (i = 0; i < (u64)nr_vcpus; i++)
		pthread_join(b.vc[i].thread, NULL);
	s->secs = now_s() - t0;
	s->csw = csw() - csw0;
	s->slab_b = slab_bytes() - slab0;
	s->pf = s->exits = s->uf_exits = 0;
	for (i = 0; i < (u64)nr_vcpus; i++) {
		s->pf += vcpu_get_stat(vcpus[i], pf_taken);
		s->exits += vcpu_get_stat(vcpus[i], exits);
		s->uf_exits += b.vc[i].uf_exits;
		s->vcpu_sys += b.vc[i].syscalls;
	}
	s->pf -= pf0;
	s->exits -= ex0;
	handler_stop(&b);
	s->syscalls = b.syscalls;
	s->has_handler = b.has_handler;
	s->hcpu_us = b.hcpu_us;
	s->pages = b.pages;

	lat = malloc(b.pages * sizeof(u32));
	TEST_ASSERT(lat, "malloc");
	for (i = 0; i < (u64)nr_vcpus; i++)
		for (j = 0; j < pages_per_vcpu; j++)
			lat[i * pages_per_vcpu + j] =
				((u32 *)addr_gva2hva(b.vm, b.lat_gva[i]))[j];
	percentiles(lat, b.pages, tsc_khz / 1000, s);
	free(lat);

	pthread_barrier_destroy(&b.ready);
	pthread_barrier_destroy(&b.go);
	if (b.uffd >= 0)
		close(b.uffd);
	kvm_vm_free(b.vm);
	if (m->backing == B_GMEM_SHARED)
		kvm_munmap(b.mem, b.size);
	if (b.fd >= 0)
		close(b.fd);
}

struct host_ctx {
	struct bench *b;
	u64 first, nr;
	pthread_t thread;
};

static void *host_thread(void *arg)
{
	struct host_ctx *h = arg;
	struct bench *b = h->b;
	struct timespec t0, t1;
	char name[16];
	u64 p, val;

	snprintf(name, sizeof(name), "reader%lu", h->first / h->nr);
	pthread_setname_np(pthread_self(), name);
	pthread_barrier_wait(&b->go);
	for (p = h->first; p < h->first + h->nr; p++) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		val = READ_ONCE(*(u64 *)(b->mem + p * PAGE_SIZE));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		TEST_ASSERT(val == FILL_WORD, "page %lu holds 0x%lx", p, val);
		b->host_lat[p] = (t1.tv_sec - t0.tv_sec) * 1000000000ull +
				 t1.tv_nsec - t0.tv_nsec;
	}
	return NULL;
}

static void run_threads(const struct mode *m, int nr_threads, u64 pages,
			struct sample *s)
{
	struct bench b = { .m = m, .n = nr_threads, .fd = -1, .uffd = -1 };
	struct host_ctx h[MAX_THREADS];
	u64 csw0, per = pages / nr_threads;
	long slab0;
	double t0;
	int i;

	b.pages = per * nr_threads;
	b.size = b.pages * PAGE_SIZE;
	b.host_lat = calloc(b.pages, sizeof(u32));
	TEST_ASSERT(b.host_lat, "calloc");
	if (m->backing == B_ANON) {
		b.mem = mmap(NULL, b.size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		TEST_ASSERT(b.mem != MAP_FAILED, "mmap: errno %d", errno);
		madvise(b.mem, b.size, MADV_NOHUGEPAGE);
		uffd_register(&b);
	} else {
		b.vm = vm_create_barebones();
		b.fd = vm_create_guest_memfd(b.vm, b.size, m->gmem_flags |
					     GUEST_MEMFD_FLAG_MMAP |
					     GUEST_MEMFD_FLAG_INIT_SHARED);
		b.mem = kvm_mmap(b.size, PROT_READ | PROT_WRITE, MAP_SHARED,
				 b.fd);
	}
	pthread_barrier_init(&b.go, NULL, nr_threads + 1);
	handler_start(&b);
	for (i = 0; i < nr_threads; i++) {
		h[i] = (struct host_ctx){ .b = &b, .first = i * per,
					  .nr = per };
		TEST_ASSERT(!pthread_create(&h[i].thread, NULL, host_thread,
					    &h[i]), "pthread_create");
	}
	slab0 = slab_bytes();
	csw0 = csw();
	t0 = now_s();
	pthread_barrier_wait(&b.go);
	for (i = 0; i < nr_threads; i++)
		pthread_join(h[i].thread, NULL);
	s->secs = now_s() - t0;
	s->csw = csw() - csw0;
	s->slab_b = slab_bytes() - slab0;
	handler_stop(&b);
	s->pf = s->exits = s->uf_exits = 0;
	s->syscalls = b.syscalls;
	s->has_handler = b.has_handler;
	s->hcpu_us = b.hcpu_us;
	s->pages = b.pages;
	percentiles(b.host_lat, b.pages, 1000, s);

	pthread_barrier_destroy(&b.go);
	free(b.host_lat);
	if (b.uffd >= 0)
		close(b.uffd);
	if (m->backing == B_ANON) {
		munmap(b.mem, b.size);
	} else {
		kvm_munmap(b.mem, b.size);
		close(b.fd);
		kvm_vm_free(b.vm);
	}
}

static void print_sample(const struct mode *m, int n, int round,
			 const struct sample *s)
{
	double f = s->pages;

	printf("bench,%s,%s,%d,%d,%lu,%.6f,%.1f,", m->name,
	       m->host ? "threads" : "vcpus", n, round, s->pages, s->secs,
	       s->pages / s->secs);
	if (m->host)
		printf(",,,%.3f,", s->syscalls / f);
	else
		printf("%.3f,%.3f,%.3f,%.3f,", s->pf / f, s->exits / f,
		       s->uf_exits / f, s->syscalls / f);
	if (m->host)
		printf(",");
	else
		printf("%.3f,", s->vcpu_sys / f);
	printf("%.3f,%.2f,%.2f,", s->csw / f, s->p50_us, s->p99_us);
	if (s->has_handler)
		printf("%.3f", s->hcpu_us / f);
	printf(",%.2f\n", s->slab_b / f);
	fflush(stdout);
}

/* "1,2,4" into @v, at most @max values; returns how many. */
static int parse_list(const char *arg, int *v, int max)
{
	char *end;
	int n = 0;

	while (*arg && n < max) {
		v[n] = strtol(arg, &end, 10);
		TEST_ASSERT(end != arg && v[n] > 0, "Bad list '%s'", arg);
		n++;
		arg = *end == ',' ? end + 1 : end;
	}
	return n;
}

int main(int argc, char *argv[])
{
	int vcpus[MAX_VCPUS] = { 1, 2 }, threads[8] = { 1, 2, 4, 8 };
	int nr_vcpu_counts = 2, nr_thread_counts = 4, rounds = 2;
	u64 mib = 16, host_mib = 32;
	const char *only = NULL;
	struct sample s;
	unsigned int i;
	int opt, r, k;
	u64 features;

	while ((opt = getopt(argc, argv, "m:n:r:t:M:o:1")) != -1) {
		switch (opt) {
		case '1': {
			cpu_set_t one;

			CPU_ZERO(&one);
			CPU_SET(0, &one);
			/* Inherited by every thread created from here on. */
			TEST_ASSERT(!sched_setaffinity(0, sizeof(one), &one),
				    "sched_setaffinity: errno %d", errno);
			break;
		}
		case 'm':
			mib = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			nr_vcpu_counts = parse_list(optarg, vcpus, MAX_VCPUS);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		case 't':
			nr_thread_counts = parse_list(optarg, threads, 8);
			break;
		case 'M':
			host_mib = strtoull(optarg, NULL, 0);
			break;
		case 'o':
			only = optarg;
			break;
		default:
			fprintf(stderr, "usage: %s [-m MiB] [-n vcpus,...] [-r rounds] [-t threads,...] [-M MiB] [-o mode] [-1]\n",
				argv[0]);
			return 2;
		}
	}
	TEST_ASSERT(mib && host_mib && rounds > 0, "Bad sizes or rounds");

	features = kvm_check_cap(KVM_CAP_GUEST_MEMFD_USERFAULT);
	TEST_REQUIRE((features & BENCH_FEATURES) == BENCH_FEATURES);
	memset(fill_page, FILL_BYTE, sizeof(fill_page));

	printf("bench-header,mode,kind,n,round,pages,secs,rate,pf,exits,uf_exits,syscalls,vcpu_sys,csw,p50_us,p99_us,hcpu_us,slab_b\n");
	for (i = 0; i < ARRAY_SIZE(modes); i++) {
		const struct mode *m = &modes[i];
		int *ns = m->host ? threads : vcpus;
		int nr = m->host ? nr_thread_counts : nr_vcpu_counts;

		if (only && strcmp(only, m->name))
			continue;
		if (m->backing == B_GMEM_PRIVATE &&
		    !(kvm_check_cap(KVM_CAP_VM_TYPES) &
		      BIT(KVM_X86_SW_PROTECTED_VM))) {
			printf("# %s: no KVM_X86_SW_PROTECTED_VM\n", m->name);
			continue;
		}
		for (k = 0; k < nr; k++) {
			for (r = 1; r <= rounds; r++) {
				memset(&s, 0, sizeof(s));
				if (m->host)
					run_threads(m, ns[k],
						    host_mib * SZ_1M / PAGE_SIZE,
						    &s);
				else
					run_vcpus(m, ns[k],
						  mib * SZ_1M / PAGE_SIZE, &s);
				print_sample(m, ns[k], r, &s);
			}
		}
	}
	return 0;
}
