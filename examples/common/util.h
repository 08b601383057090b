/* SPDX-License-Identifier: GPL-2.0-only */
/* Small helpers the examples share: time, whole reads and writes, fds. */
#ifndef EXAMPLES_UTIL_H
#define EXAMPLES_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Seconds on the monotonic clock. */
double now(void);
/* Sleep until now() reaches @t. */
void sleep_until(double t);

/* Read exactly @len bytes: true, or false at end of file before any byte. */
bool read_full(int fd, void *buf, size_t len, const char *what);
void write_full(int fd, const void *buf, size_t len, const char *what);

/* Pass a file descriptor and a small message over a UNIX socket: 0 or -errno. */
int send_fd(int sock, int fd, const void *msg, size_t len);
/* The fd received with the message, or -1 at end of file. */
int recv_fd(int sock, void *msg, size_t len);

/* An option's number, or exit with a message naming it. */
uint64_t parse_num(const char *opt, const char *arg);

#define MiB	(1ULL << 20)

#endif /* EXAMPLES_UTIL_H */
