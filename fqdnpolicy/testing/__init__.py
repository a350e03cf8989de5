"""The backend conformance kit: prove on a real kernel that a backend enforces the engine.

A backend (see :mod:`fqdnpolicy.backends`) is run in a lab of network namespaces (workloads,
a host that forwards, a server and a DNS server) against seeded cases: generated tiers and
policies, names learned from real DNS answers, lifetimes that run out, a refresh, a policy
change, connections held across an expiry. Every probed flow must do in the kernel what
:meth:`~fqdnpolicy.engine.PolicyEngine.verdict` says; :class:`ConformanceFailure` lists each
one that does not, with :meth:`~fqdnpolicy.engine.PolicyEngine.explain` beside it::

    from fqdnpolicy.testing import SEEDS, check_backend

    for seed in SEEDS:
        print(check_backend("nftables", seed=seed, options={"table": "t"}))

It needs root, ``ip`` and ``dnsmasq`` (:func:`missing_requirements`), and the backend's own
tools. With pytest, the fixture ``backend_conformance`` of the opt-in plugin
:mod:`fqdnpolicy.testing.plugin` also skips (or, under ``FQDNPOLICY_REQUIRE_KERNEL=1``,
fails) where those are missing.

Modules: :mod:`~fqdnpolicy.testing.conformance` (the run), :mod:`~fqdnpolicy.testing.cases`
(the seeded cases), :mod:`~fqdnpolicy.testing.report` (what was found),
:mod:`~fqdnpolicy.testing.lab` (the namespaces) and :mod:`~fqdnpolicy.testing.probes` (the
programs run inside them). Importing this package imports neither pytest nor any backend.
"""

from fqdnpolicy.testing.cases import Case, generate_case
from fqdnpolicy.testing.conformance import SEEDS, check_backend, missing_requirements
from fqdnpolicy.testing.report import (
    ConformanceError,
    ConformanceFailure,
    ConformanceReport,
    Mismatch,
)

__all__ = [
    "SEEDS",
    "Case",
    "ConformanceError",
    "ConformanceFailure",
    "ConformanceReport",
    "Mismatch",
    "check_backend",
    "generate_case",
    "missing_requirements",
]
