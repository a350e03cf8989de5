"""Addresses in DNS answers and server addresses: which the cache accepts, and how written.

The cache holds an address only when the datapath can hold it as a destination that means the
same thing to every pod. Answers are learned from every entry point (wire, zone file, cache
file, :meth:`~fqdnpolicy.dns.DNSCache.ingest`, :meth:`~fqdnpolicy.dns.DNSCache.restore`)
under one rule, :func:`address_problem`:

* unspecified ``0.0.0.0`` and ``::``: sinkhole answers (counted apart, ``zero_address``);
* a zone index (``fe80::1%eth0``): a set element is an address, not an interface, and a
  ruleset with one is refused whole;
* loopback ``127.0.0.0/8`` and ``::1``: the asking host itself, never past the datapath;
* IPv6 link-local ``fe80::/10``: meaningful only on the link it was written for, which the
  server's answer does not name;
* multicast ``224.0.0.0/4`` and ``ff00::/8``, and the limited broadcast
  ``255.255.255.255``: groups and broadcasts, not a host a name stands for;
* IPv4-mapped IPv6 ``::ffff:0:0/96``: a socket sends to it as IPv4, so an IPv6 set element
  for it never matches, and taking it as the IPv4 address would let an AAAA answer allow
  IPv4 traffic.

IPv4 link-local ``169.254.0.0/16`` stays: hosts route it (cloud metadata services, node-local
DNS caches), and names for it are real. So do private, shared, reserved and NAT64 addresses.
"""

from __future__ import annotations

import ipaddress

__all__ = ["SUSPECT_HEADS", "ZERO_ADDRESSES", "address_problem", "parse_server", "suspect"]

ZERO_ADDRESSES = frozenset({"0.0.0.0", "::"})
"""Sinkhole answers (a resolver's way of saying "blocked"): never learned."""

_HEX = "0123456789abcdef"
# The first four characters of every address the rule rejects, written canonically (and in
# capitals, which are not canonical but cost nothing to catch): looking them up is one slice
# and one set probe, cheap enough for the learning hot path.
_SUSPECT_HEADS = frozenset(
    [f"{octet}." for octet in (127, *range(224, 240), 255)]
    + [f"fe{a}{b}" for a in "89ab" for b in _HEX]
    + [f"ff{a}{b}" for a in _HEX for b in _HEX]
    + ["0.0.", "::", "::1", "::ff"]
)
_SUSPECT_HEADS |= frozenset(head.upper() for head in _SUSPECT_HEADS)
SUSPECT_HEADS: frozenset[str] = _SUSPECT_HEADS
"""What :func:`suspect` looks the first four characters up in, for loops that inline it."""
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def suspect(text: str) -> bool:
    """Tell whether address text may break the rule: then :func:`address_problem` decides.

    Exact for canonical text (what the wire parser, dnspython and the zone loader give): no
    address the rule rejects is passed over. Other text is caught when it carries a zone
    index or is written in capitals; the slow entry points check it fully.

    Args:
        text: An address as an answer carries it.
    """
    return text[:4] in _SUSPECT_HEADS or "%" in text


def address_problem(text: object) -> str | None:
    """Say why the cache may not hold ``text`` as an address, or None when it may.

    Args:
        text: Canonical address text (as :mod:`ipaddress` writes it), or anything else.

    Returns:
        What is wrong, in words that finish "address X ...", or None.
    """
    try:
        ip = ipaddress.ip_address(text)  # type: ignore[arg-type]
    except ValueError:
        return "is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return "carries a zone index: a datapath set holds addresses, not interfaces"
    if ip.is_unspecified:
        return "is a zero address (a sinkhole answer)"
    if ip.is_loopback:
        return "is a loopback address: traffic to it never passes the datapath"
    if ip.version == 6 and ip.is_link_local:
        return "is IPv6 link-local: it means nothing without the link it was written for"
    if ip.is_multicast or ip == _BROADCAST:
        return "is multicast or broadcast, not a host a name stands for"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "is IPv4-mapped: traffic to it leaves as IPv4, which an IPv6 set never matches"
    if not isinstance(text, str) or str(ip) != text:
        return f"is not in canonical form ({ip})"
    return None


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
