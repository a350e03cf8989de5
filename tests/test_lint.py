"""The linter: policies that load but do not do what their author expects."""

from __future__ import annotations

import importlib.resources

import fqdnpolicy
from fqdnpolicy.errors import Problem
from fqdnpolicy.lint import lint

HEADER = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n"


def policy(body: str, *, name: str = "p", namespace: str = "default") -> str:
    return f"{HEADER}metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}"


GNP_DNS = """\
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-dns}
spec:
  selector: all()
  egress:
  - action: Allow
    protocol: UDP
    destination:
      selector: k8s-app == "kube-dns"
      ports: [53]
"""


def codes(text: str) -> list[tuple[str, str]]:
    return [(p.code, p.path) for p in lint(fqdnpolicy.loads(text))]


def test_every_warning_is_a_located_warning() -> None:
    seed = importlib.resources.files("fqdnpolicy") / "data" / "seed"
    with importlib.resources.as_file(seed) as path:
        warnings = lint(fqdnpolicy.load(path))
    assert warnings
    for warning in warnings:
        assert isinstance(warning, Problem)
        assert warning.severity == "warning"
        assert warning.file is not None
        assert warning.line is not None
        assert warning.resource
        assert warning.path
        assert warning.code


def test_wildcard_over_a_public_suffix_is_too_broad() -> None:
    text = (
        policy(
            """  egress:
  - action: Allow
    destination: {domains: ["api.service.com", "*.api.service.com", "*.com"]}
"""
        )
        + GNP_DNS
    )
    found = lint(fqdnpolicy.loads(text))
    assert [(p.code, p.path) for p in found] == [
        ("broad-wildcard", "spec.egress[0].destination.domains[2]")
    ]
    assert "'com'" in found[0].message


def test_wildcard_over_a_shared_hosting_suffix_is_flagged() -> None:
    text = (
        policy(
            """  egress:
  - action: Allow
    destination: {domains: ["*.s3.amazonaws.com", "reports.s3.amazonaws.com"]}
"""
        )
        + GNP_DNS
    )
    assert codes(text) == [("shared-suffix-wildcard", "spec.egress[0].destination.domains[0]")]


def test_namespaced_dns_rule_without_namespace_selector_reaches_nothing_in_kube_system() -> None:
    text = policy(
        """  egress:
  - action: Allow
    protocol: UDP
    destination:
      selector: k8s-app == "kube-dns"
      ports: [53]
"""
    )
    (warning,) = lint(fqdnpolicy.loads(text))
    assert warning.code == "dns-rule-wrong-namespace"
    assert warning.path == "spec.egress[0].destination.selector"
    assert "'default'" in warning.message
    assert "kube-system" in warning.message
    assert 'namespaceSelector: projectcalico.org/name == "kube-system"' in warning.hint


def test_dns_rule_with_namespace_selector_is_fine() -> None:
    text = policy(
        """  egress:
  - action: Allow
    protocol: UDP
    destination:
      selector: k8s-app == "kube-dns"
      namespaceSelector: projectcalico.org/name == "kube-system"
      ports: [53]
  - action: Allow
    destination: {domains: [api.github.com]}
"""
    )
    assert codes(text) == []


def test_domains_without_any_dns_allowed_never_resolve() -> None:
    text = policy(
        """  egress:
  - action: Allow
    protocol: TCP
    destination: {domains: [api.github.com], ports: [443]}
"""
    )
    assert codes(text) == [("no-dns-allowed", "spec.egress")]
    assert codes(text + GNP_DNS) == []


def test_deny_all_before_allow_shadows_the_allow_for_ipv4_only() -> None:
    text = (
        policy(
            """  egress:
  - action: Deny
    destination: {nets: [0.0.0.0/0]}
  - action: Allow
    destination: {domains: [approved-service.com]}
"""
        )
        + GNP_DNS
    )
    (warning,) = lint(fqdnpolicy.loads(text))
    assert (warning.code, warning.path) == ("shadowed-rule", "spec.egress[1]")
    assert "IPv4" in warning.message
    assert "egress[0] (Deny)" in warning.message
    assert "move it before" in warning.hint


def test_rule_fully_covered_by_an_earlier_one_can_never_match() -> None:
    text = policy(
        """  egress:
  - action: Allow
    protocol: TCP
    destination: {ports: ["1:1024"]}
  - action: Deny
    protocol: TCP
    destination: {nets: [10.0.0.0/8], ports: [443]}
  - action: Log
  - action: Allow
    protocol: UDP
"""
    )
    assert codes(text) == [("shadowed-rule", "spec.egress[1]")]


def test_narrower_earlier_rule_shadows_nothing() -> None:
    text = policy(
        """  egress:
  - action: Allow
    protocol: TCP
    destination: {nets: [10.1.0.0/16], ports: [443]}
  - action: Deny
    protocol: TCP
    destination: {nets: [10.0.0.0/8]}
"""
    )
    assert codes(text) == []


def test_log_rules_shadow_nothing() -> None:
    text = policy("  egress:\n  - action: Log\n  - action: Deny\n")
    assert codes(text) == []


def test_policy_in_an_undefined_tier_is_flagged() -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
        "metadata: {name: security.p}\nspec:\n  tier: security\n  egress:\n  - action: Deny\n"
    )
    assert codes(text) == [("unknown-tier", "spec.tier")]


def test_network_set_domains_are_linted_too() -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\n"
        "metadata: {name: saas, labels: {kind: saas}}\n"
        'spec:\n  allowedEgressDomains: ["api.service.com", "*.co.uk"]\n'
    )
    (warning,) = lint(fqdnpolicy.loads(text))
    assert (warning.code, warning.path) == ("broad-wildcard", "spec.allowedEgressDomains[1]")
    assert warning.resource == "GlobalNetworkSet saas"


def test_an_underscore_in_a_domain_warns_that_calico_will_refuse_the_policy() -> None:
    text = GNP_DNS.replace("---\n", "") + (
        "---\n"
        + policy(
            "  egress:\n  - action: Allow\n    destination:\n"
            '      domains: ["_sip._tcp.example.com", "api.example.com"]\n'
        )
        + "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\n"
        'metadata: {name: s}\nspec:\n  allowedEgressDomains: ["a_b.example.com"]\n'
    )
    assert codes(text) == [
        ("underscore-in-domain", "spec.egress[0].destination.domains[0]"),
        ("underscore-in-domain", "spec.allowedEgressDomains[0]"),
    ]
    assert all("Calico will refuse" in p.message for p in lint(fqdnpolicy.loads(text)))
