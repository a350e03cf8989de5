"""README's Quickstart is the contract with a new user and with CI: keep it true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ")]


def test_quickstart_has_a_main_job_and_a_test_command() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "fqdnpolicy demo" in main_job
    assert "pytest" in tests


def test_ci_runs_exactly_the_quickstart_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = quickstart_commands()[1]
    assert any(line.strip() == test_command for line in ci.splitlines())
    assert re.search(r"^export FQDNPOLICY_REQUIRE_KERNEL=1$", ci, re.MULTILINE)
