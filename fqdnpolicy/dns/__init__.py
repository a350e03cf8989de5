"""DNS answers in, name -> IP mapping with expiries and change events out.

* :mod:`fqdnpolicy.dns.cache` - :class:`DNSCache`, the cache itself, and :class:`DNSChange`.
* :mod:`fqdnpolicy.dns.persist` - cache files (atomic save, tolerant load, periodic saving).
* :mod:`fqdnpolicy.dns.wire` - fast extraction of answers from wire bytes.
* :mod:`fqdnpolicy.dns.sources` - active resolver, zone files, pcap replay.
* :mod:`fqdnpolicy.dns.cli` - the ``fqdnpolicy dns`` command.
"""

from __future__ import annotations

from fqdnpolicy.dns.cache import DNSCache, DNSChange, DNSLink, DNSStats
from fqdnpolicy.dns.persist import LoadReport, PeriodicSaver, SkippedLine

__all__ = [
    "DNSCache",
    "DNSChange",
    "DNSLink",
    "DNSStats",
    "LoadReport",
    "PeriodicSaver",
    "SkippedLine",
]
