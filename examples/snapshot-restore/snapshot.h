/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The snapshot file of snapshot-vm, and what it tells a handler.
 *
 * The file is a header, padded to a page, then the guest's memory image:
 * the page at guest offset X is at file offset SNAPSHOT_IMAGE + X, so that
 * a handler maps the file and populates straight from it.
 */
#ifndef SNAPSHOT_H
#define SNAPSHOT_H

#include <stdint.h>

#include "vmm.h"

#define SNAPSHOT_MAGIC	0x31706e736d6d67ULL	/* "gmmsnp1" */
#define SNAPSHOT_IMAGE	4096

struct snapshot_header {
	uint64_t magic;
	uint64_t mem_size;
	uint64_t checksum;	/* of the data pages, as the guest wrote them */
	struct vmm_state state;
};

/* Sent by the restoring VMM with the guest_memfd (SCM_RIGHTS). */
struct snapshot_hello {
	uint64_t magic;
	uint64_t mem_size;
};

#endif /* SNAPSHOT_H */
