"""Verdicts the agent's engine answers, counted by action for the metrics.

The engine itself keeps no counter (``verdict()`` is the per-flow hot path of embedders).
The agent answers through :class:`CountingVerdicts`: in process (:meth:`Agent.verdict
<fqdnpolicy.agent.agent.Agent.verdict>`) and on its socket (the ``verdict`` request of
:mod:`fqdnpolicy.agent.registry`), and ``/metrics`` reports the counts.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fqdnpolicy.datapath import Direction

if TYPE_CHECKING:
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.engine.results import Verdict

__all__ = ["ACTIONS", "CountingVerdicts"]

#: The actions a verdict has, each reported even while zero.
ACTIONS = ("Allow", "Deny")


class CountingVerdicts:
    """Ask an engine for verdicts and count the answers by action.

    Args:
        engine: The engine that judges.
    """

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ACTIONS, 0)

    def verdict(
        self,
        src: str,
        dst: str,
        protocol: str | int = "TCP",
        port: int | None = None,
        direction: Direction = "egress",
    ) -> Verdict:
        """Judge one flow as :meth:`PolicyEngine.verdict` does, and count its action.

        Raises:
            InvalidPolicy: the flow is not valid (nothing is counted).
        """
        found = self.engine.verdict(src, dst, protocol, port, direction)
        with self._lock:  # answers come from several connection threads
            self._counts[found.action] = self._counts.get(found.action, 0) + 1
        return found

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """Judge a ``verdict`` request of the agent's socket; the fields of the answer.

        Raises:
            ValueError: a field is missing or of the wrong type.
            InvalidPolicy: the flow is not valid.
        """
        src, dst = request["src"], request["dst"]
        protocol, port = request.get("protocol", "TCP"), request.get("port")
        direction = request.get("direction", "egress")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise ValueError("src and dst: strings (namespace/name, or an address)")
        if isinstance(protocol, bool) or not isinstance(protocol, str | int):
            raise ValueError(f"protocol: a name or number, not {protocol!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            raise ValueError(f"port: a number, not {port!r}")
        if direction not in ("egress", "ingress"):
            raise ValueError(f"direction: egress or ingress, not {direction!r}")
        found = self.verdict(src, dst, protocol, port, direction)
        return {
            "action": found.action,
            "policy": found.policy,
            "tier": found.tier,
            "rule_index": found.rule_index,
            "default": found.default,
        }

    def counts(self) -> dict[str, int]:
        """Verdicts answered so far, by action."""
        with self._lock:
            return dict(self._counts)
