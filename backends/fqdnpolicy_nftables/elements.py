"""The elements of nftables sets: members checked, canonicalised and written with timeouts.

Which flags a set kind gets, which members a set can hold (bad ones raise or are collected
in a ``Skipped`` list), how CIDRs cover members in an interval set, and element text and
JSON with their remaining lifetimes, most of it at C speed for the plain addresses DNS gives.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import operator
import re
from typing import Any, Literal

from fqdnpolicy.datapath import SetState
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy_nftables.names import safe_text

__all__ = ["MAX_TIMEOUT_MS", "canonical_elements", "duration", "render_elements"]


_MEMBER = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


SetKind = Literal["nets", "domains", "selector"]


def _flags(kind: str) -> tuple[str, ...]:
    # Deterministic by kind so that a set never changes type between renders: CIDRs come
    # from nets and network sets (interval); DNS members expire (timeout); selector sets
    # hold endpoint IPs plus network sets' nets and learned domains (both).
    if kind == "nets":
        return ("interval",)
    if kind == "domains":
        return ("timeout",)
    return ("interval", "timeout")


#: Where members a set cannot hold go: None raises InvalidPolicy at the first, a list
#: collects one Problem each while the rendering goes on without them.
Skipped = list[Problem] | None


def _bad_member(member: str, set_id: str, skipped: Skipped) -> None:
    """Report a member no set can hold: raise, or add it to ``skipped``."""
    problem = Problem(
        f"set member {safe_text(member, 60)!r} is not an address or CIDR",
        resource=safe_text(set_id, 40),
        hint="canonical IPv4/IPv6 address or CIDR text (no scope such as %eth0)",
        code="bad-member",
    )
    if skipped is None:
        raise InvalidPolicy(problem)
    skipped.append(problem)


def _check_member(member: str, set_id: str, skipped: Skipped = None) -> bool:
    """Tell whether ``member`` can be rendered; a bad one is reported (see _bad_member)."""
    if _MEMBER.fullmatch(member) is None:
        _bad_member(member, set_id, skipped)
        return False
    return True


def _as_element(member: str) -> str:
    """A member as nft writes it: a full-length prefix as the bare address."""
    return member.removesuffix("/128" if ":" in member else "/32")


def _is_prefix(member: str) -> bool:
    if "/" not in member:
        return False
    length = int(member.rpartition("/")[2])
    return length < (128 if ":" in member else 32)


def canonical_elements(
    members: dict[str, float | None], interval: bool, skipped: Skipped = None
) -> dict[str, float | None]:
    """Members as an nft set can hold them: in an interval set, drop members a CIDR covers.

    nft refuses overlapping intervals; a member inside a CIDR of the same set adds nothing
    (CIDRs come from nets and never expire, so the covered member's expiry cannot matter).
    A member that is no network is reported as ``_bad_member`` does.
    """
    if not interval or not any(_is_prefix(m) for m in members):
        return {_as_element(m): e for m, e in members.items()}
    spans: list[tuple[int, int, str]] = []
    for member in members:
        try:
            net = ipaddress.ip_network(member, strict=False)
        except ValueError:  # address-like characters, but no address ("1.2/3")
            _bad_member(member, "", skipped)
            continue
        spans.append((int(net.network_address) + (net.version << 129), net.num_addresses, member))
    spans.sort(key=lambda s: (s[0], -s[1]))
    kept: dict[str, float | None] = {}
    starts: list[int] = []
    ends: list[int] = []
    for start, size, member in spans:
        i = bisect.bisect_right(starts, start) - 1
        if i >= 0 and start + size <= ends[i]:
            continue  # covered by a kept span (sorted by start, larger first)
        starts.append(start)
        ends.append(start + size)
        kept[_as_element(member)] = members[member]
    return kept


#: Longest element timeout rendered, in ms: the longest TTL DNS can give (RFC 2181's limit,
#: the expression below). The kernel refuses timeouts far beyond it, and a cache whose
#: ``max_ttl`` is longer still cannot learn a longer lifetime from an answer.
MAX_TIMEOUT_MS = (2**31 - 1) * 1000


def _timeout_ms(expiry: float | None, now: float) -> int | None:
    """Remaining lifetime in ms (ceil, at most MAX_TIMEOUT_MS), 0 when expired, None for none."""
    if expiry is None:
        return None
    left = expiry - now
    if not left < MAX_TIMEOUT_MS / 1000:  # also NaN and infinity
        return MAX_TIMEOUT_MS if left > 0 else 0
    return max(0, math.ceil(left * 1000))


def duration(ms: int) -> str:
    """A time in nft's own units: ``1d3h46m40s5ms``, every part below its unit's limit.

    nft refuses a single figure of 100,000,000 ms or more (``Error: value too large``), so
    a lifetime over a day cannot be written in ms alone.
    """
    seconds, millis = divmod(ms, 1000)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    parts = [(days, "d"), (hrs, "h"), (mins, "m"), (secs, "s"), (millis, "ms")]
    return "".join(f"{value}{unit}" for value, unit in parts if value) or "0ms"


def _element(member: str, timeout: int | None, *, refresh: bool = False) -> tuple[str, Any]:
    """An element's text and JSON; ``refresh`` states its expiry too (see render_delta_ops)."""
    if "/" in member:
        addr, _, length = member.partition("/")
        value: Any = {"prefix": {"addr": addr, "len": int(length)}}
    else:
        value = member
    if timeout is None:
        return member, value
    # JSON timeouts are whole seconds: round up so the kernel never forgets early.
    seconds = -(-timeout // 1000)
    text = duration(timeout)
    if not refresh:
        return f"{member} timeout {text}", {"elem": {"val": value, "timeout": seconds}}
    return (
        f"{member} timeout {text} expires {text}",
        {"elem": {"val": value, "timeout": seconds, "expires": seconds}},
    )


def render_elements(
    members: dict[str, float | None], kind: str, now: float, skipped: Skipped = None
) -> tuple[list[str], list[Any]]:
    """Text and JSON elements of one family of a set (expired members left out)."""
    timed = "timeout" in _flags(kind)
    texts: list[str] = []
    datas: list[Any] = []
    members = {m: e for m, e in members.items() if _check_member(m, "", skipped)}
    for member, expiry in canonical_elements(members, "interval" in _flags(kind), skipped).items():
        timeout = _timeout_ms(expiry, now) if timed else None
        if timeout == 0:
            continue
        text, data = _element(member, timeout)
        texts.append(text)
        datas.append(data)
    return texts, datas


# Separator between the elements of a set declaration (one element per line).
_ELEMENT_SEP = ",\n\t\t\t"
# The characters of a member without a prefix length (``_MEMBER`` without its "/" part).
_ADDRESS_BYTES = b"0123456789abcdefABCDEF:."


def _check_members(
    members: dict[str, float | None], joined: str, set_id: str, skipped: Skipped
) -> dict[str, float | None]:
    """Check every member as :func:`_check_member` does, most of them at C speed.

    ``joined`` is the members concatenated. When it holds only address characters (so no
    "/"), each member matches ``_MEMBER`` exactly when its length is 2 to 45; otherwise each
    member is checked on its own, so the first bad one is reported as before. Returns the
    members that can be rendered.
    """
    if joined.isascii() and not joined.encode("ascii").translate(None, _ADDRESS_BYTES):
        lengths = set(map(len, members))
        if min(lengths) >= 2 and max(lengths) <= 45:
            return members
    good = {m: e for m, e in members.items() if _check_member(m, set_id, skipped)}
    return members if len(good) == len(members) else good


class _Timeouts:
    """Per-expiry element suffixes for one render: ``" timeout 1s234ms"`` and JSON seconds.

    DNS members share few distinct expiries (one per answer and second), so each is
    formatted once and every element is then one string concatenation.
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self.text: dict[float | None, str] = {None: ""}
        self.seconds: dict[float, int] = {}
        self.expired: set[float] = set()

    def learn(self, expiries: set[float | None]) -> bool:
        """Format the expiries not seen yet; tell whether any of ``expiries`` has passed."""
        for expiry in expiries.difference(self.text):
            assert expiry is not None  # None is preset
            timeout = _timeout_ms(expiry, self.now)
            assert timeout is not None
            self.text[expiry] = f" timeout {duration(timeout)}"
            # JSON timeouts are whole seconds: round up so the kernel never forgets early.
            self.seconds[expiry] = -(-timeout // 1000)
            if timeout == 0:
                self.expired.add(expiry)
        return not self.expired.isdisjoint(expiries)


def _plain_elements(
    members: dict[str, float | None], timed: bool, timeouts: _Timeouts, with_json: bool
) -> tuple[str, list[Any]]:
    """Elements of one family of a set whose members are plain addresses (no "/").

    The same text and JSON as :func:`render_elements`, built with C-level joins and maps
    over prebuilt per-expiry suffixes instead of one formatted string per element.
    """
    if not members:
        return "", []
    if not timed:
        return _ELEMENT_SEP.join(members), list(members) if with_json else []
    expiries = set(members.values())
    if timeouts.learn(expiries):
        expired = timeouts.expired
        members = {m: e for m, e in members.items() if e not in expired}
        if not members:
            return "", []
    text = _ELEMENT_SEP.join(
        map(operator.add, members, map(timeouts.text.__getitem__, members.values()))
    )
    if not with_json:
        return text, []
    seconds = timeouts.seconds
    if None in expiries:
        datas: list[Any] = [
            m if e is None else {"elem": {"val": m, "timeout": seconds[e]}}
            for m, e in members.items()
        ]
    else:
        datas = [{"elem": {"val": m, "timeout": seconds[e]}} for m, e in members.items()]  # type: ignore[index]
    return text, datas


def _set_elements(
    ipset: SetState, now: float, timeouts: _Timeouts, with_json: bool, skipped: Skipped
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """Checked elements of a set, IPv4 then IPv6, as (text joined by ``_ELEMENT_SEP``, JSON).

    The JSON lists are empty unless ``with_json``.
    """
    members = ipset.members
    if not members:
        return ("", []), ("", [])
    joined = "".join(members)
    checked = _check_members(members, joined, ipset.set_id, skipped)
    if checked is not members:
        members = checked
        joined = "".join(members)
        if not members:
            return ("", []), ("", [])
    if "/" in joined:  # CIDRs (or full-length prefixes) to canonicalise: the general path
        v4, v6 = (
            render_elements(
                {m: e for m, e in members.items() if (":" in m) == (family == 6)},
                ipset.kind,
                now,
                skipped,
            )
            for family in (4, 6)
        )
        return (_ELEMENT_SEP.join(v4[0]), v4[1]), (_ELEMENT_SEP.join(v6[0]), v6[1])
    timed = "timeout" in _flags(ipset.kind)
    if ":" in joined:
        four = {m: e for m, e in members.items() if ":" not in m}
        six = {m: e for m, e in members.items() if ":" in m}
        return (
            _plain_elements(four, timed, timeouts, with_json),
            _plain_elements(six, timed, timeouts, with_json),
        )
    return _plain_elements(members, timed, timeouts, with_json), ("", [])
