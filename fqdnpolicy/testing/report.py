"""What a conformance run found: flow by flow, the kernel's outcome beside the engine's verdict.

:class:`ConformanceReport` sums up a run; :class:`ConformanceFailure` (an ``AssertionError``,
so test runners show it as a failed assertion) carries every :class:`Mismatch`, each with
``engine.explain()``'s trace, and says how to run the same case again.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

from fqdnpolicy.testing.lab import Flow

__all__ = ["ConformanceError", "ConformanceFailure", "ConformanceReport", "Mismatch"]

#: Mismatches written out in full in a failure's message (all are in its ``mismatches``).
SHOWN_MISMATCHES = 12


class ConformanceError(RuntimeError):
    """The kit could not judge the backend: the lab failed, or ran too slowly to be fair."""


def describe_flow(flow: Flow) -> str:
    """``team-a/web -> 203.0.113.10 tcp/80`` (ICMP flows without a port)."""
    target = "icmp echo" if flow.protocol == "icmp" else f"{flow.protocol}/{flow.port}"
    return f"{flow.src} -> {flow.dst} {target}"


@attrs.frozen
class Mismatch:
    """One flow where the kernel did not do what the engine decided.

    Attributes:
        phase: The step of the run (``learned``, ``expired``, ``established``...).
        flow: The flow probed.
        kernel: True when the flow got through the kernel.
        engine: True when the engine allows it (for an established flow: it was open, so
            it must stay open).
        explanation: ``engine.explain()`` for the flow, as text.
    """

    phase: str
    flow: Flow
    kernel: bool
    engine: bool
    explanation: str

    def __str__(self) -> str:
        def outcome(allowed: bool) -> str:
            return "allowed" if allowed else "blocked"

        head = (
            f"[{self.phase}] {describe_flow(self.flow)}: kernel {outcome(self.kernel)},"
            f" engine {outcome(self.engine)}"
        )
        return f"{head}\n{textwrap.indent(self.explanation.rstrip(), '    ')}"


@attrs.frozen
class ConformanceReport:
    """A run's summary.

    Attributes:
        backend: The backend's name.
        source: How :func:`~fqdnpolicy.testing.check_backend` was given the backend: its
            name quoted, or the dotted path of the callable that built it.
        options: The options it was built with.
        seed: The case's seed.
        flows: Flows checked in each phase, in order.
        verdicts: How the engine decided the checked flows (``Allow by rule``, ``Deny at
            end of tier``, ``Allow: no policy``...), with counts: what the run covered.
        mismatches: Flows where kernel and engine disagreed (empty when it passed).
        seconds: Wall time of the run.
    """

    backend: str
    source: str
    options: Mapping[str, Any]
    seed: int
    flows: Mapping[str, int]
    verdicts: Mapping[str, int]
    mismatches: tuple[Mismatch, ...]
    seconds: float

    @property
    def total(self) -> int:
        """Flows checked in the whole run."""
        return sum(self.flows.values())

    @property
    def reproduce(self) -> str:
        """The call that runs this case again."""
        options = f", options={dict(self.options)!r}" if self.options else ""
        return (
            f"fqdnpolicy.testing.check_backend({self.source}, seed={self.seed}{options})"
            f"  # policies: fqdnpolicy.testing.generate_case({self.seed}).yaml"
        )

    def __str__(self) -> str:
        phases = ", ".join(f"{name} {count}" for name, count in self.flows.items())
        covered = ", ".join(f"{kind} {count}" for kind, count in sorted(self.verdicts.items()))
        return (
            f"backend {self.backend!r} seed {self.seed}: {self.total} flows ({phases}),"
            f" {len(self.mismatches)} disagreeing, in {self.seconds:.1f} s\n"
            f"engine verdicts: {covered}"
        )


class ConformanceFailure(AssertionError):
    """The kernel disagreed with the engine on some flows.

    Attributes:
        report: The run's report; ``report.mismatches`` lists every disagreeing flow.
    """

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        super().__init__(self._message())

    @property
    def mismatches(self) -> tuple[Mismatch, ...]:
        """Every flow where the kernel did not do what the engine decided."""
        return self.report.mismatches

    def _message(self) -> str:
        report = self.report
        by_phase = Counter(m.phase for m in report.mismatches)
        shown = report.mismatches[:SHOWN_MISMATCHES]
        lines = [
            f"backend {report.backend!r} disagrees with the engine on"
            f" {len(report.mismatches)} of {report.total} flows"
            f" ({', '.join(f'{p}: {n}' for p, n in by_phase.items())}), seed {report.seed}",
            f"reproduce: {report.reproduce}",
            "",
            *(str(m) + "\n" for m in shown),
        ]
        if len(report.mismatches) > len(shown):
            lines.append(f"... and {len(report.mismatches) - len(shown)} more (.mismatches)")
        return "\n".join(lines).rstrip()


def verdict_kind(action: str, default: str | None) -> str:
    """Name how a verdict was reached, for :attr:`ConformanceReport.verdicts`."""
    how = {
        None: "by rule",
        "end-of-tier": "at end of tier",
        "no-policy": "no policy",
        "profile": "all tiers passed",
    }
    return f"{action} {how.get(default, default)}"


def tally(kinds: list[str]) -> dict[str, int]:
    """Count verdict kinds."""
    return dict(Counter(kinds))
