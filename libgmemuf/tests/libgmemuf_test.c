// SPDX-License-Identifier: GPL-2.0-only
/*
 * libgmemuf_test: the library, through its public header only.
 *
 * Built twice: static for the test VM (LIBGMEMUF_TEST_VM), whose kernel
 * has gmemuf, where a missing feature is a failure; and against the shared
 * library for the host, whose kernel has not, where the tests that need it
 * skip and the ones that check what a kernel without it answers run.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <linux/kvm.h>
#include <libgmemuf.h>

#include "kselftest_harness.h"

#define PAGE		((uint64_t)GMEMUF_PAGE_SIZE)
#define NPAGES		1024
#define SIZE		(NPAGES * PAGE)
/*
 * Seconds for the tests that fault on every page of the file from many
 * threads, or create handlers of 256 rings: under TCG on a loaded machine
 * they take far more than the harness's default of 30.
 */
#define HEAVY_TIMEOUT	300

static int open_vm(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm;

	if (kvm < 0)
		return -1;
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	close(kvm);
	return vm;
}

/* A guest_memfd without userfault, straight from KVM. */
static int plain_gmem(int vm)
{
	struct kvm_create_guest_memfd args = {
		.size = SIZE, .flags = GUEST_MEMFD_FLAG_MMAP,
	};

	return ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

/*
 * Whether this process may use io_uring (kernel.io_uring_disabled, seccomp):
 * the library's handlers go without rings when it may not.
 */
static bool io_uring_usable(void)
{
	struct io_uring ring;
	int ret = io_uring_queue_init(2, &ring, 0);

	if (!ret)
		io_uring_queue_exit(&ring);
	return ret == 0;
}

/* What gmemuf_handler_fd() of queue 0 is: "[io_uring]", "[gmemuf-handler]". */
static const char *handler_fd_kind(struct gmemuf_handler *h)
{
	static __thread char link[64];
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", gmemuf_handler_fd(h, 0));
	n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	return link;
}

static bool handler_uses_rings(struct gmemuf_handler *h)
{
	return !strcmp(handler_fd_kind(h), "anon_inode:[io_uring]");
}

/* A page that cannot be read: a populate from it fails with EFAULT. */
static const void *unreadable_page(void)
{
	static void *page;

	if (!page)
		page = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	return page == MAP_FAILED ? NULL : page;
}

/* Page contents that say which page they are, and of which generation. */
static void fill(void *buf, uint64_t offset, unsigned int gen)
{
	uint32_t *p = buf;
	size_t i;

	for (i = 0; i < PAGE / sizeof(*p); i++)
		p[i] = (uint32_t)(offset / PAGE) * 2654435761u + gen * 40503u + i;
}

static bool holds(const void *buf, uint64_t offset, unsigned int gen)
{
	static __thread uint32_t want[GMEMUF_PAGE_SIZE / sizeof(uint32_t)];

	fill(want, offset, gen);
	return !memcmp(buf, want, PAGE);
}

static bool all_zero(const void *buf)
{
	const unsigned char *p = buf;
	size_t i;

	for (i = 0; i < PAGE; i++)
		if (p[i])
			return false;
	return true;
}

static int populate_gen(int fd, uint64_t offset, unsigned int gen)
{
	char buf[GMEMUF_PAGE_SIZE];

	fill(buf, offset, gen);
	return gmemuf_populate(fd, offset, buf);
}

/* A thread that reads a page of a mapping, and so waits while it is missing. */
struct toucher {
	pthread_t thread;
	_Atomic pid_t tid;
	const char *addr;
	char copy[GMEMUF_PAGE_SIZE];
};

static void *toucher_fn(void *arg)
{
	struct toucher *t = arg;

	t->tid = gettid();
	memcpy(t->copy, t->addr, PAGE);
	return NULL;
}

static void touch_start(struct toucher *t, const char *addr)
{
	t->tid = 0;
	t->addr = addr;
	pthread_create(&t->thread, NULL, toucher_fn, t);
}

/* Wait, 10 s at most, until @t sleeps: it waits for its missing page. */
static bool touch_waiting(struct toucher *t)
{
	char path[64], buf[256], *p;
	int i, fd;
	ssize_t n;

	for (i = 0; i < 10000; i++, usleep(1000)) {
		if (!t->tid)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat", t->tid);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			return false;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		p = strrchr(buf, ')');
		if (p && p[1] && (p[2] == 'S' || p[2] == 'D'))
			return true;
	}
	return false;
}

FIXTURE(lib) {
	int vm;
	int fd;
	char *mem;
};

FIXTURE_SETUP(lib)
{
	int ret;

	self->fd = -1;
	self->mem = MAP_FAILED;
	self->vm = open_vm();
#ifdef LIBGMEMUF_TEST_VM
	ASSERT_GE(self->vm, 0);
	ASSERT_EQ(gmemuf_probe(self->vm, NULL), 1);
#else
	if (self->vm < 0)
		SKIP(return, "no /dev/kvm");
	if (gmemuf_probe(self->vm, NULL) != 1)
		SKIP(return, "this kernel has no gmemuf (tested in the VM)");
#endif
	ret = gmemuf_create(self->vm, SIZE, GUEST_MEMFD_FLAG_MMAP |
			    GUEST_MEMFD_FLAG_INIT_SHARED);
	ASSERT_GE(ret, 0) TH_LOG("%s", gmemuf_strerror(ret));
	self->fd = ret;
	self->mem = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			 self->fd, 0);
	ASSERT_NE(self->mem, MAP_FAILED);
}

FIXTURE_TEARDOWN(lib)
{
	if (self->mem != MAP_FAILED)
		munmap(self->mem, SIZE);
	if (self->fd >= 0)
		close(self->fd);
	if (self->vm >= 0)
		close(self->vm);
}

TEST_F(lib, probe_reports_features)
{
	/* Everything: the VM runs x86. */
	const uint64_t all = GMEMUF_FEATURE_MMAP_FAULT |
		GMEMUF_FEATURE_POPULATE | GMEMUF_FEATURE_URING_FETCH |
		GMEMUF_FEATURE_VCPU_WAIT | GMEMUF_FEATURE_VCPU_EXIT |
		GMEMUF_FEATURE_READ | GMEMUF_FEATURE_GMEM_READ;
	uint64_t features = 0;

	ASSERT_EQ(gmemuf_probe(self->vm, &features), 1);
	EXPECT_EQ(features, all);
	EXPECT_EQ(gmemuf_probe(self->fd, &features), -ENOTTY);
	EXPECT_EQ(features, 0);
	EXPECT_EQ(gmemuf_probe(-1, NULL), -EBADF);
}

TEST_F(lib, create_passes_flags_through)
{
	int fd;

	/* Without GUEST_MEMFD_FLAG_MMAP the file cannot be mapped. */
	fd = gmemuf_create(self->vm, 16 * PAGE, 0);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(gmemuf_count_missing(fd, 0, 16 * PAGE), 16);
	EXPECT_EQ(mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0), MAP_FAILED);
	close(fd);
	/* The fixture's has it, and every page starts missing. */
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), NPAGES);

	EXPECT_EQ(gmemuf_create(self->vm, PAGE + 1, 0), -EINVAL);
	EXPECT_EQ(gmemuf_create(self->vm, PAGE, 1ULL << 40), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_create(-1, PAGE, 0), -EBADF);
}

TEST_F(lib, populate_one_page)
{
	EXPECT_EQ(populate_gen(self->fd, 7 * PAGE, 1), 1);
	EXPECT_TRUE(holds(self->mem + 7 * PAGE, 7 * PAGE, 1));
	/* Present: left alone, not an error. */
	EXPECT_EQ(populate_gen(self->fd, 7 * PAGE, 2), 0);
	EXPECT_TRUE(holds(self->mem + 7 * PAGE, 7 * PAGE, 1));
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), NPAGES - 1);

	EXPECT_EQ(populate_gen(self->fd, 7 * PAGE + 8, 1), -EINVAL);
	EXPECT_EQ(populate_gen(self->fd, SIZE, 1), -EINVAL);
	EXPECT_EQ(gmemuf_populate(self->fd, 8 * PAGE, NULL), -EINVAL);
	ASSERT_NE(unreadable_page(), NULL);
	EXPECT_EQ(gmemuf_populate(self->fd, 8 * PAGE, unreadable_page()),
		  -EFAULT);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 8 * PAGE, PAGE), 1);
}

TEST_F(lib, populate_range_skips_present_pages)
{
	char *buf = malloc(8 * PAGE);
	int i;

	ASSERT_NE(buf, NULL);
	for (i = 0; i < 8; i++)
		fill(buf + i * PAGE, (16 + i) * PAGE, 1);
	ASSERT_EQ(populate_gen(self->fd, 19 * PAGE, 2), 1);
	ASSERT_EQ(populate_gen(self->fd, 20 * PAGE, 2), 1);
	ASSERT_EQ(populate_gen(self->fd, 23 * PAGE, 2), 1);

	EXPECT_EQ(gmemuf_populate_range(self->fd, 16 * PAGE, buf, 8 * PAGE), 5);
	for (i = 16; i < 24; i++)
		EXPECT_TRUE(holds(self->mem + i * PAGE, i * PAGE,
				  i == 19 || i == 20 || i == 23 ? 2 : 1))
			TH_LOG("page %d", i);
	EXPECT_EQ(gmemuf_populate_range(self->fd, 16 * PAGE, buf, 8 * PAGE), 0);
	/* An empty range is invalid, as for the kernel's range ioctls. */
	EXPECT_EQ(gmemuf_populate_range(self->fd, 16 * PAGE, buf, 0), -EINVAL);
	EXPECT_EQ(gmemuf_populate_range(self->fd, 24 * PAGE, NULL, PAGE),
		  -EINVAL);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 24 * PAGE, PAGE), 1);
	EXPECT_EQ(gmemuf_populate_range(self->fd, 16 * PAGE, buf, 100), -EINVAL);
	EXPECT_EQ(gmemuf_populate_range(self->fd, SIZE - PAGE, buf, 2 * PAGE),
		  -EINVAL);
	free(buf);
}

TEST_F(lib, populate_batch_merges_runs)
{
	/* A run longer than one pwritev(), with a present page, then strays. */
	const int run = 300, strays = 5;
	struct gmemuf_page *pages = calloc(run + strays, sizeof(*pages));
	char *buf = malloc((run + strays) * PAGE);
	int i;

	ASSERT_NE(pages, NULL);
	ASSERT_NE(buf, NULL);
	for (i = 0; i < run + strays; i++) {
		/* Strays in decreasing order: 1000, 998, ... */
		uint64_t off = i < run ? (100 + i) * PAGE :
					 (1000 - 2 * (i - run)) * PAGE;

		pages[i].offset = off;
		pages[i].data = buf + i * PAGE;
		fill(buf + i * PAGE, off, 1);
	}
	ASSERT_EQ(populate_gen(self->fd, 150 * PAGE, 2), 1);
	ASSERT_EQ(populate_gen(self->fd, 996 * PAGE, 2), 1);

	EXPECT_EQ(gmemuf_populate_batch(self->fd, pages, run + strays),
		  run + strays - 2);
	for (i = 0; i < run + strays; i++) {
		uint64_t off = pages[i].offset;

		EXPECT_TRUE(holds(self->mem + off, off,
				  off == 150 * PAGE || off == 996 * PAGE ? 2 : 1))
			TH_LOG("page %lu", (unsigned long)(off / PAGE));
	}
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE),
		  NPAGES - run - strays);
	EXPECT_EQ(gmemuf_populate_batch(self->fd, pages, run + strays), 0);
	pages[0].offset = 1;
	EXPECT_EQ(gmemuf_populate_batch(self->fd, pages, 1), -EINVAL);
	free(pages);
	free(buf);
}

TEST_F(lib, zero_skips_present_pages)
{
	int i;

	ASSERT_EQ(populate_gen(self->fd, 2 * PAGE, 1), 1);
	EXPECT_EQ(gmemuf_zero(self->fd, 0, 4 * PAGE), 3);
	for (i = 0; i < 4; i++)
		EXPECT_TRUE(i == 2 ? holds(self->mem + i * PAGE, i * PAGE, 1) :
				     all_zero(self->mem + i * PAGE));
	EXPECT_EQ(gmemuf_zero(self->fd, 0, 4 * PAGE), 0);
	EXPECT_EQ(gmemuf_zero(self->fd, 1, PAGE), -EINVAL);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, 8 * PAGE), 4);
}

TEST_F(lib, arm_disarm_wake_and_bitmap)
{
	uint64_t bitmap[2] = { ~0ULL, ~0ULL };

	ASSERT_EQ(gmemuf_zero(self->fd, 0, 70 * PAGE), 70);
	EXPECT_EQ(gmemuf_read_bitmap(self->fd, 0, 70 * PAGE, bitmap), 0);
	EXPECT_EQ(bitmap[0], 0);
	EXPECT_EQ(bitmap[1], 0);

	EXPECT_EQ(gmemuf_arm(self->fd, PAGE, 3 * PAGE), 0);
	EXPECT_EQ(gmemuf_arm(self->fd, 65 * PAGE, PAGE), 0);
	EXPECT_EQ(gmemuf_read_bitmap(self->fd, 0, 70 * PAGE, bitmap), 4);
	EXPECT_EQ(bitmap[0], 0xeULL);
	EXPECT_EQ(bitmap[1], 0x2ULL);

	EXPECT_EQ(gmemuf_disarm(self->fd, 2 * PAGE, PAGE), 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, 70 * PAGE), 3);
	EXPECT_TRUE(all_zero(self->mem + 2 * PAGE));
	EXPECT_EQ(populate_gen(self->fd, 2 * PAGE, 1), 0);
	EXPECT_EQ(gmemuf_wake(self->fd, 0, SIZE), 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, 70 * PAGE), 3);

	EXPECT_EQ(gmemuf_arm(self->fd, 1, PAGE), -EINVAL);
	EXPECT_EQ(gmemuf_disarm(self->fd, 0, 0), -EINVAL);
	EXPECT_EQ(gmemuf_wake(self->fd, SIZE, PAGE), -EINVAL);
	EXPECT_EQ(gmemuf_read_bitmap(self->fd, 0, PAGE, NULL), -EINVAL);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE + PAGE), -EINVAL);
}

static int no_pages(void *arg, const uint64_t *offsets, unsigned int nr,
		    void *buf)
{
	return -EIO;
}

/* Every call on a file without userfault says it is not supported. */
static void all_eopnotsupp(struct __test_metadata *_metadata, int fd)
{
	struct gmemuf_handler *h = NULL;
	uint64_t bitmap, order = 0;
	int nfds = count_fds();

	EXPECT_EQ(gmemuf_arm(fd, 0, PAGE), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_disarm(fd, 0, PAGE), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_wake(fd, 0, PAGE), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_zero(fd, 0, PAGE), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_read_bitmap(fd, 0, PAGE, &bitmap), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_count_missing(fd, 0, PAGE), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_handler_open(fd), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_handler_create(fd, NULL, &h), -EOPNOTSUPP);
	EXPECT_EQ(h, NULL);
	EXPECT_EQ(gmemuf_prefetch(fd, &order, 1, 0, no_pages, NULL),
		  -EOPNOTSUPP);
	EXPECT_EQ(count_fds(), nfds);
}

/* Runs on any kernel: a guest_memfd without the flag, and a memfd. */
TEST(not_userfault_is_eopnotsupp)
{
	char page[GMEMUF_PAGE_SIZE] = { 0 };
	struct gmemuf_page batch = { 0, page };
	int vm = open_vm(), fd;

	fd = memfd_create("libgmemuf_test", MFD_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(ftruncate(fd, SIZE), 0);
	all_eopnotsupp(_metadata, fd);
	close(fd);
	if (vm < 0)
		SKIP(return, "no /dev/kvm: only a memfd was tried");
	fd = plain_gmem(vm);
	ASSERT_GE(fd, 0);
	all_eopnotsupp(_metadata, fd);
	/* KVM does not let a guest_memfd without userfault be written. */
	EXPECT_EQ(gmemuf_populate(fd, 0, page), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_populate_range(fd, 0, page, PAGE), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_populate_batch(fd, &batch, 1), -EOPNOTSUPP);
	close(fd);
	close(vm);
}

#ifndef LIBGMEMUF_TEST_VM
/* The host's kernel: the probe says no and creation is not supported. */
TEST(kernel_without_gmemuf)
{
	uint64_t features = ~0ULL;
	int vm = open_vm();

	if (vm < 0)
		SKIP(return, "no /dev/kvm");
	if (gmemuf_probe(vm, NULL) == 1) {
		close(vm);
		SKIP(return, "this kernel has gmemuf");
	}
	EXPECT_EQ(gmemuf_probe(vm, &features), 0);
	EXPECT_EQ(features, 0);
	EXPECT_EQ(gmemuf_create(vm, SIZE, 0), -EOPNOTSUPP);
	EXPECT_EQ(gmemuf_create(vm, SIZE, GUEST_MEMFD_FLAG_MMAP), -EOPNOTSUPP);
	close(vm);
}
#endif

static int never_called(void *arg, const uint64_t *offsets, unsigned int nr,
			void *buf)
{
	(*(int *)arg)++;
	return 0;
}

static int fault_fn_never_called(struct gmemuf_handler *h, unsigned int queue,
				 const struct gmemuf_fault *faults,
				 unsigned int nr, void *arg)
{
	return -EIO;
}

/*
 * On any kernel: NULL pointers and other invalid arguments are -EINVAL,
 * checked before any system call (on a memfd, which a call that went on
 * would write to), and crash nothing.
 */
TEST(invalid_arguments_are_einval)
{
	static char page[2][GMEMUF_PAGE_SIZE], back[GMEMUF_PAGE_SIZE];
	struct gmemuf_page batch[2] = {
		{ 0, page[0] }, { PAGE, NULL },
	};
	const struct gmemuf_fault *faults = (void *)1;
	struct gmemuf_handler *h = (void *)1;
	struct io_uring_sqe sqe;
	uint64_t order = 0;
	int fd, calls = 0;

	memset(page, 0x5a, sizeof(page));
	fd = memfd_create("libgmemuf_test", MFD_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(ftruncate(fd, SIZE), 0);

	EXPECT_EQ(gmemuf_populate(fd, 0, NULL), -EINVAL);
	EXPECT_EQ(gmemuf_populate_range(fd, 0, NULL, PAGE), -EINVAL);
	EXPECT_EQ(gmemuf_populate_range(fd, 0, page[0], 0), -EINVAL);
	EXPECT_EQ(gmemuf_zero(fd, 0, 0), -EINVAL);
	EXPECT_EQ(gmemuf_read_bitmap(fd, 0, PAGE, NULL), -EINVAL);
	/* A batch is checked whole before its first page is written. */
	EXPECT_EQ(gmemuf_populate_batch(fd, NULL, 1), -EINVAL);
	EXPECT_EQ(gmemuf_populate_batch(fd, batch, 2), -EINVAL);
	batch[1] = (struct gmemuf_page){ PAGE + 8, page[1] };
	EXPECT_EQ(gmemuf_populate_batch(fd, batch, 2), -EINVAL);
	EXPECT_EQ(pread(fd, back, PAGE, 0), PAGE);
	EXPECT_TRUE(all_zero(back));
	/* No entries: nothing to do. */
	EXPECT_EQ(gmemuf_populate_batch(fd, NULL, 0), 0);
	EXPECT_EQ(gmemuf_prefetch(fd, NULL, 0, 0, never_called, &calls), 0);

	EXPECT_EQ(gmemuf_prefetch(fd, NULL, 1, 0, never_called, &calls),
		  -EINVAL);
	EXPECT_EQ(gmemuf_prefetch(fd, &order, 1, 0, NULL, NULL), -EINVAL);
	EXPECT_EQ(gmemuf_prefetch(fd, &order, 1, GMEMUF_FETCH_MAX + 1,
				  never_called, &calls), -EINVAL);
	EXPECT_EQ(calls, 0);

	EXPECT_EQ(gmemuf_handler_create(fd, NULL, NULL), -EINVAL);
	EXPECT_EQ(gmemuf_handler_wait(NULL, 0, &faults, 0), -EINVAL);
	EXPECT_EQ(faults, (void *)1);
	EXPECT_EQ(gmemuf_handler_populate(NULL, 0, 0, page[0]), -EINVAL);
	EXPECT_EQ(gmemuf_handler_run(NULL, 0, fault_fn_never_called, NULL),
		  -EINVAL);
	EXPECT_EQ(gmemuf_handler_run(NULL, 0, NULL, NULL), -EINVAL);
	gmemuf_handler_stop(NULL);
	gmemuf_handler_destroy(NULL);
	EXPECT_EQ(h, (void *)1);

	/* The inline helpers. */
	EXPECT_EQ(gmemuf_fetch_result(NULL, 1), -EINVAL);
	EXPECT_EQ(gmemuf_populate_result(NULL), -EINVAL);
	gmemuf_prep_fetch(NULL, 3, NULL, 1);
	gmemuf_prep_populate(NULL, fd, 0, page[0], 1);
	memset(&sqe, 0, sizeof(sqe));
	gmemuf_prep_populate(&sqe, fd, PAGE, page[0], 2);
	EXPECT_EQ(sqe.opcode, IORING_OP_WRITE);
	EXPECT_EQ(sqe.len, 2 * PAGE);
	EXPECT_EQ(sqe.off, PAGE);

	EXPECT_NE(gmemuf_strerror(INT_MIN), NULL);
	EXPECT_EQ(pread(fd, back, PAGE, 0), PAGE);
	EXPECT_TRUE(all_zero(back));
	close(fd);
}

/*
 * On any kernel: every call that takes a range answers -EINVAL for an
 * empty or unaligned one, whatever the offset, before any system call:
 * on a memfd, which would answer the ioctl with ENOTTY (-EOPNOTSUPP), and
 * on a guest_memfd without userfault where there is /dev/kvm.
 */
TEST(ranges_checked_before_the_system_call)
{
	static const uint64_t bad[][2] = {
		{ 0, 0 }, { 5 * PAGE, 0 }, { 5 * PAGE + 8, 0 }, { SIZE, 0 },
		{ 8, PAGE }, { 0, PAGE + 8 }, { 3, 5 },
	};
	static char page[GMEMUF_PAGE_SIZE];
	uint64_t bitmap[2];
	int fds[2], vm, n = 1, i;
	unsigned int k;

	fds[0] = memfd_create("libgmemuf_test", MFD_CLOEXEC);
	ASSERT_GE(fds[0], 0);
	ASSERT_EQ(ftruncate(fds[0], SIZE), 0);
	vm = open_vm();
	fds[1] = vm >= 0 ? plain_gmem(vm) : -1;
	if (fds[1] >= 0)
		n = 2;
	for (i = 0; i < n; i++) {
		for (k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			uint64_t off = bad[k][0], len = bad[k][1];

			EXPECT_EQ(gmemuf_arm(fds[i], off, len), -EINVAL)
				TH_LOG("file %d, range %u", i, k);
			EXPECT_EQ(gmemuf_disarm(fds[i], off, len), -EINVAL);
			EXPECT_EQ(gmemuf_wake(fds[i], off, len), -EINVAL);
			EXPECT_EQ(gmemuf_read_bitmap(fds[i], off, len, bitmap),
				  -EINVAL);
			EXPECT_EQ(gmemuf_count_missing(fds[i], off, len),
				  -EINVAL);
			EXPECT_EQ(gmemuf_zero(fds[i], off, len), -EINVAL);
			EXPECT_EQ(gmemuf_populate_range(fds[i], off, page, len),
				  -EINVAL);
		}
		/* A good range reaches the file, which lacks the mode. */
		EXPECT_EQ(gmemuf_arm(fds[i], 0, PAGE), -EOPNOTSUPP);
		EXPECT_EQ(gmemuf_count_missing(fds[i], 0, PAGE), -EOPNOTSUPP);
		close(fds[i]);
	}
	if (vm >= 0)
		close(vm);
}

/* No pages to prefetch: 0, whatever else is given, and no call. */
TEST(prefetch_of_no_pages_is_nothing)
{
	uint64_t order = 0;
	int calls = 0;

	EXPECT_EQ(gmemuf_prefetch(-1, NULL, 0, 0, NULL, NULL), 0);
	EXPECT_EQ(gmemuf_prefetch(-1, &order, 0, GMEMUF_FETCH_MAX + 1,
				  never_called, &calls), 0);
	EXPECT_EQ(gmemuf_prefetch(-1, NULL, 0, 0, never_called, &calls), 0);
	EXPECT_EQ(calls, 0);
}

TEST(strerror_names_errors)
{
	EXPECT_NE(strstr(gmemuf_strerror(-EOPNOTSUPP), "userfault"), NULL);
	EXPECT_STREQ(gmemuf_strerror(-EOPNOTSUPP), gmemuf_strerror(EOPNOTSUPP));
	EXPECT_STREQ(gmemuf_strerror(-EINVAL), "Invalid argument");
	EXPECT_STREQ(gmemuf_strerror(-ESHUTDOWN), "Handler stopped");
	EXPECT_STREQ(gmemuf_strerror(-100000), "Unknown error");
}

TEST_F_TIMEOUT(lib, handler_params_and_no_leaks, HEAVY_TIMEOUT)
{
	struct gmemuf_handler_params p = { 0 };
	struct gmemuf_handler *h = (void *)1;
	int nfds = count_fds(), extra[2];

	p.nr_queues = 257;
	EXPECT_EQ(gmemuf_handler_create(self->fd, &p, &h), -EINVAL);
	EXPECT_EQ(h, NULL);
	p = (struct gmemuf_handler_params){ .batch = GMEMUF_FETCH_MAX + 1 };
	EXPECT_EQ(gmemuf_handler_create(self->fd, &p, &h), -EINVAL);
	p = (struct gmemuf_handler_params){ .queue_depth = 2 };
	EXPECT_EQ(gmemuf_handler_create(self->fd, &p, &h), -EINVAL);
	p = (struct gmemuf_handler_params){ .flags = GMEMUF_HANDLER_READ << 1 };
	EXPECT_EQ(gmemuf_handler_create(self->fd, &p, &h), -EINVAL);
	p = (struct gmemuf_handler_params){ .reserved[3] = 1 };
	EXPECT_EQ(gmemuf_handler_create(self->fd, &p, &h), -EINVAL);
	EXPECT_EQ(gmemuf_handler_create(self->fd, NULL, NULL), -EINVAL);

	/* Two handler files taken: the 255th queue fails, all are undone. */
	extra[0] = gmemuf_handler_open(self->fd);
	extra[1] = gmemuf_handler_open(self->fd);
	ASSERT_GE(extra[0], 0);
	ASSERT_GE(extra[1], 0);
	p = (struct gmemuf_handler_params){ .nr_queues = 255, .queue_depth = 4 };
	EXPECT_EQ(gmemuf_handler_create(self->fd, &p, &h), -ENOSPC);
	EXPECT_EQ(h, NULL);
	EXPECT_EQ(count_fds(), nfds + 2);
	close(extra[0]);
	close(extra[1]);
	/* All were released: 256 fit again. */
	p.nr_queues = 256;
	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	EXPECT_EQ(gmemuf_handler_open(self->fd), -ENOSPC);
	gmemuf_handler_destroy(h);
	EXPECT_EQ(count_fds(), nfds);
}

static int highest_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int fd, top = -1;

	while (d && (e = readdir(d))) {
		fd = atoi(e->d_name);
		if (fd > top)
			top = fd;
	}
	if (d)
		closedir(d);
	return top;
}

/*
 * Creation failing at each step (the eventfd, a handler file, a ring) for
 * want of file descriptors: -EMFILE, and nothing left open or attached.
 */
TEST_F_TIMEOUT(lib, handler_create_undoes_every_step, HEAVY_TIMEOUT)
{
	struct gmemuf_handler_params p = { .nr_queues = 2, .queue_depth = 4 };
	struct gmemuf_handler *h;
	struct rlimit old, lim;
	int nfds, top, extra, ret, failed = 0, made = 0, gaps[64], nr_gaps;
	/* The eventfd, two handler files, and two rings if io_uring works. */
	int nr_steps = io_uring_usable() ? 5 : 3;

	ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
	top = highest_fd();
	ASSERT_GE(top, 0);
	/* Fill the gaps below the highest: new descriptors go above it. */
	for (nr_gaps = 0; nr_gaps < 64; nr_gaps++) {
		gaps[nr_gaps] = dup(self->fd);
		ASSERT_GE(gaps[nr_gaps], 0);
		if (gaps[nr_gaps] > top) {
			close(gaps[nr_gaps]);
			break;
		}
	}
	ASSERT_LT(nr_gaps, 64);
	nfds = count_fds();
	for (extra = 0; extra <= nr_steps; extra++) {
		lim = old;
		lim.rlim_cur = top + 1 + extra;
		ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
		h = (void *)1;
		ret = gmemuf_handler_create(self->fd, &p, &h);
		ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
		if (ret) {
			EXPECT_EQ(ret, -EMFILE) TH_LOG("extra %d", extra);
			EXPECT_EQ(h, NULL);
			failed++;
		} else {
			gmemuf_handler_destroy(h);
			made++;
		}
		EXPECT_EQ(count_fds(), nfds) TH_LOG("extra %d", extra);
	}
	EXPECT_EQ(failed, nr_steps);
	EXPECT_EQ(made, 1);
	while (nr_gaps--)
		close(gaps[nr_gaps]);
	/* No handler file was left attached: all 256 fit. */
	p = (struct gmemuf_handler_params){ .nr_queues = 256, .queue_depth = 4 };
	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	gmemuf_handler_destroy(h);
}

/* What the callback of the threads of handler_run_with_callback shares. */
struct served {
	int fd;
	_Atomic unsigned int faults;
	_Atomic unsigned int bad;
	_Atomic unsigned int calls;
	unsigned int biggest;			/* batch seen */
	char (*pages)[GMEMUF_PAGE_SIZE];	/* per queue, a batch */
	unsigned int batch;
};

static int serve(struct gmemuf_handler *h, unsigned int queue,
		 const struct gmemuf_fault *faults, unsigned int nr, void *arg)
{
	struct served *s = arg;
	unsigned int i;
	int ret;

	for (i = 0; i < nr; i++) {
		char *buf = s->pages[queue * s->batch + i];

		if (faults[i].reserved || faults[i].offset % PAGE ||
		    !(faults[i].flags & GMEMUF_FAULT_MMAP_USER))
			s->bad++;
		fill(buf, faults[i].offset, 1);
		ret = gmemuf_handler_populate(h, queue, faults[i].offset, buf);
		if (ret)
			return ret;
	}
	s->faults += nr;
	s->calls++;
	if (nr > s->biggest)
		s->biggest = nr;
	return 0;
}

struct runner {
	pthread_t thread;
	struct gmemuf_handler *h;
	unsigned int queue;
	void *arg;
	int ret;
};

static void *runner_fn(void *arg)
{
	struct runner *r = arg;

	r->ret = gmemuf_handler_run(r->h, r->queue, serve, r->arg);
	return NULL;
}

/*
 * Reads the counters of a handler from a thread of its own while its
 * queues are served, until told to stop: each only grows, and populates
 * is always the sum of its parts.
 */
struct stats_reader {
	pthread_t thread;
	struct gmemuf_handler *h;
	atomic_bool done;
	unsigned int reads, bad;
};

static void *stats_reader_fn(void *arg)
{
	struct stats_reader *r = arg;
	struct gmemuf_handler_stats st, last;

	memset(&last, 0, sizeof(last));
	while (!atomic_load(&r->done)) {
		st.size = sizeof(st);
		if (gmemuf_handler_stats(r->h, &st) ||
		    st.populates != st.populated + st.present +
				    st.populate_errors ||
		    st.fetches < last.fetches || st.faults < last.faults ||
		    st.populated < last.populated)
			r->bad++;
		last = st;
		r->reads++;
		usleep(1000);
	}
	return NULL;
}

TEST_F_TIMEOUT(lib, handler_run_with_callback, HEAVY_TIMEOUT)
{
	struct gmemuf_handler_params p = { .nr_queues = 2, .batch = 16 };
	struct gmemuf_handler_stats st;
	struct stats_reader reader = { 0 };
	static struct toucher t[256];
	struct served s = { .batch = 16 };
	struct gmemuf_handler *h;
	struct runner r[2];
	int i;

	s.pages = calloc(2 * s.batch, PAGE);
	ASSERT_NE(s.pages, NULL);
	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	reader.h = h;
	pthread_create(&reader.thread, NULL, stats_reader_fn, &reader);
	for (i = 0; i < 2; i++) {
		r[i] = (struct runner){ .h = h, .queue = i, .arg = &s };
		pthread_create(&r[i].thread, NULL, runner_fn, &r[i]);
	}
	/* 256 pages, each touched by one thread. */
	for (i = 0; i < 256; i++)
		touch_start(&t[i], self->mem + (3 * i) * PAGE);
	for (i = 0; i < 256; i++) {
		pthread_join(t[i].thread, NULL);
		EXPECT_TRUE(holds(t[i].copy, 3 * i * PAGE, 1)) TH_LOG("%d", i);
	}
	gmemuf_handler_stop(h);
	for (i = 0; i < 2; i++) {
		pthread_join(r[i].thread, NULL);
		EXPECT_EQ(r[i].ret, 0);
	}
	atomic_store(&reader.done, true);
	pthread_join(reader.thread, NULL);
	EXPECT_GT(reader.reads, 0);
	EXPECT_EQ(reader.bad, 0);
	/* One record per page, however they were shared. */
	EXPECT_EQ(s.faults, 256);
	EXPECT_EQ(s.bad, 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), NPAGES - 256);
	/* The counters of both queues, summed: one fetch per callback. */
	st.size = sizeof(st);
	ASSERT_EQ(gmemuf_handler_stats(h, &st), 0);
	EXPECT_EQ(st.fetches, s.calls);
	EXPECT_EQ(st.faults, 256);
	EXPECT_EQ(st.populates, 256);
	EXPECT_EQ(st.populated, 256);
	EXPECT_EQ(st.present + st.populate_errors + st.retries, 0);
	EXPECT_EQ(st.fetch_errors + st.fetches_cancelled, 0);
	gmemuf_handler_destroy(h);
	free(s.pages);
}

/*
 * Batches bigger than the ring: populates queued by the callback fill the
 * ring and the most it lets be in flight, so they are submitted and reaped
 * as it goes, not only with the next fetch. Every page of the file, in
 * 16 rounds of 64 threads faulting at once; in the first, the handler
 * starts once all 64 wait, so that its first batch is a full one. A
 * thousand threads take more than the harness's default 30 s in the
 * test VM when the machine is loaded.
 */
TEST_F_TIMEOUT(lib, handler_batches_bigger_than_its_ring, HEAVY_TIMEOUT)
{
	struct gmemuf_handler_params p = { .queue_depth = 4, .batch = 32 };
	static struct toucher t[64];
	struct served s = { .batch = 32 };
	struct gmemuf_handler *h;
	struct runner r;
	int i, k;

	s.pages = calloc(s.batch, PAGE);
	ASSERT_NE(s.pages, NULL);
	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	r = (struct runner){ .h = h, .queue = 0, .arg = &s };
	for (k = 0; k < 16; k++) {
		for (i = 0; i < 64; i++)
			touch_start(&t[i], self->mem + (k * 64 + i) * PAGE);
		for (i = 0; !k && i < 64; i++)
			ASSERT_TRUE(touch_waiting(&t[i]));
		if (!k)
			pthread_create(&r.thread, NULL, runner_fn, &r);
		for (i = 0; i < 64; i++) {
			pthread_join(t[i].thread, NULL);
			EXPECT_TRUE(holds(t[i].copy, (k * 64 + i) * PAGE, 1));
		}
	}
	gmemuf_handler_stop(h);
	pthread_join(r.thread, NULL);
	EXPECT_EQ(r.ret, 0);
	EXPECT_EQ(s.faults, NPAGES);
	EXPECT_EQ(s.bad, 0);
	EXPECT_EQ(s.biggest, 32);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), 0);
	gmemuf_handler_destroy(h);
	free(s.pages);
}

static long elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 +
	       (t.tv_nsec - t0->tv_nsec) / 1000000;
}

TEST_F(lib, handler_wait_loop)
{
	const struct gmemuf_fault *faults;
	struct gmemuf_handler *h;
	char page[GMEMUF_PAGE_SIZE];
	struct timespec t0;
	struct toucher t;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	EXPECT_GE(elapsed_ms(&t0), 90);
	EXPECT_EQ(gmemuf_handler_wait(h, 1, &faults, 0), -EINVAL);
	EXPECT_EQ(gmemuf_handler_populate(h, 0, 1, page), -EINVAL);

	touch_start(&t, self->mem + 9 * PAGE);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 9 * PAGE);
	EXPECT_EQ(faults[0].flags, GMEMUF_FAULT_MMAP_USER | GMEMUF_FAULT_READ);

	/* A populate that fails is said once, and its fault comes again. */
	ASSERT_NE(unreadable_page(), NULL);
	ASSERT_EQ(gmemuf_handler_populate(h, 0, 9 * PAGE, unreadable_page()),
		  0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), -EFAULT);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 9 * PAGE);

	fill(page, 9 * PAGE, 1);
	ASSERT_EQ(gmemuf_handler_populate(h, 0, 9 * PAGE, page), 0);
	/* Populated once the next wait returns: nothing else comes. */
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 9 * PAGE, PAGE), 0);
	pthread_join(t.thread, NULL);
	EXPECT_TRUE(holds(t.copy, 9 * PAGE, 1));

	/* Stop is sticky. */
	gmemuf_handler_stop(h);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, -1), -ESHUTDOWN);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, -1), -ESHUTDOWN);
	EXPECT_EQ(gmemuf_handler_run(h, 0, serve, NULL), 0);
	gmemuf_handler_destroy(h);
}

/* More populates fail than the ring is deep: each fault comes back. */
TEST_F(lib, handler_failed_populates_beyond_depth)
{
	struct gmemuf_handler_params p = { .queue_depth = 4 };
	const struct gmemuf_fault *faults;
	struct gmemuf_handler *h;
	unsigned int seen = 0;
	int i, n;

	ASSERT_NE(unreadable_page(), NULL);
	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	for (i = 0; i < 10; i++)
		ASSERT_EQ(gmemuf_handler_populate(h, 0, (20 + i) * PAGE,
						  unreadable_page()), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), -EFAULT);
	n = gmemuf_handler_wait(h, 0, &faults, 10000);
	ASSERT_EQ(n, 10);
	/* In the order the populates completed, which io-wq chooses. */
	for (i = 0; i < n; i++) {
		EXPECT_EQ(faults[i].flags, 0);
		seen |= 1u << (faults[i].offset / PAGE - 20);
	}
	EXPECT_EQ(seen, 0x3ffu);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 20 * PAGE, 10 * PAGE), 10);
	gmemuf_handler_destroy(h);
}

/* The next batch of @h is the fault of @t on @page: populate it, check @t. */
static void serve_one_fault(struct __test_metadata *_metadata,
			    struct gmemuf_handler *h, int fd,
			    struct toucher *t, uint64_t page)
{
	const struct gmemuf_fault *faults;

	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, page * PAGE);
	EXPECT_EQ(populate_gen(fd, page * PAGE, 1), 1);
	pthread_join(t->thread, NULL);
	EXPECT_TRUE(holds(t->copy, page * PAGE, 1));
}

static void *wait_once(void *arg)
{
	struct runner *r = arg;
	const struct gmemuf_fault *faults;

	r->ret = gmemuf_handler_wait(r->h, r->queue, &faults, 0);
	return NULL;
}

/*
 * The thread that submitted a queue's fetch and stop poll exits, which
 * cancels them: the next wait, on another thread, submits them again.
 */
TEST_F(lib, handler_queue_moves_to_another_thread)
{
	struct gmemuf_handler_stats st;
	const struct gmemuf_fault *faults;
	struct gmemuf_handler *h;
	struct toucher t;
	struct runner r;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	r = (struct runner){ .h = h, .queue = 0 };
	pthread_create(&r.thread, NULL, wait_once, &r);
	pthread_join(r.thread, NULL);
	EXPECT_EQ(r.ret, 0);

	touch_start(&t, self->mem + 30 * PAGE);
	serve_one_fault(_metadata, h, self->fd, &t, 30);
	gmemuf_handler_stop(h);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), -ESHUTDOWN);
	st.size = sizeof(st);
	ASSERT_EQ(gmemuf_handler_stats(h, &st), 0);
	/* Without a ring there is no fetch to cancel. */
	EXPECT_EQ(st.fetches_cancelled, handler_uses_rings(h) ? 1 : 0);
	EXPECT_EQ(st.fetches, 1);
	EXPECT_EQ(st.faults, 1);
	EXPECT_EQ(st.fetch_errors, 0);
	gmemuf_handler_destroy(h);
}

/* Read the counters of @h, whole. */
static struct gmemuf_handler_stats stats_of(struct gmemuf_handler *h)
{
	struct gmemuf_handler_stats st;

	memset(&st, 0xa5, sizeof(st));
	st.size = sizeof(st);
	if (gmemuf_handler_stats(h, &st))
		memset(&st, 0xff, sizeof(st));
	return st;
}

/*
 * The counters, at each step of a known sequence: three faults, a populate
 * that fails and its retry, one that finds its page present, two that
 * install theirs.
 */
TEST_F(lib, handler_stats_count_what_it_did)
{
	const struct gmemuf_fault *faults;
	struct gmemuf_handler_stats st;
	char page[GMEMUF_PAGE_SIZE];
	static const uint64_t pages[3] = { 40, 41, 42 };
	struct gmemuf_handler *h;
	struct toucher t[3];
	unsigned int got = 0, batches = 0;
	int i, n;

	ASSERT_NE(unreadable_page(), NULL);
	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	st = stats_of(h);
	EXPECT_EQ(st.size, sizeof(st));
	EXPECT_EQ(st.reserved, 0);
	EXPECT_EQ(st.fetches + st.faults + st.retries + st.populates +
		  st.populated + st.present + st.populate_errors +
		  st.fetch_errors + st.fetches_cancelled, 0);

	for (i = 0; i < 3; i++)
		touch_start(&t[i], self->mem + pages[i] * PAGE);
	for (i = 0; i < 3; i++)
		ASSERT_TRUE(touch_waiting(&t[i]));
	/* In one batch or more: as many fetches as batches. */
	while (got < 3) {
		n = gmemuf_handler_wait(h, 0, &faults, 10000);
		ASSERT_GT(n, 0);
		got += n;
		batches++;
	}
	ASSERT_EQ(got, 3);
	st = stats_of(h);
	EXPECT_EQ(st.fetches, batches);
	EXPECT_EQ(st.faults, 3);
	EXPECT_EQ(st.populates, 0);

	/* A populate that fails, and its fault handed out again. */
	ASSERT_EQ(gmemuf_handler_populate(h, 0, pages[0] * PAGE,
					  unreadable_page()), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), -EFAULT);
	st = stats_of(h);
	EXPECT_EQ(st.populates, 1);
	EXPECT_EQ(st.populate_errors, 1);
	EXPECT_EQ(st.retries, 0);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, pages[0] * PAGE);
	st = stats_of(h);
	EXPECT_EQ(st.retries, 1);
	EXPECT_EQ(st.faults, 3);
	EXPECT_EQ(st.fetches, batches);

	/* Page 0 populated elsewhere: the handler's finds it present. */
	EXPECT_EQ(populate_gen(self->fd, pages[0] * PAGE, 1), 1);
	fill(page, pages[0] * PAGE, 1);
	ASSERT_EQ(gmemuf_handler_populate(h, 0, pages[0] * PAGE, page), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	for (i = 1; i < 3; i++) {
		fill(page, pages[i] * PAGE, 1);
		ASSERT_EQ(gmemuf_handler_populate(h, 0, pages[i] * PAGE, page),
			  0);
		EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	}
	for (i = 0; i < 3; i++) {
		pthread_join(t[i].thread, NULL);
		EXPECT_TRUE(holds(t[i].copy, pages[i] * PAGE, 1));
	}
	st = stats_of(h);
	EXPECT_EQ(st.fetches, batches);
	EXPECT_EQ(st.faults, 3);
	EXPECT_EQ(st.retries, 1);
	EXPECT_EQ(st.populates, 4);
	EXPECT_EQ(st.populated, 2);
	EXPECT_EQ(st.present, 1);
	EXPECT_EQ(st.populate_errors, 1);
	EXPECT_EQ(st.fetch_errors, 0);
	EXPECT_EQ(st.fetches_cancelled, 0);
	gmemuf_handler_destroy(h);
}

/*
 * The size field: a caller built against an older, smaller struct gets
 * what fits and nothing written past it; a newer, bigger one gets the
 * fields this library knows, and zeroes past them.
 */
TEST_F(lib, handler_stats_size_is_the_version)
{
	struct gmemuf_handler_stats *st;
	struct gmemuf_handler *h;
	uint64_t buf[64];
	unsigned int i;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	st = (struct gmemuf_handler_stats *)buf;

	memset(buf, 0xa5, sizeof(buf));
	st->size = 16;
	ASSERT_EQ(gmemuf_handler_stats(h, st), 0);
	EXPECT_EQ(st->size, 16);
	EXPECT_EQ(st->reserved, 0);
	EXPECT_EQ(st->fetches, 0);
	for (i = 2; i < 64; i++)
		EXPECT_EQ(buf[i], 0xa5a5a5a5a5a5a5a5ULL) TH_LOG("word %u", i);

	memset(buf, 0xa5, sizeof(buf));
	st->size = sizeof(*st) + 16;
	ASSERT_EQ(gmemuf_handler_stats(h, st), 0);
	EXPECT_EQ(st->size, sizeof(*st));
	for (i = 1; i < (sizeof(*st) + 16) / 8; i++)
		EXPECT_EQ(buf[i], 0) TH_LOG("word %u", i);
	for (; i < 64; i++)
		EXPECT_EQ(buf[i], 0xa5a5a5a5a5a5a5a5ULL) TH_LOG("word %u", i);

	st->size = 8;
	EXPECT_EQ(gmemuf_handler_stats(h, st), 0);
	EXPECT_EQ(st->size, 8);
	st->size = 4;
	EXPECT_EQ(gmemuf_handler_stats(h, st), -EINVAL);
	st->size = 12;
	EXPECT_EQ(gmemuf_handler_stats(h, st), -EINVAL);
	st->size = 4104;
	EXPECT_EQ(gmemuf_handler_stats(h, st), -EINVAL);
	st->size = sizeof(*st);
	EXPECT_EQ(gmemuf_handler_stats(NULL, st), -EINVAL);
	EXPECT_EQ(gmemuf_handler_stats(h, NULL), -EINVAL);
	gmemuf_handler_destroy(h);
}

/*
 * The decode of a memory fault exit, against the members of the kernel's
 * struct kvm_run (the helper reads them by their place, for older headers).
 */
TEST(decode_memory_fault)
{
	struct gmemuf_memory_fault f;
	struct kvm_run run;

	memset(&run, 0, sizeof(run));
	memset(&f, 0xa5, sizeof(f));
	run.exit_reason = KVM_EXIT_IO;
	EXPECT_EQ(gmemuf_decode_memory_fault(&run, &f), -ENOMSG);
	EXPECT_EQ(f.gpa + f.size + f.flags, 0);

	run.exit_reason = KVM_EXIT_MEMORY_FAULT;
	run.memory_fault.gpa = 0x12345000;
	run.memory_fault.size = PAGE;
	run.memory_fault.flags = KVM_MEMORY_EXIT_FLAG_USERFAULT |
				 KVM_MEMORY_EXIT_FLAG_PRIVATE;
	EXPECT_EQ(gmemuf_decode_memory_fault(&run, &f), 1);
	EXPECT_EQ(f.gpa, 0x12345000);
	EXPECT_EQ(f.size, PAGE);
	EXPECT_EQ(f.flags, KVM_MEMORY_EXIT_FLAG_USERFAULT |
			   KVM_MEMORY_EXIT_FLAG_PRIVATE);

	/* A private/shared mismatch: a memory fault, not a missing page. */
	run.memory_fault.flags = KVM_MEMORY_EXIT_FLAG_PRIVATE;
	EXPECT_EQ(gmemuf_decode_memory_fault(&run, &f), 0);
	EXPECT_EQ(f.gpa, 0x12345000);
	EXPECT_EQ(f.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);

	EXPECT_EQ(gmemuf_decode_memory_fault(NULL, &f), -EINVAL);
	EXPECT_EQ(gmemuf_decode_memory_fault(&run, NULL), -EINVAL);
}

/* A fault fetched by a handler destroyed unresolved goes to the next one. */
TEST_F(lib, handler_destroyed_faults_redelivered)
{
	const struct gmemuf_fault *faults;
	struct gmemuf_handler *h;
	struct toucher t;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	touch_start(&t, self->mem + 12 * PAGE);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 12 * PAGE);
	gmemuf_handler_destroy(h);

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	serve_one_fault(_metadata, h, self->fd, &t, 12);
	gmemuf_handler_destroy(h);
}

/*
 * One rule for empty ranges: -EINVAL for every call that takes a range, as
 * for the kernel's range ioctls, whatever the offset; an empty array is no
 * work. Nothing is populated meanwhile.
 */
TEST_F(lib, empty_ranges_are_einval)
{
	static char page[GMEMUF_PAGE_SIZE];
	const uint64_t offsets[] = { 0, 5 * PAGE, 5 * PAGE + 8, SIZE,
				     SIZE + PAGE };
	uint64_t bitmap[1];
	unsigned int i;
	int calls = 0;

	for (i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		uint64_t off = offsets[i];

		EXPECT_EQ(gmemuf_arm(self->fd, off, 0), -EINVAL);
		EXPECT_EQ(gmemuf_disarm(self->fd, off, 0), -EINVAL);
		EXPECT_EQ(gmemuf_wake(self->fd, off, 0), -EINVAL);
		EXPECT_EQ(gmemuf_read_bitmap(self->fd, off, 0, bitmap),
			  -EINVAL);
		EXPECT_EQ(gmemuf_count_missing(self->fd, off, 0), -EINVAL);
		EXPECT_EQ(gmemuf_zero(self->fd, off, 0), -EINVAL);
		EXPECT_EQ(gmemuf_populate_range(self->fd, off, page, 0),
			  -EINVAL);
	}
	EXPECT_EQ(gmemuf_populate_batch(self->fd, NULL, 0), 0);
	EXPECT_EQ(gmemuf_prefetch(self->fd, offsets, 0, 0, never_called,
				  &calls), 0);
	EXPECT_EQ(calls, 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), NPAGES);
}

/* The own-ring handler's calls, on a live handler. */
TEST_F(lib, handler_invalid_arguments)
{
	const struct gmemuf_fault *faults;
	static char page[GMEMUF_PAGE_SIZE];
	struct gmemuf_handler *h;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, NULL, 0), -EINVAL);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, -2), -EINVAL);
	EXPECT_EQ(gmemuf_handler_wait(h, 1, &faults, 0), -EINVAL);
	EXPECT_EQ(gmemuf_handler_populate(h, 0, 3 * PAGE, NULL), -EINVAL);
	EXPECT_EQ(gmemuf_handler_populate(h, 1, 3 * PAGE, page), -EINVAL);
	EXPECT_EQ(gmemuf_handler_populate(h, 0, 3 * PAGE + 8, page), -EINVAL);
	EXPECT_EQ(gmemuf_handler_run(h, 0, NULL, NULL), -EINVAL);
	EXPECT_EQ(gmemuf_handler_run(h, 1, fault_fn_never_called, NULL),
		  -EINVAL);
	/* Nothing was queued: nothing is populated, nothing reported. */
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), NPAGES);
	gmemuf_handler_destroy(h);
}

static int fault_fn_positive(struct gmemuf_handler *h, unsigned int queue,
			     const struct gmemuf_fault *faults,
			     unsigned int nr, void *arg)
{
	return 1;
}

/* A callback that returns a positive value stops the run with -EINVAL. */
TEST_F(lib, handler_run_positive_callback_is_einval)
{
	struct gmemuf_handler *h;
	struct toucher t;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	touch_start(&t, self->mem + 33 * PAGE);
	EXPECT_EQ(gmemuf_handler_run(h, 0, fault_fn_positive, NULL), -EINVAL);
	EXPECT_EQ(populate_gen(self->fd, 33 * PAGE, 1), 1);
	pthread_join(t.thread, NULL);
	EXPECT_TRUE(holds(t.copy, 33 * PAGE, 1));
	gmemuf_handler_destroy(h);
}

/*
 * Destroy drops the populates queued and never submitted, and reads none
 * of their pages; it waits for those submitted. With a ring of 4, the
 * fifth populate submits the first four (the most in flight) and is queued
 * itself. Then a fault's populate queued after its last wait: dropped, and
 * the fault goes to the next handler.
 */
TEST_F(lib, handler_destroy_drops_unsubmitted_populates)
{
	struct gmemuf_handler_params p = { .queue_depth = 4 };
	static char pages[6][GMEMUF_PAGE_SIZE];
	const struct gmemuf_fault *faults;
	struct gmemuf_handler *h;
	struct toucher t;
	int i;

	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	for (i = 0; i < 5; i++) {
		fill(pages[i], (40 + i) * PAGE, 1);
		ASSERT_EQ(gmemuf_handler_populate(h, 0, (40 + i) * PAGE,
						  pages[i]), 0);
	}
	gmemuf_handler_stop(h);
	gmemuf_handler_destroy(h);
	for (i = 0; i < 4; i++) {
		EXPECT_EQ(gmemuf_count_missing(self->fd, (40 + i) * PAGE, PAGE),
			  0);
		EXPECT_TRUE(holds(self->mem + (40 + i) * PAGE, (40 + i) * PAGE,
				  1));
	}
	EXPECT_EQ(gmemuf_count_missing(self->fd, 44 * PAGE, PAGE), 1);

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	touch_start(&t, self->mem + 50 * PAGE);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 50 * PAGE);
	fill(pages[5], 50 * PAGE, 2);
	ASSERT_EQ(gmemuf_handler_populate(h, 0, 50 * PAGE, pages[5]), 0);
	gmemuf_handler_stop(h);
	gmemuf_handler_destroy(h);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 50 * PAGE, PAGE), 1);

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	serve_one_fault(_metadata, h, self->fd, &t, 50);
	gmemuf_handler_destroy(h);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), NPAGES - 5);
}

struct task_work_probe {
	int fd;
	int ret;
	int eintr;
	int timeouts;
};

/*
 * Create and destroy a handler, then wait for no signal, 20 times 100 ms:
 * io_uring task work queued with TWA_SIGNAL on this thread (as the ring
 * teardown does on the ring's creator) makes sigtimedwait() fail with
 * EINTR, as it makes KVM_RUN do on a vCPU thread.
 */
static void *create_destroy_then_sleep(void *arg)
{
	struct gmemuf_handler_params p = { .nr_queues = 2 };
	const struct timespec tenth = { 0, 100 * 1000 * 1000 };
	struct task_work_probe *probe = arg;
	struct gmemuf_handler *h;
	sigset_t none;
	int i;

	probe->ret = gmemuf_handler_create(probe->fd, &p, &h);
	if (probe->ret)
		return NULL;
	gmemuf_handler_destroy(h);
	sigemptyset(&none);
	for (i = 0; i < 20; i++) {
		if (sigtimedwait(&none, NULL, &tenth) >= 0)
			continue;
		if (errno == EINTR)
			probe->eintr++;
		else if (errno == EAGAIN)
			probe->timeouts++;
	}
	return NULL;
}

TEST_F(lib, handler_leaves_no_task_work_in_the_caller)
{
	struct task_work_probe probe = { .fd = self->fd };
	pthread_t thread;

	ASSERT_EQ(pthread_create(&thread, NULL, create_destroy_then_sleep,
				 &probe), 0);
	pthread_join(thread, NULL);
	ASSERT_EQ(probe.ret, 0);
	EXPECT_EQ(probe.eintr, 0);
	EXPECT_EQ(probe.timeouts, 20);
}

/* Submit what @ring has, and copy to @c the one completion that comes. */
static void submit_one(struct io_uring *ring, struct io_uring_cqe *c)
{
	struct io_uring_cqe *cqe;

	c->res = -ENODATA;
	if (io_uring_submit_and_wait(ring, 1) == 1 &&
	    !io_uring_peek_cqe(ring, &cqe)) {
		c->user_data = cqe->user_data;
		c->res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
}

static void *wait_forever(void *arg)
{
	struct runner *r = arg;
	const struct gmemuf_fault *faults;

	r->ret = gmemuf_handler_wait(r->h, r->queue, &faults, -1);
	return NULL;
}

/*
 * GMEMUF_HANDLER_READ: no ring, even where io_uring works. The queue's
 * descriptor is its handler file, non-blocking; waits, populates, retries
 * and stop behave as with a ring.
 */
TEST_F(lib, handler_without_rings)
{
	struct gmemuf_handler_params p = { .flags = GMEMUF_HANDLER_READ };
	const struct gmemuf_fault *faults;
	struct gmemuf_handler_stats st;
	char page[GMEMUF_PAGE_SIZE];
	struct gmemuf_handler *h;
	struct timespec t0;
	struct toucher t;
	struct runner r;
	int fd;

	ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
	EXPECT_STREQ(handler_fd_kind(h), "anon_inode:[gmemuf-handler]");
	fd = gmemuf_handler_fd(h, 0);
	EXPECT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
	EXPECT_EQ(gmemuf_handler_fd(h, 1), -EINVAL);
	EXPECT_EQ(gmemuf_handler_fd(NULL, 0), -EINVAL);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	EXPECT_GE(elapsed_ms(&t0), 90);

	touch_start(&t, self->mem + 11 * PAGE);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 11 * PAGE);
	EXPECT_EQ(faults[0].flags, GMEMUF_FAULT_MMAP_USER | GMEMUF_FAULT_READ);

	/* Queued, not written, until the next wait; then a failure is said. */
	ASSERT_EQ(gmemuf_handler_populate(h, 0, 11 * PAGE, unreadable_page()),
		  0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 11 * PAGE, PAGE), 1);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), -EFAULT);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 11 * PAGE);
	fill(page, 11 * PAGE, 1);
	ASSERT_EQ(gmemuf_handler_populate(h, 0, 11 * PAGE, page), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 11 * PAGE, PAGE), 0);
	pthread_join(t.thread, NULL);
	EXPECT_TRUE(holds(t.copy, 11 * PAGE, 1));

	st = stats_of(h);
	EXPECT_EQ(st.fetches, 1);
	EXPECT_EQ(st.faults, 1);
	EXPECT_EQ(st.retries, 1);
	EXPECT_EQ(st.populated, 1);
	EXPECT_EQ(st.populate_errors, 1);

	/* Stop wakes a wait that sleeps in poll(). */
	r = (struct runner){ .h = h, .queue = 0 };
	pthread_create(&r.thread, NULL, wait_forever, &r);
	usleep(100 * 1000);
	gmemuf_handler_stop(h);
	pthread_join(r.thread, NULL);
	EXPECT_EQ(r.ret, -ESHUTDOWN);
	gmemuf_handler_destroy(h);
}

/*
 * gmemuf_handler_fd() in an event loop, with rings and without: poll it,
 * take with a wait of timeout 0, populate, and every fault is served.
 */
TEST_F(lib, handler_fd_in_an_event_loop)
{
	static const uint32_t modes[2] = { 0, GMEMUF_HANDLER_READ };
	static char pages[8][GMEMUF_PAGE_SIZE];
	const struct gmemuf_fault *faults;
	struct gmemuf_handler *h;
	struct toucher t[8];
	struct pollfd pfd;
	unsigned int m, got, polls;
	int i, n;

	for (m = 0; m < 2; m++) {
		struct gmemuf_handler_params p = { .flags = modes[m] };
		uint64_t first = 100 + m * 8;

		ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
		if (!modes[m] && io_uring_usable())
			EXPECT_TRUE(handler_uses_rings(h));
		pfd = (struct pollfd){ .fd = gmemuf_handler_fd(h, 0),
				       .events = POLLIN };
		ASSERT_GE(pfd.fd, 0);
		/* Arms the fetch; nothing to take yet. */
		ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 0);
		EXPECT_EQ(poll(&pfd, 1, 0), 0);
		for (i = 0; i < 8; i++)
			touch_start(&t[i], self->mem + (first + i) * PAGE);
		got = polls = 0;
		while (got < 8) {
			ASSERT_LT(polls++, 1000) TH_LOG("mode %u: %u faults", m, got);
			n = poll(&pfd, 1, 10000);
			if (n < 0 && errno == EINTR)
				continue;
			ASSERT_EQ(n, 1) TH_LOG("mode %u: %u faults", m, got);
			/* Take all there is: until it returns 0. */
			while ((n = gmemuf_handler_wait(h, 0, &faults, 0)) > 0) {
				for (i = 0; i < n; i++) {
					uint64_t off = faults[i].offset;

					ASSERT_TRUE(off >= first * PAGE &&
						    off < (first + 8) * PAGE);
					fill(pages[off / PAGE - first], off, 1);
					ASSERT_EQ(gmemuf_handler_populate(h, 0,
						off, pages[off / PAGE - first]), 0);
				}
				got += n;
			}
			ASSERT_EQ(n, 0);
		}
		EXPECT_EQ(got, 8);
		for (i = 0; i < 8; i++) {
			pthread_join(t[i].thread, NULL);
			EXPECT_TRUE(holds(t[i].copy, (first + i) * PAGE, 1));
		}
		EXPECT_EQ(gmemuf_count_missing(self->fd, first * PAGE, 8 * PAGE),
			  0);
		gmemuf_handler_destroy(h);
	}
}

/*
 * A populate that fails keeps its fault for the next wait, and the event
 * loop's descriptor says so: with a ring it polls readable until a wait
 * hands the fault out again. Without a ring it does not (the handler file
 * polls for the kernel's records only): the caller calls the wait again
 * after an error, as gmemuf_handler_fd() says, and finds the fault.
 */
TEST_F(lib, handler_fd_readable_after_a_failed_populate)
{
	static const uint32_t modes[2] = { 0, GMEMUF_HANDLER_READ };
	const struct gmemuf_fault *faults;
	char page[GMEMUF_PAGE_SIZE];
	struct gmemuf_handler *h;
	struct pollfd pfd;
	struct toucher t;
	unsigned int m;
	int n;

	ASSERT_NE(unreadable_page(), NULL);
	for (m = 0; m < 2; m++) {
		struct gmemuf_handler_params p = { .flags = modes[m] };
		uint64_t off = (300 + m) * PAGE;
		bool rings;

		ASSERT_EQ(gmemuf_handler_create(self->fd, &p, &h), 0);
		rings = handler_uses_rings(h);
		pfd = (struct pollfd){ .fd = gmemuf_handler_fd(h, 0),
				       .events = POLLIN };
		ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 0);
		touch_start(&t, self->mem + off);
		ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
		EXPECT_EQ(faults[0].offset, off);
		ASSERT_EQ(gmemuf_handler_populate(h, 0, off, unreadable_page()),
			  0);
		EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), -EFAULT);
		if (rings) {
			do
				n = poll(&pfd, 1, 2000);
			while (n < 0 && errno == EINTR);
			EXPECT_EQ(n, 1) TH_LOG("the ring's fd is not readable");
		}
		ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 1);
		EXPECT_EQ(faults[0].offset, off);
		EXPECT_EQ(faults[0].flags, 0);
		fill(page, off, 1);
		ASSERT_EQ(gmemuf_handler_populate(h, 0, off, page), 0);
		EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 0), 0);
		pthread_join(t.thread, NULL);
		EXPECT_TRUE(holds(t.copy, off, 1));
		/* Nothing left: the descriptor is quiet again. */
		EXPECT_EQ(poll(&pfd, 1, 0), 0);
		gmemuf_handler_destroy(h);
	}
}

/*
 * With kernel.io_uring_disabled=2 (run.list's libgmemuf_test_no_io_uring
 * sets it), a handler created without flags goes without rings by itself,
 * and serves faults. Skipped where io_uring is allowed.
 */
TEST_F(lib, handler_falls_back_when_io_uring_is_disabled)
{
	const struct gmemuf_fault *faults;
	char page[GMEMUF_PAGE_SIZE];
	struct gmemuf_handler *h;
	struct io_uring ring;
	struct toucher t;
	char disabled = '0';
	int fd;

	fd = open("/proc/sys/kernel/io_uring_disabled", O_RDONLY);
	if (fd >= 0) {
		if (read(fd, &disabled, 1) != 1)
			disabled = '0';
		close(fd);
	}
	if (disabled != '2')
		SKIP(return, "kernel.io_uring_disabled is not 2");
	ASSERT_EQ(io_uring_queue_init(2, &ring, 0), -EPERM);

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	EXPECT_STREQ(handler_fd_kind(h), "anon_inode:[gmemuf-handler]");
	touch_start(&t, self->mem + 12 * PAGE);
	ASSERT_EQ(gmemuf_handler_wait(h, 0, &faults, 10000), 1);
	EXPECT_EQ(faults[0].offset, 12 * PAGE);
	fill(page, 12 * PAGE, 1);
	ASSERT_EQ(gmemuf_handler_populate(h, 0, 12 * PAGE, page), 0);
	EXPECT_EQ(gmemuf_handler_wait(h, 0, &faults, 100), 0);
	pthread_join(t.thread, NULL);
	EXPECT_TRUE(holds(t.copy, 12 * PAGE, 1));
	gmemuf_handler_destroy(h);
}

/* A VMM's own ring: prep, submit, decode; no library state. */
TEST_F(lib, bring_your_own_ring)
{
	struct gmemuf_fault faults[64];
	static char pages[8][GMEMUF_PAGE_SIZE];
	struct io_uring_cqe *cqe, c, fake = { 0 };
	struct io_uring_sqe *sqe;
	struct toucher t[8];
	unsigned int records = 0, done = 0;
	struct io_uring ring;
	int hfd, i, n;

	if (!io_uring_usable())
		SKIP(return, "io_uring is disabled for this process");
	hfd = gmemuf_handler_open(self->fd);
	ASSERT_GE(hfd, 0);
	ASSERT_EQ(io_uring_queue_init(16, &ring, 0), 0);
	for (i = 0; i < 8; i++)
		touch_start(&t[i], self->mem + (200 + i) * PAGE);

	sqe = io_uring_get_sqe(&ring);
	gmemuf_prep_fetch(sqe, hfd, faults, 64);
	io_uring_sqe_set_data64(sqe, 1);
	while (done < 8) {
		ASSERT_GE(io_uring_submit_and_wait(&ring, 1), 0);
		ASSERT_EQ(io_uring_peek_cqe(&ring, &cqe), 0);
		if (io_uring_cqe_get_data64(cqe) == 1) {
			n = gmemuf_fetch_result(cqe, 64);
			ASSERT_GT(n, 0) TH_LOG("%s", gmemuf_strerror(n));
			records += n;
			for (i = 0; i < n; i++) {
				uint64_t off = faults[i].offset;
				int k = off / PAGE - 200;

				ASSERT_TRUE(k >= 0 && k < 8);
				fill(pages[k], off, 1);
				sqe = io_uring_get_sqe(&ring);
				gmemuf_prep_populate(sqe, self->fd, off,
						     pages[k], 1);
				io_uring_sqe_set_data64(sqe, 2);
			}
			if (records < 8) {
				sqe = io_uring_get_sqe(&ring);
				gmemuf_prep_fetch(sqe, hfd, faults, 64);
				io_uring_sqe_set_data64(sqe, 1);
			}
		} else {
			EXPECT_EQ(gmemuf_populate_result(cqe), 1);
			done++;
		}
		io_uring_cqe_seen(&ring, cqe);
	}
	EXPECT_EQ(records, 8);
	for (i = 0; i < 8; i++) {
		pthread_join(t[i].thread, NULL);
		EXPECT_TRUE(holds(t[i].copy, (200 + i) * PAGE, 1));
	}

	/* From 207, present: none. From 210 with 211 present: one. */
	fill(pages[0], 210 * PAGE, 1);
	fill(pages[1], 211 * PAGE, 1);
	ASSERT_EQ(populate_gen(self->fd, 211 * PAGE, 2), 1);
	gmemuf_prep_populate(io_uring_get_sqe(&ring), self->fd, 207 * PAGE,
			     pages[0], 2);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_populate_result(&c), 0);
	gmemuf_prep_populate(io_uring_get_sqe(&ring), self->fd, 210 * PAGE,
			     pages[0], 2);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_populate_result(&c), 1);
	EXPECT_TRUE(holds(self->mem + 210 * PAGE, 210 * PAGE, 1));
	EXPECT_TRUE(holds(self->mem + 211 * PAGE, 211 * PAGE, 2));

	/* No pages, or no buffer: -EINVAL, not a present page. */
	gmemuf_prep_populate(io_uring_get_sqe(&ring), self->fd, 212 * PAGE,
			     pages[0], 0);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_populate_result(&c), -EINVAL);
	gmemuf_prep_populate(io_uring_get_sqe(&ring), self->fd, 212 * PAGE,
			     NULL, 1);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_populate_result(&c), -EINVAL);
	gmemuf_prep_populate(io_uring_get_sqe(&ring), self->fd, 212 * PAGE,
			     pages[0], 1u << 20);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_populate_result(&c), -EINVAL);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 212 * PAGE, PAGE), 1);

	/* A fetch sent to the guest_memfd rather than a handler file. */
	gmemuf_prep_fetch(io_uring_get_sqe(&ring), self->fd, faults, 64);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_fetch_result(&c, 64), -EOPNOTSUPP);

	fake.res = 5;
	EXPECT_EQ(gmemuf_fetch_result(&fake, 4), -EPROTO);
	fake.res = 0;
	EXPECT_EQ(gmemuf_fetch_result(&fake, 4), -EPROTO);
	fake.res = -ECANCELED;
	EXPECT_EQ(gmemuf_fetch_result(&fake, 4), -ECANCELED);
	fake.res = 4;
	EXPECT_EQ(gmemuf_fetch_result(&fake, 4), 4);

	io_uring_queue_exit(&ring);
	close(hfd);
}

/*
 * A ring of 128-byte SQEs: gmemuf_prep_fetch() fills 64 bytes, and the
 * kernel refuses a fetch whose other 64 are not 0, so the caller clears
 * the whole SQE first, as the header says.
 */
TEST_F(lib, fetch_in_a_ring_of_128_byte_sqes)
{
	struct gmemuf_fault faults[4];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe c;
	struct io_uring ring;
	struct toucher t;
	int hfd;

	if (!io_uring_usable())
		SKIP(return, "io_uring is disabled for this process");
	hfd = gmemuf_handler_open(self->fd);
	ASSERT_GE(hfd, 0);
	ASSERT_EQ(io_uring_queue_init(4, &ring, IORING_SETUP_SQE128), 0);

	sqe = io_uring_get_sqe(&ring);
	ASSERT_NE(sqe, NULL);
	memset(sqe, 0xa5, 2 * sizeof(*sqe));
	gmemuf_prep_fetch(sqe, hfd, faults, 4);
	submit_one(&ring, &c);
	EXPECT_EQ(gmemuf_fetch_result(&c, 4), -EINVAL);

	sqe = io_uring_get_sqe(&ring);
	ASSERT_NE(sqe, NULL);
	memset(sqe, 0, 2 * sizeof(*sqe));
	gmemuf_prep_fetch(sqe, hfd, faults, 4);
	touch_start(&t, self->mem + 230 * PAGE);
	submit_one(&ring, &c);
	ASSERT_EQ(gmemuf_fetch_result(&c, 4), 1);
	EXPECT_EQ(faults[0].offset, 230 * PAGE);
	EXPECT_EQ(populate_gen(self->fd, 230 * PAGE, 1), 1);
	pthread_join(t.thread, NULL);
	EXPECT_TRUE(holds(t.copy, 230 * PAGE, 1));
	io_uring_queue_exit(&ring);
	close(hfd);
}

/* What the prefetch callback was asked for. */
struct source {
	uint64_t asked[NPAGES];
	unsigned int nr_asked;
	unsigned int max_batch;
	unsigned int calls;
	int fail_after;		/* calls, or -1 */
};

static int give_pages(void *arg, const uint64_t *offsets, unsigned int nr,
		      void *buf)
{
	struct source *src = arg;
	unsigned int i;

	if (src->fail_after >= 0 && src->calls >= (unsigned int)src->fail_after)
		return -EIO;
	src->calls++;
	if (nr > src->max_batch)
		src->max_batch = nr;
	for (i = 0; i < nr; i++) {
		src->asked[src->nr_asked++ % NPAGES] = offsets[i];
		fill((char *)buf + i * PAGE, offsets[i], 1);
	}
	return 0;
}

TEST_F(lib, prefetch_in_order_skipping_present)
{
	static struct source src = { .fail_after = -1 };
	uint64_t order[40];
	unsigned int i, k = 0;

	/* Every other page of 0..79, backwards; 10..19 present already. */
	for (i = 0; i < 40; i++)
		order[i] = (78 - 2 * i) * PAGE;
	ASSERT_EQ(gmemuf_zero(self->fd, 10 * PAGE, 10 * PAGE), 10);

	EXPECT_EQ(gmemuf_prefetch(self->fd, order, 40, 4, give_pages, &src),
		  35);
	EXPECT_EQ(src.nr_asked, 35);
	EXPECT_LE(src.max_batch, 4);
	for (i = 0; i < 40; i++) {
		uint64_t off = order[i];

		if (off >= 10 * PAGE && off < 20 * PAGE) {
			EXPECT_TRUE(all_zero(self->mem + off));
			continue;
		}
		EXPECT_EQ(src.asked[k++], off);
		EXPECT_TRUE(holds(self->mem + off, off, 1));
	}
	/* Nothing left to ask for. */
	EXPECT_EQ(gmemuf_prefetch(self->fd, order, 40, 4, give_pages, &src),
		  0);
	EXPECT_EQ(src.nr_asked, 35);

	/* Errors: the callback's stops it after what was done. */
	src = (struct source){ .fail_after = 1 };
	order[0] = 100 * PAGE;
	order[1] = 101 * PAGE;
	EXPECT_EQ(gmemuf_prefetch(self->fd, order, 2, 1, give_pages, &src),
		  -EIO);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 100 * PAGE, 2 * PAGE), 1);
	order[0] = 100 * PAGE + 1;
	EXPECT_EQ(gmemuf_prefetch(self->fd, order, 1, 0, give_pages, &src),
		  -EINVAL);
	EXPECT_EQ(gmemuf_prefetch(self->fd, order, 1, GMEMUF_FETCH_MAX + 1,
				  give_pages, &src), -EINVAL);
}

/* A handler that populates synchronously, counting what it installed. */
static int serve_counting(struct gmemuf_handler *h, unsigned int queue,
			  const struct gmemuf_fault *faults, unsigned int nr,
			  void *arg)
{
	struct served *s = arg;
	char buf[GMEMUF_PAGE_SIZE];
	unsigned int i;
	int ret;

	for (i = 0; i < nr; i++) {
		fill(buf, faults[i].offset, 1);
		ret = gmemuf_populate(s->fd, faults[i].offset, buf);
		if (ret < 0)
			return ret;
		s->faults += ret;
	}
	return 0;
}

static void *serve_counting_fn(void *arg)
{
	struct runner *r = arg;

	r->ret = gmemuf_handler_run(r->h, r->queue, serve_counting, r->arg);
	return NULL;
}

/*
 * Prefetch of the whole file while threads fault on pages of it: every
 * page is installed once, by one or the other, and neither fails.
 */
TEST_F_TIMEOUT(lib, prefetch_alongside_demand_faults, HEAVY_TIMEOUT)
{
	static struct source src = { .fail_after = -1 };
	static uint64_t order[NPAGES];
	static struct toucher t[64];
	struct gmemuf_handler *h;
	struct served s = { .fd = self->fd };
	struct timespec t0;
	struct runner r;
	int64_t prefetched;
	int i;

	ASSERT_EQ(gmemuf_handler_create(self->fd, NULL, &h), 0);
	r = (struct runner){ .h = h, .queue = 0, .arg = &s };
	pthread_create(&r.thread, NULL, serve_counting_fn, &r);
	/* Faults where the prefetch ends; the prefetch goes from the start. */
	for (i = 0; i < 64; i++)
		touch_start(&t[i], self->mem + (NPAGES - 1 - 5 * i) * PAGE);
	for (i = 0; i < NPAGES; i++)
		order[i] = i * PAGE;
	/* Some faults served before the race starts, so that both count. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (s.faults < 8 && elapsed_ms(&t0) < 20000)
		usleep(1000);
	prefetched = gmemuf_prefetch(self->fd, order, NPAGES, 16, give_pages,
				     &src);
	for (i = 0; i < 64; i++) {
		pthread_join(t[i].thread, NULL);
		EXPECT_TRUE(holds(t[i].copy, (NPAGES - 1 - 5 * i) * PAGE, 1));
	}
	gmemuf_handler_stop(h);
	pthread_join(r.thread, NULL);
	EXPECT_EQ(r.ret, 0);
	gmemuf_handler_destroy(h);

	ASSERT_GE(prefetched, 0) TH_LOG("%s", gmemuf_strerror(prefetched));
	EXPECT_EQ(prefetched + s.faults, NPAGES);
	EXPECT_GT(s.faults, 0);
	EXPECT_GE(src.nr_asked, prefetched);
	EXPECT_EQ(gmemuf_count_missing(self->fd, 0, SIZE), 0);
	for (i = 0; i < NPAGES; i++)
		EXPECT_TRUE(holds(self->mem + i * PAGE, i * PAGE, 1))
			TH_LOG("page %d", i);
}

TEST_HARNESS_MAIN
