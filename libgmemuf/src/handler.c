// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * A handler that owns its rings: per queue, a handler file and an io_uring
 * with one fetch parked, populates queued on the same ring and submitted
 * with the next fetch, and a poll on the handler's stop eventfd so that
 * gmemuf_handler_stop() wakes every queue.
 *
 * Where io_uring cannot be used (a kernel without it, or one where
 * kernel.io_uring_disabled or a seccomp filter refuses it), or with
 * GMEMUF_HANDLER_READ, the same queues work without rings: faults are read()
 * from the handler file, which is O_NONBLOCK, after a poll() on it and on
 * the stop eventfd; populates are queued in the same way and written with
 * pwrite() by the next wait.
 *
 * The rings are created on a thread of the library's own, which exits
 * before gmemuf_handler_create() returns, and destroyed without submitting
 * anything: the kernel tears an io_uring down with task work (TWA_SIGNAL)
 * on every task that created it or submitted to it, which makes
 * signal_pending() true there, and a vCPU thread would see KVM_RUN fail
 * with EINTR. Only the threads that serve the queues ever submit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "private.h"

/*
 * What a completion is for, in its user_data: a populate's is the page
 * offset itself (page-aligned, so its low bits are clear).
 */
#define TAG_POPULATE	0
#define TAG_FETCH	1
#define TAG_STOP	2
#define TAG_KICK	3
#define TAG_MASK	(PAGE_SIZE_U64 - 1)

#define MAX_HANDLER_FILES	256	/* the kernel's limit per guest_memfd */
#define MAX_QUEUE_DEPTH		4096

/* A populate queued on a queue without a ring, done by the next wait. */
struct queued_populate {
	uint64_t offset;
	const void *page;
};

struct queue {
	int hfd;			/* the handler file, or -1 */
	bool ring_ready;		/* ring was initialised */
	struct io_uring ring;
	struct queued_populate *queued;	/* without a ring: inflight of them */
	bool fetch_armed;		/* a fetch is queued or parked */
	bool stop_armed;		/* the poll on stop_fd is queued or parked */
	bool kick_armed;		/* a NOP's completion is in the CQ */
	unsigned int inflight;		/* populates queued or running */
	unsigned int ready;		/* records in fetched[] not yet returned */
	struct gmemuf_fault *fetched;	/* the kernel's while a fetch is parked */
	struct gmemuf_fault *out;	/* what gmemuf_handler_wait() returns */
	uint64_t *retry;		/* pages whose populate failed */
	unsigned int nr_retry;
	unsigned int retry_cap;		/* of retry[]; out[] has batch more */
	int error;			/* the first populate error not reported */
	/*
	 * What gmemuf_handler_stats() sums. Only the thread serving the
	 * queue writes them; any thread reads them.
	 */
	struct {
		_Atomic uint64_t fetches, faults, retries;
		_Atomic uint64_t populated, present, populate_errors;
		_Atomic uint64_t fetch_errors, fetches_cancelled;
	} count;
};

struct gmemuf_handler {
	int fd;				/* the guest_memfd, not ours */
	int stop_fd;			/* an eventfd, written once by stop */
	atomic_bool stopped;
	bool use_read;			/* read() and pwrite(), no rings */
	unsigned int nr_queues;
	unsigned int depth;		/* also the most populates in flight */
	unsigned int batch;
	struct queue *q[];
};

static int check_params(const struct gmemuf_handler_params *p,
			struct gmemuf_handler_params *out)
{
	unsigned int i;

	memset(out, 0, sizeof(*out));
	if (p)
		*out = *p;
	if (!out->nr_queues)
		out->nr_queues = 1;
	if (!out->queue_depth)
		out->queue_depth = 64;
	if (!out->batch)
		out->batch = 64;
	if (out->nr_queues > MAX_HANDLER_FILES || out->queue_depth < 4 ||
	    out->queue_depth > MAX_QUEUE_DEPTH ||
	    out->batch > GMEMUF_FETCH_MAX || (out->flags & ~GMEMUF_HANDLER_READ))
		return -EINVAL;
	for (i = 0; i < sizeof(out->reserved) / sizeof(out->reserved[0]); i++)
		if (out->reserved[i])
			return -EINVAL;
	return 0;
}

static void reap(struct gmemuf_handler *h, struct queue *q);

/*
 * Populates queued on @q and never submitted, now dropped: their SQEs are
 * past the kernel's SQ head, and the ring is closed without submitting
 * them. Their faults go to another handler, as those of every populate the
 * handler did not complete.
 */
static void drop_unsubmitted(struct queue *q)
{
	unsigned int i, tail = q->ring.sq.sqe_tail;
	const struct io_uring_sqe *sqe;

	for (i = tail - io_uring_sq_ready(&q->ring); i != tail; i++) {
		sqe = &q->ring.sq.sqes[i & q->ring.sq.ring_mask];
		if ((sqe->user_data & TAG_MASK) == TAG_POPULATE)
			q->inflight--;
	}
}

static void queue_free(struct gmemuf_handler *h, struct queue *q)
{
	struct io_uring_cqe *cqe;
	int ret;

	if (!q)
		return;
	if (q->ring_ready)
		drop_unsubmitted(q);
	/*
	 * Populates submitted run in io-wq and read the caller's pages until
	 * they complete, which closing the ring does not wait for: wait for
	 * them here, submitting nothing. They never wait for faults, so this
	 * is bounded.
	 */
	while (q->ring_ready && q->inflight) {
		ret = io_uring_wait_cqe(&q->ring, &cqe);
		if (ret < 0 && ret != -EINTR)
			break;
		reap(h, q);
	}
	/* The ring first: it holds the handler file while a fetch is parked. */
	if (q->ring_ready)
		io_uring_queue_exit(&q->ring);
	if (q->hfd >= 0)
		close(q->hfd);
	free(q->queued);
	free(q->fetched);
	free(q->out);
	free(q->retry);
	free(q);
}

static int queue_new(struct gmemuf_handler *h, struct queue **qp)
{
	struct queue *q = calloc(1, sizeof(*q));

	*qp = q;
	if (!q)
		return -ENOMEM;
	q->hfd = -1;
	q->fetched = calloc(h->batch, sizeof(*q->fetched));
	q->retry_cap = h->depth;
	q->out = calloc(h->batch + q->retry_cap, sizeof(*q->out));
	q->retry = calloc(q->retry_cap, sizeof(*q->retry));
	q->queued = calloc(h->depth, sizeof(*q->queued));
	if (!q->fetched || !q->out || !q->retry || !q->queued)
		return -ENOMEM;
	q->hfd = gmemuf_handler_open(h->fd);
	return q->hfd < 0 ? q->hfd : 0;
}

struct ring_maker {
	struct gmemuf_handler *h;
	int ret;
};

/* The body of the thread that creates the rings, and then exits. */
static void *make_rings(void *arg)
{
	struct ring_maker *m = arg;
	struct gmemuf_handler *h = m->h;
	struct queue *q;
	unsigned int i;

	for (i = 0; i < h->nr_queues; i++) {
		q = h->q[i];
		/* Its CQ (twice the SQ) holds every populate, fetch, poll. */
		m->ret = io_uring_queue_init(h->depth, &q->ring, 0);
		if (m->ret)
			break;
		q->ring_ready = true;
	}
	/* No io_uring here: undo, for the queues to go without rings. */
	if (m->ret == -ENOSYS || m->ret == -EPERM) {
		while (i--) {
			io_uring_queue_exit(&h->q[i]->ring);
			h->q[i]->ring_ready = false;
		}
	}
	return NULL;
}

/*
 * Create the rings on a thread that exits at once, so that no ring of the
 * handler has the caller's thread as its creator (see the top). Its
 * signals are blocked: a signal for the process is not taken there.
 */
static int create_rings(struct gmemuf_handler *h)
{
	struct ring_maker m = { .h = h, .ret = 0 };
	sigset_t all, old;
	pthread_t thread;
	int ret;

	sigfillset(&all);
	ret = pthread_sigmask(SIG_SETMASK, &all, &old);
	if (ret)
		return -ret;
	ret = pthread_create(&thread, NULL, make_rings, &m);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		return -ret;
	ret = pthread_join(thread, NULL);
	if (ret)
		return -ret;
	return m.ret;
}

void gmemuf_handler_destroy(struct gmemuf_handler *h)
{
	unsigned int i;

	if (!h)
		return;
	for (i = 0; i < h->nr_queues; i++)
		queue_free(h, h->q[i]);
	if (h->stop_fd >= 0)
		close(h->stop_fd);
	free(h);
}

static void read_faults_done(struct queue *q, ssize_t n);

/*
 * The queues go without rings: their handler files are made non-blocking,
 * and the first is read once, which a kernel without read() on handler
 * files refuses with EINVAL. Faults that read takes are the queue's, for
 * its first wait.
 */
static int use_read(struct gmemuf_handler *h)
{
	struct queue *q;
	unsigned int i;
	ssize_t n;
	int fl;

	h->use_read = true;
	for (i = 0; i < h->nr_queues; i++) {
		q = h->q[i];
		fl = fcntl(q->hfd, F_GETFL);
		if (fl < 0 || fcntl(q->hfd, F_SETFL, fl | O_NONBLOCK) < 0)
			return -errno;
	}
	q = h->q[0];
	n = read(q->hfd, q->fetched, h->batch * sizeof(*q->fetched));
	if (n < 0 && errno == EINVAL)
		return -EOPNOTSUPP;
	if (n < 0 && errno != EAGAIN)
		return -errno;
	read_faults_done(q, n);
	return 0;
}

int gmemuf_handler_create(int fd, const struct gmemuf_handler_params *params,
			  struct gmemuf_handler **handler)
{
	struct gmemuf_handler_params p;
	struct gmemuf_handler *h;
	unsigned int i;
	int ret;

	if (!handler)
		return -EINVAL;
	*handler = NULL;
	ret = check_params(params, &p);
	if (ret)
		return ret;
	h = calloc(1, sizeof(*h) + p.nr_queues * sizeof(h->q[0]));
	if (!h)
		return -ENOMEM;
	h->fd = fd;
	h->nr_queues = p.nr_queues;
	h->depth = p.queue_depth;
	h->batch = p.batch;
	h->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->stop_fd < 0) {
		ret = -errno;
		goto fail;
	}
	for (i = 0; i < h->nr_queues; i++) {
		ret = queue_new(h, &h->q[i]);
		if (ret)
			goto fail;
	}
	if (p.flags & GMEMUF_HANDLER_READ) {
		ret = use_read(h);
	} else {
		ret = create_rings(h);
		/* No io_uring for this process (see the top): go without. */
		if (ret == -ENOSYS || ret == -EPERM)
			ret = use_read(h);
	}
	if (ret)
		goto fail;
	*handler = h;
	return 0;
fail:
	gmemuf_handler_destroy(h);
	return ret;
}

void gmemuf_handler_stop(struct gmemuf_handler *h)
{
	uint64_t one = 1;
	ssize_t ret;

	if (!h)
		return;
	atomic_store(&h->stopped, true);
	/*
	 * Completes the poll of every queue. It can only fail with EAGAIN,
	 * when the counter is full of earlier stops: it is readable anyway.
	 */
	ret = write(h->stop_fd, &one, sizeof(one));
	(void)ret;
}

/*
 * Add to a counter of @q. One writer at a time (the thread serving the
 * queue): a relaxed load and store, no locked instruction; readers see
 * the value before or after.
 */
static void count(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter,
				memory_order_relaxed) + n, memory_order_relaxed);
}

/* Take in the result of the populate of the page at @offset. */
static void populate_done(struct queue *q, uint64_t offset, int res)
{
	if (res == (int)GMEMUF_PAGE_SIZE) {
		count(&q->count.populated, 1);
		return;
	}
	if (res == -EEXIST) {
		count(&q->count.present, 1);
		return;
	}
	count(&q->count.populate_errors, 1);
	/*
	 * Still missing, and its fault is this handler's: say it again.
	 * gmemuf_handler_populate() made room for it. Not for EINVAL, an
	 * offset past the end of the file: no fault is behind that, and
	 * saying it again would loop for ever.
	 */
	if (res != -EINVAL)
		q->retry[q->nr_retry++] = offset;
	if (!q->error)
		q->error = res < 0 ? res : -EIO;
}

/* Take in a completion. */
static void complete(struct gmemuf_handler *h, struct queue *q,
		     const struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	int res = cqe->res;

	switch (data & TAG_MASK) {
	case TAG_POPULATE:
		q->inflight--;
		populate_done(q, data & ~TAG_MASK, res);
		break;
	case TAG_FETCH:
		q->fetch_armed = false;
		res = gmemuf_fetch_result(cqe, h->batch);
		if (res > 0) {
			q->ready = (unsigned int)res;
			count(&q->count.fetches, 1);
			count(&q->count.faults, (unsigned int)res);
		} else if (res == -ECANCELED) {
			/* By the exit of the thread that submitted it: re-arm. */
			count(&q->count.fetches_cancelled, 1);
		} else {
			count(&q->count.fetch_errors, 1);
			if (!q->error)
				q->error = res;
		}
		break;
	case TAG_STOP:
		q->stop_armed = false;
		break;
	case TAG_KICK:
		q->kick_armed = false;
		break;
	}
}

static void reap(struct gmemuf_handler *h, struct queue *q)
{
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;

	io_uring_for_each_cqe(&q->ring, head, cqe) {
		complete(h, q, cqe);
		n++;
	}
	io_uring_cq_advance(&q->ring, n);
}

/* An SQE of @q, submitting what is queued to make room if needed. */
static int get_sqe(struct queue *q, struct io_uring_sqe **sqe)
{
	int ret;

	*sqe = io_uring_get_sqe(&q->ring);
	if (*sqe)
		return 0;
	ret = io_uring_submit(&q->ring);
	if (ret < 0)
		return ret;
	*sqe = io_uring_get_sqe(&q->ring);
	return *sqe ? 0 : -EBUSY;
}

/* Queue the fetch and the stop poll, unless they are out already. */
static int arm(struct gmemuf_handler *h, struct queue *q)
{
	struct io_uring_sqe *sqe;
	int ret;

	/* Once stopped, the poll would complete at once, again and again. */
	if (!q->stop_armed && !atomic_load(&h->stopped)) {
		ret = get_sqe(q, &sqe);
		if (ret)
			return ret;
		io_uring_prep_poll_add(sqe, h->stop_fd, POLLIN);
		io_uring_sqe_set_data64(sqe, TAG_STOP);
		q->stop_armed = true;
	}
	if (!q->fetch_armed && !q->ready && !atomic_load(&h->stopped)) {
		ret = get_sqe(q, &sqe);
		if (ret)
			return ret;
		gmemuf_prep_fetch(sqe, q->hfd, q->fetched, h->batch);
		io_uring_sqe_set_data64(sqe, TAG_FETCH);
		q->fetch_armed = true;
	}
	return 0;
}

/* Hand out the faults to retry, then those fetched. */
static int deliver(struct queue *q, const struct gmemuf_fault **faults)
{
	unsigned int i, n = q->nr_retry;

	for (i = 0; i < q->nr_retry; i++)
		q->out[i] = (struct gmemuf_fault){ .offset = q->retry[i] };
	memcpy(q->out + n, q->fetched, q->ready * sizeof(*q->out));
	n += q->ready;
	count(&q->count.retries, q->nr_retry);
	q->nr_retry = 0;
	q->ready = 0;
	*faults = q->out;
	return (int)n;
}

static struct timespec deadline_after(int ms)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static struct __kernel_timespec time_left(const struct timespec *deadline)
{
	struct __kernel_timespec left = { 0, 0 };
	struct timespec now;
	long long ns;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (deadline->tv_sec - now.tv_sec) * 1000000000LL +
	     (deadline->tv_nsec - now.tv_nsec);
	if (ns > 0) {
		left.tv_sec = ns / 1000000000LL;
		left.tv_nsec = ns % 1000000000LL;
	}
	return left;
}

/* Without a ring: write the queued populates, in order. */
static void flush_populates(struct gmemuf_handler *h, struct queue *q)
{
	const struct queued_populate *qp;
	unsigned int i;
	ssize_t n;

	for (i = 0; i < q->inflight; i++) {
		qp = &q->queued[i];
		n = pwrite(h->fd, qp->page, GMEMUF_PAGE_SIZE, (off_t)qp->offset);
		populate_done(q, qp->offset, n < 0 ? -errno : (int)n);
	}
	q->inflight = 0;
}

/* Take in what a read() of the handler file gave: @n bytes, or -1. */
static void read_faults_done(struct queue *q, ssize_t n)
{
	if (n <= 0)
		return;
	q->ready = (unsigned int)(n / sizeof(*q->fetched));
	count(&q->count.fetches, 1);
	count(&q->count.faults, q->ready);
}

/* The milliseconds left until @deadline, for poll(). */
static int ms_left(const struct timespec *deadline)
{
	struct __kernel_timespec left = time_left(deadline);

	/* Rounded up: poll() would wake early, and busy-loop. */
	return (int)(left.tv_sec * 1000 + (left.tv_nsec + 999999) / 1000000);
}

/* gmemuf_handler_wait() on a queue without a ring. */
static int wait_read(struct gmemuf_handler *h, struct queue *q,
		     const struct gmemuf_fault **faults, int timeout_ms)
{
	struct pollfd pfd[2] = {
		{ .fd = q->hfd, .events = POLLIN },
		{ .fd = h->stop_fd, .events = POLLIN },
	};
	struct timespec deadline;
	bool timed_out = false;
	ssize_t n;
	int ret;

	flush_populates(h, q);
	if (timeout_ms >= 0)
		deadline = deadline_after(timeout_ms);
	for (;;) {
		if (q->error) {
			ret = q->error;
			q->error = 0;
			return ret;
		}
		if (q->ready || q->nr_retry)
			return deliver(q, faults);
		if (atomic_load(&h->stopped))
			return -ESHUTDOWN;
		n = read(q->hfd, q->fetched, h->batch * sizeof(*q->fetched));
		if (n > 0) {
			read_faults_done(q, n);
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			count(&q->count.fetch_errors, 1);
			return -errno;
		}
		if (timed_out)
			return 0;
		ret = poll(pfd, 2, timeout_ms < 0 ? -1 : ms_left(&deadline));
		if (ret == 0)
			timed_out = true;
		else if (ret < 0 && errno != EINTR)
			return -errno;
	}
}

/*
 * Faults of failed populates wait in retry[] for the next wait, which no
 * completion would announce: post a NOP's, so that the ring's descriptor
 * (gmemuf_handler_fd()) polls readable until a wait takes them. The next
 * wait reaps it. Without a submit it stays queued, for the next one.
 */
static void kick(struct queue *q)
{
	struct io_uring_sqe *sqe;

	if (!q->nr_retry || q->kick_armed || get_sqe(q, &sqe))
		return;
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, TAG_KICK);
	q->kick_armed = true;
	io_uring_submit(&q->ring);
}

/* gmemuf_handler_wait() on a queue with a ring. */
static int wait_ring(struct gmemuf_handler *h, struct queue *q,
		     const struct gmemuf_fault **faults, int timeout_ms)
{
	struct __kernel_timespec left, *ts;
	struct io_uring_cqe *cqe;
	struct timespec deadline;
	bool timed_out = false;
	int ret;

	if (timeout_ms >= 0)
		deadline = deadline_after(timeout_ms);
	for (;;) {
		/* Only once the populates are done is their data free again. */
		if (!q->inflight) {
			if (q->error) {
				ret = q->error;
				q->error = 0;
				return ret;
			}
			if (q->ready || q->nr_retry)
				return deliver(q, faults);
			if (atomic_load(&h->stopped))
				return -ESHUTDOWN;
			if (timed_out)
				return 0;
		}
		ret = arm(h, q);
		if (ret)
			return ret;
		ts = NULL;
		if (timeout_ms >= 0 && !q->inflight) {
			left = time_left(&deadline);
			ts = &left;
		}
		ret = io_uring_submit_and_wait_timeout(&q->ring, &cqe, 1, ts,
						       NULL);
		if (ret == -ETIME)
			timed_out = true;
		else if (ret < 0 && ret != -EINTR)
			return ret;
		reap(h, q);
	}
}

int gmemuf_handler_wait(struct gmemuf_handler *h, unsigned int queue,
			const struct gmemuf_fault **faults, int timeout_ms)
{
	struct queue *q;
	int ret;

	if (!h || queue >= h->nr_queues || !faults || timeout_ms < -1)
		return -EINVAL;
	q = h->q[queue];
	*faults = NULL;
	if (h->use_read)
		return wait_read(h, q, faults, timeout_ms);
	ret = wait_ring(h, q, faults, timeout_ms);
	kick(q);
	return ret;
}

/*
 * Room in retry[] (and out[]) for every populate in flight and one more to
 * fail, so that no failed populate's fault is ever dropped.
 */
static int reserve_retry(struct gmemuf_handler *h, struct queue *q)
{
	unsigned int need = q->nr_retry + q->inflight + 1, cap;
	struct gmemuf_fault *out;
	uint64_t *retry;

	if (need <= q->retry_cap)
		return 0;
	cap = q->retry_cap * 2 > need ? q->retry_cap * 2 : need;
	retry = realloc(q->retry, cap * sizeof(*retry));
	if (!retry)
		return -ENOMEM;
	q->retry = retry;
	out = realloc(q->out, (h->batch + cap) * sizeof(*out));
	if (!out)
		return -ENOMEM;
	q->out = out;
	q->retry_cap = cap;
	return 0;
}

int gmemuf_handler_populate(struct gmemuf_handler *h, unsigned int queue,
			    uint64_t offset, const void *page)
{
	struct io_uring_sqe *sqe;
	struct queue *q;
	int ret;

	if (!h || queue >= h->nr_queues || !page_aligned(offset) || !page)
		return -EINVAL;
	q = h->q[queue];
	if (h->use_read) {
		/* As a full ring would submit them. */
		if (q->inflight >= h->depth)
			flush_populates(h, q);
		ret = reserve_retry(h, q);
		if (ret)
			return ret;
		q->queued[q->inflight].offset = offset;
		q->queued[q->inflight].page = page;
		q->inflight++;
		return 0;
	}
	/* Bounded, so that every completion fits in the CQ. */
	while (q->inflight >= h->depth) {
		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR)
			return ret;
		reap(h, q);
	}
	ret = reserve_retry(h, q);
	if (ret)
		return ret;
	ret = get_sqe(q, &sqe);
	if (ret)
		return ret;
	gmemuf_prep_populate(sqe, h->fd, offset, page, 1);
	io_uring_sqe_set_data64(sqe, offset | TAG_POPULATE);
	q->inflight++;
	return 0;
}

int gmemuf_handler_fd(struct gmemuf_handler *h, unsigned int queue)
{
	if (!h || queue >= h->nr_queues)
		return -EINVAL;
	return h->use_read ? h->q[queue]->hfd : h->q[queue]->ring.ring_fd;
}

int gmemuf_handler_run(struct gmemuf_handler *h, unsigned int queue,
		       gmemuf_fault_fn fn, void *arg)
{
	const struct gmemuf_fault *faults;
	int n, ret;

	if (!fn)
		return -EINVAL;
	for (;;) {
		n = gmemuf_handler_wait(h, queue, &faults, -1);
		if (n == -ESHUTDOWN)
			return 0;
		if (n < 0)
			return n;
		ret = fn(h, queue, faults, (unsigned int)n, arg);
		if (ret)
			return ret < 0 ? ret : -EINVAL;
	}
}

int gmemuf_handler_stats(struct gmemuf_handler *h,
			 struct gmemuf_handler_stats *stats)
{
	struct gmemuf_handler_stats sum;
	unsigned int i;
	size_t size;

	/* The header and whole counters, and no size past sense. */
	if (!h || !stats || stats->size < 8 || stats->size % 8 ||
	    stats->size > 4096)
		return -EINVAL;
	memset(&sum, 0, sizeof(sum));
	for (i = 0; i < h->nr_queues; i++) {
		struct queue *q = h->q[i];

		sum.fetches += atomic_load_explicit(&q->count.fetches,
						    memory_order_relaxed);
		sum.faults += atomic_load_explicit(&q->count.faults,
						   memory_order_relaxed);
		sum.retries += atomic_load_explicit(&q->count.retries,
						    memory_order_relaxed);
		sum.populated += atomic_load_explicit(&q->count.populated,
						      memory_order_relaxed);
		sum.present += atomic_load_explicit(&q->count.present,
						    memory_order_relaxed);
		sum.populate_errors += atomic_load_explicit(
			&q->count.populate_errors, memory_order_relaxed);
		sum.fetch_errors += atomic_load_explicit(&q->count.fetch_errors,
							 memory_order_relaxed);
		sum.fetches_cancelled += atomic_load_explicit(
			&q->count.fetches_cancelled, memory_order_relaxed);
	}
	sum.populates = sum.populated + sum.present + sum.populate_errors;
	/* What both know; the caller's fields past ours are zeroed. */
	size = stats->size < sizeof(sum) ? stats->size : sizeof(sum);
	sum.size = (uint32_t)size;
	memset((char *)stats + size, 0, stats->size - size);
	memcpy(stats, &sum, size);
	return 0;
}
