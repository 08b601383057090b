/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A small VMM for the examples: one VM, one memslot at GPA 0 backed by a
 * guest_memfd, one vCPU in 64-bit long mode running the guest program of
 * guest.c. Just enough KVM to show how a VMM uses gmemuf; errors end the
 * program with a message naming the call and errno (err(3)).
 */
#ifndef EXAMPLES_VMM_H
#define EXAMPLES_VMM_H

#include <stdbool.h>
#include <stdint.h>
#include <linux/kvm.h>

struct vmm {
	int kvm;
	int vm;
	int vcpu;
	int gmem;		/* the guest_memfd behind all guest memory */
	struct kvm_run *run;
	size_t run_size;
	uint64_t mem_size;
	/* An mmap of the guest_memfd, or NULL if the memory is private. */
	uint8_t *mem;
	/* Private memory only: the memslot's unused shared backing. */
	void *shared;
};

/*
 * Shared: a default VM whose guest_memfd is mapped into the VMM
 * (GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED).
 * Private: a KVM_X86_SW_PROTECTED_VM whose memory is private, set with
 * KVM_SET_MEMORY_ATTRIBUTES: never mapped into userspace, the case that
 * userfaultfd cannot handle.
 */
enum vmm_memory { VMM_SHARED, VMM_PRIVATE };

/* The vCPU state that is saved and restored: enough for the guest program. */
struct vmm_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
};

/* How vmm_create() makes the guest_memfd. */
#define VMM_USERFAULT		(1U << 0)	/* every page starts missing */
#define VMM_USERFAULT_EXIT	(1U << 1)	/* vCPU faults exit KVM_RUN */

/*
 * The exit status of a program whose kernel lacks what vmm_create() was
 * asked for: kselftest's "skip", as the test harness reads it.
 */
#define VMM_UNSUPPORTED		4

/* Why vmm_run() returned. */
enum vmm_exit_kind {
	VMM_EXIT_REPORT,	/* the guest reported: report, value */
	VMM_EXIT_MISSING,	/* KVM_RUN stopped on missing memory: gpa, size */
	VMM_EXIT_INTR,		/* a signal interrupted KVM_RUN */
};

struct vmm_exit {
	enum vmm_exit_kind kind;
	uint64_t report, value;
	uint64_t gpa, size;
};

void vmm_create(struct vmm *vm, enum vmm_memory memory, uint64_t mem_size,
		unsigned int flags);
void vmm_destroy(struct vmm *vm);
/* The gmemuf feature mask (GMEMUF_FEATURE_*) for this VM's type. */
uint64_t vmm_gmemuf_features(struct vmm *vm);

/* Shared memory: page tables and guest program, and the initial state. */
void vmm_load_guest(struct vmm *vm, uint64_t seed);
void vmm_get_state(struct vmm *vm, struct vmm_state *st);
void vmm_set_state(struct vmm *vm, const struct vmm_state *st);

/* One KVM_RUN, decoded. Anything else than the exits above is fatal. */
void vmm_run(struct vmm *vm, struct vmm_exit *exit);
/*
 * Finish the instruction the last exit stopped on (the guest's report), so
 * that the saved state resumes after it.
 */
void vmm_complete_exit(struct vmm *vm);

/* The checksum of the guest's data pages, read through the mapping. */
uint64_t vmm_data_checksum(struct vmm *vm);

/*
 * Shared memory: load the guest with a random seed and run its first
 * phase, up to its GUEST_FILLED report, then stop it so that its state
 * resumes after the report. Returns the checksum of what it wrote, checked
 * against the memory.
 */
uint64_t vmm_run_fill(struct vmm *vm);

/*
 * What the VMM does when KVM_RUN stopped on a missing page (the exit mode,
 * or a kernel whose vCPUs cannot wait): bring in the pages of
 * [@gpa, @gpa + @size) before the vCPU enters again.
 */
typedef void (*vmm_missing_fn)(void *arg, uint64_t gpa, uint64_t size);

/*
 * Run the guest's second phase until it is done; returns the checksum it
 * reported.
 */
uint64_t vmm_run_check(struct vmm *vm, vmm_missing_fn missing, void *arg);

const char *guest_report_name(uint64_t report);

#endif /* EXAMPLES_VMM_H */
