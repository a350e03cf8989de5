"""Helpers shared by the tests (import as `from tests.support import require_tool`).

:class:`FakeClock` is the clock every test that needs time moves by hand.

Tests marked ``kernel`` need root, network namespaces or kernel/system tools (nft, ipset,
bpftool, dnsmasq). On a machine without them they skip with the reason, unless the environment
sets ``FQDNPOLICY_REQUIRE_KERNEL=1`` (CI does), which turns every such skip into a failure so CI
always proves the real datapaths.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_KERNEL = os.environ.get("FQDNPOLICY_REQUIRE_KERNEL") == "1"


class FakeClock:
    """A monotonic clock the test moves by hand.

    The DNS cache expires nothing on its own and tests never sleep: time moves when a test
    sets ``now`` or calls :meth:`advance`.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def kernel_unavailable(reason: str) -> None:
    """Skip the current test for ``reason``, or fail it when kernel tests are required."""
    if REQUIRE_KERNEL:
        pytest.fail(f"FQDNPOLICY_REQUIRE_KERNEL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    """Skip/fail unless running as root."""
    if os.geteuid() != 0:
        kernel_unavailable("needs root (network namespaces, netfilter)")


def require_tool(name: str) -> str:
    """Return the path of executable ``name``, or skip/fail with the package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        kernel_unavailable(f"needs the '{name}' tool (apt-get install it; see .ci/run)")
        raise AssertionError("unreachable")  # pragma: no cover - skip/fail raise
    return path


@pytest.fixture
def root() -> None:
    """Fixture form of :func:`require_root`."""
    require_root()
