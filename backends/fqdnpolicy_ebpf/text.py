"""The readable form of a plan (``fqdnpolicy render --backend ebpf``) and its JSON form."""

from __future__ import annotations

from typing import Any

from fqdnpolicy_ebpf.plan import Entry, Member, Plan, PortEntry, table_index

__all__ = ["plan_json", "plan_text"]

_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PORT_SIDES = ("dport", "dport not", "sport", "sport not")


def _proto(number: int) -> str:
    return _PROTOCOLS.get(number, str(number))


def _ports(spec: tuple[PortEntry, ...], names: tuple[str, ...]) -> str:
    parts = []
    for lo, hi, proto, name in spec:
        if name >= 0:
            parts.append(f"peer:{names[name]}")
        else:
            text = str(lo) if lo == hi else f"{lo}-{hi}"
            parts.append(f"{_proto(proto)}/{text}" if proto else text)
    return "{" + ",".join(parts) + "}"


def _icmp(value: tuple[int | None, int | None]) -> str:
    kind, code = value
    return f"type {'*' if kind is None else kind} code {'*' if code is None else code}"


def entry_text(entry: Entry, names: tuple[str, ...]) -> str:
    """One rule table entry on one line."""
    if entry.kind == "tier-end":
        return f"end of tier {entry.tier}: {entry.action}"
    parts = [f"{entry.action:<5}", f"ip{'/'.join(map(str, entry.families))}"]
    if entry.protocol is not None:
        parts.append(f"proto {_proto(entry.protocol)}")
    if entry.not_protocol is not None:
        parts.append(f"proto not {_proto(entry.not_protocol)}")
    if entry.icmp is not None:
        parts.append(f"icmp {_icmp(entry.icmp)}")
    if entry.not_icmp is not None:
        parts.append(f"icmp not {_icmp(entry.not_icmp)}")
    if entry.peer_in:
        parts.append("peer in sets " + ",".join(map(str, entry.peer_in)))
    if entry.peer_not_in:
        parts.append("peer not in sets " + ",".join(map(str, entry.peer_not_in)))
    for side, spec in zip(_PORT_SIDES, entry.ports, strict=True):
        if spec:
            parts.append(f"{side} {_ports(spec, names)}")
    if entry.action == "Pass":
        parts.append(f"(pass to entry {entry.next_tier})")
    parts.append(f"# {entry.tier}/{entry.policy} rule {entry.index}")
    return " ".join(parts)


def _member(m: Member, now: float) -> str:
    left = "" if m.expiry is None else f" (expires in {m.expiry - now:.1f}s)"
    return f"    {m.text}{left}"


def _index(entries: tuple[Entry, ...], sizes: dict[int, int]) -> str:
    index = table_index(entries, sizes)
    parts = [f"set {s} -> {','.join(map(str, v))}" for s, v in sorted(index.by_set.items())]
    parts += [
        f"any peer, {_proto(p)} -> {','.join(map(str, v))}"
        for p, v in sorted(index.by_protocol.items())
    ]
    return "; ".join([*parts, f"any peer -> {','.join(map(str, index.unindexed))}"])


def plan_text(plan: Plan, source_hash: str) -> str:
    """The plan as text: program, sets and their members, every rule table (shared ones once)."""
    lines = [
        "# fqdnpolicy eBPF datapath",
        f"program fqe.bpf.c sha256 {source_hash}",
        "",
        f"sets ({len(plan.sets)}):",
    ]
    by_set: dict[int, list[Member]] = {}
    for m in plan.members:
        by_set.setdefault(m.set_index, []).append(m)
    for slot in plan.sets:
        lines.append(
            f"  set {slot.index} {slot.set_id} {slot.kind} {slot.definition!r}:"
            f" {slot.members} members"
        )
        lines.extend(_member(m, plan.now) for m in by_set.get(slot.index, ()))
    if plan.named:
        lines.append("")
        lines.append("peer named ports:")
        lines.extend(
            f"  {plan.names[n]}: family {fam} {addr:#x} {_proto(proto)}/{port}"
            for n, fam, addr, proto, port in plan.named
        )
    sizes = {s.index: s.members for s in plan.sets}
    shown: dict[int, str] = {}
    for table in plan.tables:
        way = "egress (from the workload)" if table.direction == 0 else "ingress (to the workload)"
        lines.append("")
        lines.append(f"endpoint {table.endpoint} on {table.interface}, {way}:")
        if not table.entries:
            lines.append("  no policy: allow")
            continue
        first = shown.setdefault(id(table.entries), f"{table.endpoint} {way.split()[0]}")
        if first != f"{table.endpoint} {way.split()[0]}":
            lines.append(f"  the table of {first}")
            continue
        lines.extend(f"  {i:>4} {entry_text(e, plan.names)}" for i, e in enumerate(table.entries))
        lines.append("  then: allow (every tier passed)")
        lines.append(f"  index: {_index(table.entries, sizes)}")
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan, source_hash: str) -> dict[str, Any]:
    """The plan as JSON-ready data."""
    return {
        "source_sha256": source_hash,
        "sets": [
            {
                "index": s.index,
                "id": s.set_id,
                "kind": s.kind,
                "definition": s.definition,
                "members": {m.text: m.expiry for m in plan.members if m.set_index == s.index},
            }
            for s in plan.sets
        ],
        "tables": [
            {
                "endpoint": t.endpoint,
                "interface": t.interface,
                "direction": "egress" if t.direction == 0 else "ingress",
                "entries": [entry_text(e, plan.names) for e in t.entries],
            }
            for t in plan.tables
        ],
    }
