"""Sources of DNS answers besides passive snooping: a resolver, zone files and pcap replay.

* :class:`ActiveResolver` queries exact names (A and AAAA) against given nameservers with
  dnspython, hands each response to ``cache.observe`` and re-queries every name before its
  answer expires. Timeouts and failures are counted, never raised out of its loop.
* :func:`load_zone` / :func:`zone_answers` read an RFC 1035 master file with ``dns.zone`` and
  feed one answer per owner name (with the in-zone CNAME chain it leads to) to
  ``cache.ingest``: an offline source for examples, demos and tests.
* :func:`replay_pcap` reads a capture (pcap or pcapng) of DNS traffic and hands every response
  (UDP, or TCP reassembled per flow) to ``cache.observe`` with the server it came from.

Each is a module of its own (:mod:`~fqdnpolicy.dns.resolver`,
:mod:`~fqdnpolicy.dns.zonefiles`, :mod:`~fqdnpolicy.dns.pcap`), feeding a :class:`CacheSink`
(:mod:`~fqdnpolicy.dns.sink`); this module gathers their public names.
"""

from __future__ import annotations

from fqdnpolicy.dns.pcap import ReplayReport, iter_pcap_responses, replay_pcap
from fqdnpolicy.dns.resolver import ActiveResolver, ResolverStats
from fqdnpolicy.dns.sink import CacheSink
from fqdnpolicy.dns.zonefiles import ZoneLoad, load_zone, zone_answers

__all__ = [
    "ActiveResolver",
    "CacheSink",
    "ReplayReport",
    "ResolverStats",
    "ZoneLoad",
    "iter_pcap_responses",
    "load_zone",
    "replay_pcap",
    "zone_answers",
]
