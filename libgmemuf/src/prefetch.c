// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Prefetch: populate the pages still missing, in the caller's order, a
 * batch at a time, asking the caller only for pages that are missing, and
 * taking a page populated meanwhile (by a demand fault's handler) as done.
 */
#include <errno.h>
#include <stdlib.h>

#include "private.h"

/*
 * A batch whose pages lie within this many pages of each other is checked
 * with one bitmap read (of 4 KiB); others page by page.
 */
#define SPAN_PAGES	32768

struct prefetch {
	int fd;
	unsigned int batch;
	uint64_t *missing;		/* offsets of the batch still missing */
	struct gmemuf_page *pages;
	void *buf;			/* batch pages, filled by the caller */
	uint64_t *bitmap;		/* SPAN_PAGES bits */
};

static int test_bit(const uint64_t *bitmap, uint64_t i)
{
	return (bitmap[i / 64] >> (i % 64)) & 1;
}

/* Keep in p->missing the pages of @offsets[@nr] that are missing now. */
static int64_t still_missing(struct prefetch *p, const uint64_t *offsets,
			     unsigned int nr)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	unsigned int i, n = 0;
	int64_t ret;

	for (i = 0; i < nr; i++) {
		if (!page_aligned(offsets[i]))
			return -EINVAL;
		lo = offsets[i] < lo ? offsets[i] : lo;
		hi = offsets[i] > hi ? offsets[i] : hi;
	}
	if ((hi - lo) / GMEMUF_PAGE_SIZE < SPAN_PAGES) {
		ret = gmemuf_read_bitmap(p->fd, lo, hi - lo + GMEMUF_PAGE_SIZE,
					 p->bitmap);
		if (ret < 0)
			return ret;
	}
	for (i = 0; i < nr; i++) {
		if ((hi - lo) / GMEMUF_PAGE_SIZE < SPAN_PAGES)
			ret = test_bit(p->bitmap,
				       (offsets[i] - lo) / GMEMUF_PAGE_SIZE);
		else
			ret = gmemuf_count_missing(p->fd, offsets[i],
						   GMEMUF_PAGE_SIZE);
		if (ret < 0)
			return ret;
		if (ret)
			p->missing[n++] = offsets[i];
	}
	return n;
}

/* Populate the missing pages of one batch of the order. */
static int64_t prefetch_batch(struct prefetch *p, const uint64_t *offsets,
			      unsigned int nr, gmemuf_prefetch_fn fn, void *arg)
{
	int64_t n = still_missing(p, offsets, nr);
	unsigned int i;
	int ret;

	if (n <= 0)
		return n;
	ret = fn(arg, p->missing, (unsigned int)n, p->buf);
	if (ret)
		return ret < 0 ? ret : -EINVAL;
	for (i = 0; i < n; i++) {
		p->pages[i].offset = p->missing[i];
		p->pages[i].data = (char *)p->buf + i * GMEMUF_PAGE_SIZE;
	}
	return gmemuf_populate_batch(p->fd, p->pages, (size_t)n);
}

int64_t gmemuf_prefetch(int fd, const uint64_t *order, size_t nr,
			unsigned int batch, gmemuf_prefetch_fn fn, void *arg)
{
	struct prefetch p = { .fd = fd, .batch = batch ? batch : 64 };
	int64_t populated = 0, ret = 0;
	size_t i, take;

	/* No pages: nothing to do, and nothing else to check. */
	if (!nr)
		return 0;
	if (!fn || !order || p.batch > GMEMUF_FETCH_MAX)
		return -EINVAL;
	p.missing = calloc(p.batch, sizeof(*p.missing));
	p.pages = calloc(p.batch, sizeof(*p.pages));
	p.bitmap = calloc(SPAN_PAGES / 64, sizeof(*p.bitmap));
	if (posix_memalign(&p.buf, GMEMUF_PAGE_SIZE,
			   (size_t)p.batch * GMEMUF_PAGE_SIZE))
		p.buf = NULL;
	if (!p.missing || !p.pages || !p.bitmap || !p.buf)
		ret = -ENOMEM;
	for (i = 0; !ret && i < nr; i += take) {
		take = nr - i < p.batch ? nr - i : p.batch;
		ret = prefetch_batch(&p, order + i, (unsigned int)take, fn,
				     arg);
		if (ret > 0) {
			populated += ret;
			ret = 0;
		}
	}
	free(p.missing);
	free(p.pages);
	free(p.bitmap);
	free(p.buf);
	return ret < 0 ? ret : populated;
}
