"""The strict loader: every kind of error is reported with file, line, field path and a hint."""

from __future__ import annotations

import ipaddress
import itertools
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loader import MAX_DEPTH, MAX_INPUT_BYTES, load, loads
from fqdnpolicy.loading.kubernetes import simplify_ports
from fqdnpolicy.loading.reading import read_yaml
from fqdnpolicy.model import NamedPort, Policy, PortRange, ResourceSet, Rule
from fqdnpolicy.selector import parse_selector

DATA = Path(__file__).parent / "data"

POLICY_HEAD = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: p
  namespace: default
spec:
"""


def problems_of(text: str, filename: str = "in.yaml") -> list[Problem]:
    with pytest.raises(InvalidPolicy) as info:
        loads(textwrap.dedent(text), filename=filename)
    return list(info.value.problems)


def one(text: str, code: str) -> Problem:
    found = [p for p in problems_of(text) if p.code == code]
    assert len(found) == 1, [str(p) for p in problems_of(text)]
    return found[0]


def policy(spec_body: str) -> str:
    return POLICY_HEAD + textwrap.indent(textwrap.dedent(spec_body), "  ")


# ------------------------------------------------------------------------------ located errors


def test_unknown_field_names_the_closest_valid_field_and_its_line() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              destinaton:
                nets: [10.0.0.0/8]
            """),
        "unknown-field",
    )
    assert p.path == "spec.egress[0].destinaton"
    assert (p.file, p.line) == ("in.yaml", 9)
    assert "did you mean 'destination'?" in p.hint
    assert p.resource == "NetworkPolicy default/p"


def test_unknown_field_suggestion_ignores_case() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              protocol: ICMP
              notIcmp: {type: 8}
            """),
        "unknown-field",
    )
    assert "did you mean 'notICMP'?" in p.hint


def test_wrong_type_is_reported_at_the_field() -> None:
    p = one(policy("order: first\n"), "wrong-type")
    assert (p.path, p.line) == ("spec.order", 7)
    assert "expected a number" in p.message


def test_a_number_is_not_silently_turned_into_a_string() -> None:
    text = POLICY_HEAD.replace("name: p", "name: 123") + "  selector: all()\n"
    p = one(text, "wrong-type")
    assert (p.path, p.line) == ("metadata.name", 4)


def test_a_string_is_not_silently_split_into_a_list() -> None:
    p = one(policy("types: Egress\n"), "wrong-type")
    assert p.path == "spec.types"
    assert "expected a list" in p.message


def test_invalid_cidr_is_located_at_the_list_item() -> None:
    p = one(
        policy("""\
            egress:
            - action: Deny
              destination:
                nets:
                - 10.0.0.0/8
                - 10.0.0.0/33
            """),
        "invalid-cidr",
    )
    assert (p.path, p.line) == ("spec.egress[0].destination.nets[1]", 12)


@pytest.mark.parametrize("port", ["70000", "-1", "'65536:65537'"])
def test_port_out_of_range(port: str) -> None:
    p = one(
        policy(f"""\
            egress:
            - action: Allow
              protocol: TCP
              destination:
                ports: [443, {port}]
            """),
        "invalid-port",
    )
    assert p.path == "spec.egress[0].destination.ports[1]"
    assert "out of range" in p.message
    assert p.line == 11


def test_port_range_with_min_above_max_suggests_the_swap() -> None:
    p = one(
        policy("""\
            ingress:
            - action: Allow
              protocol: TCP
              destination:
                ports: ["6050:6040"]
            """),
        "invalid-port",
    )
    assert "minimum above its maximum" in p.message
    assert '"6040:6050"' in p.hint


def test_ports_need_a_port_protocol() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              protocol: ICMP
              destination:
                ports: [53]
            """),
        "ports-need-protocol",
    )
    assert (p.path, p.line) == ("spec.egress[0].destination.ports", 11)


def test_numeric_ports_without_any_protocol_are_rejected_too() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              source:
                notPorts: [http, 80]
            """),
        "ports-need-protocol",
    )
    assert p.path == "spec.egress[0].source.notPorts"
    assert "protocol: TCP" in p.hint


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP", "6", "17", "132", "'6'"])
def test_ports_with_tcp_udp_or_sctp_load(protocol: str) -> None:
    rs = loads(
        policy(f"""\
            egress:
            - action: Allow
              protocol: {protocol}
              destination:
                ports: [53, "1000:2000", dns]
            """)
    )
    ports = rs.policies[0].spec.egress[0].destination.ports
    assert ports == (PortRange(53, 53), PortRange(1000, 2000), NamedPort("dns"))


def test_domains_in_a_source_are_rejected() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              source:
                domains: [example.com]
            """),
        "domains-in-source",
    )
    assert (p.path, p.line) == ("spec.egress[0].source.domains", 10)


def test_domains_in_an_ingress_rule_are_rejected() -> None:
    p = one(
        policy("""\
            ingress:
            - action: Allow
            - action: Allow
              destination:
                domains: [example.com]
            """),
        "domains-in-ingress",
    )
    assert (p.path, p.line) == ("spec.ingress[1].destination.domains", 11)


@pytest.mark.parametrize("action", ["Deny", "Log", "Pass"])
def test_domains_need_an_allow_rule(action: str) -> None:
    p = one(
        policy(f"""\
            egress:
            - action: {action}
              destination:
                domains: [example.com]
            """),
        "domains-need-allow",
    )
    assert p.path == "spec.egress[0].destination.domains"
    assert action in p.message


@pytest.mark.parametrize(
    ("extra", "named"),
    [("nets: [10.0.0.0/8]", "nets"), ("selector: app == 'x'", "selector")],
)
def test_domains_cannot_share_a_destination_with_nets_or_selector(extra: str, named: str) -> None:
    p = one(
        policy(f"""\
            egress:
            - action: Allow
              destination:
                domains: [example.com]
                {extra}
            """),
        "domains-with-nets-or-selector",
    )
    assert named in p.message
    assert p.line == 10


@pytest.mark.parametrize("net", ["0.0.0.0/0", "::/0", "10.0.0.0/0"])
def test_catch_all_in_not_nets_is_rejected(net: str) -> None:
    p = one(
        policy(f"""\
            egress:
            - action: Allow
              destination:
                notNets: [10.0.0.0/8, "{net}"]
            """),
        "catch-all-not-nets",
    )
    assert (p.path, p.line) == ("spec.egress[0].destination.notNets[1]", 10)


def test_bare_address_in_not_nets_is_a_single_host() -> None:
    rs = loads(
        policy("""\
            egress:
            - action: Allow
              destination:
                notNets: ["0.0.0.0"]
            """)
    )
    assert rs.policies[0].spec.egress[0].destination.not_nets == (
        ipaddress.ip_network("0.0.0.0/32"),
    )


def test_mixed_ipv4_and_ipv6_nets_are_rejected_across_source_and_destination() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              source:
                nets: [10.0.0.0/8]
              destination:
                nets: ["2001:db8::/32"]
            """),
        "mixed-ip-versions",
    )
    assert p.path == "spec.egress[0].destination.nets"


def test_ip_version_must_match_the_nets() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              ipVersion: 6
              destination:
                nets: [10.0.0.0/8]
            """),
        "mixed-ip-versions",
    )
    assert "ipVersion 6" in p.message


@pytest.mark.parametrize(
    ("icmp", "path", "words"),
    [
        ("{type: 255}", "spec.egress[0].icmp.type", "ICMP type 255 out of range"),
        ("{type: 8, code: 256}", "spec.egress[0].icmp.code", "ICMP code 256 out of range"),
        ("{code: 0}", "spec.egress[0].icmp.code", "without an ICMP type"),
    ],
)
def test_icmp_fields_are_range_checked(icmp: str, path: str, words: str) -> None:
    p = one(
        policy(f"""\
            egress:
            - action: Allow
              protocol: ICMP
              icmp: {icmp}
            """),
        "invalid-icmp",
    )
    assert p.path == path
    assert words in p.message
    assert p.line == 10


def test_icmp_needs_an_icmp_protocol() -> None:
    p = one(
        policy("""\
            egress:
            - action: Allow
              protocol: TCP
              notICMP: {type: 8}
            """),
        "icmp-needs-protocol",
    )
    assert p.path == "spec.egress[0].notICMP"


def test_invalid_selector_reports_the_column_inside_the_selector() -> None:
    p = one(policy('selector: app == "backend" &&\n'), "invalid-selector")
    assert (p.path, p.line) == ("spec.selector", 7)
    assert p.column is not None
    assert f"column {p.column} of the selector" in p.message


def test_invalid_domain_pattern_is_located() -> None:
    (p,) = problems_of(
        policy("""\
            egress:
            - action: Allow
              destination:
                domains: [ok.example.com, "www.g*.com"]
            """)
    )
    assert p.path == "spec.egress[0].destination.domains[1]"
    assert "invalid domain pattern" in p.message
    assert p.line == 10


def test_unknown_api_version_and_kind_suggest_valid_ones() -> None:
    problems = problems_of("""\
        apiVersion: projectcalico.org/v2
        kind: NetworkPolicy
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolisy
        ---
        apiVersion: networking.k8s.io/v1
        kind: Tier
        """)
    api, kind, wrong_api = problems
    assert (api.code, api.line) == ("unknown-api-version", 1)
    assert "projectcalico.org/v3" in api.hint
    assert (kind.code, kind.line) == ("unknown-kind", 5)
    assert "did you mean 'GlobalNetworkPolicy'?" in kind.hint
    assert wrong_api.code == "unknown-kind"
    assert "projectcalico.org/v3" in wrong_api.hint


def test_missing_name_and_missing_namespace() -> None:
    problems = problems_of("""\
        apiVersion: projectcalico.org/v3
        kind: NetworkSet
        metadata:
          labels: {a: b}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata:
          name: p
        """)
    missing_name, missing_ns = problems
    assert (missing_name.code, missing_name.path, missing_name.line) == (
        "missing-field",
        "metadata.name",
        3,
    )
    assert (missing_ns.code, missing_ns.path, missing_ns.line) == (
        "missing-namespace",
        "metadata.namespace",
        8,
    )


def test_global_resources_take_no_namespace_and_namespaced_ones_no_global_fields() -> None:
    problems = problems_of("""\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: g, namespace: default}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: n, namespace: default}
        spec:
          doNotTrack: true
        """)
    assert [(p.code, p.line) for p in problems] == [
        ("unexpected-namespace", 3),
        ("global-only-field", 9),
    ]


def test_duplicate_names_in_one_namespace_are_rejected_with_the_first_location() -> None:
    text = """\
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p, namespace: a}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p, namespace: b}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p, namespace: a}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: p}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: p}
        """
    dups = [p for p in problems_of(text) if p.code == "duplicate-name"]
    assert [(p.line, p.resource) for p in dups] == [
        (11, "NetworkPolicy a/p"),
        (19, "GlobalNetworkPolicy p"),
    ]
    assert "first defined at in.yaml:1" in dups[0].hint


def test_tier_prefixed_name_and_bare_name_are_the_same_policy() -> None:
    text = """\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: security.p}
        spec: {tier: security}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: p}
        spec: {tier: security}
        """
    (dup,) = problems_of(text)
    assert dup.code == "duplicate-name"


def test_tier_prefix_must_name_the_policy_tier() -> None:
    p = one(
        """\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: security.p}
        spec: {tier: platform}
        """,
        "tier-prefix",
    )
    assert "spec.tier: security" in p.hint


def test_policy_names_follow_calico_rules() -> None:
    for bad in ("Upper", "a.b.c", "-x", "under_score"):
        text = POLICY_HEAD.replace("name: p", f"name: {bad}")
        assert "invalid-name" in {p.code for p in problems_of(text)}, bad
    for good in ("a", "default.a", "knp.default.a.b"):
        loads(POLICY_HEAD.replace("name: p", f"name: {good}"))


def test_yaml_syntax_error_has_a_line() -> None:
    (p,) = problems_of("apiVersion: projectcalico.org/v3\nkind: [unclosed\nmetadata: {}\n")
    assert p.code == "yaml-syntax"
    assert p.file == "in.yaml"
    assert p.line == 3


def test_duplicate_yaml_keys_are_errors_not_silent_overwrites() -> None:
    p = one(policy("order: 1\norder: 2\n"), "duplicate-key")
    assert p.line == 8
    assert "line 7" in p.hint


def test_python_tags_are_never_constructed() -> None:
    text = "!!python/object/apply:os.system ['echo pwned']\n"
    (p,) = problems_of(text)
    assert p.code == "yaml-tag"


def test_every_problem_is_collected_not_just_the_first() -> None:
    problems = problems_of(
        policy("""\
            selector: "bad =="
            egress:
            - action: Allow
              protocol: TCP
              destination:
                ports: [99999]
            - action: Deny
              destination:
                domains: [example.com]
            - action: Maybe
            """)
    )
    assert [p.code for p in problems] == [
        "invalid-selector",
        "invalid-port",
        "domains-need-allow",
        "invalid",
    ]
    assert [p.line for p in problems] == sorted(p.line or 0 for p in problems)
    assert "did you mean" not in problems[-1].hint or "Allow" in problems[-1].hint


def test_loading_never_half_succeeds() -> None:
    good = POLICY_HEAD + "  order: 1\n"
    bad = POLICY_HEAD.replace("name: p", "name: q") + "  order: x\n"
    with pytest.raises(InvalidPolicy):
        loads(good + "---\n" + bad)


def test_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POLICY_HEAD + "  order: x\n")
    (tmp_path / "b.yaml").write_text(POLICY_HEAD.replace("name: p", "name: q") + "  tier: X\n")
    with pytest.raises(InvalidPolicy) as info:
        load(tmp_path)
    assert [(Path(p.file or "").name, p.line) for p in info.value.problems] == [
        ("a.yaml", 7),
        ("b.yaml", 7),
    ]


def test_missing_path_and_non_utf8_file_are_problems(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"kind: \xe9\n")
    with pytest.raises(InvalidPolicy) as info:
        load(tmp_path / "nope.yaml", tmp_path / "latin1.yaml")
    assert [p.code for p in info.value.problems] == ["encoding", "no-such-file"]


# ------------------------------------------------------------------------------- input forms


def test_list_wrappers_lend_their_kind_to_items() -> None:
    text = """\
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicyList
        items:
        - metadata: {name: a, namespace: default}
        - metadata: {name: b, namespace: default}
        ---
        apiVersion: v1
        kind: List
        items:
        - apiVersion: projectcalico.org/v3
          kind: GlobalNetworkSet
          metadata: {name: s}
          spec: {nets: [192.0.2.0/24]}
        """
    rs = loads(textwrap.dedent(text))
    assert [p.name for p in rs.policies] == ["a", "b"]
    assert [s.name for s in rs.network_sets] == ["s"]
    assert rs.policies[1].source is not None
    assert rs.policies[1].source.line == 5


def test_problems_inside_list_items_have_item_relative_paths_and_lines() -> None:
    (p,) = problems_of("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: projectcalico.org/v3
          kind: GlobalNetworkPolicy
          metadata: {name: g}
          spec:
            order: high
        """)
    assert (p.path, p.line, p.resource) == ("spec.order", 8, "GlobalNetworkPolicy g")


def test_directories_are_read_recursively_in_sorted_order() -> None:
    rs = load(DATA / "loader_tree")
    assert [r.display_name for r in rs] == [
        "Tier security",
        "GlobalNetworkSet github",
        "GlobalNetworkPolicy security.egress-github",
    ]
    assert [Path(r.source.file).name for r in rs if r.source] == [
        "tier.yml",
        "sets.yaml",
        "policy.json",
    ]


def test_json_with_tab_indentation_loads() -> None:
    text = json.dumps(
        {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}},
        indent="\t",
    )
    assert loads(text, filename="t.json").tiers[0].name == "t"


def test_empty_documents_are_skipped() -> None:
    assert loads("---\n---\n") == ResourceSet()


def test_server_populated_metadata_is_accepted_and_dropped() -> None:
    text = POLICY_HEAD.replace(
        "  namespace: default\n",
        "  namespace: default\n  uid: 1234\n  resourceVersion: '5'\n  creationTimestamp: null\n",
    )
    assert loads(text).policies[0].name == "p"


# -------------------------------------------------------------------------- bounded, no hangs


def test_alias_bomb_is_rejected_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (p,) = problems_of("\n".join(lines) + "\n")
    assert p.code == "too-large"


def test_deep_nesting_is_rejected_without_recursion() -> None:
    for text in ("[" * 100_000, "a:\n" + "".join(" " * i + "- \n" for i in range(1, 200))):
        (p,) = problems_of(text)
        assert p.code in ("too-deep", "yaml-syntax")
    (p,) = problems_of("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5))
    assert p.code == "too-deep"


def test_deep_json_is_rejected() -> None:
    (p,) = problems_of("\t" + "[" * 5000 + "]" * 5000, filename="x.json")
    assert p.code == "too-deep"


def test_huge_input_is_rejected_before_parsing() -> None:
    (p,) = problems_of("#" * (MAX_INPUT_BYTES + 1))
    assert p.code == "too-large"


def test_recursive_alias_is_rejected() -> None:
    (p,) = problems_of("a: &x [*x]\n")
    assert p.code in ("yaml-alias", "too-deep")


# ------------------------------------------------------ reference models for the fast internals

yaml_scalars = st.one_of(
    st.integers(-1000, 1000),
    st.booleans(),
    st.none(),
    st.text("abcxyz -.:/*", min_size=1, max_size=8),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text("abcdefgh", min_size=1, max_size=5), inner, max_size=4),
    ),
    max_leaves=25,
)


def _reference_lines(node: yaml.Node, path: str, out: dict[str, int]) -> None:
    """Path -> line from PyYAML's own (recursive) composer: the obviously-correct version."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else key.value
            out[sub] = key.start_mark.line + 1
            _reference_lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out[f"{path}[{i}]"] = value.start_mark.line + 1
            _reference_lines(value, f"{path}[{i}]", out)


@settings(max_examples=150, deadline=None)
@given(st.lists(yaml_values, min_size=1, max_size=3), st.booleans())
def test_event_reader_matches_pyyaml_values_and_lines(values: list[object], flow: bool) -> None:
    text = yaml.safe_dump_all(values, default_flow_style=flow)
    docs, problems = read_yaml(text, "x")
    assert problems == []
    assert [d.value for d in docs] == list(yaml.safe_load_all(text))
    for doc, node in zip(docs, yaml.compose_all(text, Loader=yaml.SafeLoader), strict=True):
        expected: dict[str, int] = {}
        _reference_lines(node, "", expected)
        assert doc.lines == expected


def _ports_reference(ports: list[PortRange]) -> set[int]:
    return {n for p in ports for n in range(p.first, p.last + 1)}


@given(st.lists(st.integers(0, 300).map(lambda n: PortRange(n, n)), min_size=2, max_size=30))
def test_simplified_ports_cover_the_same_ports_with_separate_sorted_ranges(
    ports: list[PortRange],
) -> None:
    out = simplify_ports(list(ports))
    ranges = [p for p in out if isinstance(p, PortRange)]
    assert _ports_reference(ranges) == _ports_reference(ports)
    for left, right in itertools.pairwise(ranges):
        assert left.last + 1 < right.first  # sorted, neither overlapping nor adjacent


# ------------------------------------------------------- Kubernetes NetworkPolicy conversion

K8S_HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: prod
spec:
"""


def k8s(spec_body: str) -> Policy:
    rs = loads(K8S_HEAD + textwrap.indent(textwrap.dedent(spec_body), "  "))
    (converted,) = rs.policies
    return converted


def test_k8s_policy_is_named_ordered_and_tiered_as_calico_converts_it() -> None:
    p = k8s("podSelector: {}\n")
    assert (p.kind, p.name, p.namespace) == ("NetworkPolicy", "knp.default.web", "prod")
    assert (p.spec.order, p.spec.tier) == (1000.0, "default")
    assert p.origin == "networking.k8s.io/v1"
    assert p.spec.selector == parse_selector("projectcalico.org/orchestrator == 'k8s'")
    assert p.spec.types == ("Ingress",)
    assert (p.spec.ingress, p.spec.egress) == ((), ())


def test_k8s_pod_selector_becomes_a_calico_selector() -> None:
    p = k8s("""\
        podSelector:
          matchLabels: {role: db, app: shop}
          matchExpressions:
          - {key: env, operator: In, values: [prod, stage]}
          - {key: canary, operator: DoesNotExist}
          - {key: tier, operator: Exists}
          - {key: zone, operator: NotIn, values: [a]}
        """)
    expected = parse_selector(
        "projectcalico.org/orchestrator == 'k8s' && app == 'shop' && role == 'db' && "
        "env in {'prod', 'stage'} && !has(canary) && has(tier) && zone not in {'a'}"
    )
    assert p.spec.selector == expected
    for labels, selected in [
        (
            {
                "projectcalico.org/orchestrator": "k8s",
                "app": "shop",
                "role": "db",
                "env": "prod",
                "tier": "1",
            },
            True,
        ),
        (
            {
                "projectcalico.org/orchestrator": "k8s",
                "app": "shop",
                "role": "db",
                "env": "prod",
                "tier": "1",
                "canary": "y",
            },
            False,
        ),
        ({"app": "shop", "role": "db", "env": "prod", "tier": "1"}, False),
    ]:
        assert p.spec.selector.matches(labels) is selected


def test_k8s_peers_and_ports_become_one_rule_per_protocol_and_peer() -> None:
    p = k8s("""\
        podSelector: {}
        ingress:
        - from:
          - podSelector: {matchLabels: {role: fe}}
          - namespaceSelector: {matchLabels: {team: a}}
          - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
          ports:
          - port: 81
          - {protocol: UDP, port: 53}
          - port: 80
          - {port: 8000, endPort: 8080}
          - port: http
        """)
    rules = p.spec.ingress
    assert [r.protocol for r in rules] == ["TCP"] * 3 + ["UDP"] * 3
    assert all(r.action == "Allow" for r in rules)
    tcp_ports = (NamedPort("http"), PortRange(80, 81), PortRange(8000, 8080))
    assert [r.destination.ports for r in rules] == [tcp_ports] * 3 + [(PortRange(53, 53),)] * 3
    pod, ns, block = rules[:3]
    assert pod.source.selector == parse_selector(
        "projectcalico.org/orchestrator == 'k8s' && role == 'fe'"
    )
    assert pod.source.namespace_selector is None  # the policy's own namespace
    assert ns.source.namespace_selector == parse_selector("team == 'a'")
    assert ns.source.selector == parse_selector("projectcalico.org/orchestrator == 'k8s'")
    assert block.source.nets == (ipaddress.ip_network("10.0.0.0/8"),)
    assert block.source.not_nets == (ipaddress.ip_network("10.1.0.0/16"),)
    assert block.source.selector is None


def test_k8s_empty_namespace_selector_means_all_namespaces() -> None:
    p = k8s("""\
        podSelector: {}
        policyTypes: [Egress]
        egress:
        - to: [{namespaceSelector: {}}]
        """)
    (rule,) = p.spec.egress
    assert rule.destination.namespace_selector == parse_selector("all()")
    assert rule.protocol is None
    assert rule.destination.ports == ()
    assert p.spec.types == ("Egress",)


def test_k8s_rule_without_peers_or_ports_allows_everything() -> None:
    p = k8s("""\
        podSelector: {}
        ingress: [{}]
        egress: [{}]
        """)
    assert p.spec.ingress == (Rule(action="Allow"),)
    assert p.spec.egress == (Rule(action="Allow"),)
    assert p.spec.types == ("Ingress", "Egress")  # API server default with egress rules


def test_k8s_port_without_number_means_all_ports_of_that_protocol() -> None:
    p = k8s("""\
        podSelector: {}
        ingress:
        - ports: [{protocol: UDP}, {protocol: UDP, port: 53}, {port: 443}]
        """)
    assert [(r.protocol, r.destination.ports) for r in p.spec.ingress] == [
        ("TCP", (PortRange(443, 443),)),
        ("UDP", ()),
    ]


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ("ingress: [{from: [{}]}]", "invalid-peer", "spec.ingress[0].from[0]"),
        (
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
            "invalid-peer",
            "spec.ingress[0].from[0].ipBlock",
        ),
        (
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]",
            "invalid-cidr",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        ("egress: [{ports: [{port: 0}]}]", "invalid-port", "spec.egress[0].ports[0].port"),
        (
            "egress: [{ports: [{port: 90, endPort: 80}]}]",
            "invalid-port",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "egress: [{ports: [{port: http, endPort: 80}]}]",
            "invalid-port",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "egress: [{ports: [{protocol: ICMP}]}]",
            "invalid-protocol",
            "spec.egress[0].ports[0].protocol",
        ),
        (
            "podSelector: {matchExpressions: [{key: a, operator: in, values: [x]}]}",
            "invalid-selector",
            "spec.podSelector.matchExpressions[0].operator",
        ),
        ("policyTypes: [Egres]", "invalid", "spec.policyTypes[0]"),
        ("ingress: [{form: []}]", "unknown-field", "spec.ingress[0].form"),
    ],
)
def test_invalid_k8s_policies_are_located(body: str, code: str, path: str) -> None:
    problems = problems_of(K8S_HEAD + "  " + body + "\n")
    assert [(p.code, p.path) for p in problems] == [(code, path)]
    assert problems[0].line == 7


def test_k8s_and_calico_policies_with_the_same_converted_name_collide() -> None:
    text = (
        K8S_HEAD
        + "  podSelector: {}\n---\n"
        + POLICY_HEAD.replace("name: p", "name: knp.default.web").replace(
            "namespace: default", "namespace: prod"
        )
    )
    (dup,) = problems_of(text)
    assert dup.code == "duplicate-name"


def test_exponent_floats_without_a_dot_are_numbers_as_in_json_and_kubernetes() -> None:
    # json.dumps writes -5e-324; YAML 1.1 alone would read it as a string.
    text = (
        '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",'
        ' "metadata": {"name": "x"}, "spec": {"order": -5e-324}}'
    )
    assert loads(text).policies[0].spec.order == -5e-324
    yaml_text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
    yaml_text += "metadata: {name: x}\nspec: {order: 1e3}\n"
    assert loads(yaml_text).policies[0].spec.order == 1000.0
    quoted = yaml_text.replace("1e3", '"1e3"')
    with pytest.raises(InvalidPolicy, match="expected a number"):
        loads(quoted)
