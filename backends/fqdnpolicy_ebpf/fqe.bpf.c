// SPDX-License-Identifier: GPL-2.0
// fqdnpolicy eBPF datapath: one TC (clsact) program pair per node, attached to every endpoint's
// host-side interface. "from_workload" runs at the interface's TC ingress (the workload's
// egress), "to_workload" at its TC egress (the workload's ingress). Policy lives in maps and is
// written by fqdnpolicy_ebpf.kernel; the layouts here must match fqdnpolicy_ebpf.layout.
//
// FQE_SLOTS (set memberships one address entry holds) is given by the loader: policy changes
// are map updates, the program only changes when an address is in more sets than that.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef FQE_SLOTS
#define FQE_SLOTS 4
#endif
#define FQE_MAX_PORTS 32 /* ranges in one port condition of one rule */
#define FQE_RULE_SETS 4  /* sets on one side (in, not in) of one rule */
/* Index lists merged per packet: the table's unindexed entries and one per peer set. */
#define FQE_CURSORS 8
#define FQE_END 0xffffffffU
/* `by_set` key of a table's unindexed entries a packet of one protocol can need: this | proto */
#define FQE_PROTOCOL_KEY 0xffffff00U

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

struct host_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

// Sparse: the sets an address or prefix is in (covering prefixes merged in), by set id.
struct members {
	__u32 count;
	__u32 sets[FQE_SLOTS];
	__u64 deadline[FQE_SLOTS]; /* CLOCK_MONOTONIC ns of a DNS-learned membership; 0: none */
};

struct table_key {
	__u32 ifindex;
	__u32 direction; /* 0 from the workload (egress policy), 1 to it (ingress policy) */
};

struct table {
	__u32 id;      /* this rule table's key in `by_set` (endpoints with equal tables share one) */
	__u32 start;   /* first entry in `rules` */
	__u32 count;   /* entries; 0: no policy, allow */
	__u32 any_off; /* in `index`: the entries a peer's sets do not select (walked always) */
	__u32 any_cnt;
	__u32 tcp_off, tcp_cnt; /* the same, without the rules of other protocols than TCP */
	__u32 udp_off, udp_cnt; /* and UDP (other protocols: in `by_set`) */
	__u32 log_base; /* this endpoint's first counter in `log_counts` (tables are shared) */
};

struct by_set_key {
	__u32 table;
	__u32 set;
};

struct span {
	__u32 off; /* in `index`: positions (in the table, ascending) of the entries whose */
	__u32 cnt; /* peer must be in this set */
};

struct rule {
	__u8 kind, action, families, flags;
	__u8 proto, not_proto, icmp_type, icmp_code;
	__u8 not_icmp_type, not_icmp_code, pad[2];
	__u32 next_tier; /* index (in the table) of the next tier's first entry: Pass */
	__u32 counter;   /* a Log rule's counter in `log_counts`, from the endpoint's log_base */
	__u32 port_off[4]; /* dst, not dst, src, not src: first entry in `ports` */
	__u32 port_cnt[4];
	__u8 n_in, n_not_in, pad2[2];
	__u32 in[FQE_RULE_SETS];     /* the peer must be in all of these sets */
	__u32 not_in[FQE_RULE_SETS]; /* and in none of these */
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

/* Full-length entries (single addresses, most DNS members) live here instead of in the trie:
   the longest prefix there can be, so a hit needs no trie walk. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct host_key);
	__type(value, struct members);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fqe_hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct table_key);
	__type(value, struct table);
	__uint(max_entries, 1 << 17);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fqe_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct by_set_key);
	__type(value, struct span);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fqe_by_set SEC(".maps");

/* Sized by the loader (as `rules` and `ports`) to what the tables need. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 65536);
} fqe_index SEC(".maps");

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
	__u8 opens; /* a TCP SYN without ACK: a connection opening, never an established one */
	__u16 sport, dport; /* host order */
};

// The peer's memberships and the merge's cursors. In a map value, not on the stack: the
// verifier tracks stack contents exactly, and every combination of them would be a state of
// its own to verify the rule walk for.
struct scratch {
	__u64 live; /* bit k: sets[k] is one of the peer's memberships now */
	__u32 linear, used; /* cursors in use */
	__u32 nsets, total; /* slots of the peer's entry; entries the merge yields */
	__u32 sets[FQE_SLOTS];
	// The entries to test, in table order: a merge of ascending position lists (the
	// table's unindexed entries, and those of each peer set), or every entry when `linear`.
	__u32 at[FQE_CURSORS], end[FQE_CURSORS], head[FQE_CURSORS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct scratch);
	__uint(max_entries, 1);
} fqe_scratch SEC(".maps");

struct eval {
	struct pkt *p;
	struct scratch *sc;
	__u32 start, count, skip_to, log_base;
	int verdict;
};

static __always_inline void lookup_members(struct pkt *p, struct scratch *sc, __u64 now)
{
	struct host_key host = {};
	struct lpm_key key = {};
	int k;

	host.family = p->ct.family;
	__builtin_memcpy(host.addr, p->peer, 16);
	struct members *m = bpf_map_lookup_elem(&fqe_hosts, &host);
	if (!m) {
		key.family = p->ct.family;
		key.prefixlen = 8 + (p->ct.family == 4 ? 32 : 128);
		__builtin_memcpy(key.addr, p->peer, 16);
		m = bpf_map_lookup_elem(&fqe_members, &key);
	}
	if (!m)
		return;
	sc->nsets = m->count < FQE_SLOTS ? m->count : FQE_SLOTS;
	for (k = 0; k < FQE_SLOTS; k++) {
		if (k >= m->count)
			break;
		// A DNS-learned member counts until its deadline, without waiting for a removal.
		__u64 deadline = m->deadline[k];
		if (deadline && deadline <= now)
			continue;
		sc->sets[k] = m->sets[k];
		sc->live |= 1ULL << k;
	}
}

static __always_inline int in_set(struct scratch *sc, __u32 set)
{
	int k;

	for (k = 0; k < FQE_SLOTS && k < sc->nsets; k++)
		if ((sc->live >> k & 1) && sc->sets[k] == set)
			return 1;
	return 0;
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

static __always_inline int rule_matches(struct rule *r, struct pkt *p, struct scratch *sc)
{
	int j, k;

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
	for (j = 0; j < FQE_RULE_SETS; j++) {
		if (j < r->n_in && !in_set(sc, r->in[j]))
			return 0;
		if (j < r->n_not_in && in_set(sc, r->not_in[j]))
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

static __always_inline __u32 index_at(__u32 at)
{
	__u32 *pos = bpf_map_lookup_elem(&fqe_index, &at);
	return pos ? *pos : FQE_END;
}

struct lowest {
	struct scratch *sc;
	__u32 best, pick;
};

static long lowest_head(__u32 k, void *data)
{
	struct lowest *w = data;

	if (k >= FQE_CURSORS)
		return 1;
	__u32 head = w->sc->head[k];
	if (head < w->best) {
		w->best = head;
		w->pick = k;
	}
	return 0;
}

// The next position of the merge (FQE_END when every list is done). The cursor with the
// lowest head is found by a callback: unrolled, each comparison would double the states
// the verifier explores.
static __always_inline __u32 next_position(struct eval *c, struct scratch *sc, __u32 i)
{
	struct lowest w = {.sc = sc, .best = FQE_END};

	if (sc->linear)
		return i < c->count ? i : FQE_END;
	// One or two lists (the unindexed entries and one peer set) are the common case.
	if (sc->used <= 2) {
		w.best = sc->head[0];
		if (sc->used == 2 && sc->head[1] < w.best) {
			w.best = sc->head[1];
			w.pick = 1;
		}
	} else {
		bpf_loop(sc->used, lowest_head, &w, 0);
	}
	__u32 best = w.best, pick = w.pick;
	if (best == FQE_END || pick >= FQE_CURSORS)
		return FQE_END;
	sc->at[pick]++;
	sc->head[pick] = sc->at[pick] < sc->end[pick] ? index_at(sc->at[pick]) : FQE_END;
	return best;
}

static long eval_entry(__u32 i, void *data)
{
	struct eval *c = data;
	struct pkt *p = c->p;
	struct scratch *sc = c->sc;
	__u32 pos = next_position(c, sc, i);

	if (pos == FQE_END)
		return 1;
	if (pos < c->skip_to)
		return 0;
	__u32 idx = c->start + pos;
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
	if (!rule_matches(r, p, sc))
		return 0;
	switch (r->action) {
	case ACT_ALLOW:
		c->verdict = TC_ACT_OK;
		return 1;
	case ACT_DENY:
		c->verdict = TC_ACT_SHOT;
		return 1;
	case ACT_LOG: {
		__u32 slot = c->log_base + r->counter;
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

struct cursors {
	struct scratch *sc;
	__u32 table;
};

// A cursor for the list of the peer's k-th set in this table, if it has one. A callback:
// the verifier checks it once, not once per slot and count of cursors so far.
static long add_cursor(__u32 k, void *data)
{
	struct cursors *w = data;
	struct scratch *sc = w->sc;
	struct by_set_key key = {.table = w->table};

	if (k >= FQE_SLOTS || k >= 64)
		return 1;
	k &= FQE_SLOTS - 1; /* a power of two: the bound, in a form the verifier keeps */
	if (!(sc->live >> k & 1))
		return 0;
	key.set = sc->sets[k];
	struct span *s = bpf_map_lookup_elem(&fqe_by_set, &key);
	if (!s || !s->cnt)
		return 0;
	__u32 used = sc->used;
	if (used >= FQE_CURSORS) {
		sc->linear = 1;
		return 1;
	}
	sc->at[used] = s->off;
	sc->end[used] = s->off + s->cnt;
	sc->head[used] = index_at(s->off);
	sc->total += s->cnt;
	sc->used = used + 1;
	return 0;
}

// Cursor 0 walks the entries no peer set selects (of the packet's protocol or any); one more per peer set with entries here.
// More such sets than cursors: every entry is walked instead (the same verdict, slower).
static __always_inline __u32 start_cursors(struct scratch *sc, struct table *t, __u8 proto)
{
	struct cursors w = {.sc = sc, .table = t->id};
	struct by_set_key key = {.table = t->id, .set = FQE_PROTOCOL_KEY | proto};
	__u32 off = t->any_off, cnt = t->any_cnt;
	int k;

	// Rules of another protocol cannot match: the list of this one leaves them out.
	if (proto == IPPROTO_TCP) {
		off = t->tcp_off;
		cnt = t->tcp_cnt;
	} else if (proto == IPPROTO_UDP) {
		off = t->udp_off;
		cnt = t->udp_cnt;
	} else {
		struct span *of_proto = bpf_map_lookup_elem(&fqe_by_set, &key);
		if (of_proto) {
			off = of_proto->off;
			cnt = of_proto->cnt;
		}
	}
	for (k = 0; k < FQE_CURSORS; k++)
		sc->head[k] = FQE_END;
	sc->at[0] = off;
	sc->end[0] = off + cnt;
	if (cnt)
		sc->head[0] = index_at(off);
	sc->used = 1;
	sc->total = cnt;
	bpf_loop(sc->nsets, add_cursor, &w, 0);
	return sc->linear ? t->count : sc->total;
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
		__u8 *flags = (__u8 *)l4 + 13;
		if (proto == IPPROTO_TCP && (void *)(flags + 1) <= end)
			p->opens = (*flags & 0x12) == 0x02;
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
	// A SYN reusing the addresses and ports of a flow let through before opens a new
	// connection: the policy judges it, as kernel conntrack would call it new.
	if (!p.opens && seen(&p.ct, now))
		return TC_ACT_OK;
	rev.ifindex = p.ct.ifindex;
	rev.hook = direction ^ 1;
	rev.proto = p.ct.proto;
	rev.family = p.ct.family;
	__builtin_memcpy(rev.src, p.ct.dst, 16);
	__builtin_memcpy(rev.dst, p.ct.src, 16);
	rev.sport = p.ct.dport;
	rev.dport = p.ct.sport;
	if (!p.opens && seen(&rev, now))
		return TC_ACT_OK;

	// Allowed flows are remembered even without a policy here: the reply must get back
	// through this interface's other direction, which may have one.
	struct eval c = {.p = &p,
			 .start = t->start,
			 .count = t->count,
			 .log_base = t->log_base,
			 .verdict = TC_ACT_OK};
	if (t->count) {
		__u32 zero = 0;
		struct scratch *sc = bpf_map_lookup_elem(&fqe_scratch, &zero);
		if (!sc)
			return TC_ACT_SHOT;
		sc->live = 0;
		sc->linear = 0;
		sc->nsets = 0;
		c.sc = sc;
		__builtin_memcpy(p.peer, direction == 0 ? p.ct.dst : p.ct.src, 16);
		lookup_members(&p, sc, now);
		bpf_loop(start_cursors(sc, t, p.ct.proto), eval_entry, &c, 0);
	}
	if (c.verdict == TC_ACT_OK)
		bpf_map_update_elem(&fqe_conntrack, &p.ct, &now, BPF_ANY);
	else if (p.opens)
		bpf_map_delete_elem(&fqe_conntrack, &p.ct); /* the old flow's entry goes with it */
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
