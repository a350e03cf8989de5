"""The tokenizer and parser of Calico's selector language (grammar in :mod:`fqdnpolicy.selector`).

``_Parser(text).parse()`` gives the syntax tree of :mod:`fqdnpolicy.selector_syntax`, or
raises :class:`~fqdnpolicy.errors.InvalidPolicy` whose problem points at the first thing wrong
(its column) and says what was expected there.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, TypeAlias

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.selector_syntax import (
    All,
    Compare,
    Global,
    Has,
    InSet,
    Node,
    _conjoin,
    _disjoin,
    _negate,
)

__all__ = ["MAX_DEPTH", "MAX_LABEL_LENGTH"]

MAX_LABEL_LENGTH = 512
"""Longest label key a selector may name (Calico's ``[a-zA-Z0-9_./-]{1,512}``)."""

MAX_DEPTH = 100
"""Deepest parenthesis nesting accepted; bounds recursion so hostile input cannot crash us."""


_LABEL_RE = re.compile(r"[a-zA-Z0-9_./-]+")
_WS = " \t"


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
