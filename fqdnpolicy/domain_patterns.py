"""Domain patterns: an exact name or a wildcard pattern, and whether one spans a public suffix.

:class:`DomainPattern` holds a pattern parsed by the rules of :mod:`fqdnpolicy.domains` and
matches names against it; :func:`public_suffix_covered` tells a wildcard that names unrelated
owners (``*.com``) from one under an ordinary domain.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import attrs

from fqdnpolicy.domain_names import WILDCARD, _parse_labels, canonical_dns_name

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

__all__ = ["DomainPattern", "parse_domain_pattern", "public_suffix_covered"]


@attrs.frozen(repr=False, cache_hash=True)  # keys of rule and set memos: hash once
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
