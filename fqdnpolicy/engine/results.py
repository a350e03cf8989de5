"""What the engine answers: verdicts, explanations, and what an IP set stands for."""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

from fqdnpolicy.datapath import Direction

__all__ = ["Action", "IPSetInfo", "Trace", "TraceStep", "Verdict"]

Action: TypeAlias = Literal["Allow", "Deny"]


@attrs.frozen(slots=True)
class Verdict:
    """The answer for one flow.

    Attributes:
        action: ``"Allow"`` or ``"Deny"``.
        policy: Display name of the deciding policy (``NetworkPolicy default/x``,
            ``GlobalNetworkPolicy y``); None when a default decided.
        tier: Tier of the deciding rule, or of the end-of-tier drop.
        rule_index: Index of the deciding rule in ``spec.egress`` / ``spec.ingress``.
        direction: The side whose evaluation gave this verdict.
        default: None when a rule decided; ``"end-of-tier"`` (a tier with applying policies
            and no deciding rule dropped it), ``"no-policy"`` (no policy applies in that
            direction: allowed), ``"profile"`` (every tier with applying policies passed:
            allowed, as the Kubernetes profile does).
        logged: ``(policy, rule_index)`` of every Log rule the packet met on the way.
    """

    action: Action
    policy: str | None = None
    tier: str | None = None
    rule_index: int | None = None
    direction: Direction = "egress"
    default: str | None = None
    logged: tuple[tuple[str, int], ...] = ()

    @property
    def allowed(self) -> bool:
        """True when the action is Allow."""
        return self.action == "Allow"

    def __str__(self) -> str:
        """Render as ``Allow by NetworkPolicy default/x egress[0] (tier default)``."""
        if self.default is None:
            return (
                f"{self.action} by {self.policy} {self.direction}[{self.rule_index}] "
                f"(tier {self.tier})"
            )
        where = f" of tier {self.tier}" if self.tier else ""
        return f"{self.action} ({self.direction} {self.default}{where})"


@attrs.frozen
class TraceStep:
    """One line of an explanation.

    Attributes:
        direction: Which side's evaluation this step belongs to.
        tier: The tier.
        policy: The policy's display name (None for a tier-level step).
        rule_index: The rule (None for a policy- or tier-level step).
        outcome: What happened: ``applies``, ``does not apply``, ``matched``, ``no match``,
            ``logged``, ``passed``, ``end of tier``.
        detail: Why, in words (which criterion failed, which rule decided).
    """

    direction: Direction
    tier: str
    policy: str | None
    rule_index: int | None
    outcome: str
    detail: str = ""


@attrs.frozen
class Trace:
    """The full reasoning behind a verdict: every tier, policy and rule considered."""

    flow: str
    verdict: Verdict
    steps: tuple[TraceStep, ...]

    def render(self) -> str:
        """Return the trace as indented, readable text."""
        lines = [f"flow: {self.flow}"]
        last: tuple[str, str] | None = None
        for step in self.steps:
            if (step.direction, step.tier) != last:
                lines.append(f"  {step.direction} tier {step.tier}:")
                last = (step.direction, step.tier)
            if step.policy is None:
                lines.append(f"    {step.outcome}{': ' + step.detail if step.detail else ''}")
            elif step.rule_index is None:
                detail = f" ({step.detail})" if step.detail else ""
                lines.append(f"    {step.policy}: {step.outcome}{detail}")
            else:
                detail = f": {step.detail}" if step.detail else ""
                lines.append(f"      rule {step.rule_index}: {step.outcome}{detail}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        """Same as :meth:`render`."""
        return self.render()


@attrs.frozen
class IPSetInfo:
    """What an IP set stands for (for renderers and tests).

    Attributes:
        set_id: Stable id: a kind letter, ``:``, and 22 characters of base64url(SHA-224) of
            the canonical definition (at most 24 characters, a valid name in every backend).
        kind: ``nets``, ``domains`` or ``selector``.
        definition: Canonical text of what the set holds.
    """

    set_id: str
    kind: Literal["nets", "domains", "selector"]
    definition: str
