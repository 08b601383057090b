/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * libgmemuf: the userfault mode of KVM's guest_memfd, for VMMs.
 *
 * A userfault guest_memfd starts with every page missing; an access to a
 * missing page waits, and is delivered to a handler as an io_uring
 * completion, or by read() from a handler file where io_uring is not
 * there; the handler resolves it by populating the page. This library
 * wraps that UAPI (<libgmemuf/gmemuf.h>, a copy of the kernel's
 * <linux/gmemuf.h>) in four parts:
 *
 * - calls on the files: probe, create, arm, disarm, wake, read the bitmap,
 *   populate and zero-fill pages, attach a handler;
 * - bring-your-own-ring: inline helpers that prepare the fetch and populate
 *   SQEs in the caller's io_uring and decode their completions;
 * - a handler that owns its rings (struct gmemuf_handler), or goes without
 *   io_uring where it is not there;
 * - prefetch: stream the pages still missing, in the caller's order.
 *
 * Conventions, for every function:
 * - errors are returned as a negative errno, never through errno; the
 *   library never prints, aborts or exits; gmemuf_strerror() names them;
 * - offsets and lengths are in bytes and multiples of GMEMUF_PAGE_SIZE;
 * - a range (@offset, @len) is never empty: @len 0 is -EINVAL for every
 *   call that takes one, as for the kernel's range ioctls; an array of
 *   @nr entries (gmemuf_populate_batch(), gmemuf_prefetch()) may be empty,
 *   and then nothing is done and 0 returned;
 * - a NULL pointer where one is needed, an out-of-range queue and the like
 *   are -EINVAL: no call crashes on them, and the functions that return
 *   nothing ignore NULL (gmemuf_handler_stop(), gmemuf_handler_destroy(),
 *   the prep helpers' @sqe); a non-NULL buffer that cannot be read or
 *   written is -EFAULT;
 * - -EOPNOTSUPP means that the kernel has no guest_memfd userfault (or not
 *   the part asked for), or that the file is not a userfault guest_memfd;
 * - a page that is already present is never an error for the populate and
 *   zero-fill calls: it is skipped, and they count what they populated.
 *
 * The guide is Documentation/gmemuf/libgmemuf.rst; the kernel's semantics
 * are in Documentation/gmemuf/uapi.rst.
 */
#ifndef LIBGMEMUF_H
#define LIBGMEMUF_H

/*
 * <liburing.h> first: it defines _XOPEN_SOURCE and _GNU_SOURCE for the
 * sigset_t and cpu_set_t of its prototypes, which a strict -std=c11 or
 * -std=c99 build does not otherwise see. That only works before the first
 * libc header: a program built with -std=c11 includes <libgmemuf.h> (or
 * <liburing.h>) before any other, or defines _GNU_SOURCE itself.
 */
#include <liburing.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <linux/kvm.h>
#include <libgmemuf/gmemuf.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LIBGMEMUF_VERSION_MAJOR	0
#define LIBGMEMUF_VERSION_MINOR	3

/*
 * liburing 2.13 has io_uring_prep_uring_cmd(); 2.4 on say which they are
 * with IO_URING_CHECK_VERSION(), true for a liburing older than asked.
 * Not in one #if: an undefined function-like macro there is an error.
 */
#ifdef IO_URING_CHECK_VERSION
#if !IO_URING_CHECK_VERSION(2, 13)
#define LIBGMEMUF_HAVE_PREP_URING_CMD	1
#endif
#endif

/* The unit of every offset and length: guest_memfd uses 4 KiB pages. */
#define GMEMUF_PAGE_SIZE	4096u

/*
 * What an older <linux/kvm.h> lacks (Debian 12's is Linux 6.1's), and what
 * newer kernels add: the values are the kernel's, defined here only when
 * the system headers do not define them.
 */
#ifndef GUEST_MEMFD_FLAG_MMAP
#define GUEST_MEMFD_FLAG_MMAP		(1ULL << 0)
#endif
#ifndef GUEST_MEMFD_FLAG_INIT_SHARED
#define GUEST_MEMFD_FLAG_INIT_SHARED	(1ULL << 1)
#endif
#ifndef GUEST_MEMFD_FLAG_USERFAULT
#define GUEST_MEMFD_FLAG_USERFAULT	(1ULL << 2)
#endif
/* vCPU faults on a missing page of this file exit KVM_RUN (exit mode). */
#ifndef GUEST_MEMFD_FLAG_USERFAULT_EXIT
#define GUEST_MEMFD_FLAG_USERFAULT_EXIT	(1ULL << 3)
#endif
/* The exit of KVM_RUN for memory it could not map (Linux 6.8). */
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT		39
#endif
/* In kvm_run.memory_fault.flags: the access was to private memory. */
#ifndef KVM_MEMORY_EXIT_FLAG_PRIVATE
#define KVM_MEMORY_EXIT_FLAG_PRIVATE	(1ULL << 3)
#endif
/* In kvm_run.memory_fault.flags: the exit is for a missing page. */
#ifndef KVM_MEMORY_EXIT_FLAG_USERFAULT
#define KVM_MEMORY_EXIT_FLAG_USERFAULT	(1ULL << 4)
#endif

/**
 * gmemuf_probe() - does this kernel have guest_memfd userfault, and which parts
 * @vm_fd: a KVM VM file descriptor (KVM_CREATE_VM); the answer is for VMs
 *	of its type, as KVM_CAP_GUEST_MEMFD_FLAGS is.
 * @features: if not NULL, set to the mask of GMEMUF_FEATURE_* the kernel
 *	has for VMs of this type: 0 when it has no userfault at all, and 0
 *	when VMs of this type cannot have it (SEV, SEV-SNP, TDX on x86).
 *
 * Return: 1 if a userfault guest_memfd can be created for this VM, 0 if not
 * (an older kernel, a VM type without guest_memfd, or one whose memory the
 * hardware encrypts: SEV, SEV-SNP, TDX), or a negative errno
 * if the question could not be asked: -EBADF, -ENOTTY (@vm_fd is not a KVM
 * VM).
 *
 * Thread-safety: safe.
 */
int gmemuf_probe(int vm_fd, uint64_t *features);

/**
 * gmemuf_create() - create a userfault guest_memfd
 * @vm_fd: the KVM VM file descriptor it belongs to.
 * @size: its size in bytes, a multiple of GMEMUF_PAGE_SIZE.
 * @flags: GUEST_MEMFD_FLAG_* passed to KVM_CREATE_GUEST_MEMFD as they are
 *	(GUEST_MEMFD_FLAG_MMAP, _INIT_SHARED, _USERFAULT_EXIT, ...), with
 *	GUEST_MEMFD_FLAG_USERFAULT added.
 *
 * Every page of the new file is missing. As every guest_memfd, it is not
 * close-on-exec: set FD_CLOEXEC if it must not outlive an exec().
 *
 * Return: the file descriptor, or a negative errno: -EOPNOTSUPP if the
 * kernel does not support guest_memfd userfault, or one of @flags, for VMs
 * of this type; otherwise what KVM_CREATE_GUEST_MEMFD failed with (-EINVAL
 * for a bad @size, -EFBIG for a @size above GMEMUF_SIZE_MAX, -ENOMEM,
 * -EMFILE, ...).
 *
 * Thread-safety: safe.
 */
int gmemuf_create(int vm_fd, uint64_t size, uint64_t flags);

/**
 * gmemuf_arm() - mark a range missing
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 *
 * Pages of the range that were present lose their contents: they are
 * unmapped from userspace and from every guest, and the next access waits.
 *
 * Return: 0, or -EINVAL (range not page-aligned, empty, or past the end of
 * the file; an empty or unaligned range is refused before the system call,
 * whatever @fd is), -EOPNOTSUPP (@fd is not a userfault guest_memfd),
 * -EBADF, -EINTR (a fatal signal stopped it: see uapi.rst).
 *
 * Thread-safety: safe; it excludes populates of the file for its duration.
 */
int gmemuf_arm(int fd, uint64_t offset, uint64_t len);

/**
 * gmemuf_disarm() - mark a range present without populating it
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 *
 * Tasks waiting for pages of the range are woken; pages that were missing
 * read as zeroes, and a later populate of them finds them present.
 *
 * Return: 0, or the errors of gmemuf_arm().
 *
 * Thread-safety: safe.
 */
int gmemuf_disarm(int fd, uint64_t offset, uint64_t len);

/**
 * gmemuf_wake() - wake the tasks waiting for pages of a range
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 *
 * A woken task whose page is still missing waits again: this is for a
 * handler that wants the faulting tasks to recheck, nothing changes.
 *
 * Return: 0, or the errors of gmemuf_arm().
 *
 * Thread-safety: safe.
 */
int gmemuf_wake(int fd, uint64_t offset, uint64_t len);

/**
 * gmemuf_read_bitmap() - which pages of a range are missing
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 * @bitmap: an array of (len / GMEMUF_PAGE_SIZE + 63) / 64 words, which
 *	receives one bit per page of the range, bit i % 64 of word i / 64 for
 *	page i, set if the page is missing; bits past the range are cleared.
 *
 * The answer is a snapshot: pages may be populated while it is taken.
 *
 * Return: the number of missing pages in the range, or a negative errno:
 * the errors of gmemuf_arm(), -EINVAL (@bitmap is NULL: count with
 * gmemuf_count_missing()), -EFAULT (@bitmap cannot be written).
 *
 * Thread-safety: safe.
 */
int64_t gmemuf_read_bitmap(int fd, uint64_t offset, uint64_t len,
			   uint64_t *bitmap);

/**
 * gmemuf_count_missing() - how many pages of a range are missing
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 *
 * Return: the number of missing pages (a snapshot), or the errors of
 * gmemuf_arm().
 *
 * Thread-safety: safe.
 */
int64_t gmemuf_count_missing(int fd, uint64_t offset, uint64_t len);

/**
 * gmemuf_populate() - populate one page
 * @fd: a userfault guest_memfd.
 * @offset: the page's offset in the file.
 * @page: GMEMUF_PAGE_SIZE bytes, its contents.
 *
 * The page is installed atomically and its waiters woken; a page that is
 * present already is left alone.
 *
 * Return: 1 if this call populated the page, 0 if it was present already,
 * or a negative errno: -EINVAL (offset not aligned or past the end, @page
 * NULL), -EFAULT (@page cannot be read), -EINTR (a fatal signal), -ENOMEM
 * (the page's memory, or its memory cgroup charge), -EHWPOISON (the memory
 * kept for the page is poisoned: it stays missing until a hole is punched
 * over it), -EOPNOTSUPP (@fd is not a userfault guest_memfd).
 *
 * Thread-safety: safe: of populates racing for one page, one installs it.
 */
int gmemuf_populate(int fd, uint64_t offset, const void *page);

/**
 * gmemuf_populate_range() - populate the missing pages of a range
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 * @buf: @len bytes: the contents of the range.
 *
 * Each missing page of the range is populated from the same place in @buf,
 * in order; present pages are skipped.
 *
 * Return: the number of pages this call populated, or a negative errno (those
 * of gmemuf_populate()), in which case the pages before the one that failed
 * may have been populated. -EINVAL for an empty range (@len 0), a @len or
 * @offset not aligned, a range past the end of the file, or @buf NULL:
 * then nothing was populated.
 *
 * Thread-safety: safe.
 */
int64_t gmemuf_populate_range(int fd, uint64_t offset, const void *buf,
			      uint64_t len);

/* A page to populate: where, and its GMEMUF_PAGE_SIZE bytes. */
struct gmemuf_page {
	uint64_t offset;
	const void *data;
};

/**
 * gmemuf_populate_batch() - populate many pages, wherever they are
 * @fd: a userfault guest_memfd.
 * @pages: the pages, in any order.
 * @nr: how many.
 *
 * Runs of pages that follow each other in the file are written with one
 * pwritev() each; pages already present are skipped.
 *
 * Return: the number of pages this call populated (0 if @nr is 0), or a
 * negative errno (those of gmemuf_populate()), in which case some pages may
 * have been populated. -EINVAL for @pages NULL (with @nr not 0), or an
 * entry whose offset is not aligned or whose data is NULL, is checked
 * before anything is written: nothing was populated then. An offset past
 * the end of the file is -EINVAL too, after the entries before its run.
 *
 * Thread-safety: safe.
 */
int64_t gmemuf_populate_batch(int fd, const struct gmemuf_page *pages,
			      size_t nr);

/**
 * gmemuf_zero() - populate the missing pages of a range with zeroes
 * @fd: a userfault guest_memfd.
 * @offset: the start of the range.
 * @len: its length in bytes, not 0.
 *
 * As gmemuf_populate_range() from a buffer of zeroes, without the buffer.
 *
 * Return: the number of pages this call zero-filled, or a negative errno:
 * -EINVAL (the range is empty, not aligned or past the end of the file:
 * nothing was done), -EINTR (a fatal signal), -ENOMEM, -EHWPOISON (as for
 * gmemuf_populate()), -EOPNOTSUPP, -EBADF; the pages before one that failed
 * may have been zero-filled.
 *
 * Thread-safety: safe.
 */
int64_t gmemuf_zero(int fd, uint64_t offset, uint64_t len);

/**
 * gmemuf_handler_open() - attach a handler file to a userfault guest_memfd
 * @fd: a userfault guest_memfd.
 *
 * The handler file (close-on-exec) is what faults are fetched from, with
 * gmemuf_prep_fetch(). Faults delivered to it and not resolved when it is
 * closed are delivered again, to another handler file or to the next one
 * attached. Any process holding @fd can attach one.
 *
 * Return: the handler file descriptor, or a negative errno: -ENOSPC (the
 * file has 256 handlers), -EOPNOTSUPP, -EMFILE, -ENFILE, -ENOMEM.
 *
 * Thread-safety: safe.
 */
int gmemuf_handler_open(int fd);

/**
 * struct gmemuf_memory_fault - a vCPU's memory fault exit, decoded
 * @gpa: the guest physical address of the page.
 * @size: the bytes from @gpa: GMEMUF_PAGE_SIZE for a missing page.
 * @flags: KVM_MEMORY_EXIT_FLAG_* as KVM gave them:
 *	KVM_MEMORY_EXIT_FLAG_USERFAULT for a missing page, and
 *	KVM_MEMORY_EXIT_FLAG_PRIVATE if the access was to private memory.
 */
struct gmemuf_memory_fault {
	uint64_t gpa;
	uint64_t size;
	uint64_t flags;
};

/**
 * gmemuf_decode_memory_fault() - is a vCPU's exit a missing page, and which
 * @run: the vCPU's struct kvm_run, after KVM_RUN failed with EFAULT (or
 *	EHWPOISON): for any other errno its exit reason is stale.
 * @fault: set to the gpa, size and flags of the memory fault; zeroed if
 *	the exit is not a memory fault.
 *
 * In the exit mode (GUEST_MEMFD_FLAG_USERFAULT_EXIT), a vCPU that touches
 * a missing page leaves KVM_RUN with EFAULT and a KVM_EXIT_MEMORY_FAULT
 * flagged KVM_MEMORY_EXIT_FLAG_USERFAULT; its fault record is posted to the
 * handlers already. The VMM has the page populated (or waits until it is)
 * and enters KVM_RUN again. Works with a <linux/kvm.h> older than the
 * exit (Linux 6.8): the layout of struct kvm_run is the kernel's ABI.
 *
 * Return: 1 if it is a userfault (a missing page of a userfault
 * guest_memfd); 0 if it is another memory fault, which populating pages
 * does not resolve (a private/shared mismatch, say: entering again exits
 * again); -ENOMSG if the exit is not a KVM_EXIT_MEMORY_FAULT; -EINVAL if
 * @run or @fault is NULL.
 *
 * Thread-safety: safe.
 */
static inline int gmemuf_decode_memory_fault(const struct kvm_run *run,
					     struct gmemuf_memory_fault *fault)
{
	/* kvm_run.memory_fault: the first member of the exit union. */
	struct {
		uint64_t flags;
		uint64_t gpa;
		uint64_t size;
	} mf;

	if (!run || !fault)
		return -EINVAL;
	memset(fault, 0, sizeof(*fault));
	if (run->exit_reason != KVM_EXIT_MEMORY_FAULT)
		return -ENOMSG;
	/* By its place: a <linux/kvm.h> before 6.8 has no such member. */
	memcpy(&mf, &run->hw, sizeof(mf));
	fault->gpa = mf.gpa;
	fault->size = mf.size;
	fault->flags = mf.flags;
	return (mf.flags & KVM_MEMORY_EXIT_FLAG_USERFAULT) ? 1 : 0;
}

/*
 * Bring your own ring.
 *
 * For a VMM that drives its own io_uring: these prepare SQEs and decode
 * their completions, and keep no state. No particular setup flags are
 * needed: SQE128 is not. In a ring set up with IORING_SETUP_SQE128, clear
 * the whole 128-byte SQE before gmemuf_prep_fetch(), which clears and
 * fills its first 64 bytes only: the kernel fails a fetch whose other 64
 * are not 0 with EINVAL. They set neither user_data nor
 * sqe->flags beyond clearing them: set those after (io_uring_sqe_set_data(),
 * IOSQE_FIXED_FILE with a registered file index in place of the fd).
 *
 * A handler keeps at least one fetch parked on each of its handler files:
 * the kernel completes it when there are faults; resubmit it, together with
 * the populates of the faults it delivered, in one io_uring_enter().
 *
 * Keep rings off vCPU threads. The kernel runs part of io_uring's work in
 * the tasks that use a ring, as task work queued with TWA_SIGNAL, which
 * makes signal_pending() true in the task until it next returns to
 * userspace: many completions (fetches, polls) and the start of io-wq
 * workers, in the task that submitted the request; and the teardown of a
 * ring (once its last file descriptor is closed, or at exit), in every task
 * that created the ring or submitted to it, even one that has not touched
 * it for long. A thread inside KVM_RUN then, or entering it
 * before it has returned to userspace, gets EINTR from KVM_RUN (exit reason
 * KVM_EXIT_INTR) with no signal sent. So create, submit to and close these
 * rings from threads that run no vCPU; a vCPU thread that must (or that
 * did once) takes such an EINTR as a spurious exit and enters KVM_RUN again.
 */

/**
 * gmemuf_prep_fetch() - prepare an SQE that fetches fault records
 * @sqe: the SQE, from io_uring_get_sqe(); NULL (a full SQ) is ignored.
 * @handler_fd: a handler file (gmemuf_handler_open()).
 * @faults: where the kernel writes the records. It belongs to the kernel
 *	from submission until the completion: do not reuse it before.
 * @nr: its size, 1 to GMEMUF_FETCH_MAX.
 *
 * The command stays parked until there are faults; it then completes with
 * every record that arrived, up to @nr. Decode the completion with
 * gmemuf_fetch_result(). The arguments are checked by the kernel: @faults
 * NULL, or @nr 0 or above GMEMUF_FETCH_MAX, complete with -EINVAL.
 *
 * It clears and fills the 64 bytes of struct io_uring_sqe, and cannot know
 * whether @sqe is the first half of a 128-byte SQE (a ring set up with
 * IORING_SETUP_SQE128): there, clear all 128 bytes first
 * (memset(sqe, 0, 2 * sizeof(*sqe))), or the fetch completes with
 * -EINVAL, since the kernel requires the rest of the command area to be 0.
 *
 * Thread-safety: as io_uring_get_sqe() on the ring.
 */
static inline void gmemuf_prep_fetch(struct io_uring_sqe *sqe, int handler_fd,
				     struct gmemuf_fault *faults,
				     unsigned int nr)
{
	struct gmemuf_fetch fetch;

	if (!sqe)
		return;

	/* Not a designated initializer: C++ before C++20 has none. */
	memset(&fetch, 0, sizeof(fetch));
	fetch.addr = (uint64_t)(uintptr_t)faults;
	fetch.nr = nr;
	/* What liburing's helper leaves alone is cleared, as prep_rw would. */
	memset(sqe, 0, sizeof(*sqe));
#ifdef LIBGMEMUF_HAVE_PREP_URING_CMD
	io_uring_prep_uring_cmd(sqe, GMEMUF_CMD_FETCH, handler_fd);
#else
	/* liburing before 2.13 (Debian 12 has 2.3) has no uring_cmd helper. */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = handler_fd;
	sqe->cmd_op = GMEMUF_CMD_FETCH;
#endif
	memcpy(sqe->cmd, &fetch, sizeof(fetch));
}

/**
 * gmemuf_fetch_result() - decode the completion of a fetch
 * @cqe: the completion of an SQE of gmemuf_prep_fetch().
 * @nr: the @nr given to gmemuf_prep_fetch().
 *
 * Return: the number of fault records the kernel wrote at the start of the
 * fetch's array, 1 to @nr, or a negative errno: -ECANCELED (the ring or the
 * task that submitted the fetch is going away: the faults go to another
 * handler, resubmit from a live ring and task), -EINVAL (a bad fetch, or
 * @cqe NULL), -EOPNOTSUPP (not a handler file), -EFAULT (the array cannot
 * be written: the records stay pending for the next fetch), -EPROTO (more
 * records than @nr, or none: not a fetch completion).
 *
 * Thread-safety: safe.
 */
static inline int gmemuf_fetch_result(const struct io_uring_cqe *cqe,
				      unsigned int nr)
{
	if (!cqe)
		return -EINVAL;
	if (cqe->res < 0)
		return cqe->res;
	if (cqe->res == 0 || (unsigned int)cqe->res > nr)
		return -EPROTO;
	return cqe->res;
}

/**
 * gmemuf_prep_populate() - prepare an SQE that populates pages
 * @sqe: the SQE, from io_uring_get_sqe(); NULL (a full SQ) is ignored.
 * @fd: a userfault guest_memfd.
 * @offset: the offset of the first page.
 * @buf: @nr_pages pages of contents, readable until the completion.
 * @nr_pages: how many pages follow each other from @offset, 1 to
 *	INT_MAX / GMEMUF_PAGE_SIZE (the most one write can take).
 *
 * An io_uring WRITE, with the semantics of pwrite() on the guest_memfd: it
 * stops at the first page present. Decode the completion with
 * gmemuf_populate_result(). A populate of no pages (@nr_pages 0), of too
 * many, or from @buf NULL completes with -EINVAL, as every empty range
 * does in this library (a write of 0 bytes would complete with 0, which
 * reads as a present page).
 *
 * Thread-safety: as io_uring_get_sqe() on the ring.
 */
static inline void gmemuf_prep_populate(struct io_uring_sqe *sqe, int fd,
					uint64_t offset, const void *buf,
					unsigned int nr_pages)
{
	unsigned int len = nr_pages * GMEMUF_PAGE_SIZE;

	if (!sqe)
		return;
	/* One byte, which the kernel refuses (EINVAL) as not page-aligned. */
	if (!buf || !nr_pages || nr_pages > 0x7fffffffu / GMEMUF_PAGE_SIZE)
		len = 1;
	io_uring_prep_write(sqe, fd, buf, len, offset);
}

/**
 * gmemuf_populate_result() - decode the completion of a populate
 * @cqe: the completion of an SQE of gmemuf_prep_populate().
 *
 * Return: the number of pages populated from the first one on, or a
 * negative errno (those of gmemuf_populate(); -EINVAL for @cqe NULL).
 * 0 means that the first page
 * was present already; fewer pages than asked for means that the page after
 * the last one populated was present (or, rarely, a signal or a bad
 * buffer): submit the rest again from there to know.
 *
 * Thread-safety: safe.
 */
static inline int gmemuf_populate_result(const struct io_uring_cqe *cqe)
{
	if (!cqe)
		return -EINVAL;
	if (cqe->res == -EEXIST)
		return 0;
	if (cqe->res < 0)
		return cqe->res;
	return cqe->res / (int)GMEMUF_PAGE_SIZE;
}

/*
 * A handler that owns its rings.
 *
 * It has nr_queues queues, each a handler file and an io_uring of its own
 * with one fetch parked. Where io_uring cannot be used (io_uring_setup()
 * fails with ENOSYS or EPERM: a kernel without it, kernel.io_uring_disabled,
 * a seccomp filter), or with GMEMUF_HANDLER_READ, a queue has no ring: it
 * reads faults from its handler file, and writes its populates with
 * pwrite(); every call below behaves the same. Each queue is served by one
 * thread (the caller's:
 * the library keeps none of its own), either with gmemuf_handler_run() and
 * a callback, or with a loop of gmemuf_handler_wait() that the caller
 * drives. Keep a queue on one thread: the kernel completes a fetch in the
 * context of the thread that submitted it, and cancels it when that thread
 * exits (the library then submits it again, and its faults are not lost).
 * Faults are resolved with gmemuf_handler_populate(), which queues
 * the populate on the queue's ring, to be submitted together with the next
 * fetch; or by any other populate call, from any thread.
 *
 * Only the threads that serve queues (gmemuf_handler_wait(), _populate(),
 * _run()) submit to the rings, so only they get the io_uring task work
 * described under "Bring your own ring": serve queues from threads that
 * run no vCPU. gmemuf_handler_create() creates the rings on a short-lived
 * thread of the library's own, and gmemuf_handler_destroy() closes them
 * without submitting: neither leaves task work, or a pending signal, in
 * the calling thread, which may be a vCPU thread.
 */
struct gmemuf_handler;

struct gmemuf_handler_params {
	uint32_t nr_queues;	/* 1 to 256 (0: 1) */
	uint32_t queue_depth;	/* SQ entries of each ring, 4 to 4096 (0: 64) */
	uint32_t batch;		/* records per fetch, 1 to GMEMUF_FETCH_MAX (0: 64) */
	uint32_t flags;		/* GMEMUF_HANDLER_*, or 0 */
	uint32_t reserved[4];	/* 0 */
};

/*
 * In gmemuf_handler_params.flags: no rings, even where io_uring works.
 * Faults are read() from the handler files and populates written with
 * pwrite() (GMEMUF_FEATURE_READ), as when io_uring is not there. Since
 * LIBGMEMUF 0.3 (an older library fails with -EINVAL).
 */
#define GMEMUF_HANDLER_READ	(1u << 0)

/**
 * gmemuf_handler_create() - attach a handler with rings of its own
 * @fd: a userfault guest_memfd. The handler does not own it: keep it open
 *	while the handler lives.
 * @params: NULL for the defaults, or the sizes (zeroes are defaults).
 * @handler: set to the new handler.
 *
 * Without io_uring (io_uring_queue_init() fails with -ENOSYS or -EPERM),
 * or with GMEMUF_HANDLER_READ, the queues have no rings: see above. Their
 * handler files are then O_NONBLOCK.
 *
 * Return: 0, or a negative errno: -EINVAL (@handler NULL, @params out of
 * range, unknown flags or reserved fields set), -EBADF, -EOPNOTSUPP (@fd
 * is not a userfault guest_memfd, or the queues need read() and the kernel
 * lacks GMEMUF_FEATURE_READ), -ENOSPC (too many handler files on @fd),
 * -ENOMEM, -EMFILE, -EAGAIN (no thread could be started to create the
 * rings), or what io_uring_queue_init() failed with otherwise. Nothing is
 * left open on failure, and *@handler is NULL.
 *
 * Thread-safety: safe.
 */
int gmemuf_handler_create(int fd, const struct gmemuf_handler_params *params,
			  struct gmemuf_handler **handler);

/**
 * gmemuf_handler_destroy() - close a handler's rings and handler files
 * @handler: the handler, or NULL.
 *
 * Faults it fetched and that are still missing go to another handler, or
 * to the next one attached. Populates queued by gmemuf_handler_populate()
 * and never submitted (no gmemuf_handler_wait() on their queue since) are
 * dropped, never submitted: their pages are not read, and their faults go
 * elsewhere too. Populates already submitted (by a full ring) are waited
 * for, as they read their pages until they complete: once it returns,
 * nothing reads a page given to gmemuf_handler_populate(). It submits
 * nothing. A stopped handler still takes new faults until it is destroyed:
 * destroy it promptly.
 *
 * Thread-safety: not with any other call on @handler: stop it and join the
 * threads that serve it first.
 */
void gmemuf_handler_destroy(struct gmemuf_handler *handler);

/**
 * gmemuf_handler_wait() - submit queued populates and wait for faults
 * @handler: the handler.
 * @queue: which of its queues, below nr_queues.
 * @faults: set to the records fetched, valid until the next
 *	gmemuf_handler_wait() on @queue.
 * @timeout_ms: how long to wait for faults: -1 for ever, 0 not at all.
 *
 * Submits the populates queued on @queue and the queue's fetch, in one
 * system call, then waits until the populates have completed and the fetch
 * has delivered faults, @timeout_ms has passed or the handler is stopped.
 * Without a ring, it writes the queued populates with pwrite(), then reads
 * the handler file, and polls it until faults come. With @timeout_ms 0 it
 * takes what is there and does not wait for faults (it still waits for
 * the populates it submitted to complete): the call of an event loop that
 * polls gmemuf_handler_fd().
 * The data of the populates may be reused once it returns (but after an
 * error of the ring, which may leave some in flight: then once a later
 * wait on @queue returns otherwise, or gmemuf_handler_destroy() returns).
 *
 * A queued populate that failed (for another reason than the page being
 * present) makes it return that error once; its fault is returned again by
 * the next call, with flags 0, so that it is not lost, however many failed
 * (but for -EINVAL, an offset past the end of the file, which no fault has).
 *
 * Return: the number of records at *@faults (1 or more), 0 if none came in
 * @timeout_ms, or a negative errno: -ESHUTDOWN (gmemuf_handler_stop() was
 * called), -EINVAL (@handler or @faults NULL, @queue out of range,
 * @timeout_ms below -1), the error of a populate, or of the ring. After the
 * error of a populate, call it again: the fault comes back from the next
 * call, even with @timeout_ms 0.
 *
 * Thread-safety: one thread at a time per queue; queues are independent.
 */
int gmemuf_handler_wait(struct gmemuf_handler *handler, unsigned int queue,
			const struct gmemuf_fault **faults, int timeout_ms);

/**
 * gmemuf_handler_populate() - queue the populate of a page on a queue's ring
 * @handler: the handler.
 * @queue: which of its queues.
 * @offset: the page's offset in the guest_memfd.
 * @page: GMEMUF_PAGE_SIZE bytes, its contents: they must stay readable
 *	until the next gmemuf_handler_wait() on @queue returns, or
 *	gmemuf_handler_destroy() does.
 *
 * The populate is submitted by the next gmemuf_handler_wait() (or now, if
 * the ring is full); gmemuf_handler_destroy() drops it if it was not
 * submitted. A page present already is not an error. On a queue without a
 * ring the same holds, with queue_depth populates queued at most: the
 * next wait writes them, or this call does when the queue is full.
 *
 * Return: 0, or a negative errno: -EINVAL (@handler or @page NULL, @queue
 * out of range, @offset not aligned), -ENOMEM (no room to keep the fault
 * should the populate fail), or the error of submitting a full ring. On an
 * error nothing is queued: the fault is still the caller's to resolve.
 *
 * Thread-safety: from the thread that serves @queue.
 */
int gmemuf_handler_populate(struct gmemuf_handler *handler, unsigned int queue,
			    uint64_t offset, const void *page);

/**
 * gmemuf_handler_fd() - a file descriptor to poll for a queue's faults
 * @handler: the handler.
 * @queue: which of its queues.
 *
 * For a VMM that serves a queue from its own event loop (poll(), epoll,
 * ...) rather than blocking in gmemuf_handler_wait(). The descriptor is
 * the queue's ring, or, for a queue without one, its handler file. It is
 * readable (POLLIN) when gmemuf_handler_wait() with @timeout_ms 0 may
 * have something to return: take it with that call, which also queues the
 * next fetch. So call gmemuf_handler_wait(@handler, @queue, &faults, 0)
 * once before the first poll, and again each time the descriptor is
 * readable, until it returns 0 (or -ESHUTDOWN): not only while it returns
 * faults, since a negative return, the error of a failed populate, leaves
 * that populate's fault to the next call. A ring's descriptor stays
 * readable until a wait hands such a fault out; a handler file does not
 * (it polls for the kernel's records only), so without a ring a loop that
 * stops at the error waits for ever. Readiness may be spurious (a populate
 * completed, the handler was stopped, or another handler took the faults):
 * the call then returns 0 or -ESHUTDOWN. Poll from the thread that serves
 * the queue: a fetch completes in its context, and a poll() or
 * epoll_wait() there may fail with EINTR when it does, to be retried, as
 * for any signal.
 *
 * The descriptor is the handler's: do not read, write or close it. It is
 * valid until gmemuf_handler_destroy().
 *
 * Return: the file descriptor, or -EINVAL (@handler NULL, @queue out of
 * range).
 *
 * Thread-safety: safe.
 */
int gmemuf_handler_fd(struct gmemuf_handler *handler, unsigned int queue);

/**
 * typedef gmemuf_fault_fn - what gmemuf_handler_run() calls with each batch
 * @handler: the handler that fetched the faults.
 * @queue: the queue that fetched them.
 * @faults: the records, valid until it returns.
 * @nr: how many, 1 or more.
 * @arg: the @arg of gmemuf_handler_run().
 *
 * It resolves the faults, typically with gmemuf_handler_populate(), or
 * arranges for them to be resolved later.
 *
 * Return: 0 to go on, or a negative errno that stops gmemuf_handler_run()
 * (which returns it; a positive value stops it too, as -EINVAL).
 */
typedef int (*gmemuf_fault_fn)(struct gmemuf_handler *handler,
			       unsigned int queue,
			       const struct gmemuf_fault *faults,
			       unsigned int nr, void *arg);

/**
 * gmemuf_handler_run() - serve a queue's faults with a callback
 * @handler: the handler.
 * @queue: which of its queues.
 * @fn: called with each batch of faults.
 * @arg: passed to @fn.
 *
 * Loops on gmemuf_handler_wait() until the handler is stopped.
 *
 * Return: 0 once gmemuf_handler_stop() was called, or a negative errno: the
 * one @fn returned (a positive one as -EINVAL), -EINVAL (@fn NULL, or as
 * gmemuf_handler_wait()), or another of gmemuf_handler_wait().
 *
 * Thread-safety: one thread at a time per queue; queues are independent.
 */
int gmemuf_handler_run(struct gmemuf_handler *handler, unsigned int queue,
		       gmemuf_fault_fn fn, void *arg);

/**
 * gmemuf_handler_stop() - make every wait and run of a handler return
 * @handler: the handler, or NULL (nothing is done).
 *
 * Sticky: every later gmemuf_handler_wait() returns -ESHUTDOWN (after
 * submitting its queued populates, waiting for them, and returning the
 * faults already fetched), and a wait in progress does so too. It does not
 * wait for anything itself: the populates that a wait in progress submitted
 * read their pages until that wait returns; those queued after the last
 * wait of a queue are dropped by gmemuf_handler_destroy(). The handler
 * files stay attached until gmemuf_handler_destroy().
 *
 * Thread-safety: safe, from any thread, and async-signal-safe.
 */
void gmemuf_handler_stop(struct gmemuf_handler *handler);

/**
 * struct gmemuf_handler_stats - what a handler did, for a VMM to chart
 * @size: the caller's sizeof(struct gmemuf_handler_stats), set before
 *	the call; set by it to the bytes it filled. The struct only grows, at
 *	its end: an older library fills less, a newer one no more than @size.
 * @reserved: 0.
 * @fetches: fetches (or reads) that delivered faults, one per batch.
 * @faults: fault records fetched (or read) from the kernel.
 * @retries: faults handed out again by gmemuf_handler_wait() because their
 *	populate failed (not counted in @faults again).
 * @populates: populates of gmemuf_handler_populate() that completed: the
 *	sum of the next three.
 * @populated: pages they installed.
 * @present: pages they found present already, which is not an error.
 * @populate_errors: populates that failed otherwise.
 * @fetch_errors: fetches that failed (but for -ECANCELED).
 * @fetches_cancelled: fetches cancelled because the thread that submitted
 *	them exited, and submitted again.
 *
 * Every counter starts at 0 and only grows. Populates are counted when
 * they complete, as gmemuf_handler_wait() reaps them.
 */
struct gmemuf_handler_stats {
	uint32_t size;
	uint32_t reserved;
	uint64_t fetches;
	uint64_t faults;
	uint64_t retries;
	uint64_t populates;
	uint64_t populated;
	uint64_t present;
	uint64_t populate_errors;
	uint64_t fetch_errors;
	uint64_t fetches_cancelled;
};

/**
 * gmemuf_handler_stats() - read a handler's counters
 * @handler: the handler.
 * @stats: set @stats->size to sizeof(*@stats) first; receives the counters
 *	of every queue, summed.
 *
 * Each counter is read atomically, but not all at once: while queues are
 * served, one may include a batch that the next does not yet (@fetches
 * before @faults). @populates is always the sum of its parts. Fields past
 * what this library knows, up to @stats->size, are zeroed.
 *
 * Return: 0, or -EINVAL (@handler or @stats NULL; @stats->size below 8,
 * above 4096 or not a multiple of 8).
 *
 * Thread-safety: safe, from any thread, while queues are served; not
 * with gmemuf_handler_destroy().
 */
int gmemuf_handler_stats(struct gmemuf_handler *handler,
			 struct gmemuf_handler_stats *stats);

/**
 * typedef gmemuf_prefetch_fn - what gmemuf_prefetch() calls for page contents
 * @arg: the @arg of gmemuf_prefetch().
 * @offsets: offsets of pages that were missing when asked for.
 * @nr: how many, 1 to the @batch of gmemuf_prefetch().
 * @buf: @nr pages: fill page i with the contents of the page at
 *	@offsets[i].
 *
 * Return: 0, or a negative errno that stops gmemuf_prefetch() (a positive
 * value stops it too, as -EINVAL).
 */
typedef int (*gmemuf_prefetch_fn)(void *arg, const uint64_t *offsets,
				  unsigned int nr, void *buf);

/**
 * gmemuf_prefetch() - populate the pages still missing, in a given order
 * @fd: a userfault guest_memfd.
 * @order: @nr page offsets, in the order to populate them.
 * @nr: how many.
 * @batch: how many pages to ask @fn for at a time (0: 64), at most 1024.
 * @fn: gives the contents of pages.
 * @arg: passed to @fn.
 *
 * Takes @order @batch pages at a time, drops those that are present (so
 * that @fn is not asked for them), has @fn fill the rest and populates them.
 * A page populated meanwhile by anyone else, demand faults included, is
 * skipped, not an error: prefetch and a handler can run at the same time.
 *
 * Return: the number of pages this call populated, or a negative errno: the
 * one @fn returned, -EINVAL (@fn or @order NULL, @batch too big, an offset
 * out of the file or not aligned), -ENOMEM, or those of gmemuf_populate().
 * With @nr 0 it does nothing and returns 0, whatever the other arguments.
 *
 * Thread-safety: safe, if @fn is.
 */
int64_t gmemuf_prefetch(int fd, const uint64_t *order, size_t nr,
			unsigned int batch, gmemuf_prefetch_fn fn, void *arg);

/**
 * gmemuf_strerror() - describe an error of this library
 * @err: a negative (or positive) errno returned by a libgmemuf call.
 *
 * Return: a constant string, never NULL; what the error means for this
 * library where that says more than strerror(), as for -EOPNOTSUPP.
 *
 * Thread-safety: safe.
 */
const char *gmemuf_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* LIBGMEMUF_H */
