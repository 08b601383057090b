// SPDX-License-Identifier: GPL-2.0-only
/*
 * Network namespaces and a veth pair between them, over rtnetlink: see
 * netns.h. One request per netlink socket, each acknowledged, so that an
 * error is reported by the call that caused it.
 */
#include <arpa/inet.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#include "netns.h"

struct nl_req {
	struct nlmsghdr nh;
	char buf[1024];
};

static void *nl_tail(struct nlmsghdr *nh)
{
	return (char *)nh + NLMSG_ALIGN(nh->nlmsg_len);
}

static void nl_put(struct nlmsghdr *nh, const void *data, size_t len)
{
	memcpy(nl_tail(nh), data, len);
	nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + len;
}

static void nl_attr(struct nlmsghdr *nh, int type, const void *data,
		    size_t len)
{
	struct rtattr *rta = nl_tail(nh);

	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

static struct rtattr *nl_nest(struct nlmsghdr *nh, int type)
{
	struct rtattr *nest = nl_tail(nh);

	nl_attr(nh, type, NULL, 0);
	return nest;
}

static void nl_nest_end(struct nlmsghdr *nh, struct rtattr *nest)
{
	nest->rta_len = (char *)nl_tail(nh) - (char *)nest;
}

/* Send @nh in the current namespace and wait for its acknowledgement. */
static void nl_talk(struct nlmsghdr *nh, const char *what)
{
	char buf[4096];
	struct nlmsghdr *ack = (struct nlmsghdr *)buf;
	struct nlmsgerr *e;
	ssize_t n;
	int fd;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		err(1, "socket(NETLINK_ROUTE)");
	nh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (send(fd, nh, nh->nlmsg_len, 0) != (ssize_t)nh->nlmsg_len)
		err(1, "netlink: send %s", what);
	n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0)
		err(1, "netlink: recv %s", what);
	close(fd);
	if (n < (ssize_t)NLMSG_LENGTH(sizeof(*e)) ||
	    ack->nlmsg_type != NLMSG_ERROR)
		errx(1, "netlink: %s: no acknowledgement", what);
	e = NLMSG_DATA(ack);
	if (e->error) {
		errno = -e->error;
		err(1, "netlink: %s", what);
	}
}

static void link_req(struct nl_req *req, int type, int flags, int index)
{
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = index };

	memset(req, 0, sizeof(*req));
	req->nh.nlmsg_len = NLMSG_LENGTH(0);
	req->nh.nlmsg_type = type;
	req->nh.nlmsg_flags = flags;
	nl_put(&req->nh, &ifi, sizeof(ifi));
}

static int ifindex(const char *name)
{
	int index = if_nametoindex(name);

	if (!index)
		err(1, "interface %s", name);
	return index;
}

static void link_up(const char *name)
{
	struct nl_req req;
	struct ifinfomsg *ifi;

	link_req(&req, RTM_NEWLINK, 0, ifindex(name));
	ifi = NLMSG_DATA(&req.nh);
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	nl_talk(&req.nh, "set link up");
}

static void addr_add(const char *name, const char *cidr)
{
	struct ifaddrmsg ifa = { .ifa_family = AF_INET };
	char ip[INET_ADDRSTRLEN];
	struct in_addr addr;
	struct nl_req req;
	unsigned int prefix;

	if (sscanf(cidr, "%15[0-9.]/%u", ip, &prefix) != 2 || prefix > 32 ||
	    inet_pton(AF_INET, ip, &addr) != 1)
		errx(1, "bad address %s (want a.b.c.d/n)", cidr);
	ifa.ifa_prefixlen = prefix;
	ifa.ifa_index = ifindex(name);

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(0);
	req.nh.nlmsg_type = RTM_NEWADDR;
	req.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	nl_put(&req.nh, &ifa, sizeof(ifa));
	nl_attr(&req.nh, IFA_LOCAL, &addr, sizeof(addr));
	nl_attr(&req.nh, IFA_ADDRESS, &addr, sizeof(addr));
	nl_talk(&req.nh, "add address");
}

void netns_enter(int nsfd)
{
	if (setns(nsfd, CLONE_NEWNET))
		err(1, "setns(CLONE_NEWNET)");
}

static int netns_current(void)
{
	int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		err(1, "/proc/self/ns/net");
	return fd;
}

int netns_create(void)
{
	int home = netns_current(), ns;

	/* The namespace lives on as long as an fd refers to it. */
	if (unshare(CLONE_NEWNET))
		err(1, "unshare(CLONE_NEWNET)");
	ns = netns_current();
	link_up("lo");
	netns_enter(home);
	close(home);
	return ns;
}

void netns_veth(const char *name_a, int ns_a, const char *addr_a,
		const char *name_b, int ns_b, const char *addr_b)
{
	struct rtattr *linkinfo, *data, *peer;
	struct ifinfomsg peer_ifi = { .ifi_family = AF_UNSPEC };
	int home = netns_current();
	struct nl_req req;
	__u32 fd;

	/* Create the pair here, then move each end to its namespace. */
	link_req(&req, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0);
	nl_attr(&req.nh, IFLA_IFNAME, name_a, strlen(name_a) + 1);
	linkinfo = nl_nest(&req.nh, IFLA_LINKINFO);
	nl_attr(&req.nh, IFLA_INFO_KIND, "veth", 4);
	data = nl_nest(&req.nh, IFLA_INFO_DATA);
	peer = nl_nest(&req.nh, VETH_INFO_PEER);
	nl_put(&req.nh, &peer_ifi, sizeof(peer_ifi));
	nl_attr(&req.nh, IFLA_IFNAME, name_b, strlen(name_b) + 1);
	nl_nest_end(&req.nh, peer);
	nl_nest_end(&req.nh, data);
	nl_nest_end(&req.nh, linkinfo);
	nl_talk(&req.nh, "create veth pair");

	link_req(&req, RTM_NEWLINK, 0, ifindex(name_a));
	fd = ns_a;
	nl_attr(&req.nh, IFLA_NET_NS_FD, &fd, sizeof(fd));
	nl_talk(&req.nh, "move veth end");
	link_req(&req, RTM_NEWLINK, 0, ifindex(name_b));
	fd = ns_b;
	nl_attr(&req.nh, IFLA_NET_NS_FD, &fd, sizeof(fd));
	nl_talk(&req.nh, "move veth end");

	netns_enter(ns_a);
	addr_add(name_a, addr_a);
	link_up(name_a);
	netns_enter(ns_b);
	addr_add(name_b, addr_b);
	link_up(name_b);
	netns_enter(home);
	close(home);
}
