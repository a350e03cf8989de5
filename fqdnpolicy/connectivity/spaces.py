"""Sets of connections: protocol x destination-port intervals, ICMP type and code, per family.

A :class:`Connections` is exact and canonical (two equal sets compare and hash equal). Within
one address family it is a :data:`Space`: a flag for *every protocol not listed* and, for the
listed protocols, a set of values held as sorted half-open interval bounds over ``0..65535``:

* TCP, UDP, SCTP and UDP-Lite: destination ports;
* the family's ICMP (ICMP for IPv4, ICMPv6 for IPv6): ``type * 256 + code``, so that "type 8"
  is one interval and "type 8 code 0" one value;
* any other protocol: the whole interval (the protocol is in the set) or nothing.

A listed protocol whose value equals what the flag gives every unlisted one is dropped, so
``(True, ())`` is every connection and ``(False, ())`` none. The other family's ICMP is no
connection of a family (no rule matches it there) and never listed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import attrs

from fqdnpolicy.protocols import ICMP, ICMPV6, SCTP, TCP, UDP, UDPLITE, protocol_name

__all__ = [
    "ALL",
    "FULL",
    "NONE",
    "PORTED",
    "Connections",
    "Ports",
    "Space",
    "icmp_of",
    "intersect",
    "is_empty",
    "ports_text",
    "subtract",
    "union",
]

#: Interval bounds: ``(a0, b0, a1, b1, ...)``, each ``[a, b)`` half-open, sorted, disjoint.
Ports: TypeAlias = tuple[int, ...]
#: One family's connections: (every unlisted protocol?, ((protocol, ports), ...) sorted).
Space: TypeAlias = tuple[bool, tuple[tuple[int, Ports], ...]]

TOP = 65536
FULL: Ports = (0, TOP)
EMPTY: Ports = ()
#: Every connection of a family.
ALL: Space = (True, ())
#: No connection.
NONE: Space = (False, ())
#: Protocols whose flows carry a destination port.
PORTED = frozenset({TCP, UDP, SCTP, UDPLITE})
_OTHER_ICMP = {4: ICMPV6, 6: ICMP}


def icmp_of(family: int) -> int:
    """The ICMP protocol of ``family``."""
    return ICMP if family == 4 else ICMPV6


# -- interval bounds ------------------------------------------------------------------------


def _sweep(a: Ports, b: Ports, mode: int) -> Ports:
    """Bounds of ``a | b`` (mode 0), ``a & b`` (1) or ``a - b`` (2)."""
    out: list[int] = []
    i = j = 0
    la, lb = len(a), len(b)
    ina = inb = state = False
    while i < la or j < lb:
        if j >= lb or (i < la and a[i] < b[j]):
            point = a[i]
            ina = not ina
            i += 1
        elif i >= la or b[j] < a[i]:
            point = b[j]
            inb = not inb
            j += 1
        else:
            point = a[i]
            ina = not ina
            inb = not inb
            i += 1
            j += 1
        inside = (ina or inb) if mode == 0 else (ina and inb) if mode == 1 else (ina and not inb)
        if inside != state:
            if out and out[-1] == point:
                out.pop()  # an interval ends where the next begins: join them
            else:
                out.append(point)
            state = inside
    return tuple(out)


def ports_union(a: Ports, b: Ports) -> Ports:
    """``a | b``."""
    if not a or a == b or b == FULL:
        return b
    if not b or a == FULL:
        return a
    return _sweep(a, b, 0)


def ports_inter(a: Ports, b: Ports) -> Ports:
    """``a & b``."""
    if not a or b == FULL or a == b:
        return a
    if not b or a == FULL:
        return b
    return _sweep(a, b, 1)


def ports_minus(a: Ports, b: Ports) -> Ports:
    """``a - b``."""
    if not a or not b:
        return a
    if b == FULL or a == b:
        return EMPTY
    return _sweep(a, b, 2)


def ports_of(ranges: Iterable[tuple[int, int]]) -> Ports:
    """Bounds of inclusive ``(first, last)`` ranges, in any order, overlapping or not."""
    out: Ports = EMPTY
    for first, last in sorted(ranges):
        out = ports_union(out, (first, last + 1))
    return out


def ranges_of(ports: Ports) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` ranges of bounds."""
    return [(ports[i], ports[i + 1] - 1) for i in range(0, len(ports), 2)]


def ports_text(ports: Ports) -> str:
    """``80,443,8000-8999``."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges_of(ports))


def icmp_rectangles(ports: Ports) -> list[tuple[int, int, int, int]]:
    """ICMP values (``type * 256 + code``) as ``(type_first, type_last, code_first, code_last)``."""
    out: list[tuple[int, int, int, int]] = []
    for first, last in ranges_of(ports):
        t1, c1 = divmod(first, 256)
        t2, c2 = divmod(last, 256)
        if t1 == t2:
            out.append((t1, t1, c1, c2))
            continue
        if c1:
            out.append((t1, t1, c1, 255))
            t1 += 1
        end = t2 if c2 == 255 else t2 - 1
        if t1 <= end:
            out.append((t1, end, 0, 255))
        if c2 != 255:
            out.append((t2, t2, 0, c2))
    return out


def icmp_from_rectangles(rects: Iterable[Iterable[int]]) -> Ports:
    """The inverse of :func:`icmp_rectangles`."""
    ranges = []
    for rect in rects:
        t1, t2, c1, c2 = (int(v) for v in rect)
        if c1 == 0 and c2 == 255:
            ranges.append((t1 * 256, t2 * 256 + 255))
        else:
            ranges.extend((t * 256 + c1, t * 256 + c2) for t in range(t1, t2 + 1))
    return ports_of(ranges)


def icmp_text(ports: Ports) -> str:
    """``type 8 code 0``, ``types 0-255`` and the like, comma-joined."""
    parts = []
    for t1, t2, c1, c2 in icmp_rectangles(ports):
        types = f"type {t1}" if t1 == t2 else f"types {t1}-{t2}"
        if c1 == 0 and c2 == 255:
            parts.append(types)
        else:
            parts.append(f"{types} code {c1}" if c1 == c2 else f"{types} codes {c1}-{c2}")
    return ", ".join(parts)


# -- one family -----------------------------------------------------------------------------


def _value(space: Space, proto: int) -> Ports:
    for key, ports in space[1]:
        if key == proto:
            return ports
    return FULL if space[0] else EMPTY


def make(family: int, other: bool, items: Mapping[int, Ports]) -> Space:
    """A canonical space: ``other`` for unlisted protocols, ``items`` for the listed ones."""
    default = FULL if other else EMPTY
    skip = _OTHER_ICMP[family]
    return (
        other,
        tuple(sorted((k, v) for k, v in items.items() if v != default and k != skip)),
    )


def _combine(family: int, a: Space, b: Space, mode: int) -> Space:
    op = ports_union if mode == 0 else ports_inter if mode == 1 else ports_minus
    other = (a[0] or b[0]) if mode == 0 else (a[0] and b[0]) if mode == 1 else (a[0] and not b[0])
    keys = {k for k, _ in a[1]} | {k for k, _ in b[1]}
    return make(family, other, {k: op(_value(a, k), _value(b, k)) for k in keys})


def union(family: int, a: Space, b: Space) -> Space:
    """``a | b`` within ``family``."""
    if a == b or b == NONE:
        return a
    if a == NONE:
        return b
    if a == ALL or b == ALL:
        return ALL
    return _combine(family, a, b, 0)


def intersect(family: int, a: Space, b: Space) -> Space:
    """``a & b`` within ``family``."""
    if a == b or b == ALL:
        return a
    if a == ALL:
        return b
    if a == NONE or b == NONE:
        return NONE
    return _combine(family, a, b, 1)


def subtract(family: int, a: Space, b: Space) -> Space:
    """``a - b`` within ``family``."""
    if a == NONE or b == NONE:
        return a
    if b == ALL or a == b:
        return NONE
    return _combine(family, a, b, 2)


def is_empty(space: Space) -> bool:
    """Whether ``space`` holds no connection."""
    return space == NONE


def allows(space: Space, family: int, proto: int, value: int | None) -> bool:
    """Whether ``space`` holds a flow: ``value`` a port, an ICMP ``type*256+code``, or None."""
    if proto == _OTHER_ICMP[family]:
        return False
    ports = _value(space, proto)
    if proto not in PORTED and proto != icmp_of(family):
        return bool(ports)
    if value is None:
        return False
    return any(ports[i] <= value < ports[i + 1] for i in range(0, len(ports), 2))


def _space_text(family: int, space: Space) -> str:
    other, items = space
    if space == ALL:
        return "all connections"
    if other:
        return "all but " + _space_text(family, subtract(family, ALL, space))
    parts = []
    for proto, ports in items:
        name = protocol_name(proto)
        if ports == FULL:
            parts.append(name)
        elif proto == icmp_of(family):
            parts.append(f"{name} {icmp_text(ports)}")
        else:
            parts.append(f"{name} {ports_text(ports)}")
    return "; ".join(parts) if parts else "none"


# -- across families -------------------------------------------------------------------------

FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}


@attrs.frozen(slots=True, cache_hash=True)
class Connections:
    """An exact set of connections, per address family (families with none left out).

    Attributes:
        parts: ``((family, space), ...)``, families in order, each space non-empty (see
            the module docstring for a space's form).
    """

    parts: tuple[tuple[int, Space], ...] = ()

    @classmethod
    def of(cls, spaces: Mapping[int, Space]) -> Connections:
        """From ``{family: space}`` (empty spaces dropped)."""
        return cls(tuple(sorted((f, s) for f, s in spaces.items() if s != NONE)))

    @classmethod
    def everything(cls, families: Iterable[int] = (4, 6)) -> Connections:
        """Every connection in ``families``."""
        return cls.of(dict.fromkeys(families, ALL))

    def space(self, family: int) -> Space:
        """The space of ``family`` (:data:`NONE` when absent)."""
        for f, space in self.parts:
            if f == family:
                return space
        return NONE

    @property
    def families(self) -> tuple[int, ...]:
        """The families with some connection."""
        return tuple(f for f, _ in self.parts)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def _op(self, other: Connections, how: Any) -> Connections:
        families = set(self.families) | set(other.families)
        return Connections.of({f: how(f, self.space(f), other.space(f)) for f in families})

    def __or__(self, other: Connections) -> Connections:
        return self._op(other, union)

    def __and__(self, other: Connections) -> Connections:
        return self._op(other, intersect)

    def __sub__(self, other: Connections) -> Connections:
        return self._op(other, subtract)

    def contains(self, other: Connections) -> bool:
        """Whether every connection of ``other`` is in this set."""
        return not (other - self)

    def allows(
        self,
        family: int,
        protocol: int,
        port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> bool:
        """Whether the set holds one flow (a port for TCP/UDP/SCTP/UDP-Lite, ICMP fields)."""
        value = port
        if protocol == icmp_of(family):
            value = None if icmp_type is None or icmp_code is None else icmp_type * 256 + icmp_code
        return allows(self.space(family), family, protocol, value)

    def describe(self, families: Iterable[int] | None = None) -> str:
        """In words: ``TCP 80,443; UDP 53``, ``all connections``, ``IPv4: ...; IPv6: ...``.

        ``families``: the families both ends of the pair have; when this set is the same in
        each of them (or there is only one), the family is not named.
        """
        if not self.parts:
            return "none"
        wanted = tuple(families) if families is not None else (4, 6)
        spaces = {self.space(f) for f in wanted}
        if len(spaces) == 1 and set(self.families) <= set(wanted):
            family = self.parts[0][0]
            return _space_text(family, self.parts[0][1])
        return " | ".join(f"{FAMILY_NAMES[f]}: {_space_text(f, s)}" for f, s in self.parts)

    def __str__(self) -> str:
        return self.describe()

    def iter_ranges(self) -> Iterator[tuple[int, int | None, int, int]]:
        """``(family, protocol or None for every unlisted one, first, last)`` of each interval.

        Values are ports, or ``type*256+code`` for ICMP; protocols without ports give
        ``(0, 65535)``.
        """
        for family, (other, items) in self.parts:
            if other:
                yield family, None, 0, TOP - 1
            for proto, ports in items:
                for first, last in ranges_of(ports):
                    yield family, proto, first, last

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"ipv4": {"others": bool, "protocols": {...}}, "text": ...}``.

        A protocol's value is a list of inclusive ``[first, last]`` port ranges, for ICMP a
        list of ``[type_first, type_last, code_first, code_last]`` rectangles; for a protocol
        without ports ``true`` (allowed) or ``false``. :meth:`from_dict` reads it back.
        """
        out: dict[str, Any] = {}
        for family, (other, items) in self.parts:
            protocols: dict[str, Any] = {}
            for proto, ports in items:
                name = protocol_name(proto)
                if proto == icmp_of(family):
                    protocols[name] = [list(r) for r in icmp_rectangles(ports)]
                elif proto in PORTED:
                    protocols[name] = [list(r) for r in ranges_of(ports)]
                else:
                    protocols[name] = bool(ports)
            out[FAMILY_NAMES[family].lower()] = {"others": other, "protocols": protocols}
        out["text"] = self.describe()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Connections:
        """Read :meth:`as_dict` back."""
        from fqdnpolicy.protocols import protocol_number

        spaces: dict[int, Space] = {}
        for family in (4, 6):
            part = data.get(FAMILY_NAMES[family].lower())
            if part is None:
                continue
            items: dict[int, Ports] = {}
            for name, value in part.get("protocols", {}).items():
                proto = protocol_number(name)
                if proto == icmp_of(family):
                    items[proto] = icmp_from_rectangles(value)
                elif proto in PORTED:
                    items[proto] = ports_of((int(a), int(b)) for a, b in value)
                else:
                    items[proto] = FULL if value else EMPTY
            spaces[family] = make(family, bool(part.get("others", False)), items)
        return cls.of(spaces)


def network_text(first: int, last: int, family: int) -> list[str]:
    """CIDRs covering the addresses ``first..last`` of ``family``."""
    cls: Any = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    return [str(n) for n in ipaddress.summarize_address_range(cls(first), cls(last))]
