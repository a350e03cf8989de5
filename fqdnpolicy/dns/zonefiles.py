"""Zone files as a source of DNS answers: an offline source for examples, demos and tests.

:func:`load_zone` / :func:`zone_answers` read an RFC 1035 master file with ``dns.zone`` and
feed one answer per owner name (with the in-zone CNAME chain it leads to) to
``cache.ingest``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator

import attrs
import dns.exception
import dns.rdataclass
import dns.zone

from fqdnpolicy.dns.sink import CacheSink
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.dns.wireformat import TYPE_A, TYPE_AAAA, TYPE_CNAME
from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = ["ZoneLoad", "load_zone", "zone_answers"]


@attrs.frozen
class ZoneLoad:
    """What :func:`load_zone` fed to the cache.

    Attributes:
        answers: Answers ingested (one per owner name with A, AAAA or CNAME records).
        records: Records in those answers, chains included.
        changes: Changes the cache reported.
        skipped_wildcards: Wildcard owners (``*.example.com``) left out: they answer
            queries, and a zone replay has none.
    """

    answers: int
    records: int
    changes: int
    skipped_wildcards: int


_LINE_IN_ERROR = re.compile(r":(\d+): ")
_MAX_CHAIN = 16


def _read_zone(source: str | os.PathLike[str], origin: str | None) -> dns.zone.Zone:
    is_path = isinstance(source, os.PathLike) or "\n" not in source
    where = os.fspath(source) if is_path else None
    try:
        if is_path:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = str(source)
        return dns.zone.from_text(
            text,
            origin=origin,
            relativize=False,
            check_origin=False,
            filename=where or "<zone>",
        )
    except OSError as exc:
        raise InvalidPolicy(
            Problem(f"cannot read zone file: {exc.strerror or exc}", file=where, code="io")
        ) from None
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        detail = str(exc)
        match = _LINE_IN_ERROR.search(detail)
        line = _error_line(text, int(match.group(1)), origin) if match else None
        if match:
            detail = detail[match.end() :]
        if isinstance(exc, dns.zone.UnknownOrigin):
            detail = "relative names but no origin"
        raise InvalidPolicy(
            Problem(
                f"invalid zone file: {detail}",
                file=where,
                line=line,
                hint="RFC 1035 master format; give origin= or a $ORIGIN line for relative names",
                code="bad-zone",
            )
        ) from None


def _error_line(text: str, reported: int, origin: str | None) -> int:
    """Return the line of a zone error that dnspython reports at ``reported``.

    dnspython counts the end of a line as read once a record's data has been parsed, so an
    error in record data is reported one line late. If the lines before the reported one
    already fail to parse on their own, the error is on the line before.
    """
    if reported <= 1:
        return reported
    head = "".join(text.splitlines(keepends=True)[: reported - 1])
    try:
        dns.zone.from_text(head, origin=origin, relativize=False, check_origin=False)
    except Exception:
        return reported - 1
    return reported


def _zone_records(zone: dns.zone.Zone) -> dict[str, list[Record]]:
    """Owner name -> its class IN A, AAAA and CNAME records, canonical."""
    out: dict[str, list[Record]] = {}
    for name, node in zone.nodes.items():
        owner = canonical_dns_name(name.to_text(omit_final_dot=True))
        for rdataset in node:
            rtype = int(rdataset.rdtype)
            if rdataset.rdclass != dns.rdataclass.IN or rtype not in (
                TYPE_A,
                TYPE_AAAA,
                TYPE_CNAME,
            ):
                continue
            for rd in rdataset:
                if rtype == TYPE_CNAME:
                    value = canonical_dns_name(rd.target.to_text(omit_final_dot=True))
                else:
                    value = str(ipaddress.ip_address(rd.address))
                out.setdefault(owner, []).append(Record(owner, rtype, rdataset.ttl, value))
    return out


def zone_answers(
    source: str | os.PathLike[str], *, origin: str | None = None
) -> Iterator[Extracted]:
    """Yield, for each owner name of a zone, the answer an authoritative server would give.

    The answer holds the owner's A, AAAA and CNAME records and, when a CNAME leads to another
    name of the zone, that name's records too (in-zone chains are followed, at most 16 links,
    loops stop). Wildcard owners are left out.

    Args:
        source: A path (``os.PathLike``, or a ``str`` without a newline) or the zone text.
        origin: Origin for relative names, unless the zone has ``$ORIGIN``.

    Yields:
        One response-shaped :class:`Extracted` per owner name, in zone order.

    Raises:
        InvalidPolicy: The file cannot be read or is not a valid zone (with the line).
    """
    yield from _answers(_zone_records(_read_zone(source, origin)))


def _is_wildcard(owner: str) -> bool:
    return owner == "*" or owner.startswith("*.")


def _answers(records: dict[str, list[Record]]) -> Iterator[Extracted]:
    for owner in records:
        if _is_wildcard(owner):
            continue
        answer: list[Record] = []
        seen = {owner}
        name: str | None = owner
        for _ in range(_MAX_CHAIN):
            if name is None:
                break
            own = records.get(name, [])
            answer.extend(own)
            name = next((r.value for r in own if r.rtype == TYPE_CNAME), None)
            if name in seen:
                break
            if name is not None:
                seen.add(name)
        yield Extracted(owner, True, 0, 0, False, tuple(answer))


def load_zone(
    cache: CacheSink, source: str | os.PathLike[str], *, origin: str | None = None
) -> ZoneLoad:
    """Feed a zone's A/AAAA/CNAME records to the cache, one answer per owner name.

    Args:
        cache: Receives ``cache.ingest(extracted, server=None)`` for each answer.
        source: A path (``os.PathLike``, or a ``str`` without a newline) or the zone text.
        origin: Origin for relative names, unless the zone has ``$ORIGIN``.

    Returns:
        Counts of answers, records and cache changes.

    Raises:
        InvalidPolicy: The file cannot be read or is not a valid zone (with the line).
    """
    zone_records = _zone_records(_read_zone(source, origin))
    answers = records = changes = 0
    for extracted in _answers(zone_records):
        answers += 1
        records += len(extracted.records)
        changes += len(cache.ingest(extracted, server=None))
    wildcards = sum(1 for owner in zone_records if _is_wildcard(owner))
    return ZoneLoad(answers, records, changes, wildcards)
