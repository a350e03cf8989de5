"""A failing run reads as one report: each wrong flow, the kernel's outcome, the engine's why."""

from __future__ import annotations

import pytest

from fqdnpolicy.testing import ConformanceFailure, ConformanceReport, Mismatch
from fqdnpolicy.testing.lab import Flow
from fqdnpolicy.testing.report import SHOWN_MISMATCHES

TRACE = (
    "flow: team-a/web -> 203.0.113.10:443/TCP\nverdict: Deny (egress end-of-tier of tier default)"
)


def mismatch(port: int, phase: str = "learned") -> Mismatch:
    return Mismatch(phase, Flow("team-a/web", "203.0.113.10", "tcp", port), True, False, TRACE)


def report(*mismatches: Mismatch, options: dict[str, object] | None = None) -> ConformanceReport:
    return ConformanceReport(
        backend="nftables",
        source="'nftables'",
        options=options or {},
        seed=7,
        flows={"learned": 690, "expired": 690},
        verdicts={"Allow by rule": 10, "Deny at end of tier": 1370},
        mismatches=mismatches,
        seconds=15.0,
    )


def test_a_mismatch_shows_the_flow_both_outcomes_and_the_explanation_indented() -> None:
    text = str(mismatch(443))
    head, *trace = text.splitlines()
    assert head == "[learned] team-a/web -> 203.0.113.10 tcp/443: kernel allowed, engine blocked"
    assert trace == ["    " + line for line in TRACE.splitlines()]


def test_an_icmp_flow_is_named_without_a_port() -> None:
    flow = Flow("team-a/web", "2001:db8:203::10", "icmp", 0)
    text = str(Mismatch("expired", flow, False, True, TRACE))
    assert text.startswith("[expired] team-a/web -> 2001:db8:203::10 icmp echo: kernel blocked,")


def test_a_failure_is_an_assertion_naming_the_seed_and_how_to_run_it_again() -> None:
    failure = ConformanceFailure(report(mismatch(443), options={"table": "t"}))
    assert isinstance(failure, AssertionError)
    first = str(failure).splitlines()[0]
    assert first == (
        "backend 'nftables' disagrees with the engine on 1 of 1380 flows (learned: 1), seed 7"
    )
    assert (
        "reproduce: fqdnpolicy.testing.check_backend('nftables', seed=7,"
        " options={'table': 't'})" in str(failure)
    )
    assert "generate_case(7).yaml" in str(failure)


def test_a_failure_writes_out_the_first_mismatches_and_counts_the_rest() -> None:
    many = [mismatch(port) for port in range(1000, 1000 + SHOWN_MISMATCHES + 3)]
    failure = ConformanceFailure(report(*many, mismatch(1, phase="changed")))
    text = str(failure)
    assert "(learned: 15, changed: 1)" in text
    for shown in many[:SHOWN_MISMATCHES]:
        assert str(shown) in text
    assert str(many[SHOWN_MISMATCHES]) not in text
    assert text.endswith(f"... and {4} more (.mismatches)")
    assert len(failure.mismatches) == SHOWN_MISMATCHES + 4


def test_a_report_says_what_the_run_covered() -> None:
    text = str(report())
    assert text.splitlines() == [
        "backend 'nftables' seed 7: 1380 flows (learned 690, expired 690), 0 disagreeing,"
        " in 15.0 s",
        "engine verdicts: Allow by rule 10, Deny at end of tier 1370",
    ]


def test_raising_a_failure_shows_its_report_in_pytest() -> None:
    with pytest.raises(AssertionError, match=r"kernel allowed, engine blocked"):
        raise ConformanceFailure(report(mismatch(443)))
