/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * What the library's files share and the public header does not offer.
 */
#ifndef LIBGMEMUF_PRIVATE_H
#define LIBGMEMUF_PRIVATE_H

#include <errno.h>
#include <linux/kvm.h>
#include "libgmemuf.h"

/*
 * The library is built against the system's <linux/kvm.h>, which may
 * predate guest_memfd (Linux 6.8) and its flags capability (6.18); the
 * values are the kernel's. KVM_CREATE_GUEST_MEMFD and its struct came
 * together, so the one says whether the other is there.
 */
#ifndef KVM_CREATE_GUEST_MEMFD
struct kvm_create_guest_memfd {
	__u64 size;
	__u64 flags;
	__u64 reserved[6];
};
#define KVM_CREATE_GUEST_MEMFD	_IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#endif
#ifndef KVM_CAP_GUEST_MEMFD_FLAGS
#define KVM_CAP_GUEST_MEMFD_FLAGS	244
#endif
#ifndef KVM_CAP_GUEST_MEMFD_USERFAULT
#define KVM_CAP_GUEST_MEMFD_USERFAULT	252
#endif

#define PAGE_SIZE_U64	((uint64_t)GMEMUF_PAGE_SIZE)

static inline int page_aligned(uint64_t x)
{
	return !(x & (PAGE_SIZE_U64 - 1));
}

/*
 * The negative errno of a call on a file that should be a userfault
 * guest_memfd. Its ioctls give ENOTTY on any other file, and pwrite() gives
 * ESPIPE on a guest_memfd without userfault (KVM does not let it be
 * written): both mean that the file, or the kernel, lacks the feature.
 */
static inline int file_errno(int err)
{
	if (err == ENOTTY || err == ESPIPE)
		return -EOPNOTSUPP;
	return -err;
}

#endif /* LIBGMEMUF_PRIVATE_H */
