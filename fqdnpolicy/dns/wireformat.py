"""What the DNS wire format and an extraction of it look like.

The record types and header layouts the parsers read, the shapes an extraction gives
(:class:`Record`, :class:`Extracted`, and the plain tuples ``_Raw`` of the fast path), the
error for bytes that are no DNS message, and dnspython's rule for forming RRsets (``_group``),
which both the fast parser and the remembered layouts follow. See :mod:`fqdnpolicy.dns.wire`.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "CLASS_IN",
    "TYPE_A",
    "TYPE_AAAA",
    "TYPE_CNAME",
    "TYPE_NS",
    "TYPE_OPT",
    "TYPE_SOA",
    "Extracted",
    "MalformedDNSMessage",
    "Record",
]


TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1


class Record(NamedTuple):
    """One answer-section record: class IN, type A, AAAA or CNAME.

    Attributes:
        name: Owner name, canonical (lowercase, no trailing dot).
        rtype: 1 (A), 5 (CNAME) or 28 (AAAA).
        ttl: TTL in seconds: the smallest TTL of the RRset the record belongs to.
        value: The address as :mod:`ipaddress` prints it, or the CNAME target, canonical.
    """

    name: str
    rtype: int
    ttl: int
    value: str


class Extracted(NamedTuple):
    """What the cache needs from one DNS message.

    Attributes:
        qname: The (first) question name, canonical; None when the message has no question.
        is_response: The QR bit.
        opcode: The header opcode (0 is a standard query).
        rcode: The response code, including the extended bits an OPT record carries.
        truncated: The TC bit.
        records: The class IN A/AAAA/CNAME records of the answer section, RRset by RRset in
            the order the RRsets first appear.
    """

    qname: str | None
    is_response: bool
    opcode: int
    rcode: int
    truncated: bool
    records: tuple[Record, ...]


_RawRecord = tuple[str, int, int, str]
# What _extract_fast gives: the fields of an Extracted in plain tuples, for a message parsed
# afresh and for a repeat extracted from a remembered layout alike. The cache reads them as it
# reads an Extracted (it unpacks them), and a plain tuple is made with no call, cheaper than
# Record and Extracted instances even built with tuple.__new__ (docs/development.md). The
# public functions turn them into an Extracted (_as_extracted).
_Raw = tuple[str | None, bool, int, int, bool, tuple[_RawRecord, ...]]


class MalformedDNSMessage(InvalidPolicy):
    """The bytes are not a DNS message that dnspython would accept.

    It is a ``ValueError`` (through :class:`~fqdnpolicy.errors.InvalidPolicy`) whose problem
    says what is wrong and, where known, at which byte offset.

    Attributes:
        reason: What is wrong, in a few words.
        offset: Byte offset in the message where the problem was found, when known.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(
            Problem(
                message=f"malformed DNS message: {reason}",
                path="" if offset is None else f"byte {offset}",
                hint="a DNS message in RFC 1035 wire format",
                code="malformed-dns-message",
            )
        )


_HEADER = struct.Struct("!HHHHHH")
_RR_HEADER = struct.Struct("!HHIH")
_U16_PAIR = struct.Struct("!HH")
_PTR_RR_HEADER = struct.Struct("!HHHIH")  # a compression pointer, then _RR_HEADER


def _group(answers: list[_RawRecord | None]) -> dict[tuple[str, int], list[Any]]:
    """Group answer records into dnspython's RRsets: ``(owner, type) -> [ttl, values, at]``.

    RRsets are in order of first appearance; ``at`` lists each record's position in
    ``answers`` (None stands for a record that is not extracted, an NS or SOA record). The
    TTL is the smallest of the RRset's, duplicate values appear once, and a second CNAME for
    an owner replaces the first.
    """
    rrsets: dict[tuple[str, int], list[Any]] = {}
    for at, record in enumerate(answers):
        if record is None:
            continue
        owner, rtype, ttl, value = record
        rrset = rrsets.get((owner, rtype))
        if rrset is None:
            rrsets[(owner, rtype)] = [ttl, [value], [at]]
            continue
        rrset[2].append(at)
        if ttl < rrset[0]:
            rrset[0] = ttl
        if rtype == TYPE_CNAME:  # a singleton type: a second CNAME replaces the first
            rrset[1] = [value]
        elif value not in rrset[1]:
            rrset[1].append(value)
    return rrsets
