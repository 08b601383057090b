/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Two network namespaces joined by a veth pair, made with rtnetlink: the
 * test VM has only busybox, whose ip cannot, and no libraries.
 */
#ifndef EXAMPLES_NETNS_H
#define EXAMPLES_NETNS_H

/* A new network namespace with lo up, as an fd; the caller stays where it was. */
int netns_create(void);
/* Move the calling thread into the namespace of @nsfd. */
void netns_enter(int nsfd);
/*
 * A veth pair: @name_a in the namespace @ns_a with the address @addr_a
 * ("10.0.0.1/24"), @name_b likewise, both up.
 */
void netns_veth(const char *name_a, int ns_a, const char *addr_a,
		const char *name_b, int ns_b, const char *addr_b);

#endif /* EXAMPLES_NETNS_H */
