// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmemuf: the userfault mode of guest_memfd.
 *
 * A guest_memfd created with GUEST_MEMFD_FLAG_USERFAULT has a bitmap with one
 * bit per page, set while the page is missing. Every page starts missing. An
 * access to a missing page waits for its bit to clear; populating the page
 * (write_iter, GMEMUF_IOC_ZERO) or disarming it clears the bit and wakes the
 * waiters.
 *
 * Waiting and waking use wait queues of the file's own, hashed by page index
 * (gmemuf_waitqueue()), with the entries and keys of the kernel's bit waits:
 * each waiter's entry is keyed by its page's bitmap word and bit, so a
 * waiter sleeps on its page alone, and a wake walks only the queues of the
 * pages it resolved and wakes only their waiters, never a queue for the
 * whole file. Not the kernel's global hashed bit wait table: a wait for a
 * page fetched over the network lasts milliseconds to seconds, and on that
 * table it would lengthen the walk of unrelated wake_up_bit() calls of the
 * whole host.
 *
 * Locking of the missing bitmap:
 *  - It is read without locks on the fault paths.
 *  - Bits are set only with the mapping's invalidate_lock held exclusive
 *    (GMEMUF_IOC_ARM), together with the truncation of the pages, so that no
 *    populate can fill a page that the arm is about to drop.
 *  - Bits are cleared with atomic bitops, with invalidate_lock held shared
 *    (populate, disarm). A populate clears the bit of a page with the folio
 *    locked, after the data is in place and the folio uptodate, so that of
 *    two populates of one page only the first writes it and a woken waiter
 *    finds the data.
 */
#include <linux/capability.h>
#include <linux/file.h>
#include <linux/kvm_host.h>
#include <linux/pagemap.h>
#include <linux/sched/signal.h>
#include <linux/uio.h>
#include <linux/userfaultfd_k.h>
#include <linux/wait_bit.h>
#include <uapi/linux/gmemuf.h>

#include "gmemuf.h"

#define CREATE_TRACE_POINTS
#include "gmemuf_trace.h"

static inline struct gmemuf *GMEMUF(struct inode *inode)
{
	return inode->i_private;
}

static bool gmemuf_kernel_faults_allowed(void)
{
#ifdef CONFIG_USERFAULTFD
	return userfaultfd_syscall_allowed(0);
#else
	return capable(CAP_SYS_PTRACE);
#endif
}

/*
 * The file's wait queue of page @index, on which every waiter for the page
 * sleeps and every waker of the page wakes. Neighbouring pages, which a
 * guest or a task touches together, land on different queues; pages that
 * share one are a multiple of the number of queues apart, and the key of
 * each entry (word and bit) keeps their wakeups apart.
 */
static struct wait_queue_head *gmemuf_waitqueue(struct gmemuf *uf,
						pgoff_t index)
{
	return &uf->waitqs[index & uf->waitq_mask];
}

/*
 * Wake the waiters of page @index: tasks in gmemuf_wait_page() if the page is
 * present (wake_bit_function() tests the bit), vCPUs in gmemuf_wait_vcpu()
 * whether it is or not (gmemuf_wake_vcpu()). As for wake_up_bit(), the caller
 * orders what it changed before this with a full barrier: the check for
 * waiters is lockless, and pairs with the barrier in the waiter's
 * prepare_to_wait(), which queues it before it checks the bit.
 */
static void gmemuf_wake_page(struct gmemuf *uf, pgoff_t index)
{
	__wake_up_bit(gmemuf_waitqueue(uf, index), gmemuf_word(uf, index),
		      gmemuf_bit(index));
}

/*
 * Wait until page @index is present, in @state, as wait_on_bit() does, on the
 * file's queue of the page. Returns 0 with acquire semantics once the page
 * is present, or -EINTR if a signal that @state allows ended the wait.
 */
static int gmemuf_wait_page(struct gmemuf *uf, pgoff_t index,
			    unsigned int state)
{
	DEFINE_WAIT_BIT(wbq_entry, gmemuf_word(uf, index), gmemuf_bit(index));

	might_sleep();
	if (!gmemuf_missing(uf, index))
		return 0;
	return __wait_on_bit(gmemuf_waitqueue(uf, index), &wbq_entry, bit_wait,
			     state);
}

/*
 * Mark @index present and wake its waiters. The release orders the page's
 * contents, and its uptodate flag, before the bit; the waiters' acquire in
 * gmemuf_wait_page() pairs with it.
 */
static void gmemuf_resolve(struct gmemuf *uf, pgoff_t index)
{
	clear_bit_unlock(gmemuf_bit(index), gmemuf_word(uf, index));
	/*
	 * As in clear_and_wake_up_bit(): the bit before the lockless check for
	 * waiters, pairing with the barrier in a waiter's prepare_to_wait(). A
	 * waiter queues, then checks the bit; this clears the bit, then wakes.
	 */
	smp_mb__after_atomic();
	gmemuf_wake_page(uf, index);
	/*
	 * After the page is present, so that no task faults on it and finds a
	 * record still out. The record itself is freed when next seen.
	 */
	clear_bit(index, uf->posted);
}

/*
 * One bit per page: 32 MiB for a 1 TiB file, so not always kmalloc-able, and
 * 1 GiB for the largest, GMEMUF_SIZE_MAX, which keeps it below the INT_MAX
 * bytes that kvmalloc() refuses. Failing is better than the OOM killer for
 * a request this big: ENOMEM, not an OOM kill.
 */
static unsigned long *gmemuf_bitmap_alloc(pgoff_t nr_pages)
{
	return kvcalloc(BITS_TO_LONGS(nr_pages), sizeof(unsigned long),
			GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL |
			__GFP_NOWARN);
}

/*
 * The bitmap helpers of <linux/bitmap.h> count bits in unsigned int, which a
 * file above 16 TiB overflows: these take page indexes. Whole words are
 * changed atomically, since faults and populates change single bits of the
 * same words meanwhile; the bits set in @keep, if any, are left alone. A
 * fatal signal stops them early, between two words: they return @end, or
 * the page they stopped at.
 */
static pgoff_t gmemuf_bits_change(unsigned long *map, pgoff_t start,
				  pgoff_t end, bool set,
				  const unsigned long *keep)
{
	while (start < end) {
		unsigned long mask = BITMAP_FIRST_WORD_MASK(start);
		atomic_long_t *word = (atomic_long_t *)&map[BIT_WORD(start)];
		pgoff_t next = min_t(pgoff_t, end,
				     round_down(start, BITS_PER_LONG) +
				     BITS_PER_LONG);

		if (next % BITS_PER_LONG)
			mask &= BITMAP_LAST_WORD_MASK(next);
		if (keep)
			mask &= ~READ_ONCE(keep[BIT_WORD(start)]);
		if (set)
			atomic_long_or(mask, word);
		else
			atomic_long_andnot(mask, word);
		start = next;

		if (start < end && !(BIT_WORD(start) % 1024)) {
			if (fatal_signal_pending(current))
				break;
			cond_resched();
		}
	}
	return start;
}

/*
 * How many wait queues a file has: as many as its pages, rounded up to a
 * power of two (so that the hash is a mask), and at most GMEMUF_WAITQ_MAX.
 * What shares a queue is the pages waited on at once, not all the file's
 * pages: at most one per task or vCPU stalled on the file, a few hundred
 * even for a big VM, so 256 queues give each a queue of its own or nearly,
 * as many as the kernel's bit wait table has for the whole host; a smaller
 * file needs no more queues than pages. The cost, in kvmalloc() memory as
 * for the bitmaps: at most 256 wait_queue_heads a file, 24 bytes each (6
 * KiB) on 64-bit without lock debugging, 80 (20 KiB) with lockdep's map and
 * the spinlock debugging in each; a 1 GiB file's two bitmaps take 64 KiB.
 */
#define GMEMUF_WAITQ_MAX	256

static int gmemuf_waitqueues_alloc(struct gmemuf *uf, pgoff_t nr_pages)
{
	unsigned long nr = roundup_pow_of_two(clamp_t(pgoff_t, nr_pages, 1,
						      GMEMUF_WAITQ_MAX));
	unsigned long i;

	uf->waitqs = kvmalloc_objs(*uf->waitqs, nr, GFP_KERNEL_ACCOUNT);
	if (!uf->waitqs)
		return -ENOMEM;
	for (i = 0; i < nr; i++)
		init_waitqueue_head(&uf->waitqs[i]);
	uf->waitq_mask = nr - 1;
	return 0;
}

int gmemuf_create(struct kvm *kvm, struct inode *inode, u64 flags)
{
	loff_t size = i_size_read(inode);
	pgoff_t nr_pages = size >> PAGE_SHIFT;
	struct gmemuf *uf;

	if (size > GMEMUF_SIZE_MAX)
		return -EFBIG;

	uf = kzalloc_obj(*uf);
	if (!uf)
		return -ENOMEM;

	uf->missing = gmemuf_bitmap_alloc(nr_pages);
	uf->posted = gmemuf_bitmap_alloc(nr_pages);
	if (!uf->missing || !uf->posted ||
	    gmemuf_waitqueues_alloc(uf, nr_pages)) {
		kvfree(uf->missing);
		kvfree(uf->posted);
		kfree(uf);
		return -ENOMEM;
	}
	/* Nobody else sees the bitmap yet: a fatal signal cannot stop this. */
	memset(uf->missing, 0xff, BITS_TO_LONGS(nr_pages) * sizeof(long));
	if (nr_pages % BITS_PER_LONG)
		uf->missing[BIT_WORD(nr_pages)] &= BITMAP_LAST_WORD_MASK(nr_pages);
	uf->kvm = kvm;
	uf->ino = inode->i_ino;
	spin_lock_init(&uf->queue_lock);
	INIT_LIST_HEAD(&uf->parked);
	init_waitqueue_head(&uf->read_wait);
	uf->kernel_faults = gmemuf_kernel_faults_allowed();
	uf->vcpu_exit = flags & GUEST_MEMFD_FLAG_USERFAULT_EXIT;

	inode->i_private = uf;
	return 0;
}

static void gmemuf_waitqueues_check_empty(struct gmemuf *uf)
{
	unsigned long i;

	for (i = 0; i <= uf->waitq_mask; i++) {
		/* Lockless: nobody can queue any more, see the caller. */
		WARN_ON_ONCE(waitqueue_active(&uf->waitqs[i]));
	}
}

void gmemuf_destroy(struct inode *inode)
{
	struct gmemuf *uf = GMEMUF(inode);

	if (!uf)
		return;

	/* Each handler holds the file: none is left. */
	inode->i_private = NULL;
	gmemuf_free_pending(uf);
	/*
	 * Nor any waiter: each holds the file over its wait, from before it
	 * queues until after finish_wait() (gmemuf_fault_user(), and the
	 * callers of gmemuf_fault_vcpu()), and the inode is destroyed after
	 * the file's last reference is gone. Nor any waker: populate and the
	 * ioctls are calls on the file.
	 */
	gmemuf_waitqueues_check_empty(uf);
	kvfree(uf->waitqs);
	kvfree(uf->missing);
	kvfree(uf->posted);
	kfree(uf);
}

/*
 * The wake function of a vCPU's wait on its page: unlike a task in
 * gmemuf_wait_page(), which waits until the bit is clear, a vCPU also wakes
 * for GMEMUF_IOC_WAKE while the page is still missing, to run its fault
 * again against the memslots and memory attributes as they are then.
 */
static int gmemuf_wake_vcpu(struct wait_queue_entry *wq_entry,
			    unsigned int mode, int sync, void *arg)
{
	struct wait_bit_queue_entry *wbq_entry =
		container_of(wq_entry, struct wait_bit_queue_entry, wq_entry);
	struct wait_bit_key *key = arg;

	if (wbq_entry->key.flags != key->flags ||
	    wbq_entry->key.bit_nr != key->bit_nr)
		return 0;

	return autoremove_wake_function(wq_entry, mode, sync, key);
}

/*
 * Whether the vCPU, queued and in TASK_INTERRUPTIBLE, may sleep: not if its
 * page is there, a signal is pending, the fault is stale, or a vCPU in
 * KVM_RUN has something to do first, which the retried fault does before it
 * faults again: a request (an interrupt, a kick, gmemuf_kick_vcpus()), or an
 * interrupt posted to it without one (x86's posted interrupts, which end a
 * halted vCPU's wait too). Not for KVM_PRE_FAULT_MEMORY, which handles
 * neither: one left pending would have it retry without end; a kick still
 * wakes it.
 */
static bool gmemuf_vcpu_may_sleep(struct kvm_vcpu *vcpu, struct gmemuf *uf,
				  pgoff_t index, gfn_t gfn,
				  unsigned long mmu_seq)
{
	if (vcpu->wants_to_run &&
	    (kvm_request_pending(vcpu) ||
	     kvm_arch_dy_has_pending_interrupt(vcpu)))
		return false;

	return gmemuf_missing(uf, index) && !signal_pending(current) &&
	       !mmu_invalidate_retry_gfn_unsafe(vcpu->kvm, mmu_seq, gfn);
}

/*
 * Sleep until page @index is populated or disarmed, its range is woken, the
 * vCPU is kicked (kvm_vcpu_kick(), a request that wakes), or a signal is
 * pending: once. The caller maps the page if it is there, and retries the
 * fault otherwise.
 *
 * The vCPU sleeps both on the file's wait queue of the page, for populates
 * and GMEMUF_IOC_WAKE, and on its own rcuwait, as in kvm_vcpu_block(), for
 * kvm_vcpu_wake_up(). It is queued on both, and in TASK_INTERRUPTIBLE, before
 * it checks for a reason not to sleep: a waker changes the state (clears the
 * bit, posts the request, bumps the invalidation sequence) before it wakes,
 * so either the check sees the change or the wakeup finds the vCPU queued.
 *
 * Not under kvm->srcu: memslot updates wait for its readers, and this waits
 * for as long as userspace takes to fetch the page. But the vCPU is queued
 * before it drops the lock, so that a memslot update the fault did not see,
 * which waits for the lock before it kicks the vCPUs, finds it queued.
 */
static void gmemuf_wait_vcpu(struct kvm_vcpu *vcpu, struct gmemuf *uf,
			     pgoff_t index, gfn_t gfn, unsigned long mmu_seq)
{
	struct rcuwait *vcpu_wait = kvm_arch_vcpu_get_wait(vcpu);
	struct wait_queue_head *wq = gmemuf_waitqueue(uf, index);
	DEFINE_WAIT_BIT(wbq_entry, gmemuf_word(uf, index), gmemuf_bit(index));

	/* As kvm_vcpu_block(): the arch may have to route wakeups to it. */
	preempt_disable();
	kvm_arch_vcpu_blocking(vcpu);
	prepare_to_rcuwait(vcpu_wait);
	preempt_enable();

	wbq_entry.wq_entry.func = gmemuf_wake_vcpu;
	prepare_to_wait(wq, &wbq_entry.wq_entry, TASK_INTERRUPTIBLE);
	if (gmemuf_vcpu_may_sleep(vcpu, uf, index, gfn, mmu_seq)) {
		u64 start;

		/* Counted once committed to sleep, before any wake-up. */
		++vcpu->stat.generic.gmemuf_waits;
		kvm_vcpu_srcu_read_unlock(vcpu);
		start = ktime_get_ns();
		schedule();
		vcpu->stat.generic.gmemuf_wait_ns += ktime_get_ns() - start;
		kvm_vcpu_srcu_read_lock(vcpu);
	}
	finish_wait(wq, &wbq_entry.wq_entry);

	preempt_disable();
	finish_rcuwait(vcpu_wait);
	kvm_arch_vcpu_unblocking(vcpu);
	preempt_enable();
}

/*
 * Called after a memslot was deleted or moved, or memory attributes changed:
 * wake the VM's vCPUs waiting for a missing page, whose faults may have gone
 * stale, to retry them. Neither change need zap an SPTE for a missing page,
 * so neither kicks its vCPUs by itself. KVM_REQ_UNBLOCK wakes a vCPU out of
 * either wait and is dropped by the vCPU run loop: a halted vCPU goes back
 * to sleep. Only for the VM types that can have userfault guest_memfds.
 */
void gmemuf_kick_vcpus(struct kvm *kvm)
{
	if (kvm_arch_supports_gmemuf(kvm))
		kvm_make_all_cpus_request(kvm, KVM_REQ_UNBLOCK);
}

/*
 * A vCPU, or KVM on its behalf (KVM_PRE_FAULT_MEMORY), faulted at @gfn on
 * page @index of @file, a userfault guest_memfd, and kvm_gmem_get_pfn() found
 * it missing. Post the fault; then, in exit mode, return -EFAULT for a
 * memory-fault exit, or else wait for the page and return 0, for the caller
 * to map the page if it is present then, and to retry the fault if not. A
 * pending signal or request ends the wait at once; the retried fault leaves
 * KVM_RUN with EINTR before entering the guest, or handles the request, and
 * posts nothing new: the record is still out. Called with the vCPU's SRCU
 * lock held; the caller holds @file.
 */
int gmemuf_fault_vcpu(struct kvm_vcpu *vcpu, struct file *file, pgoff_t index,
		      gfn_t gfn, u32 flags, unsigned long mmu_seq)
{
	struct gmemuf *uf = GMEMUF(file_inode(file));
	int r;

	/* Not a userfault guest_memfd: the -EAGAIN was not for a missing page. */
	if (!uf)
		return -EAGAIN;

	if (!gmemuf_missing(uf, index))
		return 0;

	flags |= GMEMUF_FAULT_VCPU;
	r = gmemuf_post(uf, index, flags);
	if (r < 0)
		return r;
	if (r)
		++vcpu->stat.generic.gmemuf_faults;

	if (uf->vcpu_exit) {
		++vcpu->stat.generic.gmemuf_exits;
		return -EFAULT;
	}

	gmemuf_wait_vcpu(vcpu, uf, index, gfn, mmu_seq);
	trace_gmemuf_wake(uf->ino, index, flags, !gmemuf_missing(uf, index));
	return 0;
}

/*
 * The wait of a task that faulted on a mapping of a page that
 * gmemuf_page_missing() found missing, modelled on handle_userfault(): drop
 * the mmap (or VMA) lock, sleep until the page is there, and have the fault
 * retried.
 */
vm_fault_t gmemuf_fault_user(struct vm_fault *vmf)
{
	struct file *file = vmf->vma->vm_file;
	struct gmemuf *uf = GMEMUF(file_inode(file));
	pgoff_t index = vmf->pgoff;
	unsigned int state;
	u32 flags;

	/* Populated since the caller looked: have the access retried. */
	if (!gmemuf_missing(uf, index))
		return VM_FAULT_NOPAGE;

	/* No waiting for the final exit of a task or for a core dump. */
	if (current->flags & (PF_EXITING | PF_DUMPCORE))
		return VM_FAULT_SIGBUS;

	/* Kernel-mode faults fail at once (EFAULT) unless allowed to wait. */
	if (!(vmf->flags & FAULT_FLAG_USER) && !uf->kernel_faults)
		return VM_FAULT_SIGBUS;

	/* A fault that cannot drop the mmap lock must not wait holding it. */
	if (!(vmf->flags & FAULT_FLAG_ALLOW_RETRY))
		return VM_FAULT_SIGBUS;

	flags = vmf->flags & FAULT_FLAG_WRITE ? GMEMUF_FAULT_WRITE :
						GMEMUF_FAULT_READ;
	if (vmf->flags & FAULT_FLAG_INSTRUCTION)
		flags |= GMEMUF_FAULT_EXEC;
	flags |= vmf->flags & FAULT_FLAG_USER ? GMEMUF_FAULT_MMAP_USER :
						GMEMUF_FAULT_MMAP_KERNEL;
	if (gmemuf_post(uf, index, flags) < 0)
		return VM_FAULT_OOM;

	if (vmf->flags & FAULT_FLAG_RETRY_NOWAIT)
		return VM_FAULT_RETRY;

	/*
	 * A kernel-mode fault is retried at once after a signal that is not
	 * fatal (fault_signal_pending() gives up on those in user mode only),
	 * so an interruptible wait would spin until the page is there: only a
	 * fatal signal ends the wait of a kernel-mode fault.
	 */
	state = (vmf->flags & FAULT_FLAG_INTERRUPTIBLE) &&
		(vmf->flags & FAULT_FLAG_USER) ? TASK_INTERRUPTIBLE :
						 TASK_KILLABLE;

	/*
	 * Once the fault lock is dropped the VMA, and the last other reference
	 * to the file, may go: hold the file, and with it uf, over the wait.
	 */
	get_file(file);
	release_fault_lock(vmf);
	gmemuf_wait_page(uf, index, state);
	trace_gmemuf_wake(uf->ino, index, flags, !gmemuf_missing(uf, index));
	fput(file);

	return VM_FAULT_RETRY;
}

/*
 * Populate the missing page @index, from @from or with zeroes if @from is
 * NULL. Returns 0, -EEXIST if the page is present, -EFAULT if @from could not
 * be read without a page fault, -EAGAIN if @nowait and the folio could not be
 * had without blocking, or another error from allocating the folio. Called
 * with the mapping's invalidate_lock held shared.
 */
static int gmemuf_populate_page(struct gmemuf *uf, struct inode *inode,
				pgoff_t index, struct iov_iter *from,
				bool nowait)
{
	struct folio *folio;
	int r = 0;

	if (!gmemuf_missing(uf, index))
		return -EEXIST;

	folio = __kvm_gmem_get_folio(inode, index, nowait ? FGP_NOWAIT : 0);
	if (IS_ERR(folio))
		return PTR_ERR(folio);

	/* Recheck under the folio lock: another populate may have won. */
	if (!gmemuf_missing(uf, index)) {
		r = -EEXIST;
		goto out;
	}

	/* Its memory failed: writing to it would consume the poison. */
	if (folio_test_hwpoison(folio)) {
		r = -EHWPOISON;
		goto out;
	}

	if (from) {
		/*
		 * Page faults are not taken with the folio locked: the caller
		 * faults the source in and tries again if it was not there.
		 */
		if (copy_folio_from_iter_atomic(folio, 0, PAGE_SIZE, from) !=
		    PAGE_SIZE) {
			r = -EFAULT;
			goto out;
		}
	} else {
		folio_zero_range(folio, 0, PAGE_SIZE);
	}

	folio_mark_uptodate(folio);
	gmemuf_resolve(uf, index);
	trace_gmemuf_populate(uf->ino, index, !from);
out:
	folio_unlock(folio);
	folio_put(folio);
	return r;
}

/*
 * The pages populated under one hold of invalidate_lock: few enough that an
 * arm waiting for the lock waits for little, enough that taking the lock and
 * faulting the source in cost nothing per page.
 */
#define GMEMUF_POPULATE_RUN	64

/*
 * Populate [start, end) a run of pages at a time: take invalidate_lock,
 * populate the run's pages in order, drop the lock. Returns the number of
 * pages populated, or the error of the first page if none was. With @nowait
 * (IOCB_NOWAIT), it stops with -EAGAIN where it would block: on
 * invalidate_lock, which an arm holds exclusive, or on a folio it cannot
 * lock or allocate at once.
 *
 * The source is copied without page faults, with the folio locked. A
 * handler's source is almost always resident (it just received the page, or
 * read it from a snapshot), so the first run is tried as it is; where a copy
 * would fault, the lock is dropped, and that run and the following ones are
 * faulted in before they are copied, as for any buffered write, including
 * one that is not to block. Faulting in first each time would walk the
 * source's page tables twice per page for nothing, which for a single-page
 * populate costs about as much as taking the locks.
 */
static long gmemuf_populate(struct gmemuf *uf, struct inode *inode,
			    pgoff_t start, pgoff_t end, struct iov_iter *from,
			    bool nowait)
{
	struct address_space *mapping = inode->i_mapping;
	pgoff_t index = start, run_end;
	bool fault_in = false;
	size_t before, len;
	int r = 0;

	while (index < end && !r) {
		if (fatal_signal_pending(current)) {
			r = -EINTR;
			break;
		}

		/*
		 * Once a copy has faulted: fault the source of the run in
		 * before taking any lock, and cut the run short where the
		 * source cannot be read.
		 */
		run_end = min_t(pgoff_t, end, index + GMEMUF_POPULATE_RUN);
		if (from && fault_in) {
			len = (size_t)(run_end - index) << PAGE_SHIFT;
			len -= fault_in_iov_iter_readable(from, len);
			run_end = index + (len >> PAGE_SHIFT);
			if (run_end == index) {
				r = -EFAULT;
				break;
			}
		}

		if (!nowait) {
			filemap_invalidate_lock_shared(mapping);
		} else if (!filemap_invalidate_trylock_shared(mapping)) {
			r = -EAGAIN;
			break;
		}
		for (; index < run_end; index++) {
			before = from ? iov_iter_count(from) : 0;
			r = gmemuf_populate_page(uf, inode, index, from, nowait);
			if (r == -EFAULT && from) {
				/*
				 * The source is not there, or went away under
				 * us: fault it in, in the next run.
				 */
				iov_iter_revert(from,
						before - iov_iter_count(from));
				fault_in = true;
				r = 0;
				break;
			}
			if (r)
				break;
		}
		filemap_invalidate_unlock_shared(mapping);
		cond_resched();
	}

	if (index == start)
		return r;
	atomic64_add(index - start, &uf->kvm->stat.generic.gmemuf_populated);
	return index - start;
}

ssize_t gmemuf_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	struct gmemuf *uf = GMEMUF(inode);
	loff_t pos = iocb->ki_pos;
	size_t len = iov_iter_count(from);
	long done;

	if (!uf)
		return -EINVAL;

	if (!len)
		return 0;

	if (!PAGE_ALIGNED(pos) || !PAGE_ALIGNED(len) || pos < 0 ||
	    len > i_size_read(inode) || pos > i_size_read(inode) - len)
		return -EINVAL;

	done = gmemuf_populate(uf, inode, pos >> PAGE_SHIFT,
			       (pos + len) >> PAGE_SHIFT, from,
			       iocb->ki_flags & IOCB_NOWAIT);
	if (done <= 0)
		return done;

	iocb->ki_pos += done << PAGE_SHIFT;
	return done << PAGE_SHIFT;
}

/* Validate a range from userspace and turn it into pages. */
static int gmemuf_get_range(struct inode *inode, u64 offset, u64 len,
			    pgoff_t *start, pgoff_t *end)
{
	u64 size = i_size_read(inode);

	if (!len || !PAGE_ALIGNED(offset) || !PAGE_ALIGNED(len) ||
	    len > size || offset > size - len)
		return -EINVAL;

	*start = offset >> PAGE_SHIFT;
	*end = (offset + len) >> PAGE_SHIFT;
	return 0;
}

static long gmemuf_arm(struct gmemuf *uf, struct inode *inode, pgoff_t start,
		       pgoff_t end)
{
	struct address_space *mapping = inode->i_mapping;
	pgoff_t reached;
	long r;

	/*
	 * Exclusive: populates hold the lock shared, so none is half way
	 * through a page that this drops. Faults need no lock: one that sees
	 * a page missing waits, and one that does not either has its mapping
	 * zapped by the truncation below or, with the folio locked, finds the
	 * page missing after all (kvm_gmem_fault_user_mapping()).
	 */
	filemap_invalidate_lock(mapping);

	/* Records of faults resolved since: see gmemuf_drop_resolved(). */
	gmemuf_drop_resolved(uf);

	/*
	 * The posted bits of present pages: those of faults resolved since,
	 * and of a task that found a page missing just before it was
	 * populated, and posted a record after the populate (dropped as
	 * stale, the bit left set). Clear them before the pages go missing
	 * again, or their faults would never be posted. Not those of pages
	 * missing already, whose records may be out, with tasks waiting for
	 * them: the next fault on such a page must not post a second record.
	 * The missing bits are stable meanwhile: populates and disarms, which
	 * clear them, hold the lock shared. Atomically: faults on missing
	 * pages of the range set their posted bits meanwhile.
	 *
	 * A fatal signal stops the arm early, between two words of the bitmap:
	 * the pages marked missing so far are dropped as for a whole arm, and
	 * the pages whose posted bits were cleared are present, as before.
	 */
	reached = gmemuf_bits_change(uf->posted, start, end, false,
				     uf->missing);
	if (reached < end) {
		r = -EINTR;
		goto out;
	}
	/* A fault that sees a page missing must see its posted bit clear. */
	smp_mb__after_atomic();

	/* Only the pages marked missing lose their contents. */
	reached = gmemuf_bits_change(uf->missing, start, end, true, NULL);
	if (reached > start)
		kvm_gmem_truncate_range(inode, start, reached);
	r = reached < end ? -EINTR : 0;
out:
	filemap_invalidate_unlock(mapping);
	return r;
}

static long gmemuf_disarm(struct gmemuf *uf, struct inode *inode,
			  pgoff_t start, pgoff_t end)
{
	struct address_space *mapping = inode->i_mapping;
	unsigned long index;

	long r = 0;

	filemap_invalidate_lock_shared(mapping);
	index = start;
	for_each_set_bit_from(index, uf->missing, end) {
		if (fatal_signal_pending(current)) {
			r = -EINTR;
			break;
		}
		gmemuf_resolve(uf, index);
		cond_resched();
	}
	filemap_invalidate_unlock_shared(mapping);
	return r;
}

static long gmemuf_wake(struct gmemuf *uf, pgoff_t start, pgoff_t end)
{
	unsigned long index = start;

	/*
	 * Pairs with the barrier in a vCPU's prepare_to_wait(): either the vCPU
	 * is queued here, or it sees whatever the caller changed before this.
	 * Only missing pages have waiters: a waiter queues before it checks
	 * that its page is missing, and a populate wakes after it marks the
	 * page present.
	 */
	smp_mb();
	for_each_set_bit_from(index, uf->missing, end) {
		if (fatal_signal_pending(current))
			return -EINTR;
		gmemuf_wake_page(uf, index);
		cond_resched();
	}
	return 0;
}

static long gmemuf_ioctl_range(struct gmemuf *uf, struct inode *inode,
			       unsigned int ioctl, void __user *argp)
{
	struct gmemuf_range range;
	pgoff_t start, end;
	long r;

	if (copy_from_user(&range, argp, sizeof(range)))
		return -EFAULT;

	if (range.flags || range.done)
		return -EINVAL;

	r = gmemuf_get_range(inode, range.offset, range.len, &start, &end);
	if (r)
		return r;

	switch (ioctl) {
	case GMEMUF_IOC_ARM:
		return gmemuf_arm(uf, inode, start, end);
	case GMEMUF_IOC_DISARM:
		return gmemuf_disarm(uf, inode, start, end);
	case GMEMUF_IOC_WAKE:
		return gmemuf_wake(uf, start, end);
	case GMEMUF_IOC_ZERO:
		r = gmemuf_populate(uf, inode, start, end, NULL, false);
		range.done = r > 0 ? (u64)r << PAGE_SHIFT : 0;
		if (copy_to_user(argp, &range, sizeof(range)))
			return -EFAULT;
		return r < 0 ? r : 0;
	}
	return -ENOTTY;
}

static long gmemuf_get_bitmap(struct gmemuf *uf, struct inode *inode,
			      void __user *argp)
{
	struct gmemuf_bitmap arg;
	u64 __user *ubitmap;
	pgoff_t start, end, index;
	u64 word;
	long r;

	if (copy_from_user(&arg, argp, sizeof(arg)))
		return -EFAULT;

	if (arg.missing)
		return -EINVAL;

	r = gmemuf_get_range(inode, arg.offset, arg.len, &start, &end);
	if (r)
		return r;

	ubitmap = u64_to_user_ptr(arg.bitmap);
	for (index = start; index < end; index += 64) {
		unsigned long n = min_t(pgoff_t, 64, end - index), shift;

		/* One long at a time: two of them on a 32-bit kernel. */
		for (word = 0, shift = 0; shift < n; shift += BITS_PER_LONG)
			word |= (u64)bitmap_read(uf->missing, index + shift,
						 min_t(unsigned long, n - shift,
						       BITS_PER_LONG))
				<< shift;
		arg.missing += hweight64(word);
		if (ubitmap && put_user(word, ubitmap++))
			return -EFAULT;
		if (!((index - start) % (64 * 1024))) {
			if (fatal_signal_pending(current))
				return -EINTR;
			cond_resched();
		}
	}

	if (copy_to_user(argp, &arg, sizeof(arg)))
		return -EFAULT;
	return 0;
}

long gmemuf_ioctl(struct file *file, unsigned int ioctl, unsigned long arg)
{
	struct inode *inode = file_inode(file);
	struct gmemuf *uf = GMEMUF(inode);
	void __user *argp = (void __user *)arg;

	if (!uf)
		return -ENOTTY;

	switch (ioctl) {
	case GMEMUF_IOC_ARM:
	case GMEMUF_IOC_DISARM:
	case GMEMUF_IOC_ZERO:
	case GMEMUF_IOC_WAKE:
		return gmemuf_ioctl_range(uf, inode, ioctl, argp);
	case GMEMUF_IOC_GET_BITMAP:
		return gmemuf_get_bitmap(uf, inode, argp);
	case GMEMUF_IOC_HANDLER:
		if (arg)
			return -EINVAL;
		return gmemuf_attach_handler(uf, file);
	}
	return -ENOTTY;
}

u64 gmemuf_features(void)
{
	/* HAVE_KVM_ARCH_GMEMUF: the arch's fault path has the vCPU side. */
	u64 features = GMEMUF_FEATURE_MMAP_FAULT | GMEMUF_FEATURE_POPULATE |
		       GMEMUF_FEATURE_VCPU_WAIT | GMEMUF_FEATURE_VCPU_EXIT |
		       GMEMUF_FEATURE_READ | GMEMUF_FEATURE_GMEM_READ;

	if (IS_ENABLED(CONFIG_IO_URING))
		features |= GMEMUF_FEATURE_URING_FETCH;
	return features;
}

/*
 * May userspace read the guest_memfds of @kvm? Where populate can give the
 * guest its page, a read gives userspace the page the guest sees: not on
 * SEV or TDX, whose private pages are ciphertext, or worse on TDX.
 */
bool gmemuf_may_read(struct kvm *kvm)
{
	return kvm_arch_supports_gmemuf(kvm);
}

/*
 * read() and pread() of a guest_memfd, userfault or not, for a VMM that
 * saves or migrates the guest's memory: private memory, which no mapping of
 * the file reaches, as well as shared. FMODE_PREAD says the VM's type allows
 * it (gmemuf_may_read(), at creation). Page-aligned, as populate. A hole
 * reads as zeroes and stays a hole. A missing page of a userfault
 * guest_memfd has no contents yet: the read stops before it, or fails with
 * -ENODATA if it is the first. A hwpoisoned page stops it likewise, with
 * -EHWPOISON.
 *
 * No lock is held while copying: the user buffer may be a mapping of this
 * file, whose faults take invalidate_lock and the folio lock. The folio
 * reference keeps the page alive; a page the guest writes meanwhile, or an
 * arm or a hole punch truncates meanwhile, may be read as it was before.
 */
ssize_t gmemuf_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	struct gmemuf *uf = GMEMUF(inode);
	loff_t pos = iocb->ki_pos, size = i_size_read(inode);
	size_t len = iov_iter_count(to), copied;
	ssize_t done = 0;
	struct folio *folio;
	int r = 0;

	if (!(iocb->ki_filp->f_mode & FMODE_PREAD))
		return -EINVAL;

	if (!PAGE_ALIGNED(pos) || !PAGE_ALIGNED(len) || pos < 0)
		return -EINVAL;

	if (!len || pos >= size)
		return 0;
	len = min_t(u64, len, size - pos);

	while (len) {
		pgoff_t index = pos >> PAGE_SHIFT;

		if (fatal_signal_pending(current)) {
			r = -EINTR;
			break;
		}

		if (uf && gmemuf_missing(uf, index)) {
			r = -ENODATA;
			break;
		}

		folio = filemap_get_folio(inode->i_mapping, index);
		if (IS_ERR(folio)) {
			/* A hole: guest_memfd gives the guest zeroes there. */
			copied = iov_iter_zero(PAGE_SIZE, to);
		} else if (folio_test_hwpoison(folio)) {
			folio_put(folio);
			r = -EHWPOISON;
			break;
		} else if (!folio_test_uptodate(folio)) {
			/* Not yet given to the guest, which clears it first. */
			folio_put(folio);
			copied = iov_iter_zero(PAGE_SIZE, to);
		} else {
			copied = copy_folio_to_iter(folio,
						    offset_in_folio(folio, pos),
						    PAGE_SIZE, to);
			folio_put(folio);
		}
		if (copied != PAGE_SIZE) {
			r = -EFAULT;
			break;
		}

		pos += PAGE_SIZE;
		len -= PAGE_SIZE;
		done += PAGE_SIZE;
		cond_resched();
	}

	if (!done)
		return r;
	iocb->ki_pos = pos;
	return done;
}
