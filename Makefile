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

export KERNEL_SRC KERNEL_TARBALL GMEMUF_CACHE

KSH := scripts/kernel.sh
VMTEST := python3 scripts/vmtest.py
RUN_LIST := selftests/run.list

# The tree's own KVM selftests that run in every check, and ours, which the
# overlay puts in tools/testing/selftests/kvm/gmemuf/.
UPSTREAM_KVM_TESTS := guest_memfd_test
OUR_KVM_TESTS := $(patsubst selftests/kvm/%.c,gmemuf/%,$(wildcard selftests/kvm/*_test.c))

.PHONY: all help deps kernel kernel-release headers lib man install tests initramfs \
	check check-host check-harness check-vm demo shell patches checkpatch clean \
	distclean

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
	@echo 'make shell           boot the VM with a shell, tests in /tests'
	@echo 'make patches         write the kernel series to $(O)/patches'
	@echo 'make checkpatch      run checkpatch.pl --strict on the series'

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
	@$(KSH) kvm-selftests $(O)/tests $(UPSTREAM_KVM_TESTS) $(OUR_KVM_TESTS)
	@$(MAKE) --no-print-directory -f selftests/Makefile O=$(O) \
		HDR=$$(cat $(O)/headers.path) TREE=$$(cat $(O)/tree.path)
	@$(LIBMK) tests HDR=$$(cat $(O)/headers.path) TREE=$$(cat $(O)/tree.path)
	@$(MAKE) --no-print-directory -f examples/Makefile O=$(O) \
		HDR=$$(cat $(O)/headers.path)

# The examples' programs that the run list does not name: its entries
# start them. /tests/demo is what gmemuf.mode=demo runs.
EXAMPLE_BINS := postcopy-src postcopy-dst snapshot-vm snapshot-handler demo

# Every binary the run list names, from $(O)/tests.
initramfs: tests
	@scripts/initramfs.sh $(O)/initramfs.cpio.gz $(RUN_LIST) \
		$$(awk '!/^#/ && NF { print "$(O)/tests/" $$3 }' $(RUN_LIST) | sort -u) \
		$(addprefix $(O)/tests/,$(EXAMPLE_BINS))
	@echo "  INITRD  $(O)/initramfs.cpio.gz"

check: check-host check-harness check-vm

# On the host: the harness's own tests, which need no kernel, and
# libgmemuf's against the host's kernel (without gmemuf) and its ABI.
check-host: headers
	@python3 scripts/test_vmtest.py
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

shell: kernel initramfs
	qemu-system-x86_64 -M q35 -cpu max -smp 2 -m 4G -nographic -no-reboot \
		-kernel $$(cat $(O)/bzImage-debug.path) \
		-initrd $(O)/initramfs.cpio.gz \
		-append "console=ttyS0 panic=-1 gmemuf.mode=shell"

patches: deps | $(O)
	@scripts/patches.sh $(O)/patches

checkpatch: patches
	@scripts/patches.sh --check $(O)/patches

clean:
	rm -rf $(O)

# Also the kernel trees, objects and ccache of this machine's cache.
distclean: clean
	rm -rf $(GMEMUF_CACHE)
