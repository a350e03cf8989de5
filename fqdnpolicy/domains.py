"""Domain names, wildcard domain patterns and an index that matches names against many patterns.

The rules (this project's, see ``docs``):

* A pattern is a dot-separated list of labels. A label that is exactly ``*`` matches **one or
  more whole labels**; a pattern may hold several ``*`` labels (``*.s3.*.amazonaws.com``), but
  ``*`` may not be the last label, may not be part of a label (``www.g*.com``, ``**``) and may
  not stand alone.
* Names are compared in lowercase; one trailing dot (the DNS root) is accepted and dropped.
* Internationalised names are converted to their ASCII (punycode, ``xn--``) form with IDNA 2008
  and the UTS #46 mapping (non-transitional), via the ``idna`` package. Python's built-in
  ``idna`` codec implements IDNA 2003, which maps e.g. ``faß.de`` to ``fass.de`` - a different
  domain, often with a different owner - whereas resolvers, browsers and curl today send
  ``xn--fa-hia.de``; a policy must name what actually goes on the wire.
* Labels are 1-63 characters of letters, digits, ``-`` (not first or last) and ``_`` (service
  labels such as ``_srv._tcp``); a whole name is at most 253 characters.

There are two ways in for names. :func:`normalize_name` and :func:`parse_domain_pattern` are
strict, for text written in policies, and raise :class:`~fqdnpolicy.errors.InvalidPolicy` with
located problems. :func:`canonical_dns_name` is lenient and fast, for names seen in DNS traffic:
it never raises, whatever bytes the name carries.

:class:`PatternIndex` answers "which patterns match this name" without looping over patterns:
exact names through one dictionary lookup, wildcards through a trie over reversed labels.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

__all__ = [
    "DomainPattern",
    "PatternIndex",
    "canonical_dns_name",
    "normalize_name",
    "parse_domain_pattern",
    "public_suffix_covered",
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


def parse_domain_pattern(text: str) -> DomainPattern:
    """Parse a domain pattern such as ``*.example.com`` or ``api.*.example.net``.

    Args:
        text: The pattern as written in a policy.

    Returns:
        The parsed pattern, with its canonical text.

    Raises:
        InvalidPolicy: The pattern is invalid; each problem says what and at which column.
    """
    return DomainPattern(text)


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


# --------------------------------------------------------------------------------------------
# DomainPattern
# --------------------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class DomainPattern:
    """A parsed domain pattern: an exact name or a wildcard pattern.

    Construct with :func:`parse_domain_pattern` (``DomainPattern(text)`` does the same): the
    text is validated and stored in canonical form, so two patterns are equal (and hash alike)
    exactly when their canonical texts are.

    Attributes:
        text: The canonical text, e.g. ``"*.s3.*.amazonaws.com"``; also ``str(pattern)``.
        labels: The canonical labels, e.g. ``("*", "s3", "*", "amazonaws", "com")``.
        is_wildcard: Whether any label is ``*``.
        fixed_suffix: The labels after the last ``*``, as a name (``"amazonaws.com"``); the
            whole name for an exact pattern. Every matching name ends with it.

    Raises:
        InvalidPolicy: On construction, when the text is not a valid pattern.
    """

    text: str
    labels: tuple[str, ...] = attrs.field(init=False, eq=False)
    is_wildcard: bool = attrs.field(init=False, eq=False)
    fixed_suffix: str = attrs.field(init=False, eq=False)
    # Matching plan for wildcards: labels before the first "*", the groups of labels between
    # stars, labels after the last "*", and the fewest labels a matching name has.
    _head: tuple[str, ...] = attrs.field(init=False, eq=False)
    _middle: tuple[tuple[str, ...], ...] = attrs.field(init=False, eq=False)
    _tail: tuple[str, ...] = attrs.field(init=False, eq=False)
    _min_labels: int = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        labels = _parse_labels(self.text, wildcards=True)
        groups: list[tuple[str, ...]] = []
        current: list[str] = []
        for label in labels:
            if label == WILDCARD:
                groups.append(tuple(current))
                current = []
            else:
                current.append(label)
        groups.append(tuple(current))
        setattr_ = object.__setattr__  # frozen: fill the derived fields once, here
        setattr_(self, "text", ".".join(labels))
        setattr_(self, "labels", labels)
        setattr_(self, "is_wildcard", len(groups) > 1)
        setattr_(self, "fixed_suffix", ".".join(groups[-1]))
        setattr_(self, "_head", groups[0])
        setattr_(self, "_middle", tuple(groups[1:-1]))
        setattr_(self, "_tail", groups[-1])
        setattr_(self, "_min_labels", len(labels))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"DomainPattern({self.text!r})"

    def matches(self, name: str) -> bool:
        """Tell whether ``name`` matches this pattern.

        Args:
            name: A domain name in any case, with or without the trailing dot; it is
                canonicalised leniently (:func:`canonical_dns_name`), so this never raises.

        Returns:
            True when the name matches: equal for an exact pattern; for a wildcard, every
            ``*`` stands for one or more whole labels.
        """
        name = canonical_dns_name(name)
        if not self.is_wildcard:
            return name == self.text
        return self.matches_labels(name.split("."))

    def matches_labels(self, labels: list[str] | tuple[str, ...]) -> bool:
        """Tell whether a name, given as its canonical labels, matches this pattern."""
        n = len(labels)
        if n < self._min_labels:
            return False
        head, tail = self._head, self._tail
        end = n - len(tail)
        if tuple(labels[: len(head)]) != head or tuple(labels[end:]) != tail:
            return False
        # The star before each middle group eats at least one label; taking the leftmost place
        # for each group leaves the most room for the rest, so a greedy scan is exact (no
        # backtracking, O(labels x pattern labels) in the worst case).
        pos = len(head)
        for group in self._middle:
            size = len(group)
            start = pos + 1
            last = end - 1 - size  # leave at least one label for the star after the group
            while start <= last and tuple(labels[start : start + size]) != group:
                start += 1
            if start > last:
                return False
            pos = start + size
        return end - pos >= 1


# --------------------------------------------------------------------------------------------
# Public-suffix check
# --------------------------------------------------------------------------------------------


@cache
def _suffix_lists() -> tuple[PublicSuffixList, PublicSuffixList]:
    from publicsuffixlist import PublicSuffixList

    # accept_unknown=False: names under unlisted top-level labels (".internal", ".svc",
    # ".local") are cluster- or site-private, not public suffixes anyone can register under.
    every = PublicSuffixList(accept_unknown=False)
    icann = PublicSuffixList(accept_unknown=False, only_icann=True)
    return every, icann


def public_suffix_covered(pattern: DomainPattern) -> tuple[str, bool] | None:
    """Say whether a wildcard pattern spans a whole public suffix.

    When the part of a wildcard pattern after its last ``*`` is itself a public suffix, names
    from unrelated owners match it: ``*.com`` covers every ``.com`` domain, and
    ``*.s3.amazonaws.com`` every S3 bucket, whoever owns it. Uses the public suffix list
    bundled with the ``publicsuffixlist`` package (no network).

    Args:
        pattern: A parsed pattern.

    Returns:
        ``(suffix, is_icann)`` when the fixed suffix is a public suffix - ``is_icann`` is True
        for ICANN (registry) suffixes such as ``com`` or ``co.uk`` and False for private ones
        such as ``s3.amazonaws.com`` (shared hosting where anyone can register a name) - and
        ``None`` for exact patterns and wildcards under an ordinary domain.
    """
    if not pattern.is_wildcard:
        return None
    suffix = pattern.fixed_suffix
    every, icann = _suffix_lists()
    if not every.is_public(suffix):
        return None
    return suffix, bool(icann.is_public(suffix))


# --------------------------------------------------------------------------------------------
# PatternIndex
# --------------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)

_NO_KEYS: frozenset[object] = frozenset()


class _Node:
    """A trie node; the path from the root spells a pattern's labels from the right.

    ``star`` is the node reached by a ``*`` label. A star node consumes one label on the way in
    and then any number more (it loops on itself). ``leaf_star`` marks a star node with no way
    out: entering it decides a match, whatever labels remain.
    """

    __slots__ = ("children", "is_star", "keys", "leaf_star", "pattern", "star")

    def __init__(self, is_star: bool) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.is_star = is_star
        self.leaf_star = False
        self.keys: frozenset[object] = _NO_KEYS
        self.pattern: DomainPattern | None = None

    def refresh(self) -> None:
        self.leaf_star = self.is_star and not self.children and self.star is None

    def empty(self) -> bool:
        return not self.children and self.star is None and self.pattern is None


class PatternIndex(Generic[K]):
    """Many domain patterns, each with keys (e.g. rule ids); finds those matching a name.

    ``match`` never loops over the patterns: exact patterns are found with one dictionary
    lookup and wildcards by walking a trie of reversed labels, where a ``*`` node consumes one
    or more labels. The work is proportional to the name's labels (times the few trie states
    alive at once when several wildcards overlap), not to the number of patterns.

    Not safe for concurrent mutation; matching from several threads while nothing mutates is.

    Args:
        items: ``(pattern, key)`` pairs to add at once.

    Example:
        >>> index: PatternIndex[str] = PatternIndex()
        >>> index.add(parse_domain_pattern("*.example.com"), "rule-1")
        >>> sorted(index.match("WWW.example.com."))
        ['rule-1']
    """

    __slots__ = ("_exact", "_exact_patterns", "_keys", "_root", "_wildcards")

    def __init__(self, items: Iterable[tuple[DomainPattern, K]] = ()) -> None:
        self._keys: dict[DomainPattern, frozenset[K]] = {}
        self._exact: dict[str, frozenset[K]] = {}
        self._exact_patterns: dict[str, DomainPattern] = {}
        self._root = _Node(is_star=False)
        self._wildcards = 0
        for pattern, key in items:
            self.add(pattern, key)

    # -- mutation ----------------------------------------------------------------------------

    def add(self, pattern: DomainPattern, key: K) -> None:
        """Attach ``key`` to ``pattern`` (adding the pattern if new); adding twice is a no-op."""
        keys = self._keys.get(pattern)
        if keys is not None and key in keys:
            return
        # Keys live in one frozenset per pattern, shared by the lookup structures, so match()
        # can return it without copying; a change rebuilds it (O(keys of that pattern)).
        # Keeping a mutable set beside it made the index much bigger (docs/development.md).
        keys = self._keys[pattern] = frozenset((key,)) if keys is None else keys | {key}
        self._store(pattern, keys)

    def discard(self, pattern: DomainPattern, key: K) -> None:
        """Detach ``key`` from ``pattern``; the pattern goes when its last key does.

        Discarding a key or pattern that is not there does nothing.
        """
        keys = self._keys.get(pattern)
        if keys is None or key not in keys:
            return
        keys = keys - {key}
        if keys:
            self._keys[pattern] = keys
            self._store(pattern, keys)
            return
        del self._keys[pattern]
        if not pattern.is_wildcard:
            del self._exact[pattern.text]
            del self._exact_patterns[pattern.text]
            return
        self._wildcards -= 1
        path = self._path(pattern, create=False)
        leaf = path[-1][1]
        leaf.keys = _NO_KEYS
        leaf.pattern = None
        # Prune nodes left without patterns below them, deepest first.
        for i in range(len(path) - 1, 0, -1):
            label, node = path[i]
            parent = path[i - 1][1]
            if node.empty():
                if label == WILDCARD:
                    parent.star = None
                else:
                    del parent.children[label]
            node.refresh()
            parent.refresh()

    def _path(self, pattern: DomainPattern, *, create: bool) -> list[tuple[str, _Node]]:
        node = self._root
        path: list[tuple[str, _Node]] = [("", node)]
        for label in reversed(pattern.labels):
            if label == WILDCARD:
                nxt = node.star
                if nxt is None:
                    assert create, "pattern known to be indexed"
                    nxt = node.star = _Node(is_star=True)
            else:
                nxt = node.children.get(label)
                if nxt is None:
                    assert create, "pattern known to be indexed"
                    nxt = node.children[label] = _Node(is_star=False)
            node.refresh()
            path.append((label, nxt))
            node = nxt
        node.refresh()
        return path

    def _store(self, pattern: DomainPattern, keys: frozenset[K]) -> None:
        if not pattern.is_wildcard:
            self._exact[pattern.text] = keys
            self._exact_patterns[pattern.text] = pattern
            return
        node = self._path(pattern, create=True)[-1][1]
        if node.pattern is None:
            self._wildcards += 1
        node.pattern = pattern
        node.keys = keys

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of distinct patterns held."""
        return len(self._keys)

    def __contains__(self, pattern: object) -> bool:
        """Whether ``pattern`` (a :class:`DomainPattern`) is held with at least one key."""
        return isinstance(pattern, DomainPattern) and pattern in self._keys

    def __iter__(self) -> Iterator[DomainPattern]:
        """Iterate over the patterns held."""
        return iter(self._keys)

    def keys_of(self, pattern: DomainPattern) -> frozenset[K]:
        """The keys attached to ``pattern`` (empty when it is not held)."""
        keys = self._keys.get(pattern)
        return frozenset() if keys is None else keys

    def match(self, name: str) -> frozenset[K]:
        """Return the keys of every pattern that matches ``name``.

        Args:
            name: A domain name as seen in DNS traffic; canonicalised leniently
                (:func:`canonical_dns_name`), so this never raises.

        Returns:
            The union of the keys of all matching patterns (an empty set when none match).
        """
        # Inlined fast path of canonical_dns_name: this is the hot loop of the DNS cache.
        if name.isascii() and "\\" not in name:
            name = name.lower().rstrip(".")
        else:
            name = canonical_dns_name(name)
        exact = self._exact.get(name)
        if not self._wildcards:
            return exact if exact is not None else _NO_KEYS  # type: ignore[return-value]
        hits = self._walk(name)
        if not hits:
            return exact if exact is not None else _NO_KEYS  # type: ignore[return-value]
        if exact is None and len(hits) == 1:
            return hits[0].keys  # type: ignore[return-value]
        out: set[object] = set(exact) if exact is not None else set()
        for node in hits:
            out.update(node.keys)
        return frozenset(out)  # type: ignore[arg-type]

    def matching_patterns(self, name: str) -> set[DomainPattern]:
        """Return every pattern that matches ``name`` (canonicalised as in :meth:`match`)."""
        name = canonical_dns_name(name)
        out = {node.pattern for node in self._walk(name) if node.pattern is not None}
        exact = self._exact_patterns.get(name)
        if exact is not None:
            out.add(exact)
        return out

    def _walk(self, name: str) -> list[_Node]:
        """Terminal trie nodes reached by the name's labels, read right to left.

        A node may appear more than once. Most walks keep one live trie state all the way
        (fixed labels, then one ``*`` eating labels), so that case runs without building state
        lists; the general set-of-states walk takes over where paths fork.
        """
        labels = name.split(".")
        i = len(labels) - 1
        node = self._root
        hits: list[_Node] = []
        while i >= 0:
            label = labels[i]
            i -= 1
            child = node.children.get(label)
            star = node.star
            if star is not None:
                if star.leaf_star:
                    # Entering a star with no way out: it eats the rest of the name.
                    hits.append(star)
                elif child is None and not node.is_star:
                    node = star
                    continue
                else:
                    forks = [star] if child is None else [child, star]
                    if node.is_star:
                        forks.append(node)
                    return self._walk_states(forks, labels, i, hits)
            if node.is_star:
                if child is not None:
                    return self._walk_states([child, node], labels, i, hits)
                continue  # the star eats this label too
            if child is None:
                return hits
            node = child
        if node.pattern is not None:
            hits.append(node)
        return hits

    @staticmethod
    def _walk_states(
        states: list[_Node], labels: list[str], i: int, hits: list[_Node]
    ) -> list[_Node]:
        """Go on from several live trie states with ``labels[i]`` and those left of it."""
        while i >= 0:
            label = labels[i]
            i -= 1
            new: list[_Node] = []
            for state in states:
                child = state.children.get(label)
                if child is not None:
                    new.append(child)
                star = state.star
                if star is not None:
                    if star.leaf_star:
                        hits.append(star)
                    else:
                        new.append(star)
                if state.is_star:
                    new.append(state)
            if len(new) > 1:
                new = list(dict.fromkeys(new))  # several "*" may reach one node
            elif not new:
                return hits
            states = new
        hits.extend(state for state in states if state.pattern is not None)
        return hits
