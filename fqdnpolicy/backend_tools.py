"""Helpers every datapath backend needs, whatever its tool.

A backend (:mod:`fqdnpolicy.backends`) renders names and text that a kernel tool parses, from
strings a policy author wrote, and applies them in network namespaces. These pieces do not
depend on the tool:

* names and text: :func:`digest` (deterministic hashed names), :func:`safe_text` (free
  text reduced to characters no tool's parser treats as syntax), :func:`check_interface`,
  :func:`check_netns`, :func:`endpoint_interfaces`;
* rule shapes: :func:`merge_ranges`, :func:`disjoint_cases`;
* deltas: :func:`last_changes`;
* the kernel: :func:`find_tool`, :func:`scratch_namespace`;
* speed: :func:`gc_paused` (:func:`fqdnpolicy.collector.paused`: the collector paused for a
  burst of allocations, such as rendering a large state).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import TypeVar

from fqdnpolicy.backends import BackendError
from fqdnpolicy.collector import paused as gc_paused
from fqdnpolicy.datapath import DatapathState, Delta, EndpointState, MemberChanged
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "IFNAME_MAX",
    "check_interface",
    "check_netns",
    "digest",
    "disjoint_cases",
    "endpoint_interfaces",
    "find_tool",
    "gc_paused",
    "last_changes",
    "merge_ranges",
    "safe_text",
    "scratch_namespace",
]

#: Longest interface name (``IFNAMSIZ`` is 16 including the NUL).
IFNAME_MAX = 15

# Plain inside a double-quoted string of nft and iptables-restore, and in a comment line of
# ipset restore: no quote, no backslash, no newline, no ``$`` (nft variables), no ``;`` or
# ``#`` (statement separators and comments if a quote were ever lost).
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/=,()\[\]+-]")
_IFNAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAME_MAX}}}")
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_STDERR_MAX = 2000

T = TypeVar("T")


def digest(text: str, size: int = 10) -> str:
    """Return ``2 * size`` hex characters of BLAKE2b of ``text`` (deterministic names)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def safe_text(text: str, limit: int) -> str:
    """Return ``text`` reduced to characters every tool treats as plain inside a quoted string.

    Unsafe characters become ``_``. When anything was replaced or cut, a ``#`` plus eight hex
    characters of the original's hash end the result (``#`` is added by us after the
    sanitising, so it cannot come from the input), keeping distinct originals distinct.
    The result is at most ``limit`` characters.
    """
    if len(text) <= limit and _UNSAFE.search(text) is None:
        return text  # the common case, without building a copy
    cleaned = _UNSAFE.sub("_", text)
    mark = "#" + digest(text, 4)
    return cleaned[: max(0, limit - len(mark))] + mark


def check_interface(name: str, endpoint: str) -> str:
    """Return ``name`` if it is a safe interface name, else raise.

    Raises:
        InvalidPolicy: not 1-15 characters of letters, digits, ``_``, ``.`` and ``-``.
    """
    if _IFNAME.fullmatch(name) is None:
        raise InvalidPolicy(
            Problem(
                f"interface name {safe_text(name, 40)!r} cannot be used in a ruleset",
                resource=endpoint,
                path="interface",
                hint="1-15 characters: letters, digits, '_', '.', '-' (e.g. cali0123456789a)",
                code="bad-interface",
            )
        )
    return name


def check_netns(name: str) -> str:
    """Return ``name`` if it is a plausible network namespace name, else raise.

    Raises:
        InvalidPolicy: not 1-64 characters of letters, digits, ``_``, ``.`` and ``-``.
    """
    if _NETNS.fullmatch(name) is None:
        raise InvalidPolicy(
            Problem(
                f"network namespace name {safe_text(name, 40)!r} is not valid",
                path="netns",
                hint="1-64 characters: letters, digits, '_', '.', '-'",
                code="bad-netns",
            )
        )
    return name


def endpoint_interfaces(state: DatapathState) -> list[tuple[EndpointState, str]]:
    """Every endpoint of a state with its checked interface, in order.

    Raises:
        InvalidPolicy: an interface that cannot be rendered safely, or one shared by two
            endpoints (a packet could not tell whose rules apply).
    """
    seen: dict[str, str] = {}
    found = []
    for endpoint in state.endpoints:
        iface = check_interface(endpoint.interface, safe_text(endpoint.key, 80))
        other = seen.setdefault(iface, endpoint.key)
        if other != endpoint.key:
            raise InvalidPolicy(
                Problem(
                    f"interface {iface} belongs to two endpoints",
                    resource=safe_text(endpoint.key, 80),
                    hint=f"also used by {safe_text(other, 80)}; interfaces must be unique",
                    code="duplicate-interface",
                )
            )
        found.append((endpoint, iface))
    return found


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted, with overlapping and adjacent ones merged."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def disjoint_cases(alternatives: Sequence[Sequence[tuple[T, T]]]) -> list[list[T]]:
    """Disjoint cases covering 'every condition holds through one of its alternatives'.

    Each condition is a list of ``(test, negated test)`` alternatives, the condition being
    their OR. Case ``(i, j, ...)`` is: condition 1 holds through alternative i and none
    before it, condition 2 through j and none before it... Exactly one case matches a
    packet, so a rule rendered as several lines (a Log rule) acts once.
    """
    if all(len(alts) == 1 for alts in alternatives):  # the common case: one way each
        return [[alts[0][0] for alts in alternatives]]
    cases: list[list[T]] = [[]]
    for alts in alternatives:
        cases = [
            case + [neg for _, neg in alts[:i]] + [pos]
            for case in cases
            for i, (pos, _) in enumerate(alts)
        ]
    return cases


def last_changes(deltas: Iterable[Delta], known: Container[str]) -> list[MemberChanged]:
    """The member changes of sets in ``known``, the last change of each member only.

    Kept in the order of each member's last change; other kinds of delta are left out (they
    need a full render).
    """
    net: dict[tuple[str, str], MemberChanged] = {}
    for delta in deltas:
        if isinstance(delta, MemberChanged) and delta.set_id in known:
            key = (delta.set_id, delta.member)
            net.pop(key, None)  # keep the order of last changes
            net[key] = delta
    return list(net.values())


def find_tool(name: str, package: str) -> str:
    """Return the path of a program, also found in the sbin folders a user's PATH may lack.

    Raises:
        BackendError: it is not installed (the message names the Debian package).
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise BackendError(f"the '{name}' tool is not installed (apt-get install {package})")
    return found


@contextlib.contextmanager
def scratch_namespace(ip: str = "ip") -> Iterator[str]:
    """Create a uniquely named empty network namespace; delete exactly it afterwards.

    Raises:
        BackendError: it cannot be created (root needed).
    """
    name = f"fqdnpolicy-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    binary = find_tool(ip, "iproute2")
    made = subprocess.run(
        [binary, "netns", "add", name], capture_output=True, timeout=30, check=False
    )
    if made.returncode != 0:
        err = made.stderr.decode(errors="replace")[:_STDERR_MAX]
        raise BackendError(f"cannot create a scratch network namespace (root needed): {err}")
    try:
        yield name
    finally:
        subprocess.run([binary, "netns", "del", name], capture_output=True, timeout=30, check=False)
