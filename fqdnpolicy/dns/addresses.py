"""Addresses in DNS answers and server addresses: which the cache accepts, and how written."""

from __future__ import annotations

import ipaddress

__all__ = ["ZERO_ADDRESSES", "parse_server"]

ZERO_ADDRESSES = frozenset({"0.0.0.0", "::"})
"""Sinkhole answers (a resolver's way of saying "blocked"): never learned."""


def parse_server(text: str) -> tuple[str, int | None] | None:
    """Parse a server address ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port``.

    Args:
        text: The address as configured or as seen on the wire.

    Returns:
        ``(canonical ip, port or None)``, or None when the text is not such an address.
    """
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
            if not port_text:
                return None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return str(ip), port
