"""Kept verdicts: under which key a program keeps what was judged with it, and how many.

A program (:class:`~fqdnpolicy.engine.programs.Program`) keeps the verdicts judged with it
under what decides them: a simple flow's in the slice of its protocol and port
(:mod:`fqdnpolicy.engine.slices`), by the peer's family or its view, any other flow's by the
peer and the flow. This module finds a kept verdict, judges one that is not kept yet, serves
a flow to an endpoint's address from both sides' kept verdicts, and keeps the programs'
tables within one bound over all programs.
"""

from __future__ import annotations

from collections.abc import Mapping

from fqdnpolicy.engine.evaluate import Flow, evaluate
from fqdnpolicy.engine.identities import CANONICAL_IPV4, Identity, remember_outside
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.published import EndpointRecord, Snapshot
from fqdnpolicy.engine.results import Verdict
from fqdnpolicy.engine.slices import Slice

__all__ = ["KEPT_LIMIT", "KeptVerdicts", "first_sighting", "kept_simple", "kept_to_endpoint"]

# Verdicts programs keep, over all programs, before they all start over: a port
# scan from every endpoint must not grow them without bound.
KEPT_LIMIT = 1 << 20


def filed(program: Program, asked: object, port: object) -> tuple[object, Slice | None]:
    """Where ``program`` files the slice of protocol ``asked`` and ``port``, and that slice.

    Under the port for the protocol first asked with it, else under (protocol, port) (see
    :class:`~fqdnpolicy.engine.programs.Program`; the C shortcut reads them alike).
    """
    part = program.get(port)
    if isinstance(part, Slice) and part.asked != asked:
        key = (asked, port)
        other = program.get(key)
        return key, other if isinstance(other, Slice) else None
    return port, part if isinstance(part, Slice) else None


def kept_simple(program: Program, peer: Identity, asked: object, port: object) -> Verdict | None:
    """The verdict ``program`` keeps for a simple flow to ``peer``, or None."""
    part = filed(program, asked, port)[1]
    return None if part is None else part.kept(peer)


class KeptVerdicts:
    """Judges what programs have not kept yet, and keeps it, within :data:`KEPT_LIMIT`."""

    def __init__(self, records: Mapping[str, EndpointRecord]) -> None:
        self._records = records
        self._count = 0

    def kept_or_judged(self, program: Program, peer: Identity, flow: Flow) -> Verdict:
        """``program``'s verdict for ``flow`` (not simple) to ``peer``, judged and kept if new."""
        key = (peer, flow)
        found = program.get(key)
        if found is None:
            found = evaluate(program, peer, flow)
            self._count_one()
            program[key] = found
        return found  # type: ignore[return-value]

    def simple(self, program: Program, peer: Identity, flow: Flow, asked: object) -> Verdict:
        """``program``'s verdict for simple ``flow`` to ``peer``, judged and kept if new.

        ``asked`` is the protocol as the caller gave it: the slice is kept under it.
        """
        key, part = filed(program, asked, flow[1])
        if part is None:
            part = program.slice_for(asked, flow[0], flow[1])
            self._count_one()
            program[key] = part
        found = part.kept(peer)
        if found is None:
            found = evaluate(program, peer, flow)
            self._count_one()
            part.keep(peer, found)
        return found

    def _count_one(self) -> None:
        # Readers fill programs (a count lost between threads only delays the bound a little).
        self._count += 1
        if self._count >= KEPT_LIMIT:
            self._count = 0
            for record in list(self._records.values()):
                record.egress.clear()
                record.ingress.clear()


def kept_to_endpoint(
    hosts: Mapping[str, Identity],
    records: Mapping[str, EndpointRecord],
    owners: Mapping[str, EndpointRecord],
    program: Program,
    ident: Identity,
    src: object,
    dst: object,
    protocol: object,
    port: object,
) -> Verdict | None:
    """The kept verdicts of a flow to an endpoint: the sender's, then the receiver's."""
    egress = kept_simple(program, ident, protocol, port)
    if egress is None or egress.action != "Allow":
        return egress
    owner = owners.get(dst)  # type: ignore[call-overload]
    if owner is None:
        return None
    receiver = owner.ingress
    if not receiver.blocks and receiver.fallback.allowed:
        return egress  # no policy applies to the receiver: whoever sends, it allows
    record = records.get(src)  # type: ignore[call-overload]
    if record is None:
        return None
    address = record.ip6 if ident.family == 6 else record.ip4
    if address is None:
        return None
    peer = hosts.get(address)
    if peer is None:
        return None
    found = kept_simple(receiver, peer, protocol, port)
    if found is None:
        return None
    return egress if found.action == "Allow" else found


def first_sighting(snapshot: Snapshot, dst: object) -> Identity | None:
    """The identity of an address in no host set, met for the first time.

    Only IPv4 in canonical text is resolved here (a pattern match, not a parse); anything
    else takes the general path, which parses and refuses bad text.
    """
    if dst.__class__ is not str or CANONICAL_IPV4.fullmatch(dst) is None:
        return None
    return remember_outside(snapshot.prefixes, dst)
