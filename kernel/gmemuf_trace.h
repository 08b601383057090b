/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * gmemuf: tracepoints along the way of a fault on a missing page, from its
 * post to its handler and its populate to the wake-up of its waiter. Each
 * names the guest_memfd by its inode number, as fstat() gives it, and the
 * page by its offset in the file, as struct gmemuf_fault does.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM gmemuf

#if !defined(_TRACE_GMEMUF_H) || defined(TRACE_HEADER_MULTI_READ)
#define _TRACE_GMEMUF_H

#include <linux/tracepoint.h>
#include <uapi/linux/gmemuf.h>

#define gmemuf_show_fault_flags(flags)					\
	__print_flags(flags, "|",					\
		{ GMEMUF_FAULT_READ,		"READ" },		\
		{ GMEMUF_FAULT_WRITE,		"WRITE" },		\
		{ GMEMUF_FAULT_EXEC,		"EXEC" },		\
		{ GMEMUF_FAULT_MMAP_USER,	"MMAP_USER" },		\
		{ GMEMUF_FAULT_MMAP_KERNEL,	"MMAP_KERNEL" },	\
		{ GMEMUF_FAULT_VCPU,		"VCPU" },		\
		{ GMEMUF_FAULT_PRIVATE,		"PRIVATE" })

/* A record of a fault was posted, to be queued for the handlers. */
TRACE_EVENT(gmemuf_post,
	    TP_PROTO(unsigned long ino, pgoff_t index, u32 flags),
	    TP_ARGS(ino, index, flags),
	    TP_STRUCT__entry(__field(unsigned long, ino)
			     __field(u64, offset)
			     __field(u32, flags)),
	    TP_fast_assign(__entry->ino = ino;
			   __entry->offset = (u64)index << PAGE_SHIFT;
			   __entry->flags = flags;),
	    TP_printk("ino %lu offset 0x%llx flags %s", __entry->ino,
		      __entry->offset,
		      gmemuf_show_fault_flags(__entry->flags)));

/* A record reached a handler, by GMEMUF_CMD_FETCH or by read(). */
TRACE_EVENT(gmemuf_deliver,
	    TP_PROTO(unsigned long ino, pgoff_t index, u32 flags, bool read),
	    TP_ARGS(ino, index, flags, read),
	    TP_STRUCT__entry(__field(unsigned long, ino)
			     __field(u64, offset)
			     __field(u32, flags)
			     __field(bool, read)),
	    TP_fast_assign(__entry->ino = ino;
			   __entry->offset = (u64)index << PAGE_SHIFT;
			   __entry->flags = flags;
			   __entry->read = read;),
	    TP_printk("ino %lu offset 0x%llx flags %s by %s", __entry->ino,
		      __entry->offset,
		      gmemuf_show_fault_flags(__entry->flags),
		      __entry->read ? "read" : "fetch"));

/* A missing page was populated, with data or zeroes, and its waiters woken. */
TRACE_EVENT(gmemuf_populate,
	    TP_PROTO(unsigned long ino, pgoff_t index, bool zero),
	    TP_ARGS(ino, index, zero),
	    TP_STRUCT__entry(__field(unsigned long, ino)
			     __field(u64, offset)
			     __field(bool, zero)),
	    TP_fast_assign(__entry->ino = ino;
			   __entry->offset = (u64)index << PAGE_SHIFT;
			   __entry->zero = zero;),
	    TP_printk("ino %lu offset 0x%llx with %s", __entry->ino,
		      __entry->offset, __entry->zero ? "zeroes" : "data"));

/*
 * The wait of a vCPU or a task for a missing page ended, with the page
 * present, or still missing (a signal; for a vCPU, a kick or request, a
 * memslot or attribute change, GMEMUF_IOC_WAKE, or an invalidation before
 * it slept): then the fault runs again.
 */
TRACE_EVENT(gmemuf_wake,
	    TP_PROTO(unsigned long ino, pgoff_t index, u32 flags, bool present),
	    TP_ARGS(ino, index, flags, present),
	    TP_STRUCT__entry(__field(unsigned long, ino)
			     __field(u64, offset)
			     __field(u32, flags)
			     __field(bool, present)),
	    TP_fast_assign(__entry->ino = ino;
			   __entry->offset = (u64)index << PAGE_SHIFT;
			   __entry->flags = flags;
			   __entry->present = present;),
	    TP_printk("ino %lu offset 0x%llx flags %s page %s", __entry->ino,
		      __entry->offset,
		      gmemuf_show_fault_flags(__entry->flags),
		      __entry->present ? "present" : "missing"));

#endif /* _TRACE_GMEMUF_H */

/*
 * Relative to include/trace/, where define_trace.h is, or to an include
 * path: Kbuild gives gmemuf.o, which creates the tracepoints, this
 * directory's.
 */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE gmemuf_trace

/* This part must be outside protection */
#include <trace/define_trace.h>
