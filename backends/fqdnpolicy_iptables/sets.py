"""Pure rendering of IP sets as ``ipset restore`` input: full builds and member deltas.

Each engine IP set becomes two ipsets, one per address family, of a type fixed by the set's
kind so that it never changes between renders:

* ``domains`` (DNS-learned addresses): ``hash:ip`` with timeout support; each member is
  added with ``timeout N``, its remaining DNS lifetime;
* ``nets`` (CIDRs from rules and network sets): ``hash:net``;
* ``selector`` (endpoint addresses, network sets' nets and learned domains): ``hash:net``
  with timeout support, members without an expiry added without a timeout.

Peer named ports get ``hash:ip,port`` sets of ``address,protocol:port``.

A full rendering builds every set under its temporary name and ends with one ``rename
TEMP LIVE`` line per set; applying turns that line into ``swap`` when the live set exists
already, so a set's contents are replaced in one step. ``maxelem`` is at least the backend's
``maxelem`` option and twice the set's members; ``hashsize`` is chosen so that loading does
not resize the hash on the way.

Timeouts are whole seconds: the remaining lifetime rounded up (the kernel never forgets an
address before the cache does) and clamped to ipset's maximum, 2,147,483 s (about 24.8
days). A member whose lifetime has run out is left out of a full rendering and deleted by a
delta.

Every member is checked to be a literal address or network before it is written: ipset
would resolve anything else as a host name.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import operator
import socket
from collections.abc import Iterable, Sequence

import attrs

from fqdnpolicy.backend_tools import safe_text
from fqdnpolicy.datapath import DatapathState, MemberChanged
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.protocols import SCTP, TCP, UDP, UDPLITE
from fqdnpolicy_iptables.names import COMMENT_MAX, Names

__all__ = [
    "MAX_TIMEOUT",
    "SetSections",
    "Skipped",
    "delta_lines",
    "render_sets",
    "set_type",
    "timeout_seconds",
]

#: Longest element timeout ipset takes, in seconds.
MAX_TIMEOUT = 2_147_483
#: Where members a set cannot hold go: None raises InvalidPolicy at the first, a list
#: collects one Problem each while the rendering goes on without them.
Skipped = list[Problem] | None

_PORT_PROTOCOLS = {TCP: "tcp", UDP: "udp", SCTP: "sctp", UDPLITE: "udplite"}
_FAMILY = {4: "inet", 6: "inet6"}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def set_type(kind: str) -> tuple[str, bool]:
    """The ipset type of a set kind and whether it has timeout support."""
    if kind == "domains":
        return "hash:ip", True
    if kind == "nets":
        return "hash:net", False
    return "hash:net", True


def timeout_seconds(expiry: float | None, now: float) -> int | None:
    """Whole seconds left (rounded up, at most MAX_TIMEOUT), 0 when expired, None for none."""
    if expiry is None:
        return None
    left = expiry - now
    if not left < MAX_TIMEOUT:  # also NaN and infinity
        return MAX_TIMEOUT if left > 0 else 0
    return max(0, math.ceil(left))


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def sizes(count: int, maxelem: int) -> tuple[int, int]:
    """``hashsize`` and ``maxelem`` for a set loaded with ``count`` members."""
    return max(1024, _next_power_of_two(count // 2)), max(maxelem, _next_power_of_two(2 * count))


def _bad(member: str, set_id: str, why: str, skipped: Skipped) -> None:
    problem = Problem(
        f"set member {safe_text(member, 60)!r} {why}",
        resource=safe_text(set_id, 40),
        hint="canonical IPv4/IPv6 address or CIDR text (no scope such as %eth0)",
        code="bad-member",
    )
    if skipped is None:
        raise InvalidPolicy(problem)
    skipped.append(problem)


def _address_ok(member: str, family: int) -> bool:
    try:
        socket.inet_pton(_AF[family], member)
    except (OSError, ValueError):
        return False
    return True


def elements(
    member: str, family: int, net_type: bool, set_id: str, skipped: Skipped
) -> tuple[str, ...]:
    """How one member is written in a set of the given type: none, one or two elements.

    A host prefix (``/32``, ``/128``) is written as the bare address. A network goes only in
    a ``hash:net`` set, and ``/0``, which ``hash:net`` cannot hold, as its two halves.
    """
    if "/" not in member:
        if _address_ok(member, family):
            return (member,)
        _bad(member, set_id, "is not an address", skipped)
        return ()
    address, _, length = member.partition("/")
    if not (length.isdigit() and len(length) <= 3 and _address_ok(address, family)):
        _bad(member, set_id, "is not a network", skipped)
        return ()
    try:
        net = ipaddress.ip_network(member, strict=False)
    except ValueError:  # a prefix length beyond the family's
        _bad(member, set_id, "is not a network", skipped)
        return ()
    if net.prefixlen == net.max_prefixlen:
        return (str(net.network_address),)
    if not net_type:
        _bad(member, set_id, "is a network in a set of addresses", skipped)
        return ()
    if net.prefixlen == 0:
        return tuple(str(half) for half in net.subnets(1))
    return (str(net),)


def _checked(members: dict[str, float | None], family: int) -> bool:
    """Whether every member is a plain address of ``family``, checked at C speed."""
    pton = socket.inet_pton
    try:
        for _ in map(pton, itertools.repeat(_AF[family]), members):
            pass
    except (OSError, ValueError):
        return False
    return True


class _Suffixes:
    """Per-expiry element suffixes for one render (``" timeout 42"``), and which expired.

    DNS members share few distinct expiries (one per answer and second), so each is
    formatted once and every element line is then a concatenation.
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self.text: dict[float | None, str] = {None: ""}
        self.expired: set[float] = set()

    def learn(self, expiries: set[float | None]) -> bool:
        """Format the expiries not seen yet; tell whether any of ``expiries`` has passed."""
        for expiry in expiries.difference(self.text):
            seconds = timeout_seconds(expiry, self.now)
            if seconds == 0:
                assert expiry is not None
                self.expired.add(expiry)
            self.text[expiry] = f" timeout {seconds}"
        return not self.expired.isdisjoint(expiries)


def _set_elements(
    members: dict[str, float | None],
    family: int,
    kind: str,
    set_id: str,
    suffixes: _Suffixes,
    skipped: Skipped,
    plain: bool,
) -> tuple[dict[str, float | None], bool]:
    """A family's members as elements (checked, canonical) with their expiry.

    Expired members are left out; the flag tells whether any element has a timeout.
    ``plain`` says no member of the set holds a "/" (the fast check can vouch for them).
    """
    type_name, timed = set_type(kind)
    if members and not (plain and _checked(members, family)):
        written: dict[str, float | None] = {}
        for member, expiry in members.items():
            for element in elements(member, family, type_name == "hash:net", set_id, skipped):
                written[element] = expiry
        members = written
    if not timed or not members:
        return members, False
    expiries = set(members.values())
    if suffixes.learn(expiries):
        expired = suffixes.expired
        members = {m: e for m, e in members.items() if e not in expired}
    return members, expiries != {None}


@attrs.frozen
class SetSections:
    """The ipset part of a full rendering.

    Attributes:
        build: Text that creates and fills every set under its temporary name.
        commits: ``(temporary, live)`` per set, in order; written as ``rename`` lines.
    """

    build: str
    commits: tuple[tuple[str, str], ...]

    def text(self) -> str:
        """The whole ipset section as ``ipset restore`` reads it in an empty namespace."""
        return self.build + "".join(f"rename {t} {live}\n" for t, live in self.commits)


def _one_set(
    pieces: list[str],
    live: str,
    family: int,
    set_kind: tuple[str, bool],
    comment: str,
    elements_text: Sequence[str],
    count: int,
    maxelem: int,
) -> str:
    temporary = Names.temporary(live)
    type_name, timed = set_kind
    hashsize, maxelem = sizes(count, maxelem)
    pieces.append(
        f"# set {live}: {comment}\n"
        f"create {temporary} {type_name} family {_FAMILY[family]} hashsize {hashsize}"
        f" maxelem {maxelem}{' timeout 0' if timed else ''}\n"
    )
    pieces.extend(elements_text)
    return temporary


def _add_lines(
    temporary: str, members: dict[str, float | None], suffixes: _Suffixes, timeouts: bool
) -> str:
    if not members:
        return ""
    head = f"add {temporary} "
    sep = "\n" + head
    if not timeouts:
        return head + sep.join(members) + "\n"
    text = suffixes.text
    return (
        head + sep.join(map(operator.add, members, map(text.__getitem__, members.values()))) + "\n"
    )


def render_sets(
    state: DatapathState, now: float, names: Names, maxelem: int, skipped: Skipped
) -> SetSections:
    """Render every set of a state (both families) and the named-port sets."""
    pieces: list[str] = []
    commits: list[tuple[str, str]] = []
    suffixes = _Suffixes(now)
    for ipset in state.sets:
        comment = safe_text(f"{ipset.kind} {ipset.definition}", COMMENT_MAX)
        joined = "".join(ipset.members)  # one scan of every member, at C speed
        plain = "/" not in joined
        if ":" in joined:
            four = {m: e for m, e in ipset.members.items() if ":" not in m}
            six = {m: e for m, e in ipset.members.items() if ":" in m}
        else:
            four, six = ipset.members, {}
        for family, members in ((4, four), (6, six)):
            written, timeouts = _set_elements(
                members, family, ipset.kind, ipset.set_id, suffixes, skipped, plain
            )
            live = names.set_name(ipset.set_id, family)
            temporary = Names.temporary(live)
            add = _add_lines(temporary, written, suffixes, timeouts)
            _one_set(
                pieces, live, family, set_type(ipset.kind), comment, (add,), len(written), maxelem
            )
            commits.append((temporary, live))
    for port_name in sorted(state.named_ports):
        comment = safe_text(f"named port {port_name}", COMMENT_MAX)
        for family in (4, 6):
            entries = _named_port_elements(state.named_ports[port_name], family, port_name, skipped)
            live = names.named_port_set(port_name, family)
            temporary = Names.temporary(live)
            lines = [f"add {temporary} {entry}\n" for entry in entries]
            _one_set(
                pieces, live, family, ("hash:ip,port", False), comment, lines, len(lines), maxelem
            )
            commits.append((temporary, live))
    return SetSections("".join(pieces), tuple(commits))


def _named_port_elements(
    entries: Iterable[tuple[str, int, int]], family: int, port_name: str, skipped: Skipped
) -> list[str]:
    """``address,protocol:port`` of the endpoints of one family carrying a named port."""
    found = set()
    for address, protocol, port in entries:
        if (":" in address) != (family == 6):
            continue
        written = elements(address, family, False, f"named port {port_name}", skipped)
        proto = _PORT_PROTOCOLS.get(protocol)
        if written and proto is not None and 0 < port < 65536:
            found.add((written[0], proto, port))
    return [f"{a},{p}:{n}" for a, p, n in sorted(found)]


# ---------------------------------------------------------------------------------- deltas


def delta_lines(
    ops: Iterable[MemberChanged], kinds: dict[str, str], names: Names, now: float, skipped: Skipped
) -> list[str]:
    """``ipset restore`` lines for member changes of known sets (``kinds``: id -> kind).

    Every line carries ``-exist``: adding a member the set holds refreshes its timeout, and
    deleting one the kernel has already timed out is no error. A member added with its
    lifetime already over is deleted.
    """
    lines: list[str] = []
    for op in ops:
        kind = kinds[op.set_id]
        family = 6 if ":" in op.member else 4
        type_name, timed = set_type(kind)
        written = elements(op.member, family, type_name == "hash:net", op.set_id, skipped)
        live = names.set_name(op.set_id, family)
        seconds = timeout_seconds(op.expiry, now) if timed else None
        if op.added and seconds != 0:
            suffix = "" if seconds is None else f" timeout {seconds}"
            lines.extend(f"-exist add {live} {e}{suffix}\n" for e in written)
        else:
            lines.extend(f"-exist del {live} {e}\n" for e in written)
    return lines
