"""Specification of Calico's selector language as fqdnpolicy implements it."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.selector import (
    MAX_DEPTH,
    All,
    And,
    Compare,
    Global,
    Has,
    InSet,
    Node,
    Not,
    Or,
    Selector,
    parse_selector,
)

# --------------------------------------------------------------------------- reference model


def reference_matches(node: Node, labels: Mapping[str, str]) -> bool:
    """Slow, obviously-correct evaluator: a direct reading of Calico's rules per node."""
    match node:
        case All() | Global():
            return True
        case Has(key):
            return key in labels
        case Compare(key, "==", value):
            return key in labels and labels[key] == value
        case Compare(key, "!=", value):
            return key not in labels or labels[key] != value
        case Compare(key, "contains", value):
            return key in labels and labels[key].find(value) >= 0
        case Compare(key, "starts with", value):
            return key in labels and labels[key][: len(value)] == value
        case Compare(key, "ends with", value):
            return (
                key in labels
                and len(labels[key]) >= len(value)
                and (value == "" or labels[key][-len(value) :] == value)
            )
        case InSet(key, values, False):
            return key in labels and any(labels[key] == v for v in values)
        case InSet(key, values, True):
            return key not in labels or all(labels[key] != v for v in values)
        case Not(operand):
            return not reference_matches(operand, labels)
        case And(operands):
            return all(reference_matches(op, labels) for op in operands)
        case Or(operands):
            return any(reference_matches(op, labels) for op in operands)
    raise AssertionError(node)


def reference_keys(node: Node) -> set[str]:
    match node:
        case Has(key) | Compare(key) | InSet(key):
            return {key}
        case Not(operand):
            return reference_keys(operand)
        case And(operands) | Or(operands):
            return set().union(*(reference_keys(op) for op in operands))
    return set()


def matches(text: str, labels: Mapping[str, str]) -> bool:
    return parse_selector(text).matches(labels)


def problem_of(text: str) -> tuple[int | None, str]:
    with pytest.raises(InvalidPolicy) as info:
        parse_selector(text)
    return info.value.problem.column, info.value.problem.message


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('app == "web"', {"app": "web"}, True),
        ('app == "web"', {"app": "webs"}, False),
        ('app == "web"', {}, False),
        ('app != "web"', {"app": "db"}, True),
        ('app != "web"', {"app": "web"}, False),
        ('app in {"web", "db"}', {"app": "db"}, True),
        ('app in {"web", "db"}', {"app": "cache"}, False),
        ('app in {"web", "db"}', {}, False),
        ("app in {}", {"app": ""}, False),
        ('app not in {"web", "db"}', {"app": "cache"}, True),
        ('app not in {"web", "db"}', {"app": "web"}, False),
        ("app not in {}", {"app": "x"}, True),
        ("has(app)", {"app": ""}, True),
        ("has(app)", {"application": "x"}, False),
        ("!has(app)", {}, True),
        ('name contains "ap"', {"name": "map"}, True),
        ('name contains ""', {"name": ""}, True),
        ('name starts with "ma"', {"name": "map"}, True),
        ('name starts with "ap"', {"name": "map"}, False),
        ('name ends with "ap"', {"name": "map"}, True),
        ('name ends with "ma"', {"name": "map"}, False),
        ("all()", {}, True),
        ("all()", {"a": "b"}, True),
    ],
)
def test_each_operator_compares_the_label_value_as_calico_does(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    assert matches(text, labels) is expected


@pytest.mark.parametrize(
    "text", ['k != "v"', 'k not in {"v"}', '!k == "v"', "!has(k)", '!k contains "v"']
)
def test_negative_operators_are_true_when_the_label_is_absent(text: str) -> None:
    assert matches(text, {"other": "v"})


@pytest.mark.parametrize(
    "text",
    ['k == ""', 'k in {""}', 'k contains ""', 'k starts with ""', 'k ends with ""', "has(k)"],
)
def test_positive_operators_need_the_label_present_even_for_empty_strings(text: str) -> None:
    assert not matches(text, {})
    assert matches(text, {"k": ""})


def test_empty_and_blank_selectors_mean_all() -> None:
    for text in ("", " ", "\t \t"):
        selector = parse_selector(text)
        assert selector.is_all
        assert selector == Selector.all()
        assert selector.matches({})
        assert selector.matches({"x": "y"})


def test_global_matches_any_label_set_like_all_but_is_not_all() -> None:
    # Calico's GlobalNode evaluates to true; its "non-namespaced only" meaning is applied by
    # rewriting it in rule namespaceSelectors (tests/test_scoping.py).
    selector = parse_selector("global()")
    assert selector.matches({})
    assert selector.matches({"projectcalico.org/namespace": "x"})
    assert not selector.is_all
    assert str(selector) == "global()"


# --------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        # ! binds tighter than &&, which binds tighter than ||.
        ('!a == "1" && b == "2"', {"a": "0", "b": "2"}, True),
        ('!a == "1" && b == "2"', {"a": "1", "b": "2"}, False),
        ('a == "1" || b == "2" && c == "3"', {"a": "1"}, True),
        ('(a == "1" || b == "2") && c == "3"', {"a": "1"}, False),
        ('!(a == "1" || b == "2")', {"a": "1"}, False),
        ('!(a == "1" || b == "2")', {"c": "1"}, True),
    ],
)
def test_precedence_is_not_then_and_then_or(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    assert matches(text, labels) is expected


def test_leading_bangs_cancel_in_pairs() -> None:
    assert matches("!!has(a)", {"a": "x"})
    assert not matches("!! ! has(a)", {"a": "x"})
    assert parse_selector("!(!has(a))") == parse_selector("has(a)")


@pytest.mark.parametrize(
    "text",
    [
        'a=="b"&&c!="d"',
        "a == 'b' && c != 'd'",
        '\ta  ==  "b"\t&&\tc != "d" ',
        '(a == "b") && ((c != "d"))',
    ],
)
def test_whitespace_and_quotes_do_not_change_meaning(text: str) -> None:
    assert parse_selector(text) == parse_selector('a == "b" && c != "d"')


@pytest.mark.parametrize("text", ['a ==\n"b"', 'a == "b"\r', '\va == "b"', 'a\u00a0== "b"'])
def test_only_space_and_tab_are_whitespace(text: str) -> None:
    with pytest.raises(InvalidPolicy):
        parse_selector(text)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ('contains contains "x"', {"contains": "axb"}),
        ('in in {"x"}', {"in": "x"}),
        ('not not in {"y"}', {"not": "x"}),
        ('has == "x"', {"has": "x"}),
        ('all == "x"', {"all": "x"}),
        ('global == "x"', {"global": "x"}),
        ('starts starts with "x"', {"starts": "xy"}),
        ('k8s-app == "kube-dns"', {"k8s-app": "kube-dns"}),
        ('projectcalico.org/name == "kube_system"', {"projectcalico.org/name": "kube_system"}),
    ],
)
def test_keywords_are_operators_only_after_a_label_so_labels_may_use_them(
    text: str, labels: dict[str, str]
) -> None:
    assert matches(text, labels)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('a startswith "x"', 'a starts with "x"'),
        ('a starts \t with "x"', 'a starts with "x"'),
        ('a endswith "x"', 'a ends with "x"'),
        ('a notin {"x"}', 'a not in {"x"}'),
        ('a contains"x"', 'a contains "x"'),
        ('a in{"x"}', 'a in {"x"}'),
        ('a in {"x",}', 'a in {"x"}'),
        ("has( a\t)", "has(a)"),
        ("all( )", "all()"),
        ("global(\t)", "global()"),
    ],
)
def test_operator_words_are_recognised_by_prefix_like_calico(text: str, canonical: str) -> None:
    assert str(parse_selector(text)) == canonical


@pytest.mark.parametrize("text", ["has (a)", "all ()", "global ()"])
def test_function_keywords_take_no_space_before_the_parenthesis(text: str) -> None:
    column, message = problem_of(text)
    assert "expected an operator after label" in message
    assert column == text.index("(") + 1


def test_labels_may_be_512_characters_but_not_more() -> None:
    assert matches(f'{"k" * 512} == "v"', {"k" * 512: "v"})
    assert matches(f"has({'k' * 512})", {"k" * 512: "v"})
    for text in (f'{"k" * 513} == "v"', f"has({'k' * 513})"):
        with pytest.raises(InvalidPolicy, match="512"):
            parse_selector(text)


def test_strings_have_no_escapes_and_may_hold_the_other_quote() -> None:
    assert matches("a == 'say \"hi\"'", {"a": 'say "hi"'})
    assert matches('a == "it\'s"', {"a": "it's"})
    assert matches('a == "back\\slash"', {"a": "back\\slash"})
    assert matches('a == "ünï €"', {"a": "ünï €"})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("%", 1, "expected a label, got '%'"),
        ('a == "b" && %', 13, "expected a label, got '%'"),
        ('"a" == b', 1, "expected a label, got '\"a\"'"),
        ("b", 2, "expected an operator after label 'b', got the end of the selector"),
        ("a b", 3, "expected an operator after label 'a', got 'b'"),
        ('label = "v"', 7, "expected an operator after label 'label', got '='"),
        ('label squiggles "v"', 7, "got 'squiggles'"),
        ("b == b", 6, "expected a quoted string after '==', got 'b'"),
        ('label ends withs "v"', 16, "expected a quoted string after 'ends with', got 's'"),
        ('foo in ""', 8, "expected '{' after 'in', got '\"\"'"),
        ('foo in {"", ||', 13, "expected a quoted string or '}' in the set, got '||'"),
        ('foo in {"a" "b"}', 13, "expected ',' or '}' in the set"),
        ('foo == "bar" &', 14, "expected '&&', '||' or the end of the selector, got '&'"),
        ('a == "b" | has(x)', 10, "got '|'"),
        ('a == "b" c', 10, "expected '&&', '||' or the end of the selector, got 'c'"),
        ("!", 2, "expected a label, got the end of the selector"),
        ("has(a) &&", 10, "expected a label, got the end of the selector"),
        ("()", 2, "expected a label, got ')'"),
        ('(a == "b"', 10, "')' to close the '(' at column 1, got the end of the selector"),
        ('a == "b")', 9, "got ')'"),
        ('a == "b', 6, "unterminated string"),
        ("'FOO", 1, "unterminated string"),
        ("has()", 5, "expected a label inside has(), got ')'"),
        ("has( foo ", 10, "expected ')' to close has(foo, got the end of the selector"),
        ("all(x)", 5, "expected ')' after 'all(', got 'x)'"),
        ("global(", 8, "expected ')' after 'global(', got the end of the selector"),
    ],
)
def test_invalid_selectors_report_the_column_and_what_was_expected(
    text: str, column: int, expected: str
) -> None:
    got_column, message = problem_of(text)
    assert got_column == column
    assert expected in message


def test_problems_carry_a_hint_and_a_stable_code() -> None:
    with pytest.raises(InvalidPolicy) as info:
        parse_selector('a = "b"')
    problem = info.value.problem
    assert problem.code == "invalid-selector"
    assert "==" in problem.hint
    assert "(column 3)" in str(problem)


def test_the_first_problem_in_reading_order_is_reported() -> None:
    column, message = problem_of('% == "unterminated')
    assert column == 1
    assert "expected a label" in message


def test_parentheses_may_nest_up_to_the_limit() -> None:
    deep = "(" * MAX_DEPTH + 'a == "b"' + ")" * MAX_DEPTH
    assert matches(deep, {"a": "b"})
    too_deep = "(" * (MAX_DEPTH + 1) + 'a == "b"' + ")" * (MAX_DEPTH + 1)
    column, message = problem_of(too_deep)
    assert column == MAX_DEPTH + 1
    assert "nest" in message


def test_long_flat_selectors_parse_and_evaluate() -> None:
    many = " && ".join(f'k{i} == "v"' for i in range(3000))
    selector = parse_selector(many)
    assert selector.matches({f"k{i}": "v" for i in range(3000)})
    assert not selector.matches({f"k{i}": "v" for i in range(2999)})
    assert parse_selector("!" * 10001 + "has(a)").matches({})


@pytest.mark.parametrize("value", [None, 3, b'a == "b"', ["a"]])
def test_non_string_input_is_rejected_cleanly(value: object) -> None:
    with pytest.raises(InvalidPolicy):
        parse_selector(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- canonical form


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", "all()"),
        (" ( all() ) ", "all()"),
        ("a=='b'", 'a == "b"'),
        ("a == '\"'", "a == '\"'"),
        ('a contains "\'"', 'a contains "\'"'),
        ('a in {"z", "x", "z", "a"}', 'a in {"a", "x", "z"}'),
        ("a not in {'q', \"'\"}", 'a not in {"\'", "q"}'),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        ('(a == "1" && b == "2") && (c == "3")', 'a == "1" && b == "2" && c == "3"'),
        ('(a == "1" || b == "2") || c == "3"', 'a == "1" || b == "2" || c == "3"'),
        ('a == "1" || (b == "2" && c == "3")', 'a == "1" || b == "2" && c == "3"'),
        ('(a == "1" || b == "2") && c == "3"', '(a == "1" || b == "2") && c == "3"'),
        ('!(a == "1")', '!a == "1"'),
        ("!!!has(a)", "!has(a)"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    selector = parse_selector(text)
    assert str(selector) == canonical
    assert selector.text == canonical
    assert parse_selector(canonical) == selector


def test_equality_and_hash_follow_the_canonical_form() -> None:
    a = parse_selector("a=='x' && has(b)")
    b = parse_selector('(a == "x") && has( b )')
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, parse_selector("has(b) && a == 'x'")}) == 2
    assert repr(a) == "Selector('a == \"x\" && has(b)')"


def test_parses_are_cached() -> None:
    assert parse_selector('cache == "me"') is parse_selector('cache == "me"')


# --------------------------------------------------------------------------- API


def test_keys_lists_every_label_the_selector_reads() -> None:
    selector = parse_selector('a == "1" || !(has(b) && c in {"x"}) && d not in {} || all()')
    assert selector.keys() == frozenset({"a", "b", "c", "d"})
    assert parse_selector("global()").keys() == frozenset()


def test_and_builds_a_conjunction_and_drops_all() -> None:
    a, b = parse_selector('a == "1"'), parse_selector('b == "2" || c == "3"')
    both = a.and_(b)
    assert str(both) == 'a == "1" && (b == "2" || c == "3")'
    assert both.matches({"a": "1", "c": "3"})
    assert not both.matches({"a": "1"})
    assert Selector.and_(a, b) == both
    assert Selector.all().and_(a) == a
    assert a.and_(Selector.all()) is a
    assert Selector.all().and_(Selector.all()).is_all
    assert a.and_(b, Selector.label_equals("d", "4")) == parse_selector(
        'a == "1" && (b == "2" || c == "3") && d == "4"'
    )


def test_label_equals_quotes_as_needed_and_rejects_what_cannot_be_written() -> None:
    assert str(Selector.label_equals("k8s-app", 'x"y')) == "k8s-app == 'x\"y'"
    assert Selector.label_equals("a", "b") == parse_selector("a == 'b'")
    with pytest.raises(InvalidPolicy):
        Selector.label_equals("a", "both ' and \"")
    with pytest.raises(InvalidPolicy):
        Selector.label_equals("bad key", "v")
    with pytest.raises(InvalidPolicy):
        Selector.label_equals("", "v")


def test_label_in_and_has_builders() -> None:
    assert Selector.label_in("a", ["y", "x", "y"]) == parse_selector('a in {"x", "y"}')
    assert Selector.has("a") == parse_selector("has(a)")
    with pytest.raises(InvalidPolicy):
        Selector.has("a b")


def test_with_key_prefix_renames_every_key_but_keeps_all_and_global() -> None:
    selector = parse_selector('a == "1" && (has(b) || c not in {"x"}) && all() || global()')
    prefixed = selector.with_key_prefix("pcns.")
    assert str(prefixed) == (
        'pcns.a == "1" && (has(pcns.b) || pcns.c not in {"x"}) && all() || global()'
    )
    assert prefixed.matches({"pcns.a": "1", "pcns.b": ""})
    assert not prefixed.with_key_prefix("x").keys() & selector.keys()


def test_substitute_replaces_all_and_global_terms() -> None:
    selector = parse_selector("all() || !global()")
    swapped = selector.substitute(
        all_=Selector.has("ns"), global_=parse_selector('x == "1" && y == "2"')
    )
    assert str(swapped) == 'has(ns) || !(x == "1" && y == "2")'
    assert parse_selector("all()").substitute(global_=Selector.has("x")).is_all


def test_from_tree_normalises_like_the_parser() -> None:
    tree = And((Not(Not(Has("a"))), And((InSet("b", ("y", "x", "y")), All()))))
    assert str(Selector.from_tree(tree)) == 'has(a) && b in {"x", "y"} && all()'


# --------------------------------------------------------------------------- properties

KEYS = ["a", "b", "app", "k8s-app", "projectcalico.org/name", "contains", "in", "not", "has"]
VALUES = ["", "x", "web", "web-1", "it's", 'say "hi"', "a/b"]

leaf_nodes: st.SearchStrategy[Node] = st.one_of(
    st.just(All()),
    st.just(Global()),
    st.builds(Has, st.sampled_from(KEYS)),
    st.builds(
        Compare,
        st.sampled_from(KEYS),
        st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]),
        st.sampled_from(VALUES),
    ),
    st.builds(
        InSet,
        st.sampled_from(KEYS),
        st.lists(st.sampled_from(VALUES), max_size=3).map(tuple),
        st.booleans(),
    ),
)
trees: st.SearchStrategy[Node] = st.recursive(
    leaf_nodes,
    lambda children: st.one_of(
        st.builds(Not, children),
        st.lists(children, min_size=2, max_size=4).map(lambda ops: And(tuple(ops))),
        st.lists(children, min_size=2, max_size=4).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=10,
)
label_sets = st.dictionaries(
    st.sampled_from(KEYS), st.sampled_from([*VALUES, "webapp", "x-web", 'say "hi" now']), max_size=5
)


def write(node: Node, data: st.DataObject) -> str:
    """Render a tree as a user might type it: varied spacing, quotes and redundant parens."""

    def ws() -> str:
        return data.draw(st.sampled_from(["", " ", "  ", "\t"]))

    def sp() -> str:
        return data.draw(st.sampled_from([" ", "  ", "\t", " \t"]))

    def quote(value: str) -> str:
        if '"' in value:
            return f"'{value}'"
        if "'" in value:
            return f'"{value}"'
        q = data.draw(st.sampled_from(["'", '"']))
        return f"{q}{value}{q}"

    def grouped(child: Node, needs_parens: bool) -> str:
        text = write(child, data)
        if needs_parens or data.draw(st.booleans()):
            return f"({ws()}{text}{ws()})"
        return text

    match node:
        case All():
            return f"all({ws()})"
        case Global():
            return f"global({ws()})"
        case Has(key):
            return f"has({ws()}{key}{ws()})"
        case Compare(key, op, value):
            if op in ("==", "!="):
                return f"{key}{ws()}{op}{ws()}{quote(value)}"
            word = op.replace(" ", data.draw(st.sampled_from(["", " ", "\t "])))
            return f"{key}{sp()}{word}{ws()}{quote(value)}"
        case InSet(key, values, negated):
            word = "not" + data.draw(st.sampled_from(["", " "])) + "in" if negated else "in"
            items = ",".join(f"{ws()}{quote(v)}{ws()}" for v in values)
            trailing_comma = data.draw(st.booleans())
            if values and trailing_comma:
                items += ","
            return f"{key}{sp()}{word}{ws()}{{{items}}}"
        case Not(operand):
            return "!" + ws() + grouped(operand, isinstance(operand, And | Or))
        case And(operands):
            return f"{ws()}&&{ws()}".join(grouped(op, isinstance(op, Or)) for op in operands)
        case Or(operands):
            return f"{ws()}||{ws()}".join(grouped(op, False) for op in operands)
    raise AssertionError(node)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, labels=label_sets, data=st.data())
def test_parsed_text_evaluates_like_the_reference_model_of_its_tree(
    tree: Node, labels: dict[str, str], data: st.DataObject
) -> None:
    text = write(tree, data)
    selector = parse_selector(text)
    assert selector == Selector.from_tree(tree)
    assert selector.matches(labels) is reference_matches(tree, labels)
    assert selector.keys() == reference_keys(tree)


@settings(max_examples=500)
@given(
    leaf=leaf_nodes,
    value=st.sampled_from([*VALUES, "webapp", "x-web", "ax", "say"]),
    others=label_sets,
)
def test_every_operator_agrees_with_the_reference_whether_its_label_is_there_or_not(
    leaf: Node, value: str, others: dict[str, str]
) -> None:
    selector = Selector.from_tree(leaf)
    for key in reference_keys(leaf):
        present = {**others, key: value}
        assert selector.matches(present) is reference_matches(leaf, present)
        absent = {k: v for k, v in others.items() if k != key}
        assert selector.matches(absent) is reference_matches(leaf, absent)


@settings(max_examples=300)
@given(tree=trees, labels=label_sets)
def test_canonical_text_round_trips_with_the_same_meaning(
    tree: Node, labels: dict[str, str]
) -> None:
    selector = Selector.from_tree(tree)
    again = parse_selector(str(selector))
    assert again == selector
    assert str(again) == str(selector)
    assert again.matches(labels) is reference_matches(tree, labels)


def check_clean_outcome(text: str) -> None:
    """Any input either parses (and round-trips) or raises InvalidPolicy with a column."""
    problem = None
    try:
        selector = parse_selector(text)
    except InvalidPolicy as exc:
        problem = exc.problem
    if problem is None:
        assert parse_selector(str(selector)) == selector
    else:
        assert problem.column is not None
        assert 1 <= problem.column <= len(text) + 1
        assert problem.message.startswith("invalid selector")


SIGNIFICANT = st.sampled_from([*list("()!&|=\"'{},% \t\nahsinotcew"), "has(", "all(", "not"])


@settings(max_examples=400)
@given(st.text(max_size=60))
@example("(" * 500)
@example("has(" * 50)
@example("!" * 500)
@example("a in {" + '"x",' * 200)
def test_arbitrary_text_is_parsed_or_rejected_with_a_located_problem(text: str) -> None:
    check_clean_outcome(text)


@settings(max_examples=400)
@given(
    text=st.lists(SIGNIFICANT, max_size=40).map("".join),
)
def test_text_made_of_selector_syntax_is_parsed_or_rejected_cleanly(text: str) -> None:
    check_clean_outcome(text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, data=st.data())
def test_mutated_valid_selectors_are_parsed_or_rejected_cleanly(
    tree: Node, data: st.DataObject
) -> None:
    text = write(tree, data)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(text)))
        match data.draw(st.sampled_from(["delete", "insert", "duplicate"])):
            case "delete":
                end = data.draw(st.integers(position, min(len(text), position + 3)))
                text = text[:position] + text[end:]
            case "insert":
                text = text[:position] + data.draw(SIGNIFICANT) + text[position:]
            case "duplicate":
                text = text[:position] + text[position : position + 4] + text[position:]
    check_clean_outcome(text)


@settings(max_examples=300)
@given(parts=st.lists(trees, min_size=1, max_size=4), labels=label_sets)
def test_a_conjunction_of_selectors_is_the_selector_of_the_conjoined_trees(
    parts: list[Node], labels: dict[str, str]
) -> None:
    selectors = [Selector.from_tree(tree) for tree in parts]
    conjunction = Selector.and_(*selectors)
    kept = [s for s in selectors if not s.is_all]  # all() changes nothing: dropped
    rebuilt = (
        Selector.from_tree(And(tuple(s.root for s in kept)))
        if len(kept) > 1
        else (kept[0] if kept else Selector.all())
    )
    assert conjunction == rebuilt
    assert conjunction.root == rebuilt.root
    assert conjunction.matches(labels) is rebuilt.matches(labels)
    assert conjunction.matches(labels) is all(reference_matches(t, labels) for t in parts)
