"""What a policy change opens and closes: the difference of two connectivity maps.

Both maps are read over the same cluster and DNS source. For every pair (source endpoint,
destination endpoint or outside piece) the two states' decisions (the partition of the
family's connections by deciding verdict, egress and ingress combined as
:meth:`PolicyEngine.verdict <fqdnpolicy.engine.PolicyEngine.verdict>` reports them) are
compared; each connection allowed in one state and not in the other is a :class:`DiffRow`
naming the rule that decides it in the new state (what :meth:`PolicyEngine.explain
<fqdnpolicy.engine.PolicyEngine.explain>` names for such a flow) and the one that decided it
before.

Only what can have changed is judged: a pair whose source kept its egress program and
identities and whose destination kept its identity and ingress program (programs and
identities are never changed, only replaced) is the same in both. :func:`diff_to` changes an
engine in place, so that everything a change does not touch stays the same object and is
skipped; :func:`diff_engines` compares two engines, where nothing is shared and every pair is
judged.

The outside is cut by the identities addresses have in *both* states (a CIDR the new policy
names splits the old state's pieces), looking one by one only at the addresses whose identity
moved (:class:`~fqdnpolicy.connectivity.outside.JointCut`). A source alike in both states is
judged only against the destinations that moved, and against a moved outside piece only when
it moved in or out of a set the source's program names; a source whose program changed is
judged against every endpoint and the outside pieces in the sets its programs name, the rest of
the outside as one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import attrs

from fqdnpolicy.backend_tools import gc_paused
from fqdnpolicy.connectivity.diffrows import Change, DiffRow, MapDiff
from fqdnpolicy.connectivity.outside import JointCut, Key
from fqdnpolicy.connectivity.rows import PeerInfo
from fqdnpolicy.connectivity.spaces import (
    FAMILY_NAMES,
    NONE,
    Connections,
    Space,
    intersect,
    union,
)
from fqdnpolicy.connectivity.state import EndpointUnit, State, piece_id, read_state
from fqdnpolicy.connectivity.symbolic import Decisions, Evaluator, combine, view_key
from fqdnpolicy.engine.identities import EMPTY as NO_SETS
from fqdnpolicy.engine.identities import Identity
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.results import Verdict

__all__ = ["DiffRow", "MapDiff", "diff", "diff_engines", "diff_states", "diff_to"]

# -- the comparison ------------------------------------------------------------------------


class _Source:
    __slots__ = ("ids", "new", "old")

    def __init__(self, old: EndpointUnit, new: EndpointUnit) -> None:
        self.old = old
        self.new = new
        self.ids: list[str] = []


class _Target:
    """A destination alike for every source in both states."""

    __slots__ = (
        "delta",
        "family",
        "ids",
        "new",
        "new_ingress",
        "old",
        "old_ingress",
        "outside",
        "piece",
    )

    def __init__(
        self,
        family: int,
        old: Identity,
        new: Identity,
        old_ingress: Program | None,
        new_ingress: Program | None,
    ) -> None:
        self.family = family
        self.old = old
        self.new = new
        self.old_ingress = old_ingress
        self.new_ingress = new_ingress
        self.outside = old_ingress is None
        self.ids: list[str] = []
        self.piece = False  # an outside piece: its peer is named when a row needs it
        self.delta: frozenset[int] = frozenset()  # a piece's sets in one state only

    @property
    def same(self) -> bool:
        return self.old is self.new and self.old_ingress is self.new_ingress


class _Outside:
    """The outside pieces as destinations, indexed by the sets that hold them.

    A program tells apart only outside pieces in some set it names: the others of a family
    are judged as one. The index finds a program's pieces without reading every piece.
    """

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.targets: dict[int, _Target] = {}  # by position in keys
        #: Pieces whose identity moved, each with the sets that moved (:attr:`_Target.delta`).
        self._moved = [i for i, key in enumerate(keys) if key[0] is not key[1]]
        self.moved = [self.target(i) for i in self._moved]
        self.count = {4: 0, 6: 0}
        for key in keys:
            self.count[key[0].family] += 1
        self._by_set: dict[int, list[int]] | None = None

    def target(self, position: int) -> _Target:
        found = self.targets.get(position)
        if found is None:
            old, new = self.keys[position]
            found = self.targets[position] = _Target(old.family, old, new, None, None)
            found.piece = True
            found.delta = old.symmetric_difference(new)
        return found

    def touching(
        self, old_refs: frozenset[int], new_refs: frozenset[int]
    ) -> tuple[list[_Target], dict[int, list[_Target] | None]]:
        """Pieces in a set of ``old_refs`` (old identity) or ``new_refs`` (new identity).

        Returns:
            Those pieces, and per family the others (listed when one; None when more).
        """
        by_set = self._by_set
        if by_set is None:
            by_set = self._by_set = {}
            for position, (old, new) in enumerate(self.keys):
                if old is new:
                    for num in old:
                        by_set.setdefault(num, []).append(position)
        found: set[int] = set()
        for refs in (old_refs, new_refs):
            for num in refs:
                found.update(by_set.get(num, ()))
        for position in self._moved:
            old, new = self.keys[position]
            if not (old.isdisjoint(old_refs) and new.isdisjoint(new_refs)):
                found.add(position)
        touched = [self.target(position) for position in found]
        plain: dict[int, list[_Target] | None] = {}
        for family in (4, 6):
            left = self.count[family] - sum(1 for t in touched if t.family == family)
            if left == 1:
                plain[family] = [
                    self.target(i)
                    for i, key in enumerate(self.keys)
                    if key[0].family == family and i not in found
                ]
            elif left > 1:
                plain[family] = None
        return touched, plain


def _changes(
    family: int, old: Decisions, new: Decisions
) -> dict[tuple[Change, tuple[Any, ...], tuple[Any, ...]], Space]:
    """Regions allowed in one state and not the other, by (change, new verdict, old)."""
    out: dict[tuple[Change, tuple[Any, ...], tuple[Any, ...]], Space] = {}
    if old == new:
        return out
    for old_verdict, old_space in old:
        for new_verdict, new_space in new:
            if old_verdict.allowed == new_verdict.allowed:
                continue
            both = intersect(family, old_space, new_space)
            if both == NONE:
                continue
            change: Change = "added" if new_verdict.allowed else "removed"
            key = (change, _vkey(new_verdict), _vkey(old_verdict))
            out[key] = union(family, out.get(key, NONE), both)
    return out


def _vkey(v: Verdict) -> tuple[Any, ...]:
    return (v.action, v.policy, v.tier, v.rule_index, v.direction, v.default)


def _from_key(key: tuple[Any, ...]) -> dict[str, Any]:
    names = ("action", "policy", "tier", "rule_index", "direction", "default")
    return dict(zip(names, key, strict=True))


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha224("\0".join(parts).encode()).hexdigest()[:16]


class _Differ:
    def __init__(
        self, old: State, new: State, old_ev: Evaluator | None, new_ev: Evaluator | None
    ) -> None:
        self.old = old
        self.new = new
        self.old_ev = old_ev or Evaluator()
        self.new_ev = new_ev or (self.old_ev if old_ev is not None else Evaluator())
        if new_ev is None and old_ev is None:
            self.new_ev = self.old_ev  # one evaluator: programs key it, both states share it
        self.peers: dict[str, PeerInfo] = {}
        self.pieces: dict[str, Key] = {}  # peer id of each outside piece named
        self.joint = JointCut(old, new)
        # (source, destination) -> {(change, new verdict, old verdict): {family: space}}
        self.blocks: list[tuple[list[str], list[str], Change, Any, Any, Connections]] = []

    def _decisions(
        self,
        ev: Evaluator,
        source: EndpointUnit | None,
        target: Identity,
        receiver: Program | None,
        sender: Identity | None,
    ) -> Decisions:
        family = target.family
        egress: Decisions
        if source is None:
            egress = ((Verdict("Allow", direction="egress", default="no-policy"), (True, ())),)
        else:
            egress = ev.decisions(source.egress, view_key(source.egress, target))
        if receiver is None or sender is None:
            return egress
        return combine(egress, ev.decisions(receiver, view_key(receiver, sender)), family)

    def run(self) -> None:
        old, new = self.old, self.new
        keys = sorted(set(old.endpoints) & set(new.endpoints))
        old_units, new_units = old.endpoints, new.endpoints
        # Grouped by the ids of what they are judged by (both states hold every object).
        sources: dict[tuple[object, ...], _Source] = {}
        targets: dict[tuple[int, ...], _Target] = {}
        for key in keys:
            o, n = old_units[key], new_units[key]
            skey = (o.sender, n.sender)
            found = sources.get(skey)
            if found is None:
                found = sources[skey] = _Source(o, n)
            found.ids.append(key)  # its PeerInfo is made in result() if a row names it
            o_in, n_in = id(o.ingress), id(n.ingress)
            if o is n:
                for family, ident, peer in o.receivers:
                    tkey = (family, id(ident), id(ident), o_in, o_in)
                    target = targets.get(tkey)
                    if target is None:
                        target = targets[tkey] = _Target(family, ident, ident, o.ingress, o.ingress)
                    target.ids.append(peer)
                continue
            for family, o_addresses in o.addresses.items():
                n_addresses = n.addresses.get(family, [])
                o_first = o_addresses[0][1]
                n_first = n_addresses[0][1] if n_addresses else None
                for index, ((address, o_ident), (_, n_ident)) in enumerate(
                    zip(o_addresses, n_addresses, strict=False)
                ):
                    if index and o_ident is o_first and n_ident is n_first:
                        continue
                    tkey = (family, id(o_ident), id(n_ident), o_in, n_in)
                    target = targets.get(tkey)
                    if target is None:
                        target = targets[tkey] = _Target(
                            family, o_ident, n_ident, o.ingress, n.ingress
                        )
                    # (each address of an endpoint is visited once: no id twice)
                    target.ids.append(key if not index else f"{key}@{address}")
        all_targets = list(targets.values())
        moved_targets = [t for t in all_targets if not t.same]
        outside = _Outside(self.joint.keys)
        for source in sources.values():
            o, n = source.old, source.new
            if o.sender == n.sender:  # (ids of objects both states hold: the same objects)
                # Alike in both states: only destinations that moved can change, and an
                # outside one only if it moved in a set the program names.
                refs = o.egress.refs
                moved = [t for t in outside.moved if not refs.isdisjoint(t.delta)]
                self._compare(source, moved_targets + moved, {})
            else:
                touched, plain = outside.touching(o.egress.refs, n.egress.refs)
                self._compare(source, all_targets + touched, plain)

    def _compare(
        self,
        source: _Source,
        targets: list[_Target],
        plain: dict[int, list[_Target] | None],
    ) -> None:
        """Judge ``source`` against ``targets``, and the outside pieces ``plain`` stands for.

        ``plain`` holds, per family, the outside pieces in none of the sets the source's
        programs name (judged as one; None for more than one: "the rest of the outside").
        """
        o, n = source.old, source.new
        # Targets alike for this source: same views in both states.
        groups: dict[tuple[object, ...], list[_Target]] = {}
        for target in targets:
            family = target.family
            if family not in o.source or family not in n.source:
                continue
            if target.outside:
                key: tuple[object, ...] = (
                    family,
                    view_key(o.egress, target.old),
                    view_key(n.egress, target.new),
                    None,
                    None,
                    None,
                    None,
                )
            else:
                assert target.old_ingress is not None
                assert target.new_ingress is not None
                key = (
                    family,
                    view_key(o.egress, target.old),
                    view_key(n.egress, target.new),
                    target.old_ingress,
                    target.new_ingress,
                    view_key(target.old_ingress, o.source[family]),
                    view_key(target.new_ingress, n.source[family]),
                )
            groups.setdefault(key, []).append(target)
        for group in groups.values():
            first = group[0]
            family = first.family
            old_d = self._decisions(
                self.old_ev, o, first.old, first.old_ingress, o.source.get(family)
            )
            new_d = self._decisions(
                self.new_ev, n, first.new, first.new_ingress, n.source.get(family)
            )
            self._emit(source.ids, group, family, old_d, new_d)
        for family, pieces in plain.items():
            if family not in o.source or family not in n.source:
                continue
            view = (family, NO_SETS, None)
            old_d = self.old_ev.decisions(o.egress, view)
            new_d = self.new_ev.decisions(n.egress, view)
            if old_d == new_d:
                continue
            if pieces is None:
                rest = self._rest_peer(family, o.egress.refs, n.egress.refs)
                self._emit(source.ids, [], family, old_d, new_d, rest)
            else:
                self._emit(source.ids, pieces, family, old_d, new_d)

    def _ids(self, target: _Target) -> list[str]:
        if target.piece and not target.ids:
            target.ids.append(self._piece_peer(target.old, target.new))
        return target.ids

    def _emit(
        self,
        sources: list[str],
        targets: list[_Target],
        family: int,
        old: Decisions,
        new: Decisions,
        rest: str | None = None,
    ) -> None:
        if old is new:
            return
        changes = _changes(family, old, new)
        if not changes:
            return
        peers = [rest] if rest is not None else [p for t in targets for p in self._ids(t)]
        for (change, rule, was), space in changes.items():
            self.blocks.append((sources, peers, change, rule, was, Connections.of({family: space})))

    # -- peers -----------------------------------------------------------------------------

    def _name_endpoints(self, ids: list[str]) -> None:
        for peer in ids:
            if peer not in self.peers:  # an endpoint's: key, or key@address
                owner, at, address = peer.partition("@")
                self.peers[peer] = PeerInfo.of_endpoint(self.new.endpoints[owner], at + address)

    def _sets(self, state: State, ident: Identity) -> list[str]:
        return [f"{state.info[n].kind} {state.info[n].definition}" for n in ident]

    def _piece_peer(self, old: Identity, new: Identity) -> str:
        family = old.family
        old_id = piece_id(family, old, self.old.info)
        new_id = piece_id(family, new, self.new.info)
        peer = new_id if old_id == new_id else f"{old_id}|{new_id}"
        if peer not in self.peers:
            sets = sorted(set(self._sets(self.old, old)) | set(self._sets(self.new, new)))
            name = FAMILY_NAMES[family]
            if old_id == new_id:
                label = f"{name} outside: " + (" & ".join(sets) if sets else "everything else")
            else:
                was = " & ".join(sorted(self._sets(self.old, old))) or "in no set"
                now = " & ".join(sorted(self._sets(self.new, new))) or "in no set"
                label = f"{name} outside: {now} (before: {was})"
            # Its addresses are gathered in result(), for every piece named at once.
            self.peers[peer] = PeerInfo(peer, "outside", label, family=family, sets=tuple(sets))
            self.pieces[peer] = (old, new)
        return peer

    def _rest_peer(self, family: int, old_refs: frozenset[int], new_refs: frozenset[int]) -> str:
        texts = sorted(
            {f"{self.old.info[n].kind} {self.old.info[n].definition}" for n in old_refs}
            | {f"{self.new.info[n].kind} {self.new.info[n].definition}" for n in new_refs}
        )
        name = FAMILY_NAMES[family]
        if not texts:
            peer, label = f"outside:v{family}:any", f"{name} outside: anywhere"
        else:
            peer = f"outside:v{family}:none-of:{_digest(texts)}"
            label = f"{name} outside: anywhere else (in none of {len(texts)} sets)"
        if peer not in self.peers:
            self.peers[peer] = PeerInfo(peer, "rest", label, family=family, sets=tuple(texts))
        return peer

    def result(self, families: tuple[int, ...]) -> MapDiff:
        members = self.joint.members(self.pieces.values())
        for peer, pair in self.pieces.items():
            cidrs, hosts = members[pair]
            self.peers[peer] = attrs.evolve(self.peers[peer], cidrs=cidrs, hosts=hosts)
        seen: set[int] = set()  # blocks share their lists of ids
        for sources, peers, *_ in self.blocks:
            for ids in (sources, peers):
                if id(ids) not in seen:
                    seen.add(id(ids))
                    self._name_endpoints(ids)
        # Minimise per (change, rule, was): rows with the same sources, then destinations.
        by_sources: dict[tuple[Any, ...], set[str]] = {}
        for sources, peers, change, rule, was, conns in self.blocks:
            key: tuple[Any, ...] = (change, rule, was, conns, frozenset(sources))
            by_sources.setdefault(key, set()).update(peers)
        by_peers: dict[tuple[Any, ...], set[str]] = {}
        for first_key, peer_set in by_sources.items():
            key = (*first_key[:4], frozenset(peer_set))
            by_peers.setdefault(key, set()).update(first_key[4])
        rows = [
            DiffRow(
                row_key[0],
                tuple(sorted(source_set)),
                tuple(sorted(row_key[4])),
                row_key[3],
                _from_key(row_key[1]),
                _from_key(row_key[2]),
            )
            for row_key, source_set in by_peers.items()
        ]
        rows.sort(
            key=lambda r: (
                r.change,
                r.sources,
                r.destinations,
                r.connections.describe(),
                str(r.rule),
                str(r.was),
            )
        )
        caveats = tuple(sorted(set(self.old.caveats) | set(self.new.caveats)))
        return MapDiff(tuple(rows), self.peers, families, caveats)


def diff_states(old: State, new: State, evaluator: Evaluator | None = None) -> MapDiff:
    """The difference between two states (see the module docstring)."""
    with gc_paused():
        differ = _Differ(old, new, evaluator, evaluator)
        differ.run()
        families = tuple(sorted(set(old.families) | set(new.families)))
        return differ.result(families)


def diff_engines(old: Any, new: Any) -> MapDiff:
    """The difference between two engines' states now (every pair judged)."""
    return diff_states(read_state(old), read_state(new))


def diff_to(engine: Any, resources: Any) -> MapDiff:
    """Change ``engine`` to hold ``resources`` and return what that opens and closes.

    The engine's policies, tiers and network sets become those of ``resources`` (a
    :class:`~fqdnpolicy.model.ResourceSet`) through its own upsert/remove methods; only
    pairs whose programs or identities that moved are judged again.

    Raises:
        ValueError: ``resources`` lacks a tier the engine holds (a tier cannot be removed
            from an engine: build one and use :func:`diff_engines`).
    """
    with gc_paused():
        before = read_state(engine)
        apply_resources(engine, resources)
        after = read_state(engine, before)
        return diff_states(before, after)


def apply_resources(engine: Any, resources: Any) -> None:
    """Make ``engine`` hold ``resources``: remove, replace and add what differs."""
    from fqdnpolicy.engine.compiler import policy_key
    from fqdnpolicy.engine.graph import netset_key

    held = engine.resources()
    held_tiers = {t.name: t for t in held.tiers}
    held_policies = {policy_key(p): p for p in held.policies}
    held_sets = {netset_key(s): s for s in held.network_sets}
    wanted_tiers = {t.name: t for t in resources.tiers}
    missing = sorted(set(held_tiers) - set(wanted_tiers))
    if missing:
        raise ValueError(f"tiers {', '.join(missing)} cannot be removed from an engine")
    for name, tier in wanted_tiers.items():
        if held_tiers.get(name) != tier:
            engine.upsert_tier(tier)
    wanted_sets = {netset_key(s): s for s in resources.network_sets}
    for key, nset in held_sets.items():
        if key not in wanted_sets:
            engine.remove_network_set(nset)
    for key, nset in wanted_sets.items():
        if held_sets.get(key) != nset:
            engine.upsert_network_set(nset)
    wanted = {policy_key(p): p for p in resources.policies}
    for key, held in held_policies.items():
        if key not in wanted:
            engine.remove_policy(held)
    for key, pol in wanted.items():
        if held_policies.get(key) != pol:
            engine.upsert_policy(pol)


def diff(old: Any, new: Any, cluster: Any, dns: Any) -> MapDiff:
    """What going from policies ``old`` to ``new`` opens and closes, over one cluster and DNS.

    ``old`` and ``new`` are :class:`~fqdnpolicy.model.ResourceSet` s. One engine is built
    (from ``old``) and changed into ``new`` (:func:`diff_to`); when ``new`` drops a tier
    ``old`` has, two engines are built and compared (:func:`diff_engines`).
    """
    from fqdnpolicy.engine import PolicyEngine

    engine = PolicyEngine(old, cluster, dns)
    try:
        if {t.name for t in old.tiers} - {t.name for t in new.tiers}:
            other = PolicyEngine(new, cluster, dns)
            try:
                return diff_engines(engine, other)
            finally:
                other.close()
        return diff_to(engine, new)
    finally:
        engine.close()
