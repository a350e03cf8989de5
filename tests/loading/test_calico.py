"""Calico's validator, case by case: what it refuses we refuse, what it takes we take."""

from __future__ import annotations

import textwrap

import pytest

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loader import dump, loads
from fqdnpolicy.model import NamedPort, PortRange


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(InvalidPolicy) as info:
        loads(textwrap.dedent(text), filename="in.yaml")
    return list(info.value.problems)


def rule(body: str) -> str:
    return textwrap.dedent("""\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata:
          name: p
        spec:
          egress:
        """) + textwrap.indent(textwrap.dedent(body), "  ")


TIER_HEAD = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n  annotations:\n"


def tier(body: str) -> str:
    return "apiVersion: projectcalico.org/v3\nkind: Tier\n" + textwrap.dedent(body)


# -- ports and protocols -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "path"),
    [
        ("ports: [0]", "destination.ports[0]"),
        ("notPorts: [0]", "destination.notPorts[0]"),
        ('ports: ["0:80"]', "destination.ports[0]"),
    ],
)
def test_port_zero_is_refused_as_calico_refuses_it(ports: str, path: str) -> None:
    [problem] = problems_of(
        rule(f"""\
            - action: Allow
              protocol: TCP
              destination:
                {ports}
            """)
    )
    assert problem.code == "invalid-port"
    assert problem.path == f"spec.egress[0].{path}"
    assert "1-65535" in problem.hint


def test_a_port_of_thousands_of_digits_is_out_of_range_not_a_crash() -> None:
    [problem] = problems_of(
        rule(f"""\
            - action: Allow
              protocol: TCP
              destination:
                ports: ["{"9" * 5000}:1"]
            """)
    )
    assert problem.code == "invalid-port"
    assert len(problem.message) < 300


@pytest.mark.parametrize(
    ("written", "spelled"), [("tcp", "TCP"), ("icmpv6", "ICMPv6"), ("Udp", "UDP")]
)
def test_a_protocol_name_in_another_letter_case_is_refused_with_the_right_spelling(
    written: str, spelled: str
) -> None:
    [problem] = problems_of(rule(f"- action: Allow\n  protocol: {written}\n"))
    assert problem.code == "invalid-protocol"
    assert problem.path == "spec.egress[0].protocol"
    assert repr(spelled) in problem.message


@pytest.mark.parametrize(("written", "number"), [('"255"', 255), ("'6'", 6), ("'1'", 1)])
def test_a_protocol_number_written_as_a_string_is_that_number(written: str, number: int) -> None:
    rs = loads(rule(f"- action: Allow\n  protocol: {written}\n  notProtocol: {written}\n"))
    assert rs.policies[0].spec.egress[0].protocol == number
    assert loads(dump(rs)) == rs


@pytest.mark.parametrize("written", ['"0"', '"256"', '"06"', '" 6"'])
def test_a_protocol_string_that_is_no_number_1_to_255_is_refused(written: str) -> None:
    [problem] = problems_of(rule(f"- action: Allow\n  protocol: {written}\n"))
    assert problem.code == "invalid-protocol"


def test_named_ports_need_no_protocol() -> None:
    rs = loads(
        rule("""\
            - action: Allow
              destination:
                ports: [http]
                notPorts: [metrics]
            """)
    )
    dest = rs.policies[0].spec.egress[0].destination
    assert (dest.ports, dest.not_ports) == ((NamedPort("http"),), (NamedPort("metrics"),))


def test_numeric_ports_still_need_a_protocol() -> None:
    [problem] = problems_of(
        rule("""\
            - action: Allow
              destination:
                ports: [http, 80]
            """)
    )
    assert problem.code == "ports-need-protocol"


def test_named_ports_with_a_protocol_that_has_no_ports_are_refused() -> None:
    [problem] = problems_of(
        rule("""\
            - action: Allow
              protocol: ICMP
              destination:
                ports: [http]
            """)
    )
    assert problem.code == "ports-need-protocol"


def test_port_ranges_from_one_load() -> None:
    rs = loads(rule("- action: Allow\n  protocol: UDP\n  destination:\n    ports: ['1:65535']\n"))
    assert rs.policies[0].spec.egress[0].destination.ports == (PortRange(1, 65535),)


# -- metadata ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["NetworkSet", "GlobalNetworkSet"])
def test_the_reserved_namespace_label_is_refused_on_network_sets(kind: str) -> None:
    namespace = "  namespace: default\n" if kind == "NetworkSet" else ""
    text = (
        f"apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: s\n{namespace}"
        "  labels:\n    projectcalico.org/namespace: default\n"
    )
    [problem] = problems_of(text)
    assert problem.code == "reserved-label"
    assert problem.path == "metadata.labels.projectcalico.org/namespace"


def test_malformed_keys_in_a_rules_annotations_are_refused() -> None:
    [problem] = problems_of(
        rule("""\
            - action: Allow
              metadata:
                annotations:
                  "-bad key": x
            """)
    )
    assert problem.code == "invalid-label"
    assert problem.path == "spec.egress[0].metadata.annotations.-bad key"
    assert "annotation key" in problem.message


def test_a_resources_annotations_over_256_kib_in_total_are_refused() -> None:
    values = "".join(f"    k{i}: {'v' * 60_000}\n" for i in range(5))
    text = TIER_HEAD + values
    [problem] = problems_of(text)
    assert problem.code == "annotations-too-large"
    assert problem.path == "metadata.annotations"


def test_annotations_up_to_256_kib_load() -> None:
    values = "".join(f"    k{i}: {'v' * 60_000}\n" for i in range(4))
    text = TIER_HEAD + values
    assert len(loads(text).tiers) == 1


# -- orders and the built-in tiers -------------------------------------------------------------


@pytest.mark.parametrize("order", [".nan", ".inf", "-.inf", "1e400"])
def test_an_order_that_is_no_finite_number_is_refused(order: str) -> None:
    for text in (
        tier(f"metadata: {{name: t}}\nspec: {{order: {order}}}\n"),
        rule("- action: Allow\n").replace("spec:\n", f"spec:\n  order: {order}\n"),
    ):
        [problem] = problems_of(text)
        assert problem.code == "not-finite"
        assert problem.path == "spec.order"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_an_order_that_is_no_finite_number_is_refused_in_json(constant: str) -> None:
    # A leading tab makes YAML refuse the text, so it is read as JSON (which has these words).
    text = '\t{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"},'
    with pytest.raises(InvalidPolicy) as info:
        loads(text + f' "spec": {{"order": {constant}}}}}')
    assert [p.code for p in info.value.problems] == ["not-finite"]


@pytest.mark.parametrize(
    ("name", "spec", "path"),
    [
        ("default", "{defaultAction: Pass}", "spec.defaultAction"),
        ("default", "{order: 5}", "spec.order"),
        ("kube-admin", "{order: 5}", "spec.order"),
        ("kube-admin", "{defaultAction: Deny}", "spec.defaultAction"),
        ("kube-baseline", "{order: 1000}", "spec.order"),
        ("kube-baseline", "{defaultAction: Deny}", "spec.defaultAction"),
    ],
)
def test_the_built_in_tiers_fixed_settings_cannot_be_changed(
    name: str, spec: str, path: str
) -> None:
    [problem] = problems_of(tier(f"metadata: {{name: {name}}}\nspec: {spec}\n"))
    assert problem.code == "invalid-tier"
    assert problem.path == path


@pytest.mark.parametrize(
    ("name", "order", "action"),
    [
        ("default", 1_000_000, "Deny"),
        ("kube-admin", 1_000, "Pass"),
        ("kube-baseline", 10**7, "Pass"),
    ],
)
def test_a_built_in_tier_written_without_its_settings_gets_them(
    name: str, order: int, action: str
) -> None:
    [loaded] = loads(tier(f"metadata: {{name: {name}}}\n")).tiers
    assert (loaded.spec.order, loaded.spec.default_action) == (order, action)
