"""DNS answers in, name -> IP mapping with expiries and change events out.

* :mod:`fqdnpolicy.dns.cache` - :class:`DNSCache`, the cache itself, built from
  :mod:`~fqdnpolicy.dns.learning` (taking answers in), :mod:`~fqdnpolicy.dns.links` (links,
  CNAME graph, effective mapping), :mod:`~fqdnpolicy.dns.expiry` (expiry heap),
  :mod:`~fqdnpolicy.dns.nameindex` (the ``names_matching`` index) and
  :mod:`~fqdnpolicy.dns.fastpath` (common answers learned directly).
* :mod:`fqdnpolicy.dns.model` - :class:`DNSChange`, :class:`DNSLink`, :class:`DNSStats`,
  :class:`CacheSnapshot`: what the cache hands out.
* :mod:`fqdnpolicy.dns.addresses` - which addresses the cache accepts.
* :mod:`fqdnpolicy.dns.persist` - cache files (atomic save, tolerant load, periodic saving).
* :mod:`fqdnpolicy.dns.wire` - fast extraction of answers from wire bytes, built from
  :mod:`~fqdnpolicy.dns.wireformat` (record types, the shapes extracted),
  :mod:`~fqdnpolicy.dns.wirenames` (names in wire bytes), :mod:`~fqdnpolicy.dns.layouts`
  (layouts of messages seen before) and :mod:`~fqdnpolicy.dns.fastwire` (the fast parser).
* :mod:`fqdnpolicy.dns.sources` - active resolver (:mod:`~fqdnpolicy.dns.resolver`), zone
  files (:mod:`~fqdnpolicy.dns.zonefiles`), pcap replay (:mod:`~fqdnpolicy.dns.pcap`).
* :mod:`fqdnpolicy.dns.cli` - the ``fqdnpolicy dns`` command.
"""

from __future__ import annotations

from fqdnpolicy.dns.cache import DNSCache
from fqdnpolicy.dns.model import CacheSnapshot, DNSChange, DNSLink, DNSStats
from fqdnpolicy.dns.persist import LoadReport, PeriodicSaver, SkippedLine

__all__ = [
    "CacheSnapshot",
    "DNSCache",
    "DNSChange",
    "DNSLink",
    "DNSStats",
    "LoadReport",
    "PeriodicSaver",
    "SkippedLine",
]
