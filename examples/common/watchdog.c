// SPDX-License-Identifier: GPL-2.0-only
/*
 * The examples' stall watchdog: see watchdog.h. A thread that looks at the
 * progress once a second and, on a stall, writes everything the log needs
 * to tell where the program is stuck, then ends it.
 *
 * The dump is written with dprintf() and static buffers: a stuck thread may
 * hold the lock of stdout, and the dump must not wait for it.
 */
#include <dirent.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/kvm.h>
#include <libgmemuf.h>

#include "util.h"
#include "watchdog.h"

#define MAX_PEERS	8
#define MAX_THREADS	64
#define SAMPLES		5
#define SAMPLE_MS	200
#define STACK_MAX	4096
/* Missing pages listed by offset; the count says how many there are. */
#define LIST_MISSING	16

#define out(...)	dprintf(STDOUT_FILENO, __VA_ARGS__)

static struct {
	const char *name;
	double timeout;
	int gmem;
	uint64_t npages;
	pid_t peers[MAX_PEERS];
	unsigned int nr_peers;
	/* The vCPU's binary stats: its fd, header and descriptors. */
	int stats;
	struct kvm_stats_header stats_hdr;
	uint8_t *stats_desc;
	uint64_t progress;		/* __atomic */
	bool stopped;			/* __atomic */
} wd = { .gmem = -1, .stats = -1 };

/* Two readings of the vCPU's stats, one value each, a second apart. */
#define MAX_STATS	256
static uint64_t stats[2][MAX_STATS];

/* One thread, as its last sample saw it. */
struct thread {
	pid_t tid;
	char comm[32];
	char state;
	unsigned long long ticks;	/* utime + stime, at the last sample */
	char stack[STACK_MAX];		/* the last sample's */
	unsigned int stacks;		/* different stacks seen */
};

static struct thread threads[MAX_THREADS];

/* The contents of a /proc file, NUL-terminated, or "" if it cannot be read. */
static size_t read_proc(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static size_t read_proc(char *buf, size_t size, const char *fmt, ...)
{
	char path[128];
	va_list ap;
	ssize_t n;
	size_t len = 0;
	int fd;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	buf[0] = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	while (len < size - 1 &&
	       (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += n;
	close(fd);
	buf[len] = 0;
	return len;
}

/* Print @text, a file of lines, with @indent before each. */
static void out_lines(const char *indent, const char *text)
{
	const char *nl;

	for (; *text; text = nl + 1) {
		nl = strchrnul(text, '\n');
		out("%s%.*s\n", indent, (int)(nl - text), text);
		if (!*nl)
			break;
	}
}

/* State and CPU ticks from /proc/PID/task/TID/stat. */
static void read_stat(pid_t pid, struct thread *t)
{
	unsigned long long utime = 0, stime = 0;
	char buf[1024], *p;

	t->state = '?';
	if (!read_proc(buf, sizeof(buf), "/proc/%d/task/%d/stat", pid, t->tid))
		return;
	/* Fields after the name, which may hold spaces: state is field 3. */
	p = strrchr(buf, ')');
	if (!p)
		return;
	/* Then utime and stime are fields 14 and 15. */
	sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	       &t->state, &utime, &stime);
	t->ticks = utime + stime;
}

/* The threads of @pid, but for this one, the watchdog's. */
static unsigned int list_threads(pid_t pid)
{
	char path[64];
	struct dirent *de;
	unsigned int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((de = readdir(dir)) && n < MAX_THREADS) {
		if (de->d_name[0] == '.' || atoi(de->d_name) == gettid())
			continue;
		memset(&threads[n], 0, sizeof(threads[n]));
		threads[n].tid = atoi(de->d_name);
		n++;
	}
	closedir(dir);
	return n;
}

/*
 * Every thread of @pid: its state, wchan, system call and kernel stack,
 * then what changed over SAMPLES samples, and how much CPU it used: a
 * thread that used it all while its stack stayed put is spinning there.
 */
static void dump_process(pid_t pid)
{
	unsigned long long ticks0[MAX_THREADS];
	long hz = sysconf(_SC_CLK_TCK);
	char comm[64], buf[STACK_MAX], wchan[128], syscall[256];
	unsigned int n, i, s;
	double t0, elapsed;

	read_proc(comm, sizeof(comm), "/proc/%d/comm", pid);
	comm[strcspn(comm, "\n")] = 0;
	n = list_threads(pid);
	if (!n) {
		out("watchdog: process %d: gone\n", pid);
		return;
	}
	out("watchdog: ---- process %d (%s): %u threads, kernel stacks sampled %d times %d ms apart ----\n",
	    pid, comm, n, SAMPLES, SAMPLE_MS);
	t0 = now();
	for (s = 0; s < SAMPLES; s++) {
		if (s)
			sleep_until(t0 + s * SAMPLE_MS / 1000.0);
		for (i = 0; i < n; i++) {
			struct thread *t = &threads[i];

			read_stat(pid, t);
			read_proc(buf, sizeof(buf), "/proc/%d/task/%d/stack",
				  pid, t->tid);
			if (!s) {
				ticks0[i] = t->ticks;
				read_proc(t->comm, sizeof(t->comm),
					  "/proc/%d/task/%d/comm", pid, t->tid);
				t->comm[strcspn(t->comm, "\n")] = 0;
				read_proc(wchan, sizeof(wchan),
					  "/proc/%d/task/%d/wchan", pid, t->tid);
				read_proc(syscall, sizeof(syscall),
					  "/proc/%d/task/%d/syscall", pid,
					  t->tid);
				syscall[strcspn(syscall, "\n")] = 0;
				out("watchdog: thread %d (%s) state %c, wchan %s, syscall %s\n",
				    t->tid, t->comm, t->state,
				    wchan[0] ? wchan : "-", syscall);
			} else if (!strcmp(buf, t->stack)) {
				continue;
			} else {
				out("watchdog: thread %d (%s) sample %u: state %c, stack now:\n",
				    t->tid, t->comm, s + 1, t->state);
			}
			out_lines("    ", buf[0] ? buf : "(no kernel stack)");
			memcpy(t->stack, buf, sizeof(buf));
			t->stacks++;
		}
	}
	elapsed = now() - t0;
	for (i = 0; i < n; i++) {
		struct thread *t = &threads[i];
		double cpu = (double)(t->ticks - ticks0[i]) / hz;

		out("watchdog: thread %d (%s): state %c, %.2f s of CPU in %.2f s, stacks seen %u: %s\n",
		    t->tid, t->comm, t->state, cpu, elapsed, t->stacks,
		    cpu > elapsed / 2 ? "RUNNING (a spin if its stack stays put)" :
		    "sleeping or waiting");
	}
}

/* How many pages are missing, and the first of them. */
static void dump_gmem(void)
{
	static uint64_t bitmap[4096];
	uint64_t chunk = sizeof(bitmap) * 8, off, i;
	unsigned int listed = 0;
	int64_t missing;

	if (wd.gmem < 0)
		return;
	missing = gmemuf_count_missing(wd.gmem, 0, wd.npages * GMEMUF_PAGE_SIZE);
	if (missing < 0) {
		out("watchdog: guest_memfd: GMEMUF_IOC_GET_BITMAP: %s\n",
		    gmemuf_strerror(missing));
		return;
	}
	out("watchdog: guest_memfd: %lld of %llu pages missing\n",
	    (long long)missing, (unsigned long long)wd.npages);
	for (off = 0; off < wd.npages && listed < missing &&
	     listed < LIST_MISSING; off += chunk) {
		uint64_t n = wd.npages - off < chunk ? wd.npages - off : chunk;

		if (gmemuf_read_bitmap(wd.gmem, off * GMEMUF_PAGE_SIZE,
				       n * GMEMUF_PAGE_SIZE, bitmap) < 0)
			break;
		for (i = 0; i < n && listed < LIST_MISSING; i++) {
			if (!(bitmap[i / 64] >> (i % 64) & 1))
				continue;
			out("%s0x%llx", listed ? " " :
			    "watchdog: guest_memfd: first missing offsets: ",
			    (unsigned long long)((off + i) * GMEMUF_PAGE_SIZE));
			listed++;
		}
	}
	if (listed)
		out("%s\n", listed < missing ? " ..." : "");
}

static struct kvm_stats_desc *stats_desc(unsigned int i)
{
	return (struct kvm_stats_desc *)(wd.stats_desc + i *
		(sizeof(struct kvm_stats_desc) + wd.stats_hdr.name_size));
}

/* One reading of the vCPU's stats, without its mutex that KVM_RUN holds. */
static void read_stats(uint64_t *values)
{
	unsigned int i;

	for (i = 0; i < wd.stats_hdr.num_desc && i < MAX_STATS; i++) {
		values[i] = 0;
		if (pread(wd.stats, &values[i], sizeof(values[i]),
			  wd.stats_hdr.data_offset + stats_desc(i)->offset) < 0)
			return;
	}
}

/*
 * What the vCPU did between two readings: a vCPU that takes faults and
 * fixes none retries a fault, one that exits to userspace with nothing
 * else moving loops in the VMM, and one that does not exit at all runs
 * the guest.
 */
static void dump_stats(double elapsed)
{
	unsigned int i;
	bool any = false;

	if (wd.stats < 0)
		return;
	out("watchdog: vCPU stats that moved in %.2f s (KVM_GET_STATS_FD):",
	    elapsed);
	for (i = 0; i < wd.stats_hdr.num_desc && i < MAX_STATS; i++) {
		struct kvm_stats_desc *d = stats_desc(i);

		if (d->size != 1 || stats[1][i] == stats[0][i])
			continue;
		out(" %s +%lld", d->name,
		    (long long)(stats[1][i] - stats[0][i]));
		any = true;
	}
	out("%s\n", any ? "" : " none");
	out("watchdog: vCPU stats, totals:");
	for (i = 0; i < wd.stats_hdr.num_desc && i < MAX_STATS; i++) {
		struct kvm_stats_desc *d = stats_desc(i);

		if (d->size == 1 && stats[1][i])
			out(" %s %llu", d->name,
			    (unsigned long long)stats[1][i]);
	}
	out("\n");
}

static void write_str(const char *path, int fd, const char *s)
{
	if (write(fd, s, strlen(s)) < 0)
		out("watchdog: write %s: %s\n", path, strerror(errno));
}

/* Print the kernel log records that @kmsg has not returned yet. */
static unsigned int drain_kmsg(int kmsg)
{
	static char rec[8192];
	unsigned int n = 0;
	ssize_t len;
	char *msg;

	for (;;) {
		len = read(kmsg, rec, sizeof(rec) - 1);
		if (len < 0 && errno == EPIPE)
			continue;	/* overwritten: go on with the next */
		if (len <= 0)
			return n;
		rec[len] = 0;
		/* "prio,seq,usec,flags;message\n", then " KEY=value" lines. */
		msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		out("kmsg: %.*s\n", (int)strcspn(msg, "\n"), msg);
		n++;
	}
}

/*
 * sysrq-w (tasks in uninterruptible sleep, with their stacks) and sysrq-l
 * (what every CPU is running), read back from /dev/kmsg so that the dump
 * holds them: at the default console log level, the console shows only
 * part of them.
 */
static void dump_sysrq(void)
{
	char msg[160];
	unsigned int i;
	int kmsg, trigger;

	kmsg = open("/dev/kmsg", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	trigger = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
	if (kmsg < 0 || trigger < 0) {
		out("watchdog: no sysrq dump: /dev/kmsg or /proc/sysrq-trigger: %s\n",
		    strerror(errno));
		goto out;
	}
	lseek(kmsg, 0, SEEK_END);
	out("watchdog: ---- sysrq w and l, from the kernel log ----\n");
	snprintf(msg, sizeof(msg),
		 "gmemuf: watchdog dump of %s (pid %d): sysrq w, l\n",
		 wd.name, getpid());
	write_str("/dev/kmsg", kmsg, msg);
	write_str("/proc/sysrq-trigger", trigger, "w");
	write_str("/proc/sysrq-trigger", trigger, "l");
	/* Other CPUs print their backtraces from NMIs, a little later. */
	for (i = 0; i < 10; i++) {
		sleep_until(now() + 0.3);
		if (!drain_kmsg(kmsg) && i >= 3)
			break;
	}
	write_str("/dev/kmsg", kmsg, "gmemuf: watchdog dump end\n");
	drain_kmsg(kmsg);
out:
	if (kmsg >= 0)
		close(kmsg);
	if (trigger >= 0)
		close(trigger);
}

static void __attribute__((noreturn)) dump_and_exit(double idle)
{
	unsigned int i;
	double t0;

	out("watchdog: ==== %s (pid %d): no progress for %.0f s: dumping its state ====\n",
	    wd.name, getpid(), idle);
	out("watchdog: progress counter %llu (guest reports)\n",
	    (unsigned long long)__atomic_load_n(&wd.progress,
						__ATOMIC_RELAXED));
	dump_gmem();
	t0 = now();
	if (wd.stats >= 0)
		read_stats(stats[0]);
	dump_process(getpid());
	if (wd.stats >= 0) {
		read_stats(stats[1]);
		dump_stats(now() - t0);
	}
	for (i = 0; i < wd.nr_peers; i++)
		dump_process(wd.peers[i]);
	dump_sysrq();
	out("watchdog: ==== %s stalled: exit status %d ====\n", wd.name,
	    WATCHDOG_STALLED);
	_exit(WATCHDOG_STALLED);
}

static int64_t missing_now(void)
{
	if (wd.gmem < 0)
		return -1;
	return gmemuf_count_missing(wd.gmem, 0, wd.npages * GMEMUF_PAGE_SIZE);
}

static void *watch(void *arg)
{
	uint64_t seen = 0, progress;
	int64_t fewest = missing_now(), missing;
	double last = now();

	(void)arg;
	for (;;) {
		sleep_until(now() + 1);
		if (__atomic_load_n(&wd.stopped, __ATOMIC_ACQUIRE))
			return NULL;
		progress = __atomic_load_n(&wd.progress, __ATOMIC_RELAXED);
		missing = missing_now();
		if (progress != seen || missing < fewest) {
			seen = progress;
			fewest = missing;
			last = now();
		} else if (now() - last >= wd.timeout) {
			dump_and_exit(now() - last);
		}
	}
}

/*
 * The stats of @vcpu, read without its mutex: the fd must be had before
 * KVM_RUN takes it. Dumped without them if that fails.
 */
static void open_stats(int vcpu)
{
	size_t size;

	wd.stats = ioctl(vcpu, KVM_GET_STATS_FD, NULL);
	if (wd.stats < 0)
		return;
	if (pread(wd.stats, &wd.stats_hdr, sizeof(wd.stats_hdr), 0) !=
	    sizeof(wd.stats_hdr))
		goto fail;
	size = wd.stats_hdr.num_desc *
	       (sizeof(struct kvm_stats_desc) + wd.stats_hdr.name_size);
	wd.stats_desc = malloc(size);
	if (wd.stats_desc &&
	    pread(wd.stats, wd.stats_desc, size, wd.stats_hdr.desc_offset) ==
	    (ssize_t)size)
		return;
fail:
	close(wd.stats);
	wd.stats = -1;
}

void watchdog_start(const char *name, unsigned int seconds, int gmem,
		    int vcpu)
{
	const char *scale = getenv("GMEMUF_TIMEOUT_SCALE");
	pthread_t thread;
	struct stat st;

	if (!seconds)
		return;
	wd.name = name;
	wd.timeout = seconds * (scale ? strtod(scale, NULL) : 1);
	if (wd.timeout <= 0)
		wd.timeout = seconds;
	if (gmem >= 0) {
		if (fstat(gmem, &st))
			err(1, "fstat(guest_memfd)");
		wd.gmem = gmem;
		wd.npages = st.st_size / GMEMUF_PAGE_SIZE;
	}
	if (vcpu >= 0)
		open_stats(vcpu);
	errno = pthread_create(&thread, NULL, watch, NULL);
	if (errno)
		err(1, "pthread_create(watchdog)");
	pthread_setname_np(thread, "watchdog");
	pthread_detach(thread);
}

void watchdog_add_peer(pid_t pid)
{
	if (wd.nr_peers < MAX_PEERS)
		wd.peers[wd.nr_peers++] = pid;
}

void watchdog_progress(void)
{
	__atomic_add_fetch(&wd.progress, 1, __ATOMIC_RELAXED);
}

void watchdog_stop(void)
{
	__atomic_store_n(&wd.stopped, true, __ATOMIC_RELEASE);
}
