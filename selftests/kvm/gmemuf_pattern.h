/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The page contents the gmemuf KVM selftests write and check, on the host
 * and in the guest alike: a pattern word per 8 bytes of the file, keyed by a
 * seed, and a checksum over words read.
 */
#ifndef SELFTEST_KVM_GMEMUF_PATTERN_H
#define SELFTEST_KVM_GMEMUF_PATTERN_H

#include <linux/types.h>

/* The value of @seed's pattern for the 8-byte word at file offset @off. */
static inline u64 pattern_word(u64 seed, u64 off)
{
	u64 x = (seed ^ off) * 0x9e3779b97f4a7c15ull;

	return x ^ (x >> 29) ^ off;
}

/* Fold @word into the running checksum @csum; order matters. */
static inline u64 pattern_csum(u64 csum, u64 word)
{
	return ((csum << 7) | (csum >> 57)) + word;
}

#endif /* SELFTEST_KVM_GMEMUF_PATTERN_H */
