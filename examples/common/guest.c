// SPDX-License-Identifier: GPL-2.0-only
/*
 * The guest program of the examples: freestanding 64-bit code, linked to run
 * at GUEST_CODE_GPA (guest.ld) and loaded there as a flat binary. It runs in
 * long mode on the identity page tables the VMM built, with no interrupts
 * and no IDT, and talks to the VMM only through port I/O.
 *
 * Phase 1 writes a pattern over all its data pages and reports their
 * checksum; the VMM may stop it there and save or migrate it. Phase 2 reads
 * every data page back, in a scattered order so that its accesses do not
 * simply follow a sequential prefetch, reporting its progress as it goes,
 * and reports the checksum of what it read. The VMM compares the two.
 */
#include "guest_abi.h"

typedef uint64_t u64;

static void report(u64 kind, u64 value)
{
	asm volatile("outb %%al, %%dx"
		     : : "a"(kind), "d"(GUEST_PORT), "D"(value) : "memory");
}

static u64 gcd(u64 a, u64 b)
{
	while (b) {
		u64 t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* In .text.entry, which guest.ld puts first: the VMM starts the vCPU here. */
__attribute__((section(".text.entry"), noreturn, used))
void guest_main(u64 mem_size, u64 seed)
{
	u64 npages = (mem_size - GUEST_DATA_GPA) / GUEST_PAGE_SIZE;
	u64 sum = 0, stride, p, i, w;

	if (mem_size <= GUEST_DATA_GPA || mem_size > GUEST_MEM_MAX)
		report(GUEST_FAILED, __LINE__);

	for (p = 0; p < npages; p++) {
		u64 gpa = GUEST_DATA_GPA + p * GUEST_PAGE_SIZE;
		volatile u64 *page = (volatile u64 *)gpa;

		for (w = 0; w < GUEST_PAGE_SIZE / 8; w++)
			page[w] = guest_pattern(seed, gpa + w * 8);
		sum += guest_page_sum(page, gpa);
	}
	report(GUEST_FILLED, sum);

	/* A stride coprime with npages visits every page exactly once. */
	stride = npages / 3 + 1;
	while (gcd(stride, npages) != 1)
		stride++;
	sum = 0;
	for (i = 0, p = 0; i < npages; i++) {
		u64 gpa = GUEST_DATA_GPA + p * GUEST_PAGE_SIZE;

		sum += guest_page_sum((volatile u64 *)gpa, gpa);
		if (i % GUEST_PROGRESS_PAGES == GUEST_PROGRESS_PAGES - 1)
			report(GUEST_PROGRESS, i + 1);
		p += stride;
		if (p >= npages)
			p -= npages;
	}
	report(GUEST_CHECKED, sum);

	for (;;)
		report(GUEST_DONE, 0);
}
