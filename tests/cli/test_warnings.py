"""validate's warnings: at their field's own line and column, with their code; --ignore."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.cli.support import run

# The wildcard is on line 10, column 9; the resource starts at line 1.
RISKY = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: risky
spec:
  egress:
  - action: Allow
    destination:
      domains:
      - "*.com"
  - action: Allow
    protocol: UDP
    destination:
      ports: [53]
"""

# RISKY as the first item of a kubectl List: three lines down, two columns right.
IN_A_LIST = (
    "apiVersion: v1\nkind: List\nitems:\n" + "- " + RISKY.replace("\n", "\n  ").rstrip() + "\n"
)


def write(tmp_path: Path, text: str) -> Path:
    """A policy file holding ``text``."""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_a_warning_points_at_its_list_item_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, RISKY)
    code, out = run("validate", "--format", "json", str(path))
    (warning,) = json.loads(out)["warnings"]
    assert (code, warning["line"], warning["column"]) == (0, 10, 9)  # the '"' of "*.com"


def test_a_warning_in_a_list_item_is_placed_in_that_item(tmp_path: Path) -> None:
    path = write(tmp_path, IN_A_LIST)
    _, out = run("validate", "--format", "json", str(path))
    (warning,) = json.loads(out)["warnings"]
    assert (warning["line"], warning["column"]) == (13, 11)


def test_a_warning_read_from_stdin_is_placed_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(RISKY.encode())))
    _, out = run("validate", "-")
    assert out.startswith("<stdin>:10:9: GlobalNetworkPolicy risky: ")


def test_text_output_shows_each_warnings_code(tmp_path: Path) -> None:
    path = write(tmp_path, RISKY)
    _, out = run("validate", str(path))
    assert out.splitlines()[0] == (
        f"{path}:10:9: GlobalNetworkPolicy risky: spec.egress[0].destination.domains[0]: "
        "warning[broad-wildcard]: wildcard *.com covers the whole public suffix 'com': it "
        "allows every site registered under it; name the services you need, e.g. "
        "'api.service.com' or '*.api.service.com'"
    )


def test_ignore_drops_a_code_also_under_strict(tmp_path: Path) -> None:
    path = str(write(tmp_path, RISKY))
    assert run("validate", "--strict", path)[0] == 1
    code, out = run("validate", "--strict", "--ignore", "broad-wildcard", path)
    assert (code, out) == (0, "valid: 1 resource(s), 0 warning(s)\n")


def test_ignore_takes_several_codes_and_keeps_the_others(tmp_path: Path) -> None:
    path = str(write(tmp_path, RISKY))
    _, out = run("validate", "--format", "json", "--ignore", "x,broad-wildcard", path)
    assert json.loads(out)["warnings"] == []
    _, out = run("validate", "--format", "json", "--ignore", "shadowed-rule", path)
    assert [w["code"] for w in json.loads(out)["warnings"]] == ["broad-wildcard"]
