"""What a diff returns: rows of connections one state allows and the other does not.

:class:`MapDiff` holds the rows (:class:`DiffRow`) and the peers they name, with JSON
round-trips; :mod:`fqdnpolicy.connectivity.diff` computes it.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from fqdnpolicy.connectivity.rows import PeerInfo
from fqdnpolicy.connectivity.spaces import Connections
from fqdnpolicy.engine.results import Verdict

__all__ = ["Change", "DiffRow", "MapDiff", "verdict_text"]

Change = Literal["added", "removed"]


def verdict_text(verdict: Verdict) -> str:
    """The verdict as ``check`` prints its deciding rule."""
    return str(attrs.evolve(verdict, logged=()))


@attrs.frozen
class DiffRow:
    """Connections one state allows and the other does not, for every pair of the row.

    Attributes:
        change: ``added`` (the new state allows them, the old did not) or ``removed``.
        sources: Peer ids (see :class:`~fqdnpolicy.connectivity.PeerInfo`), sorted.
        destinations: Peer ids, sorted.
        connections: The connections that changed, the same for each pair.
        rule: What decides them in the new state: the verdict ``explain()`` ends with.
        was: What decided them in the old state.
    """

    change: Change
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    connections: Connections
    rule: dict[str, Any]
    was: dict[str, Any]

    @property
    def rule_text(self) -> str:
        """:attr:`rule` in words."""
        return verdict_text(Verdict(**{**self.rule, "logged": ()}))

    @property
    def was_text(self) -> str:
        """:attr:`was` in words."""
        return verdict_text(Verdict(**{**self.was, "logged": ()}))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "change": self.change,
            "sources": list(self.sources),
            "destinations": list(self.destinations),
            "connections": self.connections.as_dict(),
            "rule": dict(self.rule),
            "was": dict(self.was),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffRow:
        """Read :meth:`as_dict` back."""
        return cls(
            data["change"],
            tuple(data["sources"]),
            tuple(data["destinations"]),
            Connections.from_dict(data["connections"]),
            dict(data["rule"]),
            dict(data["was"]),
        )


@attrs.frozen
class MapDiff:
    """The difference of two maps: rows and the peers they name.

    Attributes:
        rows: Every change, grouped and minimised.
        peers: What each peer id of the rows stands for.
        families: The families the endpoints have.
        caveats: What the answer must be read with (either state's caveats).
    """

    rows: tuple[DiffRow, ...]
    peers: dict[str, PeerInfo]
    families: tuple[int, ...] = (4, 6)
    caveats: tuple[str, ...] = ()

    @property
    def equal(self) -> bool:
        """Whether both states allow exactly the same connections."""
        return not self.rows

    @property
    def contains(self) -> bool:
        """Whether the new state allows at least every connection the old one did."""
        return not any(row.change == "removed" for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (:meth:`from_dict` reads it back)."""
        used = {p for row in self.rows for p in (*row.sources, *row.destinations)}
        return {
            "equal": self.equal,
            "contains": self.contains,
            "families": list(self.families),
            "caveats": list(self.caveats),
            "rows": [row.as_dict() for row in self.rows],
            "peers": {p: self.peers[p].as_dict() for p in sorted(used)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapDiff:
        """Read :meth:`as_dict` back."""
        return cls(
            tuple(DiffRow.from_dict(r) for r in data["rows"]),
            {k: PeerInfo.from_dict(v) for k, v in data["peers"].items()},
            tuple(data.get("families", (4, 6))),
            tuple(data.get("caveats", ())),
        )
