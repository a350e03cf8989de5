"""The label index finds, for a selector, exactly the subjects holding the label it requires
(every subject when it requires none), in groups of equal labels, through any sequence of
filings and removals."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.engine.labelindex import LabelIndex
from fqdnpolicy.selector import parse_selector

label_sets = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]))
steps = st.lists(
    st.tuples(st.integers(0, 5), st.one_of(st.none(), label_sets)),  # None: discard
    max_size=30,
)
SELECTORS = ['app == "a"', 'tier == "b"', "all()", 'app == "b" && tier == "a"', "has(app)"]


@given(steps)
def test_the_subjects_of_a_selector_are_those_holding_its_required_label(
    changes: list[tuple[int, dict[str, str] | None]],
) -> None:
    index: LabelIndex[str, int] = LabelIndex()
    filed: dict[int, dict[str, str]] = {}  # the model: subject -> its labels
    for key, labels in changes:
        if labels is None:
            index.discard_subject(key)
            filed.pop(key, None)
        else:
            index.add_subject(key, labels)
            filed[key] = labels
        for text in SELECTORS:
            selector = parse_selector(text)
            groups = index.groups_for(selector)
            assert all(groups)
            for group in groups:  # one evaluation must answer for every subject of a group
                assert len({frozenset(filed[k].items()) for k in group}) == 1
            found = [key for group in groups for key in group]
            assert len(found) == len(set(found))  # each subject once
            required = {
                'app == "a"': ("app", "a"),
                'tier == "b"': ("tier", "b"),
                'app == "b" && tier == "a"': ("app", "b"),
            }.get(text)
            expected = {k for k, ls in filed.items() if required is None or required in ls.items()}
            assert set(found) == expected
