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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Literal, NamedTuple, TypeAlias

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem

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

MAX_LABEL_LENGTH = 512
"""Longest label key a selector may name (Calico's ``[a-zA-Z0-9_./-]{1,512}``)."""

MAX_DEPTH = 100
"""Deepest parenthesis nesting accepted; bounds recursion so hostile input cannot crash us."""

CompareOp: TypeAlias = Literal["==", "!=", "contains", "starts with", "ends with"]

_LABEL_RE = re.compile(r"[a-zA-Z0-9_./-]+")
_FULL_LABEL_RE = re.compile(r"[a-zA-Z0-9_./-]{1,512}\Z")
_WS = " \t"


# --------------------------------------------------------------------------- AST


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


# --------------------------------------------------------------------------- printing


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


# --------------------------------------------------------------------------- compiling

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
    # Unrolled for the common small arities: a generator over a tuple costs about 3x more.
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


# --------------------------------------------------------------------------- Selector


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
        return Selector.from_tree(_conjoin(s.root for s in parts))

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


# --------------------------------------------------------------------------- tokenizer

_Kind: TypeAlias = Literal[
    "label",
    "string",
    "{",
    "}",
    ",",
    "==",
    "!=",
    "in",
    "not in",
    "contains",
    "starts with",
    "ends with",
    "!",
    "&&",
    "||",
    "(",
    ")",
    "has",
    "all()",
    "global()",
    "bad",
    "end",
]


class _Token(NamedTuple):
    # A NamedTuple, not attrs: tokens are made per character run and this halves tokenizing.
    kind: _Kind
    value: str  # label name, string contents, has() label; for "bad": source text
    column: int  # 1-based
    source: str  # the text as written, for messages
    error: str = ""  # for "bad": a complete message overriding "expected X, got Y"
    hint: str = ""


_SIMPLE: dict[str, _Kind] = {"(": "(", ")": ")", "{": "{", "}": "}", ",": ","}
_DOUBLED: dict[str, tuple[_Kind, str]] = {
    "=": ("==", "use '==' to compare a label with a value"),
    "&": ("&&", "use '&&' for 'and'"),
    "|": ("||", "use '||' for 'or'"),
}


def _describe(text: str) -> str:
    return repr(text if len(text) <= 30 else text[:27] + "...")


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens.

    Problems become ``bad`` tokens (and end the list) rather than exceptions, so the parser
    reports the first problem in reading order together with what it expected there.
    """
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while True:
        while i < n and text[i] in _WS:
            i += 1
        if i >= n:
            tokens.append(_Token("end", "", n + 1, ""))
            return tokens
        col = i + 1
        ch = text[i]
        after_label = bool(tokens) and tokens[-1].kind == "label"
        if ch in _SIMPLE:
            tokens.append(_Token(_SIMPLE[ch], ch, col, ch))
            i += 1
        elif ch in "\"'":
            close = text.find(ch, i + 1)
            if close < 0:
                tokens.append(
                    _Token(
                        "bad",
                        text[i:],
                        col,
                        text[i:],
                        error=f"unterminated string: no closing {ch} after the one here",
                        hint="strings have no escapes; end it with the same quote it opened with",
                    )
                )
                return tokens
            tokens.append(_Token("string", text[i + 1 : close], col, text[i : close + 1]))
            i = close + 1
        elif ch in _DOUBLED:
            kind, hint = _DOUBLED[ch]
            if text.startswith(ch * 2, i):
                tokens.append(_Token(kind, kind, col, kind))
                i += 2
            else:
                tokens.append(_Token("bad", ch, col, ch, hint=hint))
                return tokens
        elif ch == "!":
            if text.startswith("!=", i):
                tokens.append(_Token("!=", "!=", col, "!="))
                i += 2
            else:
                tokens.append(_Token("!", "!", col, "!"))
                i += 1
        elif after_label and (op := _operator_word(text, i)) is not None:
            kind, end = op
            tokens.append(_Token(kind, kind, col, text[i:end]))
            i = end
        elif not after_label and text.startswith("has(", i):
            tok, i = _has(text, i)
            tokens.append(tok)
            if tok.kind == "bad":
                return tokens
        elif not after_label and (text.startswith("all(", i) or text.startswith("global(", i)):
            word = "all" if ch == "a" else "global"
            j = i + len(word) + 1
            while j < n and text[j] in _WS:
                j += 1
            if j < n and text[j] == ")":
                tokens.append(_Token(f"{word}()", f"{word}()", col, text[i : j + 1]))  # type: ignore[arg-type]
                i = j + 1
            else:
                got = _describe(text[j:]) if j < n else "the end of the selector"
                tokens.append(
                    _Token(
                        "bad",
                        text[i:j],
                        j + 1,
                        text[i:j],
                        error=f"expected ')' after '{word}(', got {got}",
                        hint=f"{word}() takes no arguments",
                    )
                )
                return tokens
        elif m := _LABEL_RE.match(text, i):
            label = m.group()
            if len(label) > MAX_LABEL_LENGTH:
                tokens.append(
                    _Token(
                        "bad",
                        label,
                        col,
                        label,
                        error=f"label is {len(label)} characters long, "
                        f"more than the {MAX_LABEL_LENGTH} allowed",
                    )
                )
                return tokens
            tokens.append(_Token("label", label, col, label))
            i = m.end()
        else:
            tokens.append(
                _Token(
                    "bad",
                    ch,
                    col,
                    ch,
                    hint="labels use a-z, A-Z, 0-9, '_', '.', '/', '-'; "
                    "only space and tab separate tokens",
                )
            )
            return tokens


def _operator_word(text: str, i: int) -> tuple[_Kind, int] | None:
    """Match an operator word after a label, by prefix as Calico does.

    So ``startswith`` is accepted and ``starts`` alone is not an operator.
    """
    if text.startswith("contains", i):
        return "contains", i + 8
    for first, second, kind in (
        ("starts", "with", "starts with"),
        ("ends", "with", "ends with"),
        ("not", "in", "not in"),
    ):
        if text.startswith(first, i):
            j = i + len(first)
            while j < len(text) and text[j] in _WS:
                j += 1
            if text.startswith(second, j):
                return kind, j + len(second)  # type: ignore[return-value]
            return None
    if text.startswith("in", i):
        return "in", i + 2
    return None


def _has(text: str, i: int) -> tuple[_Token, int]:
    n = len(text)
    j = i + 4
    while j < n and text[j] in _WS:
        j += 1
    m = _LABEL_RE.match(text, j)
    if m is None or len(m.group()) > MAX_LABEL_LENGTH:
        got = _describe(text[j:]) if j < n else "the end of the selector"
        what = "a label of at most 512 characters" if m else "a label"
        return _Token(
            "bad",
            text[i:j],
            j + 1,
            text[i:j],
            error=f"expected {what} inside has(), got {got}",
            hint="write has(label), e.g. has(app)",
        ), n
    label = m.group()
    k = m.end()
    while k < n and text[k] in _WS:
        k += 1
    if k < n and text[k] == ")":
        return _Token("has", label, i + 1, text[i : k + 1]), k + 1
    got = _describe(text[k:]) if k < n else "the end of the selector"
    return _Token(
        "bad",
        text[i:k],
        k + 1,
        text[i:k],
        error=f"expected ')' to close has({label}, got {got}",
    ), n


# --------------------------------------------------------------------------- parser

_COMPARE_KINDS: frozenset[str] = frozenset({"==", "!=", "contains", "starts with", "ends with"})
_OPERATOR_HINT = "after a label comes ==, !=, in, not in, contains, starts with or ends with"
_TERM_HINT = (
    'a term is a comparison such as app == "web", has(label), all(), global(), '
    "or '!' / '(' before a term"
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def fail(self, expected: str, tok: _Token, hint: str = "") -> InvalidPolicy:
        if tok.kind == "bad" and tok.error:
            message, hint = tok.error, tok.hint
        else:
            got = "the end of the selector" if tok.kind == "end" else _describe(tok.source)
            message = f"expected {expected}, got {got}"
            hint = tok.hint or hint
        return InvalidPolicy(
            Problem(
                f"invalid selector {_describe(self.text)}: {message}",
                column=tok.column,
                hint=hint,
                code="invalid-selector",
            )
        )

    def parse(self) -> Node:
        if self.peek().kind == "end":
            return All()
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail("'&&', '||' or the end of the selector", tok)
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.peek().kind == "||":
            self.take()
            parts.append(self.and_expr())
        return _disjoin(parts)

    def and_expr(self) -> Node:
        parts = [self.unary()]
        while self.peek().kind == "&&":
            self.take()
            parts.append(self.unary())
        return _conjoin(parts)

    def unary(self) -> Node:
        negated = False
        while self.peek().kind == "!":
            self.take()
            negated = not negated
        node = self.primary()
        return _negate(node) if negated else node

    def primary(self) -> Node:
        tok = self.take()
        match tok.kind:
            case "has":
                return Has(tok.value)
            case "all()":
                return All()
            case "global()":
                return Global()
            case "(":
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise InvalidPolicy(
                        Problem(
                            f"invalid selector {_describe(self.text)}: parentheses nest "
                            f"deeper than {MAX_DEPTH} levels",
                            column=tok.column,
                            code="invalid-selector",
                        )
                    )
                node = self.or_expr()
                close = self.take()
                if close.kind != ")":
                    raise self.fail(
                        f"'&&', '||' or ')' to close the '(' at column {tok.column}", close
                    )
                self.depth -= 1
                return node
            case "label":
                return self.operation(tok)
        raise self.fail("a label", tok, _TERM_HINT)

    def operation(self, label: _Token) -> Node:
        key = label.value
        op = self.take()
        if op.kind in _COMPARE_KINDS:
            value = self.take()
            if value.kind != "string":
                raise self.fail(
                    f"a quoted string after '{op.kind}'",
                    value,
                    f'quote the value, e.g. {key} {op.kind} "value"',
                )
            return Compare(key, op.kind, value.value)  # type: ignore[arg-type]
        if op.kind in ("in", "not in"):
            brace = self.take()
            if brace.kind != "{":
                raise self.fail(
                    f"'{{' after '{op.kind}'",
                    brace,
                    f'write a set, e.g. {key} {op.kind} {{"a", "b"}}',
                )
            values: set[str] = set()
            tok = self.take()
            while tok.kind == "string":
                values.add(tok.value)
                tok = self.take()
                if tok.kind == ",":
                    tok = self.take()
                elif tok.kind != "}":
                    raise self.fail("',' or '}' in the set", tok)
            if tok.kind != "}":
                raise self.fail("a quoted string or '}' in the set", tok)
            return InSet(key, tuple(sorted(values)), negated=op.kind == "not in")
        raise self.fail(f"an operator after label {key!r}", op, _OPERATOR_HINT)


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
