// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf_fuzz: a seeded, time-bounded fuzzer of the gmemuf UAPI.
 *
 *   gmemuf_fuzz [--seconds N] [--seed S] [--procs P] [--threads T]
 *               [--vcpus V] [--hang-seconds H] [--self-test]
 *
 * P worker processes each build a world of their own: a VM (a default VM
 * with shared, mmap-able userfault guest_memfds for even workers, a
 * KVM_X86_SW_PROTECTED_VM with private ones for odd workers where the
 * kernel has that type), three userfault guest_memfds (one in wait mode and
 * one in exit mode bound to memslots the vCPUs touch, one unbound), V vCPU
 * threads, T threads issuing random operations, two long-lived handler
 * threads and a watchdog. The operations cover every entry point: populate
 * by pwrite(), pwritev() and io_uring WRITE, WRITEV and WRITE_FIXED, with
 * good and bad source buffers; ARM, DISARM, ZERO, WAKE and GET_BITMAP; the
 * same with malformed arguments; handlers attached and closed, FETCH good
 * and malformed (unmapped and read-only buffers among them), cancelled, or
 * ended by the ring's exit; handlers that poll() and read() their records
 * instead, with short and unwritable buffers among them; hole punch and allocation; touches of the
 * mappings from user mode and from the kernel, and mappings made and
 * unmapped; pread() of present and missing pages, private memory too;
 * memslots deleted and bound again; private/shared conversion;
 * vCPUs reading and writing pages, kicked by signals, and
 * KVM_PRE_FAULT_MEMORY; guest_memfds created with any flags and sizes (up
 * to 128 TiB: EFBIG past GMEMUF_SIZE_MAX), 256 handlers attached to one
 * (then ENOSPC), WAKE and GET_BITMAP over the whole of a big one; children
 * that receive a guest_memfd over SCM_RIGHTS, attach a handler or wait on
 * a page, and are killed with SIGKILL; handler threads that exit with a
 * FETCH parked, and handlers that never fetch.
 *
 * Each thread's sequence of operations is a function of (seed, process,
 * thread) alone, so the seed reproduces the operations; their interleaving
 * is the scheduler's.
 *
 * The model. Every page written holds a self-describing pattern: a header
 * word with the file's tag and a generation, the page's offset, and words
 * derived from both; a zero page (disarmed, zero-filled, punched) is all
 * zeroes. Operations that change which pages are present, or their
 * contents, take the per-file locks of the pages they touch and update a
 * shadow of each page (present or missing, and its generation) from the
 * result; under those locks the result of every such operation is known
 * exactly, and checked exactly: a populate of a present page must fail
 * with EEXIST (and leave it alone), one of a missing page must succeed;
 * GET_BITMAP must agree with the shadow bit for bit; a present page read
 * back must hold exactly its generation. Operations that can overlap a
 * change (touches, vCPU reads) check the page against the shadow when a
 * per-page sequence count shows no arm, punch or conversion overlapped
 * them, and otherwise that it is a page that was written (no torn,
 * misplaced or invented contents). Malformed arguments must fail with the
 * documented errno. A task waiting for a page (a touch, a vCPU) is
 * published to the watchdog, which resolves the page itself after a while
 * (populate, zero or disarm, as a handler would) and fails the run if the
 * waiter is still there long after its page became present. Any operation
 * that takes longer than the hang limit fails the run as a hang.
 *
 * A failure prints the seed, the process, thread and operation, and the
 * last operations of every thread of that process, and the exit status
 * is 1. The last line is a summary: seed, duration, operations of each
 * kind, failures.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <liburing.h>
#include <linux/falloc.h>
#include <linux/gmemuf.h>
#include <linux/sizes.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"
#include "gmemuf_pattern.h"

#define PG		4096ull
#define WORDS		(PG / sizeof(u64))

#define NR_FILES	3
#define F_WAIT		0	/* bound to a memslot, vCPUs wait */
#define F_EXIT		1	/* bound to a memslot, exit mode */
#define F_FREE		2	/* not bound */
#define NSTRIPES	64
#define MAX_THREADS	64
#define MAX_VCPUS	8
#define NR_HANDLER_THREADS 2
#define OPLOG		24

#define UF_GPA		((u64)SZ_4G)
#define UF_GPA_STRIDE	((u64)SZ_1G)
#define UF_SLOT		10

#define HDR_MAGIC	0x4755460000000000ull	/* "GUF" */
#define HDR_GEN_MASK	0xffffffffull
#define SHARED_TAG	0x80
#define CSUM_INIT	0xcb5e1ec7a9a5b00bull

/*
 * Sizes of guest_memfds the create operation asks for: up to 1 TiB, whose
 * two bitmaps take 64 MiB; and past GMEMUF_SIZE_MAX (32 TiB), up to 128
 * TiB, where a userfault one fails with EFBIG before allocating anything.
 * Not between: the 2 GiB of bitmaps of a 32 TiB file take over a minute
 * to allocate and fill under TCG, in a VM of 4 GiB (gmemuf_test has the
 * 16 TiB cases, one at a time).
 */
#define CREATE_MAX_SHIFT	40
#define CREATE_EFBIG_SHIFT	47
/*
 * WAKE wakes each missing page of its range, and GET_BITMAP reads 64 pages
 * at a time: over the whole of a new file, the sizes that take seconds
 * under TCG, not minutes.
 */
#define WAKE_WHOLE_MAX		(1ull << 30)
#define BITMAP_WHOLE_MAX	(1ull << 40)

static int opt_seconds = 60;
static u64 opt_seed;
static int opt_procs = 2;
static int opt_threads = 3;
static int opt_vcpus = 2;
/* 60 s, times the VM's gmemuf.timeout_scale (the harness's TIMEOUT_SCALE). */
static int opt_hang_s;
/*
 * --self-test: make the shadow lie about one page that is populated, as if
 * the kernel had written another generation, and pass only if the run
 * fails: the checks can fail.
 */
static bool opt_self_test;

/* --- operations, and their counts ---------------------------------- */

#define OPS(X)								\
	X(populate) X(populate_bad) X(populate_race) X(arm) X(disarm)	\
	X(zero) X(wake) X(bitmap) X(bitmap_exact) X(malformed)		\
	X(handler) X(fetch) X(fetch_bad) X(records) X(cancel)		\
	X(read) X(read_bad)						\
	X(ring_exit) X(punch) X(allocate) X(touch) X(kernel_touch)	\
	X(mmap) X(verify) X(memslot) X(convert) X(kick) X(create)	\
	X(enospc) X(child) X(vcpu_read) X(vcpu_write) X(vcpu_exit)	\
	X(vcpu_mmio) X(vcpu_convert) X(prefault) X(resolve) X(tainted)

#define X_ENUM(n) OP_##n,
enum op { OPS(X_ENUM) NR_OPS };
#define X_NAME(n) #n,
static const char *const op_names[] = { OPS(X_NAME) };

/* Shared by every process: counts, and the first failure. */
struct global {
	_Atomic u64 count[NR_OPS];
	_Atomic int failures;
	_Atomic int stop;
	_Atomic int injected;
};
static struct global *G;

/* --- random numbers ----------------------------------------------- */

struct rng {
	u64 s;
};

static u64 splitmix(u64 *s)
{
	u64 z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static u64 rnd(struct rng *r)
{
	return splitmix(&r->s);
}

/* Uniform in [0, n). */
static u64 below(struct rng *r, u64 n)
{
	return n ? rnd(r) % n : 0;
}

static bool chance(struct rng *r, int percent)
{
	return below(r, 100) < (u64)percent;
}

static void rng_init(struct rng *r, u64 seed, u64 a, u64 b)
{
	r->s = seed ^ (a * 0x100000001b3ull) ^ (b << 40) ^ 0x67756666757a7aull;
	rnd(r);
}

/* --- time --------------------------------------------------------- */

static u64 now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static void sleep_ms(u64 ms)
{
	usleep(ms * 1000);
}

/* --- the world of one worker process ------------------------------- */

/* The shadow of one page, in memory shared with the children. */
struct spage {
	_Atomic u32 seq;	/* odd while an arm, punch or conversion runs */
	_Atomic u32 gen;	/* when present: the generation, 0 for zeroes */
	_Atomic u8 present;
	_Atomic u8 shared;	/* private VM: the attribute is shared */
	u8 pad[2];
	_Atomic u64 present_ms;	/* when it last became present */
};

struct ufile {
	int idx;
	int fd;
	int tag;
	u64 size, npages, flags;
	bool exit_mode, mapped, bound_kind;
	u8 *map;		/* a mapping of the whole file, or NULL */
	u8 *shared_backing;	/* private VM: the memslot's shared memory */
	u64 gpa;
	int slot;
	pthread_mutex_t slot_lock;
	_Atomic bool slot_present;
	_Atomic u32 slot_seq;	/* odd while the memslot is deleted */
	pthread_mutex_t stripe[NSTRIPES];
	_Atomic u32 *next_gen;	/* shared: the next generation to write */
	struct spage *pg;	/* shared */
};

struct oplog {
	u64 n;
	u8 op, file;
	u32 page, npages;
	long res;
	int err;
	u64 ms;
};

struct thr {
	int id;
	const char *kind;
	pthread_t thread;
	struct rng rng;
	struct io_uring ring;	/* for writes */
	bool ring_ok;
	u8 *buf;		/* source buffer: 64 pages + a guard */
	u8 *guard;		/* a PROT_NONE page after buf */
	int memfd;		/* for kernel-mode touches */
	struct gmemuf_fault *recbufs;	/* [RECBUFS][FETCH_NR_MAX] */
	unsigned int recbuf_next;
	_Atomic int cur_op;
	_Atomic u64 op_start;	/* 0 when idle */
	_Atomic int wait_file;	/* -1: waits for nothing */
	_Atomic u32 wait_page;
	_Atomic u64 wait_start;
	u64 nops;
	struct oplog log[OPLOG];
	struct kvm_vcpu *vcpu;	/* vCPU threads */
	u64 mailbox_gva;
	u64 stack_top;		/* the vCPU's first RSP, for a post-mortem */
	_Atomic bool started;
	_Atomic bool done;
};

struct world {
	int proc;
	u64 seed;
	bool private_vm;
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpus[MAX_VCPUS];
	int nr_vcpus;
	u64 gmem_flags_supported;
	struct ufile f[NR_FILES];
	struct thr thr[MAX_THREADS];
	int nr_thr;
	u64 deadline;
	u64 resolve_ms;
	_Atomic bool stop;
	bool has_prefault;
	bool has_gmem_read;	/* GMEMUF_FEATURE_GMEM_READ: pread() */
	pthread_mutex_t fail_lock;
	/*
	 * Held over the 256 handlers of enospc_op() and over a fork: a child
	 * that inherits 256 handler files releases them one RCU grace period
	 * each (gmemuf_handler_release() calls synchronize_rcu()), which
	 * takes tens of seconds in the loaded VM. Reported; lift this once
	 * the release no longer waits.
	 */
	pthread_mutex_t fork_lock;
	u8 *unmapped;		/* an address with nothing mapped */
	u8 *readonly;		/* a PROT_READ page */
};

static struct world W;
static __thread struct thr *self;

/* --- failure ------------------------------------------------------- */

static void dump_logs(void)
{
	int i, k;

	for (i = 0; i < W.nr_thr; i++) {
		struct thr *t = &W.thr[i];
		u64 first = t->nops > OPLOG ? t->nops - OPLOG : 0;

		fprintf(stderr, "  thread %d (%s): %llu ops, current %s%s\n",
			t->id, t->kind, (unsigned long long)t->nops,
			atomic_load(&t->op_start) ?
			op_names[atomic_load(&t->cur_op)] : "none",
			atomic_load(&t->wait_file) >= 0 ? " (waiting)" : "");
		for (k = 0; k < OPLOG && first + k < t->nops; k++) {
			struct oplog *l = &t->log[(first + k) % OPLOG];

			fprintf(stderr,
				"    #%llu %s file %u page %u n %u -> %ld errno %d at %llu ms\n",
				(unsigned long long)l->n, op_names[l->op],
				l->file, l->page, l->npages, l->res, l->err,
				(unsigned long long)l->ms);
		}
	}
}

/*
 * Stop the KVM trace that vm-init keeps (its tracing_on file is named in
 * GMEMUF_TRACE_FREEZE), so that it ends with the failure, not with whatever
 * the other processes' vCPUs did until the run was over.
 */
static void trace_freeze(void)
{
	const char *path = getenv("GMEMUF_TRACE_FREEZE");
	int fd;

	if (!path)
		return;
	fd = open(path, O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "0", 1) != 1)
			fprintf(stderr, "gmemuf_fuzz: could not stop the trace\n");
		close(fd);
	}
}

static void __attribute__((format(printf, 1, 2), noreturn))
fail(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&W.fail_lock);
	atomic_fetch_add(&G->failures, 1);
	trace_freeze();
	fprintf(stderr, "gmemuf_fuzz: FAIL seed %llu proc %d thread %d (%s) op #%llu %s: ",
		(unsigned long long)opt_seed, W.proc, self ? self->id : -1,
		self ? self->kind : "main",
		self ? (unsigned long long)self->nops : 0ull,
		self ? op_names[atomic_load(&self->cur_op)] : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  reproduce with: gmemuf_fuzz --seed %llu --procs %d --threads %d --vcpus %d\n",
		(unsigned long long)opt_seed, opt_procs, opt_threads,
		opt_vcpus);
	dump_logs();
	fflush(stderr);
	_exit(1);
}

/* Start an operation: counted, logged, and watched for hangs. */
static struct oplog *op_begin(enum op op, int file, u64 page, u64 npages)
{
	struct thr *t = self;
	struct oplog *l = &t->log[t->nops % OPLOG];

	atomic_store(&t->cur_op, op);
	atomic_store(&t->op_start, now_ms());
	l->n = t->nops++;
	l->op = op;
	l->file = file;
	l->page = page;
	l->npages = npages;
	l->res = 0;
	l->err = 0;
	l->ms = now_ms();
	atomic_fetch_add(&G->count[op], 1);
	return l;
}

static void op_end(struct oplog *l, long res, int err)
{
	l->res = res;
	l->err = err;
	atomic_store(&self->op_start, 0);
}

static void count(enum op op)
{
	atomic_fetch_add(&G->count[op], 1);
}

/* --- page contents ------------------------------------------------- */

static u64 page_word(int tag, u32 gen, u64 off, u64 i)
{
	if (!gen)
		return 0;
	if (i == 0)
		return HDR_MAGIC | (u64)tag << 32 | gen;
	if (i == 1)
		return off;
	return pattern_word(((u64)tag << 32 | gen) * 0x100000001b3ull + 0x5bd1e995,
			    off + i * sizeof(u64));
}

static void fill_page(u64 *w, int tag, u32 gen, u64 off)
{
	u64 i;

	for (i = 0; i < WORDS; i++)
		w[i] = page_word(tag, gen, off, i);
}

static u64 page_csum(int tag, u32 gen, u64 off)
{
	u64 csum = CSUM_INIT, i;

	for (i = 0; i < WORDS; i++)
		csum = pattern_csum(csum, page_word(tag, gen, off, i));
	return csum;
}

/*
 * The generation a page's first word names, if it names one of @f's at
 * all: 0 for a zero word, -1 for anything else.
 */
static long header_gen(struct ufile *f, u64 w0, int tag)
{
	if (!w0)
		return 0;
	if ((w0 & ~((u64)0xff << 32 | HDR_GEN_MASK)) != HDR_MAGIC ||
	    ((w0 >> 32) & 0xff) != (u64)tag || !(w0 & HDR_GEN_MASK) ||
	    (w0 & HDR_GEN_MASK) >= atomic_load(f->next_gen))
		return -1;
	return w0 & HDR_GEN_MASK;
}

/*
 * Check a page read in full. @want_gen >= 0: exactly that generation;
 * -1: any generation written to @f, or zeroes. Returns NULL or why not.
 */
static const char *check_words(struct ufile *f, u64 page, const u64 *w,
			       long want_gen, int tag, char *why, size_t len)
{
	u64 off = page * PG, i;
	long gen = header_gen(f, w[0], tag);

	if (gen < 0) {
		snprintf(why, len, "header 0x%llx is not a page written to file %d (tag 0x%x) at 0x%llx",
			 (unsigned long long)w[0], f->idx, tag,
			 (unsigned long long)off);
		return why;
	}
	if (want_gen >= 0 && gen != want_gen) {
		snprintf(why, len, "generation %ld where %ld was written", gen,
			 want_gen);
		return why;
	}
	for (i = 0; i < WORDS; i++)
		if (w[i] != page_word(tag, gen, off, i)) {
			snprintf(why, len, "word %llu is 0x%llx, generation %ld has 0x%llx",
				 (unsigned long long)i,
				 (unsigned long long)w[i], gen,
				 (unsigned long long)page_word(tag, gen, off, i));
			return why;
		}
	return NULL;
}

/* --- the shadow and its locks ------------------------------------- */

static u64 stripe_mask(u64 page, u64 n)
{
	u64 m = 0, i;

	if (n >= NSTRIPES)
		return ~0ull;
	for (i = 0; i < n; i++)
		m |= 1ull << ((page + i) % NSTRIPES);
	return m;
}

static void lock_pages(struct ufile *f, u64 page, u64 n)
{
	u64 m = stripe_mask(page, n);
	int s;

	for (s = 0; s < NSTRIPES; s++)
		if (m & (1ull << s))
			pthread_mutex_lock(&f->stripe[s]);
}

static void unlock_pages(struct ufile *f, u64 page, u64 n)
{
	u64 m = stripe_mask(page, n);
	int s;

	for (s = NSTRIPES - 1; s >= 0; s--)
		if (m & (1ull << s))
			pthread_mutex_unlock(&f->stripe[s]);
}

/* Around a change that readers must not straddle: arm, punch, convert. */
static void seq_begin(struct ufile *f, u64 page, u64 n)
{
	u64 i;

	for (i = 0; i < n; i++)
		atomic_fetch_add(&f->pg[page + i].seq, 1);
}

static void seq_end(struct ufile *f, u64 page, u64 n)
{
	seq_begin(f, page, n);
}

static void set_present(struct ufile *f, u64 page, u32 gen)
{
	atomic_store(&f->pg[page].gen, gen);
	atomic_store(&f->pg[page].present_ms, now_ms());
	atomic_store(&f->pg[page].present, 1);
}

static u32 new_gen(struct ufile *f)
{
	return atomic_fetch_add(f->next_gen, 1);
}

/* A task is about to wait for @page of @f, or is done waiting. */
static void wait_publish(int file, u64 page)
{
	atomic_store(&self->wait_page, page);
	atomic_store(&self->wait_start, now_ms());
	atomic_store(&self->wait_file, file);
}

static void wait_done(void)
{
	atomic_store(&self->wait_file, -1);
}

/* --- small helpers ------------------------------------------------- */

static int range_ioctl(int fd, unsigned long nr, u64 off, u64 len, u64 *done)
{
	struct gmemuf_range r = { .offset = off, .len = len };
	int ret = ioctl(fd, nr, &r);

	if (done)
		*done = r.done;
	return ret ? -errno : 0;
}

static int get_bitmap(int fd, u64 off, u64 len, u64 *bits, u64 *missing)
{
	struct gmemuf_bitmap b = {
		.offset = off, .len = len, .bitmap = (u64)(uintptr_t)bits,
	};

	if (ioctl(fd, GMEMUF_IOC_GET_BITMAP, &b))
		return -errno;
	*missing = b.missing;
	return 0;
}

/* A random range of @f: mostly short, sometimes long, sometimes all. */
static void pick_range(struct rng *r, struct ufile *f, u64 *page, u64 *n)
{
	u64 max = chance(r, 80) ? 4 : chance(r, 80) ? 64 : f->npages;

	*page = below(r, f->npages);
	*n = 1 + below(r, max);
	if (*page + *n > f->npages)
		*n = f->npages - *page;
	if (chance(r, 3)) {
		*page = 0;
		*n = f->npages;
	}
}

static struct ufile *pick_file(struct rng *r)
{
	return &W.f[below(r, NR_FILES)];
}

/* Wait for one CQE of @ring for up to @ms: its res, or -ETIME. */
static int ring_wait(struct io_uring *ring, int ms, u64 *user_data)
{
	struct __kernel_timespec ts = {
		.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000ll,
	};
	struct io_uring_cqe *cqe;
	int r;

	do {
		r = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
	} while (r == -EINTR);
	if (r)
		return r;
	r = cqe->res;
	if (user_data)
		*user_data = cqe->user_data;
	io_uring_cqe_seen(ring, cqe);
	return r;
}

/* --- populate ----------------------------------------------------- */

enum how { HOW_PWRITE, HOW_PWRITEV, HOW_URING, HOW_URING_V, HOW_FIXED, NR_HOW };

/* Issue a write of @len bytes at @off from @buf, as @how says. */
static long do_write(struct thr *t, int fd, enum how how, const u8 *buf,
		     u64 len, u64 off)
{
	struct iovec iov[8];
	int niov = 0;
	u64 left = len, at = 0;
	struct io_uring_sqe *sqe;
	long r;

	if (how == HOW_PWRITEV || how == HOW_URING_V) {
		/* Split anywhere: iovecs need not be page-aligned. */
		while (left && niov < 7) {
			u64 n = 1 + below(&t->rng, left);

			if (chance(&t->rng, 50))
				n = (n + 511) & ~511ull;
			if (n > left)
				n = left;
			iov[niov].iov_base = (void *)(buf + at);
			iov[niov].iov_len = n;
			niov++;
			at += n;
			left -= n;
		}
		if (left) {
			iov[niov].iov_base = (void *)(buf + at);
			iov[niov].iov_len = left;
			niov++;
		}
	}
	if (how == HOW_PWRITE) {
		r = pwrite(fd, buf, len, off);
		return r < 0 ? -errno : r;
	}
	if (how == HOW_PWRITEV) {
		r = pwritev(fd, iov, niov, off);
		return r < 0 ? -errno : r;
	}
	if (!t->ring_ok)
		return do_write(t, fd, HOW_PWRITE, buf, len, off);
	sqe = io_uring_get_sqe(&t->ring);
	if (how == HOW_URING)
		io_uring_prep_write(sqe, fd, buf, len, off);
	else if (how == HOW_URING_V)
		io_uring_prep_writev(sqe, fd, iov, niov, off);
	else
		io_uring_prep_write_fixed(sqe, fd, buf, len, off, 0);
	sqe->user_data = 1;
	r = io_uring_submit(&t->ring);
	if (r != 1)
		fail("io_uring_submit gave %ld", r);
	r = ring_wait(&t->ring, opt_hang_s * 1000, NULL);
	if (r == -ETIME)
		fail("an io_uring write to the guest_memfd did not complete in %d s",
		     opt_hang_s);
	return r;
}

/*
 * What a populate of [page, page + n) must return, given the shadow and,
 * with @bad_at < n, a source that cannot be read from page @bad_at on:
 * the bytes written, or -errno; *alt is another acceptable answer or 1.
 */
static void verify_locked(struct ufile *f, u64 page, u64 n);

static long expect_populate(struct ufile *f, u64 page, u64 n, u64 bad_at,
			    long *alt)
{
	u64 i;

	*alt = 1;
	for (i = 0; i < n; i++) {
		bool present = atomic_load(&f->pg[page + i].present);

		if (i == bad_at) {
			/* The source is faulted in before the page is looked at. */
			if (!i && present)
				*alt = -EEXIST;
			return i ? (long)(i * PG) : -EFAULT;
		}
		if (present)
			return i ? (long)(i * PG) : -EEXIST;
	}
	return n * PG;
}

/*
 * Populate [page, page + n) of @f, all of its pages locked, and check the
 * result against the shadow.
 */
static void populate_locked(struct thr *t, struct ufile *f, u64 page, u64 n,
			    enum how how, struct oplog *l)
{
	u32 gen[64];
	long want, alt, r;
	u64 i;

	if (n > 64)
		n = 64;
	for (i = 0; i < n; i++) {
		gen[i] = new_gen(f);
		fill_page((u64 *)(t->buf + i * PG), f->tag, gen[i],
			  (page + i) * PG);
	}
	want = expect_populate(f, page, n, n, &alt);
	r = do_write(t, f->fd, how, t->buf, n * PG, page * PG);
	if (l) {
		l->res = r;
		l->npages = n;
	}
	if (r != want)
		fail("populate (how %d) of file %d pages [%llu, +%llu) returned %ld, wanted %ld",
		     how, f->idx, (unsigned long long)page,
		     (unsigned long long)n, r, want);
	for (i = 0; r > 0 && i < (u64)r / PG; i++)
		set_present(f, page + i, gen[i]);
	if (opt_self_test && r > 0 && f->mapped &&
	    !atomic_exchange(&G->injected, 1)) {
		printf("gmemuf_fuzz: self-test: the shadow of page %llu of file %d says generation %u, the page holds %u\n",
		       (unsigned long long)page, f->idx, gen[0] + 1, gen[0]);
		fflush(stdout);
		atomic_store(&f->pg[page].gen, gen[0] + 1);
		verify_locked(f, page, 1);
	}
}

/*
 * A populate from a good source, or from one whose page @bad_at is the
 * PROT_NONE guard page: the good pages are copied to just below it.
 */
static void populate_op(struct thr *t, bool bad)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page, n, bad_at, i;
	enum how how = below(&t->rng, NR_HOW);
	struct oplog *l;

	pick_range(&t->rng, f, &page, &n);
	if (n > 16)
		n = 16;
	bad_at = bad ? below(&t->rng, n) : n;
	l = op_begin(bad ? OP_populate_bad : OP_populate, f->idx, page, n);
	if (how == HOW_FIXED && bad)
		how = HOW_PWRITE;	/* a fixed buffer is always readable */
	lock_pages(f, page, n);
	if (bad) {
		/* The good pages just below the guard, the guard after them. */
		u32 gen[16];
		long want, alt, r;

		for (i = 0; i < bad_at; i++) {
			gen[i] = new_gen(f);
			fill_page((u64 *)(t->guard - (bad_at - i) * PG), f->tag,
				  gen[i], (page + i) * PG);
		}
		want = expect_populate(f, page, n, bad_at, &alt);
		r = do_write(t, f->fd, how, t->guard - bad_at * PG, n * PG,
			     page * PG);
		l->res = r;
		if (r != want && r != alt)
			fail("populate (how %d) of file %d pages [%llu, +%llu) with the source unreadable from page %llu returned %ld, wanted %ld",
			     how, f->idx, (unsigned long long)page,
			     (unsigned long long)n,
			     (unsigned long long)bad_at, r, want);
		for (i = 0; r > 0 && i < (u64)r / PG; i++)
			set_present(f, page + i, gen[i]);
	} else {
		populate_locked(t, f, page, n, how, l);
	}
	unlock_pages(f, page, n);
	op_end(l, l->res, 0);
}

/*
 * Two populates of one page at once, one through io_uring and one with
 * pwrite(): exactly one wins, and the page holds the winner's contents.
 */
struct racer {
	int fd;
	u64 off;
	const void *buf;
	long r;
};

static void *racer_thread(void *arg)
{
	struct racer *rc = arg;

	rc->r = pwrite(rc->fd, rc->buf, PG, rc->off);
	if (rc->r < 0)
		rc->r = -errno;
	return NULL;
}

static void populate_race_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page = below(&t->rng, f->npages);
	u32 g1 = new_gen(f), g2 = new_gen(f);
	struct racer rc;
	pthread_t th;
	struct oplog *l;
	long r;
	bool was;

	l = op_begin(OP_populate_race, f->idx, page, 1);
	lock_pages(f, page, 1);
	was = atomic_load(&f->pg[page].present);
	fill_page((u64 *)t->buf, f->tag, g1, page * PG);
	fill_page((u64 *)(t->buf + PG), f->tag, g2, page * PG);
	rc = (struct racer){ .fd = f->fd, .off = page * PG, .buf = t->buf + PG };
	if (pthread_create(&th, NULL, racer_thread, &rc))
		fail("pthread_create");
	r = do_write(t, f->fd, chance(&t->rng, 50) ? HOW_URING : HOW_PWRITE,
		     t->buf, PG, page * PG);
	pthread_join(th, NULL);
	l->res = r;
	if (was) {
		if (r != -EEXIST || rc.r != -EEXIST)
			fail("two populates of present page %llu of file %d returned %ld and %ld, wanted EEXIST",
			     (unsigned long long)page, f->idx, r, rc.r);
	} else if (!((r == (long)PG && rc.r == -EEXIST) ||
		     (r == -EEXIST && rc.r == (long)PG))) {
		fail("two populates of missing page %llu of file %d returned %ld and %ld: wanted one 4096 and one EEXIST",
		     (unsigned long long)page, f->idx, r, rc.r);
	} else {
		set_present(f, page, r == (long)PG ? g1 : g2);
	}
	unlock_pages(f, page, 1);
	op_end(l, r, 0);
}

/* --- range ioctls -------------------------------------------------- */

static void arm_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page, n, i;
	struct oplog *l;
	int r;

	pick_range(&t->rng, f, &page, &n);
	l = op_begin(OP_arm, f->idx, page, n);
	lock_pages(f, page, n);
	seq_begin(f, page, n);
	r = range_ioctl(f->fd, GMEMUF_IOC_ARM, page * PG, n * PG, NULL);
	if (r)
		fail("ARM of file %d [%llu, +%llu) pages: %d", f->idx,
		     (unsigned long long)page, (unsigned long long)n, r);
	for (i = 0; i < n; i++)
		atomic_store(&f->pg[page + i].present, 0);
	seq_end(f, page, n);
	unlock_pages(f, page, n);
	op_end(l, r, 0);
}

static void disarm_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page, n, i;
	struct oplog *l;
	int r;

	pick_range(&t->rng, f, &page, &n);
	l = op_begin(OP_disarm, f->idx, page, n);
	lock_pages(f, page, n);
	r = range_ioctl(f->fd, GMEMUF_IOC_DISARM, page * PG, n * PG, NULL);
	if (r)
		fail("DISARM of file %d [%llu, +%llu) pages: %d", f->idx,
		     (unsigned long long)page, (unsigned long long)n, r);
	for (i = 0; i < n; i++)
		if (!atomic_load(&f->pg[page + i].present))
			set_present(f, page + i, 0);
	unlock_pages(f, page, n);
	op_end(l, r, 0);
}

/* ZERO of a locked range: checked against the shadow. */
static void zero_locked(struct ufile *f, u64 page, u64 n, struct oplog *l)
{
	u64 done = 0, i, want = 0;
	int r, want_r;

	while (want < n && !atomic_load(&f->pg[page + want].present))
		want++;
	want_r = want ? 0 : -EEXIST;
	r = range_ioctl(f->fd, GMEMUF_IOC_ZERO, page * PG, n * PG, &done);
	if (l)
		l->res = r ? r : (long)done;
	if (r != want_r || done != want * PG)
		fail("ZERO of file %d [%llu, +%llu) pages returned %d, done %llu; wanted %d, done %llu",
		     f->idx, (unsigned long long)page, (unsigned long long)n,
		     r, (unsigned long long)done, want_r,
		     (unsigned long long)(want * PG));
	for (i = 0; i < want; i++)
		set_present(f, page + i, 0);
}

static void zero_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page, n;
	struct oplog *l;

	pick_range(&t->rng, f, &page, &n);
	l = op_begin(OP_zero, f->idx, page, n);
	lock_pages(f, page, n);
	zero_locked(f, page, n, l);
	unlock_pages(f, page, n);
	op_end(l, l->res, 0);
}

static void wake_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page, n;
	struct oplog *l;
	int r;

	pick_range(&t->rng, f, &page, &n);
	l = op_begin(OP_wake, f->idx, page, n);
	r = range_ioctl(f->fd, GMEMUF_IOC_WAKE, page * PG, n * PG, NULL);
	if (r)
		fail("WAKE of file %d: %d", f->idx, r);
	op_end(l, r, 0);
}

/*
 * GET_BITMAP. Locked: exactly the shadow. Unlocked: a consistent answer
 * (the count is the bits' popcount, bits past the range clear).
 */
static void bitmap_op(struct thr *t, bool exact)
{
	struct ufile *f = pick_file(&t->rng);
	u64 bits[1024 / 64 + 2], page, n, missing = 0, want = 0, i, words;
	struct oplog *l;
	int r;

	pick_range(&t->rng, f, &page, &n);
	if (n > 1024)
		n = 1024;
	words = (n + 63) / 64;
	memset(bits, 0xa5, sizeof(bits));
	l = op_begin(exact ? OP_bitmap_exact : OP_bitmap, f->idx, page, n);
	if (exact)
		lock_pages(f, page, n);
	r = get_bitmap(f->fd, page * PG, n * PG, bits, &missing);
	if (r)
		fail("GET_BITMAP of file %d [%llu, +%llu): %d", f->idx,
		     (unsigned long long)page, (unsigned long long)n, r);
	if (bits[words] != 0xa5a5a5a5a5a5a5a5ull)
		fail("GET_BITMAP of %llu pages wrote past its %llu words",
		     (unsigned long long)n, (unsigned long long)words);
	for (i = 0; i < words * 64; i++) {
		bool bit = bits[i / 64] >> (i % 64) & 1;

		if (i >= n) {
			if (bit)
				fail("GET_BITMAP set bit %llu past its range of %llu pages",
				     (unsigned long long)i,
				     (unsigned long long)n);
			continue;
		}
		want += bit;
		if (exact && bit == !!atomic_load(&f->pg[page + i].present))
			fail("GET_BITMAP says page %llu of file %d is %s, the shadow says %s",
			     (unsigned long long)(page + i), f->idx,
			     bit ? "missing" : "present",
			     bit ? "present" : "missing");
	}
	if (missing != want)
		fail("GET_BITMAP counted %llu missing pages, its bits %llu",
		     (unsigned long long)missing, (unsigned long long)want);
	if (exact)
		unlock_pages(f, page, n);
	op_end(l, missing, 0);
}

/* --- malformed arguments ------------------------------------------ */

static const unsigned long range_ioctls[] = {
	GMEMUF_IOC_ARM, GMEMUF_IOC_DISARM, GMEMUF_IOC_ZERO, GMEMUF_IOC_WAKE,
};

static void expect_err(long r, int want, const char *what, u64 a, u64 b)
{
	if (r != -want)
		fail("%s (0x%llx, 0x%llx) returned %ld, wanted -%d (%s)", what,
		     (unsigned long long)a, (unsigned long long)b, r, want,
		     strerror(want));
}

/* A range that is not page-aligned, empty, past the end, or overflows. */
static void bad_range(struct rng *r, struct ufile *f, u64 *off, u64 *len)
{
	switch (below(r, 6)) {
	case 0:
		*off = below(r, f->npages) * PG + 1 + below(r, PG - 1);
		*len = PG;
		break;
	case 1:
		*off = 0;
		*len = PG * (1 + below(r, 4)) - 1 - below(r, PG - 1);
		break;
	case 2:
		*off = below(r, f->npages) * PG;
		*len = 0;
		break;
	case 3:
		*off = f->size - PG * below(r, 2);
		*len = 2 * PG;
		break;
	case 4:
		*off = ~0ull & ~(PG - 1);
		*len = 2 * PG;
		break;
	default:
		*off = PG;
		*len = ~0ull & ~(PG - 1);
		break;
	}
}

static void malformed_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	struct gmemuf_range rg = {};
	struct gmemuf_bitmap bm = {};
	u64 off, len;
	struct oplog *l;
	int which = below(&t->rng, 12);
	long r;

	l = op_begin(OP_malformed, f->idx, which, 0);
	bad_range(&t->rng, f, &off, &len);
	switch (which) {
	case 0:	/* a bad range */
		rg.offset = off;
		rg.len = len;
		r = ioctl(f->fd, range_ioctls[below(&t->rng, 4)], &rg) ? -errno : 0;
		expect_err(r, EINVAL, "range ioctl with a bad range", off, len);
		break;
	case 1:	/* flags or done not 0 */
		rg.offset = 0;
		rg.len = PG;
		if (chance(&t->rng, 50))
			rg.flags = 1ull << below(&t->rng, 64);
		else
			rg.done = 1 + below(&t->rng, 1 << 20);
		r = ioctl(f->fd, range_ioctls[below(&t->rng, 4)], &rg) ? -errno : 0;
		expect_err(r, EINVAL, "range ioctl with flags/done", rg.flags,
			   rg.done);
		break;
	case 2:	/* an unmapped argument */
		r = ioctl(f->fd, range_ioctls[below(&t->rng, 4)], W.unmapped) ?
		    -errno : 0;
		expect_err(r, EFAULT, "range ioctl with an unmapped argument",
			   (u64)(uintptr_t)W.unmapped, 0);
		break;
	case 3:	/* a bad bitmap range, or missing not 0 */
		bm.offset = off;
		bm.len = len;
		if (chance(&t->rng, 30)) {
			bm.offset = 0;
			bm.len = PG;
			bm.missing = 1 + below(&t->rng, 100);
		}
		r = ioctl(f->fd, GMEMUF_IOC_GET_BITMAP, &bm) ? -errno : 0;
		expect_err(r, EINVAL, "GET_BITMAP with a bad range or missing",
			   bm.offset, bm.len);
		break;
	case 4:	/* a bitmap that cannot be written */
		bm.offset = 0;
		bm.len = PG * (1 + below(&t->rng, f->npages));
		bm.bitmap = (u64)(uintptr_t)(chance(&t->rng, 50) ? W.unmapped :
					    W.readonly);
		r = ioctl(f->fd, GMEMUF_IOC_GET_BITMAP, &bm) ? -errno : 0;
		expect_err(r, EFAULT, "GET_BITMAP into an unwritable buffer",
			   bm.bitmap, bm.len);
		break;
	case 5:	/* an unmapped bitmap argument */
		r = ioctl(f->fd, GMEMUF_IOC_GET_BITMAP, W.unmapped) ? -errno : 0;
		expect_err(r, EFAULT, "GET_BITMAP with an unmapped argument",
			   0, 0);
		break;
	case 6:	/* HANDLER with an argument */
		off = 1 + below(&t->rng, 1000);
		r = ioctl(f->fd, GMEMUF_IOC_HANDLER, off);
		if (r >= 0)
			close(r);
		r = r < 0 ? -errno : r;
		expect_err(r, EINVAL, "HANDLER with an argument", off, 0);
		break;
	case 7:	/* an unknown ioctl number */
		off = _IOWR(KVMIO, 0xf6 + below(&t->rng, 2), struct gmemuf_range);
		if (chance(&t->rng, 50))
			off = _IOWR(KVMIO, 0xf0, struct gmemuf_bitmap) + (1 << 16);
		r = ioctl(f->fd, off, W.readonly) ? -errno : 0;
		expect_err(r, ENOTTY, "an unknown ioctl", off, 0);
		break;
	case 8:	/* a write that is not page-aligned or not within the file */
		switch (below(&t->rng, 3)) {
		case 0:
			off = below(&t->rng, f->npages) * PG + 1 +
			      below(&t->rng, PG - 1);
			len = PG;
			break;
		case 1:
			off = 0;
			len = PG * (1 + below(&t->rng, 4)) - 1 -
			      below(&t->rng, PG - 1);
			break;
		default:
			off = f->size - PG * below(&t->rng, 2);
			len = 2 * PG;
			break;
		}
		r = pwrite(f->fd, t->buf, len, off);
		r = r < 0 ? -errno : r;
		expect_err(r, EINVAL, "pwrite with a bad range", off, len);
		break;
	case 9:	/* a write from an unmapped buffer: nothing changes */
		lock_pages(f, 0, 1);
		r = pwrite(f->fd, W.unmapped, PG, 0);
		r = r < 0 ? -errno : r;
		if (r != -EFAULT &&
		    !(r == -EEXIST && atomic_load(&f->pg[0].present)))
			fail("pwrite from an unmapped buffer returned %ld", r);
		unlock_pages(f, 0, 1);
		break;
	case 10: /* fallocate with a bad range or mode */
		r = fallocate(f->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			      below(&t->rng, f->size) | 1, PG) ? -errno : 0;
		expect_err(r, EINVAL, "unaligned PUNCH_HOLE", 0, 0);
		r = fallocate(f->fd, 0, 0, PG) ? -errno : 0;
		expect_err(r, EOPNOTSUPP, "fallocate without KEEP_SIZE", 0, 0);
		break;
	default: /* write() with an unaligned length */
		r = write(f->fd, t->buf, 1 + below(&t->rng, PG - 1));
		r = r < 0 ? -errno : r;
		expect_err(r, EINVAL, "write() of part of a page", 0, 0);
		break;
	}
	op_end(l, r, 0);
}

/* --- holes ------------------------------------------------------- */

static void punch_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	u64 page, n, i;
	bool alloc = chance(&t->rng, 30);
	struct oplog *l;
	int r;

	pick_range(&t->rng, f, &page, &n);
	l = op_begin(alloc ? OP_allocate : OP_punch, f->idx, page, n);
	lock_pages(f, page, n);
	if (alloc) {
		/*
		 * Allocating pages leaves the bitmap alone. It stops with
		 * EINTR when a signal, or io_uring's task work, is pending.
		 */
		do {
			r = fallocate(f->fd, FALLOC_FL_KEEP_SIZE, page * PG,
				      n * PG);
		} while (r && errno == EINTR);
		if (r)
			fail("fallocate(KEEP_SIZE) of file %d: errno %d",
			     f->idx, errno);
	} else {
		seq_begin(f, page, n);
		r = fallocate(f->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			      page * PG, n * PG);
		if (r)
			fail("PUNCH_HOLE of file %d: errno %d", f->idx, errno);
		for (i = 0; i < n; i++)
			if (atomic_load(&f->pg[page + i].present))
				atomic_store(&f->pg[page + i].gen, 0);
		seq_end(f, page, n);
	}
	unlock_pages(f, page, n);
	op_end(l, r, 0);
}

/* --- touching the mappings ---------------------------------------- */

/* The shadow's view of a page, taken before it is read. */
struct snap {
	u32 seq;
	u32 slot_seq;
	bool present, shared;
	u32 gen;
};

static void snap_take(struct ufile *f, u64 page, struct snap *s)
{
	s->seq = atomic_load(&f->pg[page].seq);
	s->slot_seq = atomic_load(&f->slot_seq);
	s->present = atomic_load(&f->pg[page].present);
	s->gen = atomic_load(&f->pg[page].gen);
	s->shared = atomic_load(&f->pg[page].shared);
}

/* Did an arm, punch or conversion overlap the read? */
static bool snap_tainted(struct ufile *f, u64 page, struct snap *s)
{
	return (s->seq & 1) || atomic_load(&f->pg[page].seq) != s->seq;
}

/* Check a page read from a mapping, or through the kernel. */
static void check_read(struct ufile *f, u64 page, const u64 *w,
		       struct snap *s, const char *how)
{
	char why[200];

	/* An arm, punch or conversion overlapped it: it may be torn. */
	if (snap_tainted(f, page, s)) {
		count(OP_tainted);
		return;
	}
	if (check_words(f, page, w, s->present ? (long)s->gen : -1, f->tag,
			why, sizeof(why)))
		fail("%s of page %llu of file %d: %s (shadow: %s, gen %u)",
		     how, (unsigned long long)page, f->idx, why,
		     s->present ? "present" : "missing", s->gen);
}

static void touch_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, NR_FILES)];
	u64 buf[WORDS], page, n, i;
	bool write = chance(&t->rng, 30);
	struct oplog *l;
	struct snap s;

	if (!f->mapped)
		return;
	pick_range(&t->rng, f, &page, &n);
	if (n > 4)
		n = 4;
	l = op_begin(OP_touch, f->idx, page, n);
	for (i = 0; i < n; i++) {
		volatile u64 *p = (volatile u64 *)(f->map + (page + i) * PG);
		u64 k;

		snap_take(f, page + i, &s);
		wait_publish(f->idx, page + i);
		if (write)	/* a write fault that changes nothing */
			__atomic_fetch_or((u64 *)p, 0, __ATOMIC_SEQ_CST);
		for (k = 0; k < WORDS; k++)
			buf[k] = p[k];
		wait_done();
		check_read(f, page + i, buf, &s, "a read of the mapping");
	}
	op_end(l, 0, 0);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ	22
#define MADV_POPULATE_WRITE	23
#endif

/*
 * The kernel touches the mapping: a kernel-mode fault that waits. By
 * copy_from_user() (a write to a memfd from the mapping), by GUP
 * (process_vm_readv() of our own memory), or by MADV_POPULATE_READ and
 * _WRITE (GUP without a copy).
 */
static void kernel_touch_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, NR_FILES)];
	u64 buf[WORDS], page = below(&t->rng, f->npages);
	int how = below(&t->rng, 4);
	struct iovec local = { .iov_base = buf, .iov_len = PG };
	struct iovec remote;
	struct oplog *l;
	struct snap s;
	long r;

	if (!f->mapped)
		return;
	remote.iov_base = f->map + page * PG;
	remote.iov_len = PG;
	l = op_begin(OP_kernel_touch, f->idx, page, how);
	snap_take(f, page, &s);
	wait_publish(f->idx, page);
	switch (how) {
	case 0:
		r = pwrite(t->memfd, f->map + page * PG, PG, 0);
		break;
	case 1:
		r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		/* No CONFIG_CROSS_MEMORY_ATTACH: copy_from_user() instead. */
		if (r < 0 && errno == ENOSYS) {
			how = 0;
			r = pwrite(t->memfd, f->map + page * PG, PG, 0);
		}
		break;
	default:
		r = madvise(f->map + page * PG, PG, how == 2 ?
			    MADV_POPULATE_READ : MADV_POPULATE_WRITE);
		r = r ? -1 : (long)PG;
		break;
	}
	wait_done();
	if (r != (long)PG)
		fail("a kernel touch (%s) of page %llu of file %d returned %ld errno %d",
		     how == 0 ? "copy_from_user" : how == 1 ? "process_vm_readv" :
		     how == 2 ? "MADV_POPULATE_READ" : "MADV_POPULATE_WRITE",
		     (unsigned long long)page, f->idx, r, errno);
	if (how == 0 && pread(t->memfd, buf, PG, 0) != (long)PG)
		fail("pread of the memfd");
	if (how <= 1)
		check_read(f, page, buf, &s, "a kernel copy from the mapping");
	op_end(l, r, 0);
}

/* A mapping of its own: made, touched, unmapped. */
static void mmap_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, NR_FILES)];
	u64 page, n, i, k, buf[WORDS];
	struct oplog *l;
	struct snap s;
	u8 *m;

	if (!f->mapped)
		return;
	pick_range(&t->rng, f, &page, &n);
	l = op_begin(OP_mmap, f->idx, page, n);
	m = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd,
		 page * PG);
	if (m == MAP_FAILED)
		fail("mmap of file %d at page %llu, %llu pages: errno %d",
		     f->idx, (unsigned long long)page, (unsigned long long)n,
		     errno);
	for (i = 0; i < n && i < 2; i++) {
		u64 p = below(&t->rng, n);

		snap_take(f, page + p, &s);
		wait_publish(f->idx, page + p);
		for (k = 0; k < WORDS; k++)
			buf[k] = ((volatile u64 *)(m + p * PG))[k];
		wait_done();
		check_read(f, page + p, buf, &s, "a read of a new mapping");
	}
	if (munmap(m, n * PG))
		fail("munmap: errno %d", errno);
	/* Beyond the end of the file: EINVAL or a SIGBUS mapping, not a hang. */
	op_end(l, 0, 0);
}

/*
 * Read back the present pages of [page, page + n), with their locks held:
 * exactly what the shadow says.
 */
static void verify_locked(struct ufile *f, u64 page, u64 n)
{
	char why[200];
	u64 i;

	for (i = 0; i < n; i++) {
		const u64 *w = (const u64 *)(f->map + (page + i) * PG);

		/* Never touch a missing page with locks held. */
		if (!atomic_load(&f->pg[page + i].present))
			continue;
		if (check_words(f, page + i, w, atomic_load(&f->pg[page + i].gen),
				f->tag, why, sizeof(why)))
			fail("present page %llu of file %d read back: %s",
			     (unsigned long long)(page + i), f->idx, why);
	}
}

/*
 * The same with pread(), mapped or not (private memory too): a present page
 * reads exactly what the shadow says; a missing one fails with ENODATA, or,
 * if the kernel has it already (a populate whose shadow update is still to
 * come), reads a whole page.
 */
static void verify_pread_locked(struct ufile *f, u64 page, u64 n)
{
	static __thread u64 buf[WORDS];
	char why[200];
	ssize_t r;
	u64 i;

	for (i = 0; i < n; i++) {
		bool present = atomic_load(&f->pg[page + i].present);

		r = pread(f->fd, buf, PG, (page + i) * PG);
		if (r != (ssize_t)PG && (present || r != -1 || errno != ENODATA))
			fail("pread of %s page %llu of file %d: %zd errno %d",
			     present ? "present" : "missing",
			     (unsigned long long)(page + i), f->idx, r, errno);
		if (present &&
		    check_words(f, page + i, buf,
				atomic_load(&f->pg[page + i].gen), f->tag, why,
				sizeof(why)))
			fail("present page %llu of file %d read with pread: %s",
			     (unsigned long long)(page + i), f->idx, why);
	}
}

static void verify_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, NR_FILES)];
	struct oplog *l;
	u64 page, n;

	if (!f->mapped && !W.has_gmem_read)
		return;
	pick_range(&t->rng, f, &page, &n);
	if (n > 64)
		n = 64;
	l = op_begin(OP_verify, f->idx, page, n);
	lock_pages(f, page, n);
	if (f->mapped)
		verify_locked(f, page, n);
	if (W.has_gmem_read)
		verify_pread_locked(f, page, n);
	unlock_pages(f, page, n);
	op_end(l, 0, 0);
}

/* --- handlers ----------------------------------------------------- */

#define FETCH_NR_MAX	64

/*
 * A ring may outlive the session that closed it, while a child forked
 * meanwhile holds its fd: its fetches may still write their records. So a
 * session's record buffer is not used again until RECBUFS sessions later.
 */
#define RECBUFS		64

struct hctx {
	int hfd;
	struct io_uring ring;
	struct ufile *f;
	struct gmemuf_fault *rec;	/* [FETCH_NR_MAX] */
	int parked;		/* good fetches outstanding */
	int other;		/* other commands outstanding */
};

/* user_data: good fetches, fetches into bad buffers, cancels, malformed. */
#define UD_FETCH	1
#define UD_OTHER	2
#define UD_CANCEL	3
#define UD_BAD		4

static void fetch_sqe(struct hctx *h, u32 cmd_op, u64 addr, u32 nr,
		      u32 flags, int fd, u64 ud)
{
	struct gmemuf_fetch fetch = { .addr = addr, .nr = nr, .flags = flags };
	struct io_uring_sqe *sqe = io_uring_get_sqe(&h->ring);

	if (!sqe)
		fail("no SQE");
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
	sqe->cmd_op = cmd_op;
	memcpy(sqe->cmd, &fetch, sizeof(fetch));
	sqe->user_data = ud;
}

static void submit(struct hctx *h)
{
	int r = io_uring_submit(&h->ring);

	if (r < 0)
		fail("io_uring_submit: %d", r);
}

static void park_fetch(struct hctx *h)
{
	fetch_sqe(h, GMEMUF_CMD_FETCH, (u64)(uintptr_t)h->rec, FETCH_NR_MAX, 0,
		  h->hfd, UD_FETCH);
	submit(h);
	h->parked++;
}

/* A record must name a page of the file and say who touched it. */
static void check_record(struct ufile *f, const struct gmemuf_fault *r)
{
	const u32 known = GMEMUF_FAULT_READ | GMEMUF_FAULT_WRITE |
			  GMEMUF_FAULT_EXEC | GMEMUF_FAULT_MMAP_USER |
			  GMEMUF_FAULT_MMAP_KERNEL | GMEMUF_FAULT_VCPU |
			  GMEMUF_FAULT_PRIVATE;
	u32 src = r->flags & (GMEMUF_FAULT_MMAP_USER | GMEMUF_FAULT_MMAP_KERNEL |
			      GMEMUF_FAULT_VCPU);

	if (r->offset % PG || r->offset >= f->size || r->reserved ||
	    (r->flags & ~known) || __builtin_popcount(src) != 1 ||
	    ((r->flags & GMEMUF_FAULT_PRIVATE) &&
	     (src != GMEMUF_FAULT_VCPU || !W.private_vm)) ||
	    (src != GMEMUF_FAULT_VCPU && !f->mapped))
		fail("bad record from file %d: offset 0x%llx flags 0x%x reserved 0x%x",
		     f->idx, (unsigned long long)r->offset, r->flags,
		     r->reserved);
}

/* Resolve a record as a handler would: populate its page if missing. */
static void serve(struct thr *t, struct ufile *f, u64 page)
{
	lock_pages(f, page, 1);
	if (!atomic_load(&f->pg[page].present)) {
		if (chance(&t->rng, 90))
			populate_locked(t, f, page, 1,
					below(&t->rng, NR_HOW), NULL);
		else
			zero_locked(f, page, 1, NULL);
	}
	unlock_pages(f, page, 1);
}

/*
 * One malformed command on the handler file (or on something that is not
 * one); it must complete at once with the errno it earns.
 */
static void bad_fetch(struct thr *t, struct hctx *h)
{
	u64 addr = (u64)(uintptr_t)h->rec;
	u32 nr = 1, flags = 0, cmd = GMEMUF_CMD_FETCH;
	int fd = h->hfd, want = EINVAL, r;
	u64 ud;

	switch (below(&t->rng, 6)) {
	case 0:
		nr = chance(&t->rng, 50) ? 0 : GMEMUF_FETCH_MAX + 1 +
						below(&t->rng, 1 << 20);
		break;
	case 1:
		addr = 0;
		break;
	case 2:
		flags = 1u << below(&t->rng, 32);
		break;
	case 3:
		cmd = GMEMUF_CMD_FETCH + 1 + below(&t->rng, 100);
		break;
	case 4:
		fd = h->f->fd;
		want = EOPNOTSUPP;
		break;
	default:
		fd = t->memfd;
		want = EOPNOTSUPP;
		break;
	}
	count(OP_fetch_bad);
	fetch_sqe(h, cmd, addr, nr, flags, fd, UD_BAD);
	submit(h);
	/* Other commands may complete first: take them as they come. */
	for (;;) {
		r = ring_wait(&h->ring, opt_hang_s * 1000, &ud);
		if (r == -ETIME)
			fail("a malformed FETCH (cmd 0x%x nr %u flags 0x%x) did not complete",
			     cmd, nr, flags);
		if (ud == UD_BAD)
			break;
		if (ud == UD_CANCEL)
			continue;
		if (ud == UD_OTHER) {
			h->other--;
			continue;
		}
		h->parked--;
		if (r > 0) {
			int i;

			count(OP_records);
			for (i = 0; i < r; i++) {
				check_record(h->f, &h->rec[i]);
				serve(t, h->f, h->rec[i].offset / PG);
			}
		}
		if (!h->parked)
			park_fetch(h);
	}
	if (r != -want)
		fail("a malformed FETCH (cmd 0x%x addr 0x%llx nr %u flags 0x%x) completed with %d, wanted -%d",
		     cmd, (unsigned long long)addr, nr, flags, r, want);
}

/*
 * A handler's life: attach to a file, fetch and serve records for a while,
 * with malformed fetches, fetches into unwritable buffers and cancels along
 * the way, and end by closing the handler file or exiting the ring first.
 */
static void handler_session(struct thr *t, u64 ms)
{
	struct ufile *f = pick_file(&t->rng);
	u64 end = now_ms() + ms, ud;
	struct hctx h = { .f = f };
	struct oplog *l;
	int r, i;

	h.rec = t->recbufs + (t->recbuf_next++ % RECBUFS) * FETCH_NR_MAX;

	l = op_begin(OP_handler, f->idx, 0, 0);
	h.hfd = ioctl(f->fd, GMEMUF_IOC_HANDLER, 0);
	if (h.hfd < 0)
		fail("HANDLER on file %d: errno %d", f->idx, errno);
	if (!(fcntl(h.hfd, F_GETFD) & FD_CLOEXEC))
		fail("the handler file is not close-on-exec");
	r = io_uring_queue_init(16, &h.ring, 0);
	if (r)
		fail("io_uring_queue_init: %d", r);
	op_end(l, h.hfd, 0);

	park_fetch(&h);
	if (chance(&t->rng, 30))
		park_fetch(&h);
	while (now_ms() < end && !atomic_load(&W.stop)) {
		int roll = below(&t->rng, 100);

		if (roll < 5) {
			bad_fetch(t, &h);
			continue;
		}
		if (roll < 8) {
			/*
			 * A fetch into memory it cannot write: EFAULT when
			 * records come (they stay pending), or cancelled.
			 */
			count(OP_fetch_bad);
			fetch_sqe(&h, GMEMUF_CMD_FETCH,
				  (u64)(uintptr_t)(chance(&t->rng, 50) ?
						   W.unmapped : W.readonly),
				  1 + below(&t->rng, 8), 0, h.hfd, UD_OTHER);
			submit(&h);
			h.other++;
		}
		if (roll < 12 && (h.parked || h.other)) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&h.ring);

			count(OP_cancel);
			io_uring_prep_cancel64(sqe, chance(&t->rng, 50) ?
					       UD_FETCH : UD_OTHER, 0);
			sqe->user_data = UD_CANCEL;
			submit(&h);
		}
		r = ring_wait(&h.ring, 20 + below(&t->rng, 200), &ud);
		if (r == -ETIME)
			continue;
		if (ud == UD_CANCEL) {
			if (r && r != -ENOENT && r != -EALREADY)
				fail("ASYNC_CANCEL of a FETCH completed with %d", r);
			continue;
		}
		if (ud == UD_OTHER) {
			h.other--;
			if (r != -EFAULT && r != -ECANCELED)
				fail("a FETCH into an unwritable buffer completed with %d, wanted EFAULT or ECANCELED",
				     r);
			continue;
		}
		h.parked--;
		l = op_begin(OP_fetch, f->idx, 0, r);
		if (r == -ECANCELED) {
			op_end(l, r, 0);
		} else if (r <= 0 || r > FETCH_NR_MAX) {
			fail("a FETCH of up to %d records completed with %d",
			     FETCH_NR_MAX, r);
		} else {
			count(OP_records);
			for (i = 0; i < r; i++)
				check_record(f, &h.rec[i]);
			for (i = 0; i < r; i++)
				serve(t, f, h.rec[i].offset / PG);
			op_end(l, r, 0);
		}
		if (!h.parked)
			park_fetch(&h);
	}

	/* The end: the ring's exit cancels what is parked. */
	l = op_begin(OP_ring_exit, f->idx, h.parked, h.other);
	if (chance(&t->rng, 50)) {
		close(h.hfd);
		io_uring_queue_exit(&h.ring);
	} else {
		io_uring_queue_exit(&h.ring);
		close(h.hfd);
	}
	op_end(l, 0, 0);
}

/*
 * A handler that reads its records instead of fetching them: poll() for
 * them, read() them with buffers of any size, and sometimes with one too
 * small or unwritable; serve each as a fetching handler does. The file is
 * O_NONBLOCK, so that a read that finds nothing (another handler took the
 * record, or its page was populated meanwhile) fails with EAGAIN.
 */
static void read_session(struct thr *t, u64 ms)
{
	struct ufile *f = pick_file(&t->rng);
	struct gmemuf_fault *rec;
	u64 end = now_ms() + ms;
	struct pollfd pfd;
	struct oplog *l;
	ssize_t r;
	size_t len;
	int hfd, i;

	rec = t->recbufs + (t->recbuf_next++ % RECBUFS) * FETCH_NR_MAX;
	l = op_begin(OP_handler, f->idx, 0, 0);
	hfd = ioctl(f->fd, GMEMUF_IOC_HANDLER, 0);
	if (hfd < 0)
		fail("HANDLER on file %d: errno %d", f->idx, errno);
	if (fcntl(hfd, F_SETFL, O_NONBLOCK))
		fail("F_SETFL O_NONBLOCK on a handler file: errno %d", errno);
	op_end(l, hfd, 0);

	while (now_ms() < end && !atomic_load(&W.stop)) {
		int roll = below(&t->rng, 100);

		if (roll < 5) {
			/* Less than one record: EINVAL, and nothing taken. */
			count(OP_read_bad);
			len = below(&t->rng, sizeof(*rec));
			r = read(hfd, rec, len);
			if (r != -1 || errno != EINVAL)
				fail("a read() of %zu bytes from a handler file returned %zd errno %d, wanted EINVAL",
				     len, r, errno);
			continue;
		}
		if (roll < 10) {
			/* Unwritable: EFAULT, the records stay pending. */
			count(OP_read_bad);
			r = read(hfd, chance(&t->rng, 50) ? W.unmapped :
				 W.readonly, sizeof(*rec));
			if (r != -1 || (errno != EFAULT && errno != EAGAIN))
				fail("a read() into an unwritable buffer returned %zd errno %d, wanted EFAULT or EAGAIN",
				     r, errno);
			continue;
		}
		pfd = (struct pollfd){ .fd = hfd, .events = POLLIN | POLLOUT };
		r = poll(&pfd, 1, 20 + below(&t->rng, 200));
		if (r < 0 && errno != EINTR)
			fail("poll() of a handler file: errno %d", errno);
		if (r > 0 && (pfd.revents & ~(POLLIN | POLLRDNORM)))
			fail("poll() of a handler file gave revents 0x%x",
			     pfd.revents);
		if (r <= 0 && chance(&t->rng, 80))
			continue;
		/* Whole records, and a tail that no record fits in. */
		len = sizeof(*rec) * (1 + below(&t->rng, FETCH_NR_MAX)) +
			below(&t->rng, sizeof(*rec));
		l = op_begin(OP_read, f->idx, 0, len / sizeof(*rec));
		r = read(hfd, rec, len);
		if (r < 0) {
			if (errno != EAGAIN && errno != EINTR)
				fail("read() of a handler file: errno %d", errno);
			op_end(l, r, errno);
			continue;
		}
		if (!r || r % sizeof(*rec) || r > (ssize_t)len)
			fail("read() of %zu bytes from a handler file returned %zd",
			     len, r);
		count(OP_records);
		for (i = 0; i < r / (ssize_t)sizeof(*rec); i++)
			check_record(f, &rec[i]);
		for (i = 0; i < r / (ssize_t)sizeof(*rec); i++)
			serve(t, f, rec[i].offset / PG);
		op_end(l, r, 0);
	}

	/* The end: its records still missing are pending again. */
	l = op_begin(OP_ring_exit, f->idx, 0, 0);
	close(hfd);
	op_end(l, 0, 0);
}

/* 256 handlers per file, then ENOSPC. */
static void enospc_op(struct thr *t, int fd)
{
	int hfd[257], i, n = 0;
	struct oplog *l = op_begin(OP_enospc, 0, 0, 0);

	pthread_mutex_lock(&W.fork_lock);
	for (i = 0; i < 257; i++) {
		hfd[i] = ioctl(fd, GMEMUF_IOC_HANDLER, 0);
		if (hfd[i] < 0)
			break;
		n++;
	}
	if (n != 256 || errno != ENOSPC)
		fail("%d handlers attached to a new file, then errno %d; wanted 256 then ENOSPC",
		     n, errno);
	for (i = 0; i < n; i++)
		close(hfd[i]);
	pthread_mutex_unlock(&W.fork_lock);
	/* Released handlers leave room for new ones. */
	i = ioctl(fd, GMEMUF_IOC_HANDLER, 0);
	if (i < 0)
		fail("HANDLER after closing 256 handlers: errno %d", errno);
	close(i);
	op_end(l, n, 0);
}

/* --- creation ----------------------------------------------------- */

static void create_op(struct thr *t)
{
	u64 flags, size, missing = 0;
	int shift = CREATE_MAX_SHIFT;
	bool garbage = false, too_big, big;
	struct oplog *l;
	int fd, r;

	flags = below(&t->rng, 16);
	if (chance(&t->rng, 10))
		flags |= 1ull << (4 + below(&t->rng, 60));
	switch (below(&t->rng, 8)) {
	case 0:
		size = 0;
		break;
	case 1:
		size = PG * (1 + below(&t->rng, 16)) + 1 + below(&t->rng, PG - 1);
		break;
	case 2:
		size = 1ull << (12 + below(&t->rng, shift - 12 + 1));
		/* Just past GMEMUF_SIZE_MAX, or 64 or 128 TiB. */
		if (chance(&t->rng, 20))
			size = chance(&t->rng, 50) ? GMEMUF_SIZE_MAX + PG :
			       1ull << (CREATE_EFBIG_SHIFT - below(&t->rng, 2));
		break;
	case 3:
		size = -PG;	/* negative as a loff_t */
		break;
	default:
		size = PG * (1 + below(&t->rng, 4096));
		break;
	}
	big = size > SZ_64M;
	if ((flags & ~W.gmem_flags_supported) || !size || size % PG ||
	    (int64_t)size < 0)
		garbage = true;
	too_big = !garbage && size > GMEMUF_SIZE_MAX &&
		  (flags & (GUEST_MEMFD_FLAG_USERFAULT |
			    GUEST_MEMFD_FLAG_USERFAULT_EXIT));
	l = op_begin(OP_create, flags, size / PG, 0);
	fd = __vm_create_guest_memfd(W.vm, size, flags);
	l->res = fd;
	if (garbage) {
		if (fd >= 0)
			fail("KVM_CREATE_GUEST_MEMFD(size 0x%llx, flags 0x%llx) succeeded, wanted EINVAL",
			     (unsigned long long)size,
			     (unsigned long long)flags);
		if (errno != EINVAL)
			fail("KVM_CREATE_GUEST_MEMFD(size 0x%llx, flags 0x%llx): errno %d, wanted EINVAL",
			     (unsigned long long)size,
			     (unsigned long long)flags, errno);
		op_end(l, fd, errno);
		return;
	}
	if (too_big) {
		if (fd >= 0 || errno != EFBIG)
			fail("KVM_CREATE_GUEST_MEMFD(size 0x%llx, flags 0x%llx): %d errno %d, wanted EFBIG",
			     (unsigned long long)size,
			     (unsigned long long)flags, fd, errno);
		op_end(l, fd, errno);
		return;
	}
	if (fd < 0) {
		if (big && errno == ENOMEM)
			return op_end(l, fd, errno);
		fail("KVM_CREATE_GUEST_MEMFD(size 0x%llx, flags 0x%llx, supported 0x%llx): errno %d",
		     (unsigned long long)size, (unsigned long long)flags,
		     (unsigned long long)W.gmem_flags_supported, errno);
	}
	/* A small look at it: every page missing, or no userfault at all. */
	r = get_bitmap(fd, 0, PG * (1 + below(&t->rng, 64 < size / PG ? 64 :
						  size / PG)), NULL, &missing);
	if (flags & (GUEST_MEMFD_FLAG_USERFAULT | GUEST_MEMFD_FLAG_USERFAULT_EXIT)) {
		if (r)
			fail("GET_BITMAP on a new userfault guest_memfd: %d", r);
		if (!missing)
			fail("a new userfault guest_memfd has a present page");
		if (chance(&t->rng, 3))
			enospc_op(t, fd);
		else if (size <= SZ_64M && chance(&t->rng, 30)) {
			r = range_ioctl(fd, GMEMUF_IOC_DISARM, 0, size, NULL);
			if (r)
				fail("DISARM of a whole new file: %d", r);
		}
		/* The loops over the whole of a big file (see WAKE_WHOLE_MAX). */
		if (big && chance(&t->rng, 20)) {
			r = size <= WAKE_WHOLE_MAX ?
			    range_ioctl(fd, GMEMUF_IOC_WAKE, 0, size, NULL) : 0;
			if (r)
				fail("WAKE of the whole of a new file of 0x%llx: %d",
				     (unsigned long long)size, r);
			r = get_bitmap(fd, 0, size, NULL, &missing);
			if (r || missing != size / PG)
				fail("GET_BITMAP of the whole of a new file of 0x%llx: %d, %llu missing",
				     (unsigned long long)size, r,
				     (unsigned long long)missing);
		}
	} else if (r != -ENOTTY) {
		fail("GET_BITMAP on a guest_memfd without userfault: %d, wanted ENOTTY",
		     r);
	}
	close(fd);
	op_end(l, fd, 0);
}

/* --- memslots, attributes, kicks --------------------------------- */

static int slot_set(struct ufile *f, bool present)
{
	void *hva = f->shared_backing ? f->shared_backing : f->map;

	return __vm_set_user_memory_region2(W.vm, f->slot, KVM_MEM_GUEST_MEMFD,
					    f->gpa, present ? f->size : 0, hva,
					    f->fd, 0);
}

static void memslot_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, 2)];
	struct oplog *l;
	int r;

	if (!W.vm || !f->bound_kind)
		return;
	l = op_begin(OP_memslot, f->idx, 0, 0);
	pthread_mutex_lock(&f->slot_lock);
	atomic_fetch_add(&f->slot_seq, 1);
	r = slot_set(f, false);
	if (r)
		fail("deleting the memslot of file %d: errno %d", f->idx, errno);
	atomic_store(&f->slot_present, false);
	sleep_ms(below(&t->rng, 20));
	r = slot_set(f, true);
	if (r)
		fail("binding file %d to its memslot again: errno %d", f->idx,
		     errno);
	atomic_store(&f->slot_present, true);
	atomic_fetch_add(&f->slot_seq, 1);
	pthread_mutex_unlock(&f->slot_lock);
	op_end(l, r, 0);
}

static void convert_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, 2)];
	struct kvm_memory_attributes attr = {};
	bool to_shared = chance(&t->rng, 50);
	u64 page, n, i;
	struct oplog *l;
	int r;

	if (!W.private_vm)
		return;
	pick_range(&t->rng, f, &page, &n);
	l = op_begin(OP_convert, f->idx, page, n);
	lock_pages(f, page, n);
	seq_begin(f, page, n);
	attr.address = f->gpa + page * PG;
	attr.size = n * PG;
	attr.attributes = to_shared ? 0 : KVM_MEMORY_ATTRIBUTE_PRIVATE;
	r = __vm_ioctl(W.vm, KVM_SET_MEMORY_ATTRIBUTES, &attr);
	if (r)
		fail("KVM_SET_MEMORY_ATTRIBUTES: errno %d", errno);
	for (i = 0; i < n; i++)
		atomic_store(&f->pg[page + i].shared, to_shared);
	seq_end(f, page, n);
	unlock_pages(f, page, n);
	/*
	 * The conversion itself ends the waits of the vCPUs; a WAKE on top
	 * must change nothing.
	 */
	if (chance(&t->rng, 50))
		range_ioctl(f->fd, GMEMUF_IOC_WAKE, page * PG, n * PG, NULL);
	op_end(l, r, 0);
}

static void sig_nop(int sig)
{
}

static void kick_op(struct thr *t)
{
	int v = W.nr_thr - W.nr_vcpus - 1 + below(&t->rng, W.nr_vcpus);
	struct oplog *l;

	if (!W.nr_vcpus)
		return;
	l = op_begin(OP_kick, v, 0, 0);
	if (atomic_load(&W.thr[v].started) && !atomic_load(&W.thr[v].done))
		pthread_kill(W.thr[v].thread, SIGUSR1);
	op_end(l, 0, 0);
}

/* --- children: SCM_RIGHTS and SIGKILL ---------------------------- */

static void send_fd(int sock, int fd)
{
	char c = 'f';
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u = {};
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) != 1)
		fail("sendmsg(SCM_RIGHTS): errno %d", errno);
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u = {};
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(sock, &msg, 0) != 1)
		return -1;
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/*
 * The child: takes the guest_memfd it is sent, and attaches a handler
 * that fetches (records it never resolves), or waits on pages of its own
 * mapping, or both, until killed. A page it reads must be one written.
 */
static void child_main(struct thr *t, struct ufile *f, int sock, int what)
{
	struct io_uring ring;
	struct gmemuf_fault rec[8];
	u64 buf[WORDS], k, i;
	int fd = recv_fd(sock), hfd = -1;
	u8 *m = NULL;
	char why[200];

	if (fd < 0)
		_exit(10);
	if (what & 1) {
		struct gmemuf_fetch fetch = {
			.addr = (u64)(uintptr_t)rec, .nr = 8,
		};
		struct io_uring_sqe *sqe;

		hfd = ioctl(fd, GMEMUF_IOC_HANDLER, 0);
		if (hfd < 0 || io_uring_queue_init(4, &ring, 0))
			_exit(11);
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_rw(IORING_OP_URING_CMD, sqe, hfd, NULL, 0, 0);
		sqe->cmd_op = GMEMUF_CMD_FETCH;
		memcpy(sqe->cmd, &fetch, sizeof(fetch));
		if (io_uring_submit(&ring) != 1)
			_exit(12);
	}
	if ((what & 2) && f->mapped) {
		m = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			_exit(13);
	}
	if (write(sock, "r", 1) != 1)
		_exit(14);
	for (i = 0; i < 1000; i++) {
		if (m) {
			u64 page = below(&t->rng, f->npages);
			struct snap s;

			snap_take(f, page, &s);
			for (k = 0; k < WORDS; k++)
				buf[k] = ((volatile u64 *)(m + page * PG))[k];
			if (!snap_tainted(f, page, &s) &&
			    check_words(f, page, buf, s.present ? (long)s.gen : -1,
					f->tag, why, sizeof(why))) {
				fprintf(stderr, "gmemuf_fuzz: FAIL seed %llu proc %d child: page %llu of file %d: %s\n",
					(unsigned long long)opt_seed, W.proc,
					(unsigned long long)page, f->idx, why);
				_exit(3);
			}
		} else {
			sleep_ms(10);
		}
	}
	_exit(0);
}

/* The start of /proc/@pid/@what, for a report. */
static void proc_read(pid_t pid, const char *what, char *buf, size_t len)
{
	char path[64];
	int fd, n = 0;

	snprintf(path, sizeof(path), "/proc/%d/%s", pid, what);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = 0;
}

static void child_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	int sv[2], what = 1 + below(&t->rng, 3), status, i;
	u64 delay = below(&t->rng, 300);
	struct oplog *l;
	pid_t pid;
	char c;

	l = op_begin(OP_child, f->idx, what, 0);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		fail("socketpair: errno %d", errno);
	fflush(stdout);
	fflush(stderr);
	pthread_mutex_lock(&W.fork_lock);
	pid = fork();
	if (pid > 0)
		pthread_mutex_unlock(&W.fork_lock);
	if (pid < 0)
		fail("fork: errno %d", errno);
	if (!pid) {
		/* Only its socket: other threads' rings must not live on. */
		if (sv[1] != 3)
			dup2(sv[1], 3);
		close_range(4, ~0U, 0);
		child_main(t, f, 3, what);
	}
	close(sv[1]);
	send_fd(sv[0], f->fd);
	/* Killed once ready, or before it is; l->npages: the phase. */
	l->npages = 1;
	if (chance(&t->rng, 80)) {
		struct pollfd pfd = { .fd = sv[0], .events = POLLIN };

		if (poll(&pfd, 1, 10000) == 1) {
			(void)!read(sv[0], &c, 1);
		} else {
			char stack[2048];

			l->res = -ETIME;	/* not ready after 10 s */
			proc_read(pid, "stack", stack, sizeof(stack));
			fprintf(stderr, "gmemuf_fuzz: proc %d: a child is not ready after 10 s; its stack:\n%s\n",
				W.proc, stack);
		}
	}
	l->npages = 2;
	sleep_ms(delay);
	kill(pid, SIGKILL);
	l->npages = 3;
	/* Its own limit, below the watchdog's, to say what it waits in. */
	for (i = 0; i < (opt_hang_s - 15) * 100; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		sleep_ms(10);
	}
	if (i == (opt_hang_s - 15) * 100) {
		char state[512], stack[2048];

		proc_read(pid, "stat", state, sizeof(state));
		proc_read(pid, "stack", stack, sizeof(stack));
		fail("a child (what %d: %s%s) holding file %d still lives %d s after SIGKILL (%s); stat: %s\nstack:\n%s",
		     what, what & 1 ? "a handler with a FETCH parked, " : "",
		     what & 2 ? "a waiter on its mapping" : "", f->idx,
		     opt_hang_s - 15, l->res == -ETIME ? "never ready" : "ready",
		     state, stack);
	}
	if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) &&
	    !(WIFEXITED(status) && !WEXITSTATUS(status)))
		fail("a child (what %d) ended with status 0x%x", what, status);
	close(sv[0]);
	op_end(l, pid, 0);
}

/* --- handlers that go away: exiting with a fetch, never fetching ---- */

/* A handler whose thread exits with a FETCH parked: what it leaves. */
struct gone {
	struct ufile *f;
	struct io_uring ring;
	int hfd;
	struct gmemuf_fault rec[4];
};

static void *exiting_handler_thread(void *arg)
{
	struct gone *g = arg;
	struct gmemuf_fetch fetch = {
		.addr = (u64)(uintptr_t)g->rec, .nr = 4,
	};
	struct io_uring_sqe *sqe;
	int r;

	g->hfd = ioctl(g->f->fd, GMEMUF_IOC_HANDLER, 0);
	if (g->hfd < 0)
		fail("HANDLER: errno %d", errno);
	r = io_uring_queue_init(4, &g->ring, 0);
	if (r)
		fail("io_uring_queue_init: %d", r);
	sqe = io_uring_get_sqe(&g->ring);
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, g->hfd, NULL, 0, 0);
	sqe->cmd_op = GMEMUF_CMD_FETCH;
	memcpy(sqe->cmd, &fetch, sizeof(fetch));
	r = io_uring_submit(&g->ring);
	if (r != 1)
		fail("io_uring_submit: %d", r);
	return NULL;	/* exits with the fetch parked */
}

/*
 * A handler thread that exits with a FETCH parked, its ring and handler
 * file left open: the fetch ends at once, canceled (or with the records it
 * had got before, which are served here), and faults go to the others. Or
 * a handler that never fetches, held for a while: the faults routed to it
 * go to the handlers that fetch.
 */
static void handler_gone_op(struct thr *t)
{
	struct ufile *f = pick_file(&t->rng);
	struct oplog *l;
	pthread_t th;
	int hfd, r, i;

	if (chance(&t->rng, 50)) {
		struct gone *g = calloc(1, sizeof(*g));

		TEST_ASSERT(g, "calloc");
		l = op_begin(OP_handler, f->idx, 0, 1);
		g->f = f;
		pthread_create(&th, NULL, exiting_handler_thread, g);
		pthread_join(th, NULL);
		r = ring_wait(&g->ring, opt_hang_s * 1000 / 2, NULL);
		if (r == -ETIME)
			fail("the FETCH of a handler thread that exited is still parked after %d s",
			     opt_hang_s / 2);
		if (r != -ECANCELED && (r < 0 || r > 4))
			fail("the FETCH of a handler thread that exited completed with %d, wanted -ECANCELED or records",
			     r);
		for (i = 0; i < r; i++) {
			check_record(f, &g->rec[i]);
			serve(t, f, g->rec[i].offset / PG);
		}
		io_uring_queue_exit(&g->ring);
		close(g->hfd);
		free(g);
		op_end(l, r, 0);
	} else {
		l = op_begin(OP_handler, f->idx, 0, 2);
		hfd = ioctl(f->fd, GMEMUF_IOC_HANDLER, 0);
		if (hfd < 0)
			fail("HANDLER: errno %d", errno);
		sleep_ms(200);
		close(hfd);
		op_end(l, hfd, 0);
	}
}

/* --- the operation threads --------------------------------------- */

static void one_op(struct thr *t)
{
	int roll = below(&t->rng, 1000);

	if (roll < 200)
		populate_op(t, false);
	else if (roll < 240)
		populate_op(t, true);
	else if (roll < 260)
		populate_race_op(t);
	else if (roll < 320)
		arm_op(t);
	else if (roll < 350)
		disarm_op(t);
	else if (roll < 380)
		zero_op(t);
	else if (roll < 400)
		wake_op(t);
	else if (roll < 430)
		bitmap_op(t, false);
	else if (roll < 470)
		bitmap_op(t, true);
	else if (roll < 530)
		malformed_op(t);
	else if (roll < 540)
		handler_session(t, 50 + below(&t->rng, 500));
	else if (roll < 550)
		read_session(t, 50 + below(&t->rng, 500));
	else if (roll < 590)
		punch_op(t);
	else if (roll < 690)
		touch_op(t);
	else if (roll < 720)
		kernel_touch_op(t);
	else if (roll < 740)
		mmap_op(t);
	else if (roll < 800)
		verify_op(t);
	else if (roll < 820)
		memslot_op(t);
	else if (roll < 850)
		convert_op(t);
	else if (roll < 880)
		kick_op(t);
	else if (roll < 920)
		create_op(t);
	else if (roll < 935)
		child_op(t);
	else if (roll < 940)
		handler_gone_op(t);
	else
		touch_op(t);
}

static void thr_setup(struct thr *t)
{
	struct iovec iov;

	self = t;
	t->buf = mmap(NULL, 65 * PG, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->buf == MAP_FAILED)
		fail("mmap of a buffer");
	t->guard = t->buf + 64 * PG;
	mprotect(t->guard, PG, PROT_NONE);
	t->recbufs = mmap(NULL, RECBUFS * FETCH_NR_MAX * sizeof(*t->recbufs),
			  PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	if (t->recbufs == MAP_FAILED)
		fail("mmap of record buffers");
	t->memfd = memfd_create("gmemuf_fuzz", 0);
	if (t->memfd < 0 || ftruncate(t->memfd, PG))
		fail("memfd_create");
	t->ring_ok = !io_uring_queue_init(8, &t->ring, 0);
	if (t->ring_ok) {
		iov.iov_base = t->buf;
		iov.iov_len = 64 * PG;
		if (io_uring_register_buffers(&t->ring, &iov, 1))
			fail("io_uring_register_buffers");
	}
}

static void *op_thread(void *arg)
{
	struct thr *t = arg;

	thr_setup(t);
	while (now_ms() < W.deadline && !atomic_load(&W.stop))
		one_op(t);
	atomic_store(&t->done, true);
	return NULL;
}

static void *handler_thread(void *arg)
{
	struct thr *t = arg;

	thr_setup(t);
	while (now_ms() < W.deadline && !atomic_load(&W.stop)) {
		if (chance(&t->rng, 30))
			read_session(t, 500 + below(&t->rng, 3000));
		else
			handler_session(t, 500 + below(&t->rng, 3000));
	}
	atomic_store(&t->done, true);
	return NULL;
}

/* --- vCPUs ------------------------------------------------------- */

enum { G_READ = 1, G_WRITE = 2 };

struct mailbox {
	u64 op;
	u64 gva;
	u64 stage;	/* where the guest is: for a post-mortem */
};

/*
 * The guest: ask for work, touch the page it names (an atomic write that
 * changes nothing, for a write fault), checksum the whole page, report.
 */
static void guest_main(struct mailbox *mb)
{
	for (;;) {
		u64 op, *p, csum = CSUM_INIT, w0 = 0, w1 = 0, v, i;

		WRITE_ONCE(mb->stage, 1);
		GUEST_SYNC_ARGS(0, 0, 0, 0, 0);
		WRITE_ONCE(mb->stage, 2);
		op = READ_ONCE(mb->op);
		p = (u64 *)READ_ONCE(mb->gva);
		if (op == G_WRITE)
			asm volatile("lock orq $0, %0" : "+m"(p[0]) :: "memory");
		WRITE_ONCE(mb->stage, 3);
		for (i = 0; i < WORDS; i++) {
			v = READ_ONCE(p[i]);
			if (i == 0)
				w0 = v;
			if (i == 1)
				w1 = v;
			csum = pattern_csum(csum, v);
		}
		WRITE_ONCE(mb->stage, 4);
		GUEST_SYNC_ARGS(1, w0, w1, csum, 0);
		WRITE_ONCE(mb->stage, 5);
	}
}

/*
 * Run the vCPU until its next ucall; answer exits on the way. Returns the
 * ucall, with *mmio set if an MMIO exit (a deleted memslot) was seen.
 */
/* Convert one page to private or shared, as a VMM does on a memory fault. */
static void vcpu_convert(struct ufile *f, u64 page, bool to_shared)
{
	struct kvm_memory_attributes attr = {
		.address = f->gpa + page * PG,
		.size = PG,
		.attributes = to_shared ? 0 : KVM_MEMORY_ATTRIBUTE_PRIVATE,
	};

	count(OP_vcpu_convert);
	lock_pages(f, page, 1);
	seq_begin(f, page, 1);
	if (__vm_ioctl(W.vm, KVM_SET_MEMORY_ATTRIBUTES, &attr))
		fail("KVM_SET_MEMORY_ATTRIBUTES: errno %d", errno);
	atomic_store(&f->pg[page].shared, to_shared);
	seq_end(f, page, 1);
	unlock_pages(f, page, 1);
}

/* The test's ELF, which the test library loads into the guest as it is. */
extern char __executable_start[], etext[];

/* The vCPU's state, for an exit that the guest cannot cause on purpose. */
static void vcpu_state_dump(struct thr *t, struct ufile *f, u64 page)
{
	struct kvm_vcpu_events ev;
	struct kvm_sregs sr;
	struct kvm_regs r;
	u8 *code;
	int i;

	vcpu_regs_get(t->vcpu, &r);
	vcpu_sregs_get(t->vcpu, &sr);
	vcpu_events_get(t->vcpu, &ev);
	fprintf(stderr,
		"gmemuf_fuzz: vCPU state: rip 0x%llx rsp 0x%llx rflags 0x%llx rax 0x%llx rbx 0x%llx rcx 0x%llx rdx 0x%llx rsi 0x%llx rdi 0x%llx\n"
		"  cr0 0x%llx cr2 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx idt 0x%llx/%u gdt 0x%llx/%u tr 0x%llx\n"
		"  exception: injected %u pending %u nr %u has_error %u error 0x%x; nmi %u %u; payload %u 0x%llx\n"
		"  touching gpa 0x%llx of file %d (page %llu, attribute %s, shadow %s gen %u, slot_seq %u)\n",
		r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
		sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer, sr.idt.base,
		sr.idt.limit, sr.gdt.base, sr.gdt.limit, sr.tr.base,
		ev.exception.injected, ev.exception.pending, ev.exception.nr,
		ev.exception.has_error_code, ev.exception.error_code,
		ev.nmi.injected, ev.nmi.pending, ev.exception_has_payload,
		ev.exception_payload,
		(unsigned long long)(f->gpa + page * PG), f->idx,
		(unsigned long long)page,
		atomic_load(&f->pg[page].shared) ? "shared" : "private",
		atomic_load(&f->pg[page].present) ? "present" : "missing",
		atomic_load(&f->pg[page].gen), atomic_load(&f->slot_seq));
	/*
	 * The guest never runs in the upper half: a vCPU there has its host's
	 * state, which only a fault of the CPU (here, the emulator that runs
	 * the test VM) gives it. See README.md, "The UAPI fuzzer".
	 */
	if (r.rip >= 0xffff800000000000ull)
		fprintf(stderr, "  the vCPU runs with its host's state (rip, cr3, idt), which no guest can cause\n");
	fprintf(stderr, "  guest stage %llu; vCPU %u, thread id %d in the KVM trace\n",
		(unsigned long long)
		((struct mailbox *)addr_gva2hva(W.vm, t->mailbox_gva))->stage,
		t->vcpu->id, gettid());
	/* What the guest left on its stack: frames of an exception too. */
	if (t->stack_top) {
		u64 *w = addr_gva2hva(W.vm, t->stack_top - 1024);

		for (i = 0; i < 128; i++)
			if (w[i])
				fprintf(stderr, "  stack top-0x%x: 0x%llx\n",
					1024 - i * 8,
					(unsigned long long)w[i]);
	}
	/*
	 * Not after a shutdown intercept, which resets the vCPU, nor from
	 * outside the guest's code: the test library asserts on a gva that
	 * its page tables do not map.
	 */
	if (!(sr.cr0 & X86_CR0_PG) || r.rip < (u64)__executable_start ||
	    r.rip + 16 > (u64)etext)
		return;
	code = addr_gva2hva(W.vm, r.rip);
	fprintf(stderr, "  code at rip:");
	for (i = 0; i < 16; i++)
		fprintf(stderr, " %02x", code[i]);
	fprintf(stderr, "\n");
}

static void vcpu_to_ucall(struct thr *t, struct ucall *uc, bool *mmio,
			  struct ufile *f, u64 page, struct snap *s)
{
	struct kvm_run *run = t->vcpu->run;
	unsigned int races = 0;
	int r;

	for (;;) {
		r = __vcpu_run(t->vcpu);
		if (r && errno == EINTR)
			continue;
		if (r && errno == EFAULT &&
		    run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			u64 want = f->gpa + page * PG;
			u64 missing = 1;
			u64 start = now_ms();

			/*
			 * In a private VM, a private access with the memslot
			 * deleted exits, as does an access that is private or
			 * shared against the page's attribute (it raced a
			 * conversion, or KVM took it as shared: see
			 * stale_mmio_spte_then_private in gmemuf_vcpu_test).
			 * As a VMM does: wait for the memslot, convert the
			 * page as the exit asks, enter again.
			 */
			if (W.private_vm && s &&
			    !(run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_USERFAULT) &&
			    ++races < 100) {
				if ((s->slot_seq & 1) ||
				    atomic_load(&f->slot_seq) != s->slot_seq)
					*mmio = true;
				while (atomic_load(&f->slot_seq) & 1)
					sleep_ms(1);
				vcpu_convert(f, page, !(run->memory_fault.flags &
							KVM_MEMORY_EXIT_FLAG_PRIVATE));
				continue;
			}
			count(OP_vcpu_exit);
			if (!f->exit_mode ||
			    !(run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_USERFAULT) ||
			    run->memory_fault.gpa != want ||
			    run->memory_fault.size != PG)
				fail("KVM_RUN: memory fault gpa 0x%llx size 0x%llx flags 0x%llx (%u times); touching gpa 0x%llx of file %d (exit mode %d, attribute %s, shadow %s gen %u)",
				     run->memory_fault.gpa, run->memory_fault.size,
				     run->memory_fault.flags, races,
				     (unsigned long long)want, f->idx,
				     f->exit_mode,
				     atomic_load(&f->pg[page].shared) ? "shared" : "private",
				     atomic_load(&f->pg[page].present) ? "present" : "missing",
				     atomic_load(&f->pg[page].gen));
			if (!!(run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE) !=
			    (W.private_vm && !atomic_load(&f->pg[page].shared)) &&
			    !(atomic_load(&f->pg[page].seq) & 1))
				count(OP_tainted); /* a conversion raced */
			/* As a VMM would: wait for the page, then enter again. */
			while (missing) {
				if (get_bitmap(f->fd, page * PG, PG, NULL, &missing))
					fail("GET_BITMAP");
				if (missing)
					sleep_ms(2);
				if (now_ms() - start > opt_hang_s * 2000ull)
					fail("exit mode: page %llu of file %d still missing after %d s",
					     (unsigned long long)page, f->idx,
					     opt_hang_s * 2);
			}
			continue;
		}
		if (r)
			fail("KVM_RUN: errno %d, exit reason %u (%s)", errno,
			     run->exit_reason, exit_reason_str(run->exit_reason));
		if (run->exit_reason == KVM_EXIT_MMIO) {
			/* The memslot is gone for now: the guest reads zeroes. */
			*mmio = true;
			memset(run->mmio.data, 0, sizeof(run->mmio.data));
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO) {
			vcpu_state_dump(t, f, page);
			fail("KVM_RUN: exit reason %u (%s)", run->exit_reason,
			     exit_reason_str(run->exit_reason));
		}
		switch (get_ucall(t->vcpu, uc)) {
		case UCALL_SYNC:
			return;
		default:
			fail("unexpected ucall %llu", (unsigned long long)uc->cmd);
		}
	}
}

static void vcpu_check(struct ufile *f, u64 page, struct snap *s, u64 w0,
		       u64 w1, u64 csum)
{
	int tag = f->tag;
	long gen;

	if (snap_tainted(f, page, s)) {
		count(OP_tainted);
		return;
	}
	if (W.private_vm && s->shared)
		tag |= SHARED_TAG;
	gen = w0 ? header_gen(f, w0, tag) : 0;
	if (tag & SHARED_TAG)
		gen = w0 == page_word(tag, 1, page * PG, 0) ? 1 : -1;
	if (gen < 0 || w1 != (gen ? page * PG : 0) ||
	    csum != page_csum(tag, gen, page * PG))
		fail("the guest read page %llu of file %d: header 0x%llx, offset 0x%llx, checksum 0x%llx; not a page written (%s, shadow %s gen %u)",
		     (unsigned long long)page, f->idx, (unsigned long long)w0,
		     (unsigned long long)w1, (unsigned long long)csum,
		     tag & SHARED_TAG ? "shared" : "private or guest_memfd",
		     s->present ? "present" : "missing", s->gen);
	if (!(tag & SHARED_TAG) && s->present && gen != s->gen)
		fail("the guest read generation %ld of page %llu of file %d, the shadow has %u",
		     gen, (unsigned long long)page, f->idx, s->gen);
}

static void prefault_op(struct thr *t)
{
	struct ufile *f = &W.f[below(&t->rng, 2)];
	u64 page = below(&t->rng, f->npages);
	struct kvm_pre_fault_memory range = {
		.gpa = f->gpa + page * PG, .size = PG,
	};
	struct oplog *l = op_begin(OP_prefault, f->idx, page, 1);
	int r;

	wait_publish(f->idx, page);
	do {
		r = __vcpu_ioctl(t->vcpu, KVM_PRE_FAULT_MEMORY, &range);
	} while (r && errno == EINTR);
	wait_done();
	/*
	 * 0, or EAGAIN (a memslot update), ENOENT (no memslot just now),
	 * EFAULT (exit mode), or EIO/EFAULT on private memory being
	 * converted: none of them a hang.
	 */
	if (r && errno != EAGAIN && errno != ENOENT && errno != EFAULT &&
	    errno != EIO)
		fail("KVM_PRE_FAULT_MEMORY of page %llu of file %d: errno %d",
		     (unsigned long long)page, f->idx, errno);
	if (r && errno == EFAULT && !f->exit_mode && !W.private_vm)
		fail("KVM_PRE_FAULT_MEMORY of page %llu of file %d: EFAULT in wait mode",
		     (unsigned long long)page, f->idx);
	op_end(l, r, r ? errno : 0);
}

static void *vcpu_thread(void *arg)
{
	struct thr *t = arg;
	struct mailbox *mb = addr_gva2hva(W.vm, t->mailbox_gva);
	struct ucall uc;
	bool mmio = false;

	self = t;
	{
		struct kvm_regs regs;

		vcpu_regs_get(t->vcpu, &regs);
		t->stack_top = regs.rsp;
	}
	vcpu_to_ucall(t, &uc, &mmio, &W.f[0], 0, NULL);
	while (now_ms() < W.deadline && !atomic_load(&W.stop)) {
		struct ufile *f = &W.f[below(&t->rng, 2)];
		u64 page = below(&t->rng, f->npages);
		bool write = chance(&t->rng, 30);
		struct oplog *l;
		struct snap s;

		if (chance(&t->rng, 5) && W.has_prefault) {
			prefault_op(t);
			continue;
		}
		l = op_begin(write ? OP_vcpu_write : OP_vcpu_read, f->idx, page, 1);
		mb->op = write ? G_WRITE : G_READ;
		mb->gva = f->gpa + page * PG;
		snap_take(f, page, &s);
		mmio = false;
		wait_publish(f->idx, page);
		vcpu_to_ucall(t, &uc, &mmio, f, page, &s);
		wait_done();
		if (uc.args[1] != 1)
			fail("the guest's ucall is at stage %llu, not 1",
			     (unsigned long long)uc.args[1]);
		if (mmio)
			count(OP_vcpu_mmio);
		else
			vcpu_check(f, page, &s, uc.args[2], uc.args[3],
				   uc.args[4]);
		vcpu_to_ucall(t, &uc, &mmio, f, page, NULL);
		op_end(l, 0, 0);
	}
	atomic_store(&t->done, true);
	return NULL;
}

/* --- the watchdog ------------------------------------------------ */

/*
 * Resolve pages that tasks have waited for too long, as a handler would,
 * and fail the run if a task waits long after its page became present or
 * an operation runs for longer than the hang limit.
 */
static void *watchdog_thread(void *arg)
{
	struct thr *t = arg;
	u64 hang = opt_hang_s * 1000ull;
	int i;

	self = t;
	for (;;) {
		bool all_done = true;

		for (i = 0; i < W.nr_thr; i++) {
			struct thr *o = &W.thr[i];
			int file = atomic_load(&o->wait_file);
			u64 start = atomic_load(&o->op_start), now = now_ms();

			if (o == t)
				continue;
			if (!atomic_load(&o->done))
				all_done = false;
			if (file >= 0) {
				struct ufile *f = &W.f[file];
				u64 page = atomic_load(&o->wait_page);
				u64 since = atomic_load(&o->wait_start);
				u64 pms;

				if (atomic_load(&o->wait_file) != file)
					continue;
				if (now - since < W.resolve_ms)
					continue;
				lock_pages(f, page, 1);
				if (!atomic_load(&f->pg[page].present)) {
					struct oplog *l = op_begin(OP_resolve, file, page, 1);

					if (chance(&t->rng, 70))
						populate_locked(t, f, page, 1,
								below(&t->rng, NR_HOW), l);
					else if (chance(&t->rng, 50))
						zero_locked(f, page, 1, l);
					else {
						if (range_ioctl(f->fd, GMEMUF_IOC_DISARM,
								page * PG, PG, NULL))
							fail("DISARM of one page");
						set_present(f, page, 0);
					}
					op_end(l, 0, 0);
				}
				pms = atomic_load(&f->pg[page].present_ms);
				unlock_pages(f, page, 1);
				if (since > pms)
					pms = since;
				if (atomic_load(&o->wait_file) == file &&
				    atomic_load(&o->wait_page) == page &&
				    atomic_load(&o->wait_start) == since &&
				    atomic_load(&f->pg[page].present) &&
				    now_ms() - pms > hang) {
					self = o;
					fail("a %s waits for page %llu of file %d, present for %llu ms",
					     o->kind, (unsigned long long)page,
					     file, (unsigned long long)(now_ms() - pms));
				}
				continue;
			}
			if (start && now > start && now - start > hang) {
				self = o;
				fail("operation %s has run for %llu ms",
				     op_names[atomic_load(&o->cur_op)],
				     (unsigned long long)(now - start));
			}
		}
		if (all_done)
			break;
		sleep_ms(50);
	}
	return NULL;
}

/* --- setting up a world ------------------------------------------ */

static void *shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	TEST_ASSERT(p != MAP_FAILED, "mmap(MAP_SHARED)");
	return p;
}

static void file_create(struct ufile *f, int idx, struct rng *r)
{
	u64 i;
	int s;

	f->idx = idx;
	f->tag = (W.proc * NR_FILES + idx + 1) & 0x7f;
	f->npages = 16 + below(r, 496);
	f->size = f->npages * PG;
	f->exit_mode = idx == F_EXIT;
	f->bound_kind = idx != F_FREE;
	f->mapped = !W.private_vm;
	f->flags = GUEST_MEMFD_FLAG_USERFAULT;
	if (f->exit_mode)
		f->flags = GUEST_MEMFD_FLAG_USERFAULT_EXIT |
			   (chance(r, 50) ? GUEST_MEMFD_FLAG_USERFAULT : 0);
	if (f->mapped)
		f->flags |= GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
	f->fd = vm_create_guest_memfd(W.vm, f->size, f->flags);
	f->pg = shared_alloc(f->npages * sizeof(*f->pg));
	f->next_gen = shared_alloc(sizeof(*f->next_gen));
	atomic_store(f->next_gen, 1);
	for (s = 0; s < NSTRIPES; s++)
		pthread_mutex_init(&f->stripe[s], NULL);
	pthread_mutex_init(&f->slot_lock, NULL);
	if (f->mapped) {
		f->map = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED,
			      f->fd, 0);
		TEST_ASSERT(f->map != MAP_FAILED, "mmap of a guest_memfd");
	}
	if (!f->bound_kind)
		return;
	f->slot = UF_SLOT + idx;
	f->gpa = UF_GPA + idx * UF_GPA_STRIDE;
	if (W.private_vm) {
		f->shared_backing = mmap(NULL, f->size, PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		TEST_ASSERT(f->shared_backing != MAP_FAILED, "mmap");
		for (i = 0; i < f->npages; i++)
			fill_page((u64 *)(f->shared_backing + i * PG),
				  f->tag | SHARED_TAG, 1, i * PG);
	}
	TEST_ASSERT(!slot_set(f, true), "binding a memslot: errno %d", errno);
	atomic_store(&f->slot_present, true);
	if (W.private_vm)
		vm_mem_set_private(W.vm, f->gpa, f->size);
	virt_map(W.vm, f->gpa, f->gpa, f->npages);
}

/*
 * Before the end: resolve every page, so that no task waits, and check the
 * whole of each file against the shadow.
 */
static void final_check(struct thr *t)
{
	u64 bits[512 / 64 + 1], missing, i;
	int k;

	for (k = 0; k < NR_FILES; k++) {
		struct ufile *f = &W.f[k];

		lock_pages(f, 0, f->npages);
		if (get_bitmap(f->fd, 0, f->size, bits, &missing))
			fail("GET_BITMAP of file %d at the end", k);
		for (i = 0; i < f->npages; i++)
			if (!(bits[i / 64] >> (i % 64) & 1) !=
			    !!atomic_load(&f->pg[i].present))
				fail("at the end, GET_BITMAP and the shadow disagree on page %llu of file %d",
				     (unsigned long long)i, k);
		if (f->mapped)
			for (i = 0; i < f->npages; i++) {
				char why[200];

				if (!atomic_load(&f->pg[i].present))
					continue;
				if (check_words(f, i, (u64 *)(f->map + i * PG),
						atomic_load(&f->pg[i].gen),
						f->tag, why, sizeof(why)))
					fail("at the end, page %llu of file %d: %s",
					     (unsigned long long)i, k, why);
			}
		unlock_pages(f, 0, f->npages);
	}
}

static int worker(int proc)
{
	struct vm_shape shape = { .mode = VM_MODE_DEFAULT };
	struct sigaction sa = { .sa_handler = sig_nop };
	struct rng r;
	int i, n, nv;

	memset(&W, 0, sizeof(W));
	pthread_mutex_init(&W.fail_lock, NULL);
	pthread_mutex_init(&W.fork_lock, NULL);
	W.proc = proc;
	W.seed = opt_seed;
	W.deadline = now_ms() + opt_seconds * 1000ull;
	rng_init(&r, opt_seed, proc, 0xffff);
	W.private_vm = (proc & 1) &&
		       (kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM));
	if (W.private_vm)
		shape.type = KVM_X86_SW_PROTECTED_VM;
	nv = opt_vcpus;
	W.vm = __vm_create_with_vcpus(shape, nv ? nv : 1, 0, guest_main,
				      W.vcpus);
	W.nr_vcpus = nv;
	W.gmem_flags_supported = vm_check_cap(W.vm, KVM_CAP_GUEST_MEMFD_FLAGS);
	W.resolve_ms = 200 + below(&r, 2000);
	/* Kept mapped, so that nothing else is ever mapped there. */
	W.unmapped = mmap(NULL, 2 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	W.readonly = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(W.unmapped != MAP_FAILED && W.readonly != MAP_FAILED, "mmap");
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	W.has_prefault = kvm_has_cap(KVM_CAP_PRE_FAULT_MEMORY);
	W.has_gmem_read = kvm_check_cap(KVM_CAP_GUEST_MEMFD_USERFAULT) &
			  GMEMUF_FEATURE_GMEM_READ;
	for (i = 0; i < NR_FILES; i++)
		file_create(&W.f[i], i, &r);
	printf("gmemuf_fuzz: proc %d: %s VM, files of %llu, %llu, %llu pages (flags 0x%llx 0x%llx 0x%llx), %d vCPUs, resolve after %llu ms\n",
	       proc, W.private_vm ? "KVM_X86_SW_PROTECTED_VM" : "default",
	       (unsigned long long)W.f[0].npages,
	       (unsigned long long)W.f[1].npages,
	       (unsigned long long)W.f[2].npages,
	       (unsigned long long)W.f[0].flags,
	       (unsigned long long)W.f[1].flags,
	       (unsigned long long)W.f[2].flags, nv,
	       (unsigned long long)W.resolve_ms);
	fflush(stdout);

	/* Threads: operations, handlers, vCPUs, and the watchdog last. */
	n = 0;
	for (i = 0; i < opt_threads; i++, n++)
		W.thr[n].kind = "op thread";
	for (i = 0; i < NR_HANDLER_THREADS; i++, n++)
		W.thr[n].kind = "handler thread";
	for (i = 0; i < nv; i++, n++) {
		W.thr[n].kind = "vCPU thread";
		W.thr[n].vcpu = W.vcpus[i];
		W.thr[n].mailbox_gva = vm_alloc_page(W.vm);
		vcpu_args_set(W.vcpus[i], 1, W.thr[n].mailbox_gva);
	}
	W.thr[n++].kind = "watchdog";
	W.nr_thr = n;
	for (i = 0; i < n; i++) {
		W.thr[i].id = i;
		atomic_store(&W.thr[i].wait_file, -1);
		rng_init(&W.thr[i].rng, opt_seed, proc, i + 1);
	}
	for (i = 0; i < n - 1; i++) {
		void *(*fn)(void *) = !strcmp(W.thr[i].kind, "op thread") ?
			op_thread : !strcmp(W.thr[i].kind, "vCPU thread") ?
			vcpu_thread : handler_thread;

		TEST_ASSERT(!pthread_create(&W.thr[i].thread, NULL, fn,
					    &W.thr[i]), "pthread_create");
		atomic_store(&W.thr[i].started, true);
	}
	thr_setup(&W.thr[n - 1]);
	watchdog_thread(&W.thr[n - 1]);
	for (i = 0; i < n - 1; i++)
		pthread_join(W.thr[i].thread, NULL);
	final_check(&W.thr[n - 1]);
	for (i = 0; i < NR_FILES; i++)
		range_ioctl(W.f[i].fd, GMEMUF_IOC_DISARM, 0, W.f[i].size, NULL);
	kvm_vm_free(W.vm);
	return 0;
}

/* --- the driver -------------------------------------------------- */

/* gmemuf.timeout_scale=N on the kernel command line, or 1. */
static int timeout_scale(void)
{
	char line[4096], *p;
	FILE *f = fopen("/proc/cmdline", "r");
	int scale = 1;

	if (!f)
		return 1;
	if (fgets(line, sizeof(line), f)) {
		p = strstr(line, "gmemuf.timeout_scale=");
		if (p)
			scale = atoi(p + strlen("gmemuf.timeout_scale="));
	}
	fclose(f);
	return scale > 0 ? scale : 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: gmemuf_fuzz [--seconds N] [--seed S] [--procs P] [--threads T]\n"
		"                   [--vcpus V] [--hang-seconds H] [--self-test]\n");
	exit(2);
}

int main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "seed", required_argument, NULL, 'S' },
		{ "procs", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "vcpus", required_argument, NULL, 'v' },
		{ "hang-seconds", required_argument, NULL, 'H' },
		{ "self-test", no_argument, NULL, 'T' },
		{}
	};
	u64 features, start, total = 0;
	pid_t pids[64];
	int c, i, status, failed = 0, left;
	bool seeded = false;
	struct rlimit rl;

	opt_hang_s = 60 * timeout_scale();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': opt_seconds = atoi(optarg); break;
		case 'S': opt_seed = strtoull(optarg, NULL, 0); seeded = true; break;
		case 'p': opt_procs = atoi(optarg); break;
		case 't': opt_threads = atoi(optarg); break;
		case 'v': opt_vcpus = atoi(optarg); break;
		case 'H': opt_hang_s = atoi(optarg); break;
		case 'T': opt_self_test = true; break;
		default: usage();
		}
	}
	if (opt_procs < 1 || opt_procs > 64 || opt_threads < 1 ||
	    opt_threads + NR_HANDLER_THREADS + MAX_VCPUS + 1 > MAX_THREADS ||
	    opt_vcpus < 0 || opt_vcpus > MAX_VCPUS || opt_seconds < 1 ||
	    opt_hang_s < 1)
		usage();
	/* 256 handlers at once, in several threads. */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < 8192) {
		rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (!seeded) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		opt_seed = ts.tv_sec * 1000003ull ^ ts.tv_nsec ^ getpid();
	}

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_GUEST_MEMFD));
	features = kvm_check_cap(KVM_CAP_GUEST_MEMFD_USERFAULT);
	TEST_REQUIRE((features & (GMEMUF_FEATURE_MMAP_FAULT | GMEMUF_FEATURE_POPULATE |
				  GMEMUF_FEATURE_URING_FETCH | GMEMUF_FEATURE_VCPU_WAIT |
				  GMEMUF_FEATURE_VCPU_EXIT)) ==
		     (GMEMUF_FEATURE_MMAP_FAULT | GMEMUF_FEATURE_POPULATE |
		      GMEMUF_FEATURE_URING_FETCH | GMEMUF_FEATURE_VCPU_WAIT |
		      GMEMUF_FEATURE_VCPU_EXIT));

	printf("gmemuf_fuzz: seed %llu, %d s, %d processes of %d threads and %d vCPUs\n",
	       (unsigned long long)opt_seed, opt_seconds, opt_procs,
	       opt_threads, opt_vcpus);
	fflush(stdout);
	G = shared_alloc(sizeof(*G));
	start = now_ms();
	for (i = 0; i < opt_procs; i++) {
		pids[i] = fork();
		TEST_ASSERT(pids[i] >= 0, "fork");
		if (!pids[i])
			_exit(worker(i));
	}

	/* Each worker ends by itself; past its time and a hang, kill them. */
	left = opt_procs;
	while (left) {
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid > 0) {
			left--;
			if (!WIFEXITED(status) || WEXITSTATUS(status)) {
				if (!failed)
					for (i = 0; i < opt_procs; i++)
						if (pids[i] != pid)
							kill(pids[i], SIGKILL);
				failed++;
				if (!atomic_load(&G->failures))
					fprintf(stderr, "gmemuf_fuzz: FAIL seed %llu: a worker ended with status 0x%x\n",
						(unsigned long long)opt_seed,
						status);
			}
			continue;
		}
		if (now_ms() - start > (opt_seconds + 3ull * opt_hang_s + 60) * 1000) {
			fprintf(stderr, "gmemuf_fuzz: FAIL seed %llu: workers still run %d s past their time\n",
				(unsigned long long)opt_seed,
				3 * opt_hang_s + 60);
			for (i = 0; i < opt_procs; i++)
				kill(pids[i], SIGKILL);
			failed++;
			atomic_fetch_add(&G->failures, 1);
			start = now_ms();
		}
		sleep_ms(100);
	}

	for (i = 0; i < NR_OPS; i++)
		total += atomic_load(&G->count[i]);
	printf("gmemuf_fuzz: seed %llu duration %.1f s ops %llu (%.0f/s)",
	       (unsigned long long)opt_seed, (now_ms() - start) / 1000.0,
	       (unsigned long long)total,
	       total * 1000.0 / (now_ms() - start + 1));
	for (i = 0; i < NR_OPS; i++)
		printf(" %s=%llu", op_names[i],
		       (unsigned long long)atomic_load(&G->count[i]));
	printf(" failures %d: %s\n", atomic_load(&G->failures) + (failed &&
	       !atomic_load(&G->failures)), failed ? "FAIL" : "PASS");
	if (opt_self_test) {
		printf("gmemuf_fuzz: self-test: the injected error was %s\n",
		       atomic_load(&G->failures) ? "caught" : "NOT caught");
		return atomic_load(&G->failures) ? 0 : 1;
	}
	return failed ? 1 : 0;
}
