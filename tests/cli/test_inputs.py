"""What the commands read: standard input, empty inputs, foreign kinds; --version; JSON errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fqdnpolicy import __version__
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.loader import load, loads
from tests.cli.support import run

DATA = Path(__file__).parents[2] / "fqdnpolicy" / "data"
POLICY_FILE = DATA / "seed" / "fqdn-basic-policy.yaml"
FLOW = "default/backend -> api.github.com:443/tcp"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, namespace: default}
spec: {replicas: 1}
"""

POLICY = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-dns}
spec:
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53]}
"""


def feed(monkeypatch: pytest.MonkeyPatch, text: str | bytes) -> None:
    """Make standard input hold ``text``."""
    data = text.encode() if isinstance(text, str) else text
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--version")[0] == 0
    assert capsys.readouterr().out.strip() == f"fqdnpolicy {__version__}"


def test_validate_dash_reads_policies_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    feed(monkeypatch, POLICY_FILE.read_text())
    code, out = run("validate", "-")
    assert code == 0
    assert out.splitlines()[-1].startswith("valid: 1 resource(s)")


def test_problems_read_from_stdin_are_located_in_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    feed(monkeypatch, "apiVersion: projectcalico.org/v3\nkind: Nope\n")
    code, out = run("validate", "-")
    assert code == 1
    assert out.startswith("<stdin>:2: ")


def test_stdin_that_is_not_utf8_is_invalid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    feed(monkeypatch, b"kind: \xff\n")
    assert run("validate", "-")[0] == 1


def test_dash_must_be_the_only_path_and_read_once(
    monkeypatch: pytest.MonkeyPatch, demo_state: list[str]
) -> None:
    feed(monkeypatch, POLICY)
    assert run("validate", "-", str(POLICY_FILE))[0] == 2
    assert run("check", "--policies", "-", "--cluster", "-", FLOW)[0] == 2


def test_policies_and_cluster_dash_read_stdin(
    monkeypatch: pytest.MonkeyPatch, demo_state: list[str]
) -> None:
    seed, cluster, zone = demo_state[1], demo_state[3], demo_state[5]
    feed(monkeypatch, Path(cluster).read_text())
    code, out = run("check", "--policies", seed, "--cluster", "-", "--zone", zone, FLOW)
    assert (code, out.count("Allow")) == (0, 2)
    feed(monkeypatch, POLICY_FILE.read_text())
    code, out = run("check", "--policies", "-", "--cluster", cluster, "--zone", zone, FLOW)
    assert (code, out.count("Allow")) == (0, 2)


def test_validate_of_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    code, out = run("validate", str(tmp_path))
    assert code == 1
    assert out.startswith(f"{tmp_path}: no policy resources in this directory")


def test_validate_names_each_path_that_holds_no_resource(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    code, out = run("validate", "--format", "json", str(POLICY_FILE), str(empty))
    report = json.loads(out)
    assert (code, report["valid"]) == (1, False)
    assert [(e["file"], e["code"]) for e in report["errors"]] == [(str(empty), "no-resources")]


def test_foreign_kinds_are_errors_unless_skip_unknown(tmp_path: Path) -> None:
    (tmp_path / "deployment.yaml").write_text(DEPLOYMENT)
    (tmp_path / "policy.yaml").write_text(POLICY)
    assert run("validate", str(tmp_path))[0] == 1
    code, out = run("validate", "--skip-unknown", str(tmp_path))
    assert code == 0
    assert out.splitlines()[-1].startswith("valid: 1 resource(s)")


def test_skip_unknown_applies_to_the_policies_of_check(
    tmp_path: Path, demo_state: list[str]
) -> None:
    (tmp_path / "deployment.yaml").write_text(DEPLOYMENT)
    state = [*demo_state, "--policies", str(tmp_path)]
    assert run("check", *state, FLOW)[0] == 1
    assert run("check", "--skip-unknown", *state, FLOW)[0] == 0


def test_skip_unknown_still_reports_a_policy_kind_under_a_wrong_api_version() -> None:
    text = POLICY.replace("projectcalico.org/v3", "projectcalico.org/v2")
    with pytest.raises(InvalidPolicy, match="unknown apiVersion"):
        loads(text, skip_unknown=True)


def test_skip_unknown_skips_the_items_of_a_foreign_list(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(
        "apiVersion: apps/v1\nkind: DeploymentList\nitems:\n- metadata: {name: a}\n---\n" + POLICY
    )
    assert len(load(path, skip_unknown=True)) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "--format", "json", "--no-such-option", "x"],
        ["check", "--format=json"],
        ["check", "--format", "json", "--at", "yesterday", FLOW],
        ["validate", "--format", "json", "/no/such/path"],
    ],
)
def test_format_json_reports_usage_errors_as_json(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(*argv)
    report = json.loads(out)
    assert code == report["exit_code"] == 2
    assert report["error"]
    assert capsys.readouterr().err == ""


def test_usage_errors_without_json_keep_argparse_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("validate", "--no-such-option", "x")
    assert (code, out) == (2, "")
    err = capsys.readouterr().err
    assert err.startswith("usage: fqdnpolicy")
    assert "error: unrecognized arguments: --no-such-option" in err
