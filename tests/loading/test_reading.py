"""Reading YAML and JSON: values that cannot be built and oversized aliases are located problems."""

from __future__ import annotations

import textwrap

import pytest

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loader import loads
from fqdnpolicy.loading.reading import MAX_EXPANDED_CHARS

TIER = """\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: t
spec:
  order: {order}
"""


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(InvalidPolicy) as info:
        loads(text, filename="in.yaml")
    return list(info.value.problems)


@pytest.mark.parametrize(
    "scalar",
    [
        "2001-02-30",
        "0x_",
        "9" * 5000,
        "!!int TCP",
        "!!bool maybe",
        "!!timestamp soon",
        "!!int ''",
        "!!float x",
    ],
)
def test_a_scalar_that_resolves_to_a_type_but_cannot_be_built_is_a_located_problem(
    scalar: str,
) -> None:
    [problem] = problems_of(TIER.format(order=scalar))
    assert problem.code == "yaml-value"
    assert (problem.file, problem.line) == ("in.yaml", 6)
    assert "cannot read" in problem.message
    assert len(problem.message) < 300


def test_a_lone_surrogate_in_text_given_to_loads_is_an_encoding_problem() -> None:
    [problem] = problems_of(TIER.format(order=1) + "# \ud800\n")
    assert problem.code == "encoding"
    assert "surrogate" in problem.message


def test_json_with_a_number_beyond_the_digit_limit_is_a_problem() -> None:
    # A leading tab makes YAML refuse the text, so it is read as JSON.
    text = '\t{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"},'
    text += ' "spec": {"order": ' + "9" * 5000 + "}}"
    [problem] = problems_of(text)
    assert problem.code == "json-value"


def test_aliases_are_bounded_by_the_characters_they_expand_to() -> None:
    value = "a" * 100_000
    aliases = MAX_EXPANDED_CHARS // len(value) + 2
    text = textwrap.dedent(f"""\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkSet
        metadata:
          name: &big {value}
          annotations:
        """) + "".join(f"    k{i}: *big\n" for i in range(aliases))
    problems = problems_of(text)
    assert [p.code for p in problems] == ["too-large"]
    assert "characters" in problems[0].message


def test_a_long_invalid_value_is_cut_short_in_its_message() -> None:
    name = "A" * 1_000_000
    text = f"apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: {name}\n"
    problems = problems_of(text)
    assert [p.code for p in problems] == ["invalid-name"]
    assert len(str(problems[0])) < 500
    assert "(1000000 characters)" in problems[0].message
