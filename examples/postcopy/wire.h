/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The post-copy protocol between postcopy-src and postcopy-dst, over two
 * TCP connections that the destination opens:
 *
 * demand:   dst -> src  struct wire_hello (WIRE_DEMAND)
 *           src -> dst  struct wire_header: the memory size, the vCPU state
 *                       and the source's checksum of the guest's data
 *           dst -> src  a page offset (__u64), for each page a fault needs
 *           src -> dst  struct wire_page, for each of them
 * prefetch: dst -> src  struct wire_hello (WIRE_PREFETCH)
 *           dst -> src  struct wire_batch: up to WIRE_BATCH_MAX offsets
 *           src -> dst  their pages' contents, 4 KiB each, in that order
 *
 * Demand requests have a connection of their own so that a page a vCPU
 * waits for never queues behind a batch of prefetched ones. The destination
 * asks for prefetched pages (rather than the source pushing all of them) so
 * that it only asks for the pages still missing. Fields are in the byte
 * order of the host: both ends run on the same machine here.
 */
#ifndef POSTCOPY_WIRE_H
#define POSTCOPY_WIRE_H

#include <stdint.h>

#include "vmm.h"

#define WIRE_MAGIC	0x31706366756d6d67ULL	/* "gmmufcp1" */
#define WIRE_PORT	4444
#define WIRE_BATCH_MAX	256

enum wire_conn { WIRE_DEMAND = 1, WIRE_PREFETCH = 2 };

struct wire_hello {
	uint64_t magic;
	uint64_t conn;		/* enum wire_conn */
};

struct wire_header {
	uint64_t magic;
	uint64_t mem_size;
	uint64_t checksum;	/* of the data pages, as the source read them */
	struct vmm_state state;
};

struct wire_page {
	uint64_t offset;
	uint8_t data[4096];
};

struct wire_batch {
	uint64_t nr;
	uint64_t offsets[WIRE_BATCH_MAX];
};

#endif /* POSTCOPY_WIRE_H */
