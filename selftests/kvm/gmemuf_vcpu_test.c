// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf_vcpu_test: vCPUs, and KVM on their behalf, touching missing pages of
 * a userfault guest_memfd.
 *
 * A vCPU that touches a missing page posts one record of the fault
 * (GMEMUF_FAULT_VCPU, GMEMUF_FAULT_PRIVATE for private memory) and waits in
 * KVM_RUN for the page; with GUEST_MEMFD_FLAG_USERFAULT_EXIT it exits instead
 * with a KVM_EXIT_MEMORY_FAULT flagged KVM_MEMORY_EXIT_FLAG_USERFAULT. The
 * guests check what they read, so every test verifies contents from inside
 * the guest.
 *
 *  region.every_page_on_demand: two vCPUs each read then write every page of
 *    their own region, whose pages all start missing; a handler fetches the
 *    records and populates each page. Variants: shared memory of a default
 *    VM (MMAP | INIT_SHARED) and private memory of a KVM_X86_SW_PROTECTED_VM,
 *    each in wait and exit mode, and a handler in a process of its own.
 *    Exactly one record per page, all from vCPUs, private as the memory is.
 *  signal_kick_no_second_record: a waiting vCPU kicked by signals leaves
 *    KVM_RUN with EINTR and, run again, waits with no second record.
 *  interrupt_ends_wait: an interrupt (KVM_SIGNAL_MSI) for a waiting vCPU
 *    ends the wait; the guest takes it, touches the page again and waits
 *    again with no second record, then reads the populated page.
 *  interrupt_on_missing_stack: an interrupt whose delivery faults on a
 *    missing page has the vCPU wait for the page without spinning.
 *  vcpu_and_mmap_one_record: a vCPU and a task reading a mapping wait for
 *    the same page: one record, and both see the populated page.
 *  arm_zaps_stage2: arming a page the guest has mapped makes its next
 *    access fault and see the page populated anew.
 *  memslot_delete_ends_wait: deleting the memslot a vCPU waits on ends the
 *    wait (MMIO exit, no GMEMUF_IOC_WAKE); recreated, the vCPU waits on it
 *    again and reads the page once populated. punch_hole_while_waiting:
 *    does not hang, and does not map the missing page.
 *  one_kvm_fault_per_page: a vCPU that waited for a page maps it in the
 *    same fault: one KVM page fault per missing page (KVM's pf_taken).
 *  conversion_while_waiting: converting a page from private to shared
 *    (KVM_SET_MEMORY_ATTRIBUTES) while a vCPU waits for it ends the wait,
 *    with no GMEMUF_IOC_WAKE: the vCPU runs its fault again and reads the
 *    shared page.
 *  pre_fault_memory_waits: KVM_PRE_FAULT_MEMORY on missing pages posts
 *    their faults and waits for them; pre_fault_memory_memslot_deleted: it
 *    returns EAGAIN if a memslot went away while it waited.
 *  killed_with_vcpus_waiting: a VMM killed while its vCPUs wait dies.
 *  stats_wait_mode, stats_exit_mode: KVM's binary stats count exactly the
 *    faults, exits, waits and wait time of a vCPU that touches missing
 *    pages, and the records posted and pages populated of its VM; the
 *    region tests and others check them too. stats_exit_again: KVM_RUN
 *    entered again before the page is there exits, and counts, again,
 *    with no second fault posted.
 *  tracepoints: the gmemuf events of a vCPU's fault fetched and populated,
 *    and of a task's fault on a mapping read() and zero-filled, each once,
 *    with the file's inode number, the offset and the flags.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <liburing.h>
#include <linux/gmemuf.h>
#include <linux/sizes.h>

#include "apic.h"
#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"
#include "kselftest_harness.h"
#include "gmemuf_pattern.h"

#define UF_FEATURES	(GMEMUF_FEATURE_POPULATE | GMEMUF_FEATURE_URING_FETCH | \
			 GMEMUF_FEATURE_VCPU_WAIT | GMEMUF_FEATURE_VCPU_EXIT)
#define UF_SHARED_FLAGS	(GUEST_MEMFD_FLAG_USERFAULT | GUEST_MEMFD_FLAG_MMAP | \
			 GUEST_MEMFD_FLAG_INIT_SHARED)

/* Far above slot 0 (code, page tables, stacks) and the PCI hole. */
#define UF_GPA			((u64)SZ_4G)
#define UF_SLOT			10

#define NR_VCPUS		2
#define PAGES_PER_VCPU		32
#define NR_PAGES		(NR_VCPUS * PAGES_PER_VCPU)
#define REGION_SIZE		((u64)PAGES_PER_VCPU * PAGE_SIZE)
#define UF_SIZE			((u64)NR_PAGES * PAGE_SIZE)
#define WORDS_PER_PAGE		(PAGE_SIZE / sizeof(u64))

/* The tests of one vCPU and a few pages. */
#define SMALL_PAGES		16
#define SMALL_SIZE		((u64)SMALL_PAGES * PAGE_SIZE)
#define KICK_PAGE		5
#define KICK_SIGNALS		3
#define KICK_GAP_US		50000

#define SEED_HOST		0x686f737431ull		/* "host1" */
#define SEED_GUEST		0x6775657374ull		/* "guest" */
#define SEED_REPOP		0x7265706f70ull		/* "repop" */
#define SEED_SHARED		0x7368617265ull		/* "share" */
#define CSUM_INIT		0xcb5e1ec7a9a5b00bull
#define SHARED_POISON		0xa5

#define FETCH_NR		64

/*
 * Every test gets this long: the target runs KVM nested under TCG. Waits
 * inside a test are bounded well below it, so that a hang is reported as
 * what it is rather than as a harness timeout.
 */
#define UF_TIMEOUT		120
#define RECORD_MS		30000	/* for a record that must come */
#define NO_RECORD_MS		300	/* for one that must not */
#define STILL_WAITING_MS	300	/* for a vCPU that must not go on */
#define SERVE_POLL_MS		50
#define SERVE_DRAIN_MS		300
#define VCPU_JOIN_S		80

/* The pages of the stats and tracepoint tests: one vCPU reads each once. */
#define STATS_PAGES		8
#define TRACE_DIR		"/sys/kernel/tracing"
#define TRACE_INSTANCE		TRACE_DIR "/instances/gmemuf_vcpu_test"

#define STAGE_CSUM		1
#define STAGE_READ		2
#define STAGE_IRQ		3

/* Of the interrupt that interrupt_ends_wait sends a waiting vCPU. */
#define KICK_VECTOR		0xe0

/*
 * The guest of the region tests: @npages pages at @gva, file offset
 * @file_off of the guest_memfd. Read every word of a page (the first touch,
 * which faults on the missing page) and check the host's pattern, then
 * overwrite the page with the guest's; at the end check the guest's writes.
 * Report a checksum of everything read.
 */
/*
 * Read every word of @page, at file offset @off, check that it holds @seed's
 * pattern, and fold it into @csum.
 */
static u64 guest_check_page(const u64 *page, u64 off, u64 seed, u64 csum)
{
	u64 i, val, want;

	for (i = 0; i < WORDS_PER_PAGE; i++) {
		val = READ_ONCE(page[i]);
		want = pattern_word(seed, off + i * sizeof(u64));
		__GUEST_ASSERT(val == want,
			       "Guest read 0x%lx at file offset 0x%lx, wanted 0x%lx (seed 0x%lx)",
			       val, off + i * sizeof(u64), want, seed);
		csum = pattern_csum(csum, val);
	}
	return csum;
}

static void guest_region(u64 gva, u64 file_off, u64 npages)
{
	u64 csum = CSUM_INIT, p, i, off;
	u64 *page;

	for (p = 0; p < npages; p++) {
		page = (u64 *)(gva + p * PAGE_SIZE);
		off = file_off + p * PAGE_SIZE;
		csum = guest_check_page(page, off, SEED_HOST, csum);
		for (i = 0; i < WORDS_PER_PAGE; i++)
			WRITE_ONCE(page[i],
				   pattern_word(SEED_GUEST, off + i * sizeof(u64)));
	}

	for (p = 0; p < npages; p++)
		csum = guest_check_page((u64 *)(gva + p * PAGE_SIZE),
					file_off + p * PAGE_SIZE, SEED_GUEST,
					csum);

	GUEST_SYNC2(STAGE_CSUM, csum);
	GUEST_DONE();
}

/* What guest_region() reports for @npages pages at file offset @file_off. */
static u64 expected_csum(u64 file_off, u64 npages)
{
	u64 csum = CSUM_INIT, off, end = file_off + npages * PAGE_SIZE;

	for (off = file_off; off < end; off += sizeof(u64))
		csum = pattern_csum(csum, pattern_word(SEED_HOST, off));
	for (off = file_off; off < end; off += sizeof(u64))
		csum = pattern_csum(csum, pattern_word(SEED_GUEST, off));
	return csum;
}

/*
 * The guest of the other tests: read the first word of each of @npages
 * pages at @gva, @times times over, and report each value read.
 */
static void guest_read_words(u64 gva, u64 npages, u64 times)
{
	u64 t, p;

	for (t = 0; t < times; t++)
		for (p = 0; p < npages; p++)
			GUEST_SYNC2(STAGE_READ,
				    READ_ONCE(*(u64 *)(gva + p * PAGE_SIZE)));
	GUEST_DONE();
}

static void fill_page(u64 *buf, u64 seed, u64 off)
{
	u64 i;

	for (i = 0; i < WORDS_PER_PAGE; i++)
		buf[i] = pattern_word(seed, off + i * sizeof(u64));
}

/* Populate the page at @off with @seed's pattern: 0 or -errno. */
static int populate_seed(int fd, u64 off, u64 seed)
{
	u64 buf[WORDS_PER_PAGE];
	ssize_t r;

	fill_page(buf, seed, off);
	r = pwrite(fd, buf, PAGE_SIZE, off);
	if (r == PAGE_SIZE)
		return 0;
	return r < 0 ? -errno : -EIO;
}

static int populate(int fd, u64 off)
{
	return populate_seed(fd, off, SEED_HOST);
}

/* Check the guest's pattern in [@off, @off + @size) of mapping @mem. */
static void host_check_guest_writes(const u64 *mem, u64 off, u64 size)
{
	u64 i, val, want;

	for (i = off / sizeof(u64); i < (off + size) / sizeof(u64); i++) {
		val = READ_ONCE(mem[i]);
		want = pattern_word(SEED_GUEST, i * sizeof(u64));
		TEST_ASSERT(val == want,
			    "Host read 0x%lx at guest_memfd offset 0x%lx, wanted the guest's 0x%lx",
			    val, i * sizeof(u64), want);
	}
}

/* The number of missing pages of [@off, @off + @size); bits in @bitmap. */
static u64 count_missing(int fd, u64 off, u64 size, u64 *bitmap)
{
	struct gmemuf_bitmap b = {
		.offset = off,
		.len = size,
		.bitmap = (__u64)(uintptr_t)bitmap,
	};

	TEST_ASSERT(!ioctl(fd, GMEMUF_IOC_GET_BITMAP, &b),
		    "GMEMUF_IOC_GET_BITMAP failed: errno %d", errno);
	return b.missing;
}

static void range_ioctl(int fd, unsigned long ioctl_nr, u64 off, u64 len)
{
	struct gmemuf_range range = { .offset = off, .len = len };

	TEST_ASSERT(!ioctl(fd, ioctl_nr, &range),
		    "gmemuf range ioctl 0x%lx failed: errno %d", ioctl_nr,
		    errno);
}

/*
 * A record from a vCPU (and only that source), with an access bit, private
 * or shared as asked, reserved clear.
 */
static bool record_ok(const struct gmemuf_fault *f, bool private)
{
	const u32 access = GMEMUF_FAULT_READ | GMEMUF_FAULT_WRITE |
			   GMEMUF_FAULT_EXEC;
	const u32 source = GMEMUF_FAULT_MMAP_USER | GMEMUF_FAULT_MMAP_KERNEL |
			   GMEMUF_FAULT_VCPU;

	return (f->flags & access) &&
	       (f->flags & source) == GMEMUF_FAULT_VCPU &&
	       !!(f->flags & GMEMUF_FAULT_PRIVATE) == private &&
	       !f->reserved;
}

/* A handler: its handler file and its own ring, for one thread. */
struct handler {
	int hfd;
	struct io_uring ring;
	struct gmemuf_fault faults[FETCH_NR];
};

static void handler_open(struct handler *h, int gmem_fd)
{
	int r;

	h->hfd = ioctl(gmem_fd, GMEMUF_IOC_HANDLER, 0);
	TEST_ASSERT(h->hfd >= 0, "GMEMUF_IOC_HANDLER failed: errno %d", errno);
	r = io_uring_queue_init(8, &h->ring, 0);
	TEST_ASSERT(!r, "io_uring_queue_init failed: %d", r);
}

/* Closing the ring cancels the fetch still parked on it. */
static void handler_close(struct handler *h)
{
	io_uring_queue_exit(&h->ring);
	close(h->hfd);
}

/* Park a GMEMUF_CMD_FETCH for up to FETCH_NR records. */
static void handler_fetch(struct handler *h)
{
	struct gmemuf_fetch fetch = {
		.addr = (__u64)(uintptr_t)h->faults,
		.nr = FETCH_NR,
	};
	struct io_uring_sqe *sqe = io_uring_get_sqe(&h->ring);
	int r;

	TEST_ASSERT(sqe, "No SQE free");
	/* Debian's liburing 2.3 has no io_uring_prep_uring_cmd(). */
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, h->hfd, NULL, 0, 0);
	sqe->cmd_op = GMEMUF_CMD_FETCH;
	memcpy(sqe->cmd, &fetch, sizeof(fetch));
	r = io_uring_submit(&h->ring);
	TEST_ASSERT(r == 1, "io_uring_submit gave %d", r);
}

/* The fetch's result (records, or -errno), or -ETIME after @ms. */
static int handler_wait(struct handler *h, int ms)
{
	struct __kernel_timespec ts = {
		.tv_sec = ms / 1000,
		.tv_nsec = (ms % 1000) * 1000000ll,
	};
	struct io_uring_cqe *cqe;
	int r;

	do {
		r = io_uring_wait_cqe_timeout(&h->ring, &cqe, &ts);
	} while (r == -EINTR);
	if (r)
		return r;
	r = cqe->res;
	io_uring_cqe_seen(&h->ring, cqe);
	return r;
}

/* Fetch exactly one record, from a vCPU, for the page at @off. */
static void expect_one_record(struct handler *h, u64 off, bool private)
{
	const struct gmemuf_fault *f = &h->faults[0];
	int n;

	handler_fetch(h);
	n = handler_wait(h, RECORD_MS);
	TEST_ASSERT(n == 1, "The fetch gave %d, wanted 1 record", n);
	TEST_ASSERT(f->offset == off && record_ok(f, private),
		    "Record offset 0x%llx flags 0x%x reserved 0x%x, wanted offset 0x%lx from a %s vCPU access",
		    f->offset, f->flags, f->reserved, off,
		    private ? "private" : "shared");
}

/* No record comes for a while. */
static void expect_no_record(struct handler *h)
{
	int n;

	handler_fetch(h);
	n = handler_wait(h, NO_RECORD_MS);
	TEST_ASSERT(n == -ETIME,
		    "The fetch gave %d (offset 0x%llx flags 0x%x), wanted no record",
		    n, h->faults[0].offset, h->faults[0].flags);
}

/*
 * A vCPU run in a thread of its own to GUEST_DONE, or to an exit that is not
 * a ucall. With @count_eintr, EINTR from KVM_RUN is counted and KVM_RUN
 * called again. In exit mode, a userfault exit is checked, counted, and
 * answered by waiting until the page is present, as a VMM would.
 */
struct vcpu_ctx {
	struct kvm_vcpu *vcpu;
	pthread_t thread;
	bool count_eintr;
	/* Exit mode: the file, and where its offset 0 is in the guest. */
	bool exit_mode;
	bool private;
	int gmem_fd;
	u64 gpa_base;

	/* Results, read after the join. */
	int rc;			/* of the KVM_RUN that ended the run */
	int err;		/* its errno */
	u32 exit_reason;
	u64 mf_gpa, mf_size, mf_flags;
	u64 mmio_addr;
	bool done;
	bool aborted;
	struct ucall abort_uc;
	u64 bad_ucall;
	u64 csum;
	bool got_csum;
	u64 reads[8];
	unsigned int nr_reads;
	unsigned int eintr;
	unsigned int eintr_bad_reason;	/* EINTRs without KVM_EXIT_INTR */
	unsigned int irqs;		/* STAGE_IRQ ucalls, read while it runs */
	unsigned int uf_exits;
	unsigned int bad_uf_exits;
};

#define RC_BAD_EXIT	(-1000)

/* A userfault exit as exit mode makes them; wait for its page. */
static bool vcpu_userfault_exit(struct vcpu_ctx *c)
{
	struct kvm_run *run = c->vcpu->run;
	u64 want = KVM_MEMORY_EXIT_FLAG_USERFAULT |
		   (c->private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0);
	u64 off = run->memory_fault.gpa - c->gpa_base;
	int i;

	if (errno != EFAULT || run->exit_reason != KVM_EXIT_MEMORY_FAULT ||
	    !c->exit_mode)
		return false;

	c->uf_exits++;
	if (run->memory_fault.flags != want ||
	    run->memory_fault.size != PAGE_SIZE ||
	    run->memory_fault.gpa < c->gpa_base || off >= UF_SIZE ||
	    off % PAGE_SIZE) {
		c->bad_uf_exits++;
		return false;
	}
	/* The handler has the record: wait for its populate. */
	for (i = 0; i < VCPU_JOIN_S * 1000; i++) {
		if (!count_missing(c->gmem_fd, off, PAGE_SIZE, NULL))
			return true;
		usleep(1000);
	}
	return false;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_ctx *c = arg;
	struct kvm_run *run = c->vcpu->run;
	struct ucall uc;
	int r;

	for (;;) {
		r = __vcpu_run(c->vcpu);
		if (r == -1 && errno == EINTR) {
			if (!c->count_eintr)
				continue;
			c->eintr++;
			if (run->exit_reason != KVM_EXIT_INTR)
				c->eintr_bad_reason++;
			continue;
		}
		c->exit_reason = run->exit_reason;
		if (r) {
			if (vcpu_userfault_exit(c))
				continue;
			c->rc = r;
			c->err = errno;
			c->mf_gpa = run->memory_fault.gpa;
			c->mf_size = run->memory_fault.size;
			c->mf_flags = run->memory_fault.flags;
			break;
		}
		if (run->exit_reason != KVM_EXIT_IO) {
			c->rc = RC_BAD_EXIT;
			if (run->exit_reason == KVM_EXIT_MMIO)
				c->mmio_addr = run->mmio.phys_addr;
			break;
		}
		switch (get_ucall(c->vcpu, &uc)) {
		case UCALL_SYNC:
			if (uc.args[0] == STAGE_CSUM) {
				c->csum = uc.args[1];
				c->got_csum = true;
			} else if (uc.args[0] == STAGE_READ &&
				   c->nr_reads < ARRAY_SIZE(c->reads)) {
				c->reads[c->nr_reads++] = uc.args[1];
			} else if (uc.args[0] == STAGE_IRQ) {
				__atomic_fetch_add(&c->irqs, 1,
						   __ATOMIC_RELEASE);
			} else {
				c->bad_ucall = UCALL_SYNC;
				break;
			}
			continue;
		case UCALL_DONE:
			c->done = true;
			break;
		case UCALL_ABORT:
			c->abort_uc = uc;
			c->aborted = true;
			break;
		default:
			c->bad_ucall = uc.cmd;
			break;
		}
		break;
	}
	return NULL;
}

static void vcpu_start(struct vcpu_ctx *c, struct kvm_vcpu *vcpu)
{
	int r;

	c->vcpu = vcpu;
	r = pthread_create(&c->thread, NULL, vcpu_thread, c);
	TEST_ASSERT(!r, "pthread_create failed: %d", r);
}

/* 0 when the vCPU thread is done, ETIMEDOUT if it still runs after @ms. */
static int vcpu_join_ms(struct vcpu_ctx *c, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000l;
	if (ts.tv_nsec >= 1000000000l) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000l;
	}
	return pthread_timedjoin_np(c->thread, NULL, &ts);
}

static void vcpu_join(struct vcpu_ctx *c)
{
	TEST_ASSERT(!vcpu_join_ms(c, VCPU_JOIN_S * 1000),
		    "The vCPU still runs after %d s", VCPU_JOIN_S);
}

/* The vCPU is still waiting for its page. */
static void expect_still_waiting(struct vcpu_ctx *c)
{
	TEST_ASSERT(vcpu_join_ms(c, STILL_WAITING_MS) == ETIMEDOUT,
		    "The vCPU went on (exit reason %u, rc %d, errno %d) while its page was missing",
		    c->exit_reason, c->rc, c->err);
}

/* The vCPU ran to GUEST_DONE with no error. */
static void vcpu_check_done(struct vcpu_ctx *c, int idx)
{
	if (c->aborted)
		REPORT_GUEST_ASSERT(c->abort_uc);
	TEST_ASSERT(!c->rc,
		    "vCPU %d: KVM_RUN returned %d, errno %d, exit reason %u (%s), memory_fault gpa 0x%lx size 0x%lx flags 0x%lx",
		    idx, c->rc, c->err, c->exit_reason,
		    exit_reason_str(c->exit_reason), c->mf_gpa, c->mf_size,
		    c->mf_flags);
	TEST_ASSERT(!c->bad_ucall, "vCPU %d: unexpected ucall %lu", idx,
		    c->bad_ucall);
	TEST_ASSERT(!c->bad_uf_exits, "vCPU %d: %u malformed userfault exits",
		    idx, c->bad_uf_exits);
	TEST_ASSERT(c->done, "vCPU %d stopped before GUEST_DONE", idx);
}

/*
 * The gmemuf stats of a vCPU that alone touched @npages missing pages: one
 * fault posted per page; in exit mode, an exit for each, as its thread
 * saw, which entered KVM_RUN again only once the page was there, and no
 * wait; in wait mode no exit, and waits that took time, if any (none where
 * the page came before the vCPU went to sleep). Not at most one per page:
 * a vCPU scheduled in on another CPU has KVM kick the VM's other vCPUs
 * (a kvmclock update), which ends a wait early, and the fault sleeps, and
 * counts, again.
 */
static void vcpu_check_stats(struct vcpu_ctx *c, int idx, u64 npages)
{
	u64 faults = vcpu_get_stat(c->vcpu, gmemuf_faults);
	u64 exits = vcpu_get_stat(c->vcpu, gmemuf_exits);
	u64 waits = vcpu_get_stat(c->vcpu, gmemuf_waits);
	u64 wait_ns = vcpu_get_stat(c->vcpu, gmemuf_wait_ns);

	TEST_ASSERT(faults == npages,
		    "vCPU %d: gmemuf_faults %lu for %lu missing pages", idx,
		    faults, npages);
	if (c->exit_mode)
		TEST_ASSERT(exits == faults && exits == c->uf_exits &&
			    !waits && !wait_ns,
			    "vCPU %d: gmemuf_exits %lu, gmemuf_waits %lu, gmemuf_wait_ns %lu for %lu faults and %u userfault exits",
			    idx, exits, waits, wait_ns, faults, c->uf_exits);
	else
		TEST_ASSERT(!exits && !waits == !wait_ns,
			    "vCPU %d: gmemuf_exits %lu, gmemuf_waits %lu, gmemuf_wait_ns %lu for %lu faults",
			    idx, exits, waits, wait_ns, faults);
}

/*
 * The handler of the region tests: fetch records, check each, populate its
 * page, until told to stop or, with @until_all, until every page is seen;
 * then drain for SERVE_DRAIN_MS so that a late duplicate is seen.
 */
struct server {
	int gmem_fd;
	bool private;
	bool until_all;
	struct handler h;
	pthread_t thread;
	bool stop;		/* __atomic */

	/* Results, read after the join (or from a pipe). */
	u64 seen[(NR_PAGES + 63) / 64];
	unsigned int nr_seen;
	unsigned int records;
	unsigned int dups;
	unsigned int bad_records;
	struct gmemuf_fault first_bad;
	int fetch_err;
	int populate_err;
	u64 populate_err_off;
};

static void serve_record(struct server *s, const struct gmemuf_fault *f)
{
	u64 page = f->offset / PAGE_SIZE;
	int r;

	s->records++;
	if (f->offset % PAGE_SIZE || f->offset >= UF_SIZE ||
	    !record_ok(f, s->private)) {
		if (!s->bad_records++)
			s->first_bad = *f;
		if (f->offset % PAGE_SIZE || f->offset >= UF_SIZE)
			return;
	}
	if (s->seen[page / 64] & (1ull << (page % 64))) {
		s->dups++;
		return;
	}
	s->seen[page / 64] |= 1ull << (page % 64);
	s->nr_seen++;

	r = populate(s->gmem_fd, f->offset);
	if (r && !s->populate_err) {
		s->populate_err = r;
		s->populate_err_off = f->offset;
	}
}

static void server_run(struct server *s)
{
	bool stopping;
	int n, i;

	handler_fetch(&s->h);
	for (;;) {
		stopping = __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) ||
			   (s->until_all && s->nr_seen == NR_PAGES);
		n = handler_wait(&s->h,
				 stopping ? SERVE_DRAIN_MS : SERVE_POLL_MS);
		if (n == -ETIME) {
			if (stopping)
				break;
			continue;
		}
		if (n <= 0 || n > FETCH_NR) {
			s->fetch_err = n ? n : -ENODATA;
			break;
		}
		for (i = 0; i < n; i++)
			serve_record(s, &s->h.faults[i]);
		handler_fetch(&s->h);
	}
}

static void *server_thread(void *arg)
{
	server_run(arg);
	return NULL;
}

static void server_init(struct server *s, int gmem_fd, bool private)
{
	memset(s, 0, sizeof(*s));
	s->gmem_fd = gmem_fd;
	s->private = private;
}

/*
 * Serve from a child process, which has the guest_memfd but not the VM,
 * and writes its results to @pipe_fd when every page is served.
 */
static pid_t server_fork(struct server *s, int pipe_fd)
{
	pid_t pid = fork();

	TEST_ASSERT(pid >= 0, "fork failed: errno %d", errno);
	if (pid)
		return pid;

	s->until_all = true;
	handler_open(&s->h, s->gmem_fd);
	server_run(s);
	handler_close(&s->h);
	_exit(write(pipe_fd, s, sizeof(*s)) == sizeof(*s) ? 0 : 1);
}

/* Exactly one good record for each page, each page populated once. */
static void server_check(struct server *s)
{
	u64 page;

	TEST_ASSERT(!s->fetch_err, "GMEMUF_CMD_FETCH completed with %d",
		    s->fetch_err);
	TEST_ASSERT(!s->bad_records,
		    "%u bad records, the first: offset 0x%llx flags 0x%x reserved 0x%x (wanted VCPU%s)",
		    s->bad_records, s->first_bad.offset, s->first_bad.flags,
		    s->first_bad.reserved, s->private ? " | PRIVATE" : "");
	TEST_ASSERT(!s->dups, "%u duplicate records (of %u)", s->dups,
		    s->records);
	TEST_ASSERT(!s->populate_err, "pwrite of the page at 0x%lx failed: %d",
		    s->populate_err_off, s->populate_err);
	TEST_ASSERT(s->records == NR_PAGES, "%u records, wanted %u",
		    s->records, NR_PAGES);
	for (page = 0; page < NR_PAGES; page++)
		TEST_ASSERT(s->seen[page / 64] & (1ull << (page % 64)),
			    "No record for page %lu", page);
}

/* A VM with one vCPU and a small shared userfault slot at UF_GPA. */
struct small_vm {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int fd;
	u64 *mem;
	struct handler h;
	struct vcpu_ctx ctx;
};

static void __small_vm_create(struct small_vm *s, void *guest, u64 npages,
			      u64 times, u64 gmem_flags)
{
	memset(s, 0, sizeof(*s));
	s->vm = vm_create_with_one_vcpu(&s->vcpu, guest);
	s->fd = vm_create_guest_memfd(s->vm, SMALL_SIZE, gmem_flags);
	s->mem = kvm_mmap(SMALL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			  s->fd);
	vm_set_user_memory_region2(s->vm, UF_SLOT, KVM_MEM_GUEST_MEMFD, UF_GPA,
				   SMALL_SIZE, s->mem, s->fd, 0);
	virt_map(s->vm, UF_GPA, UF_GPA, SMALL_PAGES);
	vcpu_args_set(s->vcpu, 3, UF_GPA, npages, times);
	handler_open(&s->h, s->fd);
}

static void small_vm_create(struct small_vm *s, void *guest, u64 npages,
			    u64 times)
{
	__small_vm_create(s, guest, npages, times, UF_SHARED_FLAGS);
}

static void small_vm_destroy(struct small_vm *s)
{
	handler_close(&s->h);
	kvm_vm_free(s->vm);
	kvm_munmap(s->mem, SMALL_SIZE);
	close(s->fd);
}

/* The tests of one case each. */
FIXTURE(vcpu) {};
FIXTURE_SETUP(vcpu) {}
FIXTURE_TEARDOWN(vcpu) {}

/* The tests of every kind of memory and mode. */
FIXTURE(region) {};

FIXTURE_VARIANT(region) {
	bool private;
	bool exit_mode;
	bool handler_process;
};

FIXTURE_VARIANT_ADD(region, shared_wait) {};
FIXTURE_VARIANT_ADD(region, shared_exit) { .exit_mode = true };
FIXTURE_VARIANT_ADD(region, private_wait) { .private = true };
FIXTURE_VARIANT_ADD(region, private_exit) {
	.private = true,
	.exit_mode = true,
};

FIXTURE_VARIANT_ADD(region, shared_wait_handler_process) {
	.handler_process = true,
};

FIXTURE_VARIANT_ADD(region, private_wait_handler_process) {
	.private = true,
	.handler_process = true,
};

FIXTURE_SETUP(region) {}
FIXTURE_TEARDOWN(region) {}

TEST_F_TIMEOUT(region, every_page_on_demand, UF_TIMEOUT)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = variant->private ? KVM_X86_SW_PROTECTED_VM :
					   KVM_X86_DEFAULT_VM,
	};
	u64 flags = variant->private ? GUEST_MEMFD_FLAG_USERFAULT :
				       UF_SHARED_FLAGS;
	struct vcpu_ctx ctx[NR_VCPUS] = {};
	struct kvm_vcpu *vcpus[NR_VCPUS];
	u8 *shared = NULL;
	u64 *mem = NULL, *buf;
	struct server srv;
	struct kvm_vm *vm;
	int i, fd, pipe_fd[2], status;
	pid_t pid = 0;

	if (variant->private &&
	    !(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM is not supported");
	if (variant->exit_mode)
		flags |= GUEST_MEMFD_FLAG_USERFAULT_EXIT;

	vm = __vm_create_with_vcpus(shape, NR_VCPUS, 0, guest_region, vcpus);
	fd = vm_create_guest_memfd(vm, UF_SIZE, flags);
	if (variant->private) {
		vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS, UF_GPA, UF_SLOT, NR_PAGES,
			   KVM_MEM_GUEST_MEMFD, fd, 0);
		/* The shared backing, which private accesses never touch. */
		shared = addr_gpa2hva(vm, UF_GPA);
		memset(shared, SHARED_POISON, UF_SIZE);
		vm_mem_set_private(vm, UF_GPA, UF_SIZE);
	} else {
		/* Not touched by the host until every page is present. */
		mem = kvm_mmap(UF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
		vm_set_user_memory_region2(vm, UF_SLOT, KVM_MEM_GUEST_MEMFD,
					   UF_GPA, UF_SIZE, mem, fd, 0);
	}
	virt_map(vm, UF_GPA, UF_GPA, NR_PAGES);
	TEST_ASSERT_EQ(count_missing(fd, 0, UF_SIZE, NULL), NR_PAGES);

	server_init(&srv, fd, variant->private);
	if (variant->handler_process) {
		TEST_ASSERT(!pipe(pipe_fd), "pipe failed");
		pid = server_fork(&srv, pipe_fd[1]);
	} else {
		handler_open(&srv.h, fd);
		TEST_ASSERT(!pthread_create(&srv.thread, NULL, server_thread,
					    &srv), "pthread_create failed");
	}

	for (i = 0; i < NR_VCPUS; i++) {
		vcpu_args_set(vcpus[i], 3, UF_GPA + i * REGION_SIZE,
			      i * REGION_SIZE, PAGES_PER_VCPU);
		ctx[i].exit_mode = variant->exit_mode;
		ctx[i].private = variant->private;
		ctx[i].gmem_fd = fd;
		ctx[i].gpa_base = UF_GPA;
		vcpu_start(&ctx[i], vcpus[i]);
	}
	for (i = 0; i < NR_VCPUS; i++)
		vcpu_join(&ctx[i]);

	if (variant->handler_process) {
		TEST_ASSERT(read(pipe_fd[0], &srv, sizeof(srv)) == sizeof(srv),
			    "The handler process sent no results");
		TEST_ASSERT(waitpid(pid, &status, 0) == pid &&
			    WIFEXITED(status) && !WEXITSTATUS(status),
			    "The handler process failed: status 0x%x", status);
		close(pipe_fd[0]);
		close(pipe_fd[1]);
	} else {
		__atomic_store_n(&srv.stop, true, __ATOMIC_RELEASE);
		pthread_join(srv.thread, NULL);
		handler_close(&srv.h);
	}

	for (i = 0; i < NR_VCPUS; i++) {
		vcpu_check_done(&ctx[i], i);
		TEST_ASSERT(ctx[i].got_csum &&
			    ctx[i].csum == expected_csum(i * REGION_SIZE,
							 PAGES_PER_VCPU),
			    "vCPU %d reported checksum 0x%lx, wanted 0x%lx", i,
			    ctx[i].csum,
			    expected_csum(i * REGION_SIZE, PAGES_PER_VCPU));
		/* Exit mode: at least one exit per page, none in wait mode. */
		if (variant->exit_mode)
			TEST_ASSERT(ctx[i].uf_exits >= PAGES_PER_VCPU,
				    "vCPU %d: %u userfault exits for %u pages",
				    i, ctx[i].uf_exits, PAGES_PER_VCPU);
		else
			TEST_ASSERT_EQ(ctx[i].uf_exits, 0);
	}
	server_check(&srv);
	TEST_ASSERT_EQ(count_missing(fd, 0, UF_SIZE, NULL), 0);

	for (i = 0; i < NR_VCPUS; i++)
		vcpu_check_stats(&ctx[i], i, PAGES_PER_VCPU);
	/* One record per page, whoever fetched it; every page populated. */
	TEST_ASSERT_EQ(vm_get_stat(vm, gmemuf_posted), NR_PAGES);
	TEST_ASSERT_EQ(vm_get_stat(vm, gmemuf_populated), NR_PAGES);

	if (variant->private) {
		for (i = 0; i < UF_SIZE; i++)
			TEST_ASSERT(shared[i] == SHARED_POISON,
				    "The shared backing changed at 0x%x: 0x%x",
				    i, shared[i]);
	} else {
		/* No page is missing, so reading them cannot wait. */
		host_check_guest_writes(mem, 0, UF_SIZE);
	}
	/* pread() gives the memory as the guest sees it, private too. */
	buf = malloc(UF_SIZE);
	TEST_ASSERT(buf, "malloc failed");
	TEST_ASSERT_EQ(pread(fd, buf, UF_SIZE, 0), UF_SIZE);
	host_check_guest_writes(buf, 0, UF_SIZE);
	free(buf);

	kvm_vm_free(vm);
	if (mem)
		kvm_munmap(mem, UF_SIZE);
	close(fd);
}

static unsigned int nr_sigusr1;

static void sigusr1_handler(int sig)
{
	__atomic_fetch_add(&nr_sigusr1, 1, __ATOMIC_RELAXED);
}

/* Populate page @off, which the vCPU waits for: it reads @want, once. */
static void populate_and_expect_one_read(struct small_vm *s, u64 off, u64 want)
{
	TEST_ASSERT_EQ(populate(s->fd, off), 0);
	vcpu_join(&s->ctx);
	vcpu_check_done(&s->ctx, 0);
	TEST_ASSERT(s->ctx.nr_reads == 1 && s->ctx.reads[0] == want,
		    "The guest read 0x%lx (%u reads), wanted 0x%lx",
		    s->ctx.reads[0], s->ctx.nr_reads, want);
}

/*
 * After a test of waits ended early on KICK_PAGE: still the one record, and
 * only that page is present.
 */
static void expect_kick_page_alone_present(struct small_vm *s)
{
	u64 bitmap = 0;

	expect_no_record(&s->h);
	TEST_ASSERT_EQ(count_missing(s->fd, 0, SMALL_SIZE, &bitmap),
		       SMALL_PAGES - 1);
	TEST_ASSERT_EQ(bitmap, ((1ull << SMALL_PAGES) - 1) &
			       ~(1ull << KICK_PAGE));
}

TEST_F_TIMEOUT(vcpu, signal_kick_no_second_record, UF_TIMEOUT)
{
	const u64 off = (u64)KICK_PAGE * PAGE_SIZE;
	struct sigaction sa = { .sa_handler = sigusr1_handler };
	u64 want = pattern_word(SEED_HOST, off);
	struct small_vm s;
	int i, r;

	/* No SA_RESTART: KVM_RUN must come back with EINTR. */
	sigemptyset(&sa.sa_mask);
	TEST_ASSERT(!sigaction(SIGUSR1, &sa, NULL), "sigaction failed");

	small_vm_create(&s, guest_read_words, 1, 1);
	vcpu_args_set(s.vcpu, 3, UF_GPA + off, 1, 1);
	s.ctx.count_eintr = true;
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, off, false);

	for (i = 0; i < KICK_SIGNALS; i++) {
		r = pthread_kill(s.ctx.thread, SIGUSR1);
		TEST_ASSERT(!r, "pthread_kill failed: %d", r);
		usleep(KICK_GAP_US);
	}
	expect_no_record(&s.h);
	TEST_ASSERT_EQ(count_missing(s.fd, 0, SMALL_SIZE, NULL), SMALL_PAGES);

	/* immediate_exit, then a kick: EINTR at once, and no record. */
	WRITE_ONCE(s.vcpu->run->immediate_exit, 1);
	pthread_kill(s.ctx.thread, SIGUSR1);
	usleep(KICK_GAP_US);
	WRITE_ONCE(s.vcpu->run->immediate_exit, 0);
	pthread_kill(s.ctx.thread, SIGUSR1);

	populate_and_expect_one_read(&s, off, want);
	TEST_ASSERT(s.ctx.eintr >= KICK_SIGNALS,
		    "KVM_RUN failed with EINTR %u times for %u signals (%u handled)",
		    s.ctx.eintr, KICK_SIGNALS + 2,
		    __atomic_load_n(&nr_sigusr1, __ATOMIC_RELAXED));
	TEST_ASSERT(!s.ctx.eintr_bad_reason,
		    "%u of %u EINTRs came without KVM_EXIT_INTR",
		    s.ctx.eintr_bad_reason, s.ctx.eintr);
	/* Its fault ran again after each signal, and posted once. */
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), 1);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), 1);

	expect_kick_page_alone_present(&s);
	small_vm_destroy(&s);
}

/*
 * The guest of interrupt_ends_wait: guest_read_words() with its local APIC
 * enabled and interrupts on, so that an interrupt sent while it waits for a
 * page is taken as soon as its vCPU enters the guest again.
 */
static void guest_irq_handler(struct ex_regs *regs)
{
	GUEST_SYNC2(STAGE_IRQ, regs->vector);
	x2apic_write_reg(APIC_EOI, 0);
}

static void guest_read_words_irqs_on(u64 gva, u64 npages, u64 times)
{
	x2apic_enable();
	sti_nop();
	guest_read_words(gva, npages, times);
}

/* Wait up to VCPU_JOIN_S for the vCPU's STAGE_IRQ ucall number @n. */
static bool wait_for_irq(struct vcpu_ctx *c, unsigned int n)
{
	int i;

	for (i = 0; i < VCPU_JOIN_S * 100; i++) {
		if (__atomic_load_n(&c->irqs, __ATOMIC_ACQUIRE) >= n)
			return true;
		usleep(10000);
	}
	return false;
}

/*
 * An interrupt for a vCPU that waits for a page (KVM_SIGNAL_MSI to the
 * in-kernel local APIC, which makes KVM_REQ_EVENT and kicks the vCPU) ends
 * the wait: the vCPU enters the guest, which takes the interrupt, and when
 * the handler returns it touches the page again and waits again, with no
 * second record; the populate then lets it read the page.
 */
TEST_F_TIMEOUT(vcpu, interrupt_ends_wait, UF_TIMEOUT)
{
	const u64 off = (u64)KICK_PAGE * PAGE_SIZE;
	struct kvm_msi msi = {
		.address_lo = 0xfee00000,	/* to APIC ID 0: the vCPU */
		.data = KICK_VECTOR,		/* fixed, edge */
	};
	u64 want = pattern_word(SEED_HOST, off);
	struct small_vm s;
	int i, r;

	small_vm_create(&s, guest_read_words_irqs_on, 1, 1);
	vm_install_exception_handler(s.vm, KICK_VECTOR, guest_irq_handler);
	vcpu_args_set(s.vcpu, 3, UF_GPA + off, 1, 1);
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, off, false);

	for (i = 1; i <= KICK_SIGNALS; i++) {
		r = __vm_ioctl(s.vm, KVM_SIGNAL_MSI, &msi);
		TEST_ASSERT(r == 1, "KVM_SIGNAL_MSI gave %d, errno %d", r,
			    errno);
		TEST_ASSERT(wait_for_irq(&s.ctx, i),
			    "The waiting vCPU took %u of %d interrupts in %d s",
			    __atomic_load_n(&s.ctx.irqs, __ATOMIC_ACQUIRE), i,
			    VCPU_JOIN_S);
	}
	/* Back to waiting for the page, which it touched again. */
	expect_still_waiting(&s.ctx);
	expect_no_record(&s.h);
	TEST_ASSERT_EQ(count_missing(s.fd, 0, SMALL_SIZE, NULL), SMALL_PAGES);

	populate_and_expect_one_read(&s, off, want);
	TEST_ASSERT_EQ(s.ctx.irqs, KICK_SIGNALS);

	expect_kick_page_alone_present(&s);
	small_vm_destroy(&s);
}

/*
 * The guest of interrupt_on_missing_stack: its stack on the missing page
 * below @stack_top, interrupts on, and nothing to do. The interrupt's
 * delivery pushes its frame there, and faults.
 */
static void guest_irq_done_handler(struct ex_regs *regs)
{
	GUEST_DONE();
}

static void guest_spin_on_stack(u64 stack_top)
{
	x2apic_enable();
	asm volatile("mov %0, %%rsp\n\t"
		     "sti\n"
		     "1:\tpause\n\t"
		     "jmp 1b" : : "r"(stack_top) : "memory");
}

/*
 * An interrupt whose delivery faults on a missing page (the guest's stack)
 * has the vCPU wait for it without spinning: KVM's own request to deliver
 * it again does not end the wait, so the vCPU sleeps after one or two
 * faults rather than faulting over and over until the page is there. Once
 * populated, the interrupt is delivered and its handler runs.
 */
TEST_F_TIMEOUT(vcpu, interrupt_on_missing_stack, UF_TIMEOUT)
{
	const u64 stack_off = (u64)KICK_PAGE * PAGE_SIZE;
	struct kvm_msi msi = {
		.address_lo = 0xfee00000,
		.data = KICK_VECTOR,
	};
	u64 pf_before, pf_after;
	struct timespec ts;
	struct small_vm s;
	int r;

	small_vm_create(&s, guest_spin_on_stack, 0, 0);
	vm_install_exception_handler(s.vm, KICK_VECTOR,
				     guest_irq_done_handler);
	/* Under the stack page: where a deep handler would go on. */
	TEST_ASSERT_EQ(populate(s.fd, stack_off - PAGE_SIZE), 0);
	vcpu_args_set(s.vcpu, 1, UF_GPA + stack_off + PAGE_SIZE);
	vcpu_start(&s.ctx, s.vcpu);
	expect_no_record(&s.h);

	r = __vm_ioctl(s.vm, KVM_SIGNAL_MSI, &msi);
	TEST_ASSERT(r == 1, "KVM_SIGNAL_MSI gave %d, errno %d", r, errno);
	expect_one_record(&s.h, stack_off, false);

	/* One second of waiting: a handful of faults, not thousands. */
	pf_before = vcpu_get_stat(s.vcpu, pf_taken);
	ts.tv_sec = 1;
	ts.tv_nsec = 0;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	pf_after = vcpu_get_stat(s.vcpu, pf_taken);
	TEST_ASSERT(pf_after - pf_before <= 2,
		    "The vCPU took %lu page faults in 1 s waiting for its stack page",
		    pf_after - pf_before);
	expect_still_waiting(&s.ctx);
	expect_no_record(&s.h);

	TEST_ASSERT_EQ(populate(s.fd, stack_off), 0);
	vcpu_join(&s.ctx);
	vcpu_check_done(&s.ctx, 0);
	expect_no_record(&s.h);
	small_vm_destroy(&s);
}

struct mmap_reader {
	const u64 *addr;
	u64 val;
};

static void *mmap_reader_thread(void *arg)
{
	struct mmap_reader *m = arg;

	m->val = READ_ONCE(*m->addr);
	return NULL;
}

TEST_F_TIMEOUT(vcpu, vcpu_and_mmap_one_record, UF_TIMEOUT)
{
	u64 want = pattern_word(SEED_HOST, 0);
	struct mmap_reader reader;
	pthread_t thread;
	struct small_vm s;

	small_vm_create(&s, guest_read_words, 1, 1);
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, 0, false);

	/* A task faults on the same page through the mapping: it waits. */
	reader.addr = s.mem;
	TEST_ASSERT(!pthread_create(&thread, NULL, mmap_reader_thread, &reader),
		    "pthread_create failed");
	expect_no_record(&s.h);
	expect_still_waiting(&s.ctx);

	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	vcpu_join(&s.ctx);
	pthread_join(thread, NULL);
	vcpu_check_done(&s.ctx, 0);
	TEST_ASSERT_EQ(s.ctx.reads[0], want);
	TEST_ASSERT_EQ(reader.val, want);
	expect_no_record(&s.h);
	/* The vCPU posted; the task found the record out. */
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), 1);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), 1);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_populated), 1);
	small_vm_destroy(&s);
}

TEST_F_TIMEOUT(vcpu, arm_zaps_stage2, UF_TIMEOUT)
{
	u64 first = pattern_word(SEED_HOST, 0), second = pattern_word(SEED_REPOP, 0);
	struct small_vm s;
	struct ucall uc;

	/* Present before the guest runs: mapped into the guest on first use. */
	small_vm_create(&s, guest_read_words, 1, 2);
	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	vcpu_run(s.vcpu);
	TEST_ASSERT_EQ(get_ucall(s.vcpu, &uc), UCALL_SYNC);
	TEST_ASSERT_EQ(uc.args[1], first);

	/* Armed: dropped from the guest, so the next read faults. */
	range_ioctl(s.fd, GMEMUF_IOC_ARM, 0, PAGE_SIZE);
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, 0, false);
	expect_still_waiting(&s.ctx);
	TEST_ASSERT_EQ(populate_seed(s.fd, 0, SEED_REPOP), 0);
	vcpu_join(&s.ctx);
	vcpu_check_done(&s.ctx, 0);
	TEST_ASSERT(s.ctx.nr_reads == 1 && s.ctx.reads[0] == second,
		    "After the arm the guest read 0x%lx, wanted the new 0x%lx (the old was 0x%lx)",
		    s.ctx.reads[0], second, first);
	small_vm_destroy(&s);
}

/*
 * Deleting the memslot a vCPU waits on ends the wait, with no
 * GMEMUF_IOC_WAKE: the vCPU runs its fault again, finds no memslot, and
 * exits for MMIO. Once the memslot is back, the vCPU's next access waits
 * again for the page, with no second record, and reads it once populated.
 */
TEST_F_TIMEOUT(vcpu, memslot_delete_ends_wait, UF_TIMEOUT)
{
	const u64 mmio_val = 0x6d6d696f6d6d696full;	/* "mmiommio" */
	u64 want = pattern_word(SEED_HOST, 0);
	struct kvm_run *run;
	struct small_vm s;

	small_vm_create(&s, guest_read_words, 1, 2);
	run = s.vcpu->run;
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, 0, false);

	/* Would hang if the waiting vCPU held kvm->srcu. */
	vm_set_user_memory_region2(s.vm, UF_SLOT, KVM_MEM_GUEST_MEMFD, UF_GPA,
				   0, NULL, s.fd, 0);
	vcpu_join(&s.ctx);
	TEST_ASSERT(s.ctx.rc == RC_BAD_EXIT &&
		    s.ctx.exit_reason == KVM_EXIT_MMIO &&
		    s.ctx.mmio_addr == UF_GPA,
		    "Exit reason %u (%s) at 0x%lx, rc %d; wanted MMIO at 0x%lx",
		    s.ctx.exit_reason, exit_reason_str(s.ctx.exit_reason),
		    s.ctx.mmio_addr, s.ctx.rc, UF_GPA);
	TEST_ASSERT(run->mmio.len == sizeof(u64) && !run->mmio.is_write,
		    "MMIO %s of %u bytes, wanted a read of 8",
		    run->mmio.is_write ? "write" : "read", run->mmio.len);
	TEST_ASSERT_EQ(s.ctx.nr_reads, 0);
	expect_no_record(&s.h);
	TEST_ASSERT_EQ(count_missing(s.fd, 0, SMALL_SIZE, NULL), SMALL_PAGES);

	/* The memslot back: the MMIO read completes, the next one waits. */
	vm_set_user_memory_region2(s.vm, UF_SLOT, KVM_MEM_GUEST_MEMFD, UF_GPA,
				   SMALL_SIZE, s.mem, s.fd, 0);
	memcpy(run->mmio.data, &mmio_val, sizeof(mmio_val));
	s.ctx.rc = 0;
	s.ctx.exit_reason = 0;
	vcpu_start(&s.ctx, s.vcpu);
	expect_still_waiting(&s.ctx);
	expect_no_record(&s.h);

	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	vcpu_join(&s.ctx);
	vcpu_check_done(&s.ctx, 0);
	TEST_ASSERT(s.ctx.nr_reads == 2 && s.ctx.reads[0] == mmio_val &&
		    s.ctx.reads[1] == want,
		    "The guest read 0x%lx then 0x%lx (%u reads), wanted 0x%lx (MMIO) then 0x%lx",
		    s.ctx.reads[0], s.ctx.reads[1], s.ctx.nr_reads, mmio_val,
		    want);
	expect_no_record(&s.h);
	TEST_ASSERT_EQ(count_missing(s.fd, 0, SMALL_SIZE, NULL),
		       SMALL_PAGES - 1);
	small_vm_destroy(&s);
}

/*
 * The guest of one_kvm_fault_per_page: two rounds of the same code, each
 * reading and checking @npages pages, the first round's present, the
 * second's missing, with a ucall before and after each round. The first
 * round faults in the code, stack, ucall and page-table pages that the
 * second one uses, so that the second round's only page faults are those
 * on its own pages.
 */
static void guest_two_rounds(u64 gva, u64 npages)
{
	u64 csum, round, p, off;

	for (round = 0; round < 2; round++) {
		GUEST_SYNC2(STAGE_READ, round);
		csum = CSUM_INIT;
		for (p = round * npages; p < (round + 1) * npages; p++) {
			off = p * PAGE_SIZE;
			csum = guest_check_page((u64 *)(gva + off), off,
						SEED_HOST, csum);
		}
		GUEST_SYNC2(STAGE_CSUM, csum);
	}
	GUEST_DONE();
}

/* Run the vCPU to its next ucall, which must be a SYNC of @stage. */
static u64 run_to_sync(struct kvm_vcpu *vcpu, u64 stage)
{
	struct ucall uc;

	vcpu_run(vcpu);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_SYNC:
		TEST_ASSERT(uc.args[0] == stage, "SYNC of stage %lu, wanted %lu",
			    uc.args[0], stage);
		return uc.args[1];
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
	default:
		TEST_FAIL("Unexpected ucall %lu, exit reason %u (%s)", uc.cmd,
			  vcpu->run->exit_reason,
			  exit_reason_str(vcpu->run->exit_reason));
	}
	return 0;
}

/* Times the calling thread was preempted. */
static u64 thread_preemptions(void)
{
	struct rusage ru;

	TEST_ASSERT(!getrusage(RUSAGE_THREAD, &ru), "getrusage failed");
	return ru.ru_nivcsw;
}

/*
 * A vCPU that waits for a missing page maps it in the same fault once it is
 * populated, as a GUP that waits on a userfaultfd does: one KVM page fault
 * per page, not a second one when the guest runs the access again. But for
 * the faults retried because a request was pending when the vCPU was about
 * to sleep: KVM makes some of a vCPU whose thread was preempted and
 * scheduled in again, on another CPU for instance, so allow one per
 * preemption of the vCPU thread.
 */
TEST_F_TIMEOUT(vcpu, one_kvm_fault_per_page, UF_TIMEOUT)
{
	const u64 npages = SMALL_PAGES / 2;
	u64 csum = CSUM_INIT, off, pf_before, pf_after, fixed_before;
	u64 fixed_after, preempted;
	struct server srv;
	struct small_vm s;

	small_vm_create(&s, guest_two_rounds, 0, 0);
	vcpu_args_set(s.vcpu, 2, UF_GPA, npages);
	for (off = 0; off < npages * PAGE_SIZE; off += PAGE_SIZE)
		TEST_ASSERT_EQ(populate(s.fd, off), 0);

	server_init(&srv, s.fd, false);
	handler_open(&srv.h, s.fd);
	TEST_ASSERT(!pthread_create(&srv.thread, NULL, server_thread, &srv),
		    "pthread_create failed");

	/* The first round, on present pages. */
	TEST_ASSERT_EQ(run_to_sync(s.vcpu, STAGE_READ), 0);
	run_to_sync(s.vcpu, STAGE_CSUM);

	/* The second, on missing pages that the server populates. */
	TEST_ASSERT_EQ(run_to_sync(s.vcpu, STAGE_READ), 1);
	pf_before = vcpu_get_stat(s.vcpu, pf_taken);
	fixed_before = vcpu_get_stat(s.vcpu, pf_fixed);
	for (off = npages * PAGE_SIZE; off < SMALL_SIZE; off += sizeof(u64))
		csum = pattern_csum(csum, pattern_word(SEED_HOST, off));
	preempted = thread_preemptions();
	TEST_ASSERT_EQ(run_to_sync(s.vcpu, STAGE_CSUM), csum);
	preempted = thread_preemptions() - preempted;
	pf_after = vcpu_get_stat(s.vcpu, pf_taken);
	fixed_after = vcpu_get_stat(s.vcpu, pf_fixed);

	__atomic_store_n(&srv.stop, true, __ATOMIC_RELEASE);
	pthread_join(srv.thread, NULL);
	handler_close(&srv.h);

	TEST_ASSERT(pf_after - pf_before >= npages &&
		    pf_after - pf_before - npages <= preempted &&
		    fixed_after - fixed_before == npages,
		    "%lu KVM page faults (%lu fixed) for %lu missing pages, wanted one each (and at most %lu more for as many preemptions)",
		    pf_after - pf_before, fixed_after - fixed_before, npages,
		    preempted);
	TEST_ASSERT(!srv.fetch_err && !srv.bad_records && !srv.dups &&
		    !srv.populate_err && srv.records == npages,
		    "The server got %u records (%u bad, %u duplicates), fetch error %d, populate error %d; wanted %lu",
		    srv.records, srv.bad_records, srv.dups, srv.fetch_err,
		    srv.populate_err, npages);
	TEST_ASSERT_EQ(count_missing(s.fd, 0, SMALL_SIZE, NULL), 0);
	small_vm_destroy(&s);
}

TEST_F_TIMEOUT(vcpu, punch_hole_while_waiting, UF_TIMEOUT)
{
	u64 want = pattern_word(SEED_HOST, PAGE_SIZE);
	struct small_vm s;

	small_vm_create(&s, guest_read_words, 2, 1);
	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, PAGE_SIZE, false);

	TEST_ASSERT(!fallocate(s.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       0, SMALL_SIZE),
		    "fallocate(PUNCH_HOLE) failed: errno %d", errno);
	/* Page 0 was present, and is now a hole; page 1 is still missing. */
	TEST_ASSERT_EQ(count_missing(s.fd, 0, SMALL_SIZE, NULL),
		       SMALL_PAGES - 1);
	expect_still_waiting(&s.ctx);
	expect_no_record(&s.h);

	TEST_ASSERT_EQ(populate(s.fd, PAGE_SIZE), 0);
	vcpu_join(&s.ctx);
	vcpu_check_done(&s.ctx, 0);
	TEST_ASSERT(s.ctx.nr_reads == 2 && s.ctx.reads[1] == want,
		    "The guest read 0x%lx from page 1, wanted 0x%lx",
		    s.ctx.reads[1], want);
	small_vm_destroy(&s);
}

TEST_F_TIMEOUT(vcpu, conversion_while_waiting, UF_TIMEOUT)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	struct kvm_vcpu *vcpu;
	struct vcpu_ctx ctx = {};
	struct handler h;
	struct kvm_vm *vm;
	u64 *shared;
	int fd, p;

	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM is not supported");

	vm = __vm_create_with_vcpus(shape, 1, 0, guest_read_words, &vcpu);
	fd = vm_create_guest_memfd(vm, SMALL_SIZE, GUEST_MEMFD_FLAG_USERFAULT);
	vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS, UF_GPA, UF_SLOT, SMALL_PAGES,
		   KVM_MEM_GUEST_MEMFD, fd, 0);
	virt_map(vm, UF_GPA, UF_GPA, SMALL_PAGES);
	shared = addr_gpa2hva(vm, UF_GPA);
	for (p = 0; p < 2; p++)
		fill_page(shared + p * WORDS_PER_PAGE, SEED_SHARED,
			  p * PAGE_SIZE);
	vm_mem_set_private(vm, UF_GPA, SMALL_SIZE);
	vcpu_args_set(vcpu, 3, UF_GPA, 2, 1);
	handler_open(&h, fd);
	vcpu_start(&ctx, vcpu);

	/*
	 * Page 0: converted to shared while the vCPU waits for it. The
	 * conversion ends the wait, with no GMEMUF_IOC_WAKE: the vCPU runs
	 * its fault again and reads the shared page, then waits for page 1.
	 */
	expect_one_record(&h, 0, true);
	vm_mem_set_shared(vm, UF_GPA, PAGE_SIZE);
	expect_one_record(&h, PAGE_SIZE, true);
	TEST_ASSERT(ctx.nr_reads == 1 &&
		    ctx.reads[0] == pattern_word(SEED_SHARED, 0),
		    "Before page 1, the guest read 0x%lx (%u reads), wanted the shared 0x%lx",
		    ctx.reads[0], ctx.nr_reads, pattern_word(SEED_SHARED, 0));

	/* Page 1: the same, and the vCPU is done without a populate. */
	vm_mem_set_shared(vm, UF_GPA + PAGE_SIZE, PAGE_SIZE);
	vcpu_join(&ctx);
	vcpu_check_done(&ctx, 0);
	/* The handler populating the private page now changes nothing. */
	TEST_ASSERT_EQ(populate(fd, PAGE_SIZE), 0);
	for (p = 0; p < 2; p++)
		TEST_ASSERT(ctx.reads[p] == pattern_word(SEED_SHARED, p * PAGE_SIZE),
			    "The guest read 0x%lx from page %d, wanted the shared 0x%lx",
			    ctx.reads[p], p, pattern_word(SEED_SHARED, p * PAGE_SIZE));
	expect_no_record(&h);
	/* Page 0 is still missing from the guest_memfd; page 1 is not. */
	TEST_ASSERT_EQ(count_missing(fd, 0, PAGE_SIZE, NULL), 1);
	TEST_ASSERT_EQ(count_missing(fd, PAGE_SIZE, PAGE_SIZE, NULL), 0);

	handler_close(&h);
	kvm_vm_free(vm);
	close(fd);
}

/* KVM_PRE_FAULT_MEMORY of [UF_GPA, UF_GPA + @size) in a thread. */
struct pre_fault {
	struct kvm_vcpu *vcpu;
	struct kvm_pre_fault_memory range;
	pthread_t thread;
	int r, err;
};

static void *pre_fault_thread(void *arg)
{
	struct pre_fault *p = arg;

	p->r = __vcpu_ioctl(p->vcpu, KVM_PRE_FAULT_MEMORY, &p->range);
	p->err = errno;
	return NULL;
}

static void pre_fault_start(struct pre_fault *pf, struct kvm_vcpu *vcpu,
			    u64 size)
{
	memset(pf, 0, sizeof(*pf));
	pf->vcpu = vcpu;
	pf->range.gpa = UF_GPA;
	pf->range.size = size;
	TEST_ASSERT(!pthread_create(&pf->thread, NULL, pre_fault_thread, pf),
		    "pthread_create failed");
}

/* The ioctl returned, within VCPU_JOIN_S: it does not spin or hang. */
static void pre_fault_join(struct pre_fault *pf)
{
	int i, r = pthread_tryjoin_np(pf->thread, NULL);

	for (i = 0; r && i < VCPU_JOIN_S * 10; i++) {
		usleep(100000);
		r = pthread_tryjoin_np(pf->thread, NULL);
	}
	TEST_ASSERT(!r, "KVM_PRE_FAULT_MEMORY still runs %d s after its pages were populated",
		    VCPU_JOIN_S);
}

TEST_F_TIMEOUT(vcpu, pre_fault_memory_waits, UF_TIMEOUT)
{
	struct pre_fault pf;
	struct small_vm s;
	int p;

	if (!kvm_has_cap(KVM_CAP_PRE_FAULT_MEMORY))
		SKIP(return, "KVM_PRE_FAULT_MEMORY is not supported");

	small_vm_create(&s, guest_read_words, 1, 1);
	pre_fault_start(&pf, s.vcpu, 2 * PAGE_SIZE);
	for (p = 0; p < 2; p++) {
		expect_one_record(&s.h, p * PAGE_SIZE, false);
		TEST_ASSERT_EQ(populate(s.fd, p * PAGE_SIZE), 0);
	}
	pre_fault_join(&pf);
	TEST_ASSERT(!pf.r && !pf.range.size,
		    "KVM_PRE_FAULT_MEMORY returned %d, errno %d, %llu bytes left",
		    pf.r, pf.err, pf.range.size);
	expect_no_record(&s.h);
	/* KVM's faults on the vCPU's behalf count on the vCPU. */
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), 2);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_exits), 0);
	small_vm_destroy(&s);
}

/*
 * A memslot deleted while KVM_PRE_FAULT_MEMORY waits obsoletes the vCPU's
 * MMU root, which the ioctl does not reload: it must return EAGAIN once
 * woken, as for a memslot being deleted, and not retry forever.
 */
TEST_F_TIMEOUT(vcpu, pre_fault_memory_memslot_deleted, UF_TIMEOUT)
{
	struct pre_fault pf;
	struct small_vm s;

	if (!kvm_has_cap(KVM_CAP_PRE_FAULT_MEMORY))
		SKIP(return, "KVM_PRE_FAULT_MEMORY is not supported");

	small_vm_create(&s, guest_read_words, 1, 1);
	pre_fault_start(&pf, s.vcpu, PAGE_SIZE);
	expect_one_record(&s.h, 0, false);

	vm_set_user_memory_region2(s.vm, UF_SLOT, KVM_MEM_GUEST_MEMFD, UF_GPA,
				   0, NULL, s.fd, 0);
	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	pre_fault_join(&pf);
	TEST_ASSERT(pf.r == -1 && pf.err == EAGAIN,
		    "KVM_PRE_FAULT_MEMORY returned %d, errno %d; wanted EAGAIN",
		    pf.r, pf.err);
	small_vm_destroy(&s);
}

/*
 * The child of killed_with_vcpus_waiting: a VMM whose vCPUs wait for pages
 * nobody populates. It writes to @ready_fd once both vCPUs have faulted.
 */
static void waiting_vmm(int ready_fd)
{
	struct vcpu_ctx ctx[NR_VCPUS] = {};
	struct kvm_vcpu *vcpus[NR_VCPUS];
	struct handler h;
	struct kvm_vm *vm;
	int i, records = 0, n;
	u64 *mem;
	int fd;

	vm = vm_create_with_vcpus(NR_VCPUS, guest_region, vcpus);
	fd = vm_create_guest_memfd(vm, UF_SIZE, UF_SHARED_FLAGS);
	mem = kvm_mmap(UF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	vm_set_user_memory_region2(vm, UF_SLOT, KVM_MEM_GUEST_MEMFD, UF_GPA,
				   UF_SIZE, mem, fd, 0);
	virt_map(vm, UF_GPA, UF_GPA, NR_PAGES);
	handler_open(&h, fd);
	for (i = 0; i < NR_VCPUS; i++) {
		vcpu_args_set(vcpus[i], 3, UF_GPA + i * REGION_SIZE,
			      i * REGION_SIZE, PAGES_PER_VCPU);
		vcpu_start(&ctx[i], vcpus[i]);
	}
	while (records < NR_VCPUS) {
		handler_fetch(&h);
		n = handler_wait(&h, RECORD_MS);
		TEST_ASSERT(n > 0, "The fetch gave %d", n);
		records += n;
	}
	TEST_ASSERT(write(ready_fd, "r", 1) == 1, "write failed");
	for (;;)
		pause();
}

TEST_F_TIMEOUT(vcpu, killed_with_vcpus_waiting, UF_TIMEOUT)
{
	int ready[2], status, i;
	char c;
	pid_t pid;

	TEST_ASSERT(!pipe(ready), "pipe failed");
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork failed");
	if (!pid) {
		close(ready[0]);
		waiting_vmm(ready[1]);
	}
	close(ready[1]);
	TEST_ASSERT(read(ready[0], &c, 1) == 1,
		    "The VMM died before its vCPUs waited");

	/* Both vCPUs wait in KVM_RUN; the kill must end them and the VM. */
	TEST_ASSERT(!kill(pid, SIGKILL), "kill failed");
	for (i = 0; i < VCPU_JOIN_S * 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		usleep(100000);
	}
	TEST_ASSERT(i < VCPU_JOIN_S * 10, "The killed VMM is still there");
	TEST_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		    "The VMM ended with status 0x%x", status);
	close(ready[0]);
}

/* Poll the vCPU's gmemuf_waits until it is @want, for up to RECORD_MS. */
static void wait_for_waits(struct kvm_vcpu *vcpu, u64 want)
{
	u64 waits = 0;
	int ms;

	for (ms = 0; ms < RECORD_MS; ms++) {
		waits = vcpu_get_stat(vcpu, gmemuf_waits);
		if (waits >= want)
			break;
		usleep(1000);
	}
	TEST_ASSERT(waits == want, "gmemuf_waits is %lu, wanted %lu", waits,
		    want);
}

/* The stats of a VM and its vCPU that have not touched a missing page. */
static void expect_zero_stats(struct small_vm *s)
{
	TEST_ASSERT_EQ(vcpu_get_stat(s->vcpu, gmemuf_faults), 0);
	TEST_ASSERT_EQ(vcpu_get_stat(s->vcpu, gmemuf_exits), 0);
	TEST_ASSERT_EQ(vcpu_get_stat(s->vcpu, gmemuf_waits), 0);
	TEST_ASSERT_EQ(vcpu_get_stat(s->vcpu, gmemuf_wait_ns), 0);
	TEST_ASSERT_EQ(vm_get_stat(s->vm, gmemuf_posted), 0);
	TEST_ASSERT_EQ(vm_get_stat(s->vm, gmemuf_populated), 0);
}

/* The guest read STATS_PAGES pages of the host's pattern, in order. */
static void expect_stats_reads(struct vcpu_ctx *c)
{
	int p;

	vcpu_check_done(c, 0);
	TEST_ASSERT_EQ(c->nr_reads, STATS_PAGES);
	for (p = 0; p < STATS_PAGES; p++)
		TEST_ASSERT(c->reads[p] == pattern_word(SEED_HOST, p * PAGE_SIZE),
			    "The guest read 0x%lx from page %d, wanted 0x%lx",
			    c->reads[p], p,
			    pattern_word(SEED_HOST, p * PAGE_SIZE));
}

/*
 * Each page is populated only once the vCPU is asleep waiting for it, as
 * its gmemuf_waits shows, so that every fault makes exactly one wait: the
 * VM's only vCPU is kicked by nothing but the populate. Pages
 * populated by no fault, and populates that find the page present, count
 * in gmemuf_populated or not as they populate.
 */
TEST_F_TIMEOUT(vcpu, stats_wait_mode, UF_TIMEOUT)
{
	struct gmemuf_range zero = {
		.offset = STATS_PAGES * PAGE_SIZE,
		.len = 2 * PAGE_SIZE,
	};
	struct small_vm s;
	u64 wait_ns;
	int p;

	small_vm_create(&s, guest_read_words, STATS_PAGES, 1);
	expect_zero_stats(&s);
	vcpu_start(&s.ctx, s.vcpu);
	for (p = 0; p < STATS_PAGES; p++) {
		expect_one_record(&s.h, p * PAGE_SIZE, false);
		wait_for_waits(s.vcpu, p + 1);
		TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), p + 1);
		TEST_ASSERT_EQ(populate(s.fd, p * PAGE_SIZE), 0);
	}
	vcpu_join(&s.ctx);
	expect_stats_reads(&s.ctx);

	wait_ns = vcpu_get_stat(s.vcpu, gmemuf_wait_ns);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), STATS_PAGES);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_waits), STATS_PAGES);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_exits), 0);
	TEST_ASSERT(wait_ns > 0, "gmemuf_wait_ns is 0 after %d waits",
		    STATS_PAGES);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), STATS_PAGES);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_populated), STATS_PAGES);

	/* Two pages that nobody touched, zero-filled; one present already. */
	TEST_ASSERT(!ioctl(s.fd, GMEMUF_IOC_ZERO, &zero),
		    "GMEMUF_IOC_ZERO failed: errno %d", errno);
	TEST_ASSERT_EQ(populate(s.fd, 0), -EEXIST);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_populated), STATS_PAGES + 2);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), STATS_PAGES);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_wait_ns), wait_ns);
	small_vm_destroy(&s);
}

/*
 * In exit mode each fault is an exit, which the vCPU thread answers by
 * waiting for the page in userspace: no wait in the kernel.
 */
TEST_F_TIMEOUT(vcpu, stats_exit_mode, UF_TIMEOUT)
{
	struct server srv;
	struct small_vm s;

	__small_vm_create(&s, guest_read_words, STATS_PAGES, 1,
			  UF_SHARED_FLAGS | GUEST_MEMFD_FLAG_USERFAULT_EXIT);
	expect_zero_stats(&s);
	server_init(&srv, s.fd, false);
	handler_close(&s.h);
	handler_open(&srv.h, s.fd);
	TEST_ASSERT(!pthread_create(&srv.thread, NULL, server_thread, &srv),
		    "pthread_create failed");

	s.ctx.exit_mode = true;
	s.ctx.gmem_fd = s.fd;
	s.ctx.gpa_base = UF_GPA;
	vcpu_start(&s.ctx, s.vcpu);
	vcpu_join(&s.ctx);
	__atomic_store_n(&srv.stop, true, __ATOMIC_RELEASE);
	pthread_join(srv.thread, NULL);
	expect_stats_reads(&s.ctx);
	TEST_ASSERT(!srv.fetch_err && !srv.bad_records && !srv.dups &&
		    !srv.populate_err && srv.records == STATS_PAGES,
		    "The server got %u records (%u bad, %u duplicates), fetch error %d, populate error %d; wanted %d",
		    srv.records, srv.bad_records, srv.dups, srv.fetch_err,
		    srv.populate_err, STATS_PAGES);
	TEST_ASSERT_EQ(s.ctx.uf_exits, STATS_PAGES);

	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), STATS_PAGES);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_exits), STATS_PAGES);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_waits), 0);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_wait_ns), 0);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), STATS_PAGES);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_populated), STATS_PAGES);

	/* small_vm_destroy() closes the handler in s.h: it is the server's. */
	s.h = srv.h;
	small_vm_destroy(&s);
}

/*
 * Entering KVM_RUN again before the page is there exits again: a second
 * exit, not a second fault posted.
 */
TEST_F_TIMEOUT(vcpu, stats_exit_again, UF_TIMEOUT)
{
	struct small_vm s;
	struct ucall uc;
	int i, r;

	__small_vm_create(&s, guest_read_words, 1, 1,
			  UF_SHARED_FLAGS | GUEST_MEMFD_FLAG_USERFAULT_EXIT);
	for (i = 0; i < 2; i++) {
		r = __vcpu_run(s.vcpu);
		TEST_ASSERT(r == -1 && errno == EFAULT &&
			    s.vcpu->run->exit_reason == KVM_EXIT_MEMORY_FAULT &&
			    s.vcpu->run->memory_fault.gpa == UF_GPA &&
			    (s.vcpu->run->memory_fault.flags &
			     KVM_MEMORY_EXIT_FLAG_USERFAULT),
			    "KVM_RUN %d returned %d, errno %d, exit reason %u, gpa 0x%llx, flags 0x%llx; wanted a userfault exit at 0x%lx",
			    i, r, errno, s.vcpu->run->exit_reason,
			    s.vcpu->run->memory_fault.gpa,
			    s.vcpu->run->memory_fault.flags, UF_GPA);
	}
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), 1);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_exits), 2);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_waits), 0);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), 1);
	expect_one_record(&s.h, 0, false);

	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	vcpu_run(s.vcpu);
	TEST_ASSERT_EQ(get_ucall(s.vcpu, &uc), UCALL_SYNC);
	TEST_ASSERT_EQ(uc.args[1], pattern_word(SEED_HOST, 0));
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), 1);
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_exits), 2);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_populated), 1);
	small_vm_destroy(&s);
}

static void trace_write(const char *file, const char *val)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), TRACE_INSTANCE "/%s", file);
	fd = open(path, O_WRONLY | O_TRUNC);
	TEST_ASSERT(fd >= 0, "open %s failed: errno %d", path, errno);
	TEST_ASSERT(write(fd, val, strlen(val)) == (ssize_t)strlen(val),
		    "write of '%s' to %s failed: errno %d", val, path, errno);
	close(fd);
}

/*
 * The gmemuf events of the file with inode number @ino in the instance's
 * trace, each from its event's name on ("gmemuf_post: ino ..."), into
 * @events, the first @max of them; returns how many there are.
 */
static int trace_read(unsigned long ino, char events[][160], int max)
{
	char tag[32], *line = NULL, *ev, *nl;
	size_t cap = 0;
	int n = 0;
	FILE *f;

	snprintf(tag, sizeof(tag), ": ino %lu ", ino);
	f = fopen(TRACE_INSTANCE "/trace", "r");
	TEST_ASSERT(f, "open of the trace failed: errno %d", errno);
	while (getline(&line, &cap, f) > 0) {
		/* After the task's name, which is the test's: "gmemuf_vcpu_tes". */
		ev = strstr(line, ": gmemuf_");
		if (line[0] == '#' || !ev || !strstr(ev, tag))
			continue;
		nl = strchr(ev, '\n');
		if (nl)
			*nl = 0;
		if (n < max)
			snprintf(events[n], sizeof(events[n]), "%s", ev + 2);
		n++;
	}
	free(line);
	fclose(f);
	return n;
}

/* The events of the tracepoints test, each with the file's inode number. */
static const char * const trace_want[] = {
	"gmemuf_post: ino %lu offset 0x0 flags READ|VCPU",
	"gmemuf_deliver: ino %lu offset 0x0 flags READ|VCPU by fetch",
	"gmemuf_populate: ino %lu offset 0x0 with data",
	"gmemuf_wake: ino %lu offset 0x0 flags READ|VCPU page present",
	"gmemuf_post: ino %lu offset 0x1000 flags READ|MMAP_USER",
	"gmemuf_deliver: ino %lu offset 0x1000 flags READ|MMAP_USER by read",
	"gmemuf_populate: ino %lu offset 0x1000 with zeroes",
	"gmemuf_wake: ino %lu offset 0x1000 flags READ|MMAP_USER page present",
};

/*
 * One fault of a vCPU fetched and populated with data, one of a task on a
 * mapping read() and zero-filled: each has exactly one event of each kind,
 * in a trace instance of the test's own.
 */
TEST_F_TIMEOUT(vcpu, tracepoints, UF_TIMEOUT)
{
	char want[160], got[16][160];
	struct gmemuf_range zero = { .offset = PAGE_SIZE, .len = PAGE_SIZE };
	struct gmemuf_fault rec;
	struct mmap_reader reader;
	pthread_t thread;
	struct small_vm s;
	struct stat st;
	int i, j, n, matched;

	if (access(TRACE_DIR "/instances", F_OK))
		SKIP(return, "tracefs is not mounted at " TRACE_DIR);
	TEST_ASSERT(!access(TRACE_DIR "/events/gmemuf", F_OK),
		    "tracefs has no gmemuf events");
	rmdir(TRACE_INSTANCE);
	TEST_ASSERT(!mkdir(TRACE_INSTANCE, 0755),
		    "mkdir " TRACE_INSTANCE " failed: errno %d", errno);
	trace_write("events/gmemuf/enable", "1");
	trace_write("tracing_on", "1");

	small_vm_create(&s, guest_read_words, 1, 1);
	TEST_ASSERT(!fstat(s.fd, &st), "fstat failed: errno %d", errno);

	/* Page 0: a vCPU's read, fetched, populated with data. */
	vcpu_start(&s.ctx, s.vcpu);
	expect_one_record(&s.h, 0, false);
	TEST_ASSERT_EQ(populate(s.fd, 0), 0);
	vcpu_join(&s.ctx);
	vcpu_check_done(&s.ctx, 0);

	/* Page 1: a task's read of the mapping, read(), zero-filled. */
	reader.addr = s.mem + WORDS_PER_PAGE;
	TEST_ASSERT(!pthread_create(&thread, NULL, mmap_reader_thread, &reader),
		    "pthread_create failed");
	TEST_ASSERT(read(s.h.hfd, &rec, sizeof(rec)) == sizeof(rec),
		    "read of the handler file failed: errno %d", errno);
	TEST_ASSERT(rec.offset == PAGE_SIZE &&
		    rec.flags == (GMEMUF_FAULT_READ | GMEMUF_FAULT_MMAP_USER),
		    "read() gave offset 0x%llx flags 0x%x", rec.offset,
		    rec.flags);
	TEST_ASSERT(!ioctl(s.fd, GMEMUF_IOC_ZERO, &zero),
		    "GMEMUF_IOC_ZERO failed: errno %d", errno);
	pthread_join(thread, NULL);
	TEST_ASSERT_EQ(reader.val, 0);

	trace_write("tracing_on", "0");
	n = trace_read(st.st_ino, got, ARRAY_SIZE(got));
	trace_write("events/gmemuf/enable", "0");
	TEST_ASSERT(!rmdir(TRACE_INSTANCE), "rmdir " TRACE_INSTANCE " failed: errno %d",
		    errno);

	/*
	 * An invalidation anywhere in the test's memory, which the test does
	 * not control, between the vCPU's post and its sleep has it run its
	 * fault again, after a wake with the page missing: not counted.
	 */
	snprintf(want, sizeof(want),
		 "gmemuf_wake: ino %lu offset 0x0 flags READ|VCPU page missing",
		 (unsigned long)st.st_ino);
	for (i = 0, j = 0; j < n && j < (int)ARRAY_SIZE(got); j++) {
		printf("# trace: %s\n", got[j]);
		if (strcmp(got[j], want))
			memmove(got[i++], got[j], sizeof(got[0]));
	}
	n -= j - i;
	TEST_ASSERT(n == ARRAY_SIZE(trace_want),
		    "%d gmemuf events of the file, wanted %zu", n,
		    ARRAY_SIZE(trace_want));
	for (i = 0; i < (int)ARRAY_SIZE(trace_want); i++) {
		snprintf(want, sizeof(want), trace_want[i],
			 (unsigned long)st.st_ino);
		for (j = 0, matched = 0; j < n; j++)
			matched += !strcmp(got[j], want);
		TEST_ASSERT(matched == 1, "The event '%s' came %d times", want,
			    matched);
	}
	/* A record from the vCPU, one from the task: both count per VM. */
	TEST_ASSERT_EQ(vcpu_get_stat(s.vcpu, gmemuf_faults), 1);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_posted), 2);
	TEST_ASSERT_EQ(vm_get_stat(s.vm, gmemuf_populated), 2);
	small_vm_destroy(&s);
}

int main(int argc, char *argv[])
{
	u64 features;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_GUEST_MEMFD));
	TEST_REQUIRE((kvm_check_cap(KVM_CAP_GUEST_MEMFD_FLAGS) &
		      UF_SHARED_FLAGS) == UF_SHARED_FLAGS);
	features = kvm_check_cap(KVM_CAP_GUEST_MEMFD_USERFAULT);
	TEST_REQUIRE((features & UF_FEATURES) == UF_FEATURES);

	return test_harness_run(argc, argv);
}
