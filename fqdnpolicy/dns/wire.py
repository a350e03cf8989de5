r"""Extract the answer records of a DNS message, fast.

:func:`extract_wire` turns a DNS message in wire format into an :class:`Extracted`: the question
name, the header bits the cache needs and the class IN A/AAAA/CNAME records of the answer
section. It extracts faithfully and judges nothing; the cache decides what to trust.

Why a parser of our own: ``dns.message.from_wire`` builds a full object graph for every
response, far more than the cache needs to ingest a fast stream of them.
:func:`extract_wire_fast` reads the common shapes directly from the bytes, many times faster
(``benchmarks/bench_dns_wire.py`` measures the ratio; docs/development.md has the figures)
and answers ``None`` for anything unusual, which :func:`extract_wire` then hands to dnspython.
Traffic repeats itself (many clients, the same names, a resolver counting TTLs down), so the
fast path also remembers the layout of messages it has seen twice: a repeat that differs only
in its ID and TTLs is extracted with one ``struct`` unpack instead of a parse (bounded memory;
see :mod:`fqdnpolicy.dns.layouts`).

What "faithful" means is defined by dnspython, so the two paths can never disagree:
``extract_wire(data) == extract_message(dns.message.from_wire(data))`` for every input that
dnspython accepts, and :class:`MalformedDNSMessage` for every input it rejects. The
differential fuzz test (``tests/dns/test_wire_fuzz.py``) checks exactly this. Consequences of
following dnspython's message model:

* Records with the same owner, class and type form one RRset, placed where its first record
  appeared; its TTL is the smallest TTL of its records and duplicate values appear once.
* A TTL above 2**31 - 1 reads as 0 (RFC 2181, section 8).
* A second CNAME for the same owner replaces the first (CNAME is a singleton type).
* Compression pointers must point strictly backwards, a pointed-to name may not overlap the
  name that points to it, and at most 16 pointers are followed per name.
* Trailing bytes after the last record, a second OPT record or an OPT outside the additional
  section, and any TSIG record (there is no key to check it with) make the message malformed.

Names are given in the project's canonical form for names seen in DNS traffic
(:func:`fqdnpolicy.domains.canonical_dns_name`): lowercase ASCII letters, no trailing dot (the
root is ``""``), and ``\DDD`` escapes for ``.`` and ``\`` inside a label and for bytes above
127. IP addresses are written as :mod:`ipaddress` prints them.
"""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from fqdnpolicy.dns.fastwire import _extract_fast, _Unusual, format_ipv6
from fqdnpolicy.dns.wireformat import (
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    Extracted,
    MalformedDNSMessage,
    Record,
    _Raw,
)
from fqdnpolicy.domains import canonical_dns_name

__all__ = [
    "Extracted",
    "MalformedDNSMessage",
    "Record",
    "extract_message",
    "extract_wire",
    "extract_wire_fast",
    "format_ipv6",
]


_new_tuple = tuple.__new__


def _name_text(name: dns.name.Name) -> str:
    return canonical_dns_name(name.to_text(omit_final_dot=True))


def extract_message(msg: dns.message.Message) -> Extracted:
    """Extract what the cache needs from a parsed dnspython message.

    This is the reference the fast path is tested against: it only reads dnspython's model.
    RRsets marked for deletion (dynamic update prerequisites) are not answers and are left out.

    Args:
        msg: A message, e.g. from ``dns.message.from_wire`` or ``dns.message.make_response``.

    Returns:
        The extracted header bits, question name and answer records.
    """
    qname = _name_text(msg.question[0].name) if msg.question else None
    records: list[Record] = []
    for rrset in msg.answer:
        if rrset.rdclass != dns.rdataclass.IN or rrset.deleting is not None:
            continue
        rtype = int(rrset.rdtype)
        if rtype not in (TYPE_A, TYPE_AAAA, TYPE_CNAME):
            continue
        owner = _name_text(rrset.name)
        for rd in rrset:
            if rtype == TYPE_CNAME:
                value = _name_text(rd.target)
            else:
                value = str(ipaddress.ip_address(rd.address))
            records.append(Record(owner, rtype, rrset.ttl, value))
    flags = int(msg.flags)
    return Extracted(
        qname=qname,
        is_response=bool(flags & dns.flags.QR),
        opcode=int(msg.opcode()),
        rcode=int(msg.rcode()),
        truncated=bool(flags & dns.flags.TC),
        records=tuple(records),
    )


def extract_wire_fast(data: bytes) -> Extracted | None:
    """Extract from wire bytes without dnspython, or say that the message needs it.

    Handles standard queries/responses (opcode 0) with at most one question whose records
    are, in any section, class IN A, AAAA, CNAME, NS or SOA, plus one OPT record in the
    additional section with options whose contents dnspython does not interpret (or a
    cookie). Everything else is "unusual" and answered with ``None``.

    Args:
        data: The message in wire format.

    Returns:
        The same :class:`Extracted` that :func:`extract_message` gives for dnspython's parse,
        or None when the message is unusual.

    Raises:
        MalformedDNSMessage: dnspython would reject the message.
    """
    try:
        return _as_extracted(_extract_fast(data))
    except _Unusual:
        return None


def _as_extracted(raw: _Raw) -> Extracted:
    """``raw`` (from :func:`_extract_fast`) as an :class:`Extracted` of :class:`Record`."""
    qname, is_response, opcode, rcode, truncated, records = raw
    result: Extracted = _new_tuple(
        Extracted,
        (
            qname,
            is_response,
            opcode,
            rcode,
            truncated,
            tuple([_new_tuple(Record, r) for r in records]),
        ),
    )
    return result


def extract_wire(data: bytes | bytearray | memoryview) -> Extracted:
    """Extract what the cache needs from a DNS message in wire format.

    Common messages take the fast path (a few microseconds); the rest go through
    ``dns.message.from_wire``. Either way the result equals
    ``extract_message(dns.message.from_wire(data))``.

    Args:
        data: The message (bytes, bytearray or memoryview), without the TCP length prefix.

    Returns:
        The extracted header bits, question name and answer records.

    Raises:
        MalformedDNSMessage: The bytes are not a message dnspython accepts (or not bytes).
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedDNSMessage(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    assert isinstance(data, bytes)  # for mypy: narrowed above
    try:
        return _as_extracted(_extract_fast(data))
    except _Unusual:
        pass
    try:
        msg = dns.message.from_wire(data)
    # dnspython signals bad input with FormError, ValueError, UnicodeError, BadEDNS,
    # UnknownTSIGKey and more; all of them mean the same thing to us.
    except Exception as exc:
        raise MalformedDNSMessage(f"{type(exc).__name__}: {exc}") from exc
    return extract_message(msg)
