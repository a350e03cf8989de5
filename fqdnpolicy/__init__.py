"""fqdnpolicy: decide and enforce Kubernetes egress policy by domain name.

The public API is re-exported here; submodules hold one concern each:

* :mod:`fqdnpolicy.errors` - :class:`InvalidPolicy` and :class:`Problem`.
* :mod:`fqdnpolicy.selector` - Calico's label-selector language.
* :mod:`fqdnpolicy.domains` - domain names, wildcard patterns and the pattern index.
* :mod:`fqdnpolicy.model` - frozen attrs models of the policy resources.
* :mod:`fqdnpolicy.loader` - YAML/JSON loading with located, collected errors.
* :mod:`fqdnpolicy.lint` - warnings about policies that load but are risky.
* :mod:`fqdnpolicy.dns` - the DNS cache (name -> IP learned from DNS answers).
* :mod:`fqdnpolicy.cluster` - endpoints, namespaces and service accounts.
* :mod:`fqdnpolicy.engine` - verdicts, explanations and datapath deltas.
* :mod:`fqdnpolicy.datapath` - the engine's state and deltas as plain data for backends.
* :mod:`fqdnpolicy.backends` - the backend plugin contract and discovery.
* :mod:`fqdnpolicy.flows` - flows written as text (``default/backend -> api.github.com:443``).

Names are imported lazily so that ``import fqdnpolicy`` stays cheap for embedders.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "InvalidPolicy": "fqdnpolicy.errors",
    "Problem": "fqdnpolicy.errors",
    "Selector": "fqdnpolicy.selector",
    "parse_selector": "fqdnpolicy.selector",
    "DomainPattern": "fqdnpolicy.domains",
    "PatternIndex": "fqdnpolicy.domains",
    "normalize_name": "fqdnpolicy.domains",
    "parse_domain_pattern": "fqdnpolicy.domains",
    "ResourceSet": "fqdnpolicy.model",
    "load": "fqdnpolicy.loader",
    "loads": "fqdnpolicy.loader",
    "dump": "fqdnpolicy.loader",
    "lint": "fqdnpolicy.lint",
    "DNSCache": "fqdnpolicy.dns",
    "DNSChange": "fqdnpolicy.dns",
    "Cluster": "fqdnpolicy.cluster",
    "Endpoint": "fqdnpolicy.cluster",
    "Namespace": "fqdnpolicy.cluster",
    "load_cluster": "fqdnpolicy.cluster",
    "loads_cluster": "fqdnpolicy.cluster",
    "PolicyEngine": "fqdnpolicy.engine",
    "Verdict": "fqdnpolicy.engine",
    "Trace": "fqdnpolicy.engine",
}

__all__ = [
    "Cluster",
    "DNSCache",
    "DNSChange",
    "DomainPattern",
    "Endpoint",
    "InvalidPolicy",
    "Namespace",
    "PatternIndex",
    "PolicyEngine",
    "Problem",
    "ResourceSet",
    "Selector",
    "Trace",
    "Verdict",
    "__version__",
    "dump",
    "lint",
    "load",
    "load_cluster",
    "loads",
    "loads_cluster",
    "normalize_name",
    "parse_domain_pattern",
    "parse_selector",
]

if TYPE_CHECKING:
    from fqdnpolicy.cluster import Cluster, Endpoint, Namespace, load_cluster, loads_cluster
    from fqdnpolicy.dns import DNSCache, DNSChange
    from fqdnpolicy.domains import DomainPattern, PatternIndex, normalize_name, parse_domain_pattern
    from fqdnpolicy.engine import PolicyEngine, Trace, Verdict
    from fqdnpolicy.errors import InvalidPolicy, Problem
    from fqdnpolicy.lint import lint
    from fqdnpolicy.loader import dump, load, loads
    from fqdnpolicy.model import ResourceSet
    from fqdnpolicy.selector import Selector, parse_selector


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fqdnpolicy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
