"""A slow, obviously-correct model of the DNS cache, for differential tests.

It keeps a plain dict of links ``(owner, is_cname, target) -> deadline`` and recomputes the
effective mapping from scratch by enumerating every simple CNAME path, so it shares no code
or data structure with :mod:`fqdnpolicy.dns.cache`.
"""

from __future__ import annotations

import math

from fqdnpolicy.dns.wire import Extracted

Link = tuple[str, bool, str]


class ReferenceCache:
    def __init__(
        self,
        *,
        min_ttl: float,
        max_ttl: float,
        extra_ttl: float,
        grace_period: float,
        max_ips_per_name: int,
        max_names: int,
        max_chain_depth: int,
    ) -> None:
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.extra_ttl = extra_ttl
        self.grace_period = grace_period
        self.max_ips_per_name = max_ips_per_name
        self.max_names = max_names
        self.depth = max_chain_depth
        self.links: dict[Link, float] = {}

    def lifetime(self, ttl: int) -> float:
        if ttl < 0 or ttl > 2**31 - 1:
            ttl = 0
        return min(max(ttl + self.extra_ttl, self.min_ttl), self.max_ttl) + self.grace_period

    def ingest(self, ex: Extracted, now: float) -> None:
        if not ex.is_response or ex.opcode != 0 or ex.rcode != 0 or ex.qname is None:
            return
        depth = {ex.qname: 0}
        changed = True
        while changed:  # fixpoint: the fewest CNAME links from the question to each name
            changed = False
            for r in ex.records:
                if r.rtype != 5 or r.name not in depth or depth[r.name] >= self.depth:
                    continue
                if depth[r.name] + 1 < depth.get(r.value, math.inf):
                    depth[r.value] = depth[r.name] + 1
                    changed = True
        for r in ex.records:
            if r.name not in depth or r.rtype not in (1, 5, 28):
                continue
            if r.rtype == 5 and depth[r.name] >= self.depth:
                continue
            if r.rtype != 5 and r.value in ("0.0.0.0", "::"):
                continue
            deadline = now + self.lifetime(r.ttl)
            if deadline > now:
                self.put(r.name, r.rtype == 5, r.value, deadline)
        self.evict()

    def put(self, owner: str, is_cname: bool, target: str, deadline: float) -> None:
        key = (owner, is_cname, target)
        if key in self.links:
            self.links[key] = max(self.links[key], deadline)
            return
        self.links[key] = deadline
        same = [(d, t) for (o, c, t), d in self.links.items() if o == owner and c == is_cname]
        if len(same) > self.max_ips_per_name:
            _, victim = min(same)
            del self.links[owner, is_cname, victim]

    def owners(self) -> set[str]:
        return {o for o, _, _ in self.links}

    def evict(self) -> None:
        while len(self.owners()) > self.max_names:
            _, victim = min(
                (min(d for (o, _, _), d in self.links.items() if o == name), name)
                for name in self.owners()
            )
            self.links = {k: d for k, d in self.links.items() if k[0] != victim}

    def expire(self, now: float) -> None:
        self.links = {k: d for k, d in self.links.items() if d > now}

    def restart(self, now: float) -> None:
        """What survives a save and a load into a fresh cache: links with > 1 s left."""
        self.links = {k: d for k, d in self.links.items() if d - now > 1}

    def effective(self, name: str) -> dict[str, float]:
        out: dict[str, float] = {}

        def walk(node: str, width: float, links_used: int, visited: frozenset[str]) -> None:
            for (owner, is_cname, target), deadline in self.links.items():
                if owner != node:
                    continue
                w = min(width, deadline)
                if not is_cname:
                    out[target] = max(out.get(target, -math.inf), w)
                elif links_used < self.depth and target not in visited:
                    walk(target, w, links_used + 1, visited | {target})

        walk(name, math.inf, 0, frozenset({name}))
        return out

    def mapping(self) -> dict[str, dict[str, float]]:
        result = {name: self.effective(name) for name in self.owners()}
        return {name: m for name, m in result.items() if m}

    def next_expiry(self) -> float | None:
        return min(self.links.values(), default=None)
