"""Small helpers that word problems: field paths, values as a message shows them, hints."""

from __future__ import annotations

import difflib
from typing import Final

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
        text = str(value)
        return f"number {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, str):
        return f"string {shown(value)}"
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
    if len(word) > _SHOWN_CHARACTERS:  # no valid word is this long; difflib would be slow
        return f"valid: {', '.join(sorted(valid))}"
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


_SHOWN_CHARACTERS: Final = 60


def shown(value: str) -> str:
    """Quote a value for a message, cut short when long, so that messages stay small.

    A message names the value it is about; a megabyte-long name must not make a
    megabyte-long message (once per problem, and a file can have many).
    """
    if len(value) <= _SHOWN_CHARACTERS:
        return repr(value)
    return f"{value[: _SHOWN_CHARACTERS - 3]!r}... ({len(value)} characters)"


def cut(text: str) -> str:
    """Cut text for a message (a resource's name, say) short when long, unquoted."""
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return f"{text[: _SHOWN_CHARACTERS - 3]}... ({len(text)} characters)"
