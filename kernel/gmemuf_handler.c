// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf: fault records, handlers, and their delivery through io_uring.
 *
 * A task that waits for a missing page first posts a record of the fault,
 * unless one is out for that page already (the "posted" bitmap), so that
 * however many tasks touch a page, one record is delivered.
 *
 * A handler is a file, made by GMEMUF_IOC_HANDLER, on which the handler
 * parks GMEMUF_CMD_FETCH uring_cmds. Its release is the one sure sign that
 * the handler is gone, as /dev/fuse's and ublkc's are for FUSE and ublk: the
 * guest_memfd itself cannot tell, since the VMM and KVM hold it too.
 *
 * Each handler has its own lock and lists, so handlers share no lock: a
 * record goes to the handler picked by the faulting CPU, or to another with
 * a parked command if that one has none. Records of a handler move:
 *
 *   pending --(fetch completes)--> delivered --(page present)--> freed
 *
 * Records are not looked up when their page is populated: a record whose
 * page is present is freed when it is next seen (at delivery, or when the
 * handler fetches again). When a handler loses its last parked command to a
 * cancellation (its ring or task went away), or its file is released, its
 * pending and delivered records whose pages are still missing are queued
 * again, on the other handlers; with none attached they wait, as
 * "orphans", for the next one.
 *
 * Completions are filled in task work, in the context of the task that
 * submitted the command, where its buffer can be written.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/io_uring/cmd.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <uapi/linux/gmemuf.h>

#include "gmemuf.h"

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

	/* Protects the lists and flags below; taken by faulting tasks. */
	spinlock_t lock;
	/* GMEMUF_CMD_FETCH commands waiting for faults. */
	struct list_head parked;
	/* Records to deliver, and records delivered. */
	struct list_head pending;
	struct list_head delivered;
	/* A parked command was taken to deliver pending records. */
	bool busy;
	/* Released: no record may be added any more. */
	bool dead;
};

/* The handlers of a file, replaced as a whole under handlers_lock. */
struct gmemuf_handlers {
	struct rcu_head rcu;
	unsigned int nr;
	struct gmemuf_handler *h[] __counted_by(nr);
};

/* In the io_uring_cmd's pdu, for a parked or delivering command. */
struct gmemuf_fetch_pdu {
	struct list_head node;	/* in parked, or empty */
	u64 addr;
	u32 nr;
};

static struct gmemuf_fetch_pdu *gmemuf_pdu(struct io_uring_cmd *cmd)
{
	return io_uring_cmd_to_pdu(cmd, struct gmemuf_fetch_pdu);
}

static void gmemuf_fetch_tw(struct io_tw_req tw_req, io_tw_token_t tw);

/*
 * With h->lock held: if records are pending and a command parked and none is
 * delivering, take the command to deliver them. The caller completes it in
 * task work once the lock is dropped.
 */
static struct io_uring_cmd *gmemuf_take_parked(struct gmemuf_handler *h)
{
	struct gmemuf_fetch_pdu *pdu;

	lockdep_assert_held(&h->lock);

	if (h->busy || list_empty(&h->pending) || list_empty(&h->parked))
		return NULL;

	pdu = list_first_entry(&h->parked, struct gmemuf_fetch_pdu, node);
	list_del_init(&pdu->node);
	h->busy = true;
	return container_of((void *)pdu, struct io_uring_cmd, pdu);
}

static void gmemuf_kick(struct io_uring_cmd *cmd)
{
	if (cmd)
		io_uring_cmd_complete_in_task(cmd, gmemuf_fetch_tw);
}

/*
 * Add @rec to the pending records of a live handler other than @skip; false
 * if there is none.
 */
static bool gmemuf_queue_on_handler(struct gmemuf *uf,
				    struct gmemuf_record *rec,
				    struct gmemuf_handler *skip)
{
	struct gmemuf_handlers *hs;
	struct gmemuf_handler *h;
	struct io_uring_cmd *cmd;
	unsigned int i, start;
	bool any_parked;

	guard(rcu)();
	hs = rcu_dereference(uf->handlers);
	if (!hs)
		return false;

	/*
	 * The faulting CPU's handler if it has a command parked, else the next
	 * that has one, else any live one: the common case takes one lock.
	 */
	start = raw_smp_processor_id() % hs->nr;
	for (any_parked = true; ; any_parked = false) {
		for (i = 0; i < hs->nr; i++) {
			h = hs->h[(start + i) % hs->nr];
			if (h == skip)
				continue;
			spin_lock(&h->lock);
			if (h->dead || (any_parked && list_empty(&h->parked))) {
				spin_unlock(&h->lock);
				continue;
			}
			list_add_tail(&rec->node, &h->pending);
			cmd = gmemuf_take_parked(h);
			spin_unlock(&h->lock);
			gmemuf_kick(cmd);
			return true;
		}
		if (!any_parked)
			return false;
	}
}

static void gmemuf_queue(struct gmemuf *uf, struct gmemuf_record *rec)
{
	while (!gmemuf_queue_on_handler(uf, rec, NULL)) {
		/*
		 * No live handler: keep it for the next. Under orphans_lock,
		 * which a new handler takes after publishing itself, recheck
		 * that none came meanwhile.
		 */
		spin_lock(&uf->orphans_lock);
		if (!rcu_access_pointer(uf->handlers)) {
			list_add_tail(&rec->node, &uf->orphans);
			spin_unlock(&uf->orphans_lock);
			return;
		}
		spin_unlock(&uf->orphans_lock);
		cond_resched();
	}
}

/* Queue again the records of @list whose pages are still missing. */
static void gmemuf_requeue(struct gmemuf *uf, struct list_head *list)
{
	struct gmemuf_record *rec, *tmp;

	list_for_each_entry_safe(rec, tmp, list, node) {
		list_del(&rec->node);
		if (gmemuf_missing(uf, rec->index))
			gmemuf_queue(uf, rec);
		else
			kfree(rec);
	}
}

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
			return 0;
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
 * Write up to pdu->nr pending records to the command's buffer and move them
 * to delivered. Returns how many, 0 if none was left, or an error with the
 * records pending again.
 */
static int gmemuf_fill(struct gmemuf_handler *h, struct io_uring_cmd *cmd)
{
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	struct gmemuf_fault __user *ubuf = u64_to_user_ptr(pdu->addr);
	struct gmemuf_record *rec, *tmp;
	LIST_HEAD(batch);
	LIST_HEAD(stale);
	u32 n = 0;

	spin_lock(&h->lock);
	list_for_each_entry_safe(rec, tmp, &h->pending, node) {
		if (n == pdu->nr)
			break;
		if (!gmemuf_missing(h->uf, rec->index)) {
			list_move(&rec->node, &stale);
			continue;
		}
		list_move_tail(&rec->node, &batch);
		n++;
	}
	spin_unlock(&h->lock);

	list_for_each_entry_safe(rec, tmp, &stale, node)
		kfree(rec);

	list_for_each_entry(rec, &batch, node) {
		struct gmemuf_fault fault = {
			.offset = (u64)rec->index << PAGE_SHIFT,
			.flags = rec->flags,
		};

		if (copy_to_user(ubuf++, &fault, sizeof(fault))) {
			spin_lock(&h->lock);
			list_splice(&batch, &h->pending);
			spin_unlock(&h->lock);
			return -EFAULT;
		}
	}

	spin_lock(&h->lock);
	list_splice_tail(&batch, &h->delivered);
	spin_unlock(&h->lock);
	return n;
}

/*
 * Take back the records of a handler that lost its last command or its file,
 * to queue them again elsewhere.
 */
static void gmemuf_take_records(struct gmemuf_handler *h,
				struct list_head *list)
{
	lockdep_assert_held(&h->lock);

	list_splice_init(&h->delivered, list);
	list_splice_init(&h->pending, list);
}

/*
 * A handler with no command parked or delivering may not fetch again (its
 * ring or its task is going away): hand its records to the other handlers,
 * if there are any, and keep the rest. Called while a command of the
 * handler still pins its file.
 */
static void gmemuf_hand_off(struct gmemuf_handler *h)
{
	struct gmemuf_record *rec, *tmp;
	struct io_uring_cmd *next;
	LIST_HEAD(records);

	spin_lock(&h->lock);
	if (list_empty(&h->parked) && !h->busy)
		gmemuf_take_records(h, &records);
	spin_unlock(&h->lock);

	list_for_each_entry_safe(rec, tmp, &records, node) {
		list_del(&rec->node);
		if (!gmemuf_missing(h->uf, rec->index)) {
			kfree(rec);
			continue;
		}
		if (gmemuf_queue_on_handler(h->uf, rec, h))
			continue;
		/* A fetch may have been parked meanwhile: kick it. */
		spin_lock(&h->lock);
		list_add_tail(&rec->node, &h->pending);
		next = gmemuf_take_parked(h);
		spin_unlock(&h->lock);
		gmemuf_kick(next);
	}
}

static void gmemuf_fetch_tw(struct io_tw_req tw_req, io_tw_token_t tw)
{
	struct io_uring_cmd *cmd = io_uring_cmd_from_tw(tw_req);
	struct gmemuf_handler *h = cmd->file->private_data;
	struct io_uring_cmd *next;
	int r;

	/* The task is exiting: its buffer must not be written. */
	r = tw.cancel ? -ECANCELED : gmemuf_fill(h, cmd);

	spin_lock(&h->lock);
	h->busy = false;
	if (!r) {
		/* Every pending record was stale: park the command again. */
		list_add(&gmemuf_pdu(cmd)->node, &h->parked);
	}
	next = gmemuf_take_parked(h);
	spin_unlock(&h->lock);

	if (tw.cancel)
		gmemuf_hand_off(h);
	if (r)
		io_uring_cmd_done(cmd, r, IO_URING_CMD_TASK_WORK_ISSUE_FLAGS);
	gmemuf_kick(next);
}

/* Free the delivered records whose pages are present now. */
static void gmemuf_prune(struct gmemuf_handler *h)
{
	struct gmemuf_record *rec, *tmp;
	LIST_HEAD(stale);

	spin_lock(&h->lock);
	list_for_each_entry_safe(rec, tmp, &h->delivered, node)
		if (!gmemuf_missing(h->uf, rec->index))
			list_move(&rec->node, &stale);
	spin_unlock(&h->lock);

	list_for_each_entry_safe(rec, tmp, &stale, node)
		kfree(rec);
}

/* The ring or the task of a parked command is going away. */
static void gmemuf_cancel(struct gmemuf_handler *h, struct io_uring_cmd *cmd,
			  unsigned int issue_flags)
{
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	bool parked;

	spin_lock(&h->lock);
	/* A command taken for delivery is completed by its task work. */
	parked = !list_empty(&pdu->node);
	list_del_init(&pdu->node);
	spin_unlock(&h->lock);

	if (!parked)
		return;

	gmemuf_hand_off(h);
	io_uring_cmd_done(cmd, -ECANCELED, issue_flags);
}

static int gmemuf_fetch(struct gmemuf_handler *h, struct io_uring_cmd *cmd,
			unsigned int issue_flags)
{
	const struct gmemuf_fetch *arg = io_uring_sqe_cmd(cmd->sqe,
							  struct gmemuf_fetch);
	struct gmemuf_fetch_pdu *pdu = gmemuf_pdu(cmd);
	struct io_uring_cmd *next;
	u64 addr = READ_ONCE(arg->addr);
	u32 nr = READ_ONCE(arg->nr);

	if (READ_ONCE(arg->flags) || !addr || !nr || nr > GMEMUF_FETCH_MAX)
		return -EINVAL;

	pdu->addr = addr;
	pdu->nr = nr;
	INIT_LIST_HEAD(&pdu->node);
	gmemuf_prune(h);

	/*
	 * Cancelable before it is visible: once parked it may be completed
	 * at any time, by task work that can run before this returns when
	 * the command was issued from io-wq.
	 */
	io_uring_cmd_mark_cancelable(cmd, issue_flags);
	spin_lock(&h->lock);
	list_add_tail(&pdu->node, &h->parked);
	next = gmemuf_take_parked(h);
	spin_unlock(&h->lock);
	gmemuf_kick(next);

	return -EIOCBQUEUED;
}

static int gmemuf_handler_uring_cmd(struct io_uring_cmd *cmd,
				    unsigned int issue_flags)
{
	struct gmemuf_handler *h = cmd->file->private_data;

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

/* Publish @hs in place of the current handlers, with handlers_lock held. */
static void gmemuf_set_handlers(struct gmemuf *uf, struct gmemuf_handlers *hs)
{
	struct gmemuf_handlers *old;

	old = rcu_replace_pointer(uf->handlers, hs,
				  lockdep_is_held(&uf->handlers_lock));
	if (old)
		kfree_rcu(old, rcu);
}

static int gmemuf_handler_release(struct inode *inode, struct file *file)
{
	struct gmemuf_handler *h = file->private_data;
	struct gmemuf *uf = h->uf;
	struct gmemuf_handlers *hs = NULL, *old;
	LIST_HEAD(records);
	unsigned int i, n = 0;

	mutex_lock(&uf->handlers_lock);
	old = rcu_dereference_protected(uf->handlers,
					lockdep_is_held(&uf->handlers_lock));
	/* A handler whose attach failed was never published. */
	for (i = 0; old && i < old->nr && old->h[i] != h; i++)
		;
	if (old && i < old->nr) {
		if (old->nr > 1) {
			hs = kzalloc_flex(*hs, h, old->nr - 1,
					  GFP_KERNEL | __GFP_NOFAIL);
			hs->nr = old->nr - 1;
			for (i = 0; i < old->nr; i++)
				if (old->h[i] != h)
					hs->h[n++] = old->h[i];
		}
		gmemuf_set_handlers(uf, hs);
	}
	mutex_unlock(&uf->handlers_lock);

	/*
	 * No command is parked: each holds a reference to this file. Records
	 * may still be added by posters that picked this handler before it
	 * was unpublished, until it is dead.
	 */
	spin_lock(&h->lock);
	h->dead = true;
	gmemuf_take_records(h, &records);
	spin_unlock(&h->lock);

	gmemuf_requeue(uf, &records);

	/* Posters that saw the old handlers may still take h->lock. */
	synchronize_rcu();
	fput(h->gmem_file);
	kfree(h);
	return 0;
}

static const struct file_operations gmemuf_handler_fops = {
	.owner		= THIS_MODULE,
	.release	= gmemuf_handler_release,
	.uring_cmd	= gmemuf_handler_uring_cmd,
};

int gmemuf_attach_handler(struct gmemuf *uf, struct file *gmem_file)
{
	struct gmemuf_handlers *hs, *old;
	struct gmemuf_handler *h;
	LIST_HEAD(orphans);
	struct file *file;
	unsigned int nr;
	int fd;

	h = kzalloc_obj(*h);
	if (!h)
		return -ENOMEM;
	h->uf = uf;
	spin_lock_init(&h->lock);
	INIT_LIST_HEAD(&h->parked);
	INIT_LIST_HEAD(&h->pending);
	INIT_LIST_HEAD(&h->delivered);

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		kfree(h);
		return fd;
	}

	file = anon_inode_getfile("[gmemuf-handler]", &gmemuf_handler_fops, h,
				  O_RDWR | O_CLOEXEC);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		kfree(h);
		return PTR_ERR(file);
	}
	h->gmem_file = get_file(gmem_file);

	mutex_lock(&uf->handlers_lock);
	old = rcu_dereference_protected(uf->handlers,
					lockdep_is_held(&uf->handlers_lock));
	nr = old ? old->nr : 0;
	if (nr == GMEMUF_MAX_HANDLERS) {
		mutex_unlock(&uf->handlers_lock);
		put_unused_fd(fd);
		/* Releases h and its reference to gmem_file. */
		fput(file);
		return -ENOSPC;
	}
	hs = kzalloc_flex(*hs, h, nr + 1, GFP_KERNEL);
	if (!hs) {
		mutex_unlock(&uf->handlers_lock);
		put_unused_fd(fd);
		fput(file);
		return -ENOMEM;
	}
	hs->nr = nr + 1;
	if (old)
		memcpy(hs->h, old->h, nr * sizeof(hs->h[0]));
	hs->h[nr] = h;
	gmemuf_set_handlers(uf, hs);

	/* See gmemuf_queue(): orphans are taken after publishing. */
	spin_lock(&uf->orphans_lock);
	list_splice_init(&uf->orphans, &orphans);
	spin_unlock(&uf->orphans_lock);
	mutex_unlock(&uf->handlers_lock);

	gmemuf_requeue(uf, &orphans);
	fd_install(fd, file);
	return fd;
}

void gmemuf_free_orphans(struct gmemuf *uf)
{
	struct gmemuf_record *rec, *tmp;

	list_for_each_entry_safe(rec, tmp, &uf->orphans, node)
		kfree(rec);
}
