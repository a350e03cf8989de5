"""Programs: an endpoint's ordered tiers of bound rules for one direction.

Endpoints whose policies bind alike share one program. A program never changes once built (a
policy or tier change builds new ones), so what readers judged with it stays true, and it
keeps those verdicts: for simple flows in a :class:`~fqdnpolicy.engine.slices.Slice` per
protocol and port, else by (peer identity, flow).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from fqdnpolicy.datapath import Direction
from fqdnpolicy.engine.compiler import Binding
from fqdnpolicy.engine.identities import Identity
from fqdnpolicy.engine.results import Verdict
from fqdnpolicy.engine.slices import Slice, can_match

__all__ = ["Block", "Program"]


# One tuple per lone position, shared by every block (most sets lead to one rule of a block).
_LONE: list[tuple[int, ...]] = []


def _positions(found: list[int]) -> tuple[int, ...]:
    if len(found) > 1:
        return tuple(found)
    (position,) = found
    while len(_LONE) <= position:
        _LONE.append((len(_LONE),))
    return _LONE[position]


@attrs.define(eq=False, slots=True)
class Block:
    """The bound rules of one tier, and how that tier ends."""

    tier: str
    rules: tuple[Binding, ...]
    end: Verdict | None  # None: the tier's default action is Pass
    policies: tuple[str, ...]  # display names of the applying policies, in order
    # Rule positions by the first IP set their peer must be in, and those that need none: a
    # verdict looks only at rules that can match the peer's sets, and of the rules that need
    # none only those of the flow's protocol (filled on first use; readers may fill it).
    always_positions: tuple[int, ...] = ()
    by_set: dict[int, tuple[int, ...]] = attrs.field(factory=dict)
    always_for: dict[int, tuple[frozenset[int], tuple[Binding, ...]]] = attrs.field(factory=dict)

    def index(self) -> None:
        """Fill ``always_positions``/``by_set`` from ``rules``."""
        always: list[int] = []
        by_set: dict[int, list[int]] = {}
        for position, bound in enumerate(self.rules):
            peer = bound.rule.peer
            if peer.required:
                by_set.setdefault(peer.required[0], []).append(position)
            else:
                always.append(position)
        self.always_positions = tuple(always)
        self.by_set = {k: _positions(v) for k, v in by_set.items()}

    def _always(self, proto: int) -> tuple[frozenset[int], tuple[Binding, ...]]:
        found = self.always_for.get(proto)
        if found is None:
            positions = [
                i for i in self.always_positions if self.rules[i].rule.protocol in (None, proto)
            ]
            found = (frozenset(positions), tuple(self.rules[i] for i in positions))
            self.always_for[proto] = found
        return found

    def candidates(self, membership: frozenset[int], proto: int) -> Sequence[Binding]:
        """The rules, in order, that can match a ``proto`` flow to a peer in ``membership``."""
        positions, bounds = self._always(proto)
        by_set = self.by_set
        extra = [by_set[n] for n in membership if n in by_set]
        if not extra:
            return bounds
        rules = self.rules
        return [rules[i] for i in sorted(positions.union(*extra))]


class Program(dict[object, "Slice | Verdict"]):
    """One endpoint-side evaluation: tiers of bound rules, then the fallback.

    The program is also the table of the verdicts readers judged with it, in the one dict
    (the fewest objects a reader touches):

    * a port (or None): the :class:`~fqdnpolicy.engine.slices.Slice` of the rules simple
      flows to that port can meet, for the protocol first asked with it (its ``asked``);
      one lookup of an int, where a key of protocol and port would cost a tuple made,
      hashed and compared item by item per flow;
    * ``(protocol as asked, port)``: the slice of any other protocol asked with that port;
    * ``(identity, flow)``: flows with a source port or ICMP type and code.

    Programs compare and hash by identity.

    Attributes:
        direction: Whose rules these are: the sender's egress or the receiver's ingress.
        blocks: Tiers in evaluation order.
        peer_named: Some rule resolves named ports on a peer it does not require to be in
            one of its sets: only then do an endpoint's ports tell apart peers in none of
            :attr:`refs`.
        peer_ports: Some rule resolves named ports on its peer: only then are an endpoint's
            ports part of a :meth:`view`.
        fallback: The verdict when no tier decides.
        refs: Every IP set a rule's peer side names: a peer in none of them is judged the
            same whatever its address.
    """

    __slots__ = (
        "_shapes",
        "blocks",
        "direction",
        "fallback",
        "peer_named",
        "peer_ports",
        "refs",
    )
    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__
    __ne__ = object.__ne__

    def __init__(
        self,
        direction: Direction,
        blocks: tuple[Block, ...],
        peer_named: bool,
        fallback: Verdict,
        refs: frozenset[int],
        peer_ports: bool = True,
    ) -> None:
        super().__init__()
        self.direction = direction
        self.blocks = blocks
        self.peer_named = peer_named
        self.peer_ports = peer_ports
        self.fallback = fallback
        self.refs = refs
        # The sets its slices name, each with its mask, shared by slices naming alike.
        self._shapes: dict[frozenset[int], tuple[frozenset[int], bytes]] = {}

    def slice_for(self, asked: object, proto: int, port: int | None) -> Slice:
        """A new slice of the rules a simple ``proto`` flow to ``port`` can meet.

        ``asked`` is the protocol as the asker gave it (``proto`` is its number).
        """
        rules = (
            bound.rule
            for block in self.blocks
            for bound in block.rules
            if can_match(bound.rule, proto, port)
        )
        return Slice.of(asked, rules, self._shapes)

    def kept_count(self) -> int:
        """How many verdicts and slices it keeps."""
        return sum(1 + v.size() if isinstance(v, Slice) else 1 for v in self.values())

    def plain(self, ident: Identity) -> bool:
        """Whether ``ident`` is judged like any address in none of the program's sets."""
        return ident.isdisjoint(self.refs) and (ident.ports is None or not self.peer_named)

    def view(self, ident: Identity) -> tuple[object, ...]:
        """What of ``ident`` this program's verdicts can depend on.

        Its family, the sets of :attr:`refs` holding it and, where a rule reads named ports
        on its peer, its endpoint's ports: two peers alike in these are judged alike, so a
        verdict kept under the view serves both.
        """
        return (ident.family, ident & self.refs, ident.ports if self.peer_ports else None)

    def __repr__(self) -> str:
        return f"<Program {self.direction}, {len(self.blocks)} tiers, {len(self)} kept>"
