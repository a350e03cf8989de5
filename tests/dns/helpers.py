"""Builders of DNS answers for the cache tests, a fake clock, and a probe of the cache lock."""

from __future__ import annotations

import threading

import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from fqdnpolicy.dns import DNSCache, fastwire
from fqdnpolicy.dns.wire import Extracted, Record
from tests.support import FakeClock as FakeClock  # the cache tests import it from here

A, CNAME, AAAA = 1, 5, 28


def answer(qname: str | None, *records: tuple[str, int, int, str], rcode: int = 0) -> Extracted:
    """An extracted NOERROR response to ``qname`` with ``(owner, rtype, ttl, value)`` records."""
    return Extracted(
        qname=qname,
        is_response=True,
        opcode=0,
        rcode=rcode,
        truncated=False,
        records=tuple(Record(*r) for r in records),
    )


def message(
    qname: str,
    *records: tuple[str, str, int, str],
    additional: tuple[tuple[str, str, int, str], ...] = (),
) -> dns.message.Message:
    """A dnspython response to an A query for ``qname`` with ``(owner, type, ttl, text)`` records.

    Names keep the case they are written in, so tests can feed mixed-case answers.
    """
    query = dns.message.make_query(qname, "A")
    response = dns.message.make_response(query)
    for section, rows in ((response.answer, records), (response.additional, additional)):
        for owner, rtype, ttl, text in rows:
            rdtype = dns.rdatatype.from_text(rtype)
            rrset = response.find_rrset(
                section,
                dns.name.from_text(owner),
                dns.rdataclass.IN,
                rdtype,
                create=True,
            )
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text), ttl)
    return response


def fast_path_result(data: bytes) -> object:
    """What the wire fast path itself gives, or None when it declines the message.

    The public functions wrap its plain tuples in a new ``Extracted`` on every call; the
    tuple itself shows whether a repeat came from a remembered layout (the same object).
    """
    try:
        return fastwire._extract_fast(data)
    except fastwire._Unusual:
        return None


def lock_is_free(cache: DNSCache) -> bool:
    """Whether another thread could take the cache's lock right now.

    The lock is re-entrant, so asking from the calling thread would always succeed; a probe
    thread tells whether the caller (or anyone) holds it.
    """
    free: list[bool] = []

    def probe() -> None:
        got = cache._lock.acquire(blocking=False)
        if got:
            cache._lock.release()
        free.append(got)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(timeout=30)
    return free[0]
