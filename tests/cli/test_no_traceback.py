"""Bad input and closed pipes end the command with a message and an exit code, no traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from fqdnpolicy.cli import EXIT_PIPE, main
from tests.cli.support import run

SEED = Path(__file__).parents[2] / "fqdnpolicy" / "data" / "seed"


def test_a_port_of_thousands_of_digits_is_a_usage_error(
    demo_state: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("check", *demo_state, "default/backend -> 198.51.100.10:" + "9" * 5000)
    assert code == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf", "-1", "0", "1e300", "x"])
def test_bench_refuses_a_scale_that_is_not_a_workload_size(
    scale: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("bench", "--scale", scale)[0] == 2
    assert "--scale" in capsys.readouterr().err


@pytest.mark.parametrize("flows", ["0", "-5", "1.5", "9" * 5000])
def test_bench_refuses_a_flow_count_below_one(flows: str) -> None:
    assert run("bench", "--flows", flows)[0] == 2


@pytest.mark.parametrize("option", ["--output", "--plot"])
def test_bench_refuses_an_output_in_a_missing_directory_before_running(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "results.out"
    # A full-size run would take minutes: the refusal must come before any measuring.
    code, out = run("bench", "--scale", "10", option, str(target))
    assert code == 2
    assert out == ""
    assert f"{option} {target}: no such directory" in capsys.readouterr().err


def test_bench_refuses_an_output_that_is_a_directory(tmp_path: Path) -> None:
    assert run("bench", "--output", str(tmp_path))[0] == 2


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("argv", [["demo"], ["validate", str(SEED)]], ids=str)
def test_output_into_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    assert main(argv, out=_ClosedPipe()) == EXIT_PIPE


def test_demo_piped_into_head_prints_no_traceback() -> None:
    done = subprocess.run(
        f"{sys.executable} -m fqdnpolicy.cli demo | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.startswith("Loaded ")
    assert done.stderr == ""
