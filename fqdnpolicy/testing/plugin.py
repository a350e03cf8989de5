"""Opt-in pytest plugin: the ``backend_conformance`` fixture runs the kit in a test.

Not registered automatically (no ``pytest11`` entry point): enable it where you want it, in
the conftest.py at the top of your tests, or on the command line::

    pytest_plugins = ["fqdnpolicy.testing.plugin"]     # conftest.py
    pytest -p fqdnpolicy.testing.plugin                # or this

(or import the fixture into a conftest: ``from fqdnpolicy.testing.plugin import
backend_conformance``). Then::

    import pytest
    from fqdnpolicy.testing import SEEDS

    @pytest.mark.parametrize("seed", SEEDS)
    def test_my_backend_enforces_the_engine(backend_conformance, seed):
        backend_conformance("mybackend", seed=seed, options={"table": "t"}, tools=("nft",))

Without root, ``ip``, ``dnsmasq`` or one of ``tools`` the test is skipped with the reason;
with ``FQDNPOLICY_REQUIRE_KERNEL=1`` in the environment (CI) it fails instead, so a CI run
never passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import pytest

from fqdnpolicy.testing.conformance import BackendFactory, check_backend, missing_requirements
from fqdnpolicy.testing.report import ConformanceReport

__all__ = ["REQUIRE_KERNEL_VARIABLE", "ConformanceRunner", "backend_conformance"]

#: Set to ``1`` to turn a skip for missing requirements into a failure.
REQUIRE_KERNEL_VARIABLE = "FQDNPOLICY_REQUIRE_KERNEL"


class ConformanceRunner(Protocol):
    """What the ``backend_conformance`` fixture is: :func:`check_backend`, plus ``tools``."""

    def __call__(
        self,
        backend: str | BackendFactory,
        *,
        seed: int,
        options: Mapping[str, Any] | None = None,
        tools: Iterable[str] = (),
    ) -> ConformanceReport:
        """Run the kit for ``backend`` (see :func:`~fqdnpolicy.testing.check_backend`).

        Args:
            backend: Backend name, or a callable that builds the backend from ``options``.
            seed: The case to run.
            options: The backend's keyword arguments.
            tools: Commands the backend needs (``nft``, ``ipset``...): the test is skipped
                (or fails under ``FQDNPOLICY_REQUIRE_KERNEL=1``) when one is missing.
        """


def _run(
    backend: str | BackendFactory,
    *,
    seed: int,
    options: Mapping[str, Any] | None = None,
    tools: Iterable[str] = (),
) -> ConformanceReport:
    missing = missing_requirements(tools)
    if missing:
        reason = f"the conformance kit needs {', '.join(missing)}"
        if os.environ.get(REQUIRE_KERNEL_VARIABLE) == "1":
            pytest.fail(f"{REQUIRE_KERNEL_VARIABLE}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    report = check_backend(backend, seed=seed, options=options)
    print(report)  # shown with -s or -rP: what the run covered
    return report


@pytest.fixture
def backend_conformance() -> ConformanceRunner:
    """Run the conformance kit for a backend; see the module docstring."""
    return _run
