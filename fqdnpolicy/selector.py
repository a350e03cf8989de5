"""Calico's label-selector language: parse once, evaluate many times, print canonically.

Grammar (Calico ``projectcalico.org/v3``)::

    selector  := or_expr | ""                       (empty means all())
    or_expr   := and_expr ("||" and_expr)*
    and_expr  := unary ("&&" unary)*
    unary     := "!"* primary
    primary   := "(" or_expr ")" | "all()" | "global()" | "has(" label ")"
               | label ("==" | "!=" | "contains" | "starts with" | "ends with") string
               | label ("in" | "not in") "{" [string ("," string)* [","]] "}"
    label     := [a-zA-Z0-9_./-]{1,512}
    string    := '"' no-double-quote* '"' | "'" no-single-quote* "'"

Facts carried over from Calico's tokenizer and parser (libcalico-go ``lib/selector``):

* Only space and tab are whitespace. ``has(``, ``all(`` and ``global(`` are keywords only when
  written with no space before ``(``; inside the parentheses spaces are allowed (``has( a )``).
* Operator words (``contains``, ``starts with``, ``ends with``, ``in``, ``not in``) are
  recognised only right after a label, by prefix, so a label may be named ``contains`` and
  ``a startswith "x"`` / ``a notin {}`` are accepted (Calico prints them as ``starts with`` /
  ``not in``).
* ``k != v`` and ``k not in {..}`` are true when ``k`` is absent; ``==``, ``in``, ``contains``,
  ``starts with`` and ``ends with`` need ``k`` present.
* ``global()`` evaluates to true on any label set, exactly like ``all()``. Its "non-namespaced
  objects only" meaning exists only where Calico rewrites it: in a rule's ``namespaceSelector``
  it becomes ``!has(projectcalico.org/namespace)`` (see :mod:`fqdnpolicy.scoping`).
* A run of leading ``!`` collapses (``!!has(a)`` is ``has(a)``).

Canonical form (``str(selector)``): single spaces around operators, strings in double quotes
unless they hold one, ``in`` sets sorted and de-duplicated, nested ``&&``/``||`` flattened,
double negations removed and only the parentheses precedence needs. This differs from Calico's
own printer, which wraps every ``&&``/``||`` group in parentheses; ours reads better in error
messages and round-trips (``parse_selector(str(s)) == s``).

This module holds :class:`Selector` and :func:`parse_selector`; the syntax tree and its
printing are in :mod:`fqdnpolicy.selector_syntax`, compiling a tree to a matcher in
:mod:`fqdnpolicy.selector_matchers`, the tokenizer and parser in
:mod:`fqdnpolicy.selector_parser`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import ClassVar

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.selector_matchers import Matcher, _compile, _compile_and
from fqdnpolicy.selector_parser import MAX_DEPTH, MAX_LABEL_LENGTH, _Parser
from fqdnpolicy.selector_syntax import (
    All,
    And,
    Compare,
    CompareOp,
    Global,
    Has,
    InSet,
    Node,
    Not,
    Or,
    _conjoin,
    _keys,
    _map_tree,
    _negate,
    _render,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_LABEL_LENGTH",
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
    "Selector",
    "parse_selector",
]


_FULL_LABEL_RE = re.compile(r"[a-zA-Z0-9_./-]{1,512}\Z")


def _normalise_leaf(node: Node) -> Node | None:
    if isinstance(node, InSet):
        return InSet(node.key, tuple(sorted(set(node.values))), node.negated)
    return None


def _check_key(key: str, what: str) -> None:
    if not _FULL_LABEL_RE.match(key):
        raise InvalidPolicy(
            Problem(
                f"invalid label key {key!r} in {what}",
                hint="a label key is 1-512 characters of a-z, A-Z, 0-9, '_', '.', '/', '-'",
                code="invalid-selector",
            )
        )


def _check_value(value: str, what: str) -> None:
    if '"' in value and "'" in value:
        raise InvalidPolicy(
            Problem(
                f"label value {value!r} in {what} holds both quote characters",
                hint="selector strings have no escapes, so a value may hold ' or \" but not both",
                code="invalid-selector",
            )
        )


@attrs.frozen(repr=False)
class Selector:
    """A parsed Calico selector.

    Build one with :func:`parse_selector` (or the combinators below); evaluate it with
    :meth:`matches`. Two selectors are equal, and hash alike, when their canonical texts are
    equal.

    Attributes:
        text: The canonical text; ``parse_selector(text) == self``.
        root: The syntax tree (for tools that inspect selectors, e.g. indexing).
    """

    text: str
    root: Node = attrs.field(eq=False)
    _matcher: Matcher = attrs.field(eq=False, alias="matcher")

    _ALL: ClassVar[Selector]

    @classmethod
    def from_tree(cls, root: Node) -> Selector:
        """Build a selector from a syntax tree (normalised as the parser would)."""
        root = _map_tree(root, _normalise_leaf)
        return cls(text=_render(root), root=root, matcher=_compile(root))

    @classmethod
    def all(cls) -> Selector:
        """Return ``all()``, the selector that matches everything."""
        return cls._ALL

    @classmethod
    def label_equals(cls, key: str, value: str) -> Selector:
        """Return ``key == "value"``.

        Raises:
            InvalidPolicy: ``key`` is not a valid label key, or ``value`` holds both quotes.
        """
        _check_key(key, "label_equals")
        _check_value(value, "label_equals")
        return cls.from_tree(Compare(key, "==", value))

    @classmethod
    def label_in(cls, key: str, values: Iterable[str]) -> Selector:
        """Return ``key in {values}`` (sorted, de-duplicated).

        Raises:
            InvalidPolicy: ``key`` is not a valid label key, or a value holds both quotes.
        """
        _check_key(key, "label_in")
        vals = tuple(sorted(set(values)))
        for value in vals:
            _check_value(value, "label_in")
        return cls.from_tree(InSet(key, vals))

    @classmethod
    def has(cls, key: str) -> Selector:
        """Return ``has(key)``.

        Raises:
            InvalidPolicy: ``key`` is not a valid label key.
        """
        _check_key(key, "has")
        return cls.from_tree(Has(key))

    def and_(self, *others: Selector) -> Selector:
        """Return the conjunction of this selector and ``others``.

        ``all()`` operands are dropped (they change nothing), so ``Selector.all().and_(s) == s``.
        Works unbound too: ``Selector.and_(a, b, c)``.
        """
        parts = [s for s in (self, *others) if not s.is_all]
        if not parts:
            return Selector.all()
        if len(parts) == 1:
            return parts[0]
        # The parts are normalised and compiled already: the conjunction only renders its
        # text, and matches by calling their matchers.
        root = _conjoin(s.root for s in parts)
        return Selector(
            text=_render(root), root=root, matcher=_compile_and([s._matcher for s in parts])
        )

    def negate(self) -> Selector:
        """Return ``!(self)``."""
        return Selector.from_tree(_negate(self.root))

    def with_key_prefix(self, prefix: str) -> Selector:
        """Return a copy with ``prefix`` put before every label key it names.

        Calico evaluates namespace and service-account selectors this way, against labels
        inherited as ``pcns.<key>`` / ``pcsa.<key>``. The prefixed keys may exceed the 512
        character limit of parsed keys; such a selector still evaluates correctly but its text
        does not parse back.
        """

        def prefixed(node: Node) -> Node | None:
            match node:
                case Has(key):
                    return Has(prefix + key)
                case Compare(key, op, value):
                    return Compare(prefix + key, op, value)
                case InSet(key, values, negated):
                    return InSet(prefix + key, values, negated)
            return None

        return Selector.from_tree(_map_tree(self.root, prefixed))

    def substitute(
        self, *, all_: Selector | None = None, global_: Selector | None = None
    ) -> Selector:
        """Return a copy with every ``all()`` / ``global()`` term replaced by another selector.

        Calico gives these terms a meaning of their own in namespace selectors
        (``all()`` -> ``has(projectcalico.org/namespace)``, ``global()`` ->
        ``!has(projectcalico.org/namespace)``); :mod:`fqdnpolicy.scoping` uses this for that.
        """

        def swap(node: Node) -> Node | None:
            if all_ is not None and isinstance(node, All):
                return all_.root
            if global_ is not None and isinstance(node, Global):
                return global_.root
            return None

        return Selector.from_tree(_map_tree(self.root, swap))

    @property
    def is_all(self) -> bool:
        """True for ``all()`` (and the empty selector, which parses to it)."""
        return isinstance(self.root, All)

    def keys(self) -> frozenset[str]:
        """Return the label keys this selector reads (for indexing endpoints by label)."""
        out: set[str] = set()
        _keys(self.root, out)
        return frozenset(out)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether the selector matches a label set."""
        return self._matcher(labels)

    def __str__(self) -> str:
        """Return the canonical text."""
        return self.text

    def __repr__(self) -> str:
        """Return ``Selector('<canonical text>')``."""
        return f"Selector({self.text!r})"


Selector._ALL = Selector.from_tree(All())


def parse_selector(text: str) -> Selector:
    """Parse a Calico selector (cached: policies repeat the same selectors a lot).

    Args:
        text: The selector as written in a policy; empty or blank means ``all()``.

    Returns:
        The parsed :class:`Selector`.

    Raises:
        InvalidPolicy: the text is not a valid selector; the problem's ``column`` (1-based)
            points at the first thing wrong and its message says what was expected there.
    """
    if not isinstance(text, str):
        raise InvalidPolicy(
            Problem(
                f"a selector must be a string, not {type(text).__name__}",
                code="invalid-selector",
            )
        )
    return _parse_cached(text)


@functools.lru_cache(maxsize=8192)
def _parse_cached(text: str) -> Selector:
    return Selector.from_tree(_Parser(text).parse())
