"""The fqdnpolicy command: exit codes, output formats, and each subcommand end to end."""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

from tests.cli.support import run

DATA = importlib.resources.files("fqdnpolicy") / "data"


BROKEN = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: broken, namespace: default}
spec:
  egress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [99999]
      selectr: app == "x"
"""

RISKY = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: risky}
spec:
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53]}
  - action: Allow
    destination: {domains: ["*.com"]}
"""


def test_validate_valid_policies_exits_0(tmp_path: Path) -> None:
    with importlib.resources.as_file(DATA / "seed") as seed:
        code, out = run("validate", str(seed))
    assert code == 0
    assert out.splitlines()[-1].startswith("valid: 9 resource(s)")


def test_validate_invalid_file_exits_1_with_located_problems(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    code, out = run("validate", str(path))
    assert code == 1
    lines = out.splitlines()
    assert f"{path}:9: NetworkPolicy default/broken: spec.egress[0].destination.ports[0]:" in out
    assert any(
        "unknown field 'selectr'" in line and "did you mean 'selector'" in line for line in lines
    )
    assert lines[-1] == "invalid: 2 error(s)"


def test_validate_json_format_lists_errors_and_warnings(tmp_path: Path) -> None:
    path = tmp_path / "risky.yaml"
    path.write_text(RISKY)
    code, out = run("validate", "--format", "json", str(path))
    report = json.loads(out)
    assert code == 0
    assert report["valid"] is True
    assert [w["code"] for w in report["warnings"]] == ["broad-wildcard"]
    assert report["warnings"][0]["path"] == "spec.egress[1].destination.domains[0]"


def test_validate_strict_turns_warnings_into_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "risky.yaml"
    path.write_text(RISKY)
    assert run("validate", "--strict", str(path))[0] == 1


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("validate", str(tmp_path / "missing.yaml"))[0] == 2
    assert run("validate")[0] == 2
    assert run("no-such-command")[0] == 2
    assert run("check", "not a flow")[0] == 2


def test_check_exits_0_when_all_allowed_and_1_when_one_is_denied(demo_state: list[str]) -> None:
    allowed = "default/backend -> api.github.com:443/tcp"
    denied = "default/backend -> api.gitlab.com:443/tcp"
    code, out = run("check", *demo_state, allowed)
    assert code == 0
    assert "198.51.100.10" in out  # both addresses of the name are judged
    assert "2001:db8:100::10" in out
    assert "NetworkPolicy default/allow-github-api egress[0]" in out
    code, out = run("check", *demo_state, allowed, denied)
    assert code == 1
    assert "egress end-of-tier (default)" in out


def test_check_reports_an_unresolved_name_as_unresolved_not_as_a_deny(
    demo_state: list[str],
) -> None:
    code, out = run("check", *demo_state, "default/backend -> nowhere.example:443/tcp")
    assert code == 1  # not known to be allowed
    (row,) = out.splitlines()[2:]
    assert " unresolved " in row
    assert "Deny" not in row


def test_explain_prints_the_trace(demo_state: list[str]) -> None:
    code, out = run(
        "explain", *demo_state, "backend/payments -> kube-system/coredns-5d78c9869d-x7k2p:53/udp"
    )
    assert code == 1
    assert "GlobalNetworkPolicy allow-approved-external-services: does not apply" in out
    assert 'projectcalico.org/namespace == "backend" && k8s-app == "kube-dns"' in out
    assert out.rstrip().endswith("verdict: Deny (egress end-of-tier of tier default)")


def test_render_prints_the_backend_ruleset(demo_state: list[str]) -> None:
    code, out = run("render", "--backend", "nftables", *demo_state)
    assert code == 0
    assert "table inet fqdnpolicy" in out
    assert "198.51.100.10" in out
    code, out = run("render", "--backend", "nftables", "--format", "json", *demo_state)
    assert code == 0
    assert "nftables" in json.loads(out)


def test_render_with_an_unknown_backend_is_a_usage_error(demo_state: list[str]) -> None:
    assert run("render", "--backend", "no-such-backend", *demo_state)[0] == 2


def test_bench_writes_json_results(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    code, out = run("bench", "--scale", "0.002", "--flows", "2000", "--output", str(output))
    assert code == 0
    (result,) = json.loads(output.read_text())["results"]
    assert result["sizes"]["endpoints"] == 40
    for key in ("compile_s", "verdicts_per_s_uniform", "verdicts_per_s_zipf", "rss_mb"):
        assert result[key] > 0
    assert "verdicts/s uniform" in out


def test_bench_measures_each_scale_in_a_process_of_its_own(tmp_path: Path) -> None:
    # Memory figures are a workload's own only when nothing else was built in that process.
    output = tmp_path / "bench.json"
    args = ("--scale", "0.001", "--scale", "0.002", "--flows", "1000", "--output", str(output))
    assert run("bench", *args)[0] == 0
    results = json.loads(output.read_text())["results"]
    pids = {result["pid"] for result in results}
    assert len(pids) == 2
    assert os.getpid() not in pids


def test_demo_runs_on_built_in_data() -> None:
    code, out = run("demo")
    assert code == 0
    assert "warning: wildcard *.com covers the whole public suffix 'com'" in out
    assert "article is wrong" in out  # the namespaced kube-dns rule
    assert "Why backend/payments -> kube-system/coredns:53/udp is blocked:" in out
    assert "Rules the nftables backend would program:" in out
