"""The connectivity map: every allowed connection between endpoints and with the outside.

Work is done per distinct (program, peer view), never per pair of endpoints and port: a
flow from endpoint ``e`` to an address ``a`` of family ``f`` is allowed on the connections

    allowed(egress program of e, its view of a's identity)
    & allowed(ingress program of a's endpoint, its view of e's identity)   (a an endpoint's)

and each ``allowed`` is one symbolic evaluation (:mod:`fqdnpolicy.connectivity.symbolic`),
kept. Sources are grouped by (egress program, identities), destinations by (ingress program,
identities); a program splits the destinations only by its :func:`view
<fqdnpolicy.connectivity.symbolic.view_key>` of them, found from the sets it names (an index
from set to holders), so the cost grows with what the policies tell apart.

The result is a list of :class:`~fqdnpolicy.connectivity.rows.MapRow` s, minimised
(:func:`~fqdnpolicy.connectivity.rows.minimise`): pairs with equal connections grouped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from fqdnpolicy.connectivity.rows import Block, MapRow, PeerIndex, PeerInfo, minimise
from fqdnpolicy.connectivity.spaces import FAMILY_NAMES, NONE, Connections, Space, intersect
from fqdnpolicy.connectivity.state import EndpointUnit, Piece, State, read_state
from fqdnpolicy.connectivity.symbolic import Evaluator, ViewKey, view_key
from fqdnpolicy.engine.identities import EMPTY as NO_SETS
from fqdnpolicy.engine.identities import Identity, canonical_ip
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = ["ConnectivityMap", "connectivity"]


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha224("\0".join(parts).encode()).hexdigest()[:16]


class _Dest:
    """Endpoint destinations alike for every source: same ingress program and identities."""

    __slots__ = ("idents", "ids", "ingress")

    def __init__(self, ingress: Program, idents: tuple[Identity | None, Identity | None]) -> None:
        self.ingress = ingress
        self.idents = idents
        self.ids: list[int] = []


class _Source:
    """Endpoint sources alike: same egress program and identities."""

    __slots__ = ("egress", "idents", "keys")

    def __init__(self, egress: Program, idents: tuple[Identity | None, Identity | None]) -> None:
        self.egress = egress
        self.idents = idents
        self.keys: list[int] = []


def _slot(family: int) -> int:
    return 0 if family == 4 else 1


class ConnectivityMap:
    """The exact connectivity of one engine state (see the module docstring).

    Build it with :func:`connectivity`. :meth:`connections` answers for one pair;
    :attr:`rows` is the whole map, minimised; :attr:`peers` says what each id in the rows
    stands for.
    """

    def __init__(
        self,
        state: State,
        *,
        endpoints: Callable[[EndpointUnit], bool] | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.state = state
        self.evaluator = evaluator or Evaluator()
        self.families = state.families
        self.caveats = state.caveats
        self.peers: dict[str, PeerInfo] = {}
        self._keep = endpoints
        self._owner: dict[str, str] = {
            ip: unit.key for unit in state.endpoints.values() for ip in unit.record.endpoint.ips
        }
        self.index = PeerIndex()
        self.rows: list[MapRow] = minimise(self._blocks(), self.index)

    # -- one pair ------------------------------------------------------------------------

    def connections(self, src: str, dst: str) -> Connections:
        """What ``src`` may open to ``dst``.

        Each is an endpoint's ``namespace/name`` or an IP address (an endpoint's, or outside).
        An endpoint destination given by name is reached at its first address of each
        family the source has. Two outside addresses have no policy between them: every
        connection (within their family).

        Raises:
            InvalidPolicy: an unknown endpoint, or text that is neither endpoint nor address.
        """
        ev = self.evaluator
        src_unit, src_ident = self._peer(src)
        dst_unit, dst_ident = self._peer(dst)
        spaces: dict[int, Space] = {}
        for family in (4, 6):
            if src_unit is not None:
                if family not in src_unit.source:
                    continue
                sender: Identity | None = src_unit.source[family]
            else:
                assert src_ident is not None
                if src_ident.family != family:
                    continue
                sender = src_ident
            if dst_unit is not None and dst_ident is None:
                if family not in dst_unit.addresses:
                    continue
                target = dst_unit.addresses[family][0][1]
            else:
                assert dst_ident is not None
                if dst_ident.family != family:
                    continue
                target = dst_ident
            space = NONE
            if src_unit is not None:
                space = ev.allowed(src_unit.egress, view_key(src_unit.egress, target))
            else:
                from fqdnpolicy.connectivity.spaces import ALL

                space = ALL
            if dst_unit is not None:
                receiver = dst_unit.ingress
                assert sender is not None
                space = intersect(family, space, ev.allowed(receiver, view_key(receiver, sender)))
            spaces[family] = space
        return Connections.of(spaces)

    def _peer(self, text: str) -> tuple[EndpointUnit | None, Identity | None]:
        """(endpoint unit, identity of the given address or None for an endpoint by name)."""
        unit = self.state.endpoints.get(text)
        if unit is not None:
            return unit, None
        if "/" in text:
            raise InvalidPolicy(Problem(f"unknown endpoint {text!r}"))
        address = canonical_ip(text)
        owner = self._owner.get(address)
        ident = self.state.identity(address)  # (an identity in no set is falsy: no `or`)
        if owner is not None:
            return self.state.endpoints[owner], ident
        return None, ident

    # -- the map ---------------------------------------------------------------------------

    def _endpoint_peer(self, unit: EndpointUnit, suffix: str = "") -> int:
        ident = unit.key + suffix
        if ident not in self.peers:
            self.peers[ident] = PeerInfo.of_endpoint(unit, suffix)
        return self.index.add(ident)

    def _piece_peer(self, piece: Piece) -> int:
        if piece.id not in self.peers:
            self.peers[piece.id] = PeerInfo(
                piece.id,
                "outside",
                piece.label,
                family=piece.family,
                sets=piece.sets,
                cidrs=piece.cidrs,
                hosts=piece.hosts,
            )
        return self.index.add(piece.id)

    def _rest_peer(self, family: int, excluded: frozenset[int]) -> int:
        info = self.state.info
        ids = sorted(info[n].set_id for n in excluded)
        name = FAMILY_NAMES[family]
        if not ids:
            peer = f"outside:v{family}:any"
            label = f"{name} outside: anywhere"
        else:
            peer = f"outside:v{family}:none-of:{_digest(ids)}"
            label = f"{name} outside: anywhere else (in none of {len(ids)} sets)"
        if peer not in self.peers:
            texts = tuple(sorted(f"{info[n].kind} {info[n].definition}" for n in excluded))
            self.peers[peer] = PeerInfo(peer, "rest", label, family=family, sets=texts)
        return self.index.add(peer)

    def _blocks(self) -> list[Block]:
        blocks: list[Block] = []
        keep = self._keep
        units = list(self.state.endpoints.values())
        for unit in units:
            self._endpoint_peer(unit)  # endpoints numbered first, in key order
        self._endpoint_blocks(units, blocks)
        self._outside_blocks(units, blocks)
        if keep is None:
            return blocks
        # Only pairs with a kept endpoint on some side.
        kept_keys = {u.key for u in units if keep(u)}
        kept = self.index.mask(
            n for peer, n in self.index.number.items() if peer.split("@")[0] in kept_keys
        )
        filtered: list[Block] = []
        for sources, destinations, conns in blocks:
            inside = sources & kept
            if inside:
                filtered.append((inside, destinations, conns))
            others = sources & ~kept
            targets = destinations & kept
            if others and targets:
                filtered.append((others, targets, conns))
        return filtered

    def _endpoint_blocks(self, units: list[EndpointUnit], blocks: list[Block]) -> None:
        ev = self.evaluator
        dests: dict[tuple[object, ...], _Dest] = {}
        for unit in units:
            main: list[Identity | None] = [None, None]
            for family, addresses in unit.addresses.items():
                main[_slot(family)] = addresses[0][1]
            key = (unit.ingress, main[0], main[1])
            found = dests.get(key)
            if found is None:
                found = dests[key] = _Dest(unit.ingress, (main[0], main[1]))
            found.ids.append(self._endpoint_peer(unit))
            for family, addresses in unit.addresses.items():
                for address, ident in addresses[1:]:
                    if ident is addresses[0][1]:
                        continue  # judged alike by every program: the endpoint says it
                    pair: list[Identity | None] = [None, None]
                    pair[_slot(family)] = ident
                    extra = (unit.ingress, pair[0], pair[1])
                    found = dests.get(extra)
                    if found is None:
                        found = dests[extra] = _Dest(unit.ingress, (pair[0], pair[1]))
                    found.ids.append(self._endpoint_peer(unit, "@" + address))
        sources: dict[tuple[object, ...], _Source] = {}
        for unit in units:
            idents = (unit.source.get(4), unit.source.get(6))
            key = (unit.egress, *idents)
            found_source = sources.get(key)
            if found_source is None:
                found_source = sources[key] = _Source(unit.egress, idents)
            found_source.keys.append(self._endpoint_peer(unit))
        dest_list = list(dests.values())
        by_set: dict[int, list[int]] = {}
        for index, dest in enumerate(dest_list):
            for held in dest.idents:
                if held is not None:
                    for num in held:
                        by_set.setdefault(num, []).append(index)
        by_program: dict[Program, list[_Source]] = {}
        for source in sources.values():
            by_program.setdefault(source.egress, []).append(source)
        plain: dict[int, ViewKey] = {4: (4, NO_SETS, None), 6: (6, NO_SETS, None)}

        for program, program_sources in by_program.items():
            groups: dict[tuple[ViewKey | None, ViewKey | None], list[_Dest]] = {}
            if program.peer_named:
                relevant: Iterable[int] = range(len(dest_list))
            else:
                relevant = {i for n in program.refs for i in by_set.get(n, ())}
            seen = set()
            for index in relevant:
                dest = dest_list[index]
                seen.add(index)
                gkey: tuple[ViewKey | None, ViewKey | None] = (
                    None if dest.idents[0] is None else view_key(program, dest.idents[0]),
                    None if dest.idents[1] is None else view_key(program, dest.idents[1]),
                )
                groups.setdefault(gkey, []).append(dest)
            for index, dest in enumerate(dest_list):
                if index in seen:
                    continue
                gkey = (
                    None if dest.idents[0] is None else plain[4],
                    None if dest.idents[1] is None else plain[6],
                )
                groups.setdefault(gkey, []).append(dest)
            ingress_groups: dict[Program, dict[tuple[object, ...], list[_Source]]] = {}
            for (view4, view6), group in groups.items():
                egress_spaces = (
                    None if view4 is None else ev.allowed(program, view4),
                    None if view6 is None else ev.allowed(program, view6),
                )
                if egress_spaces[0] in (None, NONE) and egress_spaces[1] in (None, NONE):
                    continue
                by_receiver: dict[Program, list[_Dest]] = {}
                for dest in group:
                    by_receiver.setdefault(dest.ingress, []).append(dest)
                for receiver, receiver_dests in by_receiver.items():
                    split = ingress_groups.get(receiver)
                    if split is None:
                        split = ingress_groups[receiver] = {}
                        for source in program_sources:
                            ikey = tuple(
                                None if j is None else view_key(receiver, j) for j in source.idents
                            )
                            split.setdefault(ikey, []).append(source)
                    dest_mask = self.index.mask(i for d in receiver_dests for i in d.ids)
                    for ingress_key, split_sources in split.items():
                        spaces: dict[int, Space] = {}
                        for family in (4, 6):
                            slot = _slot(family)
                            egress_space = egress_spaces[slot]
                            iview = ingress_key[slot]
                            if egress_space is None or egress_space == NONE or iview is None:
                                continue
                            assert isinstance(iview, tuple)
                            spaces[family] = intersect(
                                family, egress_space, ev.allowed(receiver, iview)
                            )
                        conns = Connections.of(spaces)
                        if conns:
                            source_mask = self.index.mask(k for s in split_sources for k in s.keys)
                            blocks.append((source_mask, dest_mask, conns))

    def _outside_blocks(self, units: list[EndpointUnit], blocks: list[Block]) -> None:
        ev = self.evaluator
        pieces = self.state.pieces()
        by_set: dict[int, list[Identity]] = {}
        count = {4: 0, 6: 0}
        outside_sets: set[int] = set()
        for ident in pieces:
            count[ident.family] += 1
            for num in ident:
                by_set.setdefault(num, []).append(ident)
                outside_sets.add(num)
        # Egress: endpoints to the outside.
        senders: dict[Program, dict[int, list[int]]] = {}
        receivers: dict[Program, dict[int, list[int]]] = {}
        number = self.index.number
        for unit in units:
            for family in unit.source:
                senders.setdefault(unit.egress, {}).setdefault(family, []).append(number[unit.key])
            for family, addresses in unit.addresses.items():
                ids = receivers.setdefault(unit.ingress, {}).setdefault(family, [])
                ids.append(number[unit.key])
                for address, ident in addresses[1:]:
                    if ident is not addresses[0][1]:
                        ids.append(number[f"{unit.key}@{address}"])
        for direction, programs in (("egress", senders), ("ingress", receivers)):
            for program, by_family in programs.items():
                relevant = {i for n in program.refs for i in by_set.get(n, ())}
                for family, end_list in by_family.items():
                    ends = self.index.mask(end_list)
                    groups: dict[ViewKey, list[int]] = {}
                    listed = 0
                    for ident in relevant:
                        if ident.family == family:
                            listed += 1
                            piece = pieces[ident]
                            groups.setdefault(view_key(program, ident), []).append(
                                self._piece_peer(piece)
                            )
                    if listed < count[family]:
                        rest = self._rest_peer(family, program.refs & outside_sets)
                        groups.setdefault((family, NO_SETS, None), []).append(rest)
                    for view, peer_list in groups.items():
                        conns = Connections.of({family: ev.allowed(program, view)})
                        if not conns:
                            continue
                        peers = self.index.mask(peer_list)
                        if direction == "egress":
                            blocks.append((ends, peers, conns))
                        else:
                            blocks.append((peers, ends, conns))

    # -- output ----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: rows and the peers they name (:meth:`from_dict` reads it back)."""
        used = {p for row in self.rows for p in (*row.sources, *row.destinations)}
        return {
            "families": list(self.families),
            "caveats": list(self.caveats),
            "rows": [row.as_dict() for row in self.rows],
            "peers": {p: self.peers[p].as_dict() for p in sorted(used)},
        }


def connectivity(
    engine: Any,
    *,
    namespace: str | None = None,
    selector: str | None = None,
) -> ConnectivityMap:
    """The exact connectivity map of ``engine``'s state now.

    Args:
        engine: A :class:`~fqdnpolicy.engine.PolicyEngine`.
        namespace: Only pairs with an endpoint of this namespace on some side.
        selector: Only pairs with an endpoint these labels select on some side (Calico
            selector syntax).
    """
    keep: Callable[[EndpointUnit], bool] | None = None
    if namespace is not None or selector is not None:
        from fqdnpolicy.selector import parse_selector

        parsed = parse_selector(selector) if selector is not None else None

        def keep(unit: EndpointUnit) -> bool:
            endpoint = unit.record.endpoint
            if namespace is not None and endpoint.namespace != namespace:
                return False
            return parsed is None or parsed.matches(endpoint.labels)

    return ConnectivityMap(read_state(engine), endpoints=keep)
