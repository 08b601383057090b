/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * gmemuf: the userfault mode of guest_memfd, as guest_memfd.c sees it.
 *
 * A userfault guest_memfd keeps its struct gmemuf in the inode's i_private;
 * every other guest_memfd has NULL there, which is all the fault paths test
 * before going on as they always did.
 */
#ifndef __KVM_GMEMUF_H__
#define __KVM_GMEMUF_H__

#include <linux/bitops.h>
#include <linux/fs.h>
#include <linux/kvm_types.h>
#include <linux/mm_types.h>
#include <linux/pagemap.h>
#include <linux/spinlock.h>
#include <linux/wait.h>

struct kvm;
struct kvm_vcpu;
struct seq_file;

#ifdef CONFIG_KVM_GMEMUF
/* Handlers of one file at most: GMEMUF_IOC_HANDLER fails with ENOSPC. */
#define GMEMUF_MAX_HANDLERS	256

/* A ring of fault records, see gmemuf_handler.c. */
struct gmemuf_recs {
	u64 *recs;
	unsigned long head;	/* where the oldest is */
	unsigned long nr;
	unsigned long cap;	/* 0 or a power of two */
};

struct gmemuf {
	/*
	 * The VM the file was created for, whose stats count its faults and
	 * populates: alive while the file is, as the file holds a reference.
	 */
	struct kvm *kvm;
	/* The file's inode number, which names it in tracepoints. */
	unsigned long ino;

	/* One bit per page, set while the page is missing. */
	unsigned long *missing;
	/* One bit per page, set while a record of a fault on it is out. */
	unsigned long *posted;
	/*
	 * The wait queues of the tasks and vCPUs waiting for missing pages of
	 * the file, waitq_mask + 1 of them, a power of two: page @index waits
	 * on waitqs[index & waitq_mask] (gmemuf_waitqueue()).
	 */
	struct wait_queue_head *waitqs;
	unsigned int waitq_mask;

	/*
	 * The fault records of the file, one word each (gmemuf_handler.c):
	 * those to deliver, oldest first, and those delivered, each tagged
	 * with its handler, in rings that grow with the records alive, so that
	 * posting one allocates nothing once there is room. One queue for all
	 * the handlers, so that any handler that fetches gets any pending
	 * record. The GMEMUF_CMD_FETCH commands of all the handlers wait for
	 * them on @parked.
	 */
	spinlock_t queue_lock;
	struct gmemuf_recs pending;
	struct gmemuf_recs delivered;
	/* Records pending, delivered, or in between: each ring has room for all. */
	unsigned long nr_records;
	struct list_head parked;
	unsigned int nr_handlers;
	/* The tags of the handlers attached, in their delivered records. */
	DECLARE_BITMAP(handler_ids, GMEMUF_MAX_HANDLERS);
	/* Handlers in read() or poll() of their handler file, for records. */
	wait_queue_head_t read_wait;

	/*
	 * Whether kernel-mode faults (uaccess to a mapping of a missing page)
	 * may wait, decided when the file is created, as for userfaultfd: they
	 * can stall kernel code for as long as userspace chooses.
	 */
	bool kernel_faults;
	/* GUEST_MEMFD_FLAG_USERFAULT_EXIT: vCPU faults exit, not wait. */
	bool vcpu_exit;
};

/* The word and bit of page @index, which key its waiters' entries too. */
static inline unsigned long *gmemuf_word(struct gmemuf *uf, pgoff_t index)
{
	return &uf->missing[BIT_WORD(index)];
}

static inline int gmemuf_bit(pgoff_t index)
{
	return index % BITS_PER_LONG;
}

static inline bool gmemuf_missing(struct gmemuf *uf, pgoff_t index)
{
	return test_bit_acquire(gmemuf_bit(index), gmemuf_word(uf, index));
}

/* The one test on every fault path: is this a missing page? */
static inline bool gmemuf_page_missing(struct inode *inode, pgoff_t index)
{
	struct gmemuf *uf = inode->i_private;

	return unlikely(uf) && gmemuf_missing(uf, index);
}

int gmemuf_create(struct kvm *kvm, struct inode *inode, u64 flags);
void gmemuf_destroy(struct inode *inode);
int gmemuf_post(struct gmemuf *uf, pgoff_t index, u32 flags);
int gmemuf_attach_handler(struct gmemuf *uf, struct file *gmem_file);
void gmemuf_free_pending(struct gmemuf *uf);
void gmemuf_drop_resolved(struct gmemuf *uf);
void gmemuf_show_fdinfo(struct seq_file *m, struct file *file);
vm_fault_t gmemuf_fault_user(struct vm_fault *vmf);
int gmemuf_fault_vcpu(struct kvm_vcpu *vcpu, struct file *file, pgoff_t index,
		      gfn_t gfn, u32 flags, unsigned long mmu_seq);
void gmemuf_kick_vcpus(struct kvm *kvm);
long gmemuf_ioctl(struct file *file, unsigned int ioctl, unsigned long arg);
ssize_t gmemuf_write_iter(struct kiocb *iocb, struct iov_iter *from);
ssize_t gmemuf_read_iter(struct kiocb *iocb, struct iov_iter *to);
bool gmemuf_may_read(struct kvm *kvm);
u64 gmemuf_features(void);
#else
static inline int gmemuf_create(struct kvm *kvm, struct inode *inode,
				u64 flags)
{
	return -EINVAL;
}

static inline void gmemuf_destroy(struct inode *inode) {}

static inline bool gmemuf_page_missing(struct inode *inode, pgoff_t index)
{
	return false;
}

static inline vm_fault_t gmemuf_fault_user(struct vm_fault *vmf)
{
	return VM_FAULT_SIGBUS;
}

static inline void gmemuf_kick_vcpus(struct kvm *kvm) {}

static inline bool gmemuf_may_read(struct kvm *kvm)
{
	return false;
}

static inline u64 gmemuf_features(void)
{
	return 0;
}

#define gmemuf_ioctl		NULL
#define gmemuf_write_iter	NULL
#define gmemuf_read_iter	NULL
#define gmemuf_show_fdinfo	NULL
#endif /* CONFIG_KVM_GMEMUF */

/* Provided by guest_memfd.c. */
struct folio *__kvm_gmem_get_folio(struct inode *inode, pgoff_t index,
				   fgf_t fgp_flags);
struct folio *kvm_gmem_get_folio(struct inode *inode, pgoff_t index);
void kvm_gmem_truncate_range(struct inode *inode, pgoff_t start, pgoff_t end);

#endif /* __KVM_GMEMUF_H__ */
