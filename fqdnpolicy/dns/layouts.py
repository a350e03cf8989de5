"""Remembered layouts of DNS messages seen before, to extract their repeats without a parse.

Traffic repeats itself (many clients, the same names, a resolver counting TTLs down): a
message that differs from one seen twice only in its ID and TTLs is extracted with one
``struct`` unpack (:class:`_Template`). Memory is bounded (``_TEMPLATES``). The fast parser,
:mod:`fqdnpolicy.dns.fastwire`, looks layouts up and records new ones here.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from fqdnpolicy.dns.wireformat import _RR_HEADER, TYPE_OPT, _group, _Raw, _RawRecord


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
