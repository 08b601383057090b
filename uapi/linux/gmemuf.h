/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * gmemuf: the userfault mode of KVM's guest_memfd.
 *
 * A guest_memfd created with GUEST_MEMFD_FLAG_USERFAULT (<linux/kvm.h>)
 * starts with every page missing. An access to a missing page waits until
 * the page is populated, with pwrite() and friends on the guest_memfd or
 * GMEMUF_IOC_ZERO, or until its range is disarmed. A guest_memfd created
 * with GUEST_MEMFD_FLAG_USERFAULT_EXIT is a userfault guest_memfd whose
 * vCPU accesses do not wait: KVM_RUN fails with EFAULT and a
 * KVM_EXIT_MEMORY_FAULT whose flags have KVM_MEMORY_EXIT_FLAG_USERFAULT. The ioctls below are
 * issued on the guest_memfd itself. See Documentation/gmemuf/uapi.rst.
 */
#ifndef _UAPI_LINUX_GMEMUF_H
#define _UAPI_LINUX_GMEMUF_H

#include <linux/const.h>
#include <linux/ioctl.h>
#include <linux/types.h>

/*
 * The ioctls are KVM's (KVMIO, 0xAE), issued on a guest_memfd. The value is
 * spelled out so that this header stands on its own: <linux/kvm.h> is not
 * there on every architecture.
 */
#define GMEMUF_IOC_TYPE		0xAE

/*
 * The largest userfault guest_memfd, 32 TiB: KVM_CREATE_GUEST_MEMFD fails
 * with EFBIG for a bigger one with GUEST_MEMFD_FLAG_USERFAULT.
 */
#define GMEMUF_SIZE_MAX		(_ULL(1) << 45)

/*
 * KVM_CHECK_EXTENSION(KVM_CAP_GUEST_MEMFD_USERFAULT) returns a mask of the
 * parts of gmemuf this kernel has, 0 if none; on a VM, 0 also if VMs of its
 * type cannot have userfault guest_memfds (SEV, SEV-SNP, TDX).
 */
#define GMEMUF_FEATURE_MMAP_FAULT	_BITULL(0) /* mmap faults wait */
#define GMEMUF_FEATURE_POPULATE		_BITULL(1) /* write(), ZERO, WAKE */
#define GMEMUF_FEATURE_URING_FETCH	_BITULL(2) /* GMEMUF_CMD_FETCH */
#define GMEMUF_FEATURE_VCPU_WAIT	_BITULL(3) /* vCPU faults wait */
#define GMEMUF_FEATURE_VCPU_EXIT	_BITULL(4) /* GUEST_MEMFD_FLAG_USERFAULT_EXIT */
#define GMEMUF_FEATURE_READ		_BITULL(5) /* read(), poll() on handlers */
#define GMEMUF_FEATURE_GMEM_READ	_BITULL(6) /* pread() of guest memory */

/*
 * A range of a userfault guest_memfd, for GMEMUF_IOC_ARM, _DISARM, _ZERO
 * and _WAKE.
 *
 * @offset and @len: page-aligned; @len is not 0 and the range lies within
 *	the file.
 * @flags: must be 0; no flags are defined yet.
 * @done: must be 0 on input. GMEMUF_IOC_ZERO sets it to the number of bytes
 *	it zero-filled: it returns 0 if that is not 0, with @done below @len
 *	if it stopped early (a present page, a fatal signal, ...), and fails
 *	with @done 0 (EEXIST if the first page was present) otherwise.
 */
struct gmemuf_range {
	__u64 offset;
	__u64 len;
	__u64 flags;
	__u64 done;
};

/*
 * For GMEMUF_IOC_GET_BITMAP.
 *
 * @offset and @len: a page-aligned range within the file, @len not 0.
 * @bitmap: 0, or the address of an array of __u64 words with one bit per
 *	page of the range (bit i % 64 of word i / 64 for page i), set if the
 *	page is missing. Bits past the range in the last word are cleared.
 * @missing: must be 0 on input (EINVAL otherwise); set to the number of
 *	missing pages in the range.
 */
struct gmemuf_bitmap {
	__u64 offset;
	__u64 len;
	__u64 bitmap;
	__u64 missing;
};

/*
 * Mark a range missing. Pages of the range that are present lose their
 * contents: they are removed from every userspace mapping and from the
 * stage-2 page tables of every VM, and the next access to them waits.
 */
#define GMEMUF_IOC_ARM		_IOWR(GMEMUF_IOC_TYPE, 0xf0, struct gmemuf_range)
/*
 * Mark a range present without populating it. Tasks waiting for its pages
 * are woken and see zero-filled pages, as in a guest_memfd without
 * userfault. The contents of pages already present are kept.
 */
#define GMEMUF_IOC_DISARM	_IOWR(GMEMUF_IOC_TYPE, 0xf1, struct gmemuf_range)
/*
 * Populate the missing pages of a range with zeroes, as pwrite() of zeroes
 * would: it stops at the first page already present (EEXIST if that is
 * the first page of the range).
 */
#define GMEMUF_IOC_ZERO		_IOWR(GMEMUF_IOC_TYPE, 0xf2, struct gmemuf_range)
/*
 * Wake the tasks waiting for pages of a range. Tasks that faulted on a
 * mapping wait again if their page is still missing; vCPUs run their fault
 * again, against the memslots and memory attributes as they are now, and
 * wait again (with no second record) if it still needs a missing page.
 * Nothing else changes.
 */
#define GMEMUF_IOC_WAKE		_IOWR(GMEMUF_IOC_TYPE, 0xf3, struct gmemuf_range)
/* Read which pages of a range are missing, and how many. */
#define GMEMUF_IOC_GET_BITMAP	_IOWR(GMEMUF_IOC_TYPE, 0xf4, struct gmemuf_bitmap)
/*
 * Attach a handler: returns a new file descriptor (close-on-exec), the
 * handler file, from which the handler takes faults with read() or
 * GMEMUF_CMD_FETCH. The argument must be 0. Faults delivered to a handler
 * and not resolved when its handler file is released are delivered again
 * to other handlers.
 *
 * read() on a handler file returns whole struct gmemuf_fault records: as
 * many pending ones as fit in the buffer, at most GMEMUF_FETCH_MAX, and at
 * least 1. It fails with EINVAL for a buffer smaller than one record, and
 * with EAGAIN, if the file is O_NONBLOCK, when none is pending; otherwise
 * it sleeps until one is (a signal ends the sleep). poll() reports the
 * file readable (EPOLLIN) while records are pending.
 */
#define GMEMUF_IOC_HANDLER	_IO(GMEMUF_IOC_TYPE, 0xf5)

/*
 * A fault, as a handler reads or fetches it: 16 bytes, for every handler
 * file attached with GMEMUF_IOC_HANDLER's argument 0. It grows only by
 * opt-in: a bigger record, this one followed by new fields, will go to the
 * handler files that ask for it in that argument (which must be 0 today),
 * under a new GMEMUF_FEATURE_* bit. @flags may gain bits: ignore those you
 * do not know. @reserved is 0 for handler files attached with 0.
 */
struct gmemuf_fault {
	__u64 offset;	/* of the missing page in the file */
	__u32 flags;	/* GMEMUF_FAULT_* */
	__u32 reserved;	/* 0 */
};

/* How the page was accessed, where known. */
#define GMEMUF_FAULT_READ		(1U << 0)
#define GMEMUF_FAULT_WRITE		(1U << 1)
#define GMEMUF_FAULT_EXEC		(1U << 2)
/* Who touched it: exactly one of these. */
#define GMEMUF_FAULT_MMAP_USER		(1U << 8)  /* user mode, a mapping */
#define GMEMUF_FAULT_MMAP_KERNEL	(1U << 9)  /* kernel mode, a mapping */
#define GMEMUF_FAULT_VCPU		(1U << 10) /* a vCPU or KVM itself */
/* Set for the guest's private memory, clear for shared memory. */
#define GMEMUF_FAULT_PRIVATE		(1U << 16)

/*
 * IORING_OP_URING_CMD on a handler file, with cmd_op GMEMUF_CMD_FETCH and
 * this in the SQE's cmd area. The command is parked in the kernel until
 * there are faults, then completes with the number of struct gmemuf_fault
 * it wrote at @addr (at most @nr, at least 1), or -ECANCELED when the ring
 * or its task goes away, or a negative errno. The SQE's ioprio, addr, len,
 * buf_index, file_index and uring_cmd_flags, and in a 128-byte SQE the rest
 * of the cmd area, must be 0 (EINVAL).
 */
struct gmemuf_fetch {
	__u64 addr;	/* struct gmemuf_fault[@nr] */
	__u32 nr;	/* 1 to GMEMUF_FETCH_MAX */
	__u32 flags;	/* 0 */
};

#define GMEMUF_FETCH_MAX	1024
#define GMEMUF_CMD_FETCH	_IOWR(GMEMUF_IOC_TYPE, 0xf8, struct gmemuf_fetch)

#endif /* _UAPI_LINUX_GMEMUF_H */
