"""The policy resolver: which policies apply to an endpoint, in which order, as programs.

Policies are filed in the label index by their selector, so an endpoint is tested only
against the policies that can select it. For each endpoint and direction the applying
policies are grouped by tier (tiers by order, policies by order then name), their rules bound
to the endpoint, and the result interned as a :class:`~fqdnpolicy.engine.programs.Program`:
endpoints alike (replicas) share one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fqdnpolicy.cluster import Endpoint
from fqdnpolicy.datapath import Direction
from fqdnpolicy.engine.compiler import (
    DIRECTIONS,
    Binding,
    CompiledPolicy,
    bind,
    order_key,
    peer_facts,
)
from fqdnpolicy.engine.grouping import Groups
from fqdnpolicy.engine.labelindex import LabelIndex
from fqdnpolicy.engine.programs import Block, Program
from fqdnpolicy.engine.results import Verdict
from fqdnpolicy.model import DEFAULT_TIER, DEFAULT_TIER_ORDER, Tier
from fqdnpolicy.scoping import Subject

__all__ = ["LabelsMemo", "PolicyResolver", "Resolved"]

#: Per direction: the keys of the applying policies and the endpoint's program.
Resolved = dict[Direction, tuple[frozenset[str], Program]]
#: What endpoints of equal labels share while one batch is resolved: the policies applying,
#: and the resolution itself when nothing in it was bound to the endpoint.
LabelsMemo = dict[frozenset[tuple[str, str]], tuple[list[CompiledPolicy], Resolved | None]]


class PolicyResolver:
    """Compiled policies and tiers in; each endpoint's programs out."""

    def __init__(self, tiers: Iterable[Tier], sets_of: Callable[[str], frozenset[int]]) -> None:
        self.tiers: dict[str, Tier] = {t.name: t for t in tiers}
        self.policies: dict[str, CompiledPolicy] = {}
        self._sets_of = sets_of
        self._index: LabelIndex[str, str] = LabelIndex()
        # Which endpoints each policy applies to, filed by the set of policies applying to
        # an endpoint (replicas share one).
        self._applying: Groups[str, str] = Groups()
        self._programs: dict[tuple[object, ...], Program] = {}
        self._live = 0  # live programs at the last collection

    # -- policies and tiers ------------------------------------------------------------------

    def add(self, compiled: CompiledPolicy) -> None:
        """File a compiled policy (replacing one with the same key)."""
        self.policies[compiled.key] = compiled
        self._index.add_selector(compiled.key, compiled.selector)

    def remove(self, key: str) -> CompiledPolicy | None:
        """Unfile a policy; returns it (None when unknown)."""
        compiled = self.policies.pop(key, None)
        if compiled is not None:
            self._index.discard_selector(key)
        return compiled

    def set_tier(self, tier: Tier) -> None:
        """Add or replace a tier; every program is built afresh after this."""
        self.tiers[tier.name] = tier
        self._programs.clear()

    def tier_sort_key(self, name: str) -> tuple[float, str]:
        """Order of a tier (Calico's default order for an implicit ``default`` tier)."""
        tier = self.tiers.get(name)
        if tier is None:
            return order_key(DEFAULT_TIER_ORDER if name == DEFAULT_TIER else None, name)
        return order_key(tier.spec.order, name)

    def tier_default(self, name: str) -> str:
        """The action ending a tier that has applying policies and no deciding rule."""
        tier = self.tiers.get(name)
        return "Deny" if tier is None else tier.spec.default_action

    # -- endpoints ---------------------------------------------------------------------------

    def add_endpoint(self, key: str, subject: Subject) -> None:
        """File an endpoint's labels (so new policies find it)."""
        self._index.add_subject(key, subject.effective_labels)

    def remove_endpoint(self, key: str, applied: Iterable[str]) -> None:
        """Unfile an endpoint, and forget that the policies in ``applied`` applied to it."""
        self._index.discard_subject(key)
        self._applying.leave(key, frozenset(applied))

    def selecting(self, compiled: CompiledPolicy, subjects: dict[str, Subject]) -> set[str]:
        """Endpoints (keys in ``subjects``) the policy's selector picks now."""
        selector = compiled.selector
        return {
            key
            for group in self._index.groups_for(selector)
            if subjects[next(iter(group))].matches(selector)
            for key in group
        }

    def applied_to(self, key: str) -> set[str]:
        """Endpoints a policy applied to at their last resolution."""
        found: set[str] = set()
        for members in self._applying.holding(key):
            found |= members
        return found

    def resolve(
        self,
        key: str,
        endpoint: Endpoint,
        subject: Subject,
        addresses: tuple[str | None, str | None],
        before: frozenset[str],
        memo: LabelsMemo,
    ) -> Resolved:
        """Every direction's applying policies and program for one endpoint.

        ``before``: the policies that applied at the endpoint's last resolution (to keep the
        record of which endpoints each policy applies to). ``memo``: shared by the endpoints
        of one batch, while no policy changes (selectors see only the labels, so endpoints
        of equal labels, replicas most often, get the same policies).
        """
        labels = subject.effective_labels
        same = frozenset(labels.items())
        found = memo.get(same)
        if found is not None and found[1] is not None:
            resolved = found[1]
        else:
            if found is not None:
                applying = found[0]
            else:
                applying = [
                    self.policies[k]
                    for k in self._index.selectors_for(labels)
                    if subject.matches(self.policies[k].selector)
                ]
            resolved, alike = self._programs_for(endpoint, addresses, applying)
            if found is None:
                memo[same] = (applying, resolved if alike else None)
        after = resolved["egress"][0] | resolved["ingress"][0]
        if after != before:
            self._applying.leave(key, before)
            if after:  # an endpoint no policy applies to is filed nowhere
                self._applying.join(key, after)
        return resolved

    def _programs_for(
        self,
        endpoint: Endpoint,
        addresses: tuple[str | None, str | None],
        applying: list[CompiledPolicy],
    ) -> tuple[Resolved, bool]:
        """Each direction's policies and program; and whether none was bound to the endpoint."""
        resolved: Resolved = {}
        shared = True
        for direction in DIRECTIONS:
            relevant = [c for c in applying if direction.capitalize() in c.policy.spec.types]
            if all(c.binds_alike[direction] for c in relevant):
                # Nothing endpoint-specific to bind: endpoints with the same policies share a
                # program (compiled policies hash by identity, so a changed one is a new key).
                alike = ("alike", direction, frozenset(relevant))
                program = self._programs.get(alike)
                if program is None:
                    program = self._build(endpoint, addresses, direction, relevant)
                    self._programs[alike] = program
            else:
                program = self._build(endpoint, addresses, direction, relevant)
                shared = False
            resolved[direction] = (frozenset(c.key for c in relevant), program)
        return resolved, shared

    def collect(self, live: Iterable[Program]) -> None:
        """Forget interned programs no endpoint uses, once they outnumber the live ones.

        ``live`` is read only when the interned programs have outgrown the live count of the
        last collection: reading every endpoint's programs at each change would make one
        policy change cost as much as the cluster is large.
        """
        if len(self._programs) <= self._bound():
            return
        keep = {id(p) for p in live}
        self._live = len(keep)
        if len(self._programs) > self._bound():
            self._programs = {k: p for k, p in self._programs.items() if id(p) in keep}

    @property
    def interned(self) -> int:
        """How many programs are interned (live, or kept until the next collection)."""
        return len(self._programs)

    def _bound(self) -> int:
        return 4 * max(1, self._live) + 1024

    def _build(
        self,
        endpoint: Endpoint,
        addresses: tuple[str | None, str | None],
        direction: Direction,
        policies: list[CompiledPolicy],
    ) -> Program:
        by_tier: dict[str, list[CompiledPolicy]] = {}
        for compiled in policies:
            by_tier.setdefault(compiled.policy.spec.tier, []).append(compiled)
        blocks: list[Block] = []
        key_parts: list[object] = [direction]
        peer_named = peer_ports = False
        refs: set[int] = set()  # the sets the bound rules' peers must be in or out of
        for tier in sorted(by_tier, key=self.tier_sort_key):
            bound_rules: list[Binding] = []
            ordered = sorted(by_tier[tier], key=lambda c: c.sort_key)
            for compiled in ordered:
                if compiled.binds_alike[direction]:
                    # Every rule is its own binding, the same object for every endpoint: it
                    # keys itself (no tuple per rule and program), and what the policy brings
                    # to a program is worked out once.
                    rules = compiled.rules(direction)
                    bound_rules += rules
                    key_parts += rules
                    part = compiled.alike_part(direction)
                    refs |= part.refs
                    peer_ports = peer_ports or part.peer_ports
                    peer_named = peer_named or part.peer_named
                    continue
                for rule in compiled.rules(direction):
                    bound = bind(rule, endpoint, addresses, self._sets_of)
                    if bound is None:
                        continue
                    bound_rules.append(bound)
                    key_parts.append(
                        bound
                        if bound is rule
                        else (id(rule), bound.ok4, bound.ok6, bound.own_named, bound.own_not_named)
                    )
                    ports, named = peer_facts(rule, refs)
                    peer_ports = peer_ports or ports
                    peer_named = peer_named or named
            end: Verdict | None = None
            if self.tier_default(tier) == "Deny":
                end = Verdict("Deny", tier=tier, direction=direction, default="end-of-tier")
            key_parts.append(("end", tier, end is None))
            block = Block(tier, tuple(bound_rules), end, tuple(c.display for c in ordered))
            block.index()
            blocks.append(block)
        program_key = tuple(key_parts)
        program = self._programs.get(program_key)
        if program is None:
            fallback = Verdict(
                "Allow", direction=direction, default="profile" if blocks else "no-policy"
            )
            program = Program(
                direction, tuple(blocks), peer_named, fallback, frozenset(refs), peer_ports
            )
            self._programs[program_key] = program
        return program
