/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What the example VMMs and their guest program agree on: the guest's
 * memory layout, how the guest reports to the VMM, and the memory pattern
 * and checksum, which both sides compute with the same inline functions.
 *
 * Included by the freestanding guest (guest.c) and by the VMMs, so it uses
 * nothing but <stdint.h>, which the compiler provides to freestanding code.
 */
#ifndef GUEST_ABI_H
#define GUEST_ABI_H

#include <stdint.h>

#define GUEST_PAGE_SIZE		4096ULL

/*
 * Guest physical layout. Everything lives in the one guest_memfd memslot at
 * GPA 0, the page tables and the code included, so that a VM restored or
 * migrated with every page missing faults on those too.
 */
#define GUEST_PML4_GPA		0x1000ULL
#define GUEST_PDPT_GPA		0x2000ULL
#define GUEST_PD_GPA		0x3000ULL	/* 2 MiB pages, up to 1 GiB */
#define GUEST_CODE_GPA		0x10000ULL
#define GUEST_CODE_MAX		0x10000ULL
#define GUEST_STACK_TOP		0x100000ULL
/* The pages the guest writes and checksums: from 1 MiB to the end. */
#define GUEST_DATA_GPA		0x100000ULL
#define GUEST_MEM_MAX		(1ULL << 30)

/*
 * The guest reports with "out %al, (%dx)" to GUEST_PORT, with the report's
 * kind in %rax and its value in %rdi. Port I/O always exits to userspace,
 * and the VMM reads the two registers with KVM_GET_REGS.
 */
#define GUEST_PORT		0x6d0

enum guest_report {
	GUEST_FILLED = 1,	/* phase 1 done; value: checksum of what it wrote */
	GUEST_CHECKED,		/* phase 2 done; value: checksum it read */
	GUEST_DONE,		/* nothing more to do */
	GUEST_FAILED,		/* value: the reason, a line number */
	GUEST_PROGRESS,		/* phase 2: value: pages read so far */
};

/*
 * Phase 2 reports its progress every this many pages, so that a VMM can
 * tell a slow guest from a stuck one (watchdog.h).
 */
#define GUEST_PROGRESS_PAGES	1024

/*
 * The pattern of phase 1: the word at @gpa for this run's @seed. Not
 * derivable from the offset alone, so that a page that arrives zeroed or
 * from the wrong place changes the checksum.
 */
static inline uint64_t guest_pattern(uint64_t seed, uint64_t gpa)
{
	uint64_t x = (gpa ^ seed) * 0x9e3779b97f4a7c15ULL;

	return x ^ (x >> 31);
}

/*
 * The checksum of one page, tied to its address so that swapped pages do
 * not cancel out. The whole memory's checksum is the sum of its pages',
 * which lets the guest visit them in any order.
 */
static inline uint64_t guest_page_sum(const volatile uint64_t *page,
				      uint64_t gpa)
{
	uint64_t s = gpa | 1;
	unsigned int i;

	for (i = 0; i < GUEST_PAGE_SIZE / 8; i++)
		s = ((s << 5) | (s >> 59)) ^ page[i];
	s *= 0xff51afd7ed558ccdULL;
	return s ^ (s >> 33);
}

#endif /* GUEST_ABI_H */
