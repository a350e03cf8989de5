"""Bounded YAML and JSON readers: plain values plus a map from field path to source line.

YAML is read event by event (the safe loader, libyaml when present), building plain values and
a map from field path (``spec.egress[0].destination.ports[1]``) to source line in one iterative
pass. No tag outside YAML's core schema is constructed, so no YAML can run code; duplicate
keys, which PyYAML silently overwrites, are errors.

Bounds (input beyond them is rejected with a problem, never a hang or a crash): a file holds at
most :data:`MAX_INPUT_BYTES`; YAML nests at most :data:`MAX_DEPTH` levels; a file yields at most
:data:`MAX_NODES` values, counting every expansion of a YAML alias (so "billion laughs" alias
bombs stop early).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Final, cast

import attrs
import yaml

from fqdnpolicy.errors import Problem
from fqdnpolicy.loading.problems import describe, join_path, shown

MAX_INPUT_BYTES: Final = 16 * 1024 * 1024
"""Largest file (or string) accepted: 16 MiB, ~10,000 typical policies."""

MAX_DEPTH: Final = 64
"""Deepest YAML nesting accepted; real resources nest about 10 levels."""

MAX_NODES: Final = 2_000_000
"""Most values one file may yield, alias expansions included."""

MAX_EXPANDED_CHARS: Final = MAX_INPUT_BYTES
"""Most characters of keys and scalar values one file may yield, alias expansions included:
aliases may not make a file larger than the largest file accepted."""


class _Abort(Exception):
    """Stops reading a file; carries the problem that made it stop."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@attrs.define
class Document:
    """One YAML document: its value, field path -> line, and its first line."""

    value: Any
    lines: dict[str, int]
    line: int | None


@attrs.define
class _Frame:
    container: dict[str, Any] | list[Any]
    path: str
    anchor: str | None
    start_count: int
    start_chars: int
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


def read_yaml(text: str, filename: str) -> tuple[list[Document], list[Problem]]:
    """Parse a YAML stream iteratively; return its documents and the problems found."""
    problems: list[Problem] = []
    docs: list[Document] = []
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
    loader: Any, filename: str, docs: list[Document], problems: list[Problem]
) -> None:
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (value, values, characters)
    lines: dict[str, int] = {}
    doc_line: int | None = None
    root: Any = None
    count = 0
    chars = 0

    def problem(message: str, line: int, hint: str = "", code: str = "yaml") -> Problem:
        return Problem(message, file=filename, line=line, hint=hint, code=code)

    def child_path(line: int) -> tuple[str, bool]:
        """Where a value that starts now goes: (its path, whether to drop it)."""
        if not stack:
            return "", False
        top = stack[-1]
        if isinstance(top.container, list):
            path = join_path(top.path, len(top.container))
            lines[path] = line
            return path, top.discard
        if top.key is _NO_KEY:
            return top.path, True  # a value in key position; reported by emit()
        if top.key is _DISCARD:
            return top.path, True
        return join_path(top.path, top.key), top.discard

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
                        f"mapping keys must be strings, got {describe(value)}",
                        line,
                        hint="quote the key",
                        code="wrong-type",
                    )
                )
                top.key = _DISCARD
                return
            key_path = join_path(top.path, value)
            if value in top.container:
                problems.append(
                    problem(
                        f"duplicate key {shown(value)}",
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
            chars += len(event.value)
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1, len(event.value))
            emit(value, line, True)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            is_map = isinstance(event, yaml.MappingStartEvent)
            if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
                raise _Abort(
                    problem(
                        f"unsupported YAML tag {shown(str(event.tag))}",
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
            stack.append(_Frame(container, path, event.anchor, count, chars, _NO_KEY, discard))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame = stack.pop()
            if frame.anchor is not None:
                anchors[frame.anchor] = (
                    frame.container,
                    count - frame.start_count + 1,
                    chars - frame.start_chars,
                )
            emit(frame.container, line, False)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise _Abort(
                    problem(f"undefined YAML alias *{event.anchor}", line, code="yaml-alias")
                )
            value, size, length = anchors[event.anchor]
            count += size
            chars += length
            # Aliases share one Python object, but every consumer of the values (checks,
            # messages, dump) walks each occurrence, so they are bounded as if written out.
            if chars > MAX_EXPANDED_CHARS:
                raise _Abort(
                    problem(
                        f"input too large: YAML aliases expand to more than "
                        f"{MAX_EXPANDED_CHARS} characters",
                        line,
                        hint="write the values out, or remove aliases of large values",
                        code="too-large",
                    )
                )
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
            docs.append(Document(root, lines, doc_line))


# YAML 1.1 needs a '.' in a float ("1.0e5"); YAML 1.2, JSON and the YAML reader Kubernetes
# uses also take "1e5" and "-5e-324" (JSON files are read as YAML, and json.dumps writes that).
_FLOAT_12: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+\Z")


def add_yaml12_floats(cls: Any) -> None:
    """Teach a PyYAML resolver class (a loader's or a dumper's) the floats this reader takes.

    The dumper must resolve plain scalars exactly as this reader does, or it writes a string
    such as ``1e5`` unquoted and the string comes back as a number.
    """
    cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


class _Resolver(yaml.resolver.Resolver):
    pass


add_yaml12_floats(_Resolver)
_RESOLVER: Final = _Resolver()


@functools.lru_cache(maxsize=8192)
def _implicit_tag(value: str, implicit: tuple[bool, bool]) -> str:
    # Policies repeat the same scalars (Allow, TCP, 443, ...): each is resolved once.
    return cast(str, _RESOLVER.resolve(yaml.ScalarNode, value, implicit))  # type: ignore[no-untyped-call]


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
                f"unsupported YAML tag {shown(tag)}",
                file=filename,
                line=line,
                hint="only plain strings, numbers, booleans and null are accepted",
                code="yaml-tag",
            )
        )
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return loader.construct_object(node)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError, OverflowError) as exc:
        # A scalar that looks like (or is tagged as) a number, boolean or date but is none:
        # 2001-02-30, 0x_, !!bool maybe, or digits beyond Python's conversion limit.
        kind = tag.rsplit(":", 1)[-1]
        reason = f": {exc}" if isinstance(exc, ValueError) else ""
        raise _Abort(
            Problem(
                f"cannot read {shown(event.value)} as a YAML {kind}{reason}",
                file=filename,
                line=line,
                hint="quote the value if it is text, or correct it",
                code="yaml-value",
            )
        ) from None


def read_json(text: str, filename: str) -> tuple[list[Document], list[Problem]]:
    """Fallback for JSON that YAML rejects (e.g. tab indentation): values without lines."""
    problems: list[Problem] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                problems.append(
                    Problem(f"duplicate key {shown(key)}", file=filename, code="duplicate-key")
                )
            out[key] = value
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:  # a ValueError too, so it must come first
        return [], [
            Problem(
                f"JSON syntax error: {exc.msg}",
                file=filename,
                line=exc.lineno,
                column=exc.colno,
                code="json-syntax",
            )
        ]
    except ValueError as exc:  # a number beyond Python's digit limit for int()
        return [], [Problem(f"invalid JSON value: {exc}", file=filename, code="json-value")]
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
    return [Document(value, {}, 1)], problems


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
