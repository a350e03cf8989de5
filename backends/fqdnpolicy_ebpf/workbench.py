"""A large policy state and packet shapes for measuring the program (benchmarks, CLI).

:func:`bench_state`: DNS addresses spread over domain sets, CIDR sets, one endpoint on
``lo`` (where ``BPF_PROG_TEST_RUN`` packets arrive) whose egress tier holds a rule per set.
:data:`SHAPES`: packets allowed by a domain set, denied at the end of the tier, a CIDR hit,
IPv6. :func:`measure_verdicts` loads the state into a scratch namespace and times each shape;
:func:`measure_full_workload` does so with the whole benchmark workload's state.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import time
from typing import Any

import attrs

from fqdnpolicy.backends import BackendError
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy_ebpf import libbpf
from fqdnpolicy_ebpf.kernel import Datapath, NodeState, capacity_for, pack_tables
from fqdnpolicy_ebpf.layout import Memberships, slots_for
from fqdnpolicy_ebpf.packets import TC_ACT_OK, TC_ACT_SHOT, frame, run_program

__all__ = [
    "DOMAIN_SETS",
    "SHAPES",
    "SRC",
    "FullRun",
    "bench_state",
    "ip4",
    "measure_full_workload",
    "measure_verdicts",
]

DOMAIN_SETS = 64
SRC = "198.51.100.10"


def ip4(n: int) -> str:
    """The ``n``-th address of the state's DNS addresses (10.0.0.0/8; never sent anywhere)."""
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _rule(index: int, action: str, **fields: Any) -> RuleState:
    return RuleState("bench", "platform", index, action, (4, 6), **fields)  # type: ignore[arg-type]


def bench_state(addresses: int, now: float, sets: int = DOMAIN_SETS) -> DatapathState:
    """``addresses`` DNS addresses in ``sets`` domain sets, CIDR sets, a rule per set."""
    per_set = max(1, addresses // sets)
    domain = [
        SetState(
            f"d:{i}",
            "domains",
            f"*.svc{i}.example.com",
            {ip4(i * per_set + j): now + 300 + j % 300 for j in range(per_set)},
        )
        for i in range(sets)
    ]
    nets = [
        SetState("n:dns", "nets", "198.51.100.53/32", {"198.51.100.53/32": None}),
        SetState("n:doc", "nets", "203.0.113.0/24", {"203.0.113.0/24": None}),
        SetState("n:doc6", "nets", "2001:db8:203::/48", {"2001:db8:203::/48": None}),
    ]
    https = PortSpec(((443, 443),))
    rules = [_rule(0, "Allow", protocol=17, peer_in=("n:dns",), dst_ports=PortSpec(((53, 53),)))]
    rules += [
        _rule(1 + i, "Allow", protocol=6, peer_in=(s.set_id,), dst_ports=https)
        for i, s in enumerate(domain)
    ]
    rules.append(_rule(len(rules), "Deny", protocol=6, peer_in=("n:doc",), dst_ports=https))
    rules.append(_rule(len(rules), "Allow", protocol=6, peer_in=("n:doc6",), dst_ports=https))
    tier = TierState("platform", tuple(rules), "Deny")
    endpoint = EndpointState("bench/web", "lo", (SRC,), (tier,), ())
    return DatapathState(tuple(domain + nets), (endpoint,), {})


def shapes(addresses: int) -> dict[str, tuple[bytes, int]]:
    """Packet shapes for a state of ``addresses``: name -> (frame, expected verdict).

    Repeating an allowed packet measures an established flow (conntrack); a denied one walks
    the whole rule table every time.
    """
    last = ip4((DOMAIN_SETS - 1) * max(1, addresses // DOMAIN_SETS))
    v6 = "2001:db8:100::a"
    return {
        "domain-allowed": (frame(SRC, last, "tcp", dport=443), TC_ACT_OK),
        "end-of-tier-deny": (frame(SRC, last, "tcp", dport=80), TC_ACT_SHOT),
        "cidr-deny": (frame(SRC, "203.0.113.7", "tcp", dport=443), TC_ACT_SHOT),
        "ipv6-allowed": (frame(v6, "2001:db8:203::7", "tcp", dport=443), TC_ACT_OK),
        "ipv6-end-of-tier-deny": (frame(v6, "2001:db8:204::7", "tcp", dport=443), TC_ACT_SHOT),
    }


SHAPES = shapes(1_000_000)


def _scratch_namespace() -> str:
    name = f"fqe-b-{os.getpid() % 100000}{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if made.returncode != 0:
        raise BackendError(f"cannot create a scratch namespace (root needed): {made.stderr!r}")
    return name


def measure_verdicts(
    backend: Any, addresses: int, repeat: int, rounds: int = 3
) -> dict[str, float]:
    """Load :func:`bench_state` into a scratch namespace; verdicts per second of each shape.

    The best of ``rounds`` runs of ``repeat`` test runs each (one core: a test run stays on
    the CPU it started on).

    Raises:
        BackendError: a verdict differs from the shape's, or the namespace cannot be made.
    """
    name = _scratch_namespace()
    try:
        now = time.monotonic()
        backend.apply(backend.render(bench_state(addresses, now), now=now), netns=name)
        programs = backend.datapath(netns=name).programs
        rates: dict[str, float] = {}
        for shape, (packet, expected) in shapes(addresses).items():
            best = None
            for _ in range(rounds):
                verdict, ns = run_program(programs, 0, packet, repeat)
                if verdict != expected:
                    raise BackendError(f"{shape}: verdict {verdict}, expected {expected}")
                best = ns if best is None else min(best, ns)
            rates[shape] = 1e9 / max(best or 1, 1)
        backend.remove(netns=name)
        return rates
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@attrs.frozen
class FullRun:
    """The program measured on the benchmark workload's whole state.

    Attributes:
        endpoint: The endpoint whose egress table judges the packets (the longest one).
        entries: Entries of its egress table.
        sets: Sets in the state; members: their members.
        tables: Rule-table entries the maps hold (endpoints with equal tables share one).
        load_s: Seconds to write the state into fresh maps (program loaded before).
        rates: Shape -> ``(verdicts per second, verdict, the engine's verdict)``.
        engine_rate: The engine's ``verdict()`` per second on the same state and flows.
    """

    endpoint: str
    entries: int
    sets: int
    members: int
    tables: int
    load_s: float
    rates: dict[str, tuple[float, str, str]]
    engine_rate: float


def _full_shapes(state: DatapathState, endpoint: EndpointState) -> dict[str, tuple[str, int]]:
    """Destinations and ports of the measured shapes: ``shape -> (address, port)``."""
    named = {s for tier in endpoint.egress for r in tier.rules for s in r.peer_in}
    by_kind: dict[str, list[str]] = {}
    for s in state.sets:
        if s.set_id in named and s.members:
            by_kind.setdefault(s.kind, []).append(next(iter(s.members)))
    domain = by_kind["domains"][-1]
    shapes = {
        "domain-member, tcp/443": (domain, 443),
        "domain-member, tcp/80": (domain, 80),
        "in no set, tcp/443": ("203.0.113.250", 443),
    }
    if "nets" in by_kind:
        net = ipaddress.ip_network(by_kind["nets"][0], strict=False)
        shapes["cidr-member, tcp/443"] = (str(net.network_address + 7), 443)
    return shapes


def measure_full_workload(
    backend: Any, repeat: int, scale: float = 1.0, rounds: int = 3
) -> FullRun:
    """Load the benchmark workload's whole state; verdicts per second of packet shapes.

    The endpoint with the longest egress table is put on ``lo`` (where test runs arrive);
    every other endpoint's table is written for an interface index of its own but attached
    nowhere (a namespace of twenty thousand veths is not the point). Each shape's verdict is
    the program's; the engine's for the same flow is beside it.

    Raises:
        BackendError: the namespace cannot be made (root needed).
    """
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.workload import FULL_SIZE, generate

    workload = generate(FULL_SIZE.scaled(scale), seed=1)
    engine = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    state = engine.datapath()
    measured = max(state.endpoints, key=lambda ep: sum(len(t.rules) + 1 for t in ep.egress))
    endpoints = tuple(
        attrs.evolve(ep, interface="lo") if ep is measured else ep for ep in state.endpoints
    )
    state = attrs.evolve(state, endpoints=endpoints)
    now = workload.clock[0]
    plan = backend.render(state, now=now).data
    ifindex = {ep.interface: 1000 + i for i, ep in enumerate(endpoints)}
    ifindex["lo"] = 1
    tables = pack_tables(plan, ifindex)
    src = next(a for a in measured.addresses if ":" not in a)
    shapes = _full_shapes(state, measured)
    name = _scratch_namespace()
    try:

        def load() -> float:
            # The program sized for the state first: the time is the maps' filling.
            members = Memberships.of((m.set_index, m.prefix, m.expiry) for m in plan.members)
            slots = slots_for(max(len(members.merged(p)) for p in members.own))
            opened = Datapath.open(slots, capacity_for(tables.size), None, backend.source)
            start = time.perf_counter()
            node = backend._write_full(NodeState(opened), plan, tables, name)
            backend._nodes[name] = node
            return time.perf_counter() - start

        load_s = libbpf.in_netns(name, load)
        programs = backend.datapath(netns=name).programs
        rates: dict[str, tuple[float, str, str]] = {}
        for shape, (dst, port) in shapes.items():
            expected = engine.verdict(measured.key, dst, "TCP", port).action
            best = None
            for _ in range(rounds):
                verdict, ns = run_program(programs, 0, frame(src, dst, "tcp", dport=port), repeat)
                best = ns if best is None else min(best, ns)
            kernel = "Allow" if verdict == TC_ACT_OK else "Deny"
            rates[shape] = (1e9 / max(best or 1, 1), kernel, expected)
        backend.remove(netns=name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    flows = [(measured.key, dst, port) for dst, port in shapes.values()] * 5000
    start = time.perf_counter()
    for key, dst, port in flows:
        engine.verdict(key, dst, "TCP", port)
    engine_rate = len(flows) / (time.perf_counter() - start)
    return FullRun(
        measured.key,
        sum(len(t.rules) + 1 for t in measured.egress),
        len(state.sets),
        len(plan.members),
        len(tables.rules),
        load_s,
        rates,
        engine_rate,
    )
