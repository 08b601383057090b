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
 * reads, or on which it parks GMEMUF_CMD_FETCH uring_cmds. Its release is the one sure sign that
 * the handler is gone, as /dev/fuse's and ublkc's are for FUSE and ublk: the
 * guest_memfd itself cannot tell, since the VMM and KVM hold it too.
 *
 * The file has one queue of pending records and one list of the commands
 * parked by all its handlers, under one lock, so that any handler that
 * fetches or reads gets any pending record: no record waits on a handler
 * that does not. Records move:
 *
 *   pending --(a fetch completes, or a read)--> delivered, on its handler
 *           --(page present)--> freed
 *
 * Records are not looked up when their page is populated: a record whose
 * page is present is freed when it is next seen (at delivery, or when its
 * handler fetches again). When a handler loses its last parked command to a
 * cancellation (its ring went away, or the task that submitted it exited),
 * or its file is released, its delivered records whose pages are still
 * missing are pending again, for the next fetch of any handler.
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
#include <linux/poll.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <uapi/linux/gmemuf.h>

#include "gmemuf.h"
#include "gmemuf_trace.h"

#define GMEMUF_MAX_HANDLERS	256

struct gmemuf_record {
	struct list_head node;
	pgoff_t index;
	u32 flags;
};

struct gmemuf_handler {
	struct gmemuf *uf;
	/* The guest_memfd, held so that uf outlives the handler. */
	struct file *gmem_file;

	/* The fields below are protected by uf->queue_lock. */

	/* Records delivered and not known to be resolved yet. */
	struct list_head delivered;
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

	if (list_empty(&uf->pending))
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
	pending = !list_empty(&uf->pending);
	spin_unlock(&uf->queue_lock);
	return pending;
}

/*
 * With queue_lock held: move the records of @list whose pages are still
 * missing to the head of the pending queue, in order, and the others to
 * @stale, for the caller to free once the lock is dropped.
 */
static void gmemuf_requeue(struct gmemuf *uf, struct list_head *list,
			   struct list_head *stale)
{
	struct gmemuf_record *rec, *tmp;

	lockdep_assert_held(&uf->queue_lock);

	list_for_each_entry_safe_reverse(rec, tmp, list, node) {
		if (gmemuf_missing(uf, rec->index))
			list_move(&rec->node, &uf->pending);
		else
			list_move(&rec->node, stale);
	}
}

static void gmemuf_free_records(struct list_head *list)
{
	struct gmemuf_record *rec, *tmp;

	list_for_each_entry_safe(rec, tmp, list, node)
		kfree(rec);
}

static void gmemuf_queue(struct gmemuf *uf, struct gmemuf_record *rec)
{
	struct io_uring_cmd *cmd;

	/* Before it is queued: once it is, a handler may free it any time. */
	atomic64_inc(&uf->kvm->stat.generic.gmemuf_posted);
	trace_gmemuf_post(uf->ino, rec->index, rec->flags);

	spin_lock(&uf->queue_lock);
	list_add_tail(&rec->node, &uf->pending);
	cmd = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);
	gmemuf_kick(cmd);
	gmemuf_wake_readers(uf);
}

/*
 * Post a record of a fault on page @index, unless one is out already or the
 * page is present by now. Returns 1 if this posted it, 0 if not, -ENOMEM.
 */
int gmemuf_post(struct gmemuf *uf, pgoff_t index, u32 flags)
{
	struct gmemuf_record *rec;

	if (test_bit(index, uf->posted))
		return 0;

	rec = kmalloc_obj(*rec, GFP_KERNEL_ACCOUNT);
	if (!rec)
		return -ENOMEM;

	rec->index = index;
	rec->flags = flags;
	for (;;) {
		/* Of the tasks faulting on the page, the first posts. */
		if (test_and_set_bit(index, uf->posted))
			break;
		/* Pairs with gmemuf_arm(): posted bits clear, then missing. */
		smp_mb__after_atomic();
		if (gmemuf_missing(uf, index)) {
			gmemuf_queue(uf, rec);
			return 1;
		}
		/*
		 * Populated since the caller looked, and perhaps about to be
		 * armed again, whose clearing of the posted bits may be past
		 * this one already: a record now would be freed as stale with
		 * the bit left set, and no fault on the page would post again.
		 * Give the bit back; if the page went missing meanwhile, a
		 * fault that found the bit taken may be waiting: post for it.
		 */
		clear_bit(index, uf->posted);
		/* The bit is given back before the page is looked at again. */
		smp_mb__after_atomic();
		if (!gmemuf_missing(uf, index))
			break;
	}
	kfree(rec);
	return 0;
}

/*
 * Free the pending records whose pages are present: faults resolved before
 * any handler saw them, as when a VMM populates on memory fault exits with
 * no handler attached. The arm that calls this clears the posted bits, so
 * that the next fault on each page posts afresh: without this, every arm
 * would leave a record behind for each page faulted on since the last one,
 * for as long as the file lives. Called with the mapping's invalidate_lock
 * held exclusive, under which no present page goes missing. O(pending), as
 * an arm is rare; the records it walks are bounded by the missing pages
 * faulted on.
 */
void gmemuf_drop_resolved(struct gmemuf *uf)
{
	struct gmemuf_record *rec, *tmp;
	LIST_HEAD(stale);

	spin_lock(&uf->queue_lock);
	list_for_each_entry_safe(rec, tmp, &uf->pending, node)
		if (!gmemuf_missing(uf, rec->index))
			list_move(&rec->node, &stale);
	spin_unlock(&uf->queue_lock);

	gmemuf_free_records(&stale);
}

/*
 * /proc/<pid>/fdinfo/<fd> of a guest_memfd: for a userfault one, its
 * handlers, its records not delivered yet, counting those whose pages were
 * populated since (freed when a handler next looks, or by an arm), and the
 * number of its wait queues, fixed when it was created.
 */
void gmemuf_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct gmemuf *uf = file_inode(file)->i_private;
	struct gmemuf_record *rec;
	unsigned long pending = 0;
	unsigned int handlers;

	if (!uf)
		return;

	spin_lock(&uf->queue_lock);
	list_for_each_entry(rec, &uf->pending, node)
		pending++;
	handlers = uf->nr_handlers;
	spin_unlock(&uf->queue_lock);

	seq_printf(m, "gmemuf_handlers:\t%u\ngmemuf_pending:\t%lu\n",
		   handlers, pending);
	seq_printf(m, "gmemuf_wait_queues:\t%u\n", uf->waitq_mask + 1);
}

/*
 * Write up to @nr pending records to @ubuf and move them to the handler's
 * delivered records. Returns how many, 0 if none was left, or an error
 * with the records pending again. @read: for read(), not a fetch.
 */
static int gmemuf_fill(struct gmemuf_handler *h,
		       struct gmemuf_fault __user *ubuf, u32 nr, bool read)
{
	struct gmemuf *uf = h->uf;
	struct gmemuf_record *rec, *tmp;
	LIST_HEAD(batch);
	LIST_HEAD(stale);
	u32 n = 0;

	spin_lock(&uf->queue_lock);
	list_for_each_entry_safe(rec, tmp, &uf->pending, node) {
		if (n == nr)
			break;
		if (!gmemuf_missing(uf, rec->index)) {
			list_move(&rec->node, &stale);
			continue;
		}
		list_move_tail(&rec->node, &batch);
		n++;
	}
	spin_unlock(&uf->queue_lock);

	gmemuf_free_records(&stale);

	list_for_each_entry(rec, &batch, node) {
		struct gmemuf_fault fault = {
			.offset = (u64)rec->index << PAGE_SHIFT,
			.flags = rec->flags,
		};

		if (copy_to_user(ubuf++, &fault, sizeof(fault))) {
			spin_lock(&uf->queue_lock);
			list_splice(&batch, &uf->pending);
			spin_unlock(&uf->queue_lock);
			return -EFAULT;
		}
	}

	/* While the batch is still this handler's alone. */
	if (trace_gmemuf_deliver_enabled())
		list_for_each_entry(rec, &batch, node)
			trace_gmemuf_deliver(uf->ino, rec->index, rec->flags,
					     read);

	spin_lock(&uf->queue_lock);
	list_splice_tail(&batch, &h->delivered);
	spin_unlock(&uf->queue_lock);
	return n;
}

/*
 * With queue_lock held: a handler with no command parked or delivering may
 * not fetch again (its ring or its task is going away): make its delivered
 * records pending again, for the other handlers, or for this one if it
 * fetches after all.
 */
static void gmemuf_hand_off(struct gmemuf_handler *h, struct list_head *stale)
{
	lockdep_assert_held(&h->uf->queue_lock);

	if (!h->nr_parked && !h->busy)
		gmemuf_requeue(h->uf, &h->delivered, stale);
}

static void gmemuf_fetch_tw(struct io_tw_req tw_req, io_tw_token_t tw)
{
	struct io_uring_cmd *cmd = io_uring_cmd_from_tw(tw_req);
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	struct gmemuf_handler *h = gmemuf_cmd_handler(cmd);
	struct gmemuf *uf = h->uf;
	struct io_uring_cmd *next;
	LIST_HEAD(stale);
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
		gmemuf_hand_off(h, &stale);
	next = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);

	gmemuf_free_records(&stale);
	if (r)
		io_uring_cmd_done(cmd, r, IO_URING_CMD_TASK_WORK_ISSUE_FLAGS);
	gmemuf_kick(next);
	/* Records the fill gave back, or the hand-off made pending. */
	if (r < 0)
		gmemuf_wake_readers(uf);
}

/* Free the delivered records whose pages are present now. */
static void gmemuf_prune(struct gmemuf_handler *h)
{
	struct gmemuf_record *rec, *tmp;
	LIST_HEAD(stale);

	spin_lock(&h->uf->queue_lock);
	list_for_each_entry_safe(rec, tmp, &h->delivered, node)
		if (!gmemuf_missing(h->uf, rec->index))
			list_move(&rec->node, &stale);
	spin_unlock(&h->uf->queue_lock);

	gmemuf_free_records(&stale);
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
	LIST_HEAD(stale);
	bool parked;

	spin_lock(&uf->queue_lock);
	/* A command taken for delivery is completed by its task work. */
	parked = !list_empty(&pdu->node);
	if (parked) {
		list_del_init(&pdu->node);
		h->nr_parked--;
		gmemuf_hand_off(h, &stale);
		next = gmemuf_take_parked(uf);
	}
	spin_unlock(&uf->queue_lock);

	if (!parked)
		return;

	gmemuf_free_records(&stale);
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
	gmemuf_prune(h);

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
	LIST_HEAD(stale);

	/* No command is parked or delivering: each holds this file. */
	spin_lock(&uf->queue_lock);
	WARN_ON_ONCE(h->nr_parked || h->busy);
	gmemuf_requeue(uf, &h->delivered, &stale);
	uf->nr_handlers--;
	next = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);

	gmemuf_free_records(&stale);
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
	struct io_uring_cmd *next;
	u32 nr;
	int n;

	if (count < sizeof(struct gmemuf_fault))
		return -EINVAL;
	nr = min_t(size_t, count / sizeof(struct gmemuf_fault),
		   GMEMUF_FETCH_MAX);
	gmemuf_prune(h);

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
	if (n > 0)
		return n * sizeof(struct gmemuf_fault);

	/* The records are pending again: for the other handlers too. */
	spin_lock(&uf->queue_lock);
	next = gmemuf_take_parked(uf);
	spin_unlock(&uf->queue_lock);
	gmemuf_kick(next);
	gmemuf_wake_readers(uf);
	return n;
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
	INIT_LIST_HEAD(&h->delivered);

	spin_lock(&uf->queue_lock);
	if (uf->nr_handlers == GMEMUF_MAX_HANDLERS) {
		spin_unlock(&uf->queue_lock);
		kfree(h);
		return -ENOSPC;
	}
	uf->nr_handlers++;
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
	uf->nr_handlers--;
	spin_unlock(&uf->queue_lock);
	kfree(h);
	return fd;
}

/* The file is going away: no handler is left, no command is parked. */
void gmemuf_free_pending(struct gmemuf *uf)
{
	WARN_ON_ONCE(uf->nr_handlers || !list_empty(&uf->parked));
	gmemuf_free_records(&uf->pending);
}
