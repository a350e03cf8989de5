"""The connectivity map equals brute force: ``verdict()`` for every pair and flow.

Hypothesis generates small worlds (the engine tests' strategies: tiers, Pass/Log/Deny, nets,
selectors, domains, named ports, ICMP fields, both families) and requires, for every source
endpoint and every destination (each endpoint address, each endpoint by name, outside
addresses including some of every outside piece), that what the map says is allowed is what
``PolicyEngine.verdict`` answers: TCP, UDP and SCTP on every port where a verdict can change
(:func:`critical_ports`, which stand for all 65536; one test below tries literally all of
them), UDP-Lite, ICMP types and codes, and other protocols. Outside sources are held to
``verdict(direction="ingress")``. The rows (the minimised map) are expanded and held to the
pair answers.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, note, settings

from fqdnpolicy.connectivity import Connections, ConnectivityMap, connectivity
from fqdnpolicy.connectivity.state import Piece
from fqdnpolicy.engine import Direction, PolicyEngine
from tests.connectivity.support import (
    allows,
    build,
    critical_ports,
    family_of,
    flows,
    outside_addresses,
)
from tests.engine.strategies import WorldSpec, worlds

EXAMPLES = int(os.environ.get("FQDNPOLICY_CONNECTIVITY_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_pair(
    engine: PolicyEngine,
    cmap: ConnectivityMap,
    src: str,
    dst: str,
    family: int,
    ports: list[int],
    direction: Direction = "egress",
) -> None:
    conns = cmap.connections(src, dst)
    for flow in flows(family, ports):
        proto, port, icmp_type, code = flow
        verdict = engine.verdict(
            src, dst, proto, port, direction, icmp_type=icmp_type, icmp_code=code
        )
        assert allows(conns, family, flow) == verdict.allowed, (
            f"{src} -> {dst} ({direction}) {flow}: map says {conns}, verdict {verdict}"
        )


def check_world(world: WorldSpec) -> None:
    note(f"resources: {world.resources!r}")
    note(f"cluster: {world.cluster!r}")
    engine = build(world)
    cmap = connectivity(engine)
    ports = critical_ports(world.resources, world.cluster)
    endpoints = world.cluster.endpoints
    outside = outside_addresses(world, cmap)
    for src in endpoints:
        families = {family_of(ip) for ip in src.ips}
        for dst in endpoints:
            for ip in dst.ips:
                if family_of(ip) in families:
                    check_pair(engine, cmap, src.key, ip, family_of(ip), ports)
        for address in outside:
            if family_of(address) in families:
                check_pair(engine, cmap, src.key, address, family_of(address), ports)
    for dst in endpoints:
        families = {family_of(ip) for ip in dst.ips}
        for address in outside:
            if family_of(address) in families:
                check_pair(engine, cmap, address, dst.key, family_of(address), ports, "ingress")
    check_rows(cmap, endpoints_by_key={ep.key for ep in endpoints})


def check_rows(cmap: ConnectivityMap, endpoints_by_key: set[str]) -> None:
    """Rows cover each pair once, with the pair's connections; no allowed pair is missing."""
    pieces = {p.id: (ident, p) for ident, p in cmap.state.pieces().items()}
    seen: dict[tuple[str, str], Connections] = {}

    def expand(peer: str) -> list[str]:
        info = cmap.peers[peer]
        if info.kind != "rest":
            return [peer]
        texts = set(info.sets)
        return [
            pid
            for pid, (_, piece) in pieces.items()
            if piece.family == info.family and not texts & set(piece.sets)
        ]

    for row in cmap.rows:
        for src in row.sources:
            for s in expand(src):
                for dst in row.destinations:
                    for d in expand(dst):
                        assert (s, d) not in seen, f"pair {s} -> {d} in two rows"
                        seen[(s, d)] = row.connections

    def address_of(peer: str, piece: Piece | None) -> str:
        if piece is not None:
            return piece.hosts[0] if piece.hosts else piece.cidrs[0].split("/")[0]
        return peer.split("@")[1] if "@" in peer else peer

    outside = list(pieces)
    for src in sorted(endpoints_by_key):
        for dst in [*sorted(endpoints_by_key), *outside]:
            piece = pieces[dst][1] if dst in pieces else None
            want = cmap.connections(src, address_of(dst, piece) if piece else dst)
            assert seen.get((src, dst), Connections()) == want, f"{src} -> {dst}"
        for dst_piece in outside:
            piece = pieces[dst_piece][1]
            want = cmap.connections(address_of(dst_piece, piece), src)
            assert seen.get((dst_piece, src), Connections()) == want, f"{dst_piece} -> {src}"


@SETTINGS
@given(worlds(max_flows=1))
def test_map_equals_verdict_for_every_pair_and_flow(world: WorldSpec) -> None:
    check_world(world)
