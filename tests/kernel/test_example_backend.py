"""The third-party backend of docs/backends.md passes the kit, in a pytest of its own.

``tests/data/example_backend`` is laid out as its author would publish it: an entry point in
``pyproject.toml``, the backend module, a conftest enabling the kit's plugin and a test
running the kit. Here it is "installed" as pip would for what matters (its directory on the
path and a ``.dist-info`` naming the entry points its ``pyproject.toml`` declares), and its
tests are run by pytest in its own directory, for one seed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from fqdnpolicy.testing import SEEDS
from tests.testing.support import run_pytest

pytestmark = pytest.mark.kernel

EXAMPLE = Path(__file__).parents[1] / "data" / "example_backend"


def install_metadata(site: Path) -> None:
    """Write the ``.dist-info`` pip would: name, version and the declared entry points."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def test_the_documented_example_backend_passes_the_kit_in_its_own_pytest(
    kernel: None, tmp_path: Path
) -> None:
    install_metadata(tmp_path)
    path = [str(EXAMPLE), str(tmp_path), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the example's directory as it is
    test = f"tests/test_conformance.py::test_audited_nftables_passes_the_kit[{SEEDS[0]}]"
    done = run_pytest(EXAMPLE, ["-q", test], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
