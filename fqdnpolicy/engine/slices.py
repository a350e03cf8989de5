"""Slices: what a program's verdicts for one protocol and port depend on, and those verdicts.

A *simple* flow (no source port, ICMP type or code) of one protocol to one port can match only
some of a program's rules: a rule of another protocol, one whose destination ports leave the
port out, or one that reads a source port (which a simple flow lacks) fails it whatever the
peer (:func:`can_match`). So the verdict for a peer depends only on its family, the sets of
the rules that can match that it is in, and, where those rules read named ports on the peer,
its endpoint's ports. Taking only those rules' sets, rather than every set the program names,
makes most peers alike: an endpoint in a set that only a DNS rule names is, for a flow to port
443, like any address.

A :class:`Slice` holds that, for one (protocol as asked, port), and keeps the verdicts judged
through it: one per family for peers in none of its sets (most destinations), and one per
view for the others. Programs keep their slices; readers make and fill them (see
:mod:`fqdnpolicy.engine.kept`), and the C shortcut reads them.
"""

from __future__ import annotations

from collections.abc import Iterable

from fqdnpolicy.engine.compiler import CompiledRule
from fqdnpolicy.engine.identities import Identity, signature_mask
from fqdnpolicy.engine.results import Verdict

__all__ = ["Slice", "can_match"]


def can_match(rule: CompiledRule, proto: int, port: int | None) -> bool:
    """Whether some peer could make ``rule`` match a simple ``proto`` flow to ``port``.

    False only where the evaluator's ``mismatch`` fails the rule on the flow alone: another
    protocol, the excluded protocol, destination ports that leave ``port`` out (named ports
    may resolve to it, so they keep the rule), a port in its excluded ports, no port where it
    names ports, or a source port condition (a simple flow has no source port, which fails
    both kinds).
    """
    if rule.protocol is not None and rule.protocol != proto:
        return False
    if rule.not_protocol is not None and rule.not_protocol == proto:
        return False
    dst = rule.destination
    if dst.ports or dst.named_ports:
        if port is None:
            return False
        if not dst.named_ports and not any(r.first <= port <= r.last for r in dst.ports):
            return False
    excluded = dst.not_ports or dst.not_named_ports
    if excluded and (port is None or any(r.first <= port <= r.last for r in dst.not_ports)):
        return False
    src = rule.source
    return not (src.ports or src.named_ports or src.not_ports or src.not_named_ports)


class Slice(dict[tuple[object, ...], Verdict]):
    """The part of a program that simple flows of one protocol and port can meet.

    The dict holds the verdicts kept by :meth:`view`, for peers in some of :attr:`refs`.

    Attributes:
        asked: The protocol as the askers gave it (text or number), which the slice is for.
        refs: The sets the rules that can match name on their peer side.
        mask: :attr:`refs` folded onto bits
            (:func:`~fqdnpolicy.engine.identities.signature_mask`), for the C shortcut.
        peer_named: Some of those rules resolves named ports on a peer it does not require
            to be in one of its sets: only then do an endpoint's ports tell apart peers in
            none of :attr:`refs`.
        peer_ports: Some of those rules resolves named ports on its peer: only then are an
            endpoint's ports part of a :meth:`view`.
        v4: The verdict kept for IPv4 peers in none of :attr:`refs` (None until judged).
        v6: Likewise for IPv6.
    """

    __slots__ = ("asked", "mask", "peer_named", "peer_ports", "refs", "v4", "v6")
    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__
    __ne__ = object.__ne__

    def __init__(
        self,
        asked: object,
        refs: frozenset[int],
        mask: bytes,
        peer_named: bool,
        peer_ports: bool,
    ) -> None:
        super().__init__()
        self.asked = asked
        self.refs = refs
        self.mask = mask
        self.peer_named = peer_named
        self.peer_ports = peer_ports
        self.v4: Verdict | None = None
        self.v6: Verdict | None = None

    @classmethod
    def of(
        cls,
        asked: object,
        rules: Iterable[CompiledRule],
        shapes: dict[frozenset[int], tuple[frozenset[int], bytes]],
    ) -> Slice:
        """The slice for protocol ``asked`` of the rules that can match (see :func:`can_match`).

        ``shapes`` is the program's memo of sets and their masks: its slices mostly name the
        same sets, and share one set and one mask (a port scan makes a slice per port).
        """
        refs: set[int] = set()
        peer_named = peer_ports = False
        for rule in rules:
            peer = rule.peer
            refs.update(peer.required)
            refs.update(peer.forbidden)
            # Named ports on a peer that must be in a set: a peer in none of the slice's
            # sets fails that rule whatever its ports.
            if peer.named_ports or peer.not_named_ports:
                peer_ports = True
                peer_named = peer_named or not peer.required
        sets = frozenset(refs)
        shape = shapes.get(sets)
        if shape is None:
            shape = shapes[sets] = (sets, signature_mask(sets))
        return cls(asked, shape[0], shape[1], peer_named, peer_ports)

    def plain(self, peer: Identity) -> bool:
        """Whether ``peer`` is judged like any address of its family in none of the sets."""
        return peer.isdisjoint(self.refs) and (peer.ports is None or not self.peer_named)

    def view(self, peer: Identity) -> tuple[object, ...]:
        """What of ``peer`` the verdicts depend on: two peers alike in it are judged alike."""
        return (peer.family, peer & self.refs, peer.ports if self.peer_ports else None)

    def kept(self, peer: Identity) -> Verdict | None:
        """The verdict kept for ``peer``, or None."""
        if self.plain(peer):
            return self.v4 if peer.family == 4 else self.v6
        return self.get(self.view(peer))

    def keep(self, peer: Identity, verdict: Verdict) -> None:
        """Keep ``verdict`` for ``peer`` and every peer alike."""
        if not self.plain(peer):
            self[self.view(peer)] = verdict
        elif peer.family == 4:
            self.v4 = verdict
        else:
            self.v6 = verdict

    def size(self) -> int:
        """How many verdicts it keeps."""
        return len(self) + (self.v4 is not None) + (self.v6 is not None)

    def __repr__(self) -> str:
        return f"<Slice {len(self.refs)} sets, {self.size()} kept>"
