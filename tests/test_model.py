"""The model, and the bundled seed policies (the article's examples) as it loads them."""

from __future__ import annotations

import importlib.resources
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from fqdnpolicy.domains import parse_domain_pattern
from fqdnpolicy.loader import load, loads
from fqdnpolicy.model import (
    DomainReference,
    ObjectMeta,
    Policy,
    PolicySpec,
    PortRange,
    ResourceSet,
    SourceLocation,
)
from fqdnpolicy.selector import parse_selector

SEED_FILES = {
    "fqdn-basic-policy.yaml": ["NetworkPolicy default/allow-github-api"],
    "fqdn-wildcard-policy.yaml": ["NetworkPolicy production/allow-aws-services"],
    "fqdn-multi-service-policy.yaml": ["NetworkPolicy backend/allow-external-apis"],
    "fqdn-production-policy.yaml": [
        "NetworkPolicy production/production-external-access",
        "NetworkPolicy staging/staging-external-access",
    ],
    "fqdn-combined-policy.yaml": ["NetworkPolicy default/mixed-egress-policy"],
    "global-fqdn-policy.yaml": ["GlobalNetworkPolicy allow-approved-external-services"],
    "best-practices-default-deny.yaml": [
        "NetworkPolicy best-practices/best-practices-default-deny"
    ],
    "best-practices-broad-wildcard.yaml": [
        "NetworkPolicy best-practices/best-practices-broad-wildcard"
    ],
}


@pytest.fixture(scope="module")
def seed_dir() -> Iterator[Path]:
    data = importlib.resources.files("fqdnpolicy") / "data" / "seed"
    with importlib.resources.as_file(data) as path:
        yield path


def domains_by_rule(policy: Policy) -> list[list[str]]:
    return [[d.text for d in rule.destination.domains] for rule in policy.spec.egress]


def test_the_seed_holds_exactly_the_expected_files(seed_dir: Path) -> None:
    assert sorted(p.name for p in seed_dir.iterdir() if p.suffix == ".yaml") == sorted(SEED_FILES)


@pytest.mark.parametrize(("name", "expected"), SEED_FILES.items())
def test_each_seed_file_loads_with_its_policies(
    seed_dir: Path, name: str, expected: list[str]
) -> None:
    rs = load(seed_dir / name)
    assert [p.display_name for p in rs.policies] == expected
    for policy in rs.policies:
        assert policy.spec.types == ("Egress",)
        assert policy.spec.ingress == ()
        assert policy.source is not None
        assert Path(policy.source.file).name == name


def test_basic_seed_policy_rules(seed_dir: Path) -> None:
    (p,) = load(seed_dir / "fqdn-basic-policy.yaml").policies
    assert p.spec.selector == parse_selector('app == "backend"')
    github, dns = p.spec.egress
    assert (github.action, github.protocol) == ("Allow", "TCP")
    assert github.destination.domains == (parse_domain_pattern("api.github.com"),)
    assert github.destination.ports == (PortRange(443, 443),)
    assert (dns.protocol, dns.destination.ports) == ("UDP", (PortRange(53, 53),))
    assert dns.destination.selector == parse_selector('k8s-app == "kube-dns"')
    assert dns.destination.domains == ()


def test_wildcard_seed_policy_keeps_middle_wildcards(seed_dir: Path) -> None:
    (p,) = load(seed_dir / "fqdn-wildcard-policy.yaml").policies
    assert domains_by_rule(p) == [
        ["*.s3.amazonaws.com", "*.s3.*.amazonaws.com"],
        ["dynamodb.*.amazonaws.com"],
        [],
    ]
    assert p.spec.egress[0].destination.domains[1].matches("bucket.s3.eu-west-1.amazonaws.com")


def test_multi_service_seed_policy(seed_dir: Path) -> None:
    (p,) = load(seed_dir / "fqdn-multi-service-policy.yaml").policies
    assert domains_by_rule(p) == [
        ["api.stripe.com"],
        ["api.sendgrid.com"],
        ["*.blob.core.windows.net", "storage.googleapis.com"],
        ["*.cloudfront.net"],
        [],
    ]
    assert p.spec.egress[1].destination.ports == (PortRange(587, 587), PortRange(465, 465))
    assert p.spec.selector == parse_selector('tier == "application"')


def test_production_and_staging_seed_policies(seed_dir: Path) -> None:
    prod, staging = load(seed_dir / "fqdn-production-policy.yaml").policies
    assert domains_by_rule(prod)[0] == ["api.production-service.com", "db.production-service.com"]
    assert domains_by_rule(staging)[0] == ["api.staging-service.com", "db.staging-service.com"]
    assert prod.spec.selector.is_all
    assert staging.source is not None
    assert staging.source.line is not None
    assert staging.source.line > 1


def test_combined_seed_policy_mixes_domains_nets_and_selectors(seed_dir: Path) -> None:
    (p,) = load(seed_dir / "fqdn-combined-policy.yaml").policies
    fqdn, legacy, pods, dns = p.spec.egress
    assert [d.text for d in fqdn.destination.domains] == ["api.external-service.com"]
    assert legacy.destination.nets == (ipaddress.ip_network("203.0.113.0/24"),)
    assert legacy.destination.ports == (PortRange(8080, 8080),)
    assert pods.protocol is None
    assert pods.destination.selector == parse_selector('tier == "database"')
    assert dns.destination.ports == (PortRange(53, 53),)


def test_global_seed_policy(seed_dir: Path) -> None:
    (p,) = load(seed_dir / "global-fqdn-policy.yaml").policies
    assert p.is_global
    assert p.namespace is None
    assert (p.spec.order, p.spec.selector) == (100.0, parse_selector("has(app)"))
    assert domains_by_rule(p)[0] == [
        "*.datadog.com",
        "*.newrelic.com",
        "*.auth0.com",
        "*.okta.com",
        "*.amazonaws.com",
        "*.azure.com",
        "*.googleapis.com",
    ]


def test_best_practice_wrappers(seed_dir: Path) -> None:
    (deny,) = load(seed_dir / "best-practices-default-deny.yaml").policies
    first, second = deny.spec.egress
    assert (first.action, first.destination.nets) == ("Deny", (ipaddress.ip_network("0.0.0.0/0"),))
    assert (second.action, domains_by_rule(deny)[1]) == ("Allow", ["approved-service.com"])
    (broad,) = load(seed_dir / "best-practices-broad-wildcard.yaml").policies
    assert domains_by_rule(broad) == [["api.service.com", "*.api.service.com"], ["*.com"]]


def test_domain_references_cover_rules_and_network_sets(seed_dir: Path) -> None:
    rs = load(seed_dir / "fqdn-basic-policy.yaml")
    assert rs.domain_references() == [
        DomainReference(
            parse_domain_pattern("api.github.com"),
            "NetworkPolicy default/allow-github-api",
            "spec.egress[0].destination.domains[0]",
        )
    ]
    sets = loads(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\n"
        "metadata: {name: s, namespace: ns}\n"
        "spec: {allowedEgressDomains: [a.example.com, '*.b.example.com']}\n"
    )
    assert [(r.resource, r.path, str(r.pattern)) for r in sets.domain_references()] == [
        ("NetworkSet ns/s", "spec.allowedEgressDomains[0]", "a.example.com"),
        ("NetworkSet ns/s", "spec.allowedEgressDomains[1]", "*.b.example.com"),
    ]


def test_every_seed_domain_is_referenced_once(seed_dir: Path) -> None:
    rs = load(seed_dir)
    written = sum(len(r.destination.domains) for p in rs.policies for r in p.spec.egress)
    assert len(rs.domain_references()) == written == 25
    assert len(rs) == 9
    assert list(rs) == list(rs.policies)


def test_source_location_and_origin_take_no_part_in_equality() -> None:
    meta = ObjectMeta("p", "default")
    a = Policy("NetworkPolicy", meta, PolicySpec(), SourceLocation("a.yaml", 1))
    b = Policy("NetworkPolicy", meta, PolicySpec(), SourceLocation("b.yaml", 9), "other")
    assert a == b
    assert hash(a) == hash(b)
    assert str(a.source) == "a.yaml:1"


def test_models_are_frozen_all_the_way_down() -> None:
    meta = ObjectMeta("p", "default", labels={"a": "b"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        meta.name = "q"  # type: ignore[misc]
    with pytest.raises(TypeError):
        meta.labels["a"] = "c"  # type: ignore[index]
    assert meta.labels == {"a": "b"}


def test_resource_set_counts_and_iterates_every_kind() -> None:
    rs = loads(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\n---\n"
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s}\n---\n"
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
    )
    assert len(rs) == 3
    assert [r.kind for r in rs] == ["Tier", "GlobalNetworkSet", "GlobalNetworkPolicy"]
    assert rs != ResourceSet()


def test_types_are_inferred_as_calico_does() -> None:
    def types(spec: str) -> tuple[str, ...]:
        text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
        return loads(text + spec).policies[0].spec.types

    assert types("") == ("Ingress",)
    assert types("spec: {ingress: [{action: Allow}]}") == ("Ingress",)
    assert types("spec: {egress: [{action: Allow}]}") == ("Egress",)
    assert types("spec: {ingress: [{action: Deny}], egress: [{action: Allow}]}") == (
        "Ingress",
        "Egress",
    )
    assert types("spec: {types: [Egress]}") == ("Egress",)
