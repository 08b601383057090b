// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf_test: the userfault mode of guest_memfd, through its file: the
 * creation flag and feature probe, the missing bitmap, populate with
 * pwrite()/pwritev()/io_uring writes and GMEMUF_IOC_ZERO, arm, disarm and
 * wake, faults on a mapping of a missing page (user and kernel mode, the
 * capability rule), kill of a waiting task, hole punching, and the errno of
 * every bad input. Among them:
 *
 *   wait_queues_sized_to_the_file      each file's own wait queues, as many
 *                                      as its pages up to 256 (fdinfo)
 *   load.populates_wake_only_their_waiters
 *                                      a populate wakes its page's waiters
 *                                      alone, even where pages of one file,
 *                                      and of two, share a wait queue
 *   fault_injection_no_allocation_per_fault
 *                                      once the file's records have room, a
 *                                      fault posts its record with every
 *                                      slab allocation of its task failing
 *   arm_over_a_missing_page_keeps_its_record
 *                                      an arm leaves a missing page's
 *                                      record out the only one
 *   read_into_a_partly_writable_buffer a read gets the records that fit in
 *                                      the writable start of its buffer,
 *                                      and the rest stay pending
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>
#include <poll.h>
#include <sys/capability.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <linux/falloc.h>
#include <linux/gmemuf.h>
#include <linux/kvm.h>

#include "kselftest_harness.h"

#define PAGE		4096UL
#define NPAGES		64UL
#define SIZE		(NPAGES * PAGE)

static int kvm_fd = -1;

static int create_vm(void)
{
	if (kvm_fd < 0)
		kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		return -1;
	return ioctl(kvm_fd, KVM_CREATE_VM, 0);
}

static int create_gmem(int vm, __u64 size, __u64 flags)
{
	struct kvm_create_guest_memfd args = { .size = size, .flags = flags };

	return ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
}

#define UF_FLAGS (GUEST_MEMFD_FLAG_USERFAULT | GUEST_MEMFD_FLAG_MMAP | \
		  GUEST_MEMFD_FLAG_INIT_SHARED)

/* A VM, a userfault guest_memfd of it, and a shared mapping of the file. */
struct uf_file {
	int vm;
	int fd;
	char *mem;
	size_t size;
};

static int uf_open(struct uf_file *f, size_t size)
{
	f->size = size;
	f->vm = create_vm();
	if (f->vm < 0)
		return -1;
	f->fd = create_gmem(f->vm, size, UF_FLAGS);
	if (f->fd < 0)
		return -1;
	f->mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd,
		      0);
	return f->mem == MAP_FAILED ? -1 : 0;
}

static void uf_close(struct uf_file *f)
{
	munmap(f->mem, f->size);
	close(f->fd);
	close(f->vm);
}

static int range_ioctl(int fd, unsigned long ioctl_nr, __u64 offset,
		       __u64 len, __u64 *done)
{
	struct gmemuf_range r = { .offset = offset, .len = len };
	int ret = ioctl(fd, ioctl_nr, &r);

	if (done)
		*done = r.done;
	return ret;
}

static __u64 count_missing(int fd, __u64 offset, __u64 len, __u64 *bitmap)
{
	struct gmemuf_bitmap b = {
		.offset = offset, .len = len, .bitmap = (__u64)(uintptr_t)bitmap,
	};

	if (ioctl(fd, GMEMUF_IOC_GET_BITMAP, &b))
		return (__u64)-1;
	return b.missing;
}

static void fill(void *buf, size_t len, unsigned int seed)
{
	unsigned int *p = buf;
	size_t i;

	for (i = 0; i < len / sizeof(*p); i++)
		p[i] = seed * 2654435761u + i;
}

static bool check(const void *buf, size_t len, unsigned int seed)
{
	const unsigned int *p = buf;
	size_t i;

	for (i = 0; i < len / sizeof(*p); i++)
		if (p[i] != seed * 2654435761u + i)
			return false;
	return true;
}

static bool all_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* An address where nothing is mapped. */
static void *unmapped_page(void)
{
	void *p = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	munmap(p, PAGE);
	return p;
}

/* A "name:\tvalue" line of /proc/self/fdinfo/@fd, or -1 if it has none. */
static long fdinfo_field(int fd, const char *name)
{
	char path[64], line[256];
	size_t len = strlen(name);
	long value = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, len) && line[len] == ':')
			value = strtol(line + len + 1, NULL, 10);
	fclose(f);
	return value;
}

static ssize_t populate(int fd, unsigned long page, unsigned int seed)
{
	static __thread char buf[PAGE];

	fill(buf, PAGE, seed);
	return pwrite(fd, buf, PAGE, page * PAGE);
}

/*
 * Wait until the task of /proc/@stat sleeps, which for the tasks of these
 * tests means that it waits for a missing page. Bounded: 20 s.
 */
static bool stat_sleeping(const char *path)
{
	char buf[512], *p;
	int i, fd;
	ssize_t n;

	for (i = 0; i < 20000; i++) {
		fd = open(path, O_RDONLY);
		if (fd < 0)
			return false;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			return false;
		buf[n] = 0;
		p = strrchr(buf, ')');
		if (p && (p[2] == 'S' || p[2] == 'D'))
			return true;
		usleep(1000);
	}
	return false;
}

/* A thread of this process. */
static bool wait_sleeping(pid_t tid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	return stat_sleeping(path);
}

/* A child process. */
static bool child_sleeping(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	return stat_sleeping(path);
}

/* A thread that reads, or writes to a pipe from, a page of a mapping. */
struct toucher {
	pthread_t thread;
	_Atomic pid_t tid;
	void *addr;
	bool via_kernel;	/* write(pipe, addr) instead of a load */
	int pipe[2];
	unsigned char copy[PAGE];
	ssize_t result;
	int err;
};

static void *toucher_fn(void *arg)
{
	struct toucher *t = arg;

	t->tid = gettid();
	if (t->via_kernel) {
		t->result = write(t->pipe[1], t->addr, PAGE);
		t->err = errno;
	} else {
		memcpy(t->copy, t->addr, PAGE);
		t->result = PAGE;
	}
	return NULL;
}

/*
 * Start a thread running @fn(@arg) that touches @addr as @t says, and wait
 * until it has set its tid.
 */
static void toucher_run(struct toucher *t, void *addr, bool via_kernel,
			void *(*fn)(void *), void *arg)
{
	memset(t, 0, sizeof(*t));
	t->addr = addr;
	t->via_kernel = via_kernel;
	if (via_kernel && pipe2(t->pipe, 0))
		abort();
	if (via_kernel)
		fcntl(t->pipe[1], F_SETPIPE_SZ, 2 * PAGE);
	pthread_create(&t->thread, NULL, fn, arg);
	while (!t->tid)
		usleep(100);
}

static void toucher_start(struct toucher *t, void *addr, bool via_kernel)
{
	toucher_run(t, addr, via_kernel, toucher_fn, t);
}

static void toucher_join(struct toucher *t)
{
	pthread_join(t->thread, NULL);
	if (t->via_kernel && t->result == PAGE &&
	    read(t->pipe[0], t->copy, PAGE) != PAGE)
		t->result = -1;
	if (t->via_kernel) {
		close(t->pipe[0]);
		close(t->pipe[1]);
	}
}


/* A handler: its handler file and an io_uring to fetch faults with. */
struct handler {
	int fd;
	struct io_uring ring;
	struct gmemuf_fault faults[GMEMUF_FETCH_MAX];
};

static int handler_open(struct handler *h, int gmem)
{
	h->fd = ioctl(gmem, GMEMUF_IOC_HANDLER, 0);
	if (h->fd < 0)
		return -errno;
	return io_uring_queue_init(16, &h->ring, 0);
}

static void handler_close(struct handler *h)
{
	io_uring_queue_exit(&h->ring);
	close(h->fd);
}

static void prep_fetch(struct io_uring_sqe *sqe, int fd, __u64 addr,
		       __u32 nr, __u32 flags)
{
	struct gmemuf_fetch fetch = { .addr = addr, .nr = nr, .flags = flags };

	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
	sqe->cmd_op = GMEMUF_CMD_FETCH;
	memcpy(sqe->cmd, &fetch, sizeof(fetch));
}

static int handler_fetch(struct handler *h, __u32 nr)
{
	prep_fetch(io_uring_get_sqe(&h->ring), h->fd,
		   (__u64)(uintptr_t)h->faults, nr, 0);
	return io_uring_submit(&h->ring) == 1 ? 0 : -1;
}

/* The result of the next completion, or -ETIME after @ms. */
static int handler_wait(struct handler *h, int ms)
{
	struct __kernel_timespec ts = { .tv_sec = ms / 1000,
					.tv_nsec = (ms % 1000) * 1000000L };
	struct io_uring_cqe *cqe;
	int r;

	r = io_uring_wait_cqe_timeout(&h->ring, &cqe, &ts);
	if (r)
		return r;
	r = cqe->res;
	io_uring_cqe_seen(&h->ring, cqe);
	return r;
}

/* Serve faults on @gmem until @stop: populate each page with its seed. */
struct server {
	pthread_t thread;
	int gmem;
	_Atomic bool stop;
	_Atomic unsigned long faults;
	_Atomic int error;
};

static void *server_fn(void *arg)
{
	struct server *srv = arg;
	struct handler h;
	int n, i;

	if (handler_open(&h, srv->gmem)) {
		srv->error = errno;
		return NULL;
	}
	handler_fetch(&h, 64);
	while (!srv->stop) {
		n = handler_wait(&h, 50);
		if (n == -ETIME)
			continue;
		if (n <= 0) {
			srv->error = -n;
			break;
		}
		for (i = 0; i < n; i++) {
			unsigned long page = h.faults[i].offset / PAGE;

			if (populate(srv->gmem, page, page) != PAGE &&
			    errno != EEXIST)
				srv->error = errno;
		}
		srv->faults += n;
		handler_fetch(&h, 64);
	}
	handler_close(&h);
	return NULL;
}

static void server_start(struct server *srv, int gmem)
{
	memset(srv, 0, sizeof(*srv));
	srv->gmem = gmem;
	pthread_create(&srv->thread, NULL, server_fn, srv);
}

static void server_stop(struct server *srv)
{
	srv->stop = true;
	pthread_join(srv->thread, NULL);
}

FIXTURE(uf) {
	struct uf_file f;
	int vm;
	int fd;
	char *mem;
};

FIXTURE_SETUP(uf)
{
	ASSERT_EQ(uf_open(&self->f, SIZE), 0) TH_LOG("%s", strerror(errno));
	self->vm = self->f.vm;
	self->fd = self->f.fd;
	self->mem = self->f.mem;
}

FIXTURE_TEARDOWN(uf)
{
	uf_close(&self->f);
}

TEST(probe)
{
	/* The VM types that offer it (x86), and /dev/kvm itself. */
	static const unsigned long types[] = {
		KVM_X86_DEFAULT_VM, KVM_X86_SW_PROTECTED_VM,
	};
	const int all = GMEMUF_FEATURE_MMAP_FAULT | GMEMUF_FEATURE_POPULATE |
			GMEMUF_FEATURE_URING_FETCH | GMEMUF_FEATURE_VCPU_WAIT |
			GMEMUF_FEATURE_VCPU_EXIT | GMEMUF_FEATURE_READ |
			GMEMUF_FEATURE_GMEM_READ;
	unsigned int i;

	for (i = 0; i <= ARRAY_SIZE(types); i++) {
		int fd;

		if (kvm_fd < 0)
			kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
		ASSERT_GE(kvm_fd, 0);
		if (i < ARRAY_SIZE(types)) {
			fd = ioctl(kvm_fd, KVM_CREATE_VM, types[i]);
			ASSERT_GE(fd, 0) TH_LOG("type %lu: %s", types[i],
						strerror(errno));
		} else {
			fd = kvm_fd;
		}
		EXPECT_EQ(ioctl(fd, KVM_CHECK_EXTENSION,
				KVM_CAP_GUEST_MEMFD_FLAGS) &
			  (GUEST_MEMFD_FLAG_USERFAULT |
			   GUEST_MEMFD_FLAG_USERFAULT_EXIT),
			  GUEST_MEMFD_FLAG_USERFAULT |
			  GUEST_MEMFD_FLAG_USERFAULT_EXIT);
		/* This is x86: the vCPU side is there too. */
		EXPECT_EQ(ioctl(fd, KVM_CHECK_EXTENSION,
				KVM_CAP_GUEST_MEMFD_USERFAULT), all)
			TH_LOG("type %u of %zu", i, ARRAY_SIZE(types));
		if (fd != kvm_fd)
			close(fd);
	}
}

/* The exit flag alone makes a userfault guest_memfd: it implies the mode. */
TEST(exit_flag_implies_userfault)
{
	struct gmemuf_bitmap b = { .offset = 0, .len = 4 * PAGE };
	int vm = create_vm(), fd;

	ASSERT_GE(vm, 0);
	fd = create_gmem(vm, 4 * PAGE, GUEST_MEMFD_FLAG_USERFAULT_EXIT);
	ASSERT_GE(fd, 0) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(ioctl(fd, GMEMUF_IOC_GET_BITMAP, &b), 0);
	EXPECT_EQ(b.missing, 4);
	close(fd);
	close(vm);
}

TEST_F(uf, starts_missing)
{
	__u64 bitmap[2] = { 0, 0 };

	EXPECT_EQ(count_missing(self->fd, 0, SIZE, bitmap), NPAGES);
	EXPECT_EQ(bitmap[0], ~0ULL);
	/* A range not a multiple of 64 pages: the bits past it are clear. */
	EXPECT_EQ(count_missing(self->fd, PAGE, 3 * PAGE, bitmap), 3);
	EXPECT_EQ(bitmap[0], 7ULL);
	/* bitmap == 0 only counts. */
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, NULL), NPAGES);
}

TEST_F(uf, pwrite_populates_once)
{
	__u64 bitmap = 0;
	char buf[PAGE];

	EXPECT_EQ(populate(self->fd, 3, 3), PAGE);
	EXPECT_TRUE(check(self->mem + 3 * PAGE, PAGE, 3));
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, &bitmap), NPAGES - 1);
	EXPECT_EQ(bitmap, ~(1ULL << 3));

	/* Present: EEXIST, and the page keeps its contents. */
	EXPECT_EQ(populate(self->fd, 3, 99), -1);
	EXPECT_EQ(errno, EEXIST);
	EXPECT_TRUE(check(self->mem + 3 * PAGE, PAGE, 3));

	/* Not page aligned, or past the end: EINVAL. */
	fill(buf, PAGE, 1);
	EXPECT_EQ(pwrite(self->fd, buf, PAGE, 100), -1);
	EXPECT_EQ(errno, EINVAL);
	EXPECT_EQ(pwrite(self->fd, buf, 100, 0), -1);
	EXPECT_EQ(errno, EINVAL);
	EXPECT_EQ(pwrite(self->fd, buf, PAGE, SIZE), -1);
	EXPECT_EQ(errno, EINVAL);
	/* A source that cannot be read: EFAULT, and the page stays missing. */
	EXPECT_EQ(pwrite(self->fd, unmapped_page(), PAGE, 0), -1);
	EXPECT_EQ(errno, EFAULT);
	EXPECT_EQ(count_missing(self->fd, 0, PAGE, NULL), 1);
}

TEST_F(uf, pwritev_short_at_present_page)
{
	static char bufs[4][PAGE];
	struct iovec iov[4];
	int i;

	for (i = 0; i < 4; i++) {
		fill(bufs[i], PAGE, 10 + i);
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = PAGE;
	}
	/* Page 12 present: a write of 10..13 stops after 10 and 11. */
	ASSERT_EQ(populate(self->fd, 12, 7), PAGE);
	EXPECT_EQ(pwritev(self->fd, iov, 4, 10 * PAGE), 2 * PAGE);
	EXPECT_TRUE(check(self->mem + 10 * PAGE, PAGE, 10));
	EXPECT_TRUE(check(self->mem + 11 * PAGE, PAGE, 11));
	EXPECT_TRUE(check(self->mem + 12 * PAGE, PAGE, 7));
	EXPECT_EQ(count_missing(self->fd, 13 * PAGE, PAGE, NULL), 1);
}

TEST_F(uf, io_uring_writes)
{
	static char bufs[3][PAGE];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	struct iovec iov[2];
	int i;

	ASSERT_EQ(io_uring_queue_init(8, &ring, 0), 0);
	for (i = 0; i < 3; i++)
		fill(bufs[i], PAGE, 20 + i);
	iov[0].iov_base = bufs[1];
	iov[0].iov_len = PAGE;
	iov[1].iov_base = bufs[2];
	iov[1].iov_len = PAGE;
	ASSERT_EQ(io_uring_register_buffers(&ring, iov, 1), 0);

	/* WRITE, WRITEV of two pages, WRITE_FIXED, then WRITE again: EEXIST. */
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_write(sqe, self->fd, bufs[0], PAGE, 20 * PAGE);
	sqe->user_data = PAGE;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_writev(sqe, self->fd, iov, 2, 21 * PAGE);
	sqe->user_data = 2 * PAGE;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_write_fixed(sqe, self->fd, bufs[1], PAGE, 30 * PAGE, 0);
	sqe->user_data = PAGE;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_write(sqe, self->fd, bufs[0], PAGE, 20 * PAGE);
	sqe->flags |= IOSQE_IO_DRAIN;
	sqe->user_data = -EEXIST;
	ASSERT_EQ(io_uring_submit(&ring), 4);

	for (i = 0; i < 4; i++) {
		ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
		EXPECT_EQ(cqe->res, (int)cqe->user_data);
		io_uring_cqe_seen(&ring, cqe);
	}
	EXPECT_TRUE(check(self->mem + 20 * PAGE, PAGE, 20));
	EXPECT_TRUE(check(self->mem + 21 * PAGE, PAGE, 21));
	EXPECT_TRUE(check(self->mem + 22 * PAGE, PAGE, 22));
	EXPECT_TRUE(check(self->mem + 30 * PAGE, PAGE, 21));
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, NULL), NPAGES - 4);
	io_uring_queue_exit(&ring);
}

/* The io_uring workers (io-wq) of this process. */
static int count_iou_workers(void)
{
	char path[300], comm[32];
	struct dirent *d;
	int n = 0;
	DIR *dir;
	FILE *f;

	dir = opendir("/proc/self/task");
	if (!dir)
		return -1;
	while ((d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) &&
		    !strncmp(comm, "iou-wrk-", 8))
			n++;
		fclose(f);
	}
	closedir(dir);
	return n;
}

/*
 * io_uring WRITEs to a userfault guest_memfd complete inline, in
 * io_uring_enter(), with no io-wq worker: the file supports IOCB_NOWAIT.
 * Their completions are there when io_uring_submit() returns.
 */
TEST_F(uf, io_uring_writes_complete_inline)
{
	const unsigned int nr = 16;
	static char bufs[16][PAGE], runs[4][4 * PAGE];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	unsigned int i;

	ASSERT_EQ(count_iou_workers(), 0);
	ASSERT_EQ(io_uring_queue_init(32, &ring, 0), 0);

	/* Sixteen single pages, then four writes of four pages each. */
	for (i = 0; i < nr; i++) {
		fill(bufs[i], PAGE, i);
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_write(sqe, self->fd, bufs[i], PAGE, i * PAGE);
		sqe->user_data = i;
	}
	ASSERT_EQ(io_uring_submit(&ring), nr);
	EXPECT_EQ(io_uring_cq_ready(&ring), nr);
	for (i = 0; i < 16; i++)
		fill(runs[i / 4] + (i % 4) * PAGE, PAGE, 32 + i);
	for (i = 0; i < 4; i++) {
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_write(sqe, self->fd, runs[i], 4 * PAGE,
				    (32 + 4 * i) * PAGE);
		sqe->user_data = 100 + i;
	}
	ASSERT_EQ(io_uring_submit(&ring), 4);
	EXPECT_EQ(io_uring_cq_ready(&ring), nr + 4);

	for (i = 0; i < nr + 4; i++) {
		ASSERT_EQ(io_uring_peek_cqe(&ring, &cqe), 0);
		EXPECT_EQ(cqe->res, cqe->user_data < 100 ? (int)PAGE :
							   (int)(4 * PAGE))
			TH_LOG("write %llu", cqe->user_data);
		io_uring_cqe_seen(&ring, cqe);
	}
	EXPECT_EQ(count_iou_workers(), 0);
	for (i = 0; i < nr; i++)
		EXPECT_TRUE(check(self->mem + i * PAGE, PAGE, i));
	for (i = 32; i < 48; i++)
		EXPECT_TRUE(check(self->mem + i * PAGE, PAGE, i));
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, NULL), NPAGES - nr - 16);
	io_uring_queue_exit(&ring);
}

/* pwritev2(RWF_NOWAIT) populates a missing page, and gives EEXIST after. */
TEST_F(uf, pwritev2_nowait)
{
	static char buf[PAGE];
	struct iovec iov = { .iov_base = buf, .iov_len = PAGE };

	fill(buf, PAGE, 9);
	EXPECT_EQ(pwritev2(self->fd, &iov, 1, 9 * PAGE, RWF_NOWAIT), PAGE);
	EXPECT_TRUE(check(self->mem + 9 * PAGE, PAGE, 9));
	EXPECT_EQ(pwritev2(self->fd, &iov, 1, 9 * PAGE, RWF_NOWAIT), -1);
	EXPECT_EQ(errno, EEXIST);
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, NULL), NPAGES - 1);
}

TEST_F(uf, zero_fill)
{
	__u64 done;

	ASSERT_EQ(populate(self->fd, 6, 6), PAGE);
	EXPECT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ZERO, 4 * PAGE, 4 * PAGE,
			      &done), 0);
	EXPECT_EQ(done, 2 * PAGE);
	EXPECT_TRUE(all_zero(self->mem + 4 * PAGE, 2 * PAGE));
	EXPECT_TRUE(check(self->mem + 6 * PAGE, PAGE, 6));
	EXPECT_EQ(count_missing(self->fd, 4 * PAGE, 4 * PAGE, NULL), 1);

	EXPECT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ZERO, 6 * PAGE, PAGE,
			      &done), -1);
	EXPECT_EQ(errno, EEXIST);
	EXPECT_EQ(done, 0);
}

/* A fault on @page is fetched by @h, populated, and seen. */
static void fault_served_by(struct __test_metadata *_metadata,
			    struct uf_file *f, struct handler *h,
			    unsigned long page)
{
	struct toucher t;

	toucher_start(&t, f->mem + page * PAGE, false);
	ASSERT_EQ(handler_fetch(h, 16), 0);
	ASSERT_EQ(handler_wait(h, 10000), 1);
	EXPECT_EQ(h->faults[0].offset, page * PAGE);
	ASSERT_EQ(populate(f->fd, page, page), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, page));
}

/* A fault on @page waits until it is populated, then sees the contents. */
static void fault_waits_for_populate(struct __test_metadata *_metadata,
				     struct uf_file *f, unsigned long page,
				     bool via_kernel)
{
	struct toucher t;

	toucher_start(&t, f->mem + page * PAGE, via_kernel);
	ASSERT_TRUE(wait_sleeping(t.tid));
	ASSERT_EQ(populate(f->fd, page, page), PAGE);
	toucher_join(&t);
	EXPECT_EQ(t.result, PAGE) TH_LOG("%s", strerror(t.err));
	EXPECT_TRUE(check(t.copy, PAGE, page));
}

TEST_F(uf, mmap_fault_waits_for_populate)
{
	fault_waits_for_populate(_metadata, &self->f, 5, false);
}

TEST_F(uf, kernel_fault_waits_with_cap_sys_ptrace)
{
	fault_waits_for_populate(_metadata, &self->f, 9, true);
}

static int drop_cap_sys_ptrace(void)
{
	cap_value_t v = CAP_SYS_PTRACE;
	cap_t caps = cap_get_proc();
	int r;

	if (!caps)
		return -1;
	r = cap_set_flag(caps, CAP_EFFECTIVE, 1, &v, CAP_CLEAR) ?:
	    cap_set_proc(caps);
	cap_free(caps);
	return r;
}

static int set_unprivileged_userfaultfd(int value)
{
	int fd = open("/proc/sys/vm/unprivileged_userfaultfd", O_WRONLY);
	char c = '0' + value;
	int r;

	if (fd < 0)
		return -1;
	r = write(fd, &c, 1) == 1 ? 0 : -1;
	close(fd);
	return r;
}

/*
 * The rule is applied when the file is created: without CAP_SYS_PTRACE, and
 * with vm.unprivileged_userfaultfd 0, kernel faults fail at once with
 * EFAULT, user faults still wait; with the sysctl 1 kernel faults wait.
 * Each case in a child, since dropping the capability cannot be undone.
 */
static void kernel_fault_rule(struct __test_metadata *_metadata, int sysctl)
{
	pid_t pid;
	int status;

	ASSERT_EQ(set_unprivileged_userfaultfd(sysctl), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct toucher t;
		struct uf_file f;
		char *mem;
		int fd;

		if (drop_cap_sys_ptrace())
			_exit(10);
		if (uf_open(&f, SIZE))
			_exit(11);
		fd = f.fd;
		mem = f.mem;

		toucher_start(&t, mem, true);
		if (!sysctl) {
			toucher_join(&t);
			if (t.result != -1 || t.err != EFAULT)
				_exit(12);
		} else {
			if (!wait_sleeping(t.tid) || populate(fd, 0, 1) != PAGE)
				_exit(13);
			toucher_join(&t);
			if (t.result != PAGE || !check(t.copy, PAGE, 1))
				_exit(14);
		}
		/* User-mode faults wait either way. */
		toucher_start(&t, mem + PAGE, false);
		if (!wait_sleeping(t.tid) || populate(fd, 1, 2) != PAGE)
			_exit(15);
		toucher_join(&t);
		_exit(check(t.copy, PAGE, 2) ? 0 : 16);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	set_unprivileged_userfaultfd(0);
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(kernel_fault_efault_without_cap_sys_ptrace)
{
	kernel_fault_rule(_metadata, 0);
}

TEST(kernel_fault_waits_with_unprivileged_userfaultfd)
{
	kernel_fault_rule(_metadata, 1);
}

TEST_F(uf, arm_zaps_and_refaults)
{
	struct toucher t;

	ASSERT_EQ(populate(self->fd, 2, 2), PAGE);
	ASSERT_TRUE(check(self->mem + 2 * PAGE, PAGE, 2));	/* mapped now */

	ASSERT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ARM, 2 * PAGE, PAGE, NULL),
		  0);
	EXPECT_EQ(count_missing(self->fd, 2 * PAGE, PAGE, NULL), 1);

	/* The old mapping is gone: the access waits for the new contents. */
	toucher_start(&t, self->mem + 2 * PAGE, false);
	ASSERT_TRUE(wait_sleeping(t.tid));
	ASSERT_EQ(populate(self->fd, 2, 22), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 22));
}

/*
 * Faults resolved with no handler attached (a VMM that populates on its
 * memory fault exits does so) leave no record behind across arms: one is
 * pending at a time, not one for every fault ever taken.
 */
TEST_F(uf, arms_leave_no_resolved_records)
{
	struct toucher t;
	int i;

	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_handlers"), 0);
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 0);
	for (i = 0; i < 20; i++) {
		if (i)
			ASSERT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ARM,
					      3 * PAGE, PAGE, NULL), 0);
		toucher_start(&t, self->mem + 3 * PAGE, false);
		ASSERT_TRUE(wait_sleeping(t.tid));
		EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 1)
			TH_LOG("after %d arms", i);
		ASSERT_EQ(populate(self->fd, 3, 100 + i), PAGE);
		toucher_join(&t);
		EXPECT_TRUE(check(t.copy, PAGE, 100 + i));
	}
}

/*
 * An arm over a missing page whose record is out, delivered and not yet
 * acted on, leaves that record the only one: a second fault on the page
 * posts nothing, and the populate the handler makes for the first record
 * ends both faults.
 */
TEST_F(uf, arm_over_a_missing_page_keeps_its_record)
{
	struct toucher t[2];
	struct handler h;

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	toucher_start(&t[0], self->mem + 5 * PAGE, false);
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 60000), 1);
	EXPECT_EQ(h.faults[0].offset, 5 * PAGE);
	ASSERT_TRUE(wait_sleeping(t[0].tid));

	ASSERT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ARM, 0, 16 * PAGE, NULL), 0);
	toucher_start(&t[1], self->mem + 5 * PAGE, false);
	ASSERT_TRUE(wait_sleeping(t[1].tid));
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 0);
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	EXPECT_EQ(handler_wait(&h, 300), -ETIME);

	ASSERT_EQ(populate(self->fd, 5, 5), PAGE);
	toucher_join(&t[0]);
	toucher_join(&t[1]);
	EXPECT_TRUE(check(t[0].copy, PAGE, 5));
	EXPECT_TRUE(check(t[1].copy, PAGE, 5));
	handler_close(&h);
}

TEST_F(uf, disarm_releases_waiters_with_zeroes)
{
	struct toucher t;

	toucher_start(&t, self->mem + 7 * PAGE, false);
	ASSERT_TRUE(wait_sleeping(t.tid));
	ASSERT_EQ(range_ioctl(self->fd, GMEMUF_IOC_DISARM, 0, SIZE, NULL), 0);
	toucher_join(&t);
	EXPECT_TRUE(all_zero(t.copy, PAGE));
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, NULL), 0);
	/* Present now, populated or not. */
	EXPECT_EQ(populate(self->fd, 8, 8), -1);
	EXPECT_EQ(errno, EEXIST);
}

TEST_F(uf, wake_does_not_release)
{
	struct toucher t;

	toucher_start(&t, self->mem + 11 * PAGE, false);
	ASSERT_TRUE(wait_sleeping(t.tid));
	ASSERT_EQ(range_ioctl(self->fd, GMEMUF_IOC_WAKE, 0, SIZE, NULL), 0);
	/* Woken, it finds the page missing and waits again. */
	usleep(100000);
	ASSERT_TRUE(wait_sleeping(t.tid));
	EXPECT_EQ(count_missing(self->fd, 11 * PAGE, PAGE, NULL), 1);
	ASSERT_EQ(populate(self->fd, 11, 11), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 11));
}

TEST_F(uf, sigkill_of_a_waiting_task)
{
	int status;
	pid_t pid;

	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		volatile char c = self->mem[13 * PAGE];

		(void)c;
		_exit(0);
	}
	ASSERT_TRUE(child_sleeping(pid));
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status));
	EXPECT_EQ(WTERMSIG(status), SIGKILL);
	EXPECT_EQ(count_missing(self->fd, 13 * PAGE, PAGE, NULL), 1);
}

static void sig_nop(int sig)
{
}

static long long thread_cpu_ns(pthread_t thread)
{
	struct timespec ts;
	clockid_t clock;

	if (pthread_getcpuclockid(thread, &clock) ||
	    clock_gettime(clock, &ts))
		return -1;
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * A kernel-mode fault that waits for a missing page, in a task that then
 * gets a signal it handles: the fault cannot return to userspace to run the
 * handler, so it goes on waiting, asleep. A wait that ends at every signal
 * would be retried at once by the arch fault handler, over and over: a
 * task spinning at 100% of a CPU until the page comes.
 */
TEST_F(uf, kernel_fault_sleeps_through_a_signal)
{
	struct sigaction sa = { .sa_handler = sig_nop };
	long long before, after;
	struct toucher t;

	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	toucher_start(&t, self->mem + 15 * PAGE, true);
	ASSERT_TRUE(wait_sleeping(t.tid));
	ASSERT_EQ(pthread_kill(t.thread, SIGUSR1), 0);
	usleep(100 * 1000);
	before = thread_cpu_ns(t.thread);
	ASSERT_GE(before, 0);
	sleep(3);
	after = thread_cpu_ns(t.thread);
	/* Asleep, it takes next to nothing; spinning, most of the 3 s. */
	EXPECT_LT(after - before, 300 * 1000000LL)
		TH_LOG("the waiting task took %lld ms of CPU in 3 s",
		       (after - before) / 1000000);
	ASSERT_EQ(populate(self->fd, 15, 15), PAGE);
	toucher_join(&t);
	EXPECT_EQ(t.result, PAGE) TH_LOG("%s", strerror(t.err));
	EXPECT_TRUE(check(t.copy, PAGE, 15));
}

TEST_F(uf, punch_hole)
{
	/* A present page punched stays present, and reads zeroes. */
	ASSERT_EQ(populate(self->fd, 1, 1), PAGE);
	ASSERT_EQ(fallocate(self->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    PAGE, PAGE), 0);
	EXPECT_EQ(count_missing(self->fd, PAGE, PAGE, NULL), 0);
	EXPECT_TRUE(all_zero(self->mem + PAGE, PAGE));

	/* A missing page punched stays missing, and can be populated. */
	ASSERT_EQ(fallocate(self->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    2 * PAGE, PAGE), 0);
	EXPECT_EQ(count_missing(self->fd, 2 * PAGE, PAGE, NULL), 1);
	EXPECT_EQ(populate(self->fd, 2, 2), PAGE);
	EXPECT_TRUE(check(self->mem + 2 * PAGE, PAGE, 2));
}

/*
 * pread(), preadv(), read() and io_uring's READ give a page's contents; a
 * hole reads as zeroes; a missing page has none: the read stops before it,
 * or fails with ENODATA if it is the first, and posts no fault.
 */
TEST_F(uf, pread_reads_present_pages)
{
	static char buf[4 * PAGE];
	struct iovec iov[2] = {
		{ .iov_base = buf, .iov_len = PAGE },
		{ .iov_base = buf + PAGE, .iov_len = PAGE },
	};
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	int plain;
	char *m;

	ASSERT_EQ(populate(self->fd, 1, 11), PAGE);
	ASSERT_EQ(populate(self->fd, 2, 12), PAGE);

	EXPECT_EQ(pread(self->fd, buf, 2 * PAGE, PAGE), 2 * PAGE);
	EXPECT_TRUE(check(buf, PAGE, 11));
	EXPECT_TRUE(check(buf + PAGE, PAGE, 12));
	EXPECT_EQ(preadv(self->fd, iov, 2, PAGE), 2 * PAGE);
	EXPECT_TRUE(check(buf, PAGE, 11));
	EXPECT_TRUE(check(buf + PAGE, PAGE, 12));

	/* Page 3 is missing: a short read; page 0 is: ENODATA. */
	memset(buf, 0xaa, sizeof(buf));
	EXPECT_EQ(pread(self->fd, buf, 4 * PAGE, PAGE), 2 * PAGE);
	EXPECT_TRUE(check(buf + PAGE, PAGE, 12));
	EXPECT_EQ(pread(self->fd, buf, 2 * PAGE, 0), -1);
	EXPECT_EQ(errno, ENODATA);
	/* Reading a missing page neither waits nor posts a fault. */
	EXPECT_EQ(count_missing(self->fd, 0, PAGE, NULL), 1);
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 0);
	/* read() at the file position, 0: page 0 is missing. */
	EXPECT_EQ(read(self->fd, buf, PAGE), -1);
	EXPECT_EQ(errno, ENODATA);

	/* io_uring's READ, at an offset. */
	ASSERT_EQ(io_uring_queue_init(2, &ring, 0), 0);
	memset(buf, 0xaa, sizeof(buf));
	io_uring_prep_read(io_uring_get_sqe(&ring), self->fd, buf, 2 * PAGE,
			   PAGE);
	ASSERT_EQ(io_uring_submit(&ring), 1);
	ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
	EXPECT_EQ(cqe->res, 2 * PAGE);
	io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
	EXPECT_TRUE(check(buf, PAGE, 11));
	EXPECT_TRUE(check(buf + PAGE, PAGE, 12));

	/* Zeroed and punched pages read as zeroes. */
	ASSERT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ZERO, 4 * PAGE, PAGE, NULL),
		  0);
	ASSERT_EQ(fallocate(self->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    2 * PAGE, PAGE), 0);
	memset(buf, 0xaa, sizeof(buf));
	EXPECT_EQ(pread(self->fd, buf, PAGE, 4 * PAGE), PAGE);
	EXPECT_TRUE(all_zero(buf, PAGE));
	EXPECT_EQ(pread(self->fd, buf, PAGE, 2 * PAGE), PAGE);
	EXPECT_TRUE(all_zero(buf, PAGE));

	/* Unaligned: EINVAL; at or past the end: 0; a bad buffer: EFAULT. */
	EXPECT_EQ(pread(self->fd, buf, PAGE, 100), -1);
	EXPECT_EQ(errno, EINVAL);
	EXPECT_EQ(pread(self->fd, buf, 100, PAGE), -1);
	EXPECT_EQ(errno, EINVAL);
	EXPECT_EQ(pread(self->fd, buf, PAGE, SIZE), 0);
	EXPECT_EQ(pread(self->fd, buf, 2 * PAGE, SIZE - PAGE), -1);
	EXPECT_EQ(errno, ENODATA);
	EXPECT_EQ(pread(self->fd, unmapped_page(), PAGE, PAGE), -1);
	EXPECT_EQ(errno, EFAULT);

	/*
	 * A guest_memfd without the userfault mode: what was written through
	 * its mapping, and zeroes where nothing was.
	 */
	plain = create_gmem(self->vm, 2 * PAGE, GUEST_MEMFD_FLAG_MMAP |
			    GUEST_MEMFD_FLAG_INIT_SHARED);
	ASSERT_GE(plain, 0) TH_LOG("%s", strerror(errno));
	m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, plain, 0);
	ASSERT_NE(m, MAP_FAILED);
	fill(m + PAGE, PAGE, 21);
	memset(buf, 0xaa, sizeof(buf));
	EXPECT_EQ(pread(plain, buf, 2 * PAGE, 0), 2 * PAGE);
	EXPECT_TRUE(all_zero(buf, PAGE));
	EXPECT_TRUE(check(buf + PAGE, PAGE, 21));
	munmap(m, 2 * PAGE);
	close(plain);
}

TEST_F(uf, bad_input)
{
	struct gmemuf_range r = { .offset = 0, .len = PAGE };
	struct gmemuf_bitmap b = { .offset = 0, .len = PAGE };
	unsigned long ioctls[] = { GMEMUF_IOC_ARM, GMEMUF_IOC_DISARM,
				   GMEMUF_IOC_ZERO, GMEMUF_IOC_WAKE };
	unsigned int i;

	for (i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]); i++) {
		unsigned long nr = ioctls[i];

		r = (struct gmemuf_range){ .offset = 0, .len = PAGE, .flags = 1 };
		EXPECT_EQ(ioctl(self->fd, nr, &r), -1);
		EXPECT_EQ(errno, EINVAL) TH_LOG("flags, ioctl %#lx", nr);
		r = (struct gmemuf_range){ .offset = 0, .len = 0 };
		EXPECT_EQ(ioctl(self->fd, nr, &r), -1);
		EXPECT_EQ(errno, EINVAL) TH_LOG("len 0, ioctl %#lx", nr);
		r = (struct gmemuf_range){ .offset = 1, .len = PAGE };
		EXPECT_EQ(ioctl(self->fd, nr, &r), -1);
		EXPECT_EQ(errno, EINVAL) TH_LOG("offset, ioctl %#lx", nr);
		r = (struct gmemuf_range){ .offset = 0, .len = PAGE + 1 };
		EXPECT_EQ(ioctl(self->fd, nr, &r), -1);
		EXPECT_EQ(errno, EINVAL) TH_LOG("len, ioctl %#lx", nr);
		r = (struct gmemuf_range){ .offset = SIZE - PAGE, .len = 2 * PAGE };
		EXPECT_EQ(ioctl(self->fd, nr, &r), -1);
		EXPECT_EQ(errno, EINVAL) TH_LOG("past end, ioctl %#lx", nr);
		r = (struct gmemuf_range){ .offset = -PAGE, .len = 2 * PAGE };
		EXPECT_EQ(ioctl(self->fd, nr, &r), -1);
		EXPECT_EQ(errno, EINVAL) TH_LOG("wrap, ioctl %#lx", nr);
		EXPECT_EQ(ioctl(self->fd, nr, unmapped_page()), -1);
		EXPECT_EQ(errno, EFAULT) TH_LOG("pointer, ioctl %#lx", nr);
	}

	r = (struct gmemuf_range){ .offset = 0, .len = PAGE, .done = 1 };
	EXPECT_EQ(ioctl(self->fd, GMEMUF_IOC_ZERO, &r), -1);
	EXPECT_EQ(errno, EINVAL) TH_LOG("done must be 0 on input");

	b.missing = 1;
	EXPECT_EQ(ioctl(self->fd, GMEMUF_IOC_GET_BITMAP, &b), -1);
	EXPECT_EQ(errno, EINVAL);
	b.missing = 0;
	b.bitmap = (__u64)(uintptr_t)unmapped_page();
	EXPECT_EQ(ioctl(self->fd, GMEMUF_IOC_GET_BITMAP, &b), -1);
	EXPECT_EQ(errno, EFAULT);

	EXPECT_EQ(ioctl(self->fd, _IO(KVMIO, 0xff), 0), -1);
	EXPECT_EQ(errno, ENOTTY);

	/* More flags than the kernel knows: EINVAL at creation. */
	EXPECT_LT(create_gmem(self->vm, SIZE, UF_FLAGS | (1ULL << 63)), 0);
	EXPECT_EQ(errno, EINVAL);
}


TEST_F(uf, one_record_for_eight_faulters)
{
	struct toucher t[8];
	struct handler h;
	int i;

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	for (i = 0; i < 8; i++)
		toucher_start(&t[i], self->mem + 17 * PAGE, false);
	for (i = 0; i < 8; i++)
		ASSERT_TRUE(wait_sleeping(t[i].tid));

	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 10000), 1);
	EXPECT_EQ(h.faults[0].offset, 17 * PAGE);
	EXPECT_EQ(h.faults[0].flags, GMEMUF_FAULT_READ | GMEMUF_FAULT_MMAP_USER);
	EXPECT_EQ(h.faults[0].reserved, 0);

	/* No second record, for these faulters or anyone. */
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	EXPECT_EQ(handler_wait(&h, 300), -ETIME);

	ASSERT_EQ(populate(self->fd, 17, 17), PAGE);
	for (i = 0; i < 8; i++) {
		toucher_join(&t[i]);
		EXPECT_TRUE(check(t[i].copy, PAGE, 17));
	}
	handler_close(&h);
}

/* The number of wait queues in a file's fdinfo, for a file of @pages. */
static long wait_queues_of(unsigned long pages)
{
	int vm = create_vm(), fd;
	long n;

	if (vm < 0)
		return -2;
	fd = create_gmem(vm, pages * PAGE, UF_FLAGS);
	if (fd < 0) {
		close(vm);
		return -2;
	}
	n = fdinfo_field(fd, "gmemuf_wait_queues");
	close(fd);
	close(vm);
	return n;
}

/* The pages of a file, rounded up to a power of two, and at most 256. */
TEST(wait_queues_sized_to_the_file)
{
	static const struct {
		unsigned long pages;
		long queues;
	} sizes[] = {
		{ 1, 1 }, { 2, 2 }, { 3, 4 }, { 64, 64 }, { 200, 256 },
		{ 256, 256 }, { 257, 256 },
		{ 1UL << 18, 256 },	/* 1 GiB */
		{ 1UL << 24, 256 },	/* 64 GiB */
	};
	int vm = create_vm(), fd;
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		EXPECT_EQ(wait_queues_of(sizes[i].pages), sizes[i].queues)
			TH_LOG("a file of %lu pages", sizes[i].pages);

	/* A guest_memfd without userfault has no such line. */
	ASSERT_GE(vm, 0);
	fd = create_gmem(vm, SIZE, GUEST_MEMFD_FLAG_MMAP);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(fdinfo_field(fd, "gmemuf_wait_queues"), -1);
	close(fd);
	close(vm);
}

/*
 * A toucher that, once its access returns, writes its id to a pipe that all
 * waiters of a test share, so that the test sees which returned and when.
 */
struct page_waiter {
	struct toucher t;
	int file;
	unsigned long page;
	int notify;
	unsigned char id;
	bool returned;
	long nvcsw;
};

static void *page_waiter_fn(void *arg)
{
	struct page_waiter *w = arg;

	toucher_fn(&w->t);
	if (write(w->notify, &w->id, 1) != 1)
		abort();
	return NULL;
}

static void page_waiter_start(struct page_waiter *w, void *addr,
			      bool via_kernel)
{
	toucher_run(&w->t, addr, via_kernel, page_waiter_fn, w);
}

/* The times a thread of this process went to sleep, or -1. */
static long voluntary_switches(pid_t tid)
{
	static const char name[] = "voluntary_ctxt_switches:";
	char path[64], line[256];
	long value = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, sizeof(name) - 1))
			value = strtol(line + sizeof(name) - 1, NULL, 10);
	fclose(f);
	return value;
}

/*
 * Until every waiter not returned has slept the same number of times over
 * 200 ms, bounded (10 s): each is then asleep in the wait for its page, and
 * any later change is a wakeup. Records the counts.
 */
static bool waiters_settled(struct page_waiter *w, int n)
{
	int tries, i;
	bool same;

	for (tries = 0; tries < 50; tries++) {
		for (i = 0; i < n; i++)
			if (!w[i].returned)
				w[i].nvcsw = voluntary_switches(w[i].t.tid);
		usleep(200000);
		same = true;
		for (i = 0; i < n; i++)
			if (!w[i].returned &&
			    voluntary_switches(w[i].t.tid) != w[i].nvcsw)
				same = false;
		if (same)
			return true;
	}
	return false;
}

/* The id a waiter wrote to @fd within @ms, or -1. */
static int waiter_returned(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	unsigned char id;

	if (poll(&pfd, 1, ms) != 1 || read(fd, &id, 1) != 1)
		return -1;
	return id;
}

#define WQ_FILE_PAGES	512UL	/* above the 256 queues of the largest */
#define WQ_PER_PAGE	3	/* waiters of each page: two loads, a write() */

/* Tests that take long on a loaded machine: no fixture, a longer timeout. */
FIXTURE(load) {};
FIXTURE_SETUP(load) {}
FIXTURE_TEARDOWN(load) {}

/*
 * Many tasks wait on pages of two files that share wait queues: pages @q
 * apart in one file (@q its number of queues), and the same pages in the
 * other (which, in one table for the host, may share a queue too). A
 * GMEMUF_IOC_WAKE of both files returns none of them. Then each populate,
 * in an order that goes back and forth between the files and between the
 * pages of a queue, wakes exactly the waiters of its page: they return,
 * with the page's contents, and no other waiter returns, nor is even woken
 * (its count of sleeps does not change).
 */
TEST_F_TIMEOUT(load, populates_wake_only_their_waiters, 300)
{
	struct uf_file f[2];
	unsigned long pages[4];
	struct {
		int file;
		unsigned long page;
	} order[8];
	struct page_waiter w[8 * WQ_PER_PAGE];
	int notify[2], nw = 0, i, j, k, n, id;
	long q;

	for (i = 0; i < 2; i++)
		ASSERT_EQ(uf_open(&f[i], WQ_FILE_PAGES * PAGE), 0)
			TH_LOG("%s", strerror(errno));
	q = fdinfo_field(f[0].fd, "gmemuf_wait_queues");
	ASSERT_EQ(q, 256);
	EXPECT_EQ(fdinfo_field(f[1].fd, "gmemuf_wait_queues"), 256);
	ASSERT_EQ(pipe2(notify, O_NONBLOCK), 0);

	/* Two queues, two pages of each. */
	pages[0] = 3;
	pages[1] = 3 + q;
	pages[2] = 7;
	pages[3] = 7 + q;
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 4; j++) {
			for (k = 0; k < WQ_PER_PAGE; k++, nw++) {
				w[nw].file = i;
				w[nw].page = pages[j];
				w[nw].notify = notify[1];
				w[nw].id = nw;
				w[nw].returned = false;
				page_waiter_start(&w[nw],
						  f[i].mem + pages[j] * PAGE,
						  k == WQ_PER_PAGE - 1);
			}
		}
	}
	for (i = 0; i < nw; i++)
		ASSERT_TRUE(wait_sleeping(w[i].t.tid));
	ASSERT_TRUE(waiters_settled(w, nw));
	EXPECT_EQ(waiter_returned(notify[0], 0), -1);

	/* A wake returns nobody: every page is still missing. */
	for (i = 0; i < 2; i++)
		ASSERT_EQ(range_ioctl(f[i].fd, GMEMUF_IOC_WAKE, 0,
				      WQ_FILE_PAGES * PAGE, NULL), 0);
	EXPECT_EQ(waiter_returned(notify[0], 300), -1);
	ASSERT_TRUE(waiters_settled(w, nw));

	order[0].file = 0, order[0].page = pages[1];
	order[1].file = 1, order[1].page = pages[0];
	order[2].file = 0, order[2].page = pages[2];
	order[3].file = 1, order[3].page = pages[3];
	order[4].file = 0, order[4].page = pages[0];
	order[5].file = 1, order[5].page = pages[1];
	order[6].file = 0, order[6].page = pages[3];
	order[7].file = 1, order[7].page = pages[2];

	for (i = 0; i < 8; i++) {
		int file = order[i].file;
		unsigned long page = order[i].page;
		unsigned int seed = file * 1000 + page;

		ASSERT_EQ(populate(f[file].fd, page, seed), PAGE);

		/* Exactly its waiters return... */
		for (n = 0; n < WQ_PER_PAGE; n++) {
			id = waiter_returned(notify[0], 60000);
			ASSERT_GE(id, 0) TH_LOG("populate %d: %d of %d returned",
						i, n, WQ_PER_PAGE);
			ASSERT_LT(id, nw);
			EXPECT_EQ(w[id].file, file);
			EXPECT_EQ(w[id].page, page);
			EXPECT_FALSE(w[id].returned);
			w[id].returned = true;
			toucher_join(&w[id].t);
			EXPECT_EQ(w[id].t.result, PAGE)
				TH_LOG("%s", strerror(w[id].t.err));
			EXPECT_TRUE(check(w[id].t.copy, PAGE, seed));
		}
		/* ... and no other, in a while... */
		id = waiter_returned(notify[0], 300);
		EXPECT_EQ(id, -1)
			TH_LOG("populate %d (%d:%lu) returned %d (%d:%lu)",
			       i, file, page, id, id >= 0 ? w[id].file : -1,
			       id >= 0 ? w[id].page : 0);
		/* ... nor was woken at all (each wakeup told once). */
		for (j = 0; j < nw; j++) {
			long nvcsw;

			if (w[j].returned)
				continue;
			nvcsw = voluntary_switches(w[j].t.tid);
			EXPECT_EQ(nvcsw, w[j].nvcsw)
				TH_LOG("populate %d (%d:%lu) woke %d (%d:%lu)",
				       i, file, page, j, w[j].file, w[j].page);
			w[j].nvcsw = nvcsw;
		}
	}
	for (i = 0; i < nw; i++)
		EXPECT_TRUE(w[i].returned);
	EXPECT_EQ(count_missing(f[0].fd, 0, WQ_FILE_PAGES * PAGE, NULL),
		  WQ_FILE_PAGES - 4);
	EXPECT_EQ(count_missing(f[1].fd, 0, WQ_FILE_PAGES * PAGE, NULL),
		  WQ_FILE_PAGES - 4);

	close(notify[0]);
	close(notify[1]);
	for (i = 0; i < 2; i++)
		uf_close(&f[i]);
}

TEST_F(uf, write_and_kernel_faults_are_told_apart)
{
	struct toucher t;
	struct handler h;
	pid_t pid;
	int status;

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		self->mem[18 * PAGE] = 1;
		_exit(0);
	}
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 10000), 1);
	EXPECT_EQ(h.faults[0].offset, 18 * PAGE);
	EXPECT_EQ(h.faults[0].flags, GMEMUF_FAULT_WRITE | GMEMUF_FAULT_MMAP_USER);
	ASSERT_EQ(populate(self->fd, 18, 18), PAGE);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	EXPECT_EQ(status, 0);

	toucher_start(&t, self->mem + 19 * PAGE, true);
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 10000), 1);
	EXPECT_EQ(h.faults[0].offset, 19 * PAGE);
	EXPECT_EQ(h.faults[0].flags, GMEMUF_FAULT_READ | GMEMUF_FAULT_MMAP_KERNEL);
	ASSERT_EQ(populate(self->fd, 19, 19), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 19));
	handler_close(&h);
}

/*
 * The tests that fault thousands of pages, with more time than the
 * harness's default 30 s: under TCG and a debug kernel they take seconds
 * per thousand pages, and more when the machine is busy.
 */
/* 10,000 pages, each touched once in order and once at random. */
TEST_F_TIMEOUT(load, demand_paging_10000_pages, 300)
{
	const unsigned long npages = 10000;
	unsigned long *order, i, bad = 0;
	struct server srv;
	struct uf_file f;
	int fd, pass;
	char *mem;

	ASSERT_EQ(uf_open(&f, npages * PAGE), 0);
	fd = f.fd;
	mem = f.mem;
	order = malloc(npages * sizeof(*order));
	ASSERT_NE(order, NULL);

	server_start(&srv, fd);
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < npages; i++)
			order[i] = i;
		if (pass) {
			srandom(42);
			for (i = npages - 1; i > 0; i--) {
				unsigned long j = random() % (i + 1), tmp;

				tmp = order[i];
				order[i] = order[j];
				order[j] = tmp;
			}
			ASSERT_EQ(range_ioctl(fd, GMEMUF_IOC_ARM, 0,
					      npages * PAGE, NULL), 0);
		}
		srv.faults = 0;
		for (i = 0; i < npages; i++)
			if (!check(mem + order[i] * PAGE, PAGE, order[i]))
				bad++;
		EXPECT_EQ(bad, 0);
		EXPECT_EQ(srv.faults, npages) TH_LOG("pass %d", pass);
		EXPECT_EQ(count_missing(fd, 0, npages * PAGE, NULL), 0);
	}
	server_stop(&srv);
	EXPECT_EQ(srv.error, 0);
	free(order);
	uf_close(&f);
}

/* A one-byte message with room for one SCM_RIGHTS file descriptor. */
struct fd_msg {
	char byte;
	struct iovec iov;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg;
};

static void fd_msg_init(struct fd_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->iov.iov_base = &m->byte;
	m->iov.iov_len = 1;
	m->msg.msg_iov = &m->iov;
	m->msg.msg_iovlen = 1;
	m->msg.msg_control = m->u.buf;
	m->msg.msg_controllen = sizeof(m->u.buf);
}

static int send_fd(int sock, int fd)
{
	struct cmsghdr *cmsg;
	struct fd_msg m;

	fd_msg_init(&m);
	cmsg = CMSG_FIRSTHDR(&m.msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	return sendmsg(sock, &m.msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	struct cmsghdr *cmsg;
	struct fd_msg m;
	int fd;

	fd_msg_init(&m);
	if (recvmsg(sock, &m.msg, 0) != 1)
		return -1;
	cmsg = CMSG_FIRSTHDR(&m.msg);
	if (!cmsg || cmsg->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	return fd;
}

/*
 * The handler is another process that got the guest_memfd over a UNIX
 * socket. It serves the faults of 32 pages, then stops when told.
 */
TEST_F(uf, handler_in_another_process)
{
	int sv[2], status, i;
	pid_t pid;
	char c = 0;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct server srv;
		int fd;

		close(self->fd);
		munmap(self->mem, SIZE);
		fd = recv_fd(sv[1]);
		if (fd < 0)
			_exit(10);
		server_start(&srv, fd);
		if (read(sv[1], &c, 1) != 1)
			_exit(11);
		server_stop(&srv);
		_exit(srv.error ? 12 : srv.faults == 32 ? 0 : 13);
	}
	ASSERT_EQ(send_fd(sv[0], self->fd), 0);
	for (i = 32; i < 64; i++)
		EXPECT_TRUE(check(self->mem + i * PAGE, PAGE, i));
	ASSERT_EQ(write(sv[0], &c, 1), 1);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Four pages faulted; the first handler fetches their records and goes
 * away without populating them, by closing its ring and its handler file,
 * or by being killed. A second handler gets the same four records.
 */
static void redelivery(struct __test_metadata *_metadata, int fd, char *mem,
		       bool kill_it)
{
	struct toucher t[4];
	struct handler h2;
	int i, n, sv[2], status;
	__u64 seen = 0;
	pid_t pid = 0;

	for (i = 0; i < 4; i++)
		toucher_start(&t[i], mem + (40 + i) * PAGE, false);

	if (kill_it) {
		ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		pid = fork();
		ASSERT_GE(pid, 0);
		if (!pid) {
			struct handler h1;
			int got = 0;

			if (handler_open(&h1, fd))
				_exit(1);
			while (got < 4) {
				handler_fetch(&h1, 16);
				n = handler_wait(&h1, 10000);
				if (n <= 0)
					_exit(2);
				got += n;
			}
			/* Tell the parent, then wait to be killed. */
			if (write(sv[1], &got, 1) != 1)
				_exit(3);
			pause();
			_exit(4);
		}
		ASSERT_EQ(read(sv[0], &n, 1), 1);
		ASSERT_EQ(kill(pid, SIGKILL), 0);
		ASSERT_EQ(waitpid(pid, &status, 0), pid);
		EXPECT_TRUE(WIFSIGNALED(status));
		close(sv[0]);
		close(sv[1]);
	} else {
		struct handler h1;
		int got = 0;

		ASSERT_EQ(handler_open(&h1, fd), 0);
		while (got < 4) {
			ASSERT_EQ(handler_fetch(&h1, 16), 0);
			n = handler_wait(&h1, 10000);
			ASSERT_GT(n, 0);
			got += n;
		}
		/* A fetch parked, as a real handler has, then both closed. */
		ASSERT_EQ(handler_fetch(&h1, 16), 0);
		handler_close(&h1);
	}

	ASSERT_EQ(handler_open(&h2, fd), 0);
	while (seen != 0xf) {
		ASSERT_EQ(handler_fetch(&h2, 16), 0);
		n = handler_wait(&h2, 10000);
		ASSERT_GT(n, 0);
		for (i = 0; i < n; i++) {
			unsigned long page = h2.faults[i].offset / PAGE;

			ASSERT_TRUE(page >= 40 && page < 44);
			seen |= 1ULL << (page - 40);
			ASSERT_EQ(populate(fd, page, page), PAGE);
		}
	}
	for (i = 0; i < 4; i++) {
		toucher_join(&t[i]);
		EXPECT_TRUE(check(t[i].copy, PAGE, 40 + i));
	}
	handler_close(&h2);
}

TEST_F(uf, redelivery_after_ring_and_handler_closed)
{
	redelivery(_metadata, self->fd, self->mem, false);
}

TEST_F(uf, redelivery_after_handler_killed)
{
	redelivery(_metadata, self->fd, self->mem, true);
}

/* Faults taken before any handler exists go to the first one. */
TEST_F(uf, faults_before_the_first_handler)
{
	struct toucher t;
	struct handler h;

	toucher_start(&t, self->mem + 50 * PAGE, false);
	ASSERT_TRUE(wait_sleeping(t.tid));
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 1);
	ASSERT_EQ(handler_open(&h, self->fd), 0);
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_handlers"), 1);
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 10000), 1);
	EXPECT_EQ(h.faults[0].offset, 50 * PAGE);
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 0);
	ASSERT_EQ(populate(self->fd, 50, 50), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 50));
	handler_close(&h);
}

/* A fetch whose buffer cannot be written fails; the record is kept. */
TEST_F(uf, fetch_buffer_fault_keeps_the_record)
{
	struct toucher t;
	struct handler h;

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	toucher_start(&t, self->mem + 51 * PAGE, false);
	ASSERT_TRUE(wait_sleeping(t.tid));
	prep_fetch(io_uring_get_sqe(&h.ring), h.fd,
		   (__u64)(uintptr_t)unmapped_page(), 4, 0);
	ASSERT_EQ(io_uring_submit(&h.ring), 1);
	EXPECT_EQ(handler_wait(&h, 10000), -EFAULT);
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 10000), 1);
	EXPECT_EQ(h.faults[0].offset, 51 * PAGE);
	ASSERT_EQ(populate(self->fd, 51, 51), PAGE);
	toucher_join(&t);
	handler_close(&h);
}

TEST_F(uf, fetch_bad_input)
{
	struct io_uring_sqe *sqe;
	struct handler h;
	__u64 addr;

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	addr = (__u64)(uintptr_t)h.faults;

	prep_fetch(io_uring_get_sqe(&h.ring), h.fd, addr, 0, 0);
	io_uring_submit(&h.ring);
	EXPECT_EQ(handler_wait(&h, 5000), -EINVAL) TH_LOG("nr 0");
	prep_fetch(io_uring_get_sqe(&h.ring), h.fd, addr,
		   GMEMUF_FETCH_MAX + 1, 0);
	io_uring_submit(&h.ring);
	EXPECT_EQ(handler_wait(&h, 5000), -EINVAL) TH_LOG("nr too big");
	prep_fetch(io_uring_get_sqe(&h.ring), h.fd, addr, 4, 1);
	io_uring_submit(&h.ring);
	EXPECT_EQ(handler_wait(&h, 5000), -EINVAL) TH_LOG("flags");
	prep_fetch(io_uring_get_sqe(&h.ring), h.fd, 0, 4, 0);
	io_uring_submit(&h.ring);
	EXPECT_EQ(handler_wait(&h, 5000), -EINVAL) TH_LOG("addr 0");
	sqe = io_uring_get_sqe(&h.ring);
	prep_fetch(sqe, h.fd, addr, 4, 0);
	sqe->cmd_op = GMEMUF_CMD_FETCH + 1;
	io_uring_submit(&h.ring);
	EXPECT_EQ(handler_wait(&h, 5000), -EINVAL) TH_LOG("cmd_op");
	/* On the guest_memfd itself: no uring_cmd there. */
	prep_fetch(io_uring_get_sqe(&h.ring), self->fd, addr, 4, 0);
	io_uring_submit(&h.ring);
	EXPECT_EQ(handler_wait(&h, 5000), -EOPNOTSUPP);

	EXPECT_EQ(ioctl(self->fd, GMEMUF_IOC_HANDLER, 1), -1);
	EXPECT_EQ(errno, EINVAL);
	handler_close(&h);
}

/* 256 handlers at most; failing to attach one leaves the others alone. */
/*
 * The SQE fields a fetch does not use must be 0 (EINVAL otherwise), so that
 * they can mean something later; a fetch with all of them 0 then works.
 */
TEST_F(uf, fetch_unused_sqe_fields_are_einval)
{
	static const char *const names[] = {
		"ioprio", "addr", "len", "buf_index", "file_index",
		"uring_cmd_flags FIXED",
	};
	struct io_uring_sqe *sqe;
	struct toucher t;
	struct handler h;
	unsigned int i;
	__u64 addr;

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	addr = (__u64)(uintptr_t)h.faults;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		sqe = io_uring_get_sqe(&h.ring);
		prep_fetch(sqe, h.fd, addr, 4, 0);
		switch (i) {
		case 0: sqe->ioprio = 1; break;
		case 1: sqe->addr = 1; break;
		case 2: sqe->len = 1; break;
		case 3: sqe->buf_index = 1; break;
		case 4: sqe->file_index = 1; break;
		case 5: sqe->uring_cmd_flags = IORING_URING_CMD_FIXED; break;
		}
		ASSERT_EQ(io_uring_submit(&h.ring), 1);
		EXPECT_EQ(handler_wait(&h, 5000), -EINVAL) TH_LOG("%s", names[i]);
	}
	toucher_start(&t, self->mem + 7 * PAGE, false);
	ASSERT_EQ(handler_fetch(&h, 4), 0);
	ASSERT_EQ(handler_wait(&h, 60000), 1);
	EXPECT_EQ(h.faults[0].offset, 7 * PAGE);
	ASSERT_EQ(populate(self->fd, 7, 7), PAGE);
	toucher_join(&t);
	handler_close(&h);
}

/*
 * In a ring of 128-byte SQEs the command area is 80 bytes: the 64 past
 * struct gmemuf_fetch must be 0.
 */
TEST_F(uf, fetch_sqe128_tail_must_be_zero)
{
	struct io_uring_sqe *sqe;
	struct toucher t;
	struct handler h;
	__u64 addr;

	h.fd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(h.fd, 0);
	ASSERT_EQ(io_uring_queue_init(8, &h.ring, IORING_SETUP_SQE128), 0);
	addr = (__u64)(uintptr_t)h.faults;

	sqe = io_uring_get_sqe(&h.ring);
	memset(sqe, 0, 2 * sizeof(*sqe));
	prep_fetch(sqe, h.fd, addr, 4, 0);
	((char *)sqe->cmd)[79] = 1;
	ASSERT_EQ(io_uring_submit(&h.ring), 1);
	EXPECT_EQ(handler_wait(&h, 5000), -EINVAL);

	toucher_start(&t, self->mem + 8 * PAGE, false);
	sqe = io_uring_get_sqe(&h.ring);
	memset(sqe, 0, 2 * sizeof(*sqe));
	prep_fetch(sqe, h.fd, addr, 4, 0);
	ASSERT_EQ(io_uring_submit(&h.ring), 1);
	ASSERT_EQ(handler_wait(&h, 60000), 1);
	EXPECT_EQ(h.faults[0].offset, 8 * PAGE);
	ASSERT_EQ(populate(self->fd, 8, 8), PAGE);
	toucher_join(&t);
	handler_close(&h);
}

TEST_F(uf, handler_limit)
{
	static int fds[257];
	struct handler h;
	int i, n;

	for (n = 0; n < 257; n++) {
		fds[n] = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
		if (fds[n] < 0)
			break;
	}
	EXPECT_EQ(n, 256);
	EXPECT_EQ(errno, ENOSPC);
	/* Twice, and with one closed there is room again. */
	EXPECT_EQ(ioctl(self->fd, GMEMUF_IOC_HANDLER, 0), -1);
	EXPECT_EQ(errno, ENOSPC);
	close(fds[--n]);
	ASSERT_EQ(handler_open(&h, self->fd), 0);
	for (i = 0; i < n; i++)
		close(fds[i]);
	/* The survivor still gets faults. */
	fault_served_by(_metadata, &self->f, &h, 52);
	handler_close(&h);
}

/* A source page readable only in part: EFAULT, no spinning. */
TEST_F(uf, pwrite_from_half_readable_page)
{
	char *buf = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(munmap(buf + PAGE, PAGE), 0);
	EXPECT_EQ(pwrite(self->fd, buf + PAGE / 2, PAGE, 0), -1);
	EXPECT_EQ(errno, EFAULT);
	EXPECT_EQ(count_missing(self->fd, 0, PAGE, NULL), 1);
	munmap(buf, PAGE);
}

/*
 * A source that is readable but not mapped yet: a fresh mapping of a memfd
 * that holds the data. Populate's first copy, which takes no page fault,
 * fails; it faults the source in and copies again: every page is written,
 * whole, and the write is not short.
 */
TEST_F(uf, pwrite_from_a_source_not_mapped_yet)
{
	const unsigned long first = 30, n = 3;
	char buf[3 * PAGE], *src;
	unsigned long i;
	int mfd;

	mfd = memfd_create("gmemuf-src", MFD_CLOEXEC);
	ASSERT_GE(mfd, 0);
	for (i = 0; i < n; i++)
		fill(buf + i * PAGE, PAGE, first + i);
	ASSERT_EQ(write(mfd, buf, n * PAGE), n * PAGE);
	src = mmap(NULL, n * PAGE, PROT_READ, MAP_SHARED, mfd, 0);
	ASSERT_NE(src, MAP_FAILED);
	EXPECT_EQ(pwrite(self->fd, src, n * PAGE, first * PAGE), n * PAGE);
	EXPECT_EQ(count_missing(self->fd, first * PAGE, n * PAGE, NULL), 0);
	for (i = 0; i < n; i++)
		EXPECT_TRUE(check(self->mem + (first + i) * PAGE, PAGE,
				  first + i));
	munmap(src, n * PAGE);
	close(mfd);
}

/*
 * A write of many runs of pages (a run is populated under one hold of the
 * lock) whose source turns unreadable part-way: a short write of the pages
 * before, each with its contents, and the rest left missing.
 */
TEST(pwrite_across_runs_to_unreadable_source)
{
	const unsigned long npages = 200, readable = 150;
	struct uf_file f;
	unsigned long i;
	char *buf;

	ASSERT_EQ(uf_open(&f, npages * PAGE), 0) TH_LOG("%s", strerror(errno));
	buf = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(buf, MAP_FAILED);
	for (i = 0; i < readable; i++)
		fill(buf + i * PAGE, PAGE, 1000 + i);
	ASSERT_EQ(munmap(buf + readable * PAGE, (npages - readable) * PAGE), 0);

	EXPECT_EQ(pwrite(f.fd, buf, npages * PAGE, 0), readable * PAGE);
	for (i = 0; i < readable; i++)
		EXPECT_TRUE(check(f.mem + i * PAGE, PAGE, 1000 + i))
			TH_LOG("page %lu", i);
	EXPECT_EQ(count_missing(f.fd, 0, npages * PAGE, NULL),
		  npages - readable);
	munmap(buf, readable * PAGE);
	uf_close(&f);
}

/*
 * Two handler threads, each with its own handler file and ring, and four
 * toucher threads over 2,000 pages: every page is faulted once and fetched
 * once, by one handler or the other.
 */
static void *touch_range(void *arg)
{
	char **range = arg;
	unsigned long bad = 0;
	char *p;

	for (p = range[0]; p < range[1]; p += PAGE)
		if (!check(p, PAGE, (p - range[2]) / PAGE))
			bad++;
	return (void *)bad;
}

TEST_F_TIMEOUT(load, two_handlers_share_the_load, 300)
{
	const unsigned long npages = 2000;
	struct server srv[2];
	pthread_t touchers[4];
	char *range[4][3];
	unsigned long total = 0;
	struct uf_file f;
	void *bad;
	int fd, i;
	char *mem;

	ASSERT_EQ(uf_open(&f, npages * PAGE), 0);
	fd = f.fd;
	mem = f.mem;

	server_start(&srv[0], fd);
	server_start(&srv[1], fd);
	for (i = 0; i < 4; i++) {
		range[i][0] = mem + i * (npages / 4) * PAGE;
		range[i][1] = mem + (i + 1) * (npages / 4) * PAGE;
		range[i][2] = mem;
		pthread_create(&touchers[i], NULL, touch_range, range[i]);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(touchers[i], &bad);
		EXPECT_EQ((unsigned long)bad, 0);
	}
	for (i = 0; i < 2; i++) {
		server_stop(&srv[i]);
		EXPECT_EQ(srv[i].error, 0);
		total += srv[i].faults;
	}
	EXPECT_EQ(total, npages);
	EXPECT_EQ(count_missing(fd, 0, npages * PAGE, NULL), 0);
	uf_close(&f);
}

/*
 * Closing the guest_memfd and the VM while a task waits on a mapping of a
 * missing page: the mapping keeps the file, the task keeps waiting, and it
 * can be killed; everything is freed when it goes.
 */
TEST(close_with_waiters_then_kill)
{
	struct uf_file f;
	int status;
	pid_t pid;

	ASSERT_EQ(uf_open(&f, SIZE), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		close(f.fd);
		close(f.vm);
		(void)*(volatile char *)f.mem;
		_exit(0);
	}
	ASSERT_TRUE(child_sleeping(pid));
	uf_close(&f);
	usleep(100000);
	EXPECT_TRUE(child_sleeping(pid));
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	EXPECT_TRUE(WIFSIGNALED(status));
}

/*
 * Races, under KASAN and lockdep: four toucher threads read random pages, a
 * handler serves their faults, a prefetcher populates random pages, and an
 * armer re-arms random ranges, all at once for a few thousand operations,
 * and on until ranges were re-armed and faulted on through the handler.
 * Every page is only ever populated with its own pattern, so every read
 * must see exactly that: never zeroes, never a mix, and no toucher may hang.
 */
struct stress {
	struct uf_file f;
	unsigned long npages;
	_Atomic bool stop;
	/* The touchers' 1,500 reads each are done: stop when this is set. */
	_Atomic bool enough;
	_Atomic unsigned long bad;
	_Atomic unsigned long reads;
	_Atomic unsigned long arms;
};

static void *stress_toucher(void *arg)
{
	struct stress *st = arg;
	unsigned int seed = gettid();
	int i;

	for (i = 0; i < 1500 || !st->enough; i++) {
		unsigned long page = rand_r(&seed) % st->npages;

		if (!check(st->f.mem + page * PAGE, PAGE, page))
			st->bad++;
		st->reads++;
	}
	return NULL;
}

static void *stress_prefetcher(void *arg)
{
	struct stress *st = arg;
	unsigned int seed = 1;

	while (!st->stop) {
		unsigned long page = rand_r(&seed) % st->npages;

		if (populate(st->f.fd, page, page) != PAGE && errno != EEXIST)
			st->bad++;
	}
	return NULL;
}

static void *stress_armer(void *arg)
{
	struct stress *st = arg;
	unsigned int seed = 2;

	while (!st->stop) {
		unsigned long page = rand_r(&seed) % (st->npages - 8);

		if (range_ioctl(st->f.fd, GMEMUF_IOC_ARM, page * PAGE,
				(1 + rand_r(&seed) % 8) * PAGE, NULL))
			st->bad++;
		st->arms++;
		usleep(1000);
	}
	return NULL;
}

TEST_F_TIMEOUT(load, stress_faults_populates_and_arms, 300)
{
	pthread_t touchers[4], prefetcher, armer;
	struct stress st = { .npages = 256 };
	struct server srv;
	int i;

	ASSERT_EQ(uf_open(&st.f, st.npages * PAGE), 0);
	server_start(&srv, st.f.fd);
	pthread_create(&prefetcher, NULL, stress_prefetcher, &st);
	pthread_create(&armer, NULL, stress_armer, &st);
	for (i = 0; i < 4; i++)
		pthread_create(&touchers[i], NULL, stress_toucher, &st);
	/*
	 * However the load paces the threads, until pages have been re-armed
	 * and faulted on through the handler (or 200 s have passed).
	 */
	for (i = 0; i < 20000 && (st.arms <= 10 || srv.faults <= 10); i++)
		usleep(10000);
	st.enough = true;
	for (i = 0; i < 4; i++)
		pthread_join(touchers[i], NULL);
	st.stop = true;
	pthread_join(prefetcher, NULL);
	pthread_join(armer, NULL);
	server_stop(&srv);

	EXPECT_GE(st.reads, 4 * 1500);
	EXPECT_EQ(st.bad, 0);
	/* Not vacuous: pages were re-armed, and faulted on through a handler. */
	EXPECT_GT(st.arms, 10);
	EXPECT_GT(srv.faults, 10) TH_LOG("%lu arms", (unsigned long)st.arms);
	EXPECT_EQ(srv.error, 0);
	uf_close(&st.f);
}

/*
 * A handler thread that exits with a fetch parked, its ring, handler file and
 * process living on: the fetch completes with ECANCELED at once, and the
 * record it had delivered and not resolved goes to another handler.
 */
struct exiting_fetcher {
	struct handler *h;
	unsigned long page;	/* out: the page of the record it got */
	int error;
};

static void *exiting_fetcher_fn(void *arg)
{
	struct exiting_fetcher *ef = arg;
	int n;

	if (handler_fetch(ef->h, 16)) {
		ef->error = errno;
		return NULL;
	}
	n = handler_wait(ef->h, 60000);
	if (n != 1) {
		ef->error = n < 0 ? -n : EPROTO;
		return NULL;
	}
	ef->page = ef->h->faults[0].offset / PAGE;
	/* Park another fetch, as a handler loop does, and leave. */
	if (handler_fetch(ef->h, 16))
		ef->error = errno;
	return NULL;
}

TEST_F(uf, handler_thread_exit_hands_off_its_records)
{
	struct exiting_fetcher ef = { 0 };
	struct handler h1, h2;
	struct toucher t;
	pthread_t thread;

	ASSERT_EQ(handler_open(&h1, self->fd), 0);
	ASSERT_EQ(handler_open(&h2, self->fd), 0);

	/* The thread gets the record of the fault, and exits with it. */
	ef.h = &h1;
	ASSERT_EQ(pthread_create(&thread, NULL, exiting_fetcher_fn, &ef), 0);
	toucher_start(&t, self->mem + 53 * PAGE, false);
	ASSERT_EQ(pthread_join(thread, NULL), 0);
	ASSERT_EQ(ef.error, 0) TH_LOG("%s", strerror(ef.error));
	ASSERT_EQ(ef.page, 53);

	/* Its parked fetch is canceled by the exit, not left parked. */
	EXPECT_EQ(handler_wait(&h1, 60000), -ECANCELED);

	/* The other handler, fetching in a live thread, gets the record. */
	ASSERT_EQ(handler_fetch(&h2, 16), 0);
	ASSERT_EQ(handler_wait(&h2, 60000), 1);
	EXPECT_EQ(h2.faults[0].offset, 53 * PAGE);
	ASSERT_EQ(populate(self->fd, 53, 53), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 53));

	/* Its handler file still works, from a live thread. */
	fault_served_by(_metadata, &self->f, &h1, 54);
	handler_close(&h1);
	handler_close(&h2);
}

/*
 * A handler attached first that never fetches: the records of faults taken
 * before another handler fetched are not stranded on it.
 */
TEST_F(uf, idle_handler_strands_no_record)
{
	struct handler idle, h;
	struct toucher t[3];
	__u64 seen = 0;
	int i, n;

	ASSERT_EQ(handler_open(&idle, self->fd), 0);
	for (i = 0; i < 3; i++) {
		toucher_start(&t[i], self->mem + (55 + i) * PAGE, false);
		ASSERT_TRUE(wait_sleeping(t[i].tid));
	}

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	while (seen != 0x7) {
		ASSERT_EQ(handler_fetch(&h, 16), 0);
		n = handler_wait(&h, 60000);
		ASSERT_GT(n, 0) TH_LOG("seen 0x%llx", (unsigned long long)seen);
		for (i = 0; i < n; i++) {
			unsigned long page = h.faults[i].offset / PAGE;

			ASSERT_TRUE(page >= 55 && page < 58);
			seen |= 1ULL << (page - 55);
			ASSERT_EQ(populate(self->fd, page, page), PAGE);
		}
	}
	for (i = 0; i < 3; i++) {
		toucher_join(&t[i]);
		EXPECT_TRUE(check(t[i].copy, PAGE, 55 + i));
	}
	handler_close(&h);
	handler_close(&idle);
}

/*
 * read() on a handler file: the records of faults, as FETCH gives them,
 * from the same queue, with the same redelivery.
 */
#define REC	sizeof(struct gmemuf_fault)

/* read() of @len bytes from @hfd: the number of records, or -errno. */
static int read_records(int hfd, struct gmemuf_fault *faults, size_t len)
{
	ssize_t n = read(hfd, faults, len);

	if (n < 0)
		return -errno;
	if (n % REC)
		return -EPROTO;
	return n / REC;
}

/* Start a toucher of each of @nr pages from @first, and wait until each sleeps. */
static bool touch_pages(struct toucher *t, char *mem, unsigned long first,
			int nr)
{
	int i;

	for (i = 0; i < nr; i++) {
		toucher_start(&t[i], mem + (first + i) * PAGE, false);
		if (!wait_sleeping(t[i].tid))
			return false;
	}
	return true;
}

/* Populate the pages, join their touchers and check what they saw. */
static void populate_and_join(struct __test_metadata *_metadata, int fd,
			      struct toucher *t, unsigned long first, int nr)
{
	int i;

	for (i = 0; i < nr; i++)
		ASSERT_EQ(populate(fd, first + i, first + i), PAGE);
	for (i = 0; i < nr; i++) {
		toucher_join(&t[i]);
		EXPECT_TRUE(check(t[i].copy, PAGE, first + i));
	}
}

TEST_F(uf, read_returns_the_records)
{
	struct gmemuf_fault faults[8];
	struct toucher t[3];
	int hfd;

	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);
	ASSERT_TRUE(touch_pages(t, self->mem, 10, 3));
	/* Three pending, room for eight: one read takes all three. */
	ASSERT_EQ(read_records(hfd, faults, sizeof(faults)), 3);
	populate_and_join(_metadata, self->fd, t, 10, 3);
	/* Nothing pending: records are not given twice. */
	ASSERT_EQ(fcntl(hfd, F_SETFL, O_NONBLOCK), 0);
	EXPECT_EQ(read_records(hfd, faults, sizeof(faults)), -EAGAIN);
	close(hfd);
}

/* Smaller than a record: EINVAL. Otherwise only whole records. */
TEST_F(uf, read_short_buffers)
{
	struct gmemuf_fault faults[4];
	struct toucher t[3];
	char byte;
	int hfd;

	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);
	EXPECT_EQ(read_records(hfd, faults, 0), -EINVAL);
	EXPECT_EQ(read_records(hfd, faults, 1), -EINVAL);
	EXPECT_EQ(read_records(hfd, faults, REC - 1), -EINVAL);
	ASSERT_TRUE(touch_pages(t, self->mem, 12, 3));
	/* The short reads took nothing. */
	EXPECT_EQ(read_records(hfd, faults, REC - 1), -EINVAL);
	/* A record and a half, then two records less one byte: one each. */
	memset(faults, 0xa5, sizeof(faults));
	ASSERT_EQ(read(hfd, faults, REC + REC / 2), (ssize_t)REC);
	/* Nothing is written past the record. */
	memcpy(&byte, (char *)faults + REC, 1);
	EXPECT_EQ((unsigned char)byte, 0xa5);
	ASSERT_EQ(read(hfd, faults + 1, 2 * REC - 1), (ssize_t)REC);
	ASSERT_EQ(read(hfd, faults + 2, 2 * REC), (ssize_t)REC);
	EXPECT_EQ(faults[0].offset + faults[1].offset + faults[2].offset,
		  (12 + 13 + 14) * PAGE);
	populate_and_join(_metadata, self->fd, t, 12, 3);
	close(hfd);
}

/* O_NONBLOCK: EAGAIN; poll() and epoll say when records are pending. */
TEST_F(uf, read_nonblock_and_poll)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct gmemuf_fault faults[4];
	struct pollfd pfd;
	struct toucher t;
	int hfd, ep;

	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);
	ASSERT_EQ(fcntl(hfd, F_SETFL, O_NONBLOCK), 0);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_GE(ep, 0);
	ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, hfd, &ev), 0);

	pfd = (struct pollfd){ .fd = hfd, .events = POLLIN | POLLOUT };
	EXPECT_EQ(poll(&pfd, 1, 0), 0);
	EXPECT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
	EXPECT_EQ(read_records(hfd, faults, sizeof(faults)), -EAGAIN);

	/* A fault makes it readable, and wakes a poll() that sleeps. */
	toucher_start(&t, self->mem + 20 * PAGE, false);
	ASSERT_EQ(poll(&pfd, 1, 60000), 1);
	EXPECT_EQ(pfd.revents, POLLIN);
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 60000), 1);
	EXPECT_EQ(ev.events, EPOLLIN);
	/* Polling takes nothing. */
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_EQ(read_records(hfd, faults, sizeof(faults)), 1);
	EXPECT_EQ(faults[0].offset, 20 * PAGE);

	/* Read: not readable any more, while the page is still missing. */
	EXPECT_EQ(poll(&pfd, 1, 0), 0);
	EXPECT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
	EXPECT_EQ(read_records(hfd, faults, sizeof(faults)), -EAGAIN);
	ASSERT_EQ(populate(self->fd, 20, 20), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 20));
	close(ep);
	close(hfd);
}

/* A reader blocked in read() of a handler file. */
struct reader {
	pthread_t thread;
	_Atomic pid_t tid;
	int hfd;
	int n;			/* records read, or -errno */
	struct gmemuf_fault faults[16];
};

static void *reader_fn(void *arg)
{
	struct reader *r = arg;

	r->tid = gettid();
	r->n = read_records(r->hfd, r->faults, sizeof(r->faults));
	return NULL;
}

static void reader_start(struct reader *r, int hfd)
{
	memset(r, 0, sizeof(*r));
	r->hfd = hfd;
	pthread_create(&r->thread, NULL, reader_fn, r);
	while (!r->tid)
		usleep(100);
}

static void on_sigusr1(int sig)
{
}

/*
 * A blocking read() sleeps until a fault; a signal ends the sleep with
 * EINTR, or restarts it under SA_RESTART, and a fault then wakes it.
 */
TEST_F(uf, read_blocks_until_a_fault_and_signals_end_it)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	struct reader r;
	struct toucher t;
	int hfd;

	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);

	/* Without SA_RESTART: EINTR. */
	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	reader_start(&r, hfd);
	ASSERT_TRUE(wait_sleeping(r.tid));
	ASSERT_EQ(pthread_kill(r.thread, SIGUSR1), 0);
	pthread_join(r.thread, NULL);
	EXPECT_EQ(r.n, -EINTR);

	/* With it: the read goes on, and the next fault ends it. */
	sa.sa_flags = SA_RESTART;
	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	reader_start(&r, hfd);
	ASSERT_TRUE(wait_sleeping(r.tid));
	ASSERT_EQ(pthread_kill(r.thread, SIGUSR1), 0);
	ASSERT_TRUE(wait_sleeping(r.tid));
	toucher_start(&t, self->mem + 21 * PAGE, false);
	pthread_join(r.thread, NULL);
	ASSERT_EQ(r.n, 1);
	EXPECT_EQ(r.faults[0].offset, 21 * PAGE);
	ASSERT_EQ(populate(self->fd, 21, 21), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 21));
	signal(SIGUSR1, SIG_DFL);
	close(hfd);
}

/*
 * Records read and not populated are pending again when the handler file
 * is closed, and wake a reader blocked on another handler file.
 */
TEST_F(uf, read_redelivery_after_close)
{
	struct gmemuf_fault faults[16];
	struct toucher t[4];
	struct reader r;
	int h1, h2;

	h1 = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(h1, 0);
	h2 = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(h2, 0);
	ASSERT_TRUE(touch_pages(t, self->mem, 30, 4));
	ASSERT_EQ(read_records(h1, faults, sizeof(faults)), 4);

	/* h2 sleeps: the records are h1's. */
	reader_start(&r, h2);
	ASSERT_TRUE(wait_sleeping(r.tid));
	close(h1);
	pthread_join(r.thread, NULL);
	/* All four at once: the release requeues them under the queue lock. */
	ASSERT_EQ(r.n, 4);
	populate_and_join(_metadata, self->fd, t, 30, 4);
	close(h2);
}

/*
 * A process that read records is killed before it populates them: they go
 * to the next handler, a fetch through io_uring, and no fault is lost.
 */
TEST_F(uf, read_redelivery_after_reader_killed)
{
	struct toucher t[4];
	struct handler h;
	int sv[2], status, got = 0, n, i;
	__u64 seen = 0;
	pid_t pid;

	ASSERT_TRUE(touch_pages(t, self->mem, 34, 4));
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct gmemuf_fault faults[16];
		int hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);

		while (hfd >= 0 && got < 4) {
			n = read_records(hfd, faults, sizeof(faults));
			if (n <= 0)
				_exit(2);
			got += n;
		}
		if (hfd < 0 || write(sv[1], &got, 1) != 1)
			_exit(3);
		pause();
		_exit(4);
	}
	ASSERT_EQ(read(sv[0], &n, 1), 1);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	EXPECT_TRUE(WIFSIGNALED(status));
	close(sv[0]);
	close(sv[1]);

	ASSERT_EQ(handler_open(&h, self->fd), 0);
	while (seen != 0xf) {
		ASSERT_EQ(handler_fetch(&h, 16), 0);
		n = handler_wait(&h, 60000);
		ASSERT_GT(n, 0);
		for (i = 0; i < n; i++)
			seen |= 1ULL << (h.faults[i].offset / PAGE - 34);
	}
	EXPECT_EQ(seen, 0xf);
	populate_and_join(_metadata, self->fd, t, 34, 4);
	handler_close(&h);
}

/* A read into a buffer that cannot be written fails; the record is kept. */
TEST_F(uf, read_buffer_fault_keeps_the_record)
{
	struct gmemuf_fault faults[4];
	struct toucher t;
	int hfd;

	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);
	ASSERT_TRUE(touch_pages(&t, self->mem, 38, 1));
	EXPECT_EQ(read_records(hfd, unmapped_page(), 4 * REC), -EFAULT);
	ASSERT_EQ(read_records(hfd, faults, sizeof(faults)), 1);
	EXPECT_EQ(faults[0].offset, 38 * PAGE);
	populate_and_join(_metadata, self->fd, &t, 38, 1);
	close(hfd);
}

/*
 * A read whose buffer can be written only in part, 33 records' worth then
 * a page that cannot, with 40 records pending: it returns the 33 (a short
 * read, more than one batch of the kernel's), the other 7 stay pending, and
 * the next read has them: each page's record once.
 */
TEST_F(uf, read_into_a_partly_writable_buffer)
{
	enum { NR = 40, FIT = 33 };
	struct gmemuf_fault faults[NR + 1];
	struct toucher *t;
	bool seen[NR] = {};
	unsigned long page;
	char *buf;
	int hfd, i;

	t = calloc(NR, sizeof(*t));
	ASSERT_NE(t, NULL);
	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);
	buf = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(buf, MAP_FAILED);
	ASSERT_EQ(mprotect(buf + PAGE, PAGE, PROT_NONE), 0);
	ASSERT_TRUE(touch_pages(t, self->mem, 0, NR));
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), NR);

	ASSERT_EQ(read_records(hfd, (void *)(buf + PAGE - FIT * REC), NR * REC),
		  FIT);
	memcpy(faults, buf + PAGE - FIT * REC, FIT * REC);
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), NR - FIT);
	ASSERT_EQ(read_records(hfd, faults + FIT, (NR - FIT + 1) * REC),
		  NR - FIT);
	EXPECT_EQ(fdinfo_field(self->fd, "gmemuf_pending"), 0);
	for (i = 0; i < NR; i++) {
		page = faults[i].offset / PAGE;
		ASSERT_LT(page, NR);
		EXPECT_FALSE(seen[page]) TH_LOG("page %lu twice", page);
		seen[page] = true;
	}
	populate_and_join(_metadata, self->fd, t, 0, NR);
	munmap(buf, 2 * PAGE);
	close(hfd);
	free(t);
}

/*
 * A handler of poll() and non-blocking read() serves a toucher of every
 * page: exactly one record per page, and every page right.
 */
TEST_F(uf, read_and_poll_serve_every_page)
{
	struct gmemuf_fault faults[8];
	char *range[3] = { self->mem, self->mem + SIZE, self->mem };
	unsigned long records = 0;
	struct pollfd pfd;
	pthread_t toucher;
	void *bad = NULL;
	int hfd, n, i;

	hfd = ioctl(self->fd, GMEMUF_IOC_HANDLER, 0);
	ASSERT_GE(hfd, 0);
	ASSERT_EQ(fcntl(hfd, F_SETFL, O_NONBLOCK), 0);
	pfd = (struct pollfd){ .fd = hfd, .events = POLLIN };
	pthread_create(&toucher, NULL, touch_range, range);
	while (records < NPAGES) {
		ASSERT_EQ(poll(&pfd, 1, 60000), 1)
			TH_LOG("after %lu records", records);
		n = read_records(hfd, faults, sizeof(faults));
		if (n == -EAGAIN)
			continue;
		ASSERT_GT(n, 0);
		for (i = 0; i < n; i++) {
			unsigned long page = faults[i].offset / PAGE;

			ASSERT_EQ(populate(self->fd, page, page), PAGE);
		}
		records += n;
	}
	pthread_join(toucher, &bad);
	EXPECT_EQ((unsigned long)bad, 0);
	EXPECT_EQ(records, NPAGES);
	EXPECT_EQ(count_missing(self->fd, 0, SIZE, NULL), 0);
	EXPECT_EQ(read_records(hfd, faults, sizeof(faults)), -EAGAIN);
	close(hfd);
}

#define TIB	(1ULL << 40)

/* The size limit: EFBIG past it, with nothing allocated, and no WARN. */
TEST(size_limit)
{
	int vm = create_vm();

	ASSERT_GE(vm, 0);
	EXPECT_EQ(create_gmem(vm, GMEMUF_SIZE_MAX + PAGE,
			      GUEST_MEMFD_FLAG_USERFAULT), -1);
	EXPECT_EQ(errno, EFBIG);
	/* 128 TiB took kvcalloc() past INT_MAX bytes: a WARN. */
	EXPECT_EQ(create_gmem(vm, 128 * TIB, GUEST_MEMFD_FLAG_USERFAULT), -1);
	EXPECT_EQ(errno, EFBIG);
	EXPECT_EQ(create_gmem(vm, 128 * TIB, GUEST_MEMFD_FLAG_USERFAULT_EXIT),
		  -1);
	EXPECT_EQ(errno, EFBIG);
	close(vm);
}

/*
 * Page indexes past 2^32, in a file above 16 TiB: they start missing, and an
 * arm there marks those pages, not others. Both went wrong when the bitmap
 * was set with the unsigned int counts of <linux/bitmap.h>.
 */
TEST_F_TIMEOUT(load, pages_past_16_tib, 300)
{
	const __u64 size = 16 * TIB + 64 * PAGE;
	const __u64 far = 16 * TIB + 8 * PAGE;	/* page 2^32 + 8 */
	const __u64 near = 8 * PAGE;		/* its index truncated */
	int vm = create_vm(), fd;
	__u64 bitmap[2];

	ASSERT_GE(vm, 0);
	fd = create_gmem(vm, size, GUEST_MEMFD_FLAG_USERFAULT);
	ASSERT_GE(fd, 0) TH_LOG("%s", strerror(errno));

	/* Every page starts missing, on both sides of 2^32. */
	EXPECT_EQ(count_missing(fd, 0, 128 * PAGE, NULL), 128);
	EXPECT_EQ(count_missing(fd, 16 * TIB - 64 * PAGE, 128 * PAGE, bitmap),
		  128);
	EXPECT_EQ(bitmap[0], ~0ULL);
	EXPECT_EQ(bitmap[1], ~0ULL);

	/* Populate the two pages, then arm the far one alone. */
	ASSERT_EQ(populate(fd, near / PAGE, 1), PAGE);
	ASSERT_EQ(populate(fd, far / PAGE, 2), PAGE);
	EXPECT_EQ(count_missing(fd, far, PAGE, NULL), 0);
	ASSERT_EQ(range_ioctl(fd, GMEMUF_IOC_ARM, far, PAGE, NULL), 0);
	EXPECT_EQ(count_missing(fd, far, PAGE, NULL), 1);
	EXPECT_EQ(count_missing(fd, near, PAGE, NULL), 0);
	/* And disarm there leaves the near page's neighbours missing. */
	ASSERT_EQ(range_ioctl(fd, GMEMUF_IOC_DISARM, far, PAGE, NULL), 0);
	EXPECT_EQ(count_missing(fd, far, PAGE, NULL), 0);
	EXPECT_EQ(count_missing(fd, near + PAGE, PAGE, NULL), 1);
	close(fd);
	close(vm);
}

/*
 * An ioctl over a huge range, in a child killed while it is in the ioctl:
 * the child dies promptly, whichever the ioctl.
 */
static void killed_in_ioctl(struct __test_metadata *_metadata, int fd,
			    unsigned long ioctl_nr, __u64 len)
{
	int i, status, sync[2];
	pid_t pid;
	char c;

	ASSERT_EQ(pipe(sync), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		if (write(sync[1], "x", 1) != 1)
			_exit(2);
		if (ioctl_nr == GMEMUF_IOC_GET_BITMAP)
			count_missing(fd, 0, len, NULL);
		else
			range_ioctl(fd, ioctl_nr, 0, len, NULL);
		/* Done before the kill: the ioctl was not what was tested. */
		_exit(1);
	}
	ASSERT_EQ(read(sync[0], &c, 1), 1);
	close(sync[0]);
	close(sync[1]);
	/* Let it get into the ioctl, which takes minutes over 2^32 pages. */
	usleep(300000);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	/* Dead at once, and certainly within a minute on a slow machine. */
	for (i = 0; i < 600; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		usleep(100000);
	}
	ASSERT_LT(i, 600) TH_LOG("ioctl 0x%lx cannot be killed", ioctl_nr);
	EXPECT_TRUE(WIFSIGNALED(status))
		TH_LOG("ioctl 0x%lx returned before the kill", ioctl_nr);
}

TEST_F_TIMEOUT(load, huge_range_ioctls_are_killable, 600)
{
	const __u64 size = 16 * TIB;
	int vm = create_vm(), fd;

	ASSERT_GE(vm, 0);
	fd = create_gmem(vm, size, GUEST_MEMFD_FLAG_USERFAULT);
	ASSERT_GE(fd, 0) TH_LOG("%s", strerror(errno));

	/* 2^32 pages, all missing. */
	killed_in_ioctl(_metadata, fd, GMEMUF_IOC_WAKE, size);
	killed_in_ioctl(_metadata, fd, GMEMUF_IOC_GET_BITMAP, size);
	killed_in_ioctl(_metadata, fd, GMEMUF_IOC_ARM, size);
	killed_in_ioctl(_metadata, fd, GMEMUF_IOC_DISARM, size);
	close(fd);
	close(vm);
}

/*
 * An arm killed part way marks a prefix of its range missing and drops the
 * contents of those pages alone: a present page past where it stopped
 * keeps its contents, and one it marked missing can be populated again.
 */
TEST_F_TIMEOUT(load, killed_arm_drops_only_what_it_marked, 600)
{
	const __u64 size = 16 * TIB;
	const __u64 last = size - PAGE;
	int vm = create_vm(), fd, i, status;
	char *map;
	pid_t pid;

	ASSERT_GE(vm, 0);
	fd = create_gmem(vm, size, UF_FLAGS);
	ASSERT_GE(fd, 0) TH_LOG("%s", strerror(errno));

	/* The first two pages and the last one present, with contents. */
	ASSERT_EQ(populate(fd, 0, 1), PAGE);
	ASSERT_EQ(populate(fd, 1, 1), PAGE);
	ASSERT_EQ(populate(fd, last / PAGE, 2), PAGE);

	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		range_ioctl(fd, GMEMUF_IOC_ARM, 0, size, NULL);
		_exit(1);
	}
	/*
	 * Killed once it has marked page 1 missing, long before it reaches
	 * the end of 2^32 pages: between its first words and its last.
	 */
	for (i = 0; i < 1200 && !count_missing(fd, PAGE, PAGE, NULL); i++)
		usleep(100000);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_LT(i, 1200) TH_LOG("the arm never marked page 1");
	ASSERT_TRUE(WIFSIGNALED(status)) TH_LOG("the arm ended before the kill");

	/* Not reached: the last page is present, its contents whole. */
	EXPECT_EQ(count_missing(fd, last, PAGE, NULL), 0);
	map = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, last);
	ASSERT_NE(map, MAP_FAILED);
	EXPECT_TRUE(check(map, PAGE, 2));
	munmap(map, PAGE);

	/* Reached: missing, its old contents gone, populated anew. */
	EXPECT_EQ(count_missing(fd, 0, 2 * PAGE, NULL), 2);
	ASSERT_EQ(populate(fd, 0, 3), PAGE);
	map = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(map, MAP_FAILED);
	EXPECT_TRUE(check(map, PAGE, 3));
	munmap(map, PAGE);
	close(fd);
	close(vm);
}

/*
 * Fault injection (CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC): failures injected
 * into the allocations of the calling thread alone (task-filter, with
 * /proc/thread-self/make-it-fail), @times of them.
 */
static bool write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
	close(fd);
	return ok;
}

static long read_long(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY);

	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0)
		buf[0] = 0;
	if (fd >= 0)
		close(fd);
	return buf[0] ? strtol(buf, NULL, 10) : -1;
}

/* Arm @attr (failslab or fail_page_alloc) for @times failures. */
static bool inject_setup(const char *attr, int times)
{
	static const char *const knobs[][2] = {
		{ "task-filter", "Y" }, { "probability", "100" },
		{ "interval", "1" }, { "verbose", "0" },
		{ "ignore-gfp-wait", "N" }, { "space", "0" },
	};
	char path[128], val[16];
	unsigned int i;

	for (i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		snprintf(path, sizeof(path), "/sys/kernel/debug/%s/%s", attr,
			 knobs[i][0]);
		if (!write_file(path, knobs[i][1]))
			return false;
	}
	/*
	 * fail_page_alloc only: single pages too, not only high orders, and
	 * highmem ones, as guest_memfd's folios are (GFP_HIGHUSER).
	 */
	snprintf(path, sizeof(path), "/sys/kernel/debug/%s/min-order", attr);
	if (!access(path, F_OK) && !write_file(path, "0"))
		return false;
	snprintf(path, sizeof(path), "/sys/kernel/debug/%s/ignore-gfp-highmem",
		 attr);
	if (!access(path, F_OK) && !write_file(path, "N"))
		return false;
	snprintf(path, sizeof(path), "/sys/kernel/debug/%s/times", attr);
	snprintf(val, sizeof(val), "%d", times);
	return write_file(path, val);
}

static long inject_times_left(const char *attr)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/kernel/debug/%s/times", attr);
	return read_long(path);
}

static bool make_it_fail(bool on)
{
	return write_file("/proc/thread-self/make-it-fail", on ? "1" : "0");
}

/*
 * A populate (a pwrite, or with @zero a zero-fill) of one of the pages from
 * @first on, with one page allocation of this thread failing. Another
 * allocation on the way may take the failure (the user stack's, a page
 * table's) and the populate then succeeds: try the next page. Returns the
 * page whose populate failed with ENOMEM, -1 if none did in 16 tries.
 */
static long populate_failing(int fd, unsigned long first, bool zero)
{
	static char buf[PAGE];
	unsigned long page;
	__u64 done = 1;
	int r, err;

	for (page = first; page < first + 16; page++) {
		fill(buf, PAGE, page);
		if (!inject_setup("fail_page_alloc", 1) || !make_it_fail(true))
			return -1;
		errno = 0;
		if (zero)
			r = range_ioctl(fd, GMEMUF_IOC_ZERO, page * PAGE, PAGE,
					&done);
		else
			r = pwrite(fd, buf, PAGE, page * PAGE) == PAGE ? 0 : -1;
		err = errno;
		make_it_fail(false);
		if (!r)
			continue;
		/* Failed as a populate fails: nothing done, the page missing. */
		if (err != ENOMEM || (zero && done) ||
		    count_missing(fd, page * PAGE, PAGE, NULL) != 1)
			return -1;
		return page;
	}
	return -1;
}

/* A populate whose folio cannot be allocated: ENOMEM, the page missing. */
TEST_F(uf, fault_injection_populate)
{
	static char buf[PAGE];
	long page, zpage;

	if (access("/sys/kernel/debug/fail_page_alloc", F_OK))
		SKIP(return, "no CONFIG_FAIL_PAGE_ALLOC");
	page = populate_failing(self->fd, 40, false);
	ASSERT_GE(page, 40) TH_LOG("no pwrite failed with ENOMEM");
	zpage = populate_failing(self->fd, 20, true);
	ASSERT_GE(zpage, 20) TH_LOG("no zero-fill failed with ENOMEM");
	EXPECT_EQ(inject_times_left("fail_page_alloc"), 0);

	/* Once memory is there again, both work. */
	fill(buf, PAGE, page);
	EXPECT_EQ(pwrite(self->fd, buf, PAGE, page * PAGE), PAGE);
	EXPECT_EQ(range_ioctl(self->fd, GMEMUF_IOC_ZERO, zpage * PAGE, PAGE,
			      NULL), 0);
	EXPECT_TRUE(check(self->mem + page * PAGE, PAGE, page));
	EXPECT_TRUE(all_zero(self->mem + zpage * PAGE, PAGE));
}

/* A fault whose first record cannot be allocated: retried, delivered. */
static void *failing_toucher_fn(void *arg)
{
	struct toucher *t = arg;

	if (!make_it_fail(true)) {
		t->result = -1;
		t->err = errno;
		return NULL;
	}
	t->tid = gettid();
	memcpy(t->copy, t->addr, PAGE);
	make_it_fail(false);
	t->result = PAGE;
	return NULL;
}

TEST_F(uf, fault_injection_record)
{
	struct handler h;
	struct toucher t;

	if (access("/sys/kernel/debug/failslab", F_OK))
		SKIP(return, "no CONFIG_FAILSLAB");
	ASSERT_EQ(handler_open(&h, self->fd), 0);
	/*
	 * The page table of page 60 is allocated before the injection, by a
	 * touch of a neighbour (one of them shares it): the one allocation
	 * left on the fault's path is then the record's.
	 */
	ASSERT_EQ(populate(self->fd, 59, 59), PAGE);
	ASSERT_EQ(populate(self->fd, 61, 61), PAGE);
	EXPECT_TRUE(check(self->mem + 59 * PAGE, PAGE, 59));
	EXPECT_TRUE(check(self->mem + 61 * PAGE, PAGE, 61));
	ASSERT_TRUE(inject_setup("failslab", 1));
	memset(&t, 0, sizeof(t));
	t.addr = self->mem + 60 * PAGE;
	ASSERT_EQ(pthread_create(&t.thread, NULL, failing_toucher_fn, &t), 0);

	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 60000), 1);
	EXPECT_EQ(h.faults[0].offset, 60 * PAGE);
	/* The injected failure was taken, on the record's allocation. */
	EXPECT_EQ(inject_times_left("failslab"), 0);
	ASSERT_EQ(populate(self->fd, 60, 60), PAGE);
	pthread_join(t.thread, NULL);
	ASSERT_EQ(t.result, PAGE) TH_LOG("%s", strerror(t.err));
	EXPECT_TRUE(check(t.copy, PAGE, 60));
	handler_close(&h);
}

/* A thread that reads @nr pages from @first in turn, its allocations failing. */
struct failing_reader {
	pthread_t thread;
	char *mem;
	unsigned long first;
	int nr;
	unsigned char copy[8][PAGE];
	int err;
};

/*
 * The switch is opened before it is turned on: an open() with it on would
 * allocate, and fail, and the thread would go on failing.
 */
static void *failing_reader_fn(void *arg)
{
	struct failing_reader *r = arg;
	int i, fd;

	fd = open("/proc/thread-self/make-it-fail", O_WRONLY);
	if (fd < 0 || write(fd, "1", 1) != 1) {
		r->err = errno;
		return NULL;
	}
	for (i = 0; i < r->nr; i++)
		memcpy(r->copy[i], r->mem + (r->first + i) * PAGE, PAGE);
	if (write(fd, "0", 1) != 1)
		r->err = errno;
	close(fd);
	return NULL;
}

/*
 * Records take no allocation each: once the file's records have room (one
 * fault posted before), a thread whose every slab allocation fails faults
 * on eight missing pages in turn, and each fault posts its record, is
 * delivered, and ends with the page's contents, with no failure taken.
 * The page tables are there already (pages 47 and 56 touched around the
 * eight), and the copies' memory is written before.
 */
TEST_F(uf, fault_injection_no_allocation_per_fault)
{
	struct failing_reader *r;
	struct handler h;
	struct toucher t;
	int i;

	if (access("/sys/kernel/debug/failslab", F_OK))
		SKIP(return, "no CONFIG_FAILSLAB");
	ASSERT_EQ(handler_open(&h, self->fd), 0);
	toucher_start(&t, self->mem + 40 * PAGE, false);
	ASSERT_EQ(handler_fetch(&h, 16), 0);
	ASSERT_EQ(handler_wait(&h, 60000), 1);
	EXPECT_EQ(h.faults[0].offset, 40 * PAGE);
	ASSERT_EQ(populate(self->fd, 40, 40), PAGE);
	toucher_join(&t);
	EXPECT_TRUE(check(t.copy, PAGE, 40));
	ASSERT_EQ(populate(self->fd, 47, 47), PAGE);
	ASSERT_EQ(populate(self->fd, 56, 56), PAGE);
	EXPECT_TRUE(check(self->mem + 47 * PAGE, PAGE, 47));
	EXPECT_TRUE(check(self->mem + 56 * PAGE, PAGE, 56));

	r = malloc(sizeof(*r));
	ASSERT_NE(r, NULL);
	memset(r, 0, sizeof(*r));
	r->mem = self->mem;
	r->first = 48;
	r->nr = 8;
	ASSERT_TRUE(inject_setup("failslab", 8));
	ASSERT_EQ(pthread_create(&r->thread, NULL, failing_reader_fn, r), 0);
	for (i = 0; i < r->nr; i++) {
		ASSERT_EQ(handler_fetch(&h, 16), 0);
		ASSERT_EQ(handler_wait(&h, 60000), 1);
		EXPECT_EQ(h.faults[0].offset, (48 + i) * PAGE);
		ASSERT_EQ(populate(self->fd, 48 + i, 48 + i), PAGE);
	}
	pthread_join(r->thread, NULL);
	ASSERT_EQ(r->err, 0) TH_LOG("%s", strerror(r->err));
	for (i = 0; i < r->nr; i++)
		EXPECT_TRUE(check(r->copy[i], PAGE, 48 + i));
	/* Not one allocation of the thread was tried, and failed. */
	EXPECT_EQ(inject_times_left("failslab"), 8);
	inject_setup("failslab", 0);
	free(r);
	handler_close(&h);
}

TEST(not_userfault)
{
	int vm = create_vm(), fd;
	struct gmemuf_range r = { .offset = 0, .len = PAGE };
	char buf[PAGE] = { 1 };
	char *mem;

	ASSERT_GE(vm, 0);
	fd = create_gmem(vm, SIZE, GUEST_MEMFD_FLAG_MMAP |
				   GUEST_MEMFD_FLAG_INIT_SHARED);
	ASSERT_GE(fd, 0);
	/* No gmemuf ioctl, no write, and pages read zero as always. */
	EXPECT_EQ(ioctl(fd, GMEMUF_IOC_ARM, &r), -1);
	EXPECT_EQ(errno, ENOTTY);
	EXPECT_EQ(write(fd, buf, PAGE), -1);
	EXPECT_EQ(errno, EINVAL);
	mem = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(mem, MAP_FAILED);
	EXPECT_TRUE(all_zero(mem, PAGE));
	munmap(mem, SIZE);
	close(fd);
	close(vm);
}

TEST_HARNESS_MAIN
