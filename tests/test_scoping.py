"""Specification of Calico's policy and rule scoping (namespaces, global(), service accounts)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.scoping import (
    NAMESPACE_LABEL,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    Subject,
    peer_match,
    peer_matches,
    policy_applies,
    policy_selector,
)
from fqdnpolicy.selector import (
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

S = parse_selector

# A small cluster: two namespaces, pods, network sets and non-namespaced objects.
KUBE_DNS = Subject.pod(
    "kube-system",
    {"k8s-app": "kube-dns"},
    namespace_labels={"kubernetes.io/metadata.name": "kube-system", "tier": "platform"},
    service_account="coredns",
    service_account_labels={"role": "dns"},
)
WEB = Subject.pod(
    "default",
    {"app": "web"},
    namespace_labels={"team": "a"},
    service_account="web-sa",
    service_account_labels={"role": "frontend"},
)
LOCAL_DNS = Subject.pod("default", {"k8s-app": "kube-dns"}, namespace_labels={"team": "a"})
DEFAULT_SET = Subject(labels={"app": "web", "kind": "set"}, namespace="default")
GLOBAL_SET = Subject(labels={"app": "web", "kind": "global-set"})
HOST = Subject(labels={"app": "web", "kind": "host"})


# --------------------------------------------------------------------------- subjects


def test_a_pods_effective_labels_add_namespace_orchestrator_and_service_account() -> None:
    assert dict(WEB.effective_labels) == {
        "app": "web",
        NAMESPACE_LABEL: "default",
        ORCHESTRATOR_LABEL: "k8s",
        SERVICE_ACCOUNT_LABEL: "web-sa",
        "pcns.team": "a",
        "pcns.projectcalico.org/name": "default",
        "pcsa.role": "frontend",
        "pcsa.projectcalico.org/name": "web-sa",
    }


def test_a_network_set_inherits_its_namespace_but_has_no_orchestrator() -> None:
    assert dict(DEFAULT_SET.effective_labels) == {
        "app": "web",
        "kind": "set",
        NAMESPACE_LABEL: "default",
        "pcns.projectcalico.org/name": "default",
    }


def test_non_namespaced_objects_see_only_their_own_labels() -> None:
    assert dict(GLOBAL_SET.effective_labels) == {"app": "web", "kind": "global-set"}


def test_own_labels_cannot_pose_as_implicit_or_inherited_labels() -> None:
    spoof = {
        NAMESPACE_LABEL: "kube-system",
        SERVICE_ACCOUNT_LABEL: "admin",
        ORCHESTRATOR_LABEL: "x",
        "pcns.team": "b",
        "pcsa.role": "admin",
    }
    pod = Subject.pod("default", spoof, namespace_labels={"team": "a"})
    assert pod.effective_labels[NAMESPACE_LABEL] == "default"
    assert pod.effective_labels[ORCHESTRATOR_LABEL] == "k8s"
    assert pod.effective_labels["pcns.team"] == "a"
    assert SERVICE_ACCOUNT_LABEL not in pod.effective_labels
    assert "pcsa.role" not in pod.effective_labels
    assert dict(Subject(labels=spoof).effective_labels) == {}


def test_effective_labels_are_computed_once_and_read_only() -> None:
    assert WEB.effective_labels == WEB.effective()
    with pytest.raises(TypeError):
        WEB.effective_labels["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        WEB.labels["x"] = "y"  # type: ignore[index]


def test_subjects_compare_by_value() -> None:
    assert Subject.pod("default", {"app": "web"}) == Subject.pod("default", {"app": "web"})
    assert Subject.pod("default", {"app": "web"}) != Subject.pod("other", {"app": "web"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"namespace_labels": {"a": "b"}},
        {"service_account": "sa"},
        {"namespace": "ns", "service_account_labels": {"a": "b"}},
    ],
)
def test_inconsistent_subjects_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicy):
        Subject(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- policies


def test_a_network_policy_applies_only_to_endpoints_in_its_namespace() -> None:
    assert policy_applies(WEB, namespace="default", selector=S('app == "web"'))
    assert policy_applies(WEB, namespace="default")
    assert not policy_applies(KUBE_DNS, namespace="default")
    assert not policy_applies(HOST, namespace="default", selector=S('app == "web"'))


def test_a_network_policy_service_account_selector_reads_the_accounts_labels() -> None:
    by_label = S('role == "frontend"')
    by_name = S('projectcalico.org/name == "web-sa"')
    assert policy_applies(WEB, namespace="default", service_account_selector=by_label)
    assert policy_applies(WEB, namespace="default", service_account_selector=by_name)
    assert not policy_applies(LOCAL_DNS, namespace="default", service_account_selector=by_label)


def test_a_network_policy_service_account_all_also_matches_pods_without_one() -> None:
    # Surprising but faithful: Calico does not rewrite all() in a NetworkPolicy's
    # serviceAccountSelector, unlike in a GlobalNetworkPolicy.
    assert policy_applies(LOCAL_DNS, namespace="default", service_account_selector=S("all()"))


def test_a_network_policy_has_no_namespace_selector() -> None:
    with pytest.raises(InvalidPolicy, match="namespaceSelector"):
        policy_applies(WEB, namespace="default", namespace_selector=S("all()"))


def test_a_global_policy_selects_everywhere_host_endpoints_included() -> None:
    for endpoint in (WEB, HOST):
        assert policy_applies(endpoint, namespace=None, selector=S('app == "web"'))
    assert not policy_applies(KUBE_DNS, namespace=None, selector=S('app == "web"'))


def test_a_global_policy_namespace_selector_reads_the_namespaces_labels_and_name() -> None:
    assert policy_applies(WEB, namespace=None, namespace_selector=S('team == "a"'))
    assert not policy_applies(KUBE_DNS, namespace=None, namespace_selector=S('team == "a"'))
    by_name = S('projectcalico.org/name == "kube-system"')
    assert policy_applies(KUBE_DNS, namespace=None, namespace_selector=by_name)
    assert not policy_applies(HOST, namespace=None, namespace_selector=S('team == "a"'))


def test_with_a_namespace_selector_all_means_any_namespaced_endpoint() -> None:
    assert policy_applies(WEB, namespace=None, namespace_selector=S("all()"))
    assert not policy_applies(HOST, namespace=None, namespace_selector=S("all()"))
    # all() in the policy's own selector is rewritten too once a namespaceSelector is given.
    everyone = S('has(app) || team != "x"')
    assert policy_applies(HOST, namespace=None, namespace_selector=everyone)
    assert not policy_applies(
        HOST, namespace=None, selector=S("all()"), namespace_selector=everyone
    )


def test_global_in_a_policy_namespace_selector_is_not_rewritten_and_matches_everything() -> None:
    # Surprising but faithful: only rule namespaceSelectors give global() its meaning.
    for endpoint in (WEB, KUBE_DNS, HOST):
        assert policy_applies(endpoint, namespace=None, namespace_selector=S("global()"))


def test_a_negative_policy_namespace_selector_also_matches_host_endpoints() -> None:
    # Surprising but faithful: a host endpoint has no namespace labels, so != holds.
    assert policy_applies(HOST, namespace=None, namespace_selector=S('team != "a"'))


def test_a_global_policy_service_account_all_means_has_a_service_account() -> None:
    assert policy_applies(WEB, namespace=None, service_account_selector=S("all()"))
    assert not policy_applies(LOCAL_DNS, namespace=None, service_account_selector=S("all()"))
    assert not policy_applies(HOST, namespace=None, service_account_selector=S("all()"))


def test_policy_selectors_are_built_once_per_policy() -> None:
    first = policy_selector(namespace="default", selector=S('app == "web"'))
    assert first is policy_selector(namespace="default", selector=S('app == "web"'))
    assert str(first) == 'app == "web" && projectcalico.org/namespace == "default"'


# --------------------------------------------------------------------------- rule peers


def test_a_namespaced_rule_selector_reaches_only_its_own_namespace() -> None:
    # Source: Calico docs, EntityRule: "selector ... in the same namespace as the policy".
    sel = S('app == "web"')
    assert peer_matches(WEB, policy_namespace="default", selector=sel)
    assert peer_matches(DEFAULT_SET, policy_namespace="default", selector=sel)
    assert not peer_matches(GLOBAL_SET, policy_namespace="default", selector=sel)
    assert not peer_matches(HOST, policy_namespace="default", selector=sel)
    assert not peer_matches(WEB, policy_namespace="other", selector=sel)


def test_the_seed_articles_namespaced_kube_dns_rule_reaches_nothing_in_kube_system() -> None:
    dns = S('k8s-app == "kube-dns"')
    assert not peer_matches(KUBE_DNS, policy_namespace="default", selector=dns)
    assert peer_matches(LOCAL_DNS, policy_namespace="default", selector=dns)
    fixed = S('projectcalico.org/name == "kube-system"')
    assert peer_matches(
        KUBE_DNS, policy_namespace="default", selector=dns, namespace_selector=fixed
    )


def test_a_namespace_selector_reaches_namespaces_whose_labels_match() -> None:
    platform = S('tier == "platform"')
    assert peer_matches(KUBE_DNS, policy_namespace="default", namespace_selector=platform)
    assert not peer_matches(WEB, policy_namespace="default", namespace_selector=platform)
    assert not peer_matches(GLOBAL_SET, policy_namespace=None, namespace_selector=platform)


def test_namespace_selector_all_reaches_every_namespaced_object() -> None:
    for peer in (WEB, KUBE_DNS, DEFAULT_SET):
        assert peer_matches(peer, policy_namespace="default", namespace_selector=S("all()"))
    for peer in (GLOBAL_SET, HOST):
        assert not peer_matches(peer, policy_namespace="default", namespace_selector=S("all()"))


def test_namespace_selector_global_reaches_only_non_namespaced_objects() -> None:
    for ns in ("default", None):
        found = peer_match(
            policy_namespace=ns, selector=S('app == "web"'), namespace_selector=S("global()")
        )
        assert found.matches(GLOBAL_SET)
        assert found.matches(HOST)
        assert not found.matches(WEB)
        assert not found.matches(DEFAULT_SET)


def test_a_global_policy_rule_selector_reaches_everything() -> None:
    sel = S('app == "web"')
    for peer in (WEB, DEFAULT_SET, GLOBAL_SET, HOST):
        assert peer_matches(peer, policy_namespace=None, selector=sel)
    assert not peer_matches(KUBE_DNS, policy_namespace=None, selector=sel)


def test_a_rule_without_selectors_puts_no_constraint_on_the_peer() -> None:
    for ns in ("default", None):
        found = peer_match(policy_namespace=ns)
        assert found.selector is None
        assert not found.constrains
        assert all(found.matches(p) for p in (WEB, KUBE_DNS, GLOBAL_SET, HOST))


def test_all_as_a_rule_selector_reaches_only_endpoints_and_network_sets() -> None:
    found = peer_match(policy_namespace=None, selector=S("all()"))
    assert found.constrains
    assert found.matches(HOST)


def test_a_not_selector_alone_still_scopes_a_namespaced_rule() -> None:
    not_web = S('app == "web"')
    assert peer_matches(LOCAL_DNS, policy_namespace="default", not_selector=not_web)
    assert not peer_matches(WEB, policy_namespace="default", not_selector=not_web)
    assert not peer_matches(KUBE_DNS, policy_namespace="default", not_selector=not_web)
    assert peer_matches(KUBE_DNS, policy_namespace=None, not_selector=not_web)
    assert not peer_matches(HOST, policy_namespace=None, not_selector=not_web)


def test_service_account_names_and_selector_must_both_match() -> None:
    assert peer_matches(WEB, policy_namespace="default", service_account_names=["web-sa"])
    assert not peer_matches(LOCAL_DNS, policy_namespace="default", service_account_names=["x"])
    # In a NetworkPolicy the service account must also be in the policy's namespace.
    assert not peer_matches(KUBE_DNS, policy_namespace="default", service_account_names=["coredns"])
    assert peer_matches(KUBE_DNS, policy_namespace=None, service_account_names=["coredns"])
    both = {"service_account_names": ["web-sa"], "service_account_selector": S('role == "x"')}
    assert not peer_matches(WEB, policy_namespace="default", **both)  # type: ignore[arg-type]
    assert peer_matches(
        KUBE_DNS, policy_namespace=None, service_account_selector=S('role == "dns"')
    )


def test_peer_matches_are_built_once_per_distinct_rule() -> None:
    first = peer_match(policy_namespace="default", selector=S("has(a)"))
    assert first is peer_match(policy_namespace="default", selector=S("has(a)"))
    assert str(first.selector) == 'projectcalico.org/namespace == "default" && has(a)'


# --------------------------------------------------------------------------- reference model


def evaluate(node: Node, labels: Mapping[str, str], all_: bool, global_: bool) -> bool:
    """AST walk with chosen truth values for all() and global()."""
    match node:
        case All():
            return all_
        case Global():
            return global_
        case Has(key):
            return key in labels
        case Compare(key, "==", value):
            return labels.get(key) == value
        case Compare(key, "!=", value):
            return labels.get(key) != value
        case Compare(key, "contains", value):
            return key in labels and value in labels[key]
        case Compare(key, "starts with", value):
            return key in labels and labels[key].startswith(value)
        case Compare(key, "ends with", value):
            return key in labels and labels[key].endswith(value)
        case InSet(key, values, negated):
            return (labels.get(key) in values) is not negated
        case Not(operand):
            return not evaluate(operand, labels, all_, global_)
        case And(operands):
            return all(evaluate(op, labels, all_, global_) for op in operands)
        case Or(operands):
            return any(evaluate(op, labels, all_, global_) for op in operands)
    raise AssertionError(node)


def own_view(peer: Subject) -> dict[str, str]:
    """Own labels plus the implicit ones, as the docs describe an endpoint's labels."""
    labels = {k: v for k, v in peer.labels.items() if not k.startswith("projectcalico.org/")}
    if peer.namespace is not None:
        labels[NAMESPACE_LABEL] = peer.namespace
    if peer.service_account is not None:
        labels[SERVICE_ACCOUNT_LABEL] = peer.service_account
    if peer.orchestrator is not None:
        labels[ORCHESTRATOR_LABEL] = peer.orchestrator
    return labels


def namespace_view(peer: Subject) -> dict[str, str]:
    if peer.namespace is None:
        return {}
    return {**peer.namespace_labels, "projectcalico.org/name": peer.namespace}


def account_view(peer: Subject) -> dict[str, str]:
    if peer.service_account is None:
        return {}
    return {**peer.service_account_labels, "projectcalico.org/name": peer.service_account}


def reference_peer(
    peer: Subject,
    ns: str | None,
    selector: Selector | None,
    not_selector: Selector | None,
    namespace_selector: Selector | None,
    names: tuple[str, ...],
    account_selector: Selector | None,
) -> bool:
    used = (selector, not_selector, namespace_selector, account_selector)
    if all(s is None for s in used) and not names:
        return True
    namespaced = peer.namespace is not None
    if namespace_selector is not None:
        in_scope = evaluate(
            namespace_selector.root, namespace_view(peer), namespaced, not namespaced
        )
    else:
        in_scope = ns is None or peer.namespace == ns
    own = own_view(peer)
    return (
        in_scope
        and (not names or peer.service_account in names)
        and (
            account_selector is None
            or evaluate(account_selector.root, account_view(peer), True, True)
        )
        and (selector is None or evaluate(selector.root, own, True, True))
        and (not_selector is None or not evaluate(not_selector.root, own, True, True))
    )


def reference_policy(
    peer: Subject,
    ns: str | None,
    selector: Selector | None,
    namespace_selector: Selector | None,
    account_selector: Selector | None,
) -> bool:
    own = own_view(peer)
    namespaced = peer.namespace is not None
    has_account = peer.service_account is not None
    if ns is not None:
        return (
            peer.namespace == ns
            and (selector is None or evaluate(selector.root, own, True, True))
            and (
                account_selector is None
                or evaluate(account_selector.root, account_view(peer), True, True)
            )
        )
    # all() in the policy selector means "namespaced" once a namespaceSelector is given,
    # else "has a service account" once a serviceAccountSelector is given; global() is true.
    if namespace_selector is not None:
        policy_all = namespaced
    elif account_selector is not None:
        policy_all = has_account
    else:
        policy_all = True
    account_all = has_account
    return (
        (selector is None or evaluate(selector.root, own, policy_all, True))
        and (
            namespace_selector is None
            or evaluate(namespace_selector.root, namespace_view(peer), namespaced, True)
        )
        and (
            account_selector is None
            or evaluate(account_selector.root, account_view(peer), account_all, True)
        )
    )


LABEL_KEYS = ["app", "team", "role", "projectcalico.org/name", NAMESPACE_LABEL]
LABEL_VALUES = ["web", "a", "b", "default", "kube-system"]
labels = st.dictionaries(st.sampled_from(LABEL_KEYS[:3]), st.sampled_from(LABEL_VALUES), max_size=3)
SELECTOR_TEXTS = [
    "all()",
    "global()",
    "!global()",
    "!all()",
    "all() || global()",
    'app == "web"',
    "has(team)",
    'team != "a"',
    'role in {"a", "web"}',
    'projectcalico.org/name == "default"',
    'projectcalico.org/namespace == "kube-system"',
    '!has(app) && (team == "b" || all())',
    'global() && team == "a"',
    "!(all() && has(role))",
]
selectors = st.none() | st.sampled_from(SELECTOR_TEXTS).map(parse_selector)


@st.composite
def subjects(draw: st.DrawFn) -> Subject:
    namespace = draw(st.sampled_from([None, "default", "kube-system"]))
    if namespace is None:
        return Subject(labels=draw(labels))
    account = draw(st.sampled_from([None, "web-sa", "db-sa"]))
    return Subject(
        labels=draw(labels),
        namespace=namespace,
        namespace_labels=draw(labels),
        service_account=account,
        service_account_labels=draw(labels) if account else {},
        orchestrator=draw(st.sampled_from([None, "k8s"])),
    )


@settings(max_examples=400)
@given(
    peer=subjects(),
    ns=st.sampled_from([None, "default"]),
    selector=selectors,
    not_selector=selectors,
    namespace_selector=selectors,
    names=st.lists(st.sampled_from(["web-sa", "db-sa", "x"]), max_size=2).map(tuple),
    account_selector=selectors,
)
def test_peer_matching_agrees_with_the_documented_rules(
    peer: Subject,
    ns: str | None,
    selector: Selector | None,
    not_selector: Selector | None,
    namespace_selector: Selector | None,
    names: tuple[str, ...],
    account_selector: Selector | None,
) -> None:
    got = peer_matches(
        peer,
        policy_namespace=ns,
        selector=selector,
        not_selector=not_selector,
        namespace_selector=namespace_selector,
        service_account_names=names,
        service_account_selector=account_selector,
    )
    expected = reference_peer(
        peer, ns, selector, not_selector, namespace_selector, names, account_selector
    )
    assert got is expected


@settings(max_examples=400)
@given(
    peer=subjects(),
    ns=st.sampled_from([None, "default"]),
    selector=selectors,
    namespace_selector=selectors,
    account_selector=selectors,
)
def test_policy_selection_agrees_with_the_documented_rules(
    peer: Subject,
    ns: str | None,
    selector: Selector | None,
    namespace_selector: Selector | None,
    account_selector: Selector | None,
) -> None:
    if ns is not None:
        namespace_selector = None
    got = policy_applies(
        peer,
        namespace=ns,
        selector=selector,
        namespace_selector=namespace_selector,
        service_account_selector=account_selector,
    )
    assert got is reference_policy(peer, ns, selector, namespace_selector, account_selector)
