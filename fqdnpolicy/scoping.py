"""Which endpoints a policy applies to, and which peers a rule's selectors reach (Calico).

Calico does not evaluate namespaces as a separate step. It turns every policy selector and
every rule ``source``/``destination`` into *one* selector over an endpoint's **effective
labels**: the object's own labels, the implicit labels Calico adds, and the labels of its
namespace and service account, inherited with the prefixes ``pcns.`` and ``pcsa.``. This
module builds the same combined selectors (once per policy/rule, cached) and the same
effective labels (once per :class:`Subject`), so a verdict is a single
:meth:`~fqdnpolicy.selector.Selector.matches` call.

Sources (facts, restated in our words): the Calico docs for NetworkPolicy, GlobalNetworkPolicy,
NetworkSet and GlobalNetworkSet ("Rule" / "EntityRule" / "Selectors" sections), and the
conversion code in libcalico-go (``updateprocessors/rules.go``,
``networkpolicyprocessor.go``, ``globalnetworkpolicyprocessor.go``, ``networksetprocessor.go``
and ``k8s/conversion`` for pods, namespaces and service accounts).

Where this module deliberately differs from Calico, the docstring of the function says so.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.selector import Selector

__all__ = [
    "IMPLICIT_LABELS",
    "KUBERNETES_ORCHESTRATOR",
    "NAMESPACE_LABEL",
    "NAMESPACE_LABEL_PREFIX",
    "NAME_LABEL",
    "ORCHESTRATOR_LABEL",
    "SERVICE_ACCOUNT_LABEL",
    "SERVICE_ACCOUNT_LABEL_PREFIX",
    "PeerMatch",
    "Subject",
    "peer_match",
    "peer_matches",
    "policy_applies",
    "policy_selector",
]

NAMESPACE_LABEL = "projectcalico.org/namespace"
"""Implicit label holding a namespaced object's namespace (workload endpoints, NetworkSets)."""

ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
"""Implicit label naming a workload endpoint's orchestrator (``k8s`` for pods)."""

SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
"""Implicit label holding a workload endpoint's service account name."""

NAME_LABEL = "projectcalico.org/name"
"""Label Calico adds to every namespace's and service account's own labels, holding its
name, so ``namespaceSelector: projectcalico.org/name == "kube-system"`` picks one namespace."""

NAMESPACE_LABEL_PREFIX = "pcns."
"""Prefix under which an endpoint inherits its namespace's labels."""

SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
"""Prefix under which an endpoint inherits its service account's labels."""

KUBERNETES_ORCHESTRATOR = "k8s"
"""Value of :data:`ORCHESTRATOR_LABEL` on pods."""

IMPLICIT_LABELS: frozenset[str] = frozenset(
    {NAMESPACE_LABEL, ORCHESTRATOR_LABEL, SERVICE_ACCOUNT_LABEL}
)
"""Labels only Calico sets; an object's own labels with these keys are ignored."""

_RESERVED_PREFIXES = (NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX)

_IN_A_NAMESPACE = Selector.has(NAMESPACE_LABEL)
_NOT_IN_A_NAMESPACE = _IN_A_NAMESPACE.negate()
_HAS_SERVICE_ACCOUNT = Selector.has(SERVICE_ACCOUNT_LABEL)


_NO_LABELS: Mapping[str, str] = MappingProxyType({})


def _frozen_labels(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value)) if value else _NO_LABELS


def _problem(message: str, hint: str = "") -> InvalidPolicy:
    return InvalidPolicy(Problem(message, hint=hint, code="invalid-scope"))


@attrs.frozen(hash=False)
class Subject:
    """An endpoint or network set as selectors see it.

    Attributes:
        labels: The object's own labels.
        namespace: Its namespace; None for non-namespaced objects (host endpoints,
            GlobalNetworkSets).
        namespace_labels: The labels of its namespace (empty when not namespaced).
        service_account: The pod's service account name, if any.
        service_account_labels: The labels of that service account.
        orchestrator: For workload endpoints, the orchestrator (``k8s`` for pods); None for
            network sets and host endpoints, which Calico gives no orchestrator label.
        effective_labels: What Calico evaluates selectors against, computed once (see
            :meth:`effective`).
    """

    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_labels)
    namespace: str | None = None
    namespace_labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_labels)
    service_account: str | None = None
    service_account_labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_labels)
    orchestrator: str | None = None
    _effective: dict[str, str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.namespace is None and self.namespace_labels:
            raise _problem("namespace_labels given for a subject with no namespace")
        if self.service_account is not None and self.namespace is None:
            raise _problem("a service account needs a namespace", "service accounts are namespaced")
        if self.service_account is None and self.service_account_labels:
            raise _problem("service_account_labels given for a subject with no service account")
        object.__setattr__(self, "_effective", self.effective())

    @classmethod
    def pod(
        cls,
        namespace: str,
        labels: Mapping[str, str] | None = None,
        *,
        namespace_labels: Mapping[str, str] | None = None,
        service_account: str | None = None,
        service_account_labels: Mapping[str, str] | None = None,
    ) -> Subject:
        """A Kubernetes pod's workload endpoint (orchestrator ``k8s``)."""
        return cls(
            labels=labels or {},
            namespace=namespace,
            namespace_labels=namespace_labels or {},
            service_account=service_account,
            service_account_labels=service_account_labels or {},
            orchestrator=KUBERNETES_ORCHESTRATOR,
        )

    @property
    def effective_labels(self) -> Mapping[str, str]:
        """The labels Calico evaluates selectors against (read-only view, computed once)."""
        return MappingProxyType(self._effective)

    def effective(self) -> dict[str, str]:
        """Compute the effective labels (use :attr:`effective_labels`; this builds a new dict).

        Lowest to highest precedence, as in Calico: the namespace's labels as
        ``pcns.<key>`` plus ``pcns.projectcalico.org/name``; the service account's labels as
        ``pcsa.<key>`` plus ``pcsa.projectcalico.org/name``; the object's own labels; the
        implicit :data:`NAMESPACE_LABEL`, :data:`ORCHESTRATOR_LABEL` and
        :data:`SERVICE_ACCOUNT_LABEL`.

        Differs from Calico: own labels starting with ``pcns.``/``pcsa.`` or named like an
        implicit label are dropped for *every* subject. Calico drops the prefixed ones only on
        workload endpoints, so a GlobalNetworkSet or host endpoint labelled
        ``pcns.team: a`` would match ``namespaceSelector: team == "a"`` there; here it cannot
        pose as a namespaced object.
        """
        eff: dict[str, str] = {}
        if self.namespace is not None:
            for key, value in self.namespace_labels.items():
                eff[NAMESPACE_LABEL_PREFIX + key] = value
            eff[NAMESPACE_LABEL_PREFIX + NAME_LABEL] = self.namespace
        if self.service_account is not None:
            for key, value in self.service_account_labels.items():
                eff[SERVICE_ACCOUNT_LABEL_PREFIX + key] = value
            eff[SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL] = self.service_account
        for key, value in self.labels.items():
            if key not in IMPLICIT_LABELS and not key.startswith(_RESERVED_PREFIXES):
                eff[key] = value
        if self.namespace is not None:
            eff[NAMESPACE_LABEL] = self.namespace
        if self.orchestrator is not None:
            eff[ORCHESTRATOR_LABEL] = self.orchestrator
        if self.service_account is not None:
            eff[SERVICE_ACCOUNT_LABEL] = self.service_account
        return eff

    def matches(self, selector: Selector) -> bool:
        """Evaluate ``selector`` against the effective labels."""
        return selector.matches(self._effective)


# --------------------------------------------------------------------------- policies


@functools.lru_cache(maxsize=4096)
def policy_selector(
    *,
    namespace: str | None,
    selector: Selector | None = None,
    namespace_selector: Selector | None = None,
    service_account_selector: Selector | None = None,
) -> Selector:
    """Build the one selector, over effective labels, that picks a policy's endpoints.

    Rules (Calico docs, NetworkPolicy / GlobalNetworkPolicy "Spec"; libcalico-go policy
    processors):

    * **NetworkPolicy** (``namespace`` set): ``selector`` AND
      ``projectcalico.org/namespace == namespace``: only endpoints in the policy's namespace.
      ``serviceAccountSelector`` is ANDed, evaluated on the service account's labels.
      A NetworkPolicy has no ``namespaceSelector``.
    * **GlobalNetworkPolicy** (``namespace`` None): ``selector`` everywhere (pods and host
      endpoints). ``namespaceSelector`` is ANDed, evaluated on the endpoint's namespace's
      labels; in it, and in ``selector`` once a ``namespaceSelector`` is given, ``all()``
      means "any namespaced endpoint" (``has(projectcalico.org/namespace)``), so host
      endpoints drop out. ``serviceAccountSelector`` is ANDed likewise, with ``all()`` in any
      part then meaning "has a service account".

    Surprising but faithful:

    * In a GlobalNetworkPolicy ``namespaceSelector``, ``global()`` is *not* rewritten (Calico
      rewrites it only in rule selectors), so it matches every endpoint, host endpoints
      included.
    * A namespace selector such as ``team != "a"`` also matches host endpoints, which have no
      namespace labels at all.
    * In a NetworkPolicy ``serviceAccountSelector``, ``all()`` is not rewritten and matches
      pods without a service account too.

    * An omitted ``selector`` (None) is left out of the conjunction rather than read as
      ``all()``, so it is not rewritten: with ``namespaceSelector: team != "a"`` and no
      ``selector`` a GlobalNetworkPolicy also reaches host endpoints, while with
      ``selector: all()`` it does not. Pass None only when the field was really omitted.

    Args:
        namespace: The policy's namespace; None for a GlobalNetworkPolicy.
        selector: ``spec.selector`` (None: omitted, i.e. ``all()``).
        namespace_selector: ``spec.namespaceSelector`` (GlobalNetworkPolicy only).
        service_account_selector: ``spec.serviceAccountSelector``.

    Raises:
        InvalidPolicy: a NetworkPolicy given a ``namespace_selector``.
    """
    parts = [] if selector is None else [selector]
    if namespace is not None:
        if namespace_selector is not None:
            raise _problem(
                "namespaceSelector is not a field of a namespaced NetworkPolicy",
                "use a GlobalNetworkPolicy to select endpoints by namespace labels",
            )
        parts.append(_in_namespace(namespace))
        if service_account_selector is not None:
            parts.append(service_account_selector.with_key_prefix(SERVICE_ACCOUNT_LABEL_PREFIX))
        return Selector.all().and_(*parts)
    if namespace_selector is not None:
        parts.append(namespace_selector.with_key_prefix(NAMESPACE_LABEL_PREFIX))
        parts = [p.substitute(all_=_IN_A_NAMESPACE) for p in parts]
    if service_account_selector is not None:
        parts.append(service_account_selector.with_key_prefix(SERVICE_ACCOUNT_LABEL_PREFIX))
        parts = [p.substitute(all_=_HAS_SERVICE_ACCOUNT) for p in parts]
    return Selector.all().and_(*parts)


def policy_applies(
    subject: Subject,
    *,
    namespace: str | None,
    selector: Selector | None = None,
    namespace_selector: Selector | None = None,
    service_account_selector: Selector | None = None,
) -> bool:
    """Return whether a policy applies to an endpoint (see :func:`policy_selector`).

    Args:
        subject: The endpoint.
        namespace: The policy's namespace; None for a GlobalNetworkPolicy.
        selector: ``spec.selector`` (None: omitted).
        namespace_selector: ``spec.namespaceSelector`` (GlobalNetworkPolicy only).
        service_account_selector: ``spec.serviceAccountSelector``.
    """
    return subject.matches(
        policy_selector(
            namespace=namespace,
            selector=selector,
            namespace_selector=namespace_selector,
            service_account_selector=service_account_selector,
        )
    )


# --------------------------------------------------------------------------- rule peers


@attrs.frozen
class PeerMatch:
    """What a rule's ``source`` or ``destination`` selectors reach, over effective labels.

    Attributes:
        selector: The peer must match this; None when the rule names no selector at all,
            which puts no constraint on the peer (any address, endpoint or not; other fields
            such as ``nets`` or ``domains`` decide). A selector, even ``all()``, reaches only
            endpoints and network sets.
        not_selector: The peer must not match this (None: no exclusion). As in Calico it is
            not namespace-scoped itself; the namespace scoping lives in ``selector``.
    """

    selector: Selector | None
    not_selector: Selector | None = None

    @property
    def constrains(self) -> bool:
        """True when only endpoints and network sets can match (``selector`` is set)."""
        return self.selector is not None

    def matches(self, peer: Subject) -> bool:
        """Return whether an endpoint or network set is reached."""
        if self.selector is not None and not peer.matches(self.selector):
            return False
        return self.not_selector is None or not peer.matches(self.not_selector)


@functools.lru_cache(maxsize=4096)
def _in_namespace(namespace: str) -> Selector:
    """``projectcalico.org/namespace == "<namespace>"``: one object per namespace."""
    return Selector.label_equals(NAMESPACE_LABEL, namespace)


@functools.lru_cache(maxsize=8192)
def _peer_match(
    policy_namespace: str | None,
    selector: Selector | None,
    not_selector: Selector | None,
    namespace_selector: Selector | None,
    service_account_names: tuple[str, ...],
    service_account_selector: Selector | None,
) -> PeerMatch:
    scope: Selector | None = None
    if namespace_selector is not None:
        scope = namespace_selector.with_key_prefix(NAMESPACE_LABEL_PREFIX).substitute(
            all_=_IN_A_NAMESPACE, global_=_NOT_IN_A_NAMESPACE
        )
    elif policy_namespace is not None:
        scope = _in_namespace(policy_namespace)

    parts: list[Selector] = []
    if service_account_selector is not None:
        parts.append(service_account_selector.with_key_prefix(SERVICE_ACCOUNT_LABEL_PREFIX))
    if service_account_names:
        parts.append(Selector.label_in(SERVICE_ACCOUNT_LABEL, service_account_names))
    if selector is not None:
        parts.append(selector)

    positive = Selector.and_(*parts) if parts else None
    if scope is not None and (parts or not_selector is not None or namespace_selector is not None):
        positive = scope if positive is None else scope.and_(positive)
    return PeerMatch(selector=positive, not_selector=not_selector)


def peer_match(
    *,
    policy_namespace: str | None,
    selector: Selector | None = None,
    not_selector: Selector | None = None,
    namespace_selector: Selector | None = None,
    service_account_names: Iterable[str] = (),
    service_account_selector: Selector | None = None,
) -> PeerMatch:
    """Build what a rule's ``source``/``destination`` reaches (cached per distinct rule).

    Rules (Calico docs, "EntityRule"; libcalico-go ``updateprocessors/rules.go``):

    * The reach is ``selector`` AND the service-account match (``names`` as
      ``projectcalico.org/serviceaccount in {...}``, ``selector`` on the service account's
      labels), AND a namespace scope, minus ``notSelector``.
    * Namespace scope, applied as soon as any of ``selector``, ``notSelector``,
      ``namespaceSelector`` or ``serviceAccounts`` is used:

      - with ``namespaceSelector``: namespaces whose labels match it. In it ``all()`` means
        every namespaced object (``has(projectcalico.org/namespace)``) and ``global()``
        means non-namespaced objects only (``!has(projectcalico.org/namespace)``: host
        endpoints and GlobalNetworkSets);
      - without, in a NetworkPolicy: the policy's own namespace only (its endpoints and its
        NetworkSets; never GlobalNetworkSets);
      - without, in a GlobalNetworkPolicy: no scope; the selector reaches every namespace
        and non-namespaced objects alike.

    * With none of those fields the rule puts no constraint on the peer at all.

    Surprising but faithful: in a NetworkPolicy, ``destination: {selector: k8s-app ==
    "kube-dns"}`` (as in the seed article's DNS rules) reaches only pods labelled
    ``k8s-app: kube-dns`` *in the policy's own namespace*, so it reaches nothing in
    ``kube-system`` and DNS stays blocked. Add ``namespaceSelector: projectcalico.org/name ==
    "kube-system"`` to reach the cluster DNS.

    Args:
        policy_namespace: The policy's namespace; None for a GlobalNetworkPolicy.
        selector: The rule side's ``selector``.
        not_selector: Its ``notSelector``.
        namespace_selector: Its ``namespaceSelector``.
        service_account_names: ``serviceAccounts.names``.
        service_account_selector: ``serviceAccounts.selector``.

    Raises:
        InvalidPolicy: a service account name holds both quote characters.
    """
    return _peer_match(
        policy_namespace,
        selector,
        not_selector,
        namespace_selector,
        tuple(service_account_names),
        service_account_selector,
    )


def peer_matches(
    peer: Subject,
    *,
    policy_namespace: str | None,
    selector: Selector | None = None,
    not_selector: Selector | None = None,
    namespace_selector: Selector | None = None,
    service_account_names: Iterable[str] = (),
    service_account_selector: Selector | None = None,
) -> bool:
    """Return whether a rule's ``source``/``destination`` reaches ``peer``.

    See :func:`peer_match` for the rules.

    Args:
        peer: The endpoint or network set.
        policy_namespace: The policy's namespace; None for a GlobalNetworkPolicy.
        selector: The rule side's ``selector``.
        not_selector: Its ``notSelector``.
        namespace_selector: Its ``namespaceSelector``.
        service_account_names: ``serviceAccounts.names``.
        service_account_selector: ``serviceAccounts.selector``.
    """
    return peer_match(
        policy_namespace=policy_namespace,
        selector=selector,
        not_selector=not_selector,
        namespace_selector=namespace_selector,
        service_account_names=service_account_names,
        service_account_selector=service_account_selector,
    ).matches(peer)
