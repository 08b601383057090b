// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf: fault records, handlers, and their delivery, by read() or
 * through io_uring.
 *
 * A task that waits for a missing page first posts a record of the fault,
 * unless one is out for that page already (the "posted" bitmap), so that
 * however many tasks touch a page, one record is delivered.
 *
 * A handler is a file, made by GMEMUF_IOC_HANDLER, which the handler
 * reads, or on which it parks GMEMUF_CMD_FETCH uring_cmds. Its release is
 * the one sure sign that the handler is gone, as /dev/fuse's and ublkc's
 * are for FUSE and ublk: the guest_memfd itself cannot tell, since the VMM
 * and KVM hold it too.
 *
 * The file has one queue of pending records and one list of the commands
 * parked by all its handlers, under one lock, so that any handler that
 * fetches or reads gets any pending record: no record waits on a handler
 * that does not. Records move:
 *
 *   pending --(a fetch completes, or a read)--> delivered, tagged with
 *           its handler --(page present)--> dropped
 *
 * A record is one word, the page's index and the fault's flags, and the
 * pending and delivered records are rings of such words, each with room
 * for every record alive: posting allocates only when a ring must grow,
 * and moving a record between them never does. The rings grow with the
 * most records alive at once, which the posted bitmap bounds by one per
 * page.
 *
 * Records are not looked up when their page is populated: a record whose
 * page is present is dropped when it is next seen (at delivery, when a
 * ring is full, or when the file is armed). When a handler loses its last
 * parked command to a cancellation (its ring went away, or the task that
 * submitted it exited), or its file is released, its delivered records
 * whose pages are still missing are pending again, first, for the next
 * fetch of any handler.
 *
 * Completions are filled in task work, in the context of the task that
 * submitted the command, where its buffer can be written. Readers sleep on
 * the file's read_wait, woken wherever records become pending; the fetch
 * path needs io_uring, read() and poll() do not.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/io_uring/cmd.h>
#include <linux/kvm_host.h>
#include <linux/log2.h>
#include <linux/poll.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <uapi/linux/gmemuf.h>

#include "gmemuf.h"
#include "gmemuf_trace.h"

/*
 * A record: the page's index, then the tag of the handler it was delivered
 * to (0 while pending), then the fault's GMEMUF_FAULT_* flags.
 */
#define GMEMUF_REC_FLAG_BITS	20
#define GMEMUF_REC_TAG_BITS	8
#define GMEMUF_REC_INDEX_SHIFT	(GMEMUF_REC_FLAG_BITS + GMEMUF_REC_TAG_BITS)

static_assert(GMEMUF_MAX_HANDLERS <= 1 << GMEMUF_REC_TAG_BITS);
static_assert(GMEMUF_SIZE_MAX >> PAGE_SHIFT <=
	      1ULL << (64 - GMEMUF_REC_INDEX_SHIFT));
static_assert(GMEMUF_FAULT_PRIVATE < 1 << GMEMUF_REC_FLAG_BITS);

/* The first room a ring gets: 512 bytes. */
#define GMEMUF_RECS_MIN		64
/* Records a fill takes at a time, on the stack between lock holds. */
#define GMEMUF_FILL_BATCH	32

static u64 gmemuf_rec(pgoff_t index, u32 flags)
{
	return (u64)index << GMEMUF_REC_INDEX_SHIFT | flags;
}

static pgoff_t gmemuf_rec_index(u64 rec)
{
	return rec >> GMEMUF_REC_INDEX_SHIFT;
}

static u32 gmemuf_rec_flags(u64 rec)
{
	return rec & GENMASK_ULL(GMEMUF_REC_FLAG_BITS - 1, 0);
}

static unsigned int gmemuf_rec_tag(u64 rec)
{
	return (rec >> GMEMUF_REC_FLAG_BITS) &
	       GENMASK(GMEMUF_REC_TAG_BITS - 1, 0);
}

static u64 gmemuf_rec_tagged(u64 rec, unsigned int tag)
{
	return rec | (u64)tag << GMEMUF_REC_FLAG_BITS;
}

static u64 gmemuf_rec_untagged(u64 rec)
{
	return rec & ~GENMASK_ULL(GMEMUF_REC_INDEX_SHIFT - 1,
				  GMEMUF_REC_FLAG_BITS);
}

/*
 * The rings. The callers hold queue_lock, and make room before they add:
 * each ring has room for uf->nr_records.
 */
static u64 *gmemuf_recs_at(struct gmemuf_recs *r, unsigned long i)
{
	return &r->recs[(r->head + i) & (r->cap - 1)];
}

static void gmemuf_recs_add_tail(struct gmemuf_recs *r, u64 rec)
{
	*gmemuf_recs_at(r, r->nr++) = rec;
}

static void gmemuf_recs_add_head(struct gmemuf_recs *r, u64 rec)
{
	r->head = (r->head - 1) & (r->cap - 1);
	r->recs[r->head] = rec;
	r->nr++;
}

static u64 gmemuf_recs_take_head(struct gmemuf_recs *r)
{
	u64 rec = r->recs[r->head];

	r->head = (r->head + 1) & (r->cap - 1);
	r->nr--;
	return rec;
}

/*
 * With queue_lock held: give @r room for @want records, or more. Drops the
 * lock to allocate, so the caller looks at the state again after. Returns
 * -ENOMEM with @r as it was if there is no memory.
 */
static int gmemuf_recs_grow(struct gmemuf *uf, struct gmemuf_recs *r,
			    unsigned long want)
	__must_hold(&uf->queue_lock)
{
	unsigned long cap = max_t(unsigned long, roundup_pow_of_two(want),
				  GMEMUF_RECS_MIN);
	unsigned long i;
	u64 *recs;

	spin_unlock(&uf->queue_lock);
	recs = kvmalloc_array(cap, sizeof(*recs), GFP_KERNEL_ACCOUNT);
	spin_lock(&uf->queue_lock);
	if (!recs)
		return -ENOMEM;

	/* Another task may have grown it meanwhile. */
	if (cap > r->cap) {
		for (i = 0; i < r->nr; i++)
			recs[i] = *gmemuf_recs_at(r, i);
		swap(r->recs, recs);
		r->head = 0;
		r->cap = cap;
	}
	spin_unlock(&uf->queue_lock);
	kvfree(recs);
	spin_lock(&uf->queue_lock);
	return 0;
}

/* With queue_lock held: drop the records of @r whose pages are present. */
static void gmemuf_recs_drop_present(struct gmemuf *uf, struct gmemuf_recs *r)
{
	unsigned long i, n = 0;
	u64 rec;

	lockdep_assert_held(&uf->queue_lock);

	for (i = 0; i < r->nr; i++) {
		rec = *gmemuf_recs_at(r, i);
		if (gmemuf_missing(uf, gmemuf_rec_index(rec)))
			*gmemuf_recs_at(r, n++) = rec;
	}
	uf->nr_records -= r->nr - n;
	r->nr = n;
}

/*
 * With queue_lock held: make room in both rings for one more record. Drop
 * the records of pages populated since first, and grow only if that leaves
 * a ring more than half full, so that the walk is paid for by as many
 * posts as it made room for.
 */
static int gmemuf_make_room(struct gmemuf *uf)
	__must_hold(&uf->queue_lock)
{
	unsigned long want;
	int r;

	while (uf->nr_records >= min(uf->pending.cap, uf->delivered.cap)) {
		gmemuf_recs_drop_present(uf, &uf->pending);
		gmemuf_recs_drop_present(uf, &uf->delivered);
		want = 2 * (uf->nr_records + 1);
		if (uf->pending.cap < want) {
			r = gmemuf_recs_grow(uf, &uf->pending, want);
			if (r)
				return r;
		}
		if (uf->delivered.cap < want) {
			r = gmemuf_recs_grow(uf, &uf->delivered, want);
			if (r)
				return r;
		}
	}
	return 0;
}

struct gmemuf_handler {
	struct gmemuf *uf;
	/* The guest_memfd, held so that uf outlives the handler. */
	struct file *gmem_file;
	/* Of its records in uf->delivered. */
	unsigned int tag;

	/* The fields below are protected by uf->queue_lock. */

	/* Commands of this handler in uf->parked. */
	unsigned int nr_parked;
	/* A command of this handler was taken to deliver pending records. */
	bool busy;
};

/* In the io_uring_cmd's pdu, for a parked or delivering command. */
struct gmemuf_fetch_pdu {
	struct list_head node;	/* in uf->parked, or empty */
	u64 addr;
	u32 nr;
};

static struct gmemuf_fetch_pdu *gmemuf_pdu(struct io_uring_cmd *cmd)
{
	return io_uring_cmd_to_pdu(cmd, struct gmemuf_fetch_pdu);
}

static struct gmemuf_handler *gmemuf_cmd_handler(struct io_uring_cmd *cmd)
{
	return cmd->file->private_data;
}

static void gmemuf_fetch_tw(struct io_tw_req tw_req, io_tw_token_t tw);

/*
 * With queue_lock held: if records are pending, take a parked command of a
 * handler that is not delivering already, to deliver them. A handler that
 * is delivering gets the records that arrive meanwhile in the same batch,
 * or parks again and is taken then; the others are taken at once, so that
 * a handler slow to run its task work holds up no record. The caller
 * completes the command in task work once the lock is dropped.
 */
static struct io_uring_cmd *gmemuf_take_parked(struct gmemuf *uf)
{
	struct gmemuf_fetch_pdu *pdu;
	struct io_uring_cmd *cmd;
	struct gmemuf_handler *h;

	lockdep_assert_held(&uf->queue_lock);

	if (!uf->pending.nr)
		return NULL;

	list_for_each_entry(pdu, &uf->parked, node) {
		cmd = container_of((void *)pdu, struct io_uring_cmd, pdu);
		h = gmemuf_cmd_handler(cmd);
		if (h->busy)
			continue;
		list_del_init(&pdu->node);
		h->nr_parked--;
		h->busy = true;
		return cmd;
	}
	return NULL;
}

static void gmemuf_kick(struct io_uring_cmd *cmd)
{
	if (cmd)
		io_uring_cmd_complete_in_task(cmd, gmemuf_fetch_tw);
}

/*
 * Records may have become pending: wake the handlers sleeping in read() or
 * poll() of their handler files. All of them, as a reader takes only what
 * fits in its buffer; those that find nothing sleep again.
 */
static void gmemuf_wake_readers(struct gmemuf *uf)
{
	if (wq_has_sleeper(&uf->read_wait))
		wake_up_interruptible_poll(&uf->read_wait, EPOLLIN | EPOLLRDNORM);
}

/*
 * Whether records are pending, for read() and poll(). Records whose pages
 * are present count too, until a read or fetch drops them: a reader woken
 * for those only finds nothing and sleeps again.
 */
static bool gmemuf_records_pending(struct gmemuf *uf)
{
	bool pending;

	spin_lock(&uf->queue_lock);
	pending = uf->pending.nr;
	spin_unlock(&uf->queue_lock);
	return pending;
}

/*
 * With queue_lock held: make the delivered records of the handler tagged
 * @tag pending again, first, in the order they were delivered, and drop
 * those whose pages are present. The others stay, in order.
 */
static void gmemuf_requeue(struct gmemuf *uf, unsigned int tag)
{
	struct gmemuf_recs *r = &uf->delivered;
	unsigned long i = r->nr, kept = r->nr;
	u64 rec;

	lockdep_assert_held(&uf->queue_lock);

	/* From the newest, so that the oldest ends up first. */
	while (i--) {
		rec = *gmemuf_recs_at(r, i);
		if (gmemuf_rec_tag(rec) != tag)
			*gmemuf_recs_at(r, --kept) = rec;
		else if (gmemuf_missing(uf, gmemuf_rec_index(rec)))
			gmemuf_recs_add_head(&uf->pending,
					     gmemuf_rec_untagged(rec));
		else
			uf->nr_records--;
	}
	r->head = (r->head + kept) & (r->cap - 1);
	r->nr -= kept;
}

/*
 * Whether this task is to post the record of a fault on page @index: it
 * takes the page's posted bit while the page is missing.
 */
static bool gmemuf_take_posted(struct gmemuf *uf, pgoff_t index)
{
	for (;;) {
		/* Of the tasks faulting on the page, the first posts. */
		if (test_and_set_bit(index, uf->posted))
			return false;
		/* Pairs with gmemuf_arm(): posted bits clear, then missing. */
		smp_mb__after_atomic();
		if (gmemuf_missing(uf, index))
			return true;
		/*
		 * Populated since the caller looked, and perhaps about to be
		 * armed again, whose clearing of the posted bits may be past
		 * this one already: a record now would be dropped as stale
		 * with the bit left set, and no fault on the page would post
		 * again. Give the bit back; if the page went missing
		 * meanwhile, a fault that found the bit taken may be waiting:
		 * post for it.
		 */
		clear_bit(index, uf->posted);
		/* The bit is given back before the page is looked at again. */
		smp_mb__after_atomic();
		if (!gmemuf_missing(uf, index))
			return false;
	}
}

/*
 * Post a record of a fault on page @index, unless one is out already or the
 * page is present by now. Returns 1 if this posted it, 0 if not, -ENOMEM.
 * Room is made before the posted bit is taken: once it is, the record must
 * go out, as other faults on the page wait for it.
 */
int gmemuf_post(struct gmemuf *uf, pgoff_t index, u32 flags)
{
	struct io_uring_cmd *cmd = NULL;
	int r;

	if (test_bit(index, uf->posted))
		return 0;

	spin_lock(&uf->queue_lock);
	r = gmemuf_make_room(uf);
	if (!r && gmemuf_take_posted(uf, index)) {
		/* Counted before a handler can see it. */
		atomic64_inc(&uf->kvm->stat.generic.gmemuf_posted);
		trace_gmemuf_post(uf->ino, index, flags);
		gmemuf_recs_add_tail(&uf->pending, gmemuf_rec(index, flags));
		uf->nr_records++;
		cmd = gmemuf_take_parked(uf);
		r = 1;
	}
	spin_unlock(&uf->queue_lock);

	if (r == 1) {
		gmemuf_kick(cmd);
		gmemuf_wake_readers(uf);
	}
	return r;
}

/*
 * Drop the records whose pages are present, pending or delivered: faults
 * resolved before any handler saw them, as when a VMM populates on memory
 * fault exits with no handler attached, or since. The arm that calls this
 * clears the posted bits, so that the next fault on each page posts afresh,
 * and makes pages missing again: a record of an earlier fault on one of
 * them, left behind, would go out beside the record of the next fault,
 * pending, or when its handler goes away. Called with the mapping's
 * invalidate_lock held exclusive, under which no present page goes
 * missing. O(records), as an arm is rare.
 */
void gmemuf_drop_resolved(struct gmemuf *uf)
{
	spin_lock(&uf->queue_lock);
	gmemuf_recs_drop_present(uf, &uf->pending);
	gmemuf_recs_drop_present(uf, &uf->delivered);
	spin_unlock(&uf->queue_lock);
}

/*
 * /proc/<pid>/fdinfo/<fd> of a guest_memfd: for a userfault one, its
 * handlers, its records not delivered yet, counting those whose pages were
 * populated since (dropped when a handler next looks, or by an arm), and
 * the number of its wait queues, fixed when it was created.
 */
void gmemuf_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct gmemuf *uf = file_inode(file)->i_private;
	unsigned long pending;
	unsigned int handlers;

	if (!uf)
		return;

	spin_lock(&uf->queue_lock);
	pending = uf->pending.nr;
	handlers = uf->nr_handlers;
	spin_unlock(&uf->queue_lock);

	seq_printf(m, "gmemuf_handlers:\t%u\ngmemuf_pending:\t%lu\n",
		   handlers, pending);
	seq_printf(m, "gmemuf_wait_queues:\t%u\n", uf->waitq_mask + 1);
}

/*
 * Take up to @nr pending records, GMEMUF_FILL_BATCH at a time, write each
 * batch to @ubuf and make it the handler's. Returns how many, 0 if none was
 * pending, or -EFAULT if @ubuf could not be written at all; the records not
 * written are pending again, first. @read: for read(), not a fetch.
 */
static int gmemuf_fill(struct gmemuf_handler *h,
		       struct gmemuf_fault __user *ubuf, u32 nr, bool read)
{
	struct gmemuf *uf = h->uf;
	u64 batch[GMEMUF_FILL_BATCH];
	struct io_uring_cmd *cmd;
	u32 done = 0, n, i, j;
	u64 rec;

	while (done < nr) {
		n = 0;
		spin_lock(&uf->queue_lock);
		while (n < min_t(u32, nr - done, GMEMUF_FILL_BATCH) &&
		       uf->pending.nr) {
			rec = gmemuf_recs_take_head(&uf->pending);
			if (gmemuf_missing(uf, gmemuf_rec_index(rec)))
				batch[n++] = rec;
			else
				uf->nr_records--;
		}
		spin_unlock(&uf->queue_lock);
		if (!n)
			break;

		/* Still counted in nr_records: there is room to put it back. */
		for (i = 0; i < n; i++) {
			struct gmemuf_fault fault = {
				.offset = (u64)gmemuf_rec_index(batch[i]) <<
					  PAGE_SHIFT,
				.flags = gmemuf_rec_flags(batch[i]),
			};

			if (copy_to_user(ubuf + done + i, &fault,
					 sizeof(fault)))
				break;
		}

		spin_lock(&uf->queue_lock);
		for (j = 0; j < i; j++)
			gmemuf_recs_add_tail(&uf->delivered,
					     gmemuf_rec_tagged(batch[j], h->tag));
		for (j = n; j > i; j--)
			gmemuf_recs_add_head(&uf->pending, batch[j - 1]);
		cmd = i < n ? gmemuf_take_parked(uf) : NULL;
		spin_unlock(&uf->queue_lock);

		if (trace_gmemuf_deliver_enabled())
			for (j = 0; j < i; j++)
				trace_gmemuf_deliver(uf->ino,
						     gmemuf_rec_index(batch[j]),
						     gmemuf_rec_flags(batch[j]),
						     read);
		done += i;
		if (i < n) {
			/* Pending again: for the other handlers too. */
			gmemuf_kick(cmd);
			gmemuf_wake_readers(uf);
			return done ? (int)done : -EFAULT;
		}
	}
	return (int)done;
}

/*
 * With queue_lock held: a handler with no command parked or delivering may
 * not fetch again (its ring or its task is going away): make its delivered
 * records pending again, for the other handlers, or for this one if it
 * fetches after all.
 */
static void gmemuf_hand_off(struct gmemuf_handler *h)
{
	lockdep_assert_held(&h->uf->queue_lock);

	if (!h->nr_parked && !h->busy)
		gmemuf_requeue(h->uf, h->tag);
}

static void gmemuf_fetch_tw(struct io_tw_req tw_req, io_tw_token_t tw)
{
	struct io_uring_cmd *cmd = io_uring_cmd_from_tw(tw_req);
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	struct gmemuf_handler *h = gmemuf_cmd_handler(cmd);
	struct gmemuf *uf = h->uf;
	struct io_uring_cmd *next;
	int r;

	/* The task is exiting: its buffer must not be written. */
	r = tw.cancel ? -ECANCELED :
			gmemuf_fill(h, u64_to_user_ptr(pdu->addr), pdu->nr,
				    false);

	spin_lock(&uf->queue_lock);
	h->busy = false;
	if (!r) {
		/* Every pending record was stale: park the command again. */
		list_add(&gmemuf_pdu(cmd)->node, &uf->parked);
		h->nr_parked++;
	}
	if (tw.cancel)
		gmemuf_hand_off(h);
	next = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);

	if (r)
		io_uring_cmd_done(cmd, r, IO_URING_CMD_TASK_WORK_ISSUE_FLAGS);
	gmemuf_kick(next);
	/* Records the hand-off made pending. */
	if (tw.cancel)
		gmemuf_wake_readers(uf);
}

/*
 * The ring of a parked command is going away, or the task that submitted it
 * is exiting (io_uring_cmd_cancel_on_exit()).
 */
static void gmemuf_cancel(struct gmemuf_handler *h, struct io_uring_cmd *cmd,
			  unsigned int issue_flags)
{
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	struct gmemuf *uf = h->uf;
	struct io_uring_cmd *next = NULL;
	bool parked;

	spin_lock(&uf->queue_lock);
	/* A command taken for delivery is completed by its task work. */
	parked = !list_empty(&pdu->node);
	if (parked) {
		list_del_init(&pdu->node);
		h->nr_parked--;
		gmemuf_hand_off(h);
		next = gmemuf_take_parked(uf);
	}
	spin_unlock(&uf->queue_lock);

	if (!parked)
		return;

	io_uring_cmd_done(cmd, -ECANCELED, issue_flags);
	gmemuf_kick(next);
	gmemuf_wake_readers(uf);
}

/*
 * The fields of the SQE that a fetch does not use are 0, so that they can
 * mean something later: those io_uring leaves to the command (ioprio, addr,
 * len, buf_index, file_index), its flags (no fixed buffer, no multishot),
 * and the second half of a 128-byte SQE's command area.
 */
static bool gmemuf_fetch_sqe_unused_zero(struct io_uring_cmd *cmd,
					 unsigned int issue_flags)
{
	const struct io_uring_sqe *sqe = cmd->sqe;
	size_t cmd_len = 2 * sizeof(*sqe) - offsetof(struct io_uring_sqe, cmd);

	if ((cmd->flags & IORING_URING_CMD_MASK) || READ_ONCE(sqe->ioprio) ||
	    READ_ONCE(sqe->addr) || READ_ONCE(sqe->len) ||
	    READ_ONCE(sqe->buf_index) || READ_ONCE(sqe->file_index))
		return false;
	return !(issue_flags & IO_URING_F_SQE128) ||
	       !memchr_inv((const u8 *)sqe->cmd + sizeof(struct gmemuf_fetch), 0,
			   cmd_len - sizeof(struct gmemuf_fetch));
}

static int gmemuf_fetch(struct gmemuf_handler *h, struct io_uring_cmd *cmd,
			unsigned int issue_flags)
{
	const struct gmemuf_fetch *arg = io_uring_sqe_cmd(cmd->sqe,
							  struct gmemuf_fetch);
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	struct gmemuf *uf = h->uf;
	struct io_uring_cmd *next;
	u64 addr = READ_ONCE(arg->addr);
	u32 nr = READ_ONCE(arg->nr);

	if (READ_ONCE(arg->flags) || !addr || !nr || nr > GMEMUF_FETCH_MAX ||
	    !gmemuf_fetch_sqe_unused_zero(cmd, issue_flags))
		return -EINVAL;

	pdu->addr = addr;
	pdu->nr = nr;
	INIT_LIST_HEAD(&pdu->node);

	/*
	 * Cancelable before it is visible: once parked it may be completed
	 * at any time, by task work that can run before this returns when
	 * the command was issued from io-wq. Canceled on the exit of its task
	 * as well as of its ring: only that task can complete it, and its
	 * records are to go to the other handlers once it is gone.
	 */
	io_uring_cmd_mark_cancelable(cmd, issue_flags);
	io_uring_cmd_cancel_on_exit(cmd);
	spin_lock(&uf->queue_lock);
	list_add_tail(&pdu->node, &uf->parked);
	h->nr_parked++;
	next = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);
	gmemuf_kick(next);

	return -EIOCBQUEUED;
}

static int gmemuf_handler_uring_cmd(struct io_uring_cmd *cmd,
				    unsigned int issue_flags)
{
	struct gmemuf_handler *h = gmemuf_cmd_handler(cmd);

	if (issue_flags & IO_URING_F_CANCEL) {
		gmemuf_cancel(h, cmd, issue_flags);
		return 0;
	}

	switch (cmd->cmd_op) {
	case GMEMUF_CMD_FETCH:
		return gmemuf_fetch(h, cmd, issue_flags);
	}
	return -EINVAL;
}

static int gmemuf_handler_release(struct inode *inode, struct file *file)
{
	struct gmemuf_handler *h = file->private_data;
	struct gmemuf *uf = h->uf;
	struct io_uring_cmd *next;

	/* No command is parked or delivering: each holds this file. */
	spin_lock(&uf->queue_lock);
	WARN_ON_ONCE(h->nr_parked || h->busy);
	gmemuf_requeue(uf, h->tag);
	clear_bit(h->tag, uf->handler_ids);
	uf->nr_handlers--;
	next = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);

	gmemuf_kick(next);
	gmemuf_wake_readers(uf);
	fput(h->gmem_file);
	kfree(h);
	return 0;
}

/*
 * read(): as many whole records as fit in @count bytes, up to
 * GMEMUF_FETCH_MAX, taken from the same queue as fetches and delivered to
 * the same handler, so that they are pending again when its file is
 * released. Sleeps for one unless the file is O_NONBLOCK; the offset is
 * ignored, as for a pipe.
 */
static ssize_t gmemuf_handler_read(struct file *file, char __user *buf,
				   size_t count, loff_t *ppos)
{
	struct gmemuf_handler *h = file->private_data;
	struct gmemuf *uf = h->uf;
	u32 nr;
	int n;

	if (count < sizeof(struct gmemuf_fault))
		return -EINVAL;
	nr = min_t(size_t, count / sizeof(struct gmemuf_fault),
		   GMEMUF_FETCH_MAX);

	for (;;) {
		n = gmemuf_fill(h, (struct gmemuf_fault __user *)buf, nr, true);
		if (n)
			break;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		if (wait_event_interruptible(uf->read_wait,
					     gmemuf_records_pending(uf)))
			return -ERESTARTSYS;
	}
	return n < 0 ? n : n * sizeof(struct gmemuf_fault);
}

static __poll_t gmemuf_handler_poll(struct file *file, poll_table *wait)
{
	struct gmemuf_handler *h = file->private_data;

	poll_wait(file, &h->uf->read_wait, wait);
	return gmemuf_records_pending(h->uf) ? EPOLLIN | EPOLLRDNORM : 0;
}

static const struct file_operations gmemuf_handler_fops = {
	.owner		= THIS_MODULE,
	.release	= gmemuf_handler_release,
	.read		= gmemuf_handler_read,
	.poll		= gmemuf_handler_poll,
	.llseek		= noop_llseek,
	/* GMEMUF_CMD_FETCH, and only it, needs io_uring. */
	.uring_cmd	= IS_ENABLED(CONFIG_IO_URING) ?
			  gmemuf_handler_uring_cmd : NULL,
};

int gmemuf_attach_handler(struct gmemuf *uf, struct file *gmem_file)
{
	struct gmemuf_handler *h;
	struct file *file;
	int fd;

	h = kzalloc_obj(*h);
	if (!h)
		return -ENOMEM;
	h->uf = uf;

	spin_lock(&uf->queue_lock);
	if (uf->nr_handlers == GMEMUF_MAX_HANDLERS) {
		spin_unlock(&uf->queue_lock);
		kfree(h);
		return -ENOSPC;
	}
	uf->nr_handlers++;
	/* Free: a released handler's records are pending again. */
	h->tag = find_first_zero_bit(uf->handler_ids, GMEMUF_MAX_HANDLERS);
	set_bit(h->tag, uf->handler_ids);
	spin_unlock(&uf->queue_lock);

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		goto err;

	file = anon_inode_getfile("[gmemuf-handler]", &gmemuf_handler_fops, h,
				  O_RDWR | O_CLOEXEC);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		fd = PTR_ERR(file);
		goto err;
	}
	h->gmem_file = get_file(gmem_file);
	fd_install(fd, file);
	return fd;

err:
	spin_lock(&uf->queue_lock);
	clear_bit(h->tag, uf->handler_ids);
	uf->nr_handlers--;
	spin_unlock(&uf->queue_lock);
	kfree(h);
	return fd;
}

/* The file is going away: no handler is left, no command is parked. */
void gmemuf_free_pending(struct gmemuf *uf)
{
	WARN_ON_ONCE(uf->nr_handlers || !list_empty(&uf->parked));
	kvfree(uf->pending.recs);
	kvfree(uf->delivered.recs);
}
