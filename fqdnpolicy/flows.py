"""Flows written as text: ``default/backend -> api.github.com:443/tcp``.

The command line and tools describe a flow as ``SRC -> DST[:PORT][/PROTOCOL]``:

* ``SRC`` is an endpoint ``namespace/name``;
* ``DST`` is an IP address (``[2001:db8::1]`` in brackets when a port follows), an endpoint
  ``namespace/name``, or a domain name (resolved through the DNS cache: one flow per address);
* ``PORT`` is a number; ``PROTOCOL`` a name or number (default ``tcp``).
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.protocols import PROTOCOL_NUMBERS

__all__ = ["Flow", "parse_flow"]

_HOST_PORT = re.compile(r"^(?P<host>[^:\s\[\]]+)(?::(?P<port>\d+))?$")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$")


@attrs.frozen
class Flow:
    """A parsed flow.

    Attributes:
        src: Source endpoint key.
        dst: Destination: an address, an endpoint key, or a domain name.
        dst_kind: ``"ip"``, ``"endpoint"`` or ``"name"``.
        port: Destination port, or None.
        protocol: Protocol as written (upper case), e.g. ``TCP``.
    """

    src: str
    dst: str
    dst_kind: str
    port: int | None
    protocol: str

    def __str__(self) -> str:
        """Render back as text."""
        dst = f"[{self.dst}]" if ":" in self.dst and self.port is not None else self.dst
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.src} -> {dst}{port}/{self.protocol.lower()}"


def _split_protocol(rest: str) -> tuple[str, str]:
    """Split a trailing ``/PROTOCOL`` (a protocol name or number) off the destination."""
    head, sep, tail = rest.rpartition("/")
    if sep and (tail.upper() in PROTOCOL_NUMBERS or tail.isdigit()):
        return head, tail.upper()
    return rest, "TCP"


def parse_flow(text: str) -> Flow:
    """Parse ``SRC -> DST[:PORT][/PROTOCOL]``.

    A trailing ``/word`` is read as the protocol when the word is a protocol name or number,
    so an endpoint whose name is a protocol name needs an explicit protocol
    (``ns/udp:53/udp``).

    Raises:
        InvalidPolicy: the text is not a flow, the source is not ``namespace/name`` or the
            port is out of range.
    """
    hint = "write SRC -> DST[:PORT][/PROTOCOL], e.g. default/backend -> api.github.com:443/tcp"
    src, arrow, rest = text.partition("->")
    src, rest = src.strip(), rest.strip()
    if not arrow or not src or not rest or " " in src or " " in rest:
        raise InvalidPolicy(Problem(f"not a flow: {text!r}", hint=hint))
    if src.count("/") != 1:
        raise InvalidPolicy(Problem(f"source {src!r} is not namespace/name", hint=hint))
    rest, protocol = _split_protocol(rest)
    match = _BRACKETED.match(rest) or _HOST_PORT.match(rest)
    if match is None and rest.count(":") >= 2:  # a bare IPv6 address, no port
        host, port_text = rest, None
    elif match is None:
        raise InvalidPolicy(Problem(f"not a flow: {text!r}", hint=hint))
    else:
        host, port_text = match["host"], match["port"]
    try:
        dst = str(ipaddress.ip_address(host))
        kind = "ip"
    except ValueError:
        if rest.startswith("[") or ":" in host:
            raise InvalidPolicy(Problem(f"not an IP address: {host!r}", hint=hint)) from None
        dst = host
        kind = "endpoint" if "/" in host else "name"
    port = int(port_text) if port_text else None
    if port is not None and not 0 <= port <= 65535:
        raise InvalidPolicy(Problem(f"port {port} out of range", hint="ports are 0-65535"))
    return Flow(src, dst, kind, port, protocol)
