"""Load policy resources from YAML/JSON strictly, with located and collected errors; dump them.

What is accepted:

* ``projectcalico.org/v3`` NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet,
  Tier; ``networking.k8s.io/v1`` NetworkPolicy, converted to a Calico NetworkPolicy as
  Calico's own converter does (see :func:`convert_k8s_policy`).
* Multi-document YAML, JSON, ``kind: List`` and ``kind: <Kind>List`` wrappers (items may omit
  ``apiVersion``/``kind``, which then come from the wrapper), and directories (recursively,
  ``*.yaml``, ``*.yml``, ``*.json``, in sorted order so results never depend on the file
  system).

How errors are found and located:

* YAML is read event by event (``yaml.parse`` with the safe loader, libyaml when present),
  building plain values and a map from field path (``spec.egress[0].destination.ports[1]``) to
  source line in one iterative pass. No tag outside YAML's core schema is constructed, so no
  YAML can run code; duplicate keys, which PyYAML silently overwrites, are errors.
* Values are structured into the frozen models of :mod:`fqdnpolicy.model` with a cattrs
  converter (camelCase keys, ``forbid_extra_keys``). We use cattrs' detailed validation rather
  than a second hand-written schema walk: field hooks raise :class:`InvalidPolicy` problems,
  cattrs gathers every failing field and list item of a resource into
  ``ClassValidationError``/``IterableValidationError`` groups whose notes carry attribute
  names and indices, and :func:`_problems_from` turns that tree back into field paths, so one
  schema (the models plus hooks) drives both parsing and error reporting. Cross-field rules
  (ports need TCP/UDP/SCTP, ``domains`` only in egress Allow destinations, ...) run in the
  hooks of the class that holds all the fields involved, right after it structured cleanly.
* Every problem is collected; loading returns everything or raises one
  :class:`InvalidPolicy` with all problems, sorted by file and line.

Bounds (input beyond them is rejected with a problem, never a hang or a crash): a file holds at
most :data:`MAX_INPUT_BYTES`; YAML nests at most :data:`MAX_DEPTH` levels; a file yields at most
:data:`MAX_NODES` values, counting every expansion of a YAML alias (so "billion laughs" alias
bombs stop early).

Names and tiers (a decision; Calico has changed here): Calico before v3.32 stored a policy of
tier ``t`` under the name ``t.<name>`` and its validator allows policy names with at most one
dot; v3.32 dropped the prefix. We accept both spellings: a name without a dot may live in any
tier, a dotted name ``t.<name>`` must be in tier ``t`` (``default`` when ``spec.tier`` is
omitted), and ``t.x`` and ``x`` in tier ``t`` count as the same policy when looking for
duplicates. Converted Kubernetes policies are named ``knp.default.<name>`` as Calico names them.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeAlias, cast, get_args, get_origin

import attrs
import cattrs
import yaml
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
from fqdnpolicy.model import (
    CALICO_API_VERSION,
    DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
    K8S_API_VERSION,
    Action,
    EntityRule,
    ICMPFields,
    IPNetwork,
    NamedPort,
    NetworkSet,
    NetworkSetSpec,
    ObjectMeta,
    Policy,
    PolicySpec,
    PolicyType,
    Port,
    PortRange,
    Protocol,
    Resource,
    ResourceSet,
    Rule,
    RuleMetadata,
    ServiceAccountMatch,
    SourceLocation,
    Tier,
    TierDefaultAction,
    TierSpec,
)
from fqdnpolicy.protocols import (
    ICMP,
    ICMPV6,
    KUBERNETES_PROTOCOLS,
    PORT_RULE_PROTOCOLS,
    PROTOCOL_FAMILY,
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    protocol_name,
    protocol_number_or_none,
)
from fqdnpolicy.selector import Selector, parse_selector

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_NODES",
    "convert_k8s_policy",
    "dump",
    "load",
    "loads",
]

MAX_INPUT_BYTES: Final = 16 * 1024 * 1024
"""Largest file (or string) accepted: 16 MiB, ~10,000 typical policies."""

MAX_DEPTH: Final = 64
"""Deepest YAML nesting accepted; real resources nest about 10 levels."""

MAX_NODES: Final = 2_000_000
"""Most values one file may yield, alias expansions included."""

_SUFFIXES: Final = (".yaml", ".yml", ".json")
_GLOBAL_ONLY_SPEC: Final = ("namespaceSelector", "doNotTrack", "preDNAT", "applyOnForward")
# Filled in by the API server; harmless in files exported with `kubectl get -o yaml`, so they
# are accepted and dropped rather than reported as unknown fields.
_SERVER_METADATA: Final = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)

# Calico's name rules (libcalico-go validator): DNS-1123 labels and subdomains.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_NAME_RES: Final = {
    "NetworkPolicy": re.compile(rf"(?:{_LABEL}(\.{_LABEL})?|(knp|ossg)\.default\.{_SUBDOMAIN})\Z"),
    "GlobalNetworkPolicy": re.compile(rf"({_LABEL}\.)?{_LABEL}\Z"),
    "NetworkSet": re.compile(rf"{_SUBDOMAIN}\Z"),
    "GlobalNetworkSet": re.compile(rf"{_SUBDOMAIN}\Z"),
    "Tier": re.compile(rf"{_LABEL}\Z"),
    "k8s": re.compile(rf"{_SUBDOMAIN}\Z"),
}
_NAMESPACE_RE: Final = re.compile(rf"{_LABEL}\Z")
_QUALIFIED_NAME_RE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_LABEL_VALUE_RE: Final = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_PORT_NAME_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
_PORT_RANGE_RE: Final = re.compile(r"(\d+)(?::(\d+))?\Z")

_KINDS: Final = {
    CALICO_API_VERSION: (
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "NetworkSet",
        "GlobalNetworkSet",
        "Tier",
    ),
    K8S_API_VERSION: ("NetworkPolicy",),
}
_K8S_ORCHESTRATOR_TERM: Final = "projectcalico.org/orchestrator == 'k8s'"
_K8S_ORDER: Final = 1000.0
_K8S_NAME_PREFIX: Final = "knp.default."


# ============================================================================================
# Small helpers
# ============================================================================================


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _wrong_type(expected: str, value: object, hint: str = "") -> InvalidPolicy:
    return InvalidPolicy(
        Problem(f"expected {expected}, got {_describe(value)}", hint=hint, code="wrong-type")
    )


def _suggest(word: str, valid: list[str] | tuple[str, ...]) -> str:
    """Return ``did you mean 'x'? `` plus the list of valid words, as a hint."""
    lowered = {v.lower(): v for v in valid}
    close = [lowered[word.lower()]] if word.lower() in lowered else []
    close = close or difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    listing = ", ".join(sorted(valid))
    if close:
        return f"did you mean {close[0]!r}? valid: {listing}"
    return f"valid: {listing}"


def _camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# ============================================================================================
# YAML / JSON reading: values plus a field-path -> line map, bounded
# ============================================================================================


class _Abort(Exception):
    """Stops reading a file; carries the problem that made it stop."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@attrs.define
class _Document:
    value: Any
    lines: dict[str, int]
    line: int | None


@attrs.define
class _Frame:
    container: dict[str, Any] | list[Any]
    path: str
    anchor: str | None
    start_count: int
    key: Any = None  # pending mapping key; _NO_KEY when none; _DISCARD to drop the value
    discard: bool = False  # this container itself is dropped (bad key position)


_NO_KEY: Final = object()
_DISCARD: Final = object()
_YAML_STR = "tag:yaml.org,2002:str"
_SAFE_SCALAR_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_MAP_TAGS: Final = frozenset({None, "!", "tag:yaml.org,2002:map"})
_SEQ_TAGS: Final = frozenset({None, "!", "tag:yaml.org,2002:seq"})
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(text: str, filename: str) -> tuple[list[_Document], list[Problem]]:
    """Parse a YAML stream iteratively; return its documents and the problems found."""
    problems: list[Problem] = []
    docs: list[_Document] = []
    loader = _Loader(text)
    try:
        _build_documents(loader, filename, docs, problems)
    except _Abort as stop:
        problems.append(stop.problem)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.append(
            Problem(
                f"YAML syntax error: {exc.problem or exc.context}",
                file=filename,
                line=None if mark is None else mark.line + 1,
                column=None if mark is None else mark.column + 1,
                hint="fix the YAML syntax at this line",
                code="yaml-syntax",
            )
        )
    except yaml.YAMLError as exc:
        problems.append(Problem(f"YAML error: {exc}", file=filename, code="yaml-syntax"))
    finally:
        loader.dispose()
    return docs, problems


def _build_documents(
    loader: Any, filename: str, docs: list[_Document], problems: list[Problem]
) -> None:
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    lines: dict[str, int] = {}
    doc_line: int | None = None
    root: Any = None
    count = 0

    def problem(message: str, line: int, hint: str = "", code: str = "yaml") -> Problem:
        return Problem(message, file=filename, line=line, hint=hint, code=code)

    def child_path(line: int) -> tuple[str, bool]:
        """Where a value that starts now goes: (its path, whether to drop it)."""
        if not stack:
            return "", False
        top = stack[-1]
        if isinstance(top.container, list):
            path = _join(top.path, len(top.container))
            lines[path] = line
            return path, top.discard
        if top.key is _NO_KEY:
            return top.path, True  # a value in key position; reported by emit()
        if top.key is _DISCARD:
            return top.path, True
        return _join(top.path, top.key), top.discard

    def emit(value: Any, line: int, is_scalar: bool) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top.container, list):
            top.container.append(value)
            return
        if top.key is _NO_KEY:
            if not is_scalar or not isinstance(value, str):
                problems.append(
                    problem(
                        f"mapping keys must be strings, got {_describe(value)}",
                        line,
                        hint="quote the key",
                        code="wrong-type",
                    )
                )
                top.key = _DISCARD
                return
            key_path = _join(top.path, value)
            if value in top.container:
                problems.append(
                    problem(
                        f"duplicate key {value!r}",
                        line,
                        hint=f"each key may appear once; the first is at line "
                        f"{lines.get(key_path, '?')}",
                        code="duplicate-key",
                    )
                )
                top.key = _DISCARD
                return
            lines[key_path] = line
            top.key = value
            return
        if top.key is not _DISCARD:
            top.container[top.key] = value
        top.key = _NO_KEY

    while True:
        event = loader.get_event()
        if event is None:
            break
        count += 1
        if count > MAX_NODES:
            raise _Abort(
                problem(
                    f"input too large: more than {MAX_NODES} YAML values",
                    event.start_mark.line + 1,
                    hint="split the input, or remove YAML aliases that expand exponentially",
                    code="too-large",
                )
            )
        line = event.start_mark.line + 1
        if isinstance(event, yaml.ScalarEvent):
            child_path(line)
            value = _scalar(loader, event, filename)
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1)
            emit(value, line, True)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            is_map = isinstance(event, yaml.MappingStartEvent)
            if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
                raise _Abort(
                    problem(
                        f"unsupported YAML tag {event.tag!r}",
                        line,
                        hint="only plain mappings, lists and scalars are accepted",
                        code="yaml-tag",
                    )
                )
            if len(stack) >= MAX_DEPTH:
                raise _Abort(
                    problem(
                        f"input nested too deeply (more than {MAX_DEPTH} levels)",
                        line,
                        hint="policy resources nest about 10 levels",
                        code="too-deep",
                    )
                )
            path, discard = child_path(line)
            container: dict[str, Any] | list[Any] = {} if is_map else []
            stack.append(_Frame(container, path, event.anchor, count, _NO_KEY, discard))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame = stack.pop()
            if frame.anchor is not None:
                anchors[frame.anchor] = (frame.container, count - frame.start_count + 1)
            emit(frame.container, line, False)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise _Abort(
                    problem(f"undefined YAML alias *{event.anchor}", line, code="yaml-alias")
                )
            value, size = anchors[event.anchor]
            count += size
            if count > MAX_NODES:
                raise _Abort(
                    problem(
                        f"input too large: YAML aliases expand to more than {MAX_NODES} values",
                        line,
                        hint="remove aliases that expand exponentially",
                        code="too-large",
                    )
                )
            child_path(line)
            emit(value, line, not isinstance(value, dict | list))
        elif isinstance(event, yaml.DocumentStartEvent):
            anchors = {}
            lines = {}
            root = None
            doc_line = line
        elif isinstance(event, yaml.DocumentEndEvent):
            docs.append(_Document(root, lines, doc_line))


_RESOLVER: Final = yaml.resolver.Resolver()


# YAML 1.1 needs a '.' in a float ("1.0e5"); YAML 1.2, JSON and the YAML reader Kubernetes
# uses also take "1e5" and "-5e-324" (JSON files are read as YAML, and json.dumps writes that).
_FLOAT_12: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+")


@functools.lru_cache(maxsize=8192)
def _implicit_tag(value: str, implicit: tuple[bool, bool]) -> str:
    # Policies repeat the same scalars (Allow, TCP, 443, ...): resolving each once saves ~10%
    # of a load.
    tag = cast(str, _RESOLVER.resolve(yaml.ScalarNode, value, implicit))  # type: ignore[no-untyped-call]
    if tag == _YAML_STR and implicit[0] and _FLOAT_12.fullmatch(value):
        return "tag:yaml.org,2002:float"
    return tag


def _scalar(loader: Any, event: Any, filename: str) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = _implicit_tag(event.value, event.implicit)
    if tag == _YAML_STR:
        return event.value
    line = event.start_mark.line + 1
    if tag == "tag:yaml.org,2002:merge":
        raise _Abort(
            Problem(
                "YAML merge keys (<<) are not supported",
                file=filename,
                line=line,
                hint="write the fields out",
                code="yaml-tag",
            )
        )
    if tag not in _SAFE_SCALAR_TAGS:
        raise _Abort(
            Problem(
                f"unsupported YAML tag {tag!r}",
                file=filename,
                line=line,
                hint="only plain strings, numbers, booleans and null are accepted",
                code="yaml-tag",
            )
        )
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    return loader.construct_object(node)


def _read_json(text: str, filename: str) -> tuple[list[_Document], list[Problem]]:
    """Fallback for JSON that YAML rejects (e.g. tab indentation): values without lines."""
    problems: list[Problem] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                problems.append(
                    Problem(f"duplicate key {key!r}", file=filename, code="duplicate-key")
                )
            out[key] = value
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        return [], [
            Problem(
                f"JSON syntax error: {exc.msg}",
                file=filename,
                line=exc.lineno,
                column=exc.colno,
                code="json-syntax",
            )
        ]
    except RecursionError:
        return [], [
            Problem(
                f"input nested too deeply (more than {MAX_DEPTH} levels)",
                file=filename,
                code="too-deep",
            )
        ]
    if _depth_exceeds(value):
        return [], [
            Problem(
                f"input nested too deeply (more than {MAX_DEPTH} levels)",
                file=filename,
                code="too-deep",
            )
        ]
    return [_Document(value, {}, 1)], problems


def _depth_exceeds(value: Any) -> bool:
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return False


# ============================================================================================
# Structuring: the cattrs converter and its hooks
# ============================================================================================

# attrs class -> {attribute name: key in the input}
_KEYS: dict[type, dict[str, str]] = {}
_KEY_OVERRIDES: Final = {"icmp": "icmp", "not_icmp": "notICMP", "pre_dnat": "preDNAT"}


def _problems_from(exc: BaseException, path: str) -> list[Problem]:
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
                out.extend(_problems_from(sub, path))
                continue
            key = keys.get(note.name, note.name)
            if isinstance(sub, KeyError):
                out.append(
                    Problem(
                        f"missing required field {key!r}",
                        path=_join(path, key),
                        hint=f"add {key}",
                        code="missing-field",
                    )
                )
            else:
                out.extend(_problems_from(sub, _join(path, key)))
        return out
    if isinstance(exc, IterableValidationError):
        out = []
        for sub in exc.exceptions:
            inote = next(
                (n for n in getattr(sub, "__notes__", ()) if isinstance(n, IterableValidationNote)),
                None,
            )
            sub_path = path if inote is None else _join(path, inote.index)
            out.extend(_problems_from(sub, sub_path))
        return out
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = sorted(_KEYS.get(exc.cl, {}).values())
        return [
            Problem(
                f"unknown field {key!r}",
                path=_join(path, key),
                hint=_suggest(key, valid),
                code="unknown-field",
            )
            for key in sorted(exc.extra_fields)
        ]
    if isinstance(exc, ExceptionGroup):
        return [p for sub in exc.exceptions for p in _problems_from(sub, path)]
    return [Problem(f"invalid value: {exc}", path=path, code="invalid")]


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        raise InvalidPolicy(problems)


def _structure_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise _wrong_type("a string", value, "quote the value")
    return value


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type("an integer", value)
    return value


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type("a number", value)
    return float(value)


def _structure_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type("true or false", value)
    return value


def _structure_selector(value: Any, _: Any) -> Selector:
    if not isinstance(value, str):
        raise _wrong_type("a selector string", value, 'e.g. app == "backend"')
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
    if repr(value) in message:
        return f"{what}: {message}"
    return f"{what} {value!r}: {message}"


def _structure_domain(value: Any, _: Any) -> DomainPattern:
    if not isinstance(value, str):
        raise _wrong_type("a domain name or pattern", value, "e.g. api.github.com or *.example.com")
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
        raise _wrong_type("a CIDR string", value, "e.g. 10.0.0.0/8 or 2001:db8::/32")
    try:
        # Calico accepts CIDRs with host bits set and bare addresses (as /32 or /128).
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise InvalidPolicy(
            Problem(
                f"invalid CIDR {value!r}",
                hint="write an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32",
                code="invalid-cidr",
            )
        ) from None


def _port_problem(message: str, hint: str) -> InvalidPolicy:
    return InvalidPolicy(Problem(message, hint=hint, code="invalid-port"))


_PORT_HINT = 'a port is 0-65535, a range "first:last" or a port name such as http'


def _structure_port(value: Any, _: Any) -> Port:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type("a port number, range or name", value, _PORT_HINT)
    if isinstance(value, int):
        if not 0 <= value <= 65535:
            raise _port_problem(f"port {value} out of range", "ports are 0-65535")
        return PortRange(value, value)
    match = _PORT_RANGE_RE.match(value.strip())
    if match:
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        for number in (first, last):
            if number > 65535:
                raise _port_problem(f"port {number} out of range in {value!r}", "ports are 0-65535")
        if first > last:
            raise _port_problem(
                f"port range {value!r} has its minimum above its maximum",
                f'write it as "{last}:{first}"',
            )
        return PortRange(first, last)
    if ":" in value or ("-" in value.strip("-") and value.replace("-", "").isdigit()):
        raise _port_problem(f"invalid port range {value!r}", _PORT_HINT)
    _check_port_name(value)
    return NamedPort(value)


def _check_port_name(value: str) -> None:
    if (
        len(value) > 15
        or not _PORT_NAME_RE.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        raise _port_problem(
            f"invalid port {value!r}",
            "a named port is 1-15 lowercase letters, digits and '-', with at least one letter; "
            + _PORT_HINT,
        )


def _structure_protocol(value: Any, _: Any) -> Protocol | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type("a protocol name or number", value, "e.g. TCP, UDP or 6")
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
    # Accepted in any case (Kubernetes manifests sometimes write tcp), stored canonically.
    number = PROTOCOL_NUMBERS.get(value.upper())
    if number is not None:
        return protocol_name(number)
    raise InvalidPolicy(
        Problem(
            f"unknown protocol {value!r}",
            hint=_suggest(value, PROTOCOL_NAMES) + ", or a number 1-255",
            code="invalid-protocol",
        )
    )


def _literal_hook(valid: tuple[str, ...], what: str) -> Callable[[Any, Any], str]:
    def hook(value: Any, _: Any) -> str:
        if not isinstance(value, str):
            raise _wrong_type(f"one of {', '.join(valid)}", value)
        if value not in valid:
            raise InvalidPolicy(
                Problem(f"invalid {what} {value!r}", hint=_suggest(value, valid), code="invalid")
            )
        return value

    return hook


def _structure_map(value: Any, _: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _wrong_type("a mapping of strings to strings", value)
    problems = [
        Problem(
            f"expected a string value, got {_describe(item)}",
            path=key,
            hint="quote the value",
            code="wrong-type",
        )
        for key, item in value.items()
        if not isinstance(item, str)
    ]
    _raise_if(problems)
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
                raise _wrong_type("a list", value)
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


# -------------------------------------------------------------- cross-field checks (post hooks)


def _check_icmp(icmp: ICMPFields) -> list[Problem]:
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


def _check_entity(entity: EntityRule) -> list[Problem]:
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


def _check_rule(rule: Rule) -> list[Problem]:
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
                if ports:
                    problems.append(
                        Problem(
                            "rules that specify ports must set protocol to TCP, UDP or SCTP",
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


def _check_policy_spec(spec: PolicySpec) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, kind in enumerate(spec.types):
        if kind in seen:
            problems.append(
                Problem(
                    f"type {kind!r} given more than once",
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
                f"invalid tier name {spec.tier!r}",
                path="tier",
                hint="tier names are lowercase letters, digits and '-' (no dots)",
                code="invalid-name",
            )
        )
    return problems


def _check_tier_spec(spec: TierSpec) -> list[Problem]:
    return []


# ------------------------------------------------------------------ Kubernetes wire classes


@attrs.frozen
class _K8sRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()


@attrs.frozen
class _K8sLabelSelector:
    match_labels: Mapping[str, str] = attrs.field(factory=dict)
    match_expressions: tuple[_K8sRequirement, ...] = ()


@attrs.frozen
class _K8sIPBlock:
    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()


@attrs.frozen
class _K8sPeer:
    pod_selector: _K8sLabelSelector | None = None
    namespace_selector: _K8sLabelSelector | None = None
    ip_block: _K8sIPBlock | None = None


_K8sPortValue: TypeAlias = int | str


@attrs.frozen
class _K8sPort:
    protocol: str = "TCP"
    port: _K8sPortValue | None = None
    end_port: int | None = None


@attrs.frozen
class _K8sIngressRule:
    from_: tuple[_K8sPeer, ...] = ()
    ports: tuple[_K8sPort, ...] = ()


@attrs.frozen
class _K8sEgressRule:
    to: tuple[_K8sPeer, ...] = ()
    ports: tuple[_K8sPort, ...] = ()


@attrs.frozen
class _K8sSpec:
    pod_selector: _K8sLabelSelector = attrs.field(factory=_K8sLabelSelector)
    policy_types: tuple[str, ...] | None = None
    ingress: tuple[_K8sIngressRule, ...] = ()
    egress: tuple[_K8sEgressRule, ...] = ()


def _check_label_key(key: str, path: str) -> list[Problem]:
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and bool(_QUALIFIED_NAME_RE.match(name))
    if prefix:
        ok = ok and len(prefix) <= 253 and bool(re.fullmatch(_SUBDOMAIN, prefix))
    if ok:
        return []
    return [
        Problem(
            f"invalid label key {key!r}",
            path=path,
            hint="a key is [prefix/]name: name up to 63 letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit; prefix a DNS subdomain",
            code="invalid-label",
        )
    ]


def _check_label_value(value: str, path: str) -> list[Problem]:
    if len(value) <= 63 and _LABEL_VALUE_RE.match(value):
        return []
    return [
        Problem(
            f"invalid label value {value!r}",
            path=path,
            hint="up to 63 letters, digits, '-', '_', '.', starting and ending with a letter "
            "or digit (or empty)",
            code="invalid-label",
        )
    ]


def _check_k8s_selector(sel: _K8sLabelSelector) -> list[Problem]:
    problems: list[Problem] = []
    for key, value in sel.match_labels.items():
        problems += _check_label_key(key, f"matchLabels.{key}")
        problems += _check_label_value(value, f"matchLabels.{key}")
    for i, req in enumerate(sel.match_expressions):
        path = f"matchExpressions[{i}]"
        problems += _check_label_key(req.key, f"{path}.key")
        if req.operator in ("In", "NotIn"):
            if not req.values:
                problems.append(
                    Problem(
                        f"operator {req.operator} needs values",
                        path=f"{path}.values",
                        hint="list at least one value",
                        code="invalid-selector",
                    )
                )
            for j, value in enumerate(req.values):
                problems += _check_label_value(value, f"{path}.values[{j}]")
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                problems.append(
                    Problem(
                        f"operator {req.operator} takes no values",
                        path=f"{path}.values",
                        hint="remove values",
                        code="invalid-selector",
                    )
                )
        else:
            problems.append(
                Problem(
                    f"invalid operator {req.operator!r}",
                    path=f"{path}.operator",
                    hint=_suggest(req.operator, ("In", "NotIn", "Exists", "DoesNotExist")),
                    code="invalid-selector",
                )
            )
    return problems


def _check_k8s_ip_block(block: _K8sIPBlock) -> list[Problem]:
    problems = []
    for i, net in enumerate(block.except_):
        if net.version != block.cidr.version or not (
            net.subnet_of(block.cidr) and net != block.cidr  # type: ignore[arg-type]
        ):
            problems.append(
                Problem(
                    f"except {net} is not a strict subset of cidr {block.cidr}",
                    path=f"except[{i}]",
                    hint="each except CIDR must lie strictly inside cidr",
                    code="invalid-cidr",
                )
            )
    return problems


def _check_k8s_peer(peer: _K8sPeer) -> list[Problem]:
    if peer.ip_block is not None and (
        peer.pod_selector is not None or peer.namespace_selector is not None
    ):
        return [
            Problem(
                "ipBlock cannot be combined with podSelector or namespaceSelector",
                path="ipBlock",
                hint="put the ipBlock in a peer of its own",
                code="invalid-peer",
            )
        ]
    if peer == _K8sPeer():
        return [
            Problem(
                "a peer must give podSelector, namespaceSelector or ipBlock",
                hint="add one, or remove the empty peer",
                code="invalid-peer",
            )
        ]
    return []


def _check_k8s_port(port: _K8sPort) -> list[Problem]:
    problems = []
    if port.protocol not in KUBERNETES_PROTOCOLS:
        problems.append(
            Problem(
                f"invalid protocol {port.protocol!r}",
                path="protocol",
                hint=_suggest(port.protocol, KUBERNETES_PROTOCOLS),
                code="invalid-protocol",
            )
        )
    if isinstance(port.port, int) and not 1 <= port.port <= 65535:
        problems.append(
            Problem(
                f"port {port.port} out of range",
                path="port",
                hint="Kubernetes ports are 1-65535",
                code="invalid-port",
            )
        )
    elif isinstance(port.port, str):
        try:
            _check_port_name(port.port)
        except InvalidPolicy as exc:
            problems += [p.located(path_prefix="port") for p in exc.problems]
    if port.end_port is not None:
        if not isinstance(port.port, int):
            problems.append(
                Problem(
                    "endPort needs a numeric port",
                    path="endPort",
                    hint="give port as a number, or remove endPort",
                    code="invalid-port",
                )
            )
        elif not port.port <= port.end_port <= 65535:
            problems.append(
                Problem(
                    f"endPort {port.end_port} must be between port {port.port} and 65535",
                    path="endPort",
                    hint="endPort is the last port of the range",
                    code="invalid-port",
                )
            )
    return problems


def _check_k8s_spec(spec: _K8sSpec) -> list[Problem]:
    problems = []
    for i, kind in enumerate(spec.policy_types or ()):
        if kind not in ("Ingress", "Egress"):
            problems.append(
                Problem(
                    f"invalid policy type {kind!r}",
                    path=f"policyTypes[{i}]",
                    hint=_suggest(kind, ("Ingress", "Egress")),
                    code="invalid",
                )
            )
    return problems


def _structure_k8s_port_value(value: Any, _: Any) -> _K8sPortValue | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type("a port number or name", value)
    return value


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
    conv.register_structure_hook_func(lambda t: t == Port, _structure_port)
    conv.register_structure_hook_func(
        lambda t: t in (Protocol, Protocol | None), _structure_protocol
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
            if not isinstance(value, dict):
                fields = ", ".join(sorted(keys.values()))
                raise _wrong_type("a mapping", value, f"fields: {fields}")
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
                _raise_if(post(obj))
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

    register(ICMPFields, _check_icmp)
    register(ServiceAccountMatch)
    register(EntityRule, _check_entity)
    register(RuleMetadata)
    register(Rule, _check_rule)
    register(ObjectMeta)
    register(
        PolicySpec,
        _check_policy_spec,
        {"ingress": _rules_hook(conv, "ingress"), "egress": _rules_hook(conv, "egress")},
    )
    register(NetworkSetSpec)
    register(TierSpec, _check_tier_spec)
    register(_K8sRequirement)
    register(_K8sLabelSelector, _check_k8s_selector)
    register(_K8sIPBlock, _check_k8s_ip_block)
    register(_K8sPeer, _check_k8s_peer)
    # int | str is the same union as Protocol's, so the port gets its hook by field name.
    register(_K8sPort, _check_k8s_port, {"port": _structure_k8s_port_value})
    register(_K8sIngressRule)
    register(_K8sEgressRule)
    register(_K8sSpec, _check_k8s_spec)
    return conv


_CONVERTER: Final = _make_converter()


# ============================================================================================
# Kubernetes NetworkPolicy -> Calico NetworkPolicy (as Calico's converter does it)
# ============================================================================================


def _k8s_selector_text(sel: _K8sLabelSelector | None, *, pod: bool) -> str:
    # Calico prefixes pod selectors with its orchestrator label, lists matchLabels in key
    # order, then matchExpressions in input order, all ANDed; a present-but-empty namespace
    # selector means all namespaces.
    terms = [_K8S_ORCHESTRATOR_TERM] if pod else []
    if sel is None:
        return " && ".join(terms)
    if not pod and not sel.match_labels and not sel.match_expressions:
        return "all()"
    terms += [f"{k} == '{sel.match_labels[k]}'" for k in sorted(sel.match_labels)]
    for req in sel.match_expressions:
        values = ", ".join(f"'{v}'" for v in req.values)
        terms.append(
            {
                "In": f"{req.key} in {{ {values} }}",
                "NotIn": f"{req.key} not in {{ {values} }}",
                "Exists": f"has({req.key})",
                "DoesNotExist": f"! has({req.key})",
            }[req.operator]
        )
    return " && ".join(terms)


def _simplify_ports(ports: list[Port]) -> list[Port]:
    # Calico merges numeric ports of one protocol into the fewest ranges (named ports first, in
    # input order, then ranges ascending); one port or fewer numeric ports stay as written.
    numeric = sorted(
        n for p in ports if isinstance(p, PortRange) for n in range(p.first, p.last + 1)
    )
    if len(ports) <= 1 or len(numeric) <= 1:
        return ports
    out: list[Port] = [p for p in ports if isinstance(p, NamedPort)]
    start = prev = numeric[0]
    for n in numeric[1:]:
        if n > prev + 1:
            out.append(PortRange(start, prev))
            start = n
        prev = n
    out.append(PortRange(start, prev))
    return out


def _k8s_rules(
    peers: tuple[_K8sPeer, ...], ports: tuple[_K8sPort, ...], *, ingress: bool
) -> list[Rule]:
    # protocol -> ports; None means "all ports" of that protocol; key None means no protocol.
    by_protocol: dict[str | None, list[Port] | None] = {}
    if not ports:
        by_protocol = {None: None}
    for kport in ports:
        if kport.port is None:
            by_protocol[kport.protocol] = None
            continue
        port: Port
        if isinstance(kport.port, str):
            port = NamedPort(kport.port)
        else:
            port = PortRange(kport.port, kport.end_port or kport.port)
        existing = by_protocol.get(kport.protocol, [])
        if existing is not None:  # "all ports" already given for this protocol wins
            by_protocol[kport.protocol] = [*existing, port]
    rules: list[Rule] = []
    for protocol in sorted(by_protocol, key=lambda p: p or ""):
        port_list = by_protocol[protocol]
        calico_ports = tuple(_simplify_ports(port_list)) if port_list else ()
        for peer in peers or (None,):
            entity = EntityRule()
            if peer is not None and peer.ip_block is not None:
                entity = EntityRule(nets=(peer.ip_block.cidr,), not_nets=peer.ip_block.except_)
            elif peer is not None:
                ns = _k8s_selector_text(peer.namespace_selector, pod=False)
                entity = EntityRule(
                    selector=parse_selector(_k8s_selector_text(peer.pod_selector, pod=True)),
                    namespace_selector=parse_selector(ns) if ns else None,
                )
            if ingress:
                source, destination = entity, EntityRule(ports=calico_ports)
            else:
                source, destination = EntityRule(), attrs.evolve(entity, ports=calico_ports)
            rules.append(
                Rule(action="Allow", protocol=protocol, source=source, destination=destination)
            )
    return rules


def convert_k8s_policy(
    name: str, namespace: str, spec: _K8sSpec, meta: ObjectMeta
) -> tuple[ObjectMeta, PolicySpec]:
    """Convert a validated Kubernetes NetworkPolicy to Calico's model, as Calico does.

    Name ``knp.default.<name>``, tier ``default``, order 1000; the pod selector gains
    ``projectcalico.org/orchestrator == 'k8s'``; each rule becomes one Calico rule per
    protocol and peer (ports grouped by protocol, default TCP, ``endPort`` as a range);
    ``ipBlock`` becomes ``nets`` and ``except`` ``notNets``. When ``policyTypes`` is omitted
    we first apply the API server's default (Ingress, plus Egress when there are egress
    rules), since a policy read from a file has not been through the API server.

    Args:
        name: The Kubernetes name.
        namespace: Its namespace.
        spec: The validated Kubernetes spec.
        meta: Its metadata (labels and annotations are kept).

    Returns:
        The Calico metadata and spec.
    """
    types = spec.policy_types
    if types is None:
        types = ("Ingress", "Egress") if spec.egress else ("Ingress",)
    calico_types: tuple[PolicyType, ...] = tuple(
        t for t in cast(tuple[PolicyType, ...], ("Ingress", "Egress")) if t in types
    ) or ("Ingress",)
    ingress = [r for rule in spec.ingress for r in _k8s_rules(rule.from_, rule.ports, ingress=True)]
    egress = [r for rule in spec.egress for r in _k8s_rules(rule.to, rule.ports, ingress=False)]
    calico_meta = attrs.evolve(meta, name=_K8S_NAME_PREFIX + name, namespace=namespace)
    calico_spec = PolicySpec(
        order=_K8S_ORDER,
        tier=DEFAULT_TIER,
        selector=parse_selector(_k8s_selector_text(spec.pod_selector, pod=True)),
        types=calico_types,
        ingress=tuple(ingress),
        egress=tuple(egress),
    )
    return calico_meta, calico_spec


# ============================================================================================
# Documents -> resources
# ============================================================================================


@attrs.define
class _Context:
    """State of one load: resources and problems so far, names seen for duplicates."""

    policies: list[Policy] = attrs.Factory(list)
    network_sets: list[NetworkSet] = attrs.Factory(list)
    tiers: list[Tier] = attrs.Factory(list)
    problems: list[Problem] = attrs.Factory(list)
    seen: dict[tuple[str, ...], str] = attrs.Factory(dict)


@attrs.frozen
class _Where:
    """Locates problems of one resource: its file, its lines, its path prefix in the doc."""

    file: str
    lines: dict[str, int]
    prefix: str
    line: int | None

    def line_of(self, path: str) -> int | None:
        full = _join(self.prefix, path) if path and not path.startswith("[") else self.prefix + path
        while True:
            if full in self.lines:
                return self.lines[full]
            if not full:
                return self.line
            cut = max(full.rfind("."), full.rfind("["))
            full = full[: max(cut, 0)]

    def locate(self, problems: list[Problem], resource: str) -> list[Problem]:
        return [
            attrs.evolve(
                p,
                file=self.file,
                line=self.line_of(p.path),
                resource=p.resource or resource,
            )
            for p in problems
        ]


def _structure(value: Any, cl: type, path: str) -> tuple[Any, list[Problem]]:
    try:
        return _CONVERTER.structure(value, cl), []
    except Exception as exc:
        return None, _problems_from(exc, path)


def _process(value: Any, where: _Where, ctx: _Context, inherited: tuple[str, str] | None) -> None:
    if value is None:
        return  # an empty document, as kubectl allows
    if not isinstance(value, dict):
        ctx.problems += where.locate(
            [
                Problem(
                    f"a resource must be a mapping, got {_describe(value)}",
                    hint="give apiVersion, kind, metadata and spec",
                    code="wrong-type",
                )
            ],
            "",
        )
        return
    api = value.get("apiVersion", inherited[0] if inherited else None)
    kind = value.get("kind", inherited[1] if inherited else None)
    problems: list[Problem] = []
    if not isinstance(kind, str):
        problems.append(
            Problem(
                "missing kind" if kind is None else f"kind must be a string, got {_describe(kind)}",
                path="kind",
                hint="e.g. kind: NetworkPolicy",
                code="unknown-kind",
            )
        )
    if not isinstance(api, str):
        problems.append(
            Problem(
                "missing apiVersion"
                if api is None
                else f"apiVersion must be a string, got {_describe(api)}",
                path="apiVersion",
                hint=f"e.g. apiVersion: {CALICO_API_VERSION}",
                code="unknown-api-version",
            )
        )
    if problems:
        ctx.problems += where.locate(problems, "")
        return
    kind, api = str(kind), str(api)  # both checked above; narrows the types
    if kind == "List" or (kind.endswith("List") and "items" in value):
        _process_list(value, api, kind, where, ctx)
        return
    if api not in _KINDS:
        ctx.problems += where.locate(
            [
                Problem(
                    f"unknown apiVersion {api!r}",
                    path="apiVersion",
                    hint=_suggest(api, tuple(_KINDS)),
                    code="unknown-api-version",
                )
            ],
            "",
        )
        return
    if kind not in _KINDS[api]:
        every = sorted({k for kinds in _KINDS.values() for k in kinds})
        ctx.problems += where.locate(
            [
                Problem(
                    f"unknown kind {kind!r} for apiVersion {api}",
                    path="kind",
                    hint=_suggest(kind, _KINDS[api])
                    if kind not in every
                    else f"{kind} belongs to apiVersion "
                    + next(a for a, ks in _KINDS.items() if kind in ks),
                    code="unknown-kind",
                )
            ],
            "",
        )
        return
    _process_resource(value, api, kind, where, ctx)


def _process_list(value: dict[str, Any], api: str, kind: str, where: _Where, ctx: _Context) -> None:
    extra = sorted(set(value) - {"apiVersion", "kind", "items", "metadata"})
    problems = [
        Problem(
            f"unknown field {key!r}",
            path=key,
            hint=_suggest(key, ("apiVersion", "kind", "items", "metadata")),
            code="unknown-field",
        )
        for key in extra
    ]
    items = value.get("items")
    if items is not None and not isinstance(items, list):
        problems.append(
            Problem(
                f"items must be a list, got {_describe(items)}", path="items", code="wrong-type"
            )
        )
        items = None
    ctx.problems += where.locate(problems, "")
    # Items of a typed list (NetworkPolicyList) may leave out their apiVersion and kind.
    inherited = None if kind == "List" else (api, kind[: -len("List")])
    for i, item in enumerate(items or ()):
        item_where = _Where(
            where.file,
            where.lines,
            _join(where.prefix, "items") + f"[{i}]",
            where.line_of(f"items[{i}]"),
        )
        _process(item, item_where, ctx, inherited)


def _process_resource(
    value: dict[str, Any], api: str, kind: str, where: _Where, ctx: _Context
) -> None:
    problems: list[Problem] = []
    for key in sorted(set(value) - {"apiVersion", "kind", "metadata", "spec"}):
        problems.append(
            Problem(
                f"unknown field {key!r}",
                path=key,
                hint=_suggest(key, ("apiVersion", "kind", "metadata", "spec")),
                code="unknown-field",
            )
        )
    k8s = api == K8S_API_VERSION
    namespaced = kind in ("NetworkPolicy", "NetworkSet")
    raw_meta = value.get("metadata")
    if isinstance(raw_meta, dict):
        raw_meta = {k: v for k, v in raw_meta.items() if k not in _SERVER_METADATA}
    meta: ObjectMeta | None
    if raw_meta is None:
        meta = None
        problems.append(
            Problem(
                "missing metadata", path="metadata", hint="add metadata.name", code="missing-field"
            )
        )
    else:
        meta, meta_problems = _structure(raw_meta, ObjectMeta, "metadata")
        problems += meta_problems
    resource = kind
    if meta is not None:
        resource = (
            f"{kind} {meta.name}"
            if meta.namespace is None
            else f"{kind} {meta.namespace}/{meta.name}"
        )
        problems += _check_meta(meta, kind, namespaced, k8s)

    raw_spec = value.get("spec")
    if raw_spec is None:
        raw_spec = {}
    source = SourceLocation(where.file, where.line_of(""))
    result: Resource | None = None
    if k8s:
        spec, spec_problems = _structure(raw_spec, _K8sSpec, "spec")
        problems += spec_problems
        if meta is not None and spec is not None and not problems:
            assert meta.namespace is not None
            calico_meta, calico_spec = convert_k8s_policy(meta.name, meta.namespace, spec, meta)
            result = Policy("NetworkPolicy", calico_meta, calico_spec, source, K8S_API_VERSION)
    elif kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
        if kind == "NetworkPolicy" and isinstance(raw_spec, dict):
            for key in _GLOBAL_ONLY_SPEC:
                if key in raw_spec:
                    problems.append(
                        Problem(
                            f"{key} is only valid in a GlobalNetworkPolicy",
                            path=f"spec.{key}",
                            hint="remove it, or make this a GlobalNetworkPolicy",
                            code="global-only-field",
                        )
                    )
            raw_spec = {k: v for k, v in raw_spec.items() if k not in _GLOBAL_ONLY_SPEC}
        pspec, spec_problems = _structure(raw_spec, PolicySpec, "spec")
        problems += spec_problems
        if pspec is not None:
            if not pspec.types:
                # Calico's inference when types is omitted.
                inferred: tuple[PolicyType, ...] = (
                    ("Ingress", "Egress")
                    if pspec.egress and pspec.ingress
                    else ("Egress",)
                    if pspec.egress
                    else ("Ingress",)
                )
                pspec = attrs.evolve(pspec, types=inferred)
            if meta is not None:
                problems += _check_tier_prefix(meta.name, pspec.tier, kind)
                result = Policy(cast(Any, kind), meta, pspec, source)
    elif kind in ("NetworkSet", "GlobalNetworkSet"):
        nspec, spec_problems = _structure(raw_spec, NetworkSetSpec, "spec")
        problems += spec_problems
        if meta is not None and nspec is not None:
            result = NetworkSet(cast(Any, kind), meta, nspec, source)
    else:
        tspec, spec_problems = _structure(raw_spec, TierSpec, "spec")
        problems += spec_problems
        if meta is not None and tspec is not None:
            if meta.name == DEFAULT_TIER and tspec.order not in (None, DEFAULT_TIER_ORDER):
                problems.append(
                    Problem(
                        f"the default tier's order must be {int(DEFAULT_TIER_ORDER)}",
                        path="spec.order",
                        hint=f"remove order or set it to {int(DEFAULT_TIER_ORDER)}",
                        code="invalid-tier",
                    )
                )
            result = Tier(meta, tspec, source)

    if meta is not None:
        tier = DEFAULT_TIER
        if isinstance(raw_spec, dict) and isinstance(raw_spec.get("tier"), str):
            tier = raw_spec["tier"]
        known_as = attrs.evolve(meta, name=_K8S_NAME_PREFIX + meta.name) if k8s else meta
        dup = _duplicate(kind, known_as, tier, source, ctx)
        if dup is not None:
            problems.append(dup)
    ctx.problems += where.locate(problems, resource)
    if problems or result is None:
        return
    if isinstance(result, Policy):
        ctx.policies.append(result)
    elif isinstance(result, NetworkSet):
        ctx.network_sets.append(result)
    else:
        ctx.tiers.append(result)


def _check_meta(meta: ObjectMeta, kind: str, namespaced: bool, k8s: bool) -> list[Problem]:
    problems: list[Problem] = []
    regex = _NAME_RES["k8s" if k8s else kind]
    if len(meta.name) > (63 if kind == "Tier" else 253) or not regex.match(meta.name):
        hint = (
            "lowercase letters, digits and '-'"
            + {
                "Tier": " (no dots)",
                "NetworkPolicy": "; at most one '.', after a tier name prefix",
                "GlobalNetworkPolicy": "; at most one '.', after a tier name prefix",
            }.get("k8s" if k8s else kind, " and '.'")
            + ", starting and ending with a letter or digit"
        )
        problems.append(
            Problem(
                f"invalid name {meta.name!r}", path="metadata.name", hint=hint, code="invalid-name"
            )
        )
    if namespaced and meta.namespace is None:
        problems.append(
            Problem(
                f"missing namespace: a {kind} is namespaced",
                path="metadata.namespace",
                hint="add metadata.namespace (calicoctl would assume 'default'; we do not guess)",
                code="missing-namespace",
            )
        )
    elif not namespaced and meta.namespace is not None:
        problems.append(
            Problem(
                f"a {kind} is not namespaced",
                path="metadata.namespace",
                hint="remove metadata.namespace",
                code="unexpected-namespace",
            )
        )
    elif meta.namespace is not None and not _NAMESPACE_RE.match(meta.namespace):
        problems.append(
            Problem(
                f"invalid namespace {meta.namespace!r}",
                path="metadata.namespace",
                hint="lowercase letters, digits and '-', starting and ending with a letter/digit",
                code="invalid-name",
            )
        )
    for key, value in meta.labels.items():
        problems += _check_label_key(key, f"metadata.labels.{key}")
        problems += _check_label_value(value, f"metadata.labels.{key}")
    for key in meta.annotations:
        problems += _check_label_key(key.lower(), f"metadata.annotations.{key}")
    return problems


def _check_tier_prefix(name: str, tier: str, kind: str) -> list[Problem]:
    if name.startswith(_K8S_NAME_PREFIX) or "." not in name:
        return []
    prefix = name.split(".", 1)[0]
    if prefix == tier:
        return []
    return [
        Problem(
            f"{kind} name {name!r} is prefixed with tier {prefix!r} but the policy is in tier "
            f"{tier!r}",
            path="metadata.name",
            hint=f"set spec.tier: {prefix}, or rename it to {tier}.{name.split('.', 1)[1]} "
            "(or drop the prefix)",
            code="tier-prefix",
        )
    ]


def _duplicate(
    kind: str, meta: ObjectMeta, tier: str, source: SourceLocation, ctx: _Context
) -> Problem | None:
    ns = meta.namespace or ""
    keys = [(kind, ns, "name", meta.name)]
    if kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
        # `t.x` in tier t and `x` in tier t are one policy (legacy and current naming).
        bare = meta.name[len(tier) + 1 :] if meta.name.startswith(tier + ".") else meta.name
        keys.append((kind, ns, "tier-bare", f"{tier}/{bare}"))
    for key in keys:
        if key in ctx.seen:
            scope = f" in namespace {meta.namespace}" if meta.namespace else ""
            return Problem(
                f"duplicate {kind} name {meta.name!r}{scope}",
                path="metadata.name",
                hint=f"first defined at {ctx.seen[key]}; rename one of them",
                code="duplicate-name",
            )
    for key in keys:
        ctx.seen[key] = str(source)
    return None


# ============================================================================================
# Public API
# ============================================================================================


def _load_text(text: str, filename: str, ctx: _Context, *, json_fallback: bool) -> None:
    if len(text) > MAX_INPUT_BYTES:
        ctx.problems.append(
            Problem(
                f"input too large: {len(text)} characters (the limit is {MAX_INPUT_BYTES})",
                file=filename,
                hint="split it into several files",
                code="too-large",
            )
        )
        return
    docs, problems = _read_yaml(text, filename)
    if problems and json_fallback and any(p.code == "yaml-syntax" for p in problems):
        json_docs, json_problems = _read_json(text, filename)
        # Not JSON either: the YAML problems say more. Otherwise JSON's answer stands.
        if json_docs or any(p.code != "json-syntax" for p in json_problems):
            docs, problems = json_docs, json_problems
    ctx.problems += problems
    for doc in docs:
        _process(doc.value, _Where(filename, doc.lines, "", doc.line), ctx, None)


def _finish(ctx: _Context) -> ResourceSet:
    if ctx.problems:
        raise InvalidPolicy(sorted(ctx.problems, key=lambda p: (p.file or "", p.line or 0)))
    return ResourceSet(tuple(ctx.policies), tuple(ctx.network_sets), tuple(ctx.tiers))


def loads(text: str, *, filename: str = "<string>") -> ResourceSet:
    """Load resources from a YAML or JSON string.

    Args:
        text: One or more YAML documents (JSON is YAML too).
        filename: Name used in problem locations and :class:`~fqdnpolicy.model.SourceLocation`.

    Returns:
        Every resource in the text.

    Raises:
        InvalidPolicy: With every problem found, each located by file, line and field path.
    """
    ctx = _Context()
    if not isinstance(text, str):
        raise InvalidPolicy(Problem(f"expected text, got {type(text).__name__}", file=filename))
    _load_text(text, filename, ctx, json_fallback=True)
    return _finish(ctx)


def _files(path: Path, ctx: _Context) -> Iterator[Path]:
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file()]
        yield from sorted(found)
    elif path.is_file():
        yield path
    else:
        ctx.problems.append(
            Problem(
                f"no such file or directory: {path}",
                file=str(path),
                hint="check the path",
                code="no-such-file",
            )
        )


def load(*paths: str | os.PathLike[str]) -> ResourceSet:
    """Load resources from files and directories.

    Directories are searched recursively for ``*.yaml``, ``*.yml`` and ``*.json`` files, read
    in sorted order.

    Args:
        *paths: Files and directories.

    Returns:
        Every resource found, in order (files in the order given, directory entries sorted).

    Raises:
        InvalidPolicy: With every problem found in every file; nothing is returned then.
    """
    ctx = _Context()
    for raw in paths:
        for file in _files(Path(raw), ctx):
            name = str(file)
            try:
                if file.stat().st_size > MAX_INPUT_BYTES:
                    ctx.problems.append(
                        Problem(
                            f"file too large: {file.stat().st_size} bytes "
                            f"(the limit is {MAX_INPUT_BYTES})",
                            file=name,
                            hint="split it into several files",
                            code="too-large",
                        )
                    )
                    continue
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                ctx.problems.append(
                    Problem(
                        f"not UTF-8 text: {exc.reason} at byte {exc.start}",
                        file=name,
                        hint="save the file as UTF-8",
                        code="encoding",
                    )
                )
                continue
            except OSError as exc:
                ctx.problems.append(
                    Problem(f"cannot read file: {exc.strerror}", file=name, code="io")
                )
                continue
            _load_text(text, name, ctx, json_fallback=file.suffix.lower() == ".json")
    return _finish(ctx)


def _resource_dict(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": CALICO_API_VERSION,
        "kind": resource.kind,
        "metadata": _CONVERTER.unstructure(resource.metadata, ObjectMeta),
    }
    spec = _CONVERTER.unstructure(resource.spec, type(resource.spec))
    if spec:
        out["spec"] = spec
    return out


def dump(resources: ResourceSet, *, format: str = "yaml") -> str:
    """Write resources in canonical form.

    Canonical: tiers, then network sets, then policies, each in set order; keys in a fixed
    order; selectors, domains and CIDRs in canonical text; fields at their default omitted;
    policy ``types`` always explicit. Converted Kubernetes policies are written as the Calico
    policies they became. ``loads(dump(rs)) == rs`` and ``dump(loads(dump(rs))) == dump(rs)``.

    Args:
        resources: What to write.
        format: ``"yaml"`` (multi-document) or ``"json"`` (a ``kind: List``).

    Returns:
        The text.

    Raises:
        ValueError: ``format`` is neither ``yaml`` nor ``json``.
    """
    docs = [_resource_dict(r) for r in resources]
    if format == "yaml":
        dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump_all(
            docs,
            Dumper=dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=4096,  # keep selectors on one line
        )
    if format == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2) + "\n"
    raise ValueError(f"unknown format {format!r}: use 'yaml' or 'json'")
