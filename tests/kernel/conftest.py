"""Fixtures of the real-kernel tests: requirements, a scratch namespace, the conformance kit.

``backend_conformance`` is the kit's opt-in pytest fixture (:mod:`fqdnpolicy.testing.plugin`),
imported here rather than named in ``pytest_plugins``, which only a top-level conftest may set.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from fqdnpolicy.testing.plugin import backend_conformance
from tests.support import require_root, require_tool

__all__ = ["backend_conformance", "kernel", "netns"]


@pytest.fixture
def kernel() -> None:
    """Skip (or fail under FQDNPOLICY_REQUIRE_KERNEL=1) without root, ip, nft and dnsmasq."""
    require_root()
    for tool in ("ip", "nft", "dnsmasq"):
        require_tool(tool)


@pytest.fixture
def netns(kernel: None) -> Iterator[str]:
    """A fresh, uniquely named network namespace, deleted afterwards (exactly this one)."""
    name = f"fqp-t-{os.getpid() % 100000}{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
