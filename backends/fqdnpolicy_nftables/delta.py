"""Element changes rendered as one transaction, against mirrors of what each set holds.

The backend keeps a :class:`SetMirror` per rendered set (:func:`mirrors_of` makes them from a
full state); :func:`render_delta_ops` renders a batch of :class:`ElementOp` and updates the
mirrors to the new members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from fqdnpolicy.datapath import DatapathState
from fqdnpolicy_nftables.elements import (
    Skipped,
    _check_member,
    _element,
    _flags,
    _is_prefix,
    _timeout_ms,
    render_elements,
)
from fqdnpolicy_nftables.exprs import Json
from fqdnpolicy_nftables.names import set_name

__all__ = ["ElementOp", "SetMirror", "mirrors_of", "render_delta_ops"]


@attrs.frozen
class ElementOp:
    """Net effect of a delta batch on one member: added (with expiry) or removed."""

    set_id: str
    member: str
    added: bool
    expiry: float | None


@attrs.define
class SetMirror:
    """What the engine last said a set holds (the backend keeps one per rendered set).

    Used by :func:`render_delta_ops` to rewrite an interval set whole when CIDRs are involved
    (nft cannot add a member overlapping another one).
    """

    kind: str
    members: dict[str, float | None]
    #: How many of ``members`` are CIDRs shorter than a host (kept by render_delta_ops, so
    #: a batch need not scan a large set to learn whether it holds one).
    prefixes: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.prefixes = sum(1 for m in self.members if _is_prefix(m))


def render_delta_ops(
    ops: Sequence[ElementOp],
    mirrors: dict[str, SetMirror],
    now: float,
    table: str,
    skipped: Skipped = None,
) -> tuple[str, Json]:
    """Render element changes as one transaction, updating ``mirrors`` to the new members.

    Plain sets get ``add element`` / ``delete element`` batches (a delete is preceded by an
    add of the same element, so deleting an element the kernel already timed out is not an
    error). An interval set touched where CIDRs are involved is flushed and declared again
    from its mirror in the same transaction.

    An added element states its lifetime twice, as ``timeout`` and ``expires``: the kernel
    keeps an existing element's expiry when it is added again with the same ``timeout``, so
    a name answered again with the same TTL would otherwise expire in the kernel while the
    cache still holds it.
    """
    adds: dict[str, list[tuple[str, Any]]] = {}
    deletes: dict[str, list[tuple[str, Any]]] = {}
    rewrite: dict[str, set[int]] = {}
    for op in ops:
        mirror = mirrors[op.set_id]
        if not _check_member(op.member, op.set_id, skipped):
            continue
        family = 6 if ":" in op.member else 4
        flags = _flags(mirror.kind)
        had_prefix = "interval" in flags and mirror.prefixes > 0
        timeout = _timeout_ms(op.expiry, now) if "timeout" in flags else None
        expired = op.added and timeout == 0
        held = op.member in mirror.members
        if op.added and not expired:
            mirror.members[op.member] = op.expiry
        else:
            mirror.members.pop(op.member, None)
        if _is_prefix(op.member):
            mirror.prefixes += (op.member in mirror.members) - held
        name = set_name(op.set_id, family)
        if had_prefix or ("interval" in flags and _is_prefix(op.member)):
            rewrite.setdefault(op.set_id, set()).add(family)
        elif op.added and not expired:
            adds.setdefault(name, []).append(_element(op.member, timeout, refresh=True))
        else:
            deletes.setdefault(name, []).append(_element(op.member, None))
    text: list[str] = []
    commands: list[Json] = [{"metainfo": {"json_schema_version": 1}}]

    def elements(verb: str, name: str, items: list[tuple[str, Any]]) -> None:
        text.append(f"{verb} element inet {table} {name} {{ {', '.join(t for t, _ in items)} }}")
        commands.append(
            {
                verb: {
                    "element": {
                        "family": "inet",
                        "table": table,
                        "name": name,
                        "elem": [d for _, d in items],
                    }
                }
            }
        )

    for set_id, families in sorted(rewrite.items()):
        mirror = mirrors[set_id]
        for family in sorted(families):
            name = set_name(set_id, family)
            text.append(f"flush set inet {table} {name}")
            commands.append({"flush": {"set": {"family": "inet", "table": table, "name": name}}})
            want_v6 = family == 6
            members = {m: e for m, e in mirror.members.items() if (":" in m) == want_v6}
            texts, datas = render_elements(members, mirror.kind, now, skipped)
            if texts:
                elements("add", name, list(zip(texts, datas, strict=True)))
    for name, items in adds.items():
        elements("add", name, items)
    for name, items in deletes.items():
        elements("add", name, items)
        elements("delete", name, items)
    return ("\n".join(text) + "\n") if text else "", {"nftables": commands}


def mirrors_of(state: DatapathState) -> dict[str, SetMirror]:
    """The mirror of every set of a full state."""
    return {s.set_id: SetMirror(s.kind, dict(s.members)) for s in state.sets}
