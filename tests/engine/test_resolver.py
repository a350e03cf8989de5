"""The policy resolver interns programs shared by endpoints with equal policies and forgets
those no endpoint uses, without reading every endpoint at each change; it knows which
endpoints each policy applies to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import fqdnpolicy
from fqdnpolicy.cluster import NamedPort
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.engine.resolver import PolicyResolver

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: web, namespace: default}}
spec:
  selector: app == "web"
  egress:
  - action: Allow
    protocol: TCP
    destination: {{ports: [{port}]}}
"""


def _engine() -> PolicyEngine:
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"])],
        [fqdnpolicy.Namespace("default")],
    )
    return PolicyEngine(fqdnpolicy.loads(POLICY.format(port=1)), cluster, fqdnpolicy.DNSCache())


def test_programs_no_endpoint_uses_are_forgotten() -> None:
    engine = _engine()
    resolver = engine._graph.resolver
    for port in range(2, 2600):  # each version of the policy makes a new program
        engine.upsert_policy(fqdnpolicy.loads(POLICY.format(port=port)).policies[0])
        assert resolver.interned <= 4 * 2 + 1024 + 1
    verdict = engine.verdict("default/web", "203.0.113.9", "TCP", 2599)
    assert verdict.action == "Allow"
    engine.close()


class Counting:
    """An iterable of live programs that counts how often it is read."""

    def __init__(self, programs: list[Any]) -> None:
        self.programs = programs
        self.reads = 0

    def __iter__(self) -> Iterator[Any]:
        self.reads += 1
        return iter(self.programs)


def test_live_programs_are_read_only_once_the_interned_ones_outgrow_them() -> None:
    resolver = PolicyResolver([], lambda key: frozenset())
    programs = [object() for _ in range(3000)]  # stand-ins: only their identity matters
    live = Counting(programs[:10])
    for i, program in enumerate(programs):
        resolver._programs[(i,)] = program  # type: ignore[assignment]
        resolver.collect(live)
        assert resolver.interned <= 4 * 10 + 1024
    # Read when the interned outgrew the bound with no live count yet (1,029 programs: too
    # few to forget any of them beside ten live ones), then each time they outgrew four times
    # the ten live ones plus the slack (1,065 programs): three times in 3,000 changes.
    assert live.reads == 3
    assert resolver.interned == 10 + (3000 - 2120)


OWN_NETS = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-first-half, namespace: default}
spec:
  selector: app == "web"
  types: [Egress]
  egress:
  - action: Allow
    source: {nets: [198.51.100.0/25]}
    destination: {nets: [203.0.113.0/24]}
"""


def test_replicas_share_policies_but_not_what_is_bound_to_their_addresses() -> None:
    # Equal labels pick the same policies; a rule's own side naming nets still holds for one
    # replica's address and not the other's, whichever of them the batch resolves first.
    replicas = [
        fqdnpolicy.Endpoint(f"web-{i}", "default", {"app": "web"}, ips=[ip])
        for i, ip in enumerate(["198.51.100.20", "198.51.100.200", "198.51.100.21"])
    ]
    cluster = fqdnpolicy.Cluster(replicas, [fqdnpolicy.Namespace("default")])
    engine = PolicyEngine(fqdnpolicy.loads(OWN_NETS), cluster, fqdnpolicy.DNSCache())
    verdicts = [
        engine.verdict(f"default/web-{i}", "203.0.113.9", "TCP", 443).action for i in range(3)
    ]
    assert verdicts == ["Allow", "Deny", "Allow"]
    record = engine.record
    assert record("default/web-0").egress is record("default/web-2").egress  # type: ignore[union-attr]
    assert record("default/web-0").egress is not record("default/web-1").egress  # type: ignore[union-attr]
    engine.close()


SELECTED = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: p{name}, namespace: default}}
spec:
  selector: app == "{app}"
  egress:
  - action: Allow
"""

APPS = ["a", "b", "c"]
changes = st.lists(
    st.one_of(
        st.tuples(st.just("policy"), st.integers(0, 3), st.sampled_from(APPS)),
        st.tuples(st.just("unpolicy"), st.integers(0, 3), st.just("")),
        st.tuples(st.just("endpoint"), st.integers(0, 4), st.sampled_from(APPS)),
        st.tuples(st.just("unendpoint"), st.integers(0, 4), st.just("")),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(changes)
def test_which_endpoints_a_policy_applies_to_follows_every_change(
    steps: list[tuple[str, int, str]],
) -> None:
    # Endpoints with equal policies are filed together; what a policy applies to must still
    # be exactly the endpoints whose last resolution it took part in.
    engine = PolicyEngine(
        fqdnpolicy.loads(""),
        fqdnpolicy.Cluster([], [fqdnpolicy.Namespace("default")]),
        fqdnpolicy.DNSCache(),
    )
    graph = engine._graph
    for kind, n, app in steps:
        if kind == "policy":
            engine.upsert_policy(fqdnpolicy.loads(SELECTED.format(name=n, app=app)).policies[0])
        elif kind == "unpolicy":
            engine.remove_policy(fqdnpolicy.loads(SELECTED.format(name=n, app="a")).policies[0])
        elif kind == "endpoint":
            engine.upsert_endpoint(
                fqdnpolicy.Endpoint(f"e{n}", "default", {"app": app}, ips=[f"198.51.100.{n + 1}"])
            )
        else:
            engine.remove_endpoint(f"default/e{n}")
        for key in (f"NetworkPolicy/default/p{i}" for i in range(4)):
            expected = {
                e
                for e, state in graph.endpoints.items()
                if key in state.policies["egress"] | state.policies["ingress"]
            }
            assert graph.resolver.applied_to(key) == expected
    engine.close()


NAMED_PORTS = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  selector: app == "web"
  egress:
  - action: Allow
    protocol: TCP
    destination: {ports: [http]}
"""


def test_a_peer_named_port_rule_tells_endpoints_apart_from_plain_addresses() -> None:
    # The rule needs no set for its peer: an endpoint in none of the program's sets still
    # passes it by its named port, a plain address on the same port does not.
    cluster = fqdnpolicy.Cluster(
        [
            fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"]),
            fqdnpolicy.Endpoint(
                "db",
                "default",
                {"app": "db"},
                ips=["198.51.100.30"],
                named_ports=[NamedPort("http", 8080)],
            ),
        ],
        [fqdnpolicy.Namespace("default")],
    )
    engine = PolicyEngine(fqdnpolicy.loads(NAMED_PORTS), cluster, fqdnpolicy.DNSCache())
    assert engine.verdict("default/web", "203.0.113.5", "TCP", 8080).action == "Deny"
    assert engine.verdict("default/web", "198.51.100.30", "TCP", 8080).action == "Allow"
    assert engine.verdict("default/web", "198.51.100.30", "TCP", 8081).action == "Deny"
