// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The calls on the files: probe, create, the range ioctls, the bitmap,
 * populate and zero-fill, attaching a handler file; and gmemuf_strerror().
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "private.h"

int gmemuf_probe(int vm_fd, uint64_t *features)
{
	int flags, mask;

	if (features)
		*features = 0;
	/*
	 * The flag first: a kernel without gmemuf may some day give the
	 * capability number to something else.
	 */
	flags = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS);
	if (flags < 0)
		return -errno;
	if (!(flags & GUEST_MEMFD_FLAG_USERFAULT))
		return 0;
	mask = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_USERFAULT);
	if (mask < 0)
		return -errno;
	if (features)
		*features = (unsigned int)mask;
	return 1;
}

int gmemuf_create(int vm_fd, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = flags | GUEST_MEMFD_FLAG_USERFAULT,
	};
	int fd, err, supported;

	fd = ioctl(vm_fd, KVM_CREATE_GUEST_MEMFD, &args);
	if (fd >= 0)
		return fd;
	err = errno;
	/*
	 * KVM answers an unknown flag with EINVAL, as it does a bad size, and
	 * a kernel without guest_memfd answers ENOTTY: the supported flags
	 * tell which it was.
	 */
	if (err != EINVAL && err != ENOTTY)
		return -err;
	supported = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS);
	if (supported >= 0 && (args.flags & ~(uint64_t)(unsigned int)supported))
		return -EOPNOTSUPP;
	return -err;
}

/*
 * A range the kernel would refuse with EINVAL whatever the file: empty, or
 * not page-aligned. Checked before the system call, so that the answer is
 * -EINVAL on any file (another file would say ENOTTY, -EOPNOTSUPP here).
 */
static int bad_range(uint64_t offset, uint64_t len)
{
	return !len || !page_aligned(offset) || !page_aligned(len);
}

/* One of the ioctls that take struct gmemuf_range; *@done gets its result. */
static int range_ioctl(int fd, unsigned long request, uint64_t offset,
		       uint64_t len, uint64_t *done)
{
	struct gmemuf_range range = { .offset = offset, .len = len };
	int ret;

	if (bad_range(offset, len))
		return -EINVAL;
	ret = ioctl(fd, request, &range);

	if (done)
		*done = range.done;
	return ret ? file_errno(errno) : 0;
}

int gmemuf_arm(int fd, uint64_t offset, uint64_t len)
{
	return range_ioctl(fd, GMEMUF_IOC_ARM, offset, len, NULL);
}

int gmemuf_disarm(int fd, uint64_t offset, uint64_t len)
{
	return range_ioctl(fd, GMEMUF_IOC_DISARM, offset, len, NULL);
}

int gmemuf_wake(int fd, uint64_t offset, uint64_t len)
{
	return range_ioctl(fd, GMEMUF_IOC_WAKE, offset, len, NULL);
}

static int64_t get_bitmap(int fd, uint64_t offset, uint64_t len,
			  uint64_t *bitmap)
{
	struct gmemuf_bitmap args = {
		.offset = offset,
		.len = len,
		.bitmap = (uint64_t)(uintptr_t)bitmap,
	};

	if (bad_range(offset, len))
		return -EINVAL;
	if (ioctl(fd, GMEMUF_IOC_GET_BITMAP, &args))
		return file_errno(errno);
	return (int64_t)args.missing;
}

int64_t gmemuf_read_bitmap(int fd, uint64_t offset, uint64_t len,
			   uint64_t *bitmap)
{
	if (!bitmap)
		return -EINVAL;
	return get_bitmap(fd, offset, len, bitmap);
}

int64_t gmemuf_count_missing(int fd, uint64_t offset, uint64_t len)
{
	return get_bitmap(fd, offset, len, NULL);
}

/* Step @n bytes into *@iov, whose first entries it uses up. */
static void iov_advance(struct iovec **iov, int *cnt, size_t n)
{
	while (n && *cnt) {
		size_t step = n < (*iov)->iov_len ? n : (*iov)->iov_len;

		(*iov)->iov_base = (char *)(*iov)->iov_base + step;
		(*iov)->iov_len -= step;
		n -= step;
		if (!(*iov)->iov_len) {
			(*iov)++;
			(*cnt)--;
		}
	}
}

/*
 * Populate the missing pages of the file from @offset on with the contents
 * of @iov, which it consumes; the entries are multiples of the page size.
 * The kernel stops a write at the first present page: a write that fails
 * with EEXIST tells that page, which is skipped; a short write is followed
 * by one from where it stopped, which says why.
 */
static int64_t populate_iov(int fd, uint64_t offset, struct iovec *iov,
			    int cnt)
{
	int64_t populated = 0;
	ssize_t n;

	while (cnt) {
		n = pwritev(fd, iov, cnt, (off_t)offset);
		if (n < 0 && errno != EEXIST)
			return file_errno(errno);
		if (n < 0)
			n = GMEMUF_PAGE_SIZE;
		else if (n == 0 || !page_aligned((uint64_t)n))
			return -EIO;	/* never from a guest_memfd */
		else
			populated += n / GMEMUF_PAGE_SIZE;
		offset += (uint64_t)n;
		iov_advance(&iov, &cnt, (size_t)n);
	}
	return populated;
}

int gmemuf_populate(int fd, uint64_t offset, const void *page)
{
	struct iovec iov = { (void *)page, GMEMUF_PAGE_SIZE };

	if (!page)
		return -EINVAL;
	return (int)populate_iov(fd, offset, &iov, 1);
}

int64_t gmemuf_populate_range(int fd, uint64_t offset, const void *buf,
			      uint64_t len)
{
	struct iovec iov = { (void *)buf, (size_t)len };

	/* An empty range is invalid, as for the kernel's range ioctls. */
	if (!buf || !len || !page_aligned(offset) || !page_aligned(len) ||
	    len > SSIZE_MAX)
		return -EINVAL;
	return populate_iov(fd, offset, &iov, 1);
}

/* Pages written by one pwritev() of gmemuf_populate_batch(), at most. */
#define BATCH_IOV	256

int64_t gmemuf_populate_batch(int fd, const struct gmemuf_page *pages,
			      size_t nr)
{
	struct iovec iov[BATCH_IOV];
	int64_t populated = 0, ret;
	size_t i;
	int cnt;

	/* All checked first: -EINVAL populates nothing. */
	if (nr && !pages)
		return -EINVAL;
	for (i = 0; i < nr; i++)
		if (!page_aligned(pages[i].offset) || !pages[i].data)
			return -EINVAL;
	i = 0;
	while (i < nr) {
		/* The run of pages that follow each other in the file. */
		for (cnt = 0; cnt < BATCH_IOV && i + cnt < nr; cnt++) {
			if (cnt && pages[i + cnt].offset !=
				   pages[i].offset + cnt * PAGE_SIZE_U64)
				break;
			iov[cnt].iov_base = (void *)pages[i + cnt].data;
			iov[cnt].iov_len = GMEMUF_PAGE_SIZE;
		}
		ret = populate_iov(fd, pages[i].offset, iov, cnt);
		if (ret < 0)
			return ret;
		populated += ret;
		i += cnt;
	}
	return populated;
}

int64_t gmemuf_zero(int fd, uint64_t offset, uint64_t len)
{
	uint64_t pos = 0, done;
	int64_t zeroed = 0;
	int ret;

	/* Not left to the loop, which would take an empty range as done. */
	if (bad_range(offset, len))
		return -EINVAL;
	/* As populate_iov(): GMEMUF_IOC_ZERO stops at a present page. */
	while (pos < len) {
		done = 0;
		ret = range_ioctl(fd, GMEMUF_IOC_ZERO, offset + pos, len - pos,
				  &done);
		if (ret == -EEXIST)
			done = GMEMUF_PAGE_SIZE;
		else if (ret)
			return ret;
		else if (!done || !page_aligned(done))
			return -EIO;	/* never from a guest_memfd */
		else
			zeroed += done / GMEMUF_PAGE_SIZE;
		pos += done;
	}
	return zeroed;
}

int gmemuf_handler_open(int fd)
{
	int hfd = ioctl(fd, GMEMUF_IOC_HANDLER, 0);

	return hfd < 0 ? file_errno(errno) : hfd;
}

const char *gmemuf_strerror(int err)
{
	const char *s;

	/* -INT_MIN does not fit in an int; it is no errno anyway. */
	if (err < 0 && err != INT_MIN)
		err = -err;
	switch (err) {
	case 0:
		return "Success";
	case EOPNOTSUPP:
		return "Not supported: no guest_memfd userfault in this kernel, or not a userfault guest_memfd";
	case EEXIST:
		return "Page already present";
	case ESHUTDOWN:
		return "Handler stopped";
	case EPROTO:
		return "Not a fault fetch completion";
	case ENOSPC:
		return "Too many handlers on this guest_memfd";
	}
	s = strerrordesc_np(err);
	return s ? s : "Unknown error";
}
