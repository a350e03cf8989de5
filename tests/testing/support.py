"""Helpers of the kit's tests: a pytest of its own, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_pytest(
    folder: Path, args: Sequence[str], env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run pytest in ``folder`` (its own rootdir and conftest), without a cache directory."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
