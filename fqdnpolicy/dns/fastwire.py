"""The fast parser of DNS messages: the common shapes read directly from the bytes.

:func:`_extract_fast` extracts standard queries and responses whose records are class IN A,
AAAA, CNAME, NS or SOA (plus one OPT record), in plain tuples (``_Raw``), and raises
:class:`_Unusual` for anything else, which :mod:`fqdnpolicy.dns.wire` hands to dnspython. It
reads names with :mod:`fqdnpolicy.dns.wirenames` and extracts repeats from the layouts of
:mod:`fqdnpolicy.dns.layouts`.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cache

import dns.edns

from fqdnpolicy.dns.layouts import _TEMPLATE_MAX_MESSAGE, _TEMPLATES, _TEMPLATES_MAX, _remember
from fqdnpolicy.dns.wireformat import (
    _HEADER,
    _PTR_RR_HEADER,
    _RR_HEADER,
    _U16_PAIR,
    MalformedDNSMessage,
    _group,
    _Raw,
    _RawRecord,
)
from fqdnpolicy.dns.wirenames import _RUN_TEXT, _NameEntry, _plain_run_text, _read_name

__all__ = ["format_ipv6"]


# The decimal text of each octet: an A record's address is four lookups and one f-string,
# cheaper than socket.inet_ntoa of the sliced bytes (docs/development.md), three times per
# typical answer.
_OCTET = tuple(str(b) for b in range(256))
_inet_ntop = socket.inet_ntop
_AF_INET6 = socket.AF_INET6


def format_ipv6(packed: bytes) -> str:
    """Return a 16-byte IPv6 address as :mod:`ipaddress` prints it, faster.

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


class _Unusual(Exception):  # a control-flow signal, not an error
    """The message is valid so far but needs dnspython's full parser."""


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
