"""What the engine answers: verdicts, explanations, and what an IP set stands for."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import attrs

from fqdnpolicy.datapath import Direction

__all__ = ["NO_TIER", "Action", "IPSetInfo", "Trace", "TraceStep", "Verdict"]

Action: TypeAlias = Literal["Allow", "Deny"]

#: The tier of the step that says no policy applies on a side (there is no tier then).
NO_TIER = "-"


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

    def logged_text(self) -> str:
        """The Log rules that fired, as ``NetworkPolicy default/x rule 0, ...``."""
        return ", ".join(f"{policy} rule {index}" for policy, index in self.logged)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary of every field (``logged`` as objects)."""
        return {
            "action": self.action,
            "policy": self.policy,
            "tier": self.tier,
            "rule_index": self.rule_index,
            "direction": self.direction,
            "default": self.default,
            "logged": [{"policy": p, "rule_index": i} for p, i in self.logged],
        }


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

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary (``tier`` is None where no policy applies)."""
        return {
            "direction": self.direction,
            "tier": None if self.tier == NO_TIER else self.tier,
            "policy": self.policy,
            "rule_index": self.rule_index,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@attrs.frozen
class Trace:
    """The full reasoning behind a verdict: every tier, policy and rule considered.

    Attributes:
        flow: The flow, as text.
        verdict: The verdict the trace ends with.
        steps: Every step, as the engine took it.
        tiers: The tiers in evaluation order (where the steps name them).
    """

    flow: str
    verdict: Verdict
    steps: tuple[TraceStep, ...]
    tiers: tuple[str, ...] = ()

    def ordered_steps(self) -> list[TraceStep]:
        """The steps grouped by side and tier, each tier once, in evaluation order.

        The engine records the policies that do not apply before it evaluates; grouped here,
        each follows its tier. Tiers come in :attr:`tiers` order; without it, tiers where no
        policy applies (not evaluated) come after those that are.
        """
        groups: dict[tuple[str, str], list[TraceStep]] = {}
        evaluated: list[tuple[str, str]] = []
        for step in self.steps:
            key = (step.direction, step.tier)
            groups.setdefault(key, []).append(step)
            if step.outcome != "does not apply" and key not in evaluated:
                evaluated.append(key)
        sides = list(dict.fromkeys(step.direction for step in self.steps))
        order = [k for side in sides for k in evaluated if k[0] == side]
        order += [k for side in sides for k in groups if k[0] == side and k not in evaluated]
        if self.tiers:
            rank = {tier: i for i, tier in enumerate(self.tiers)}
            side_rank: dict[str, int] = {side: i for i, side in enumerate(sides)}
            order.sort(key=lambda k: (side_rank[k[0]], rank.get(k[1], len(rank))))
        return [step for key in order for step in groups[key]]

    def render(self) -> str:
        """Return the trace as indented, readable text: each side, then each tier once."""
        lines = [f"flow: {self.flow}"]
        last: tuple[str, str] | None = None
        steps = self.ordered_steps()
        evaluated = {(s.direction, s.tier) for s in steps if s.outcome != "does not apply"}
        for step in steps:
            if step.tier == NO_TIER:
                lines.append(f"  {step.direction}: {step.outcome}: {step.detail or 'Allow'}")
                last = None
                continue
            if (step.direction, step.tier) != last:
                last = (step.direction, step.tier)
                skipped = "" if last in evaluated else " (no policy here applies: skipped)"
                lines.append(f"  {step.direction} tier {step.tier}:{skipped}")
            if step.policy is None:
                lines.append(f"    {step.outcome}{': ' + step.detail if step.detail else ''}")
            elif step.rule_index is None:
                detail = f" ({step.detail})" if step.detail else ""
                lines.append(f"    {step.policy}: {step.outcome}{detail}")
            else:
                detail = f": {step.detail}" if step.detail else ""
                lines.append(
                    f"      {step.direction} rule {step.rule_index}: {step.outcome}{detail}"
                )
        lines.append(f"verdict: {self.verdict}")
        if self.verdict.logged:
            lines.append(f"logged by: {self.verdict.logged_text()}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary: the flow, the verdict and every step in order."""
        return {
            "flow": self.flow,
            "verdict": self.verdict.as_dict(),
            "steps": [step.as_dict() for step in self.ordered_steps()],
        }

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
