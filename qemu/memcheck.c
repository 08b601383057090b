// SPDX-License-Identifier: GPL-2.0-only
/*
 * memcheck: the QEMU demo's guest program, and the guest's /init.
 *
 * As /init it mounts devtmpfs for the console, and takes its size from
 * MEMCHECK_MB, which the kernel command line's "MEMCHECK_MB=<n>" puts in
 * init's environment. It fills a buffer of that many MiB (--mb <n>
 * elsewhere) with a pattern that depends on each
 * word's place and on a generation number, then forever: checks that
 * every word holds generation g's pattern, rewrites it with generation
 * g + 1's, and prints one line per generation on the console:
 *
 *   memcheck: gen <g> ok <pages> pages sum <hex>
 *
 * A word that differs is printed (the first few of them) and counted:
 *
 *   memcheck: BAD gen <g> page <p> word <i> is <hex> want <hex>
 *   memcheck: gen <g> BAD <n> words
 *
 * With MEMCHECK_PHYS=<address> (--phys <address>), the buffer is that
 * physical memory, mapped from /dev/mem: memory the kernel was told to
 * leave alone (memmap=<size>$<address>), which the VMM may make private.
 *
 * Run across a migration, a page that arrived stale, or not at all,
 * shows up in the first generation the destination checks. The sum is of
 * every word checked, so that the same generation gives the same sum on
 * the source and on the destination.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#define PAGE_WORDS	(4096 / sizeof(uint64_t))
#define MAX_REPORTS	8

static uint64_t pattern(uint64_t page, uint64_t gen, uint64_t word)
{
	uint64_t x = ((page << 12 | word) ^ gen * 0x9e3779b97f4a7c15ull);

	/* splitmix64's finalizer: every bit depends on all three. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The initramfs has no /dev/console: the kernel gave init no stdio. */
static void init_console(void)
{
	int fd;

	mount("dev", "/dev", "devtmpfs", 0, NULL);
	fd = open("/dev/console", O_RDWR);
	if (fd < 0)
		exit(1);
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

int main(int argc, char **argv)
{
	size_t mb = 128, pages, p, i;
	uint64_t *buf, gen, sum, bad;
	const char *phys = NULL;
	int a;

	if (getpid() == 1) {
		init_console();
		if (getenv("MEMCHECK_MB"))
			mb = strtoul(getenv("MEMCHECK_MB"), NULL, 0);
		phys = getenv("MEMCHECK_PHYS");
	}
	for (a = 1; a + 1 < argc; a += 2) {
		if (!strcmp(argv[a], "--mb"))
			mb = strtoul(argv[a + 1], NULL, 0);
		else if (!strcmp(argv[a], "--phys"))
			phys = argv[a + 1];
	}
	pages = mb << 8;
	if (phys) {
		int fd = open("/dev/mem", O_RDWR);

		if (fd < 0) {
			perror("memcheck: /dev/mem");
			return 1;
		}
		buf = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
			   MAP_SHARED, fd, strtoull(phys, NULL, 0));
		printf("memcheck: %zu MiB of physical memory at %s\n", mb,
		       phys);
	} else {
		buf = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	}
	if (buf == MAP_FAILED) {
		perror("memcheck: mmap");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (p = 0; p < pages; p++)
		for (i = 0; i < PAGE_WORDS; i++)
			buf[p * PAGE_WORDS + i] = pattern(p, 0, i);
	printf("memcheck: filled %zu pages\n", pages);

	for (gen = 0;; gen++) {
		sum = 0;
		bad = 0;
		for (p = 0; p < pages; p++) {
			uint64_t *w = buf + p * PAGE_WORDS;

			for (i = 0; i < PAGE_WORDS; i++) {
				uint64_t want = pattern(p, gen, i);

				sum += w[i];
				if (w[i] != want && bad++ < MAX_REPORTS)
					printf("memcheck: BAD gen %llu page %zu word %zu is %016llx want %016llx\n",
					       (unsigned long long)gen, p, i,
					       (unsigned long long)w[i],
					       (unsigned long long)want);
				w[i] = pattern(p, gen + 1, i);
			}
		}
		if (bad)
			printf("memcheck: gen %llu BAD %llu words\n",
			       (unsigned long long)gen, (unsigned long long)bad);
		else
			printf("memcheck: gen %llu ok %zu pages sum %016llx\n",
			       (unsigned long long)gen, pages,
			       (unsigned long long)sum);
	}
}
