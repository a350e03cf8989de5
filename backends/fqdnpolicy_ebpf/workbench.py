"""A large policy state and packet shapes for measuring the program (benchmarks, CLI).

:func:`bench_state`: DNS addresses spread over domain sets, CIDR sets, one endpoint on
``lo`` (where ``BPF_PROG_TEST_RUN`` packets arrive) whose egress tier holds a rule per set.
:data:`SHAPES`: packets allowed by a domain set, denied at the end of the tier, a CIDR hit,
IPv6. :func:`measure_verdicts` loads the state into a scratch namespace and times each shape.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from typing import Any

from fqdnpolicy.backends import BackendError
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy_ebpf.packets import TC_ACT_OK, TC_ACT_SHOT, frame, run_program

__all__ = ["DOMAIN_SETS", "SHAPES", "SRC", "bench_state", "ip4", "measure_verdicts"]

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


def measure_verdicts(
    backend: Any, addresses: int, repeat: int, rounds: int = 3
) -> dict[str, float]:
    """Load :func:`bench_state` into a scratch namespace; verdicts per second of each shape.

    The best of ``rounds`` runs of ``repeat`` test runs each (one core: a test run stays on
    the CPU it started on).

    Raises:
        BackendError: a verdict differs from the shape's, or the namespace cannot be made.
    """
    name = f"fqe-b-{os.getpid() % 100000}{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if made.returncode != 0:
        raise BackendError(f"cannot create a scratch namespace (root needed): {made.stderr!r}")
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
