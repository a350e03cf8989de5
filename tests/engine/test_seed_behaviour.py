"""The seed article's policies behave as the article says, wherever that is how Calico works.

Every flow here uses the bundled data: the article's policies (``fqdnpolicy/data/seed``), the
demo cluster (``fqdnpolicy/data/demo/cluster.yaml``) and the demo zone file
(``fqdnpolicy/data/demo/zone.db``) as the DNS source. A name in a flow stands for every
address the zone gives it (IPv4 and IPv6), so ``curl https://api.github.com`` is checked on
each. Every flow is judged by the engine and by the reference evaluator, which must agree.

Where the article is wrong about Calico the test says so and shows Calico's verdict: its
namespaced policies allow DNS with ``destination: {selector: k8s-app == "kube-dns"}``, which
in a NetworkPolicy reaches only pods of the policy's own namespace, never CoreDNS in
``kube-system``; only the GlobalNetworkPolicy's identical rule reaches it.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import pytest

from fqdnpolicy.cluster import Cluster, loads_cluster
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.sources import load_zone
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.loader import loads
from fqdnpolicy.model import ResourceSet
from tests.engine.reference import RefVerdict, reference_verdict
from tests.engine.strategies import FakeClock

DATA = importlib.resources.files("fqdnpolicy") / "data"

BASIC = "fqdn-basic-policy.yaml"
WILDCARD = "fqdn-wildcard-policy.yaml"
MULTI = "fqdn-multi-service-policy.yaml"
ENVIRONMENTS = "fqdn-production-policy.yaml"
COMBINED = "fqdn-combined-policy.yaml"
GLOBAL = "global-fqdn-policy.yaml"
DEFAULT_DENY = "best-practices-default-deny.yaml"
BROAD_WILDCARD = "best-practices-broad-wildcard.yaml"

BACKEND = "default/backend"
DATABASE = "default/database"
DEBUG = "default/debug"  # a pod with no labels
APPLICATION = "production/application"
PAYMENTS = "backend/payments"
WEB = "staging/web"
SANDBOX = "best-practices/sandbox"  # under the article's best-practice fragments
COREDNS_IP = "10.244.0.10"


@functools.cache
def cluster() -> Cluster:
    text = (DATA / "demo" / "cluster.yaml").read_text(encoding="utf-8")
    return loads_cluster(text, filename="cluster.yaml")


def zone_cache() -> DNSCache:
    # The clock stands still: every record of the zone stays fresh (some TTLs are 5 s).
    cache = DNSCache(clock=FakeClock())
    load_zone(cache, (DATA / "demo" / "zone.db").read_text(encoding="utf-8"))
    return cache


def seed(*files: str) -> ResourceSet:
    loaded = [
        loads((DATA / "seed" / name).read_text(encoding="utf-8"), filename=name) for name in files
    ]
    return ResourceSet(
        tuple(p for rs in loaded for p in rs.policies),
        tuple(s for rs in loaded for s in rs.network_sets),
        tuple(t for rs in loaded for t in rs.tiers),
    )


class Lab:
    """The bundled cluster and zone with some seed files applied; judges with both evaluators."""

    def __init__(self, *files: str) -> None:
        self.resources = seed(*files)
        self.dns = zone_cache()
        self.engine = PolicyEngine(self.resources, cluster(), self.dns)

    def addresses(self, name: str) -> list[str]:
        ips = sorted(self.dns.ips(name))
        assert ips, f"the demo zone gives {name} no address"
        return ips

    def judge(
        self, src: str, dst: str, protocol: str = "TCP", port: int | None = 443, **kw: Any
    ) -> RefVerdict:
        ref = reference_verdict(self.resources, cluster(), self.dns, src, dst, protocol, port, **kw)
        got = self.engine.verdict(src, dst, protocol, port, **kw)
        fields = (got.action, got.policy, got.tier, got.rule_index, got.direction, got.default)
        assert fields == (
            ref.action,
            ref.policy,
            ref.tier,
            ref.rule_index,
            ref.direction,
            ref.default,
        ), f"{src} -> {dst} {protocol}/{port}: engine {fields}, reference {ref}"
        return ref

    def to_name(
        self, src: str, name: str, protocol: str = "TCP", port: int = 443
    ) -> list[RefVerdict]:
        """Judge a connection to every address of ``name``."""
        return [self.judge(src, ip, protocol, port) for ip in self.addresses(name)]


def allowed_by(policy: str, rule_index: int) -> tuple[str, str, int, None]:
    return ("Allow", policy, rule_index, None)


def decided(v: RefVerdict) -> tuple[str, str | None, int | None, str | None]:
    return (v.action, v.policy, v.rule_index, v.default)


DENIED_AT_END = ("Deny", None, None, "end-of-tier")
GITHUB_POLICY = "NetworkPolicy default/allow-github-api"
GLOBAL_POLICY = "GlobalNetworkPolicy allow-approved-external-services"

# ----------------------------------------------------------------------------- basic policy


def test_curl_api_github_com_from_backend_is_allowed_on_every_address() -> None:
    lab = Lab(BASIC)
    verdicts = lab.to_name(BACKEND, "api.github.com")
    assert len(verdicts) == 2  # the zone gives an IPv4 and an IPv6 address
    assert {decided(v) for v in verdicts} == {allowed_by(GITHUB_POLICY, 0)}


def test_curl_api_gitlab_com_from_backend_is_blocked_at_the_end_of_the_default_tier() -> None:
    lab = Lab(BASIC)
    for v in lab.to_name(BACKEND, "api.gitlab.com"):
        assert decided(v) == DENIED_AT_END
        assert (v.tier, v.direction) == ("default", "egress")


def test_api_github_com_is_allowed_only_on_the_port_the_rule_names() -> None:
    lab = Lab(BASIC)
    for v in lab.to_name(BACKEND, "api.github.com", port=80):
        assert decided(v) == DENIED_AT_END


def test_article_is_wrong_namespaced_kube_dns_rule_does_not_reach_coredns_in_kube_system() -> None:
    # The article says this rule allows DNS. Calico scopes a NetworkPolicy's rule selector
    # to the policy's namespace (default), where no pod is labelled k8s-app=kube-dns.
    lab = Lab(BASIC)
    v = lab.judge(BACKEND, COREDNS_IP, "UDP", 53)
    assert decided(v) == DENIED_AT_END


def test_pod_the_policy_does_not_select_is_not_restricted() -> None:
    lab = Lab(BASIC)
    for v in lab.to_name(DEBUG, "api.gitlab.com"):
        assert (v.action, v.default) == ("Allow", "no-policy")


# ----------------------------------------------------------------------------- global policy


def test_global_policys_kube_dns_rule_reaches_coredns_in_every_namespace() -> None:
    lab = Lab(BASIC, GLOBAL)
    for src in (BACKEND, APPLICATION, WEB):
        v = lab.judge(src, COREDNS_IP, "UDP", 53)
        assert decided(v) == allowed_by(GLOBAL_POLICY, 1), src


def test_global_policy_runs_before_namespaced_policies_by_its_lower_order() -> None:
    lab = Lab(BASIC, GLOBAL)
    for v in lab.to_name(BACKEND, "sts.amazonaws.com"):
        assert decided(v) == allowed_by(GLOBAL_POLICY, 0)
    for v in lab.to_name(BACKEND, "api.github.com"):  # not in the global list: next policy
        assert decided(v) == allowed_by(GITHUB_POLICY, 0)


def test_global_policy_allows_approved_saas_through_cname_chains() -> None:
    lab = Lab(GLOBAL)
    for name in (
        "intake.datadog.com",
        "login.auth0.com",
        "example.okta.com",
        "storage.googleapis.com",
    ):
        for v in lab.to_name(WEB, name):
            assert decided(v) == allowed_by(GLOBAL_POLICY, 0), name
    for v in lab.to_name(WEB, "blocked-domain.com"):
        assert decided(v) == DENIED_AT_END


def test_global_policy_skips_pods_without_an_app_label() -> None:
    lab = Lab(GLOBAL)
    assert lab.judge(DEBUG, COREDNS_IP, "UDP", 53).default == "no-policy"
    for v in lab.to_name(PAYMENTS, "blocked-domain.com"):  # tier=application, no app label
        assert v.default == "no-policy"


# ----------------------------------------------------------------------------- wildcards


def test_s3_bucket_names_reach_their_regional_endpoint_through_a_cname() -> None:
    lab = Lab(WILDCARD)
    policy = "NetworkPolicy production/allow-aws-services"
    verdicts = lab.to_name(APPLICATION, "reports.s3.amazonaws.com")
    assert len(verdicts) == 2
    assert {decided(v) for v in verdicts} == {allowed_by(policy, 0)}
    for v in lab.to_name(APPLICATION, "logs.s3.eu-west-1.amazonaws.com"):
        assert decided(v) == allowed_by(policy, 0)
    for v in lab.to_name(APPLICATION, "dynamodb.us-east-1.amazonaws.com"):
        assert decided(v) == allowed_by(policy, 1)


@pytest.mark.parametrize(
    "name",
    [
        "reports.s3.amazonaws.com",
        "logs.s3.eu-west-1.amazonaws.com",
        "dynamodb.us-east-1.amazonaws.com",
    ],
)
def test_aws_names_are_not_allowed_on_port_80(name: str) -> None:
    lab = Lab(WILDCARD)
    for v in lab.to_name(APPLICATION, name, port=80):
        assert decided(v) == DENIED_AT_END


def test_aws_names_outside_the_wildcards_stay_blocked() -> None:
    lab = Lab(WILDCARD)
    for v in lab.to_name(APPLICATION, "sts.amazonaws.com"):
        assert decided(v) == DENIED_AT_END


def test_wildcard_policy_dns_rule_is_scoped_to_production_and_misses_coredns() -> None:
    lab = Lab(WILDCARD)
    assert decided(lab.judge(APPLICATION, COREDNS_IP, "UDP", 53)) == DENIED_AT_END


# ----------------------------------------------------------------------------- several services


def test_payments_reaches_each_service_on_its_own_ports() -> None:
    lab = Lab(MULTI)
    policy = "NetworkPolicy backend/allow-external-apis"
    for v in lab.to_name(PAYMENTS, "api.stripe.com"):
        assert decided(v) == allowed_by(policy, 0)
    for port in (587, 465):
        for v in lab.to_name(PAYMENTS, "api.sendgrid.com", port=port):
            assert decided(v) == allowed_by(policy, 1)
    for v in lab.to_name(PAYMENTS, "api.sendgrid.com", port=443):
        assert decided(v) == DENIED_AT_END
    for name in ("myaccount.blob.core.windows.net", "storage.googleapis.com"):
        for v in lab.to_name(PAYMENTS, name):
            assert decided(v) == allowed_by(policy, 2), name
    for v in lab.to_name(PAYMENTS, "d111111abcdef8.cloudfront.net"):
        assert decided(v) == allowed_by(policy, 3)
    for v in lab.to_name(PAYMENTS, "api.github.com"):
        assert decided(v) == DENIED_AT_END


# ----------------------------------------------------------------------------- environments


def test_production_and_staging_each_reach_only_their_own_services() -> None:
    lab = Lab(ENVIRONMENTS)
    prod = "NetworkPolicy production/production-external-access"
    staging = "NetworkPolicy staging/staging-external-access"
    for name in ("api.production-service.com", "db.production-service.com"):
        for v in lab.to_name(APPLICATION, name):
            assert decided(v) == allowed_by(prod, 0)
        for v in lab.to_name(WEB, name):
            assert decided(v) == DENIED_AT_END
    for name in ("api.staging-service.com", "db.staging-service.com"):
        for v in lab.to_name(WEB, name):
            assert decided(v) == allowed_by(staging, 0)
        for v in lab.to_name(APPLICATION, name):
            assert decided(v) == DENIED_AT_END


def test_two_policies_selecting_one_pod_run_by_name_and_either_may_allow() -> None:
    lab = Lab(WILDCARD, ENVIRONMENTS)
    for v in lab.to_name(APPLICATION, "reports.s3.amazonaws.com"):
        assert decided(v) == allowed_by("NetworkPolicy production/allow-aws-services", 0)
    for v in lab.to_name(APPLICATION, "api.production-service.com"):
        assert decided(v) == allowed_by("NetworkPolicy production/production-external-access", 0)
    for v in lab.to_name(APPLICATION, "api.github.com"):
        assert decided(v) == DENIED_AT_END


# ----------------------------------------------------------------------------- combined


def test_combined_policy_allows_the_legacy_network_on_8080_only() -> None:
    lab = Lab(COMBINED)
    policy = "NetworkPolicy default/mixed-egress-policy"
    assert decided(lab.judge(BACKEND, "203.0.113.10", "TCP", 8080)) == allowed_by(policy, 1)
    assert decided(lab.judge(BACKEND, "203.0.113.10", "TCP", 80)) == DENIED_AT_END
    assert decided(lab.judge(BACKEND, "203.0.114.10", "TCP", 8080)) == DENIED_AT_END
    assert decided(lab.judge(BACKEND, "203.0.113.10", "UDP", 8080)) == DENIED_AT_END


def test_combined_policy_allows_its_domain_and_database_pods_of_its_namespace() -> None:
    lab = Lab(COMBINED)
    policy = "NetworkPolicy default/mixed-egress-policy"
    for v in lab.to_name(BACKEND, "api.external-service.com"):
        assert decided(v) == allowed_by(policy, 0)
    for dst in ("10.244.1.20", "fd00:10:244::120", DATABASE):
        v = lab.judge(BACKEND, dst, "TCP", 5432)
        assert decided(v) == allowed_by(policy, 2), dst
        assert v.direction == "egress"  # the database has no ingress policy: egress reports
    assert decided(lab.judge(BACKEND, COREDNS_IP, "UDP", 53)) == DENIED_AT_END


# ----------------------------------------------------------------------------- best practices


def test_default_deny_first_shadows_the_later_domain_allow_for_ipv4() -> None:
    lab = Lab(DEFAULT_DENY)
    policy = "NetworkPolicy best-practices/best-practices-default-deny"
    v = lab.judge(SANDBOX, "198.51.100.10")
    assert decided(v) == ("Deny", policy, 0, None)
    # 0.0.0.0/0 holds no IPv6 address: the rule passes over it and the tier ends.
    assert decided(lab.judge(SANDBOX, "2001:db8:100::10")) == DENIED_AT_END


def test_broad_wildcard_com_allows_every_dot_com_name() -> None:
    # Why the linter warns about "*.com": it allows api.gitlab.com and blocked-domain.com.
    lab = Lab(BROAD_WILDCARD)
    policy = "NetworkPolicy best-practices/best-practices-broad-wildcard"
    for name in ("api.gitlab.com", "blocked-domain.com", "intake.datadog.com"):
        for v in lab.to_name(SANDBOX, name):
            assert decided(v) == allowed_by(policy, 1), name
    for v in lab.to_name(SANDBOX, "myaccount.blob.core.windows.net"):
        assert decided(v) == DENIED_AT_END


def test_best_practice_fragments_run_by_name_so_the_broad_allow_beats_the_default_deny() -> None:
    lab = Lab(DEFAULT_DENY, BROAD_WILDCARD)
    policy = "NetworkPolicy best-practices/best-practices-broad-wildcard"
    for v in lab.to_name(SANDBOX, "api.gitlab.com"):
        assert decided(v) == allowed_by(policy, 1)
    v = lab.judge(SANDBOX, "203.0.113.10")
    assert decided(v) == (
        "Deny",
        "NetworkPolicy best-practices/best-practices-default-deny",
        0,
        None,
    )


# ----------------------------------------------------------------------------- everything


ALL_SEED = (BASIC, WILDCARD, MULTI, ENVIRONMENTS, COMBINED, GLOBAL, DEFAULT_DENY, BROAD_WILDCARD)


def test_all_seed_files_together_keep_the_articles_curl_results() -> None:
    lab = Lab(*ALL_SEED)
    for v in lab.to_name(BACKEND, "api.github.com"):
        assert decided(v) == allowed_by(GITHUB_POLICY, 0)
    for v in lab.to_name(BACKEND, "api.gitlab.com"):
        assert decided(v) == DENIED_AT_END
    for v in lab.to_name(APPLICATION, "reports.s3.amazonaws.com"):
        assert decided(v) == allowed_by(GLOBAL_POLICY, 0)  # order 100 runs first
    for v in lab.to_name(APPLICATION, "reports.s3.amazonaws.com", port=80):
        assert decided(v) == DENIED_AT_END
    # With the global policy loaded, DNS works for pods with an app label...
    assert decided(lab.judge(BACKEND, COREDNS_IP, "UDP", 53)) == allowed_by(GLOBAL_POLICY, 1)
    # ...and not for backend/payments (no app label): its namespaced DNS rule misses CoreDNS.
    assert decided(lab.judge(PAYMENTS, COREDNS_IP, "UDP", 53)) == DENIED_AT_END


def test_seed_files_load_with_the_policies_the_tests_name() -> None:
    names = {p.display_name for p in seed(*ALL_SEED).policies}
    assert {GITHUB_POLICY, GLOBAL_POLICY} <= names
    assert len(names) == 9
