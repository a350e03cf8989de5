"""The connectivity map's results: rows of peers with equal connections, and what peers are.

A :class:`MapRow` says that every source in it may reach every destination in it on the
same :class:`~fqdnpolicy.connectivity.spaces.Connections`; :func:`minimise` groups pairs
into as few such rows as it can (rows with the same sources and connections merged, then
rows with the same destinations and connections), as network-config-analyzer does. Peers are
numbered (:class:`PeerIndex`) so a set of them is one integer mask while grouping.
:class:`PeerInfo` says what a peer id stands for; :class:`MapData` is a whole map as plain
data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from fqdnpolicy.connectivity.spaces import Connections
from fqdnpolicy.connectivity.state import EndpointUnit

__all__ = ["Block", "MapData", "MapRow", "PeerIndex", "PeerInfo", "minimise"]


@attrs.frozen
class PeerInfo:
    """What a peer id in a row stands for.

    Attributes:
        id: The id rows use: ``namespace/name`` for an endpoint (``namespace/name@address``
            for an endpoint's second address of a family when it differs), an outside
            piece's id, or for *the rest of the outside*
            ``outside:v4:none-of:HASH`` (``outside:v4:any`` when no set is excluded).
        kind: ``endpoint``, ``outside`` (one piece) or ``rest`` (every outside address of
            the family in none of :attr:`sets`).
        label: In words.
        family: The family of an outside peer (None for an endpoint).
        namespace: An endpoint's namespace.
        labels: An endpoint's labels.
        sets: For ``outside``, the sets holding its addresses; for ``rest``, the sets its
            addresses are in none of.
        cidrs: For ``outside``, its address ranges.
        hosts: For ``outside``, its single addresses.
    """

    id: str
    kind: str
    label: str
    family: int | None = None
    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    sets: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = attrs.asdict(self)
        out["labels"] = dict(self.labels)
        for name in ("sets", "cidrs", "hosts"):
            out[name] = list(out[name])
        return out

    @classmethod
    def of_endpoint(cls, unit: EndpointUnit, suffix: str = "") -> PeerInfo:
        """The peer of an endpoint (``suffix`` tells its second address of a family)."""
        ident = unit.key + suffix
        endpoint = unit.record.endpoint
        return cls(
            ident,
            "endpoint",
            ident,
            namespace=endpoint.namespace,
            labels=tuple(sorted(endpoint.labels.items())),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeerInfo:
        """Read :meth:`as_dict` back."""
        values = dict(data)
        values["labels"] = tuple(sorted(dict(values.get("labels") or {}).items()))
        for name in ("sets", "cidrs", "hosts"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@attrs.frozen
class MapRow:
    """Every source may open every connection to every destination of the row.

    Attributes:
        sources: Peer ids (see :class:`PeerInfo`), sorted.
        destinations: Peer ids, sorted.
        connections: What is allowed, the same for each pair.
    """

    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    connections: Connections

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "sources": list(self.sources),
            "destinations": list(self.destinations),
            "connections": self.connections.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapRow:
        """Read :meth:`as_dict` back."""
        return cls(
            tuple(data["sources"]),
            tuple(data["destinations"]),
            Connections.from_dict(data["connections"]),
        )


Block = tuple[int, int, Connections]
_BITS = tuple(tuple(b for b in range(8) if byte >> b & 1) for byte in range(256))


class PeerIndex:
    """Peer ids numbered, and sets of them as int bit masks (small, cheap to join)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.number: dict[str, int] = {}

    def add(self, peer: str) -> int:
        """The number of ``peer`` (a new one for a new id)."""
        found = self.number.get(peer)
        if found is None:
            found = self.number[peer] = len(self.ids)
            self.ids.append(peer)
        return found

    def mask(self, numbers: Iterable[int]) -> int:
        """The mask of peer numbers."""
        buf = bytearray((len(self.ids) + 8) // 8)
        for n in numbers:
            buf[n >> 3] |= 1 << (n & 7)
        return int.from_bytes(buf, "little")

    def expand(self, mask: int) -> tuple[str, ...]:
        """The ids of a mask, in number order."""
        ids = self.ids
        out: list[str] = []
        for i, byte in enumerate(mask.to_bytes((mask.bit_length() + 7) // 8, "little")):
            if byte:
                base = i << 3
                out.extend(ids[base + b] for b in _BITS[byte])
        return tuple(out)


def minimise(blocks: Iterable[Block], index: PeerIndex) -> list[MapRow]:
    """Group pairs with equal connections (blocks must not share a pair).

    Rows with the same connections and sources are merged, then rows with the same
    connections and destinations.
    """
    by_sources: dict[tuple[Connections, int], int] = {}
    for sources, destinations, conns in blocks:
        if not sources or not destinations or not conns:
            continue
        key = (conns, sources)
        by_sources[key] = by_sources.get(key, 0) | destinations
    by_destinations: dict[tuple[Connections, int], int] = {}
    for (conns, sources), destinations in by_sources.items():
        key = (conns, destinations)
        by_destinations[key] = by_destinations.get(key, 0) | sources
    expanded: dict[int, tuple[str, ...]] = {}

    def ids(mask: int) -> tuple[str, ...]:
        found = expanded.get(mask)
        if found is None:
            found = expanded[mask] = index.expand(mask)
        return found

    rows = [
        MapRow(ids(sources), ids(destinations), conns)
        for (conns, destinations), sources in by_destinations.items()
    ]
    rows.sort(
        key=lambda r: (r.sources[:1], r.destinations[:1], len(r.sources), r.connections.describe())
    )
    return rows


@attrs.frozen
class MapData:
    """A map as plain data (what :meth:`ConnectivityMap.as_dict` holds, read back)."""

    families: tuple[int, ...]
    rows: tuple[MapRow, ...]
    peers: dict[str, PeerInfo]
    caveats: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapData:
        """Read :meth:`ConnectivityMap.as_dict` back."""
        return cls(
            tuple(data["families"]),
            tuple(MapRow.from_dict(r) for r in data["rows"]),
            {k: PeerInfo.from_dict(v) for k, v in data["peers"].items()},
            tuple(data.get("caveats", ())),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as :meth:`ConnectivityMap.as_dict`."""
        return {
            "families": list(self.families),
            "caveats": list(self.caveats),
            "rows": [row.as_dict() for row in self.rows],
            "peers": {k: v.as_dict() for k, v in sorted(self.peers.items())},
        }
