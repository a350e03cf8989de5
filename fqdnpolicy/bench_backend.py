"""``fqdnpolicy bench --backend NAME``: a datapath's own verdict throughput, beside the engine's.

A backend that can judge prepared packets in the kernel (the eBPF backend, with
``BPF_PROG_TEST_RUN``) offers ``bench_verdicts(addresses=..., repeat=...)`` returning verdicts
per second per packet shape. The backend comes through :func:`fqdnpolicy.backends.get`, like
any plugin; the engine's figure is measured in the same run on the benchmark workload.
"""

from __future__ import annotations

import random
import time
from typing import TextIO

from fqdnpolicy.backends import BackendError, get
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.workload import FULL_SIZE, generate

__all__ = ["engine_verdicts_per_second", "run_backend_bench"]


def engine_verdicts_per_second(scale: float, flows: int, seed: int = 1) -> float:
    """Verdicts per second of :meth:`PolicyEngine.verdict` on the workload at ``scale``."""
    workload = generate(FULL_SIZE.scaled(scale), seed=seed)
    engine = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    rng = random.Random(seed)
    sources = [ep.key for ep in workload.cluster.endpoints]
    targets = list(workload.destinations) or [ep.ips[0] for ep in workload.cluster.endpoints]
    drawn = [(rng.choice(sources), rng.choice(targets)) for _ in range(flows)]
    started = time.perf_counter()
    for src, dst in drawn:
        engine.verdict(src, dst, protocol="TCP", port=443)
    return flows / (time.perf_counter() - started)


def run_backend_bench(
    name: str, *, addresses: int, repeat: int, scale: float, flows: int, out: TextIO
) -> int:
    """Measure backend ``name``'s kernel verdicts and the engine's; print both.

    Raises:
        BackendError: the backend has no kernel benchmark, or it failed.
    """
    backend = get(name)
    measure = getattr(backend, "bench_verdicts", None)
    if measure is None:
        raise BackendError(f"backend {name!r} cannot judge packets in the kernel by itself")
    rates: dict[str, float] = measure(addresses=addresses, repeat=repeat)
    out.write(f"{name}: kernel verdicts per second per core, {addresses:,} set members\n")
    for shape, rate in rates.items():
        out.write(f"  {shape:<24} {rate:>14,.0f}\n")
    engine = engine_verdicts_per_second(scale, flows)
    out.write(f"engine verdict() per second, workload scale {scale:g}: {engine:,.0f}\n")
    return 0
