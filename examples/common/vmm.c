// SPDX-License-Identifier: GPL-2.0-only
/*
 * The examples' VMM: see vmm.h. Plain KVM ioctls, in the order a VMM
 * issues them; the only gmemuf calls are the probe, the creation of a
 * userfault guest_memfd and the decode of a missing page's exit, with
 * libgmemuf.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <libgmemuf.h>

#include "guest_abi.h"
#include "vmm.h"
#include "watchdog.h"

/* The guest program as a flat binary, from guest_blob.S. */
extern const uint8_t guest_bin_start[], guest_bin_end[];

#define X86_CR0_PE	(1UL << 0)
#define X86_CR0_MP	(1UL << 1)
#define X86_CR0_ET	(1UL << 4)
#define X86_CR0_NE	(1UL << 5)
#define X86_CR0_WP	(1UL << 16)
#define X86_CR0_PG	(1UL << 31)
#define X86_CR4_PAE	(1UL << 5)
#define EFER_LME	(1UL << 8)
#define EFER_LMA	(1UL << 10)
#define PTE_P		(1ULL << 0)
#define PTE_RW		(1ULL << 1)
#define PTE_PS		(1ULL << 7)

static void set_cpuid(struct vmm *vm)
{
	struct kvm_cpuid2 *cpuid;
	int nent = 64;

	/* Long mode needs CPUID.LM in the vCPU's CPUID: give it all KVM has. */
	for (;;) {
		cpuid = calloc(1, sizeof(*cpuid) +
			       nent * sizeof(struct kvm_cpuid_entry2));
		if (!cpuid)
			err(1, "calloc");
		cpuid->nent = nent;
		if (!ioctl(vm->kvm, KVM_GET_SUPPORTED_CPUID, cpuid))
			break;
		if (errno != E2BIG)
			err(1, "KVM_GET_SUPPORTED_CPUID");
		free(cpuid);
		nent *= 2;
	}
	if (ioctl(vm->vcpu, KVM_SET_CPUID2, cpuid))
		err(1, "KVM_SET_CPUID2");
	free(cpuid);
}

static int create_gmem(struct vmm *vm, uint64_t gmem_flags, unsigned int flags)
{
	struct kvm_create_guest_memfd gmem = {
		.size = vm->mem_size,
		.flags = gmem_flags,
	};
	uint64_t features;
	int fd;

	if (!(flags & VMM_USERFAULT)) {
		fd = ioctl(vm->vm, KVM_CREATE_GUEST_MEMFD, &gmem);
		if (fd < 0)
			err(1, "KVM_CREATE_GUEST_MEMFD(flags 0x%llx)",
			    (unsigned long long)gmem_flags);
		return fd;
	}

	if (gmemuf_probe(vm->vm, &features) != 1)
		errx(VMM_UNSUPPORTED,
		     "this kernel has no guest_memfd userfault for this VM type");
	if (flags & VMM_USERFAULT_EXIT) {
		if (!(features & GMEMUF_FEATURE_VCPU_EXIT))
			errx(VMM_UNSUPPORTED,
			     "this kernel has no userfault exit mode");
		gmem_flags |= GUEST_MEMFD_FLAG_USERFAULT_EXIT;
	}
	fd = gmemuf_create(vm->vm, vm->mem_size, gmem_flags);
	if (fd < 0)
		errx(1, "gmemuf_create(flags 0x%llx): %s",
		     (unsigned long long)gmem_flags, gmemuf_strerror(fd));
	return fd;
}

void vmm_create(struct vmm *vm, enum vmm_memory memory, uint64_t mem_size,
		unsigned int flags)
{
	struct kvm_userspace_memory_region2 slot = {
		.slot = 0,
		.flags = KVM_MEM_GUEST_MEMFD,
		.guest_phys_addr = 0,
		.memory_size = mem_size,
		.guest_memfd_offset = 0,
	};
	unsigned long type = memory == VMM_PRIVATE ? KVM_X86_SW_PROTECTED_VM :
			     KVM_X86_DEFAULT_VM;
	int size;

	memset(vm, 0, sizeof(*vm));
	vm->mem_size = mem_size;
	if (mem_size % GUEST_PAGE_SIZE || mem_size <= GUEST_DATA_GPA ||
	    mem_size > GUEST_MEM_MAX)
		errx(1, "guest memory must be a whole number of pages in (1 MiB, 1 GiB]");

	vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm < 0)
		err(1, "/dev/kvm");
	vm->vm = ioctl(vm->kvm, KVM_CREATE_VM, type);
	if (vm->vm < 0)
		err(1, "KVM_CREATE_VM(%s)", memory == VMM_PRIVATE ?
		    "KVM_X86_SW_PROTECTED_VM" : "KVM_X86_DEFAULT_VM");

	vm->gmem = create_gmem(vm, memory == VMM_SHARED ?
			       GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED : 0,
			       flags);

	if (memory == VMM_SHARED) {
		vm->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
			       MAP_SHARED, vm->gmem, 0);
		if (vm->mem == MAP_FAILED)
			err(1, "mmap(guest_memfd)");
		slot.userspace_addr = (uintptr_t)vm->mem;
	} else {
		/*
		 * A private memslot still needs a shared backing, for pages the
		 * guest would convert to shared; this guest never does.
		 */
		vm->shared = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				  -1, 0);
		if (vm->shared == MAP_FAILED)
			err(1, "mmap(shared backing)");
		slot.userspace_addr = (uintptr_t)vm->shared;
	}
	slot.guest_memfd = vm->gmem;
	if (ioctl(vm->vm, KVM_SET_USER_MEMORY_REGION2, &slot))
		err(1, "KVM_SET_USER_MEMORY_REGION2");

	if (memory == VMM_PRIVATE) {
		struct kvm_memory_attributes attr = {
			.address = 0,
			.size = mem_size,
			.attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE,
		};

		if (ioctl(vm->vm, KVM_SET_MEMORY_ATTRIBUTES, &attr))
			err(1, "KVM_SET_MEMORY_ATTRIBUTES(private)");
	}

	vm->vcpu = ioctl(vm->vm, KVM_CREATE_VCPU, 0);
	if (vm->vcpu < 0)
		err(1, "KVM_CREATE_VCPU");
	size = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size < 0)
		err(1, "KVM_GET_VCPU_MMAP_SIZE");
	vm->run_size = size;
	vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       vm->vcpu, 0);
	if (vm->run == MAP_FAILED)
		err(1, "mmap(vcpu)");
	set_cpuid(vm);
}

void vmm_destroy(struct vmm *vm)
{
	munmap(vm->run, vm->run_size);
	if (vm->mem)
		munmap(vm->mem, vm->mem_size);
	if (vm->shared)
		munmap(vm->shared, vm->mem_size);
	close(vm->vcpu);
	close(vm->gmem);
	close(vm->vm);
	close(vm->kvm);
}

uint64_t vmm_gmemuf_features(struct vmm *vm)
{
	uint64_t features = 0;

	if (gmemuf_probe(vm->vm, &features) < 0)
		return 0;
	return features;
}

void vmm_load_guest(struct vmm *vm, uint64_t seed)
{
	size_t code_size = guest_bin_end - guest_bin_start;
	uint64_t *pml4 = (uint64_t *)(vm->mem + GUEST_PML4_GPA);
	uint64_t *pdpt = (uint64_t *)(vm->mem + GUEST_PDPT_GPA);
	uint64_t *pd = (uint64_t *)(vm->mem + GUEST_PD_GPA);
	struct vmm_state st;
	uint64_t gpa;

	if (!vm->mem)
		errx(1, "vmm_load_guest: the guest is loaded through the mapping");
	if (code_size > GUEST_CODE_MAX)
		errx(1, "the guest program is too big");

	/* Identity map of the first GiB with 2 MiB pages. */
	pml4[0] = GUEST_PDPT_GPA | PTE_P | PTE_RW;
	pdpt[0] = GUEST_PD_GPA | PTE_P | PTE_RW;
	for (gpa = 0; gpa < vm->mem_size; gpa += 1ULL << 21)
		pd[gpa >> 21] = gpa | PTE_P | PTE_RW | PTE_PS;
	memcpy(vm->mem + GUEST_CODE_GPA, guest_bin_start, code_size);

	vmm_get_state(vm, &st);
	st.sregs.cr3 = GUEST_PML4_GPA;
	st.sregs.cr4 = X86_CR4_PAE;
	st.sregs.cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE |
		       X86_CR0_WP | X86_CR0_PG;
	st.sregs.efer = EFER_LME | EFER_LMA;
	/* No GDT: KVM takes the hidden parts of the segments as given. */
	st.sregs.cs = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = 0x8,
		.type = 11, .present = 1, .s = 1, .l = 1, .g = 1,
	};
	st.sregs.ds = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = 0x10,
		.type = 3, .present = 1, .s = 1, .db = 1, .g = 1,
	};
	st.sregs.es = st.sregs.fs = st.sregs.gs = st.sregs.ss = st.sregs.ds;
	st.sregs.tr = (struct kvm_segment){
		.base = 0, .limit = 0x67, .selector = 0x18,
		.type = 11, .present = 1,
	};
	memset(&st.regs, 0, sizeof(st.regs));
	st.regs.rflags = 2;
	st.regs.rip = GUEST_CODE_GPA;
	/* As if called: the ABI wants rsp + 8 aligned to 16 at entry. */
	st.regs.rsp = GUEST_STACK_TOP - 8;
	st.regs.rdi = vm->mem_size;
	st.regs.rsi = seed;
	vmm_set_state(vm, &st);
}

void vmm_get_state(struct vmm *vm, struct vmm_state *st)
{
	if (ioctl(vm->vcpu, KVM_GET_REGS, &st->regs))
		err(1, "KVM_GET_REGS");
	if (ioctl(vm->vcpu, KVM_GET_SREGS, &st->sregs))
		err(1, "KVM_GET_SREGS");
}

void vmm_set_state(struct vmm *vm, const struct vmm_state *st)
{
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &st->sregs))
		err(1, "KVM_SET_SREGS");
	if (ioctl(vm->vcpu, KVM_SET_REGS, &st->regs))
		err(1, "KVM_SET_REGS");
}

/*
 * The vCPU's state where it stopped, for a failure to be understood from
 * the log: a triple fault of this guest, which has no IDT, is any exception.
 * On AMD, KVM resets a vCPU that shut down (its VMCB is undefined then), so
 * this is the reset state there: the test VM's KVM trace (scripts/vm-init)
 * has the RIP of the exit instead.
 */
static void vmm_dump_vcpu(struct vmm *vm)
{
	struct kvm_vcpu_events ev;
	struct vmm_state st;

	vmm_get_state(vm, &st);
	fprintf(stderr,
		"vcpu: rip 0x%llx rsp 0x%llx rax 0x%llx rdi 0x%llx rflags 0x%llx\n"
		"vcpu: cr0 0x%llx cr2 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx\n",
		st.regs.rip, st.regs.rsp, st.regs.rax, st.regs.rdi,
		st.regs.rflags, st.sregs.cr0, st.sregs.cr2, st.sregs.cr3,
		st.sregs.cr4, st.sregs.efer);
	if (!ioctl(vm->vcpu, KVM_GET_VCPU_EVENTS, &ev))
		fprintf(stderr,
			"vcpu: exception injected %u pending %u nr %u error %u (has %u)\n",
			ev.exception.injected, ev.exception.pending,
			ev.exception.nr, ev.exception.error_code,
			ev.exception.has_error_code);
}

void vmm_run(struct vmm *vm, struct vmm_exit *exit)
{
	struct kvm_run *run = vm->run;
	struct gmemuf_memory_fault fault;
	struct kvm_regs regs;
	int ret;

	memset(exit, 0, sizeof(*exit));
	if (ioctl(vm->vcpu, KVM_RUN, 0)) {
		if (errno == EINTR) {
			exit->kind = VMM_EXIT_INTR;
			return;
		}
		if (errno != EFAULT)
			err(1, "KVM_RUN");
		/*
		 * A vCPU touching a missing page in the exit mode: KVM_RUN
		 * fails with EFAULT and a memory fault flagged as a userfault.
		 * Any other memory fault (a private/shared mismatch, say) is
		 * not ours to fix: entering again would exit again, forever.
		 */
		ret = gmemuf_decode_memory_fault(run, &fault);
		if (ret == 0)
			errx(1, "KVM_RUN: memory fault at 0x%llx (flags 0x%llx) that is not a missing page",
			     (unsigned long long)fault.gpa,
			     (unsigned long long)fault.flags);
		if (ret < 0)
			errx(1, "KVM_RUN: EFAULT, exit reason %u",
			     run->exit_reason);
		exit->kind = VMM_EXIT_MISSING;
		exit->gpa = fault.gpa;
		exit->size = fault.size;
		return;
	}

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		if (run->io.port != GUEST_PORT ||
		    run->io.direction != KVM_EXIT_IO_OUT)
			errx(1, "guest: unexpected port I/O on 0x%x",
			     run->io.port);
		if (ioctl(vm->vcpu, KVM_GET_REGS, &regs))
			err(1, "KVM_GET_REGS");
		exit->kind = VMM_EXIT_REPORT;
		exit->report = regs.rax;
		exit->value = regs.rdi;
		return;
	case KVM_EXIT_SHUTDOWN:
		vmm_dump_vcpu(vm);
		errx(1, "guest: shutdown (a triple fault)");
	case KVM_EXIT_FAIL_ENTRY:
		errx(1, "KVM_RUN: entry failed, reason 0x%llx",
		     (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
	case KVM_EXIT_INTERNAL_ERROR:
		errx(1, "KVM_RUN: internal error, suberror %u",
		     run->internal.suberror);
	default:
		errx(1, "KVM_RUN: unexpected exit reason %u", run->exit_reason);
	}
}

void vmm_complete_exit(struct vmm *vm)
{
	/*
	 * KVM finishes an OUT when KVM_RUN is entered again; with
	 * immediate_exit it does so and returns EINTR without running the
	 * guest. Only then do the registers hold the state after the OUT.
	 */
	vm->run->immediate_exit = 1;
	if (!ioctl(vm->vcpu, KVM_RUN, 0) || errno != EINTR)
		err(1, "KVM_RUN(immediate_exit)");
	vm->run->immediate_exit = 0;
}

uint64_t vmm_data_checksum(struct vmm *vm)
{
	uint64_t sum = 0, gpa;

	for (gpa = GUEST_DATA_GPA; gpa < vm->mem_size; gpa += GUEST_PAGE_SIZE)
		sum += guest_page_sum((uint64_t *)(vm->mem + gpa), gpa);
	return sum;
}

uint64_t vmm_run_fill(struct vmm *vm)
{
	struct vmm_exit exit;
	uint64_t seed, sum;

	/* A new pattern each run: stale memory cannot pass for fresh. */
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		err(1, "getrandom");
	vmm_load_guest(vm, seed);
	vmm_run(vm, &exit);
	if (exit.kind != VMM_EXIT_REPORT || exit.report != GUEST_FILLED)
		errx(1, "guest: expected the 'filled' report, got %s",
		     exit.kind == VMM_EXIT_REPORT ?
		     guest_report_name(exit.report) : "another exit");
	sum = vmm_data_checksum(vm);
	if (sum != exit.value)
		errx(1, "guest reported checksum 0x%016llx, its memory has 0x%016llx",
		     (unsigned long long)exit.value, (unsigned long long)sum);
	vmm_complete_exit(vm);
	return sum;
}

uint64_t vmm_run_check(struct vmm *vm, vmm_missing_fn missing, void *arg)
{
	struct vmm_exit exit;
	uint64_t sum = 0;

	for (;;) {
		vmm_run(vm, &exit);
		switch (exit.kind) {
		case VMM_EXIT_INTR:
			continue;
		case VMM_EXIT_MISSING:
			missing(arg, exit.gpa, exit.size);
			continue;
		case VMM_EXIT_REPORT:
			break;
		}
		/* What tells the watchdog that a guest is slow, not stuck. */
		watchdog_progress();
		switch (exit.report) {
		case GUEST_PROGRESS:
			continue;
		case GUEST_CHECKED:
			sum = exit.value;
			break;
		case GUEST_DONE:
			return sum;
		default:
			errx(1, "guest: unexpected report %s (0x%llx)",
			     guest_report_name(exit.report),
			     (unsigned long long)exit.value);
		}
	}
}

const char *guest_report_name(uint64_t report)
{
	switch (report) {
	case GUEST_FILLED:
		return "filled";
	case GUEST_CHECKED:
		return "checked";
	case GUEST_DONE:
		return "done";
	case GUEST_FAILED:
		return "failed";
	case GUEST_PROGRESS:
		return "progress";
	}
	return "unknown";
}
