"""``check`` and ``explain``: verdicts in text and JSON, sources by label, explanations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.support import run

EXPLAINED = "backend/payments -> kube-system/coredns-5d78c9869d-x7k2p:53/udp"

LOGGING = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: audit, namespace: default}
spec:
  order: 1
  selector: app == "backend"
  types: [Egress]
  egress:
  - action: Log
    protocol: TCP
  - action: Allow
    protocol: TCP
    destination: {nets: [203.0.113.0/24]}
"""


def test_check_json_gives_action_policy_tier_and_rule(demo_state: list[str]) -> None:
    code, out = run(
        "check", "--format", "json", *demo_state, "default/backend -> api.github.com:443/tcp"
    )
    assert code == 0
    report = json.loads(out)
    assert report["allowed"] is True
    first = report["flows"][0]
    assert first["action"] == "Allow"
    assert first["policy"] == "NetworkPolicy default/allow-github-api"
    assert (first["tier"], first["rule_index"], first["logged"]) == ("default", 0, [])


def test_check_shows_log_rules_that_fired(demo_state: list[str], tmp_path: Path) -> None:
    (tmp_path / "audit.yaml").write_text(LOGGING)
    state = [*demo_state, "--policies", str(tmp_path)]
    code, out = run("check", *state, "default/backend -> 203.0.113.7:8080/tcp")
    assert code == 0
    assert "logged by" in out.splitlines()[0]
    assert "NetworkPolicy default/audit rule 0" in out
    code, out = run("check", "--format", "json", *state, "default/backend -> 203.0.113.7:8080")
    assert json.loads(out)["flows"][0]["logged"] == [
        {"policy": "NetworkPolicy default/audit", "rule_index": 0}
    ]


def test_explain_json_lists_every_step(demo_state: list[str]) -> None:
    code, out = run("explain", "--format", "json", *demo_state, EXPLAINED)
    assert code == 1
    (flow,) = json.loads(out)["flows"]
    assert flow["action"] == "Deny"
    assert flow["default"] == "end-of-tier"
    outcomes = [(s["policy"], s["rule_index"], s["outcome"]) for s in flow["steps"]]
    assert ("NetworkPolicy backend/allow-external-apis", 4, "no match") in outcomes
    assert outcomes[-1] == (None, None, "end of tier")


def test_explain_lists_each_tier_once_and_names_fields_not_set_ids(demo_state: list[str]) -> None:
    code, out = run("explain", *demo_state, EXPLAINED)
    assert code == 1
    assert out.count("egress tier default:") == 1
    assert "does not apply (its selector has(app) does not match the endpoint)" in out
    assert "(the rule's destination.selector)" in out
    assert re.search(r"\b[dns]:[A-Za-z0-9_-]{22}", out) is None  # no set ids
    assert "['" not in out  # no Python reprs
    assert out.rstrip().endswith("verdict: Deny (egress end-of-tier of tier default)")


def test_explain_says_in_words_that_a_selector_set_takes_network_sets_domains(
    demo_state: list[str],
) -> None:
    code, out = run("explain", *demo_state, "default/backend -> 198.51.100.99:443/tcp")
    assert code == 1
    assert "+allowedEgressDomains" not in out  # the set's own marker
    assert "with the allowedEgressDomains of the network sets it selects" in out


def test_explain_of_a_side_without_policy_has_no_placeholder_tier(demo_state: list[str]) -> None:
    _, out = run("explain", *demo_state, "default/backend -> default/database:5432")
    assert "tier -" not in out


def test_a_source_by_label_judges_every_matching_pod(demo_state: list[str]) -> None:
    _, out = run(
        "check", "--format", "json", *demo_state, "default/app=backend -> 198.51.100.10:443"
    )
    assert {f["source"] for f in json.loads(out)["flows"]} == {"default/backend"}


def test_a_source_that_is_no_pod_gets_did_you_mean(
    demo_state: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("check", *demo_state, "default/backnd -> api.github.com:443")
    assert code == 2
    assert "did you mean default/backend?" in capsys.readouterr().err


def test_errors_come_out_as_json_with_format_json(demo_state: list[str]) -> None:
    code, out = run("check", "--format", "json", *demo_state, "default/backend -> x.com:http")
    assert code == 2
    report = json.loads(out)
    assert report["exit_code"] == 2
    assert "named port 'http'" in report["error"]
