"""The cattrs converter that structures plain values into the models, and its error tree.

Values are structured into the frozen models of :mod:`fqdnpolicy.model` with a cattrs converter
(camelCase keys, ``forbid_extra_keys``). We use cattrs' detailed validation rather than a
second hand-written schema walk: field hooks raise :class:`InvalidPolicy` problems, cattrs
gathers every failing field and list item of a resource into ``ClassValidationError`` /
``IterableValidationError`` groups whose notes carry attribute names and indices, and
:func:`problems_from` turns that tree back into field paths, so one schema (the models plus
hooks) drives both parsing and error reporting.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from fqdnpolicy.domains import DomainPattern, parse_domain_pattern
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loading.calico import (
    check_entity,
    check_icmp,
    check_policy_spec,
    check_rule,
    check_tier_spec,
    structure_port,
    structure_protocol,
)
from fqdnpolicy.loading.kubernetes import (
    K8sEgressRule,
    K8sIngressRule,
    K8sIPBlock,
    K8sLabelSelector,
    K8sPeer,
    K8sPort,
    K8sRequirement,
    K8sSpec,
    check_k8s_ip_block,
    check_k8s_peer,
    check_k8s_port,
    check_k8s_selector,
    check_k8s_spec,
    structure_k8s_port_value,
)
from fqdnpolicy.loading.metadata import check_rule_metadata
from fqdnpolicy.loading.problems import describe, join_path, raise_if, shown, suggest, wrong_type
from fqdnpolicy.model import (
    Action,
    EntityRule,
    ICMPFields,
    IPNetwork,
    NamedPort,
    NetworkSetSpec,
    ObjectMeta,
    PolicySpec,
    PolicyType,
    Port,
    PortRange,
    Protocol,
    Rule,
    RuleMetadata,
    ServiceAccountMatch,
    TierDefaultAction,
    TierSpec,
)
from fqdnpolicy.selector import Selector, parse_selector

# ============================================================================================
# Structuring: the cattrs converter and its hooks
# ============================================================================================


def _camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# attrs class -> {attribute name: key in the input}
_KEYS: dict[type, dict[str, str]] = {}
_KEY_OVERRIDES: Final = {"icmp": "icmp", "not_icmp": "notICMP", "pre_dnat": "preDNAT"}


def problems_from(exc: BaseException, path: str) -> list[Problem]:
    """Turn an exception raised while structuring into located problems (relative paths)."""
    if isinstance(exc, InvalidPolicy):
        return [p.located(path_prefix=path) for p in exc.problems]
    if isinstance(exc, ClassValidationError):
        keys = _KEYS.get(exc.cl, {})
        out: list[Problem] = []
        for sub in exc.exceptions:
            note = next(
                (
                    n
                    for n in getattr(sub, "__notes__", ())
                    if isinstance(n, AttributeValidationNote)
                ),
                None,
            )
            if note is None:
                out.extend(problems_from(sub, path))
                continue
            key = keys.get(note.name, note.name)
            if isinstance(sub, KeyError):
                out.append(
                    Problem(
                        f"missing required field {shown(key)}",
                        path=join_path(path, key),
                        hint=f"add {key}",
                        code="missing-field",
                    )
                )
            else:
                out.extend(problems_from(sub, join_path(path, key)))
        return out
    if isinstance(exc, IterableValidationError):
        out = []
        for sub in exc.exceptions:
            inote = next(
                (n for n in getattr(sub, "__notes__", ()) if isinstance(n, IterableValidationNote)),
                None,
            )
            sub_path = path if inote is None else join_path(path, inote.index)
            out.extend(problems_from(sub, sub_path))
        return out
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = sorted(_KEYS.get(exc.cl, {}).values())
        return [
            Problem(
                f"unknown field {shown(key)}",
                path=join_path(path, key),
                hint=suggest(key, valid),
                code="unknown-field",
            )
            for key in sorted(exc.extra_fields)
        ]
    if isinstance(exc, ExceptionGroup):
        return [p for sub in exc.exceptions for p in problems_from(sub, path)]
    return [Problem(f"invalid value: {exc}", path=path, code="invalid")]


def _structure_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise wrong_type("a string", value, "quote the value")
    return value


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type("an integer", value)
    return value


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type("a number", value)
    # NaN compares unequal to everything, so ordering by it depends on the hash seed;
    # infinities would tie with each other.
    if not math.isfinite(value):
        raise InvalidPolicy(
            Problem(
                f"expected a finite number, got {value}",
                hint="write a number such as 100",
                code="not-finite",
            )
        )
    return float(value)


def _structure_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise wrong_type("true or false", value)
    return value


def _structure_selector(value: Any, _: Any) -> Selector:
    if not isinstance(value, str):
        raise wrong_type("a selector string", value, 'e.g. app == "backend"')
    try:
        return parse_selector(value)
    except InvalidPolicy as exc:
        # The column is relative to the selector text; Problem hides columns once a file line
        # is known, so it is spelled out in the message too.
        raise InvalidPolicy(
            [
                attrs.evolve(
                    p,
                    message=_mention(p.message, "invalid selector", value)
                    + (f" (at column {p.column} of the selector)" if p.column else ""),
                    code=p.code or "invalid-selector",
                )
                for p in exc.problems
            ]
        ) from None


def _mention(message: str, what: str, value: str) -> str:
    if message.startswith(what):
        return message
    if repr(value) in message or shown(value) in message:
        return f"{what}: {message}"
    return f"{what} {shown(value)}: {message}"


def _structure_domain(value: Any, _: Any) -> DomainPattern:
    if not isinstance(value, str):
        raise wrong_type("a domain name or pattern", value, "e.g. api.github.com or *.example.com")
    try:
        return parse_domain_pattern(value)
    except InvalidPolicy as exc:
        raise InvalidPolicy(
            [
                attrs.evolve(
                    p,
                    message=_mention(p.message, "invalid domain pattern", value),
                    code=p.code or "invalid-domain",
                )
                for p in exc.problems
            ]
        ) from None


def _structure_net(value: Any, _: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise wrong_type("a CIDR string", value, "e.g. 10.0.0.0/8 or 2001:db8::/32")
    try:
        # Calico accepts CIDRs with host bits set and bare addresses (as /32 or /128).
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise InvalidPolicy(
            Problem(
                f"invalid CIDR {shown(value)}",
                hint="write an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32",
                code="invalid-cidr",
            )
        ) from None


def _literal_hook(valid: tuple[str, ...], what: str) -> Callable[[Any, Any], str]:
    def hook(value: Any, _: Any) -> str:
        if not isinstance(value, str):
            raise wrong_type(f"one of {', '.join(valid)}", value)
        if value not in valid:
            raise InvalidPolicy(
                Problem(
                    f"invalid {what} {shown(value)}", hint=suggest(value, valid), code="invalid"
                )
            )
        return value

    return hook


def _structure_map(value: Any, _: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise wrong_type("a mapping of strings to strings", value)
    problems = [
        Problem(
            f"expected a string value, got {describe(item)}",
            path=key,
            hint="quote the value",
            code="wrong-type",
        )
        for key, item in value.items()
        if not isinstance(item, str)
    ]
    raise_if(problems)
    return dict(value)


def _tuple_hook_factory(converter: cattrs.Converter) -> Callable[[Any], Any]:
    def factory(type_: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
        elem = get_args(type_)[0]
        handler = converter.get_structure_hook(elem)

        def hook(value: Any, _: Any) -> tuple[Any, ...]:
            # Strict: cattrs would turn a string into a tuple of characters.
            if value is None:
                return ()
            if not isinstance(value, list):
                raise wrong_type("a list", value)
            out: list[Any] = []
            errors: list[Exception] = []
            for i, item in enumerate(value):
                try:
                    out.append(handler(item, elem))
                except Exception as exc:
                    exc.add_note(IterableValidationNote(f"@ index {i}", i, elem))
                    errors.append(exc)
            if errors:
                raise IterableValidationError("While structuring a list", errors, type_)
            return tuple(out)

        return hook

    return factory


def _is_homogeneous_tuple(type_: Any) -> bool:
    args = get_args(type_)
    return get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _rules_hook(converter: cattrs.Converter, direction: str) -> Callable[[Any, Any], Any]:
    base = converter.get_structure_hook(tuple[Rule, ...])

    def hook(value: Any, type_: Any) -> tuple[Rule, ...]:
        errors: list[Exception] = []
        if direction == "ingress" and isinstance(value, list):
            # Checked on the raw rules so that it is reported even when a rule has other errors.
            for i, raw in enumerate(value):
                dest = raw.get("destination") if isinstance(raw, dict) else None
                if isinstance(dest, dict) and dest.get("domains"):
                    exc = InvalidPolicy(
                        Problem(
                            "domains are only allowed in egress rules",
                            path="destination.domains",
                            hint="move this rule to spec.egress, or match by nets/selector",
                            code="domains-in-ingress",
                        )
                    )
                    exc.add_note(IterableValidationNote(f"@ index {i}", i, Rule))
                    errors.append(exc)
        try:
            rules: tuple[Rule, ...] = base(value, type_)
        except IterableValidationError as exc:
            raise IterableValidationError(exc.message, [*exc.exceptions, *errors], type_) from None
        if errors:
            raise IterableValidationError("While checking rules", errors, type_)
        return rules

    return hook


# ------------------------------------------------------------------ converter construction


def _salvage_checks(
    base: Callable[[Any, Any], Any],
    post: Callable[[Any], list[Problem]],
    value: dict[str, Any],
    type_: Any,
    exc: ClassValidationError,
    keys: Mapping[str, str],
) -> list[Exception]:
    bad: set[str] = set()
    for sub in exc.exceptions:
        if isinstance(sub, ForbiddenExtraKeysError):
            bad |= set(sub.extra_fields)
            continue
        for note in getattr(sub, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                bad.add(keys.get(note.name, note.name))
    try:
        partial = base({k: v for k, v in value.items() if k not in bad}, type_)
    except Exception:  # a required field failed: nothing to salvage
        return []
    found = post(partial)
    # A check about a field that failed on its own would only repeat that failure.
    # Whole-object checks (empty path) are unreliable once fields were dropped.
    found = [p for p in found if p.path and p.path.split(".")[0].split("[")[0] not in bad]
    return [InvalidPolicy(found)] if found else []


def _equals(expected: Any) -> Callable[[Any], bool]:
    def predicate(type_: Any) -> bool:
        return bool(type_ == expected)

    return predicate


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(
        forbid_extra_keys=True,
        detailed_validation=True,
        unstruct_collection_overrides={tuple: list},
    )
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(Selector, _structure_selector)
    conv.register_structure_hook(DomainPattern, _structure_domain)
    conv.register_structure_hook_func(lambda t: t == IPNetwork, _structure_net)
    conv.register_structure_hook_func(lambda t: t == Port, structure_port)
    conv.register_structure_hook_func(
        lambda t: t in (Protocol, Protocol | None), structure_protocol
    )
    conv.register_structure_hook_func(lambda t: t == Mapping[str, str], _structure_map)
    for literal, what in (
        (Action, "action"),
        (PolicyType, "type"),
        (TierDefaultAction, "defaultAction"),
    ):
        conv.register_structure_hook_func(_equals(literal), _literal_hook(get_args(literal), what))
    conv.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook_factory(conv))

    conv.register_unstructure_hook(Selector, str)
    conv.register_unstructure_hook(DomainPattern, str)
    conv.register_unstructure_hook(ipaddress.IPv4Network, str)
    conv.register_unstructure_hook(ipaddress.IPv6Network, str)
    conv.register_unstructure_hook(
        PortRange, lambda p: p.first if p.first == p.last else f"{p.first}:{p.last}"
    )
    conv.register_unstructure_hook(NamedPort, lambda p: p.name)
    conv.register_unstructure_hook_func(lambda t: t == Mapping[str, str], dict)
    conv.register_unstructure_hook_func(lambda t: t == Port, lambda p: conv.unstructure(p))
    conv.register_unstructure_hook(
        float, lambda f: int(f) if f.is_integer() and abs(f) < 2**53 else f
    )

    def register(
        cl: type,
        post: Callable[[Any], list[Problem]] | None = None,
        hooks: Mapping[str, Callable[[Any, Any], Any]] | None = None,
    ) -> None:
        keys = {a.name: _KEY_OVERRIDES.get(a.name, _camel(a.name)) for a in attrs.fields(cl)}
        _KEYS[cl] = keys
        hooks = hooks or {}
        base: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cl,
            conv,
            _cattrs_forbid_extra_keys=True,
            _cattrs_detailed_validation=True,
            **cast(
                dict[str, Any],
                {n: override(rename=k, struct_hook=hooks.get(n)) for n, k in keys.items()},
            ),
        )

        def structure(value: Any, type_: Any) -> Any:
            """Structure ``value`` as ``cl``; return it, or None and the problems under ``path``."""
            if not isinstance(value, dict):
                fields = ", ".join(sorted(keys.values()))
                raise wrong_type("a mapping", value, f"fields: {fields}")
            try:
                obj = base(value, type_)
            except ClassValidationError as exc:
                if post is None:
                    raise
                # Run the cross-field checks on what did structure, so that one bad field
                # does not hide the other problems of the same object.
                extra = _salvage_checks(base, post, value, type_, exc, keys)
                if not extra:
                    raise
                raise ClassValidationError(exc.message, [*exc.exceptions, *extra], exc.cl) from None
            if post is not None:
                raise_if(post(obj))
            return obj

        conv.register_structure_hook(cl, structure)
        conv.register_unstructure_hook(
            cl,
            make_dict_unstructure_fn(
                cl,
                conv,
                _cattrs_omit_if_default=True,
                **cast(dict[str, Any], {n: override(rename=k) for n, k in keys.items()}),
            ),
        )

    register(ICMPFields, check_icmp)
    register(ServiceAccountMatch)
    register(EntityRule, check_entity)
    register(RuleMetadata, check_rule_metadata)
    register(Rule, check_rule)
    register(ObjectMeta)
    register(
        PolicySpec,
        check_policy_spec,
        {"ingress": _rules_hook(conv, "ingress"), "egress": _rules_hook(conv, "egress")},
    )
    register(NetworkSetSpec)
    register(TierSpec, check_tier_spec)
    register(K8sRequirement)
    register(K8sLabelSelector, check_k8s_selector)
    register(K8sIPBlock, check_k8s_ip_block)
    register(K8sPeer, check_k8s_peer)
    # int | str is the same union as Protocol's, so the port gets its hook by field name.
    register(K8sPort, check_k8s_port, {"port": structure_k8s_port_value})
    register(K8sIngressRule)
    register(K8sEgressRule)
    register(K8sSpec, check_k8s_spec)
    return conv


CONVERTER: Final = _make_converter()


def structure(value: Any, cl: type, path: str) -> tuple[Any, list[Problem]]:
    """Structure ``value`` as ``cl``; return it, or None and the problems under ``path``."""
    try:
        return CONVERTER.structure(value, cl), []
    except Exception as exc:
        return None, problems_from(exc, path)
