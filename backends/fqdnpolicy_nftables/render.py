"""Pure rendering of a :class:`~fqdnpolicy.datapath.DatapathState` into nftables.

Layout of the table (family ``inet``, one table we own)::

    fwd_egress   base chain, hook forward, priority P:
                 ct state established,related accept; ct state invalid drop;
                 iifname vmap { "<endpoint interface>" : jump eg_<hash(endpoint)> }
    fwd_ingress  base chain, hook forward, priority P + 1: the same with oifname / in_<...>
    eg_<h>/in_<h>  one per endpoint and direction: ``jump`` to each applying tier's first
                 policy chain, in tier order
    p_<hash>     one per (policy's rules in a tier, what follows): the policy's rules, then
                 ``goto`` the tier's next policy chain, or the end-of-tier drop
    fp_reject    only with ``reject=True`` (tests): TCP reset / ICMP admin-prohibited

Why two base chains: a flow between two endpoints must pass the sender's egress AND the
receiver's ingress. ``accept`` ends only the base chain it is issued in, so an Allow in
``fwd_egress`` hands the packet on to ``fwd_ingress``; a drop is final.

Calico semantics map onto verdicts: Allow = ``accept``, Deny = ``drop``, Log = ``log``
(continue), Pass = ``return`` (policy chains of a tier are chained by ``goto``, which does not
push the return stack, so ``return`` lands in the endpoint chain, at its next tier), end of
tier = ``drop`` after the tier's last policy, no policy = no vmap entry (the base chain's
``accept`` policy), every tier passed = fall off the endpoint chain (Calico's profile allow).

Chains are named by a hash of their content, so endpoints with identical rules (replicas)
share them and rendering work is done once per distinct tier.

The parts, each a module of its own: matches (:mod:`~fqdnpolicy_nftables.exprs`), rules and
chains (:mod:`~fqdnpolicy_nftables.chains`), set elements (:mod:`~fqdnpolicy_nftables.elements`)
and element changes (:mod:`~fqdnpolicy_nftables.delta`); this module renders the whole table
and gathers their public names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fqdnpolicy.backend_tools import endpoint_interfaces, gc_paused
from fqdnpolicy.datapath import DatapathState, Direction, SetState
from fqdnpolicy_nftables.chains import _REJECT_CHAIN, RenderOptions, _Line, _Renderer
from fqdnpolicy_nftables.delta import ElementOp, SetMirror, mirrors_of, render_delta_ops
from fqdnpolicy_nftables.elements import (
    _ELEMENT_SEP,
    Skipped,
    _check_member,
    _flags,
    _set_elements,
    _Timeouts,
    canonical_elements,
    duration,
    render_elements,
)
from fqdnpolicy_nftables.exprs import Json, _match, _meta
from fqdnpolicy_nftables.names import COMMENT_MAX, named_port_set_name, safe_text, set_names

__all__ = [
    "ElementOp",
    "RenderOptions",
    "SetMirror",
    "canonical_elements",
    "dumps",
    "duration",
    "mirrors_of",
    "render_delta_ops",
    "render_elements",
    "render_full",
]


def _set_decl(
    table: str,
    name: str,
    type_text: str,
    type_json: Any,
    flags: Sequence[str],
    safe_comment: str,
    elements: tuple[str, list[Any]],
) -> tuple[list[str], Json]:
    """A set's declaration: text pieces (newline-terminated lines) and its JSON command.

    ``elements`` is the element text already joined by ``_ELEMENT_SEP`` and the JSON
    elements; ``safe_comment`` is already sanitised. The element text is a piece of its own,
    so that the (large) text is copied once, into the final output.
    """
    flags_line = f"\n\t\tflags {','.join(flags)}" if flags else ""
    element_text, datas = elements
    head = f'\tset {name} {{\n\t\ttype {type_text}{flags_line}\n\t\tcomment "{safe_comment}"'
    if element_text:
        text = [f"{head}\n\t\telements = {{ ", element_text, " }\n\t}\n"]
    else:
        text = [f"{head}\n\t}}\n"]
    data: Json = {"family": "inet", "table": table, "name": name, "type": type_json}
    if flags:
        data["flags"] = list(flags)
    data["comment"] = safe_comment
    if datas:
        data["elem"] = datas
    return text, {"add": {"set": data}}


def _chain_block(name: str, comment: str, lines: Sequence[_Line], head: Sequence[str] = ()) -> str:
    """A chain's text: newline-terminated lines."""
    body = "".join([f"\t\t{b}\n" for b in (*head, *[line[0] for line in lines])])
    return f'\tchain {name} {{\n\t\tcomment "{safe_text(comment, COMMENT_MAX)}"\n{body}\t}}\n'


def _rule_json(table: str, chain: str, line: _Line) -> Json:
    rule: Json = {"family": "inet", "table": table, "chain": chain, "expr": list(line[1])}
    if line[2] is not None:
        rule["comment"] = line[2]
    return {"add": {"rule": rule}}


def render_full(
    state: DatapathState,
    now: float,
    options: RenderOptions,
    *,
    with_json: bool = True,
    skipped: Skipped = None,
) -> tuple[str, Json | None]:
    """Render the whole table (see :func:`_render_full`), with the cyclic GC paused.

    Members no set can hold raise InvalidPolicy, or with a ``skipped`` list are left out and
    reported there.
    """
    with gc_paused():
        return _render_full(state, now, options, with_json, skipped)


def _render_full(
    state: DatapathState, now: float, options: RenderOptions, with_json: bool, skipped: Skipped
) -> tuple[str, Json | None]:
    """Render the whole table: nft text and libnftables JSON, one atomic transaction.

    The transaction creates the table if missing, deletes it, and declares it anew with every
    set (holding its current members, DNS members with their remaining lifetime) and chain:
    rules are replaced and no learned element is lost, because every element the engine
    holds is declared again.

    Raises:
        InvalidPolicy: an interface or set member that cannot be rendered safely, or two
            endpoints sharing an interface.
    """
    table = options.table
    r = _Renderer(options, with_json)
    dispatch: dict[str, list[tuple[str, str]]] = {"egress": [], "ingress": []}
    for endpoint, iface in endpoint_interfaces(state):
        directions: tuple[Direction, Direction] = ("egress", "ingress")
        for direction in directions:
            chain = r.endpoint_chain(endpoint, direction)
            if chain is not None:
                dispatch[direction].append((iface, chain))

    # Pieces of the text, each ending in a newline (the big element texts are pieces of
    # their own: joined once, copied once).
    text: list[str] = [
        f"table inet {table}\n",
        f"delete table inet {table}\n",
        f"table inet {table} {{\n",
    ]
    commands: list[Json] = [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": {"family": "inet", "name": table}}},
        {"delete": {"table": {"family": "inet", "name": table}}},
        {"add": {"table": {"family": "inet", "name": table}}},
    ]
    timeouts = _Timeouts(now)
    for ipset in state.sets:
        flags = _flags(ipset.kind)
        safe = safe_text(f"{ipset.kind} {ipset.definition}", COMMENT_MAX)
        for name, addr_type, elements in zip(
            set_names(ipset.set_id),
            ("ipv4_addr", "ipv6_addr"),
            _set_elements(ipset, now, timeouts, with_json, skipped),
            strict=True,
        ):
            set_text, set_data = _set_decl(table, name, addr_type, addr_type, flags, safe, elements)
            text.extend(set_text)
            commands.append(set_data)
    for name in sorted(state.named_ports):
        for family in (4, 6):
            np_entries = sorted(
                {
                    (addr, proto, port)
                    for addr, proto, port in state.named_ports[name]
                    if (":" in addr) == (family == 6) and _check_member(addr, name, skipped)
                }
            )
            addr_type = "ipv4_addr" if family == 4 else "ipv6_addr"
            set_lines, set_data = _set_decl(
                table,
                named_port_set_name(name, family),
                f"{addr_type} . inet_proto . inet_service",
                [addr_type, "inet_proto", "inet_service"],
                (),
                safe_text(f"named port {name}", COMMENT_MAX),
                (
                    _ELEMENT_SEP.join([f"{a} . {p} . {n}" for a, p, n in np_entries]),
                    [{"concat": [a, p, n]} for a, p, n in np_entries],
                ),
            )
            text.extend(set_lines)
            commands.append(set_data)

    chain_json: list[Json] = []
    rule_json: list[Json] = []
    prio = options.priority
    bases: tuple[tuple[Direction, str, str], ...] = (
        ("egress", "fwd_egress", "iifname"),
        ("ingress", "fwd_ingress", "oifname"),
    )
    for direction, base, key in bases:
        base_lines: list[_Line] = [
            (
                "ct state established,related accept",
                (
                    _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                    {"accept": None},
                ),
                None,
            ),
            (
                "ct state invalid drop",
                (_match({"ct": {"key": "state"}}, "invalid", "in"), {"drop": None}),
                None,
            ),
        ]
        entries = dispatch[direction]
        if entries:
            vmap_text = ", ".join(f'"{iface}" : jump {chain}' for iface, chain in entries)
            base_lines.append(
                (
                    f"{key} vmap {{ {vmap_text} }}",
                    (
                        {
                            "vmap": {
                                "key": _meta(key),
                                "data": {
                                    "set": [
                                        [iface, {"jump": {"target": c}}] for iface, c in entries
                                    ]
                                },
                            }
                        },
                    ),
                    None,
                )
            )
        priority = prio if direction == "egress" else prio + 1
        head = [f"type filter hook forward priority {priority}; policy accept;"]
        comment = f"fqdnpolicy {direction}: dispatch by {key}"
        text.append(_chain_block(base, comment, base_lines, head))
        chain_json.append(
            {
                "add": {
                    "chain": {
                        "family": "inet",
                        "table": table,
                        "name": base,
                        "type": "filter",
                        "hook": "forward",
                        "prio": priority,
                        "policy": "accept",
                        "comment": comment,
                    }
                }
            }
        )
        if with_json:
            rule_json.extend(_rule_json(table, base, line) for line in base_lines)
    if options.reject:
        r.chains[_REJECT_CHAIN] = (
            "deny (test mode): reset TCP, ICMP admin-prohibited otherwise",
            [
                (
                    "meta l4proto tcp reject with tcp reset",
                    (
                        _match(_meta("l4proto"), "tcp"),
                        {"reject": {"type": "tcp reset"}},
                    ),
                    None,
                ),
                (
                    "reject with icmpx type admin-prohibited",
                    ({"reject": {"type": "icmpx", "expr": "admin-prohibited"}},),
                    None,
                ),
            ],
        )
    for name, (chain_comment, chain_lines) in r.chains.items():
        text.append(_chain_block(name, chain_comment, chain_lines))
        safe = safe_text(chain_comment, COMMENT_MAX)
        chain_json.append(
            {"add": {"chain": {"family": "inet", "table": table, "name": name, "comment": safe}}}
        )
        if with_json:
            rule_json.extend(_rule_json(table, name, line) for line in chain_lines)
    text.append("}\n")
    if not with_json:
        return "".join(text), None
    commands.extend(chain_json)
    commands.extend(rule_json)
    return "".join(text), {"nftables": commands}


def dumps(data: Json) -> str:
    """Compact JSON text of a rendering's ``data`` (what ``nft -j -f`` reads)."""
    return json.dumps(data, separators=(",", ":"))


def set_states(state: DatapathState) -> dict[str, SetState]:
    """Sets of a state by id."""
    return {s.set_id: s for s in state.sets}
