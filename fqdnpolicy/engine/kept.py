"""Kept verdicts: under which key a program keeps what was judged with it, and how many.

A program (:class:`~fqdnpolicy.engine.programs.Program`) keeps the verdicts judged with it
under what decides them: the peer's family, or its view. This module says which key a flow's
verdict goes under, judges a verdict that is not kept yet, serves a flow to an endpoint's
address from both sides' kept verdicts, and keeps the programs' tables within one bound over
all programs.
"""

from __future__ import annotations

from collections.abc import Mapping

from fqdnpolicy.engine.evaluate import Flow, evaluate
from fqdnpolicy.engine.identities import CANONICAL_IPV4, Identity, remember_outside
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.published import EndpointRecord, Snapshot
from fqdnpolicy.engine.results import Verdict

__all__ = ["KEPT_LIMIT", "KeptVerdicts", "first_sighting", "kept_key", "kept_to_endpoint"]

# Verdicts programs keep, over all programs, before they all start over: a port
# scan from every endpoint must not grow them without bound.
KEPT_LIMIT = 1 << 20


def kept_key(program: Program, peer: Identity, asked: object, port: object) -> tuple[object, ...]:
    """Where ``program`` keeps its verdict for a simple flow to ``peer`` (see Program)."""
    if program.plain(peer):
        return (peer.family, asked, port)
    return (program.view(peer), asked, port)


class KeptVerdicts:
    """Judges what programs have not kept yet, and keeps it, within :data:`KEPT_LIMIT`."""

    def __init__(self, records: Mapping[str, EndpointRecord]) -> None:
        self._records = records
        self._count = 0

    def kept_or_judged(
        self, program: Program, key: tuple[object, ...], peer: Identity, flow: Flow
    ) -> Verdict:
        """``program``'s verdict kept under ``key``, judged and kept if there is none."""
        found = program.get(key)
        if found is None:
            found = evaluate(program, peer, flow)
            self._keep(program, key, found)
        return found

    def _keep(self, program: Program, key: tuple[object, ...], verdict: Verdict) -> None:
        # Readers fill programs (a count lost between threads only delays the bound a little).
        self._count += 1
        if self._count >= KEPT_LIMIT:
            self._count = 0
            for record in list(self._records.values()):
                record.egress.clear()
                record.ingress.clear()
        program[key] = verdict


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
    egress = program.get(kept_key(program, ident, protocol, port))
    if egress is None or egress.action != "Allow":
        return egress
    record = records.get(src)  # type: ignore[call-overload]
    owner = owners.get(dst)  # type: ignore[call-overload]
    if record is None or owner is None:
        return None
    peer = hosts.get(record.ip6 if ident.family == 6 else record.ip4)
    if peer is None:
        return None
    receiver = owner.ingress
    found = receiver.get(kept_key(receiver, peer, protocol, port))
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
