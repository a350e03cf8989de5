"""Kubernetes NetworkPolicy conversion: port ranges stay ranges, merged as Calico merges them."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.loader import loads
from fqdnpolicy.loading.kubernetes import simplify_ports
from fqdnpolicy.model import NamedPort, Port, PortRange


def expanded_reference(ports: list[Port]) -> list[Port]:
    """The obvious model: expand every range to its ports, then merge consecutive ports."""
    numeric = sorted(
        n for p in ports if isinstance(p, PortRange) for n in range(p.first, p.last + 1)
    )
    if len(ports) <= 1 or len(numeric) <= 1:
        return ports
    out: list[Port] = [p for p in ports if isinstance(p, NamedPort)]
    start = prev = numeric[0]
    for n in numeric[1:]:
        if n > prev + 1:
            out.append(PortRange(start, prev))
            start = n
        prev = n
    out.append(PortRange(start, prev))
    return out


port_ranges = st.builds(
    lambda a, b: PortRange(min(a, b), max(a, b)), st.integers(1, 200), st.integers(1, 200)
)
ports = st.lists(port_ranges | st.sampled_from([NamedPort("http"), NamedPort("dns")]), max_size=8)


@given(ports)
def test_merging_ranges_gives_what_expanding_them_to_ports_gives(given_ports: list[Port]) -> None:
    assert simplify_ports(list(given_ports)) == expanded_reference(list(given_ports))


def test_many_wide_endport_ranges_are_kept_as_ranges_not_expanded_to_ports() -> None:
    entries = "".join(f"    - port: {i}\n      endPort: 65535\n" for i in range(1, 401))
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: p, namespace: default}\n"
        "spec:\n  podSelector: {}\n  egress:\n  - ports:\n" + entries
    )
    tracemalloc.start()
    try:
        rs = loads(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rs.policies[0].spec.egress[0].destination.ports == (PortRange(1, 65535),)
    # Expanding would hold one integer per port: 400 ranges of ~65,000 ports each.
    assert peak < 64 * 1024 * 1024
