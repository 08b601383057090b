# SPDX-License-Identifier: GPL-2.0-only
#
# gmemuf: one entry point. `make help` lists the targets.
#
# The kernel source comes from KERNEL_SRC (a tree) or KERNEL_TARBALL, or else
# is fetched from Debian (scripts/kernel.sh). Kernel trees, objects and ccache
# live in GMEMUF_CACHE (default ~/.cache/gmemuf); what is built for userspace
# and the logs of the test VM live in O (default ./build).

O ?= build
GMEMUF_CACHE ?= $(HOME)/.cache/gmemuf
# T=<substring> runs only the tests whose name contains it.
T ?=
# Seconds for a whole VM run, and a factor for every test's own timeout.
VM_TIMEOUT ?= 2400
TIMEOUT_SCALE ?= 1
# make stress: runs of each test of its list, and host busy loops beside QEMU.
RUNS ?= 20
SPINNERS ?= $(shell nproc)

export KERNEL_SRC KERNEL_TARBALL GMEMUF_CACHE

KSH := scripts/kernel.sh
VMTEST := python3 scripts/vmtest.py
RUN_LIST := selftests/run.list
STRESS_LIST := selftests/stress.list

# The tree's own KVM selftests that run in every check, and ours, which the
# overlay puts in tools/testing/selftests/kvm/gmemuf/.
UPSTREAM_KVM_TESTS := guest_memfd_test
OUR_KVM_TESTS := $(patsubst selftests/kvm/%.c,gmemuf/%,$(wildcard selftests/kvm/*_test.c)) \
	gmemuf/gmemuf_fuzz
# The benchmark's programs (make bench): built with the tests, run by no check.
BENCH_KVM_PROGS := demand_paging_test gmemuf/gmemuf_bench
# Diagnostics, in /tests for make shell and run lists of one's own: kvm_churn
# is the fuzzer's churn around vCPUs without gmemuf (README, the fuzzer).
DIAG_KVM_PROGS := gmemuf/kvm_churn
# make bench: QEMU's -icount for the headline column, plain TCG for the
# second; BENCH_ARGS go to gmemuf_bench (scripts/vm-bench), and the table
# goes into BENCH_README.
BENCH_ICOUNT ?= shift=3,sleep=off
BENCH_ARGS ?=
# icount,tcg; icount alone for a quicker run.
BENCH_CONFIGS ?= icount,tcg
# make bench-profile: the modes profiled, one run each, and the sizes.
BENCH_PROFILE ?= wait_shared_pwrite,host_gmemuf,uffd_missing,uffd_minor
BENCH_PROFILE_ARGS ?= -m 16 -n 1 -r 1 -t 1 -M 16
BENCH_TIMEOUT ?= 1500
BENCH_README ?= README.md
# Debian's, for which python3-matplotlib is installed (scripts/deps.sh).
BENCH_PYTHON ?= /usr/bin/python3

# make fuzz: how long the fuzzer runs in the VM, with which seed (a random
# one, printed, if empty), and any other arguments (--procs 4 --threads 6).
FUZZ_SECONDS ?= 300
FUZZ_SEED ?=
FUZZ_ARGS ?=
# make soak: how long, with which seed (random if empty), how many MiB the
# restore has (400: 102,400 pages).
SOAK_SECONDS ?= 1800
SOAK_SEED ?=
SOAK_MIB ?= 400

.PHONY: all help deps kernel kernel-release headers lib man install tests \
	initramfs check check-host check-harness check-vm demo stress \
	stress-initramfs bench bench-profile fuzz soak shell patches checkpatch patches-absorb \
	patches-bisect clean distclean \
	qemu qemu-guest qemu-initramfs qemu-demo

# libgmemuf/Makefile builds the library, its tests and its installation.
LIBMK = $(MAKE) --no-print-directory -f libgmemuf/Makefile O=$(O)

all: tests

help:
	@echo 'make deps            install the Debian packages needed (idempotent)'
	@echo 'make kernel          build the debug (test) kernel'
	@echo 'make kernel-release  build the release (benchmark) kernel'
	@echo 'make lib             build libgmemuf (shared, static, pkg-config)'
	@echo 'make man             libgmemuf's man pages (man3), from its header'
	@echo 'make install         install libgmemuf (PREFIX=/usr/local, DESTDIR)'
	@echo 'make tests           build every test as a static binary'
	@echo 'make check           host-side tests, then every test in the VM'
	@echo '                     (T=name runs only matching tests)'
	@echo 'make demo            boot the VM and run the post-copy demo'
	@echo 'make stress          the examples RUNS times (20) in the VM, beside'
	@echo '                     SPINNERS host busy loops (one per CPU)'
	@echo 'make bench           the benchmark, on the release kernel, one boot'
	@echo 'make bench-profile   perf profiles of some of its modes, in the VM'
	@echo '                     under -icount and one under plain TCG'
	@echo 'make fuzz            boot the VM and run the UAPI fuzzer'
	@echo '                     (FUZZ_SECONDS=300 FUZZ_SEED=n FUZZ_ARGS=...)'
	@echo 'make soak            a restore with handlers killed at random, over and'
	@echo '                     over, beside the fuzzer (SOAK_SECONDS=1800)'
	@echo 'make shell           boot the VM with a shell, tests in /tests'
	@echo 'make patches         write the kernel series to $(O)/patches'
	@echo 'make checkpatch      run checkpatch.pl --strict on the series'
	@echo 'make patches-absorb  fold changes of kernel/*.c etc. into the series'
	@echo 'make patches-bisect  compile KVM after each commit of the series'
	@echo 'make qemu            build QEMU with qemu/patches (static, cached)'
	@echo 'make qemu-demo       migrate a guest with guest_memfd RAM between'
	@echo '                     two QEMUs in the test VM'

$(O):
	@mkdir -p $(O)/tests $(O)/logs

deps:
	@scripts/deps.sh

# The scripts decide what is stale; make only orders them.
kernel: deps | $(O)
	@$(KSH) build debug >$(O)/bzImage-debug.path
	@echo "  KERNEL  $$(cat $(O)/bzImage-debug.path)"

kernel-release: deps | $(O)
	@$(KSH) build release >$(O)/bzImage-release.path
	@echo "  KERNEL  $$(cat $(O)/bzImage-release.path)"

headers: deps | $(O)
	@$(KSH) headers >$(O)/headers.path
	@$(KSH) tree >$(O)/tree.path

# Needs only a compiler and liburing-dev: no deps, so that installing the
# library does not install the kernel's build tools and QEMU.
lib: | $(O)
	@$(LIBMK) lib

# The man pages are written by the kernel tree's kernel-doc: KERNELDOC, or
# that of the pristine tree (unpacked, or fetched, but not built).
man: | $(O)
	@$(LIBMK) man KERNELDOC=$${KERNELDOC:-$$($(KSH) pristine | cut -d' ' -f2)/scripts/kernel-doc}

install: lib man
	@$(LIBMK) install KERNELDOC=$${KERNELDOC:-$$($(KSH) pristine | cut -d' ' -f2)/scripts/kernel-doc}

tests: headers
	@$(KSH) kvm-selftests $(O)/tests $(UPSTREAM_KVM_TESTS) $(OUR_KVM_TESTS) \
		$(BENCH_KVM_PROGS) $(DIAG_KVM_PROGS)
	@$(MAKE) --no-print-directory -f selftests/Makefile O=$(O) \
		HDR=$$(cat $(O)/headers.path) TREE=$$(cat $(O)/tree.path)
	@$(LIBMK) tests HDR=$$(cat $(O)/headers.path) TREE=$$(cat $(O)/tree.path)
	@$(MAKE) --no-print-directory -f examples/Makefile O=$(O) \
		HDR=$$(cat $(O)/headers.path)

# The examples' programs that the run list does not name: its entries
# start them. /tests/demo is what gmemuf.mode=demo runs.
EXAMPLE_BINS := postcopy-src postcopy-dst snapshot-vm snapshot-handler demo
BENCH_BINS := $(O)/tests/demand_paging_test $(O)/tests/gmemuf_bench \
	scripts/vm-bench
DIAG_BINS := $(O)/tests/kvm_churn
# make soak's driver; the fuzzer and the examples it runs are in anyway.
SOAK_BINS := scripts/vm-soak

# Every binary the run list names, from $(O)/tests.
initramfs: tests
	@scripts/initramfs.sh $(O)/initramfs.cpio.gz $(RUN_LIST) \
		$$(awk '!/^#/ && NF { print "$(O)/tests/" $$3 }' $(RUN_LIST) | sort -u) \
		$(addprefix $(O)/tests/,$(EXAMPLE_BINS)) $(BENCH_BINS) $(SOAK_BINS) \
		$(DIAG_BINS)
	@echo "  INITRD  $(O)/initramfs.cpio.gz"

# The same, with the stress list as the VM's list.
stress-initramfs: tests
	@scripts/initramfs.sh $(O)/stress.cpio.gz $(STRESS_LIST) \
		$$(awk '!/^#/ && NF { print "$(O)/tests/" $$3 }' $(STRESS_LIST) | sort -u) \
		$(addprefix $(O)/tests/,$(EXAMPLE_BINS))

check: check-host check-harness check-vm

# On the host: the harness's own tests, which need no kernel, the UAPI
# header test for every architecture, and libgmemuf's against the host's
# kernel (without gmemuf) and its ABI.
check-host: headers
	@python3 scripts/test_vmtest.py
	@scripts/uapi-check.sh $$(cat $(O)/tree.path)
	@$(LIBMK) check-host HDR=$$(cat $(O)/headers.path) TREE=$$(cat $(O)/tree.path)

# The harness in the VM, on tests made to fail: proves a failure is seen.
check-harness: kernel | $(O)
	@scripts/check-harness.sh $$(cat $(O)/bzImage-debug.path) $(O)/harness

check-vm: kernel initramfs
	@$(VMTEST) run --kernel $$(cat $(O)/bzImage-debug.path) \
		--initrd $(O)/initramfs.cpio.gz --list $(RUN_LIST) \
		--logs $(O)/logs --timeout $(VM_TIMEOUT) \
		--timeout-scale $(TIMEOUT_SCALE) $(if $(T),--only $(T))

# The post-copy demo (examples/postcopy), as /tests/demo in the VM.
demo: kernel initramfs
	@$(VMTEST) run --kernel $$(cat $(O)/bzImage-debug.path) \
		--initrd $(O)/initramfs.cpio.gz --list $(RUN_LIST) \
		--logs $(O)/logs --timeout $(VM_TIMEOUT) --mode demo

# The examples of the stress list RUNS times in one VM, with SPINNERS busy
# loops on the host: how many runs of each passed; the logs of the failed
# ones in $(O)/logs/stress/failures/.
stress: kernel stress-initramfs
	@scripts/stress.sh $$(cat $(O)/bzImage-debug.path) $(O)/stress.cpio.gz \
		$(STRESS_LIST) $(O)/logs/stress $(RUNS) $(SPINNERS)

# Every mode in one boot of the release kernel, twice: under -icount, then
# under plain TCG. Writes $(O)/bench/bench.{csv,md,png} and the README's table.
bench: kernel-release initramfs
	@$(BENCH_PYTHON) scripts/bench.py --kernel $$(cat $(O)/bzImage-release.path) \
		--initrd $(O)/initramfs.cpio.gz --list $(RUN_LIST) \
		--out $(O)/bench --icount $(BENCH_ICOUNT) \
		--configs $(BENCH_CONFIGS) \
		--timeout $(BENCH_TIMEOUT) --readme $(BENCH_README) \
		$(if $(BENCH_ARGS),--bench-args "$(BENCH_ARGS)")

# The modes of BENCH_PROFILE, each alone under perf record -a -g in one boot
# of the release kernel under -icount, with the host's perf and its libraries
# packed into the initramfs: the reports in $(O)/bench-profile/icount/
# profile.txt (scripts/vm-bench --profile), the rates of those runs in
# bench.md. The README is left alone.
bench-profile: kernel-release tests
	@PERF=$$(command -v perf) && [ -n "$$PERF" ] || \
		{ echo "make bench-profile: no perf (apt-get install linux-perf)" >&2; exit 1; }; \
	PERF=$$(readlink -f $$(command -v perf)) scripts/initramfs.sh \
		$(O)/profile.cpio.gz $(RUN_LIST) \
		$$(awk '!/^#/ && NF { print "$(O)/tests/" $$3 }' $(RUN_LIST) | sort -u) \
		$(BENCH_BINS)
	@$(BENCH_PYTHON) scripts/bench.py --kernel $$(cat $(O)/bzImage-release.path) \
		--initrd $(O)/profile.cpio.gz --list $(RUN_LIST) \
		--out $(O)/bench-profile --icount $(BENCH_ICOUNT) --configs icount \
		--timeout $(BENCH_TIMEOUT) --profile $(BENCH_PROFILE) \
		--bench-args "$(BENCH_PROFILE_ARGS)"

# The UAPI fuzzer (selftests/kvm/gmemuf_fuzz.c) in the VM, for FUZZ_SECONDS.
# Its arguments reach the VM's /init on the kernel command line, with
# commas for spaces.
comma := ,
empty :=
space := $(empty) $(empty)
FUZZ_CMDLINE = --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) \
	$(FUZZ_ARGS)

fuzz: kernel initramfs
	@$(VMTEST) run --kernel $$(cat $(O)/bzImage-debug.path) \
		--initrd $(O)/initramfs.cpio.gz --list $(RUN_LIST) \
		--logs $(O)/logs --mode fuzz --timeout-scale $(TIMEOUT_SCALE) \
		--timeout $$(($(FUZZ_SECONDS) + 600 * $(TIMEOUT_SCALE))) \
		--append "gmemuf.fuzz=$(subst $(space),$(comma),$(strip $(FUZZ_CMDLINE)))"

# The soak (scripts/vm-soak) in the VM, for SOAK_SECONDS: a restore of
# SOAK_MIB whose handlers are SIGKILLed at random, again and again, beside
# the fuzzer; then a kmemleak scan. Fails on any kernel report, hang or leak.
soak: kernel initramfs
	@$(VMTEST) run --kernel $$(cat $(O)/bzImage-debug.path) \
		--initrd $(O)/initramfs.cpio.gz --list $(RUN_LIST) \
		--logs $(O)/logs --mode soak --timeout-scale $(TIMEOUT_SCALE) \
		--timeout $$(($(SOAK_SECONDS) + 1200 * $(TIMEOUT_SCALE))) \
		--append "gmemuf.soak=$(SOAK_SECONDS),$(if $(SOAK_SEED),$(SOAK_SEED),$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')),$(SOAK_MIB)"

shell: kernel initramfs
	qemu-system-x86_64 -M q35 -cpu max -smp 2 -m 4G -nographic -no-reboot \
		-kernel $$(cat $(O)/bzImage-debug.path) \
		-initrd $(O)/initramfs.cpio.gz \
		-append "console=ttyS0 panic=-1 no5lvl kvm_amd.vgif=0 gmemuf.mode=shell"

patches: deps | $(O)
	@scripts/patches.sh $(O)/patches

checkpatch: patches
	@scripts/patches.sh --check $(O)/patches

# Fold changes of kernel/*.c (etc.) into the series: scripts/series.sh.
patches-absorb:
	@scripts/series.sh absorb

# Compile virt/kvm and arch/x86/kvm after each commit of the series.
patches-bisect: deps
	@scripts/series.sh bisect

# QEMU with our patches (scripts/qemu.sh, cached in GMEMUF_QEMU_CACHE), and
# the demo that migrates a guest whose RAM is guest_memfd between two of
# them in the test VM: qemu/run.list, all of it in $(O)/qemu.
QSH := scripts/qemu.sh
QEMU_DIR := $(O)/qemu

qemu: | $(O)
	@$(QSH) deps
	@$(QSH) build >$(O)/qemu.path
	@echo "  QEMU    $$(cat $(O)/qemu.path)"

qemu-guest: | $(O)
	@$(QSH) deps
	@$(QSH) guest $(QEMU_DIR)
	@echo "  GUEST   $(QEMU_DIR)/guest-bzImage $(QEMU_DIR)/guest-initramfs.cpio.gz"

$(QEMU_DIR)/qemu-demo: qemu/qemu-demo.c | $(O)
	@mkdir -p $(QEMU_DIR)
	@gcc -O2 -Wall -Wextra -Werror -static -o $@ $<
	@echo "  CC      $@"

qemu-initramfs: qemu qemu-guest $(QEMU_DIR)/qemu-demo
	@strip -o $(QEMU_DIR)/qemu-system-x86_64 $$(cat $(O)/qemu.path)
	@scripts/initramfs.sh $(O)/qemu-initramfs.cpio.gz qemu/run.list \
		$(QEMU_DIR)/qemu-demo $(QEMU_DIR)/qemu-system-x86_64 \
		$(QEMU_DIR)/guest-bzImage $(QEMU_DIR)/guest-initramfs.cpio.gz \
		$$($(QSH) firmware-list)
	@echo "  INITRD  $(O)/qemu-initramfs.cpio.gz"

qemu-demo: kernel qemu-initramfs
	@$(VMTEST) run --kernel $$(cat $(O)/bzImage-debug.path) \
		--initrd $(O)/qemu-initramfs.cpio.gz --list qemu/run.list \
		--logs $(O)/logs-qemu --timeout $(VM_TIMEOUT) \
		--timeout-scale $(TIMEOUT_SCALE) $(if $(T),--only $(T))

clean:
	rm -rf $(O)

# Also the kernel trees, objects and ccache of this machine's cache.
distclean: clean
	rm -rf $(GMEMUF_CACHE)
