"""Calico's validation rules for specs: ports, protocols, rules, policies and tiers.

The cross-field checks (ports need TCP/UDP/SCTP, ``domains`` only in egress Allow destinations,
...) run as post hooks of the converter, on the class that holds all the fields involved, right
after it structured cleanly; each returns problems with paths relative to that class. The
rules for metadata (names, labels, annotations) are in :mod:`fqdnpolicy.loading.metadata`;
this module also hands on its public names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loading.metadata import (
    _NAME_RES,
    K8S_NAME_PREFIX,
    MAX_ANNOTATIONS_BYTES,
    RESERVED_NAMESPACE_LABEL,
    check_annotations,
    check_label_key,
    check_label_value,
    check_meta,
    check_rule_metadata,
    check_tier_prefix,
)
from fqdnpolicy.loading.problems import shown, suggest, wrong_type
from fqdnpolicy.model import (
    DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
    EntityRule,
    ICMPFields,
    NamedPort,
    PolicySpec,
    Port,
    PortRange,
    Protocol,
    Rule,
    TierDefaultAction,
    TierSpec,
)
from fqdnpolicy.protocols import (
    ICMP,
    ICMPV6,
    PORT_RULE_PROTOCOLS,
    PROTOCOL_FAMILY,
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    protocol_name,
    protocol_number_or_none,
)

__all__ = [
    "BUILTIN_TIERS",
    "K8S_NAME_PREFIX",
    "MAX_ANNOTATIONS_BYTES",
    "RESERVED_NAMESPACE_LABEL",
    "check_annotations",
    "check_builtin_tier",
    "check_entity",
    "check_icmp",
    "check_label_key",
    "check_label_value",
    "check_meta",
    "check_policy_spec",
    "check_port_name",
    "check_rule",
    "check_rule_metadata",
    "check_tier_prefix",
    "check_tier_spec",
    "structure_port",
    "structure_protocol",
]


#: The built-in tiers' fixed order and default action.
BUILTIN_TIERS: Final[Mapping[str, tuple[float, TierDefaultAction]]] = {
    DEFAULT_TIER: (DEFAULT_TIER_ORDER, "Deny"),
    "kube-admin": (1_000.0, "Pass"),
    "kube-baseline": (10_000_000.0, "Pass"),
}


_PORT_NAME_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
_PORT_RANGE_RE: Final = re.compile(r"([0-9]+)(?::([0-9]+))?\Z")
_PROTOCOL_NUMBER_RE: Final = re.compile(r"[1-9][0-9]{0,2}\Z")


def _port_problem(message: str, hint: str) -> InvalidPolicy:
    return InvalidPolicy(Problem(message, hint=hint, code="invalid-port"))


_PORT_HINT = 'a port is 1-65535, a range "first:last" or a port name such as http'


def structure_port(value: Any, _: Any) -> Port:
    """Structure a rule port: a number, a range ``"first:last"`` or a port name."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise wrong_type("a port number, range or name", value, _PORT_HINT)
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise _port_problem(f"port {shown(str(value))} out of range", "ports are 1-65535")
        return PortRange(value, value)
    match = _PORT_RANGE_RE.match(value.strip())
    if match:
        for digits in match.groups():
            # Compared as text first: int() refuses thousands of digits.
            if digits is not None and (len(digits) > 5 or not 1 <= int(digits) <= 65535):
                raise _port_problem(
                    f"port {shown(digits)} out of range in {shown(value)}", "ports are 1-65535"
                )
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        if first > last:
            raise _port_problem(
                f"port range {shown(value)} has its minimum above its maximum",
                f'write it as "{last}:{first}"',
            )
        return PortRange(first, last)
    if ":" in value or ("-" in value.strip("-") and value.replace("-", "").isdigit()):
        raise _port_problem(f"invalid port range {shown(value)}", _PORT_HINT)
    check_port_name(value)
    return NamedPort(value)


def check_port_name(value: str) -> None:
    """Raise a problem unless ``value`` is a valid port name (an IANA service name)."""
    if (
        len(value) > 15
        or not _PORT_NAME_RE.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        raise _port_problem(
            f"invalid port {shown(value)}",
            "a named port is 1-15 lowercase letters, digits and '-', with at least one letter; "
            + _PORT_HINT,
        )


def structure_protocol(value: Any, _: Any) -> Protocol | None:
    """Structure a rule protocol: one of Calico's names, or a number 1-255 (digits too)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise wrong_type("a protocol name or number", value, "e.g. TCP, UDP or 6")
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise InvalidPolicy(
                Problem(
                    f"protocol number {value} out of range",
                    hint="protocol numbers are 1-255",
                    code="invalid-protocol",
                )
            )
        return value
    if value in PROTOCOL_NAMES:
        return value
    if _PROTOCOL_NUMBER_RE.match(value) and int(value) <= 255:
        # Calico's numorstring reads a protocol written as digits as that number.
        return int(value)
    number = PROTOCOL_NUMBERS.get(value.upper())
    if number is not None:
        spelled = protocol_name(number)
        raise InvalidPolicy(
            Problem(
                f"protocol {shown(value)} must be written {spelled!r}",
                hint=f"Calico takes protocol names only as {', '.join(PROTOCOL_NAMES)}",
                code="invalid-protocol",
            )
        )
    raise InvalidPolicy(
        Problem(
            f"unknown protocol {shown(value)}",
            hint=suggest(value, PROTOCOL_NAMES) + ", or a number 1-255",
            code="invalid-protocol",
        )
    )


# -------------------------------------------------------------- cross-field checks (post hooks)


def check_icmp(icmp: ICMPFields) -> list[Problem]:
    """Check an ``icmp``/``notICMP`` match: type and code ranges, no code without type."""
    problems = []
    if icmp.type is not None and not 0 <= icmp.type <= 254:
        problems.append(
            Problem(
                f"ICMP type {icmp.type} out of range",
                path="type",
                hint="ICMP types are 0-254",
                code="invalid-icmp",
            )
        )
    if icmp.code is not None and not 0 <= icmp.code <= 255:
        problems.append(
            Problem(
                f"ICMP code {icmp.code} out of range",
                path="code",
                hint="ICMP codes are 0-255",
                code="invalid-icmp",
            )
        )
    if icmp.code is not None and icmp.type is None:
        problems.append(
            Problem(
                "ICMP code given without an ICMP type",
                path="code",
                hint="add type (the kernel matches a code only together with a type)",
                code="invalid-icmp",
            )
        )
    return problems


def check_entity(entity: EntityRule) -> list[Problem]:
    """Check a rule's source or destination on its own."""
    problems = [
        Problem(
            f"notNets may not contain the catch-all CIDR {net}",
            path=f"notNets[{i}]",
            hint="a catch-all in notNets excludes every address, so the rule never matches; "
            "remove the rule or use a narrower CIDR",
            code="catch-all-not-nets",
        )
        for i, net in enumerate(entity.not_nets)
        if net.prefixlen == 0
    ]
    if entity.selector is not None and "global()" in entity.selector.text:
        problems.append(
            Problem(
                "global() can only be used in a rule's namespaceSelector",
                path="selector",
                hint="write namespaceSelector: global() to match non-namespaced network sets",
                code="invalid-selector",
            )
        )
    ns = entity.namespace_selector
    if ns is not None and "global()" in ns.text and ns.text != "global()":
        problems.append(
            Problem(
                "global() cannot be combined with other terms in a namespaceSelector",
                path="namespaceSelector",
                hint="use namespaceSelector: global() alone",
                code="invalid-selector",
            )
        )
    return problems


def check_rule(rule: Rule) -> list[Problem]:
    """Check the rules that tie a rule's fields together (ports, ICMP, IP versions, domains)."""
    problems: list[Problem] = []
    if rule.ip_version is not None and rule.ip_version not in (4, 6):
        problems.append(
            Problem(
                f"invalid ipVersion {rule.ip_version}",
                path="ipVersion",
                hint="ipVersion is 4 or 6",
                code="invalid-ip-version",
            )
        )
    protocol, not_protocol = (
        protocol_number_or_none(rule.protocol),
        protocol_number_or_none(rule.not_protocol),
    )
    if protocol not in PORT_RULE_PROTOCOLS:
        for side, entity in (("source", rule.source), ("destination", rule.destination)):
            for field, ports in (("ports", entity.ports), ("notPorts", entity.not_ports)):
                # Calico v3.32 takes named ports without a protocol: the name brings its own.
                named_only = rule.protocol is None and all(isinstance(p, NamedPort) for p in ports)
                if ports and not named_only:
                    problems.append(
                        Problem(
                            "rules that specify numeric ports must set protocol to TCP, UDP "
                            "or SCTP",
                            path=f"{side}.{field}",
                            hint="add protocol: TCP (or UDP, SCTP)"
                            if rule.protocol is None
                            else f"protocol {rule.protocol} has no ports",
                            code="ports-need-protocol",
                        )
                    )
    for field, icmp in (("icmp", rule.icmp), ("notICMP", rule.not_icmp)):
        if icmp is not None and protocol not in (ICMP, ICMPV6):
            problems.append(
                Problem(
                    f"rules that specify {field} must set protocol to ICMP or ICMPv6",
                    path=field,
                    hint="add protocol: ICMP (or ICMPv6)",
                    code="icmp-needs-protocol",
                )
            )
    for number, version in PROTOCOL_FAMILY.items():
        if number in (protocol, not_protocol) and rule.ip_version not in (None, version):
            problems.append(
                Problem(
                    f"protocol {protocol_name(number)} needs ipVersion {version}",
                    path="ipVersion",
                    hint=f"set ipVersion: {version} or remove it",
                    code="invalid-ip-version",
                )
            )
    seen: set[int] = set()
    for side, entity in (("source", rule.source), ("destination", rule.destination)):
        for field, nets in (("nets", entity.nets), ("notNets", entity.not_nets)):
            versions = {net.version for net in nets}
            if rule.ip_version is not None and versions - {rule.ip_version}:
                problems.append(
                    Problem(
                        f"{side}.{field} holds IPv{min(versions - {rule.ip_version})} CIDRs "
                        f"but the rule has ipVersion {rule.ip_version}",
                        path=f"{side}.{field}",
                        hint="make ipVersion match the CIDRs, or remove it",
                        code="mixed-ip-versions",
                    )
                )
            if versions and len(versions | seen) > 1:
                problems.append(
                    Problem(
                        "rule mixes IPv4 and IPv6 CIDRs",
                        path=f"{side}.{field}",
                        hint="split it into one rule for IPv4 and one for IPv6",
                        code="mixed-ip-versions",
                    )
                )
            seen |= versions
    if rule.source.domains:
        problems.append(
            Problem(
                "domains are only allowed in a rule's destination",
                path="source.domains",
                hint="move them to destination.domains of an egress rule",
                code="domains-in-source",
            )
        )
    dest = rule.destination
    if dest.domains:
        if rule.action != "Allow":
            problems.append(
                Problem(
                    f"domains are only allowed in Allow rules, not {rule.action}",
                    path="destination.domains",
                    hint="use action: Allow, or match by nets",
                    code="domains-need-allow",
                )
            )
        clash = [key for key, given in (("nets", dest.nets), ("selector", dest.selector)) if given]
        if clash:
            problems.append(
                Problem(
                    f"destination.domains cannot be combined with {' or '.join(clash)} "
                    "in the same destination",
                    path="destination.domains",
                    hint="put the domains and the " + "/".join(clash) + " in separate rules",
                    code="domains-with-nets-or-selector",
                )
            )
    return problems


def check_policy_spec(spec: PolicySpec) -> list[Problem]:
    """Check a policy spec: types, selectors, the global-only flags and the tier name."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, kind in enumerate(spec.types):
        if kind in seen:
            problems.append(
                Problem(
                    f"type {shown(kind)} given more than once",
                    path=f"types[{i}]",
                    hint="list Ingress and Egress at most once each",
                    code="duplicate-type",
                )
            )
        seen.add(kind)
    for field, selector in (
        ("selector", spec.selector),
        ("serviceAccountSelector", spec.service_account_selector),
        ("namespaceSelector", spec.namespace_selector),
    ):
        if selector is not None and "global()" in selector.text:
            problems.append(
                Problem(
                    "global() can only be used in a rule's namespaceSelector",
                    path=field,
                    hint="remove global()",
                    code="invalid-selector",
                )
            )
    if spec.do_not_track and spec.pre_dnat:
        problems.append(
            Problem(
                "preDNAT and doNotTrack cannot both be true",
                path="preDNAT",
                hint="choose one",
                code="invalid-global-flags",
            )
        )
    if spec.pre_dnat and (spec.egress or "Egress" in spec.types):
        problems.append(
            Problem(
                "a preDNAT policy cannot have egress rules or the Egress type",
                path="egress" if spec.egress else "types",
                hint="preDNAT policies apply to ingress only",
                code="invalid-global-flags",
            )
        )
    if (spec.do_not_track or spec.pre_dnat) and not spec.apply_on_forward:
        problems.append(
            Problem(
                "applyOnForward must be true when preDNAT or doNotTrack is true",
                path="applyOnForward",
                hint="add applyOnForward: true",
                code="invalid-global-flags",
            )
        )
    if spec.tier != DEFAULT_TIER and not _NAME_RES["Tier"].match(spec.tier):
        problems.append(
            Problem(
                f"invalid tier name {shown(spec.tier)}",
                path="tier",
                hint="tier names are lowercase letters, digits and '-' (no dots)",
                code="invalid-name",
            )
        )
    return problems


def check_tier_spec(spec: TierSpec) -> list[Problem]:
    """Check a tier spec on its own (the built-in tiers are checked with their names)."""
    return []


def check_builtin_tier(
    name: str, spec: TierSpec, raw_spec: Mapping[str, Any]
) -> tuple[TierSpec, list[Problem]]:
    """Check a built-in tier's fixed settings; fill in those the input leaves out.

    Calico creates the ``default``, ``kube-admin`` and ``kube-baseline`` tiers with a fixed
    order and default action and refuses any other value.

    Args:
        name: The tier's name.
        spec: Its structured spec.
        raw_spec: The spec as written, to tell an omitted field from one at its default.

    Returns:
        The spec with the fixed settings, and the problems found.
    """
    fixed = BUILTIN_TIERS.get(name)
    if fixed is None:
        return spec, []
    order, action = fixed
    problems = []
    if spec.order not in (None, order):
        problems.append(
            Problem(
                f"the {name} tier's order must be {int(order)}",
                path="spec.order",
                hint=f"remove order or set it to {int(order)}",
                code="invalid-tier",
            )
        )
    if "defaultAction" in raw_spec and spec.default_action != action:
        problems.append(
            Problem(
                f"the {name} tier's defaultAction must be {action}",
                path="spec.defaultAction",
                hint=f"remove defaultAction or set it to {action}",
                code="invalid-tier",
            )
        )
    return attrs.evolve(spec, order=order, default_action=action), problems
