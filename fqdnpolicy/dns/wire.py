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
see :class:`_Template`).

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
import socket
import struct
from functools import cache, lru_cache
from typing import Any, NamedTuple

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "Extracted",
    "MalformedDNSMessage",
    "Record",
    "extract_message",
    "extract_wire",
    "extract_wire_fast",
    "format_ipv6",
]

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1

# dnspython follows at most this many compression pointers in one name
# (dns.name.MAX_COMPRESSION_POINTER_CHAIN); a longer chain is malformed.
_MAX_POINTER_HOPS = 16
# RFC 1035 3.1: a name is at most 255 octets in uncompressed wire form, root octet included.
_MAX_NAME_WIRE = 255


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


# --------------------------------------------------------------------------------------------
# Reference path: a dnspython Message
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Fast path
# --------------------------------------------------------------------------------------------

_HEADER = struct.Struct("!HHHHHH")
_RR_HEADER = struct.Struct("!HHIH")
_U16_PAIR = struct.Struct("!HH")
_PTR_RR_HEADER = struct.Struct("!HHHIH")  # a compression pointer, then _RR_HEADER

# The decimal text of each octet: an A record's address is four lookups and one f-string,
# cheaper than socket.inet_ntoa of the sliced bytes (docs/development.md), three times per
# typical answer.
_OCTET = tuple(str(b) for b in range(256))
_inet_ntop = socket.inet_ntop
_AF_INET6 = socket.AF_INET6
_new_tuple = tuple.__new__


def format_ipv6(packed: bytes) -> str:
    """Return a 16-byte IPv6 address as :mod:`ipaddress` prints it, 20 times faster.

    ``socket.inet_ntop`` follows the same RFC 5952 rules as ``ipaddress`` (longest run of two
    or more zero groups compressed, the first on a tie) except that it prints IPv4-mapped and
    IPv4-compatible addresses with a dotted tail; those go through ``ipaddress``, which is
    much slower (docs/development.md).

    Args:
        packed: Exactly 16 bytes.

    Returns:
        The canonical text, e.g. ``"2001:db8::1"``.
    """
    text = _inet_ntop(_AF_INET6, packed)
    if "." in text:
        return str(ipaddress.IPv6Address(packed))
    return text


# Bytes that a canonical name shows as themselves (after ASCII lowercasing): every ASCII byte
# except "." and "\" (which would change how the name splits into labels). Anything else is
# written as \DDD, as canonical_dns_name does.
_PLAIN = bytes(b for b in range(128) if b not in (0x2E, 0x5C))
_BYTE_TEXT = tuple(
    chr(b).lower() if b < 128 and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in range(256)
)


def _label_text(label: bytes) -> str:
    if label.translate(None, _PLAIN):
        return "".join([_BYTE_TEXT[b] for b in label])
    return label.decode("ascii").lower()


# Raw label runs (length octets included) -> their text. Traffic repeats the same names over
# and over; a hit costs one dict lookup instead of splitting, checking and decoding each label.
# Cleared when full, so memory stays bounded.
_RUN_TEXT: dict[bytes, str] = {}
_RUN_TEXT_MAX = 8192


def _run_text(run: bytes) -> str:
    """The text of a label run that ``_RUN_TEXT`` does not hold yet; remembered there."""
    # Every byte in _PLAIN: what run.translate(None, _PLAIN) tells, faster (_plain_run_text).
    if run.isascii() and 0x2E not in run and 0x5C not in run:
        # Plain labels (and no length octet that is "." itself): lowercase (length octets are
        # below "A"), overwrite each length octet after the first with a dot and decode once,
        # rather than slicing and decoding label by label.
        buf = bytearray(run.lower())
        i, n = run[0] + 1, len(run)
        while i < n:
            buf[i] = 0x2E
            i += run[i] + 1
        del buf[0]
        text = buf.decode()
    else:
        labels: list[str] = []
        i = 0
        while i < len(run):
            j = i + 1 + run[i]
            labels.append(_label_text(run[i + 1 : j]))
            i = j
        text = ".".join(labels)
    if len(_RUN_TEXT) >= _RUN_TEXT_MAX:
        _RUN_TEXT.clear()
    _RUN_TEXT[run] = text
    return text


def _plain_run_text(run: bytes) -> str | None:
    """The text of ``run`` if it is exactly a sequence of plain labels, else None.

    For a name written out in full, whose end the caller guesses from a zero byte: the run
    must split into labels (length octets 1-63) ending exactly at its end, be shorter than
    255 octets and need no escapes. Then the name is ``run`` and the root, as ``_read_name``
    would read it, in one walk instead of two and without its call. Anything else is left to
    ``_read_name``, which also says what is wrong.
    """
    n = len(run)
    # Every byte in _PLAIN, checked without the copy run.translate(None, _PLAIN) makes.
    if n >= _MAX_NAME_WIRE or not run.isascii() or 0x2E in run or 0x5C in run:
        return None
    c = run[0]
    if not 0 < c < 64:
        return None
    i = c + 1
    # Names come in families under a few parents (api1.example.com, api2.example.com): when
    # the labels after the first are a run read before, only the first label is new, about
    # half the walk below, which also leaves the parent. Every key of _RUN_TEXT is a sound
    # label sequence (each way of reading one
    # checks it), and the checks above cover the first label and the whole run's length and
    # bytes.
    if i < n:
        rest = _RUN_TEXT.get(run[i:])
        if rest is not None:
            text = f"{run[1:i].lower().decode()}.{rest}"
            if len(_RUN_TEXT) >= _RUN_TEXT_MAX:
                _RUN_TEXT.clear()
            _RUN_TEXT[run] = text
            return text
    buf = bytearray(run.lower())  # length octets are below "A": lower() leaves them alone
    while i < n:
        c = run[i]
        if not 0 < c < 64:
            return None
        buf[i] = 0x2E
        i += c + 1
    if i != n:
        return None
    del buf[0]
    text = buf.decode()
    if len(_RUN_TEXT) >= _RUN_TEXT_MAX - 1:
        _RUN_TEXT.clear()
    _RUN_TEXT[run] = text
    first = run[0] + 1
    if first < n:  # the parent, for the next name of the family
        _RUN_TEXT[run[first:]] = text[first:]
    return text


class _Unusual(Exception):  # a control-flow signal, not an error
    """The message is valid so far but needs dnspython's full parser."""


# A name read at an offset: (text, end of its sequential part, pointers followed, wire length)
_NameEntry = tuple[str, int, int, int]


def _read_name(
    data: bytes, start: int, limit: int, memo: dict[int, _NameEntry], hops: int
) -> _NameEntry:
    """Read the name at ``start``; bytes at ``limit`` and beyond are out of reach.

    Mirrors dnspython's rules: a pointer must point before the start of the label sequence it
    ends (so loops are impossible), the pointed-to labels must end before that start, and at
    most 16 pointers are followed. ``hops`` counts the pointers followed to get here. Each
    label sequence is read once per message: later pointers to it hit ``memo``.
    """
    p = start
    if p >= limit:
        raise MalformedDNSMessage("name runs past the end of its data", p)
    c = data[p]
    while 0 < c < 64:
        p += c + 1
        if p >= limit:
            raise MalformedDNSMessage("label runs past the end of its data", start)
        c = data[p]
    wire_len = p - start
    if wire_len:
        if wire_len >= _MAX_NAME_WIRE:  # the root octet or a pointer's target still follows
            raise MalformedDNSMessage("name longer than 255 octets", start)
        # The _RUN_TEXT lookup inlined: a known name costs one dict lookup and no call.
        run = data[start:p]
        text = _RUN_TEXT.get(run) or _run_text(run)
    else:
        text = ""
    if c == 0:
        entry = (text, p + 1, 0, wire_len + 1)
        memo[start] = entry
        return entry
    if c < 192:
        raise MalformedDNSMessage(f"unknown label type 0x{c & 0xC0:02x}", p)
    if p + 1 >= limit:
        raise MalformedDNSMessage("compression pointer cut short", p)
    target = ((c & 0x3F) << 8) | data[p + 1]
    if target >= start:
        raise MalformedDNSMessage("compression pointer does not point backwards", p)
    if hops >= _MAX_POINTER_HOPS:
        raise MalformedDNSMessage("too many compression pointers in one name", p)
    tail_entry = memo.get(target)
    if tail_entry is None:
        tail_entry = _read_name(data, target, start, memo, hops + 1)
    elif tail_entry[1] > start:
        raise MalformedDNSMessage("compressed name overlaps the name pointing to it", p)
    tail, _, tail_hops, tail_wire = tail_entry
    tail_hops += 1
    if hops + tail_hops > _MAX_POINTER_HOPS:
        raise MalformedDNSMessage("too many compression pointers in one name", p)
    wire_len += tail_wire
    if wire_len > _MAX_NAME_WIRE:
        raise MalformedDNSMessage("name longer than 255 octets", p)
    if text:
        if tail:
            text = f"{text}.{tail}"
    else:
        text = tail
    entry = (text, p + 2, tail_hops, wire_len)
    memo[start] = entry
    return entry


@cache
def _option_rule(otype: int) -> int:
    """How the fast path treats an EDNS option: 0 any bytes, 1 cookie, 2 needs dnspython."""
    if otype == dns.edns.OptionType.COOKIE:
        return 1
    cls = dns.edns.get_option_class(dns.edns.OptionType.make(otype))
    # These two take any bytes; every other specific class checks its contents.
    return 0 if cls in (dns.edns.GenericOption, dns.edns.NSIDOption) else 2


def _check_opt(data: bytes, p: int, end: int) -> None:
    while p < end:
        if p + 4 > end:
            raise MalformedDNSMessage("EDNS option header cut short", p)
        otype, olen = _U16_PAIR.unpack_from(data, p)
        p += 4
        if p + olen > end:
            raise MalformedDNSMessage("EDNS option runs past its record", p)
        rule = _option_rule(otype)
        if rule == 2:
            raise _Unusual
        # RFC 7873: an 8-byte client cookie, then nothing or an 8-32 byte server cookie.
        if rule == 1 and olen != 8 and not 16 <= olen <= 40:
            raise MalformedDNSMessage("EDNS cookie of a wrong length", p)
        p += olen


class _Template:
    """The layout of a message seen before, to extract its repeats without parsing them.

    Two messages whose bytes are equal apart from the ID and the record TTLs have equal
    extractions apart from the TTLs: neither dnspython nor we validate those fields, and the
    OPT record's TTL (which carries rcode bits) is not among them. So a message that matches
    a template byte for byte outside those fields (one ``struct`` unpack and one tuple
    comparison) gets the template's records with its own TTLs, each RRset's the smallest
    (with the same clamp as dnspython). The result is in plain tuples, as for a message parsed
    afresh (see ``_Raw``).
    """

    __slots__ = ("fixed", "groups", "head", "last", "layout", "size")

    def __init__(
        self,
        size: int,
        layout: struct.Struct,
        fixed: tuple[bytes, ...],
        groups: tuple[tuple[str, int, tuple[str, ...], tuple[int, ...]], ...],
        last: tuple[tuple[int, ...], _Raw],
    ) -> None:
        self.size = size
        self.layout = layout
        self.fixed = fixed
        # Each RRset's TTL positions as a slice when they are adjacent (nearly always): its
        # TTL is then min() of one slice, not of a list built position by position.
        self.groups: tuple[tuple[str, int, tuple[str, ...], slice | tuple[int, ...]], ...] = tuple(
            (owner, rtype, values, _span(at)) for owner, rtype, values, at in groups
        )
        self.head = last[1][:5]  # the header fields, the same for every repeat
        # (TTLs, result) of the latest match, in one tuple so that threads sharing the
        # template always see a matching pair.
        self.last = last

    def extract(self, ttls: tuple[int, ...]) -> _Raw:
        last_ttls, last = self.last
        if ttls == last_ttls:
            return last
        seen = ttls
        if max(ttls, default=0) > 0x7FFFFFFF:  # rare: only then a copy with dnspython's clamp
            ttls = tuple([t if t <= 0x7FFFFFFF else 0 for t in ttls])
        records: list[_RawRecord] = []
        append = records.append
        for owner, rtype, values, at in self.groups:
            ttl = min(ttls[at]) if type(at) is slice else min([ttls[i] for i in at])
            for value in values:
                append((owner, rtype, ttl, value))
        result: _Raw = (*self.head, tuple(records))
        self.last = (seen, result)
        return result


def _span(at: tuple[int, ...]) -> slice | tuple[int, ...]:
    """``at`` as a slice when its positions are consecutive, else as it is."""
    if at == tuple(range(at[0], at[0] + len(at))):
        return slice(at[0], at[0] + len(at))
    return at


# Key bytes (after the ID, up to the question's end; see _extract_fast) -> layouts seen with
# them. A key is first only marked; its layouts are recorded from the second sighting on, so
# a flood of unique messages costs one dict entry each. Bounded: cleared when full, few
# layouts per key (a server rotating its answers gives each order its own layout), and only
# messages of at most 512 bytes (classic UDP size, nearly all answers) are remembered, which
# bounds the memory of 8192 layouts. The mark is the empty tuple
# (one shared object), not an empty list: a list per unique message is a new object for the
# garbage collector to track, and a flood of unique messages made it run full collections
# over the whole process (and the DNS cache) again and again. See _extract_fast.
_TEMPLATES: dict[bytes, list[_Template] | tuple[()]] = {}
_TEMPLATES_MAX = 2048
_TEMPLATES_PER_KEY = 4
_TEMPLATE_MAX_MESSAGE = 512


@lru_cache(maxsize=4096)
def _layout(fmt: str) -> struct.Struct:
    return struct.Struct(fmt)


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


def _ttl_offsets(data: bytes, pos: int, count: int) -> list[int]:
    """Where the TTL of each of the ``count`` records from ``pos`` sits (OPT's excepted).

    Only for a message already extracted whole: its names and lengths are known to be sound.
    """
    offsets: list[int] = []
    for _ in range(count):
        c = data[pos]
        while 0 < c < 64:
            pos += c + 1
            c = data[pos]
        pos += 1 if c == 0 else 2
        rtype, _, _, rdlen = _RR_HEADER.unpack_from(data, pos)
        if rtype != TYPE_OPT:
            offsets.append(pos + 4)
        pos += 10 + rdlen
    return offsets


def _remember(
    data: bytes,
    key: bytes,
    start: int,
    templates: list[_Template],
    records_at: int,
    count: int,
    answers: list[_RawRecord | None],
    result: _Raw,
) -> None:
    """Record the layout of ``data`` (a key seen before) under ``key``.

    ``start`` is where the key ends, ``records_at`` where the records begin, ``count`` how many
    there are and ``answers`` the answer section's records as ``_extract_fast`` collected them.
    """
    ttl_at = _ttl_offsets(data, records_at, count)
    if ttl_at and ttl_at[0] < start:
        return  # the key would cover a TTL
    parts = ["!"]
    for at in ttl_at:
        parts.append(f"{at - start}sI")
        start = at + 4
    parts.append(f"{len(data) - start}s")
    layout = _layout("".join(parts))
    fields = layout.unpack_from(data, len(data) - layout.size)
    # An answer record's position among the answers is its TTL's among ttl_at: the answer
    # section comes first and holds no OPT record.
    groups = tuple(
        (owner, rtype, tuple(values), tuple(indices))
        for (owner, rtype), (_, values, indices) in _group(answers).items()
    )
    template = _Template(len(data), layout, fields[0::2], groups, (fields[1::2], result))
    if len(templates) >= _TEMPLATES_PER_KEY:
        del templates[0]
    templates.append(template)


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


def _extract_fast(data: bytes) -> _Raw:
    """The fast path: the fields of an :class:`Extracted` in plain tuples (see ``_Raw``)."""
    n = len(data)
    if n < 12:
        raise MalformedDNSMessage("shorter than the 12-byte header", 0)
    # Key of remembered layouts: the bytes after the ID up to the first zero byte after the
    # header (the end of an uncompressed question name) and 4 more (type and class). Found
    # with one C call, so a repeat is recognised without reading its question name.
    zero = data.find(0, 12)
    key_end = n if zero < 0 else zero + 5
    key = data[2:key_end]
    templates = _TEMPLATES.get(key)
    if templates:
        for template in templates:
            if template.size == n:
                fields = template.layout.unpack_from(data, key_end)
                if fields[0::2] == template.fixed:
                    return template.extract(fields[1::2])
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    octet = _OCTET
    if flags & 0x7800 or qdcount > 1:  # opcode other than QUERY, several questions
        raise _Unusual
    memo: dict[int, _NameEntry] = {}
    pos = 12
    qname: str | None = None
    if qdcount:
        # Nearly always written out in full, so ending at the first zero byte.
        qname = None
        if zero > 12:
            run = data[12:zero]
            qname = _RUN_TEXT.get(run) or _plain_run_text(run)
        if qname is None:
            qname, pos, _, _ = _read_name(data, 12, n, memo, 0)
        else:
            pos = zero + 1
            memo[12] = (qname, pos, 0, pos - 12)
        pos += 4
        if pos > n:
            raise MalformedDNSMessage("question cut short", n)
    records_at = pos
    # The answer section's A/AAAA/CNAME records as they come (None for an NS or SOA record
    # there, so that each keeps its position). Nearly always each RRset's records are
    # adjacent, share one TTL and repeat no value: then these are already dnspython's RRsets,
    # and only when one of those checks fails does _group regroup them (the common answer
    # never pays for grouping).
    answers: list[_RawRecord | None] = []
    regroup = False
    run_owner = ""
    run_type = 0  # no record has type 0 here: the first record starts a run
    run_ttl = 0
    run_values: list[str] = []
    run_owners: list[str] = []  # owners of the runs so far
    ednsflags = 0
    seen_opt = False
    answer_end = ancount
    non_additional = ancount + nscount
    # The owner pointer and header (12 bytes) of the latest record when it was an answer
    # address with a pointer owner, else None. A record starting with the same bytes is the
    # next address of the same RRset (same owner, type, class, TTL and length), read without
    # unpacking or checking again.
    head: bytes | None = None
    owner = ""
    rtype = ttl = rdlen = 0
    for i in range(ancount + nscount + arcount):
        if head is not None and data[pos : pos + 12] == head and i < answer_end:
            rdata = pos + 12
            end = rdata + rdlen
            if end <= n:
                if rtype == 1:
                    value = (
                        f"{octet[data[rdata]]}.{octet[data[rdata + 1]]}."
                        f"{octet[data[rdata + 2]]}.{octet[data[rdata + 3]]}"
                    )
                else:
                    value = format_ipv6(data[rdata:end])
                pos = end
                if value in run_values:
                    regroup = True
                run_values.append(value)
                answers.append((owner, rtype, ttl, value))
                continue
        head = None
        start = pos
        # Most owner names are one pointer to a name read before: take it from the memo
        # without a call (the checks are _read_name's, for this one case), and unpack the
        # pointer with the record header.
        entry = None
        if pos + 12 <= n and data[pos] >= 192:
            pointer, rtype, rclass, ttl, rdlen = _PTR_RR_HEADER.unpack_from(data, pos)
            entry = memo.get(pointer & 0x3FFF)
            if entry is not None and entry[1] <= pos and entry[2] < 16:
                owner = entry[0]
                pos += 2
            else:
                entry = None
        if entry is None:
            owner, pos, _, _ = _read_name(data, pos, n, memo, 0)
            if pos + 10 > n:
                raise MalformedDNSMessage("record header cut short", pos)
            rtype, rclass, ttl, rdlen = _RR_HEADER.unpack_from(data, pos)
        rdata = pos + 10
        end = rdata + rdlen
        if end > n:
            raise MalformedDNSMessage("record data runs past the end", pos + 8)
        if rtype == 41:  # OPT
            if i < non_additional or seen_opt or owner:
                raise MalformedDNSMessage("OPT record misplaced, repeated or not at root", pos)
            _check_opt(data, rdata, end)
            seen_opt = True
            ednsflags = ttl
            pos = end
            continue
        if rclass != 1:  # not class IN
            raise _Unusual
        if rtype == 1:  # A
            if rdlen != 4:
                raise MalformedDNSMessage("A record data is not 4 bytes", pos + 8)
            if i >= answer_end:
                pos = end
                continue
            value = (
                f"{octet[data[rdata]]}.{octet[data[rdata + 1]]}."
                f"{octet[data[rdata + 2]]}.{octet[data[rdata + 3]]}"
            )
        elif rtype == 5 or rtype == 2:  # CNAME, NS
            # A name written out in full ends with the record's last byte.
            text = None
            if end - 1 > rdata and data[end - 1] == 0:
                run = data[rdata : end - 1]
                text = _RUN_TEXT.get(run) or _plain_run_text(run)
            if text is None:
                value, q, _, _ = _read_name(data, rdata, end, memo, 0)
                if q != end:
                    raise MalformedDNSMessage("name does not fill the record data", q)
            else:
                value = text
                memo[rdata] = (text, end, 0, end - rdata)
            if i >= answer_end:
                pos = end
                continue
            if rtype == 2:
                answers.append(None)
                regroup = True
                pos = end
                continue
        elif rtype == 28:  # AAAA
            if rdlen != 16:
                raise MalformedDNSMessage("AAAA record data is not 16 bytes", pos + 8)
            if i >= answer_end:
                pos = end
                continue
            value = format_ipv6(data[rdata:end])
        elif rtype == 6:  # SOA
            _, q, _, _ = _read_name(data, rdata, end, memo, 0)
            _, q, _, _ = _read_name(data, q, end, memo, 0)
            if q + 20 != end:
                raise MalformedDNSMessage("SOA record data of a wrong length", q)
            if i < answer_end:
                answers.append(None)
                regroup = True
            pos = end
            continue
        else:
            raise _Unusual
        pos = end
        if ttl > 0x7FFFFFFF:
            ttl = 0
        if owner == run_owner and rtype == run_type:
            # The run continues: it is an RRset as it stands unless the TTL differs, the value
            # repeats, or it is a second CNAME (a singleton type).
            if ttl != run_ttl or rtype == 5 or value in run_values:
                regroup = True
            run_values.append(value)
        else:
            # A new run: an RRset unless an earlier run had the same owner (and so perhaps
            # the same type).
            if owner in run_owners:
                regroup = True
            run_owners.append(owner)
            run_owner = owner
            run_type = rtype
            run_ttl = ttl
            run_values = [value]
        answers.append((owner, rtype, ttl, value))
        if entry is not None and rtype != 5:
            head = data[start : start + 12]
    if pos != n:
        raise MalformedDNSMessage("bytes left after the last record", pos)
    records: tuple[_RawRecord, ...]
    if regroup:
        records = tuple(
            [
                (owner, rtype, rrset_ttl, value)
                for (owner, rtype), (rrset_ttl, values, _) in _group(answers).items()
                for value in values
            ]
        )
    else:
        records = tuple(answers)  # type: ignore[arg-type]  # no None: regroup is set for one
    result: _Raw = (
        qname,
        (flags & 0x8000) != 0,
        0,
        (flags & 0xF) | ((ednsflags >> 20) & 0xFF0),
        (flags & 0x0200) != 0,
        records,
    )
    if n <= _TEMPLATE_MAX_MESSAGE and key_end <= n:
        if templates is None:
            # A key is first only marked (see _TEMPLATES): one dict entry per unique message.
            if len(_TEMPLATES) >= _TEMPLATES_MAX:
                _TEMPLATES.clear()
            _TEMPLATES[key] = ()
        else:
            if not templates:
                templates = _TEMPLATES[key] = []
            _remember(
                data,
                key,
                key_end,
                templates,
                records_at,
                ancount + nscount + arcount,
                answers,
                result,
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
