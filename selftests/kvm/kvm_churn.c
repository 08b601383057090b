// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvm_churn: the churn gmemuf_fuzz puts around its vCPUs, without gmemuf.
 *
 * A diagnostic, not a test (no check runs it): when a fuzzer vCPU dies in
 * a way no guest can cause (a triple fault on a page its page tables map),
 * this tells whether plain KVM does the same in the test VM (QEMU TCG,
 * nested SVM), with no userfault file anywhere.
 *
 * Each vCPU loops over the pages of a guest_memfd memslot: it reads one
 * page and reports a ucall, as the fuzzer's vCPUs do.  Beside them, churn
 * threads fork children that write their copy of memory and exit (so the
 * parent's anonymous memslot 0, the guest's code, stacks and page tables,
 * goes copy-on-write under the vCPUs), delete and re-add the guest_memfd
 * memslot, convert pages between private and shared
 * (KVM_X86_SW_PROTECTED_VM), punch holes, and zap with MADV_DONTNEED the
 * shared backing.  A KVM_EXIT_SHUTDOWN or an exit the loop does not expect
 * fails with the vCPU's state.
 *
 *   kvm_churn [--seconds N] [--vcpus V] [--pages N] [--private] [--no-fork]
 *             [--no-slot] [--no-convert] [--no-punch]
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/sizes.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#define DATA_GPA	((u64)SZ_4G)
#define DATA_SLOT	10
#define MAX_PAGES	64
#define DATA_SIZE	(MAX_PAGES * PAGE_SIZE)
#define MAX_VCPUS	8

static struct kvm_vm *vm;
static int gmem_fd;
static void *shared;
static bool private_vm;
/* The pages the vCPUs go over: fewer, the more faults they share. */
static u64 nr_pages = MAX_PAGES;
static atomic_bool stop;
static atomic_ulong nr_ucalls, nr_forks, nr_slots, nr_converts, nr_punches,
	nr_mmio, nr_memfaults;
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;

static void guest_main(u64 pages)
{
	u64 i = 0, sum = 0;

	for (;;) {
		sum += READ_ONCE(*(u64 *)(DATA_GPA + (i % pages) * PAGE_SIZE));
		GUEST_SYNC_ARGS(i, sum, 0, 0, 0);
		i++;
	}
}

static void slot_set(bool present)
{
	vm_set_user_memory_region2(vm, DATA_SLOT, KVM_MEM_GUEST_MEMFD,
				   DATA_GPA, present ? DATA_SIZE : 0, shared,
				   gmem_fd, 0);
}

static void convert(u64 page, bool to_private)
{
	struct kvm_memory_attributes attr = {
		.address = DATA_GPA + page * PAGE_SIZE,
		.size = PAGE_SIZE,
		.attributes = to_private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	TEST_ASSERT(!__vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &attr),
		    "KVM_SET_MEMORY_ATTRIBUTES: errno %d", errno);
	atomic_fetch_add(&nr_converts, 1);
}

static void dump(struct kvm_vcpu *vcpu)
{
	struct kvm_vcpu_events ev;
	struct kvm_sregs sr;
	struct kvm_regs r;

	vcpu_regs_get(vcpu, &r);
	vcpu_sregs_get(vcpu, &sr);
	vcpu_events_get(vcpu, &ev);
	fprintf(stderr,
		"kvm_churn: vCPU %u: rip 0x%llx rsp 0x%llx cr0 0x%llx cr2 0x%llx cr3 0x%llx; exception injected %u pending %u nr %u error 0x%x\n",
		vcpu->id, r.rip, r.rsp, sr.cr0, sr.cr2, sr.cr3,
		ev.exception.injected, ev.exception.pending, ev.exception.nr,
		ev.exception.error_code);
}

static void *vcpu_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct kvm_run *run = vcpu->run;
	struct ucall uc;
	int r;

	while (!atomic_load(&stop)) {
		r = __vcpu_run(vcpu);
		if (r && errno == EINTR)
			continue;
		if (r && errno == EFAULT &&
		    run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			/* Raced a conversion or a memslot change: as a VMM. */
			atomic_fetch_add(&nr_memfaults, 1);
			TEST_ASSERT(run->memory_fault.gpa >= DATA_GPA &&
				    run->memory_fault.gpa < DATA_GPA + DATA_SIZE,
				    "memory fault at gpa 0x%llx",
				    run->memory_fault.gpa);
			pthread_mutex_lock(&slot_lock);
			convert((run->memory_fault.gpa - DATA_GPA) / PAGE_SIZE,
				run->memory_fault.flags &
				KVM_MEMORY_EXIT_FLAG_PRIVATE);
			pthread_mutex_unlock(&slot_lock);
			continue;
		}
		if (r) {
			dump(vcpu);
			TEST_FAIL("KVM_RUN: errno %d, exit reason %u (%s)",
				  errno, run->exit_reason,
				  exit_reason_str(run->exit_reason));
		}
		if (run->exit_reason == KVM_EXIT_MMIO) {
			/* The data memslot is gone for now. */
			atomic_fetch_add(&nr_mmio, 1);
			memset(run->mmio.data, 0, sizeof(run->mmio.data));
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO) {
			dump(vcpu);
			TEST_FAIL("KVM_RUN: exit reason %u (%s) after %lu ucalls, %lu forks, %lu memslot changes, %lu conversions, %lu punches",
				  run->exit_reason,
				  exit_reason_str(run->exit_reason),
				  atomic_load(&nr_ucalls),
				  atomic_load(&nr_forks),
				  atomic_load(&nr_slots),
				  atomic_load(&nr_converts),
				  atomic_load(&nr_punches));
		}
		TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_SYNC,
			    "ucall %lu", (unsigned long)uc.cmd);
		atomic_fetch_add(&nr_ucalls, 1);
	}
	return NULL;
}

static void *fork_thread(void *arg)
{
	while (!atomic_load(&stop)) {
		pid_t pid = fork();

		TEST_ASSERT(pid >= 0, "fork");
		if (!pid) {
			/* Break COW on a few pages of slot 0, then go. */
			volatile char *p = addr_gpa2hva(vm, 0);

			p[0x1000] = 1;
			usleep(1000 * (getpid() % 10));
			_exit(0);
		}
		waitpid(pid, NULL, 0);
		atomic_fetch_add(&nr_forks, 1);
		usleep(1000 * (nr_forks % 20));
	}
	return NULL;
}

static void *slot_thread(void *arg)
{
	unsigned long n = 0;

	while (!atomic_load(&stop)) {
		pthread_mutex_lock(&slot_lock);
		slot_set(false);
		usleep(1000 * (n % 20));
		slot_set(true);
		pthread_mutex_unlock(&slot_lock);
		atomic_fetch_add(&nr_slots, 1);
		usleep(1000 * (n++ % 30));
	}
	return NULL;
}

static void *convert_thread(void *arg)
{
	unsigned long n = 0;

	while (!atomic_load(&stop)) {
		pthread_mutex_lock(&slot_lock);
		convert(n % nr_pages, n & 1);
		pthread_mutex_unlock(&slot_lock);
		n = n * 7 + 3;
		usleep(1000 * (n % 5));
	}
	return NULL;
}

static void *punch_thread(void *arg)
{
	unsigned long n = 0;

	while (!atomic_load(&stop)) {
		u64 page = (n * 13) % nr_pages;

		TEST_ASSERT(!fallocate(gmem_fd, FALLOC_FL_PUNCH_HOLE |
				       FALLOC_FL_KEEP_SIZE, page * PAGE_SIZE,
				       PAGE_SIZE), "punch: errno %d", errno);
		madvise(shared + page * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED);
		atomic_fetch_add(&nr_punches, 1);
		n++;
		usleep(1000 * (n % 7));
	}
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "vcpus", required_argument, NULL, 'v' },
		{ "private", no_argument, NULL, 'p' },
		{ "pages", required_argument, NULL, 'n' },
		{ "no-fork", no_argument, NULL, 'F' },
		{ "no-slot", no_argument, NULL, 'S' },
		{ "no-convert", no_argument, NULL, 'C' },
		{ "no-punch", no_argument, NULL, 'P' },
		{ }
	};
	bool do_fork = true, do_slot = true, do_convert = true, do_punch = true;
	struct vm_shape shape = { .mode = VM_MODE_DEFAULT };
	struct kvm_vcpu *vcpus[MAX_VCPUS];
	pthread_t thr[MAX_VCPUS + 4];
	int seconds = 60, nv = 2, nt = 0, c, i;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': seconds = atoi(optarg); break;
		case 'v': nv = atoi(optarg); break;
		case 'p': private_vm = true; break;
		case 'n': nr_pages = atoi(optarg); break;
		case 'F': do_fork = false; break;
		case 'S': do_slot = false; break;
		case 'C': do_convert = false; break;
		case 'P': do_punch = false; break;
		default: exit(KSFT_FAIL);
		}
	}
	TEST_ASSERT(nv >= 1 && nv <= MAX_VCPUS && seconds > 0 &&
		    nr_pages >= 1 && nr_pages <= MAX_PAGES, "bad arguments");
	if (private_vm) {
		TEST_REQUIRE(kvm_check_cap(KVM_CAP_VM_TYPES) &
			     BIT(KVM_X86_SW_PROTECTED_VM));
		shape.type = KVM_X86_SW_PROTECTED_VM;
	}
	do_convert &= private_vm;
	vm = __vm_create_with_vcpus(shape, nv, 0, guest_main, vcpus);
	gmem_fd = vm_create_guest_memfd(vm, DATA_SIZE, private_vm ? 0 :
					GUEST_MEMFD_FLAG_MMAP |
					GUEST_MEMFD_FLAG_INIT_SHARED);
	shared = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE,
		      private_vm ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED,
		      private_vm ? -1 : gmem_fd, 0);
	TEST_ASSERT(shared != MAP_FAILED, "mmap");
	slot_set(true);
	virt_map(vm, DATA_GPA, DATA_GPA, MAX_PAGES);
	if (private_vm)
		for (i = 0; i < MAX_PAGES; i++)
			convert(i, true);

	printf("kvm_churn: %s VM, %d vCPUs over %llu pages, %d s:%s%s%s%s\n",
	       private_vm ? "KVM_X86_SW_PROTECTED_VM" : "default", nv,
	       (unsigned long long)nr_pages, seconds,
	       do_fork ? " fork" : "", do_slot ? " memslot" : "",
	       do_convert ? " convert" : "", do_punch ? " punch" : "");
	fflush(stdout);
	for (i = 0; i < nv; i++) {
		vcpu_args_set(vcpus[i], 1, nr_pages);
		pthread_create(&thr[nt++], NULL, vcpu_thread, vcpus[i]);
	}
	if (do_fork)
		pthread_create(&thr[nt++], NULL, fork_thread, NULL);
	if (do_slot)
		pthread_create(&thr[nt++], NULL, slot_thread, NULL);
	if (do_convert)
		pthread_create(&thr[nt++], NULL, convert_thread, NULL);
	if (do_punch)
		pthread_create(&thr[nt++], NULL, punch_thread, NULL);
	sleep(seconds);
	atomic_store(&stop, true);
	/* A vCPU in KVM_RUN leaves at its next ucall. */
	for (i = 0; i < nt; i++)
		pthread_join(thr[i], NULL);
	printf("kvm_churn: ok: %lu ucalls, %lu forks, %lu memslot changes, %lu conversions, %lu punches, %lu MMIO exits, %lu memory faults\n",
	       atomic_load(&nr_ucalls), atomic_load(&nr_forks),
	       atomic_load(&nr_slots), atomic_load(&nr_converts),
	       atomic_load(&nr_punches), atomic_load(&nr_mmio),
	       atomic_load(&nr_memfaults));
	kvm_vm_free(vm);
	return 0;
}
