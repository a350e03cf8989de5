"""The eBPF backend passes the conformance kit, on the seeds every backend runs.

The kit (:mod:`fqdnpolicy.testing`) runs each seed's case in a lab of namespaces: policies in
three tiers, names learned from dnsmasq's answers, an expiry (which the program itself must
honour, from the deadlines in its maps, before any removal is applied), a refresh,
connections held across an expiry (the program's conntrack), a policy change; several
hundred TCP, UDP and ICMP flows, IPv4 and IPv6, each compared with ``engine.verdict()``.
The program and maps are pinned in a bpffs of the test's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fqdnpolicy_ebpf.build import compile_program
from fqdnpolicy_ebpf.layout import slots_for

from fqdnpolicy.testing import SEEDS
from fqdnpolicy.testing.plugin import ConformanceRunner
from tests.kernel.test_ebpf_fixtures import EBPF_TOOLS, bpffs, ebpf_kernel

pytestmark = pytest.mark.kernel

__all__ = ["bpffs", "ebpf_kernel"]


@pytest.mark.parametrize("seed", SEEDS)
def test_ebpf_enforces_exactly_the_engine_verdicts(
    backend_conformance: ConformanceRunner, seed: int, bpffs: Path
) -> None:
    # Compiled before the kit's clock runs: a first compile on a fresh machine would eat into
    # the time between a DNS answer and the probes that depend on it.
    compile_program(slots_for(0))
    report = backend_conformance(
        "ebpf", seed=seed, options={"pin_root": str(bpffs)}, tools=EBPF_TOOLS
    )
    assert report.total >= 300
    assert not report.mismatches
    # A fresh bpffs holds the kernel's own maps.debug and progs.debug; remove() unpins ours.
    assert sorted(p.name for p in bpffs.iterdir()) == ["maps.debug", "progs.debug"]
