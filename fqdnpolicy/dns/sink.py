"""What the sources of DNS answers feed: the part of the cache they need.

:mod:`fqdnpolicy.dns.resolver`, :mod:`fqdnpolicy.dns.zonefiles` and :mod:`fqdnpolicy.dns.pcap`
hand answers to a :class:`CacheSink`, and name the server an answer came from as the cache's
trust check reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import dns.message

from fqdnpolicy.dns.wire import Extracted

__all__ = ["CacheSink"]


class CacheSink(Protocol):
    """The part of :class:`fqdnpolicy.dns.DNSCache` that the sources feed."""

    def observe(
        self, response: dns.message.Message | bytes, server: str, client: str | None = None
    ) -> Sequence[Any]:
        """Learn from a response received from ``server``."""

    def ingest(self, extracted: Extracted, server: str | None = None) -> Sequence[Any]:
        """Learn from an already-extracted answer."""


def _server_text(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
