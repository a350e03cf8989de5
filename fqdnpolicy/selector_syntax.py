"""The syntax tree of a Calico selector, its canonical text, and rewriting it.

The nodes (:class:`All`, :class:`Has`, :class:`Compare`, ...) are what
:mod:`fqdnpolicy.selector_parser` builds and :class:`fqdnpolicy.selector.Selector` holds;
``_render`` prints the canonical form described in :mod:`fqdnpolicy.selector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias

import attrs

__all__ = [
    "All",
    "And",
    "Compare",
    "CompareOp",
    "Global",
    "Has",
    "InSet",
    "Node",
    "Not",
    "Or",
]


CompareOp: TypeAlias = Literal["==", "!=", "contains", "starts with", "ends with"]


@attrs.frozen
class All:
    """``all()``: matches every label set."""


@attrs.frozen
class Global:
    """``global()``: matches every label set (see the module docstring for its scoping role)."""


@attrs.frozen
class Has:
    """``has(key)``: the label is present, whatever its value."""

    key: str


@attrs.frozen
class Compare:
    """``key <op> "value"`` for ``==``, ``!=``, ``contains``, ``starts with``, ``ends with``."""

    key: str
    op: CompareOp
    value: str


@attrs.frozen
class InSet:
    """``key in {...}`` (``negated=False``) or ``key not in {...}`` (``negated=True``).

    ``values`` is sorted and free of duplicates (the canonical order).
    """

    key: str
    values: tuple[str, ...]
    negated: bool = False


@attrs.frozen
class Not:
    """``!operand``; never wraps another :class:`Not` (double negations are removed)."""

    operand: Node


@attrs.frozen
class And:
    """Conjunction of two or more operands, none of them an :class:`And`."""

    operands: tuple[Node, ...]


@attrs.frozen
class Or:
    """Disjunction of two or more operands, none of them an :class:`Or`."""

    operands: tuple[Node, ...]


Node: TypeAlias = All | Global | Has | Compare | InSet | Not | And | Or
"""A node of a parsed selector's syntax tree."""


def _negate(node: Node) -> Node:
    return node.operand if isinstance(node, Not) else Not(node)


def _conjoin(nodes: Iterable[Node]) -> Node:
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.operands if isinstance(node, And) else (node,))
    if not flat:
        return All()  # the empty conjunction
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _disjoin(nodes: Iterable[Node]) -> Node:
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.operands if isinstance(node, Or) else (node,))
    if not flat:
        return Not(All())  # the empty disjunction matches nothing
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _quote(value: str) -> str:
    # A parsed string cannot hold both quote characters; builders reject such values.
    return f"'{value}'" if '"' in value else f'"{value}"'


def _render(node: Node) -> str:
    match node:
        case All():
            return "all()"
        case Global():
            return "global()"
        case Has(key):
            return f"has({key})"
        case Compare(key, op, value):
            return f"{key} {op} {_quote(value)}"
        case InSet(key, values, negated):
            word = "not in" if negated else "in"
            return f"{key} {word} {{{', '.join(_quote(v) for v in values)}}}"
        case Not(operand):
            inner = _render(operand)
            return f"!({inner})" if isinstance(operand, And | Or) else f"!{inner}"
        case And(operands):
            return " && ".join(
                f"({_render(op)})" if isinstance(op, Or) else _render(op) for op in operands
            )
        case Or(operands):
            return " || ".join(_render(op) for op in operands)


def _keys(node: Node, out: set[str]) -> None:
    match node:
        case Has(key) | Compare(key) | InSet(key):
            out.add(key)
        case Not(operand):
            _keys(operand, out)
        case And(operands) | Or(operands):
            for op in operands:
                _keys(op, out)
        case _:
            pass


def _map_tree(node: Node, fn: Callable[[Node], Node | None]) -> Node:
    """Rebuild ``node`` bottom-up, replacing each node for which ``fn`` returns a new one."""
    replaced = fn(node)
    if replaced is not None:
        return replaced
    match node:
        case Not(operand):
            return _negate(_map_tree(operand, fn))
        case And(operands):
            return _conjoin(_map_tree(op, fn) for op in operands)
        case Or(operands):
            return _disjoin(_map_tree(op, fn) for op in operands)
    return node
