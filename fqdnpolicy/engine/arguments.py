"""What the readers accept: ports, ICMP fields, protocols and directions, checked once.

A bad value raises :class:`~fqdnpolicy.errors.InvalidPolicy` naming it; a good one comes
back as the number the evaluator compares.
"""

from __future__ import annotations

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.protocols import protocol_number

__all__ = ["DIRECTIONS", "bad", "icmp_field", "port_number", "protocol"]

DIRECTIONS = ("egress", "ingress")


def bad(message: str, hint: str = "") -> InvalidPolicy:
    """An InvalidPolicy about a reader's argument."""
    return InvalidPolicy(Problem(message, hint=hint))


def port_number(value: object, what: str) -> int | None:
    """A port 0-65535, or None for no port."""
    if value is None:
        return None
    # bool is an int subclass and 443.0 hashes like 443: only a plain int is a port.
    if not isinstance(value, int) or value.__class__ is bool or not 0 <= value <= 65535:
        raise bad(f"{what} {value!r} is not a port", "an integer 0-65535, or None")
    return value


def icmp_field(value: object, what: str) -> int | None:
    """An ICMP type or code 0-255, or None."""
    if value is None:
        return None
    if not isinstance(value, int) or value.__class__ is bool or not 0 <= value <= 255:
        raise bad(f"{what} {value!r} is out of range", "an integer 0-255, or None")
    return value


def protocol(value: object) -> int:
    """A protocol name or number as its number."""
    if value.__class__ is bool or not isinstance(value, str | int):
        raise bad(f"unknown protocol {value!r}", "TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255")
    return protocol_number(value)
