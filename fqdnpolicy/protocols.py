"""IP protocols as Calico names them: one table for the whole library.

Calico accepts six protocol names (``TCP``, ``UDP``, ``ICMP``, ``ICMPv6``, ``SCTP``,
``UDPLite``) in any letter case, or an IP protocol number 1-255. Everything that turns a
written protocol into a number, or a number back into Calico's spelling, goes through this
module, so the loader, the linter, the engine and the backends cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "ICMP",
    "ICMPV6",
    "KUBERNETES_PROTOCOLS",
    "PORTED_PROTOCOLS",
    "PORT_RULE_PROTOCOLS",
    "PROTOCOL_FAMILY",
    "PROTOCOL_NAMES",
    "PROTOCOL_NUMBERS",
    "SCTP",
    "TCP",
    "UDP",
    "UDPLITE",
    "protocol_name",
    "protocol_number",
    "protocol_number_or_none",
]

#: IP protocol number of TCP.
TCP: Final = 6
#: IP protocol number of UDP.
UDP: Final = 17
#: IP protocol number of ICMP (IPv4 only).
ICMP: Final = 1
#: IP protocol number of ICMPv6 (IPv6 only).
ICMPV6: Final = 58
#: IP protocol number of SCTP.
SCTP: Final = 132
#: IP protocol number of UDP-Lite.
UDPLITE: Final = 136

#: Calico's protocol names, in Calico's spelling and order.
PROTOCOL_NAMES: Final = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")

#: Calico's protocol names, upper-cased, to their numbers: look a written name up as
#: ``PROTOCOL_NUMBERS.get(name.upper())`` (Calico accepts any letter case).
PROTOCOL_NUMBERS: Final[Mapping[str, int]] = MappingProxyType(
    {"TCP": TCP, "UDP": UDP, "ICMP": ICMP, "ICMPV6": ICMPV6, "SCTP": SCTP, "UDPLITE": UDPLITE}
)

_NAME_OF: Final = {PROTOCOL_NUMBERS[name.upper()]: name for name in PROTOCOL_NAMES}

#: Protocols whose header carries source and destination ports (TCP, UDP, SCTP, UDP-Lite):
#: the ones a datapath can match a port on.
PORTED_PROTOCOLS: Final = frozenset({TCP, UDP, SCTP, UDPLITE})

#: Protocols a Calico rule may give ports for (TCP, UDP, SCTP): Calico's validation refuses
#: ``ports``/``notPorts`` with any other protocol, UDP-Lite included, although its header
#: carries ports.
PORT_RULE_PROTOCOLS: Final = frozenset({TCP, UDP, SCTP})

#: The protocols a Kubernetes port (a container port, a NetworkPolicy port) may name, in
#: Kubernetes' spelling: Kubernetes, unlike Calico, accepts only these and only upper case.
KUBERNETES_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")

#: Protocols that exist in one address family only, to that family (4 or 6): ICMP is IPv4's,
#: ICMPv6 is IPv6's.
PROTOCOL_FAMILY: Final[Mapping[int, int]] = MappingProxyType({ICMP: 4, ICMPV6: 6})


def protocol_name(number: int) -> str:
    """Return Calico's spelling of a protocol number, or the number as text.

    Args:
        number: An IP protocol number.

    Returns:
        ``"TCP"``, ``"UDP"``, ``"ICMP"``, ``"ICMPv6"``, ``"SCTP"`` or ``"UDPLite"`` for the six
        protocols Calico names, else ``str(number)``.
    """
    return _NAME_OF.get(number) or str(number)


def protocol_number(protocol: str | int) -> int:
    """Return the IP protocol number of a Calico protocol name or number.

    Args:
        protocol: One of Calico's names in any letter case, a number 1-255, or the digits of
            one.

    Returns:
        The protocol number, 1-255.

    Raises:
        InvalidPolicy: an unknown name or a number outside 1-255.
    """
    if isinstance(protocol, int):
        if 1 <= protocol <= 255:
            return protocol
    else:
        number = PROTOCOL_NUMBERS.get(protocol.upper())
        if number is not None:
            return number
        if protocol.isdigit():
            return protocol_number(int(protocol))
    raise InvalidPolicy(
        Problem(
            f"unknown protocol {protocol!r}",
            hint=f"{', '.join(PROTOCOL_NAMES)} or a number 1-255",
        )
    )


def protocol_number_or_none(protocol: str | int | None) -> int | None:
    """Return the IP protocol number of a rule's protocol, or None when it has none.

    For code that reads rules already validated: a protocol :func:`protocol_number` would
    refuse also gives None, instead of raising.

    Args:
        protocol: A rule's ``protocol`` or ``not_protocol``.

    Returns:
        The protocol number, or None.
    """
    if protocol is None:
        return None
    try:
        return protocol_number(protocol)
    except InvalidPolicy:
        return None
