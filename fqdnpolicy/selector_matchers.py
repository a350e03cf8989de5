"""A selector's syntax tree compiled to nested closures, evaluated without dispatch.

:func:`_compile` turns a tree of :mod:`fqdnpolicy.selector_syntax` into a
:data:`Matcher`: one call per node when a label set is matched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

from fqdnpolicy.selector_syntax import All, And, Compare, Global, Has, InSet, Node, Not, Or

Matcher: TypeAlias = Callable[[Mapping[str, str]], bool]


def _always(labels: Mapping[str, str]) -> bool:
    return True


def _compile(node: Node) -> Matcher:
    """Turn a tree into nested closures: one call per node, no dispatch at match time."""
    match node:
        case All() | Global():
            return _always
        case Has(key):
            return lambda labels: key in labels
        case Compare(key, "==", value):
            return lambda labels: labels.get(key) == value
        case Compare(key, "!=", value):
            # An absent label gives None, which differs from every string: true, as in Calico.
            return lambda labels: labels.get(key) != value
        case Compare(key, "contains", value):

            def contains(labels: Mapping[str, str]) -> bool:
                got = labels.get(key)
                return got is not None and value in got

            return contains
        case Compare(key, "starts with", value):

            def starts_with(labels: Mapping[str, str]) -> bool:
                got = labels.get(key)
                return got is not None and got.startswith(value)

            return starts_with
        case Compare(key, "ends with", value):

            def ends_with(labels: Mapping[str, str]) -> bool:
                got = labels.get(key)
                return got is not None and got.endswith(value)

            return ends_with
        case InSet(key, values, negated):
            if len(values) == 1:
                # One-value sets are common (`app in {"web"}`); a string compare beats hashing.
                (only,) = values
                if negated:
                    return lambda labels: labels.get(key) != only
                return lambda labels: labels.get(key) == only
            members = frozenset(values)
            if negated:
                return lambda labels: labels.get(key) not in members
            return lambda labels: labels.get(key) in members
        case Not(operand):
            inner = _compile(operand)
            return lambda labels: not inner(labels)
        case And(operands):
            return _compile_and([_compile(op) for op in operands])
        case Or(operands):
            return _compile_or([_compile(op) for op in operands])
    raise AssertionError(f"unknown selector node {node!r}")  # pragma: no cover


def _compile_and(parts: list[Matcher]) -> Matcher:
    # Unrolled for the common small arities: a generator over a tuple costs more.
    if len(parts) == 2:
        a, b = parts
        return lambda labels: a(labels) and b(labels)
    if len(parts) == 3:
        a, b, c = parts
        return lambda labels: a(labels) and b(labels) and c(labels)
    frozen = tuple(parts)

    def conjunction(labels: Mapping[str, str]) -> bool:
        for part in frozen:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
            if not part(labels):
                return False
        return True

    return conjunction


def _compile_or(parts: list[Matcher]) -> Matcher:
    if len(parts) == 2:
        a, b = parts
        return lambda labels: a(labels) or b(labels)
    if len(parts) == 3:
        a, b, c = parts
        return lambda labels: a(labels) or b(labels) or c(labels)
    frozen = tuple(parts)

    def disjunction(labels: Mapping[str, str]) -> bool:
        for part in frozen:  # noqa: SIM110 - a plain loop is faster than any(genexpr)
            if part(labels):
                return True
        return False

    return disjunction
