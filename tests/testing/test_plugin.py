"""The pytest plugin's fixture skips where the kit cannot run, and fails instead in CI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.testing.support import run_pytest

CONFTEST = 'pytest_plugins = ["fqdnpolicy.testing.plugin"]\n'
TEST = """
def test_conformance(backend_conformance):
    backend_conformance("nftables", seed=1, tools=("fqk-no-such-tool",))
"""


def run_kit_test(folder: Path, require_kernel: bool) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_it.py").write_text(TEST)
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "FQDNPOLICY_REQUIRE_KERNEL"}
    if require_kernel:
        env["FQDNPOLICY_REQUIRE_KERNEL"] = "1"
    return run_pytest(folder, ["-rsf", str(folder)], env)


def test_a_missing_tool_skips_the_test_with_the_reason(tmp_path: Path) -> None:
    done = run_kit_test(tmp_path, require_kernel=False)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "the conformance kit needs" in done.stdout
    assert "the 'fqk-no-such-tool' tool" in done.stdout


def test_a_missing_tool_fails_the_test_when_kernel_tests_are_required(tmp_path: Path) -> None:
    done = run_kit_test(tmp_path, require_kernel=True)
    assert done.returncode == 1, done.stdout
    assert "1 failed" in done.stdout
    assert "FQDNPOLICY_REQUIRE_KERNEL=1 but the conformance kit needs" in done.stdout
