"""A rendering's text: the three tools' inputs in one document, and reading it back.

A full rendering is three sections, each under a header line of its own::

    # fqdnpolicy: ipset restore
    # set fqp-d4-AbC...: domains api.example.com
    create fqp-d4.AbC... hash:ip family inet hashsize 1024 maxelem 1048576 timeout 0
    add fqp-d4.AbC... 203.0.113.10 timeout 30
    ...
    rename fqp-d4.AbC... fqp-d4-AbC...
    # fqdnpolicy: iptables-restore --noflush
    *filter
    ...
    COMMIT
    # fqdnpolicy: ip6tables-restore --noflush
    *filter
    ...
    COMMIT

Each section is exactly what its tool reads in an empty network namespace (``fqdnpolicy
render --check`` feeds them so); applying adapts the ``rename`` lines and the chain
declarations to what the kernel already holds (:mod:`fqdnpolicy_iptables.apply`). A delta
rendering is an ipset section alone. No policy string reaches a header: everything from a
policy is sanitised (:mod:`fqdnpolicy_iptables.names`) and holds no newline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from fqdnpolicy.backend_tools import endpoint_interfaces, gc_paused
from fqdnpolicy.backends import BackendError
from fqdnpolicy.datapath import DatapathState, MemberChanged
from fqdnpolicy_iptables.names import Names
from fqdnpolicy_iptables.options import RenderOptions
from fqdnpolicy_iptables.rules import render_rules
from fqdnpolicy_iptables.sets import Skipped, delta_lines, render_sets

__all__ = [
    "IPSET_HEADER",
    "RULES_HEADERS",
    "Document",
    "declared_chains",
    "render_delta",
    "render_full",
]

IPSET_HEADER = "# fqdnpolicy: ipset restore\n"
#: The rules sections' headers, by family.
RULES_HEADERS = {
    4: "# fqdnpolicy: iptables-restore --noflush\n",
    6: "# fqdnpolicy: ip6tables-restore --noflush\n",
}
_RENAME = re.compile(r"rename (\S+) (\S+)")
_DECLARATION = re.compile(r":(\S+) ")


def render_full(
    state: DatapathState, now: float, options: RenderOptions, skipped: Skipped
) -> tuple[str, dict[str, str]]:
    """Render a whole state: the document's text and its three sections by tool.

    Raises:
        InvalidPolicy: an interface that cannot be rendered safely, or (without
            ``skipped``) a set member no set can hold.
    """
    names = Names(options.prefix)
    endpoints = endpoint_interfaces(state)
    with gc_paused():  # millions of acyclic strings: nothing for the collector to find
        sets = render_sets(state, now, names, options.maxelem, skipped)
        v4 = render_rules(endpoints, 4, options, names)
        v6 = render_rules(endpoints, 6, options, names)
        sections = {"ipset": sets.text(), "iptables": v4.text, "ip6tables": v6.text}
    text = "".join(
        [
            IPSET_HEADER,
            sections["ipset"],
            RULES_HEADERS[4],
            sections["iptables"],
            RULES_HEADERS[6],
            sections["ip6tables"],
        ]
    )
    return text, sections


def render_delta(
    ops: Sequence[MemberChanged], kinds: dict[str, str], now: float, prefix: str, skipped: Skipped
) -> str:
    """Render member changes as an ipset section ("" when there are none)."""
    lines = delta_lines(ops, kinds, Names(prefix), now, skipped)
    return IPSET_HEADER + "".join(lines) if lines else ""


@attrs.frozen
class Document:
    """A rendering's text read back into its sections.

    Attributes:
        ipset_build: The ipset section without its ``rename`` lines.
        commits: ``(temporary, live)`` of each ``rename`` line, in order.
        rules: The rules section of each family present (4, 6).
    """

    ipset_build: str
    commits: tuple[tuple[str, str], ...]
    rules: dict[int, str]

    @classmethod
    def parse(cls, text: str) -> Document:
        """Split a rendering's text.

        Raises:
            BackendError: the text does not start with a section header.
        """
        if not text:
            return cls("", (), {})
        bounds = sorted(
            (at, header)
            for header in (IPSET_HEADER, *RULES_HEADERS.values())
            if (at := _find_header(text, header)) >= 0
        )
        if not bounds or bounds[0][0] != 0:
            raise BackendError("not an iptables rendering: it must start with a section header")
        sections: dict[str, str] = {}
        for i, (at, header) in enumerate(bounds):
            end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
            sections[header] = text[at + len(header) : end]
        ipset = sections.get(IPSET_HEADER, "")
        build, commits = _split_commits(ipset)
        rules = {f: sections[h] for f, h in RULES_HEADERS.items() if h in sections}
        return cls(build, commits, rules)


def _find_header(text: str, header: str) -> int:
    if text.startswith(header):
        return 0
    at = text.find("\n" + header)
    return at + 1 if at >= 0 else -1


def _split_commits(ipset: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The build part of an ipset section and its trailing ``rename`` lines."""
    at = 0 if ipset.startswith("rename ") else ipset.find("\nrename ") + 1
    if at == 0 and not ipset.startswith("rename "):
        return ipset, ()
    commits = []
    for line in ipset[at:].splitlines():
        found = _RENAME.fullmatch(line)
        if found is None:
            raise BackendError(f"ipset section: a line after the renames is not one: {line!r}")
        commits.append((found.group(1), found.group(2)))
    return ipset[:at], tuple(commits)


def declared_chains(rules: str) -> list[str]:
    """The chains a rules section declares (its ``:NAME`` lines right after ``*filter``)."""
    chains = []
    at = rules.find("\n") + 1
    while rules.startswith(":", at):
        end = rules.find("\n", at)
        found = _DECLARATION.match(rules, at, len(rules) if end < 0 else end)
        if found is None:
            break
        chains.append(found.group(1))
        at = end + 1
        if end < 0:
            break
    return chains
