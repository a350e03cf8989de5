// SPDX-License-Identifier: GPL-2.0
// fqdnpolicy eBPF datapath: one TC (clsact) program pair per node, attached to every endpoint's
// host-side interface. "from_workload" runs at the interface's TC ingress (the workload's
// egress), "to_workload" at its TC egress (the workload's ingress). Policy lives in maps and is
// written by fqdnpolicy_ebpf.kernel; the layouts here must match fqdnpolicy_ebpf.layout.
//
// FQE_WORDS (set bitmap words) is given by the loader: policy changes are map updates, the
// program only changes when the number of sets outgrows the bitmap.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef FQE_WORDS
#define FQE_WORDS 1
#endif
#define FQE_MAX_PORTS 32 /* ranges in one port condition of one rule */

#define KIND_RULE 0
#define KIND_TIER_END 1
#define ACT_ALLOW 1
#define ACT_DENY 2
#define ACT_LOG 3
#define ACT_PASS 4

#define F_PROTO 0x01
#define F_NOT_PROTO 0x02
#define F_ICMP 0x04
#define F_NOT_ICMP 0x08
#define F_ICMP_TYPE 0x10
#define F_ICMP_CODE 0x20
#define F_NOT_ICMP_TYPE 0x40
#define F_NOT_ICMP_CODE 0x80

#define NS 1000000000ULL

struct lpm_key {
	__u32 prefixlen; /* 8 (the family byte) + the address prefix length */
	__u8 family;     /* 4 or 6 */
	__u8 addr[16];   /* IPv4 in the first 4 bytes */
} __attribute__((packed));

struct members {
	__u64 bits[FQE_WORDS];  /* sets the address is in (covering prefixes merged in) */
	__u64 timed[FQE_WORDS]; /* of those, the ones with a deadline in `deadlines` */
};

struct deadline_key {
	__u32 set;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct table_key {
	__u32 ifindex;
	__u32 direction; /* 0 from the workload (egress policy), 1 to it (ingress policy) */
};

struct table {
	__u32 start; /* first entry in `rules` */
	__u32 count; /* entries; 0: no policy, allow */
};

struct rule {
	__u8 kind, action, families, flags;
	__u8 proto, not_proto, icmp_type, icmp_code;
	__u8 not_icmp_type, not_icmp_code, pad[2];
	__u32 next_tier; /* index (in the table) of the next tier's first entry: Pass */
	__u32 counter;   /* slot in `log_counts` */
	__u32 port_off[4]; /* dst, not dst, src, not src: first entry in `ports` */
	__u32 port_cnt[4];
	__u32 pad2;
	__u64 in_mask[FQE_WORDS];
	__u64 not_in_mask[FQE_WORDS];
};

struct port_entry {
	__u16 lo, hi;
	__u8 proto; /* 0: any */
	__u8 kind;  /* 0: range, 1: a named port of the peer (name in `name`) */
	__u16 pad;
	__u32 name;
};

struct named_key {
	__u32 name;
	__u8 family, proto;
	__u16 port;
	__u8 addr[16];
};

struct ct_key {
	__u32 ifindex;
	__u8 hook, proto, family, pad;
	__u8 src[16], dst[16];
	__u16 sport, dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, struct members);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fqe_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct deadline_key);
	__type(value, __u64);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fqe_deadlines SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct table_key);
	__type(value, struct table);
	__uint(max_entries, 16384);
} fqe_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rule);
	__uint(max_entries, 65536);
} fqe_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct port_entry);
	__uint(max_entries, 65536);
} fqe_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct named_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fqe_named SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 65536);
} fqe_log_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, __u64); /* last seen, ns */
	__uint(max_entries, 262144);
} fqe_conntrack SEC(".maps");

struct pkt {
	struct ct_key ct;
	__u8 peer[16];
	__u8 famflag; /* 1 IPv4, 2 IPv6 */
	__u8 has_ports, is_icmp, icmp_type, icmp_code;
	__u16 sport, dport; /* host order */
	__u64 bits[FQE_WORDS];
};

struct eval {
	struct pkt *p;
	__u32 start, count, skip_to;
	int verdict;
};

static __always_inline int ctz64(__u64 x)
{
	int n = 0;
	if (!(x & 0xffffffffULL)) { n += 32; x >>= 32; }
	if (!(x & 0xffffULL)) { n += 16; x >>= 16; }
	if (!(x & 0xffULL)) { n += 8; x >>= 8; }
	if (!(x & 0xfULL)) { n += 4; x >>= 4; }
	if (!(x & 0x3ULL)) { n += 2; x >>= 2; }
	if (!(x & 0x1ULL)) n += 1;
	return n;
}

static __always_inline void lookup_members(struct pkt *p)
{
	struct lpm_key key = {};
	__u64 now;
	int w, k;

	key.family = p->ct.family;
	key.prefixlen = 8 + (p->ct.family == 4 ? 32 : 128);
	__builtin_memcpy(key.addr, p->peer, 16);
	struct members *m = bpf_map_lookup_elem(&fqe_members, &key);
	if (!m)
		return;
	now = bpf_ktime_get_ns();
	for (w = 0; w < FQE_WORDS; w++) {
		__u64 bits = m->bits[w];
		__u64 timed = m->timed[w];
		// A DNS-learned member counts until its deadline, without waiting for a removal.
		for (k = 0; k < 64 && timed; k++) {
			int b = ctz64(timed);
			struct deadline_key dk = {};
			timed &= timed - 1;
			dk.set = w * 64 + b;
			dk.family = p->ct.family;
			__builtin_memcpy(dk.addr, p->peer, 16);
			__u64 *deadline = bpf_map_lookup_elem(&fqe_deadlines, &dk);
			if (!deadline || *deadline <= now)
				bits &= ~(1ULL << b);
		}
		p->bits[w] = bits;
	}
}

struct port_walk {
	struct pkt *p;
	__u32 off;
	__u16 port;
	int hit;
};

static long port_entry_matches(__u32 j, void *data)
{
	struct port_walk *w = data;
	struct pkt *p = w->p;
	__u32 idx = w->off + j;
	struct port_entry *e = bpf_map_lookup_elem(&fqe_ports, &idx);

	if (!e)
		return 1;
	if (e->kind == 0) {
		if ((e->proto == 0 || e->proto == p->ct.proto) && e->lo <= w->port && w->port <= e->hi)
			w->hit = 1;
	} else {
		struct named_key nk = {};
		nk.name = e->name;
		nk.family = p->ct.family;
		nk.proto = p->ct.proto;
		nk.port = w->port;
		__builtin_memcpy(nk.addr, p->peer, 16);
		if (bpf_map_lookup_elem(&fqe_named, &nk))
			w->hit = 1;
	}
	return w->hit;
}

// A callback per entry (bpf_loop) keeps the verifier's work independent of the count.
static __always_inline int port_matches(struct pkt *p, __u32 off, __u32 cnt, __u16 port)
{
	struct port_walk w = {.p = p, .off = off, .port = port};

	bpf_loop(cnt > FQE_MAX_PORTS ? FQE_MAX_PORTS : cnt, port_entry_matches, &w, 0);
	return w.hit;
}

static __always_inline int rule_matches(struct rule *r, struct pkt *p)
{
	int w, k;

	if (!(r->families & p->famflag))
		return 0;
	if ((r->flags & F_PROTO) && p->ct.proto != r->proto)
		return 0;
	if ((r->flags & F_NOT_PROTO) && p->ct.proto == r->not_proto)
		return 0;
	if (r->flags & F_ICMP) {
		if (!p->is_icmp)
			return 0;
		if ((r->flags & F_ICMP_TYPE) && p->icmp_type != r->icmp_type)
			return 0;
		if ((r->flags & F_ICMP_CODE) && p->icmp_code != r->icmp_code)
			return 0;
	}
	if ((r->flags & F_NOT_ICMP) && p->is_icmp &&
	    (!(r->flags & F_NOT_ICMP_TYPE) || p->icmp_type == r->not_icmp_type) &&
	    (!(r->flags & F_NOT_ICMP_CODE) || p->icmp_code == r->not_icmp_code))
		return 0;
	for (w = 0; w < FQE_WORDS; w++) {
		if ((p->bits[w] & r->in_mask[w]) != r->in_mask[w])
			return 0;
		if (p->bits[w] & r->not_in_mask[w])
			return 0;
	}
	for (k = 0; k < 4; k++) {
		__u32 cnt = r->port_cnt[k];
		if (!cnt)
			continue;
		// A port condition never matches a packet without ports (as `th dport` in nft).
		if (!p->has_ports)
			return 0;
		int hit = port_matches(p, r->port_off[k], cnt, k < 2 ? p->dport : p->sport);
		if ((k & 1) == hit)
			return 0;
	}
	return 1;
}

static long eval_entry(__u32 i, void *data)
{
	struct eval *c = data;
	struct pkt *p = c->p;

	if (i < c->skip_to)
		return 0;
	__u32 idx = c->start + i;
	struct rule *r = bpf_map_lookup_elem(&fqe_rules, &idx);
	if (!r) {
		c->verdict = TC_ACT_SHOT;
		return 1;
	}
	if (r->kind == KIND_TIER_END) {
		if (r->action == ACT_DENY) {
			c->verdict = TC_ACT_SHOT;
			return 1;
		}
		return 0;
	}
	if (!rule_matches(r, p))
		return 0;
	switch (r->action) {
	case ACT_ALLOW:
		c->verdict = TC_ACT_OK;
		return 1;
	case ACT_DENY:
		c->verdict = TC_ACT_SHOT;
		return 1;
	case ACT_LOG: {
		__u32 slot = r->counter;
		__u64 *n = bpf_map_lookup_elem(&fqe_log_counts, &slot);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	case ACT_PASS:
		c->skip_to = r->next_tier;
		return 0;
	}
	return 0;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *l4;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return 0;
		p->ct.family = 4;
		p->famflag = 1;
		p->ct.proto = ip->protocol;
		__builtin_memcpy(p->ct.src, &ip->saddr, 4);
		__builtin_memcpy(p->ct.dst, &ip->daddr, 4);
		if (ip->frag_off & bpf_htons(0x1fff))
			return 1; /* a later fragment: no transport header */
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 0;
		p->ct.family = 6;
		p->famflag = 2;
		p->ct.proto = ip6->nexthdr;
		__builtin_memcpy(p->ct.src, &ip6->saddr, 16);
		__builtin_memcpy(p->ct.dst, &ip6->daddr, 16);
		l4 = ip6 + 1;
	} else {
		return 0;
	}
	__u8 proto = p->ct.proto;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP ||
	    proto == IPPROTO_UDPLITE) {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 1;
		p->has_ports = 1;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		p->ct.sport = ports[0];
		p->ct.dport = ports[1];
	} else if ((proto == IPPROTO_ICMP && p->ct.family == 4) ||
		   (proto == IPPROTO_ICMPV6 && p->ct.family == 6)) {
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > end)
			return 1;
		p->is_icmp = 1;
		p->icmp_type = icmp[0];
		p->icmp_code = icmp[1];
		__u8 t = icmp[0];
		// Echo request and reply share the identifier both ways, so a reply is the reverse
		// of its request in the conntrack key.
		if (t == 8 || t == 0 || t == 128 || t == 129) {
			__u16 id = *(__u16 *)(icmp + 4);
			p->ct.sport = id;
			p->ct.dport = id;
		}
	}
	return 1;
}

static __always_inline __u64 idle_limit(__u8 proto)
{
	return proto == IPPROTO_TCP ? 7200 * NS : 120 * NS;
}

static __always_inline int seen(struct ct_key *key, __u64 now)
{
	__u64 *last = bpf_map_lookup_elem(&fqe_conntrack, key);
	if (!last || now - *last > idle_limit(key->proto))
		return 0;
	*last = now;
	return 1;
}

static __always_inline int handle(struct __sk_buff *skb, __u32 direction)
{
	struct pkt p = {};
	struct table_key tk = {};
	struct ct_key rev = {};
	__u64 now;

	if (!parse(skb, &p))
		return TC_ACT_OK;
	p.ct.ifindex = skb->ifindex;
	p.ct.hook = direction;
	tk.ifindex = skb->ifindex;
	tk.direction = direction;
	struct table *t = bpf_map_lookup_elem(&fqe_tables, &tk);
	if (!t)
		return TC_ACT_OK; /* not an endpoint's interface */

	now = bpf_ktime_get_ns();
	if (seen(&p.ct, now))
		return TC_ACT_OK;
	rev.ifindex = p.ct.ifindex;
	rev.hook = direction ^ 1;
	rev.proto = p.ct.proto;
	rev.family = p.ct.family;
	__builtin_memcpy(rev.src, p.ct.dst, 16);
	__builtin_memcpy(rev.dst, p.ct.src, 16);
	rev.sport = p.ct.dport;
	rev.dport = p.ct.sport;
	if (seen(&rev, now))
		return TC_ACT_OK;

	// Allowed flows are remembered even without a policy here: the reply must get back
	// through this interface's other direction, which may have one.
	struct eval c = {.p = &p, .start = t->start, .count = t->count, .verdict = TC_ACT_OK};
	if (t->count) {
		__builtin_memcpy(p.peer, direction == 0 ? p.ct.dst : p.ct.src, 16);
		lookup_members(&p);
		bpf_loop(t->count, eval_entry, &c, 0);
	}
	if (c.verdict == TC_ACT_OK)
		bpf_map_update_elem(&fqe_conntrack, &p.ct, &now, BPF_ANY);
	return c.verdict;
}

SEC("tc")
int fqe_from_workload(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

SEC("tc")
int fqe_to_workload(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

char LICENSE[] SEC("license") = "GPL";
