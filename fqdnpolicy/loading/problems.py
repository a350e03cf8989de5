"""Small helpers that word problems: field paths, values as a message shows them, hints."""

from __future__ import annotations

import difflib

from fqdnpolicy.errors import InvalidPolicy, Problem


def join_path(path: str, key: str | int) -> str:
    """Return the field path of ``key`` (a field name or a list index) under ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """Describe a value for a message: its type and, shortened, the value itself."""
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


def wrong_type(expected: str, value: object, hint: str = "") -> InvalidPolicy:
    """Return the problem for a value of the wrong type."""
    return InvalidPolicy(
        Problem(f"expected {expected}, got {describe(value)}", hint=hint, code="wrong-type")
    )


def suggest(word: str, valid: list[str] | tuple[str, ...]) -> str:
    """Return ``did you mean 'x'? `` plus the list of valid words, as a hint."""
    lowered = {v.lower(): v for v in valid}
    close = [lowered[word.lower()]] if word.lower() in lowered else []
    close = close or difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    listing = ", ".join(sorted(valid))
    if close:
        return f"did you mean {close[0]!r}? valid: {listing}"
    return f"valid: {listing}"


def raise_if(problems: list[Problem]) -> None:
    """Raise :class:`InvalidPolicy` with ``problems`` if there are any."""
    if problems:
        raise InvalidPolicy(problems)
