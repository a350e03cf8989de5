"""The matches of nftables rules, each as nft text and its libnftables JSON form (a ``Part``).

Addresses against a set, protocols, ICMP types, port ranges and named ports; the rules of
:mod:`fqdnpolicy_nftables.chains` are built from these.
"""

from __future__ import annotations

from typing import Any

from fqdnpolicy.backend_tools import merge_ranges
from fqdnpolicy.datapath import PortSpec
from fqdnpolicy.protocols import ICMPV6, PORTED_PROTOCOLS
from fqdnpolicy_nftables.names import named_port_set_name

Json = dict[str, Any]
Part = tuple[str, Json]  # one match or statement: nft text and its libnftables JSON form


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _nfproto(family: int) -> Part:
    name = "ipv4" if family == 4 else "ipv6"
    return f"meta nfproto {name}", _match(_meta("nfproto"), name)


def _l4proto(number: int, negate: bool = False) -> Part:
    op = "!=" if negate else "=="
    return f"meta l4proto {'!= ' if negate else ''}{number}", _match(_meta("l4proto"), number, op)


def _addr(family: int, field: str, name: str, negate: bool) -> Part:
    proto = "ip" if family == 4 else "ip6"
    op = "!=" if negate else "=="
    return (
        f"{proto} {field} {'!= ' if negate else ''}@{name}",
        _match(_payload(proto, field), f"@{name}", op),
    )


def _icmp(protocol: int, spec: tuple[int | None, int | None], negate: bool) -> Part | None:
    kind = "icmpv6" if protocol == ICMPV6 else "icmp"
    icmp_type, code = spec
    op = "!=" if negate else "=="
    neg = "!= " if negate else ""
    if icmp_type is None:
        return None  # matches every packet of the protocol (the loader forbids a lone code)
    if code is None:
        return f"{kind} type {neg}{icmp_type}", _match(_payload(kind, "type"), icmp_type, op)
    left = {"concat": [_payload(kind, "type"), _payload(kind, "code")]}
    return (
        f"{kind} type . {kind} code {neg}{{ {icmp_type} . {code} }}",
        _match(left, {"set": [{"concat": [icmp_type, code]}]}, op),
    )


def _range_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _range_json(first: int, last: int) -> Any:
    return first if first == last else {"range": [first, last]}


def _own_ports(spec: PortSpec, protocol: int | None, field: str, negate: bool) -> Part | None:
    """Ranges and the endpoint's resolved named ports as one anonymous-set match.

    Returns None when the spec names ranges or own named ports but none can match under the
    rule's protocol (the caller treats a positive spec of that kind as never matching).
    """
    op = "!=" if negate else "=="
    neg = "!= " if negate else ""
    if protocol is not None:
        wanted = list(spec.ranges) + [(p, p) for proto, p in spec.named if proto == protocol]
        merged = merge_ranges(wanted)
        if not merged:
            return None
        left = _payload("th", field)
        if len(merged) == 1:
            first, last = merged[0]
            return (
                f"th {field} {neg}{_range_text(first, last)}",
                _match(left, _range_json(first, last), op),
            )
        text = ", ".join(_range_text(a, b) for a, b in merged)
        return f"th {field} {neg}{{ {text} }}", _match(
            left, {"set": [_range_json(a, b) for a, b in merged]}, op
        )
    # No protocol: pair each port with the protocols that carry one (exactly the engine's
    # rule that only a packet with a port can match a port).
    pairs: dict[int, list[tuple[int, int]]] = {p: list(spec.ranges) for p in PORTED_PROTOCOLS}
    for proto, port in spec.named:
        pairs.setdefault(proto, []).append((port, port))
    elements = [(proto, r) for proto in sorted(pairs) for r in merge_ranges(pairs[proto])]
    if not elements:
        return None
    text = ", ".join(f"{proto} . {_range_text(*r)}" for proto, r in elements)
    left = {"concat": [_meta("l4proto"), _payload("th", field)]}
    right = {"set": [{"concat": [proto, _range_json(*r)]} for proto, r in elements]}
    return f"meta l4proto . th {field} {neg}{{ {text} }}", _match(left, right, op)


def _peer_named(family: int, addr_field: str, port_field: str, name: str, negate: bool) -> Part:
    proto = "ip" if family == 4 else "ip6"
    setname = named_port_set_name(name, family)
    op = "!=" if negate else "=="
    neg = "!= " if negate else ""
    left = {"concat": [_payload(proto, addr_field), _meta("l4proto"), _payload("th", port_field)]}
    return (
        f"{proto} {addr_field} . meta l4proto . th {port_field} {neg}@{setname}",
        _match(left, f"@{setname}", op),
    )
