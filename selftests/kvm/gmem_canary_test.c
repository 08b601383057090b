// SPDX-License-Identifier: GPL-2.0-only
/*
 * gmem_canary_test: does plain KVM + guest_memfd work on this machine?
 *
 * The gmemuf selftests run in a nested setup (a debug kernel in QEMU TCG,
 * KVM on emulated SVM with nested paging).  Before blaming gmemuf for a
 * failure there, this canary shows that KVM and guest_memfd themselves work
 * there, with real vCPUs and without any gmemuf feature:
 *
 *  default_vm_shared_mmap: a default VM with a memslot backed by a
 *    GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED guest_memfd.  The
 *    host fills data pages through an mmap of the guest_memfd; the guest
 *    checks them, writes its own pattern and reports a checksum; the host
 *    checks the guest's writes through its mmap, rewrites the pages with the
 *    vCPU stopped, and the guest sees the new data.  All of the guest's code
 *    runs from the same guest_memfd: the executable segment is copied into
 *    it and the guest page tables are pointed at the copy.  The host patches
 *    an immediate in the copy only, so the guest returning the patched value
 *    proves that its instructions were fetched from guest_memfd.
 *
 *  sw_protected_vm_private: a KVM_X86_SW_PROTECTED_VM whose data memslot is
 *    a guest_memfd set private with KVM_SET_MEMORY_ATTRIBUTES.  The vCPU
 *    faults the private pages in (they must read as zeroes, not the poison
 *    in the slot's shared backing), writes a pattern, reads it back and
 *    reports a checksum that the host compares with its own.  The shared
 *    backing must still hold the poison.  Then the host punches a hole in
 *    the guest_memfd and the guest must see zeroes there and its data
 *    everywhere else.
 */
#include <elf.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/mman.h>

#include <linux/compiler.h>
#include <linux/sizes.h>
#include <linux/stringify.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"
#include "kselftest_harness.h"
#include "gmemuf_pattern.h"

/* Far above slot 0 (code, page tables, stacks) and the PCI hole. */
#define CANARY_GPA		((u64)SZ_4G)
#define CANARY_SLOT		10

#define SHARED_DATA_PAGES	8
#define SHARED_DATA_SIZE	(SHARED_DATA_PAGES * PAGE_SIZE)

#define PRIVATE_PAGES		16
#define PRIVATE_SIZE		(PRIVATE_PAGES * PAGE_SIZE)
/* The pages the host punches out of the private range (inside it). */
#define PUNCH_FIRST_PAGE	5
#define PUNCH_PAGES		3
#define PUNCH_START		(PUNCH_FIRST_PAGE * PAGE_SIZE)
#define PUNCH_END		((PUNCH_FIRST_PAGE + PUNCH_PAGES) * PAGE_SIZE)

#define SEED_HOST		0x686f737431ull		/* "host1" */
#define SEED_GUEST		0x6775657374ull		/* "guest" */
#define SEED_HOST2		0x686f737432ull		/* "host2" */
#define SEED_PRIVATE		0x7072697661ull		/* "priva" */
#define CSUM_INIT		0xcb5e1ec7a9a5b00bull
#define SHARED_POISON		0xa5

/* What the marker returns from the original text, and from the gmem copy. */
#define MARKER_ORIG_IMM		0x0123456789abcdef	/* also used in asm */
#define MARKER_ORIG		((u64)MARKER_ORIG_IMM)
#define MARKER_GMEM		((u64)0x676d656d63616e79)	/* "gmemcany" */

/* Every test gets this long: the target runs KVM nested under TCG. */
#define CANARY_TIMEOUT		120

enum {
	STAGE_TEXT_MARKER = 1,
	STAGE_GUEST_WROTE,
	STAGE_HOST_REWROTE,
	STAGE_PRIVATE_WROTE,
	STAGE_PRIVATE_PUNCHED,
};

/*
 * "movabs $MARKER_ORIG, %rax; ret".  The host rewrites the 8-byte immediate
 * (after the 48 b8 opcode) in the guest_memfd copy of the text only.
 */
u64 gmem_canary_text_marker(void);
asm(".pushsection .text\n"
	".globl gmem_canary_text_marker\n"
	".type gmem_canary_text_marker, @function\n"
	"gmem_canary_text_marker:\n"
	"	movabsq $" __stringify(MARKER_ORIG_IMM) ", %rax\n"
	"	ret\n"
	".size gmem_canary_text_marker, . - gmem_canary_text_marker\n"
	".popsection\n");
#define MARKER_IMM_OFFSET	2

/* Checksum of pattern_word(@seed, ...) over @size bytes, 0 in the zero range. */
static u64 expected_csum(u64 seed, u64 size, u64 zero_start, u64 zero_end)
{
	u64 csum = CSUM_INIT, off;

	for (off = 0; off < size; off += sizeof(u64)) {
		bool zero = off >= zero_start && off < zero_end;

		csum = pattern_csum(csum, zero ? 0 : pattern_word(seed, off));
	}
	return csum;
}

static void guest_code_shared(u64 *data, u64 size)
{
	u64 nr_words = size / sizeof(u64);
	u64 csum, i, val;

	/* Only the copy of this code in guest_memfd returns MARKER_GMEM. */
	GUEST_SYNC2(STAGE_TEXT_MARKER, gmem_canary_text_marker());

	/* The host wrote these through its mmap of the guest_memfd. */
	for (i = 0; i < nr_words; i++) {
		val = READ_ONCE(data[i]);
		__GUEST_ASSERT(val == pattern_word(SEED_HOST, i * 8),
			       "Guest read 0x%lx at offset 0x%lx, wanted the host's 0x%lx",
			       val, i * 8, pattern_word(SEED_HOST, i * 8));
	}

	for (i = 0; i < nr_words; i++)
		WRITE_ONCE(data[i], pattern_word(SEED_GUEST, i * 8));

	csum = CSUM_INIT;
	for (i = 0; i < nr_words; i++)
		csum = pattern_csum(csum, READ_ONCE(data[i]));
	GUEST_SYNC2(STAGE_GUEST_WROTE, csum);

	/* The host rewrote everything while this vCPU was stopped. */
	csum = CSUM_INIT;
	for (i = 0; i < nr_words; i++) {
		val = READ_ONCE(data[i]);
		__GUEST_ASSERT(val == pattern_word(SEED_HOST2, i * 8),
			       "Guest read 0x%lx at offset 0x%lx after the host's rewrite, wanted 0x%lx",
			       val, i * 8, pattern_word(SEED_HOST2, i * 8));
		csum = pattern_csum(csum, val);
	}
	GUEST_SYNC2(STAGE_HOST_REWROTE, csum);

	GUEST_DONE();
}

static void guest_code_private(u64 *data, u64 size)
{
	u64 nr_words = size / sizeof(u64);
	u64 csum, i, off, val, want;

	/*
	 * First touch: the vCPU faults the private pages in from guest_memfd,
	 * which hands out zeroed pages.  The slot's shared (userspace_addr)
	 * backing holds SHARED_POISON, so seeing it means the access was not
	 * private.
	 */
	for (i = 0; i < nr_words; i++) {
		val = READ_ONCE(data[i]);
		__GUEST_ASSERT(!val,
			       "Fresh private memory at offset 0x%lx reads 0x%lx, wanted 0",
			       i * 8, val);
	}

	for (i = 0; i < nr_words; i++)
		WRITE_ONCE(data[i], pattern_word(SEED_PRIVATE, i * 8));

	csum = CSUM_INIT;
	for (i = 0; i < nr_words; i++)
		csum = pattern_csum(csum, READ_ONCE(data[i]));
	GUEST_SYNC2(STAGE_PRIVATE_WROTE, csum);

	/* The host punched [PUNCH_START, PUNCH_END) out of the guest_memfd. */
	csum = CSUM_INIT;
	for (i = 0; i < nr_words; i++) {
		off = i * 8;
		want = off >= PUNCH_START && off < PUNCH_END ?
		       0 : pattern_word(SEED_PRIVATE, off);
		val = READ_ONCE(data[i]);
		__GUEST_ASSERT(val == want,
			       "After PUNCH_HOLE, offset 0x%lx reads 0x%lx, wanted 0x%lx",
			       off, val, want);
		csum = pattern_csum(csum, val);
	}
	GUEST_SYNC2(STAGE_PRIVATE_PUNCHED, csum);

	GUEST_DONE();
}

/* Run the vCPU to its next ucall; guest assertions fail the test here. */
static u64 run_to_ucall(struct kvm_vcpu *vcpu, struct ucall *uc)
{
	struct kvm_run *run = vcpu->run;
	int r;

	r = _vcpu_run(vcpu);
	TEST_ASSERT(!r,
		    "KVM_RUN failed: errno %d, exit reason %u (%s), memory_fault gpa 0x%llx size 0x%llx flags 0x%llx",
		    errno, run->exit_reason, exit_reason_str(run->exit_reason),
		    run->memory_fault.gpa, run->memory_fault.size,
		    run->memory_fault.flags);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);

	if (get_ucall(vcpu, uc) == UCALL_ABORT)
		REPORT_GUEST_ASSERT(*uc);
	return uc->cmd;
}

/* Run to GUEST_SYNC2(@stage, value) and return the value. */
static u64 run_to_sync(struct kvm_vcpu *vcpu, u64 stage)
{
	struct ucall uc;
	u64 cmd;

	cmd = run_to_ucall(vcpu, &uc);
	TEST_ASSERT(cmd == UCALL_SYNC,
		    "Wanted UCALL_SYNC for stage %lu, got ucall %lu", stage, cmd);
	TEST_ASSERT(uc.args[0] == stage,
		    "Wanted guest stage %lu, got %lu", stage, uc.args[0]);
	return uc.args[1];
}

static void run_to_done(struct kvm_vcpu *vcpu)
{
	struct ucall uc;
	u64 cmd;

	cmd = run_to_ucall(vcpu, &uc);
	TEST_ASSERT(cmd == UCALL_DONE, "Wanted UCALL_DONE, got ucall %lu", cmd);
}

static void host_fill(u64 *mem, u64 size, u64 seed)
{
	u64 i;

	for (i = 0; i < size / sizeof(u64); i++)
		WRITE_ONCE(mem[i], pattern_word(seed, i * 8));
}

/* Check that @mem holds @seed's pattern and return its checksum. */
static u64 host_check(const u64 *mem, u64 size, u64 seed)
{
	u64 csum = CSUM_INIT, i, val;

	for (i = 0; i < size / sizeof(u64); i++) {
		val = READ_ONCE(mem[i]);
		TEST_ASSERT(val == pattern_word(seed, i * 8),
			    "Host read 0x%lx at guest_memfd offset 0x%lx, wanted 0x%lx",
			    val, i * 8, pattern_word(seed, i * 8));
		csum = pattern_csum(csum, val);
	}
	return csum;
}

/*
 * Find the executable PT_LOAD segment that holds the guest code, as a range
 * of whole pages.  The test is a static, non-PIE binary (the library loads
 * it into the guest at its link addresses), so p_vaddr is the address the
 * guest sees too.
 */
static void find_text_pages(gva_t *start, u64 *size)
{
	const Elf64_Phdr *phdr = (const Elf64_Phdr *)getauxval(AT_PHDR);
	unsigned long phnum = getauxval(AT_PHNUM);
	gva_t marker = (gva_t)gmem_canary_text_marker;
	gva_t code = (gva_t)guest_code_shared;
	gva_t s = 0, e = 0, ws, we;
	unsigned long i;

	TEST_ASSERT(phdr && phnum, "No AT_PHDR/AT_PHNUM in the aux vector");

	for (i = 0; i < phnum; i++) {
		if (phdr[i].p_type != PT_LOAD || !(phdr[i].p_flags & PF_X))
			continue;
		if (marker < phdr[i].p_vaddr ||
		    marker >= phdr[i].p_vaddr + phdr[i].p_memsz)
			continue;
		s = align_down(phdr[i].p_vaddr, PAGE_SIZE);
		e = align_up(phdr[i].p_vaddr + phdr[i].p_memsz, PAGE_SIZE);
	}
	TEST_ASSERT(e, "No executable PT_LOAD segment holds 0x%lx", marker);
	TEST_ASSERT(code >= s && code < e,
		    "guest code 0x%lx is outside the text segment [0x%lx, 0x%lx)",
		    code, s, e);

	/* Globals the host syncs into slot 0 must not move with the text. */
	for (i = 0; i < phnum; i++) {
		if (phdr[i].p_type != PT_LOAD || !(phdr[i].p_flags & PF_W))
			continue;
		ws = align_down(phdr[i].p_vaddr, PAGE_SIZE);
		we = align_up(phdr[i].p_vaddr + phdr[i].p_memsz, PAGE_SIZE);
		TEST_ASSERT(we <= s || ws >= e,
			    "Writable segment [0x%lx, 0x%lx) shares pages with the text [0x%lx, 0x%lx)",
			    ws, we, s, e);
	}

	*start = s;
	*size = e - s;
}

/*
 * Copy the guest's text pages (as loaded into slot 0) to @copy, which is
 * guest_memfd memory at @copy_gpa, patch the marker's immediate in the copy,
 * and point the guest's PTEs for the text at the copy.
 */
static void move_text_to_gmem(struct kvm_vm *vm, gva_t text, u64 size,
			      u8 *copy, gpa_t copy_gpa)
{
	u64 imm = MARKER_ORIG, off;
	u8 *p;
	u64 *pte;

	for (off = 0; off < size; off += PAGE_SIZE)
		memcpy(copy + off, addr_gva2hva(vm, text + off), PAGE_SIZE);

	p = copy + ((gva_t)gmem_canary_text_marker - text);
	TEST_ASSERT(p[0] == 0x48 && p[1] == 0xb8 &&
		    !memcmp(p + MARKER_IMM_OFFSET, &imm, sizeof(imm)),
		    "Unexpected encoding of gmem_canary_text_marker: %02x %02x ...",
		    p[0], p[1]);
	imm = MARKER_GMEM;
	memcpy(p + MARKER_IMM_OFFSET, &imm, sizeof(imm));

	for (off = 0; off < size; off += PAGE_SIZE) {
		pte = vm_get_pte(vm, text + off);
		TEST_ASSERT(is_present_pte(&vm->mmu, pte),
			    "Text page 0x%lx is not mapped in the guest",
			    text + off);
		*pte = (*pte & ~PHYSICAL_PAGE_MASK) |
		       ((copy_gpa + off) & PHYSICAL_PAGE_MASK);
	}
}

FIXTURE(gmem_canary) {
	struct kvm_vm *vm;
};

FIXTURE_SETUP(gmem_canary)
{
	self->vm = NULL;
}

FIXTURE_TEARDOWN(gmem_canary)
{
	if (self->vm)
		kvm_vm_free(self->vm);
}

TEST_F_TIMEOUT(gmem_canary, default_vm_shared_mmap, CANARY_TIMEOUT)
{
	const u64 want = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	u64 flags, text_size, gmem_size, csum, marker;
	gva_t text;
	u8 *gmem;
	int fd;

	vm = vm_create_with_one_vcpu(&vcpu, guest_code_shared);
	self->vm = vm;

	flags = vm_check_cap(vm, KVM_CAP_GUEST_MEMFD_FLAGS);
	if ((flags & want) != want)
		SKIP(return,
		     "guest_memfd flags 0x%lx lack MMAP | INIT_SHARED", flags);

	TEST_ASSERT_EQ(gmem_canary_text_marker(), MARKER_ORIG);
	find_text_pages(&text, &text_size);

	/* [0, SHARED_DATA_SIZE): data.  Then a copy of the text. */
	gmem_size = SHARED_DATA_SIZE + text_size;
	fd = vm_create_guest_memfd(vm, gmem_size, want);
	gmem = kvm_mmap(gmem_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd);

	host_fill((u64 *)gmem, SHARED_DATA_SIZE, SEED_HOST);
	move_text_to_gmem(vm, text, text_size, gmem + SHARED_DATA_SIZE,
			  CANARY_GPA + SHARED_DATA_SIZE);

	/* userspace_addr is the guest_memfd mapping, as a VMM would do. */
	vm_set_user_memory_region2(vm, CANARY_SLOT, KVM_MEM_GUEST_MEMFD,
				   CANARY_GPA, gmem_size, gmem, fd, 0);
	virt_map(vm, CANARY_GPA, CANARY_GPA, SHARED_DATA_PAGES);
	vcpu_args_set(vcpu, 2, CANARY_GPA, SHARED_DATA_SIZE);

	marker = run_to_sync(vcpu, STAGE_TEXT_MARKER);
	TEST_ASSERT(marker == MARKER_GMEM,
		    "Guest code returned marker 0x%lx, wanted 0x%lx: it did not run from guest_memfd",
		    marker, MARKER_GMEM);

	csum = run_to_sync(vcpu, STAGE_GUEST_WROTE);
	TEST_ASSERT_EQ(host_check((u64 *)gmem, SHARED_DATA_SIZE, SEED_GUEST),
		       csum);
	TEST_ASSERT_EQ(csum, expected_csum(SEED_GUEST, SHARED_DATA_SIZE, 0, 0));

	/* Rewrite the pages that the guest has mapped now, vCPU stopped. */
	host_fill((u64 *)gmem, SHARED_DATA_SIZE, SEED_HOST2);
	csum = run_to_sync(vcpu, STAGE_HOST_REWROTE);
	TEST_ASSERT_EQ(csum, expected_csum(SEED_HOST2, SHARED_DATA_SIZE, 0, 0));

	run_to_done(vcpu);

	kvm_vm_free(vm);
	self->vm = NULL;

	/* The guest_memfd outlives the VM, and so does its data. */
	host_check((u64 *)gmem, SHARED_DATA_SIZE, SEED_HOST2);
	kvm_munmap(gmem, gmem_size);
	close(fd);
}

TEST_F_TIMEOUT(gmem_canary, sw_protected_vm_private, CANARY_TIMEOUT)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	u64 csum, want;
	u8 *shared;
	int fd, i;

	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM is not supported");

	vm = vm_create_shape_with_one_vcpu(shape, &vcpu, guest_code_private);
	self->vm = vm;

	TEST_ASSERT(vm_check_cap(vm, KVM_CAP_MEMORY_ATTRIBUTES) &
		    KVM_MEMORY_ATTRIBUTE_PRIVATE,
		    "SW_PROTECTED VM without KVM_MEMORY_ATTRIBUTE_PRIVATE");

	fd = vm_create_guest_memfd(vm, PRIVATE_SIZE, 0);
	vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS, CANARY_GPA, CANARY_SLOT,
		   PRIVATE_PAGES, KVM_MEM_GUEST_MEMFD, fd, 0);
	virt_map(vm, CANARY_GPA, CANARY_GPA, PRIVATE_PAGES);

	/* The shared backing; private accesses must never see or change it. */
	shared = addr_gpa2hva(vm, CANARY_GPA);
	memset(shared, SHARED_POISON, PRIVATE_SIZE);

	vm_mem_set_private(vm, CANARY_GPA, PRIVATE_SIZE);
	vcpu_args_set(vcpu, 2, CANARY_GPA, PRIVATE_SIZE);

	csum = run_to_sync(vcpu, STAGE_PRIVATE_WROTE);
	want = expected_csum(SEED_PRIVATE, PRIVATE_SIZE, 0, 0);
	TEST_ASSERT(csum == want,
		    "Guest checksum of private memory 0x%lx, wanted 0x%lx",
		    csum, want);
	for (i = 0; i < PRIVATE_SIZE; i++)
		TEST_ASSERT(shared[i] == SHARED_POISON,
			    "Shared backing at offset 0x%x changed to 0x%x by private writes",
			    i, shared[i]);

	vm_guest_mem_fallocate(vm, CANARY_GPA + PUNCH_START,
			       PUNCH_END - PUNCH_START, true);

	csum = run_to_sync(vcpu, STAGE_PRIVATE_PUNCHED);
	want = expected_csum(SEED_PRIVATE, PRIVATE_SIZE, PUNCH_START,
			     PUNCH_END);
	TEST_ASSERT(csum == want,
		    "Guest checksum after PUNCH_HOLE 0x%lx, wanted 0x%lx",
		    csum, want);

	run_to_done(vcpu);

	kvm_vm_free(vm);
	self->vm = NULL;
	close(fd);
}

int main(int argc, char *argv[])
{
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_GUEST_MEMFD));

	return test_harness_run(argc, argv);
}
