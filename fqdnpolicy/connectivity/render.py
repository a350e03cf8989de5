"""Maps, diffs and replays as text, CSV, Markdown, JSON and Graphviz dot.

Groups of endpoints are written by ``group_by``: ``pod`` lists each pod; ``workload`` writes
``namespace/workload/*`` for a workload whose pods are all in the group (a pod's workload is
its name less the ReplicaSet/pod hash suffixes or a StatefulSet ordinal); ``namespace`` writes
``namespace/*`` for a whole namespace. Outside peers are written by their labels.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fqdnpolicy.connectivity.rows import PeerInfo

__all__ = ["GROUPINGS", "MAP_FORMATS", "render_diff", "render_map", "render_replay", "workload_of"]

MAP_FORMATS = ("txt", "csv", "md", "json", "dot")
GROUPINGS = ("pod", "workload", "namespace")

_HASHED = re.compile(r"^(?P<base>.+?)(?:-[a-z0-9]{6,10})?-[a-z0-9]{5}$")
_ORDINAL = re.compile(r"^(?P<base>.+)-\d+$")


def workload_of(name: str) -> str:
    """A pod's workload: ``web-7d4b9c8f6-x2x9z`` -> ``web``, ``db-0`` -> ``db``."""
    for pattern in (_HASHED, _ORDINAL):
        match = pattern.match(name)
        if match:
            return match.group("base")
    return name


class Namer:
    """Writes groups of peer ids (see the module docstring)."""

    def __init__(self, peers: Mapping[str, PeerInfo], group_by: str = "pod") -> None:
        self.peers = peers
        self.group_by = group_by
        self._members: dict[str, set[str]] = {}
        for peer, info in peers.items():
            if info.kind != "endpoint" or "@" in peer:
                continue
            namespace, _, name = peer.partition("/")
            self._members.setdefault(self._unit(namespace, name), set()).add(peer)

    def _unit(self, namespace: str, name: str) -> str:
        if self.group_by == "namespace":
            return f"{namespace}/*"
        if self.group_by == "workload":
            return f"{namespace}/{workload_of(name)}/*"
        return f"{namespace}/{name}"

    def parts(self, group: Sequence[str]) -> list[str]:
        """The group as names: whole units collapsed, then single peers, then outside."""
        endpoints = [p for p in group if self.peers[p].kind == "endpoint"]
        others = [self.peers[p].label for p in group if self.peers[p].kind != "endpoint"]
        if self.group_by == "pod":
            return [*endpoints, *others]
        by_unit: dict[str, list[str]] = {}
        singles: list[str] = []
        for peer in endpoints:
            if "@" in peer:
                singles.append(peer)
                continue
            namespace, _, name = peer.partition("/")
            by_unit.setdefault(self._unit(namespace, name), []).append(peer)
        names: list[str] = []
        for unit, members in by_unit.items():
            whole = len(members) == len(self._members.get(unit, ()))
            alone = len(members) == 1 and unit == members[0] + "/*"  # no workload suffix
            if whole and not alone:
                names.append(unit)
            else:
                names.extend(members)
        return [*names, *singles, *others]

    def text(self, group: Sequence[str]) -> str:
        """The group in one line."""
        return ", ".join(self.parts(group))


def _csv(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot(edges: Iterable[tuple[str, str, str, str]], title: str) -> str:
    """Edges (source, destination, label, colour) as a digraph."""
    lines = [f"digraph {_dot_id(title)} {{", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    nodes: dict[str, None] = {}
    body = []
    for src, dst, label, colour in edges:
        nodes.setdefault(src)
        nodes.setdefault(dst)
        style = f", color={colour}, fontcolor={colour}" if colour else ""
        body.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [label={_dot_id(label)}{style}];")
    for node in nodes:
        shape = ", shape=ellipse" if node.startswith(("IPv4 outside", "IPv6 outside")) else ""
        lines.append(f"  {_dot_id(node)} [label={_dot_id(node)}{shape}];")
    lines.extend(body)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_map(data: Any, fmt: str = "txt", group_by: str = "pod") -> str:
    """A map (:class:`~fqdnpolicy.connectivity.ConnectivityMap` or :class:`MapData`)."""
    if fmt == "json":
        return json.dumps(data.as_dict(), indent=2) + "\n"
    namer = Namer(data.peers, group_by)
    families = tuple(data.families)
    rows = [
        (namer.text(r.sources), namer.text(r.destinations), r.connections.describe(families))
        for r in data.rows
    ]
    if fmt == "csv":
        return _csv([("source", "destination", "connections"), *rows])
    if fmt == "md":
        return _md(("source", "destination", "connections"), rows)
    if fmt == "dot":
        return _dot(((s, d, c, "") for s, d, c in rows), "connectivity")
    if not rows:
        return "no connection is allowed\n" + _caveats(data)
    return "".join(f"{s} => {d} : {c}\n" for s, d, c in rows) + _caveats(data)


def render_diff(data: Any, fmt: str = "txt", group_by: str = "pod") -> str:
    """A :class:`~fqdnpolicy.connectivity.diff.MapDiff`."""
    if fmt == "json":
        return json.dumps(data.as_dict(), indent=2) + "\n"
    namer = Namer(data.peers, group_by)
    families = tuple(data.families)
    rows = [
        (
            r.change,
            namer.text(r.sources),
            namer.text(r.destinations),
            r.connections.describe(families),
            r.rule_text,
            r.was_text,
        )
        for r in data.rows
    ]
    headers = ("change", "source", "destination", "connections", "rule", "was")
    if fmt == "csv":
        return _csv([headers, *rows])
    if fmt == "md":
        return _md(headers, rows)
    if fmt == "dot":
        return _dot(
            (
                (
                    s,
                    d,
                    f"{'+' if ch == 'added' else '-'} {c}",
                    "darkgreen" if ch == "added" else "red",
                )
                for ch, s, d, c, _, _ in rows
            ),
            "diff",
        )
    if not rows:
        return "the two policy sets allow the same connections\n" + _caveats(data)
    out = []
    for change, s, d, c, rule, was in rows:
        sign = "+" if change == "added" else "-"
        out.append(f"{sign} {s} => {d} : {c}\n    now: {rule}\n    was: {was}\n")
    return "".join(out) + _caveats(data)


def _caveats(data: Any) -> str:
    return "".join(f"caveat: {text}\n" for text in getattr(data, "caveats", ()))


def render_replay(data: Any, fmt: str = "txt", shown: int | None = 50) -> str:
    """A :class:`~fqdnpolicy.connectivity.replay.Replay`."""
    if fmt == "json":
        return json.dumps(data.as_dict(), indent=2) + "\n"
    rows = [(c.action, c.decided_by, str(c.count)) for c in data.counts]
    diffs = [
        (
            str(d.index),
            d.time or "",
            f"{d.src} -> {d.dst}:{'*' if d.port is None else d.port}/{d.protocol}",
            d.verdict,
            d.against,
        )
        for d in data.differences
    ]
    diff_headers = ("flow", "time", "connection", "verdict", "against")
    if fmt == "csv":
        if data.against_allowed is not None:
            return _csv([diff_headers, *diffs])
        return _csv([("action", "decided by", "flows"), *rows])
    if fmt == "md":
        text = f"{data.total} flows: {data.allowed} allowed, {data.denied} denied\n\n"
        text += _md(("action", "decided by", "flows"), rows)
        if data.against_allowed is not None:
            text += f"\n{len(data.differences)} flows judged differently\n\n"
            text += _md(diff_headers, diffs)
        return text
    from fqdnpolicy.demo import format_table

    text = f"{data.total} flows: {data.allowed} allowed, {data.denied} denied\n\n"
    text += format_table(("action", "decided by", "flows"), rows) + "\n"
    if data.against_allowed is not None:
        text += (
            f"\nagainst: {data.against_allowed} allowed, "
            f"{data.total - data.against_allowed} denied; "
            f"{len(data.differences)} flows judged differently\n"
        )
        listed = diffs if shown is None else diffs[:shown]
        if listed:
            text += format_table(diff_headers, listed) + "\n"
        if shown is not None and len(diffs) > shown:
            text += f"... and {len(diffs) - shown} more (--format csv or json lists them all)\n"
    return text
