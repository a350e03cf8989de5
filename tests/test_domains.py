"""Domain names, wildcard patterns and the pattern index, as specifications.

The fast code is checked against slow, obviously-correct models written here: a recursive
label matcher for one pattern, and a loop over every pattern for the index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.domains import (
    DomainPattern,
    PatternIndex,
    canonical_dns_name,
    normalize_name,
    parse_domain_pattern,
    public_suffix_covered,
)
from fqdnpolicy.errors import InvalidPolicy

# --------------------------------------------------------------------------------------------
# Reference model: the rule "each * is one or more whole labels", spelled out recursively.
# --------------------------------------------------------------------------------------------


def reference_match(pattern: Sequence[str], name: Sequence[str]) -> bool:
    if not pattern:
        return not name
    if pattern[0] == "*":
        return any(reference_match(pattern[1:], name[taken:]) for taken in range(1, len(name) + 1))
    return bool(name) and name[0] == pattern[0] and reference_match(pattern[1:], name[1:])


def problem_codes(text: object) -> list[str]:
    with pytest.raises(InvalidPolicy) as info:
        parse_domain_pattern(text)  # type: ignore[arg-type]
    return [p.code for p in info.value.problems]


# Small alphabets make overlaps (and so interesting matches) likely.
fixed_labels = st.sampled_from(["a", "b", "c", "xn--bcher-kva", "_tcp"])
pattern_labels = st.lists(st.one_of(fixed_labels, st.just("*")), min_size=1, max_size=6).map(
    lambda labels: [*labels, "c"] if labels[-1] == "*" else labels
)
name_labels = st.lists(st.sampled_from(["a", "b", "c", "d", "xn--bcher-kva", "_tcp"]), max_size=8)
patterns = pattern_labels.map(lambda labels: parse_domain_pattern(".".join(labels)))
names = name_labels.map(".".join)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.com", "example.com", True),
        ("*.com", "a.b.example.com", True),
        ("*.com", "com", False),
        ("*.com", "example.net", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "v2.api.internal.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "apiexample.com", False),
        ("*.example.com", "example.com.attacker.net", False),
    ],
)
def test_leading_wildcard_matches_one_or_more_labels_in_front(
    pattern: str, name: str, expected: bool
) -> None:
    assert parse_domain_pattern(pattern).matches(name) is expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("update.*.vendor.io", "update.eu.vendor.io", True),
        ("update.*.vendor.io", "update.eu.west.mirror.vendor.io", True),
        ("update.*.vendor.io", "update.vendor.io", False),
        ("update.*.vendor.io", "x.update.eu.vendor.io", False),
        ("update.*.vendor.io", "updates.eu.vendor.io", False),
        ("www.*.org", "www.org", False),
        ("www.*.org", "www.wiki.org", True),
    ],
)
def test_middle_wildcard_needs_at_least_one_label_between_its_neighbours(
    pattern: str, name: str, expected: bool
) -> None:
    assert parse_domain_pattern(pattern).matches(name) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.b.s3.eu.west.amazonaws.com", True),
        ("logs.s3.us-east-2.amazonaws.com", True),
        ("bucket.s3.amazonaws.com", False),  # the second * has nothing to eat
        ("s3.eu.amazonaws.com", False),  # the first * has nothing to eat
        ("x.s3.y.s3.z.amazonaws.com", True),  # either s3 may anchor the pattern
        ("x.s4.y.amazonaws.com", False),
    ],
)
def test_several_wildcards_each_take_one_or_more_labels(name: str, expected: bool) -> None:
    assert parse_domain_pattern("*.s3.*.amazonaws.com").matches(name) is expected


def test_adjacent_wildcards_need_one_label_each() -> None:
    pattern = parse_domain_pattern("*.*.example.com")
    assert not pattern.matches("a.example.com")
    assert pattern.matches("a.b.example.com")
    assert pattern.matches("a.b.c.example.com")


def test_exact_pattern_matches_only_that_name() -> None:
    pattern = parse_domain_pattern("api.example.com")
    assert pattern.matches("api.example.com")
    assert not pattern.matches("www.api.example.com")
    assert not pattern.matches("xapi.example.com")
    assert not pattern.matches("api.example.co")


def test_matching_ignores_case_and_one_trailing_dot() -> None:
    assert parse_domain_pattern("*.Example.COM").matches("WWW.example.com.")
    assert parse_domain_pattern("api.example.com.").matches("API.Example.Com")


def test_matching_compares_internationalised_names_in_punycode() -> None:
    assert parse_domain_pattern("bücher.example").matches("xn--bcher-kva.example")
    assert parse_domain_pattern("*.bücher.example").matches("www.xn--bcher-kva.example")
    assert parse_domain_pattern("*.xn--bcher-kva.example").matches("www.BÜCHER.example")


def test_service_labels_with_underscores_match_exactly() -> None:
    assert parse_domain_pattern("_sip._tcp.example.com").matches("_SIP._tcp.example.com")
    assert parse_domain_pattern("*._tcp.example.com").matches("_sip._tcp.example.com")


def test_an_escaped_dot_inside_a_label_does_not_split_the_label() -> None:
    # "evil\.example.com" has two labels, "evil.example" and "com": not under example.com.
    assert not parse_domain_pattern("*.example.com").matches("evil\\.example.com")
    assert parse_domain_pattern("*.com").matches("evil\\.example.com")


def test_a_literal_star_label_in_a_name_is_just_a_label() -> None:
    assert parse_domain_pattern("*.example.com").matches("*.example.com")
    assert not parse_domain_pattern("api.example.com").matches("*.example.com")


@given(pattern=patterns, name=names)
def test_pattern_matching_agrees_with_the_recursive_reference(
    pattern: DomainPattern, name: str
) -> None:
    expected = reference_match(pattern.labels, name.split(".") if name else [])
    assert pattern.matches(name) is expected


@given(pattern=patterns, name=names)
def test_every_match_ends_with_the_fixed_suffix(pattern: DomainPattern, name: str) -> None:
    if pattern.matches(name):
        assert name == pattern.fixed_suffix or name.endswith("." + pattern.fixed_suffix)


@given(
    labels=st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=40),
    name=st.lists(st.sampled_from(["a", "b"]), min_size=0, max_size=120),
)
@settings(max_examples=60, deadline=None)
def test_matching_long_names_against_many_wildcards_stays_correct(
    labels: list[str], name: list[str]
) -> None:
    labels.append("a")
    pattern = parse_domain_pattern(".".join(labels))
    assert pattern.matches(".".join(name)) is reference_match(labels, name)


# --------------------------------------------------------------------------------------------
# Validity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("example.com", "example.com"),
        ("MICROSOFT.COM", "microsoft.com"),
        ("example.com.", "example.com"),
        ("*.example.com", "*.example.com"),
        ("microsoft.*.com", "microsoft.*.com"),
        ("*.s3.*.amazonaws.com", "*.s3.*.amazonaws.com"),
        ("*.*.example.com", "*.*.example.com"),
        ("*.com", "*.com"),
        ("_srv._tcp.example.com", "_srv._tcp.example.com"),
        ("my_host.example.com", "my_host.example.com"),
        ("a--b.example.com", "a--b.example.com"),
        ("localhost", "localhost"),
        ("1.2.3.example", "1.2.3.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("Bücher.Example.", "xn--bcher-kva.example"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_valid_patterns_are_accepted_in_canonical_form(text: str, canonical: str) -> None:
    pattern = parse_domain_pattern(text)
    assert pattern.text == canonical
    assert str(pattern) == canonical


@pytest.mark.parametrize(
    ("text", "code", "column"),
    [
        ("www.g*.com", "wildcard-in-label", 6),
        ("*example.com", "wildcard-in-label", 1),
        ("**.example.com", "wildcard-in-label", 1),
        ("www.*_uk", "wildcard-in-label", 5),
        ("example.com.*", "wildcard-last", 13),
        ("microsoft.*", "wildcard-last", 11),
        ("*", "wildcard-alone", 1),
        ("*.", "wildcard-alone", 1),
        (".", "empty-name", 1),
        ("a..b.com", "empty-label", 3),
        (".example.com", "empty-label", 1),
        ("example.com..", "empty-label", 13),
        ("-bad.example.com", "bad-hyphen", 1),
        ("bad-.example.com", "bad-hyphen", 4),
        ("a b.com", "bad-character", 2),
        ("exa$mple.com", "bad-character", 4),
        (" example.com", "bad-character", 1),
        ("example.com/path", "bad-character", 12),
        ("a" * 64 + ".com", "label-too-long", 1),
        ("www." + "b" * 64 + ".com", "label-too-long", 5),
        ("10.0.0.1", "numeric-tld", 8),
        ("💩.example", "bad-idn", 1),
    ],
)
def test_invalid_patterns_are_rejected_with_the_reason_and_column(
    text: str, code: str, column: int
) -> None:
    with pytest.raises(InvalidPolicy) as info:
        parse_domain_pattern(text)
    problem = info.value.problem
    assert problem.code == code
    assert problem.column == column
    assert problem.message
    assert problem.hint
    assert problem.severity == "error"


def test_empty_text_is_rejected() -> None:
    assert problem_codes("") == ["empty-name"]


def test_a_name_longer_than_253_characters_is_rejected() -> None:
    name = ".".join(["a" * 63] * 4)  # 255 characters
    assert problem_codes(name) == ["name-too-long"]
    assert len(parse_domain_pattern(name[2:]).text) == 253


def test_a_name_of_exactly_253_characters_is_accepted() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name) == 253
    assert normalize_name(name) == name
    assert normalize_name(name + ".") == name


def test_huge_input_is_rejected_with_a_short_message() -> None:
    for text in ["a." * 100_000 + "com", "\u00fc" * 5_000 + ".com", "x" * 5_000 + ".com"]:
        with pytest.raises(InvalidPolicy) as info:
            parse_domain_pattern(text)
        assert len(str(info.value)) < 300


def test_characters_that_idna_ignores_do_not_count_towards_length() -> None:
    # UTS #46 drops soft hyphens: what goes on the wire is the name without them.
    assert normalize_name("\u00ad" * 100 + "a.example.com") == "a.example.com"


def test_every_bad_label_is_reported_at_once() -> None:
    assert problem_codes("-a.b$c..d*.com") == [
        "bad-hyphen",
        "bad-character",
        "empty-label",
        "wildcard-in-label",
    ]


@pytest.mark.parametrize("value", [None, 42, b"example.com", ["example.com"]])
def test_non_string_input_is_rejected_as_invalid_policy(value: object) -> None:
    assert problem_codes(value) == ["not-a-string"]
    with pytest.raises(InvalidPolicy):
        normalize_name(value)  # type: ignore[arg-type]


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_parsing_any_text_either_succeeds_or_raises_invalid_policy(text: str) -> None:
    for parse in (parse_domain_pattern, normalize_name):
        with contextlib.suppress(InvalidPolicy):  # any other exception fails the test
            parse(text)


@given(st.text(alphabet="ab-_.*Ü。", max_size=30))
def test_a_canonical_pattern_parses_to_itself(text: str) -> None:
    try:
        pattern = parse_domain_pattern(text)
    except InvalidPolicy:
        return
    assert parse_domain_pattern(pattern.text) == pattern
    assert parse_domain_pattern(pattern.text).text == pattern.text
    assert pattern.text.isascii()
    assert pattern.text == pattern.text.lower()


# --------------------------------------------------------------------------------------------
# Names: strict (policies) and lenient (DNS traffic)
# --------------------------------------------------------------------------------------------


def test_normalize_name_lowercases_and_drops_the_trailing_dot() -> None:
    assert normalize_name("API.GitHub.com.") == "api.github.com"


def test_normalize_name_rejects_wildcards() -> None:
    with pytest.raises(InvalidPolicy) as info:
        normalize_name("*.example.com")
    assert info.value.problem.code == "wildcard-not-allowed"
    assert info.value.problem.column == 1


def test_internationalised_names_use_idna_2008_not_the_2003_codec() -> None:
    # IDNA 2003 (Python's built-in codec) maps ß to "ss": a different, differently owned domain.
    assert normalize_name("faß.de") == "xn--fa-hia.de"
    assert normalize_name("faß.de") != "faß.de".encode("idna").decode()


def test_ideographic_full_stops_separate_labels() -> None:
    assert normalize_name("bücher\u3002example\uff0ecom") == "xn--bcher-kva.example.com"


def test_fullwidth_letters_map_to_ascii() -> None:
    fullwidth = "".join(chr(0xFF21 + ord(c) - ord("A")) for c in "EXAMPLE")
    assert normalize_name(f"{fullwidth}.com") == "example.com"


@pytest.mark.parametrize(
    ("seen", "canonical"),
    [
        ("WWW.Example.COM.", "www.example.com"),
        ("example.com", "example.com"),
        (".", ""),
        ("", ""),
        ("a\\.b.example.com", "a\\046b.example.com"),
        ("\\065pi.example.com", "api.example.com"),
        ("caf\\195\\169.example", "caf\\195\\169.example"),
        ("café.example", "xn--caf-dma.example"),
        ("back\\\\slash.example", "back\\092slash.example"),
        ("trailing\\", "trailing\\092"),
        ("a b.example", "a b.example"),
        ("a\\032b.example", "a b.example"),
    ],
)
def test_canonical_dns_name_gives_one_spelling_per_name(seen: str, canonical: str) -> None:
    assert canonical_dns_name(seen) == canonical


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_canonical_dns_name_never_raises_and_is_idempotent(seen: str) -> None:
    once = canonical_dns_name(seen)
    assert once.isascii()
    assert canonical_dns_name(once) == once


@given(st.text(alphabet="aBc-_.\\0129ü。", max_size=30))
def test_canonical_dns_name_agrees_with_normalize_name_on_valid_names(text: str) -> None:
    try:
        strict = normalize_name(text)
    except InvalidPolicy:
        return
    assert canonical_dns_name(text) == strict


# --------------------------------------------------------------------------------------------
# DomainPattern as a value
# --------------------------------------------------------------------------------------------


def test_patterns_are_equal_and_hash_alike_by_canonical_text() -> None:
    a = parse_domain_pattern("*.Example.com.")
    b = DomainPattern("*.example.com")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != parse_domain_pattern("*.example.org")
    assert repr(a) == "DomainPattern('*.example.com')"


def test_pattern_exposes_labels_wildcardness_and_fixed_suffix() -> None:
    pattern = parse_domain_pattern("*.s3.*.amazonaws.com")
    assert pattern.labels == ("*", "s3", "*", "amazonaws", "com")
    assert pattern.is_wildcard
    assert pattern.fixed_suffix == "amazonaws.com"
    exact = parse_domain_pattern("api.example.com")
    assert not exact.is_wildcard
    assert exact.fixed_suffix == "api.example.com"
    assert parse_domain_pattern("api.*.example.net").fixed_suffix == "example.net"


def test_patterns_are_immutable() -> None:
    pattern = parse_domain_pattern("*.example.com")
    with pytest.raises(AttributeError):
        pattern.text = "evil.com"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Public suffixes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.com", ("com", True)),
        ("*.co.uk", ("co.uk", True)),
        ("shop.*.co.uk", ("co.uk", True)),
        ("*.s3.amazonaws.com", ("s3.amazonaws.com", False)),
        ("*.github.io", ("github.io", False)),
        ("*.google.com", None),
        ("*.svc.cluster.local", None),
        ("*.internal", None),  # not on the list: private to a site, not public
        ("com.example", None),
        ("api.github.io", None),  # exact names never cover anything
    ],
)
def test_public_suffix_covered_names_wildcards_spanning_a_public_suffix(
    pattern: str, expected: tuple[str, bool] | None
) -> None:
    assert public_suffix_covered(parse_domain_pattern(pattern)) == expected


# --------------------------------------------------------------------------------------------
# PatternIndex
# --------------------------------------------------------------------------------------------


def p(text: str) -> DomainPattern:
    return parse_domain_pattern(text)


def test_index_returns_keys_of_every_matching_pattern() -> None:
    index: PatternIndex[str] = PatternIndex()
    index.add(p("api.example.com"), "exact")
    index.add(p("*.example.com"), "suffix")
    index.add(p("api.*.com"), "middle")
    index.add(p("*.com"), "broad")
    index.add(p("*.example.org"), "other")
    assert index.match("API.example.com.") == {"exact", "suffix", "middle", "broad"}
    assert index.match("api.eu.example.com") == {"suffix", "middle", "broad"}
    assert index.match("www.example.com") == {"suffix", "broad"}
    assert index.match("example.com") == {"broad"}
    assert index.match("example.net") == set()
    assert index.matching_patterns("api.example.com") == {
        p("api.example.com"),
        p("api.*.com"),
        p("*.example.com"),
        p("*.com"),
    }


def test_index_keeps_several_keys_per_pattern_until_the_last_goes() -> None:
    index: PatternIndex[int] = PatternIndex()
    index.add(p("*.example.com"), 1)
    index.add(p("*.example.com"), 2)
    index.add(p("*.example.com"), 2)
    assert index.match("a.example.com") == {1, 2}
    assert index.keys_of(p("*.example.com")) == {1, 2}
    index.discard(p("*.example.com"), 1)
    assert index.match("a.example.com") == {2}
    assert p("*.example.com") in index
    index.discard(p("*.example.com"), 2)
    assert index.match("a.example.com") == set()
    assert p("*.example.com") not in index
    assert len(index) == 0


def test_discarding_what_is_not_there_does_nothing() -> None:
    index: PatternIndex[int] = PatternIndex([(p("a.example.com"), 1)])
    index.discard(p("b.example.com"), 1)
    index.discard(p("a.example.com"), 2)
    index.discard(p("*.example.com"), 1)
    assert index.match("a.example.com") == {1}
    assert len(index) == 1


def test_index_len_contains_and_iteration_count_distinct_patterns() -> None:
    index: PatternIndex[str] = PatternIndex(
        [(p("a.com"), "x"), (p("A.com."), "y"), (p("*.a.com"), "x")]
    )
    assert len(index) == 2
    assert p("a.com") in index
    assert "a.com" not in index  # membership is by pattern, not by text
    assert [] not in index  # unhashable things are simply not held
    assert set(index) == {p("a.com"), p("*.a.com")}


def test_removing_every_pattern_prunes_the_trie() -> None:
    pairs = [(p(t), i) for i, t in enumerate(["*.a.com", "x.*.a.com", "*.*.a.com", "b.*.com"])]
    index: PatternIndex[int] = PatternIndex(pairs)
    for pattern, key in pairs:
        index.discard(pattern, key)
    root = index._root
    assert not root.children
    assert root.star is None


def test_removing_one_pattern_keeps_patterns_that_share_its_path() -> None:
    index: PatternIndex[str] = PatternIndex(
        [(p("*.a.com"), "short"), (p("x.*.a.com"), "long"), (p("*.x.*.a.com"), "longer")]
    )
    index.discard(p("x.*.a.com"), "long")
    assert index.match("y.a.com") == {"short"}
    assert index.match("z.x.y.a.com") == {"short", "longer"}
    index.discard(p("*.a.com"), "short")
    assert index.match("z.x.y.a.com") == {"longer"}
    assert index.match("x.y.a.com") == set()


def test_stacked_wildcards_on_a_long_name_are_matched_without_blowing_up() -> None:
    # Each "*" may stop at any label: without merging equal trie states the walk would track
    # C(100, 10) paths. The index must finish at once, and agree with the pattern itself.
    pattern = p("*." * 10 + "a")
    index: PatternIndex[int] = PatternIndex([(pattern, 1)])
    name = ".".join(["b"] * 100 + ["a"])
    assert index.match(name) == {1}
    assert pattern.matches(name)
    assert index.match("b.a") == set()


def test_an_exact_hit_and_one_wildcard_hit_are_combined() -> None:
    index: PatternIndex[str] = PatternIndex([(p("a.example.com"), "exact"), (p("*.com"), "wild")])
    assert index.match("a.example.com") == {"exact", "wild"}
    assert index.matching_patterns("a.example.com") == {p("a.example.com"), p("*.com")}


def test_match_results_cannot_be_used_to_change_the_index() -> None:
    index: PatternIndex[int] = PatternIndex([(p("*.example.com"), 1)])
    result = index.match("a.example.com")
    assert isinstance(result, frozenset)


# Few, short labels: patterns in one run overlap a lot (exact and wildcard on one name, nested
# stars sharing trie nodes), which is where an index goes wrong.
index_patterns = st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4).map(
    lambda labels: parse_domain_pattern(".".join([*labels, "a"] if labels[-1] == "*" else labels))
)
operations = st.lists(
    st.tuples(st.booleans(), st.one_of(index_patterns, patterns), st.integers(0, 3)), max_size=30
)


@given(ops=operations, queries=st.lists(names, max_size=15))
@settings(max_examples=200, deadline=None)
def test_index_agrees_with_looping_over_every_pattern_through_adds_and_discards(
    ops: list[tuple[bool, DomainPattern, int]], queries: list[str]
) -> None:
    index: PatternIndex[int] = PatternIndex()
    reference: dict[DomainPattern, set[int]] = {}
    for adding, pattern, key in ops:
        if adding:
            index.add(pattern, key)
            reference.setdefault(pattern, set()).add(key)
        else:
            index.discard(pattern, key)
            reference.get(pattern, set()).discard(key)
            if not reference.get(pattern, True):
                del reference[pattern]
    assert len(index) == len(reference)
    assert set(index) == set(reference)
    for _, pattern, _ in ops:
        assert (pattern in index) is (pattern in reference)
    # Names a pattern was built for are likely hits; the generated names add misses.
    probes = queries + [".".join(pat.labels).replace("*", "d.d") for _, pat, _ in ops]
    for name in probes:
        expected_patterns = {pat for pat in reference if pat.matches(name)}
        assert index.matching_patterns(name) == expected_patterns
        assert index.match(name) == set().union(*(reference[pat] for pat in expected_patterns))


@given(
    ops=operations,
    batch=st.lists(st.tuples(st.one_of(index_patterns, patterns), st.integers(0, 3)), max_size=30),
    queries=st.lists(names, max_size=10),
)
@settings(max_examples=200, deadline=None)
def test_adding_many_pairs_at_once_is_adding_each_in_turn(
    ops: list[tuple[bool, DomainPattern, int]],
    batch: list[tuple[DomainPattern, int]],
    queries: list[str],
) -> None:
    one_by_one: PatternIndex[int] = PatternIndex()
    at_once: PatternIndex[int] = PatternIndex()
    for adding, pattern, key in ops:
        for index in (one_by_one, at_once):
            (index.add if adding else index.discard)(pattern, key)
    for pattern, key in batch:
        one_by_one.add(pattern, key)
    at_once.add_all(batch)
    assert {pat: at_once.keys_of(pat) for pat in at_once} == {
        pat: one_by_one.keys_of(pat) for pat in one_by_one
    }
    probes = queries + [".".join(pat.labels).replace("*", "d.d") for pat, _ in batch]
    for name in probes:
        assert at_once.match(name) == one_by_one.match(name)
        assert at_once.matching_patterns(name) == one_by_one.matching_patterns(name)
