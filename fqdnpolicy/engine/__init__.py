"""The verdict engine: may this endpoint send TCP to 1.2.3.4:443, and which rule said so?

Policies, cluster state and DNS answers go in; verdicts (:meth:`PolicyEngine.verdict`,
:meth:`PolicyEngine.verdict_array`), explanations (:meth:`PolicyEngine.explain`) and, for
datapaths, deltas (:meth:`PolicyEngine.subscribe`) and full states
(:meth:`PolicyEngine.datapath`) come out. Evaluation follows Calico (``docs/semantics.md``).

The package is a set of small calculators wired in :mod:`fqdnpolicy.engine.graph` (its
docstring draws the graph); :class:`PolicyEngine` is the facade. Readers never wait: see
:mod:`fqdnpolicy.engine.published`.
"""

from fqdnpolicy.datapath import Direction, EndpointChanged, IPSetChanged, MemberChanged
from fqdnpolicy.engine.engine import PolicyEngine
from fqdnpolicy.engine.results import IPSetInfo, Trace, TraceStep, Verdict
from fqdnpolicy.model import DEFAULT_TIER_ORDER
from fqdnpolicy.protocols import PROTOCOL_NUMBERS, protocol_number

__all__ = [
    "DEFAULT_TIER_ORDER",
    "PROTOCOL_NUMBERS",
    "Direction",
    "EndpointChanged",
    "IPSetChanged",
    "IPSetInfo",
    "MemberChanged",
    "PolicyEngine",
    "Trace",
    "TraceStep",
    "Verdict",
    "protocol_number",
]
