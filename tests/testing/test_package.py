"""fqdnpolicy.testing is part of the core package: it imports no backend and no pytest."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.testing import check_backend
from fqdnpolicy.testing.lab import PROGRAM


def test_importing_the_kit_imports_neither_pytest_nor_any_backend() -> None:
    code = (
        "import sys, fqdnpolicy.testing;"
        "loaded = [m for m in sys.modules if m == 'pytest' or m.startswith('fqdnpolicy_')];"
        "print(','.join(loaded))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


def test_the_plugin_is_opt_in_not_registered_for_every_pytest() -> None:
    registered = [ep.value for ep in entry_points(group="pytest11")]
    assert not [value for value in registered if value.startswith("fqdnpolicy")]


def test_the_programs_run_in_namespaces_need_only_the_standard_library() -> None:
    # -I -S: no site-packages at all; the program must still start and answer (no flows).
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(PROGRAM), "probe", "--timeout", "0.1"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_an_unknown_backend_is_refused_before_any_namespace_is_made() -> None:
    with pytest.raises(InvalidPolicy, match="no backend named 'no-such-backend'"):
        check_backend("no-such-backend", seed=1)
