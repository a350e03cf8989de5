"""Domain names: strict parsing of names written in policies, lenient canonical names from DNS.

:func:`normalize_name` (and the patterns of :mod:`fqdnpolicy.domain_patterns`) parse policy
text strictly and raise :class:`~fqdnpolicy.errors.InvalidPolicy` with located problems;
:func:`canonical_dns_name` is lenient and fast, for names seen in DNS traffic, and never
raises. The rules are in :mod:`fqdnpolicy.domains`.
"""

from __future__ import annotations

import re

from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_NAME_LENGTH",
    "WILDCARD",
    "canonical_dns_name",
    "normalize_name",
]


MAX_LABEL_LENGTH = 63
"""Longest label allowed (RFC 1035 section 2.3.4)."""

MAX_NAME_LENGTH = 253
"""Longest name allowed, in its dotted text form without the trailing dot."""

WILDCARD = "*"

# Dots that UTS #46 maps to "." (ideographic, fullwidth and halfwidth ideographic full stop):
# a name typed with an IME may use them as label separators.
_DOTS = frozenset(".\u3002\uff0e\uff61")
# Longer text is rejected before any per-label work. Unicode text may legitimately be longer
# than its ASCII form (UTS #46 drops soft hyphens and the like), hence not 253.
_MAX_TEXT = 1024
_BAD_ASCII = re.compile(r"[^a-z0-9_-]")
_LABEL_HINT = "a label holds letters, digits, '-' and '_' (internationalised names are converted)"


# --------------------------------------------------------------------------------------------
# Strict parsing (policy text)
# --------------------------------------------------------------------------------------------


def _shown(text: str, limit: int = 40) -> str:
    """Quote ``text`` for a message, shortened: a pasted megabyte must not become the message."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def _split_with_columns(body: str) -> list[tuple[int, str]]:
    """Split on label separators, returning (0-based start column, raw label) pairs."""
    if body.isascii():
        out: list[tuple[int, str]] = []
        col = 0
        for raw in body.split("."):
            out.append((col, raw))
            col += len(raw) + 1
        return out
    out = []
    start = 0
    for i, ch in enumerate(body):
        if ch in _DOTS:
            out.append((start, body[start:i]))
            start = i + 1
    out.append((start, body[start:]))
    return out


def _idna_label(raw: str) -> str:
    """Convert one non-ASCII label to its A-label; raises ``ValueError`` when impossible."""
    import idna  # imported on first use: only internationalised names need it

    mapped = idna.uts46_remap(raw, std3_rules=True, transitional=False)
    if any(ch in _DOTS for ch in mapped):
        raise ValueError(f"{_shown(raw)} maps to text containing a dot")
    return idna.alabel(mapped).decode("ascii")


def _parse_labels(text: object, *, wildcards: bool) -> tuple[str, ...]:
    """Validate ``text`` and return its canonical labels, or raise ``InvalidPolicy``."""
    what = "domain pattern" if wildcards else "domain name"
    if not isinstance(text, str):
        raise InvalidPolicy(
            Problem(
                f"a {what} must be a string, not {type(text).__name__}",
                hint="write the name as text, e.g. 'api.example.com'",
                code="not-a-string",
            )
        )
    if not text:
        raise InvalidPolicy(
            Problem(
                f"the {what} is empty",
                hint="write a name such as 'api.example.com'",
                code="empty-name",
            )
        )
    if len(text) > _MAX_TEXT:
        raise InvalidPolicy(
            Problem(
                f"the {what} is {len(text)} characters long",
                hint=f"a domain name is at most {MAX_NAME_LENGTH} characters",
                code="name-too-long",
            )
        )
    body = text[:-1] if text[-1] in _DOTS else text
    if not body:
        raise InvalidPolicy(
            Problem(
                f"{_shown(text)} is the DNS root, not a {what}",
                column=1,
                hint="write a name such as 'api.example.com'",
                code="empty-name",
            )
        )

    problems: list[Problem] = []
    labels: list[str] = []
    for col, raw in _split_with_columns(body):
        column = col + 1
        if not raw:
            where = "starts with a dot" if col == 0 else "has an empty label (two dots in a row)"
            problems.append(
                Problem(
                    f"{_shown(text)} {where}",
                    column=column,
                    hint="remove the extra dot; only one trailing dot is allowed",
                    code="empty-label",
                )
            )
            continue
        if WILDCARD in raw:
            if raw != WILDCARD:
                problems.append(
                    Problem(
                        f"'*' inside the label {_shown(raw)}: a wildcard must be a whole label",
                        column=col + raw.index(WILDCARD) + 1,
                        hint="write '*' as a label of its own, as in '*.example.com' "
                        "(partial-label wildcards such as 'www.g*.com' and '**' are not supported)",
                        code="wildcard-in-label",
                    )
                )
            elif not wildcards:
                problems.append(
                    Problem(
                        "a '*' wildcard is not allowed here: this must be an exact domain name",
                        column=column,
                        hint="spell out the whole name, e.g. 'api.example.com'",
                        code="wildcard-not-allowed",
                    )
                )
            else:
                labels.append(WILDCARD)
            continue
        if raw.isascii():
            label = raw.lower()
            bad = _BAD_ASCII.search(label)
            if bad is not None:
                problems.append(
                    Problem(
                        f"character {raw[bad.start()]!r} is not allowed in a domain name",
                        column=col + bad.start() + 1,
                        hint=_LABEL_HINT,
                        code="bad-character",
                    )
                )
                continue
        else:
            try:
                label = _idna_label(raw)
            except (ValueError, UnicodeError) as exc:  # idna.IDNAError is a UnicodeError
                problems.append(
                    Problem(
                        f"the label {_shown(raw)} is not a valid internationalised name: {exc}",
                        column=column,
                        hint="check the spelling, or write the label in its ASCII 'xn--' form",
                        code="bad-idn",
                    )
                )
                continue
        if len(label) > MAX_LABEL_LENGTH:
            problems.append(
                Problem(
                    f"the label {_shown(label)} is {len(label)} characters long",
                    column=column,
                    hint=f"a label is at most {MAX_LABEL_LENGTH} characters",
                    code="label-too-long",
                )
            )
            continue
        if label[0] == "-" or label[-1] == "-":
            problems.append(
                Problem(
                    f"the label {_shown(raw)} starts or ends with '-'",
                    column=column if label[0] == "-" else col + len(raw),
                    hint="a hyphen may appear only inside a label, as in 'my-host'",
                    code="bad-hyphen",
                )
            )
            continue
        labels.append(label)

    if problems:
        raise InvalidPolicy(problems)

    if labels[-1] == WILDCARD:
        if len(labels) == 1:
            problem = Problem(
                "a lone '*' would match every name",
                column=1,
                hint="give at least one fixed label after it, as in '*.example.com'",
                code="wildcard-alone",
            )
        else:
            problem = Problem(
                f"'*' may not be the last label of {_shown(text)}",
                column=len(body),
                hint="spell out the top-level labels after the last '*', as in 'microsoft.*.com'",
                code="wildcard-last",
            )
        raise InvalidPolicy(problem)
    if labels[-1].isdigit():
        raise InvalidPolicy(
            Problem(
                f"{_shown(text)} ends in an all-digit label, which no top-level domain is",
                column=len(body) - len(labels[-1]) + 1,
                hint="to allow an IP address, use 'nets' instead of a domain",
                code="numeric-tld",
            )
        )
    total = sum(len(label) for label in labels) + len(labels) - 1
    if total > MAX_NAME_LENGTH:
        raise InvalidPolicy(
            Problem(
                f"the {what} is {total} characters long",
                hint=f"a domain name is at most {MAX_NAME_LENGTH} characters",
                code="name-too-long",
            )
        )
    return tuple(labels)


def normalize_name(name: str) -> str:
    """Validate an exact domain name from a policy and return its canonical form.

    The canonical form is lowercase, has no trailing dot and is ASCII (internationalised labels
    become punycode ``xn--`` labels).

    Args:
        name: The name as written, e.g. ``"API.Example.com."`` or ``"bücher.example"``.

    Returns:
        The canonical name, e.g. ``"api.example.com"`` or ``"xn--bcher-kva.example"``.

    Raises:
        InvalidPolicy: The name is not a valid domain name (empty label, bad character with its
            column, label over 63 or name over 253 characters, a ``*`` wildcard, ...).
    """
    return ".".join(_parse_labels(name, wildcards=False))


# --------------------------------------------------------------------------------------------
# Lenient canonicalisation (DNS traffic)
# --------------------------------------------------------------------------------------------


def canonical_dns_name(name: str) -> str:
    r"""Return the canonical form of a name seen in DNS traffic; never raises.

    ASCII letters are lowercased and trailing dots dropped. The common case (plain ASCII, no
    backslash) costs one ``lower()``. Names in DNS presentation format may carry escapes
    (``\.`` for a dot inside a label, ``\DDD`` for any byte, as dnspython writes them): they
    are decoded, so ``\065`` compares equal to ``a``, and re-written so that the result has
    one spelling per name and splitting it on ``.`` gives its true labels: a dot or backslash
    inside a label and every byte above 127 become ``\DDD``. Non-ASCII text labels are
    converted with IDNA where valid, else written as escaped UTF-8 bytes (such a label can
    never equal a policy label, so odd names simply match nothing but wildcards).

    Args:
        name: A name, e.g. ``"WWW.Example.COM."`` or ``"a\.b.example.com"``.

    Returns:
        The canonical ASCII name, e.g. ``"www.example.com"``.
    """
    if name.isascii() and "\\" not in name:
        return name.lower().rstrip(".")
    return _canonical_slow(name)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _render_byte(b: int) -> str:
    if b < 128 and b not in (0x2E, 0x5C):  # "." and "\\" would change how the name splits
        return chr(b).translate(_ASCII_LOWER)
    return f"\\{b:03d}"


def _canonical_slow(name: str) -> str:
    # Each label is a list of units: a str of one character as written, or an int for a byte
    # given as an escape (escaped bytes are never IDNA-converted nor treated as separators).
    labels: list[list[str | int]] = [[]]
    i, n = 0, len(name)
    while i < n:
        ch = name[i]
        if ch == "\\" and i + 1 < n:
            digits = name[i + 1 : i + 4]
            if len(digits) == 3 and digits.isascii() and digits.isdigit() and int(digits) < 256:
                labels[-1].append(int(digits))
                i += 4
                continue
            nxt = name[i + 1]
            labels[-1].extend(
                nxt.encode("utf-8", "surrogatepass") if not nxt.isascii() else [ord(nxt)]
            )
            i += 2
            continue
        if ch in _DOTS:
            labels.append([])
        else:
            labels[-1].append(ch if ch != "\\" else 0x5C)
        i += 1
    while len(labels) > 1 and not labels[-1]:
        labels.pop()
    if labels == [[]]:
        return ""
    return ".".join(_render_label(units) for units in labels)


def _render_label(units: list[str | int]) -> str:
    if all(isinstance(u, str) for u in units):
        text = "".join(u for u in units if isinstance(u, str))
        if not text.isascii():
            try:
                return _idna_label(text)
            except (ValueError, UnicodeError):
                pass
    out: list[str] = []
    for unit in units:
        if isinstance(unit, int):
            out.append(_render_byte(unit))
        elif unit.isascii():
            out.append(_render_byte(ord(unit)))
        else:
            out.extend(_render_byte(b) for b in unit.encode("utf-8", "surrogatepass"))
    return "".join(out)
